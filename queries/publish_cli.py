"""`cscale publish`: the click command (registered in harvester/cli.py's EXTENSION_COMMANDS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson
import pyarrow as pa

from harvester.cli import EXIT_CODES, format_option, progress_line, run_safely, store_option
from harvester.output import default_format, emit_table, text_table


def _names(values: tuple[str, ...]) -> tuple[str, ...] | None:
    names = tuple(v.strip() for value in values for v in value.split(",") if v.strip())
    return names or None


@click.command("publish", epilog=EXIT_CODES)
@store_option
@click.option("--out", required=True, help="Output: a folder or s3://bucket/prefix (Content-Type application/json).")
@click.option("--version", "version", type=int, default=None, help="Snapshot version (default: current).")
@click.option("--providers", multiple=True, help="Only these providers (comma-separated or repeated).")
@click.option(
    "--collections", multiple=True, help="Only these collections: ids, or PROVIDER|id (comma-separated or repeated)."
)
@click.option(
    "--href-base",
    default=None,
    help="Write absolute links (and self links) under this URL, e.g. https://example.org/stac; default: relative "
    "links, a self-contained catalog that can be moved or served from anywhere.",
)
@click.option(
    "--max-items",
    type=click.IntRange(1),
    default=2000,
    show_default=True,
    help="Most items one catalog lists: a month with more is split by day, then hour, then hash buckets.",
)
@click.option("--workers", type=click.IntRange(0, 64), default=0, help="Item-writing processes (0: one per CPU).")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where the plan's temporary DuckDB database goes (default: the system's temporary folder; a few GB at "
    "ten million items).",
)
@format_option
@click.pass_obj
def publish(
    ctx: Any,
    store_root: str,
    out: str,
    version: int | None,
    providers: tuple[str, ...],
    collections: tuple[str, ...],
    href_base: str | None,
    max_items: int,
    workers: int,
    workdir: Path | None,
    fmt: str | None,
) -> None:
    """Publish a snapshot version as static STAC catalogs: root → providers → collections (extents and summaries
    from the data, each with a `collection-mirror` asset: its stac-geoparquet parts, copied next to it) →
    year/month catalogs (split further where they would list more than --max-items) → items.

    Republishing is incremental: `.cscale-publish.parquet` in the output remembers what each file holds, so only
    changed items and the catalogs whose content changed are rewritten, and removed items disappear. Children are
    written before parents and the root last: an interrupted publish leaves the previous catalog valid.

    \b
    Example:
      cscale publish --store ./store --out ./catalog
      cscale publish --store s3://bucket/store --out s3://public/stac --href-base https://public.example.org/stac
    """
    from harvester.store import Store
    from queries.publish import PublishOptions
    from queries.publish import publish as run_publish

    def body() -> int:
        options = PublishOptions(
            out=out,
            version=version,
            providers=_names(providers),
            collections=_names(collections),
            href_base=href_base,
            max_items=max_items,
            workers=workers,
            workdir=workdir,
        )
        with progress_line(ctx, "publish") as progress:
            report = run_publish(Store.open(store_root), options, progress=progress)
        body: dict[str, Any] = report.as_dict()
        chosen = fmt or default_format()
        if chosen == "table":
            click.echo(f"published version {report.version} to {report.out} in {report.seconds:.1f} s")
            counts = [k for k, v in body.items() if isinstance(v, int) and k != "version"]
            text_table(["count", "value"], [[k, f"{body[k]:,}"] for k in counts])
        else:
            row = {k: orjson.dumps(v).decode() if isinstance(v, dict) else v for k, v in body.items()}
            emit_table(pa.Table.from_pylist([row]), chosen)
        return 0

    run_safely(ctx, body)
