"""Every valid item file of the corpus, ingested, reads back equal to its input (up to the README's
normalisations), through cscale's reader and through stac-geoparquet's own reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.geometry import shape
from stac_geoparquet.arrow import stac_table_to_items

from harvester.ingest import IngestOptions, ingest
from harvester.reader import iter_items
from harvester.records import OVERFLOW, Record, normalise_chunk
from harvester.sources_file import FileSummary, read_records
from harvester.store import Store
from harvester.timeutil import parse_datetime

TIMES = {
    "datetime",
    "start_datetime",
    "end_datetime",
    "created",
    "updated",
    "expires",
    "published",
    "unpublished",
}
_LABEL = "stac-spec/v0.9.0/extensions/label/examples/"
# Rejections the corpus must produce, and why: these files are not valid STAC items.
EXPECTED_REJECTIONS = {
    "stac-geoparquet/misc/base_sentinel2_l2a.json": "missing_id",  # a pgstac "base item", not STAC
    "stac-geoparquet/misc/record_sentinel2_l2a.json": "not_an_item",  # dehydrated pgstac records
    "stac-geoparquet-spec/example-metadata.json": "not_an_item",  # Parquet key-value metadata
    "stac-spec/v0.9.0/extensions/sar/examples/envisat.json": "invalid_bbox",  # lat/lon swapped
    "stac-spec/v1.0.0-beta.2/extensions/sar/examples/envisat.json": "invalid_bbox",
    "stac-spec/v1.0.0-beta.2/extensions/tiled-assets/examples/example-dimension.json": "invalid_bbox",  # ymin > ymax
    "stac-spec/v0.9.0/extensions/label/examples/multidataset/zanzibar/znz029.json": "invalid_json",  # trailing comma
    # label examples of 0.9 whose Polygon coordinates lack a nesting level
    _LABEL + "multidataset/zanzibar/znz001.json": "invalid_geometry",
    _LABEL + "multidataset/spacenet-buildings/AOI_2_Vegas_img2636.json": "invalid_geometry",
    _LABEL + "multidataset/spacenet-buildings/AOI_3_Paris_img1648.json": "invalid_geometry",
    _LABEL + "multidataset/spacenet-buildings/AOI_4_Shanghai_img3344.json": "invalid_geometry",
    # label GeoJSON (building footprints), not STAC items: features without ids
    _LABEL + "spacenet-roads/spacenetroads_AOI_3_Paris_img101.geojson": "missing_id",
    "stac-spec/v1.0.0-beta.2/extensions/label/examples/spacenet-roads/spacenetroads_AOI_3_Paris_img101.geojson": (
        "missing_id"
    ),
}


def _item_files(corpus: Path) -> list[Path]:
    root = corpus / "items"
    return sorted(p for p in root.rglob("*") if p.suffix in (".json", ".ndjson", ".geojson"))


def _canonical(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _canonical(v, k) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, str) and key in TIMES:
        try:
            return parse_datetime(value).isoformat()
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def expected_item(raw: dict[str, Any], record: Record) -> dict[str, Any]:
    """The input as cscale promises to give it back (README, "Normalisations")."""
    item = dict(raw)
    item["type"] = "Feature"
    item.setdefault("links", [])
    item.setdefault("assets", {})
    if item.get("bbox") is None and record.row.get("bbox") is not None:
        b = record.row["bbox"]
        item["bbox"] = [b["xmin"], b["ymin"], b["xmax"], b["ymax"]]
    props = {k: (None if v is None else _canonical(v, k)) for k, v in item["properties"].items()}
    return {**_comparable(item), "properties": props}


def _comparable(item: dict[str, Any]) -> dict[str, Any]:
    out = {k: _canonical(v, k) for k, v in item.items() if k not in ("geometry", "properties")}
    geometry = item.get("geometry")
    out["geometry"] = None if geometry is None else shapely.to_wkb(shape(geometry), hex=True)
    if "properties" in item:
        out["properties"] = {k: (None if v is None else _canonical(v, k)) for k, v in item["properties"].items()}
    return out


@pytest.fixture(scope="module")
def ingested(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, dict[str, list[Any]]]:
    store = Store.open(str(tmp_path_factory.mktemp("roundtrip") / "store"))
    expected: dict[str, list[Any]] = {}
    root = corpus / "items"
    for path in _item_files(corpus):
        provider = str(path.relative_to(root))
        raws = list(read_records(str(path), FileSummary()))
        records, rejections, _ = normalise_chunk(raws, provider=provider, max_item_bytes=1 << 30)
        result = ingest(store, [str(path)], IngestOptions(provider=provider, workers=1))
        assert result.counts["quarantined"] == len(rejections)
        if provider in EXPECTED_REJECTIONS:
            assert {r.reason for r in rejections} == {EXPECTED_REJECTIONS[provider]}, rejections
        else:
            assert not rejections, [(r.reason, r.message) for r in rejections]
        by_id = {r.id: r for r in records}  # the newest of duplicate ids wins, like the store
        raw_by_id = {}
        for raw in raws:
            try:
                obj = raw.obj if raw.obj is not None else orjson.loads(raw.raw or b"")
            except orjson.JSONDecodeError:
                continue
            if isinstance(obj, dict) and obj.get("id") in by_id:
                raw_by_id[obj["id"]] = obj
        expected[provider] = [expected_item(raw_by_id[i], by_id[i]) for i in sorted(by_id)]
    return store, expected


def test_every_corpus_item_reads_back_equal(ingested: tuple[Store, dict[str, list[Any]]]) -> None:
    store, expected = ingested
    got: dict[str, list[Any]] = {}
    for provider, item in iter_items(store):
        got.setdefault(provider, []).append(_comparable(item))
    assert sum(len(v) for v in expected.values()) > 150
    for provider, items in expected.items():
        actual = sorted(got.get(provider, []), key=lambda i: i["id"])
        assert [i["id"] for i in actual] == [i["id"] for i in items], provider
        for want, have in zip(items, actual, strict=True):
            assert have == want, f"{provider} {want['id']}"


def test_stac_geoparquet_reader_agrees(ingested: tuple[Store, dict[str, list[Any]]]) -> None:
    """stac-geoparquet's reader sees cscale's columns as extra properties; once they are folded back
    (drop provider/product_key/content_hash/source_href, merge cscale:overflow) the items are the same.
    Parts holding a null geometry are skipped: stac-geoparquet 0.8.3 crashes on them (README)."""
    store, expected = ingested
    manifest = store.manifest()
    checked = 0
    for part in manifest.parts:
        table = pq.read_table(str(Path(store.url) / part.path))
        if table.column("geometry").null_count:
            continue
        want = {i["id"]: i for i in expected[part.provider]}
        for item in stac_table_to_items(table):
            props = item["properties"]
            for name in ("provider", "product_key", "content_hash", "source_href"):
                props.pop(name)
            overflow = props.pop(OVERFLOW, None)
            props = {k: v for k, v in props.items() if v is not None}
            if overflow:
                for path, value in orjson.loads(overflow).items():
                    if path.startswith("properties."):
                        props[path.split(".", 1)[1]] = value
                    else:
                        item[path] = value
            item["properties"] = props
            assert _comparable(item) == want[item["id"]], item["id"]
            checked += 1
    assert checked > 100
