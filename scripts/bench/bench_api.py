#!/usr/bin/env python3
"""Benchmark `cscale harvest api` against pystac-client on the same STAC API server, in one run.

This is a measurement, not a test: nothing here fails on a slow tool (the exit code is 1 only when the two
tools do not return the same item set).

- The server: stac-fastapi-pgstac on a throwaway PostgreSQL + PostGIS cluster on 127.0.0.1 (tests/stac_servers.py
  starts it), loaded with pypgstac with N generated items of one provider over several collections
  (scripts/sample_federation.py, cached in .bench/inputs/).
- ``cscale``: ``cscale -q harvest api URL --provider BENCH --store STORE`` into a fresh store: a full harvest
  (windows paged in parallel), normalised, validated, hashed, partitioned, written and committed as one
  snapshot version.
- ``pystac-client``: ``Client.open(URL).search(limit=L).items_as_dicts()`` in a child Python (fetch only: every
  item as a dict, ids written out to compare the sets), with the same page size as cscale; and
  ``pystac-client-default``: the same without `limit`, i.e. the server's default page size (pgstac: 10), as
  pystac-client is used when nobody sets it.
- Before the measured runs, one untimed full read warms the database (the first reader would pay for it).
- Both again behind a proxy (its own process) that adds `--latency` seconds to every response, as a server
  across a continent does.

Every tool runs as its own process tree; wall time and the peak RSS of the tree are measured (bench_ingest.py's
measuring code), and the server's CPU seconds during the run. Tools take turns for `--repeat` rounds and each
keeps its fastest (the machine is shared). The item sets must be identical ((collection, id) pairs).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
from bench_ingest import Run, fmt_bytes, log, measure, remove, table, tool_path  # noqa: E402
from stac_servers import FaultProxy, PgStacServer, collections_for, pgstac_missing  # noqa: E402

PROVIDER = "BENCH"
TARGETS = {"local": 1.5, "latency": 5.0}  # the speed-up targets for cscale over pystac-client

PYSTAC_CLIENT_CHILD = """
import sys, orjson
from pystac_client import Client
url, limit, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
search = Client.open(url).search(limit=limit or None)
ids = [[item.get("collection"), item["id"]] for item in search.items_as_dicts()]
open(out, "wb").write(orjson.dumps(ids))
print(len(ids))
"""


def items_for(workdir: Path, count: int, seed: int) -> Path:
    """The cached NDJSON of `count` generated items (one provider, every collection it serves)."""
    path = workdir / "inputs" / f"api-{count}-s{seed}.ndjson"
    if path.exists():
        log(f"using cached input {path}")
        return path
    from sample_federation import generate, write_ndjson

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    log(f"generating {count:,} items")
    write_ndjson(tmp, generate(provider="EODC", count=count, seed=seed))
    os.replace(tmp, path)
    return path


def load(server: PgStacServer, path: Path) -> int:
    items = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    started = time.perf_counter()
    server.load(collections_for(items), items)
    log(f"loaded {len(items):,} items into pgstac in {time.perf_counter() - started:.1f} s")
    return len(items)


def server_cpu(server: PgStacServer) -> float:
    """CPU seconds the server has used so far: uvicorn's process tree and PostgreSQL's (its backends included,
    those that exited through the postmaster's children times)."""
    import psutil

    total = 0.0
    roots = [server.api.pid] if server.api else []
    pidfile = server.dir / "data" / "postmaster.pid"
    if pidfile.exists():
        roots.append(int(pidfile.read_text().split()[0]))
    for pid in roots:
        try:
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def cscale_ids(store: Path) -> set[tuple[str, str]]:
    sys.path.insert(0, str(ROOT))
    from queries import connect

    con = connect(str(store))
    try:
        return {(str(c), str(i)) for c, i in con.execute("SELECT collection, id FROM items").fetchall()}
    finally:
        con.close()


def run_pair(
    server: PgStacServer, url: str, scenario: str, out: Path, args: argparse.Namespace, items: int
) -> dict[str, Any]:
    """Every tool on `url`, `--repeat` rounds in turn (A B A B): each keeps its fastest run, so a burst of the
    machine's other work hits one round of one tool, not the comparison."""
    results: dict[str, Run] = {}
    sets: dict[str, set[tuple[str, str]]] = {}
    for round_ in range(args.repeat):
        for tool in args.tools:
            name = f"{tool}-{scenario}"
            if tool == "cscale":
                store = out / f"store-{scenario}"
                remove(store)
                command = [tool_path("cscale"), "-q", "harvest", "api", url, "--provider", PROVIDER]
                command += ["--store", str(store), "--limit", str(args.limit), "--concurrency", str(args.concurrency)]
                command += ["--format", "json"]
            else:
                ids_file = out / f"{name}.json"
                limit = 0 if tool == "pystac-client-default" else args.limit
                command = [sys.executable, "-c", PYSTAC_CLIENT_CHILD, url, str(limit), str(ids_file)]
            run = Run(tool=name, command=command, items=items)
            cpu = server_cpu(server)
            measure(run, out, args.timeout, None)
            run.counts["server_cpu_s"] = round(server_cpu(server) - cpu, 1)
            if not run.finished:
                log(f"{name} did not finish: {run.status}: {run.stderr_tail[-500:]}")
                results.setdefault(name, run)
                continue
            if tool == "cscale":
                run.counts.update(orjson.loads((out / f"{name}.stdout").read_bytes())[0])
                sets[tool] = cscale_ids(store)
            else:
                sets[tool] = {(str(c), str(i)) for c, i in orjson.loads(ids_file.read_bytes())}
            log(
                f"{name} (round {round_ + 1}): {len(sets[tool]):,} items in {run.wall_s:.1f} s "
                f"(server CPU {run.counts['server_cpu_s']} s)"
            )
            best = results.get(name)
            if best is None or not best.finished or run.wall_s < best.wall_s:
                results[name] = run
    same = all(other == sets.get("cscale") for other in sets.values()) if len(sets) > 1 else None
    return {"runs": results, "same_items": same, "items": {k: len(v) for k, v in sets.items()}}


def report_rows(scenarios: dict[str, dict[str, Any]]) -> tuple[list[list[str]], list[dict[str, Any]]]:
    """One row per run; a pystac-client run carries cscale's speed-up over it (its wall time / cscale's)."""
    rows, out = [], []
    for scenario, result in scenarios.items():
        runs: dict[str, Run] = result["runs"]
        ours = runs.get(f"cscale-{scenario}")
        for name, run in runs.items():
            ratio = None
            if not name.startswith("cscale") and ours is not None and ours.finished and run.finished and ours.wall_s:
                ratio = run.wall_s / ours.wall_s
            rows.append(
                [
                    name,
                    run.status,
                    f"{run.wall_s:.1f}",
                    f"{run.items_per_s:,.0f}" if run.items_per_s else "-",
                    fmt_bytes(run.peak_rss),
                    f"{run.counts.get('server_cpu_s', 0):.1f}",
                    f"{ratio:.2f}x" if ratio else "",
                    {True: "yes", False: "NO", None: "-"}[result["same_items"]],
                ]
            )
            counts = {k: run.counts.get(k) for k in ("seen", "written", "requests", "retries", "server_cpu_s")}
            out.append(
                {
                    "tool": name,
                    "status": run.status,
                    "seconds": round(run.wall_s, 3),
                    "items_per_s": run.items_per_s,
                    "peak_rss": run.peak_rss,
                    "cscale_speedup": ratio,
                    "target": TARGETS[scenario] if ratio is not None else None,
                    "same_items": result["same_items"],
                    "report": counts,
                }
            )
    return rows, out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="cscale harvest api vs pystac-client items_as_dicts() on a local stac-fastapi-pgstac, "
        "directly and behind a proxy adding latency.",
        epilog="Example: scripts/bench/bench_api.py --count 100000   (the issue's size; the default runs in minutes)",
    )
    parser.add_argument("--count", type=int, default=20000, help="items on the server (default 20000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=1000, help="page size asked by both tools (default 1000)")
    parser.add_argument("--concurrency", type=int, default=8, help="cscale --concurrency (default 8)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the proxy adds per response (0.1)")
    parser.add_argument("--server-workers", type=int, default=2, help="uvicorn workers of the server (default 2)")
    parser.add_argument("--tools", default="cscale,pystac-client,pystac-client-default", help="comma-separated subset")
    parser.add_argument("--scenarios", default="local,latency", help="comma-separated: local, latency")
    parser.add_argument("--repeat", type=int, default=2, help="rounds per tool, the fastest kept (default 2)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool (default 1800)")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench", help="cache and outputs (default .bench)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    args.tools = [t for t in args.tools.split(",") if t]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = pgstac_missing()
    if missing:
        sys.exit(f"bench_api: {missing}")
    source = items_for(args.workdir, args.count, args.seed)
    out = args.workdir / "api"
    out.mkdir(parents=True, exist_ok=True)
    server = PgStacServer(workers=args.server_workers)
    scenarios: dict[str, dict[str, Any]] = {}
    loadavg = os.getloadavg()
    try:
        log(f"starting stac-fastapi-pgstac ({args.server_workers} uvicorn workers)")
        server.start()
        items = load(server, source)
        # One untimed full read first: otherwise whichever tool runs first pays for a cold database and cache.
        warm = Run(tool="warm-up", command=[sys.executable, "-c", PYSTAC_CLIENT_CHILD, server.url, "1000", "/dev/null"])
        measure(warm, out, args.timeout, None)
        log(f"warm-up read: {warm.wall_s:.1f} s ({warm.status})")
        for scenario in args.scenarios:
            if scenario == "local":
                scenarios[scenario] = run_pair(server, server.url, scenario, out, args, items)
            else:
                proxy = FaultProxy(server.url, delay=args.latency).spawn()
                try:
                    scenarios[scenario] = run_pair(server, proxy.url, scenario, out, args, items)
                finally:
                    proxy.stop()
    finally:
        server.stop()
    rows, results = report_rows(scenarios)
    machine = {"cpus": os.cpu_count(), "load_1min_before": loadavg[0], "load_1min_after": os.getloadavg()[0]}
    if args.json:
        summary = {"count": args.count, "limit": args.limit, "latency": args.latency, "machine": machine}
        print(json.dumps({**summary, "results": results}))
    else:
        print()
        print(
            f"machine: {machine['cpus']} CPUs, load average {machine['load_1min_before']:.1f} before, "
            f"{machine['load_1min_after']:.1f} after (other jobs share the CPUs: compare tools within one run)"
        )
        print(
            f"{args.count:,} items, pages of {args.limit}, cscale --concurrency {args.concurrency}, "
            f"+{args.latency * 1000:.0f} ms per response behind the proxy, best of {args.repeat}; targets: "
            + ", ".join(f"{k} {v}x" for k, v in TARGETS.items())
        )
        print(
            table(
                ["tool", "status", "seconds", "items/s", "peak RSS", "server CPU s", "cscale speed-up", "same items"],
                rows,
                [False, False, True, True, True, True, True, False],
            )
        )
    return 0 if all(r["same_items"] is not False for r in scenarios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
