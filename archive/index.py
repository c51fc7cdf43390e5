"""`index_archive`: an S3 archive → the snapshot's archive inventory and one item per product, as one version.

1. Enumerate the objects: a parallel listing (incremental runs skip date folders older than the last run minus a
   look-back) or an S3 Inventory report. They are spilled to a local Parquet file as they come.
2. Plan in DuckDB against the previous inventory of this root (stored as key-range parts): objects added,
   changed (ETag, size, mtime or storage class), removed, or carried over from folders not listed this run.
   Only added and changed keys are placed into products in Python (`archive.grouping`).
3. Products with any added, changed or removed object are rebuilt: their metadata file is read (in a thread
   pool) and an item built (`archive.items`); products with no object left are deleted.
4. The inventory parts whose key range saw a change are rewritten (copy-on-write); the others are kept.
5. Items go through harvester's normal records path (`stage_records` → `commit_stage`), committed together with
   the new inventory parts, which the state entry `archive:SITE:s3://bucket/prefix` names under "files".

Objects whose key is no product (or not a recognised product name) get inventory rows with a null product key
and a reason, and are counted in the run report; nothing is dropped.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import orjson
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from archive.errors import ArchiveError
from archive.fetch import MetadataResult, ProductFile, fetch_metadata
from archive.grouping import Classifier
from archive.inventory import read_inventory, read_manifest
from archive.items import ArchiveObject, build_item
from archive.listing import OBJECT_SCHEMA, ListingStats, archive_client, check_listable, list_archive
from harvester.commit import CommitRequest, commit_stage
from harvester.errors import InputError
from harvester.ingest import IngestOptions, stage_records
from harvester.manifest import Manifest
from harvester.product_names import ProductName
from harvester.sources_file import FileSummary, RawRecord
from harvester.staging import Stage
from harvester.storage import arrow_filesystem
from harvester.store import Store
from harvester.timeutil import format_datetime, parse_datetime

log = logging.getLogger(__name__)

INVENTORY_SCHEMA = pa.schema(
    [
        ("site", pa.string()),
        ("bucket", pa.string()),
        ("key", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
        ("storage_class", pa.string()),
        ("product", pa.string()),  # the product's root: its folder ('.../X.SAFE/') or its own key
        ("product_id", pa.string()),  # the item id (product name without suffixes)
        ("product_key", pa.string()),  # canonical key; null when the name is not a recognised product
        ("reason", pa.string()),  # why product_key is null
    ]
)
PLACEMENT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("product", pa.string()),
        ("product_id", pa.string()),
        ("product_key", pa.string()),
        ("reason", pa.string()),
    ]
)
PART_ROWS = 500_000
ROW_GROUP_ROWS = 100_000
EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class IndexOptions:
    site: str
    endpoint_url: str | None = None
    inventory: str | None = None  # an S3 Inventory manifest.json (or its configuration folder) instead of listing
    workers: int = 16  # listing and metadata threads
    metadata: bool = True  # read each changed product's metadata file (footprint, exact times)
    full: bool = False  # list every folder, even date folders older than the last run
    rebuild: bool = False  # rebuild every product's item, not only changed ones
    lookback_days: int = 3  # incremental runs re-list date folders this many days before the last run
    full_scan_days: float = 7.0  # ... and list everything when the last full scan is older than this
    part_rows: int = PART_ROWS
    ingest_workers: int = 0
    workdir: Path | None = None


@dataclass(frozen=True, slots=True)
class IndexResult:
    manifest: Manifest | None
    counts: dict[str, int]
    report: dict[str, Any]


@dataclass(slots=True)
class _Run:
    """What one run learnt, for the report."""

    mode: str
    scan: str
    objects: Counter[str] = field(default_factory=Counter)
    unplaced: Counter[str] = field(default_factory=Counter)  # objects placed this run that are no product
    unplaced_total: Counter[str] = field(default_factory=Counter)  # ... and all such objects of the inventory
    examples: list[dict[str, str]] = field(default_factory=list)
    metadata_errors: Counter[str] = field(default_factory=Counter)
    metadata_read: int = 0
    products_rebuilt: int = 0
    products_deleted: int = 0
    zero_byte: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def parse_root(root: str) -> tuple[str, str]:
    """'s3://bucket/some/prefix' → ('bucket', 'some/prefix/'): the prefix is a folder."""
    parsed = urlparse(root)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise InputError(f"the archive must be s3://bucket[/prefix], not {root!r}")
    prefix = parsed.path.lstrip("/")
    return parsed.netloc, (prefix.rstrip("/") + "/") if prefix else ""


def state_key(site: str, bucket: str, prefix: str) -> str:
    return f"archive:{site}:s3://{bucket}/{prefix}"


def index_archive(
    store: Store,
    root: str,
    options: IndexOptions,
    *,
    client: Any = None,
    progress: Callable[[int], None] | None = None,
) -> IndexResult:
    """Index the archive at `root` for site `options.site` as one new version (none when nothing changed)."""
    if not options.site.strip() or "|" in options.site:
        raise InputError("--site must be a non-empty name without '|'")
    started = datetime.now(UTC)
    bucket, prefix = parse_root(root)
    client = client if client is not None else archive_client(options.endpoint_url, workers=options.workers)
    store.storage.check_writable()
    base = store.head()
    key = state_key(options.site, bucket, prefix)
    previous: dict[str, Any] = dict(base.state.get(key) or {}) if base else {}
    stage = Stage(options.workdir)
    try:
        return _index(store, stage, client, bucket, prefix, key, previous, options, started, progress)
    finally:
        stage.close()


def _index(
    store: Store,
    stage: Stage,
    client: Any,
    bucket: str,
    prefix: str,
    key: str,
    previous: dict[str, Any],
    options: IndexOptions,
    started: datetime,
    progress: Callable[[int], None] | None,
) -> IndexResult:
    clock = time.monotonic()
    objects_path = stage.dir / "objects.parquet"
    listing = ListingStats()
    inventory_state: dict[str, str] | None = None
    if options.inventory:
        manifest = read_manifest(client, options.inventory)
        inventory_state = manifest.as_state()
        if previous.get("inventory") == inventory_state and not options.rebuild:
            report = {"kind": "archive", "provider": options.site, "root": f"s3://{bucket}/{prefix}"}
            report.update(mode="inventory", scan="unchanged", inventory_unchanged=manifest.url)
            return IndexResult(None, {"objects_seen": 0}, report)
        run = _Run("inventory", "full")
        batches: Iterable[pa.RecordBatch] = read_inventory(client, manifest, bucket, prefix, workers=4)
    else:
        check_listable(client, bucket, prefix)
        cutoff = _listing_cutoff(previous, options, started)
        run = _Run("listing", "full" if cutoff is None else "incremental")
        descend = None if cutoff is None else _date_pruner(cutoff)
        batches = list_archive(client, bucket, prefix, workers=options.workers, descend=descend, stats=listing)
    seen = _spill(batches, objects_path, progress)
    run.seconds["enumerate"] = round(time.monotonic() - clock, 3)

    clock = time.monotonic()
    planner = _Planner(store, stage, options, bucket, prefix, previous)
    try:
        plan = planner.plan(objects_path, listing.skipped, run)
    finally:
        planner.close()
    run.seconds["plan"] = round(time.monotonic() - clock, 3)

    clock = time.monotonic()
    items_path = stage.dir / "items.ndjson"
    built = _build_items(client, bucket, plan.products_path, items_path, options, run)
    run.seconds["items"] = round(time.monotonic() - clock, 3)

    clock = time.monotonic()
    workers = options.ingest_workers or (1 if built <= 2_000 else 0)
    ingest = IngestOptions(provider=options.site, workers=workers, workdir=options.workdir)
    stage_records(stage, _raw_items(items_path), ingest, FileSummary())
    run.seconds["stage"] = round(time.monotonic() - clock, 3)

    state = {
        "files": [p["path"] for p in plan.parts],
        "parts": plan.parts,
        "root": f"s3://{bucket}/{prefix}",
        "mode": run.mode,
        "objects": plan.total_objects,
        "products": plan.total_products,
        "last_run": format_datetime(started),
        "last_full_scan": format_datetime(started) if run.scan == "full" else previous.get("last_full_scan"),
    }
    if inventory_state is not None:
        state["inventory"] = inventory_state
    report = _report(options, bucket, prefix, run, seen, listing, plan)
    deletes = [(options.site, product_id) for product_id in plan.deleted]
    result = commit_stage(store, stage, CommitRequest(deletes=deletes, state={key: state}, report=report))
    counts = {
        **result.counts,
        "objects_seen": seen,
        "objects_added": run.objects["added"],
        "objects_changed": run.objects["changed"],
        "objects_removed": run.objects["removed"],
        "objects_unplaced": sum(run.unplaced.values()),
        "products_rebuilt": run.products_rebuilt,
        "products_deleted": run.products_deleted,
    }
    log.info("indexed s3://%s/%s for %s: %s", bucket, prefix, options.site, counts)
    return IndexResult(result.manifest, counts, report)


def _report(
    options: IndexOptions, bucket: str, prefix: str, run: _Run, seen: int, listing: ListingStats, plan: _Plan
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "kind": "archive",
        "provider": options.site,
        "root": f"s3://{bucket}/{prefix}",
        "mode": run.mode,
        "scan": run.scan,
        "objects": {"seen": seen, **dict(run.objects), "total": plan.total_objects, "zero_byte": run.zero_byte},
        "products": {
            "total": plan.total_products,
            "rebuilt": run.products_rebuilt,
            "deleted": run.products_deleted,
            "metadata_read": run.metadata_read,
            "metadata_errors": dict(run.metadata_errors),
        },
        "unplaced_objects": dict(run.unplaced),
        "unplaced_objects_total": dict(run.unplaced_total),
        "unplaced_examples": run.examples,
        "seconds": run.seconds,
    }
    if run.mode == "listing":
        report["listing"] = listing.as_dict()
        report["folders_skipped"] = listing.skipped[:EXAMPLES]
    if options.inventory:
        report["inventory"] = options.inventory
    return report


# --- incremental listing ------------------------------------------------------------------------------------


def _listing_cutoff(previous: dict[str, Any], options: IndexOptions, now: datetime) -> date | None:
    """The day before which date folders need not be re-listed; None for a full scan."""
    if options.full or options.rebuild or previous.get("mode") != "listing":
        return None
    try:
        last_run = parse_datetime(previous["last_run"])
        last_full = parse_datetime(previous["last_full_scan"])
    except (KeyError, ValueError):
        return None
    if (now - last_full).total_seconds() > options.full_scan_days * 86_400:
        return None
    return (last_run - timedelta(days=options.lookback_days)).date()


_YEAR = re.compile(r"(?:19|20)\d\d")
_MONTH = re.compile(r"0[1-9]|1[0-2]")
_DAY = re.compile(r"0[1-9]|[12]\d|3[01]")
_COMPACT_DAY = re.compile(r"((?:19|20)\d\d)-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])")


def folder_dates(folder: str) -> tuple[date, date] | None:
    """The days a date folder can hold ('.../2021/', '.../2021/08/', '.../2021/08/09/', '.../20210809/'), or
    None when the folder's name is not a date."""
    parts = folder.rstrip("/").split("/")
    compact = _COMPACT_DAY.fullmatch(parts[-1])
    try:
        if compact:
            day = date(int(compact[1]), int(compact[2]), int(compact[3]))
            return day, day
        if len(parts) >= 3 and _YEAR.fullmatch(parts[-3]) and _MONTH.fullmatch(parts[-2]) and _DAY.fullmatch(parts[-1]):
            day = date(int(parts[-3]), int(parts[-2]), int(parts[-1]))
            return day, day
        if len(parts) >= 2 and _YEAR.fullmatch(parts[-2]) and _MONTH.fullmatch(parts[-1]):
            year, month = int(parts[-2]), int(parts[-1])
            return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
        if _YEAR.fullmatch(parts[-1]):
            return date(int(parts[-1]), 1, 1), date(int(parts[-1]), 12, 31)
    except ValueError:  # 2021/02/30
        return None
    return None


def _date_pruner(cutoff: date) -> Callable[[str], bool]:
    def descend(folder: str) -> bool:
        days = folder_dates(folder)
        return days is None or days[1] >= cutoff

    return descend


# --- spilling the enumeration -------------------------------------------------------------------------------


def _spill(batches: Iterable[pa.RecordBatch], path: Path, progress: Callable[[int], None] | None) -> int:
    seen = 0
    with pq.ParquetWriter(str(path), OBJECT_SCHEMA, compression="zstd") as writer:
        for batch in batches:
            writer.write_batch(batch)
            seen += batch.num_rows
            if progress:
                progress(seen)
    return seen


# --- planning (DuckDB) --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    products_path: Path  # rows of the products to rebuild, sorted by product_id, key
    deleted: list[str]
    parts: list[dict[str, Any]]
    total_objects: int
    total_products: int


_DIFF_SQL = """
CREATE TEMP TABLE cur AS SELECT DISTINCT ON (key) * FROM read_parquet($objects) ORDER BY key;
CREATE TEMP TABLE prev AS SELECT * FROM prev_parts;
CREATE TEMP TABLE carried AS
  SELECT p.* FROM prev p WHERE EXISTS (SELECT 1 FROM skipped s WHERE starts_with(p.key, s.prefix));
CREATE TEMP TABLE scoped AS SELECT p.* FROM prev p ANTI JOIN carried c USING (key);
CREATE TEMP TABLE delta AS
  SELECT c.key, CASE WHEN p.key IS NULL THEN 'added'
                     WHEN c.etag IS DISTINCT FROM p.etag OR c.size <> p.size
                          OR c.last_modified IS DISTINCT FROM p.last_modified
                          OR c.storage_class IS DISTINCT FROM p.storage_class THEN 'changed'
                     ELSE 'same' END AS change
  FROM cur c LEFT JOIN scoped p USING (key);
CREATE TEMP TABLE removed AS SELECT p.key, p.product_id, p.product_key FROM scoped p ANTI JOIN cur c USING (key);
"""

_INVENTORY_SQL = """
CREATE TEMP TABLE inv AS
  SELECT $site AS site, $bucket AS bucket, c.key, c.size, c.etag, c.last_modified, c.storage_class,
         coalesce(pl.product, p.product) AS product,
         CASE WHEN pl.key IS NULL THEN p.product_id ELSE pl.product_id END AS product_id,
         CASE WHEN pl.key IS NULL THEN p.product_key ELSE pl.product_key END AS product_key,
         CASE WHEN pl.key IS NULL THEN p.reason ELSE pl.reason END AS reason
  FROM cur c LEFT JOIN placed pl USING (key) LEFT JOIN scoped p USING (key)
  UNION ALL SELECT * FROM carried;
CREATE TEMP TABLE affected AS
  SELECT DISTINCT product_id FROM (
    SELECT product_id FROM placed WHERE product_key IS NOT NULL
    UNION ALL SELECT product_id FROM removed WHERE product_key IS NOT NULL
    UNION ALL SELECT p.product_id FROM delta d JOIN scoped p USING (key)
              WHERE d.change = 'changed' AND p.product_key IS NOT NULL
    UNION ALL SELECT product_id FROM inv WHERE $rebuild AND product_key IS NOT NULL
  ) WHERE product_id IS NOT NULL;
"""


class _Planner:
    def __init__(
        self, store: Store, stage: Stage, options: IndexOptions, bucket: str, prefix: str, previous: dict[str, Any]
    ) -> None:
        import duckdb  # here, not at import: forked normalising workers must not inherit a live connection

        self.store, self.stage, self.options = store, stage, options
        self.bucket, self.prefix = bucket, prefix
        self.previous_parts: list[dict[str, Any]] = sorted(previous.get("parts") or [], key=lambda p: p["min_key"])
        (stage.dir / "duckdb").mkdir(exist_ok=True)
        self.con = duckdb.connect(config={"memory_limit": "1GB", "temp_directory": str(stage.dir / "duckdb")})

    def close(self) -> None:
        self.con.close()

    def plan(self, objects_path: Path, skipped: list[str], run: _Run) -> _Plan:
        con = self.con
        con.register("prev_parts", self._previous())
        con.register("skipped", pa.table({"prefix": pa.array(skipped, pa.string())}))
        con.execute(_DIFF_SQL.replace("$objects", _literal(str(objects_path))))
        for change, count in con.execute("SELECT change, count(*) FROM delta GROUP BY ALL").fetchall():
            run.objects[change] = int(count)
        run.objects["removed"] = int(_scalar(con, "SELECT count(*) FROM removed"))
        run.objects["carried"] = int(_scalar(con, "SELECT count(*) FROM carried"))
        placed = self._place(run)
        con.execute(f"CREATE TEMP TABLE placed AS SELECT * FROM read_parquet({_literal(str(placed))})")
        con.execute(
            _INVENTORY_SQL.replace("$site", _literal(self.options.site))
            .replace("$bucket", _literal(self.bucket))
            .replace("$rebuild", "true" if self.options.rebuild else "false")
        )
        run.zero_byte = int(_scalar(con, "SELECT count(*) FROM inv WHERE size = 0"))
        for reason, count in con.execute(
            "SELECT reason, count(*) FROM inv WHERE reason IS NOT NULL GROUP BY 1"
        ).fetchall():
            run.unplaced_total[str(reason)] = int(count)
        products_path = self.stage.dir / "products.parquet"
        con.execute(
            "COPY (SELECT i.* FROM inv i SEMI JOIN affected a USING (product_id) WHERE i.product_key IS NOT NULL "
            f"ORDER BY i.product_id, i.product, i.key) TO {_literal(str(products_path))} (FORMAT parquet)"
        )
        deleted = [
            row[0]
            for row in con.execute(
                "SELECT product_id FROM affected EXCEPT "
                "SELECT product_id FROM inv WHERE product_key IS NOT NULL ORDER BY 1"
            ).fetchall()
        ]
        run.products_deleted = len(deleted)
        total_products = int(_scalar(con, "SELECT count(DISTINCT product_id) FROM inv WHERE product_key IS NOT NULL"))
        parts = self._write_parts()
        return _Plan(products_path, deleted, parts, int(_scalar(con, "SELECT count(*) FROM inv")), total_products)

    def _previous(self) -> pa.Table | pads.Dataset:
        if not self.previous_parts:
            return INVENTORY_SCHEMA.empty_table()
        fs, root = arrow_filesystem(self.store.storage)
        paths = [root + p["path"] for p in self.previous_parts]
        return pads.dataset(paths, schema=INVENTORY_SCHEMA, format="parquet", filesystem=fs)

    def _place(self, run: _Run) -> Path:
        """Product placement of every added or changed key (the only per-key Python work), spilled to Parquet:
        a first run over a big archive places every key."""
        classifier = Classifier()
        path = self.stage.dir / "placed.parquet"
        reader = self.con.execute("SELECT key FROM delta WHERE change <> 'same' ORDER BY key").to_arrow_reader(100_000)
        with pq.ParquetWriter(str(path), PLACEMENT_SCHEMA) as writer:
            writer.write_table(PLACEMENT_SCHEMA.empty_table())
            for batch in reader:
                columns: dict[str, list[str | None]] = {n: [] for n in PLACEMENT_SCHEMA.names}
                for key in batch.column(0).to_pylist():
                    placement = classifier.place(key, self.prefix)
                    columns["key"].append(key)
                    columns["product"].append(placement.root)
                    columns["product_id"].append(placement.product_id)
                    columns["product_key"].append(placement.product_key)
                    columns["reason"].append(placement.reason)
                    if placement.reason:
                        run.unplaced[placement.reason] += 1
                        if len(run.examples) < EXAMPLES:
                            run.examples.append({"key": key, "reason": placement.reason})
                writer.write_table(pa.table(columns, schema=PLACEMENT_SCHEMA))
        return path

    def _write_parts(self) -> list[dict[str, Any]]:
        """Copy-on-write by key range: parts whose range saw an added, changed or removed key are rewritten."""
        con = self.con
        bounds = [p["min_key"] for p in self.previous_parts]
        con.register("bounds", pa.table({"idx": pa.array(range(len(bounds)), pa.int64()), "min_key": bounds}))
        touched = {
            int(row[0])
            for row in con.execute(
                """SELECT DISTINCT coalesce(b.idx, 0) FROM (
                     SELECT key FROM delta WHERE change <> 'same' UNION ALL SELECT key FROM removed) c
                   ASOF LEFT JOIN bounds b ON c.key >= b.min_key"""
            ).fetchall()
        }
        if not self.previous_parts:
            return self._write_range(None, None)
        kept = [p for i, p in enumerate(self.previous_parts) if i not in touched]
        for index in sorted(touched):
            low = bounds[index] if index > 0 else None
            high = bounds[index + 1] if index + 1 < len(bounds) else None
            kept.extend(self._write_range(low, high))
        return sorted(kept, key=lambda p: p["min_key"])

    def _write_range(self, low: str | None, high: str | None) -> list[dict[str, Any]]:
        where = " AND ".join([c for c, v in (("key >= $low", low), ("key < $high", high)) if v is not None] or ["true"])
        query = f"SELECT * FROM inv WHERE {where} ORDER BY key"
        params = {k: v for k, v in (("low", low), ("high", high)) if v is not None}
        reader = self.con.execute(query, params).to_arrow_reader(ROW_GROUP_ROWS)
        out: list[dict[str, Any]] = []
        buffer = INVENTORY_SCHEMA.empty_table()
        for batch in reader:
            buffer = pa.concat_tables([buffer, pa.Table.from_batches([batch]).cast(INVENTORY_SCHEMA)])
            while buffer.num_rows >= self.options.part_rows:
                out.append(self._write_part(buffer.slice(0, self.options.part_rows)))
                buffer = buffer.slice(self.options.part_rows)
        if buffer.num_rows:
            out.append(self._write_part(buffer))
        return out

    def _write_part(self, table: pa.Table) -> dict[str, Any]:
        site, bucket = quote(self.options.site, safe=""), quote(self.bucket, safe="")
        name = f"archive/site={site}/bucket={bucket}/part-{uuid.uuid4().hex}.parquet"
        local = self.stage.dir / "out" / name
        local.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, str(local), compression="zstd", row_group_size=ROW_GROUP_ROWS)
        if pq.ParquetFile(str(local)).metadata.num_rows != table.num_rows:
            raise ArchiveError(f"inventory part {name} was written incompletely")
        self.store.storage.upload(local, name)
        local.unlink()
        keys = table.column("key")
        return {"path": name, "rows": table.num_rows, "min_key": keys[0].as_py(), "max_key": keys[-1].as_py()}


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _scalar(con: Any, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    return row[0] if row else None


# --- items --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Product:
    product_id: str
    objects: list[dict[str, Any]]


def _products(path: Path) -> Iterator[_Product]:
    """Rows of products.parquet (sorted by product_id) grouped per product."""
    current: _Product | None = None
    parquet = pq.ParquetFile(str(path))
    for index in range(parquet.num_row_groups):
        for row in parquet.read_row_group(index).to_pylist():
            if current is None or current.product_id != row["product_id"]:
                if current is not None:
                    yield current
                current = _Product(row["product_id"], [])
            current.objects.append(row)
    if current is not None:
        yield current


def _build_items(
    client: Any, bucket: str, products_path: Path, items_path: Path, options: IndexOptions, run: _Run
) -> int:
    """Read metadata (threads) and write one [source href, item] line per product; returns the item count."""
    classifier = Classifier()
    built = 0
    with open(items_path, "wb") as out, ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        pending: deque[Future[tuple[str, dict[str, Any], MetadataResult | None]]] = deque()

        def drain(limit: int) -> None:
            nonlocal built
            while len(pending) > limit:
                href, item, result = pending.popleft().result()
                if result is not None and result.metadata is not None:
                    run.metadata_read += 1
                elif result is not None and result.error:
                    run.metadata_errors[result.error] += 1
                out.write(orjson.dumps([href, item]) + b"\n")
                built += 1

        for product in _products(products_path):
            name = classifier.parse(product.product_id)
            if name is None:  # placed with a key by an earlier grammar; not a product for this one
                continue
            if options.metadata:
                pending.append(pool.submit(_product_item, client, bucket, product, name, True))
            else:  # nothing to wait for: no thread hop
                done: Future[tuple[str, dict[str, Any], MetadataResult | None]] = Future()
                done.set_result(_product_item(client, bucket, product, name, False))
                pending.append(done)
            drain(options.workers * 4)  # bounded: metadata reads run ahead of the writer, not of memory
        drain(0)
    run.products_rebuilt = built
    return built


def _product_item(
    client: Any, bucket: str, product: _Product, name: ProductName, read: bool
) -> tuple[str, dict[str, Any], MetadataResult | None]:
    objects = []
    for row in product.objects:
        root = row["product"]
        objects.append(
            ArchiveObject(
                key=row["key"],
                size=int(row["size"]),
                etag=row["etag"] or "",
                last_modified=row["last_modified"] or datetime(1970, 1, 1, tzinfo=UTC),
                storage_class=row["storage_class"] or "STANDARD",
                path=row["key"][len(root) :] if root.endswith("/") else "",
            )
        )
    # several roots = the same product stored twice (a zip and a folder, two folders): read the first copy
    first = product.objects[0]["product"]
    result: MetadataResult | None = None
    if read:
        if first.endswith("/"):
            copy = [o for o, row in zip(objects, product.objects, strict=True) if row["product"] == first]
            files = [ProductFile(o.key, o.size, o.path) for o in copy]
        else:  # a single-object product (its checksum sidecar shares the root but holds no metadata)
            files = [ProductFile(o.key, o.size, "") for o in objects if o.key == first]
        if files:
            result = fetch_metadata(client, bucket, files, name.mission)
        else:
            result = MetadataResult(None, None, "no_metadata_file")
    item = build_item(
        bucket=bucket,
        product_id=product.product_id,
        name=name,
        objects=objects,
        metadata=result.metadata if result else None,
        metadata_path=result.path if result else None,
        geometry_missing=result.error if result else "metadata_not_read",
    )
    return f"s3://{bucket}/{first}", item, result


def _raw_items(path: Path) -> Iterator[RawRecord]:
    with open(path, "rb") as handle:
        for line in handle:
            href, item = orjson.loads(line)
            yield RawRecord(href, None, item, len(line))
