#!/usr/bin/env python3
"""Benchmark `cscale search` against plain DuckDB SQL on one stac-geoparquet file and rustac's DuckdbClient on
that same file, in the same run, over the same realistic federation.

Workloads (the issue's): N searches, each a 1° box around a real item + that item's month + its collection id
(a plain id: every provider with that id), returning at most --limit whole items; and N id lookups of random
items. Each tool answers the same queries, warm (opened once, like a server; the first call of each is timed
apart as "cold"), and we print p50 / p95 in ms, the ratios and the issue's targets (never asserted).

- cscale: `queries.search.Searcher(store)`: manifest pruning, DuckDB over narrow copies of the chosen parts, the
  page's items from the row copies → STAC items (dicts). `Searcher.prepare()` first builds its cache (narrow copies
  of the parts, footer facts, the id index, row copies; queries.search_cache, queries.search_rows) or finds it
  built by an earlier run (`--fresh-cache` empties it first); its time is printed apart.
- duckdb: the SQL a user would write on one file: `SELECT * FROM read_parquet(file) WHERE collection = ... AND
  datetime BETWEEN ... AND bbox.xmin <= ... AND ST_Intersects(geometry, box) ORDER BY datetime DESC LIMIT n`
  and `... WHERE id = ?`; rows as Arrow.
- rustac: `rustac.DuckdbClient(extension_directory=..., install_extensions=False).search(file, bbox=,
  datetime=, collections=, limit=)` and `search(file, ids=[...])` → STAC items (dicts). Its extensions come from
  the pinned duckdb-extension-{spatial,parquet,icu} wheels laid out as DuckDB expects.

Inputs are cached under .bench/search/ by (count, light/heavy, seed): the NDJSON (scripts/sample_federation.py,
five providers), the store (`cscale ingest`, one run per provider) and the one file (the store's items sorted by
datetime, row groups of 20,000 rows like the parts; `proj:geometry` dropped: rustac cannot decode a second WKB
column). `--store PATH` benchmarks an existing store instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
BIN_DIR = Path(sys.executable).parent
GENERATOR = ROOT / "scripts" / "sample_federation.py"
PROVIDERS = ("EODC", "GRNET", "CREODIAS", "CESNET", "INCD")
TOOLS = ("cscale", "duckdb", "rustac")
# The targets (at 10M items on 2 cores), printed next to the figures, never asserted.
TARGET_P50_MS = 50.0
TARGET_SPEEDUP_VS_RUSTAC = 10.0


def log(message: str) -> None:
    print(f"[bench_search] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- inputs
YEARS = range(2018, 2025)  # the generator's default span
BY_YEAR_ABOVE = 2_000_000  # larger federations are generated and ingested one year at a time


def prepare_store(work: Path, count: int, heavy: bool, seed: int) -> Path:
    """The federation's store, built once and cached. Up to BY_YEAR_ABOVE items: one NDJSON file per provider,
    kept. Above: one year at a time (count / 7 items in each year's span, the same density as one run over the
    whole span), each year's NDJSON deleted once ingested, so that 10M light items (~51 GB of NDJSON) need only a
    year's worth of disk; each year lands in its own partitions, so no ingest rewrites an earlier one's parts."""
    tag = f"{count}-{'heavy' if heavy else 'light'}-s{seed}"
    store = work / f"store-{tag}"
    done = work / f"store-{tag}.complete"
    if done.exists() or (count <= BY_YEAR_ABOVE and (store / "CURRENT").exists()):
        return store
    shutil.rmtree(store, ignore_errors=True)
    if count <= BY_YEAR_ABOVE:
        slices = [(work / f"inputs-{tag}", count, None)]
    else:
        slices = [(work / f"inputs-{tag}-{year}", count // len(YEARS), year) for year in YEARS]
    for inputs, n, year in slices:
        if not all((inputs / f"{p}.ndjson").exists() for p in PROVIDERS):
            span = f" for {year}" if year else ""
            log(f"generating {n:,} {'heavy' if heavy else 'light'} items{span} into {inputs}")
            cmd = [sys.executable, str(GENERATOR), "--out", str(inputs), "--count", str(n), "--seed", str(seed)]
            if year is not None:
                cmd += ["--start", f"{year}-01-01", "--end", f"{year}-12-31"]
            subprocess.run([*cmd, *(["--heavy"] if heavy else [])], check=True)
        for provider in PROVIDERS:
            started = time.perf_counter()
            cmd = [str(BIN_DIR / "cscale"), "-q", "ingest", str(inputs / f"{provider}.ndjson"), "--provider", provider]
            subprocess.run([*cmd, "--store", str(store), "--format", "json"], check=True, stdout=subprocess.DEVNULL)
            log(f"ingested {provider}{f' {year}' if year else ''} in {time.perf_counter() - started:.0f} s")
        if year is not None:
            shutil.rmtree(inputs)
    done.touch()
    return store


def prepare_one_file(work: Path, store: Path) -> Path:
    """Every item of the store's current version in one stac-geoparquet file, sorted by datetime, row groups of
    20,000 rows. Parts are each sorted by datetime, so the file is written a month at a time: the parts' row groups
    that reach into the month (their footer statistics say which) are read once with pyarrow, the month's rows
    conformed to one schema (as a commit does), sorted and appended. Sorting 10M heavy items (~150 GB as JSON) at
    once is out of reach for DuckDB on this machine, and a DuckDB query per month binds the wide schemas of every
    part each time (946 s at 1M heavy items; this 149 s, and 845 s with an 8 GB peak at 10M)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from harvester.arrow_rows import conform, target_schema
    from harvester.store import Store

    manifest = Store.open(str(store)).manifest()
    target = work / f"one-{store.name}-v{manifest.version}.parquet"
    if target.exists():
        return target
    paths = [str(store / p.path) for p in manifest.parts]
    log(f"writing {target.name} ({manifest.rows:,} items), a month at a time")
    started = time.perf_counter()
    groups: list[tuple[int, int, Any, Any, int]] = []  # (part, row group, datetime min, max, nulls)
    schemas = []
    for index, path in enumerate(paths):
        meta = pq.read_metadata(path)
        schemas.append((meta.schema.to_arrow_schema().remove_metadata(), meta.num_rows))
        column = next((c for c in range(meta.num_columns) if meta.schema.column(c).path == "datetime"), -1)
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(column).statistics if column >= 0 else None
            known = stats is not None and stats.has_min_max
            nulls = stats.null_count if stats is not None else meta.row_group(g).num_rows
            groups.append((index, g, stats.min if known else None, stats.max if known else None, nulls))
    schema = target_schema(schemas)
    schema = schema.remove(schema.get_field_index("proj:geometry")) if "proj:geometry" in schema.names else schema
    geo = (pq.read_schema(paths[0]).metadata or {})[b"geo"]  # GeoParquet: WKB geometry, bbox covering
    dated = [g for g in groups if g[2] is not None]
    first = min(g[2] for g in dated)
    last = max(g[3] for g in dated)
    windows: list[tuple[Any, Any]] = [(None, None)]  # the items without a datetime, first
    month = datetime(first.year, first.month, 1, tzinfo=UTC)
    while month <= last:
        following = (month + timedelta(days=32)).replace(day=1)
        windows.append((month, following))
        month = following
    files: dict[int, pq.ParquetFile] = {}
    decoded: dict[tuple[int, int], tuple[pa.Table, Any]] = {}  # row groups reaching into the next month
    tmp = target.with_suffix(".tmp")
    try:
        with pq.ParquetWriter(tmp, schema.with_metadata({b"geo": geo}), compression="zstd") as writer:
            for low, high in windows:
                pieces = []
                if low is None:
                    wanted = [g for g in groups if g[4]]
                else:
                    wanted = [g for g in dated if g[2] < high and g[3] >= low]
                for part, g, _, top, _ in wanted:
                    table = decoded[(part, g)][0] if (part, g) in decoded else None
                    if table is None:
                        pf = files.get(part) or files.setdefault(part, pq.ParquetFile(paths[part]))
                        table = pf.read_row_group(g).drop_columns(
                            ["proj:geometry"] if "proj:geometry" in pf.schema_arrow.names else []
                        )
                        if low is not None and top >= high:
                            decoded[(part, g)] = (table, top)
                    column = table.column("datetime")
                    if low is None:
                        mask = pc.is_null(column)
                    else:
                        mask = pc.and_(pc.greater_equal(column, low), pc.less(column, high))
                    chosen = table.filter(mask)
                    if chosen.num_rows:
                        pieces.append(conform(chosen, schema))
                if low is not None:
                    decoded = {k: v for k, v in decoded.items() if v[1] >= high}
                if pieces:
                    month_rows = pa.concat_tables(pieces)
                    if low is not None:
                        month_rows = month_rows.sort_by("datetime")
                    writer.write_table(month_rows, row_group_size=20_000)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.rename(target)
    log(f"wrote it in {time.perf_counter() - started:.0f} s")
    return target


def rustac_extensions(work: Path) -> Path:
    """DuckDB's extension layout (v<version>/<platform>/<name>.duckdb_extension) from the pinned wheels."""
    import duckdb

    from queries.connection import extension_path

    platform = duckdb.connect().execute("PRAGMA platform").fetchone()[0]  # type: ignore[index]
    target = work / "extensions" / f"v{duckdb.__version__}" / platform
    target.mkdir(parents=True, exist_ok=True)
    for name in ("spatial", "parquet", "icu"):
        shutil.copy(extension_path(name), target / f"{name}.duckdb_extension")
    return work / "extensions"


# ---------------------------------------------------------------------------------------------------- workloads
@dataclass(frozen=True)
class Search:
    bbox: tuple[float, float, float, float]
    start: datetime
    end: datetime
    collection: str

    @property
    def interval(self) -> str:
        return f"{self.start:%Y-%m-%dT%H:%M:%SZ}/{self.end:%Y-%m-%dT%H:%M:%SZ}"


def workloads(store: Path, searches: int, lookups: int, seed: int) -> tuple[list[Search], list[str]]:
    """Searches around random items with a geometry (their box, their month, their collection); random ids."""
    from queries import connect

    con = connect(str(store))
    rows = con.execute(
        """SELECT id, collection, datetime, ST_X(ST_Centroid(geometry)), ST_Y(ST_Centroid(geometry))
           FROM items WHERE geometry IS NOT NULL AND datetime IS NOT NULL AND collection IS NOT NULL
           USING SAMPLE reservoir(2000 ROWS) REPEATABLE (42)"""
    ).fetchall()
    rng = random.Random(seed)
    rng.shuffle(rows)
    out = []
    for _, collection, when, x, y in rows[:searches]:
        x0, y0 = max(-180.0, x - 0.5), max(-90.0, y - 0.5)
        start = datetime(when.year, when.month, 1, tzinfo=UTC)
        end = (start + timedelta(days=32)).replace(day=1) - timedelta(seconds=1)
        out.append(Search((x0, y0, min(180.0, x0 + 1), min(90.0, y0 + 1)), start, end, collection))
    ids = [r[0] for r in rows[searches : searches + lookups]]
    return out, ids


# ---------------------------------------------------------------------------------------------------- tools
@dataclass
class Timing:
    cold_ms: float = 0.0
    ms: list[float] = field(default_factory=list)
    results: list[set[str]] = field(default_factory=list)

    def p(self, q: float) -> float:
        ordered = sorted(self.ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def timed(run: Callable[[Any], set[str]], work: Sequence[Any]) -> Timing:
    timing = Timing()
    started = time.perf_counter()
    run(work[0])  # cold: first footers, first id-index use...
    timing.cold_ms = (time.perf_counter() - started) * 1000
    for item in work:
        started = time.perf_counter()
        found = run(item)
        timing.ms.append((time.perf_counter() - started) * 1000)
        timing.results.append(found)
    return timing


def bench_cscale(
    store: Path, searches: list[Search], ids: list[str], limit: int, cache: Path, fresh: bool
) -> dict[str, Any]:
    from queries.search import Searcher, make_query
    from queries.search_cache import narrow_path
    from queries.search_rows import rows_path

    if fresh:  # measure what a new version costs: narrow copies, id index, row copies
        shutil.rmtree(cache, ignore_errors=True)
    with Searcher(str(store), cache=cache) as searcher:

        def search(s: Search) -> set[str]:
            query = make_query(bbox=list(s.bbox), datetime=s.interval, collections=[s.collection], limit=limit)
            return {i["id"] for i in searcher.search(query).items}

        def lookup(item_id: str) -> set[str]:
            return {i["id"] for i in searcher.search(make_query(ids=[item_id], limit=limit)).items}

        prepared = searcher.prepare()
        folder = searcher.cache_dir
        sizes = {
            "row copies": sum(_size(rows_path(folder, p.path)) for p in searcher.manifest.parts),
            "narrow copies": sum(_size(narrow_path(folder, p.path)) for p in searcher.manifest.parts),
        }
        return {"search": timed(search, searches), "ids": timed(lookup, ids), "prepare": prepared, "cache": sizes}


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def bench_duckdb(one: Path, searches: list[Search], ids: list[str], limit: int) -> dict[str, Any]:
    from queries.connection import new_connection

    con = new_connection()
    con.execute("SET parquet_metadata_cache = true")

    def search(s: Search) -> set[str]:
        xmin, ymin, xmax, ymax = s.bbox
        table = con.execute(
            """SELECT * FROM read_parquet($1)
               WHERE collection = $2 AND datetime >= $3 AND datetime <= $4
                 AND bbox.xmin <= $7 AND bbox.xmax >= $5 AND bbox.ymin <= $8 AND bbox.ymax >= $6
                 AND ST_Intersects(geometry, ST_MakeEnvelope($5, $6, $7, $8))
               ORDER BY datetime DESC LIMIT $9""",
            [str(one), s.collection, s.start, s.end, xmin, ymin, xmax, ymax, limit],
        ).to_arrow_table()
        return set(table.column("id").to_pylist())

    def lookup(item_id: str) -> set[str]:
        table = con.execute("SELECT * FROM read_parquet($1) WHERE id = $2", [str(one), item_id]).to_arrow_table()
        return set(table.column("id").to_pylist())

    return {"search": timed(search, searches), "ids": timed(lookup, ids)}


def bench_rustac(one: Path, searches: list[Search], ids: list[str], limit: int, work: Path) -> dict[str, Any]:
    import rustac

    client = rustac.DuckdbClient(extension_directory=rustac_extensions(work), install_extensions=False)

    def search(s: Search) -> set[str]:
        items = client.search(str(one), bbox=list(s.bbox), datetime=s.interval, collections=[s.collection], limit=limit)
        return {i["id"] for i in items}

    def lookup(item_id: str) -> set[str]:
        return {i["id"] for i in client.search(str(one), ids=[item_id], limit=limit)}

    return {"search": timed(search, searches), "ids": timed(lookup, ids)}


# ---------------------------------------------------------------------------------------------------- report
def report(results: dict[str, dict[str, Any]], context: dict[str, Any], as_json: bool) -> None:
    if as_json:
        body = {
            "context": context,
            "results": {
                tool: {
                    w: {"p50_ms": t.p(0.5), "p95_ms": t.p(0.95), "cold_ms": t.cold_ms, "runs": len(t.ms)}
                    for w, t in r.items()
                    if isinstance(t, Timing)
                }
                | ({"prepare_s": r["prepare"], "cache_bytes": r["cache"]} if "prepare" in r else {})
                for tool, r in results.items()
            },
        }
        print(json.dumps(body, indent=2, default=str))
        return
    print(", ".join(f"{k}: {v}" for k, v in context.items()))
    print(f"{'tool':8} {'workload':8} {'p50 ms':>9} {'p95 ms':>9} {'cold ms':>9}")
    for tool, r in results.items():
        for workload in ("search", "ids"):
            t = r[workload]
            print(f"{tool:8} {workload:8} {t.p(0.5):9.1f} {t.p(0.95):9.1f} {t.cold_ms:9.1f}")
    if "cscale" in results:
        ours = results["cscale"]
        steps = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.0f} s" for k, v in ours["prepare"].items())
        print(f"cscale prepare() once per version, before timing: {steps}")
        print("cscale search cache: " + ", ".join(f"{k} {v / 1e6:,.0f} MB" for k, v in ours["cache"].items()))
        for workload in ("search", "ids"):
            p50 = ours[workload].p(0.5)
            verdict = "met" if p50 < TARGET_P50_MS else "missed"
            print(f"target p50 < {TARGET_P50_MS:.0f} ms ({workload}): {p50:.1f} ms, {verdict}")
            for peer in ("duckdb", "rustac"):
                if peer in results:
                    theirs = results[peer][workload]
                    ratio95 = theirs.p(0.95) / ours[workload].p(0.95)
                    target = f"target {TARGET_SPEEDUP_VS_RUSTAC:.0f}x" if peer == "rustac" else "target >= 1x"
                    print(f"  {peer} / cscale: p50 {theirs.p(0.5) / p50:.1f}x, p95 {ratio95:.1f}x ({target})")
                    # A peer may have answered only the first --peer-queries of them.
                    same = sum(a == b for a, b in zip(ours[workload].results, theirs.results, strict=False))
                    print(f"  same ids as {peer}: {same} of {len(theirs.results)} queries")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=1_000_000, help="items in the federation (default 1,000,000)")
    parser.add_argument("--heavy", action="store_true", help="Sentinel-2 L2A items as heavy as Planetary Computer's")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--store", type=Path, help="benchmark this existing store instead of generating one")
    parser.add_argument("--searches", type=int, default=30, help="bbox + month + collection searches (default 30)")
    parser.add_argument("--lookups", type=int, default=30, help="id lookups (default 30)")
    parser.add_argument("--limit", type=int, default=100, help="results per search (default 100)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--work", type=Path, default=ROOT / ".bench" / "search", help="cache folder")
    parser.add_argument(
        "--peer-queries",
        type=int,
        default=0,
        help="rustac answers only the first N searches and lookups (its searches take ~13 s each at 1M items)",
    )
    parser.add_argument(
        "--duckdb-queries",
        type=int,
        default=0,
        help="plain DuckDB answers only the first N searches and lookups (~5-6 s each at 10M heavy items)",
    )
    parser.add_argument(
        "--fresh-cache",
        action="store_true",
        help="empty cscale's search cache first, so that prepare() is timed from nothing (at 10M heavy items the "
        "row copies take ~30 min on 2 cores); by default what an earlier run prepared is kept",
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    tools = [t for t in args.tools.split(",") if t]
    if unknown := set(tools) - set(TOOLS):
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    args.work.mkdir(parents=True, exist_ok=True)
    store = args.store.resolve() if args.store else prepare_store(args.work, args.count, args.heavy, args.seed)
    one = prepare_one_file(args.work, store) if {"duckdb", "rustac"} & set(tools) else None
    searches, ids = workloads(store, args.searches, args.lookups, args.seed)
    from harvester.store import Store

    manifest = Store.open(str(store)).manifest()
    context = {
        "items": f"{manifest.rows:,}",
        "parts": len(manifest.parts),
        "store MB": round(sum(p.bytes for p in manifest.parts) / 1e6),
        "one file MB": round(one.stat().st_size / 1e6) if one else None,
        "cpus": os.cpu_count(),
        "searches": len(searches),
        "lookups": len(ids),
        "limit": args.limit,
    }
    results: dict[str, dict[str, Any]] = {}
    for tool in tools:
        log(f"running {tool}")
        if tool == "cscale":
            results[tool] = bench_cscale(store, searches, ids, args.limit, args.work / "cache", args.fresh_cache)
        elif tool == "duckdb":
            assert one is not None
            n = args.duckdb_queries or max(len(searches), len(ids))
            results[tool] = bench_duckdb(one, searches[:n], ids[:n], args.limit)
        else:
            assert one is not None
            n = args.peer_queries or max(len(searches), len(ids))
            results[tool] = bench_rustac(one, searches[:n], ids[:n], args.limit, args.work)
    report(results, context, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
