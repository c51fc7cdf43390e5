"""Writing published item files: one task is one row group of one part (run in worker processes).

`items_of` restores items exactly like `harvester.parts.batch_to_items` (tests/test_publish.py checks that they
agree on the corpus, the sample federation and hostile items) but converts nested columns column by column:
`batch_to_items` turns every row into Python objects with `to_pylist()` and then walks each whole tree again to
drop nested nulls, which costs ~0.7 ms per heavy (~15 KB) item; here lists and structs are assembled from their
child columns, and null keys are only looked for where a child column has nulls at all (2-3x faster).
"""

from __future__ import annotations

import bisect
import gc
import itertools
import os
import posixpath
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from harvester.arrow_rows import strip_nulls
from harvester.records import CORE_COLUMNS, CSCALE_COLUMNS, OVERFLOW, PROJ_GEOMETRY
from harvester.storage import arrow_filesystem
from harvester.store import Store
from queries.publish_output import Output, S3Output, open_output
from queries.publish_plan import MEDIA_GEOJSON, Layout, item_links, publish_item

BATCH_ROWS = 500  # rows converted at once in a worker: ~500 heavy items as Python objects, tens of MB
_UNPUBLISHED = frozenset(c for c in CSCALE_COLUMNS if c != OVERFLOW)  # snapshot bookkeeping, not item fields
_RAW = frozenset(("type", "stac_version", "stac_extensions", "id", "bbox", "collection", *CSCALE_COLUMNS))


def plain_values(column: pa.Array) -> list[Any]:
    """`[strip_nulls(v) for v in column.to_pylist()]`, built column by column: leaves through numpy, structs
    zipped from their children's lists (dropping null fields only where a child has nulls at all), lists sliced
    out of their flattened values. pyarrow's `to_pylist` makes every nested value a Python scalar one at a time."""
    kind = column.type
    n = len(column)
    if pa.types.is_struct(kind):
        names = [kind.field(i).name for i in range(kind.num_fields)]
        fields = [column.field(i) for i in range(kind.num_fields)]
        children = [plain_values(f) for f in fields]
        rows: list[Any]
        if not names:
            rows = [{} for _ in range(n)]
        elif any(f.null_count for f in fields):
            rows = [
                {k: v for k, v in zip(names, vals, strict=True) if v is not None}
                for vals in zip(*children, strict=True)
            ]
        else:
            rows = list(map(dict, map(zip, itertools.repeat(names), zip(*children, strict=True))))
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets = column.offsets.to_numpy().tolist()
        start = offsets[0]
        flat = plain_values(column.values.slice(start, offsets[-1] - start))
        if start:
            offsets = [o - start for o in offsets]
        rows = list(map(flat.__getitem__, map(slice, offsets[:-1], offsets[1:])))
    elif column.null_count == 0 and (
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
    ):
        return column.to_numpy(zero_copy_only=False).tolist()  # type: ignore[no-any-return]
    else:
        return [strip_nulls(v) for v in column.to_pylist()]
    if column.null_count:
        valid = column.is_valid().to_numpy(zero_copy_only=False).tolist()
        rows = [row if ok else None for row, ok in zip(rows, valid, strict=True)]
    return rows


def _geometries(column: pa.Array, raw: bool) -> list[Any]:
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        geoms = shapely.from_wkb(column.to_numpy(zero_copy_only=False))
    else:
        geoms = shapely.from_wkb(column.storage.to_numpy(zero_copy_only=False))
    if raw:  # GEOS's GeoJSON text as it is: the same values batch_to_items parses out of it
        return [orjson.Fragment(t) if t is not None else None for t in shapely.to_geojson(geoms)]
    return [orjson.loads(t) if t is not None else None for t in shapely.to_geojson(geoms)]


def _has_binary(kind: pa.DataType, name: str) -> bool:
    """Whether a nested type holds a binary field called `name` (proj:geometry as WKB) anywhere."""
    if pa.types.is_struct(kind):
        return any(
            (kind.field(i).name == name and pa.types.is_binary(kind.field(i).type))
            or _has_binary(kind.field(i).type, name)
            for i in range(kind.num_fields)
        )
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_map(kind):
        return _has_binary(kind.value_type if not pa.types.is_map(kind) else kind.item_type, name)
    return False


def _geojson(wkb: bytes) -> Any:
    return orjson.loads(shapely.to_geojson(shapely.from_wkb(wkb)))


def items_of(batch: pa.RecordBatch | pa.Table, *, raw_geometry: bool = False) -> Iterator[dict[str, Any]]:
    """Rows of a part → STAC items, equal to `harvester.parts.batch_to_items(batch)`. With `raw_geometry` the
    geometry is an `orjson.Fragment` of its GeoJSON text (equal once serialised; spares parsing the coordinates
    only to serialise them again)."""
    columns: dict[str, list[Any]] = {}
    for name in batch.schema.names:
        column = batch.column(name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        if name == "geometry":
            columns[name] = _geometries(column, raw_geometry)
        elif pa.types.is_timestamp(column.type):
            columns[name] = pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()
        elif name in _RAW:
            columns[name] = column.to_pylist()
        else:
            columns[name] = plain_values(column)
    props = [(k, v) for k, v in columns.items() if k not in CORE_COLUMNS and k not in CSCALE_COLUMNS]
    names = [k for k, _ in props]
    # Without any null property in the batch, every row's properties zip straight from the columns.
    dense = (
        None
        if not props or any(None in v for _, v in props)
        else map(dict, map(zip, itertools.repeat(names), zip(*(v for _, v in props), strict=True)))
    )
    asset_wkb = "assets" in columns and _has_binary(batch.schema.field("assets").type, PROJ_GEOMETRY)
    get = columns.get
    none = [None] * batch.num_rows
    kinds, versions, exts, ids = get("type", none), get("stac_version", none), get("stac_extensions", none), get("id")
    geometry, bboxes, links, assets = get("geometry", none), get("bbox", none), get("links", none), get("assets", none)
    collections, overflow = get("collection", none), get(OVERFLOW, none)
    for i in range(batch.num_rows):
        item: dict[str, Any] = {"type": kinds[i] or "Feature"}
        if versions[i] is not None:
            item["stac_version"] = versions[i]
        if exts[i] is not None:
            item["stac_extensions"] = exts[i]
        if ids is not None and ids[i] is not None:
            item["id"] = ids[i]
        item["geometry"] = geometry[i]
        bbox = bboxes[i]
        if bbox is not None:
            item["bbox"] = [bbox["xmin"], bbox["ymin"], bbox["xmax"], bbox["ymax"]]
        properties = next(dense) if dense is not None else {k: v[i] for k, v in props if v[i] is not None}
        item["properties"] = properties
        if links[i] is not None:
            item["links"] = links[i]
        if assets[i] is not None:
            item["assets"] = assets[i]
        if isinstance(properties.get(PROJ_GEOMETRY), bytes):
            properties[PROJ_GEOMETRY] = _geojson(properties[PROJ_GEOMETRY])
        if asset_wkb:
            for asset in (item.get("assets") or {}).values():
                if isinstance(asset, dict) and isinstance(asset.get(PROJ_GEOMETRY), bytes):
                    asset[PROJ_GEOMETRY] = _geojson(asset[PROJ_GEOMETRY])
        if collections[i] is not None:
            item["collection"] = collections[i]
        if "links" not in item:
            item["links"] = []
        if "assets" not in item:
            item["assets"] = {}
        if overflow[i]:
            for path, value in orjson.loads(overflow[i]).items():
                if path.startswith("properties."):
                    properties[path[len("properties.") :]] = value
                else:
                    item[path] = value
        yield item


# ------------------------------------------------------------------------------------------------ tasks


@dataclass(frozen=True, slots=True)
class WriterConfig:
    store_url: str
    out_url: str
    href_base: str | None
    # The AWS_* variables when the publish started, handed over explicitly: a worker started some other way (a
    # forkserver started by an earlier publish) would see the environment of its own start. Never logged.
    aws_environ: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def current_aws_environ() -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))


@dataclass(frozen=True, slots=True)
class WriteTask:
    part_key: str  # relative to the store root
    row_group: int
    rows: list[int]  # ascending row numbers within the row group
    paths: list[str]  # where each goes, relative to the output root
    collection_files: list[str | None]  # each item's collection.json (None: a group without collection)
    fresh: list[bool]  # the published tree does not reference the path yet: written in place


class Writer:
    """What a worker keeps between tasks: the store's filesystem, the output, and (S3) a pool of PUT threads."""

    def __init__(self, config: WriterConfig) -> None:
        store = Store.open(config.store_url)
        self.fs, self.prefix = arrow_filesystem(store.storage)
        self.output: Output = open_output(config.out_url)
        self.layout = Layout(href_base=config.href_base)
        # Writes leave the GIL: a few threads overlap file creation (or PUT latency) with converting the next
        # items. CSCALE_PUBLISH_WRITE_THREADS=0 writes inline (for measuring).
        threads = int(os.environ.get("CSCALE_PUBLISH_WRITE_THREADS", 16 if isinstance(self.output, S3Output) else 4))
        self.threads = ThreadPoolExecutor(threads) if threads > 0 else None
        self._folder_links: dict[tuple[str, str | None], list[dict[str, Any]]] = {}

    def _links(self, path: str, collection_file: str | None) -> list[dict[str, Any]]:
        """Relative links depend only on the item's folder: computed once per folder (the dicts are shared by
        the items, which only serialise them)."""
        if self.layout.href_base is not None:
            return item_links(path, collection_file, self.layout)
        key = (posixpath.dirname(path), collection_file)
        links = self._folder_links.get(key)
        if links is None:
            if len(self._folder_links) > 10_000:
                self._folder_links.clear()
            links = self._folder_links[key] = item_links(path, collection_file, self.layout)
        return list(links)

    def run(self, task: WriteTask) -> tuple[int, int, float]:
        """Write the task's items; returns (items, bytes, CPU seconds of this process spent on them)."""
        # Items are acyclic trees of thousands of small containers: the cyclic GC would scan them again and again
        # (measured: ~1.7x the cost of converting and serialising an item); reference counting frees them anyway.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return self._run(task)
        finally:
            if enabled:
                gc.enable()

    def _run(self, task: WriteTask) -> tuple[int, int, float]:
        cpu = time.process_time()
        parquet = pq.ParquetFile(self.prefix + task.part_key, filesystem=self.fs)
        written = size = 0
        pending: list[Future[None]] = []
        start = 0
        # Only the columns an item is made of (not provider, product_key, hash, source_href), decoded in this
        # thread: the workers already fill the CPUs, and Arrow's decode threads cost 2x the CPU here (measured).
        columns = [n for n in parquet.schema_arrow.names if n not in _UNPUBLISHED]
        batches = parquet.iter_batches(
            batch_size=BATCH_ROWS, row_groups=[task.row_group], columns=columns, use_threads=False
        )
        last = task.rows[-1] if task.rows else -1
        for batch in batches:
            if start > last:
                break  # the rest of the row group belongs to other tasks
            end = start + batch.num_rows
            lo, hi = bisect.bisect_left(task.rows, start), bisect.bisect_left(task.rows, end)
            if lo < hi:
                if hi - lo < batch.num_rows:
                    batch = batch.take(pa.array([r - start for r in task.rows[lo:hi]], pa.int64()))
                for k, item in zip(range(lo, hi), items_of(batch, raw_geometry=True), strict=True):
                    path = task.paths[k]
                    data = orjson.dumps(publish_item(item, self._links(path, task.collection_files[k])))
                    size += len(data)
                    written += 1
                    fresh = task.fresh[k]
                    if self.threads is None:
                        self.output.write(path, data, MEDIA_GEOJSON, fresh=fresh)
                    else:
                        pending.append(self.threads.submit(self.output.write, path, data, MEDIA_GEOJSON, fresh=fresh))
                        if len(pending) >= 256:
                            for future in pending:
                                future.result()
                            pending.clear()
            start = end
        for future in pending:
            future.result()
        if written != len(task.rows):
            raise RuntimeError(f"{task.part_key} row group {task.row_group}: wrote {written} of {len(task.rows)}")
        return written, size, time.process_time() - cpu


_WRITER: Writer | None = None


def init_worker(config: WriterConfig) -> None:
    global _WRITER
    if config.aws_environ or any(k.startswith("AWS_") for k in os.environ):
        for key in [k for k in os.environ if k.startswith("AWS_")]:
            del os.environ[key]
        os.environ.update(dict(config.aws_environ))
    _WRITER = Writer(config)


def run_task(task: WriteTask) -> tuple[int, int, float]:
    assert _WRITER is not None, "init_worker was not called"
    return _WRITER.run(task)
