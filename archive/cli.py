"""`cscale archive ...`: index S3 archives of Sentinel and Landsat products into the snapshot.

Registered by harvester/cli.py (EXTENSION_COMMANDS), which imports this module only when the command is used. Its
exit codes read differently from the other commands' (code 3 is about the archive).
"""

from __future__ import annotations

from typing import Any

import click

from harvester.cli import Context, progress_line, quarantine_exit, report_run, run_safely

EXIT_CODES = """\b
Exit codes:
  0  success
  1  finished, but the share of quarantined items is above --max-quarantined
  2  usage error (bad option or argument)
  3  the archive cannot be read (missing bucket, listing refused, bad inventory report)
  4  store error (not writable, missing bucket, corrupt or missing version)
  5  another writer kept committing first (after retries)
  6  unexpected internal error (run with -v for the traceback)"""


@click.group(epilog=EXIT_CODES)
def archive() -> None:
    """Index S3 archives of Sentinel and Landsat products (listing or S3 Inventory) into the snapshot."""


@archive.command("index", epilog=EXIT_CODES)
@click.argument("root")
@click.option("--site", required=True, help="Site name, e.g. EODC: the provider of the archive's items.")
@click.option("--store", "store_root", envvar="CSCALE_STORE", required=True, help="Snapshot store (or $CSCALE_STORE).")
@click.option("--endpoint-url", default=None, envvar="CSCALE_ARCHIVE_ENDPOINT", help="S3 endpoint of the archive.")
@click.option(
    "--inventory",
    default=None,
    help="Read this S3 Inventory report (s3://.../manifest.json, or the configuration's folder for the newest "
    "report) instead of listing the bucket.",
)
@click.option("--workers", type=click.IntRange(1, 256), default=16, show_default=True, help="Listing/read threads.")
@click.option(
    "--full",
    is_flag=True,
    help="List every folder (by default, date folders older than the last run are skipped until the next full scan).",
)
@click.option("--rebuild", is_flag=True, help="Rebuild every product's item, not only those whose objects changed.")
@click.option("--no-metadata", is_flag=True, help="Do not read metadata files: items get no geometry.")
@click.option(
    "--lookback-days",
    type=click.IntRange(0),
    default=3,
    show_default=True,
    help="Incremental runs re-list date folders this many days before the last run.",
)
@click.option(
    "--full-scan-days",
    type=click.FloatRange(0),
    default=7.0,
    show_default=True,
    help="List everything when the last full scan is older than this.",
)
@click.option(
    "--max-quarantined",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of quarantined items above which the command exits 1.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("table", "csv", "json", "ndjson")),
    default=None,
    help="Output format (default: table on a terminal, ndjson when piped).",
)
@click.pass_obj
def index(
    ctx: Any,
    root: str,
    site: str,
    store_root: str,
    endpoint_url: str | None,
    inventory: str | None,
    workers: int,
    full: bool,
    rebuild: bool,
    no_metadata: bool,
    lookback_days: int,
    full_scan_days: float,
    max_quarantined: float,
    fmt: str | None,
) -> None:
    """Index the archive at ROOT (s3://bucket/prefix) for one site as one new snapshot version.

    Objects are grouped into products (.SAFE/ and .SEN3/ folders, .zip, .nc, Landsat tars and folders); each
    product becomes an item (assets point to its s3:// objects; footprint and times from manifest.safe,
    MTD_MSIL*.xml, xfdumanifest.xml or MTL when present), and every object a row of the `archive_objects` view.
    Incremental: only new or changed objects are re-read; vanished ones are removed.

    \b
    Example:
      cscale archive index s3://eodc-sentinel-1/ --site EODC --store ./store
      cscale archive index s3://incd/ --site INCD --inventory s3://inv/incd/daily/ --store ./store
    """
    from archive.index import IndexOptions, index_archive
    from harvester.store import Store

    context = ctx if isinstance(ctx, Context) else Context(0, False)

    def body() -> int:
        options = IndexOptions(
            site=site,
            endpoint_url=endpoint_url,
            inventory=inventory,
            workers=workers,
            metadata=not no_metadata,
            full=full,
            rebuild=rebuild,
            lookback_days=lookback_days,
            full_scan_days=full_scan_days,
        )
        store = Store.open(store_root)
        with progress_line(context, f"index {site}") as progress:
            result = index_archive(store, root, options, progress=progress)
        version = result.manifest.version if result.manifest else None
        report = result.report
        extra = {
            "provider": site,
            "root": report.get("root"),
            "mode": report.get("mode"),
            "scan": report.get("scan"),
            "unplaced": report.get("unplaced_objects", {}),
            "metadata_errors": report.get("products", {}).get("metadata_errors", {}),
        }
        report_run(result.counts, version, fmt, extra)
        return quarantine_exit(result.counts, max_quarantined)

    run_safely(context, body)
