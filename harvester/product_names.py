"""Parse Copernicus and Landsat product names into a canonical, provider-independent `product_key`.

Providers name the same product differently (ESA `.SAFE` names with CRC, Planetary Computer ids without CRC
or with their own processing time, earth-search `S2B_10TFK_20210713_0_L2A`, stactools short ids, USGS
`_SR`/`_ST` items). The key identifies the *acquisition product*, not the file copy, so replicas merge: it
keeps what says which acquisition and which product type it is, and drops what only says which copy or which
(re)processing run it is (CRC, creation/processing time, centre, processor version, baseline, file suffix).

Key formats. A part the name does not tell is written as `X`s of the same width, so such a key is
deterministic, never equal to a fully known key, and sorts next to it.

Sentinel-1   `S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13`: the ESA name up to the
             datatake id, without CRC and `.SAFE`/`.zip`/`_COG`; PC's ids are exactly this. PC's RTC items
             (`..._rtc`) are a derived product, keyed `..._049F13_RTC` so they never merge with their GRD.
Sentinel-2   `S2B_MSIL2A_20210713T184919_T10TFK`: satellite, level, datatake sensing start, MGRS tile.
             Baseline, relative orbit and processing time are properties only (reprocessed replicas merge).
             The datatake time comes from the id (ESA compact name, PC id), else from a property holding an
             ESA name (`s2:product_uri`, `sentinel:product_id`) or from `s2:datatake_id`. The item `datetime`
             is *not* used: earth-search and stactools set it to the tile sensing time, a minute or so after
             the datatake start that ESA and PC use, so it would split replicas instead of merging them.
             Fallbacks when no datatake time is known:
             - date only (earth-search `S2B_10TFK_20210713_0_L2A`; stactools/earth-search-c1
               `S2A_T01LAC_20200717T221944_L1C`, whose time is the datastrip start, not the datatake start):
               `S2B_MSIL2A_20210713TXXXXXX_T10TFK`; an earth-search sequence n > 0 replaces the last X by n
               (`TXXXXX1`), so the second product of a tile and day stays distinct.
             - legacy tile names (`S2A_OPER_MSI_L1C_TL_..._A003282_T20MLC`, no sensing time at all; also
               their MTD_/PVI_ files): `S2A_MSIL1C_A003282_T20MLC` (absolute orbit and tile).
             - legacy multi-tile products (`S2A_OPER_PRD_MSIL1C_PDMC_..._R008_V20160101T103452_...`):
               `S2A_MSIL1C_20160101T103452_R008` (V start = product start time = datatake start).
             - legacy datastrips (`S2A_OPER_MSI_L1C_DS_..._S20160101T150144`):
               `S2A_MSIL1C_DS_20160101T150144`.
             Known limit: when one datatake reaches a tile in two datastrips, ESA makes two products that
             differ only in the discriminator (`..._T01WCP_20230626T022157` and `..._022158`): one key.
Sentinel-3   `S3A_OL_1_EFR____20211021T073827_20211021T074112_0164_077_334_4320_NR`: type, start, stop,
             the 17-character instance (duration_cycle_orbit_frame, or a tile name) and the timeliness
             (NR/ST/NT are different products). Creation time, centre, platform class and baseline
             collection are dropped. stactools short ids (`S3A_OL_1_EFR_20211021T073827_..._334_4320`) lack
             the timeliness: it comes from `s3:processing_timeliness`, else the key ends `_XX`. Auxiliary
             files (`AX`) are file versions, not acquisitions: their key keeps the baseline collection.
Sentinel-5P  `S5P_OFFL_L2__NO2____20200303T013547_20200303T031717_12367`: stream (NRTI/OFFL/RPRO are
             distinct products), product type, start, stop, orbit. Collection, processor version and
             production time are dropped (same reasoning as the S2 baseline).
Landsat      `LC08_L2SP_045034_20191017_02_T1`: the product id without the processing date, keeping the
             collection number and category (an RT scene reprocessed to T1/T2 is a new product). This is
             PC's id form; USGS's `_SR`/`_ST` items of one L2SP product share it. Pre-collection scene ids
             (`LC80140322020001LGN00`) are keyed as themselves, unless the item's `landsat:product_id`
             names the collection product it holds.

Properties use STAC names and hold only what the name tells, plus relative orbits derived from absolute ones
through the fixed repeat cycles of S1 and S2. For S2, `datetime` is the product start time (= datatake
sensing start, ESA's MTD `PRODUCT_START_TIME`, what PC uses).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

__all__ = [
    "NAME_PROPERTIES",
    "ProductName",
    "RejectedName",
    "explain_rejection",
    "parse_product_name",
    "product_key",
]

NAME_PROPERTIES = (
    "s2:product_uri",
    "sentinel:product_id",
    "s1:product_identifier",
    "s3:product_name",
    "landsat:product_id",
)
"""Item properties that hold the provider-independent (ESA/USGS) product name, in the order they are tried."""


@dataclass(frozen=True, slots=True)
class ProductName:
    """A recognised product name: its mission, canonical key and the STAC properties the name tells."""

    mission: str
    product_key: str
    properties: dict[str, object]


class RejectedName(ValueError):
    """`name` is not a product name; `reason` is a short code for quarantine/report records."""

    def __init__(self, reason: str, name: str = "") -> None:
        super().__init__(f"{reason}: {name[:120]!r}")
        self.reason = reason
        self.name = name


def parse_product_name(name: str) -> ProductName | None:
    """Parse a product/item/file name; None when it is not a recognised product name.

    Accepts surrounding path and suffixes: '.SAFE', '.SAFE.zip', '.zip', '.SEN3', '.nc', '.tar', '_COG',
    '.json', trailing '/' (and '.xml'/'.jp2', for the metadata and preview files of legacy S2 products).
    """
    try:
        parsed = _parse(_base_name(name))
    except RejectedName:
        return None
    return _s2_product(parsed) if isinstance(parsed, _S2) else parsed


def explain_rejection(name: str) -> str:
    """A short reason code why `name` is not a product name ('' when it is one).

    Codes: empty, unknown_mission, not_a_product, auxiliary_file, incomplete_name, malformed, bad_platform,
    bad_date, bad_time_range, bad_s1_mode, bad_s1_type, bad_s1_level, bad_s1_polarisation, bad_s2_level,
    bad_s2_tile, bad_s3_instrument, bad_s3_level, bad_s3_timeliness, bad_s5p_stream, bad_s5p_level,
    bad_landsat_sensor, bad_landsat_level, bad_landsat_category.
    """
    try:
        _parse(_base_name(name))
    except RejectedName as exc:
        return exc.reason
    return ""


def product_key(item_id: str, properties: Mapping[str, object] | None = None) -> str | None:
    """The canonical product key for a STAC item id (or a file name); None when not recognised.

    `properties` may supply what the id lacks: a property holding the ESA/USGS name (`NAME_PROPERTIES`),
    `s2:datatake_id`, the S2 tile (`s2:mgrs_tile`, `grid:code`, `s2:granule_id`, `s2:tile_id`) or
    `s3:processing_timeliness`. When the id alone gives a complete key, that key is returned: a name property
    then names the same product or, for derived items such as RTC, their source product, which must not win.
    Landsat scene ids (`LC80370332018039LGN00`) are not complete: `landsat:product_id` names the product.
    """
    props: Mapping[str, object] = properties if properties is not None else {}
    try:
        item: _S2 | ProductName | None = _parse(_base_name(item_id), full=False)
    except RejectedName:
        item = None
    if isinstance(item, _S2):
        if item.is_complete() or not props:
            return item.key()
        return _s2_key_with(item, props)
    if item is not None and (not props or _is_complete(item)):
        return item.product_key

    for base in _name_values(props):
        try:
            named = _parse(base, full=False)
        except RejectedName:
            continue
        if isinstance(named, _S2):
            if item is None:
                return _s2_key_with(named, props)
        elif item is None or _compatible(named, item):
            item = named
            break
    if item is None:
        return None
    return _with_s3_timeliness(item, props)


# --- name normalisation and dispatch ------------------------------------------------------------------------

_SUFFIXES = (".zip", ".ZIP", ".SAFE", ".safe", ".SEN3", ".nc", ".tar", ".tgz", ".gz", ".json", ".xml", ".jp2", "_COG")


def _base_name(name: str) -> str:
    base = name.strip().rstrip("/")
    cut = base.rfind("/")
    if cut >= 0:
        base = base[cut + 1 :]
    while base.endswith(_SUFFIXES):  # '.SAFE.zip', '_COG.SAFE', '.tar.gz' strip in turn
        for suffix in _SUFFIXES:
            if base.endswith(suffix):
                base = base[: -len(suffix)]
                break
    return base


def _parse(base: str, full: bool = True) -> _S2 | ProductName:
    """Parse or raise RejectedName. With `full=False` (keys only) properties hold just `product_type`."""
    if base.startswith("S2"):
        return _parse_s2(base)
    if base.startswith("S1"):
        return _parse_s1(base, full)
    if base.startswith("S3"):
        return _parse_s3(base, full)
    if base.startswith("S5P"):
        return _parse_s5p(base, full)
    if base.startswith("L"):
        return _parse_landsat(base, full)
    raise RejectedName("empty" if not base else "unknown_mission", base)


_STAMP = re.compile(r"\d{8}T\d{6}")


def _reject_shape(base: str) -> RejectedName:
    """The reason for a name whose mission prefix is known but whose layout matches no grammar."""
    if "_AUX_" in base or base[4:8] == "AUX_":
        return RejectedName("auxiliary_file", base)
    # ESA names carry a sensing time; without one it is another kind of id (RTC tile S1A_20200103_17RMJ_ASC)
    return RejectedName("malformed" if _STAMP.search(base) else "not_a_product", base)


# --- dates --------------------------------------------------------------------------------------------------

_MIN_YEAR, _MAX_YEAR = 1970, 2100
_DAYS: dict[str, int] = {}  # 'YYYYMMDD' -> day number, 0 when invalid; millions of names share a few dates


def _day(ymd: str) -> int:
    day = _DAYS.get(ymd)
    if day is None:
        try:
            date = datetime(int(ymd[:4]), int(ymd[4:6]), int(ymd[6:8]))
            day = date.toordinal() if _MIN_YEAR <= date.year <= _MAX_YEAR else 0
        except ValueError:
            day = 0
        if len(_DAYS) < 200_000:
            _DAYS[ymd] = day
    return day


def _date_ok(ymd: str) -> bool:
    return _day(ymd) > 0


def _check_stamp(stamp: str, base: str) -> None:
    """Reject `base` as bad_date unless 'YYYYMMDDTHHMMSS' (digits checked by the grammar) is a real time."""
    if not (_date_ok(stamp[:8]) and stamp[9:11] < "24" and stamp[11:13] < "60" and stamp[13:15] < "60"):
        raise RejectedName("bad_date", base)


_OPEN_END = "99991231T235959"  # ESA's "valid until further notice" (auxiliary files)


def _check_period(start: str, stop: str, base: str) -> None:
    _check_stamp(start, base)
    if stop != _OPEN_END:
        _check_stamp(stop, base)
    if stop < start:  # same fixed-width layout, so string order is time order
        raise RejectedName("bad_time_range", base)


def _iso(stamp: str) -> str:
    """'YYYYMMDDTHHMMSS' as ISO 8601 with Z."""
    return f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}T{stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]}Z"


# --- Sentinel-1: MMM_BB_TTTR_LFPP_start_stop_orbit_datatake[_CRC] -------------------------------------------

_S1 = re.compile(
    r"(S1\w)_(\w\w)_(\w{3})(\w)_(\w)(\w)(\w\w)_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{6})_([0-9A-F]{6})"
    r"(?:_[0-9A-F]{4})?(_rtc|_RTC)?"
)
_S1_MODES = frozenset(
    ["IW", "EW", "WV", "EN", "RF", "ZI", "ZE", "ZW"]
    + [f"{p}{n}" for p in "SNZ" for n in "123456"]  # S1-S6 stripmap, N1-N6 notch, Z1-Z6 noise
)
# SL1 is the per-swath SLC ESA writes into manifests (`S1C_S4_SL1__1_DH_...`); its class letter is '_'.
_S1_TYPES = {"GRD": "GRD", "SLC": "SLC", "RAW": "RAW", "OCN": "OCN", "SL1": "SLC"}
_S1_POLARISATIONS = {
    "SH": ["HH"],
    "SV": ["VV"],
    "DH": ["HH", "HV"],
    "DV": ["VV", "VH"],
    "HH": ["HH"],
    "HV": ["HV"],
    "VV": ["VV"],
    "VH": ["VH"],
}
_S1_RESOLUTIONS = {"F": "full", "H": "high", "M": "medium"}
_S1_REL_ORBIT_OFFSET = {"A": 73, "B": 27, "C": 99}  # relative = (absolute - offset) % 175 + 1


def _parse_s1(base: str, full: bool) -> ProductName:
    m = _S1.fullmatch(base)
    if m is None:
        raise _reject_shape(base)
    sat, mode, ptype, res, level, pclass, pol, start, stop, orbit, datatake, rtc = m.groups()
    if sat[2] not in "ABCD":
        raise RejectedName("bad_platform", base)
    if mode not in _S1_MODES:
        raise RejectedName("bad_s1_mode", base)
    sar_type = _S1_TYPES.get(ptype)
    if sar_type is None or res not in "FHM_":
        raise RejectedName("bad_s1_type", base)
    if level not in "012" or pclass not in "SACN_":
        raise RejectedName("bad_s1_level", base)
    polarisations = _S1_POLARISATIONS.get(pol)
    if polarisations is None:
        raise RejectedName("bad_s1_polarisation", base)
    _check_period(start, stop, base)
    key = base[: m.end(11)] + ("_RTC" if rtc else "")
    # RTC is terrain-corrected from the GRD: the ESA product type no longer describes it
    product_type = "" if rtc else f"{mode}_{ptype}{res}_{level}{pclass}"
    if not full:
        return ProductName("sentinel-1", key, {"product_type": product_type})
    props: dict[str, object] = {
        "platform": f"sentinel-1{sat[2].lower()}",
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "sar:instrument_mode": "SM" if mode[0] == "S" else mode,
        "sar:product_type": "RTC" if rtc else sar_type,
        "sar:polarizations": list(polarisations),
        "sat:absolute_orbit": int(orbit),
        "s1:datatake_id": str(int(datatake, 16)),
        "processing:level": f"L{level}",
        "start_datetime": _iso(start),
        "end_datetime": _iso(stop),
    }
    offset = _S1_REL_ORBIT_OFFSET.get(sat[2])
    if offset is not None:
        props["sat:relative_orbit"] = (int(orbit) - offset) % 175 + 1
    if res in _S1_RESOLUTIONS:
        props["s1:resolution"] = _S1_RESOLUTIONS[res]
    if product_type:
        props["product_type"] = product_type
    return ProductName("sentinel-1", key, props)


# --- Sentinel-2 ---------------------------------------------------------------------------------------------

_S2_COMPACT = re.compile(r"(S2\w)_MSI(\w{3})_(\d{8}T\d{6})_(?:N(\d{4})_)?R(\d{3})_T(\w{5})_(\d{8}T\d{6})")
_S2_EARTH_SEARCH = re.compile(r"(S2\w)_(\d{1,2}[A-Z]{3})_(\d{8})_(\d{1,2})_(\w{3})")
_S2_TILE_TIME = re.compile(r"(S2\w)_T(\w{5})_(\d{8}T\d{6})_(\w{3})")  # stactools, earth-search c1
# legacy (2015-2016) names: MMM_CCCC_<file type, 10>_<centre, 4>_<creation>_<instance>; the file type says
# which part of a product the file is: PRD_MSIL1C / MTD_SAFL1C the multi-tile product and its metadata,
# MSI_L1C_TL, MTD_L1C_TL, PVI_L1C_TL (and MSI_L1C_TC) a tile, MSI_L1C_DS / MTD_L1C_DS a datastrip
_S2_LEGACY = re.compile(r"(S2\w)_(?:OPER|USER)_([A-Z]{3})_(\w{6})_\w{4}_(\d{8}T\d{6})(\w*(?:\.\d\d)?)")
_S2_LEGACY_PRODUCT = re.compile(r"_R(\d{3})_V(\d{8}T\d{6})_(\d{8}T\d{6})")
_S2_LEGACY_TILE = re.compile(r"_A(\d{6})_T(\w{5})(?:_N(\d\d\.\d\d))?")
_S2_LEGACY_DATASTRIP = re.compile(r"_S(\d{8}T\d{6})(?:_N(\d\d\.\d\d))?")
_S2_LEGACY_PARTS = {"PRD": "MSI", "MTD": "SAF"}  # product-level file types: category -> subtype prefix
_S2_DATATAKE_ID = re.compile(r"GS2(\w)_(\d{8}T\d{6})_(\d{6})_N(\d\d\.\d\d)")
_MGRS = re.compile(r"(?:0[1-9]|[1-5]\d|60)[C-HJ-NP-X][A-HJ-NP-Z][A-HJ-NP-V]")
_S2_LEVELS = {"L1C": "S2MSI1C", "L2A": "S2MSI2A"}
_S2_REL_ORBIT_OFFSET = {"A": 2, "B": -27}  # relative = (absolute + offset) % 143 + 1


@dataclass(slots=True)
class _S2:
    """What one S2 name (or several names of the same product, merged) tells."""

    sat: str  # 'S2A'
    level: str  # 'L1C' / 'L2A'
    tile: str | None = None  # '10TFK'
    datatake: str | None = None  # datatake sensing start 'YYYYMMDDTHHMMSS'
    date: str | None = None  # sensing date 'YYYYMMDD' when the datatake time is unknown
    seq: int = 0  # earth-search sequence number
    abs_orbit: int | None = None
    rel_orbit: int | None = None
    baseline: str | None = None  # '05.10'
    ds_start: str | None = None  # legacy datastrip sensing start
    multi_tile: bool = False  # legacy product covering many tiles

    def is_complete(self) -> bool:
        return self.datatake is not None and (self.tile is not None or self.multi_tile)

    def key(self) -> str:
        head = f"{self.sat}_MSI{self.level}_"
        if self.tile is None:
            if self.ds_start is not None:
                return f"{head}DS_{self.ds_start}"
            return f"{head}{self.datatake}_R{self.rel_orbit or 0:03d}"
        if self.datatake is not None:
            return f"{head}{self.datatake}_T{self.tile}"
        if self.date is not None:
            unknown_time = ("XXXXXX" + str(self.seq))[-6:] if self.seq else "XXXXXX"
            return f"{head}{self.date}T{unknown_time}_T{self.tile}"
        return f"{head}A{self.abs_orbit or 0:06d}_T{self.tile}"


def _parse_s2(base: str) -> _S2:
    sat = base[:3]
    if len(base) < 4 or sat[2] not in "ABCD":
        raise RejectedName("bad_platform", base)
    form = base[4:7]
    if form == "MSI":
        return _s2_compact(base)
    if form in ("OPE", "USE"):
        return _s2_legacy(base)
    if base[4:5] == "T":
        m = _S2_TILE_TIME.fullmatch(base)
        if m is not None:
            _check_stamp(m[3], base)
            return _S2(sat, _s2_level(m[4], base), tile=_s2_tile(m[2], base), date=m[3][:8])
    m = _S2_EARTH_SEARCH.fullmatch(base)
    if m is not None:
        if not _date_ok(m[3]):
            raise RejectedName("bad_date", base)
        tile = _s2_tile(m[2].zfill(5), base)
        return _S2(sat, _s2_level(m[5], base), tile=tile, date=m[3], seq=int(m[4]))
    raise _reject_shape(base)


def _s2_compact(base: str) -> _S2:
    m = _S2_COMPACT.fullmatch(base)
    if m is None:
        raise _reject_shape(base)
    sat, level, datatake, baseline, rel_orbit, tile, discriminator = m.groups()
    _check_stamp(datatake, base)
    _check_stamp(discriminator, base)
    return _S2(
        sat,
        _s2_level(level, base),
        tile=_s2_tile(tile, base),
        datatake=datatake,
        rel_orbit=int(rel_orbit),
        baseline=f"{baseline[:2]}.{baseline[2:]}" if baseline else None,
    )


def _s2_legacy(base: str) -> _S2:
    m = _S2_LEGACY.fullmatch(base)
    if m is None:
        raise _reject_shape(base)
    sat, category, subtype, created, instance = m.groups()
    _check_stamp(created, base)
    if _S2_LEGACY_PARTS.get(category) == subtype[:3]:  # PRD_MSIL1C, MTD_SAFL1C
        product = _S2_LEGACY_PRODUCT.fullmatch(instance)
        if product is None:
            raise RejectedName("malformed", base)
        rel_orbit, start, stop = product.groups()
        _check_period(start, stop, base)
        level = _s2_level(subtype[3:], base)
        return _S2(sat, level, datatake=start, rel_orbit=int(rel_orbit), multi_tile=True)
    kind = subtype[4:]
    if category not in ("MSI", "MTD", "PVI") or subtype[3] != "_" or kind not in ("TL", "TC", "DS"):
        raise RejectedName("not_a_product", base)  # masks, QI reports, ... of a product
    parts = _S2(sat, _s2_level(subtype[:3], base))
    if kind == "DS":
        datastrip = _S2_LEGACY_DATASTRIP.fullmatch(instance)
        if datastrip is None:
            raise RejectedName("malformed", base)
        parts.ds_start, parts.baseline = datastrip.groups()
        _check_stamp(parts.ds_start, base)
        return parts
    tile = _S2_LEGACY_TILE.fullmatch(instance)
    if tile is None:  # e.g. a band image: tile name + _B04
        raise RejectedName("malformed", base)
    abs_orbit, tile_code, parts.baseline = tile.groups()
    parts.tile = _s2_tile(tile_code, base)
    parts.abs_orbit = int(abs_orbit)
    offset = _S2_REL_ORBIT_OFFSET.get(sat[2])
    if offset is not None:
        parts.rel_orbit = (parts.abs_orbit + offset) % 143 + 1
    return parts


def _s2_level(level: str, base: str) -> str:
    if level not in _S2_LEVELS:
        raise RejectedName("bad_s2_level", base)
    return level


def _s2_tile(tile: str, base: str) -> str:
    if _MGRS.fullmatch(tile) is None:
        raise RejectedName("bad_s2_tile", base)
    return tile


def _s2_product(parts: _S2) -> ProductName:
    props: dict[str, object] = {
        "platform": f"sentinel-2{parts.sat[2].lower()}",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "processing:level": parts.level,
        "product_type": _S2_LEVELS[parts.level],
    }
    if parts.tile is not None:
        props["s2:mgrs_tile"] = parts.tile
        props["grid:code"] = f"MGRS-{parts.tile}"
    if parts.rel_orbit is not None:
        props["sat:relative_orbit"] = parts.rel_orbit
    if parts.abs_orbit is not None:
        props["sat:absolute_orbit"] = parts.abs_orbit
    if parts.baseline is not None:
        props["s2:processing_baseline"] = parts.baseline
    if parts.datatake is not None:
        props["datetime"] = _iso(parts.datatake)
    if parts.ds_start is not None:
        props["start_datetime"] = _iso(parts.ds_start)
    return ProductName("sentinel-2", parts.key(), props)


def _s2_key_with(parts: _S2, props: Mapping[str, object]) -> str:
    """Complete `parts` from the names and ids in an item's properties, then key it."""
    for base in _name_values(props):
        if not parts.is_complete() and base.startswith("S2"):
            try:
                named = _parse_s2(base)
            except RejectedName:
                continue
            _s2_fill(parts, named)
    if parts.datatake is None:
        datatake_id = props.get("s2:datatake_id")
        m = _S2_DATATAKE_ID.fullmatch(datatake_id) if isinstance(datatake_id, str) else None
        if m is not None and _same_datatake(parts, f"S2{m[1]}", m[2], int(m[3])):
            parts.datatake, parts.abs_orbit = m[2], int(m[3])
    if parts.tile is None and not parts.multi_tile and parts.ds_start is None:
        parts.tile = _s2_tile_from(props)
    return parts.key()


def _s2_fill(parts: _S2, named: _S2) -> None:
    """Take from `named` what `parts` lacks, unless it names another satellite, tile, orbit or day.

    The level may differ: an L2A item may name its L1C source, whose datatake is the same.
    """
    if named.datatake is not None and not _same_datatake(parts, named.sat, named.datatake, named.abs_orbit):
        return
    if named.sat != parts.sat or _differ(named.tile, parts.tile):
        return
    if parts.datatake is None:
        parts.datatake = named.datatake
    if parts.tile is None and not named.multi_tile:
        parts.tile = named.tile
    if parts.abs_orbit is None:
        parts.abs_orbit = named.abs_orbit


def _same_datatake(parts: _S2, sat: str, datatake: str, abs_orbit: int | None) -> bool:
    """Whether a datatake (start time, orbit) can be the one `parts` was sensed in."""
    if sat != parts.sat or _differ(abs_orbit, parts.abs_orbit):
        return False
    if parts.date is None:
        return True
    # the id's date is the tile's (or datastrip's) sensing date: the datatake starts that day or the day before
    return 0 <= _day(parts.date) - _day(datatake[:8]) <= 1


def _differ(a: object, b: object) -> bool:
    """Both known and not equal."""
    return a is not None and b is not None and a != b


def _s2_tile_from(props: Mapping[str, object]) -> str | None:
    tile = props.get("s2:mgrs_tile")
    if not isinstance(tile, str):
        code = props.get("grid:code")
        tile = code[5:] if isinstance(code, str) and code.startswith("MGRS-") else None
    if isinstance(tile, str) and _MGRS.fullmatch(tile):
        return tile
    for prop in ("s2:granule_id", "s2:tile_id"):
        value = props.get(prop)
        if isinstance(value, str) and value.startswith("S2"):
            try:
                return _parse_s2(_base_name(value)).tile
            except RejectedName:
                continue
    return None


# --- Sentinel-3: MMM_DD_L_TTTTTT_start_stop_creation_<instance 17>_GGG_P_XX_NNN -----------------------------

_S3_FULL = re.compile(
    r"(S3[\w])_(\w\w)_(\w)_(\w{6})_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{8}T\d{6})_(\w{17})_(\w{3})_(\w)_(\w\w)_(\w{3})"
)
_S3_SHORT = re.compile(
    r"(S3\w)_([A-Z]{2})_(\w)_([A-Z0-9]{3,6})_(\d{8}T\d{6})_(\d{8}T\d{6})_"
    r"(?:(\d{4}_\d{3}_\d{3})(?:_(\d{4}))?|([A-Z][A-Z0-9]*))"
)
_S3_ORBIT_INSTANCE = re.compile(r"\d{4}_\d{3}_(\d{3})_(?:\d{4}|____)")
_S3_INSTRUMENTS = {
    "OL": ["olci"],
    "SL": ["slstr"],
    "SR": ["sral"],
    "SY": ["olci", "slstr"],
    "MW": ["mwr"],
    "DO": ["doris"],
    "GN": ["gnss"],
    "TM": [],  # platform telemetry (L0 inputs)
    "AX": [],
}
_S3_TIMELINESS = frozenset(["NR", "ST", "NT", "AL"])
_S3_UNKNOWN = "_XX"


def _parse_s3(base: str, full: bool) -> ProductName:
    m = _S3_FULL.fullmatch(base)
    if m is not None:
        sat, dd, level, dtype, start, stop, created, instance = m.group(1, 2, 3, 4, 5, 6, 7, 8)
        pclass, timeliness, baseline = m.group(10, 11, 12)  # group 9, the centre, is not part of the key
        _check_stamp(created, base)
        if timeliness not in _S3_TIMELINESS or pclass not in "OFDR":
            raise RejectedName("bad_s3_timeliness", base)
    else:  # stactools short id: type without padding, no creation time, centre or class
        m = _S3_SHORT.fullmatch(base)
        if m is None:
            raise _reject_shape(base)
        sat, dd, level, short_type, start, stop, orbit_part, frame, region = m.groups()
        dtype = short_type.ljust(6, "_")
        instance = f"{orbit_part}_{frame or '____'}" if orbit_part else region.ljust(17, "_")
        if len(instance) != 17:
            raise RejectedName("malformed", base)
        timeliness, baseline = _S3_UNKNOWN[1:], ""
    if sat[2] not in "ABCD_":
        raise RejectedName("bad_platform", base)
    instruments = _S3_INSTRUMENTS.get(dd)
    if instruments is None:
        raise RejectedName("bad_s3_instrument", base)
    if level not in "012_":
        raise RejectedName("bad_s3_level", base)
    _check_period(start, stop, base)
    key = f"{sat}_{dd}_{level}_{dtype}_{start}_{stop}_{instance}_{timeliness}"
    if dd == "AX" or dtype.endswith("AX"):  # auxiliary data: the baseline is the file version
        key += f"_{baseline}"
    product_type = f"{dd}_{level}_{dtype}"
    if not full:
        return ProductName("sentinel-3", key, {"product_type": product_type})
    props: dict[str, object] = {"constellation": "sentinel-3"}
    if sat[2] != "_":  # S3_ names both satellites
        props["platform"] = f"sentinel-3{sat[2].lower()}"
    if instruments:
        props["instruments"] = list(instruments)
    if level != "_":
        props["processing:level"] = f"L{level}"
    props["product_type"] = product_type
    if timeliness in _S3_TIMELINESS:
        props["s3:processing_timeliness"] = timeliness
    orbit = _S3_ORBIT_INSTANCE.fullmatch(instance)
    if orbit is not None:
        props["sat:relative_orbit"] = int(orbit[1])
    props["start_datetime"] = _iso(start)
    props["end_datetime"] = _iso(stop)
    return ProductName("sentinel-3", key, props)


def _with_s3_timeliness(item: ProductName, props: Mapping[str, object]) -> str:
    timeliness = props.get("s3:processing_timeliness")
    if (
        item.mission == "sentinel-3"
        and item.product_key.endswith(_S3_UNKNOWN)
        and isinstance(timeliness, str)
        and timeliness in _S3_TIMELINESS
    ):
        return item.product_key[: -len(_S3_UNKNOWN)] + "_" + timeliness
    return item.product_key


# --- Sentinel-5P: S5P_SSSS_TTTTTTTTTT_start_stop_orbit_collection_processor_production ---------------------

_S5P = re.compile(r"S5P_(\w{4})_(L1B|L2_)_(\w{6})_(\d{8}T\d{6})_(\d{8}T\d{6})_(\d{5})_(\d\d)_(\d{6})_(\d{8}T\d{6})")
_S5P_STREAMS = frozenset(["NRTI", "OFFL", "RPRO", "PAL_"])


def _parse_s5p(base: str, full: bool) -> ProductName:
    m = _S5P.fullmatch(base)
    if m is None:
        if base[4:9] == "OPER_":  # auxiliary, reference and configuration files
            raise RejectedName("auxiliary_file", base)
        if base[9:13] not in ("L1B_", "L2__") and base.count("_") >= 8:
            raise RejectedName("bad_s5p_level", base)
        raise _reject_shape(base)
    stream, level, product, start, stop, orbit, _collection, processor, produced = m.groups()
    if stream not in _S5P_STREAMS:
        raise RejectedName("bad_s5p_stream", base)
    _check_stamp(produced, base)
    _check_period(start, stop, base)
    product_type = f"{level}_{product}"
    key = f"S5P_{stream}_{product_type}_{start}_{stop}_{orbit}"
    if not full:
        return ProductName("sentinel-5p", key, {"product_type": product_type})
    props: dict[str, object] = {
        "platform": "sentinel-5p",
        "constellation": "sentinel-5p",
        "instruments": ["tropomi"],
        "processing:level": level.rstrip("_"),
        "product_type": product_type,
        "s5p:processing_mode": stream,
        "processing:version": f"{processor[:2]}.{processor[2:4]}.{processor[4:]}",
        "sat:absolute_orbit": int(orbit),
        "start_datetime": _iso(start),
        "end_datetime": _iso(stop),
    }
    return ProductName("sentinel-5p", key, props)


# --- Landsat: LXSS_LLLL_PPPRRR_YYYYMMDD[_yyyymmdd]_CC_TX[_SR|_ST]; scene ids LXSPPPRRRYYYYDDDGSIVV -------

_LANDSAT = re.compile(r"(L[A-Z])(\d\d)_(\w{4})_(\d{3})(\d{3})_(\d{8})(?:_(\d{8}))?_(\d\d)_(\w\w)(?:_S[RT])?")
_LANDSAT_INCOMPLETE = re.compile(r"L[A-Z]\d\d_\w{4}_\d{6}_\d{8}(?:_\d{8})?")
_LANDSAT_SCENE = re.compile(r"(L[A-Z])(\d)(\d{3})(\d{3})(\d{4})(\d{3})([A-Z]{3})(\d\d)")
_LANDSAT_SATELLITES = {"C": "89", "O": "89", "T": "4589", "E": "7", "M": "12345"}
_LANDSAT_LEVELS = frozenset(["L1TP", "L1GT", "L1GS", "L2SP", "L2SR"])
_LANDSAT_CATEGORIES = frozenset(["T1", "T2", "RT"])


def _landsat_common(sensor: str, sat: int, path: str, row: str) -> dict[str, object]:
    if sensor == "LC":
        instruments = ["oli", "tirs"]
    elif sensor == "LO":
        instruments = ["oli"]
    elif sensor == "LE":
        instruments = ["etm+"]
    elif sensor == "LM":
        instruments = ["mss"]
    else:
        instruments = ["tirs"] if sat >= 8 else ["tm"]
    return {
        "platform": f"landsat-{sat}",
        "constellation": "landsat",
        "instruments": instruments,
        "landsat:wrs_path": path,
        "landsat:wrs_row": row,
    }


def _parse_landsat(base: str, full: bool) -> ProductName:
    m = _LANDSAT.fullmatch(base)
    if m is None:
        return _parse_landsat_scene(base)
    sensor, sat, level, path, row, acquired, processed, collection, category = m.groups()
    if sat[1] not in _LANDSAT_SATELLITES.get(sensor[1], "") or sat[0] != "0":
        raise RejectedName("bad_landsat_sensor", base)
    if level not in _LANDSAT_LEVELS:
        raise RejectedName("bad_landsat_level", base)
    if category not in _LANDSAT_CATEGORIES or collection == "00":
        raise RejectedName("bad_landsat_category", base)
    if not _date_ok(acquired) or (processed and (not _date_ok(processed) or processed < acquired)):
        raise RejectedName("bad_date", base)
    key = f"{sensor}{sat}_{level}_{path}{row}_{acquired}_{collection}_{category}"
    if not full:
        return ProductName("landsat", key, {"product_type": level})
    props = _landsat_common(sensor, int(sat), path, row)
    props["processing:level"] = level[:2]
    props["product_type"] = level
    props["landsat:correction"] = level
    props["landsat:collection_number"] = collection
    props["landsat:collection_category"] = category
    return ProductName("landsat", key, props)


def _parse_landsat_scene(base: str) -> ProductName:
    m = _LANDSAT_SCENE.fullmatch(base)
    if m is None:
        reason = "incomplete_name" if _LANDSAT_INCOMPLETE.fullmatch(base) else "malformed"
        raise RejectedName(reason if base[2:4].isdigit() else "unknown_mission", base)
    sensor, sat, path, row, year, doy, _station, _version = m.groups()
    if sat not in _LANDSAT_SATELLITES.get(sensor[1], ""):
        raise RejectedName("bad_landsat_sensor", base)
    if not _date_ok(f"{year}0101") or not 1 <= int(doy) <= (366 if _date_ok(f"{year}0229") else 365):
        raise RejectedName("bad_date", base)
    props = _landsat_common(sensor, int(sat), path, row)
    props["landsat:scene_id"] = base
    return ProductName("landsat", base, props)


# --- property helpers ---------------------------------------------------------------------------------------


def _name_values(props: Mapping[str, object]) -> list[str]:
    return [_base_name(v) for v in (props.get(p) for p in NAME_PROPERTIES) if isinstance(v, str) and v]


def _is_complete(item: ProductName) -> bool:
    """False for ids a name property should complete or replace: S3 short ids, Landsat scene ids."""
    if item.mission == "sentinel-3":
        return not item.product_key.endswith(_S3_UNKNOWN)
    if item.mission == "landsat":
        return "_" in item.product_key  # a scene id names the acquisition, `landsat:product_id` the product
    return True


def _compatible(named: ProductName, item: ProductName) -> bool:
    """`named` may stand for `item`: same mission and, when both tell it, the same product type."""
    a, b = named.properties.get("product_type"), item.properties.get("product_type")
    return named.mission == item.mission and (a is None or b is None or a == b)
