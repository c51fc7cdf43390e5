"""A run's staging area on local disk: normalised rows as Arrow IPC runs (memory-mapped when read back), their
sort/dedupe keys, and the quarantined records — so a harvest of any size holds little in memory."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from harvester.arrow_rows import rows_to_batch
from harvester.records import Record, Rejection

META_SCHEMA = pa.schema(
    [
        ("run", pa.int32()),
        ("row", pa.int32()),
        ("seq", pa.int64()),
        ("provider", pa.string()),
        ("collection", pa.string()),
        ("id", pa.string()),
        ("sort_ts", pa.int64()),
        ("year", pa.int32()),
        ("updated", pa.int64()),
        ("content_hash", pa.string()),
    ]
)
QUARANTINE_SCHEMA = pa.schema(
    [
        ("provider", pa.string()),
        ("source_href", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
        ("item_id", pa.string()),
        ("raw", pa.large_string()),
        ("raw_hash", pa.string()),
    ]
)


@dataclass(frozen=True, slots=True)
class RunFile:
    path: Path
    meta: pa.Table


def write_run(path: Path, run: int, records: Sequence[Record], first_seq: int) -> RunFile:
    """Turn records into one Arrow IPC run file plus its key table (runs in worker processes too)."""
    batch = rows_to_batch([r.row for r in records])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, batch.schema) as writer:
        writer.write_batch(batch)
    meta = pa.table(
        [
            pa.array([run] * len(records), pa.int32()),
            pa.array(range(len(records)), pa.int32()),
            pa.array(range(first_seq, first_seq + len(records)), pa.int64()),
            pa.array([r.provider for r in records], pa.string()),
            pa.array([r.collection for r in records], pa.string()),
            pa.array([r.id for r in records], pa.string()),
            pa.array([r.sort_ts for r in records], pa.int64()),
            pa.array([r.year for r in records], pa.int32()),
            pa.array([r.updated for r in records], pa.int64()),
            pa.array([r.content_hash for r in records], pa.string()),
        ],
        schema=META_SCHEMA,
    )
    return RunFile(path, meta)


def rejections_table(rejections: Sequence[Rejection]) -> pa.Table:
    return pa.table(
        [
            pa.array([r.provider for r in rejections], pa.string()),
            pa.array([r.source_href for r in rejections], pa.string()),
            pa.array([r.reason for r in rejections], pa.string()),
            pa.array([r.message for r in rejections], pa.string()),
            pa.array([r.item_id for r in rejections], pa.string()),
            pa.array([r.raw for r in rejections], pa.large_string()),
            pa.array([hashlib.blake2b(r.raw.encode(), digest_size=16).hexdigest() for r in rejections]),
        ],
        schema=QUARANTINE_SCHEMA,
    )


class Stage:
    """Collects one run's records; `close()` removes the files."""

    def __init__(self, workdir: Path | None = None) -> None:
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="cscale-stage-", dir=workdir))
        self.runs: dict[int, RunFile] = {}
        self.seen = 0
        self.quarantined = 0
        self._next_run = 0
        self._seq = 0
        self._quarantine_writer: pq.ParquetWriter | None = None
        self.quarantine_path = self.dir / "quarantine.parquet"

    def reserve(self, count: int) -> tuple[int, Path, int]:
        """Reserve a run number, its file and `count` sequence numbers (arrival order, for keep-newest)."""
        run, first = self._next_run, self._seq
        self._next_run += 1
        self._seq += count
        return run, self.dir / f"run-{run:06d}.arrow", first

    def add_records(self, records: Sequence[Record]) -> None:
        if records:
            run, path, first = self.reserve(len(records))
            self.attach(write_run(path, run, records, first))

    def attach(self, run_file: RunFile) -> None:
        """Register a run written (possibly by a worker process) at a reserved path."""
        run = int(run_file.meta.column("run")[0].as_py()) if run_file.meta.num_rows else -1
        if run >= 0:
            self.runs[run] = run_file
        self.seen += run_file.meta.num_rows

    def add_rejections(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        table = rejections_table(rejections)
        if self._quarantine_writer is None:
            self._quarantine_writer = pq.ParquetWriter(str(self.quarantine_path), QUARANTINE_SCHEMA, compression="zstd")
        self._quarantine_writer.write_table(table)
        self.quarantined += len(rejections)
        self.seen += len(rejections)

    def run_table(self, run: int) -> pa.Table:
        """A run, memory-mapped: taking rows from it reads only those rows' pages."""
        source = pa.memory_map(str(self.runs[run].path), "r")
        return pa.ipc.open_file(source).read_all()

    def meta(self) -> pa.Table:
        if not self.runs:
            return META_SCHEMA.empty_table()
        return pa.concat_tables([self.runs[r].meta for r in sorted(self.runs)])

    def finish_quarantine(self) -> Path | None:
        if self._quarantine_writer is not None:
            self._quarantine_writer.close()
            self._quarantine_writer = None
        return self.quarantine_path if self.quarantine_path.exists() else None

    def close(self) -> None:
        self.finish_quarantine()
        shutil.rmtree(self.dir, ignore_errors=True)
