"""One archive product → one STAC item dict (pure), fed through harvester's normal records path.

The item id is the product's name in the archive without container suffixes (`S1A_..._6FF8`,
`S2B_MSIL2A_..._20201003T104658`), the name ESA distributes the product under: unique per copy and known from the
key alone, so a product whose objects vanish is deleted without reading anything. (stactools' S2 ids,
`S2A_T01WCP_20230625T234624_L2A`, would not do: two distinct products of one tile and datatake get the same one.)
Its `product_key` — computed by `harvester.records` from the id, as for every provider — is what merges it with
other providers' items.

Properties come from the name (`harvester.product_names`), then from the metadata file where one was read
(exact times, footprint, orbit direction, cloud cover...). Without metadata the geometry is null and
`archive:geometry_missing` says why. Times follow stactools/Planetary Computer: Sentinel-2 `datetime` is the
product start time; products with a start and an end get their midpoint as `datetime`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from archive.grouping import collection_for
from archive.metadata import Metadata
from harvester.product_names import ProductName
from harvester.timeutil import format_datetime, parse_datetime

STAC_VERSION = "1.1.0"
_EXTENSIONS = {
    "sat:": "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "sar:": "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "eo:": "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "processing:": "https://stac-extensions.github.io/processing/v1.2.0/schema.json",
    "grid:": "https://stac-extensions.github.io/grid/v1.1.0/schema.json",
    "landsat:": "https://stac-extensions.github.io/landsat/v2.0.0/schema.json",
}
FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
_MEDIA_TYPES = {
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".gz": "application/gzip",
    ".tgz": "application/gzip",
    ".nc": "application/x-netcdf",
    ".nc4": "application/x-netcdf",
    ".tif": "image/tiff; application=geotiff",
    ".tiff": "image/tiff; application=geotiff",
    ".jp2": "image/jp2",
    ".xml": "application/xml",
    ".safe": "application/xml",
    ".json": "application/json",
    ".txt": "text/plain",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".kml": "application/vnd.google-earth.kml+xml",
    ".html": "text/html",
    ".pdf": "application/pdf",
}
_METADATA_SUFFIXES = (".xml", ".safe", ".json", "_mtl.txt", "_ang.txt", ".xsd", ".kml")


@dataclass(frozen=True, slots=True)
class ArchiveObject:
    key: str
    size: int
    etag: str
    last_modified: datetime
    storage_class: str
    path: str  # inside the product ('' for a single-object product)


def build_item(
    *,
    bucket: str,
    product_id: str,
    name: ProductName,
    objects: Sequence[ArchiveObject],
    metadata: Metadata | None,
    metadata_path: str | None,
    geometry_missing: str | None,
) -> dict[str, Any]:
    """The STAC item of one product held in `bucket` as `objects` (at least one)."""
    props: dict[str, Any] = dict(name.properties)
    geometry = None
    if metadata is not None:
        for key, value in metadata.properties.items():
            props[key] = value
        geometry = metadata.geometry
        _times(props, name, metadata)
        props["archive:metadata"] = metadata_path
    else:
        _times(props, name, None)
    if geometry is None:
        props["archive:geometry_missing"] = geometry_missing or "no_footprint"
    props["archive:objects"] = len(objects)
    props["archive:bytes"] = sum(o.size for o in objects)
    # not `updated`: a product that lost its newest object would look older than the stored item, and the
    # snapshot ignores copies older than what it holds (harvester.commit, "stale")
    props["archive:last_modified"] = format_datetime(max(o.last_modified for o in objects))
    assets: dict[str, Any] = {}
    for obj in objects:
        key = _asset_key(obj)
        unique, n = key, 1
        while unique in assets:  # the same product stored twice: keep both copies' assets
            n += 1
            unique = f"{key}-{n}"
        assets[unique] = _asset(bucket, obj)
    extensions = sorted({url for prefix, url in _EXTENSIONS.items() if any(k.startswith(prefix) for k in props)})
    extensions.append(FILE_EXTENSION)
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": product_id,
        "collection": collection_for(name),
        "geometry": geometry,
        "properties": props,
        "links": [],
        "assets": assets,
    }


def _times(props: dict[str, Any], name: ProductName, metadata: Metadata | None) -> None:
    start = (metadata.start if metadata else None) or props.get("start_datetime")
    end = (metadata.end if metadata else None) or props.get("end_datetime")
    if name.mission == "sentinel-2":  # the product start time (= datatake start), as ESA and stactools do
        if metadata is not None and metadata.start:
            props["datetime"] = metadata.start
        return
    if name.mission == "landsat" and not (metadata and metadata.start):
        day = _landsat_day(name)
        if day:  # the name tells the day only: an interval, not an instant
            props.update(datetime=None, start_datetime=f"{day}T00:00:00Z", end_datetime=f"{day}T23:59:59Z")
        return
    if start and end:
        props["start_datetime"], props["end_datetime"] = start, end
        begin, stop = parse_datetime(start), parse_datetime(end)
        props["datetime"] = format_datetime(begin + (stop - begin) / 2) if start != end else start
    elif start:
        props["datetime"] = start


def _landsat_day(name: ProductName) -> str | None:
    parts = name.product_key.split("_")
    if len(parts) >= 4 and len(parts[3]) == 8 and parts[3].isdigit():
        day = parts[3]
        return f"{day[:4]}-{day[4:6]}-{day[6:]}"
    return None


def _asset_key(obj: ArchiveObject) -> str:
    if not obj.path:
        lower = obj.key.lower()
        return "checksum" if lower.endswith((".md5", ".sha1", ".sha256", ".sha512")) else "product"
    return obj.path


def _asset(bucket: str, obj: ArchiveObject) -> dict[str, Any]:
    name = obj.key.rsplit("/", 1)[-1].lower()
    asset: dict[str, Any] = {"href": f"s3://{bucket}/{obj.key}", "file:size": obj.size}
    media = next((t for s, t in _MEDIA_TYPES.items() if name.endswith(s)), None)
    if media:
        asset["type"] = media
    if name.endswith(_METADATA_SUFFIXES):
        asset["roles"] = ["metadata"]
    elif name.endswith((".png", ".jpg", ".jpeg")) or "preview" in obj.path.lower():
        asset["roles"] = ["overview"]
    else:
        asset["roles"] = ["data"]
    checksum = md5_multihash(obj.etag)
    if checksum:
        asset["file:checksum"] = checksum
    if obj.storage_class and obj.storage_class != "STANDARD":
        asset["archive:storage_class"] = obj.storage_class
    return asset


def md5_multihash(etag: str) -> str | None:
    """The ETag as a file:checksum multihash when it is the object's MD5 (single-part, unencrypted uploads);
    multipart ETags ('...-12') are not a checksum of the content."""
    tag = etag.strip('"').lower()
    if len(tag) == 32 and all(c in "0123456789abcdef" for c in tag):
        return "d510" + tag  # multihash: 0xd5 = md5, 0x10 = 16 bytes
    return None
