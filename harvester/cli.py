"""The `cscale` command line: the only module that composes harvester, archive and queries."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import orjson
import pyarrow as pa

from harvester.errors import CscaleError, InputError
from harvester.output import FORMATS, default_format, emit_table, text_table

EXIT_CODES = """\b
Exit codes:
  0  success
  1  finished, but the share of quarantined records is above --max-quarantined
  2  usage error (bad option or argument)
  3  input error (a file or URL cannot be read)
  4  store error (not writable, missing bucket, corrupt or missing version)
  5  another writer kept committing first (after retries)
  6  unexpected internal error (run with -v for the traceback)"""

STORE_HELP = "Snapshot store: a folder or s3://bucket/prefix (default: $CSCALE_STORE)."
log = logging.getLogger("cscale")


class Context:
    def __init__(self, verbose: int, quiet: bool) -> None:
        self.verbose = verbose
        self.quiet = quiet

    @property
    def progress_enabled(self) -> bool:
        return not self.quiet and sys.stderr.isatty()


class _LazyGroup(click.Group):
    """A group whose commands from other modules (EXTENSION_COMMANDS) are imported when one is invoked (or help
    lists them), not at start: `cscale ingest` then loads neither DuckDB's search side nor requests nor the
    archive reader (~0.3 s of every run's start, and less for its forked normalising workers to carry)."""

    lazy: dict[str, tuple[str, str]]

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *getattr(self, "lazy", {})})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        found = getattr(self, "lazy", {}).get(cmd_name)
        if found is not None:
            import importlib

            command = getattr(importlib.import_module(found[0]), found[1])
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_LazyGroup,
    epilog=EXIT_CODES,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
)
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress.")
@click.version_option(package_name="cscale")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """cscale: harvest a federation of STAC providers into one versioned stac-geoparquet snapshot and
    query it offline with DuckDB.

    Every command that reads or writes a snapshot takes --store (or $CSCALE_STORE).
    """
    level = logging.ERROR if quiet else [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    ctx.obj = Context(verbose, quiet)


def store_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--store", "store_root", envvar="CSCALE_STORE", required=True, help=STORE_HELP)(func)


def format_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default=None,
        help="Output format (default: table on a terminal, ndjson when piped).",
    )(func)


@contextmanager
def progress_line(ctx: Context, label: str) -> Iterator[Callable[[int], None]]:
    """A one-line counter on stderr, only on a terminal."""
    started = time.monotonic()
    last = [0.0]

    def update(count: int) -> None:
        now = time.monotonic()
        if ctx.progress_enabled and now - last[0] > 0.2:
            last[0] = now
            rate = count / max(now - started, 1e-9)
            sys.stderr.write(f"\r{label}: {count:,} records ({rate:,.0f}/s)   ")
            sys.stderr.flush()

    try:
        yield update
    finally:
        if ctx.progress_enabled and last[0]:
            sys.stderr.write("\n")


def run_safely(ctx: Context, body: Callable[[], int | None]) -> None:
    """Expected errors print one line and exit with their code; unexpected ones exit 6."""
    try:
        code = body() or 0
    except CscaleError as exc:
        click.echo(f"cscale: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("cscale: interrupted; nothing was committed by the interrupted step", err=True)
        sys.exit(130)
    except Exception as exc:
        if ctx.verbose:
            traceback.print_exc()
        click.echo(f"cscale: internal error: {type(exc).__name__}: {exc} (run with -v for details)", err=True)
        sys.exit(6)
    sys.exit(code)


def report_run(counts: dict[str, int], version: int | None, fmt: str | None, extra: dict[str, Any]) -> None:
    fmt = fmt or default_format()
    body = {"version": version, "committed": version is not None, **extra, **counts}
    if fmt == "table":
        state = f"committed version {version}" if version is not None else "nothing changed; no new version"
        click.echo(state)
        text_table(["count", "value"], [[k, f"{v:,}"] for k, v in counts.items()])
    else:
        emit_table(
            pa.Table.from_pylist(
                [{k: v if not isinstance(v, list | dict) else orjson.dumps(v).decode() for k, v in body.items()}]
            ),
            fmt,
        )


def quarantine_exit(counts: dict[str, int], max_quarantined: float) -> int:
    seen = counts.get("seen", 0)
    share = counts.get("quarantined", 0) / seen if seen else 0.0
    if share > max_quarantined:
        click.echo(
            f"cscale: {counts['quarantined']:,} of {seen:,} records quarantined ({share:.1%}), above "
            f'--max-quarantined {max_quarantined:.1%}; see `cscale sql "SELECT reason, count(*) FROM quarantine '
            f'GROUP BY ALL"`',
            err=True,
        )
        return 1
    return 0


WORKERS = click.option(
    "--workers", type=click.IntRange(0, 64), default=0, help="Normalising processes (0: one per CPU)."
)
MAX_QUARANTINED = click.option(
    "--max-quarantined",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of quarantined records above which the command exits 1 (the good records are committed anyway).",
)


@cli.command(epilog=EXIT_CODES)
@click.argument("sources", nargs=-1, required=True)
@click.option("--provider", required=True, help="Provider name, e.g. EODC (a column of every row).")
@store_option
@WORKERS
@click.option(
    "--max-item-bytes",
    type=click.IntRange(1024),
    default=4 << 20,
    show_default=True,
    help="Items larger than this are quarantined (reason item_too_large).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Read local files even when their size and mtime did not change since the version that last "
    "ingested them (by default such files are skipped).",
)
@MAX_QUARANTINED
@format_option
@click.pass_obj
def ingest(
    ctx: Context,
    sources: tuple[str, ...],
    provider: str,
    store_root: str,
    workers: int,
    max_item_bytes: int,
    force: bool,
    max_quarantined: float,
    fmt: str | None,
) -> None:
    """Ingest STAC items from files or URLs (NDJSON, an ItemCollection, a JSON list or single items) for one
    provider, as one new snapshot version. Collections found in the input become collection metadata.

    \b
    Example:
      cscale ingest items.ndjson --provider EODC --store ./store
    """
    from harvester.ingest import IngestOptions
    from harvester.ingest import ingest as run_ingest
    from harvester.store import Store

    def body() -> int:
        if not provider.strip() or "|" in provider:
            raise InputError("--provider must be a non-empty name without '|'")
        store = Store.open(store_root)
        options = IngestOptions(provider=provider, workers=workers, max_item_bytes=max_item_bytes, force=force)
        with progress_line(ctx, f"ingest {provider}") as progress:
            result = run_ingest(store, list(sources), options, progress=progress)
        version = result.manifest.version if result.manifest else None
        report_run(result.counts, version, fmt, {"provider": provider})
        return quarantine_exit(result.counts, max_quarantined)

    run_safely(ctx, body)


@cli.command(epilog=EXIT_CODES)
@click.argument("query")
@store_option
@click.option("--version", "version", type=int, default=None, help="Snapshot version (default: current).")
@format_option
@click.pass_obj
def sql(ctx: Context, query: str, store_root: str, version: int | None, fmt: str | None) -> None:
    """Run DuckDB SQL over a snapshot. QUERY is SQL text, @FILE.sql, or - for stdin.

    \b
    Views: items, parts, collections, providers, quarantine, runs.
    Example:
      cscale sql "SELECT provider, count(*) FROM items GROUP BY ALL" --store ./store
    """
    import duckdb

    from queries import connect

    def body() -> int:
        text = query
        if query == "-":
            text = sys.stdin.read()
        elif query.startswith("@"):
            try:
                text = Path(query[1:]).read_text()
            except OSError as exc:
                raise InputError(f"cannot read {query[1:]}: {exc.strerror}") from None
        con = connect(store_root, version)
        try:
            result = con.execute(text)
            table = result.to_arrow_table() if result.description else pa.table({})
        except duckdb.Error as exc:
            raise InputError(f"SQL error: {str(exc).splitlines()[0]}") from None
        emit_table(table, fmt or default_format())
        return 0

    run_safely(ctx, body)


@cli.group()
def snapshots() -> None:
    """List, inspect, compare and garbage-collect snapshot versions."""


@snapshots.command("list", epilog=EXIT_CODES)
@store_option
@format_option
@click.pass_obj
def snapshots_list(ctx: Context, store_root: str, fmt: str | None) -> None:
    """Every retained version, newest first, with its run's counts."""
    from harvester.store import Store

    def body() -> int:
        store = Store.open(store_root)
        current = store.current_version()
        rows = []
        for version in reversed(store.versions()):
            m = store.manifest(version)
            counts = m.run.get("counts", {})
            rows.append(
                {
                    "version": version,
                    "current": version == current,
                    "committed_at": m.committed_at,
                    "kind": m.run.get("kind"),
                    "provider": m.run.get("provider"),
                    "items": m.rows,
                    "parts": len(m.parts),
                    "written": counts.get("written"),
                    "quarantined": counts.get("quarantined"),
                    "deleted": counts.get("deleted"),
                }
            )
        emit_table(
            pa.Table.from_pylist(rows) if rows else pa.table({"version": pa.array([], pa.int64())}),
            fmt or default_format(),
        )
        return 0

    run_safely(ctx, body)


@snapshots.command("show", epilog=EXIT_CODES)
@click.argument("version", type=int, required=False)
@store_option
@click.option("--json", "as_json", is_flag=True, help="Print the whole manifest.")
@click.pass_obj
def snapshots_show(ctx: Context, version: int | None, store_root: str, as_json: bool) -> None:
    """One version (default: current): its run report and items per provider and collection."""
    from harvester.store import Store

    def body() -> int:
        m = Store.open(store_root).manifest(version)
        if as_json:
            click.echo(m.to_json().decode())
            return 0
        click.echo(f"version {m.version} (parent {m.parent}) committed {m.committed_at}")
        click.echo(
            f"{m.rows:,} items in {len(m.parts)} parts, {sum(p.bytes for p in m.parts):,} bytes; "
            f"{sum(q.rows for q in m.quarantine):,} quarantined records"
        )
        per: dict[tuple[str, str], list[int]] = {}
        for p in m.parts:
            slot = per.setdefault((p.provider, p.collection or ""), [0, 0, 0])
            slot[0] += p.rows
            slot[1] += 1
            slot[2] += p.bytes
        text_table(
            ["provider", "collection", "items", "parts", "bytes"],
            [[k[0], k[1], f"{v[0]:,}", str(v[1]), f"{v[2]:,}"] for k, v in sorted(per.items())],
        )
        if m.run:
            click.echo("run: " + orjson.dumps(m.run).decode())
        return 0

    run_safely(ctx, body)


@snapshots.command("diff", epilog=EXIT_CODES)
@click.argument("old", type=int)
@click.argument("new", type=int, required=False)
@store_option
@click.option("--ids", is_flag=True, help="List the ids that were added, removed or changed.")
@format_option
@click.pass_obj
def snapshots_diff(ctx: Context, old: int, new: int | None, store_root: str, ids: bool, fmt: str | None) -> None:
    """Items added, removed and changed between two versions (NEW defaults to current)."""
    from queries.diff import diff_versions

    def body() -> int:
        table = diff_versions(store_root, old, new, ids=ids)
        emit_table(table, fmt or default_format())
        return 0

    run_safely(ctx, body)


@snapshots.command("gc", epilog=EXIT_CODES)
@store_option
@click.option("--keep", type=click.IntRange(1), default=10, show_default=True, help="Newest versions to keep.")
@click.option(
    "--grace",
    type=click.FloatRange(0),
    default=3600,
    show_default=True,
    help="Spare unreferenced files younger than this many seconds (a commit may be in flight).",
)
@click.option("--dry-run", is_flag=True, help="Only say what would be removed.")
@click.pass_obj
def snapshots_gc(ctx: Context, store_root: str, keep: int, grace: float, dry_run: bool) -> None:
    """Remove versions beyond the newest --keep and every file no kept version references."""
    from harvester.store import Store

    def body() -> int:
        report = Store.open(store_root).gc(keep=keep, grace_seconds=grace, dry_run=dry_run)
        verb = "would remove" if dry_run else "removed"
        click.echo(
            f"kept versions {report.kept[0]}..{report.kept[-1]}; {verb} {len(report.removed_versions)} "
            f"versions and {len(report.files)} files ({report.bytes:,} bytes)"
        )
        return 0

    run_safely(ctx, body)


@cli.group(cls=_LazyGroup)
def harvest() -> None:
    """Harvest a provider's STAC API, static catalog or S3 archive into the snapshot (one version per run)."""


# Commands that live next to their code: (group, module, attribute) — each module exposes one click command or
# group named like the attribute, added here to the top level ("") or to a group ("harvest"), imported when used.
# The CLI is the only place that composes harvester, archive and queries.
EXTENSION_COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("harvest", "harvester.harvest_static", "static"),
    ("harvest", "harvester.harvest_api", "api"),
    ("harvest", "harvester.federation", "run"),
    ("", "queries.publish_cli", "publish"),
    ("", "queries.search_cli", "search"),
    ("", "archive.cli", "archive"),
)


def _register_extensions() -> None:
    groups: dict[str, click.Group] = {"": cli, "harvest": harvest}
    for group, module_name, attribute in EXTENSION_COMMANDS:
        target = groups[group]
        assert isinstance(target, _LazyGroup)
        target.lazy = {**getattr(target, "lazy", {}), attribute: (module_name, attribute)}


_register_extensions()


def main() -> None:
    cli(prog_name="cscale")


if __name__ == "__main__":
    main()
