"""archive.grouping: S3 keys → products, and every real product name of the corpus as an archive key."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from archive.grouping import Classifier, collection_for, is_product_folder, stem
from archive.index import folder_dates, parse_root
from harvester.errors import InputError
from harvester.product_names import explain_rejection, parse_product_name, product_key

S1 = "S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8"
S2 = "S2B_MSIL2A_20191228T210519_N0212_R071_T01CCV_20201003T104658"
S3 = "S3A_OL_1_EFR____20211021T073827_20211021T074112_20211021T091357_0164_077_334_4320_LN1_O_NR_002"
LC = "LC08_L2SP_047027_20201204_20210313_02_T1"


@pytest.mark.parametrize(
    ("key", "root", "product_id"),
    [
        (f"s1a_csar_grdh_iw/2021/08/09/{S1}.SAFE.zip", f"s1a_csar_grdh_iw/2021/08/09/{S1}.SAFE.zip", S1),
        (f"s1a_csar_grdh_iw/2021/08/09/{S1}.SAFE.zip.md5", f"s1a_csar_grdh_iw/2021/08/09/{S1}.SAFE.zip", S1),
        (f"a/{S1}.zip", f"a/{S1}.zip", S1),
        (f"incd/{S2}.SAFE/manifest.safe", f"incd/{S2}.SAFE/", S2),
        (f"incd/{S2}.SAFE/GRANULE/L2A_T01CCV_A014683_20191228T210521/IMG_DATA/x.jp2", f"incd/{S2}.SAFE/", S2),
        (f"s3/{S3}.SEN3/xfdumanifest.xml", f"s3/{S3}.SEN3/", S3),
        (f"s3/{S3}.SEN3.zip", f"s3/{S3}.SEN3.zip", S3),
        (f"landsat/047/027/{LC}/{LC}_MTL.txt", f"landsat/047/027/{LC}/", LC),
        (f"landsat/{LC}.tar", f"landsat/{LC}.tar", LC),
        (f"landsat/{LC}.tar.gz", f"landsat/{LC}.tar.gz", LC),
        (f"grd/{S1}/manifest.safe", f"grd/{S1}/", S1),  # a product folder without .SAFE (as in the corpus)
        (f"two words/ü/{S1}.SAFE/manifest.safe", f"two words/ü/{S1}.SAFE/", S1),
    ],
)
def test_objects_are_placed_into_their_product(key: str, root: str, product_id: str) -> None:
    placement = Classifier().place(key)
    assert (placement.root, placement.product_id, placement.reason) == (root, product_id, None)
    assert placement.product_key == product_key(product_id)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("readme.txt", "not_in_product"),
        ("s1a/2021/", "folder_marker"),
        ("s1a/2021/quicklook.png", "not_in_product"),
        ("s1a/2021/bad name ü.zip", "unknown_mission"),
        ("s1a/2021/S1A_IW_GRDH_1SDV_20211309T173953_20211309T174018_039156_049F13_6FF8.zip", "bad_date"),
        ("aux/S1A_AUX_CAL_V20190228T092500_G20190227T100643.SAFE/manifest.safe", "auxiliary_file"),
    ],
)
def test_objects_outside_products_get_a_reason(key: str, reason: str) -> None:
    placement = Classifier().place(key)
    assert placement.product_key is None
    assert placement.reason == reason


def test_the_indexed_prefix_is_not_a_product_name() -> None:
    # indexing s3://bucket/S1A_..SAFE/ itself: its files are not placed into a product named by the root
    assert Classifier().place(f"{S1}.SAFE/manifest.safe", f"{S1}.SAFE/").reason == "not_in_product"
    assert is_product_folder(f"x/{S2}.SAFE/") and is_product_folder(f"x/{LC}/") and not is_product_folder("x/2021/")


def test_stem_and_collections() -> None:
    assert stem(f"{S1}.SAFE.zip") == S1 and stem(f"{LC}.tar.gz") == LC and stem(f"{S3}.SEN3/") == S3
    expected = {
        S1: "sentinel-1-grd",
        S2: "sentinel-2-l2a",
        S3: "sentinel-3-ol-1-efr",
        LC: "landsat-c2-l2",
        "S5P_OFFL_L2__NO2____20200303T013547_20200303T031717_12367_01_010302_20200304T165326": "sentinel-5p-l2-no2",
        "S1A_IW_SLC__1SDV_20210809T173951_20210809T174018_039156_049F13_A5D2": "sentinel-1-slc",
    }
    for name, collection in expected.items():
        parsed = parse_product_name(name)
        assert parsed is not None and collection_for(parsed) == collection


def read_names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def test_every_corpus_name_as_an_archive_key_is_placed_or_rejected_with_a_reason(corpus: Path) -> None:
    files = sorted((corpus / "names").glob("*.txt"))
    if not files:
        pytest.skip("no names/*.txt in this corpus snapshot")
    classifier = Classifier()
    placed = rejected = 0
    for path in files:
        for name in read_names(path):
            for key in (f"site/2021/01/01/{name}.zip", f"site/{name}.SAFE/manifest.safe"):
                placement = classifier.place(key)
                assert placement.product_id == name, key
                if placement.product_key is not None:
                    assert placement.product_key == product_key(name), key
                    assert placement.reason is None
                    placed += 1
                else:
                    assert placement.reason and placement.reason == explain_rejection(name), key
                    rejected += 1
    assert placed > 2000  # nearly all corpus names are products; the rest carry their reason
    assert rejected < placed


def test_date_folders() -> None:
    assert folder_dates("s1/2021/") == (date(2021, 1, 1), date(2021, 12, 31))
    assert folder_dates("s1/2021/02/") == (date(2021, 2, 1), date(2021, 2, 28))
    assert folder_dates("s1/2021/02/09/") == (date(2021, 2, 9), date(2021, 2, 9))
    assert folder_dates("s1/20210209/") == folder_dates("s1/2021-02-09/") == (date(2021, 2, 9), date(2021, 2, 9))
    for folder in ("s1/", "s1/2021/02/30/", "s1/2021/13/", "s1/9999/", f"s1/{S1}.SAFE/"):
        assert folder_dates(folder) is None, folder


def test_parse_root() -> None:
    assert parse_root("s3://bucket") == ("bucket", "")
    assert parse_root("s3://bucket/a/b") == ("bucket", "a/b/")
    assert parse_root("s3://bucket/a/b/") == ("bucket", "a/b/")
    for bad in ("/local/path", "s3:///nobucket", "https://host/x"):
        with pytest.raises(InputError):
            parse_root(bad)
