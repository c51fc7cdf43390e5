"""`cscale archive index` end to end against moto's S3 server on 127.0.0.1, with real metadata from the corpus
laid out like EODC's archive (zipped SAFE under `s1a_csar_grdh_iw/YYYY/MM/DD/`) and INCD's (SAFE folders)."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import shapely
from click.testing import CliRunner
from shapely.geometry import shape
from test_archive_metadata import (
    backend,
    put,
    s1_products,
    s2_products,
    safe_files,
    safe_name,
    sensing_day,
    xxe_payload,
    zip_safe,
)

from archive.errors import ArchiveAccessError
from archive.index import IndexOptions, IndexResult, index_archive
from archive.listing import archive_client
from harvester.cli import cli
from harvester.product_names import explain_rejection, product_key
from harvester.reader import iter_items
from harvester.store import Store
from queries import connect

from conftest import free_port

SITE = "EODC"
TOLERANCE = 2e-6  # degrees (Hausdorff): both sides round coordinates to 1e-6


def run(store: Path | Store, bucket: str, **options: Any) -> IndexResult:
    target = store if isinstance(store, Store) else Store.open(str(store))
    client = options.pop("client", None)
    return index_archive(target, f"s3://{bucket}/", IndexOptions(site=SITE, workers=8, **options), client=client)


def items_of(store: Path) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for _, item in iter_items(Store.open(str(store)))}


def objects_of(store: Path) -> dict[str, dict[str, Any]]:
    con = connect(str(store))
    rows = con.execute("SELECT * FROM archive_objects").to_arrow_table().to_pylist()
    return {row["key"]: row for row in rows}


def inventory_rows(store: Path) -> dict[str, dict[str, Any]]:
    """The inventory parts the current version's state names, read without DuckDB."""
    import pyarrow.parquet as pq

    opened = Store.open(str(store))
    state = opened.manifest().state
    files = [f for k, v in state.items() if k.startswith("archive:") for f in v["files"]]
    rows = [r for f in files for r in pq.read_table(opened.storage.uri(f)).to_pylist()]
    return {row["key"]: row for row in rows}


def fill_real_products(bucket: str, corpus: Path) -> dict[str, Path]:
    """EODC: S1 SAFE zipped under date folders; INCD: S2 SAFE folders. Returns product id → corpus folder."""
    products = {}
    for folder in s1_products(corpus):
        name = safe_name(folder)
        put(bucket, f"s1a_csar_grdh_iw/{sensing_day(name)}/{name}.zip", zip_safe(folder, name))
        products[name.removesuffix(".SAFE")] = folder
    for folder in s2_products(corpus):
        name = safe_name(folder)
        for path, data in safe_files(folder):
            put(bucket, f"incd/sentinel-2/{sensing_day(name)}/{name}/{path}", data)
        products[name.removesuffix(".SAFE")] = folder
    return products


# --- acceptance: items from real metadata -------------------------------------------------------------------


def test_items_from_safe_metadata_match_stactools(moto_server: str, bucket: str, corpus: Path, tmp_path: Path) -> None:
    products = fill_real_products(bucket, corpus)
    result = run(tmp_path / "store", bucket)
    assert result.manifest is not None and result.counts["written"] == len(products)
    assert result.report["products"]["metadata_read"] == len(products)
    items = items_of(tmp_path / "store")
    assert set(items) == set(products)
    checked_s2 = checked_s1 = 0
    for product_id, folder in products.items():
        item = items[product_id]
        assert item["properties"]["archive:metadata"] in ("manifest.safe", "MTD_MSIL1C.xml", "MTD_MSIL2A.xml") or (
            item["properties"]["archive:metadata"].endswith("manifest.safe")
        )
        expected_path = folder / "expected_output.json"
        if expected_path.exists():  # Sentinel-2: stactools' item for the same SAFE
            expected = orjson.loads(expected_path.read_bytes())
            props = item["properties"]
            assert props["datetime"] == expected["properties"]["datetime"]
            assert props["s2:product_uri"] == expected["properties"]["s2:product_uri"]
            assert item["geometry"]["type"] == expected["geometry"]["type"]
            assert shapely.hausdorff_distance(shape(item["geometry"]), shape(expected["geometry"])) < TOLERANCE
            # the ids differ by design (see archive.items); the product key merges them
            assert product_key(item["id"]) == product_key(expected["id"], expected["properties"])
            checked_s2 += 1
        stactools = corpus / "catalogs/stactools-sentinel1-examples/grd" / product_id[:-5] / f"{product_id[:-5]}.json"
        if stactools.exists():  # Sentinel-1 GRD: stactools' item
            expected = orjson.loads(stactools.read_bytes())
            for key in ("datetime", "start_datetime", "end_datetime", "sat:absolute_orbit", "sat:orbit_state"):
                assert item["properties"][key] == expected["properties"][key], key
            assert shapely.hausdorff_distance(shape(item["geometry"]), shape(expected["geometry"])) < TOLERANCE
            assert product_key(item["id"]) == product_key(expected["id"], expected["properties"])
            checked_s1 += 1
    assert checked_s2 >= 5 and checked_s1 >= 1


def test_assets_and_inventory_rows(moto_server: str, bucket: str, corpus: Path, tmp_path: Path) -> None:
    folder = s1_products(corpus)[0]
    name = safe_name(folder)
    body = zip_safe(folder, name)
    key = f"s1a_csar_grdh_iw/{sensing_day(name)}/{name}.zip"
    put(bucket, key, body)
    put(bucket, key + ".md5", hashlib.md5(body).hexdigest().encode())
    s2 = s2_products(corpus)[0]
    s2_name = safe_name(s2)
    files = dict(safe_files(s2))
    for path, data in files.items():
        put(bucket, f"incd/{s2_name}/{path}", data)
    run(tmp_path / "store", bucket)
    items = items_of(tmp_path / "store")
    zipped = items[name.removesuffix(".SAFE")]
    assert set(zipped["assets"]) == {"product", "checksum"}
    product = zipped["assets"]["product"]
    assert product["href"] == f"s3://{bucket}/{key}" and product["file:size"] == len(body)
    assert product["file:checksum"] == "d510" + hashlib.md5(body).hexdigest()
    assert product["type"] == "application/zip" and product["roles"] == ["data"]
    safe = items[s2_name.removesuffix(".SAFE")]
    assert set(safe["assets"]) == set(files)
    assert safe["properties"]["archive:objects"] == len(files)
    assert safe["assets"]["manifest.safe"]["roles"] == ["metadata"]
    rows = objects_of(tmp_path / "store")
    assert set(rows) == {key, key + ".md5"} | {f"incd/{s2_name}/{p}" for p in files}
    for row in rows.values():
        assert row["site"] == SITE and row["bucket"] == bucket and row["reason"] is None
        assert row["product_key"] == product_key(row["product_id"])
    assert rows[key]["etag"] == hashlib.md5(body).hexdigest() and rows[key]["size"] == len(body)
    # search merges the archive copy with any provider's item of the same product
    con = connect(str(tmp_path / "store"))
    joined = con.execute(
        "SELECT count(DISTINCT o.key) FROM archive_objects o JOIN items i USING (product_key)"
    ).fetchone()
    assert joined == (len(rows),)
    # the plain duckdb CLI's open_store.sql finds the same inventory parts
    import duckdb

    from queries.connection import SQL_DIR

    plain = duckdb.connect()
    plain.execute("SET VARIABLE cscale_root = ?", [str(tmp_path / "store")])
    for statement in (SQL_DIR / "open_store.sql").read_text().split(";\n"):
        lines = [line for line in statement.splitlines() if not line.startswith(("--", "."))]
        if "".join(lines).strip():
            plain.execute("\n".join(lines))
    found = plain.execute("SELECT getvariable('cscale_archive')").fetchone()
    state = Store.open(str(tmp_path / "store")).manifest().state[f"archive:{SITE}:s3://{bucket}/"]
    assert found is not None and found[0] == [f"{tmp_path / 'store'}/{f}" for f in state["files"]]


# --- acceptance: bad input ----------------------------------------------------------------------------------

S1_NAME = "S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8"


def test_bad_objects_are_recorded_not_dropped(moto_server: str, bucket: str, corpus: Path, tmp_path: Path) -> None:
    folder = s1_products(corpus)[0]
    good = zip_safe(folder, safe_name(folder))
    manifest = (folder / "manifest.safe").read_bytes()
    day = "2021/08/09"
    bad = {
        f"eodc/{day}/S1A_IW_GRDH_1SDV_20210809T000000_20210809T000025_039150_049F00_0001.SAFE.zip": b"",
        f"eodc/{day}/S1A_IW_GRDH_1SDV_20210809T000100_20210809T000125_039150_049F00_0002.SAFE.zip": b"PK\x03\x04junk",
        f"eodc/{day}/S1A_IW_GRDH_1SDV_20210809T000200_20210809T000225_039150_049F00_0003.SAFE.zip": good[:-300],
        f"eodc/{day}/S1A_IW_GRDH_1SDV_20210809T000300_20210809T000325_039150_049F00_0004.SAFE/manifest.safe": (
            manifest[: len(manifest) // 3]
        ),
        f"eodc/{day}/S1A_IW_GRDH_1SDV_20210809T000400_20210809T000425_039150_049F00_0005.SAFE/manifest.safe": (
            xxe_payload(tmp_path / "secret.txt")
        ),
        f"eodc/{day}/S1A_IW_GRDH_1SDV_20210809T000500_20210809T000525_039150_049F00_0006.SAFE/manifest.safe": b"",
        f"eodc/{day}/S1A_IW_GRDH_1SDV_20210809T000600_20210809T000625_039150_049F00_0007.SAFE/measurement/a.tiff": (
            b"x"
        ),
        f"eodc/{day}/not a product ü.zip": b"zip?",
        f"eodc/{day}/thumbs.db": b"",
        "eodc/readme.txt": b"hello",
        "eodc/": b"",
    }
    expected = {
        "0001": "empty_object",
        "0002": "corrupt_zip",
        "0003": "corrupt_zip",
        "0004": "invalid_xml",
        "0005": "xml_forbidden",
        "0006": "empty_metadata",
        "0007": "no_metadata_file",
    }
    for key, data in bad.items():
        put(bucket, key, data)
    put(bucket, f"eodc/2021/08/10 two words/ü/{S1_NAME}.SAFE.zip", good)  # spaces and unicode in the key
    result = run(tmp_path / "store", bucket)
    items = items_of(tmp_path / "store")
    for suffix, reason in expected.items():
        item = next(i for i in items.values() if i["id"].endswith(suffix))
        assert item["geometry"] is None and item["properties"]["archive:geometry_missing"] == reason, suffix
    assert items[S1_NAME]["geometry"] is not None
    assert items[S1_NAME]["assets"]["product"]["href"].endswith("/2021/08/10 two words/ü/" + S1_NAME + ".SAFE.zip")
    rows = objects_of(tmp_path / "store")
    assert set(rows) == set(bad) | {f"eodc/2021/08/10 two words/ü/{S1_NAME}.SAFE.zip"}
    assert rows[f"eodc/{day}/not a product ü.zip"]["reason"] == explain_rejection("not a product ü") != ""
    assert rows[f"eodc/{day}/thumbs.db"]["reason"] == "not_in_product"
    assert rows["eodc/readme.txt"]["reason"] == "not_in_product"
    assert rows["eodc/"]["reason"] == "folder_marker"
    assert all(r["product_key"] is None for r in rows.values() if r["reason"])
    report = result.report
    assert report["unplaced_objects"] == {"unknown_mission": 1, "not_in_product": 2, "folder_marker": 1}
    assert report["unplaced_objects_total"] == report["unplaced_objects"]
    assert report["objects"]["zero_byte"] == 4
    assert report["products"]["metadata_errors"] == dict(Counter(expected.values()))
    assert b"SECRET-MARKER" not in (tmp_path / "store").joinpath("manifests/00000001.json").read_bytes()
    assert not any("SECRET-MARKER" in orjson.dumps(i).decode() for i in items.values())


def test_unparseable_names_from_the_corpus(moto_server: str, bucket: str, corpus: Path, tmp_path: Path) -> None:
    names = [n.strip() for path in sorted((corpus / "names").glob("*.txt")) for n in path.read_text().splitlines()]
    names = sorted({n for n in names if n})
    if not names:
        pytest.skip("no names/*.txt in this corpus snapshot")
    for name in names:  # placeholders: the grammar and the inventory are under test, not the metadata
        put(bucket, f"all/{name}.zip", b"")
    result = run(tmp_path / "store", bucket, metadata=False, ingest_workers=1)
    rows = inventory_rows(tmp_path / "store")
    assert len(rows) == len(names)
    parsed = 0
    for name in names:
        row = rows[f"all/{name}.zip"]
        key = product_key(name)
        if row["product_key"] is not None:
            assert row["product_key"] == key and row["reason"] is None
            parsed += 1
        else:
            assert row["reason"] == explain_rejection(name) != "", name
    counts = result.counts
    # every product became an item, or a quarantine record when its name gives no time at all
    assert counts["seen"] == parsed == counts["written"] + counts["quarantined"]
    assert counts["objects_unplaced"] == len(names) - parsed


# --- incremental runs ---------------------------------------------------------------------------------------


def _s1(day: datetime, n: int) -> str:
    stamp = f"{day:%Y%m%d}T{n:02d}0000"
    return f"S1A_IW_GRDH_1SDV_{stamp}_{stamp[:-2]}25_039156_049F{n:02X}_{n:04X}"


def test_incremental_runs_list_new_folders_and_remove_vanished_objects(
    moto_server: str, bucket: str, corpus: Path, tmp_path: Path
) -> None:
    folder = s1_products(corpus)[0]
    today = datetime.now(UTC)
    old = today - timedelta(days=400)

    def zipped(name: str) -> bytes:
        return zip_safe(folder, name + ".SAFE")

    def key(day: datetime, name: str) -> str:
        return f"grd/{day:%Y/%m/%d}/{name}.SAFE.zip"

    for n in range(3):
        put(bucket, key(old, _s1(old, n)), zipped(_s1(old, n)))
        put(bucket, key(today, _s1(today, n)), zipped(_s1(today, n)))
    put(bucket, "grd/readme.txt", b"v1")
    store = tmp_path / "store"
    first = run(store, bucket)
    assert first.report["scan"] == "full" and first.counts["written"] == 6

    again = run(store, bucket)  # nothing changed: nothing to commit
    assert again.manifest is None and again.report["scan"] == "incremental"
    assert again.counts["products_rebuilt"] == 0 and again.report["folders_skipped"]

    client = archive_client(workers=4)
    put(bucket, key(today, _s1(today, 7)), zipped(_s1(today, 7)))  # new
    put(bucket, key(today, _s1(today, 1)), zipped(_s1(today, 1)) + b"\0")  # changed (new ETag and size)
    client.delete_object(Bucket=bucket, Key=key(today, _s1(today, 2)))  # the product is gone
    client.delete_object(Bucket=bucket, Key="grd/readme.txt")
    client.delete_object(Bucket=bucket, Key=key(old, _s1(old, 0)))  # in an old folder: unseen until --full
    third = run(store, bucket)
    assert third.manifest is not None and third.report["scan"] == "incremental"
    changes = (third.counts["objects_added"], third.counts["objects_changed"], third.counts["objects_removed"])
    assert changes == (1, 1, 2)
    assert third.counts["products_rebuilt"] == 2 and third.counts["products_deleted"] == 1
    assert third.counts["deleted"] == 1 and third.report["objects"]["carried"] == 3
    items = items_of(store)
    assert _s1(today, 7) in items and _s1(today, 2) not in items and _s1(old, 0) in items
    assert items[_s1(today, 1)]["assets"]["product"]["file:size"] == len(zipped(_s1(today, 1))) + 1
    rows = objects_of(store)
    assert key(today, _s1(today, 2)) not in rows and "grd/readme.txt" not in rows
    assert key(old, _s1(old, 0)) in rows

    full = run(store, bucket, full=True)
    assert full.report["scan"] == "full" and full.counts["objects_removed"] == 1
    assert _s1(old, 0) not in items_of(store) and key(old, _s1(old, 0)) not in objects_of(store)
    con = connect(str(store), version=first.manifest.version if first.manifest else None)
    assert con.execute("SELECT count(*) FROM archive_objects").fetchone() == (7,)  # time travel


def test_a_product_that_loses_its_newest_object_is_rebuilt(
    moto_server: str, bucket: str, corpus: Path, tmp_path: Path
) -> None:
    folder = s2_products(corpus)[0]
    name = safe_name(folder)
    for path, data in safe_files(folder):
        put(bucket, f"incd/{name}/{path}", data)
    put(bucket, f"incd/{name}/GRANULE/late.jp2", b"uploaded last")
    late = backend().get_object(bucket, f"incd/{name}/GRANULE/late.jp2")
    late.last_modified += timedelta(hours=1)  # moto stamps seconds: make it the product's newest for sure
    # the same product also stored zipped elsewhere: one item, both copies' assets
    put(bucket, f"mirror/{name}.zip", zip_safe(folder, name))
    store = tmp_path / "store"
    run(store, bucket)
    item = items_of(store)[name.removesuffix(".SAFE")]
    assert "GRANULE/late.jp2" in item["assets"] and item["assets"]["product"]["href"].endswith(f"mirror/{name}.zip")
    archive_client(workers=1).delete_object(Bucket=bucket, Key=f"incd/{name}/GRANULE/late.jp2")
    result = run(store, bucket, full=True)
    assert result.counts["changed"] == 1 and result.counts["stale"] == 0
    assert "GRANULE/late.jp2" not in items_of(store)[name.removesuffix(".SAFE")]["assets"]


def test_copy_on_write_inventory_parts_and_gc(moto_server: str, bucket: str, tmp_path: Path) -> None:
    day = "2021/08/09"
    for n in range(40):
        put(bucket, f"grd/{day}/{_s1(datetime(2021, 8, 9), n % 24)[:-4]}{n:04X}.SAFE.zip", b"")
    store_path = tmp_path / "store"
    store = Store.open(str(store_path))
    run(store, bucket, metadata=False, part_rows=10)
    before = store.manifest().state[f"archive:{SITE}:s3://{bucket}/"]["parts"]
    assert len(before) == 4 and sum(p["rows"] for p in before) == 40
    victim = sorted(inventory_rows(store_path))[15]  # in the second part
    put(bucket, victim, b"changed")
    run(store, bucket, metadata=False, part_rows=10, full=True)
    after = store.manifest().state[f"archive:{SITE}:s3://{bucket}/"]["parts"]
    assert [p["path"] for p in after if p in before] == [before[i]["path"] for i in (0, 2, 3)]
    assert inventory_rows(store_path)[victim]["size"] == len(b"changed")
    report = store.gc(keep=1, grace_seconds=0)
    assert before[1]["path"] in report.files
    assert {p["path"] for p in after} <= {o.key for o in store.storage.listing("archive/")}
    assert len(inventory_rows(store_path)) == 40


# --- faults -------------------------------------------------------------------------------------------------


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Any:
        yield self.body


def inject_faults(client: Any, *, every: int, limit: int, code: str, status: int) -> list[str]:
    """Answer every `every`-th request (up to `limit`) with an S3 error, before it reaches the server."""
    from botocore.awsrequest import AWSResponse

    seen = [0]
    injected: list[str] = []
    lock = threading.Lock()

    def fault(request: Any, **_: Any) -> Any:
        with lock:
            seen[0] += 1
            if seen[0] % every or len(injected) >= limit:
                return None
            injected.append(request.url)
        body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
        return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))

    client.meta.events.register_first("before-send.s3", fault)
    return injected


def test_slowdown_and_503_give_the_same_index(moto_server: str, bucket: str, corpus: Path, tmp_path: Path) -> None:
    fill_real_products(bucket, corpus)
    clean = run(tmp_path / "clean", bucket)
    client = archive_client(workers=8)
    slow = inject_faults(client, every=7, limit=3, code="SlowDown", status=503)
    unavailable = inject_faults(client, every=3, limit=12, code="ServiceUnavailable", status=503)
    faulty = run(tmp_path / "faulty", bucket, client=client)
    assert len(slow) == 3 and len(unavailable) == 12
    assert any("list-type=2" in url for url in unavailable) and any("list-type" not in url for url in unavailable)
    assert faulty.counts["written"] == clean.counts["written"]
    assert objects_of(tmp_path / "faulty") == objects_of(tmp_path / "clean")
    assert items_of(tmp_path / "faulty") == items_of(tmp_path / "clean")


@pytest.fixture
def locked_bucket(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A moto server that enforces IAM (its own process: the switch is process-wide), holding bucket 'locked',
    and the credentials of a user allowed s3:GetObject but not s3:ListBucket."""
    import boto3
    from botocore.config import Config

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    admin = {"aws_access_key_id": "admin", "aws_secret_access_key": "admin", "region_name": "us-east-1"}
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"}  # the 4 set-up calls below, then IAM rules
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        iam = boto3.client("iam", endpoint_url=endpoint, **admin)
        for _ in range(300):  # the server takes a second or two to start (more on a busy machine)
            try:
                iam.create_user(UserName="reader")
                break
            except Exception:
                time.sleep(0.1)
        config = Config(s3={"addressing_style": "path"})
        boto3.client("s3", endpoint_url=endpoint, config=config, **admin).create_bucket(Bucket="locked")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=orjson.dumps(policy).decode())
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        yield (
            endpoint,
            {
                "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
                "AWS_DEFAULT_REGION": "us-east-1",
                "CSCALE_STORE": str(tmp_path / "store"),
            },
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_bucket_that_refuses_listing(locked_bucket: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    endpoint, env = locked_bucket
    args = ["archive", "index", "s3://locked/", "--site", SITE, "--endpoint-url", endpoint]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 3
    expected = "cannot list s3://locked/: access denied (AccessDenied); check the credentials and bucket policy"
    assert result.stderr == f"cscale: error: {expected}\n"
    assert not (tmp_path / "store" / "CURRENT").exists()


def test_a_missing_bucket(moto_server: str, tmp_path: Path) -> None:
    env = {"CSCALE_STORE": str(tmp_path / "store")}
    result = CliRunner().invoke(cli, ["archive", "index", "s3://no-such-bucket-here/x/", "--site", SITE], env=env)
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr
    client = archive_client(workers=2)
    inject_faults(client, every=1, limit=100, code="AccessDenied", status=403)
    store = Store.open(str(tmp_path / "store"))
    with pytest.raises(ArchiveAccessError, match="cannot list s3://no-such-bucket-here/x/: access denied"):
        index_archive(store, "s3://no-such-bucket-here/x", IndexOptions(site=SITE), client=client)


def test_cli_indexes_and_sql_reads_the_view(moto_server: str, bucket: str, corpus: Path, tmp_path: Path) -> None:
    fill_real_products(bucket, corpus)
    put(bucket, "incd/notes.txt", b"not a product")
    env = {"CSCALE_STORE": str(tmp_path / "store")}
    runner = CliRunner()
    result = runner.invoke(cli, ["archive", "index", f"s3://{bucket}/", "--site", "INCD", "--format", "json"], env=env)
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)[0]
    assert report["committed"] and report["objects_unplaced"] == 1 and report["mode"] == "listing"
    query = "SELECT reason, count(*) AS n FROM archive_objects GROUP BY ALL ORDER BY ALL"
    result = runner.invoke(cli, ["sql", query, "--format", "json"], env=env)
    counts = {row["reason"]: row["n"] for row in orjson.loads(result.stdout)}
    assert counts["not_in_product"] == 1 and counts[None] == report["objects_seen"] - 1
    help_text = runner.invoke(cli, ["archive", "index", "--help"]).stdout
    assert "Exit codes" in help_text and "--inventory" in help_text


# --- Landsat, and what reading a product costs --------------------------------------------------------------


def count_gets(client: Any) -> list[tuple[str, int | None]]:
    """(URL, bytes asked for by its Range, None for a whole object) of every GetObject the client sends."""
    gets: list[tuple[str, int | None]] = []

    def record(request: Any, **_: Any) -> None:
        value = request.headers.get("Range")
        text = value.decode() if isinstance(value, bytes) else value
        if text:
            first, last = text.removeprefix("bytes=").split("-")
            gets.append((request.url, int(last) - int(first) + 1))
        else:
            gets.append((request.url, None))

    client.meta.events.register("before-send.s3.GetObject", record)
    return gets


def test_landsat_tars_and_folders(moto_server: str, bucket: str, corpus: Path, tmp_path: Path) -> None:
    import tarfile

    mtls = {p.name.split("_MTL")[0]: p for p in sorted((corpus / "sentinel/landsat").glob("*/*_MTL.txt"))}
    if len(mtls) < 2:
        pytest.skip("fewer than two Landsat MTL.txt files in this corpus snapshot")
    (tar_id, tar_mtl), (folder_id, folder_mtl) = list(mtls.items())[:2]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:  # a big band first: the MTL is found by seeking
        for name, data in ((f"{tar_id}_SR_B1.TIF", bytes(3_000_000)), (tar_mtl.name, tar_mtl.read_bytes())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    tar_key = f"landsat/{tar_id}.tar"
    put(bucket, tar_key, buffer.getvalue())
    put(bucket, f"landsat/{folder_id}/{folder_mtl.name}", folder_mtl.read_bytes())
    put(bucket, f"landsat/{folder_id}/{folder_id}_SR_B1.TIF", b"tiff")
    client = archive_client(workers=4)
    gets = count_gets(client)
    run(tmp_path / "store", bucket, client=client)
    items = items_of(tmp_path / "store")
    for product_id, mtl in ((tar_id, tar_mtl), (folder_id, folder_mtl)):
        item = items[product_id]
        assert item["collection"] == "landsat-c2-l2" and item["geometry"] is not None
        assert item["properties"]["archive:metadata"] == mtl.name
        assert item["properties"]["datetime"][:10].replace("-", "") == product_id.split("_")[3]
    assert items[folder_id]["assets"][f"{folder_id}_SR_B1.TIF"]["roles"] == ["data"]
    tar_gets = [size for url, size in gets if url.endswith(".tar")]
    assert len(tar_gets) <= 3 and all(size is not None for size in tar_gets)
    assert sum(s or 0 for s in tar_gets) < 300_000  # the tar's 3 MB band was skipped, not downloaded


def test_zipped_metadata_is_read_with_a_few_range_requests(moto_server: str, bucket: str, corpus: Path) -> None:
    from archive.fetch import ProductFile, fetch_metadata

    folder = s1_products(corpus)[0]
    name = safe_name(folder)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(f"{name}/measurement/big.tiff", bytes(4_000_000))  # stored: 4 MB in the middle
        archive.writestr(f"{name}/manifest.safe", (folder / "manifest.safe").read_bytes())
    put(bucket, "p.zip", buffer.getvalue())
    client = archive_client(workers=1)
    gets = count_gets(client)
    result = fetch_metadata(client, bucket, [ProductFile("p.zip", len(buffer.getvalue()), "")], "sentinel-1")
    assert result.metadata is not None and result.path == f"{name}/manifest.safe"
    assert len(gets) <= 4 and all(size is not None for _, size in gets)
    assert sum(size or 0 for _, size in gets) < 300_000  # of a 4 MB zip


def test_a_store_on_s3(moto_server: str, bucket: str, corpus: Path) -> None:
    folder = s1_products(corpus)[0]
    name = safe_name(folder)
    archive = bucket[:40] + "-archive"
    archive_client(workers=1).create_bucket(Bucket=archive)
    put(archive, f"grd/2021/08/09/{name}.zip", zip_safe(folder, name))
    put(archive, "grd/readme.txt", b"v1")
    store = Store.open(f"s3://{bucket}/store")
    first = run(store, archive)
    assert first.manifest is not None and first.counts["written"] == 1
    put(archive, "grd/readme.txt", b"v2")  # the previous inventory parts are read back from S3
    second = run(store, archive, full=True)
    assert second.manifest is not None and second.counts["objects_changed"] == 1
    con = connect(f"s3://{bucket}/store")
    assert con.execute("SELECT count(*), sum(size) FROM archive_objects").fetchone() == (
        2,
        len(zip_safe(folder, name)) + 2,
    )
