"""Bad input: each case gets a clear error or a quarantine record with a reason; nothing is lost; the
previous version stays intact."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from harvester.errors import StoreError
from harvester.ingest import IngestOptions, ingest
from harvester.reader import iter_items
from harvester.store import Store

from conftest import write_ndjson


def item(i: int | str, **props: Any) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"item-{i}",
        "collection": "c1",
        "geometry": {"type": "Polygon", "coordinates": [[[10, 40], [11, 40], [11, 41], [10, 41], [10, 40]]]},
        "bbox": [10, 40, 11, 41],
        "properties": {"datetime": "2021-06-01T10:00:00Z", **props},
        "links": [{"rel": "self", "href": f"https://example.org/items/{i}.json"}],
        "assets": {"data": {"href": f"s3://bucket/{i}.tif", "type": "image/tiff"}},
    }


def run(store: Store, path: Path, provider: str = "P") -> dict[str, int]:
    return ingest(store, [str(path)], IngestOptions(provider=provider, workers=1)).counts


def quarantine_reasons(store: Store) -> list[str]:
    manifest = store.manifest()
    reasons = []
    for q in manifest.quarantine:
        reasons += pq.read_table(str(Path(store.url) / q.path), columns=["reason"]).column(0).to_pylist()
    return sorted(reasons)


def test_every_corpus_invalid_file_is_taken_or_quarantined(corpus: Path, tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    files = sorted(p for p in (corpus / "invalid").rglob("*") if p.suffix in (".json", ".geojson"))
    assert len(files) > 150
    total = {"seen": 0, "written": 0, "quarantined": 0, "deduplicated": 0}
    for path in files:
        counts = run(store, path, provider=str(path.relative_to(corpus)))
        assert counts["seen"] == counts["written"] + counts["quarantined"] + counts["deduplicated"]
        for key in total:
            total[key] += counts[key]
    # Structurally broken items are quarantined, with a reason each.
    reasons = quarantine_reasons(store)
    assert len(reasons) == total["quarantined"] > 0
    assert all(reasons)
    broken = {
        "invalid/stac-validator/v100/bad-item.json",
        "invalid/stac-validator/bad_data/bad_item_v090.json",
        "invalid/stac-validator/1beta2/extensions/pointcloud/examples/bad-example-autzen.json",
    }
    providers = {
        row["provider"]
        for q in store.manifest().quarantine
        for row in pq.read_table(str(Path(store.url) / q.path), columns=["provider"]).to_pylist()
    }
    assert broken <= providers


def test_truncated_line_and_non_utf8_bytes(tmp_path: Path) -> None:
    good = [orjson.dumps(item(i)) for i in range(3)]
    path = tmp_path / "in.ndjson"
    path.write_bytes(good[0] + b"\n" + good[1][:-20] + b"\n" + b'{"id": "\xff\xfe"}\n' + good[2] + b"\n")
    store = Store.open(str(tmp_path / "store"))
    counts = run(store, path)
    assert counts["seen"] == 4 and counts["written"] == 2 and counts["quarantined"] == 2
    assert quarantine_reasons(store) == ["invalid_json", "not_utf8"]
    raws = [r for q in store.manifest().quarantine for r in pq.read_table(str(Path(store.url) / q.path)).to_pylist()]
    assert all(r["raw"] and r["source_href"].rsplit("#L", 1)[1] in ("2", "3") for r in raws)


def test_duplicates_within_and_across_batches_keep_the_newest(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    old = item(1, updated="2022-01-01T00:00:00Z", note="old")
    new = item(1, updated="2023-01-01T00:00:00Z", note="new")
    last_seen = item(2, note="second")
    first_seen = item(2, note="first")
    counts = run(store, write_ndjson(tmp_path / "a.ndjson", [new, old, first_seen, last_seen]))
    assert counts["written"] == 2 and counts["deduplicated"] == 2
    got = {i["id"]: i["properties"]["note"] for _, i in iter_items(store)}
    assert got == {"item-1": "new", "item-2": "second"}
    # Across batches: an older copy does not replace a newer one; the same content writes nothing.
    counts = run(store, write_ndjson(tmp_path / "b.ndjson", [old]))
    assert counts["stale"] == 1 and counts["written"] == 0
    newer = item(1, updated="2024-01-01T00:00:00Z", note="newest")
    counts = run(store, write_ndjson(tmp_path / "c.ndjson", [newer, last_seen]))
    assert counts["changed"] == 1 and counts["unchanged"] == 1
    got = {i["id"]: i["properties"]["note"] for _, i in iter_items(store)}
    assert got == {"item-1": "newest", "item-2": "second"}


def test_null_geometry_antimeridian_and_wrong_bboxes(tmp_path: Path) -> None:
    nullgeom = item("null")
    nullgeom["geometry"] = None
    del nullgeom["bbox"]
    across = item("am")
    across["geometry"] = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[175, -10], [180, -10], [180, -5], [175, -5], [175, -10]]],
            [[[-180, -10], [-175, -10], [-175, -5], [-180, -5], [-180, -10]]],
        ],
    }
    across["bbox"] = [175, -10, -175, -5]
    derived = copy.deepcopy(across)
    derived["id"] = "am-derived"
    del derived["bbox"]
    wrong = item("wrong")
    wrong["bbox"] = [11, 40, 10, 41]  # min x > max x, but the geometry does not cross the antimeridian
    lat = item("lat")
    lat["bbox"] = [10, 40, 11, 95]
    store = Store.open(str(tmp_path / "store"))
    counts = run(store, write_ndjson(tmp_path / "in.ndjson", [nullgeom, across, derived, wrong, lat]))
    assert counts["written"] == 3 and quarantine_reasons(store) == ["invalid_bbox", "invalid_bbox"]
    got = {i["id"]: i for _, i in iter_items(store)}
    assert got["item-null"]["geometry"] is None and "bbox" not in got["item-null"]
    assert got["item-am"]["bbox"] == [175, -10, -175, -5]
    assert got["am-derived"]["bbox"] == [175, -10, -175, -5]


def test_unknown_version_huge_properties_and_missing_fields(tmp_path: Path) -> None:
    future = item("future")
    future["stac_version"] = "7.0.0"
    huge = item("huge", blob="x" * (10 << 20))
    noid = item("noid")
    del noid["id"]
    nodate = item("nodate")
    nodate["properties"] = {"title": "no datetime"}
    badlink = item("badlink")
    badlink["links"] = [{"rel": "self"}]
    store = Store.open(str(tmp_path / "store"))
    counts = run(store, write_ndjson(tmp_path / "in.ndjson", [future, huge, noid, nodate, badlink, item(1)]))
    assert counts["written"] == 1 and counts["quarantined"] == 5
    assert quarantine_reasons(store) == [
        "invalid_link",
        "item_too_large",
        "missing_datetime",
        "missing_id",
        "unknown_stac_version",
    ]


def test_type_conflicts_are_resolved_without_loss(tmp_path: Path) -> None:
    items = [
        item(1, year=2020),
        item(2, year="2021"),
        item(3, year=2022),
        item(4, nested={"a": 1}),
        item(5, nested={"a": "one", "b": [1, 2]}),
        item(6, nested={"a": 2}),
    ]
    items[1]["assets"]["extra"] = {"href": "x", "file:size": "big"}
    items[2]["assets"]["extra"] = {"href": "y", "file:size": 12}
    store = Store.open(str(tmp_path / "store"))
    # Two files make two batches; the conflicting values sit in different batches and within one.
    run(store, write_ndjson(tmp_path / "a.ndjson", items[:3]))
    run(store, write_ndjson(tmp_path / "b.ndjson", items[3:]))
    got = {i["id"]: i for _, i in iter_items(store)}
    assert got["item-1"]["properties"]["year"] == 2020
    assert got["item-2"]["properties"]["year"] == "2021"
    assert got["item-5"]["properties"]["nested"] == {"a": "one", "b": [1, 2]}
    assert got["item-4"]["properties"]["nested"] == {"a": 1}
    assert got["item-2"]["assets"]["extra"]["file:size"] == "big"
    assert got["item-3"]["assets"]["extra"]["file:size"] == 12


def test_store_root_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(StoreError, match="not writable"):
        ingest(
            Store.open(str(blocker / "store")),
            [str(write_ndjson(tmp_path / "a.ndjson", [item(1)]))],
            IngestOptions(provider="P", workers=1),
        )


def test_missing_s3_bucket(moto_server: str, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        ingest(
            Store.open("s3://no-such-bucket/store"),
            [str(write_ndjson(tmp_path / "a.ndjson", [item(1)]))],
            IngestOptions(provider="P", workers=1),
        )
