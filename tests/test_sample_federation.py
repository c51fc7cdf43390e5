"""The sample-federation generator (scripts/sample_federation.py): deterministic, valid STAC, names that agree
with their properties and with the real orbits, antimeridian-safe footprints, replicas that merge by product key."""

from __future__ import annotations

import copy
import itertools
import math
import re
import sys
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pystac
import pytest
import shapely
from pystac.validation import validate_dict
from pystac.validation.stac_validator import GetSchemaError, JsonSchemaSTACValidator
from shapely.geometry import Point, shape

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import sample_federation as sf

Item = dict[str, Any]
COUNT = 6000


@pytest.fixture(scope="module")
def federation() -> list[tuple[str, Item, str]]:
    return list(sf.generate_with_truth(count=COUNT, seed=42))


@pytest.fixture(scope="module")
def heavy_l2a() -> list[tuple[str, Item, str]]:
    return list(sf.generate_with_truth(count=600, seed=42, heavy=True, collections=["sentinel-2-l2a"]))


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _stamp_epoch(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y%m%dT%H%M%S").replace(tzinfo=UTC).timestamp()


def _family(truth: str) -> str:
    return truth.split("/")[0]


# --- determinism, counts, views ------------------------------------------------------------------------------


def _bytes(**kw: Any) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for _, item in sf.generate(**kw))


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = _bytes(count=400, seed=7)
    assert a == _bytes(count=400, seed=7)
    assert a != _bytes(count=400, seed=8)
    assert _bytes(count=200, seed=7, provider="GRNET", heavy=True) == _bytes(
        count=200, seed=7, provider="GRNET", heavy=True
    )


def test_counts_providers_and_collections() -> None:
    assert len(list(sf.generate(count=321, seed=1))) == 321
    assert list(sf.generate(count=0)) == []
    eodc = list(sf.generate(count=300, seed=1, provider="eodc"))
    assert len(eodc) == 300
    assert {p for p, _ in eodc} == {"EODC"}
    assert {i["collection"] for _, i in eodc} <= {o.collection for o in sf.FEDERATION[0].offerings}
    # a provider's collection id selects its product family, at every provider
    grd = list(sf.generate(count=200, seed=1, collections=["SENTINEL1_GRD"]))
    assert {i["properties"]["sar:product_type"] for _, i in grd} == {"GRD"}
    assert len({p for p, _ in grd}) >= 3
    with pytest.raises(ValueError, match="unknown provider"):
        list(sf.generate(count=1, provider="NOPE"))
    with pytest.raises(ValueError, match="unknown collection"):
        list(sf.generate(count=1, collections=["sentinel-9"]))
    with pytest.raises(ValueError, match="hold none"):
        list(sf.generate(count=1, provider="EODC", collections=["landsat-c2-l2"]))


def test_streams_without_precomputing_the_count() -> None:
    t = time.perf_counter()
    first = list(itertools.islice(sf.generate(count=10_000_000, seed=3), 50))
    assert len(first) == 50
    assert time.perf_counter() - t < 5.0


def test_time_range_and_platform_lifetimes() -> None:
    t0, t1 = _epoch("2021-12-01T00:00:00Z"), _epoch("2022-03-01T00:00:00Z")
    items = [i for _, i in sf.generate(count=1500, seed=5, start="2021-12-01", end="2022-02-28")]
    platforms = set()
    for item in items:
        p = item["properties"]
        for key in ("datetime", "start_datetime", "end_datetime"):
            if key in p:
                assert t0 <= _epoch(p[key]) < t1, (item["id"], key, p[key])
        platforms.add(item["id"][:3])
    assert "S1B" in platforms  # S1B flew until 2021-12-23 ...
    s1b_last = max(_epoch(i["properties"]["start_datetime"]) for i in items if i["id"].startswith("S1B"))
    assert s1b_last < _epoch("2021-12-24T00:00:00Z")  # ... and not a day more
    assert not platforms & {"S1C", "S2C"}


def test_spread_over_the_whole_range(federation: list[tuple[str, Item, str]]) -> None:
    years = Counter(i["properties"]["datetime"][:4] for _, i, _ in federation)
    assert set(years) == {str(y) for y in range(2018, 2025)}
    assert min(years.values()) > 0.8 * COUNT / 7


# --- STAC validity -------------------------------------------------------------------------------------------


class _OfflineValidator(JsonSchemaSTACValidator):
    """pystac's validator on pystac's own copy of the core schemas, never the network.

    Extension schemas are not shipped offline: they are skipped (test_extensions_are_declared checks the
    declarations instead). STAC 1.0.0 items are checked against the 1.1.0 item schema with its stac_version
    constant relaxed: for items the two versions differ only in what 1.1.0 adds (bands, which we do not use).
    """

    def __init__(self) -> None:
        super().__init__()
        core = "https://schemas.stacspec.org/v1.1.0/item-spec/json-schema/"
        for name in (
            "item",
            "basics",
            "common",
            "data-values",
            "datetime",
            "instrument",
            "licensing",
            "provider",
            "bands",
        ):
            schema = copy.deepcopy(self.schema_cache[core + f"{name}.json"])
            if name == "item":
                version = schema["definitions"]["core"]["allOf"][2]["properties"]["stac_version"]
                assert version.pop("const") == "1.1.0"
                version["enum"] = ["1.0.0", "1.1.0"]
            schema["$id"] = f"https://schemas.stacspec.org/v1.0.0/item-spec/json-schema/{name}.json"
            self.schema_cache[schema["$id"]] = schema

    def _get_schema(self, schema_uri: str) -> dict[str, Any]:
        if schema_uri not in self.schema_cache:
            raise GetSchemaError(schema_uri, RuntimeError("offline: no local copy"))
        return super()._get_schema(schema_uri)

    def validate_extension(self, *args: Any, **kwargs: Any) -> str | None:
        return None


def test_items_are_valid_stac(federation: list[tuple[str, Item, str]], heavy_l2a: list[tuple[str, Item, str]]) -> None:
    validator = _OfflineValidator()
    sample: dict[tuple[str, str], Item] = {}
    for provider, item, _ in federation + heavy_l2a[:5]:
        sample.setdefault((provider, item["collection"]), item)
    assert len(sample) >= 30
    for item in sample.values():
        # the raw item as a harvester receives it ...
        validate_dict(copy.deepcopy(item), validator=validator)
        # ... and as pystac reads and writes it
        obj = pystac.Item.from_dict(copy.deepcopy(item))
        assert obj.id == item["id"]
        validate_dict(obj.to_dict(transform_hrefs=False), validator=validator)
    broken = copy.deepcopy(next(iter(sample.values())))
    broken["geometry"] = {"type": "Polygon", "coordinates": [[1.0, 2.0]]}
    with pytest.raises(pystac.errors.STACValidationError):
        validate_dict(broken, validator=validator)


def _prefixes(item: Item) -> set[str]:
    keys = set(item["properties"])
    for asset in item["assets"].values():
        keys |= set(asset)
    return {k.split(":")[0] for k in keys if ":" in k}


def test_extensions_are_declared(
    federation: list[tuple[str, Item, str]], heavy_l2a: list[tuple[str, Item, str]]
) -> None:
    for _, item, _ in federation + heavy_l2a:
        used = {sf.EXTENSION_PREFIXES[p] for p in _prefixes(item) if p in sf.EXTENSION_PREFIXES}
        assert used == set(item["stac_extensions"]), item["id"]
        assert len(item["stac_extensions"]) == len(set(item["stac_extensions"]))


# --- names agree with properties -----------------------------------------------------------------------------

S1 = re.compile(
    r"(S1[ABC])_(IW|EW)_(GRDH|GRDM|SLC_)_1S(DV|DH|SV|SH)_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{6})_([0-9A-F]{6})(_[0-9A-F]{4})?"
)
S2_ESA = re.compile(r"(S2[ABC])_MSI(L1C|L2A)_(\d{8}T\d{6})_N(\d{4})_R(\d{3})_T(\d\d[C-X][A-Z]{2})_(\d{8}T\d{6})")
S2_PC = re.compile(r"(S2[ABC])_MSI(L1C|L2A)_(\d{8}T\d{6})_R(\d{3})_T(\d\d[C-X][A-Z]{2})_(\d{8}T\d{6})")
S2_ES = re.compile(r"(S2[ABC])_(\d{1,2}[C-X][A-Z]{2})_(\d{8})_(\d+)_(L1C|L2A)")
S3_FULL = re.compile(
    r"(S3[AB])_(OL|SL|SR|SY)_([12])_(\w{6})_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{4})_(\d{3})_(\d{3})"
    r"_(\d{4}|____)_(LN1|LN2|LN3|MAR)_O_(NR|ST|NT)_(\d{3})"
)
S3_SHORT = re.compile(
    r"(S3[AB])_(OL|SL|SR|SY)_([12])_(\w{3})_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{4})_(\d{3})_(\d{3})(?:_(\d{4}))?"
)
S5P = re.compile(r"S5P_(NRTI|OFFL)_(\w{10})_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{5})_(\d\d)_(\d{6})_(\d{8}T\d{6})")
LANDSAT = re.compile(r"(L[CE]0[789])_(L1TP|L1GT|L1GS|L2SP|L2SR)_(\d{3})(\d{3})_(\d{8})(?:_(\d{8}))?_02_(T1|T2|RT)")

# Relative orbits from absolute ones, as ESA numbers them (S1A/S1B: mission rules; S1C, S2A/B and S3A: derived
# from real products: S1C_S4_GRDH_..._000638_000538 is on track 15, S2A A046141 on R098, S2B A037161 on R098,
# S3A orbit 29567 is cycle 077 track 334).
RELATIVE = {
    "S1A": lambda n: (n - 73) % 175 + 1,
    "S1B": lambda n: (n - 27) % 175 + 1,
    "S1C": lambda n: (n - 99) % 175 + 1,
    "S2A": lambda n: (n + 2) % 143 + 1,
    "S2B": lambda n: (n + 116) % 143 + 1,
    "S3A": lambda n: (n + 26) % 385 + 1,
}
FLIES = {"S1B": ("2016-09-26", "2021-12-24"), "S1C": ("2024-12-05", "2100-01-01"), "S2C": ("2024-09-05", "2100-01-01")}


def _flies(sat: str, t: float) -> bool:
    first, last = FLIES.get(sat, ("2000-01-01", "2100-01-01"))
    return _epoch(first + "T00:00:00Z") <= t < _epoch(last + "T00:00:00Z")


def _check_s1(provider: str, item: Item) -> None:
    m = S1.fullmatch(item["id"])
    assert m, item["id"]
    sat, mode, ptype, pol, start, stop, orbit, dtid, crc = m.groups()
    p = item["properties"]
    assert (crc is not None) == (provider in ("EODC", "CESNET"))  # ESA names with CRC at EODC and CESNET only
    assert p["platform"].lower() == f"sentinel-{sat[1:].lower()}"
    assert p["sat:absolute_orbit"] == int(orbit)
    assert p["sat:relative_orbit"] == RELATIVE[sat](int(orbit))
    assert int(p["s1:datatake_id"]) == int(dtid, 16)
    assert p["start_datetime"][:19].replace("-", "").replace(":", "") == start
    assert p["end_datetime"][:19].replace("-", "").replace(":", "") == stop
    assert _flies(sat, _stamp_epoch(start))
    assert p["sar:instrument_mode"] == mode
    assert p["sar:product_type"] == ("SLC" if ptype == "SLC_" else "GRD")
    pols = p["sar:polarizations"]
    assert pols[0] == pol[1] * 2 and len(pols) == (2 if pol[0] == "D" else 1)
    assert 0 < _stamp_epoch(stop) - _stamp_epoch(start) <= 80


def _check_s2(provider: str, item: Item) -> None:
    p = item["properties"]
    iid = item["id"]
    uri = p["s2:product_uri"]
    assert uri.endswith(".SAFE")
    m = S2_ESA.fullmatch(uri[:-5])
    assert m, uri
    sat, level, datatake, baseline, rel, tile, generated = m.groups()
    if provider == "GRNET":
        es = S2_ES.fullmatch(iid)
        assert es, iid
        assert (es[1], es[2].zfill(5), es[5]) == (sat, tile, level)
        assert es[3] == p["datetime"][:10].replace("-", "")  # earth-search: date of the tile's sensing
    elif provider == "INCD":
        pc = S2_PC.fullmatch(iid)
        assert pc, iid
        assert pc.groups() == (sat, level, datatake, rel, tile, generated)
        assert p["datetime"][:19].replace("-", "").replace(":", "") == datatake  # PC: the datatake start
    else:
        assert iid == uri[:-5]
    t_datatake = _stamp_epoch(datatake)
    assert 0 <= _epoch(p["datetime"]) - t_datatake < 3000  # tiles are sensed within the datatake
    assert p["s2:processing_baseline"] == f"{baseline[:2]}.{baseline[2:]}"
    assert p["s2:product_type"] == f"S2MSI{level[1:]}"
    assert 1 <= int(rel) <= 143
    if "sat:relative_orbit" in p:
        assert p["sat:relative_orbit"] == int(rel)
    abs_orbit = int(p["s2:datatake_id"].split("_")[2])
    assert p["s2:datatake_id"] == f"G{sat}_{datatake}_{abs_orbit:06d}_N{p['s2:processing_baseline']}"
    assert f"_A{abs_orbit:06d}_T{tile}_" in p["s2:granule_id"]
    if sat in RELATIVE:
        assert RELATIVE[sat](abs_orbit) == int(rel)
    assert p.get("sat:absolute_orbit", abs_orbit) == abs_orbit
    # tile
    assert p.get("s2:mgrs_tile", tile) == tile
    assert p.get("grid:code", f"MGRS-{tile}") == f"MGRS-{tile}"
    if "mgrs:utm_zone" in p:
        assert (p["mgrs:utm_zone"], p["mgrs:latitude_band"], p["mgrs:grid_square"]) == (
            int(tile[:2]),
            tile[2],
            tile[3:],
        )
    assert p["proj:epsg"] == (32600 if tile[2] >= "N" else 32700) + int(tile[:2])
    # dates: platform flying, baseline in force, generation after sensing
    assert _flies(sat, t_datatake)
    t_gen = _stamp_epoch(generated)
    assert t_gen > t_datatake
    if baseline == "0500":  # collection-1 reprocessing of the archive, 2022-2024
        assert t_datatake < _epoch("2022-01-01T00:00:00Z") <= _epoch("2022-11-01T00:00:00Z") <= t_gen
    else:
        assert t_gen - t_datatake < 12 * 3600
        assert (baseline >= "0400") == (t_datatake >= _epoch("2022-01-25T00:00:00Z"))
        assert level == "L1C" or t_datatake >= _epoch("2017-10-23T00:00:00Z")


def _check_s3(provider: str, item: Item) -> None:
    p = item["properties"]
    iid = item["id"]
    if provider == "INCD":
        m = S3_SHORT.fullmatch(iid)
        assert m, iid
        sat, inst, level, kind, start, stop, dur, cycle, rel, frame = m.groups()
        timeliness = p["s3:processing_timeliness"]
    else:
        m = S3_FULL.fullmatch(iid)
        assert m, iid
        sat, inst, level, kind6, start, stop, created, dur, cycle, rel, frame, _centre, timeliness, _bl = m.groups()
        kind = kind6.rstrip("_")
        assert _stamp_epoch(created) > _stamp_epoch(stop)
        frame = None if frame == "____" else frame
    assert p["s3:product_type"].rstrip("_") == f"{inst}_{level}_{kind}"
    assert p["s3:processing_timeliness"] == timeliness
    assert p["platform"].lower() == f"sentinel-{sat[1:].lower()}"
    n = p["sat:absolute_orbit"]
    assert p["sat:relative_orbit"] == int(rel)
    if sat in RELATIVE:
        assert RELATIVE[sat](n) == int(rel)
        assert (n + 26) // 385 + 1 == int(cycle)
    assert p["start_datetime"][:19].replace("-", "").replace(":", "") == start
    assert p["end_datetime"][:19].replace("-", "").replace(":", "") == stop
    assert int(dur) == int(_stamp_epoch(stop) - _stamp_epoch(start))
    if frame is not None:
        assert int(frame) % 180 == 0 and int(dur) <= 180


def _check_s5p(provider: str, item: Item) -> None:
    m = S5P.fullmatch(item["id"])
    assert m, item["id"]
    mode, kind, start, stop, orbit, collection, _processor, produced = m.groups()
    p = item["properties"]
    assert (p["s5p:processing_mode"], p["s5p:product_type"]) == (mode, kind)
    assert p["s5p:collection_identifier"] == collection
    assert p["sat:absolute_orbit"] == int(orbit)
    assert p["start_datetime"][:19].replace("-", "").replace(":", "") == start
    assert _stamp_epoch(produced) > _stamp_epoch(stop)
    assert _stamp_epoch(stop) - _stamp_epoch(start) == pytest.approx(6090 if mode == "OFFL" else 300, abs=5)
    assert _stamp_epoch(start) >= _epoch("2018-04-30T00:00:00Z")


def _check_landsat(provider: str, item: Item) -> None:
    m = LANDSAT.fullmatch(item["id"])
    assert m, item["id"]
    sensor, correction, path, row, acquired, processed, category = m.groups()
    assert (processed is None) == (provider == "INCD")  # PC-style ids drop the processing date
    p = item["properties"]
    assert p["landsat:wrs_path"] == path and p["landsat:wrs_row"] == row
    assert p["landsat:correction"] == correction and p["landsat:collection_category"] == category
    assert p["landsat:scene_id"][3:9] == path + row
    assert p["datetime"][:10].replace("-", "") == acquired
    assert p["platform"].lower().replace("_", "-") == f"landsat-{int(sensor[2:])}"
    assert 1 <= int(path) <= 233 and 1 <= int(row) <= 122
    if processed is not None:
        assert processed >= acquired


CHECKS = {"S1": _check_s1, "S2": _check_s2, "S3": _check_s3, "S5P": _check_s5p, "LANDSAT": _check_landsat}


def test_names_agree_with_properties(federation: list[tuple[str, Item, str]]) -> None:
    seen: Counter[str] = Counter()
    for provider, item, truth in federation:
        mission = sf.FAMILY[_family(truth)].mission
        CHECKS[mission](provider, item)
        seen[mission] += 1
    assert set(seen) == set(CHECKS)


def _local_solar_hour(item: Item) -> tuple[float, float]:
    lon, lat = shapely.centroid(shape(item["geometry"])).coords[0]
    t = _epoch(item["properties"]["datetime"])
    return ((t % 86400) / 3600.0 + lon / 15.0) % 24.0, lat


def test_sun_synchronous_times_of_day(federation: list[tuple[str, Item, str]]) -> None:
    """Each mission passes at its local solar time: S2 ~10:30 and Landsat ~10:10 descending, S1 ~06:00
    descending and ~18:00 ascending: times, places and tracks come from one consistent orbit."""
    for provider, item, truth in federation:
        if item["geometry"]["type"] != "Polygon":
            continue
        hour, lat = _local_solar_hour(item)
        mission = sf.FAMILY[_family(truth)].mission
        if abs(lat) > 55:
            continue
        if mission == "S2" and provider != "INCD":  # INCD (PC style) dates tiles by the datatake start
            assert 9.6 < hour < 11.6, (item["id"], hour)
        elif mission == "LANDSAT":
            assert 9.3 < hour < 11.2, (item["id"], hour)
        elif mission == "S1":
            target = 18.0 if item["properties"]["sat:orbit_state"] == "ascending" else 6.0
            assert abs(hour - target) < 1.6, (item["id"], hour)


def test_s2_tiles_match_their_utm_square(heavy_l2a: list[tuple[str, Item, str]]) -> None:
    pyproj = pytest.importorskip("pyproj")
    cols = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")
    rows = "ABCDEFGHJKLMNPQRSTUV"
    for _, item, _ in heavy_l2a[:150]:
        p = item["properties"]
        tile = p["s2:product_uri"].split("_T")[1][:5]
        zone = int(tile[:2])
        _, _, ulx, _, _, uly = item["assets"]["visual"]["proj:transform"]
        assert cols[(zone - 1) % 3].index(tile[3]) + 1 == round(ulx / 100000)
        assert (rows.index(tile[4]) - (5 if zone % 2 == 0 else 0)) % 20 == (round(uly / 100000) - 1) % 20
        to_lonlat = pyproj.Transformer.from_crs(p["proj:epsg"], 4326, always_xy=True)
        lon, lat = to_lonlat.transform(ulx + 54900.0, uly - 54900.0)
        geom = shape(item["geometry"])
        if item["geometry"]["type"] == "MultiPolygon":
            geom = shapely.union_all(
                [shapely.affinity.translate(g, 360.0 if g.bounds[0] < 0 else 0.0) for g in geom.geoms]
            )
            lon %= 360.0
        assert geom.buffer(1e-6).contains(Point(lon, lat)), item["id"]


# --- the orbit model against real products -------------------------------------------------------------------


def _real_names(corpus: Path, name: str) -> list[str]:
    path = corpus / "names" / name
    if not path.is_file():
        pytest.skip(f"{path} not in the corpus")
    return path.read_text().split()


def test_orbit_model_reproduces_real_products(corpus: Path) -> None:
    """The generator's orbits give the absolute/relative orbits, cycles and acquisition days of real names."""
    hits: Counter[str] = Counter()
    total: Counter[str] = Counter()

    def check(kind: str, ok: bool) -> None:
        total[kind] += 1
        hits[kind] += ok

    for name in _real_names(corpus, "sentinel1.txt"):
        if m := S1.match(name) or re.match(r"(S1[ABC])_\w\w_\w{4}_\w{4}_(\d{8}T\d{6})_\d{8}T\d{6}_(\d{6})", name):
            pl = sf.PLATFORMS[m[1]]
            start, orbit = (m[5], m[7]) if m.re is S1 else (m[2], m[3])
            check("S1 absolute orbit", pl.orbit_at(_stamp_epoch(start)) == int(orbit))
    for name in _real_names(corpus, "sentinel2.txt"):
        if m := re.match(r"(S2[AB])_MSI\w{3}_(\d{8}T\d{6})_(?:N\d{4}_)?R(\d{3})_T", name):
            pl = sf.PLATFORMS[m[1]]
            check("S2 relative orbit", pl.track(pl.orbit_at(_stamp_epoch(m[2]))) == int(m[3]))
    for name in _real_names(corpus, "sentinel3.txt"):
        if m := re.match(r"(S3[AB])_\w\w_\w_\w{6}_(\d{8}T\d{6})_\d{8}T\d{6}_\d{8}T\d{6}_\d{4}_(\d{3})_(\d{3})", name):
            pl = sf.PLATFORMS[m[1]]
            n = pl.orbit_at(_stamp_epoch(m[2]))
            check("S3 cycle and orbit", (pl.cycle(n), pl.track(n)) == (int(m[3]), int(m[4])))
    for name in _real_names(corpus, "sentinel5p.txt"):
        if m := S5P.fullmatch(name):
            mid = (_stamp_epoch(m[3]) + _stamp_epoch(m[4])) / 2
            check("S5P orbit", sf.PLATFORMS["S5P"].orbit_at(mid) == int(m[5]))
    for name in _real_names(corpus, "landsat-c2.txt"):
        if (m := LANDSAT.fullmatch(name)) and m[1] in sf.PLATFORMS:
            pl = sf.PLATFORMS[m[1]]
            tau = (180.0 + (int(m[4]) - 60) * 360.0 / 248.0) / 360.0 * pl.orbit.period  # WRS-2 row
            noon = _stamp_epoch(m[5] + "T120000")
            n = pl.orbit_near(int(m[3]), noon - tau)  # the orbit flying that path nearest that day
            check("Landsat path/row day", abs(pl.anx(n) + tau - noon) < 43200)
    assert set(total) == {
        "S1 absolute orbit",
        "S2 relative orbit",
        "S3 cycle and orbit",
        "S5P orbit",
        "Landsat path/row day",
    }
    for kind in total:
        assert total[kind] >= 50 and hits[kind] / total[kind] >= 0.98, (kind, hits[kind], total[kind])


def test_orbit_numbers_start_at_one() -> None:
    for code, platform in sf.PLATFORMS.items():
        assert platform.orbit_at(platform.first) >= 1, code


def test_utm_matches_pyproj() -> None:
    pyproj = pytest.importorskip("pyproj")
    worst = 0.0
    for k in range(300):
        lat, lon = -79.0 + (k * 0.5371) % 162.0, -180.0 + (k * 7.919) % 360.0
        zone = sf.utm_zone(lat, lon)
        e, n = pyproj.Transformer.from_crs(4326, (32700 if lat < 0 else 32600) + zone, always_xy=True).transform(
            lon, lat
        )
        e2, n2 = sf.to_utm(lat, lon, zone)
        lon2, lat2 = sf.from_utm(e, n, zone, lat < 0)
        worst = max(worst, abs(e - e2), abs(n - n2), abs(lat2 - lat) * 1e5, abs((lon2 - lon + 180) % 360 - 180) * 1e5)
    assert worst < 0.01  # metres


# --- footprints ----------------------------------------------------------------------------------------------


def test_footprint_split_at_the_antimeridian() -> None:
    fp = sf.footprint([(170.0, 40.0), (170.0, 50.0), (-170.0, 50.0), (-170.0, 40.0)][::-1])
    assert fp.bbox == (170.0, 40.0, -170.0, 50.0)
    geom = fp.geojson()
    assert geom["type"] == "MultiPolygon"
    west, east = (shape({"type": "Polygon", "coordinates": part}) for part in geom["coordinates"])
    assert west.bounds == (170.0, 40.0, 180.0, 50.0) and east.bounds == (-180.0, 40.0, -170.0, 50.0)
    assert west.area == east.area == 100.0
    plain = sf.footprint([(10.0, 0.0), (11.0, 0.0), (11.0, 1.0), (10.0, 1.0)])
    assert plain.geojson()["type"] == "Polygon" and plain.bbox == (10.0, 0.0, 11.0, 1.0)


def test_geometries_valid_antimeridian_and_polar(federation: list[tuple[str, Item, str]]) -> None:
    crossing: Counter[str] = Counter()
    polar: Counter[str] = Counter()
    for _, item, truth in federation:
        geom = shape(item["geometry"])
        assert geom.is_valid and geom.area > 0, (item["id"], shapely.is_valid_reason(geom))
        x0, y0, x1, y1 = item["bbox"]
        assert min(x0, x1) >= -180.0 and max(x0, x1) <= 180.0 and -90.0 <= y0 < y1 <= 90.0
        if item["geometry"]["type"] == "MultiPolygon":
            crossing[_family(truth)] += 1
            west, east = geom.geoms
            assert x0 > x1  # RFC 7946 / STAC: a bbox across the antimeridian has minx > maxx
            assert west.bounds[2] == 180.0 and east.bounds[0] == -180.0
            assert (x0, x1) == (west.bounds[0], east.bounds[2])
        else:
            assert geom.bounds == pytest.approx((x0, y0, x1, y1))
        if max(abs(y0), abs(y1)) > 75.0:
            polar[_family(truth)] += 1
    assert sum(crossing.values()) >= 20 and len(crossing) >= 4, crossing
    assert sum(polar.values()) >= 20, polar
    assert crossing["sentinel-1-grd"] + crossing["sentinel-3-olci"] > 0


def test_footprints_are_plausible_sizes(federation: list[tuple[str, Item, str]]) -> None:
    """Swath widths (the longer side): S1 IW ~250 km, S2 tiles ~110 km, S3 OLCI ~1270 km, S5P ~2600 km."""

    def long_side_km(item: Item) -> float:
        g = shape(item["geometry"])
        if item["geometry"]["type"] == "MultiPolygon":
            g = shapely.union_all([shapely.affinity.translate(p, 360.0 if p.bounds[0] < 0 else 0.0) for p in g.geoms])
        lat = math.radians(g.centroid.y)
        rect = shapely.minimum_rotated_rectangle(shapely.affinity.scale(g, xfact=math.cos(lat), yfact=1.0))
        (ax, ay), (bx, by), (cx, cy) = list(rect.exterior.coords)[:3]
        return 111.2 * max(math.hypot(bx - ax, by - ay), math.hypot(cx - bx, cy - by))

    widths: dict[str, list[float]] = defaultdict(list)
    for _, item, truth in federation:
        if max(abs(item["bbox"][1]), abs(item["bbox"][3])) < 60:
            p = item["properties"]
            if p.get("sar:instrument_mode") == "IW" and p["sar:product_type"] == "GRD":
                widths["S1 IW"].append(long_side_km(item))
            elif _family(truth).startswith("sentinel-2"):
                widths["S2"].append(long_side_km(item))
            elif p.get("s3:product_type") in ("OL_1_EFR___", "OL_2_LFR___"):
                widths["OLCI"].append(long_side_km(item))
            elif p.get("s5p:processing_mode") == "NRTI":
                widths["S5P"].append(long_side_km(item))
    expected = {"S1 IW": (220, 290), "S2": (105, 125), "OLCI": (1150, 1450), "S5P": (2300, 2900)}
    for kind, (lo, hi) in expected.items():
        median = sorted(widths[kind])[len(widths[kind]) // 2]
        assert lo < median < hi, (kind, median)


# --- replicas and product keys -------------------------------------------------------------------------------


def _holders(items: list[tuple[str, Item, str]]) -> dict[str, list[tuple[str, Item]]]:
    out: dict[str, list[tuple[str, Item]]] = defaultdict(list)
    for provider, item, truth in items:
        out[truth].append((provider, item))
    return out


def test_replicas_across_providers(federation: list[tuple[str, Item, str]]) -> None:
    groups = _holders(federation)
    replicated = sum(len(v) for v in groups.values() if len(v) > 1)
    assert 0.27 < replicated / len(federation) < 0.33
    different_ids = 0
    for holders in groups.values():
        providers = [p for p, _ in holders]
        assert len(set(providers)) == len(providers)  # a provider holds a product once
        first = holders[0][1]
        for _, other in holders[1:]:
            assert other["geometry"] == first["geometry"]
            assert other["bbox"] == first["bbox"]
        different_ids += len({item["id"] for _, item in holders}) > 1
    assert different_ids > 50  # ESA names with and without CRC, PC and earth-search ids of one product
    for fraction, lo, hi in ((0.0, 0.0, 0.0), (0.6, 0.55, 0.65)):
        items = list(sf.generate_with_truth(count=2000, seed=9, replica_fraction=fraction))
        groups = _holders(items)
        share = sum(len(v) for v in groups.values() if len(v) > 1) / len(items)
        assert lo <= share <= hi, (fraction, share)


def test_product_keys_parse_and_merge_replicas(
    federation: list[tuple[str, Item, str]], heavy_l2a: list[tuple[str, Item, str]]
) -> None:
    names = pytest.importorskip("harvester.product_names")
    keys: dict[str, set[str | None]] = defaultdict(set)
    unparsed, unkeyed = [], []
    runs = [("federation", federation), ("heavy", heavy_l2a)]
    for run, provider, item, truth in ((r, *x) for r, items in runs for x in items):
        key = names.product_key(item["id"], item["properties"])
        if key is None:
            unkeyed.append((provider, item["id"]))
        keys[f"{run}:{truth}"].add(key)
        # the id itself, or for earth-search ids the ESA name the item carries
        name = item["properties"]["s2:product_uri"] if S2_ES.fullmatch(item["id"]) else item["id"]
        if names.parse_product_name(name) is None:
            unparsed.append((provider, name, names.explain_rejection(name)))
    assert not unkeyed, unkeyed[:10]
    assert not unparsed, unparsed[:10]
    split = {truth: k for truth, k in keys.items() if len(k) > 1}
    assert not split, list(split.items())[:5]  # replicas under different id styles get one key
    owners: dict[str | None, set[str]] = defaultdict(set)
    for truth, k in keys.items():
        if truth.startswith("federation:"):
            owners[next(iter(k))].add(truth)
    assert not [k for k, v in owners.items() if len(v) > 1][:5]  # and distinct products distinct keys
    multi_style = [truth for truth, items in _holders(federation).items() if len({i["id"] for _, i in items}) > 1]
    assert len(multi_style) > 50


# --- heavy items, writing, CLI -------------------------------------------------------------------------------


def test_heavy_l2a_items_weigh_like_planetary_computer(heavy_l2a: list[tuple[str, Item, str]]) -> None:
    sizes: dict[str, list[int]] = defaultdict(list)
    for provider, item, _ in heavy_l2a:
        sizes[provider].append(len(orjson.dumps(item)))
        assert len(item["assets"]) >= 18
        band = item["assets"].get("B04") or item["assets"]["red"]
        assert {"eo:bands", "raster:bands", "proj:shape", "proj:transform", "roles", "title"} <= set(band)
    assert set(sizes) == {"EODC", "GRNET", "CREODIAS", "CESNET", "INCD"}
    for provider, values in sizes.items():
        assert 12_000 <= sum(values) / len(values) <= 18_000, provider
    light = [
        len(orjson.dumps(i)) for _, i, _ in sf.generate_with_truth(count=300, seed=42, collections=["sentinel-2-l2a"])
    ]
    assert sum(light) / len(light) < 0.6 * sum(map(sum, sizes.values())) / len(heavy_l2a)


def test_heavy_changes_only_l2a_assets() -> None:
    plain = list(sf.generate(count=500, seed=4))
    heavy = list(sf.generate(count=500, seed=4, heavy=True))
    assert [(p, i["id"]) for p, i in plain] == [(p, i["id"]) for p, i in heavy]
    for (_, a), (_, b) in zip(plain, heavy, strict=True):
        if "l2a" not in a["collection"].lower():
            assert a == b
        else:
            assert a["properties"] == b["properties"] and a["geometry"] == b["geometry"]


def test_write_ndjson(tmp_path: Path) -> None:
    path = tmp_path / "x.ndjson"
    assert sf.write_ndjson(path, sf.generate(count=120, seed=2)) == 120
    lines = path.read_bytes().splitlines()
    assert len(lines) == 120
    assert [orjson.loads(line) for line in lines] == [i for _, i in sf.generate(count=120, seed=2)]


def test_cli_writes_one_file_per_provider(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fed"
    assert sf.main(["--out", str(out), "--count", "500", "--seed", "3", "--providers", "EODC,GRNET,CREODIAS"]) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["CREODIAS.ndjson", "EODC.ndjson", "GRNET.ndjson"]
    lines = {f: (out / f).read_bytes().splitlines() for f in files}
    assert sum(len(v) for v in lines.values()) == 500
    eodc = {orjson.loads(line)["collection"] for line in lines["EODC.ndjson"]}
    assert eodc <= {"SENTINEL1_GRD", "SENTINEL1_SLC", "SENTINEL2_L1C", "SENTINEL2_L2A"}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("items" in line for line in err)
    again = tmp_path / "again"
    sf.main(["--out", str(again), "--count", "500", "--seed", "3", "--providers", "EODC,GRNET,CREODIAS"])
    assert all((again / f).read_bytes() == (out / f).read_bytes() for f in files)

    single = tmp_path / "one.ndjson"
    assert sf.main(["--single-file", str(single), "--providers", "INCD", "--count", "50", "--heavy"]) == 0
    assert len(single.read_bytes().splitlines()) == 50
    with pytest.raises(SystemExit) as exc:
        sf.main(["--single-file", str(single), "--providers", "INCD,EODC", "--count", "5"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        sf.main(["--out", str(out), "--count", "5", "--providers", "NOPE"])
