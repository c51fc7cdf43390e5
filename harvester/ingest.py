"""Ingest pipeline: raw records → normalise (worker processes) → staged runs → commit (one version per run)."""

from __future__ import annotations

import gc
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harvester.commit import CommitRequest, CommitResult, commit_stage
from harvester.records import DEFAULT_MAX_ITEM_BYTES, Others, Rejection, normalise_chunk
from harvester.sources_file import FileSummary, RawRecord, read_records
from harvester.staging import RunFile, Stage, write_run
from harvester.store import Store

log = logging.getLogger(__name__)
CHUNK = 1_000  # items per worker task: bounds each worker's memory (~15 KB JSON → ~100 KB as dicts)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    provider: str
    workers: int = 0  # 0: one per CPU
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    workdir: Path | None = None
    force: bool = False  # read sources even when their state says they did not change


def source_state(location: str, provider: str) -> tuple[str, dict[str, int]] | None:
    """The harvest-state key and stamp (size, mtime) of a local file; None for URLs (always read)."""
    if "://" in location and not location.startswith("file://"):
        return None
    path = Path(location.removeprefix("file://")).resolve()
    try:
        stat = path.stat()
    except OSError:
        return None  # reading it will raise the clear error
    return f"file:{provider}:{path}", {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


Result = tuple[RunFile | None, list[Rejection], Others]


def _work(chunk: list[RawRecord], run: int, path: Path, first_seq: int, provider: str, max_item_bytes: int) -> Result:
    # Parsed items are trees of thousands of small containers without cycles: the cyclic GC would rescan
    # them again and again (it nearly doubled the cost per item); reference counting frees them all the same.
    enabled = gc.isenabled()
    gc.disable()
    try:
        records, rejections, others = normalise_chunk(chunk, provider=provider, max_item_bytes=max_item_bytes)
        return (write_run(path, run, records, first_seq) if records else None), rejections, others
    finally:
        if enabled:
            gc.enable()


def stage_records(
    stage: Stage,
    raws: Iterable[RawRecord],
    options: IngestOptions,
    summary: FileSummary,
    *,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Normalise and stage every raw record, in parallel, with a bounded number of chunks in flight."""
    workers = options.workers or os.cpu_count() or 1
    chunks = _chunks(raws, CHUNK)
    args = (options.provider, options.max_item_bytes)
    if workers == 1:
        for chunk in chunks:
            run, path, first = stage.reserve(len(chunk))
            _finish(stage, _work(chunk, run, path, first, *args), summary)
            if progress:
                progress(stage.seen)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[Result]] = deque()
        for chunk in chunks:
            run, path, first = stage.reserve(len(chunk))
            pending.append(pool.submit(_work, chunk, run, path, first, *args))
            while len(pending) > workers:  # one task queued per worker: bounded memory in this process
                _finish(stage, pending.popleft().result(), summary)
                if progress:
                    progress(stage.seen)
        while pending:
            _finish(stage, pending.popleft().result(), summary)
            if progress:
                progress(stage.seen)


def _finish(stage: Stage, result: Result, summary: FileSummary) -> None:
    run_file, rejections, others = result
    if run_file is not None:
        stage.attach(run_file)
    stage.add_rejections(rejections)
    for href, obj in others:
        summary.keep(obj, href)


def _chunks(raws: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    chunk: list[RawRecord] = []
    for raw in raws:
        chunk.append(raw)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def ingest(
    store: Store,
    locations: list[str],
    options: IngestOptions,
    *,
    progress: Callable[[int], None] | None = None,
    log_step: Callable[[str], None] | None = None,
) -> CommitResult:
    """Ingest files or URLs for one provider as one new version (or none when nothing changed)."""
    started = datetime.now(UTC)
    clock = time.monotonic()
    store.storage.check_writable()
    base = store.head()
    previous = base.state if base else {}
    state: dict[str, Any] = {}
    todo, unchanged = [], []
    for location in locations:
        stamp = source_state(location, options.provider)
        if stamp and not options.force and previous.get(stamp[0]) == stamp[1]:
            unchanged.append(location)  # same size and mtime as when last committed: nothing new to read
            continue
        todo.append(location)
        if stamp:
            state[stamp[0]] = stamp[1]
    summary = FileSummary()
    stage = Stage(options.workdir)
    try:

        def raws() -> Iterator[RawRecord]:
            for location in todo:
                yield from read_records(location, summary)

        stage_records(stage, raws(), options, summary, progress=progress)
        staged_seconds = time.monotonic() - clock
        collections = {
            f"{options.provider}|{c.get('id')}": c for c in summary.collections if isinstance(c.get("id"), str)
        }
        report: dict[str, Any] = {
            "kind": "ingest",
            "provider": options.provider,
            "sources": todo,
            "sources_unchanged": unchanged,
            "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "stage_seconds": round(staged_seconds, 3),
            "collections_seen": len(summary.collections),
            "catalogs_skipped": summary.catalogs,
        }
        result = commit_stage(
            store, stage, CommitRequest(collections=collections, state=state, report=report), progress=log_step
        )
        log.info("ingest of %s for %s: %s", locations, options.provider, result.counts)
        return result
    finally:
        stage.close()
