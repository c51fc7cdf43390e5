#!/usr/bin/env python3
"""Benchmark the archive indexer's enumeration on moto's S3 server, against a sequential boto3 paginator, in the
same run, on the same bucket.

This is a measurement, not a test: nothing here fails on a slow run. A child process runs moto's
ThreadedMotoServer and fills it through moto's backend API (HTTP puts run at ~200/s), laid out like EODC's and
INCD's archives: Sentinel-1 GRD zips under `s1a_csar_grdh_iw/YYYY/MM/DD/` and Sentinel-2 L2A SAFE folders (20
objects each) under `s2b_msil2a/YYYY/MM/DD/`. It also writes an S3 Inventory report of that bucket (CSV.gz files
+ manifest.json, as AWS writes them) into a second bucket.

Measured, in this process, each against the same server:
- ``paginator``: ``boto3.client('s3').get_paginator('list_objects_v2').paginate(Bucket=...)``, sequential;
- ``listing``: ``archive.listing.list_archive`` (parallel folder discovery and range listing, --workers threads);
- ``inventory``: ``archive.inventory.read_inventory`` (manifest + report files);
then the same three with every S3 response delayed (a botocore ``before-send`` hook sleeping --delay-ms in the
calling thread, like network latency), and finally the whole ``cscale archive index`` (listing and inventory,
without metadata reads: the objects are placeholders) into fresh stores. Every enumeration must give the same key
set as the paginator; the moto process's CPU seconds per phase show how far the server itself is the limit.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BUCKET = "bench-archive"
INVENTORY_BUCKET = "bench-inventory"
SAFE_FILES = 20
TARGETS = {"listing": 2.5, "listing_delayed": 8.0, "inventory_vs_listing": 20.0}


# --- the moto process ---------------------------------------------------------------------------------------


def s1_name(day: date, index: int) -> str:
    start = f"{day:%Y%m%d}T{(index // 3600) % 24:02d}{(index // 60) % 60:02d}{index % 60:02d}"
    stop = start[:-2] + f"{(index + 25) % 60:02d}"
    if stop < start:
        stop = start
    orbit = 30000 + (day - date(2021, 1, 1)).days * 15 + index % 15
    return f"S1A_IW_GRDH_1SDV_{start}_{stop}_{orbit:06d}_{index:06X}_{index % 65536:04X}.SAFE.zip"


TILES = ["33UWP", "32TMT", "31UFU", "30TXN", "29SND", "34VEL", "35WMN", "36RUU"]


def s2_name(day: date, index: int) -> str:
    take = f"{day:%Y%m%d}T{10 + index % 8:02d}{index % 60:02d}{(index * 7) % 60:02d}"
    tile = TILES[index % len(TILES)]
    return f"S2B_MSIL2A_{take}_N0509_R{index % 143 + 1:03d}_T{tile}_{day:%Y%m%d}T{index % 24:02d}0000.SAFE"


def archive_keys(count: int) -> Iterable[str]:
    """Half the objects in S1 zips (one object each), half in S2 SAFE folders (SAFE_FILES each), ~250 S1
    products and ~12 S2 products a day, as in a daily-filled archive."""
    zips, safes = count // 2, (count - count // 2) // SAFE_FILES
    day0 = date(2023, 1, 1)
    for i in range(zips):
        day = day0 + timedelta(days=i // 250)
        yield f"s1a_csar_grdh_iw/{day:%Y/%m/%d}/{s1_name(day, i)}"
    emitted = zips
    for i in range(safes):
        day = day0 + timedelta(days=i // 12)
        name = s2_name(day, i)
        for f in range(SAFE_FILES):
            if emitted >= count:
                return
            inner = "manifest.safe" if f == 0 else f"GRANULE/L2A_T{name[39:44]}/IMG_DATA/B{f:02d}.jp2"
            yield f"s2b_msil2a/{day:%Y/%m/%d}/{name}/{inner}"
            emitted += 1
    while emitted < count:  # the remainder, so the bucket holds exactly `count` objects
        yield f"misc/extra-{emitted:08d}.txt"
        emitted += 1


def moto_process(count: int, ready: Any, stop: Any) -> None:
    """Run moto's server, fill it through the backend API, write an inventory report; wait for `stop`."""
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]  # port 0: the OS picked one
    backend = get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"]
    backend.create_bucket(BUCKET, "us-east-1")
    backend.create_bucket(INVENTORY_BUCKET, "us-east-1")
    started = time.monotonic()
    rows = []
    rng = random.Random(42)
    for key in archive_keys(count):
        stored = backend.put_object(BUCKET, key, rng.randbytes(rng.randrange(0, 64)))
        rows.append((key, stored.size, stored.etag.strip('"'), stored.last_modified_ISO8601))
    fill_seconds = time.monotonic() - started
    _write_inventory(backend, rows)
    ready.put({"port": port, "pid": os.getpid(), "fill_seconds": fill_seconds})
    stop.wait()
    server.stop()


def _write_inventory(backend: Any, rows: list[tuple[str, int, str, str]]) -> None:
    from urllib.parse import quote_plus

    prefix = f"{BUCKET}/daily/2024-01-01T01-00Z"
    files = []
    per_file = 250_000
    for start in range(0, max(len(rows), 1), per_file):
        lines = [
            f'"{BUCKET}","{quote_plus(k)}","{size}","{mtime}","{etag}","STANDARD"\n'
            for k, size, etag, mtime in rows[start : start + per_file]
        ]
        body = gzip.compress("".join(lines).encode(), compresslevel=1)
        key = f"{BUCKET}/daily/data/{start // per_file:04d}.csv.gz"
        backend.put_object(INVENTORY_BUCKET, key, body)
        files.append({"key": key, "size": len(body), "MD5checksum": hashlib.md5(body).hexdigest()})
    manifest = {
        "sourceBucket": BUCKET,
        "destinationBucket": f"arn:aws:s3:::{INVENTORY_BUCKET}",
        "version": "2016-11-30",
        "creationTimestamp": "1704070800000",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass",
        "files": files,
    }
    backend.put_object(INVENTORY_BUCKET, f"{prefix}/manifest.json", json.dumps(manifest).encode())


# --- measurements -------------------------------------------------------------------------------------------


@dataclass
class Measure:
    name: str
    keys: int
    seconds: float
    server_cpu: float

    @property
    def rate(self) -> float:
        return self.keys / self.seconds if self.seconds else 0.0


def delay_hook(client: Any, delay: float) -> None:
    if delay <= 0:
        return

    def sleep(**_: Any) -> None:
        time.sleep(delay)

    client.meta.events.register("before-send.s3", sleep)


def plain_client(endpoint: str, delay: float) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 10}, s3={"addressing_style": "path"})
    client = boto3.client("s3", endpoint_url=endpoint, config=config)
    delay_hook(client, delay)
    return client


def timed(name: str, pid: int, run: Callable[[], set[str] | int]) -> tuple[Measure, set[str]]:
    """Run and time one enumeration (its key set) or index run (its object count), with moto's CPU time."""
    import psutil

    server = psutil.Process(pid)
    cpu0 = sum(server.cpu_times()[:2])
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    keys = result if isinstance(result, set) else set()
    count = len(result) if isinstance(result, set) else result
    return Measure(name, count, seconds, sum(server.cpu_times()[:2]) - cpu0), keys


def paginator_keys(client: Any) -> set[str]:
    keys = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys.update(o["Key"] for o in page.get("Contents", ()))
    return keys


def listing_keys(client: Any, workers: int) -> set[str]:
    from archive.listing import list_archive

    keys: set[str] = set()
    for batch in list_archive(client, BUCKET, "", workers=workers):
        keys.update(batch.column("key").to_pylist())
    return keys


def inventory_keys(client: Any) -> set[str]:
    from archive.inventory import read_inventory, read_manifest

    manifest = read_manifest(client, f"s3://{INVENTORY_BUCKET}/{BUCKET}/daily/")
    keys: set[str] = set()
    for batch in read_inventory(client, manifest, BUCKET, ""):
        keys.update(batch.column("key").to_pylist())
    return keys


def index_run(endpoint: str, store: Path, workers: int, inventory: bool) -> int:
    from archive.index import IndexOptions, index_archive
    from harvester.store import Store

    options = IndexOptions(
        site="BENCH",
        endpoint_url=endpoint,
        workers=workers,
        metadata=False,
        inventory=f"s3://{INVENTORY_BUCKET}/{BUCKET}/daily/" if inventory else None,
    )
    result = index_archive(Store.open(str(store)), f"s3://{BUCKET}/", options)
    return int(result.report["objects"]["seen"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=100_000, help="objects in the bucket (default 100000)")
    parser.add_argument("--workers", type=int, default=16, help="listing threads (default 16)")
    parser.add_argument("--delay-ms", type=float, default=30.0, help="delay per S3 response (default 30)")
    parser.add_argument("--skip-index", action="store_true", help="skip the end-to-end index runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")

    from archive.listing import archive_client

    ctx = mp.get_context("spawn")
    ready, stop = ctx.Queue(), ctx.Event()
    child = ctx.Process(target=moto_process, args=(args.count, ready, stop), daemon=True)
    child.start()
    info = ready.get(timeout=1800)
    endpoint = f"http://127.0.0.1:{info['port']}"
    pid = int(info["pid"])
    print(f"moto on {endpoint}: {args.count:,} objects filled in {info['fill_seconds']:.1f} s (backend API)")
    results: list[Measure] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    try:
        for delay in (0.0, args.delay_ms / 1000):
            suffix = f" +{args.delay_ms:g}ms" if delay else ""
            seq, reference = timed("paginator" + suffix, pid, lambda d=delay: paginator_keys(plain_client(endpoint, d)))
            fast_client = archive_client(endpoint, workers=args.workers)
            delay_hook(fast_client, delay)
            par, listed = timed("listing" + suffix, pid, lambda c=fast_client: listing_keys(c, args.workers))
            inv, inventoried = timed("inventory" + suffix, pid, lambda c=fast_client: inventory_keys(c))
            for m, keys in ((par, listed), (inv, inventoried)):
                if keys != reference:
                    print(f"MISMATCH: {m.name} gave {len(keys):,} keys, {len(keys ^ reference):,} differ")
                    return 1
            results += [seq, par, inv]
        if not args.skip_index:
            for inventory in (False, True):
                name = "index (inventory)" if inventory else "index (listing)"
                store = tmp / name.replace(" ", "_")
                m, _ = timed(name, pid, lambda s=store, i=inventory: index_run(endpoint, s, args.workers, i))
                results.append(m)
    finally:
        stop.set()
        child.join(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\n{'what':<26}{'keys':>10}{'seconds':>10}{'keys/s':>12}{'moto CPU s':>12}")
    for m in results:
        print(f"{m.name:<26}{m.keys:>10,}{m.seconds:>10.2f}{m.rate:>12,.0f}{m.server_cpu:>12.2f}")
    by = {m.name: m for m in results}
    delayed = f" +{args.delay_ms:g}ms"
    ratios = {
        "listing": by["listing"].rate / by["paginator"].rate,
        "listing_delayed": by["listing" + delayed].rate / by["paginator" + delayed].rate,
        "inventory_vs_listing": by["inventory"].rate / by["listing"].rate,
    }
    print()
    for key, value in ratios.items():
        print(f"{key:<24} {value:6.1f}x   (target {TARGETS[key]:g}x)")
    ceiling = by["paginator"].seconds / max(by["paginator"].server_cpu, 1e-9)
    print(
        f"\nmoto's own CPU per key caps any client: the paginator spent {by['paginator'].server_cpu:.1f} of its "
        f"{by['paginator'].seconds:.1f} s waiting on moto's CPU, so no client can list more than {ceiling:.1f}x "
        "faster against one moto process."
    )
    if args.json:
        body = {
            "count": args.count,
            "workers": args.workers,
            "delay_ms": args.delay_ms,
            "results": [m.__dict__ | {"keys_per_s": m.rate} for m in results],
            "ratios": ratios,
        }
        args.json.write_text(json.dumps(body, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
