"""Listing an S3 archive in parallel (I/O edge).

The archive's folders (product types, years, months, days) are discovered level by level with Delimiter
listings, side by side in a thread pool, until there are enough folders to keep the threads busy; then runs of
sibling folders are listed flat as key ranges (StartAfter ... stop). Pages stay full, so the listing makes about
as many requests as a plain paginator (one per 1000 objects) plus one per folder walked, but many at a time.
Product folders (`.SAFE/`, `.SEN3/`, Landsat folders) are never walked into: a run of them is one range.

The client comes in from the caller (so tests can hook botocore events into it); `archive_client` builds one with
standard retries and a raw timestamp parser: botocore turns every LastModified into a datetime through dateutil,
which costs more than the rest of parsing a page; Arrow parses the strings later, in bulk.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa

from archive.errors import archive_error
from archive.grouping import is_product_folder

log = logging.getLogger(__name__)

OBJECT_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
        ("storage_class", pa.string()),
    ]
)
PRODUCTS_PER_RANGE = 16  # product folders per range at least (~20-100 objects each: 1-2 pages a range)


def archive_client(endpoint_url: str | None = None, *, workers: int = 16) -> Any:
    """A boto3 S3 client for reading an archive: standard retries, a connection per worker, raw timestamps."""
    import boto3
    import botocore.session
    from botocore.config import Config

    endpoint_url = endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None
    session = botocore.session.Session()
    session.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_raw_timestamp)
    config = Config(
        retries={"mode": "standard", "max_attempts": 10},
        max_pool_connections=workers + 4,
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return boto3.Session(botocore_session=session).client("s3", endpoint_url=endpoint_url, config=config)


def _raw_timestamp(value: str) -> str:
    return value


@dataclass(slots=True)
class ObjectColumns:
    """A batch of listed objects, column-wise (cheap to build, one Arrow batch at the end)."""

    keys: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    etags: list[str] = field(default_factory=list)
    modified: list[str | None] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

    def add(self, obj: dict[str, Any]) -> None:
        self.keys.append(obj["Key"])
        self.sizes.append(int(obj.get("Size", 0)))
        self.etags.append(str(obj.get("ETag", "")).strip('"'))
        modified = obj.get("LastModified")  # a string from archive_client, a datetime from a default client
        self.modified.append(modified if isinstance(modified, str) else modified.isoformat() if modified else None)
        self.classes.append(obj.get("StorageClass") or "STANDARD")

    def __len__(self) -> int:
        return len(self.keys)

    def to_batch(self) -> pa.RecordBatch:
        return pa.record_batch(
            [
                pa.array(self.keys, pa.string()),
                pa.array(self.sizes, pa.int64()),
                pa.array(self.etags, pa.string()),
                pa.array(self.modified, pa.string()).cast(pa.timestamp("us", tz="UTC")),
                pa.array(self.classes, pa.string()),
            ],
            schema=OBJECT_SCHEMA,
        )


@dataclass(frozen=True, slots=True)
class _Task:
    prefix: str
    delimited: bool  # a folder listing (Delimiter='/') or a flat key range
    start_after: str = ""  # range: keys after this ...
    stop: str = ""  # ... up to the keys under this folder (inclusive)
    members: frozenset[str] = frozenset()  # range: the folders it covers (other keys met on the way are skipped)
    token: str = ""  # continuation of a truncated page


@dataclass(slots=True)
class _Page:
    task: _Task
    objects: ObjectColumns
    folders: list[str]
    token: str  # '' when the listing is complete
    past_stop: bool


@dataclass(slots=True)
class ListingStats:
    requests: int = 0
    folders: int = 0
    ranges: int = 0
    objects: int = 0
    skipped: list[str] = field(default_factory=list)  # folders not listed (pruned by `descend`)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_request(self) -> None:
        with self._lock:
            self.requests += 1

    def as_dict(self) -> dict[str, int]:
        return {
            "requests": self.requests,
            "folders": self.folders,
            "ranges": self.ranges,
            "objects": self.objects,
            "folders_skipped": len(self.skipped),
        }


def list_archive(
    client: Any,
    bucket: str,
    prefix: str,
    *,
    workers: int = 16,
    descend: Callable[[str], bool] | None = None,
    stats: ListingStats | None = None,
) -> Iterator[pa.RecordBatch]:
    """Every object under `prefix`, as Arrow batches (OBJECT_SCHEMA), in no particular order.

    Folders are discovered level by level (Delimiter listings, in parallel) until a level holds at least
    `workers` folders; that level is then listed as about 2 x `workers` flat key ranges, each covering a run of
    sibling folders, so pages stay full (one request per 1000 objects, as a plain paginator) while the ranges run
    side by side. Product folders are never walked into. `descend(folder)` may return False for a folder that
    need not be listed this run (incremental runs skip date folders older than the last run); such folders end
    up in `stats.skipped`.
    """
    stats = stats if stats is not None else ListingStats()
    descend = descend or (lambda _: True)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="s3-list") as pool:
        pending: set[Future[_Page]] = set()
        level: dict[str, list[str]] = {}  # folders being walked at this level -> their child folders
        walking = 0  # delimited requests of this level still out

        def submit(task: _Task) -> None:
            nonlocal walking
            walking += task.delimited
            pending.add(pool.submit(_list_page, client, bucket, task, stats))

        def walk(folders: list[str]) -> None:
            for folder in folders:
                level[folder] = []
                stats.folders += 1
                submit(_Task(folder, delimited=True))

        walk([prefix])
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.discard(future)
                    page = future.result()
                    task = page.task
                    walking -= task.delimited
                    if page.objects:
                        stats.objects += len(page.objects)
                        yield page.objects.to_batch()
                    if page.token and not page.past_stop:
                        submit(replace(task, token=page.token))
                    if task.delimited:
                        level[task.prefix].extend(page.folders)
                if walking == 0 and level:
                    deeper = _next_level(level, workers, descend, stats, submit)
                    level = {}
                    walk(deeper)
        finally:
            for future in pending:
                future.cancel()


def _next_level(
    level: dict[str, list[str]],
    workers: int,
    descend: Callable[[str], bool],
    stats: ListingStats,
    submit: Callable[[_Task], None],
) -> list[str]:
    """Decide, once a level is walked: walk its child folders (too few to keep the workers busy) or list them
    as key ranges. Product folders are always listed as ranges. Returns the folders to walk next."""
    kept = {parent: [f for f in children if descend(f)] for parent, children in level.items()}
    for children in level.values():
        stats.skipped.extend(f for f in children if not descend(f))
    total = sum(len(c) for c in kept.values())
    walkable = [f for c in kept.values() for f in c if not is_product_folder(f)]
    go_deeper = bool(walkable) and total < workers
    size = max(1, -(-total // (2 * workers)))  # folders per range: about 2 ranges per worker
    for parent, children in level.items():
        runs: list[list[str]] = [[]]
        for folder in children:
            if not descend(folder) or (go_deeper and not is_product_folder(folder)):
                runs.append([])  # skipped or walked: breaks the run of listed siblings
            else:
                runs[-1].append(folder)
        for run in runs:
            per = max(size, PRODUCTS_PER_RANGE) if all(is_product_folder(f) for f in run) else size
            for start in range(0, len(run), per):
                chunk = run[start : start + per]
                stats.ranges += 1
                # StartAfter is exclusive: a folder's name without its '/' sorts before every key inside it
                submit(_Task(parent, False, chunk[0][:-1], chunk[-1], frozenset(chunk)))
    log.debug("level of %d folders: %s", total, "walking deeper" if go_deeper else f"{stats.ranges} ranges so far")
    return walkable if go_deeper else []


def _list_page(client: Any, bucket: str, task: _Task, stats: ListingStats) -> _Page:
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": task.prefix, "MaxKeys": 1000}
    if task.delimited:
        params["Delimiter"] = "/"
    if task.token:
        params["ContinuationToken"] = task.token
    elif task.start_after:
        params["StartAfter"] = task.start_after
    stats.count_request()
    try:
        response = client.list_objects_v2(**params)
    except Exception as exc:  # botocore raises ClientError / BotoCoreError after its retries
        raise archive_error(exc, f"list s3://{bucket}/{task.prefix}") from None
    objects = ObjectColumns()
    past_stop = False
    cut = len(task.prefix)
    for obj in response.get("Contents", ()):
        key = obj["Key"]
        if task.members:
            if key > task.stop and not key.startswith(task.stop):
                past_stop = True
                break
            slash = key.find("/", cut)
            # a key of the folder itself, or of a sibling sorting inside the range ('X.old/' before 'X/')
            if slash < 0 or key[: slash + 1] not in task.members:
                continue
        objects.add(obj)
    folders = [p["Prefix"] for p in response.get("CommonPrefixes", ())]
    token = response.get("NextContinuationToken", "") if response.get("IsTruncated") else ""
    return _Page(task, objects, folders, token, past_stop)


def check_listable(client: Any, bucket: str, prefix: str) -> None:
    """Fail early, with one clear line, when the archive bucket cannot be listed."""
    try:
        client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    except Exception as exc:
        raise archive_error(exc, f"list s3://{bucket}/{prefix}") from None
