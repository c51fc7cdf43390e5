"""`cscale search`: STAC item search over a snapshot, offline (registered by harvester.cli)."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import click
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from harvester.cli import EXIT_CODES, progress_line, run_safely
from harvester.errors import InputError
from harvester.output import emit_table

FORMATS = ("itemcollection", "ndjson", "geoparquet", "csv", "table")


@click.command("search", epilog=EXIT_CODES)
@click.option(
    "--store",
    "store_root",
    envvar="CSCALE_STORE",
    required=True,
    help="Snapshot store: a folder, s3://bucket/prefix or the URL of a published store (default: $CSCALE_STORE).",
)
@click.option("--bbox", help="X1,Y1,X2,Y2 (lon/lat; X1 > X2 crosses the antimeridian).")
@click.option("--intersects", help="A GeoJSON geometry: a file, or the JSON itself.")
@click.option("--datetime", "interval", help="An instant or interval: A/B, A/.., ../B (RFC 3339; a date is its day).")
@click.option("--collections", multiple=True, help="PROVIDER|collection or a plain id (any provider); comma-separated.")
@click.option("--providers", multiple=True, help="Only these providers (comma-separated).")
@click.option("--ids", multiple=True, help="Item ids (comma-separated, or repeat the option).")
@click.option(
    "--filter", "filter_text", help="A CQL2-text filter, e.g. \"eo:cloud_cover < 20 AND platform = 'sentinel-2a'\"."
)
@click.option("--filter-json", help="A CQL2-JSON filter: a file, or the JSON itself.")
@click.option("--sortby", help="Sort keys: +field or -field, comma-separated (default: newest first).")
@click.option("--limit", type=int, default=None, help="Results per page (default 10, at most 10000).")
@click.option("--max-items", type=click.IntRange(1), default=None, help="Follow pages until this many results.")
@click.option("--fields", help="Fields extension: id,properties.eo:cloud_cover,-assets (tables: extra columns).")
@click.option(
    "--merge/--no-merge",
    default=None,
    help="One result per product with its providers and hrefs (default: on for table).",
)
@click.option("--token", help="Page token from a previous search's next link (same parameters).")
@click.option("--version", "version", type=int, default=None, help="Snapshot version (default: current).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=None,
    help="Output (default: table on a terminal, ndjson when piped).",
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to this file instead of stdout."
)
@click.option("--explain", is_flag=True, help="On stderr: parts considered and read, and DuckDB's EXPLAIN ANALYZE.")
@click.option(
    "--prepare",
    is_flag=True,
    help="First build the version's search cache (narrow copies, id index, row copies of every part: minutes per "
    "million items, once; parts prepared for an earlier version are reused), which makes searches quick. "
    "Without search parameters, only prepares. Cache: $CSCALE_CACHE_DIR, else ~/.cache/cscale.",
)
@click.pass_obj
def search(
    ctx: Any,
    store_root: str,
    bbox: str | None,
    intersects: str | None,
    interval: str | None,
    collections: tuple[str, ...],
    providers: tuple[str, ...],
    ids: tuple[str, ...],
    filter_text: str | None,
    filter_json: str | None,
    sortby: str | None,
    limit: int | None,
    max_items: int | None,
    fields: str | None,
    merge: bool | None,
    token: str | None,
    version: int | None,
    fmt: str | None,
    output: Path | None,
    explain: bool,
    prepare: bool,
) -> None:
    """Search a snapshot with STAC API item-search semantics: bbox, intersects, datetime, collections, ids,
    CQL2 filter, sortby, fields; results from every provider, merged by product on request.

    \b
    Examples:
      cscale search --store ./store --bbox 5,45,16,48 --datetime 2021-06-01/2021-06-30 --collections sentinel-2-l2a
      cscale search --store ./store --filter "eo:cloud_cover < 10" --sortby -datetime --format itemcollection
      cscale search --store https://example.org/cscale --ids LC08_L2SP_192027_20210702_20210712_02_T1
      cscale search --store ./store --prepare      # after each harvest, e.g. in the same cron job
    """
    from queries.search import Searcher, SearchResult, combine, decode_token, make_query, parse_fields

    asked = any(
        (bbox, intersects, interval, collections, providers, ids, filter_text, filter_json, sortby, token, fields)
    )

    def body() -> int:
        if prepare and not asked and limit is None and max_items is None:
            with Searcher(store_root, version) as searcher:
                _prepare(ctx, searcher)
            return 0
        if filter_text is not None and filter_json is not None:
            raise InputError("use --filter or --filter-json, not both")
        chosen = fmt or ("table" if (output is None and sys.stdout.isatty()) else "ndjson")
        if chosen == "geoparquet" and output is None and sys.stdout.isatty():
            raise InputError("geoparquet output is binary: give --output FILE or pipe it")
        query = make_query(
            bbox=bbox,
            intersects=_json_arg(intersects, "--intersects") if intersects is not None else None,
            datetime=interval,
            collections=_split(collections),
            providers=_split(providers),
            ids=_split(ids),
            filter=filter_text
            if filter_text is not None
            else (_json_arg(filter_json, "--filter-json") if filter_json else None),
            sortby=sortby,
            limit=limit,
            fields=fields if chosen in ("itemcollection", "ndjson") else None,
            merge=merge if merge is not None else chosen == "table",
        )
        at_version = version
        if token is not None:
            token_version = decode_token(token)[0]
            if version is not None and version != token_version:
                raise InputError(f"the page token belongs to version {token_version}, not {version}")
            at_version = token_version
        with Searcher(store_root, at_version) as searcher:
            if prepare:
                _prepare(ctx, searcher)
            results: list[SearchResult] = []
            page_token = token
            wanted = max_items or query.limit
            arrow = chosen == "geoparquet"  # the only output made from the Arrow rows
            while True:
                first = not results
                result = searcher.search(query, token=page_token, explain=explain and first, arrow=arrow)
                results.append(result)
                if explain and result.explain:
                    click.echo(result.explain, err=True)
                count = sum(len(r.items) for r in results)
                if not result.next_token or max_items is None or count >= wanted:
                    break
                page_token = result.next_token
        result = combine(results, max_items)
        columns = parse_fields(fields).include if fields and chosen in ("csv", "table") else ()
        _emit(result, chosen, output, columns)
        if result.next_token and not ctx.quiet and chosen != "itemcollection":
            click.echo(f"cscale: more results; next page: --token {result.next_token}", err=True)
        return 0

    run_safely(ctx, body)


def _prepare(ctx: Any, searcher: Any) -> None:
    with progress_line(ctx, f"prepare search of version {searcher.version}") as update:
        timings = searcher.prepare(progress=lambda done, _total: update(done))
    if not ctx.quiet:
        steps = ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s" for k, v in timings.items())
        click.echo(f"cscale: search cache of version {searcher.version} in {searcher.cache_dir} ({steps})", err=True)


def _split(values: tuple[str, ...]) -> list[str] | None:
    names = [v.strip() for value in values for v in value.split(",") if v.strip()]
    return names or None


def _json_arg(value: str, option: str) -> Any:
    """Inline JSON, or the path of a JSON file."""
    text = value
    if not value.lstrip().startswith(("{", "[")):
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise InputError(f"{option}: cannot read {value[:80]}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"{option}: {value[:80]} is not UTF-8 text") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{option}: not JSON ({exc})") from None


def _emit(result: Any, fmt: str, output: Path | None, columns: tuple[str, ...]) -> None:
    if fmt == "geoparquet":
        _write_geoparquet(result.table, output)
        return
    stream = io.StringIO()
    if fmt == "itemcollection":
        stream.write(orjson.dumps(result.item_collection(), option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "ndjson":
        for item in result.items:
            stream.write(orjson.dumps(item).decode() + "\n")
    else:
        table = summary_table(result.items, merged=result.query.merge, columns=columns, full=fmt == "csv")
        emit_table(table, fmt, stream)
    text = stream.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        try:
            output.write_text(text)
        except OSError as exc:
            raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None


def summary_table(
    items: list[dict[str, Any]], *, merged: bool, columns: tuple[str, ...] = (), full: bool = False
) -> pa.Table:
    """One row per result for people (table) or spreadsheets (csv, `full`: with ids and hrefs)."""
    rows = []
    for item in items:
        props = item.get("properties") or {}
        when = props.get("datetime") or "/".join(str(props.get(k) or "..") for k in ("start_datetime", "end_datetime"))
        if merged:
            replicas = props.get("cscale:replicas") or []
            row: dict[str, Any] = {
                "product": props.get("cscale:product_key") or item.get("id"),
                "datetime": when,
                "collection": item.get("collection"),
                "providers": " ".join(r["provider"] for r in replicas),
            }
            if full:
                row["ids"] = " ".join(r["id"] for r in replicas)
                row["hrefs"] = " ".join(r.get("href") or "" for r in replicas)
        else:
            row = {
                "provider": props.get("cscale:provider"),
                "collection": item.get("collection"),
                "id": item.get("id"),
                "datetime": when,
            }
            if full:
                row["href"] = next((lk.get("href") for lk in item.get("links") or () if lk.get("rel") == "self"), None)
        for name in columns:
            key = name[len("properties.") :] if name.startswith("properties.") else name
            value = item.get(key, props.get(key))
            row[name] = (
                value if value is None or isinstance(value, str | int | float | bool) else orjson.dumps(value).decode()
            )
        rows.append(row)
    if not rows:
        names = (
            ["product", "datetime", "collection", "providers"]
            if merged
            else ["provider", "collection", "id", "datetime"]
        )
        return pa.table({n: pa.array([], pa.string()) for n in names})
    return pa.Table.from_pylist(rows)


def _write_geoparquet(table: pa.Table, output: Path | None) -> None:
    """The rows as a stac-geoparquet file (GeoParquet 1.1 metadata with the bbox covering), as parts are."""
    from harvester.parts import part_schema

    schema = part_schema(table.schema.remove_metadata(), None, None)
    table = table.replace_schema_metadata(schema.metadata)
    target: Any = str(output) if output is not None else sys.stdout.buffer
    try:
        pq.write_table(table, target, compression="zstd")
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
