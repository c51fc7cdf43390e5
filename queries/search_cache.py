"""What search learns about immutable part files, kept in a local cache folder so the next search (or the next
`cscale search` process) does not learn it again.

- **Id index** (one per set of parts, i.e. per version): every (id, part) of the version, sorted by id, in a small
  Parquet file with row groups of 4096 ids. Parts are sorted by datetime, so their id statistics cannot say which
  part holds an id; the index can, by reading one row group per id (its min/max statistics find it). It is built
  lazily by the first id lookup over many parts — one scan of the `id` column of every part — and never changes:
  parts are immutable and a version is exactly its list of parts, so the file is named after a hash of that list.
  A store served read-only (HTTP, S3 without write access) gets its index all the same, locally.
- **Part facts**: the kind and type of every column of a part (so that a search scans parts whose columns agree
  together, without DuckDB's costly union_by_name over wide schemas), and from the footer, how many items have no
  `datetime` (their time is a start/end range) and the latest `end_datetime`. The manifest's per-part datetime
  range is that of the items' sort key (datetime, else start_datetime), so it cannot tell whether a range item
  that started before an interval reaches into it; these two numbers can.
- **Narrow copies** of parts: the same rows in the same order (so row numbers are the part's), without the nested
  columns (`assets`, `links`, object properties) that make a part hundreds of leaf columns wide. DuckDB spends
  most of a small search binding those wide schemas file by file (measured: 120 ms of CPU per search over 56
  corpus parts, 18 ms over their narrow copies), and a remote store's copies are local. Search filters and sorts
  over the copies and reads the page's whole rows from the parts themselves. A copy is written the first time a
  search reads its part (or by `Searcher.prepare()`).

The cache folder is `$CSCALE_CACHE_DIR`, else `$XDG_CACHE_HOME/cscale`, else `~/.cache/cscale`. Deleting it is
always safe. Nothing here is needed for correctness: without a writable cache, search learns it again each time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import orjson

log = logging.getLogger(__name__)
INDEX_FORMAT = 1
INDEX_ROW_GROUP = 4096
STATS_FILE = "part-stats-v1.json"
COLUMNS_FILE = "part-columns-v2.json"
NARROW_FORMAT = 1


def cache_dir(explicit: str | Path | None = None) -> Path:
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("CSCALE_CACHE_DIR"):
        return Path(os.environ["CSCALE_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cscale"


def _writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.access(folder, os.W_OK)
    except OSError:
        return False


# -- id index ------------------------------------------------------------------------------------------------------
def index_path(folder: Path, part_paths: Sequence[str]) -> Path:
    digest = hashlib.sha256("\n".join(part_paths).encode()).hexdigest()[:32]
    return folder / f"ids-v{INDEX_FORMAT}-{digest}.parquet"


def build_id_index(con: duckdb.DuckDBPyConnection, urls: Sequence[str], target: Path) -> None:
    """Write the (id, part number) index of these part files, sorted by id (temporary name, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    try:
        # Only the `id` column is read; the file's position in `urls` is the part number.
        con.execute(
            f"""COPY (SELECT id, file_index::INTEGER AS part FROM read_parquet($1, hive_partitioning = false)
                      ORDER BY id, part)
                TO '{_sql_path(tmp)}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {INDEX_ROW_GROUP})""",
            [list(urls)],
        )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def lookup_ids(con: duckdb.DuckDBPyConnection, index: Path, ids: Sequence[str]) -> set[int]:
    """Part numbers holding any of `ids`. A short list becomes an IN filter that the row-group statistics of the
    sorted index answer by reading one row group per id."""
    if len(ids) <= 256:
        placeholders = ", ".join(f"${i + 2}" for i in range(len(ids)))
        sql = f"SELECT DISTINCT part FROM read_parquet($1) WHERE id IN ({placeholders})"
        rows = con.execute(sql, [str(index), *ids]).fetchall()
    else:
        sql = "SELECT DISTINCT part FROM read_parquet($1) WHERE list_contains($2::VARCHAR[], id)"
        rows = con.execute(sql, [str(index), list(ids)]).fetchall()
    return {int(r[0]) for r in rows}


def _sql_path(path: Path) -> str:
    # COPY ... TO takes no parameter; the path is ours (cache folder + hex digest), quoted all the same
    return str(path).replace("'", "''")


# -- part facts ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PartStats:
    datetime_nulls: int | None  # None: the footer does not say
    end_max: datetime | None


# A part's columns: name → (kind, digest of the DuckDB type, kept in the narrow copy). The kind types CQL2
# comparisons; the digest tells parts whose columns are typed alike (scanned together without union_by_name).
Columns = dict[str, tuple[str, str, bool]]


def narrow_keeps(name: str, duckdb_type: str) -> bool:
    """Whether the narrow copy of a part keeps a column: everything but nested objects (assets, links, object
    properties) and the second geometry, which are what makes parts wide (hundreds of leaf columns) and slow to
    bind; the bbox covering stays."""
    if name == "bbox":
        return True
    return name != "proj:geometry" and "STRUCT(" not in duckdb_type and not duckdb_type.startswith("MAP(")


def narrow_path(folder: Path, part_path: str) -> Path:
    return folder / "narrow" / f"v{NARROW_FORMAT}-{hashlib.sha256(part_path.encode()).hexdigest()[:32]}.parquet"


class PartCache:
    """Facts about part files, in memory and in JSON files of the cache folder (keyed by the part's path in the
    store: part names are unique and parts never change): footer stats and column types."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder if folder is not None and _writable(folder) else None
        self.stats: dict[str, PartStats] = {}
        self.columns: dict[str, Columns] = {}
        self._loaded: set[str] = set()

    def _load(self, name: str) -> dict[str, Any]:
        if name in self._loaded or self.folder is None:
            return {}
        self._loaded.add(name)
        path = self.folder / name
        if not path.exists():
            return {}
        try:
            body = orjson.loads(path.read_bytes())
            return body if isinstance(body, dict) else {}
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("ignoring unreadable search cache %s: %s", path, exc)
            return {}

    def _save(self, name: str, body: dict[str, Any]) -> None:
        if self.folder is None:
            return
        path = self.folder / name
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            if path.exists():  # keep what another process added meanwhile
                for key, value in orjson.loads(path.read_bytes()).items():
                    body.setdefault(key, value)
            tmp.write_bytes(orjson.dumps(body))
            os.replace(tmp, path)
        except (OSError, orjson.JSONDecodeError) as exc:
            log.warning("cannot write the search cache %s: %s", path, exc)
            tmp.unlink(missing_ok=True)

    def get_stats(self, con: duckdb.DuckDBPyConnection, parts: Sequence[tuple[str, str]]) -> dict[str, PartStats]:
        """Stats of (path, url) parts; footers are read (in one DuckDB call) only for parts not seen before."""
        for key, (nulls, end) in self._load(STATS_FILE).items():
            self.stats.setdefault(key, PartStats(nulls, datetime.fromisoformat(end) if end else None))
        missing = [(p, u) for p, u in parts if p not in self.stats]
        if missing:
            rows = con.execute(
                """SELECT file_name,
                          sum(stats_null_count) FILTER (WHERE path_in_schema = 'datetime'),
                          count(*) FILTER (WHERE path_in_schema = 'datetime' AND stats_null_count IS NULL),
                          max(TRY_CAST(stats_max_value AS TIMESTAMPTZ)) FILTER (WHERE path_in_schema = 'end_datetime'),
                          count(*) FILTER (WHERE path_in_schema = 'datetime')
                   FROM parquet_metadata($1) GROUP BY file_name""",
                [[u for _, u in missing]],
            ).fetchall()
            by_url = {r[0]: r for r in rows}
            for path, url in missing:
                row = by_url.get(url)
                if row is None:
                    continue
                _, nulls, unknown, end_max, datetime_chunks = row
                known = not unknown and datetime_chunks > 0 and nulls is not None
                self.stats[path] = PartStats(int(nulls) if known else None, end_max)
            self._save(
                STATS_FILE,
                {k: [v.datetime_nulls, v.end_max.isoformat() if v.end_max else None] for k, v in self.stats.items()},
            )
        return {p: self.stats[p] for p, _ in parts if p in self.stats}

    def get_columns(
        self, con: duckdb.DuckDBPyConnection, parts: Sequence[tuple[str, str]], kind_of: Callable[[str], str]
    ) -> dict[str, Columns]:
        """Column kinds and type digests of (path, url) parts (one DESCRIBE per part not seen before)."""
        for key, columns in self._load(COLUMNS_FILE).items():
            self.columns.setdefault(key, {name: (v[0], v[1], bool(v[2])) for name, v in columns.items()})
        missing = [(p, u) for p, u in parts if p not in self.columns]
        for path, url in missing:
            rows = con.execute("DESCRIBE SELECT * FROM read_parquet($1, hive_partitioning = false)", [url]).fetchall()
            self.columns[path] = {
                str(r[0]): (
                    kind_of(str(r[1])),
                    hashlib.sha1(str(r[1]).encode()).hexdigest()[:12],
                    narrow_keeps(str(r[0]), str(r[1])),
                )
                for r in rows
            }
        if missing:
            self._save(COLUMNS_FILE, {k: {n: list(v) for n, v in c.items()} for k, c in self.columns.items()})
        return {p: self.columns[p] for p, _ in parts}
