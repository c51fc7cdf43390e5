"""Indexing from an S3 Inventory report (manifest.json + CSV.gz or Parquet files, as AWS writes them) instead of
listing: the same index, incremental by report, and clear errors for reports that cannot be trusted."""

from __future__ import annotations

import gzip
import hashlib
import io
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from test_archive_index import SITE, fill_real_products, items_of, objects_of, run
from test_archive_metadata import put

from archive.errors import ArchiveError
from archive.listing import archive_client
from harvester.cli import cli

CONFIG = "daily"


def listed(bucket: str) -> list[dict[str, Any]]:
    client = archive_client(workers=2)
    rows = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        rows.extend(page.get("Contents", ()))
    return rows


def write_report(
    bucket: str,
    inventory: str,
    stamp: str,
    *,
    fmt: str = "CSV",
    extra_rows: list[dict[str, Any]] | None = None,
    corrupt: bool = False,
) -> str:
    """An S3 Inventory report of `bucket` (what a listing returns now) into `inventory`; returns the manifest URL."""
    objects = listed(bucket)
    versioned = extra_rows is not None
    records = [
        {
            "bucket": bucket,
            "key": o["Key"],
            "version_id": "v1",
            "is_latest": True,
            "is_delete_marker": False,
            "size": int(o["Size"]),
            "last_modified_date": o["LastModified"],
            "e_tag": o["ETag"].strip('"'),
            "storage_class": o.get("StorageClass", "STANDARD"),
        }
        for o in objects
    ] + (extra_rows or [])
    base = f"{bucket}/{CONFIG}"
    if fmt == "CSV":
        fields = ["Bucket", "Key"] + (["VersionId", "IsLatest", "IsDeleteMarker"] if versioned else [])
        fields += ["Size", "LastModifiedDate", "ETag", "StorageClass"]
        lines = []
        for r in records:
            values = [r["bucket"], quote_plus(r["key"])]
            if versioned:
                values += [r["version_id"], str(r["is_latest"]).lower(), str(r["is_delete_marker"]).lower()]
            size = "" if r["size"] is None else str(r["size"])  # delete markers have no size
            values += [size, r["last_modified_date"], r["e_tag"], r["storage_class"]]
            lines.append(",".join(f'"{v}"' for v in values))
        body = gzip.compress(("\n".join(lines) + "\n").encode())
        name, schema = f"{base}/data/0001.csv.gz", ", ".join(fields)
    else:
        table = pa.Table.from_pylist(records)
        table = table.set_column(
            table.schema.get_field_index("last_modified_date"),
            "last_modified_date",
            table.column("last_modified_date").cast(pa.timestamp("ms", tz="UTC")),
        )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        body, name, schema = sink.getvalue(), f"{base}/data/0001.parquet", "message s3.inventory { ... }"
    put(inventory, name, body)
    md5 = hashlib.md5(body).hexdigest()
    manifest = {
        "sourceBucket": bucket,
        "destinationBucket": f"arn:aws:s3:::{inventory}",
        "version": "2016-11-30",
        "creationTimestamp": stamp,
        "fileFormat": fmt,
        "fileSchema": schema,
        "files": [{"key": name, "size": len(body), "MD5checksum": "0" * 32 if corrupt else md5}],
    }
    folder = f"{base}/2024-01-{int(stamp) % 28 + 1:02d}T01-00Z"
    put(inventory, f"{folder}/manifest.json", orjson.dumps(manifest))
    return f"s3://{inventory}/{folder}/manifest.json"


@pytest.fixture
def inventory_bucket(bucket: str) -> str:
    name = bucket[:40] + "-inv"
    archive_client(workers=1).create_bucket(Bucket=name)
    return name


ODD_KEYS = (
    "incd/odd names/a+b ü %20.zip",
    "incd/odd names/S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_0BAD.zip",
)


@pytest.mark.parametrize("fmt", ["CSV", "Parquet"])
def test_inventory_gives_the_same_index_as_listing(
    moto_server: str, bucket: str, inventory_bucket: str, corpus: Path, tmp_path: Path, fmt: str
) -> None:
    fill_real_products(bucket, corpus)
    for key in ODD_KEYS:  # spaces, '+', '%', unicode: URL-encoded in CSV reports
        put(bucket, key, b"")
    listing = run(tmp_path / "listing", bucket)
    manifest = write_report(bucket, inventory_bucket, "1704070800000", fmt=fmt)
    inventory = run(tmp_path / "inventory", bucket, inventory=manifest)
    assert inventory.report["mode"] == "inventory" and "listing" not in inventory.report
    assert inventory.counts["written"] == listing.counts["written"]
    assert objects_of(tmp_path / "inventory") == objects_of(tmp_path / "listing")
    assert items_of(tmp_path / "inventory") == items_of(tmp_path / "listing")


def test_inventory_runs_are_incremental_by_report(
    moto_server: str, bucket: str, inventory_bucket: str, corpus: Path, tmp_path: Path
) -> None:
    products = fill_real_products(bucket, corpus)
    store = tmp_path / "store"
    folder = f"s3://{inventory_bucket}/{bucket}/{CONFIG}/"
    write_report(bucket, inventory_bucket, "1704070800000")
    first = run(store, bucket, inventory=folder)  # the configuration's folder: its newest report
    assert first.counts["written"] == len(products)
    assert run(store, bucket, inventory=folder).manifest is None  # the same report again: nothing to do

    gone = next(k for k in objects_of(store) if k.endswith(".SAFE.zip"))
    archive_client(workers=1).delete_object(Bucket=bucket, Key=gone)
    deleted_marker = {
        "bucket": bucket,
        "key": gone,
        "version_id": "v2",
        "is_latest": True,
        "is_delete_marker": True,
        "size": None,
        "last_modified_date": "2024-01-02T00:00:00.000Z",
        "e_tag": "",
        "storage_class": "",
    }
    old_version = {**deleted_marker, "version_id": "v1", "is_latest": False, "is_delete_marker": False, "size": 5}
    write_report(bucket, inventory_bucket, "1704157200000", extra_rows=[deleted_marker, old_version])
    second = run(store, bucket, inventory=folder)
    assert second.manifest is not None and second.counts["objects_removed"] == 1
    assert second.counts["products_deleted"] == 1 and second.counts["deleted"] == 1
    assert gone not in objects_of(store) and len(items_of(store)) == len(products) - 1


def test_untrustworthy_reports_are_refused(
    moto_server: str, bucket: str, inventory_bucket: str, tmp_path: Path
) -> None:
    put(bucket, "a/S1A_IW_GRDH_1SDV_20210809T173953_20210809T174018_039156_049F13_6FF8.zip", b"")
    manifest = write_report(bucket, inventory_bucket, "1704070800000", corrupt=True)
    with pytest.raises(ArchiveError, match="does not match the MD5"):
        run(tmp_path / "store", bucket, inventory=manifest)
    archive_client(workers=1).create_bucket(Bucket=bucket[:40] + "-other")
    with pytest.raises(ArchiveError, match="lists bucket"):
        run(tmp_path / "store", bucket[:40] + "-other", inventory=manifest)
    env = {"CSCALE_STORE": str(tmp_path / "store")}
    args = ["archive", "index", f"s3://{bucket}/", "--site", SITE, "--inventory", f"s3://{inventory_bucket}/nothing/"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 3 and result.stderr.count("\n") == 1 and "no dated inventory report" in result.stderr
