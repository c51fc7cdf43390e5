#!/usr/bin/env python3
"""Benchmark `cscale harvest static` against rustac and pystac on the same static catalog over HTTP, in one run.

This is a measurement, not a test: nothing here fails on a slow or hungry tool.

- The catalog: heavy generated items (~15 KB, like Planetary Computer's Sentinel-2 L2A) from
  scripts/sample_federation.py, written as a static tree: root catalog → collection → one sub-catalog per month
  → item files, with relative links. It is served by nginx on 127.0.0.1 (a temporary config; the benchmark
  starts and stops its own nginx).
- ``cscale``: ``cscale -q harvest static URL --provider BENCH --store STORE`` into a fresh store: crawl,
  normalise, validate, hash, partition, write and commit one snapshot version. ``cscale-again`` then runs the
  same command on the same store: a nightly re-harvest of an unchanged tree (conditional requests, no version).
- ``rustac``: ``rustac crawl --opt allow_http=true URL OUTDIR -o ndjson`` (crawl only: items into NDJSON files).
- ``pystac``: ``pystac.Catalog.from_file(URL).get_items(recursive=True)`` in a child Python (walk only).

Every tool runs as its own process tree; a sampler sums the RSS of the tree every ~50 ms and keeps the peak
(see bench_ingest.py, whose measuring code this reuses), and another samples the connections nginx holds open,
so the cap on connections in flight shows.

`--write-tree DIR --input NDJSON` only writes the static tree (scripts/demo.sh uses it).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import (  # the sibling benchmark's measuring code (scripts/bench is not a package)
    GIB,
    Run,
    count_items,
    fmt_bytes,
    fmt_ratio,
    generate_input,
    log,
    measure,
    remove,
    table,
    tool_path,
)

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("cscale", "cscale-again", "rustac", "pystac")
PROVIDER = "BENCH"
STRUCTURAL_RELS = frozenset({"self", "root", "parent", "collection"})

PYSTAC_CHILD = (
    "import sys, pystac\n"
    "catalog = pystac.Catalog.from_file(sys.argv[1])\n"
    "print(sum(1 for _ in catalog.get_items(recursive=True)))\n"
)


# ----------------------------------------------------------------------------------------- the static tree


def write_tree(items: Iterable[dict[str, Any]], out: Path, *, title: str = "cscale benchmark catalog") -> int:
    """Write a static STAC tree with relative links: catalog.json → COLLECTION/collection.json →
    COLLECTION/YYYY-MM/catalog.json → COLLECTION/YYYY-MM/ID.json. Returns the number of items written."""
    out.mkdir(parents=True, exist_ok=True)
    months: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    extents: dict[str, list[Any]] = {}
    count = 0
    for item in items:
        coll = str(item.get("collection") or "items")
        when = str(item["properties"].get("datetime") or item["properties"].get("start_datetime"))
        month = when[:7]
        folder = out / coll / month
        if (coll, month) not in months:
            folder.mkdir(parents=True, exist_ok=True)
        keep = [link for link in item.get("links", []) if link.get("rel") not in STRUCTURAL_RELS]
        item["links"] = [
            *keep,
            {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
            {"rel": "parent", "href": "./catalog.json", "type": "application/json"},
            {"rel": "collection", "href": "../collection.json", "type": "application/json"},
        ]
        (folder / f"{item['id']}.json").write_bytes(orjson.dumps(item))
        months[(coll, month)].append(item["id"])
        bbox = item.get("bbox") or [-180, -90, 180, 90]
        ext = extents.setdefault(coll, [list(bbox[:2]) + list(bbox[-2:]), when, when])
        ext[0] = [min(ext[0][0], bbox[0]), min(ext[0][1], bbox[1]), max(ext[0][2], bbox[-2]), max(ext[0][3], bbox[-1])]
        ext[1], ext[2] = min(ext[1], when), max(ext[2], when)
        count += 1
    for (coll, month), ids in months.items():
        sub = {
            "type": "Catalog",
            "stac_version": "1.0.0",
            "id": f"{coll}-{month}",
            "description": f"{coll}, {month}",
            "links": [
                {"rel": "root", "href": "../../catalog.json", "type": "application/json"},
                {"rel": "parent", "href": "../collection.json", "type": "application/json"},
                *({"rel": "item", "href": f"./{i}.json", "type": "application/geo+json"} for i in ids),
            ],
        }
        (out / coll / month / "catalog.json").write_bytes(orjson.dumps(sub))
    for coll, (bbox, start, end) in extents.items():
        children = sorted(m for c, m in months if c == coll)
        collection = {
            "type": "Collection",
            "stac_version": "1.0.0",
            "id": coll,
            "description": f"{coll} (generated)",
            "license": "proprietary",
            "extent": {"spatial": {"bbox": [bbox]}, "temporal": {"interval": [[start, end]]}},
            "links": [
                {"rel": "root", "href": "../catalog.json", "type": "application/json"},
                {"rel": "parent", "href": "../catalog.json", "type": "application/json"},
                *({"rel": "child", "href": f"./{m}/catalog.json", "type": "application/json"} for m in children),
            ],
        }
        (out / coll / "collection.json").write_bytes(orjson.dumps(collection))
    root = {
        "type": "Catalog",
        "stac_version": "1.0.0",
        "id": "root",
        "description": title,
        "links": [
            {"rel": "root", "href": "./catalog.json", "type": "application/json"},
            *({"rel": "child", "href": f"./{c}/collection.json", "type": "application/json"} for c in sorted(extents)),
        ],
    }
    (out / "catalog.json").write_bytes(orjson.dumps(root))
    return count


def ndjson_items(path: Path) -> Iterable[dict[str, Any]]:
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)


def cached_tree(workdir: Path, source: Path) -> Path:
    """The tree for an input, written once (a marker file says it is complete)."""
    tree = workdir / "static" / source.stem
    marker = tree / ".complete"
    if marker.exists():
        log(f"using cached tree {tree}")
        return tree
    remove(tree)
    log(f"writing the static tree {tree} ...")
    count = write_tree(ndjson_items(source), tree)
    marker.write_text(f"{count}\n")
    return tree


# ------------------------------------------------------------------------------------------------- nginx


class Nginx:
    """nginx serving one folder on 127.0.0.1, with its own temporary config, pid and log files."""

    def __init__(self, root: Path, workdir: Path) -> None:
        self.root = root
        self.dir = workdir / "nginx"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            sys.exit("bench_static: nginx not found (as root: apt-get install -y nginx)")
        remove(self.dir)
        (self.dir / "tmp").mkdir(parents=True)
        temp = self.dir / "tmp"
        conf = self.dir / "nginx.conf"
        conf.write_text(
            f"""worker_processes 2;
daemon off;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  types {{ application/json json; }}
  client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy; fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
  server {{ listen 127.0.0.1:{self.port}; root {self.root}; }}
}}
"""
        )
        log_file = (self.dir / "stderr.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(self.dir)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.__exit__()
        sys.exit(f"bench_static: nginx did not start; see {self.dir}/stderr.log and error.log")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/catalog.json"

    def connections(self) -> int:
        """Established client connections nginx holds now (over its worker processes)."""
        if self.proc is None:
            return 0
        total = 0
        try:
            procs = [psutil.Process(self.proc.pid), *psutil.Process(self.proc.pid).children()]
        except psutil.Error:
            return 0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                total += sum(
                    1
                    for c in p.net_connections(kind="tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                )
        return total


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ConnectionSampler(threading.Thread):
    def __init__(self, nginx: Nginx) -> None:
        super().__init__(daemon=True)
        self.nginx = nginx
        self.peak = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.nginx.connections())
            self._done.wait(0.1)

    def finish(self) -> int:
        self._done.set()
        self.join()
        return self.peak


# ------------------------------------------------------------------------------------------------- tools


def bench(tool: str, nginx: Nginx, items: int, out_dir: Path, args: argparse.Namespace) -> tuple[Run, int, int]:
    """One tool; returns its run, the items it found and the peak number of connections nginx saw."""
    store = out_dir / "cscale-store"
    if tool == "cscale":
        remove(store)
    if tool in ("cscale", "cscale-again"):
        cmd = [tool_path("cscale"), "-q", "harvest", "static", nginx.url, "--provider", PROVIDER]
        cmd += ["--store", str(store), "--format", "json", "--concurrency", str(args.concurrency)]
    elif tool == "rustac":
        remove(out_dir / "rustac")
        cmd = [tool_path("rustac"), "crawl", "--opt", "allow_http=true", nginx.url, str(out_dir / "rustac")]
        cmd += ["-o", "ndjson"]
    else:
        cmd = [sys.executable, "-c", PYSTAC_CHILD, nginx.url]
    run = Run(tool, cmd, items=items)
    sampler = ConnectionSampler(nginx)
    sampler.start()
    measure(run, out_dir, args.timeout, int(args.max_rss * GIB) if args.max_rss > 0 else None)
    connections = sampler.finish()
    found = 0
    stdout = (out_dir / f"{tool}.stdout").read_text(errors="replace")
    if tool.startswith("cscale"):
        with contextlib.suppress(ValueError, IndexError, TypeError):
            report = json.loads(stdout)
            run.counts = report[0] if isinstance(report, list) else report
            found = int(run.counts.get("written", 0))
        if tool == "cscale-again":
            found = int(run.counts.get("documents_unchanged", 0))  # documents, all of them unchanged
    elif tool == "rustac":
        found = sum(count_items(p) for p in (out_dir / "rustac").rglob("*.ndjson"))
    else:
        with contextlib.suppress(ValueError):
            found = int(stdout.strip().splitlines()[-1])
    if tool == "cscale-again" or (tool == "rustac" and not args.keep_outputs):
        remove(out_dir / "rustac")
    if tool == "cscale-again" and not args.keep_outputs:
        remove(store)
    return run, found, connections


# ------------------------------------------------------------------------------------------------ report


def build_report(
    tree: Path, items: int, args: argparse.Namespace, results: list[tuple[Run, int, int]], load: float
) -> dict[str, Any]:
    by_tool = {r.tool: r for r, _, _ in results}
    rows = []
    for run, found, connections in results:
        rows.append(
            {
                "tool": run.tool,
                "finished": run.finished,
                "status": run.status,
                "wall_s": run.wall_s,
                "items_per_s": run.items_per_s,
                "peak_rss_bytes": run.peak_rss,
                "peak_connections": connections,
                "found": found,
                "cscale_counts": run.counts or None,
                "command": run.command,
            }
        )
    cscale = by_tool.get("cscale")
    ratios = {}
    if cscale is not None and cscale.items_per_s:
        for peer in ("rustac", "pystac"):
            other = by_tool.get(peer)
            if other is not None and other.wall_s > 0:
                ratios[peer] = cscale.items_per_s / (other.items / other.wall_s)
    peak_conn = next((c for r, _, c in results if r.tool == "cscale"), None)
    targets = []
    if cscale is not None:
        speed = ratios.get("rustac")
        targets = [
            {"target": "crawl + commit vs rustac's crawl", "required": ">= 1x",
             "shown": fmt_ratio(speed), "met": None if speed is None else speed >= 1.0},
            {"target": "peak RSS of the process tree", "required": "< 1 GiB",
             "shown": fmt_bytes(cscale.peak_rss), "met": cscale.finished and cscale.peak_rss < GIB},
            {"target": "connections in flight", "required": f"<= --concurrency {args.concurrency}",
             "shown": str(peak_conn), "met": peak_conn is not None and peak_conn <= args.concurrency},
        ]  # fmt: skip
    warnings = []
    for run, found, _ in results:
        expected = items if run.tool != "cscale-again" else None
        if not run.finished:
            warnings.append(f"{run.tool} did not finish ({run.status})")
        elif expected is not None and found != expected:
            warnings.append(f"{run.tool} found {found:,} items, the tree holds {expected:,}")
        if run.tool == "cscale-again" and run.counts.get("committed"):
            warnings.append("the second cscale run committed a version although nothing changed")
    return {
        "tree": str(tree),
        "items": items,
        "machine": {"cpus": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total, "load_1min_before": load},
        "concurrency": args.concurrency,
        "results": rows,
        "ratios_cscale_over": ratios,
        "cscale_targets": targets,
        "warnings": warnings,
    }


def print_report(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(f"tree      {report['tree']} ({report['items']:,} items, served by nginx on 127.0.0.1)")
    print(
        f"machine   {m['cpus']} CPUs, {fmt_bytes(m['memory_bytes'])} RAM, load average {m['load_1min_before']:.1f} "
        "before the first tool"
    )
    print()
    rows = [
        [
            r["tool"],
            r["status"] if r["finished"] else f"did not finish: {r['status']}",
            f"{r['wall_s']:.1f} s",
            "-" if r["items_per_s"] is None else f"{r['items_per_s']:,.0f}",
            fmt_bytes(r["peak_rss_bytes"]),
            str(r["peak_connections"]),
            f"{r['found']:,}",
        ]
        for r in report["results"]
    ]
    headers = ["tool", "status", "wall", "items/s", "peak RSS (tree)", "peak conns", "items found"]
    print(table(headers, rows, [False, False, True, True, True, True, True]))
    print("(cscale: crawl + normalise + commit; cscale-again: the same on an unchanged tree, conditional requests;")
    print(" rustac and pystac: crawl only; cscale-again's 'items found' counts unchanged documents)")
    if report["ratios_cscale_over"]:
        print()
        rows = [[f"cscale ÷ {k}", fmt_ratio(v)] for k, v in report["ratios_cscale_over"].items()]
        print(table(["ratio", "items/s"], rows, [False, True]))
    if report["cscale_targets"]:
        print()
        rows = [
            [t["target"], t["required"], t["shown"], "-" if t["met"] is None else ("yes" if t["met"] else "NO")]
            for t in report["cscale_targets"]
        ]
        print(table(["cscale target (issue)", "required", "measured", "met"], rows, [False, False, True, True]))
        print("(informational, never asserted)")
    for warning in report["warnings"]:
        print(f"WARNING: {warning}")


# -------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark (no thresholds) of `cscale harvest static` (crawl + commit) against `rustac crawl` "
        "and pystac's walk of the same static catalog served by nginx on 127.0.0.1, in one run: wall time, "
        "items/s, peak RSS of each process tree, peak connections nginx saw, items found.",
        epilog="Inputs and trees are cached in WORKDIR (inputs/, static/); outputs go to WORKDIR/out-static. "
        "Needs nginx (as root: apt-get install -y nginx).",
    )
    parser.add_argument(
        "--count", type=int, default=100000, help="items in the tree (default 100000, the size the issue measures)"
    )
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--input", type=Path, help="an NDJSON file of items instead of generating them")
    parser.add_argument("--workdir", type=Path, default=ROOT / ".bench", help="cache and outputs (default .bench)")
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--concurrency", type=int, default=16, help="cscale --concurrency (default 16)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool (default 1800)")
    parser.add_argument(
        "--max-rss",
        type=float,
        default=round(0.8 * psutil.virtual_memory().total / GIB, 1),
        help="GiB of process-tree RSS at which a tool is stopped (default: 80%% of RAM; 0: no limit)",
    )
    parser.add_argument("--keep-outputs", action="store_true", help="keep the store and rustac's output")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--write-tree", type=Path, metavar="DIR", help="only write the static tree of --input to DIR")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if not tools or set(tools) - set(TOOLS):
        parser.error(f"--tools: choose from {','.join(TOOLS)}")
    args.tools = [t for t in TOOLS if t in tools]
    if "cscale-again" in args.tools and "cscale" not in args.tools:
        parser.error("--tools: cscale-again re-runs on cscale's store; include cscale")
    if args.write_tree and not args.input:
        parser.error("--write-tree needs --input")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.write_tree:
        count = write_tree(ndjson_items(args.input), args.write_tree, title=f"static catalog of {args.input.stem}")
        log(f"wrote {count:,} items under {args.write_tree}")
        return 0
    workdir: Path = args.workdir.resolve()
    out_dir = workdir / "out-static"
    out_dir.mkdir(parents=True, exist_ok=True)
    source = args.input.resolve() if args.input else generate_input(workdir, args.count, True, args.seed)
    items = count_items(source)
    tree = cached_tree(workdir, source)
    log(f"tree {tree}: {items:,} items ({sum(1 for _ in tree.rglob('*.json')):,} documents)")
    results: list[tuple[Run, int, int]] = []
    with Nginx(tree, workdir) as nginx:
        for path in tree.rglob("*.json"):  # every tool starts with the tree in the page cache
            path.read_bytes()
        load = os.getloadavg()[0]
        for tool in args.tools:
            log(f"running {tool} ...")
            run, found, connections = bench(tool, nginx, items, out_dir, args)
            log(f"{tool}: {run.status}, {run.wall_s:.1f} s, peak RSS {fmt_bytes(run.peak_rss)}, {connections} conns")
            results.append((run, found, connections))
    report = build_report(tree, items, args, results, load)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
