"""Federated search: STAC item-search semantics checked against a naive Python filter (shapely geometries,
datetime comparisons, a tiny CQL2 evaluator) over the corpus and a generated federation, against rustac's
DuckdbClient on a stac-geoparquet file of the same items; paging, merging, exact items, bad input, the id
index, remote stores (S3 on moto, a published store over `python -m http.server`), macros and SQL examples."""

from __future__ import annotations

import collections
import copy
import fcntl
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import rustac
import shapely
from shapely.geometry import box, mapping, shape
from test_sql_files import cli_script, open_store

from harvester import product_names
from harvester.errors import InputError
from harvester.ingest import IngestOptions, ingest
from harvester.parts import batch_to_items, part_schema
from harvester.reader import iter_items
from harvester.store import Store
from queries import connect
from queries.connection import SQL_DIR, extension_path
from queries.search import Query, Searcher, SearchResult, decode_token, make_query, search

from conftest import free_port
from sample_federation import generate_with_truth

START, END = "2021-01-01", "2022-12-31"
FAMILIES = ["sentinel-2-l2a", "sentinel-1-grd", "sentinel-3-olci", "sentinel-5p-l2"]
NUMBERS = ["eo:cloud_cover", "sat:relative_orbit", "sat:absolute_orbit", "view:sun_elevation", "proj:epsg", "gsd"]
TEXTS = ["platform", "constellation", "sat:orbit_state", "sar:instrument_mode", "processing:level", "id", "collection"]
ANNOTATIONS = ("cscale:provider", "cscale:providers", "cscale:replicas", "cscale:product_key")


# ---------------------------------------------------------------------------------------------------- the stores
def edge_items() -> list[dict[str, Any]]:
    """What the corpus and the generator lack: a hand-split antimeridian polygon, a null geometry, a time range
    without datetime that starts years before, a property whose one string value overflows among numbers."""

    def base(name: str, **changes: Any) -> dict[str, Any]:
        item: dict[str, Any] = {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": f"edge-{name}",
            "collection": "edge",
            "geometry": {"type": "Polygon", "coordinates": [[[10, 40], [11, 40], [11, 41], [10, 41], [10, 40]]]},
            "properties": {"datetime": "2021-06-01T10:00:00Z"},
            "links": [{"rel": "self", "href": f"https://example.org/edge/{name}.json"}],
            "assets": {},
        }
        item.update(changes)
        return item

    split = {
        "type": "MultiPolygon",
        "coordinates": [
            [[[175, -20], [180, -20], [180, -10], [175, -10], [175, -20]]],
            [[[-180, -20], [-175, -20], [-175, -10], [-180, -10], [-180, -20]]],
        ],
    }
    return [
        base("antimeridian", geometry=split, bbox=[175, -20, -175, -10]),
        base("null-geometry", geometry=None),
        base(
            "range",
            properties={
                "datetime": None,
                "start_datetime": "2016-01-01T00:00:00Z",
                "end_datetime": "2023-12-31T00:00:00Z",
            },
        ),
        base(
            "pacific",
            geometry={"type": "Point", "coordinates": [-179.5, 0.5]},
            properties={"datetime": "2019-03-01T00:00:00Z"},
        ),
        base("cc-5", properties={"datetime": "2021-07-01T00:00:00Z", "eo:cloud_cover": 5}),
        base("cc-50", properties={"datetime": "2021-07-02T00:00:00Z", "eo:cloud_cover": 50.5}),
        base("cc-95", properties={"datetime": "2021-07-03T00:00:00Z", "eo:cloud_cover": 95}),
        base("cc-text", properties={"datetime": "2021-07-04T00:00:00Z", "eo:cloud_cover": "12"}),
        base("quote", properties={"datetime": "2021-07-05T00:00:00Z", "platform": "it's; DROP TABLE items; --"}),
    ]


def _ndjson(path: Path, items: list[dict[str, Any]]) -> str:
    path.write_bytes(b"".join(orjson.dumps(i) + b"\n" for i in items))
    return str(path)


def generated(count: int, providers: list[str], seed: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for provider, item, _ in generate_with_truth(
        providers=providers, count=count, seed=seed, start=START, end=END, collections=FAMILIES
    ):
        out[provider].append(item)
    return out


def build_small(root: Path) -> Store:
    """A small federation: two providers of generated items (replicas between them) and the edge items."""
    root.mkdir(parents=True, exist_ok=True)
    store = Store.open(str(root / "store"))
    for provider, items in generated(240, ["CREODIAS", "CESNET"], seed=5).items():
        sources = [_ndjson(root / f"{provider}.ndjson", items)]
        if provider == "CESNET":
            sources.append(_ndjson(root / "edge.ndjson", edge_items()))
        ingest(store, sources, IngestOptions(provider=provider, workers=1))
    return store


@dataclass
class Fed:
    store: Store
    items: list[tuple[str, dict[str, Any]]]
    geoms: Any  # numpy array of shapely geometries (None for a null geometry)
    covered: list[bool]  # whether the item's bbox contains its geometry (the covering contract)

    @classmethod
    def of(cls, store: Store) -> Fed:
        items = list(iter_items(store))
        geoms = shapely.from_geojson(
            [orjson.dumps(i["geometry"]).decode() if i["geometry"] else None for _, i in items]
        )
        covered = []
        for (_, item), geom in zip(items, geoms, strict=True):
            b = item.get("bbox")
            if geom is None or b is None:
                covered.append(geom is None)
                continue
            half = len(b) // 2
            xmin, ymin, xmax, ymax = b[0], b[1], b[half], b[half + 1]
            boxes = (
                [box(xmin, ymin, xmax, ymax)]
                if xmin <= xmax
                else [box(xmin, ymin, 180, ymax), box(-180, ymin, xmax, ymax)]
            )
            covered.append(bool(shapely.union_all(boxes).buffer(1e-7).covers(geom)))
        return cls(store, items, geoms, covered)


def shared_store(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Store]) -> Store:
    """A store built once per test run, even when pytest-xdist runs this module's tests in several workers (they
    share the parent of their temporary folders): the first builds it under a lock, the others open it."""
    base = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    folder = base / f"shared-{name}"
    with open(base / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "built").exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            (folder / "built").touch()
    return Store.open(str(folder / "store"))


def build_fed(root: Path, corpus: Path) -> Store:
    """Every item file of the corpus (three providers: stac-spec examples of old and new versions hold the same
    products) and a generated federation of three providers with replicas and antimeridian footprints."""
    store = Store.open(str(root / "store"))
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for path in sorted(p for p in (corpus / "items").rglob("*") if p.suffix in (".json", ".ndjson", ".geojson")):
        rel = path.relative_to(corpus / "items").parts
        name = "CORPUS" if rel[0] != "stac-spec" else ("SPEC-OLD" if rel[1] in ("v0.9.0", "v1.0.0-beta.2") else "SPEC")
        groups[name].append(str(path))
    for provider, items in generated(1200, ["EODC", "CREODIAS", "CESNET"], seed=11).items():
        groups[provider].append(_ndjson(root / f"{provider}.ndjson", items))
    groups["EODC"].append(_ndjson(root / "edge.ndjson", edge_items()))
    for provider, sources in groups.items():
        ingest(store, sources, IngestOptions(provider=provider, workers=1))
    return store


@pytest.fixture(scope="module")
def fed(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Fed:
    return Fed.of(shared_store(tmp_path_factory, "fed", lambda root: build_fed(root, corpus)))


@pytest.fixture(scope="module")
def searcher(fed: Fed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searcher]:
    with Searcher(fed.store.url, cache=tmp_path_factory.mktemp("cache")) as s:
        yield s


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return shared_store(tmp_path_factory, "small", build_small)


# ---------------------------------------------------------------------------------------------------- the oracle
def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def _value(provider: str, item: dict[str, Any], name: str) -> Any:
    name = name.removeprefix("properties.")
    if name in ("id", "collection"):
        return item.get(name)
    if name == "provider":
        return provider
    return item["properties"].get(name)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _and(values: list[bool | None]) -> bool | None:
    return False if False in values else (None if None in values else True)


def _or(values: list[bool | None]) -> bool | None:
    return True if True in values else (None if None in values else False)


def evaluate(node: tuple[Any, ...], provider: str, item: dict[str, Any], geom: Any) -> bool | None:
    """Three-valued CQL2, as SQL has it: None is unknown (a missing property, a value of another type)."""
    op = node[0]
    if op == "and":
        return _and([evaluate(n, provider, item, geom) for n in node[1:]])
    if op == "or":
        return _or([evaluate(n, provider, item, geom) for n in node[1:]])
    if op == "not":
        inner = evaluate(node[1], provider, item, geom)
        return None if inner is None else not inner
    if op == "s_intersects":
        return None if geom is None else bool(shapely.intersects(geom, shape(node[1])))
    if op == "t_intersects":
        when = _when(item["properties"].get("datetime"))
        if when is None:
            return None
        lo, hi = (_when(x) if x != ".." else None for x in node[1])
        return (lo is None or when >= lo) and (hi is None or when <= hi)
    value = _value(provider, item, node[1])
    if op == "isnull":
        return value is None
    if value is None:
        return None
    if op == "cmp":
        _, _, sign, literal = node
        same = _number(value) if _number(literal) else isinstance(value, str)
        if not same:
            return None
        return {"=": value == literal, "<>": value != literal, "<": value < literal, "<=": value <= literal,
                ">": value > literal, ">=": value >= literal}[sign]  # fmt: skip
    if op == "like":
        if not isinstance(value, str):
            return None
        pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in node[2])
        return re.fullmatch(pattern, value, re.DOTALL) is not None
    if op == "in":
        matches = [
            value == v
            for v in node[2]
            if (_number(v) and _number(value)) or (isinstance(v, str) and isinstance(value, str))
        ]
        return True if any(matches) else (False if matches else None)
    if op == "between":
        if not _number(value):
            return None
        return node[2] <= value <= node[3]
    raise AssertionError(op)


def render(node: tuple[Any, ...]) -> str:
    """The same expression as CQL2 text."""

    def lit(v: Any) -> str:
        return "'" + v.replace("'", "''") + "'" if isinstance(v, str) else repr(v)

    op = node[0]
    if op in ("and", "or"):
        return "(" + f" {op.upper()} ".join(render(n) for n in node[1:]) + ")"
    if op == "not":
        return f"NOT ({render(node[1])})"
    if op == "s_intersects":
        return f"S_INTERSECTS(geometry, {shapely.to_wkt(shape(node[1]), rounding_precision=-1)})"
    if op == "t_intersects":
        a, b = (f"'{x}'" for x in node[1])
        return f"T_INTERSECTS(datetime, INTERVAL({a}, {b}))"
    if op == "isnull":
        return f"{node[1]} IS NULL"
    if op == "cmp":
        return f"{node[1]} {node[2]} {lit(node[3])}"
    if op == "like":
        return f"{node[1]} LIKE {lit(node[2])}"
    if op == "in":
        return f"{node[1]} IN ({', '.join(lit(v) for v in node[2])})"
    if op == "between":
        return f"{node[1]} BETWEEN {lit(node[2])} AND {lit(node[3])}"
    raise AssertionError(op)


def _query_geometry(q: dict[str, Any]) -> Any:
    if "bbox" in q:
        xmin, ymin, xmax, ymax = q["bbox"]
        if xmin <= xmax:
            return box(xmin, ymin, xmax, ymax)
        return shapely.MultiPolygon([box(xmin, ymin, 180, ymax), box(-180, ymin, xmax, ymax)])
    return shape(q["intersects"]) if "intersects" in q else None


def oracle(
    fed: Fed, q: dict[str, Any], ast: tuple[Any, ...] | None, *, either_time: bool = False
) -> set[tuple[str, str]]:
    """The naive filter: every item tested in Python. `either_time`: rustac's reading of `datetime`, where an
    item that has a start/end range matches by that range too, even when its datetime is outside."""
    providers = {p for p, _ in fed.items}
    area = _query_geometry(q)
    lo = hi = None
    if "datetime" in q:
        text = q["datetime"]
        if "/" in text:
            a, b = text.split("/")
            lo, hi = _when(a) if a != ".." else None, _when(b) if b != ".." else None
        else:
            lo = hi = _when(text)
    out = set()
    for (provider, item), geom in zip(fed.items, fed.geoms, strict=True):
        if area is not None and (geom is None or not shapely.intersects(geom, area)):
            continue
        if "datetime" in q:
            props = item["properties"]
            when = _when(props.get("datetime"))
            start, end = _when(props.get("start_datetime")), _when(props.get("end_datetime"))
            by_range = start is not None and end is not None and not ((hi and start > hi) or (lo and end < lo))
            if when is not None:
                if ((lo and when < lo) or (hi and when > hi)) and not (either_time and by_range):
                    continue
            elif not by_range:
                continue
        if "collections" in q:
            wanted = False
            for name in q["collections"]:
                head, sep, rest = name.partition("|")
                if (sep and head in providers and (provider, item.get("collection")) == (head, rest)) or (
                    not (sep and head in providers) and item.get("collection") == name
                ):
                    wanted = True
            if not wanted:
                continue
        if "providers" in q and provider not in q["providers"]:
            continue
        if "ids" in q and item["id"] not in q["ids"]:
            continue
        if ast is not None and evaluate(ast, provider, item, geom) is not True:
            continue
        out.add((provider, item["id"]))
    return out


# ---------------------------------------------------------------------------------------------------- queries
class Generator:
    """Seeded random STAC queries, drawn from the items' own values so that they match something."""

    def __init__(self, fed: Fed, seed: int, *, rustac: bool = False) -> None:
        self.rng = random.Random(seed)
        self.fed = fed
        self.rustac = rustac  # only what rustac's DuckdbClient can be asked the same way
        self.with_geometry = [(p, i, g) for (p, i), g in zip(fed.items, fed.geoms, strict=True) if g is not None]
        self.values: dict[str, list[Any]] = collections.defaultdict(list)
        for provider, item in fed.items:
            for name in NUMBERS + TEXTS:
                v = _value(provider, item, name)
                if v is not None and (_number(v) or isinstance(v, str)):
                    self.values[name].append(v)

    def bbox(self) -> list[float]:
        r = self.rng
        kind = r.random()
        if kind < 0.2:  # crossing the antimeridian
            return [r.uniform(150, 179.9), r.uniform(-80, 0), r.uniform(-179.9, -150), r.uniform(0.5, 80)]
        if kind < 0.3:
            return [-180, -90, 180, 90]
        if kind < 0.7:  # around an item
            _, _, g = r.choice(self.with_geometry)
            c = g.representative_point()
            w = r.uniform(0.2, 20)
            return [max(-180, c.x - w), max(-90, c.y - w / 2), min(180, c.x + w), min(90, c.y + w / 2)]
        x, y, w = r.uniform(-180, 170), r.uniform(-90, 80), r.uniform(1, 40)
        return [x, y, min(180, x + w), min(90, y + w / 2)]

    def geometry(self) -> dict[str, Any]:
        r = self.rng
        _, _, g = r.choice(self.with_geometry)
        c = g.representative_point()
        kind = r.random()
        if kind < 0.3:
            return mapping(c)
        if kind < 0.6:
            return {"type": "LineString", "coordinates": [[c.x - 3, c.y - 2], [min(180, c.x + 3), c.y + 1]]}
        pts = [(c.x + r.uniform(-5, 5), max(-90, min(90, c.y + r.uniform(-5, 5)))) for _ in range(3)]
        return {"type": "Polygon", "coordinates": [[*map(list, pts), list(pts[0])]]}

    def interval(self) -> str:
        r = self.rng
        if r.random() < 0.15:  # one instant: an item's own datetime
            _, item = r.choice(self.fed.items)
            if item["properties"].get("datetime"):
                return str(item["properties"]["datetime"])
        start = datetime(2015, 1, 1, tzinfo=UTC) + timedelta(days=r.uniform(0, 3650))
        end = start + timedelta(days=r.choice([1, 10, 45, 200, 900]))
        a, b = (t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in (start, end))
        return r.choice([f"{a}/{b}", f"{a}/{b}", f"{a}/..", f"../{b}"])

    def condition(self, depth: int = 0) -> tuple[Any, ...]:
        r = self.rng
        kind = r.random()
        if depth < 2 and kind < 0.2:
            return (r.choice(["and", "or"]), self.condition(depth + 1), self.condition(depth + 1))
        if depth < 2 and kind < 0.26:
            return ("not", self.condition(depth + 1))
        if kind < 0.5:
            name = r.choice(NUMBERS)
            v = r.choice(self.values[name])
            return ("cmp", name, r.choice(["=", "<>", "<", "<=", ">", ">="]), v)
        if kind < 0.62:
            name = r.choice(TEXTS)
            return ("cmp", name, r.choice(["=", "=", "<>"]), r.choice(self.values[name]))
        if kind < 0.7:
            name = r.choice(TEXTS)
            v = r.choice(self.values[name])
            return ("like", name, v[: r.randint(1, 6)] + "%")
        if kind < 0.78:
            name = r.choice(TEXTS + NUMBERS)
            return ("in", name, r.sample(self.values[name], 3))
        if kind < 0.84:
            name = r.choice(NUMBERS)
            a, b = sorted(r.sample(self.values[name], 2))
            return ("between", name, a, b)
        if kind < 0.88 and not self.rustac:
            return ("isnull", r.choice(NUMBERS + TEXTS))
        if kind < 0.94:
            return ("s_intersects", self.geometry())
        lo = datetime(2016, 1, 1, tzinfo=UTC) + timedelta(days=r.uniform(0, 3000))
        hi = lo + timedelta(days=r.choice([5, 60, 400]))
        ends = [lo.strftime("%Y-%m-%dT%H:%M:%SZ"), hi.strftime("%Y-%m-%dT%H:%M:%SZ")]
        if r.random() < 0.3:
            ends[r.randint(0, 1)] = ".."
        return ("t_intersects", ends)

    def query(self) -> tuple[dict[str, Any], tuple[Any, ...] | None]:
        r = self.rng
        q: dict[str, Any] = {}
        ast = None
        for _ in range(r.randint(1, 3)):
            pick = r.random()
            if pick < 0.3:
                if r.random() < 0.75:
                    q["bbox"] = self.bbox()
                else:
                    q["intersects"] = self.geometry()
                q.pop("bbox" if "intersects" in q else "intersects", None)
            elif pick < 0.55:
                q["datetime"] = self.interval()
            elif pick < 0.7:
                names = [i.get("collection") for _, i in r.sample(self.fed.items, 2) if i.get("collection")]
                if not self.rustac:
                    names += [f"{p}|{i['collection']}" for p, i in r.sample(self.fed.items, 2) if i.get("collection")]
                q["collections"] = names or ["none"]
            elif pick < 0.75 and not self.rustac:
                q["providers"] = r.sample(sorted({p for p, _ in self.fed.items}), 2)
            elif pick < 0.8:
                q["ids"] = [i["id"] for _, i in r.sample(self.fed.items, 5)]
            else:
                ast = self.condition()
                q["filter"] = render(ast)
        return q, ast


def found(result_hits: Any) -> set[tuple[str, str]]:
    return {(h.provider, h.id) for h in result_hits}


def spatial_blind_spots(fed: Fed, q: dict[str, Any]) -> set[tuple[str, str]]:
    """Items whose bbox does not contain their geometry (invalid STAC, e.g. s2cloudless_2018 of the corpus,
    bbox [-180, 90, 180, 90] for a global polygon): the bbox covering is trusted, so spatial filters may miss
    them. The comparisons leave them out, and only them."""
    if "bbox" not in q and "intersects" not in q and "S_INTERSECTS" not in q.get("filter", ""):
        return set()
    return {(p, i["id"]) for (p, i), ok in zip(fed.items, fed.covered, strict=True) if not ok}


# ---------------------------------------------------------------------------------------------------- tests
def test_the_federation_has_the_hard_cases(fed: Fed) -> None:
    items = [i for _, i in fed.items]
    assert len(items) > 1200
    assert sum(1 for i in items if i.get("geometry") is None) >= 2
    crossing = [i for i in items if i.get("bbox") and i["bbox"][0] > i["bbox"][len(i["bbox"]) // 2]]
    assert len(crossing) >= 5  # the hand-made one and generated S3/S5P swaths
    assert any(i["properties"].get("datetime") is None for i in items)
    assert len({p for p, _ in fed.items}) == 6


def test_hundreds_of_random_queries_agree_with_a_naive_filter(fed: Fed, searcher: Searcher) -> None:
    generator = Generator(fed, seed=20261126)
    nonempty = 0
    for n in range(200):
        q, ast = generator.query()
        expected = oracle(fed, q, ast)
        got = found(searcher.search(make_query(**q, limit=10_000), fetch=False).hits)
        blind = spatial_blind_spots(fed, q)
        assert got - blind == expected - blind, (
            f"query {n}: {q}\nmissing {sorted(expected - got)[:5]}\nextra {sorted(got - expected)[:5]}"
        )
        nonempty += bool(expected)
    assert nonempty > 100  # the queries are not vacuous


def test_antimeridian_null_geometry_and_range_items(fed: Fed, searcher: Searcher) -> None:
    def ids(**q: Any) -> set[str]:
        return {h.id for h in searcher.search(make_query(**q, limit=10_000), fetch=False).hits}

    # a box crossing the antimeridian finds the split polygon from either side, and the point at -179.5
    assert {"edge-antimeridian", "edge-pacific"} <= ids(bbox=[170, -30, -170, 5])
    assert "edge-antimeridian" in ids(bbox=[176, -15, 177, -14])
    assert "edge-antimeridian" in ids(bbox=[-177, -15, -176, -14])
    assert "edge-antimeridian" not in ids(bbox=[-170, -15, 170, -14])  # the rest of the world
    assert "edge-pacific" in ids(intersects={"type": "Point", "coordinates": [-179.5, 0.5]})
    # a null geometry never matches a spatial filter, but does match the rest
    assert "edge-null-geometry" not in ids(bbox=[-180, -90, 180, 90])
    assert "edge-null-geometry" in ids(datetime="2021-06-01T10:00:00Z")
    # the range item (2016..2023, no datetime) lives in a 2016 part: an interval in 2022 still finds it, through
    # the footer stats of older parts
    assert "edge-range" in ids(datetime="2022-03-01T00:00:00Z/2022-03-02T00:00:00Z")
    assert "edge-range" not in ids(datetime="2024-01-01T00:00:00Z/..")
    assert "edge-range" in ids(datetime="../2016-01-01T00:00:00Z")


def test_cql2_json_overflow_and_typing(fed: Fed, searcher: Searcher) -> None:
    def ids(**q: Any) -> set[str]:
        return {h.id for h in searcher.search(make_query(**q, limit=10_000), fetch=False).hits}

    # "12" is a string among numbers: kept in cscale:overflow, compared as a string, never as a number
    assert "edge-cc-text" in ids(filter="eo:cloud_cover = '12'")
    assert "edge-cc-text" not in ids(filter="eo:cloud_cover = 12")
    assert {"edge-cc-5", "edge-cc-50"} <= ids(filter="properties.eo:cloud_cover < 60 AND collection = 'edge'")
    as_json = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 60]}
    assert ids(filter=as_json) == ids(filter="eo:cloud_cover < 60")
    assert ids(filter=orjson.dumps(as_json).decode(), filter_lang="cql2-json") == ids(filter=as_json)
    assert "edge-cc-text" not in ids(filter="eo:cloud_cover IS NULL")
    assert "edge-quote" in ids(filter="platform = 'it''s; DROP TABLE items; --'")
    assert ids(filter="datetime > '2021-07-02T12:00:00Z' AND collection = 'edge'") == {
        "edge-cc-95",
        "edge-cc-text",
        "edge-quote",
    }
    assert ids(filter="T_BEFORE(datetime, TIMESTAMP('2016-01-01T00:00:00Z'))") == ids(
        datetime="../2015-12-31T23:59:59.999999Z"
    ) - {"edge-range"}


def test_sortby_orders_and_pages_cover_everything(fed: Fed, searcher: Searcher) -> None:
    query = make_query(datetime="2021-01-01T00:00:00Z/2022-12-31T23:59:59Z", sortby="-eo:cloud_cover,+id", limit=37)
    everything = searcher.search(replace(query, limit=10_000), fetch=False).hits
    values = {(p, i["id"]): i["properties"].get("eo:cloud_cover") for p, i in fed.items}
    numbers = [values[(h.provider, h.id)] for h in everything]
    typed = [v for v in numbers if _number(v)]
    assert typed == sorted(typed, reverse=True) and len(typed) > 100
    assert all(not _number(v) for v in numbers[len(typed) :])  # nulls (and other types) last
    pages, token = [], None
    while True:
        result = searcher.search(query, token=token, fetch=False)
        pages.append(result.hits)
        token = result.next_token
        if token is None:
            break
    assert [(h.provider, h.id) for page in pages for h in page] == [(h.provider, h.id) for h in everything]
    assert all(len(p) == 37 for p in pages[:-1])


def test_page_tokens_are_tamper_checked(searcher: Searcher) -> None:
    query = make_query(bbox=[-180, -90, 180, 90], limit=5)
    token = searcher.search(query, fetch=False).next_token
    assert token is not None and decode_token(token)[1] == 5
    body, mac = token.split(".")
    forged = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac
    for bad in (forged, token + "x", "garbage", token.replace(".", "")):
        with pytest.raises(InputError, match="token"):
            searcher.search(query, token=bad)
    with pytest.raises(InputError, match="another search"):
        searcher.search(make_query(bbox=[0, 0, 1, 1], limit=5), token=token)
    collection = searcher.search(query).item_collection()
    (link,) = collection["links"]
    assert link["rel"] == "next" and "token=" in link["href"] and collection["numberReturned"] == 5


@pytest.fixture(scope="module")
def everything(searcher: Searcher) -> SearchResult:
    """One page holding every item, whole (read once: the corpus parts are wide and slow to decode)."""
    return searcher.search(make_query(limit=10_000))


def test_items_come_back_exactly_as_the_reader_gives_them(fed: Fed, everything: SearchResult) -> None:
    result = everything
    expected = {(p, i["id"]): i for p, i in fed.items}
    assert len(result.items) == len(expected)
    for item in result.items:
        provider = item["properties"]["cscale:provider"]
        bare = copy.deepcopy(item)
        del bare["properties"]["cscale:provider"]
        assert bare == expected[(provider, item["id"])], item["id"]
    # Arrow: one row per item, cscale's columns included, type conflicts moved to the overflow like a commit
    table = result.table
    assert table.num_rows == len(result.items) and {"provider", "product_key", "cscale:overflow"} <= set(
        table.column_names
    )
    assert table.column("id").to_pylist() == [i["id"] for i in result.items]


def test_row_copies_give_the_same_items_as_the_parts(fed: Fed, everything: SearchResult, tmp_path: Path) -> None:
    """prepare() writes a row copy of every part (in two worker processes); items read from them are the items
    read from the parts, merged or not; the Arrow rows come from the parts on request."""
    parts = fed.store.manifest().parts
    merged = make_query(collections=["sentinel-1-grd", "SENTINEL1_GRD", "sentinel1-grd"], limit=500, merge=True)
    with Searcher(fed.store.url, cache=tmp_path / "plain") as plain:
        expected_merged = plain.search(merged).items
    with Searcher(fed.store.url, cache=tmp_path / "rows") as s:
        seen: list[tuple[int, int]] = []
        timings = s.prepare(workers=2, progress=lambda done, total: seen.append((done, total)))
        assert "row_copies_s" in timings and seen[-1] == (sum(p.rows for p in parts),) * 2
        assert len(list((tmp_path / "rows" / "rows").glob("*.arrow"))) == len(parts)
        result = s.search(make_query(limit=10_000))
        assert result.stats["parts_read_whole_rows"] == 0
        assert result.items == everything.items
        with pytest.raises(InputError, match="arrow=True"):
            _ = result.table
        again = s.search(make_query(limit=10_000), arrow=True)
        assert again.stats["parts_read_whole_rows"] == len(parts) and again.items == everything.items
        assert again.table.column("id").to_pylist() == [i["id"] for i in everything.items]
        assert s.search(merged).items == expected_merged
        stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "rows" / "rows").glob("*.arrow")}
        again_seen: list[int] = []
        s.prepare(progress=lambda done, _: again_seen.append(done))
        assert again_seen == [] and stamps == {p: p.stat().st_mtime_ns for p in stamps}  # nothing left to do


def test_a_damaged_or_foreign_row_copy_is_ignored(
    small: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    query = make_query(limit=10_000)
    with Searcher(small.url, cache=tmp_path) as s:
        expected = s.search(query).items
        s.prepare(workers=1)
    copies = sorted((tmp_path / "rows").glob("*.arrow"))
    assert len(copies) >= 3
    copies[0].write_bytes(copies[0].read_bytes()[:300])  # truncated: no footer
    copies[1].write_bytes(copies[2].read_bytes())  # another part's copy under this part's name
    with Searcher(small.url, cache=tmp_path) as s:
        result = s.search(query)
        assert result.items == expected and result.stats["parts_read_whole_rows"] == 2
        warnings = [r.getMessage() for r in caplog.records if "row copy" in r.getMessage()]
        assert any("unreadable" in w for w in warnings) and any("is not a copy of" in w for w in warnings)
        s.prepare(workers=1)  # writes the two again, and this searcher uses them from now on
        repaired = s.search(query)
        assert repaired.items == expected and repaired.stats["parts_read_whole_rows"] == 0


def test_arrow_page_round_trips_through_stac_geoparquet(fed: Fed, searcher: Searcher, tmp_path: Path) -> None:
    result = searcher.search(make_query(collections=["sentinel-2-l2a", "edge"], limit=200))
    table = result.table
    path = tmp_path / "page.parquet"
    pq.write_table(
        table.replace_schema_metadata(part_schema(table.schema.remove_metadata(), None, None).metadata), path
    )
    expected = {
        i["id"]: {**i, "properties": {k: v for k, v in i["properties"].items() if k not in ANNOTATIONS}}
        for i in result.items
    }
    back = list(batch_to_items(pq.read_table(path)))
    assert len(back) == len(expected) > 50
    for item in back:
        assert item == expected[item["id"]]


def test_merge_gives_one_result_per_product_with_every_replica(fed: Fed, searcher: Searcher) -> None:
    wanted = ("sentinel-1-grd", "SENTINEL1_GRD", "sentinel1-grd")  # one product family, three providers' names
    result = searcher.search(make_query(collections=list(wanted), limit=10_000, merge=True))
    groups: dict[str, list[str]] = collections.defaultdict(list)  # the oracle: the commit's own product keys
    for provider, item in fed.items:
        if item.get("collection") in wanted:
            key = product_names.product_key(item["id"], item["properties"]) or f"{provider}|{item['id']}"
            groups[key].append(provider)
    got = {}
    for item in result.items:
        props = item["properties"]
        key = props.get("cscale:product_key") or f"{props['cscale:provider']}|{item['id']}"
        got[key] = props["cscale:providers"]
        assert props["cscale:provider"] == props["cscale:providers"][0]
        for replica in props["cscale:replicas"]:
            assert replica["href"].startswith("https://") and replica["id"]
    assert got == {k: sorted(v) for k, v in groups.items()}
    assert sum(1 for v in got.values() if len(v) > 1) > 10  # replicas exist and merge
    assert result.table.column("cscale:providers").to_pylist() == list(got.values())


def test_ids_lookup_through_the_id_index(fed: Fed, tmp_path: Path) -> None:
    wanted = [i["id"] for _, i in random.Random(3).sample(fed.items, 12)]
    expected = {(p, i["id"]) for p, i in fed.items if i["id"] in wanted}
    with Searcher(fed.store.url, cache=tmp_path, id_index=True) as s:
        result = s.search(make_query(ids=wanted, limit=100), explain=True)
        assert found(result.hits) == expected
        assert result.explain is not None and "ids-v1-" in result.explain
        assert len(list(tmp_path.glob("ids-v1-*.parquet"))) == 1
        assert result.stats["parts_read"] < len(fed.store.manifest().parts) / 2
        again = s.search(make_query(ids=wanted[:1], limit=100))
        assert {i["id"] for i in again.items} == {wanted[0]}
    with Searcher(fed.store.url, cache=tmp_path, id_index=False) as s:
        assert found(s.search(make_query(ids=wanted, limit=100), fetch=False).hits) == expected


def test_explain_shows_parts_and_duckdb_plan(searcher: Searcher) -> None:
    result = searcher.search(
        make_query(
            collections=["sentinel-2-l2a"], datetime="2021-06-01T00:00:00Z/2021-06-30T23:59:59Z", bbox=[0, 40, 20, 60]
        ),
        explain=True,
    )
    text = result.explain or ""
    assert "parts in version:" in text and "READ_PARQUET" in text and "latency" in text
    assert result.stats["parts_read"] < result.stats["parts_in_version"] / 4


def _rustac_extensions(folder: Path) -> Path:
    """A DuckDB extension folder as rustac's DuckdbClient expects it (v<version>/<platform>/<name>.duckdb_extension),
    built from the pinned duckdb-extension-* wheels: rustac 0.9.17 bundles DuckDB 1.5.5 built without parquet
    and icu, so those come as extensions too."""
    platform = duckdb.connect().execute("PRAGMA platform").fetchone()[0]  # type: ignore[index]
    target = folder / f"v{duckdb.__version__}" / platform
    target.mkdir(parents=True, exist_ok=True)
    for name in ("spatial", "parquet", "icu"):
        shutil.copy(extension_path(name), target / f"{name}.duckdb_extension")
    return folder


def test_rustac_duckdb_client_returns_the_same_ids(
    fed: Fed, searcher: Searcher, everything: SearchResult, tmp_path: Path
) -> None:
    """rustac reads one stac-geoparquet file of the same items. Left out of that file, because rustac 0.9.17
    cannot read them: items with a null geometry (it panics) and the `proj:geometry` column (a second WKB
    column it fails to decode). rustac does not implement antimeridian boxes (it builds one envelope from
    min x > max x), so a crossing box is asked as its two halves. Its `datetime` also matches an item by its
    start/end range when it has one, even if its datetime is outside; the issue (and cscale) use the range only
    when datetime is null, so those items are the one expected difference, computed by the oracle."""
    table = everything.table  # every item, in the stac-geoparquet layout of the parts
    table = table.filter(pc.is_valid(table.column("geometry"))).drop_columns(["proj:geometry"])
    table = table.replace_schema_metadata(part_schema(table.schema.remove_metadata(), None, None).metadata)
    path = tmp_path / "all.parquet"
    pq.write_table(table, path)
    client = rustac.DuckdbClient(extension_directory=_rustac_extensions(tmp_path / "ext"), install_extensions=False)
    has_geometry = {(p, i["id"]) for (p, i), g in zip(fed.items, fed.geoms, strict=True) if g is not None}
    generator = Generator(fed, seed=7, rustac=True)
    checked = 0
    differ = 0
    for n in range(30):
        q, ast = generator.query()
        asks = [q]
        if "bbox" in q and q["bbox"][0] > q["bbox"][2]:
            xmin, ymin, xmax, ymax = q["bbox"]
            asks = [{**q, "bbox": [xmin, ymin, 180, ymax]}, {**q, "bbox": [-180, ymin, xmax, ymax]}]
        # only ids come back (quick); a filter's properties must be included, by their bare names
        include = [
            "id",
            *(p for p in {*NUMBERS, *TEXTS, "geometry", "datetime"} - {"id"} if p in q.get("filter", "")),
        ]
        theirs: set[str] = set()
        for ask in asks:
            theirs |= {i["id"] for i in client.search(str(path), limit=100_000, include=include, **ask)}
        ours = found(searcher.search(make_query(**q, limit=10_000), fetch=False).hits)
        blind = spatial_blind_spots(fed, q)
        # rustac's datetime semantics differ (see `oracle`): what it adds must be exactly those items
        extra = oracle(fed, q, ast, either_time=True) - oracle(fed, q, ast) if "datetime" in q else set()
        ours_seen = {i for p, i in ((ours | extra) & has_geometry) - blind}
        assert theirs - {i for _, i in blind} == ours_seen, f"query {n}: {q}"
        differ += bool(extra)
        checked += bool(theirs)
    assert checked > 12


# ---------------------------------------------------------------------------------------------------- bad input
BAD = [
    (dict(bbox="1,2,3"), "4 or 6"),
    (dict(bbox=[0, 0, 10, 91]), "latitude"),
    (dict(bbox=[0, 50, 10, 40]), "above its max"),
    (dict(bbox="a,b,c,d"), "numbers"),
    (dict(bbox=[0, 0, 1, float("nan")]), "finite"),
    (dict(bbox=[-181, 0, 1, 1]), "longitude"),
    (dict(datetime="yesterday"), "RFC 3339"),
    (dict(datetime="2021-13-01"), "RFC 3339"),
    (dict(datetime="2022-01-01/2021-01-01"), "starts after"),
    (dict(datetime="../.."), "closed end"),
    (dict(datetime="2021-01-01'; DROP TABLE items; --"), "RFC 3339"),
    (dict(filter="eo:cloud_cover <<< 5"), "invalid CQL2"),
    (dict(filter="eo:cloud_cover < 5 AND"), "invalid CQL2"),
    (dict(filter='{"op": "<", "args": 3}', filter_lang="cql2-json"), "invalid CQL2"),
    (dict(filter="no:such_property = 1"), "unknown property"),
    (dict(filter='"x"" OR 1=1 --" = 1'), "unknown property"),
    (dict(filter="1 = 1; DROP TABLE items"), "invalid CQL2"),
    (dict(sortby="-no_such_field"), "unknown property"),
    (dict(sortby="datetime; DROP TABLE items"), "unknown property"),
    (dict(filter="id = 'x'", filter_lang="sql"), "filter-lang"),
    (dict(limit=0), "limit"),
    (dict(limit=10**9), "limit"),
    (dict(intersects="{not json"), "not JSON"),
    (dict(intersects={"type": "Polygon", "coordinates": "x"}), "geometry"),
    (dict(intersects={"type": "Circle", "coordinates": [0, 0]}), "GeoJSON"),
    (dict(bbox=[0, 0, 1, 1], intersects={"type": "Point", "coordinates": [0, 0]}), "together"),
    (dict(ids=["x"] * 10 + [str(i) for i in range(20_000)]), "too many"),
]


@pytest.mark.parametrize(("params", "message"), BAD)
def test_bad_input_is_one_clear_input_error(searcher: Searcher, params: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        searcher.search(make_query(**params), fetch=False)
    assert "\n" not in str(caught.value)


def test_injection_attempts_are_only_values(searcher: Searcher) -> None:
    attack = "x') OR 1=1; DROP TABLE items; --"
    for params in (
        dict(collections=[attack, f"EODC|{attack}"]),
        dict(providers=[attack]),
        dict(ids=[attack, '" OR ""="']),
        dict(filter=f"platform = '{attack.replace(chr(39), chr(39) * 2)}'"),
        dict(filter=f"id LIKE '{attack.replace(chr(39), chr(39) * 2)}%'"),
    ):
        assert searcher.search(make_query(**params, limit=10), fetch=False).hits == []
    assert searcher.search(make_query(limit=1), fetch=False).hits  # the data is all still there


def test_huge_intersects_polygon_is_refused_and_a_large_one_works(searcher: Searcher) -> None:
    import math

    def circle(n: int) -> dict[str, Any]:
        ring = [[10 + 5 * math.cos(2 * math.pi * k / n), 45 + 5 * math.sin(2 * math.pi * k / n)] for k in range(n)]
        return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}

    started = time.perf_counter()
    with pytest.raises(InputError, match="points"):
        make_query(intersects=circle(300_000))
    assert time.perf_counter() - started < 10
    hits = searcher.search(make_query(intersects=circle(20_000), limit=10_000), fetch=False).hits
    assert hits == searcher.search(make_query(intersects=circle(20_000), limit=10_000), fetch=False).hits


# ---------------------------------------------------------------------------------------------------- remote stores
def _same_results(local: Store, remote_root: str, queries: list[dict[str, Any]], cache: Path) -> None:
    with Searcher(local.url, cache=cache / "l") as here, Searcher(remote_root, cache=cache / "r") as there:
        for q in queries:
            a, b = here.search(make_query(**q)), there.search(make_query(**q))
            assert [h.id for h in a.hits] == [h.id for h in b.hits] and a.hits, q
            assert a.items == b.items


REMOTE_QUERIES = [
    {"bbox": [-180, -90, 180, 90], "limit": 25},
    {"datetime": "2021-06-01/2021-12-31", "collections": ["sentinel-1-grd", "sentinel1-grd"], "limit": 50},
    {"filter": "eo:cloud_cover < 30", "sortby": "+eo:cloud_cover", "limit": 20},
    {"bbox": [170, -30, -170, 5], "merge": True, "limit": 100},
]


def test_s3_store_is_searched_in_place(small: Store, bucket: str, tmp_path: Path) -> None:
    """One provider of the small store, ingested the same way into S3 (moto) and read there in place."""
    inputs = Path(small.url).parent
    root = f"s3://{bucket}/fed"
    ingest(
        Store.open(root),
        [str(inputs / "CESNET.ndjson"), str(inputs / "edge.ndjson")],
        IngestOptions(provider="CESNET", workers=1),
    )
    _same_results(small, root, [{**q, "providers": ["CESNET"]} for q in REMOTE_QUERIES], tmp_path)


@pytest.fixture
def http_store(small: Store) -> Iterator[str]:
    """The small store published as plain files by `python -m http.server` (no range requests)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", small.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_http_published_store(small: Store, http_store: str, tmp_path: Path) -> None:
    _same_results(small, http_store, REMOTE_QUERIES[1:], tmp_path)
    con = connect(http_store)  # views over HTTP too
    assert con.execute("SELECT count(*) FROM items").fetchone() == (small.manifest().rows,)
    with pytest.raises(Exception, match="read-only"):
        Store.open(http_store).storage.write("x", b"")


# ---------------------------------------------------------------------------------------------------- SQL side
def test_macros_and_examples_run_after_open_store(small: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    examples = sorted((SQL_DIR / "examples").glob("*.sql"))
    assert len(examples) >= 4
    rows = 0
    for example in examples:
        # as the CLI after `LOAD spatial`, which stops at the first error: nothing may fail (the store has no
        # archive inventory, so open_store.sql must fall back to the empty stand-in there)
        con = open_store(small.url, monkeypatch)
        result = cli_script(con, example)
        assert result is not None and result.description, example.name  # each example ends with a query
        rows += len(result.fetchall())
    assert rows > 10


def test_macros_agree_with_search(small: Store, tmp_path: Path) -> None:
    con = connect(small.url)
    with Searcher(small.url, cache=tmp_path) as s:
        for box_ in ([170, -30, -170, 5], [-10, 30, 40, 60], [-180, -90, 180, 90]):
            macro = {
                r[0] for r in con.execute("SELECT provider || '/' || id FROM search_bbox(?, ?, ?, ?)", box_).fetchall()
            }
            ours = {f"{h.provider}/{h.id}" for h in s.search(make_query(bbox=box_, limit=10_000), fetch=False).hits}
            assert macro == ours and ours
        macro = {r[0] for r in con.execute("SELECT id FROM search_datetime('2021-06-01', NULL)").fetchall()}
        ours = {h.id for h in s.search(make_query(datetime="2021-06-01T00:00:00Z/..", limit=10_000), fetch=False).hits}
        assert macro == ours and "edge-range" in ours
        # the products view holds what a merged search gives, product by product
        merged = s.search(make_query(limit=10_000, merge=True), fetch=False).hits
        view = dict(con.execute("SELECT product_key, providers FROM products").fetchall())
        keyed = {h.product_key: sorted(p for _, _, p in h.replicas) for h in merged if h.product_key}
        assert keyed == view and any(len(v) > 1 for v in view.values())


def test_python_api_one_call(small: Store, tmp_path: Path) -> None:
    import queries

    assert queries.search is search  # the package exposes the function
    result = queries.search(small.url, bbox="-180,-90,180,90", limit=3, cache=tmp_path)
    assert len(result.items) == 3 and result.next_token
    follow = search(small.url, bbox="-180,-90,180,90", limit=3, token=result.next_token, cache=tmp_path)
    assert not {i["id"] for i in follow.items} & {i["id"] for i in result.items}
    assert isinstance(result.table, pa.Table) and isinstance(make_query(), Query)
    assert os.environ.get("CSCALE_TOKEN_KEY") is None  # tokens above used the documented default key
