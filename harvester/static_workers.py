"""The static crawl's workers: each takes batches of documents to read, fetches them (http(s) on one libcurl
thread, files and S3 on threads), examines them (harvester.sources_static.examine), normalises the items read and
writes them as one staged run per batch, then answers with the batch's outcomes (journal lines and links), its run
and its rejections. The scheduler (sources_static.Crawler) only decides what to read next and journals and
attaches what comes back, in that order (write-ahead: see harvester.harvest_static).

Why items never travel to the scheduler's process: parsing a 15 KB item costs ~60 µs and moving it between
processes more; in the worker that fetched it, it is parsed once, normalised from the parsed object and written
with its batch. One worker per CPU as child processes (`python -m harvester.static_workers`, fed pickled batches
on stdin: multiprocessing would re-import the whole CLI, DuckDB included, in every child); one worker is a thread
of the caller's process (no start-up cost: small trees, tests).
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harvester.http import HttpOptions, HttpResponse
from harvester.http_multi import MultiGet
from harvester.records import Record, Rejection, normalise_chunk
from harvester.sources_static import (
    CrawlOptions,
    Fetched,
    Fetchers,
    Outcome,
    Task,
    asked,
    conditional_headers,
    describe,
    examine,
    http_fetched,
)
from harvester.staging import RunFile, write_run


@dataclass(frozen=True, slots=True)
class WorkerSetup:
    crawl: CrawlOptions
    http: HttpOptions
    provider: str
    connections: int  # this worker's share of the crawl's concurrency


@dataclass(frozen=True, slots=True)
class Batch:
    number: int
    tasks: list[Task]
    run: int  # the staged run its items go to (reserved by the scheduler)
    run_path: Path


@dataclass(slots=True)
class BatchResult:
    number: int
    outcomes: list[Outcome]  # their records are in `run` or `rejections`
    run: RunFile | None  # sequence numbers are the scheduler's to give (Stage.attach_arrived)
    rejections: list[Rejection]


@dataclass(slots=True)
class _Pending:
    batch: Batch
    left: int
    outcomes: list[Outcome] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


Answer = Any  # BatchResult | BaseException, handed to the worker's owner
GC_BATCHES = 16


class Worker:
    """Reads batches: starts every fetch of a batch at once (the fetchers bound what is in flight), examines and
    normalises documents as they arrive, and when a batch's last document is in, writes its run and answers."""

    def __init__(self, setup: WorkerSetup, answer: Callable[[Answer], None]) -> None:
        self.setup = setup
        self.answer = answer  # called on the worker's thread
        self._inbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._multi: MultiGet | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._fetchers = Fetchers(max_connections=setup.connections)
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="cscale-static-worker", daemon=True)
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        self._inbox.put(("batch", batch))  # before any of its answers: the inbox is first in, first out
        for task in batch.tasks:
            if task.url.startswith(("http://", "https://")):
                if self._multi is None:
                    self._multi = MultiGet(self.setup.http, self._http_answer, connections=self.setup.connections)
                previous, cap = asked(task, self.setup.crawl)
                self._multi.submit(task.url, (batch.number, task), headers=conditional_headers(previous), max_bytes=cap)
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.setup.connections, thread_name_prefix="cscale-fetch")
                self._pool.submit(self._blocking_fetch, batch.number, task)

    def close(self) -> None:
        """Stop: what is in flight gets no answer."""
        self._stopping = True
        self._inbox.put(None)
        if self._multi is not None:
            self._multi.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._fetchers.close()
        self._thread.join()

    def _http_answer(self, token: tuple[int, Task], result: HttpResponse | Exception) -> None:
        number, task = token
        try:
            fetched: Fetched | BaseException = http_fetched(task.url, asked(task, self.setup.crawl)[0], result)
        except BaseException as exc:
            fetched = exc
        self._inbox.put(("answer", number, task, fetched))

    def _blocking_fetch(self, number: int, task: Task) -> None:
        if self._stopping:
            return
        try:
            previous, cap = asked(task, self.setup.crawl)
            fetched: Fetched | BaseException = self._fetchers.for_url(task.url).fetch(task.url, previous, cap)
        except BaseException as exc:
            fetched = exc
        self._inbox.put(("answer", number, task, fetched))

    def _work(self) -> None:
        pending: dict[int, _Pending] = {}
        while (message := self._inbox.get()) is not None:
            try:
                if message[0] == "batch":
                    batch = message[1]
                    pending[batch.number] = _Pending(batch, len(batch.tasks))
                    continue
                _, number, task, fetched = message
                state = pending[number]
                if isinstance(fetched, BaseException):
                    raise fetched
                self._examine(state, task, fetched)
                if state.left == 0:
                    del pending[number]
                    self.answer(self._finish(state))
            except BaseException as exc:  # a bug, not bad input: the scheduler raises it
                self.answer(RuntimeError(f"static worker failed ({type(exc).__name__}: {exc})"))
                return

    def _examine(self, state: _Pending, task: Task, fetched: Fetched) -> None:
        try:
            outcome = examine(task, fetched, self.setup.crawl)
        except Exception as exc:
            raise RuntimeError(f"examining {describe(task.url)}: {exc!r}") from exc
        if outcome.records:
            # examine records items only (never a catalog or collection), so nothing else comes back here
            records, rejections, _ = normalise_chunk(
                outcome.records, provider=self.setup.provider, max_item_bytes=self.setup.crawl.max_item_bytes
            )
            state.records += records
            state.rejections += rejections
            outcome.records = []
        state.outcomes.append(outcome)
        state.left -= 1

    def _finish(self, state: _Pending) -> BatchResult:
        batch = state.batch
        run = write_run(batch.run_path, batch.run, state.records, 0) if state.records else None
        return BatchResult(batch.number, state.outcomes, run, state.rejections)


# ------------------------------------------------------------------------------------ where workers run


class _ChildDied(Exception):
    pass


class _Child:
    """One worker process, answering on a reader thread into the shared `results` as (index, answer)."""

    def __init__(self, index: int, setup: WorkerSetup, results: queue.SimpleQueue[tuple[int, Answer]]) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        self.index = index
        self.results = results
        self.closing = False
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harvester.static_workers"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        self._send(setup)
        self.reader = threading.Thread(target=self._read, name="cscale-worker-reader", daemon=True)
        self.reader.start()

    def _send(self, obj: Any) -> None:
        assert self.proc.stdin is not None
        try:
            pickle.dump(obj, self.proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise _ChildDied(f"static worker process {self.proc.pid} exited (code {self.proc.poll()})") from None

    def submit(self, batch: Batch) -> None:
        self._send(batch)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            while True:
                self.results.put((self.index, pickle.load(self.proc.stdout)))
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            if not self.closing:
                died = _ChildDied(f"static worker process {self.proc.pid} died ({type(exc).__name__})")
                self.results.put((self.index, died))

    def close(self) -> None:
        """Stop the process: what it has in flight is not wanted any more (the crawl ended or failed)."""
        self.closing = True
        with contextlib.suppress(OSError, ValueError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # end of input: the child stops
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=5)


class Workers:
    """`count` workers (child processes, or with one, a thread of this process), sharing the crawl's connections;
    answers arrive on `results` as (worker index, BatchResult or exception). Started early (they take ~0.4 s to
    import what they need), closed by whoever started them."""

    def __init__(self, count: int, crawl: CrawlOptions, http: HttpOptions, provider: str) -> None:
        self.results: queue.SimpleQueue[tuple[int, Answer]] = queue.SimpleQueue()
        self.count = max(1, count)
        setup = WorkerSetup(crawl, http, provider, max(1, crawl.concurrency // self.count))
        self.setup = setup
        self._local: Worker | None = None
        self._children: list[_Child] = []
        if self.count == 1:
            self._local = Worker(setup, lambda answer: self.results.put((0, answer)))
        else:
            self._children = [_Child(i, setup, self.results) for i in range(self.count)]

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, index: int, batch: Batch) -> None:
        if self._local is not None:
            self._local.submit(batch)
        else:
            self._children[index].submit(batch)

    def close(self) -> None:
        """Stop every worker (again: nothing)."""
        if self._local is not None:
            self._local.close()
            self._local = None
        for child in self._children:
            child.close()
        self._children = []


def _child_main() -> None:
    """A worker process: setup, then batches on stdin until it closes; answers on stdout."""
    protocol = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed goes to stderr, never into the protocol stream
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes our stdin
    # Parsed items are trees of thousands of small containers without cycles: the cyclic GC would scan them again
    # and again (it nearly doubles the cost per item); reference counting frees them all the same. A collection
    # every GC_BATCHES batches takes what cycles there are (none per item: 0 found per batch over a 20k crawl);
    # one per batch cost 0.8 s of a 7 s crawl, scanning the next batch's live records each time.
    gc.disable()
    gc.freeze()  # the modules' objects, out of the collections' way
    source = sys.stdin.buffer
    setup = pickle.load(source)
    answered = 0

    def answer(result: Answer) -> None:  # on the worker's one thread
        nonlocal answered
        pickle.dump(result, protocol, protocol=pickle.HIGHEST_PROTOCOL)
        protocol.flush()
        answered += 1
        if answered % GC_BATCHES == 0:
            gc.collect()

    worker = Worker(setup, answer)
    try:
        while True:
            worker.submit(pickle.load(source))
    except (EOFError, OSError):
        pass  # the parent closed our input: the crawl is over (or failed), nothing more is wanted
    os._exit(0)


if __name__ == "__main__":
    # Through the imported module, so that what is pickled back names harvester.static_workers' classes.
    from harvester import static_workers

    static_workers._child_main()
