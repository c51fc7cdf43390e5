"""Product metadata files → footprint, times and what they say about the product (pure functions on bytes).

Readers: SAFE `manifest.safe` (Sentinel-1, and Sentinel-2 when its MTD is missing), Sentinel-2 `MTD_MSIL1C.xml` /
`MTD_MSIL2A.xml` (and the legacy `..._MTD_SAFL1C_...xml`), Sentinel-3 `xfdumanifest.xml`, Landsat `_MTL.txt`,
`_MTL.xml` and `_MTL.json`. XML is parsed with defusedxml and any DTD is refused (reason `xml_forbidden`; ESA and
USGS metadata never carry one): entities are never expanded, so a crafted file in a bucket can neither read local
files (XXE) nor blow up memory.

Footprints are written the way STAC wants them: longitude first, counter-clockwise, rounded to 1e-6 degree (about
0.1 m, as stactools does), split at the antimeridian into a MultiPolygon (RFC 7946 §3.1.9).
"""

from __future__ import annotations

import contextlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Polygon, box, mapping
from shapely.geometry.polygon import orient

from harvester.timeutil import DatetimeError, format_datetime, parse_datetime

MAX_METADATA_BYTES = 32 * 1024 * 1024  # manifest.safe and MTD files are KBs to a few MB
PRECISION = 6


class MetadataError(ValueError):
    """A metadata file that cannot be used; `reason` is a short code stored on the item."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Metadata:
    source: str  # which reader: manifest.safe, MTD_MSIL, xfdumanifest.xml, MTL
    geometry: dict[str, Any] | None
    start: str | None  # ISO 8601 UTC
    end: str | None
    properties: dict[str, Any] = field(default_factory=dict)


# --- which file of a product to read ------------------------------------------------------------------------

_S2_MTD = re.compile(r"(?:MTD_MSIL(?:1C|2A)|S2\w_(?:OPER|USER)_MTD_SAF\w+)\.xml", re.IGNORECASE)
_MTL = re.compile(r".*_MTL\.(xml|txt|json)", re.IGNORECASE)


def metadata_kind(name: str, mission: str) -> tuple[int, str] | None:
    """(preference, reader) of a file name (no folders) for a product of `mission`; None when not a metadata
    file. Lower preference wins."""
    lower = name.lower()
    if mission == "sentinel-2" and _S2_MTD.fullmatch(name):
        return 0, "mtd"
    if mission in ("sentinel-1", "sentinel-2") and lower == "manifest.safe":
        return 1, "safe"
    if mission == "sentinel-3" and lower == "xfdumanifest.xml":
        return 0, "safe"
    if mission == "landsat" and _MTL.fullmatch(name):
        return {"xml": 0, "txt": 1, "json": 2}[lower.rsplit(".", 1)[1]], "mtl"
    return None


def pick_metadata(paths: Iterable[str], mission: str) -> tuple[str, str] | None:
    """The (path, reader) to read among a product's file paths (relative to the product): the preferred kind,
    then the shallowest (a SAFE's manifest, not a copy deep inside)."""
    best: tuple[tuple[int, int, str], str] | None = None
    for path in paths:
        kind = metadata_kind(path.rsplit("/", 1)[-1], mission)
        if kind is None:
            continue
        rank = (kind[0], path.count("/"), path)
        if best is None or rank < best[0]:
            best = (rank, kind[1])
    return None if best is None else (best[0][2], best[1])


def read_metadata(data: bytes, reader: str, *, name: str = "") -> Metadata:
    """Parse one metadata file with the named reader ('safe', 'mtd', 'mtl'); raises MetadataError."""
    if not data:
        raise MetadataError("empty_metadata", f"{name or 'metadata file'} is empty")
    if len(data) > MAX_METADATA_BYTES:
        raise MetadataError("metadata_too_large", f"{name} is {len(data)} bytes")
    if reader == "safe":
        return read_safe_manifest(data)
    if reader == "mtd":
        return read_s2_mtd(data)
    if reader == "mtl":
        return read_mtl(data)
    raise ValueError(f"unknown metadata reader {reader!r}")


# --- XML ----------------------------------------------------------------------------------------------------


def parse_xml(data: bytes) -> ET.Element:
    """Parse untrusted XML: no DTD, hence no entity expansion and no external entities, files or network."""
    import defusedxml
    import defusedxml.ElementTree as DET

    try:
        root: ET.Element = DET.fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as exc:
        raise MetadataError("xml_forbidden", f"XML with a DTD, entities or external references: {exc}") from None
    except ET.ParseError as exc:
        raise MetadataError("invalid_xml", f"not well-formed XML: {exc}") from None
    return root


def _local(tag: object) -> str:
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def _texts(root: ET.Element) -> dict[str, list[ET.Element]]:
    """Elements by local name (namespaces vary between baselines; names do not)."""
    found: dict[str, list[ET.Element]] = {}
    for element in root.iter():
        found.setdefault(_local(element.tag), []).append(element)
    return found


def _first(elements: dict[str, list[ET.Element]], name: str, **attrs: str) -> str | None:
    for element in elements.get(name, ()):
        if all(element.get(k) == v for k, v in attrs.items()) and element.text and element.text.strip():
            return element.text.strip()
    return None


def _time(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?", text):
        text += "Z"  # SAFE times are UTC without a designator
    try:
        return format_datetime(parse_datetime(text))
    except DatetimeError:
        return None


# --- footprints ---------------------------------------------------------------------------------------------


def parse_positions(text: str) -> list[tuple[float, float]]:
    """'lat,lon lat,lon ...' (gml:coordinates) or 'lat lon lat lon ...' (gml:posList, EXT_POS_LIST) → pairs.

    Some reprocessed Sentinel-2 products write 'lat lon height' triples (with a short last position): those are
    read as triples when pairs would put a height into a longitude."""
    try:
        if "," in text:
            out = [(float(t.split(",")[0]), float(t.split(",")[1])) for t in text.split()]
        else:
            values = [float(v) for v in text.split()]
            out = [(values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)]
            if len(values) % 2 or not _in_range(out):
                out = [(values[i], values[i + 1]) for i in range(0, len(values) - 2, 3)]
                if len(values) % 3 == 2:
                    out.append((values[-2], values[-1]))
    except (ValueError, IndexError):
        raise MetadataError("invalid_footprint", f"footprint is not a list of numbers: {text[:80]!r}") from None
    if not _in_range(out):
        raise MetadataError("invalid_footprint", "footprint coordinate out of range")
    return out


def _in_range(pairs: list[tuple[float, float]]) -> bool:
    return all(-90 <= lat <= 90 and -360 <= lon <= 360 for lat, lon in pairs)


def footprint(latlon: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """A GeoJSON (Multi)Polygon from a ring of (lat, lon), split at the antimeridian."""
    ring = [(lon, lat) for lat, lon in latlon]
    if len(ring) >= 2 and ring[0] == ring[-1]:
        ring = ring[:-1]
    if len(set(ring)) < 3:
        raise MetadataError("invalid_footprint", "footprint has fewer than three distinct points")
    # unwrap: consecutive longitudes never jump by more than 180 degrees
    unwrapped = [ring[0]]
    for lon, lat in ring[1:]:
        previous = unwrapped[-1][0]
        while lon - previous > 180:
            lon -= 360
        while lon - previous < -180:
            lon += 360
        unwrapped.append((lon, lat))
    closing = unwrapped[-1][0] - unwrapped[0][0]
    if abs(closing) > 180:  # the ring winds around a pole: cover the cap from its lowest latitude
        lats = [lat for _, lat in ring]
        north = sum(lats) > 0
        cap = box(-180, min(lats), 180, 90) if north else box(-180, -90, 180, max(lats))
        return _geojson([cap])
    polygon = Polygon(unwrapped)
    if not polygon.is_valid:
        polygon = shapely.make_valid(polygon)
    lons = [lon for lon, _ in unwrapped]
    pieces = []
    for k in range(int((min(lons) + 180) // 360), int((max(lons) + 180) // 360) + 1):
        window = box(k * 360 - 180, -90, k * 360 + 180, 90)
        piece = shapely.affinity.translate(polygon.intersection(window), xoff=-k * 360)
        pieces.extend(_polygons(piece))
    return _geojson(pieces)


def _polygons(geometry: Any) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry] if not geometry.is_empty and geometry.area > 0 else []
    return [p for g in getattr(geometry, "geoms", ()) for p in _polygons(g)]


def _geojson(polygons: list[Polygon]) -> dict[str, Any]:
    if not polygons:
        raise MetadataError("invalid_footprint", "footprint has no area")
    oriented = [orient(shapely.set_precision(p, 10**-PRECISION), 1.0) for p in polygons]
    geometry = oriented[0] if len(oriented) == 1 else MultiPolygon(oriented)
    out: dict[str, Any] = orjson.loads(orjson.dumps(mapping(geometry)))  # tuples → lists
    return out


# --- SAFE / XFDU manifests (Sentinel-1, -2, -3) -------------------------------------------------------------


def read_safe_manifest(data: bytes) -> Metadata:
    root = parse_xml(data)
    elements = _texts(root)
    positions = None
    for element in elements.get("footPrint", ()):
        for child in element.iter():
            if _local(child.tag) in ("coordinates", "posList") and child.text and child.text.strip():
                positions = parse_positions(child.text)
                break
        if positions:
            break
    props: dict[str, Any] = {}
    family = (_first(elements, "familyName") or "").upper().replace(" ", "")
    number = _first(elements, "number") or ""
    if family == "SENTINEL" and len(number) == 2:  # Sentinel-2 writes SENTINEL + '2A'
        family, number = f"SENTINEL-{number[0]}", number[1]
    mission = {"SENTINEL-1": "1", "SENTINEL-2": "2", "SENTINEL-3": "3"}.get(family)
    if mission and number:
        props["platform"] = f"sentinel-{mission}{number[-1].lower()}"
    orbit = _first(elements, "orbitNumber", type="start") or _first(elements, "orbitNumber")
    if orbit and orbit.isdigit():
        props["sat:absolute_orbit"] = int(orbit)
    relative = _first(elements, "relativeOrbitNumber", type="start") or _first(elements, "relativeOrbitNumber")
    if relative and relative.isdigit():
        props["sat:relative_orbit"] = int(relative)
    direction = _first(elements, "pass")
    for element in elements.get("orbitNumber", ()):
        direction = direction or element.get("groundTrackDirection")
    if direction:
        props["sat:orbit_state"] = direction.lower()
    if mission == "1":
        mode = _first(elements, "mode")
        if mode:
            props["sar:instrument_mode"] = "SM" if re.fullmatch(r"S\d", mode) else mode
        product_type = _first(elements, "productType")
        if product_type:
            props["sar:product_type"] = product_type
        polarisations = [e.text.strip() for e in elements.get("transmitterReceiverPolarisation", ()) if e.text]
        if polarisations:
            props["sar:polarizations"] = polarisations
        datatake = _first(elements, "missionDataTakeID")
        if datatake and datatake.isdigit():
            props["s1:datatake_id"] = str(int(datatake))
    if mission == "3":
        timeliness = _first(elements, "timeliness")
        if timeliness:
            props["s3:processing_timeliness"] = timeliness
    start = _time(_first(elements, "startTime"))
    end = _time(_first(elements, "stopTime"))
    geometry = footprint(positions) if positions else None
    return Metadata("xfdumanifest.xml" if mission == "3" else "manifest.safe", geometry, start, end, props)


# --- Sentinel-2 product metadata (MTD_MSIL1C.xml / MTD_MSIL2A.xml) ------------------------------------------


def read_s2_mtd(data: bytes) -> Metadata:
    root = parse_xml(data)
    elements = _texts(root)
    text = _first(elements, "EXT_POS_LIST")
    geometry = footprint(parse_positions(text)) if text else None
    props: dict[str, Any] = {}
    uri = _first(elements, "PRODUCT_URI")
    if uri:
        props["s2:product_uri"] = uri
    spacecraft = _first(elements, "SPACECRAFT_NAME")
    if spacecraft and spacecraft.lower().startswith("sentinel-2"):
        props["platform"] = spacecraft.lower()
    level = _first(elements, "PROCESSING_LEVEL")
    if level and level.startswith("Level-"):
        props["processing:level"] = "L" + level[len("Level-") :]
    product_type = _first(elements, "PRODUCT_TYPE")
    if product_type:
        props["s2:product_type"] = product_type
    baseline = _first(elements, "PROCESSING_BASELINE")
    if baseline:
        props["s2:processing_baseline"] = baseline
    generated = _time(_first(elements, "GENERATION_TIME"))
    if generated:
        props["s2:generation_time"] = generated
    orbit = _first(elements, "SENSING_ORBIT_NUMBER")
    if orbit and orbit.isdigit():
        props["sat:relative_orbit"] = int(orbit)
    direction = _first(elements, "SENSING_ORBIT_DIRECTION")
    if direction:
        props["sat:orbit_state"] = direction.lower()
    for element in elements.get("Datatake", ()):
        if element.get("datatakeIdentifier"):
            props["s2:datatake_id"] = element.get("datatakeIdentifier")
            break
    for element in elements.get("Granule", ()):
        granule = element.get("granuleIdentifier")
        if granule:
            props["s2:tile_id"] = granule
            tile = re.search(r"_T(\d\d[A-Z]{3})(?:_|$)", granule)
            if tile:
                props["s2:mgrs_tile"] = tile[1]
            break
    cloud = _first(elements, "Cloud_Coverage_Assessment")
    if cloud is not None:
        with contextlib.suppress(ValueError):
            props["eo:cloud_cover"] = float(cloud)
    start = _time(_first(elements, "PRODUCT_START_TIME"))
    end = _time(_first(elements, "PRODUCT_STOP_TIME"))
    return Metadata("MTD_MSIL", geometry, start, end, props)


# --- Landsat MTL (txt / xml / json) -------------------------------------------------------------------------

_MTL_LINE = re.compile(r'\s*([A-Z0-9_]+)\s*=\s*"?([^"]*)"?\s*$')


def mtl_values(data: bytes) -> dict[str, str]:
    """A flat KEY → value map of an MTL file in any of its three encodings."""
    head = data.lstrip()[:1]
    values: dict[str, str] = {}
    if head == b"<":
        for element in parse_xml(data).iter():
            if not len(element) and element.text is not None:
                values.setdefault(_local(element.tag), element.text.strip())
        return values
    if head == b"{":
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise MetadataError("invalid_json", f"MTL JSON cannot be parsed: {exc}") from None
        stack: list[tuple[str, Any]] = [("", doc)]
        while stack:  # document order: the product's own group comes before its level-1 processing record
            key, node = stack.pop()
            if isinstance(node, dict):
                stack.extend(reversed(list(node.items())))
            elif isinstance(node, list):
                stack.extend((key, v) for v in reversed(node))
            elif node is not None and key:
                values.setdefault(key, str(node))
        return values
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MetadataError("invalid_mtl", "MTL text is not UTF-8") from None
    for line in text.splitlines():
        match = _MTL_LINE.match(line)
        if match and match[1] not in ("GROUP", "END_GROUP"):
            values.setdefault(match[1], match[2].strip())
    if not values:
        raise MetadataError("invalid_mtl", "no KEY = VALUE lines in the MTL file")
    return values


def read_mtl(data: bytes) -> Metadata:
    values = mtl_values(data)
    corners: list[tuple[float, float]] = []
    for corner in ("UL", "UR", "LR", "LL"):
        lat, lon = values.get(f"CORNER_{corner}_LAT_PRODUCT"), values.get(f"CORNER_{corner}_LON_PRODUCT")
        if lat is None or lon is None:
            corners = []
            break
        try:
            corners.append((float(lat), float(lon)))
        except ValueError:
            raise MetadataError("invalid_mtl", f"corner {corner} is not a number") from None
    geometry = footprint(corners) if corners else None
    props: dict[str, Any] = {}
    product_id = values.get("LANDSAT_PRODUCT_ID")
    if product_id:
        props["landsat:product_id"] = product_id
    spacecraft = values.get("SPACECRAFT_ID", "")
    if spacecraft.startswith("LANDSAT_"):
        props["platform"] = "landsat-" + spacecraft.split("_", 1)[1]
    for key, prop in (("WRS_PATH", "landsat:wrs_path"), ("WRS_ROW", "landsat:wrs_row")):
        if values.get(key, "").isdigit():
            props[prop] = f"{int(values[key]):03d}"
    for key, prop in (
        ("COLLECTION_NUMBER", "landsat:collection_number"),
        ("COLLECTION_CATEGORY", "landsat:collection_category"),
        ("PROCESSING_LEVEL", "landsat:correction"),
    ):
        if values.get(key):
            props[prop] = values[key]
    for key in ("CLOUD_COVER", "CLOUD_COVER_LAND"):
        with contextlib.suppress(KeyError, ValueError):
            props["eo:cloud_cover" if key == "CLOUD_COVER" else "landsat:cloud_cover_land"] = float(values[key])
    acquired = values.get("DATE_ACQUIRED")
    centre = values.get("SCENE_CENTER_TIME", "").strip('"')
    when = _time(f"{acquired}T{centre.rstrip('Z')[:15]}Z" if acquired and centre else acquired)
    return Metadata("MTL", geometry, when, when, props)
