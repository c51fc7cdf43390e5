"""Plan and commit one run's staged records onto the newest version (copy-on-write per partition).

Planning is relational work over small key tables (id, hash, sort key, where the row lives), so it runs in
DuckDB with a memory limit and spills instead of growing; row payloads stay in the memory-mapped runs and in the
base parts and are only gathered one row group at a time when a part is written.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.arrow_rows import conform, target_schema
from harvester.errors import ConcurrentCommitError
from harvester.manifest import Manifest, PartInfo, QuarantineInfo
from harvester.parts import part_schema, verify_part, write_part
from harvester.staging import QUARANTINE_SCHEMA, Stage
from harvester.storage import LocalStorage, arrow_filesystem
from harvester.store import Store, crash_point
from harvester.timeutil import format_datetime

log = logging.getLogger(__name__)
PART_MAX_ROWS = 1_000_000
GATHER_ROWS = 5_000
PART_WRITERS = 2  # partitions written at once (threads)
PARALLEL_RUNS_MAX = 200  # staged runs (of ~1,000 records) up to which partitions are written by PART_WRITERS
MERGE_LIMIT_ROWS = 500_000  # a touched partition up to this size is rewritten whole (one sorted part)
NULL_PARTITION = "__HIVE_DEFAULT_PARTITION__"


@dataclass(frozen=True, slots=True)
class CommitRequest:
    deletes: Sequence[tuple[str, str]] = ()  # (provider, id) gone upstream
    state: dict[str, Any] = field(default_factory=dict)
    collections: dict[str, Any] = field(default_factory=dict)  # "PROVIDER|collection" → collection JSON
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CommitResult:
    manifest: Manifest | None  # None: nothing changed, nothing was written
    counts: dict[str, int]


def commit_stage(
    store: Store,
    stage: Stage,
    request: CommitRequest,
    *,
    retries: int = 3,
    progress: Callable[[str], None] | None = None,
) -> CommitResult:
    """Commit, re-planning against the new version when a concurrent writer wins (no update is lost)."""
    for attempt in range(retries + 1):
        try:
            return _attempt(store, stage, request, progress)
        except ConcurrentCommitError as exc:
            if attempt == retries:
                raise
            log.warning("%s; re-planning against the new version (attempt %s)", exc, attempt + 2)
    raise AssertionError("unreachable")


def partition_path(provider: str, collection: str | None, year: int) -> str:
    coll = quote(collection, safe="") if collection else NULL_PARTITION
    return f"items/provider={quote(provider, safe='')}/collection={coll}/year={year}"


def _attempt(
    store: Store, stage: Stage, request: CommitRequest, progress: Callable[[str], None] | None
) -> CommitResult:
    import duckdb  # here, not at import: forked normalising workers must not inherit it

    started = time.monotonic()
    base = store.head()
    fs, prefix = arrow_filesystem(store.storage)
    meta = stage.meta()
    providers = set(meta.column("provider").to_pylist()) | {p for p, _ in request.deletes}
    base_parts = [p for p in (base.parts if base else ()) if p.provider in providers]
    con = duckdb.connect(config={"memory_limit": "512MB", "temp_directory": str(stage.dir / "duckdb")})
    try:
        con.register("staged", meta)
        con.register("base", _base_index(base_parts, fs, prefix))
        con.register(
            "deletes",
            pa.table({"provider": [p for p, _ in request.deletes], "id": [i for _, i in request.deletes]}),
        )
        con.execute(_PLAN_SQL)
        counts = _counts(con, stage)
        jobs = _jobs(con, base_parts)
    finally:
        con.close()
    new_parts: list[PartInfo] = []
    replaced: set[str] = set()
    collections = {**(base.collections if base else {}), **request.collections}
    for job in jobs:
        replaced.update(base_parts[i].path for i in job.replaces)
    # Partitions are written by a few threads at once: gathering (take/concat) and Parquet encoding and zstd run
    # in Arrow's C++ without the GIL, so a second partition fills the core the first leaves idle (commit time
    # 2.2 s -> ~1.3 s for 20k heavy items on 2 cores). A gather touches pages of every staged run (rows of one
    # partition are spread over all of them), so each thread's memory grows with the runs: past
    # PARALLEL_RUNS_MAX runs one thread writes (measured on heavy items: 300k, 1.0 GiB with two threads and 0.7 with
    # one; 1M, 1.44 and 1.0 GiB).
    writing = [job for job in jobs if job.entries_src.size]
    threads = PART_WRITERS if len(stage.runs) <= PARALLEL_RUNS_MAX else 1
    with ThreadPoolExecutor(max(1, min(threads, os.cpu_count() or 1, len(writing)))) as pool:
        futures = [
            pool.submit(lambda j: list(_write_job(store, stage, j, base_parts, fs, prefix, collections)), job)
            for job in writing
        ]
        try:
            for job, future in zip(writing, futures, strict=True):
                new_parts.extend(future.result())
                crash_point("during_parts")
                if progress:
                    progress(f"wrote {job.partition} ({job.entries_src.size} rows)")
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    quarantine = _write_quarantine(store, stage, base, fs, prefix)
    crash_point("after_parts")
    state = {**(base.state if base else {}), **request.state}
    # Harvest state rides along with data: a run that only moved a watermark or saw an unchanged source
    # commits nothing (the next run re-reads a little more, which is safe). State that names new files (an
    # archive's inventory parts) is data: it commits.
    files_changed = _state_files(state) != _state_files(base.state if base else {})
    changed = bool(new_parts or replaced or quarantine or files_changed) or (
        collections != (base.collections if base else {})
    )
    counts["deleted"] = counts.pop("deleted_rows")
    if not changed:
        return CommitResult(None, counts)
    kept = [p for p in (base.parts if base else ()) if p.path not in replaced]
    report = {**request.report, "counts": counts, "commit_seconds": round(time.monotonic() - started, 3)}
    manifest = store.next_manifest(
        base,
        parts=tuple(sorted(kept + new_parts, key=lambda p: p.path)),
        quarantine=tuple((base.quarantine if base else ()) + tuple(quarantine)),
        collections=collections,
        state=state,
        run=report,
    )
    return CommitResult(store.commit(manifest), counts)


def _state_files(state: dict[str, Any]) -> set[str]:
    """The files harvest state entries name under "files" (see Manifest.referenced_files)."""
    return {
        str(f) for v in state.values() if isinstance(v, dict) and isinstance(v.get("files"), list) for f in v["files"]
    }


# staged → winners (newest per provider+id) → plan (new / changed / same / stale against the base version)
_PLAN_SQL = """
CREATE TEMP TABLE winners AS
  SELECT * FROM staged
  QUALIFY row_number() OVER (PARTITION BY provider, id ORDER BY updated DESC NULLS LAST, seq DESC) = 1;
CREATE TEMP TABLE plan AS
  SELECT w.*, b.part AS base_part, b.row AS base_row,
    CASE WHEN b.id IS NULL THEN 'new'
         WHEN b.content_hash = w.content_hash THEN 'same'
         WHEN b.updated IS NOT NULL AND w.updated IS NOT NULL AND b.updated > w.updated THEN 'stale'
         ELSE 'changed' END AS action
  FROM winners w LEFT JOIN base b USING (provider, id);
CREATE TEMP TABLE removed AS
  SELECT base_part AS part, base_row AS row FROM plan WHERE action = 'changed'
  UNION
  SELECT b.part, b.row FROM base b JOIN deletes d USING (provider, id);
CREATE TEMP TABLE towrite AS
  SELECT provider, collection, year, sort_ts, id, run AS src, row AS idx FROM plan
  WHERE action IN ('new', 'changed');
"""


def _counts(con: Any, stage: Stage) -> dict[str, int]:
    row = con.execute(
        """SELECT (SELECT count(*) FROM staged) - (SELECT count(*) FROM winners),
                  count(*) FILTER (WHERE action = 'same'), count(*) FILTER (WHERE action = 'stale'),
                  count(*) FILTER (WHERE action = 'new'), count(*) FILTER (WHERE action = 'changed'),
                  (SELECT count(*) FROM base b JOIN deletes d USING (provider, id))
           FROM plan"""
    ).fetchone()
    assert row is not None
    superseded, same, stale, new, changed, deleted = (int(v or 0) for v in row)
    counts = {
        "seen": stage.seen,
        "written": new + changed,
        "new": new,
        "changed": changed,
        "quarantined": stage.quarantined,
        "deduplicated": superseded + same + stale,
        "superseded_in_run": superseded,
        "unchanged": same,
        "stale": stale,
        "deleted_rows": deleted,
    }
    if counts["seen"] != counts["written"] + counts["quarantined"] + counts["deduplicated"]:
        raise AssertionError(f"record accounting broken: {counts}")
    return counts


def _base_index(parts: Sequence[PartInfo], fs: Any, prefix: str) -> pa.Table:
    """(part, row, provider, id, content_hash, updated, sort_ts) of every row of the given base parts."""
    tables = []
    for index, part in enumerate(parts):
        names = set(pq.read_schema(prefix + part.path, filesystem=fs).names)
        wanted = [c for c in ("id", "content_hash", "updated", "datetime", "start_datetime") if c in names]
        table = pq.read_table(prefix + part.path, columns=wanted, filesystem=fs)
        n = table.num_rows
        sort = _micros(table, "datetime", n)
        start = _micros(table, "start_datetime", n)
        tables.append(
            pa.table(
                {
                    "part": pa.array(np.full(n, index, dtype=np.int32)),
                    "row": pa.array(np.arange(n, dtype=np.int32)),
                    "provider": pa.array([part.provider] * n, pa.string()),
                    "id": table.column("id"),
                    "content_hash": table.column("content_hash"),
                    "updated": _micros(table, "updated", n),
                    "sort_ts": pc.coalesce(sort, start),
                }
            )
        )
    if not tables:
        return pa.table(
            {
                "part": pa.array([], pa.int32()),
                "row": pa.array([], pa.int32()),
                "provider": pa.array([], pa.string()),
                "id": pa.array([], pa.string()),
                "content_hash": pa.array([], pa.string()),
                "updated": pa.array([], pa.int64()),
                "sort_ts": pa.array([], pa.int64()),
            }
        )
    return pa.concat_tables(tables)


def _micros(table: pa.Table, name: str, n: int) -> pa.ChunkedArray | pa.Array:
    if name not in table.column_names or not pa.types.is_timestamp(table.schema.field(name).type):
        return pa.nulls(n, pa.int64())
    return table.column(name).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())


@dataclass(frozen=True, slots=True)
class _Job:
    partition: str
    provider: str
    collection: str | None
    year: int
    replaces: tuple[int, ...]  # base part indexes this job's output supersedes
    entries_src: np.ndarray  # run number (>= 0) or -(base part index + 1), in output order
    entries_idx: np.ndarray
    sort_ts: np.ndarray


def _jobs(con: Any, base_parts: Sequence[PartInfo]) -> list[_Job]:
    touched: dict[tuple[str, str | None, int], set[int]] = {}
    for provider, collection, year in con.execute("SELECT DISTINCT provider, collection, year FROM towrite").fetchall():
        touched.setdefault((provider, collection, int(year)), set())
    losing: dict[int, int] = dict(con.execute("SELECT part, count(*) FROM removed GROUP BY part").fetchall())
    for index in losing:
        part = base_parts[index]
        touched.setdefault((part.provider, part.collection, part.year), set()).add(index)
    jobs: list[_Job] = []
    for (provider, collection, year), losers in sorted(touched.items(), key=lambda kv: str(kv[0])):
        in_partition = [
            i for i, p in enumerate(base_parts) if (p.provider, p.collection, p.year) == (provider, collection, year)
        ]
        new_rows = con.execute(
            "SELECT count(*) FROM towrite WHERE provider = ? AND collection IS NOT DISTINCT FROM ? AND year = ?",
            [provider, collection, year],
        ).fetchone()
        total = int(new_rows[0] if new_rows else 0) + sum(base_parts[i].rows for i in in_partition)
        # A partition up to MERGE_LIMIT_ROWS is rewritten whole into one sorted part; a bigger one keeps its
        # parts, rewriting only those that lose rows, and gets the new rows as a new part.
        whole = total <= MERGE_LIMIT_ROWS
        groups = [tuple(in_partition)] if whole else [(i,) for i in sorted(losers)] + [()]
        for group in groups:
            with_new = group == tuple(in_partition) or group == ()
            jobs.append(_job(con, provider, collection, year, group, with_new))
    return jobs


def _job(
    con: Any,
    provider: str,
    collection: str | None,
    year: int,
    parts: tuple[int, ...],
    with_new: bool,
) -> _Job:
    sql = """
      SELECT src, idx, sort_ts FROM (
        SELECT src, idx, sort_ts, id FROM towrite
        WHERE ? AND provider = ? AND collection IS NOT DISTINCT FROM ? AND year = ?
        UNION ALL
        SELECT -(b.part + 1) AS src, b.row AS idx, b.sort_ts, b.id FROM base b
        WHERE list_contains(?, b.part) AND NOT EXISTS (SELECT 1 FROM removed r WHERE r.part = b.part AND r.row = b.row)
      ) ORDER BY sort_ts, id"""
    table = con.execute(sql, [with_new, provider, collection, year, list(parts)]).to_arrow_table()
    return _Job(
        partition_path(provider, collection, year),
        provider,
        collection,
        year,
        parts,
        table.column("src").to_numpy().astype(np.int64),
        table.column("idx").to_numpy().astype(np.int64),
        table.column("sort_ts").to_numpy(zero_copy_only=False),
    )


class _PartSource:
    """Rows of a base part by ascending index, one row group in memory at a time."""

    def __init__(self, path: str, fs: Any) -> None:
        self.file = pq.ParquetFile(path, filesystem=fs)
        self.schema = self.file.schema_arrow.remove_metadata()
        sizes = [self.file.metadata.row_group(i).num_rows for i in range(self.file.num_row_groups)]
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._cached: tuple[int, pa.Table] | None = None

    def take(self, indices: np.ndarray) -> pa.Table:
        """Rows at `indices`, in that order (ascending indices read each row group once)."""
        order = np.argsort(indices, kind="stable")
        ordered = indices[order]
        groups = np.searchsorted(self.starts, ordered, side="right") - 1
        pieces = []
        for group in np.unique(groups):
            if self._cached is None or self._cached[0] != group:
                self._cached = (int(group), self.file.read_row_group(int(group)))
            local = ordered[groups == group] - self.starts[group]
            pieces.append(self._cached[1].take(pa.array(local)))
        table = pa.concat_tables(pieces)
        if np.all(order[:-1] < order[1:]):
            return table
        return table.take(pa.array(np.argsort(order, kind="stable")))


def _write_job(
    store: Store,
    stage: Stage,
    job: _Job,
    base_parts: Sequence[PartInfo],
    fs: Any,
    prefix: str,
    collections: dict[str, Any],
) -> Iterator[PartInfo]:
    runs: dict[int, pa.Table] = {}
    parts: dict[int, _PartSource] = {}

    def source(src: int) -> pa.Table | _PartSource:
        if src >= 0:
            if src not in runs:
                runs[src] = stage.run_table(src)
            return runs[src]
        index = -src - 1
        if index not in parts:
            parts[index] = _PartSource(prefix + base_parts[index].path, fs)
        return parts[index]

    for start in range(0, job.entries_src.size, PART_MAX_ROWS):
        src = job.entries_src[start : start + PART_MAX_ROWS]
        idx = job.entries_idx[start : start + PART_MAX_ROWS]
        ids, counts = np.unique(src, return_counts=True)
        schema = target_schema([(_schema_of(source(int(s))), int(c)) for s, c in zip(ids, counts, strict=True)])
        collection_json = collections.get(f"{job.provider}|{job.collection}")
        schema = part_schema(schema, collection_json, job.collection)
        name = f"{job.partition}/part-{uuid.uuid4().hex}.parquet"
        local = _local_target(store, stage, name)
        bounds = _Bounds()
        rows = write_part(local, _batches(src, idx, source, schema, bounds, runs.clear), schema)
        verify_part(local, int(src.size))
        if not isinstance(store.storage, LocalStorage):
            store.storage.upload(local, name)
            local.unlink()
        sort_ts = job.sort_ts[start : start + PART_MAX_ROWS]
        yield PartInfo(
            path=name,
            provider=job.provider,
            collection=job.collection,
            year=job.year,
            rows=rows,
            bytes=_size(store, local, name),
            datetime_min=_ts(int(sort_ts.min())),
            datetime_max=_ts(int(sort_ts.max())),
            bbox=bounds.bbox(),
        )


def _batches(
    src: np.ndarray,
    idx: np.ndarray,
    source: Callable[[int], pa.Table | _PartSource],
    schema: pa.Schema,
    bounds: _Bounds,
    release: Callable[[], None],
) -> Iterator[pa.RecordBatch]:
    # Gathered in slices: the gather's intermediate copies scale with the slice, while write_part assembles
    # its row groups (sized by bytes) from them.
    for lo in range(0, src.size, GATHER_ROWS):
        batch = _gather(src[lo : lo + GATHER_ROWS], idx[lo : lo + GATHER_ROWS], source, schema)
        release()  # unmap the runs: their touched pages would otherwise count against this process
        bounds.add(batch)
        yield from batch.to_batches()


def _schema_of(source: pa.Table | _PartSource) -> pa.Schema:
    return source.schema.remove_metadata()


def _gather(
    src: np.ndarray, idx: np.ndarray, source: Callable[[int], pa.Table | _PartSource], schema: pa.Schema
) -> pa.Table:
    """Rows from several sources in the given order, conformed to the part's schema.

    Rows taken from sources of the same schema are concatenated first and conformed once: an output row group
    may draw a few rows from each of hundreds of runs, and conforming is the costly step."""
    groups: list[tuple[pa.Schema, list[pa.Table], list[np.ndarray]]] = []
    plain = schema.remove_metadata()
    for s in np.unique(src):
        mask = src == s
        taken = source(int(s)).take(pa.array(idx[mask]) if s >= 0 else idx[mask])
        taken = taken.replace_schema_metadata(None)
        group = next((g for g in groups if g[0].equals(taken.schema)), None)
        if group is None:
            group = (taken.schema, [], [])
            groups.append(group)
        group[1].append(taken)
        group[2].append(np.nonzero(mask)[0])
    pieces: list[pa.Table] = []
    positions: list[np.ndarray] = []
    for _, tables, where in groups:
        pieces.append(conform(pa.concat_tables(tables), plain))  # chunked: no extra copy of the rows
        positions.extend(where)
    table = pa.concat_tables(pieces)
    order = np.argsort(np.concatenate(positions), kind="stable")
    return table.take(pa.array(order)).replace_schema_metadata(schema.metadata)


class _Bounds:
    def __init__(self) -> None:
        self.values: list[list[float]] = []

    def add(self, table: pa.Table) -> None:
        if "bbox" not in table.column_names:
            return
        bbox = table.column("bbox")
        mins = [pc.min(pc.struct_field(bbox, [i])).as_py() for i in range(2)]
        maxs = [pc.max(pc.struct_field(bbox, [i])).as_py() for i in range(2, 4)]
        if None not in mins and None not in maxs:
            self.values.append([*mins, *maxs])

    def bbox(self) -> list[float] | None:
        if not self.values:
            return None
        return [
            min(v[0] for v in self.values),
            min(v[1] for v in self.values),
            max(v[2] for v in self.values),
            max(v[3] for v in self.values),
        ]


def _local_target(store: Store, stage: Stage, name: str) -> Path:
    path = store.storage.root / name if isinstance(store.storage, LocalStorage) else stage.dir / "out" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _size(store: Store, local: Path, name: str) -> int:
    if isinstance(store.storage, LocalStorage):
        return local.stat().st_size
    return next((o.size for o in store.storage.listing(name)), 0)


def _ts(micros: int) -> str:
    from datetime import UTC, datetime, timedelta

    return format_datetime(datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros))


def _write_quarantine(store: Store, stage: Stage, base: Manifest | None, fs: Any, prefix: str) -> list[QuarantineInfo]:
    """New quarantine records (not already quarantined by an earlier version), one file per provider."""
    path = stage.finish_quarantine()
    if path is None:
        return []
    table = pq.read_table(str(path))
    # The same bad record seen again by a later run of the same provider is not stored twice.
    known: set[str] = set()
    providers = set(table.column("provider").to_pylist())
    for q in base.quarantine if base else ():
        if q.provider in providers:
            hashes = pq.read_table(prefix + q.path, columns=["raw_hash"], filesystem=fs).column(0).to_pylist()
            known.update(f"{q.provider}\0{h}" for h in hashes)
    keys = pc.binary_join_element_wise(table.column("provider"), table.column("raw_hash"), "\0")
    table = table.filter(pc.invert(pc.is_in(keys, pa.array(sorted(known), pa.string()))))
    version = (base.version if base else 0) + 1
    out = []
    for provider in sorted(set(table.column("provider").to_pylist())):
        rows = table.filter(pc.equal(table.column("provider"), provider))
        name = f"quarantine/provider={quote(provider, safe='')}/part-{uuid.uuid4().hex}.parquet"
        local = _local_target(store, stage, name)
        pq.write_table(rows.cast(QUARANTINE_SCHEMA), str(local), compression="zstd")
        if not isinstance(store.storage, LocalStorage):
            store.storage.upload(local, name)
        out.append(QuarantineInfo(path=name, provider=provider, rows=rows.num_rows, version=version))
    return out
