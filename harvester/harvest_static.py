"""`cscale harvest static`: a static STAC catalog (file, http(s), s3) → one new snapshot version, incrementally
and resumably.

1. The previous crawl's per-document state (href → validators, content hash, links, item ids) is a Parquet file
   under `state/` that the manifest names (gc keeps it); it is looked up by 64-bit URL keys, not held as dicts.
2. The crawl (harvester.static_crawl) reads documents in worker processes that also normalise the items and
   write them as staged runs; every settled document goes to a journal in the work folder *before* the run
   holding its records is attached to the persistent stage next to the journal.
3. The new state is the journal, plus, below documents that failed this time (anything but a definite 404),
   what the previous crawl knew — a failure is not a deletion. Item ids the previous state had and the new one
   lacks are deleted. State, deletions, collections and the run report are committed with the records.

A run that is killed leaves journal and stage behind. The next run with the same provider, root and options, on
top of the same committed state, keeps every journalled document whose records are all staged, reads only what
is left, and commits what an uninterrupted run would have. `--restart` throws the leftovers away instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.cli import (
    EXIT_CODES,
    MAX_QUARANTINED,
    format_option,
    quarantine_exit,
    report_run,
    run_safely,
    store_option,
)
from harvester.commit import CommitRequest, CommitResult, commit_stage
from harvester.errors import InputError
from harvester.http import HttpOptions
from harvester.manifest import Manifest
from harvester.records import DEFAULT_MAX_ITEM_BYTES
from harvester.sources_static import (
    FAILURES,
    CrawlOptions,
    PrevDoc,
    Resume,
    Validators,
    allow_prefix,
    default_prefix,
    describe,
    root_url,
    url_key,
)
from harvester.staging import Stage
from harvester.static_crawl import Crawler
from harvester.static_workers import Workers
from harvester.storage import LocalStorage
from harvester.store import Store

log = logging.getLogger(__name__)
JOURNAL_FORMAT = 1
MAX_EXAMPLES = 20

STATE_SCHEMA = pa.schema(
    [
        ("key", pa.uint64()),
        ("href", pa.string()),
        ("kind", pa.string()),  # catalog | collection | itemcollection | item | container (never read)
        ("status", pa.string()),  # ok | not_found | too_large | failed | invalid_json | not_stac
        ("etag", pa.string()),
        ("last_modified", pa.string()),
        ("mtime_ns", pa.int64()),
        ("size", pa.int64()),
        ("content_hash", pa.string()),
        ("child_links", pa.list_(pa.string())),
        ("item_links", pa.list_(pa.string())),
        ("item_ids", pa.list_(pa.string())),
        ("retain", pa.bool_()),  # kept from an earlier crawl because reading it (or above it) failed
    ]
)


@dataclass(frozen=True, slots=True)
class StaticOptions:
    provider: str
    root: str  # as given: path, file://, http(s)://, s3://
    allow: tuple[str, ...] = ()  # extra prefixes besides the root's own folder
    concurrency: int = 16
    workers: int = 0  # processes that fetch, parse and normalise; 0: one per CPU; 1: a thread of this process
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    max_document_bytes: int = 64 << 20
    workdir: Path | None = None
    force: bool = False
    restart: bool = False
    http: HttpOptions = field(default_factory=HttpOptions)


@dataclass(frozen=True, slots=True)
class StaticResult:
    commit: CommitResult
    report: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        return self.commit.counts


def state_key(provider: str, root: str) -> str:
    return f"static:{provider}:{root}"


def default_workdir(store: Store) -> Path:
    """A local store keeps its work folder inside (`.cache/`, which gc never touches); an S3 store uses the
    user's cache folder."""
    if isinstance(store.storage, LocalStorage):
        return store.storage.root / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cscale"


# --------------------------------------------------------------------------------------- previous state


class PreviousState:
    """The previous crawl's documents, looked up by URL through a sorted array of 64-bit keys."""

    def __init__(self, table: pa.Table | None) -> None:
        table = table if table is not None else STATE_SCHEMA.empty_table()
        self.table = table.combine_chunks()
        keys = self.table.column("key").to_numpy()
        self.order = np.argsort(keys, kind="stable")
        self.keys = keys[self.order]
        self.columns = {name: self.table.column(name) for name in STATE_SCHEMA.names}

    def __len__(self) -> int:
        return int(self.table.num_rows)

    def get(self, url: str) -> PrevDoc | None:
        key = np.uint64(url_key(url))
        i = int(np.searchsorted(self.keys, key))
        if i >= len(self.keys) or self.keys[i] != key:
            return None
        row = int(self.order[i])
        c = self.columns
        if c["href"][row].as_py() != url:
            return None  # a 64-bit collision: treat as new
        return PrevDoc(
            kind=c["kind"][row].as_py(),
            status=c["status"][row].as_py(),
            validators=Validators(
                etag=c["etag"][row].as_py(),
                last_modified=c["last_modified"][row].as_py(),
                mtime_ns=c["mtime_ns"][row].as_py(),
                size=c["size"][row].as_py(),
            ),
            content_hash=c["content_hash"][row].as_py(),
            child_links=tuple(c["child_links"][row].as_py() or ()),
            item_links=tuple(c["item_links"][row].as_py() or ()),
            item_ids=tuple(c["item_ids"][row].as_py() or ()),
        )


def _load_previous(store: Store, value: Any, folder: Path) -> Path | None:
    """A local copy of the previous state file (DuckDB and pyarrow read it from there)."""
    if not isinstance(value, dict) or not value.get("files"):
        return None
    data = store.storage.read(str(value["files"][0]))
    if data is None:
        log.warning("state file %s is missing; crawling as if for the first time", value["files"][0])
        return None
    path = folder / "previous-state.parquet"
    path.write_bytes(data)
    return path


# ----------------------------------------------------------------------------------------------- journal


class Journal:
    """Append-only NDJSON: a header, then one line per settled document. Lines reach the OS before the records
    read from their documents are staged, so after a kill every staged record has its document's line."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "journal.ndjson"
        self._fd: int | None = None

    def header(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as handle:
                first = handle.readline()
            header = orjson.loads(first)
            return header if isinstance(header, dict) else None
        except (OSError, orjson.JSONDecodeError):
            return None

    def lines(self) -> Iterator[dict[str, Any]]:
        """Every complete line after the header (a kill may have torn the last one)."""
        with open(self.path, "rb") as handle:
            handle.readline()
            for raw in handle:
                if not raw.endswith(b"\n"):
                    return
                try:
                    yield orjson.loads(raw)
                except orjson.JSONDecodeError:
                    return

    def start(self, header: dict[str, Any], lines: Iterable[dict[str, Any]] = ()) -> None:
        """A fresh journal holding `header` and `lines` (a compacted earlier one), then open for appending."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(orjson.dumps(header) + b"\n")
            for line in lines:
                handle.write(orjson.dumps(line) + b"\n")
        os.replace(tmp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def write(self, lines: list[dict[str, Any]]) -> None:
        assert self._fd is not None
        data = memoryview(b"".join(orjson.dumps(line) + b"\n" for line in lines))
        while data:  # unbuffered: what is written survives a kill of this process
            data = data[os.write(self._fd, data) :]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def _locked(folder: Path, what: str) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another harvest of {what} is running (work folder {folder})") from None
        yield


# ---------------------------------------------------------------------------------------------- reporting


@dataclass
class Tally:
    """The crawl part of the run report, built from journal lines (so a resumed run reports like a whole one)."""

    provider: str
    root: str
    documents: Counter[str] = field(default_factory=Counter)  # by kind
    statuses: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # outside_root | loop | duplicate
    failures: list[dict[str, Any]] = field(default_factory=list)
    skipped_examples: list[dict[str, Any]] = field(default_factory=list)
    collections: dict[str, Any] = field(default_factory=dict)
    bytes: int = 0
    invalid_links: int = 0
    root_line: dict[str, Any] | None = None
    total: int = 0
    same: int = 0  # documents as committed before: not modified, the same bytes, or failing the same way
    read: int = 0  # documents read whole this run

    def add(self, line: dict[str, Any]) -> None:
        status = line["status"]
        self.total += 1
        if status in ("ok", "invalid_json", "not_stac"):
            self.read += 1
        if status == "unchanged" or line.get("same"):
            self.same += 1
        if status == "unchanged" and line.get("prev_status") in FAILURES:
            status = line["prev_status"]  # the same broken bytes as last time: still a failure
        self.documents[line["kind"]] += 1
        self.statuses[status] += 1
        if status not in ("unchanged",) and line.get("size"):
            self.bytes += int(line["size"])
        self.invalid_links += int(line.get("invalid_links", 0))
        if line["href"] == self.root:
            self.root_line = {"status": status, "message": line.get("message"), "kind": line.get("kind")}
        if status in FAILURES and len(self.failures) < MAX_EXAMPLES:
            self.failures.append(
                {
                    "href": describe(line["href"]),
                    "reason": status,
                    "message": line.get("message"),
                    "linked_from": describe(line["parent"]) if line.get("parent") else None,
                }
            )
        for target, reason in line.get("skipped", ()):
            self.skipped[reason] += 1
            if len(self.skipped_examples) < MAX_EXAMPLES:
                self.skipped_examples.append(
                    {"href": describe(target), "reason": reason, "linked_from": describe(line["href"])}
                )
        collection = line.get("collection")
        if isinstance(collection, dict) and isinstance(collection.get("id"), str):
            self.collections[f"{self.provider}|{collection['id']}"] = collection

    def report(self) -> dict[str, Any]:
        failed = sum(self.statuses[s] for s in FAILURES)
        return {
            "documents": sum(self.documents.values()),
            "documents_by_kind": dict(sorted(self.documents.items())),
            "fetched": self.read,
            "unchanged": self.statuses["unchanged"],
            "failed": failed,
            "failures_by_reason": {s: self.statuses[s] for s in FAILURES if self.statuses[s]},
            "failures": self.failures,
            "links_not_followed": dict(sorted(self.skipped.items())),
            "links_not_followed_examples": self.skipped_examples,
            "invalid_links": self.invalid_links,
            "bytes": self.bytes,
        }


class _Progress:
    """A one-line progress bar on stderr, only on a terminal: a bar when the previous crawl gives a total."""

    def __init__(self, enabled: bool, label: str, total: int, read: Callable[[], tuple[int, int, int, int]]) -> None:
        self.enabled = enabled
        self.label = label
        self.total = total
        self.read = read
        self.started = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="cscale-progress")

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._done.set()
            self._thread.join()
            self._draw()
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _loop(self) -> None:
        while not self._done.wait(0.25):
            self._draw()

    def _draw(self) -> None:
        documents, records, failed, skipped = self.read()
        rate = documents / max(time.monotonic() - self.started, 1e-9)
        bar = ""
        if self.total:
            share = min(documents / self.total, 1.0)
            filled = int(share * 24)
            bar = f"[{'#' * filled}{'-' * (24 - filled)}] {share:4.0%} "
        text = (
            f"\r{self.label} {bar}{documents:,} documents ({rate:,.0f}/s), {records:,} records staged, "
            f"{failed:,} failed, {skipped:,} links not followed  "
        )
        sys.stderr.write(text)
        sys.stderr.flush()


# ------------------------------------------------------------------------------------------------ driver


def harvest_static(
    store: Store,
    options: StaticOptions,
    *,
    progress: bool = False,
    log_step: Callable[[str], None] | None = None,
) -> StaticResult:
    """Crawl `options.root` for `options.provider` into one new version (or none when nothing changed)."""
    started = datetime.now(UTC)
    clock = time.monotonic()
    root = root_url(options.root)
    allow = (default_prefix(root), *(allow_prefix(p) for p in options.allow))
    store.storage.check_writable()
    base = store.head()
    key = state_key(options.provider, root)
    previous_value = base.state.get(key) if base else None
    folder = (options.workdir or default_workdir(store)) / "static" / _folder_name(options.provider, root)
    crawl = CrawlOptions(
        allow=allow,
        concurrency=options.concurrency,
        max_item_bytes=options.max_item_bytes,
        max_document_bytes=options.max_document_bytes,
        force=options.force,
    )
    count = options.workers or os.cpu_count() or 1
    # The workers start first: they import what they need while the journal and the previous state are read.
    with (
        _locked(folder, f"{options.provider} from {describe(root)}"),
        Workers(count, crawl, options.http, options.provider) as workers,
    ):
        header = {
            "format": JOURNAL_FORMAT,
            "provider": options.provider,
            "root": root,
            "allow": list(allow),
            "force": options.force,
            "max_item_bytes": options.max_item_bytes,
            "max_document_bytes": options.max_document_bytes,
            "base_state": previous_value.get("files") if isinstance(previous_value, dict) else None,
        }
        journal = Journal(folder)
        resumable = not options.restart and journal.header() == header
        if not resumable:
            _clear(folder)
        stage = Stage(path=folder / "stage")
        tally = Tally(options.provider, root)
        resume = _resume(journal, header, stage, root, tally) if resumable else None
        if resume is None:
            if resumable:  # nothing was settled whole: start afresh, without what was staged in part
                stage.discard()
                _clear(folder)
                stage = Stage(path=folder / "stage")
            journal.start(header)
        prev_path = _load_previous(store, previous_value, folder)
        previous = PreviousState(pq.read_table(prev_path) if prev_path else None)
        try:
            result = _crawl_and_commit(
                store, options, root, allow, base, key, previous, prev_path, folder, journal, stage, tally,
                resume, workers, progress=progress, log_step=log_step, started=started, clock=clock,
            )  # fmt: skip
        finally:
            journal.close()
            stage.close()
        # Committed (or nothing to commit): the leftovers have served their purpose.
        _clear(folder)
        return result


def _folder_name(provider: str, root: str) -> str:
    digest = hashlib.blake2b(f"{provider}\0{root}".encode(), digest_size=8).hexdigest()
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in provider)[:40]
    return f"{safe}-{digest}"


def _clear(folder: Path) -> None:
    """Everything in the work folder but its lock."""
    import shutil

    for entry in folder.iterdir() if folder.exists() else ():
        if entry.name == "lock":
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def _resume(journal: Journal, header: dict[str, Any], stage: Stage, root: str, tally: Tally) -> Resume | None:
    """Keep the journalled documents whose records are all staged; the rest, and what was linked but never
    settled, is the frontier. Streams the journal (twice) instead of holding it."""
    staged = {url_key(href) for href in stage.staged_sources()}

    def staged_part(line: dict[str, Any]) -> tuple[bool, set[str]]:
        suffixes = line.get("staged") or []
        have = {s for s in suffixes if url_key(line["href"] + s) in staged}
        return len(have) == len(suffixes), have

    done: set[int] = set()
    partial: dict[str, set[str]] = {}
    for line in journal.lines():
        whole, have = staged_part(line)
        if whole:
            done.add(url_key(line["href"]))
        elif have:
            partial[line["href"]] = have  # read it again, but stage only what is missing
    if not done:
        return None
    frontier: list[tuple[str, str, str | None]] = []
    parents: dict[int, int] = {}
    visited = set(done)
    visited.add(url_key(root))

    def kept() -> Iterator[dict[str, Any]]:
        written: set[int] = set()
        for line in journal.lines():
            key = url_key(line["href"])
            if key not in done or key in written or not staged_part(line)[0]:
                continue
            written.add(key)
            tally.add(line)
            yield line
            if line.get("retain"):
                continue  # a failed document's links were kept, not followed
            not_followed = {target for target, _ in line.get("skipped", ())}
            for expect, column in (("container", "child_links"), ("item", "item_links")):
                for target in line.get(column) or ():
                    target_key = url_key(target)
                    if target in not_followed or target_key in visited:
                        continue
                    visited.add(target_key)
                    if expect == "container":
                        parents[target_key] = key
                    frontier.append((target, expect, line["href"]))

    journal.start(header, kept())  # the compacted journal replaces the old one, which is read meanwhile
    if url_key(root) not in done:
        frontier.append((root, "container", None))
    log.info("resuming: %s documents settled before, %s to visit next", len(done), len(frontier))
    return Resume(visited=visited, frontier=frontier, parents=parents, staged=partial)


def _crawl_and_commit(
    store: Store,
    options: StaticOptions,
    root: str,
    allow: tuple[str, ...],
    base: Manifest | None,
    key: str,
    previous: PreviousState,
    prev_path: Path | None,
    folder: Path,
    journal: Journal,
    stage: Stage,
    tally: Tally,
    resume: Resume | None,
    workers: Workers,
    *,
    progress: bool,
    log_step: Callable[[str], None] | None,
    started: datetime,
    clock: float,
) -> StaticResult:

    def on_lines(lines: list[dict[str, Any]]) -> None:
        journal.write(lines)
        for line in lines:
            tally.add(line)

    crawler = Crawler(
        root,
        workers=workers,
        previous=previous,
        stage=stage,
        journal=on_lines,
        resume=resume,
    )
    resumed_documents = sum(tally.documents.values())

    def read() -> tuple[int, int, int, int]:  # from the progress thread, while the crawl thread counts
        stats = crawler.stats
        return tally.total, stage.seen, stats.failed, stats.skipped

    label = f"harvest static {options.provider}"
    with _Progress(progress, label, len(previous), read):
        crawler.run()
    workers.close()  # their memory is the commit's now
    crawl_seconds = time.monotonic() - clock
    journal.close()
    if tally.root_line is None or tally.root_line["status"] in FAILURES:
        _clear(folder)  # nothing to resume: the next run must try the root again
        message = (tally.root_line or {}).get("message") or "nothing could be read"
        raise InputError(f"cannot read the root {describe(root)}: {message}")
    old = base.state.get(key) if base else None
    if isinstance(old, dict) and old.get("files") and tally.same == tally.total == len(previous):
        # Every document as committed (validators aside): keep the state file, so that new ETags alone make no
        # version. A document whose validators moved is read again next time and found the same by its hash.
        state = _State(None, int(old.get("documents", 0)), int(old.get("items", 0)), [], 0, 0)
    else:
        state = _new_state(journal, prev_path, folder)
    report: dict[str, Any] = {
        "kind": "static",
        "provider": options.provider,
        "root": describe(root),
        "allow": [describe(p) for p in allow],
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "crawl_seconds": round(crawl_seconds, 3),
        "resumed": resume is not None,
        "resumed_documents": resumed_documents if resume is not None else 0,
        "forced": options.force,
        **tally.report(),
        "retained_documents": state.retained_documents,
        "retained_items": state.retained_items,
        "items_in_tree": state.items,
        "deleted_items": len(state.deletes),
    }
    value: dict[str, Any] = {
        "files": old["files"] if state.path is None and isinstance(old, dict) else None,
        "root": describe(root),
        "documents": state.documents,
        "items": state.items,
        "crawled_at": report["started_at"],
    }
    uploaded: str | None = None
    if state.path is not None:
        uploaded = f"state/provider={quote(options.provider, safe='')}/static-{uuid.uuid4().hex}.parquet"
        store.storage.upload(state.path, uploaded)
        value["files"] = [uploaded]
    request = CommitRequest(
        deletes=[(options.provider, item_id) for item_id in state.deletes],
        state={key: value},
        collections=tally.collections,
        report=report,
    )
    result = commit_stage(store, stage, request, progress=log_step)
    if result.manifest is None and uploaded:
        # No version was made after all: the new state file would only be garbage.
        store.storage.delete([uploaded])
    log.info("static harvest of %s for %s: %s", describe(root), options.provider, result.counts)
    return StaticResult(result, report)


@dataclass(frozen=True, slots=True)
class _State:
    path: Path | None  # None: the committed state file still holds
    documents: int
    items: int
    deletes: list[str]
    retained_documents: int
    retained_items: int


def _new_state(journal: Journal, prev_path: Path | None, folder: Path) -> _State:
    """Journal → state rows, plus the previous rows kept below failures; the deletions against the previous
    state. DuckDB with a memory limit does the set work, so a tree of any size stays within bounds."""
    crawled = folder / "crawled-state.parquet"
    with pq.ParquetWriter(str(crawled), STATE_SCHEMA, compression="zstd") as writer:
        batch: list[dict[str, Any]] = []
        for line in journal.lines():
            batch.append(_state_row(line))
            if len(batch) >= 10_000:
                writer.write_table(pa.Table.from_pylist(batch, STATE_SCHEMA))
                batch = []
        writer.write_table(pa.Table.from_pylist(batch, STATE_SCHEMA))
    if prev_path is None:  # a first crawl: nothing to keep, nothing to delete
        meta = pq.read_metadata(crawled)
        ids = pc.list_flatten(pq.read_table(crawled, columns=["item_ids"]).column(0))
        return _State(crawled, meta.num_rows, len(pc.unique(ids)), [], 0, 0)
    out = folder / "state.parquet"
    con = duckdb.connect(config={"memory_limit": "256MB", "temp_directory": str(folder / "duckdb"), "threads": "2"})
    try:
        con.execute(f"CREATE VIEW crawled AS SELECT * FROM read_parquet({_sql_str(crawled)})")
        con.execute(f"CREATE VIEW prev AS SELECT * FROM read_parquet({_sql_str(prev_path)})")
        con.execute(_STATE_SQL)
        columns = ", ".join(STATE_SCHEMA.names)
        con.execute(
            f"COPY (SELECT {columns} FROM final ORDER BY href) TO {_sql_str(out)} (FORMAT parquet, COMPRESSION zstd)"
        )
        row = con.execute(
            """SELECT count(*), (SELECT count(DISTINCT id) FROM (SELECT unnest(item_ids) AS id FROM final)),
                      count(*) FILTER (WHERE retain),
                      (SELECT count(DISTINCT id) FROM (SELECT unnest(item_ids) AS id FROM final WHERE retain))
               FROM final"""
        ).fetchone()
        assert row is not None
        deletes = [r[0] for r in con.execute(_DELETES_SQL).fetchall()]
    finally:
        con.close()
    return _State(out, int(row[0]), int(row[1]), deletes, int(row[2]), int(row[3]))


# Below a document that failed this time (its line keeps the links it had), the previous rows stand in for
# whatever this crawl did not reach; recursion stops at documents this crawl did settle.
_STATE_SQL = """
CREATE TEMP TABLE kept AS
WITH RECURSIVE below(href) AS (
    SELECT unnest(list_concat(child_links, item_links)) FROM crawled WHERE retain
    UNION
    SELECT unnest(list_concat(p.child_links, p.item_links))
    FROM prev p JOIN below b ON p.href = b.href
    WHERE NOT EXISTS (SELECT 1 FROM crawled c WHERE c.href = p.href)
)
SELECT p.* REPLACE (true AS retain) FROM prev p
WHERE p.href IN (SELECT href FROM below) AND NOT EXISTS (SELECT 1 FROM crawled c WHERE c.href = p.href);
CREATE TEMP TABLE final AS SELECT * FROM crawled UNION ALL BY NAME SELECT * FROM kept;
"""
_DELETES_SQL = """
SELECT id FROM (SELECT unnest(item_ids) AS id FROM prev)
EXCEPT
SELECT id FROM (SELECT unnest(item_ids) AS id FROM final)
ORDER BY id
"""


def _sql_str(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _state_row(line: dict[str, Any]) -> dict[str, Any]:
    status = line["status"]
    if status == "unchanged":
        status = line.get("prev_status") or "ok"
    return {
        "key": url_key(line["href"]),
        "href": line["href"],
        "kind": line["kind"],
        "status": status,
        "etag": line.get("etag"),
        "last_modified": line.get("last_modified"),
        "mtime_ns": line.get("mtime_ns"),
        "size": line.get("size"),
        "content_hash": line.get("content_hash"),
        "child_links": line.get("child_links") or [],
        "item_links": line.get("item_links") or [],
        "item_ids": line.get("item_ids") or [],
        "retain": bool(line.get("retain")),
    }


# ----------------------------------------------------------------------------------------------- command


@click.command("static", epilog=EXIT_CODES)
@click.argument("url")
@click.option("--provider", required=True, help="Provider name, e.g. CESNET (a column of every row).")
@store_option
@click.option(
    "--allow",
    multiple=True,
    metavar="PREFIX",
    help="Also follow links under this URL prefix or folder (repeatable). By default only links under the "
    "root's own folder are followed; others are listed in the run report, not fetched.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Documents fetched at once (also the cap on connections in flight per host).",
)
@click.option(
    "--workers",
    type=click.IntRange(0, 64),
    default=0,
    help="Processes that fetch, parse and normalise documents, each with concurrency/N connections (0: one per "
    "CPU; 1: a thread of this process).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Crawl journal and staged records, kept after an interruption so the next run resumes (default: "
    "STORE/.cache for a local store, ~/.cache/cscale for S3).",
)
@click.option(
    "--max-item-bytes",
    type=click.IntRange(1024),
    default=DEFAULT_MAX_ITEM_BYTES,
    show_default=True,
    help="Items larger than this are quarantined (item_too_large) without being read whole.",
)
@click.option(
    "--max-document-bytes",
    type=click.IntRange(1024),
    default=64 << 20,
    show_default=True,
    help="Catalogs, collections and ItemCollections larger than this are not read (reported as too_large).",
)
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True, help="HTTP read timeout (s).")
@click.option("--retries", type=click.IntRange(0, 20), default=5, show_default=True, help="HTTP retries per request.")
@click.option("--force", is_flag=True, help="Read and stage every document again, changed or not.")
@click.option("--restart", is_flag=True, help="Throw away an interrupted crawl's journal instead of resuming it.")
@MAX_QUARANTINED
@click.option(
    "--max-failed",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of documents that could not be read (404, too large, errors) above which the command exits 1 "
    "(what was read is committed anyway).",
)
@format_option
@click.pass_obj
def static(
    ctx: Any,
    url: str,
    provider: str,
    store_root: str,
    allow: tuple[str, ...],
    concurrency: int,
    workers: int,
    workdir: Path | None,
    max_item_bytes: int,
    max_document_bytes: int,
    timeout: float,
    retries: int,
    force: bool,
    restart: bool,
    max_quarantined: float,
    max_failed: float,
    fmt: str | None,
) -> None:
    """Harvest a static STAC catalog (a path, file://, http(s):// or s3:// URL of a catalog, collection or
    ItemCollection) for one provider, as one new snapshot version.

    Follows child, item and items links (STAC 0.6 to 1.1). A second run reads only what changed (ETag /
    Last-Modified, S3 ETags, file mtime and size, then content hashes) and commits nothing when nothing did;
    items gone from the tree are removed. An interrupted run resumes where it stopped.

    \b
    Examples:
      cscale harvest static https://example.org/stac/catalog.json --provider CESNET --store ./store
      cscale harvest static s3://bucket/stac/catalog.json --provider EODC --store s3://snapshots/fed
    """

    def body() -> int:
        if not provider.strip() or "|" in provider:
            raise InputError("--provider must be a non-empty name without '|'")
        options = StaticOptions(
            provider=provider,
            root=url,
            allow=allow,
            concurrency=concurrency,
            workers=workers,
            max_item_bytes=max_item_bytes,
            max_document_bytes=max_document_bytes,
            workdir=workdir,
            force=force,
            restart=restart,
            http=HttpOptions(read_timeout=timeout, retries=retries, max_connections=concurrency),
        )
        result = harvest_static(Store.open(store_root), options, progress=bool(getattr(ctx, "progress_enabled", False)))
        version = result.commit.manifest.version if result.commit.manifest else None
        report = result.report
        shown = {
            **result.counts,
            "documents": report["documents"],
            "documents_fetched": report["fetched"],
            "documents_unchanged": report["unchanged"],
            "documents_failed": report["failed"],
            "links_not_followed": sum(report["links_not_followed"].values()),
            "items_deleted": report["deleted_items"],
        }
        report_run(shown, version, fmt, {"provider": provider, "root": report["root"]})
        for failure in report["failures"][:5]:
            log.warning("%s: %s (%s)", failure["reason"], failure["href"], failure["message"])
        code = quarantine_exit(result.counts, max_quarantined)
        share = report["failed"] / report["documents"] if report["documents"] else 0.0
        if share > max_failed:
            click.echo(
                f"cscale: {report['failed']:,} of {report['documents']:,} documents could not be read "
                f"({share:.1%}), above --max-failed {max_failed:.1%}; see `cscale snapshots show`",
                err=True,
            )
            code = 1
        return code

    run_safely(ctx, body)
