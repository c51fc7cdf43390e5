"""The snapshot's parts are read correctly by stac-geoparquet, geopandas, rustac (0.9.17) and DuckDB."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import geopandas
import orjson
import pyarrow.parquet as pq
import pytest
import rustac
import shapely
from stac_geoparquet.arrow import stac_table_to_items

from harvester.ingest import IngestOptions, ingest
from harvester.reader import iter_items
from harvester.store import Store
from queries import connect

FILES = (
    "items/stac-geoparquet/pc-item-lists/sentinel-2-l2a-pc.json",
    "items/stac-geoparquet/pc-item-lists/landsat-c2-l1-pc.json",
    "items/rustac/server/sentinel-2/item-collection.json",
    "items/stactools/sentinel3",
)


@pytest.fixture(scope="module")
def store(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store.open(str(tmp_path_factory.mktemp("readers") / "store"))
    for rel in FILES:
        path = corpus / rel
        sources = sorted(str(p) for p in path.glob("*.json")) if path.is_dir() else [str(path)]
        ingest(store, sources, IngestOptions(provider=rel.split("/")[1].upper(), workers=1))
    return store


def _parts(store: Store) -> list[str]:
    return [str(Path(store.url) / p.path) for p in store.manifest().parts]


def _ours(store: Store) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for _, item in iter_items(store)}


def test_geoparquet_metadata_and_row_groups(store: Store) -> None:
    for path in _parts(store):
        meta = pq.read_metadata(path)
        geo = orjson.loads(meta.metadata[b"geo"])
        assert geo["version"] == "1.1.0" and "covering" in geo["columns"]["geometry"]
        assert b"stac-geoparquet" in meta.metadata
        stats = meta.row_group(0).column(meta.schema.names.index("id")).statistics
        assert stats is not None and stats.has_min_max


def test_stac_geoparquet_reads_parts(store: Store) -> None:
    ours = _ours(store)
    seen = 0
    for path in _parts(store):
        for item in stac_table_to_items(pq.read_table(path)):
            assert item["properties"]["datetime"].startswith(ours[item["id"]]["properties"]["datetime"][:19])
            assert shapely.geometry.shape(item["geometry"]).equals(shapely.geometry.shape(ours[item["id"]]["geometry"]))
            seen += 1
    assert seen == len(ours) > 20


def test_geopandas_reads_parts(store: Store) -> None:
    ours = _ours(store)
    frames = [geopandas.read_parquet(path) for path in _parts(store)]
    assert sum(len(f) for f in frames) == len(ours)
    for frame in frames:
        assert frame.crs is not None and frame.crs.to_epsg() == 4326
        for row in frame.itertuples():
            assert row.geometry.equals(shapely.geometry.shape(ours[row.id]["geometry"]))


def test_rustac_reads_parts(store: Store, tmp_path: Path) -> None:
    ours = _ours(store)
    seen = 0
    for path in _parts(store):
        collection = rustac.read_sync(path)
        for item in collection["features"]:
            assert item["id"] in ours
            assert item["bbox"] == pytest.approx(ours[item["id"]]["bbox"])
            seen += 1
    assert seen == len(ours)
    # and its command line, as an operator would use it
    out = tmp_path / "out.ndjson"
    rustac_cli = Path(sys.executable).with_name("rustac")
    subprocess.run([str(rustac_cli), "translate", _parts(store)[0], str(out)], check=True, timeout=120)
    assert out.read_text().count("\n") == pq.read_metadata(_parts(store)[0]).num_rows


def test_duckdb_reads_the_store(store: Store) -> None:
    con = connect(store.url)
    total, with_key = con.execute("SELECT count(*), count(product_key) FROM items").fetchone()  # type: ignore[misc]
    assert total == len(_ours(store)) and with_key > 0
    spatial = con.execute(
        "SELECT count(*) FROM items WHERE ST_Intersects(geometry, ST_MakeEnvelope(-180, -90, 180, 90))"
    ).fetchone()
    assert spatial == (total,)
    collections = con.execute("SELECT count(*) FROM collections").fetchone()
    assert collections is not None and collections[0] >= 4
