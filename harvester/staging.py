"""A run's staging area on local disk: normalised rows as Arrow IPC runs (memory-mapped when read back), their
sort/dedupe keys, and the quarantined records — so a harvest of any size holds little in memory."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
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
    """Turn records into one Arrow IPC run file plus its key table (runs in worker processes too).

    Rows are stored in output order (partition, then datetime and id): a part's row group then reads one
    contiguous slice of each memory-mapped run instead of pages scattered over all of them."""
    records = sorted(records, key=lambda r: (r.provider, r.collection or "", r.year, r.sort_ts, r.id))
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
    """Collects one run's records; `close()` removes the files.

    With `path`, the stage is persistent (for resumable harvests): it lives in that folder, `close()` keeps it,
    and a later `Stage(path=...)` takes up every run and rejection batch that was completely written before a
    crash or kill (a run counts once its key table is on disk; a half-written one is dropped). `discard()`
    removes it once its records are committed."""

    def __init__(self, workdir: Path | None = None, *, path: Path | None = None) -> None:
        self.persistent = path is not None
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            self.dir = path
        else:
            if workdir is not None:
                workdir.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix="cscale-stage-", dir=workdir))
        self.runs: dict[int, RunFile] = {}
        self.seen = 0
        self.quarantined = 0
        self._next_run = 0
        self._seq = 0
        self._batches = 0
        self._quarantine_writer: pq.ParquetWriter | None = None
        self.quarantine_path = self.dir / "quarantine.parquet"
        if self.persistent:
            self._load()

    def _load(self) -> None:
        for leftover in [*self.dir.glob("*.tmp"), self.quarantine_path]:
            leftover.unlink(missing_ok=True)  # temporaries of a killed write; the merged quarantine is derived
        for meta_path in sorted(self.dir.glob("run-*.meta.parquet")):
            run = int(meta_path.name[4:10])
            run_path = self.dir / f"run-{run:06d}.arrow"
            if not run_path.exists():
                meta_path.unlink()
                continue
            meta = pq.read_table(meta_path).cast(META_SCHEMA)
            self.runs[run] = RunFile(run_path, meta)
            self.seen += meta.num_rows
            self._next_run = max(self._next_run, run + 1)
            if meta.num_rows:
                self._seq = max(self._seq, int(pc.max(meta.column("seq")).as_py()) + 1)
        for run_path in self.dir.glob("run-*.arrow"):
            if int(run_path.name[4:10]) not in self.runs:
                run_path.unlink()  # its key table was never written: the run was cut short
            else:
                self._next_run = max(self._next_run, int(run_path.name[4:10]) + 1)
        for batch in self._quarantine_batches():
            rows = pq.read_metadata(batch).num_rows
            self.quarantined += rows
            self.seen += rows
            self._batches = max(self._batches, int(batch.stem.split("-")[1]) + 1)

    def _quarantine_batches(self) -> list[Path]:
        return sorted(self.dir.glob("quarantine-*.parquet"))

    @staticmethod
    def _write_atomic(table: pa.Table, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        pq.write_table(table, str(tmp), compression="zstd")
        os.replace(tmp, path)

    def staged_sources(self) -> Iterator[str]:
        """The source href of every record staged so far (what a resumed harvest need not read again)."""
        for run_file in self.runs.values():
            table = pa.ipc.open_file(pa.memory_map(str(run_file.path), "r")).read_all()
            if "source_href" in table.column_names:
                yield from table.column("source_href").to_pylist()
        for batch in self._quarantine_batches():
            yield from pq.read_table(batch, columns=["source_href"]).column(0).to_pylist()

    def reserve(self, count: int) -> tuple[int, Path, int]:
        """Reserve a run number, its file and `count` sequence numbers (arrival order, for keep-newest)."""
        run, first = self._next_run, self._seq
        self._next_run += 1
        self._seq += count
        return run, self.dir / f"run-{run:06d}.arrow", first

    def reserve_run(self) -> tuple[int, Path]:
        """Reserve a run number and its file, for records whose sequence numbers are given when the run arrives
        (see attach_arrived)."""
        run, path, _ = self.reserve(0)
        return run, path

    def attach_arrived(self, run_file: RunFile) -> None:
        """Attach a run whose rows get their sequence numbers now, in the order runs arrive."""
        rows = run_file.meta.num_rows
        seq = pa.array(range(self._seq, self._seq + rows), pa.int64())
        self._seq += rows
        meta = run_file.meta.set_column(run_file.meta.schema.get_field_index("seq"), "seq", seq)
        self.attach(RunFile(run_file.path, meta))

    def add_records(self, records: Sequence[Record]) -> None:
        if records:
            run, path, first = self.reserve(len(records))
            self.attach(write_run(path, run, records, first))

    def attach(self, run_file: RunFile) -> None:
        """Register a run written (possibly by a worker process) at a reserved path."""
        run = int(run_file.meta.column("run")[0].as_py()) if run_file.meta.num_rows else -1
        if run >= 0:
            if self.persistent:
                self._write_atomic(run_file.meta, self.dir / f"run-{run:06d}.meta.parquet")
            self.runs[run] = run_file
        self.seen += run_file.meta.num_rows

    def add_rejections(self, rejections: Sequence[Rejection]) -> None:
        if not rejections:
            return
        table = rejections_table(rejections)
        if self.persistent:  # one small file per batch: complete or absent after a kill, never torn
            self._write_atomic(table, self.dir / f"quarantine-{self._batches:06d}.parquet")
            self._batches += 1
        elif self._quarantine_writer is None:
            self._quarantine_writer = pq.ParquetWriter(str(self.quarantine_path), QUARANTINE_SCHEMA, compression="zstd")
        if self._quarantine_writer is not None:
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
        batches = self._quarantine_batches() if self.persistent else []
        if batches:
            tmp = self.quarantine_path.with_name(self.quarantine_path.name + ".tmp")
            with pq.ParquetWriter(str(tmp), QUARANTINE_SCHEMA, compression="zstd") as writer:
                for batch in batches:
                    writer.write_table(pq.read_table(batch).cast(QUARANTINE_SCHEMA))
            os.replace(tmp, self.quarantine_path)
        if self._quarantine_writer is not None:
            self._quarantine_writer.close()
            self._quarantine_writer = None
        return self.quarantine_path if self.quarantine_path.exists() else None

    def close(self) -> None:
        """Remove the files (a persistent stage keeps them for a later run: see `discard`)."""
        if self.persistent:
            if self._quarantine_writer is not None:
                self._quarantine_writer.close()
                self._quarantine_writer = None
            return
        self.finish_quarantine()
        shutil.rmtree(self.dir, ignore_errors=True)

    def discard(self) -> None:
        """Remove the files, persistent or not."""
        if self._quarantine_writer is not None:
            self._quarantine_writer.close()
            self._quarantine_writer = None
        shutil.rmtree(self.dir, ignore_errors=True)
