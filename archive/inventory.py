"""Reading an S3 Inventory report instead of listing (I/O edge).

S3 Inventory writes, per day or week, a `manifest.json` naming the report files (CSV.gz, Parquet or ORC) that
together list every object of the source bucket. Reading them is a few large GETs and a columnar parse, so an
archive of hundreds of millions of objects is enumerated in minutes instead of the hours a listing takes.

`--inventory` takes the manifest (`s3://inventory/source-bucket/config/2024-01-01T01-00Z/manifest.json`) or the
configuration's folder, in which case the newest dated manifest under it is used. Each file's MD5 is checked
against the manifest. CSV keys are URL-encoded by S3 (`+` for a space, `%xx` otherwise) and are decoded;
versioned reports keep only the latest, non-deleted version of each key.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import re
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus, urlparse

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from archive.errors import ArchiveError, archive_error
from archive.listing import OBJECT_SCHEMA

# CSV header names (from fileSchema) → the Parquet/ORC column names S3 uses for the same fields
_FIELDS = {
    "Bucket": "bucket",
    "Key": "key",
    "VersionId": "version_id",
    "IsLatest": "is_latest",
    "IsDeleteMarker": "is_delete_marker",
    "Size": "size",
    "LastModifiedDate": "last_modified_date",
    "ETag": "e_tag",
    "StorageClass": "storage_class",
}
_DATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d-\d\dZ/$")


@dataclass(frozen=True, slots=True)
class InventoryManifest:
    url: str  # s3://bucket/key of manifest.json
    source_bucket: str
    destination_bucket: str
    file_format: str  # CSV | Parquet | ORC
    schema: list[str]  # CSV column names (empty for Parquet/ORC: the files carry their schema)
    files: list[dict[str, Any]]
    created: str  # creationTimestamp (ms since the epoch, as a string)
    etag: str

    def as_state(self) -> dict[str, str]:
        return {"manifest": self.url, "created": self.created, "etag": self.etag}


def read_manifest(client: Any, location: str) -> InventoryManifest:
    """The manifest at `location` (a manifest.json, or a configuration folder: its newest dated manifest)."""
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ArchiveError(f"--inventory must be s3://bucket/.../manifest.json, not {location!r}")
    bucket, key = parsed.netloc, parsed.path.lstrip("/")
    if not key.endswith("manifest.json"):
        key = _newest_manifest(client, bucket, key.rstrip("/") + "/" if key else "")
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        data = response["Body"].read()
    except Exception as exc:
        raise archive_error(exc, f"read the inventory manifest s3://{bucket}/{key}") from None
    try:
        body = orjson.loads(data)
        fmt = str(body["fileFormat"])
        files = list(body["files"])
        source = str(body["sourceBucket"])
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ArchiveError(f"s3://{bucket}/{key} is not an S3 Inventory manifest: {exc}") from None
    if fmt not in ("CSV", "Parquet", "ORC"):
        raise ArchiveError(f"unsupported S3 Inventory format {fmt!r} in s3://{bucket}/{key}")
    destination = str(body.get("destinationBucket") or bucket).rsplit(":", 1)[-1]
    schema = [c.strip() for c in str(body.get("fileSchema", "")).split(",")] if fmt == "CSV" else []
    if fmt == "CSV" and not {"Bucket", "Key"} <= set(schema):
        raise ArchiveError(f"inventory schema {body.get('fileSchema')!r} lacks Bucket or Key")
    return InventoryManifest(
        url=f"s3://{bucket}/{key}",
        source_bucket=source,
        destination_bucket=destination,
        file_format=fmt,
        schema=schema,
        files=files,
        created=str(body.get("creationTimestamp", "")),
        etag=str(response.get("ETag", "")).strip('"'),
    )


def _newest_manifest(client: Any, bucket: str, prefix: str) -> str:
    folders: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            folders.extend(p["Prefix"] for p in page.get("CommonPrefixes", ()) if _DATED.search(p["Prefix"]))
    except Exception as exc:
        raise archive_error(exc, f"list inventory reports under s3://{bucket}/{prefix}") from None
    if not folders:
        raise ArchiveError(f"no dated inventory report (YYYY-MM-DDTHH-MMZ/manifest.json) under s3://{bucket}/{prefix}")
    return max(folders) + "manifest.json"


def read_inventory(
    client: Any, manifest: InventoryManifest, bucket: str, prefix: str, *, workers: int = 4
) -> Iterator[pa.RecordBatch]:
    """The objects of `bucket` under `prefix` the report lists, as OBJECT_SCHEMA batches (files fetched in
    parallel, parsed in order)."""
    if manifest.source_bucket != bucket:
        raise ArchiveError(
            f"inventory {manifest.url} lists bucket {manifest.source_bucket!r}, not the archive bucket {bucket!r}"
        )
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="s3-inventory") as pool:
        pending: deque[Future[pa.Table]] = deque()
        files = iter(manifest.files)
        while True:
            # a window of `workers` files in flight: reports of big buckets have hundreds of files
            for entry in itertools.islice(files, max(1, workers) - len(pending)):
                pending.append(pool.submit(_read_file, client, manifest, entry))
            if not pending:
                return
            table = pending.popleft().result()
            objects = _objects(table, bucket, prefix, decode=manifest.file_format == "CSV")
            yield from objects.to_batches(max_chunksize=100_000)


def _read_file(client: Any, manifest: InventoryManifest, entry: dict[str, Any]) -> pa.Table:
    key = str(entry.get("key", ""))
    where = f"s3://{manifest.destination_bucket}/{key}"
    try:
        data = client.get_object(Bucket=manifest.destination_bucket, Key=key)["Body"].read()
    except Exception as exc:
        raise archive_error(exc, f"read the inventory file {where}") from None
    expected = str(entry.get("MD5checksum", "")).lower()
    if expected and hashlib.md5(data, usedforsecurity=False).hexdigest() != expected:
        raise ArchiveError(f"inventory file {where} does not match the MD5 in its manifest (truncated or replaced?)")
    try:
        if manifest.file_format == "CSV":
            return _read_csv(data, manifest.schema)
        if manifest.file_format == "Parquet":
            return pq.read_table(io.BytesIO(data))
        import pyarrow.orc as orc

        return orc.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"inventory file {where} cannot be read: {str(exc).splitlines()[0]}") from None


def _read_csv(data: bytes, schema: list[str]) -> pa.Table:
    names = [_FIELDS.get(c, c) for c in schema]
    wanted = [n for n in names if n in _FIELDS.values()]
    types = {"size": pa.int64(), "key": pa.string(), "bucket": pa.string(), "e_tag": pa.string()}
    stream = pa.input_stream(pa.BufferReader(data), compression="gzip" if data[:2] == b"\x1f\x8b" else None)
    return pacsv.read_csv(
        stream,
        read_options=pacsv.ReadOptions(column_names=names, block_size=16 << 20),
        convert_options=pacsv.ConvertOptions(
            include_columns=wanted,
            column_types={k: v for k, v in types.items() if k in wanted},
            strings_can_be_null=False,
            true_values=["true", "TRUE", "True"],
            false_values=["false", "FALSE", "False"],
        ),
    )


def _objects(table: pa.Table, bucket: str, prefix: str, *, decode: bool) -> pa.Table:
    columns = set(table.column_names)
    if not {"bucket", "key", "size"} <= columns:
        raise ArchiveError(f"inventory files lack Bucket, Key or Size (columns: {sorted(columns)})")
    keep = pc.equal(table.column("bucket"), bucket)
    if "is_latest" in columns:
        keep = pc.and_(keep, pc.fill_null(table.column("is_latest"), True))
    if "is_delete_marker" in columns:
        keep = pc.and_(keep, pc.invert(pc.fill_null(table.column("is_delete_marker"), False)))
    table = table.filter(keep)
    keys = table.column("key")
    if decode:
        keys = _decode_keys(keys)
    if prefix:
        keep = pc.starts_with(keys, prefix)
        table, keys = table.filter(keep), keys.filter(keep)
    n = table.num_rows
    modified = table.column("last_modified_date") if "last_modified_date" in columns else pa.nulls(n)
    return pa.table(
        [
            keys,
            pc.fill_null(table.column("size"), 0).cast(pa.int64()),
            _column(table, "e_tag", n),
            pc.cast(modified, pa.timestamp("us", tz="UTC")),
            pc.fill_null(_column(table, "storage_class", n), "STANDARD"),
        ],
        schema=OBJECT_SCHEMA,
    )


def _column(table: pa.Table, name: str, n: int) -> pa.ChunkedArray | pa.Array:
    return table.column(name).cast(pa.string()) if name in table.column_names else pa.nulls(n, pa.string())


def _decode_keys(keys: pa.ChunkedArray) -> pa.ChunkedArray:
    """URL-decoded keys: '%2F' (every '/') in bulk, the rare others ('+', '%20', '%C3%BC') key by key."""
    keys = pc.replace_substring(pc.replace_substring(keys, "%2F", "/"), "%2f", "/")  # '%' itself is '%25'
    encoded = pc.match_substring_regex(keys, r"[%+]")
    if not pc.any(encoded).as_py():
        return keys
    values = keys.to_pylist()
    flags = encoded.to_pylist()
    return pa.chunked_array([pa.array([unquote_plus(v) if f else v for v, f in zip(values, flags, strict=True)])])
