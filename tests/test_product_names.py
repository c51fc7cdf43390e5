"""Tests for harvester.product_names.

Three kinds: rules stated as examples (no data needed); the grammar against every real name in the corpus; and
agreement with the real products -- replicas from different providers share one key, and what a name tells
matches the product's own metadata files (manifest.safe, MTD_MSIL*.xml, xfdumanifest.xml, MTL.xml).

The corpus is ../shared/corpus relative to the repository root, or $CSCALE_CORPUS; its tests skip without it.
"""

from __future__ import annotations

import json
import os
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester.product_names import (
    NAME_PROPERTIES,
    ProductName,
    explain_rejection,
    parse_product_name,
    product_key,
)

CORPUS = (
    Path(os.environ["CSCALE_CORPUS"])
    if os.environ.get("CSCALE_CORPUS")
    else Path(__file__).resolve().parents[2] / "shared" / "corpus"
)

REASONS = {
    "empty",
    "unknown_mission",
    "not_a_product",
    "auxiliary_file",
    "incomplete_name",
    "malformed",
    "bad_platform",
    "bad_date",
    "bad_time_range",
    "bad_s1_mode",
    "bad_s1_type",
    "bad_s1_level",
    "bad_s1_polarisation",
    "bad_s2_level",
    "bad_s2_tile",
    "bad_s3_instrument",
    "bad_s3_level",
    "bad_s3_timeliness",
    "bad_s5p_stream",
    "bad_s5p_level",
    "bad_landsat_sensor",
    "bad_landsat_level",
    "bad_landsat_category",
}

S1_PC = "S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13"
S2_ESA = "S2B_MSIL2A_20250731T131909_N0511_R095_T20EPT_20250731T143919"


def parsed(name: str) -> ProductName:
    result = parse_product_name(name)
    assert result is not None, f"{name}: {explain_rejection(name)}"
    return result


def key(name: str, properties: dict[str, Any] | None = None) -> str:
    result = product_key(name, properties)
    assert result is not None, name
    return result


# --- rules, by example -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        S1_PC,
        S1_PC + "_6FF8",
        S1_PC + "_6FF8.SAFE",
        S1_PC + "_6FF8.SAFE.zip",
        S1_PC + "_6FF8_COG.SAFE",
        f"s3://bucket/GRD/2021/8/9/IW/DV/{S1_PC}_6FF8.SAFE/",
        f"https://zipper.example/odata/{S1_PC}_6FF8.zip",
    ],
)
def test_s1_copies_share_the_esa_name_without_crc(name: str) -> None:
    assert key(name) == S1_PC
    assert parsed(name).product_key == S1_PC


def test_s1_properties_follow_the_naming_convention() -> None:
    props = parsed(S1_PC + "_6FF8").properties
    assert props == {
        "platform": "sentinel-1a",
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "sar:instrument_mode": "IW",
        "sar:product_type": "GRD",
        "sar:polarizations": ["VV", "VH"],
        "sat:absolute_orbit": 39156,
        "sat:relative_orbit": 59,
        "s1:datatake_id": "302867",
        "s1:resolution": "high",
        "processing:level": "L1",
        "product_type": "IW_GRDH_1S",
        "start_datetime": "2021-08-09T17:39:53Z",
        "end_datetime": "2021-08-09T17:40:18Z",
    }
    stripmap = parsed("S1C_S4_GRDH_1SDH_20250118T171404_20250118T171421_000638_000538_4B8B").properties
    assert stripmap["sar:instrument_mode"] == "SM"
    assert stripmap["sar:polarizations"] == ["HH", "HV"]


def test_s1_rtc_is_a_product_of_its_own() -> None:
    rtc = "S1A_IW_GRDH_1SDV_20250311T044231_20250311T044249_058252_073302_rtc"
    assert key(rtc) == rtc[:-4] + "_RTC"
    assert key(rtc) != key(rtc[:-4])
    # the id decides even when a property names the GRD it was made from
    assert key(rtc, {"s1:product_identifier": rtc[:-4] + "_ABCD"}) == rtc[:-4] + "_RTC"


def test_s2_key_drops_baseline_relative_orbit_and_processing_time() -> None:
    esa = "S2B_MSIL2A_20210713T184919_N0301_R070_T10TFK_20210713T213455.SAFE"
    pc = "S2B_MSIL2A_20210713T184919_R070_T10TFK_20210720T102325"
    reprocessed = "S2B_MSIL2A_20210713T184919_N0500_R070_T10TFK_20230301T101010.SAFE.zip"
    assert key(esa) == key(pc) == key(reprocessed) == "S2B_MSIL2A_20210713T184919_T10TFK"
    props = parsed(esa).properties
    assert props["s2:processing_baseline"] == "03.01"
    assert props["sat:relative_orbit"] == 70
    assert props["grid:code"] == "MGRS-10TFK"
    assert props["datetime"] == "2021-07-13T18:49:19Z"
    assert "s2:processing_baseline" not in parsed(pc).properties  # PC ids drop the N part


def test_s2_products_that_differ_stay_apart() -> None:
    base = "S2B_MSIL2A_20210713T184919_R070_T10TFK_20210720T102325"
    others = [
        base.replace("MSIL2A", "MSIL1C"),
        base.replace("T10TFK", "T10TFL"),
        base.replace("S2B_", "S2A_"),
        base.replace("T184919", "T184920"),
    ]
    assert len({key(base), *(key(n) for n in others)}) == 5


def test_s2_earth_search_id_is_completed_from_its_properties() -> None:
    es_id = "S2B_20EPT_20250731_0_L2A"
    assert key(es_id) == "S2B_MSIL2A_20250731TXXXXXX_T20EPT"
    assert key(es_id.replace("_0_", "_1_")) == "S2B_MSIL2A_20250731TXXXXX1_T20EPT"
    full = key(S2_ESA)
    assert key(es_id, {"sentinel:product_id": S2_ESA}) == full
    assert key(es_id, {"s2:product_uri": S2_ESA + ".SAFE"}) == full
    assert key(es_id, {"s2:datatake_id": "GS2B_20250731T131909_043879_N05.11"}) == full
    # the tile sensing time earth-search puts in `datetime` is not the datatake time: no guessing
    assert key(es_id, {"datetime": "2025-07-31T13:19:22Z"}) == key(es_id)
    # the L1C source of an L2A item has the same datatake; the key keeps the item's level
    assert key(es_id, {"s2:product_uri": S2_ESA.replace("MSIL2A", "MSIL1C")}) == full
    # a name of another tile, satellite or day does not complete the id
    assert key(es_id, {"s2:product_uri": S2_ESA.replace("T20EPT", "T20EPS")}) == key(es_id)
    assert key(es_id, {"s2:product_uri": S2_ESA.replace("20250731T131909", "20250721T131909")}) == key(es_id)
    assert key(es_id, {"s2:datatake_id": "GS2A_20250731T131909_043879_N05.11"}) == key(es_id)
    assert key(es_id, {"s2:datatake_id": "GS2B_20250729T131909_043879_N05.11"}) == key(es_id)
    # a datatake started before midnight reaches tiles sensed after it
    late = {"s2:datatake_id": "GS2B_20250730T235959_043879_N05.11"}
    assert key(es_id, late) == "S2B_MSIL2A_20250730T235959_T20EPT"


def test_s2_tile_time_ids_use_the_date_only() -> None:
    # stactools / earth-search c1 ids carry the datastrip start (131905), not the datatake start (131909)
    assert key("S2B_T20EPT_20250731T131905_L2A") == key("S2B_20EPT_20250731_0_L2A")
    assert key("S2B_T20EPT_20250731T131905_L2A", {"s2:product_uri": S2_ESA}) == key(S2_ESA)


def test_s2_legacy_names() -> None:
    tile = "S2A_OPER_MSI_L1C_TL_SGS__20181231T203637_A018414_T10SDG_N02.07"
    assert key(tile) == "S2A_MSIL1C_A018414_T10SDG"
    props = parsed(tile).properties
    assert (props["sat:absolute_orbit"], props["sat:relative_orbit"]) == (18414, 113)
    assert props["s2:processing_baseline"] == "02.07"
    with_datatake = {"s2:datatake_id": "GS2A_20181231T185801_018414_N02.07"}
    product = "S2A_MSIL1C_20181231T185801_N0207_R113_T10SDG_20181231T203637"
    assert key(tile, with_datatake) == key(tile, {"s2:product_uri": product}) == key(product)
    assert key(tile, {"s2:datatake_id": "GS2A_20181231T185801_018415_N02.07"}) == key(tile)  # other orbit

    prd = "S2A_OPER_PRD_MSIL1C_PDMC_20160905T104813_R002_V20160905T005712_20160905T010424.SAFE"
    assert key(prd) == "S2A_MSIL1C_20160905T005712_R002"
    es_v0 = "S2A_55HBU_20160905_0_L1C"
    assert key(es_v0, {"sentinel:product_id": prd}) == "S2A_MSIL1C_20160905T005712_T55HBU"

    datastrip = "S2A_OPER_MSI_L1C_DS_EPAE_20200815T023440_S20200815T005250"
    reprocessed = "S2A_OPER_MSI_L1C_DS_S2RP_20230405T155830_S20200815T005250_N05.00"
    assert key(datastrip) == key(reprocessed) == "S2A_MSIL1C_DS_20200815T005250"


def test_s3_key_keeps_timeliness_and_drops_creation_and_centre() -> None:
    nr = "S3A_OL_1_EFR____20211021T073827_20211021T074112_20211021T091357_0164_077_334_4320_LN1_O_NR_002.SEN3"
    assert key(nr) == "S3A_OL_1_EFR____20211021T073827_20211021T074112_0164_077_334_4320_NR"
    assert key(nr.replace("20211021T091357", "20211101T000000").replace("LN1", "MAR")) == key(nr)
    assert key(nr.replace("_O_NR_002", "_R_NR_003")) == key(nr)  # reprocessing baseline
    assert key(nr.replace("_NR_", "_NT_")) != key(nr)
    props = parsed(nr).properties
    assert props["s3:processing_timeliness"] == "NR"
    assert props["sat:relative_orbit"] == 334
    assert props["product_type"] == "OL_1_EFR___"
    assert props["instruments"] == ["olci"]


def test_s3_short_ids_need_the_timeliness_from_properties() -> None:
    short = "S3A_OL_1_EFR_20211021T073827_20211021T074112_0164_077_334_4320"
    full = "S3A_OL_1_EFR____20211021T073827_20211021T074112_20211021T091357_0164_077_334_4320_LN1_O_NR_002"
    assert key(short).endswith("_XX")
    assert key(short, {"s3:processing_timeliness": "NR"}) == key(full)
    region = "S3A_SY_2_V10_20210911T000000_20210920T235959_EUROPE"
    region_full = "S3A_SY_2_V10____20210911T000000_20210920T235959_20210928T121452_EUROPE____________LN2_O_NT_002"
    assert key(region, {"s3:processing_timeliness": "NT"}) == key(region_full)


def test_s3_auxiliary_file_versions_stay_apart() -> None:
    v4 = "S3A_OL_2_ACP_AX_20160216T000000_20991231T235959_20170609T120000___________________MPC_O_AL_004"
    v6 = "S3A_OL_2_ACP_AX_20160216T000000_20991231T235959_20200929T072910___________________EUM_O_AL_006"
    assert key(v4) != key(v6)
    open_end = "S3A_AX___OSF_AX_20160216T192404_99991231T235959_20200826T081958___________________EUM_O_AL_001"
    assert parsed(open_end).properties["end_datetime"] == "9999-12-31T23:59:59Z"


def test_s5p_key() -> None:
    nrti = "S5P_NRTI_L2__NO2____20210827T012135_20210827T012635_20056_02_020200_20210827T021525.nc"
    assert key(nrti) == "S5P_NRTI_L2__NO2____20210827T012135_20210827T012635_20056"
    assert key(nrti.replace("_020200_20210827T021525", "_020301_20211001T000000")) == key(nrti)
    assert key(nrti.replace("NRTI", "OFFL")) != key(nrti)
    props = parsed(nrti).properties
    assert props["processing:version"] == "02.02.00"
    assert props["s5p:processing_mode"] == "NRTI"
    assert props["product_type"] == "L2__NO2___"


def test_landsat_key() -> None:
    pc = "LC08_L2SP_047027_20201204_02_T1"
    for usgs in (
        "LC08_L2SP_047027_20201204_20210313_02_T1",
        "LC08_L2SP_047027_20201204_20210313_02_T1_SR",
        "LC08_L2SP_047027_20201204_20210313_02_T1_ST",
        "/bundles/LC08_L2SP_047027_20201204_20210313_02_T1.tar",
    ):
        assert key(usgs) == pc
    assert key(pc.replace("_T1", "_RT")) != key(pc)
    assert key(pc.replace("_02_", "_01_")) != key(pc)
    assert key(pc.replace("L2SP", "L1TP")) != key(pc)
    props = parsed(pc).properties
    assert props["platform"] == "landsat-8"
    assert (props["landsat:wrs_path"], props["landsat:wrs_row"]) == ("047", "027")
    assert parsed("LT05_L2SP_010067_19860424_02_T2").properties["instruments"] == ["tm"]
    scene = "LC80470272020339LGN00"
    assert key(scene) == scene
    assert parsed(scene).properties["landsat:wrs_path"] == "047"


def test_unrecognised_id_is_keyed_from_the_esa_name_property() -> None:
    uuid = "5f0c1e0e-6f0a-4a4c-9d6b-0a1b2c3d4e5f"
    assert product_key(uuid) is None
    assert product_key(uuid, {"s2:product_uri": S2_ESA + ".SAFE"}) == key(S2_ESA)
    assert product_key(uuid, {"s1:product_identifier": S1_PC + "_6FF8"}) == S1_PC
    assert product_key(uuid, {"landsat:scene_id": "LC80470272020339LGN00", "title": "x"}) is None
    # a scene id names the acquisition; the product the item holds is in `landsat:product_id`
    scene_item = {"landsat:product_id": "LC08_L1TP_037033_20180208_20180221_01_T1"}
    assert key("LC80370332018039LGN00", scene_item) == "LC08_L1TP_037033_20180208_01_T1"
    assert key("LC80370332018039LGN00") == "LC80370332018039LGN00"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("   /", "empty"),
        ("naip_m_3008601_ne_16_060_20191104", "unknown_mission"),
        ("S6A_P4_2__LR______20210101T000000", "unknown_mission"),
        ("S1A_20200103_17RMJ_ASC", "not_a_product"),
        ("S1C_OPER_AUX_PREORB_OPOD_20250118T155254_V20250118T152305_20250118T215805", "auxiliary_file"),
        ("S1A_XX_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13", "bad_s1_mode"),
        ("S1A_IW_ETA__AXDV_20210809T173953_20210809T174018_039156_049F13", "bad_s1_type"),
        ("S1A_IW_GRDH_1SQV_20210809T173953_20210809T174018_039156_049F13", "bad_s1_polarisation"),
        ("S1A_IW_GRDH_1SDV_20211309T173953_20211309T174018_039156_049F13", "bad_date"),
        ("S1A_IW_GRDH_1SDV_20210809T253953_20210809T254018_039156_049F13", "bad_date"),
        ("S1A_IW_GRDH_1SDV_20210809T173953_20210808T174018_039156_049F13", "bad_time_range"),
        ("S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156", "malformed"),
        ("S2E_MSIL2A_20210713T184919_R070_T10TFK_20210720T102325", "bad_platform"),
        ("S2B_MSIL3A_20210713T184919_R070_T10TFK_20210720T102325", "bad_s2_level"),
        ("S2B_MSIL2A_20210713T184919_R070_T10IFK_20210720T102325", "bad_s2_tile"),
        ("S2B_MSIL2A_20210230T184919_R070_T10TFK_20210720T102325", "bad_date"),
        ("S2B_99TFK_20210713_0_L2A", "bad_s2_tile"),
        (
            "S3A_XX_1_EFR____20211021T073827_20211021T074112_20211021T091357_0164_077_334_4320_LN1_O_NR_002",
            "bad_s3_instrument",
        ),
        (
            "S3A_OL_1_EFR____20211021T073827_20211021T074112_20211021T091357_0164_077_334_4320_LN1_O_QQ_002",
            "bad_s3_timeliness",
        ),
        (
            "S5P_TEST_L2__NO2____20210827T012135_20210827T012635_20056_02_020200_20210827T021525",
            "bad_s5p_stream",
        ),
        (
            "S5P_NRTI_L3__NO2____20210827T012135_20210827T012635_20056_02_020200_20210827T021525",
            "bad_s5p_level",
        ),
        ("LC08_L1TP_107018_20181001", "incomplete_name"),
        ("LE08_L1TP_107018_20181001_20181001_01_RT", "bad_landsat_sensor"),
        ("LC08_L3XX_107018_20181001_20181001_01_RT", "bad_landsat_level"),
        ("LC08_L1TP_107018_20181001_20181001_01_T3", "bad_landsat_category"),
        ("LC08_L1TP_107018_20181001_20170101_01_T1", "bad_date"),
        ("LC80470272020399LGN00", "bad_date"),
    ],
)
def test_rejection_reasons(name: str, reason: str) -> None:
    assert parse_product_name(name) is None
    assert product_key(name) is None
    assert explain_rejection(name) == reason
    assert reason in REASONS


def test_explain_rejection_is_empty_for_product_names() -> None:
    assert explain_rejection(S1_PC) == ""
    assert explain_rejection("S2B_20EPT_20250731_0_L2A") == ""


# --- the grammar against every real name ------------------------------------------------------------------

NAME_FILES = {
    "sentinel1.txt": "sentinel-1",
    "sentinel2.txt": "sentinel-2",
    "sentinel2-oper-legacy.txt": "sentinel-2",
    "sentinel2-earth-search-ids.txt": "sentinel-2",
    "sentinel3.txt": "sentinel-3",
    "sentinel3-short-ids.txt": "sentinel-3",
    "sentinel5p.txt": "sentinel-5p",
    "landsat-c2.txt": "landsat",
    "landsat-pre-collection-scene-ids.txt": "landsat",
}
MAX_REJECTED_FRACTION = 0.05  # lists were grep-extracted: a few hits may be no product name at all
COPY_SUFFIXES = {
    "sentinel-1": (".SAFE.zip", "_COG.SAFE/"),  # after a CRC, added when the name has none
    "sentinel-2": (".SAFE.zip", ".SAFE/"),
    "sentinel-3": (".SEN3", ".SEN3.zip"),
    "sentinel-5p": (".nc",),
    "landsat": (".tar",),
}


@pytest.fixture(scope="module")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"real-data corpus not found at {CORPUS} (set CSCALE_CORPUS to run the corpus tests)")
    return CORPUS


def corpus_file(corpus: Path, relative: str) -> Path:
    path = corpus / relative
    if not path.exists():
        pytest.skip(f"{relative} is not in this corpus snapshot")
    return path


def read_names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# every names file present, expected or not: a new list must not be skipped silently
ALL_NAME_FILES = sorted(set(NAME_FILES) | {path.name for path in (CORPUS / "names").glob("*.txt")})


@pytest.mark.parametrize("file_name", ALL_NAME_FILES)
def test_every_corpus_name_is_parsed_or_rejected_with_a_reason(corpus: Path, file_name: str) -> None:
    names = read_names(corpus_file(corpus, f"names/{file_name}"))
    reasons: Counter[str] = Counter()
    for name in names:
        result = parse_product_name(name)
        if result is None:
            reason = explain_rejection(name)
            assert reason in REASONS, (name, reason)
            reasons[reason] += 1
            continue
        assert result.mission == NAME_FILES.get(file_name, result.mission), name
        assert result.product_key and "/" not in result.product_key and "." not in result.product_key
        assert product_key(name) == result.product_key
        assert explain_rejection(name) == ""
    rejected = sum(reasons.values())
    parsed_count = len(names) - rejected
    print(f"\n{file_name}: {len(names)} names, {parsed_count} parsed, {rejected} rejected {dict(reasons)}")
    assert rejected <= MAX_REJECTED_FRACTION * len(names), reasons


@pytest.mark.parametrize("file_name", sorted(NAME_FILES))
def test_copies_of_corpus_names_share_the_key(corpus: Path, file_name: str) -> None:
    for name in read_names(corpus_file(corpus, f"names/{file_name}")):
        result = parse_product_name(name)
        if result is None:
            continue
        if result.mission == "sentinel-1" and name == result.product_key:
            name += "_ABCD"  # PC form: add the CRC an ESA copy has
        for suffix in COPY_SUFFIXES[result.mission]:
            assert product_key(f"s3://bucket/some/prefix/{name}{suffix}") == result.product_key, name


def test_s1_and_landsat_keys_are_names_themselves(corpus: Path) -> None:
    for file_name in ("sentinel1.txt", "landsat-c2.txt"):
        for name in read_names(corpus_file(corpus, f"names/{file_name}")):
            result = parse_product_name(name)
            if result is not None:
                assert key(result.product_key) == result.product_key


def test_s2_compact_names_group_by_satellite_level_datatake_and_tile(corpus: Path) -> None:
    by_key: defaultdict[str, set[str]] = defaultdict(set)
    by_fields: defaultdict[tuple[str, ...], set[str]] = defaultdict(set)
    for name in read_names(corpus_file(corpus, "names/sentinel2.txt")):
        fields = name.split("_")
        by_key[key(name)].add(name)
        by_fields[(fields[0], fields[1], fields[2], fields[-2])].add(name)
    assert sorted(map(sorted, by_key.values())) == sorted(map(sorted, by_fields.values()))


# --- replicas across providers ------------------------------------------------------------------------------


def features(path: Path) -> list[dict[str, Any]]:
    """STAC items in a JSON/NDJSON file (Feature, FeatureCollection, list); [] for anything else."""
    text = path.read_text()
    try:
        docs: list[Any] = [json.loads(text)]
    except json.JSONDecodeError:
        try:
            docs = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            return []
    found: list[dict[str, Any]] = []
    for doc in docs:
        candidates = (
            doc if isinstance(doc, list) else [doc, *(doc.get("features") or [])] if isinstance(doc, dict) else []
        )
        found += [
            f
            for f in candidates
            if isinstance(f, dict)
            and f.get("type") == "Feature"
            and isinstance(f.get("id"), str)
            and isinstance(f.get("properties"), dict)
        ]
    return found


def strings(value: object) -> list[str]:
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), value
    return [str(v) for v in value]


def items_in(corpus: Path, *patterns: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    for pattern in patterns:
        for path in sorted(corpus.glob(pattern)):
            for feature in features(path):
                yield path, feature


def esa_name(props: dict[str, Any]) -> str | None:
    for prop in NAME_PROPERTIES:
        if isinstance(props.get(prop), str):
            return str(props[prop])
    return None


def test_pc_s2_ids_key_like_the_esa_name_and_the_granule(corpus: Path) -> None:
    seen = 0
    for path, item in items_in(
        corpus,
        "items/stac-geoparquet/**/*.json",
        "api/**/planetarycomputer.microsoft.com/*.json",
        "api/rustac-mocks/*.json",
        "items/rustac/core/*.json",
    ):
        props = item["properties"]
        if not item["id"].startswith("S2") or "s2:product_uri" not in props:
            continue
        seen += 1
        expected = key(props["s2:product_uri"])
        assert "XXXXXX" not in expected
        assert key(item["id"]) == key(item["id"], props) == expected, path
        assert key("not-an-esa-id", {"s2:product_uri": props["s2:product_uri"]}) == expected
        if "s2:granule_id" in props and "s2:datatake_id" in props:
            assert key(props["s2:granule_id"], {"s2:datatake_id": props["s2:datatake_id"]}) == expected
        name_props = parsed(item["id"]).properties
        assert name_props["s2:mgrs_tile"] == props["s2:mgrs_tile"]
        assert name_props["sat:relative_orbit"] == props["sat:relative_orbit"]
        assert name_props["datetime"] == props["datetime"][:19] + "Z"  # PC's datetime is the datatake start
        assert str(name_props["platform"]) == props["platform"].lower()
        uri_props = parsed(props["s2:product_uri"]).properties
        assert uri_props["s2:processing_baseline"] == props["s2:processing_baseline"]
    assert seen >= 4


def test_earth_search_s2_ids_key_like_the_esa_name(corpus: Path) -> None:
    seen = Counter[str]()
    for path, item in items_in(
        corpus,
        "items/rustac/server/sentinel-2/*.json",
        "items/rustac/fixtures/*.json",
        "items/stac-check/*.json",
        "api/**/earth-search.aws.element84.com/*.json",
        "api/eodag-provider-responses/**/*.json",
    ):
        props, item_id = item["properties"], item["id"]
        name = props.get("s2:product_uri") or props.get("sentinel:product_id")
        if not item_id.startswith("S2") or not isinstance(name, str) or "_MSIL" not in name:
            continue
        seen["v0" if "sentinel:product_id" in props else "v1"] += 1
        merged = key(item_id, props)
        assert merged == key(name), (path, item_id)
        assert "XXXXXX" not in merged
        fallback = key(item_id)  # the date may differ: tile sensing can fall after midnight, datatake not
        assert "TXXXXX" in fallback and fallback[:11] == merged[:11] and fallback[-7:] == merged[-7:]
        tile_id = props.get("s2:tile_id") or props.get("s2:granule_id")
        if isinstance(tile_id, str) and "s2:datatake_id" in props:
            assert key(tile_id, {"s2:datatake_id": props["s2:datatake_id"]}) == merged
        name_props = parsed(item_id).properties
        if "grid:code" in props:
            assert name_props["grid:code"] == props["grid:code"]
        assert name_props["platform"] == props["platform"]
    print(f"\nearth-search S2 items checked: {dict(seen)}")
    assert seen["v1"] >= 10


REPLICA_SOURCES = (
    "items/**/*.json",
    "items/**/*.ndjson",
    "api/**/*.json",
    "catalogs/stactools-*/**/*.json",
    "catalogs/eodag-*/**/*.json",
    "sentinel/**/*.json",
)
KNOWN_REPLICAS = (
    ("S2B_24MVV_20250731_0_L2A", "S2B_T24MVV_20250731T130245_L2A"),  # earth-search v1 vs c1
    (
        "S2A_MSIL1C_20210908T042701_R133_T46RER_20210908T070248",
        "S2A_T46RER_20210908T043714_L1C",
    ),  # vs stactools
    ("LC08_L2SP_047027_20201204_02_T1", "LC08_L2SP_047027_20201204_20210313_02_T1_SR"),  # PC vs USGS
    ("LT04_L2SP_002026_19830110_20200918_02_T1_SR", "LT04_L2SP_002026_19830110_20200918_02_T1_ST"),
)


def test_replicas_in_the_corpus_merge(corpus: Path) -> None:
    """Items of every provider naming one ESA/USGS product get its key, and real replica pairs share one."""
    key_by_id: dict[str, str] = {}
    mismatched: list[tuple[str, str, str]] = []
    for _, item in items_in(corpus, *REPLICA_SOURCES):
        item_id, props = item["id"], item["properties"]
        item_key = product_key(item_id, props)
        if item_key is None:
            continue
        key_by_id[item_id] = item_key
        name = esa_name(props)
        derived = item_id.endswith("_rtc")  # named after its GRD source, deliberately keyed apart
        if name is not None and parse_product_name(name) is not None and not derived and key(name) != item_key:
            mismatched.append((item_id, name, item_key))
    assert not mismatched
    shared = Counter(key_by_id.values())
    print(f"\n{len(key_by_id)} item ids, {sum(n > 1 for n in shared.values())} keys shared by several ids")
    checked = 0
    for pair in KNOWN_REPLICAS:
        if all(item_id in key_by_id for item_id in pair):
            assert key_by_id[pair[0]] == key_by_id[pair[1]], pair
            checked += 1
    assert checked, "none of the known replica pairs is in this corpus snapshot"


def test_stactools_s2_items_key_like_their_product(corpus: Path) -> None:
    """stactools test folders: a SAFE, or an AWS tile folder whose tileInfo.json names the product."""
    checked = 0
    for folder in sorted(p for p in (corpus / "sentinel/sentinel2").glob("S2*") if p.is_dir()):
        folder_name = folder.name.split("-")[0]  # test variants: '<name>-no-data'
        tile_info = folder / "tileInfo.json"
        if "_MSIL" in folder_name:
            product = folder_name
        elif tile_info.exists():
            product = json.loads(tile_info.read_text())["productName"]
        else:
            continue
        names = [folder_name]
        output = folder / "expected_output.json"
        if output.exists():
            item = json.loads(output.read_text())
            names.append(item["id"])
            if "s2:product_uri" in item["properties"]:
                assert key(item["id"], item["properties"]) == key(product)
        for name in names:
            assert key(name, {"s2:product_uri": product}) == key(product), (folder, name)
            relative_orbit = parsed(name).properties.get("sat:relative_orbit")  # from A<orbit> in tile names
            assert relative_orbit in (None, parsed(product).properties["sat:relative_orbit"]), name
            checked += 1
    if not checked:
        pytest.skip("no stactools sentinel2 test data in this corpus snapshot")


def test_s1_items_key_like_their_esa_name(corpus: Path) -> None:
    seen = 0
    for path, item in items_in(
        corpus,
        "catalogs/stactools-sentinel1-examples/**/*.json",
        "api/**/earth-search.aws.element84.com/*.json",
        "api/**/planetarycomputer.microsoft.com/*sentinel-1-grd*.json",
    ):
        props, item_id = item["properties"], item["id"]
        if not item_id.startswith("S1") or parse_product_name(item_id) is None:
            continue
        seen += 1
        item_key = key(item_id)
        assert key(item_id, props) == item_key
        if "s1:product_identifier" in props:
            assert key(props["s1:product_identifier"]) == item_key
            assert key(props["s1:product_identifier"] + ".SAFE.zip") == item_key
        name_props = parsed(item_id).properties
        for prop in ("sar:instrument_mode", "sat:absolute_orbit", "sat:relative_orbit"):
            assert name_props[prop] == props[prop], (path, prop)
        assert name_props["s1:datatake_id"] == str(props["s1:datatake_id"])  # PC: str, earth-search: int
        assert sorted(strings(name_props["sar:polarizations"])) == sorted(props["sar:polarizations"])
        assert name_props["platform"] == props["platform"].lower()
    assert seen >= 3


def test_s3_short_ids_merge_with_full_names(corpus: Path) -> None:
    full_names = read_names(corpus_file(corpus, "names/sentinel3.txt"))
    full_names += [p.name for p in (corpus / "sentinel/sentinel3").glob("*.SEN3")]
    full_keys = {key(n) for n in full_names if parse_product_name(n) is not None}
    merged = 0
    for _, item in items_in(corpus, "items/stactools/sentinel3/*.json"):
        props = item["properties"]
        item_key = key(item["id"], props)
        assert item_key.endswith("_" + props.get("s3:processing_timeliness", "XX"))
        name_props = parsed(item["id"]).properties
        if "sat:relative_orbit" in name_props:  # tile products (EUROPE) carry no orbit in the name
            assert name_props["sat:relative_orbit"] == props["sat:relative_orbit"]
        assert name_props["product_type"] == props["s3:product_type"]
        assert abs(seconds(str(name_props["start_datetime"])) - seconds(props["start_datetime"])) <= 1
        merged += item_key in full_keys
    print(f"\nstactools S3 items merged with a full ESA name: {merged}")
    assert merged >= 3


def seconds(iso: str) -> float:
    return time.mktime(time.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S"))


def test_s5p_items_and_metadata(corpus: Path) -> None:
    checked = 0
    for _, item in items_in(corpus, "items/stactools/sentinel5p/*.json"):
        props, name_props = item["properties"], parsed(item["id"]).properties
        assert name_props["s5p:processing_mode"] == props["s5p:processing_mode"]
        assert name_props["product_type"] == props["s5p:product_type"]
        assert name_props["sat:absolute_orbit"] == props.get("sat:absolute_orbit", name_props["sat:absolute_orbit"])
        checked += 1
    for path in sorted((corpus / "sentinel/sentinel5p").glob("S5P_*.json")):
        meta = json.loads(path.read_text())  # the product's netCDF global attributes
        name_props = parsed(path.name).properties
        assert name_props["sat:absolute_orbit"] == meta.get("orbit", name_props["sat:absolute_orbit"])
        granule = meta.get("METADATA", {}).get("GRANULE_DESCRIPTION", {})
        assert name_props["product_type"] == granule.get("ProductShortName", name_props["product_type"])
        if "processor_version" in meta:
            version = [int(v) for v in str(name_props["processing:version"]).split(".")]
            assert version == [int(v) for v in meta["processor_version"].split(".")]
        checked += 1
    if not checked:
        pytest.skip("no Sentinel-5P items in this corpus snapshot")


# --- names against the products' own metadata ---------------------------------------------------------------


def xml_values(path: Path) -> defaultdict[str, list[str]]:
    """Text and attributes of every element, by local name (namespaces vary between product versions)."""
    values: defaultdict[str, list[str]] = defaultdict(list)
    for element in ET.parse(path).getroot().iter():
        values[element.tag.rsplit("}", 1)[-1]].append((element.text or "").strip())
        for attribute, value in element.attrib.items():
            values["@" + attribute].append(value)
    return values


def test_s1_names_agree_with_manifest_safe(corpus: Path) -> None:
    manifests = sorted((corpus / "sentinel").glob("sentinel1/**/manifest.safe"))
    if not manifests:
        pytest.skip("no Sentinel-1 manifest.safe in this corpus snapshot")
    for manifest in manifests:
        meta = xml_values(manifest)
        props = parsed(manifest.parent.name).properties
        assert props["sat:absolute_orbit"] == int(meta["orbitNumber"][0]), manifest
        assert props["sat:relative_orbit"] == int(meta["relativeOrbitNumber"][0]), manifest
        assert props["sar:instrument_mode"] == meta["mode"][0]
        assert props["sar:product_type"] == meta["productType"][0]
        assert sorted(strings(props["sar:polarizations"])) == sorted(meta["transmitterReceiverPolarisation"])
        assert props["s1:datatake_id"] == meta["missionDataTakeID"][0]
        assert props["platform"] == "sentinel-1" + meta["number"][0].lower()
        assert abs(seconds(str(props["start_datetime"])) - seconds(meta["startTime"][0])) <= 3


def test_s3_names_agree_with_xfdumanifest(corpus: Path) -> None:
    manifests = sorted((corpus / "sentinel/sentinel3").glob("*/xfdumanifest.xml"))
    if not manifests:
        pytest.skip("no Sentinel-3 xfdumanifest.xml in this corpus snapshot")
    for manifest in manifests:
        meta = xml_values(manifest)
        props = parsed(manifest.parent.name).properties
        assert key(manifest.parent.name) == key(meta["productName"][0])
        assert props["product_type"] == meta["productType"][0]
        assert props["s3:processing_timeliness"] == meta["timeliness"][0]
        if "sat:relative_orbit" in props:
            assert props["sat:relative_orbit"] == int(meta["relativeOrbitNumber"][0]), manifest
        assert abs(seconds(str(props["start_datetime"])) - seconds(meta["startTime"][0])) <= 1


def test_s2_names_agree_with_mtd_msil(corpus: Path) -> None:
    mtds = [p for p in sorted((corpus / "sentinel").rglob("MTD_MSIL*")) if p.suffix.lower() == ".xml"]
    if not mtds:
        pytest.skip("no Sentinel-2 MTD_MSIL*.xml in this corpus snapshot")
    for mtd in mtds:
        meta = xml_values(mtd)
        product = meta["PRODUCT_URI"][0]
        props = parsed(product).properties
        assert props["product_type"] == meta["PRODUCT_TYPE"][0]
        assert props["s2:processing_baseline"] == meta["PROCESSING_BASELINE"][0]
        assert props["sat:relative_orbit"] == int(meta["SENSING_ORBIT_NUMBER"][0])
        assert props["datetime"] == meta["PRODUCT_START_TIME"][0][:19] + "Z"
        assert props["platform"] == meta["SPACECRAFT_NAME"][0].lower()
        folder = mtd.parent.name
        if parse_product_name(folder) is not None:
            assert key(folder) == key(product)
        datatake = next(v for v in meta["@datatakeIdentifier"] if v.startswith("GS2"))
        for tile_mtd in mtd.parent.rglob("MTD_TL.xml"):
            tile_id = first_text(tile_mtd, "TILE_ID")
            tile_props = parsed(tile_id).properties
            assert tile_props["s2:mgrs_tile"] == props["s2:mgrs_tile"]
            assert tile_props["sat:relative_orbit"] == props["sat:relative_orbit"]  # derived from A<orbit>
            assert key(tile_id, {"s2:datatake_id": datatake}) == key(product)


def first_text(path: Path, tag: str) -> str:
    """Text of the first `tag` element, reading only as far as needed (MTD_TL.xml files are large)."""
    with path.open("rb") as stream:
        for _, element in ET.iterparse(stream):
            if element.tag.rsplit("}", 1)[-1] == tag:
                return (element.text or "").strip()
    raise AssertionError(f"no {tag} in {path}")


def test_landsat_names_agree_with_mtl(corpus: Path) -> None:
    mtls = sorted((corpus / "sentinel/landsat").glob("*/*_MTL.xml"))
    if not mtls:
        pytest.skip("no Landsat MTL.xml in this corpus snapshot")
    for mtl in mtls:
        root = ET.parse(mtl).getroot()
        product_id = root.findtext("PRODUCT_CONTENTS/LANDSAT_PRODUCT_ID")
        attributes = root.find("IMAGE_ATTRIBUTES")
        assert product_id is not None and attributes is not None
        assert key(mtl.name[: -len("_MTL.xml")]) == key(product_id)
        props = parsed(product_id).properties
        assert props["landsat:collection_category"] == root.findtext("PRODUCT_CONTENTS/COLLECTION_CATEGORY")
        assert props["landsat:collection_number"] == root.findtext("PRODUCT_CONTENTS/COLLECTION_NUMBER")
        platform = str(attributes.findtext("SPACECRAFT_ID")).lower().replace("_", "-")
        path_row = (int(str(attributes.findtext("WRS_PATH"))), int(str(attributes.findtext("WRS_ROW"))))
        acquired = str(attributes.findtext("DATE_ACQUIRED"))
        assert props["platform"] == platform
        assert (int(str(props["landsat:wrs_path"])), int(str(props["landsat:wrs_row"]))) == path_row
        assert product_id[17:25] == acquired.replace("-", "")
        scene_id = root.findtext("LEVEL1_PROCESSING_RECORD/LANDSAT_SCENE_ID")
        if scene_id:
            scene = parsed(scene_id).properties
            assert scene["platform"] == platform
            assert (int(str(scene["landsat:wrs_path"])), int(str(scene["landsat:wrs_row"]))) == path_row
            day = time.strptime(scene_id[9:16], "%Y%j")
            assert time.strftime("%Y-%m-%d", day) == acquired


def test_damaged_names_are_rejected_not_raised(corpus: Path) -> None:
    """Truncated and corrupted real names: parsing returns None with a reason, it never raises."""
    samples = [n for path in sorted((corpus / "names").glob("*.txt")) for n in read_names(path)[:15]]
    for name in samples:
        for damaged in {name[:cut] for cut in range(len(name))} | {name.replace("_", "-", 1), name.lower()}:
            result = parse_product_name(damaged)
            assert result is not None or explain_rejection(damaged) in REASONS, damaged
            assert (product_key(damaged) is None) == (result is None), damaged


# --- speed --------------------------------------------------------------------------------------------------

SAMPLE = [
    S1_PC + "_6FF8.SAFE.zip",
    "S2B_MSIL2A_20210713T184919_N0301_R070_T10TFK_20210713T213455.SAFE",
    "S2B_10TFK_20210713_0_L2A",
    "S2A_OPER_MSI_L1C_TL_SGS__20181231T203637_A018414_T10SDG_N02.07",
    "S3A_OL_1_EFR____20211021T073827_20211021T074112_20211021T091357_0164_077_334_4320_LN1_O_NR_002.SEN3",
    "S5P_NRTI_L2__NO2____20210827T012135_20210827T012635_20056_02_020200_20210827T021525",
    "LC08_L2SP_047027_20201204_20210313_02_T1_SR",
    "not_a_product_name",
]


def test_parsing_is_fast() -> None:
    names = []
    if CORPUS.is_dir():
        names = [n for path in sorted((CORPUS / "names").glob("*.txt")) for n in read_names(path)]
    names = names or SAMPLE * 300
    rounds = max(1, 20_000 // len(names))
    start = time.perf_counter()
    for _ in range(rounds):
        for name in names:
            parse_product_name(name)
    per_name = (time.perf_counter() - start) / (rounds * len(names)) * 1e6
    print(f"\nparse_product_name: {per_name:.2f} us per name over {len(names)} names")
    assert per_name < 50  # the target is well under 10 us; this only catches a pathological regression
