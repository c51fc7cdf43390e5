"""`cscale publish`: static STAC from a snapshot — valid (stac-valid, core schemas offline), loadable by pystac with
exactly the snapshot's items, incremental, crash-safe, confined to --out whatever the ids, and on S3 (moto)."""

from __future__ import annotations

import os
import posixpath
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pystac
import pytest
from click.testing import CliRunner

import queries.publish
from harvester.cli import cli
from harvester.ingest import IngestOptions, ingest
from harvester.parts import batch_to_items
from harvester.reader import iter_items
from harvester.store import Store
from queries.publish import CRASH_ENV, PENDING, STATE, PublishOptions, publish
from queries.publish_items import items_of
from queries.publish_plan import bucket_dir, relative_href, safe_name, time_leaves

from conftest import write_ndjson

TOTAL = 56  # items in federation()
HOSTILE_IDS = [
    "../../../../etc/passwd",
    "a/b/c",
    "..",
    ".hidden",
    "catalog",
    "Collection",
    "item.json",
    "ümlaut-ÄÖ-é",
    "emoji-🚀",
    "x" * 600,
    "spaces and %2e%2e",
    "~tilde",
    "back\\slash",
    "CON",
]


def make_item(item_id: str, when: str, *, collection: str | None = "s2", cloud: float = 10.0, **props: Any) -> Any:
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": "1.1.0",
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[10, 40], [11, 40], [11, 41], [10, 41], [10, 40]]]},
        "bbox": [10.0, 40.0, 11.0, 41.0],
        "properties": {
            "datetime": when,
            "platform": "sentinel-2a" if cloud < 50 else "sentinel-2b",
            "constellation": "sentinel-2",
            "instruments": ["msi"],
            "eo:cloud_cover": cloud,
            "gsd": 10,
            **props,
        },
        "links": [
            {"rel": "self", "href": f"https://provider.example/items/{item_id}"},
            {"rel": "license", "href": "https://provider.example/license"},
        ],
        "assets": {
            "data": {"href": f"s3://bucket/{item_id}.tif", "type": "image/tiff", "roles": ["data"]},
            "meta": {"href": f"s3://bucket/{item_id}.xml", "title": None if cloud > 20 else "metadata"},
        },
    }
    if collection is not None:
        item["collection"] = collection
    return item


SOURCE_COLLECTION = {
    "type": "Collection",
    "stac_version": "1.0.0",
    "id": "s2",
    "title": "Sentinel-2 L2A at EODC",
    "description": "Bottom-of-atmosphere reflectance.",
    "license": "CC-BY-4.0",
    "keywords": ["sentinel", "copernicus"],
    "providers": [{"name": "EODC", "roles": ["host"]}],
    "extent": {"spatial": {"bbox": [[0, 0, 1, 1]]}, "temporal": {"interval": [["2000-01-01T00:00:00Z", None]]}},
    "summaries": {"gsd": [10, 20, 60]},
    "links": [
        {"rel": "self", "href": "https://provider.example/collections/s2"},
        {"rel": "license", "href": "https://creativecommons.org/licenses/by/4.0/"},
    ],
}


def federation() -> dict[str, list[Any]]:
    """Two providers (one with a hostile name), three collections, items without collection, hostile ids, and a
    day busy enough (with max_items=4) to split a month by day, hour and hash bucket."""
    eodc: list[Any] = [SOURCE_COLLECTION]
    eodc += [make_item(f"S2-{i:03d}", f"2022-06-{1 + i % 20:02d}T10:00:00Z", cloud=i * 3.0) for i in range(20)]
    eodc += [make_item(f"busy-{i:02d}", "2022-07-04T08:00:00Z", cloud=5.0) for i in range(12)]  # one hour: hashed
    eodc += [make_item(hid, "2021-01-15T00:00:00Z") for hid in HOSTILE_IDS]
    eodc += [make_item(f"S1-{i}", f"2020-0{1 + i}-01T00:00:00Z", collection="s1") for i in range(3)]
    eodc += [make_item(f"loose-{i}", "2019-05-05T05:05:05Z", collection=None) for i in range(2)]
    grnet = [make_item(f"L8-{i}", f"2023-12-{10 + i}T12:00:00.5Z", collection="landsat") for i in range(4)]
    grnet += [make_item("../../escape", "2023-12-31T23:59:59Z", collection="../..")]
    return {"EODC": eodc, "../GR NET/ü": grnet}


def build_store(root: Path, data: dict[str, list[Any]]) -> Store:
    store = Store.open(str(root / "store"))
    for n, (provider, items) in enumerate(data.items()):
        path = write_ndjson(root / f"input-{n}.ndjson", items)
        result = ingest(store, [str(path)], IngestOptions(provider=provider, workers=1))
        assert result.counts["quarantined"] == 0, result.counts
    return store


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return build_store(tmp_path_factory.mktemp("fed"), federation())


def snapshot(store: Store, version: int | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    return {(safe_name(p), item["id"]): item for p, item in iter_items(store, version)}


def without_links(item: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != "links"}


def walk_json(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(root.rglob("*.json")):
        yield path, orjson.loads(path.read_bytes())


def published(root: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Items pystac reaches from the root catalog, keyed by (provider folder, id), as published (the file pystac
    read: pystac's own to_dict() rewrites datetimes and adds empty stac_extensions)."""
    catalog = pystac.Catalog.from_file(str(root / "catalog.json"))
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for item in catalog.get_items(recursive=True):
        path = Path(item.get_self_href() or "").resolve()
        key = (path.relative_to(root.resolve()).parts[0], item.id)
        assert key not in found, f"{key} published twice"
        found[key] = orjson.loads(path.read_bytes())
        assert found[key]["id"] == item.id and item.collection_id == found[key].get("collection")
    return found


def links_resolve(root: Path) -> None:
    """Every relative link of every document reachable from the root points at an existing file."""
    todo, seen = [root / "catalog.json"], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        assert path.is_file(), f"dangling link to {path}"
        doc = orjson.loads(path.read_bytes())
        for link in doc.get("links", []):
            if link["rel"] in ("child", "item", "parent", "root", "collection"):
                todo.append((path.parent / link["href"]).resolve())


def run(store: Store, out: Path, **options: Any) -> Any:
    return publish(store, PublishOptions(out=str(out), workers=options.pop("workers", 1), **options))


# ---------------------------------------------------------------------------------------------------- names


def test_safe_names_are_unique_deterministic_and_plain_files() -> None:
    names = [safe_name(i) for i in HOSTILE_IDS]
    assert len(set(names)) == len(names)
    assert names == [safe_name(i) for i in HOSTILE_IDS]
    for name in names:
        assert "/" not in name and "\\" not in name and not name.startswith(".")
        assert name.isascii() and len((name + ".json").encode()) <= 255
        assert name.lower() not in ("catalog", "collection") and not name.lower().endswith(".json")
    assert safe_name("S2A_MSIL2A_20220601T101559_N0400_R065_T32TNS_20220601T163000") == (
        "S2A_MSIL2A_20220601T101559_N0400_R065_T32TNS_20220601T163000"
    )
    assert safe_name("ab") != safe_name("AB") and safe_name("a/b") != safe_name("a_b")


def test_relative_hrefs_and_tree_shape() -> None:
    paths = ["catalog.json", "P/catalog.json", "P/C/collection.json", "P/C/2022/06/x.json", "P/D/2021/catalog.json"]
    for source in paths:
        for target in [*paths, "P/C/parquet/", "P/"]:
            rel = posixpath.relpath(target.rstrip("/"), posixpath.dirname(source) or ".")
            expected = rel if rel.startswith("..") else f"./{rel}" if rel != "." else "."
            expected += "/" if target.endswith("/") else ""
            assert relative_href(source, target) == expected, (source, target)
    # A month within max_items is one leaf; a bigger one splits by day, a bigger day by hour, a bigger hour hashes.
    counts = [("P/C", (2022, 6, 1, 10), 3), ("P/C", (2022, 7, 1, 10), 3), ("P/C", (2022, 7, 2, 11), 2)]
    counts += [("P/C", (2022, 8, 3, h), 2) for h in range(3)] + [("P/C", (2022, 9, 4, 5), 9)]
    counts += [("P/C", (None, None, None, None), 1)]
    leaves = {t.key: (t.leaf, t.hashed) for t in time_leaves(counts, 4)}
    assert leaves[(2022, 6, 1, 10)] == ("P/C/2022/06", False)
    assert leaves[(2022, 7, 1, 10)] == ("P/C/2022/07/01", False)
    assert leaves[(2022, 8, 3, 0)] == ("P/C/2022/08/03/00", False)
    assert leaves[(2022, 9, 4, 5)] == ("P/C/2022/09/04/05", True)
    assert leaves[(None, None, None, None)] == ("P/C/undated", False)
    assert bucket_dir("a3f0") == "ha3/hf0"


# ---------------------------------------------------------------------------------------------------- acceptance


def test_publish_loads_in_pystac_with_exactly_the_snapshot(fed: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = run(fed, out, max_items=4)
    expected = snapshot(fed)
    assert report.items == report.items_written == len(expected) == TOTAL
    got = published(out)
    assert set(got) == set(expected)
    for key, item in got.items():
        assert without_links(item) == without_links(expected[key]), key
    # Our own links replace the source's structural ones; the rest is kept.
    some = got[("EODC", "S2-001")]
    assert {link["rel"] for link in some["links"]} == {"root", "parent", "collection", "license", "via"}
    assert {"rel": "via", "href": "https://provider.example/items/S2-001"} in some["links"]
    links_resolve(out)

    # Nothing outside --out: the only things next to it are what the test made.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    for path in out.rglob("*"):
        assert path.resolve().is_relative_to(out.resolve())
    # No catalog lists more than max_items items; the busy hour was split by hash buckets.
    for path, doc in walk_json(out):
        if doc.get("type") in ("Catalog", "Collection"):
            assert sum(link["rel"] == "item" for link in doc["links"]) <= 4, path
    assert list((out / "EODC" / "s2" / "2022" / "07" / "04" / "08").glob("h*/catalog.json"))


def test_collections_from_data_and_source(fed: Store, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(fed, out)
    s2 = orjson.loads((out / "EODC" / "s2" / "collection.json").read_bytes())
    # The source's collection JSON is the starting point ...
    assert s2["title"] == "Sentinel-2 L2A at EODC" and s2["license"] == "CC-BY-4.0"
    assert s2["keywords"] == ["sentinel", "copernicus"] and s2["providers"][0]["name"] == "EODC"
    assert {link["rel"] for link in s2["links"]} == {"root", "parent", "child", "license"}
    # ... extents and summaries come from the data.
    assert s2["extent"]["spatial"]["bbox"] == [[10.0, 40.0, 11.0, 41.0]]
    assert s2["extent"]["temporal"]["interval"] == [["2021-01-15T00:00:00Z", "2022-07-04T08:00:00Z"]]
    assert s2["summaries"]["platform"] == ["sentinel-2a", "sentinel-2b"]
    assert s2["summaries"]["eo:cloud_cover"] == {"minimum": 0.0, "maximum": 57.0}
    assert s2["summaries"]["gsd"] == {"minimum": 10, "maximum": 10}
    # The mirror asset names exactly this version's parts, copied next to the collection.
    mirror = s2["assets"]["collection-mirror"]
    assert mirror["href"] == "./parquet/" and mirror["type"] == "application/vnd.apache.parquet"
    parts = [p for p in fed.manifest().parts if p.provider == "EODC" and p.collection == "s2"]
    assert sorted(mirror["cscale:files"]) == sorted(Path(p.path).name for p in parts)
    mirrored = sum(pq.read_metadata(out / "EODC" / "s2" / "parquet" / f).num_rows for f in mirror["cscale:files"])
    assert mirrored == sum(p.rows for p in parts)
    # A collection without source JSON gets a generated one; items without collection a plain catalog.
    landsat = next(out.glob("*/*/collection.json"), None)
    assert landsat is not None
    provider_dirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert provider_dirs == sorted(["EODC", safe_name("../GR NET/ü")])
    loose = orjson.loads((out / "EODC" / "~items" / "catalog.json").read_bytes())
    assert loose["type"] == "Catalog"


def test_validates_with_stac_valid_offline(fed: Store, tmp_path: Path) -> None:
    """Core schemas only: pystac ships STAC 1.1.0's; no extension schema is available offline."""
    from stac_validator import stac_validator

    out = tmp_path / "out"
    run(fed, out, max_items=4)
    local = Path(pystac.__file__).parent / "validation" / "jsonschemas"
    base = "https://schemas.stacspec.org/v1.1.0"
    schema_map = {f"{base}/{k}-spec/json-schema/{k}.json": local / "stac-spec/v1.1.0" / f"{k}.json" for k in
                  ("item", "catalog", "collection")}  # fmt: skip
    for name in ("basics", "bands", "common", "data-values", "datetime", "instrument", "licensing", "provider"):
        schema_map[f"{base}/item-spec/json-schema/{name}.json"] = local / "stac-spec/v1.1.0" / f"{name}.json"
    for name in ("Feature", "Geometry"):
        schema_map[f"https://geojson.org/schema/{name}.json"] = local / "geojson" / f"{name}.json"
    checked = 0
    for path, _ in walk_json(out):
        validator = stac_validator.StacValidate(
            str(path), core=True, schema_map={k: str(v) for k, v in schema_map.items()}
        )
        assert validator.run(), (path, validator.message)
        checked += 1
    assert checked == TOTAL + sum(1 for _ in out.rglob("catalog.json")) + sum(1 for _ in out.rglob("collection.json"))
    # and a broken document is caught (the check can fail)
    bad = out / "bad.json"
    bad.write_bytes(orjson.dumps({**orjson.loads((out / "catalog.json").read_bytes()), "links": "nope"}))
    validator = stac_validator.StacValidate(str(bad), core=True, schema_map={k: str(v) for k, v in schema_map.items()})
    assert not validator.run()


def test_fast_item_restore_equals_batch_to_items(fed: Store, corpus: Path, tmp_path: Path) -> None:
    stores = [fed]
    corpus_store = Store.open(str(tmp_path / "corpus"))
    for rel in ("items/stac-geoparquet/pc-item-lists", "items/rustac/server/sentinel-2", "items/stactools"):
        sources = sorted(str(p) for p in (corpus / rel).rglob("*.json"))
        ingest(corpus_store, sources, IngestOptions(provider=rel.split("/")[1], workers=1))
    stores.append(corpus_store)
    compared = 0
    for store in stores:
        for part in store.manifest().parts:
            parquet = pq.ParquetFile(store.storage.uri(part.path))
            for rg in range(parquet.num_row_groups):
                table = parquet.read_row_group(rg)
                expected = list(batch_to_items(table))
                assert list(items_of(table)) == expected
                raw = [orjson.loads(orjson.dumps(i)) for i in items_of(table, raw_geometry=True)]
                assert raw == [orjson.loads(orjson.dumps(i)) for i in expected]
                sliced = table.slice(1, max(0, table.num_rows - 2))
                assert list(items_of(sliced)) == list(batch_to_items(sliced))
                compared += table.num_rows
    assert compared > 100


# ---------------------------------------------------------------------------------------------------- incremental


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_incremental_republish_rewrites_only_what_changed(tmp_path: Path) -> None:
    data = federation()
    store = build_store(tmp_path, data)
    out = tmp_path / "out"
    first = run(store, out, max_items=4)
    before = mtimes(out)
    again = run(store, out, max_items=4)
    assert again.items_written == 0 and again.catalogs_written == 0 and again.parts_copied == 0
    assert mtimes(out) == before

    # Version 2: one item changed, one added (in a month of its own), the rest as they were.
    changed = make_item("S1-0", "2020-01-01T00:00:00Z", collection="s1", cloud=99.0)
    added = make_item("S1-new", "2020-09-09T09:00:00Z", collection="s1")
    path = write_ndjson(tmp_path / "v2.ndjson", [changed, added])
    assert ingest(store, [str(path)], IngestOptions(provider="EODC", workers=1)).manifest.version == 3
    second = run(store, out, max_items=4)
    assert second.items_written == 2 and second.items == first.items + 1
    after = mtimes(out)
    rewritten = {k for k in after if before.get(k) != after[k]}
    s1 = "EODC/s1"
    assert rewritten == {
        f"{s1}/2020/01/S1-0.json",
        f"{s1}/2020/09/S1-new.json",
        f"{s1}/2020/09/catalog.json",  # new leaf
        f"{s1}/2020/catalog.json",  # gained a child
        f"{s1}/collection.json",  # extent, summaries and mirror parts changed
        f"{s1}/parquet/" + Path(next(p.path for p in store.manifest().parts if p.collection == "s1")).name,
        STATE,
    }
    assert published(out).keys() == snapshot(store).keys()

    # Publishing the older version again: the added item disappears, and so do the folders only it used.
    third = run(store, out, max_items=4, version=2)
    assert third.items_written == 1 and third.files_deleted >= 3
    assert not (out / s1 / "2020" / "09").exists()
    assert published(out).keys() == snapshot(store, 2).keys()
    assert not (out / PENDING).exists()
    # The state maps every item to its file, content hash and the version it was written at.
    state = pq.read_table(out / STATE).to_pylist()
    items = {r["id"]: r for r in state if r["kind"] == "item"}
    assert len(items) == first.items and items["S1-0"]["version"] == 2 and items["S2-000"]["version"] == 2

    # Changing the link layout rewrites everything.
    fourth = run(store, out, max_items=4, version=2, href_base="https://stac.example/fed")
    assert fourth.items_written == first.items
    doc = orjson.loads((out / "EODC" / "catalog.json").read_bytes())
    assert all(link["href"].startswith("https://stac.example/fed/") for link in doc["links"])
    assert {"rel": "self", "href": "https://stac.example/fed/EODC/catalog.json", "type": "application/json"} in doc[
        "links"
    ]


def test_a_catalog_whose_recorded_hash_differs_is_rewritten(fed: Store, tmp_path: Path) -> None:
    """Only a catalog changes (as after an upgrade that changes how catalogs are written): it alone is rewritten,
    from inside the streamed leaves, with the pending file written first and removed after."""
    import pyarrow as pa

    out = tmp_path / "out"
    run(fed, out, max_items=4)
    table = pq.read_table(out / STATE)
    leaf = "EODC/s2/2022/06/01/catalog.json"
    hashes = [
        ("0" * 32 if p == leaf else h)
        for p, h in zip(table["path"].to_pylist(), table["hash"].to_pylist(), strict=True)
    ]
    table = table.set_column(table.schema.get_field_index("hash"), "hash", pa.array(hashes, pa.string()))
    pq.write_table(table.replace_schema_metadata(pq.read_schema(out / STATE).metadata), out / STATE)
    before = mtimes(out)
    report = run(fed, out, max_items=4)
    assert report.items_written == 0 and report.catalogs_written == 1 and report.files_deleted == 0
    changed = {k for k, v in mtimes(out).items() if before.get(k) != v}
    assert changed == {leaf, STATE} and not (out / PENDING).exists()


class Crash(BaseException):
    """Stands for kill -9 in-process: nothing of the publish catches it, so nothing after the point runs."""


def test_interrupted_publish_leaves_a_valid_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = build_store(tmp_path, federation())
    out = tmp_path / "out"
    run(store, out, max_items=4)
    old_keys = set(published(out))
    extra = [make_item(f"late-{i}", "2022-06-30T10:00:00Z", cloud=1.0) for i in range(6)]
    extra.append(make_item("S2-000", "2022-06-01T10:00:00Z", cloud=77.0))
    ingest(store, [str(write_ndjson(tmp_path / "more.ndjson", extra))], IngestOptions(provider="EODC", workers=1))
    new_keys = set(snapshot(store))

    # Interrupted at every step in turn, each run starting from what the previous one left.
    for point, reachable in (("after_pending", old_keys), ("after_items", old_keys), ("before_root", new_keys)):

        def crash(name: str, point: str = point) -> None:
            if name == point:
                raise Crash(name)

        monkeypatch.setattr("queries.publish._crash_point", crash)
        with pytest.raises(Crash):
            run(store, out, max_items=4)
        links_resolve(out)  # the root reaches only files that exist ...
        assert set(published(out)) == reachable, point  # ... and the items of one version or the other
        assert (out / PENDING).exists()
    monkeypatch.undo()

    # A real kill -9 once the new state is written but before old files are removed.
    cmd = [sys.executable, "-m", "harvester.cli", "-q", "publish", "--store", store.url, "--out", str(out)]
    cmd += ["--max-items", "4", "--workers", "1"]
    proc = subprocess.run(cmd, env={**os.environ, CRASH_ENV: "after_state"}, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    links_resolve(out)
    assert set(published(out)) == new_keys

    # The next publish finishes the job: byte for byte the tree of a publish from scratch.
    report = run(store, out, max_items=4)
    assert not (out / PENDING).exists() and report.items_written < report.items
    fresh = tmp_path / "fresh"
    run(store, fresh, max_items=4)
    files = {k for k in mtimes(fresh) if k != STATE}
    assert {k for k in mtimes(out) if k != STATE} == files
    for rel in files:
        assert (out / rel).read_bytes() == (fresh / rel).read_bytes(), rel


def test_worker_processes_write_the_same_tree(fed: Store, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    run(fed, one, max_items=4, workers=1)
    report = run(fed, two, max_items=4, workers=2)
    assert report.items_written == TOTAL
    assert_same_tree(one, two)


def assert_same_tree(one: Path, two: Path) -> None:
    files = {k for k in mtimes(one) if k != STATE}
    assert files == {k for k in mtimes(two) if k != STATE}
    for rel in files:
        assert (one / rel).read_bytes() == (two / rel).read_bytes()


def test_row_groups_split_into_tasks_write_the_same_tree(
    fed: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole, split = tmp_path / "whole", tmp_path / "split"
    run(fed, whole, max_items=4, workers=2)
    monkeypatch.setattr(queries.publish, "MIN_TASK_ROWS", 2)  # every row group cut into pieces of a few rows
    report = run(fed, split, max_items=4, workers=2)
    assert report.items_written == TOTAL
    assert_same_tree(whole, split)


def test_round_trip_through_the_static_harvester(fed: Store, tmp_path: Path) -> None:
    """`cscale harvest static` over the published catalog gives back the snapshot's items (up to links)."""
    out = tmp_path / "out"
    run(fed, out, max_items=4)
    again = tmp_path / "again"
    args = ["harvest", "static", str(out / "catalog.json"), "--provider", "RT", "--store", str(again)]
    result = CliRunner().invoke(cli, [*args, "--workers", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    expected = {item["id"]: item for _, item in iter_items(fed)}
    got = {item["id"]: item for _, item in iter_items(Store.open(str(again)))}
    assert got.keys() == expected.keys() and len(got) == TOTAL
    for key, item in got.items():
        assert without_links(item) == without_links(expected[key]), key
    collections = Store.open(str(again)).manifest().collections
    assert collections["RT|s2"]["title"] == "Sentinel-2 L2A at EODC"


# ---------------------------------------------------------------------------------------------------- S3 and CLI


def test_s3_output_on_moto(fed: Store, bucket: str, tmp_path: Path) -> None:
    from harvester.storage import s3_client

    local = tmp_path / "local"
    run(fed, local, max_items=4)
    target = f"s3://{bucket}/stac/v1"
    report = publish(fed, PublishOptions(out=target, max_items=4, workers=1))
    assert report.items_written == TOTAL
    client = s3_client()
    keys = {
        obj["Key"].removeprefix("stac/v1/")
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="stac/v1/")
        for obj in page.get("Contents", [])
    }
    assert keys == set(mtimes(local))
    for rel in ("catalog.json", "EODC/s2/collection.json", "EODC/s2/2022/06/01/S2-000.json"):
        obj = client.get_object(Bucket=bucket, Key=f"stac/v1/{rel}")
        assert obj["Body"].read() == (local / rel).read_bytes()
    item = client.head_object(Bucket=bucket, Key="stac/v1/EODC/s2/2022/06/01/S2-000.json")
    assert item["ContentType"] == "application/geo+json"
    catalog = client.head_object(Bucket=bucket, Key="stac/v1/catalog.json")
    assert catalog["ContentType"] == "application/json"
    again = publish(fed, PublishOptions(out=target, max_items=4, workers=1))
    assert again.items_written == 0 and again.catalogs_written == 0

    # A store on S3 too: workers read its parts in place, parts are copied server-side (and downloaded for a
    # local output); the trees equal those from a local store holding the same items (but its part names).
    provider = "../GR NET/ü"
    items = federation()[provider]
    s3_store = Store.open(f"s3://{bucket}/store")
    ingest(s3_store, [str(write_ndjson(tmp_path / "g.ndjson", items))], IngestOptions(provider=provider, workers=1))
    (tmp_path / "l").mkdir()
    reference = tmp_path / "reference"
    run(build_store(tmp_path / "l", {provider: items}), reference)
    publish(s3_store, PublishOptions(out=f"s3://{bucket}/from-s3", workers=2))
    run(s3_store, tmp_path / "from-s3")

    def comparable(data: bytes, rel: str) -> Any:
        if not rel.endswith("collection.json"):
            return data
        doc = orjson.loads(data)
        return {**doc, "assets": {}}, len(doc["assets"]["collection-mirror"]["cscale:files"])

    names = {k for k in mtimes(reference) if k != STATE and "/parquet/" not in k}
    assert {k for k in mtimes(tmp_path / "from-s3") if k != STATE and "/parquet/" not in k} == names
    for rel in names:
        expected = comparable((reference / rel).read_bytes(), rel)
        assert comparable((tmp_path / "from-s3" / rel).read_bytes(), rel) == expected, rel
        assert comparable(client.get_object(Bucket=bucket, Key=f"from-s3/{rel}")["Body"].read(), rel) == expected
    mirrored = [k for k in mtimes(tmp_path / "from-s3") if "/parquet/" in k]
    assert mirrored and all(client.head_object(Bucket=bucket, Key=f"from-s3/{k}")["ContentLength"] for k in mirrored)


def test_cli_publish_and_errors(fed: Store, tmp_path: Path) -> None:
    env = {"CSCALE_STORE": fed.url}
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(cli, ["publish", "--out", str(out), "--workers", "1", "--format", "json"], env=env)
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)[0]["items_written"] == TOTAL
    result = runner.invoke(
        cli, ["publish", "--out", str(tmp_path / "sub"), "--providers", "EODC", "--collections", "s1,EODC|s2"], env=env
    )
    assert result.exit_code == 0, result.output
    keys = set(published(tmp_path / "sub"))
    assert {k[0] for k in keys} == {"EODC"} and len(keys) == 3 + 20 + 12 + len(HOSTILE_IDS)
    for args in (["--providers", "NOPE"], ["--collections", "nope"], ["--href-base", "relative/path"]):
        result = runner.invoke(cli, ["publish", "--out", str(tmp_path / "x"), *args], env=env)
        assert result.exit_code == 3, (args, result.output)
    result = runner.invoke(cli, ["publish", "--out", str(tmp_path / "y"), "--version", "99"], env=env)
    assert result.exit_code == 4
    assert "Exit codes" in runner.invoke(cli, ["publish", "--help"]).output
