"""`cscale publish`: a snapshot version → static STAC catalogs on a local folder or S3, streaming and incremental.

How it runs (each step bounded in memory, whatever the number of items):

1. **Keys.** One pass over the selected parts reads only the small columns (id, content_hash, datetimes, bbox and
   the summarised properties), row group by row group, into a DuckDB database in a temporary folder (it spills
   to disk past `memory_limit`), and accumulates each collection's summaries.
2. **Plan.** Counts per hour decide the tree (publish_plan.time_leaves; hash buckets below an hour that is still
   too big); every item gets its path. The previous publish's state (`.cscale-publish.parquet` in the output:
   kind, provider, collection, id, path, hash, version for every item, catalog and copied part) says which item
   files already hold the same content at the same path: only the others are written.
3. **Write, children before parents.** A "pending" file first lists every path this run may touch; then items
   (worker processes, one row group per task), the parts for the `collection-mirror` assets, leaf catalogs
   (streamed from DuckDB in link order), the catalogs above them deepest first, and the root catalog last. A
   catalog whose bytes did not change is not rewritten. Then the new state; then the files of the previous
   tree that the new one does not reference are deleted; then the pending file goes.

An interrupted publish therefore leaves the previous root catalog valid: everything it reaches still exists (an
item rewritten in place is complete, old files are only deleted after the new root and state are written), and
the next publish trusts nothing the pending file names, so it rewrites those paths and removes leftovers.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import posixpath
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from harvester.errors import InputError
from harvester.manifest import PartInfo
from harvester.storage import arrow_filesystem
from harvester.store import Store
from queries.publish_items import Writer, WriterConfig, WriteTask, init_worker, run_task
from queries.publish_output import MEDIA_PARQUET, Output, open_output
from queries.publish_plan import (
    DEFAULT_MAX_ITEMS,
    MAX_HASH_LEVELS,
    MIRROR_DIR,
    Layout,
    Node,
    bucket_dir,
    build_tree,
    catalog_doc,
    collection_doc,
    extent_doc,
    group_dir,
    item_link,
    mirror_asset,
    node_id,
    safe_name,
    structural_links,
    time_leaves,
)
from queries.publish_summaries import Summaries, strategies

log = logging.getLogger(__name__)
STATE = ".cscale-publish.parquet"
PENDING = ".cscale-publish-pending.parquet"
STATE_KEY = b"cscale_publish"
MIN_TASK_ROWS = 4000  # a row group is split into worker tasks of at least this many rows
INLINE_BELOW = 3000  # items to write under which the default (--workers 0) writes them in this process
CRASH_ENV = "CSCALE_PUBLISH_CRASH_AT"  # test hook: kill -9 at a named step, like harvester.store's
_KEY_COLUMNS = ("id", "content_hash", "datetime", "start_datetime", "end_datetime", "bbox")


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class PublishOptions:
    out: str
    version: int | None = None
    providers: tuple[str, ...] | None = None
    collections: tuple[str, ...] | None = None  # collection ids, or PROVIDER|id
    href_base: str | None = None
    max_items: int = DEFAULT_MAX_ITEMS
    workers: int = 0  # item-writing processes; 0: one per CPU; 1: in this process
    memory_limit: str = "256MB"  # DuckDB's, for the plan; it spills to a temporary folder beyond
    workdir: Path | None = None


@dataclass(slots=True)
class PublishReport:
    version: int
    out: str
    items: int = 0
    items_written: int = 0
    items_unchanged: int = 0
    catalogs: int = 0
    catalogs_written: int = 0
    parts_copied: int = 0
    files_deleted: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process and its item-writing workers
    timings: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class Group:
    """One provider × collection: a Collection (or, for items without collection, a plain catalog)."""

    gdir: str
    provider: str
    collection: str | None
    parts: list[tuple[int, PartInfo]] = field(default_factory=list)
    summaries: Summaries = field(default_factory=Summaries)


def _select(parts: tuple[PartInfo, ...], options: PublishOptions, version: int) -> list[PartInfo]:
    chosen = list(parts)
    if options.providers:
        known = {p.provider for p in chosen}
        missing = sorted(set(options.providers) - known)
        if missing:
            raise InputError(f"--providers: no items of {', '.join(missing)} in version {version}")
        chosen = [p for p in chosen if p.provider in options.providers]
    if options.collections:
        wanted = set(options.collections)

        def match(p: PartInfo) -> bool:
            return p.collection in wanted or f"{p.provider}|{p.collection or ''}" in wanted

        missing = sorted(
            w for w in wanted if not any(w in (p.collection, f"{p.provider}|{p.collection or ''}") for p in chosen)
        )
        if missing:
            raise InputError(f"--collections: no items of {', '.join(missing)} in version {version}")
        chosen = [p for p in chosen if match(p)]
    return chosen


def _micros(column: pa.ChunkedArray | pa.Array | None, rows: int) -> pa.Array:
    """A timestamp column as naive UTC timestamp[us] (nulls where absent)."""
    if column is None:
        return pa.nulls(rows, pa.timestamp("us"))
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_null(column.type):
        return pa.nulls(rows, pa.timestamp("us"))
    if pa.types.is_timestamp(column.type):
        return column.cast(pa.timestamp(column.type.unit)).cast(pa.timestamp("us"))
    return pa.nulls(rows, pa.timestamp("us"))  # a part where the column is not a timestamp: no usable time


class Publisher:
    def __init__(self, store: Store, options: PublishOptions, progress: Callable[[int], None] | None) -> None:
        self.store = store
        self.options = options
        self.progress = progress
        self.layout = Layout(href_base=options.href_base, max_items=options.max_items)
        self.output: Output = open_output(options.out)
        self.timings: dict[str, float] = {}
        self._clock = time.monotonic()
        self._pending_written = False
        self.worker_cpu = 0.0

    def _lap(self, name: str) -> None:
        now = time.monotonic()
        self.timings[name] = round(now - self._clock, 3)
        self._clock = now

    # -- 1. keys ---------------------------------------------------------------------------------------------
    def scan(self, con: duckdb.DuckDBPyConnection, parts: list[PartInfo], groups: dict[str, Group]) -> None:
        con.execute(
            """CREATE TABLE keys (gdir VARCHAR, id VARCHAR, name VARCHAR, chash VARCHAR, ts TIMESTAMP,
                 te TIMESTAMP, xmin DOUBLE, ymin DOUBLE, xmax DOUBLE, ymax DOUBLE, part INTEGER, rg INTEGER,
                 rn INTEGER)"""
        )
        fs, prefix = arrow_filesystem(self.store.storage)
        summarised = set(strategies())
        buffered: list[pa.Table] = []  # one INSERT per ~100k keys: DuckDB's per-statement cost is milliseconds

        def flush() -> None:
            if buffered:
                con.register("batch", pa.concat_tables(buffered))
                con.execute("INSERT INTO keys SELECT * FROM batch")
                con.unregister("batch")
                buffered.clear()

        for index, part in enumerate(parts):
            group = groups[group_dir(part.provider, part.collection)]
            group.parts.append((index, part))
            parquet = pq.ParquetFile(prefix + part.path, filesystem=fs)
            names = set(parquet.schema_arrow.names)
            columns = [c for c in names if c in _KEY_COLUMNS or c in summarised]
            for rg in range(parquet.num_row_groups):
                table = parquet.read_row_group(rg, columns=columns)
                group.summaries.add(table)
                buffered.append(self._keys(table, group.gdir, index, rg))
                if sum(t.num_rows for t in buffered) >= 100_000:
                    flush()
        flush()

    @staticmethod
    def _keys(table: pa.Table, gdir: str, part: int, rg: int) -> pa.Table:
        n = table.num_rows

        def column(name: str) -> Any:
            return table.column(name) if name in table.column_names else None

        dt, start, end = (_micros(column(c), n) for c in ("datetime", "start_datetime", "end_datetime"))
        ts = pc.coalesce(dt, start)
        ids = column("id").to_pylist()
        bbox = column("bbox")
        if bbox is not None:
            bbox = bbox.combine_chunks()
            corners = [pc.struct_field(bbox, c).cast(pa.float64()) for c in ("xmin", "ymin", "xmax", "ymax")]
        else:
            corners = [pa.nulls(n, pa.float64())] * 4
        chash = column("content_hash")
        return pa.table(
            {
                "gdir": pa.array([gdir] * n, pa.string()),
                "id": pa.array(ids, pa.string()),
                "name": pa.array([safe_name(i) for i in ids], pa.string()),
                "chash": chash if chash is not None else pa.nulls(n, pa.string()),
                "ts": ts,
                "te": pc.coalesce(end, ts),
                "xmin": corners[0],
                "ymin": corners[1],
                "xmax": corners[2],
                "ymax": corners[3],
                "part": pa.array([part] * n, pa.int32()),
                "rg": pa.array([rg] * n, pa.int32()),
                "rn": pa.array(range(n), pa.int32()),
            }
        )

    # -- 2. plan ---------------------------------------------------------------------------------------------
    def plan(self, con: duckdb.DuckDBPyConnection) -> None:
        counts = con.execute(
            "SELECT gdir, year(ts), month(ts), day(ts), hour(ts), count(*) FROM keys GROUP BY ALL"
        ).fetchall()
        leaves = time_leaves(((g, (y, m, d, h), n) for g, y, m, d, h, n in counts), self.options.max_items)
        con.register(
            "tleaf_arrow",
            pa.table(
                {
                    "gdir": [t.gdir for t in leaves],
                    "y": pa.array([t.key[0] for t in leaves], pa.int64()),
                    "m": pa.array([t.key[1] for t in leaves], pa.int64()),
                    "d": pa.array([t.key[2] for t in leaves], pa.int64()),
                    "h": pa.array([t.key[3] for t in leaves], pa.int64()),
                    "leaf": [t.leaf for t in leaves],
                    "hashed": pa.array([t.hashed for t in leaves], pa.bool_()),
                }
            ),
        )
        con.execute("CREATE TABLE tleaf AS SELECT * FROM tleaf_arrow")
        con.unregister("tleaf_arrow")
        join = """keys k JOIN tleaf t ON t.gdir = k.gdir AND t.y IS NOT DISTINCT FROM year(k.ts)
                  AND t.m IS NOT DISTINCT FROM month(k.ts) AND t.d IS NOT DISTINCT FROM day(k.ts)
                  AND t.h IS NOT DISTINCT FROM hour(k.ts)"""
        self._hash_buckets(con, join)
        con.execute(
            f"""CREATE TABLE plan AS
                SELECT k.*, coalesce(b.leaf, t.leaf) AS leaf, coalesce(b.leaf, t.leaf) || '/' || k.name || '.json'
                       AS path
                FROM {join}
                LEFT JOIN hleaf b ON t.hashed AND b.tleaf = t.leaf AND starts_with(md5(k.id), b.prefix)"""
        )
        con.execute("DROP TABLE keys")

    def _hash_buckets(self, con: duckdb.DuckDBPyConnection, join: str) -> None:
        """Below an hour (or the undated folder) that still holds more than max_items items: buckets by the
        leading hex digits of md5(id), two digits a level, only as deep as needed."""
        con.execute("CREATE TABLE hleaf (tleaf VARCHAR, prefix VARCHAR, leaf VARCHAR)")
        if not con.execute("SELECT count(*) FROM tleaf WHERE hashed").fetchall()[0][0]:
            return
        con.execute(f"CREATE TEMP TABLE hk AS SELECT t.leaf AS tleaf, md5(k.id) AS hx FROM {join} WHERE t.hashed")
        split: set[tuple[str, str]] = set()  # (tleaf, prefix) to split one more level
        rows: list[tuple[str, str, str]] = []
        for level in range(1, MAX_HASH_LEVELS + 1):
            counts = con.execute(
                "SELECT tleaf, substr(hx, 1, ?) AS b, count(*) FROM hk GROUP BY ALL", [2 * level]
            ).fetchall()
            next_split: set[tuple[str, str]] = set()
            for tleaf, bucket, n in counts:
                if level > 1 and (tleaf, bucket[:-2]) not in split:
                    continue  # its parent bucket was small enough: already a leaf
                if n > self.options.max_items and level < MAX_HASH_LEVELS:
                    next_split.add((tleaf, bucket))
                else:
                    rows.append((tleaf, bucket, f"{tleaf}/{bucket_dir(bucket)}"))
            split = next_split
            if not split:
                break
        con.executemany("INSERT INTO hleaf VALUES (?, ?, ?)", rows)
        con.execute("DROP TABLE hk")

    # -- the previous publish --------------------------------------------------------------------------------
    def load_state(self, con: duckdb.DuckDBPyConnection, tmp: Path) -> tuple[int | None, bool]:
        """Tables `old` (the previous state) and `junk` (paths not to trust: a pending file left by an
        interrupted run, or everything when the layout changed). Returns (previous version, layout same)."""
        con.execute(
            "CREATE TABLE old (kind VARCHAR, provider VARCHAR, collection VARCHAR, id VARCHAR, path VARCHAR, "
            "hash VARCHAR, version INTEGER)"
        )
        con.execute("CREATE TABLE junk (path VARCHAR)")
        previous: int | None = None
        same = True
        local = tmp / "old-state.parquet"
        if self.output.download(STATE, local):
            meta = orjson.loads((pq.read_schema(local).metadata or {}).get(STATE_KEY, b"{}"))
            previous = meta.get("version")
            same = meta.get("layout") == self.layout.fingerprint()
            con.execute("INSERT INTO old SELECT * FROM read_parquet(?)", [str(local)])
            if not same:
                log.info("publish settings changed since the last publish: every file is rewritten")
                con.execute("INSERT INTO junk SELECT path FROM old")
        pending = tmp / "old-pending.parquet"
        if self.output.download(PENDING, pending):
            log.warning(
                "the previous publish to %s was interrupted: rewriting what it may have touched", self.output.url
            )
            con.execute("INSERT INTO junk SELECT path FROM read_parquet(?)", [str(pending)])
        con.execute("CREATE TABLE junk_set AS SELECT DISTINCT path FROM junk")
        return previous, same

    # -- the run ---------------------------------------------------------------------------------------------
    def run(self) -> PublishReport:
        started = time.monotonic()
        cpu = time.process_time()
        manifest = self.store.manifest(self.options.version)
        version = manifest.version
        parts = _select(manifest.parts, self.options, version)
        self.output.check_writable()
        report = PublishReport(version=version, out=self.output.url)
        groups: dict[str, Group] = {}
        for part in parts:
            gdir = group_dir(part.provider, part.collection)
            groups.setdefault(gdir, Group(gdir, part.provider, part.collection))
        with tempfile.TemporaryDirectory(prefix="cscale-publish-", dir=self.options.workdir) as tmpname:
            tmp = Path(tmpname)
            con = duckdb.connect(
                str(tmp / "plan.duckdb"),
                config={
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                    "memory_limit": self.options.memory_limit,
                    "temp_directory": str(tmp / "spill"),
                    "preserve_insertion_order": False,
                    "threads": max(1, min(4, os.cpu_count() or 1)),
                },
            )
            try:
                self.scan(con, parts, groups)
                self._lap("scan")
                self.plan(con)
                self._lap("plan")
                previous, _ = self.load_state(con, tmp)
                self._execute(con, tmp, version, previous, parts, groups, manifest.collections, report)
            finally:
                con.close()
        report.seconds = round(time.monotonic() - started, 3)
        report.cpu_seconds = round(time.process_time() - cpu + self.worker_cpu, 3)
        report.timings = self.timings
        return report

    def _execute(
        self,
        con: duckdb.DuckDBPyConnection,
        tmp: Path,
        version: int,
        previous: int | None,
        parts: list[PartInfo],
        groups: dict[str, Group],
        sources: dict[str, Any],
        report: PublishReport,
    ) -> None:
        con.register(
            "groups_arrow",
            pa.table(
                {
                    "gdir": pa.array([g.gdir for g in groups.values()], pa.string()),
                    "provider": pa.array([g.provider for g in groups.values()], pa.string()),
                    "collection": pa.array([g.collection for g in groups.values()], pa.string()),
                }
            ),
        )
        leaves = [r[0] for r in con.execute("SELECT DISTINCT leaf FROM plan").fetchall()]
        nodes = build_tree(leaves, {g.gdir: g.collection is not None for g in groups.values()})
        con.execute(
            """CREATE TABLE todo AS
               SELECT p.part, p.rg, p.rn, p.path, p.gdir,
                      -- no document of the published tree (nor of an interrupted run) can reference it yet
                      NOT EXISTS (SELECT 1 FROM old o WHERE o.path = p.path)
                      AND p.path NOT IN (SELECT path FROM junk_set) AS fresh
               FROM plan p
               WHERE p.path IN (SELECT path FROM junk_set)
                  OR NOT EXISTS (SELECT 1 FROM old o WHERE o.kind = 'item' AND o.path = p.path AND o.hash = p.chash)"""
        )
        copies = self._mirror_plan(groups)
        old_hashes = dict(con.execute("SELECT path, hash FROM old WHERE kind IN ('node', 'part')").fetchall())
        # Parts are immutable and land under their final name only when complete: a part the state names is
        # there, even after an interruption (so no pending file makes it untrusted).
        copy_todo = {rel: key for rel, key in copies.items() if old_hashes.get(rel) != key}
        con.register(
            "new_other",
            pa.table(
                {
                    "kind": ["node"] * len(nodes) + ["part"] * len(copies),
                    "path": [n.file for n in nodes.values()] + list(copies),
                }
            ),
        )
        con.execute("CREATE TABLE other_paths AS SELECT * FROM new_other")
        con.unregister("new_other")
        con.execute(
            """CREATE TABLE stale AS
               SELECT path FROM (SELECT path FROM old UNION SELECT path FROM junk_set)
               EXCEPT (SELECT path FROM plan UNION SELECT path FROM other_paths)"""
        )
        report.items = con.execute("SELECT count(*) FROM plan").fetchall()[0][0]
        con.register("copy_todo", pa.table({"path": pa.array(list(copy_todo), pa.string())}))
        self._pending_written = False

        def ensure_pending() -> None:
            """Before the first write or delete: every path this run may touch, for a run after an interruption.
            A publish that changes nothing writes nothing at all."""
            if self._pending_written:
                return
            self._write_parquet(
                con,
                """SELECT DISTINCT path FROM (
                     SELECT path FROM junk_set UNION ALL SELECT path FROM todo UNION ALL SELECT path FROM stale
                     UNION ALL SELECT path FROM other_paths UNION ALL SELECT path FROM old WHERE kind = 'node'
                     UNION ALL SELECT path FROM copy_todo)""",
                tmp / "pending.parquet",
                PENDING,
                None,
            )
            self._pending_written = True
            _crash_point("after_pending")

        stale_count = con.execute("SELECT count(*) FROM stale").fetchall()[0][0]
        todo_count = con.execute("SELECT count(*) FROM todo").fetchall()[0][0]
        if stale_count or todo_count or copy_todo or con.execute("SELECT count(*) FROM junk_set").fetchall()[0][0]:
            ensure_pending()
        self._lap("diff")

        report.items_written, report.bytes_written = self._write_items(con, parts, groups, todo_count)
        report.items_unchanged = report.items - report.items_written
        self._lap("items")
        _crash_point("after_items")

        for rel, key in copy_todo.items():
            self.output.copy_part(self.store.storage, key, rel)
        report.parts_copied = len(copy_todo)
        self._lap("parts")

        node_rows = self._write_catalogs(con, nodes, groups, sources, copies, old_hashes, report, ensure_pending)
        self._lap("catalogs")
        if not self._pending_written and previous == version:
            return  # nothing changed, not even the version the state names

        # The new state: every item with the version its file was last written at.
        con.register("nodes_arrow", pa.table({"path": [r[0] for r in node_rows], "hash": [r[1] for r in node_rows]}))
        con.register("copies_arrow", pa.table({"path": list(copies), "hash": list(copies.values())}))
        self._write_parquet(
            con,
            f"""SELECT 'item' AS kind, g.provider, g.collection, p.id, p.path, p.chash AS hash,
                       CASE WHEN t.path IS NULL AND o.version IS NOT NULL THEN o.version ELSE {int(version)} END
                       AS version
                FROM plan p JOIN groups_arrow g ON g.gdir = p.gdir
                LEFT JOIN todo t ON t.path = p.path
                LEFT JOIN old o ON o.kind = 'item' AND o.path = p.path
                UNION ALL SELECT 'node', NULL, NULL, NULL, path, hash, {int(version)} FROM nodes_arrow
                UNION ALL SELECT 'part', NULL, NULL, NULL, path, hash, {int(version)} FROM copies_arrow""",
            tmp / "state.parquet",
            STATE,
            {"version": version, "store": self.store.url, "layout": self.layout.fingerprint()},
        )
        _crash_point("after_state")
        for batch in con.execute("SELECT path FROM stale ORDER BY path").to_arrow_reader(50_000):
            report.files_deleted += self.output.delete(batch.column(0).to_pylist())
        if self._pending_written:
            self.output.delete([PENDING])
        self._lap("cleanup")

    def _write_parquet(
        self,
        con: duckdb.DuckDBPyConnection,
        query: str,
        local: Path,
        rel: str,
        meta: dict[str, Any] | None,
    ) -> None:
        options = "FORMAT parquet, COMPRESSION zstd"
        if meta is not None:
            # The state's own metadata: which version, from which store, with which link layout.
            text = orjson.dumps(meta).decode().replace("'", "''")
            options += f", KV_METADATA {{cscale_publish: '{text}'}}"
        con.execute(f"COPY ({query}) TO '{str(local).replace(chr(39), chr(39) * 2)}' ({options})")
        self.output.upload(local, rel, MEDIA_PARQUET)

    def _mirror_plan(self, groups: dict[str, Group]) -> dict[str, str]:
        """rel path in the output → store key, for every part of every published collection."""
        copies: dict[str, str] = {}
        for group in groups.values():
            if group.collection is None:
                continue
            for _, part in group.parts:
                copies[f"{group.gdir}/{MIRROR_DIR}/{posixpath.basename(part.path)}"] = part.path
        return copies

    # -- items -----------------------------------------------------------------------------------------------
    def _tasks(
        self, con: duckdb.DuckDBPyConnection, parts: list[PartInfo], groups: dict[str, Group], chunk: int
    ) -> Iterator[WriteTask]:
        """One task per row group to write, split into tasks of at most `chunk` rows."""
        is_collection = {g.gdir: g.collection is not None for g in groups.values()}

        def split(
            part: int, rg: int, rows: list[int], paths: list[str], colls: list[str | None], fresh: list[bool]
        ) -> Iterator[WriteTask]:
            pieces = -(-len(rows) // chunk)
            size = -(-len(rows) // pieces)  # equal pieces
            for lo in range(0, len(rows), size):
                hi = lo + size
                yield WriteTask(parts[part].path, rg, rows[lo:hi], paths[lo:hi], colls[lo:hi], fresh[lo:hi])

        query = "SELECT part, rg, rn, path, gdir, fresh FROM todo ORDER BY part, rg, rn"
        reader = con.cursor().execute(query).to_arrow_reader(50_000)
        current: tuple[int, int] | None = None
        rows: list[int] = []
        paths: list[str] = []
        colls: list[str | None] = []
        fresh: list[bool] = []
        for batch in reader:
            cols = batch.to_pydict()
            for part, rg, rn, path, gdir, new in zip(
                cols["part"], cols["rg"], cols["rn"], cols["path"], cols["gdir"], cols["fresh"], strict=True
            ):
                if (part, rg) != current:
                    if current is not None:
                        yield from split(*current, rows, paths, colls, fresh)
                    current, rows, paths, colls, fresh = (part, rg), [], [], [], []
                rows.append(rn)
                paths.append(path)
                colls.append(f"{gdir}/collection.json" if is_collection[gdir] else None)
                fresh.append(bool(new))
        if current is not None:
            yield from split(*current, rows, paths, colls, fresh)

    def _write_items(
        self, con: duckdb.DuckDBPyConnection, parts: list[PartInfo], groups: dict[str, Group], todo: int
    ) -> tuple[int, int]:
        config = WriterConfig(
            self.store.url, self.output.url, self.layout.href_base, WriterConfig.current_aws_environ()
        )
        workers = self.options.workers or os.cpu_count() or 1
        if not self.options.workers and todo < INLINE_BELOW:
            workers = 1  # starting worker interpreters (~1 s each) costs more than it saves on a few items
        totals = [0, 0]

        def done(result: tuple[int, int, float], inline: bool) -> None:
            totals[0] += result[0]
            totals[1] += result[1]
            if not inline:  # a worker's CPU; inline work is in this process's own
                self.worker_cpu += result[2]
            if self.progress:
                self.progress(totals[0])

        # Tasks are row groups (up to 20k rows), split when there are few: 7 row groups on 2 workers would leave
        # one worker idle for a whole row group at the end. A piece after the first decodes the rows before it
        # again (pyarrow cannot seek inside a row group), so pieces stay large.
        chunk = max(MIN_TASK_ROWS, -(-todo // (workers * 4)))
        tasks = self._tasks(con, parts, groups, chunk)
        if workers == 1:
            writer = Writer(config)
            for task in tasks:
                done(writer.run(task), True)
            return totals[0], totals[1]
        # spawn: workers must not inherit this process's DuckDB and Arrow thread pools by fork, and a fresh
        # interpreter shares nothing that would be counted twice (a forkserver would be a third process).
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(config,)) as pool:
            pending: deque[Future[tuple[int, int, float]]] = deque()
            for task in tasks:
                pending.append(pool.submit(run_task, task))
                while len(pending) > 2 * workers:  # bounded: a few row groups in flight
                    done(pending.popleft().result(), False)
            while pending:
                done(pending.popleft().result(), False)
        return totals[0], totals[1]

    # -- catalogs --------------------------------------------------------------------------------------------
    def _write_catalogs(
        self,
        con: duckdb.DuckDBPyConnection,
        nodes: dict[str, Node],
        groups: dict[str, Group],
        sources: dict[str, Any],
        copies: dict[str, str],
        old_hashes: dict[str, str],
        report: PublishReport,
        ensure_pending: Callable[[], None],
    ) -> list[tuple[str, str]]:
        """Leaves first (streamed with their item links), then every other node deepest first, the root last.
        Returns (file, hash) of every node for the state."""
        junk = {
            r[0]
            for r in con.execute(
                "SELECT path FROM junk_set WHERE path IN (SELECT path FROM other_paths WHERE kind = 'node')"
            ).fetchall()
        }
        names: dict[str, str] = {"": "cscale"}
        titles: dict[str, str] = {}
        for group in groups.values():
            names[group.gdir.split("/")[0]] = group.provider
            titles[group.gdir.split("/")[0]] = group.provider
            source = sources.get(f"{group.provider}|{group.collection}") if group.collection is not None else None
            names[group.gdir] = group.collection if group.collection is not None else f"{group.provider}-items"
            title = source.get("title") if isinstance(source, dict) else None
            titles[group.gdir] = str(title) if title else (group.collection or "Items without a collection")
        for path, node in nodes.items():
            if node.kind == "time":
                titles[path] = node_id(node, names)
        rows: list[tuple[str, str]] = []

        def emit(node: Node, doc: dict[str, Any]) -> None:
            data = orjson.dumps(doc, option=orjson.OPT_INDENT_2)
            digest = hashlib.blake2b(data, digest_size=16).hexdigest()
            rows.append((node.file, digest))
            report.catalogs += 1
            if old_hashes.get(node.file) != digest or node.file in junk:
                ensure_pending()
                self.output.write(node.file, data)
                report.catalogs_written += 1

        def time_doc(node: Node, item_links: list[Any]) -> dict[str, Any]:
            gdir = "/".join(node.path.split("/")[:2])
            label = node_id(node, names)
            links = structural_links(nodes, node, self.layout, titles) + item_links
            what = names[gdir]
            return catalog_doc(
                label, f"{what} {label}", f"Items of {what} ({names[gdir.split('/')[0]]}), {label}.", links
            )

        # Leaves, in link order (datetime, id), one at a time; on a cursor of its own, so that the pending file can
        # still be written through `con` while this result streams.
        reader = con.cursor().execute("SELECT leaf, path FROM plan ORDER BY leaf, ts, id").to_arrow_reader(50_000)
        current: str | None = None
        links: list[Any] = []
        for batch in reader:
            cols = batch.to_pydict()
            for leaf, path in zip(cols["leaf"], cols["path"], strict=True):
                if leaf != current:
                    if current is not None:
                        emit(nodes[current], time_doc(nodes[current], links))
                    current, links = leaf, []
                links.append(item_link(nodes[leaf].file, path, self.layout))
        if current is not None:
            emit(nodes[current], time_doc(nodes[current], links))

        extents = {
            g: extent_doc(t0, t1, None if x0 is None else [x0, y0, x1, y1], bool(cross))
            for g, t0, t1, x0, y0, x1, y1, cross in con.execute(
                """SELECT gdir, epoch_us(min(ts)), epoch_us(max(te)), min(xmin), min(ymin), max(xmax), max(ymax),
                          bool_or(xmin > xmax) FROM plan GROUP BY gdir"""
            ).fetchall()
        }
        leaf_paths = {n.path for n in nodes.values() if n.kind == "time" and not n.children}
        others = sorted((n for n in nodes.values() if n.path not in leaf_paths), key=lambda n: -n.depth)
        for node in others:
            if node.kind == "root" and self._pending_written:
                self.output.barrier()  # every child durable before the root can reach it
                _crash_point("before_root")
            links = structural_links(nodes, node, self.layout, titles)
            if node.kind == "time":
                doc = time_doc(node, [])
            elif node.kind == "root":
                doc = catalog_doc(
                    "cscale",
                    "cscale federation",
                    "Copernicus metadata harvested by cscale, one catalog per provider.",
                    links,
                )
            elif node.kind == "provider":
                doc = catalog_doc(names[node.path], names[node.path], f"Collections held by {names[node.path]}.", links)
            else:
                group = groups[node.path]
                if group.collection is None:
                    doc = catalog_doc(
                        names[node.path], titles[node.path], f"Items of {group.provider} without a collection.", links
                    )
                else:
                    files = sorted(
                        posixpath.basename(rel) for rel in copies if rel.startswith(f"{node.path}/{MIRROR_DIR}/")
                    )
                    source = sources.get(f"{group.provider}|{group.collection}")
                    doc = collection_doc(
                        collection_id=group.collection,
                        provider=group.provider,
                        source=source if isinstance(source, dict) else None,
                        extent=extents.get(node.path) or extent_doc(None, None, None, False),
                        summaries=group.summaries.to_dict(),
                        links=links,
                        mirror=mirror_asset(node.file, files, self.layout),
                    )
            emit(node, doc)
        return rows


def publish(store: Store, options: PublishOptions, *, progress: Callable[[int], None] | None = None) -> PublishReport:
    """Publish one snapshot version (default: current) as static STAC under `options.out`."""
    if options.max_items < 1:
        raise InputError("--max-items must be at least 1")
    if options.href_base is not None and "://" not in options.href_base:
        raise InputError(f"--href-base {options.href_base!r} is not an absolute URL")
    return Publisher(store, options, progress).run()
