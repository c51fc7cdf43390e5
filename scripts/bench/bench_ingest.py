#!/usr/bin/env python3
"""Benchmark cscale's ingest against its two peers on the same NDJSON input, in the same run.

This is a measurement, not a test: nothing here fails on a slow or hungry tool. The peers are what cscale is
built on or competes with, both writing one stac-geoparquet file from NDJSON:

- ``stac-geoparquet``: bare ``stac_geoparquet.arrow.parse_stac_ndjson_to_parquet(INPUT, OUTPUT)`` with its
  defaults (a schema-inference pass, then a conversion pass), in a child Python process;
- ``rustac``: ``rustac translate INPUT.ndjson OUTPUT.parquet`` (the Rust CLI, defaults);
- ``cscale``: ``cscale -q ingest INPUT --provider BENCH --store STORE --format json`` into a fresh store, i.e.
  normalise, validate, hash, dedupe, partition, sort, write and commit one snapshot version.

Every tool runs as its own process tree; a sampler thread sums the RSS of the process and all its descendants
every ~50 ms (cscale normalises in worker processes) and keeps the maximum.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "scripts" / "sample_federation.py"
# The tools are looked up next to the interpreter first, so `.venv/bin/python bench_ingest.py` measures the
# project's pinned versions even when another cscale/rustac is on PATH.
BIN_DIR = Path(sys.executable).parent
TOOLS = ("cscale", "stac-geoparquet", "rustac")
PROVIDER = "GRNET"  # one provider: the benchmark measures a single ingest run, not federation merging
COLLECTION = "sentinel-2-l2a"
SAMPLE_INTERVAL_S = 0.05
GIB = 1024**3
MIB = 1024**2

# The targets for cscale. Printed next to the measured figures, never asserted.
TARGET_SPEEDUP_VS_RUSTAC = 2.0
TARGET_PEAK_RSS = 1 * GIB
TARGET_MILLION_S = 600.0
TARGET_SIZE_PCT = 7.0

# Earlier measurements on this machine (heavy S2 L2A items), printed as context for the peers' figures.
EARLIER = (
    "earlier on this machine, heavy S2 L2A items: rustac ~1,100-1,350 items/s, ~3 GB RSS at 20k items, ~13 GB at"
    " 100k;\n stac-geoparquet 430-450 items/s, 2-6 GB"
)

# Run in a child interpreter so the peer's memory is measured apart from this script's (and pyarrow's).
SGP_CHILD = (
    "import sys\n"
    "from stac_geoparquet.arrow import parse_stac_ndjson_to_parquet\n"
    "parse_stac_ndjson_to_parquet(sys.argv[1], sys.argv[2])\n"
)


def log(message: str) -> None:
    """Progress goes to stderr so that stdout holds only the table (or the JSON)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ input


def input_path_for(workdir: Path, count: int, heavy: bool, seed: int) -> Path:
    weight = "heavy" if heavy else "light"
    return workdir / "inputs" / f"{PROVIDER}-{COLLECTION}-{count}-{weight}-seed{seed}.ndjson"


def generate_input(workdir: Path, count: int, heavy: bool, seed: int) -> Path:
    """The cached input for (count, heavy, seed), generated on first use (the generator is deterministic)."""
    path = input_path_for(workdir, count, heavy, seed)
    if path.exists():
        log(f"using cached input {path}")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written under a temporary name and renamed, so an interrupted generation is never taken for a cached input.
    tmp = path.with_name(path.name + ".partial")
    cmd = [sys.executable, str(GENERATOR), "--single-file", str(tmp), "--providers", PROVIDER]
    cmd += ["--count", str(count), "--seed", str(seed), "--collections", COLLECTION]
    if heavy:
        cmd.append("--heavy")
    log(f"generating {count:,} {'heavy' if heavy else 'light'} items: {' '.join(cmd)}")
    done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        sys.exit(
            f"bench_ingest: the generator failed (exit {done.returncode}):\n{done.stderr.decode(errors='replace')}"
        )
    os.replace(tmp, path)
    return path


def count_items(path: Path) -> int:
    """Non-blank lines: what every tool should turn into one row each."""
    with path.open("rb") as f:
        return sum(1 for line in f if line.strip())


# ------------------------------------------------------------------------------------------- measuring


def tree_rss(proc: psutil.Process) -> int:
    """RSS of a process and all its descendants (shared pages of forked workers count once per process)."""
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):  # exited between listing and sampling
            total += p.memory_info().rss
    return total


def kill_tree(proc: psutil.Process) -> None:
    """SIGKILL the tool's own session (it was started in one) and any descendant that left it."""
    try:
        descendants = proc.children(recursive=True)
    except psutil.Error:
        descendants = []
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for p in descendants:
        with contextlib.suppress(psutil.Error):
            p.kill()


class TreeRssSampler(threading.Thread):
    """Keeps the peak of tree_rss; kills the tree above `limit` so one tool cannot take the machine down."""

    def __init__(self, proc: psutil.Process, limit: int | None) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.limit = limit
        self.peak = 0
        self.over_limit = False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            rss = tree_rss(self.proc)
            self.peak = max(self.peak, rss)
            if self.limit is not None and rss > self.limit:
                self.over_limit = True
                kill_tree(self.proc)
                return
            self._done.wait(SAMPLE_INTERVAL_S)

    def finish(self) -> None:
        self._done.set()
        self.join()


@dataclass
class Run:
    """One tool's measured run."""

    tool: str
    command: list[str]
    status: str = "ok"  # ok | exit N | timeout | RSS limit | killed by signal N (OOM?) | not found
    finished: bool = True
    exit_code: int | None = None
    wall_s: float = 0.0
    peak_rss: int = 0
    items: int = 0  # input items (the same for every tool, so items/s compare)
    output_bytes: int | None = None
    output_rows: int | None = None
    counts: dict[str, Any] = field(default_factory=dict)  # cscale's run report
    stderr_tail: str = ""
    caches_dropped: bool = False

    @property
    def items_per_s(self) -> float | None:
        return self.items / self.wall_s if self.finished and self.wall_s > 0 else None


def drop_caches() -> bool:
    """Write back and drop the kernel's page, dentry and inode caches (root only; False otherwise), so that each
    tool starts from the same cold state. On these VMs (ext4 without a journal, kernel 6.18) creating a file
    costs ~75 us of system time on fresh caches but grows to 400-600 us once the inode tables of earlier
    runs' deleted files are cached (perf: `recently_deleted` -> `find_get_block_common`), so a file-writing
    tool measured after another one would pay for its predecessor's deletions."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def measure(run: Run, out_dir: Path, timeout: float, rss_limit: int | None) -> None:
    """Run `run.command` with stdout/stderr in files (no pipe to fill), timing it and sampling its tree's RSS.
    The kernel's caches are dropped first (see `drop_caches`)."""
    run.caches_dropped = drop_caches()
    stdout_path = out_dir / f"{run.tool}.stdout"
    stderr_path = out_dir / f"{run.tool}.stderr"
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        start = time.perf_counter()
        try:
            # A new session makes the whole tree killable at once on timeout or RSS limit.
            proc = psutil.Popen(run.command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True)
        except FileNotFoundError:
            run.status, run.finished = "not found", False
            return
        sampler = TreeRssSampler(proc, rss_limit)
        sampler.start()
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except psutil.TimeoutExpired:
            timed_out = True
            kill_tree(proc)
            code = proc.wait()
        run.wall_s = time.perf_counter() - start
        sampler.finish()
    run.peak_rss = sampler.peak
    run.exit_code = code
    run.stderr_tail = stderr_path.read_text(errors="replace")[-2000:].strip()
    if timed_out:
        run.status, run.finished = f"timeout ({timeout:g} s)", False
    elif sampler.over_limit:
        run.status, run.finished = f"RSS limit ({fmt_bytes(rss_limit)})", False
    elif code < 0:
        # SIGKILL from outside is almost always the kernel's OOM killer (there is no swap to slow down into).
        oom = " (OOM?)" if code == -signal.SIGKILL else ""
        run.status, run.finished = f"killed by signal {-code}{oom}", False
    elif code != 0:
        run.status = f"exit {code}"
        run.finished = run.tool == "cscale" and code == 1  # cscale's 1: committed, with quarantined records
        if "MemoryError" in run.stderr_tail:
            run.status += " (MemoryError)"


def parquet_rows(paths: Sequence[Path]) -> int | None:
    """Rows from the footers: a cheap check that a tool wrote every item."""
    import pyarrow.parquet as pq  # only here: not needed to generate or run anything

    try:
        return sum(int(pq.read_metadata(p).num_rows) for p in paths)
    except Exception:  # a truncated file of a killed tool: no row count, not a crash
        return None


def tool_path(name: str) -> str:
    local = BIN_DIR / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def bench(tool: str, source: Path, items: int, out_dir: Path, args: argparse.Namespace) -> Run:
    """One tool on `source`, into a fresh output (cscale: a new store, so it writes everything, dedupes nothing)."""
    output = out_dir / ("cscale-store" if tool == "cscale" else f"{tool}.parquet")
    remove(output)
    if tool == "cscale":
        cmd = [tool_path("cscale"), "-q", "ingest", str(source), "--provider", "BENCH", "--store", str(output)]
        cmd += ["--format", "json"]
    elif tool == "stac-geoparquet":
        cmd = [sys.executable, "-c", SGP_CHILD, str(source), str(output)]
    else:
        cmd = [tool_path("rustac"), "translate", str(source), str(output)]
    run = Run(tool, cmd, items=items)
    measure(run, out_dir, args.timeout, int(args.max_rss * GIB) if args.max_rss > 0 else None)
    if tool == "cscale":
        # The snapshot's data is what lies under items/; manifests and quarantine are bookkeeping.
        files = sorted(p for p in (output / "items").rglob("*") if p.is_file())
        try:
            report = json.loads((out_dir / "cscale.stdout").read_text())
            first = report[0] if isinstance(report, list) else report
            run.counts = first if isinstance(first, dict) else {}
        except (ValueError, IndexError, OSError):
            pass  # a killed run prints nothing; its status says why
    else:
        files = [output] if output.is_file() else []
    if files:
        run.output_bytes = sum(p.stat().st_size for p in files)
        run.output_rows = parquet_rows([p for p in files if p.suffix == ".parquet"])
    if not args.keep_outputs:
        remove(output)
    return run


# ------------------------------------------------------------------------------------------- reporting


def fmt_bytes(n: float | None) -> str:
    if not n:
        return "-"
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB"


def fmt_ratio(value: float | None, bound: str = "") -> str:
    return "n/a" if value is None else f"{bound}{value:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def pct_of_input(run: Run, input_bytes: int) -> float | None:
    return None if run.output_bytes is None else 100.0 * run.output_bytes / input_bytes


def ratios(cscale: Run, peer: Run) -> dict[str, Any]:
    """cscale ÷ peer. A peer that did not finish still bounds them: its rate was below N/t (so cscale's speed ratio
    is a lower bound, '>') and its true peak at least the sampled one (so the RSS ratio is an upper bound, '<')."""
    speed = rss = None
    if cscale.items_per_s is not None and peer.wall_s > 0:
        speed = cscale.items_per_s / (peer.items / peer.wall_s)
    if cscale.finished and cscale.peak_rss and peer.peak_rss:
        rss = cscale.peak_rss / peer.peak_rss
    bound = not peer.finished
    return {
        "items_per_s": speed,
        "items_per_s_bound": ">" if bound and speed is not None else "",
        "peak_rss": rss,
        "peak_rss_bound": "<" if bound and rss is not None else "",
    }


def targets(cscale: Run, vs_rustac: dict[str, Any] | None, input_bytes: int) -> list[dict[str, Any]]:
    """The issue's targets for cscale beside what was measured; `met` is informational, never asserted."""
    speed = None if vs_rustac is None else vs_rustac["items_per_s"]
    speed_bound = "" if vs_rustac is None else vs_rustac["items_per_s_bound"]
    rss = cscale.peak_rss if cscale.finished else None
    million = 1e6 / cscale.items_per_s if cscale.items_per_s else None  # linear: assumes flat per-item cost
    size = pct_of_input(cscale, input_bytes) if cscale.finished else None

    def row(name: str, required: str, value: float | None, shown: str, ok: bool) -> dict[str, Any]:
        return {"target": name, "required": required, "measured": value, "shown": shown,
                "met": None if value is None else ok}  # fmt: skip

    return [
        row("items/s vs rustac", f">= {TARGET_SPEEDUP_VS_RUSTAC:.0f}x", speed, fmt_ratio(speed, speed_bound),
            speed is not None and speed >= TARGET_SPEEDUP_VS_RUSTAC),
        row("peak RSS, whatever the input size", "< 1 GiB", rss, fmt_bytes(rss),
            rss is not None and rss < TARGET_PEAK_RSS),
        row("1M items (linear projection)", "< 10 min", million, "-" if million is None else f"{million / 60:.1f} min",
            million is not None and million < TARGET_MILLION_S),
        row("snapshot size", f"<= {TARGET_SIZE_PCT:.0f} % of NDJSON", size, "-" if size is None else f"{size:.1f} %",
            size is not None and size <= TARGET_SIZE_PCT),
    ]  # fmt: skip


def check(runs: list[Run], items: int) -> list[str]:
    """Item counts and failures worth a line: a fast tool that dropped items is not fast."""
    warnings = []
    for r in runs:
        if not r.finished:
            last = r.stderr_tail.splitlines()[-1] if r.stderr_tail else "no stderr"
            warnings.append(f"{r.tool} did not finish ({r.status}) after {r.wall_s:.1f} s: {last}")
            continue
        if r.tool == "cscale":
            written = r.counts.get("written")
            if written != items:
                warnings.append(f"cscale wrote {written} items but the input has {items:,} lines ({r.counts})")
            if r.counts.get("quarantined"):
                warnings.append(f"cscale quarantined {r.counts['quarantined']:,} records (exit {r.exit_code})")
        if r.output_rows is not None and r.output_rows != items:
            warnings.append(f"{r.tool}'s output has {r.output_rows:,} rows but the input {items:,} lines")
    return warnings


def versions() -> dict[str, str]:
    found: dict[str, str] = {}
    for dist in ("cscale", "stac-geoparquet", "pyarrow"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "?"
    try:
        out = subprocess.run([tool_path("rustac"), "--version"], capture_output=True, text=True, timeout=30)
        found["rustac CLI"] = out.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        found["rustac CLI"] = "?"
    return found


def build_report(
    source: Path, items: int, input_bytes: int, args: argparse.Namespace, runs: list[Run]
) -> dict[str, Any]:
    """Everything measured as plain data: the --json output, and what the tables print."""
    cscale = next((r for r in runs if r.tool == "cscale"), None)
    vs = {r.tool: ratios(cscale, r) for r in runs if cscale is not None and r is not cscale}
    return {
        "input": {
            "path": str(source),
            "generated": args.input is None,
            "heavy": None if args.input else args.heavy,
            "seed": None if args.input else args.seed,
            "items": items,
            "bytes": input_bytes,
            "avg_line_bytes": input_bytes / items,
        },
        "machine": {"cpus": os.cpu_count(), "memory_bytes": psutil.virtual_memory().total},
        "versions": versions(),
        "timeout_s": args.timeout,
        "results": [
            {
                "tool": r.tool,
                "finished": r.finished,
                "status": r.status,
                "exit_code": r.exit_code,
                "wall_s": r.wall_s,
                "items_per_s": r.items_per_s,
                "peak_rss_bytes": r.peak_rss,
                "output_bytes": r.output_bytes,
                "output_pct_of_ndjson": pct_of_input(r, input_bytes),
                "output_rows": r.output_rows,
                "cscale_counts": r.counts or None,
                "command": r.command,
            }
            for r in runs
        ],
        "ratios_cscale_over": vs,
        "cscale_targets": [] if cscale is None else targets(cscale, vs.get("rustac"), input_bytes),
        "warnings": check(runs, items),
    }


def print_report(report: dict[str, Any]) -> None:
    src, machine = report["input"], report["machine"]
    print(f"input     {src['path']}")
    print(f"          {src['items']:,} items, {fmt_bytes(src['bytes'])}, average line {src['avg_line_bytes']:,.0f} B")
    print(
        f"machine   {machine['cpus']} CPUs, {fmt_bytes(machine['memory_bytes'])} RAM, "
        f"load average {machine['load_1min_before']:.1f} before the first tool"
    )
    print("versions  " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    print()

    rows = [
        [
            r["tool"],
            r["status"] if r["finished"] else f"did not finish: {r['status']}",
            f"{r['wall_s']:.1f} s",
            "-" if r["items_per_s"] is None else f"{r['items_per_s']:,.0f}",
            fmt_bytes(r["peak_rss_bytes"]),
            fmt_bytes(r["output_bytes"]),
            "-" if r["output_pct_of_ndjson"] is None else f"{r['output_pct_of_ndjson']:.1f} %",
            "-" if r["output_rows"] is None else f"{r['output_rows']:,}",
        ]
        for r in report["results"]
    ]
    headers = ["tool", "status", "wall", "items/s", "peak RSS (tree)", "output", "% of NDJSON", "rows"]
    print(table(headers, rows, [False, False, True, True, True, True, True, True]))
    if not all(r["finished"] for r in report["results"]):
        print("(did not finish: wall time and peak RSS are those reached when it stopped)")

    if report["ratios_cscale_over"]:
        print()
        rows = [
            [f"cscale ÷ {tool}", fmt_ratio(v["items_per_s"], v["items_per_s_bound"]),
             fmt_ratio(v["peak_rss"], v["peak_rss_bound"])]
            for tool, v in report["ratios_cscale_over"].items()
        ]  # fmt: skip
        print(table(["ratio", "items/s", "peak RSS"], rows, [False, True, True]))

    if report["cscale_targets"]:
        print()
        rows = [
            [t["target"], t["required"], t["shown"], "-" if t["met"] is None else ("yes" if t["met"] else "NO")]
            for t in report["cscale_targets"]
        ]
        print(table(["cscale target (issue)", "required", "measured", "met"], rows, [False, False, True, True]))
        print(f"(targets are informational, not asserted; RSS measured at {src['items']:,} items only)")
    print(f"({EARLIER})")
    for warning in report["warnings"]:
        print(f"WARNING: {warning}")


# ------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark (not a test: no thresholds) of `cscale ingest` against its peers on the same NDJSON input "
            "in one run: bare stac-geoparquet (stac_geoparquet.arrow.parse_stac_ndjson_to_parquet, in a child "
            "Python process) and rustac (`rustac translate IN.ndjson OUT.parquet`). For each: wall time, items/s, "
            "peak RSS of the whole process tree (sampled every 50 ms, summed over cscale's worker processes), "
            "output size (cscale: every file under the store's items/; the peers: their parquet file) and its share "
            "of the NDJSON bytes; then cscale's ratios to each peer and the issue's targets for cscale "
            "(>= 2x rustac's items/s, peak RSS < 1 GiB, 1M items < 10 min, snapshot <= 7 % of the NDJSON)."
        ),
        epilog=(
            "Input: heavy Sentinel-2 L2A items (~15 KB, like Planetary Computer's) of one provider from "
            "scripts/sample_federation.py, cached in WORKDIR/inputs by (count, heavy/light, seed); delete a file "
            "there to regenerate it. Outputs go to WORKDIR/out (replaced on every run). A tool that exceeds "
            "--timeout or --max-rss, or is killed (OOM), is reported as 'did not finish' with the time and RSS "
            "it reached. Progress goes to stderr; stdout holds the table or, with --json, the JSON."
        ),
    )
    parser.add_argument("--count", type=int, default=20000, help="items to generate (default 20000)")
    weight = parser.add_mutually_exclusive_group()
    weight.add_argument(
        "--heavy", dest="heavy", action="store_true", default=True, help="heavy S2 L2A items, ~15 KB each (default)"
    )
    weight.add_argument("--light", dest="heavy", action="store_false", help="the generator's lighter items")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument(
        "--input", type=Path, help="an existing NDJSON file instead of generating (ignores --count/--heavy/--seed)"
    )
    parser.add_argument(
        "--workdir", type=Path, default=ROOT / ".bench", help="cached inputs and outputs (default: <project>/.bench)"
    )
    parser.add_argument("--tools", default=",".join(TOOLS), help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per tool (default 900)")
    parser.add_argument(
        "--max-rss",
        type=float,
        default=round(0.8 * psutil.virtual_memory().total / GIB, 1),
        help="GiB of process-tree RSS at which a tool is stopped, so that it cannot take down the machine "
        "(default: 80%% of RAM; 0: no limit)",
    )
    parser.add_argument("--keep-outputs", action="store_true", help="keep the written stores/parquet files")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    args = parser.parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown or not tools:
        parser.error(f"--tools: unknown {', '.join(unknown) or '(empty)'}; choose from {','.join(TOOLS)}")
    args.tools = [t for t in TOOLS if t in tools]  # a fixed order: cscale first, so the ratios read the same
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    if args.input is not None and not args.input.is_file():
        parser.error(f"--input: no such file: {args.input}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir: Path = args.workdir.resolve()
    out_dir = workdir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    source = args.input.resolve() if args.input else generate_input(workdir, args.count, args.heavy, args.seed)
    # Counting also reads the file once, so every tool starts with it in the page cache.
    items = count_items(source)
    input_bytes = source.stat().st_size
    if items == 0:
        sys.exit(f"bench_ingest: {source} holds no items")
    log(f"input {source}: {items:,} items, {input_bytes / MIB:.1f} MiB, average line {input_bytes / items:,.0f} B")

    # Other jobs on the same CPUs move the figures a lot; the load before the first tool says how busy it was.
    load_before = os.getloadavg()[0]
    runs: list[Run] = []
    for tool in args.tools:
        log(f"running {tool} ...")
        run = bench(tool, source, items, out_dir, args)
        log(f"{tool}: {run.status}, {run.wall_s:.1f} s, peak RSS {fmt_bytes(run.peak_rss)}")
        runs.append(run)

    report = build_report(source, items, input_bytes, args, runs)
    report["machine"]["load_1min_before"] = load_before
    if args.json:
        for warning in report["warnings"]:
            log(f"WARNING: {warning}")
        print(json.dumps(report, indent=2, default=str))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
