"""Row copies of parts, for search: every item of a part as the JSON that harvester.parts.batch_to_items restores,
in an Arrow IPC file of small zstd-compressed record batches, so that a search reads the few items of its page
without decoding the parts' row groups.

Why: a part's row is hundreds of leaf columns wide (764 in a part of heavy Sentinel-2 L2A items), so
reading one item from the part means decoding a whole row group of every column, then turning Arrow structs into
dicts: 30-40 ms for the first item of a row group and ~0.5 ms for each item (measured on 1M heavy items), which
was 85 % of a search. From a row copy an item costs ~0.15 ms (decompress its batch of 16, parse the JSON).

A copy is derived from an immutable part and named after the part's path (queries.search_cache's rule), so it is
valid for every version holding that part. It is built by `Searcher.prepare()` (`cscale search --prepare`), in
worker processes since the conversion is Python-bound (child Pythons fed part paths on stdin, as
harvester.static_workers does: multiprocessing would re-run the caller's main module in every child);
searches use a copy when present and read the part otherwise. The file records the part's path and row count;
a copy that does not match, or cannot be opened, is ignored (with a warning) and the part is read instead.

Arrow IPC is used as is: its file footer indexes the batches (random access by batch number, memory-mapped,
zero-copy) and it compresses each batch's buffers; nothing here is a format of our own.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from harvester.errors import StoreError
from harvester.parts import batch_to_items
from harvester.storage import LocalStorage, Storage, open_storage

log = logging.getLogger(__name__)
ROWS_FORMAT = 1
ROWS_PER_BATCH = 16  # measured on heavy items: 718 B/item (1.1x the part), 0.17 ms per item read; 8: 1.4x, 0.15 ms
COMPRESSION_LEVEL = 1
MAX_OPEN = 512
_SCHEMA = pa.schema([("item", pa.binary())])


def rows_path(folder: Path, part_path: str) -> Path:
    return folder / "rows" / f"v{ROWS_FORMAT}-{hashlib.sha256(part_path.encode()).hexdigest()[:32]}.arrow"


def write_row_copy(part: pq.ParquetFile, part_path: str, target: Path) -> int:
    """Write the row copy of one part (one row group in memory at a time); returns its rows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    rows = int(part.metadata.num_rows)
    schema = _SCHEMA.with_metadata({"part": part_path, "rows": str(rows)})
    options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", COMPRESSION_LEVEL))
    written = 0
    pending: list[bytes] = []
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as writer:
            for group in range(part.num_row_groups):
                pending += [orjson.dumps(item) for item in batch_to_items(part.read_row_group(group))]
                while len(pending) >= ROWS_PER_BATCH:
                    writer.write_batch(_batch(pending[:ROWS_PER_BATCH], schema))
                    written += ROWS_PER_BATCH
                    del pending[:ROWS_PER_BATCH]
            if pending:
                writer.write_batch(_batch(pending, schema))
                written += len(pending)
        if written != rows:
            raise OSError(f"{part_path}: read {written} rows, its footer says {rows}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


def _batch(items: list[bytes], schema: pa.Schema) -> pa.RecordBatch:
    return pa.record_batch([pa.array(items, pa.binary())], schema=schema)


def build_row_copy(storage: Storage, part_path: str, target: str) -> int:
    """Read one part of the store, write its row copy. Remote parts are downloaded whole (one request; a part is
    tens of MB) rather than read by ranges."""
    if isinstance(storage, LocalStorage):
        source: Any = str(storage.root / part_path)
    else:
        body = storage.read(part_path)
        if body is None:
            raise OSError(f"part {part_path} is missing from {storage.url}")
        source = pa.BufferReader(body)
    with pq.ParquetFile(source) as part:
        return write_row_copy(part, part_path, Path(target))


def build_row_copies(
    root: str,
    jobs: Sequence[tuple[str, int, Path]],
    *,
    workers: int,
    done: Callable[[str, int, str | None], None],
) -> None:
    """Write the row copies of (part path, rows, target) jobs; `done(part path, rows, error or None)` after each
    (from worker threads, one at a time). workers=1 writes them in this process."""
    tasks: queue.SimpleQueue[tuple[str, int, Path]] = queue.SimpleQueue()
    for job in jobs:
        tasks.put(job)
    lock = threading.Lock()

    def finish(job: tuple[str, int, Path], error: str | None) -> None:
        with lock:
            done(job[0], job[1], error)

    def next_job() -> tuple[str, int, Path] | None:
        try:
            return tasks.get_nowait()
        except queue.Empty:
            return None

    def in_process() -> None:
        storage = open_storage(root)
        while (job := next_job()) is not None:
            try:
                build_row_copy(storage, job[0], str(job[2]))
                finish(job, None)
            except (OSError, pa.ArrowException, StoreError) as exc:
                finish(job, str(exc))

    def child() -> None:
        command = [sys.executable, "-c", _CHILD, root]
        with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
            assert process.stdin is not None and process.stdout is not None
            try:
                while (job := next_job()) is not None:
                    process.stdin.write(orjson.dumps([job[0], str(job[2])]) + b"\n")
                    process.stdin.flush()
                    answer = process.stdout.readline()
                    if not answer:
                        raise StoreError(f"a worker writing row copies died (out of memory?) at {job[0]}")
                    finish(job, orjson.loads(answer)["error"])
            finally:
                process.stdin.close()

    if workers <= 1:
        in_process()
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for future in [pool.submit(child) for _ in range(workers)]:
            future.result()


# Not `-m queries.search_rows`: the package imports this module first, and runpy warns about running it twice.
_CHILD = "import sys; from queries.search_rows import _child_main; _child_main(sys.argv[1])"


def _child_main(root: str) -> None:
    storage = open_storage(root)
    for line in sys.stdin.buffer:
        part_path, target = orjson.loads(line)
        error = None
        try:
            build_row_copy(storage, part_path, target)
        except (OSError, pa.ArrowException, StoreError) as exc:
            error = str(exc)
        sys.stdout.buffer.write(orjson.dumps({"part": part_path, "error": error}) + b"\n")
        sys.stdout.buffer.flush()


class RowCopies:
    """Open row copies (memory-mapped, kept: the files never change), and items read from them."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._open: OrderedDict[str, pa.ipc.RecordBatchFileReader] = OrderedDict()
        self._refused: set[Path] = set()  # damaged or foreign copies: warned about once

    def _reader(self, part_path: str, rows: int) -> pa.ipc.RecordBatchFileReader | None:
        """The open copy of a part; a missing one is looked for again each time (another process may prepare)."""
        reader = self._open.get(part_path)
        if reader is not None:
            self._open.move_to_end(part_path)
            return reader
        if self.folder is None:
            return None
        path = rows_path(self.folder, part_path)
        if path in self._refused or not path.exists():
            return None
        reader = _open_checked(path, part_path, rows)
        if reader is None:
            self._refused.add(path)
            return None
        self._open[part_path] = reader
        while len(self._open) > MAX_OPEN:
            self._open.popitem(last=False)
        return reader

    def has(self, part_path: str, rows: int) -> bool:
        return self._reader(part_path, rows) is not None

    def written(self, part_path: str) -> None:
        """prepare() has just (re)written this part's copy: look at it afresh."""
        self._open.pop(part_path, None)
        if self.folder is not None:
            self._refused.discard(rows_path(self.folder, part_path))

    def items(self, part_path: str, rows: int, numbers: Sequence[int]) -> list[dict[str, Any]] | None:
        """Items of rows `numbers` (in that order), or None when the part has no usable copy."""
        reader = self._reader(part_path, rows)
        if reader is None:
            return None
        batches: dict[int, list[Any]] = {}
        out = []
        for number in numbers:
            index, offset = divmod(number, ROWS_PER_BATCH)
            column = batches.get(index)
            if column is None:
                column = batches[index] = reader.get_batch(index).column(0).to_pylist()
            out.append(orjson.loads(column[offset]))
        return out


def _open_checked(path: Path, part_path: str, rows: int) -> pa.ipc.RecordBatchFileReader | None:
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path)))
        meta = reader.schema.metadata or {}
        if meta.get(b"part") != part_path.encode() or meta.get(b"rows") != str(rows).encode():
            log.warning("ignoring the search row copy %s: it is not a copy of %s (%d rows)", path, part_path, rows)
            return None
        return reader
    except (OSError, pa.ArrowInvalid) as exc:
        log.warning("ignoring the unreadable search row copy %s: %s", path, exc)
        return None
