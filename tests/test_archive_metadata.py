"""archive.metadata: the SAFE / MTD / MTL readers against the real metadata files of the corpus, footprints at
the antimeridian, and hostile XML (XXE, entity bombs) that must never be expanded.

Also the helpers the other archive tests share: where the corpus keeps real products, and how to put them into
moto's S3 the way EODC (zipped SAFE under date folders) and INCD (SAFE folders) lay them out.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import shapely
from shapely.geometry import shape

from archive.metadata import MetadataError, footprint, parse_positions, pick_metadata, read_metadata
from harvester.product_names import parse_product_name

# --- shared helpers -----------------------------------------------------------------------------------------


def s1_products(corpus: Path) -> list[Path]:
    """Real Sentinel-1 product folders (manifest.safe + annotation files)."""
    folders = sorted(p.parent for p in (corpus / "sentinel/sentinel1").glob("*/*/manifest.safe"))
    if not folders:
        pytest.skip("no Sentinel-1 SAFE folders in this corpus snapshot")
    return folders


def s2_products(corpus: Path) -> list[Path]:
    """Real Sentinel-2 SAFE folders that have a stactools expected_output.json."""
    folders = sorted(p.parent for p in (corpus / "sentinel/sentinel2").glob("*.SAFE/expected_output.json"))
    if not folders:
        pytest.skip("no Sentinel-2 SAFE folders with expected_output.json in this corpus snapshot")
    return folders


def safe_name(folder: Path) -> str:
    """The product's name as an archive would hold it (the corpus prefixes one folder with 'esa_')."""
    name = folder.name.removeprefix("esa_")
    return name if name.endswith(".SAFE") else name + ".SAFE"


def zip_safe(folder: Path, name: str) -> bytes:
    """The folder as ESA zips a SAFE: one top folder `name/` holding the files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.name != "expected_output.json":
                archive.write(path, f"{name}/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def safe_files(folder: Path) -> Iterator[tuple[str, bytes]]:
    """(path inside the product, bytes) of a corpus product folder."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "expected_output.json":
            yield path.relative_to(folder).as_posix(), path.read_bytes()


def backend() -> Any:
    """moto's S3 backend of the in-process server (filling it directly is ~100x faster than HTTP puts)."""
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    return get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"]


def put(bucket: str, key: str, body: bytes) -> None:
    backend().put_object(bucket, key, body)


def sensing_day(name: str) -> str:
    """'YYYY/MM/DD' of a product name's first time stamp."""
    stamp = next(p for p in name.split("_") if len(p) == 15 and p[8] == "T")
    return f"{stamp[:4]}/{stamp[4:6]}/{stamp[6:8]}"


# --- readers against the corpus -----------------------------------------------------------------------------


def test_s1_manifest_agrees_with_the_product_name(corpus: Path) -> None:
    for folder in s1_products(corpus):
        meta = read_metadata((folder / "manifest.safe").read_bytes(), "safe")
        name = parse_product_name(folder.name)
        assert name is not None, folder.name
        props = name.properties
        assert meta.source == "manifest.safe" and meta.geometry is not None
        assert meta.start and meta.end and meta.start < meta.end
        for key in ("platform", "sat:absolute_orbit", "sat:relative_orbit", "sar:polarizations", "s1:datatake_id"):
            assert meta.properties[key] == props[key], (folder.name, key)
        assert meta.properties["sar:instrument_mode"] == props["sar:instrument_mode"]
        assert meta.properties["sar:product_type"] == props["sar:product_type"]
        # the name's times are the product's, truncated to the second (SL1 swaths start a little later)
        assert meta.start[:19] >= str(props["start_datetime"])[:19]
        assert meta.end[:19] <= str(props["end_datetime"])[:19] or meta.end[:16] == str(props["end_datetime"])[:16]


def test_s2_mtd_agrees_with_the_product_name(corpus: Path) -> None:
    mtds = sorted(p for p in (corpus / "sentinel").rglob("MTD_MSIL*") if p.suffix.lower() == ".xml")
    if not mtds:
        pytest.skip("no MTD_MSIL*.xml in this corpus snapshot")
    for path in mtds:
        meta = read_metadata(path.read_bytes(), "mtd")
        uri = meta.properties["s2:product_uri"]
        name = parse_product_name(uri)
        assert name is not None, uri
        props = name.properties
        assert meta.geometry is not None and meta.start is not None
        assert meta.start[:19] == str(props["datetime"])[:19]  # product start = datatake start
        for key in ("platform", "processing:level", "sat:relative_orbit", "s2:mgrs_tile"):
            assert meta.properties[key] == props[key], (uri, key)
        if "s2:processing_baseline" in props:
            assert meta.properties["s2:processing_baseline"] == props["s2:processing_baseline"]
        assert meta.properties["s2:datatake_id"].startswith(f"G{uri[:3]}_{uri.split('_')[2]}_")


def test_landsat_mtl_in_all_three_encodings_agree_with_the_name(corpus: Path) -> None:
    mtls = sorted((corpus / "sentinel/landsat").glob("*/*_MTL.*"))
    if not mtls:
        pytest.skip("no Landsat MTL files in this corpus snapshot")
    for path in mtls:
        meta = read_metadata(path.read_bytes(), "mtl")
        product_id = meta.properties["landsat:product_id"]
        assert path.name.startswith(product_id), path
        name = parse_product_name(product_id)
        assert name is not None
        props = name.properties
        for key in ("platform", "landsat:wrs_path", "landsat:wrs_row", "landsat:collection_category"):
            assert meta.properties[key] == props[key], (path.name, key)
        assert meta.properties["landsat:correction"] == props["product_type"]
        assert meta.start is not None and meta.start[:10].replace("-", "") == product_id.split("_")[3]
        assert meta.geometry is not None


def test_s2_footprints_match_stactools_at_the_antimeridian(corpus: Path) -> None:
    """Tolerance: 2e-6 degrees (Hausdorff), the rounding of both sides to 1e-6 degree."""
    for folder in s2_products(corpus):
        expected = orjson.loads((folder / "expected_output.json").read_bytes())
        mtd = next(p for p in folder.glob("MTD_MSIL*") if p.suffix.lower() == ".xml")
        meta = read_metadata(mtd.read_bytes(), "mtd")
        assert meta.geometry is not None
        assert meta.geometry["type"] == expected["geometry"]["type"], folder.name
        ours, theirs = shape(meta.geometry), shape(expected["geometry"])
        assert shapely.hausdorff_distance(ours, theirs) < 2e-6, folder.name
        assert meta.start == expected["properties"]["datetime"]


# --- footprints ---------------------------------------------------------------------------------------------


def test_footprint_is_counter_clockwise_closed_and_lon_first() -> None:
    geometry = footprint(parse_positions("46.03389,1.512143 46.436539,4.85136 44.938713,5.188996 44.536255,1.937196"))
    ring = geometry["coordinates"][0]
    assert geometry["type"] == "Polygon" and ring[0] == ring[-1]
    assert shapely.Polygon(ring).exterior.is_ccw
    assert {tuple(p) for p in ring} == {(1.512143, 46.03389), (4.85136, 46.436539), (5.188996, 44.938713),
                                        (1.937196, 44.536255)}  # fmt: skip


def test_footprint_across_the_antimeridian_is_split() -> None:
    geometry = footprint([(-16.0, 179.5), (-16.0, -179.5), (-17.0, -179.5), (-17.0, 179.5)])
    assert geometry["type"] == "MultiPolygon"
    xs = sorted(x for polygon in geometry["coordinates"] for x, _ in polygon[0])
    assert xs[0] == -180 and xs[-1] == 180 and all(abs(x) >= 179.5 for x in xs)
    assert shape(geometry).area == pytest.approx(1.0)


def test_triples_and_bad_footprints() -> None:
    # reprocessed S2 products write 'lat lon height', the last position short
    assert parse_positions("34.3 -119.1 0 33.3 -119.1 0 33.3 -117.9 0 34.3 -119.1")[:3] == [
        (34.3, -119.1),
        (33.3, -119.1),
        (33.3, -117.9),
    ]
    for text, reason in (("1 2 x 4", "invalid_footprint"), ("95 10 96 11 97 12", "invalid_footprint")):
        with pytest.raises(MetadataError) as caught:
            parse_positions(text)
        assert caught.value.reason == reason
    with pytest.raises(MetadataError):
        footprint([(1.0, 1.0), (1.0, 1.0), (1.0, 1.0)])


# --- choosing and refusing files ----------------------------------------------------------------------------


def test_pick_metadata_prefers_the_product_level_file() -> None:
    paths = ["GRANULE/L2A_T1/MTD_TL.xml", "manifest.safe", "MTD_MSIL2A.xml", "x/manifest.safe"]
    assert pick_metadata(paths, "sentinel-2") == ("MTD_MSIL2A.xml", "mtd")
    assert pick_metadata(["MTD_MSIL2a.xml"], "sentinel-2") == ("MTD_MSIL2a.xml", "mtd")  # seen in the corpus
    assert pick_metadata(paths, "sentinel-1") == ("manifest.safe", "safe")
    assert pick_metadata(["X_MTL.txt", "X_MTL.xml", "X_ANG.txt"], "landsat") == ("X_MTL.xml", "mtl")
    assert pick_metadata(["a.tif"], "sentinel-1") is None


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE xfdu [<!ENTITY xxe SYSTEM "file://%s">]>
<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" xmlns:safe="http://www.esa.int/safe/sentinel-1.0"
  xmlns:gml="http://www.opengis.net/gml"><metadataSection><safe:frameSet><safe:frame><safe:footPrint>
  <gml:coordinates>&xxe;</gml:coordinates></safe:footPrint></safe:frame></safe:frameSet>
  <safe:startTime>2021-08-09T17:39:53.153776</safe:startTime></metadataSection></xfdu:XFDU>"""

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Level-1C_User_Product><PRODUCT_URI>&lol3;</PRODUCT_URI></Level-1C_User_Product>"""


def xxe_payload(secret: Path) -> bytes:
    """A manifest.safe whose footprint is an external entity pointing at a local file of valid coordinates:
    expanding it would give the item a footprint, so a geometry in the result would show the leak."""
    secret.write_text("46.0,1.5 46.4,4.8 44.9,5.1 44.5,1.9 SECRET-MARKER")
    return XXE % str(secret).encode()


def test_external_entities_are_never_expanded(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    for reader in ("safe", "mtd", "mtl"):
        with pytest.raises(MetadataError) as caught:
            read_metadata(xxe_payload(secret), reader)
        assert caught.value.reason == "xml_forbidden"
        assert "SECRET-MARKER" not in str(caught.value)
    with pytest.raises(MetadataError) as caught:
        read_metadata(BOMB, "mtd")
    assert caught.value.reason == "xml_forbidden"


@pytest.mark.parametrize(
    ("data", "reader", "reason"),
    [
        (b"", "safe", "empty_metadata"),
        (b"<xfdu><unclosed>", "safe", "invalid_xml"),
        (b"\xff\xfe\x00garbage", "mtd", "invalid_xml"),
        (b"no key value lines at all", "mtl", "invalid_mtl"),
        (b'{"LANDSAT_METADATA_FILE": ', "mtl", "invalid_json"),
    ],
)
def test_corrupt_metadata_gives_a_reason(data: bytes, reader: str, reason: str) -> None:
    with pytest.raises(MetadataError) as caught:
        read_metadata(data, reader)
    assert caught.value.reason == reason


def test_truncated_real_manifest_is_invalid_xml(corpus: Path) -> None:
    data = (s1_products(corpus)[0] / "manifest.safe").read_bytes()
    with pytest.raises(MetadataError) as caught:
        read_metadata(data[: len(data) // 2], "safe")
    assert caught.value.reason == "invalid_xml"


def test_xfdumanifest_of_sentinel3() -> None:
    """The corpus has no Sentinel-3 xfdumanifest.xml: this one has the real layout (stactools' OLCI EFR test
    product), cut down to the elements the reader uses."""
    data = b"""<?xml version="1.0" encoding="UTF-8"?>
<xfdu:XFDU xmlns:xfdu="urn:ccsds:schema:xfdu:1" xmlns:sentinel-safe="http://www.esa.int/safe/sentinel/1.1"
  xmlns:gml="http://www.opengis.net/gml" xmlns:sentinel3="http://www.esa.int/safe/sentinel/sentinel-3/1.0">
 <metadataSection>
  <metadataObject ID="acquisitionPeriod"><metadataWrap><xmlData><sentinel-safe:acquisitionPeriod>
   <sentinel-safe:startTime>2021-10-21T07:38:27.254946Z</sentinel-safe:startTime>
   <sentinel-safe:stopTime>2021-10-21T07:41:12.194233Z</sentinel-safe:stopTime>
  </sentinel-safe:acquisitionPeriod></xmlData></metadataWrap></metadataObject>
  <metadataObject ID="platform"><metadataWrap><xmlData><sentinel-safe:platform>
   <sentinel-safe:familyName>Sentinel-3</sentinel-safe:familyName><sentinel-safe:number>A</sentinel-safe:number>
  </sentinel-safe:platform></xmlData></metadataWrap></metadataObject>
  <metadataObject ID="measurementFrameSet"><metadataWrap><xmlData><sentinel-safe:frameSet>
   <sentinel-safe:footPrint srsName="http://www.opengis.net/def/crs/EPSG/0/4326"><gml:posList>-72.343 -44.0441
   -75.8846 13.0151 -68.2251 -16.9403 -72.343 -44.0441</gml:posList></sentinel-safe:footPrint>
  </sentinel-safe:frameSet></xmlData></metadataWrap></metadataObject>
  <metadataObject ID="generalProductInformation"><metadataWrap><xmlData><sentinel3:generalProductInformation>
   <sentinel3:timeliness>NR</sentinel3:timeliness></sentinel3:generalProductInformation></xmlData></metadataWrap>
  </metadataObject>
 </metadataSection>
</xfdu:XFDU>"""
    meta = read_metadata(data, "safe")
    assert meta.source == "xfdumanifest.xml"
    assert meta.properties == {"platform": "sentinel-3a", "s3:processing_timeliness": "NR"}
    assert (meta.start, meta.end) == ("2021-10-21T07:38:27.254946Z", "2021-10-21T07:41:12.194233Z")
    assert meta.geometry is not None and meta.geometry["type"] == "Polygon"
    assert pick_metadata(["S3A_X.SEN3/xfdumanifest.xml", "S3A_X.SEN3/Oa01_radiance.nc"], "sentinel-3") == (
        "S3A_X.SEN3/xfdumanifest.xml",
        "safe",
    )
