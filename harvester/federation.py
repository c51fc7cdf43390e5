"""`cscale harvest run --config FILE`: every source of a federation config file, one after the other, each
committed as its own version exactly as `cscale harvest api|static` or `cscale archive index` would commit it
(same functions, same state keys: watermarks, resumable journals and incremental state stay per source).

The file is TOML. It names credentials only through environment variables, and is validated whole (keys, types,
ranges, every named variable set) before any source is harvested. A source that fails is reported and the run
goes on; the exit code is the worst of the sources' codes.
"""

from __future__ import annotations

import logging
import os
import re
import tomllib
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pyarrow as pa

from harvester.cli import EXIT_CODES, Context, progress_line, quarantine_exit, run_safely
from harvester.errors import CscaleError, InputError
from harvester.http import redact
from harvester.output import FORMATS, default_format, emit_table
from harvester.sources_api import parse_duration
from harvester.timeutil import DatetimeError, parse_datetime

log = logging.getLogger(__name__)

KINDS = ("api", "static", "archive")
# Per kind, the keys a source may set and how each is checked. Each key is the single command's option name
# (`--max-window-items` is `max_window_items`), and its range and default are read from that command's click
# option, so a config source and a command line with the same settings behave the same and cannot drift apart.
KEYS: dict[str, dict[str, str]] = {
    "api": {
        "collections": "strings",
        "since": "when",
        "search": "choice",
        "concurrency": "int",
        "rate": "float",
        "limit": "int",
        "max_window_items": "int",
        "lag": "duration",
        "timeout": "float",
        "retries": "int",
        "retry_budget": "int",
        "max_quarantined": "float",
        "bearer_env": "envvar",
        "header_env": "header_env",
    },
    # `cscale harvest static` sends no auth headers, so a static source takes no *_env keys.
    "static": {
        "allow": "strings",
        "concurrency": "int",
        "max_document_bytes": "int",
        "timeout": "float",
        "retries": "int",
        "max_quarantined": "float",
        "max_failed": "float",
    },
    "archive": {
        "endpoint_url": "url",
        "inventory": "url",
        "workers": "int",
        "lookback_days": "int",
        "full_scan_days": "float",
        "max_quarantined": "float",
    },
}
# A key outside KEYS that looks like this is a credential written into the file: refused with a hint, not just
# as "unknown", and its value is never echoed.
_SECRET_KEY = re.compile(r"token|bearer|authori[sz]ation|passw(or)?d|secret|api_?key|credential|^headers$", re.I)
# Upper case only: a lower-case "name" is more likely a token pasted where a name belongs, and the "not set"
# error would print it.
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}")
_AUTH_HINT = {
    "api": "put it in an environment variable and name that with bearer_env or header_env",
    "static": "static catalogs are read without credentials",
    "archive": "S3 credentials come from the standard AWS_* environment variables",
}


@dataclass(frozen=True, slots=True)
class Source:
    index: int  # 1-based, in file order
    provider: str
    kind: str
    url: str
    settings: Mapping[str, Any]  # every key of KEYS[kind]: the file's checked value or the command's default

    @property
    def label(self) -> str:
        return f"source {self.index} ({self.provider}, {self.kind})"

    def env_names(self) -> list[str]:
        """The environment variables holding this source's credentials (names only)."""
        headers: Mapping[str, str] = self.settings.get("header_env") or {}
        bearer = self.settings.get("bearer_env")
        return [*headers.values(), *([bearer] if bearer else [])]


@dataclass(frozen=True, slots=True)
class Federation:
    path: Path
    store: str | None
    sources: tuple[Source, ...]

    def select(self, only: Sequence[str]) -> tuple[Source, ...]:
        """The sources of these providers (all when none are named); an unknown name is an error, so that a
        typo in a crontab fails loudly instead of harvesting nothing."""
        wanted = {name.strip() for spec in only for name in spec.split(",") if name.strip()}
        known = {s.provider for s in self.sources}
        unknown = sorted(wanted - known)
        if unknown:
            raise InputError(
                f"--only {unknown[0]}: no source of {self.path} has this provider (it has: {sorted(known)})"
            )
        return tuple(s for s in self.sources if not wanted or s.provider in wanted)


class _Bad(Exception):
    """One value is wrong; load_federation adds the file, source and key."""


# ------------------------------------------------------------------------------------------------ parsing


def load_federation(path: Path, environ: Mapping[str, str]) -> Federation:
    """Read and check the whole file; every error is one InputError line naming file, source and key."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read the config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None
    for key in doc:
        if key not in ("store", "source"):
            raise InputError(f"{path}: {key}: {_unknown(key, ('store', 'source'), 'api')}")
    store = doc.get("store")
    if store is not None and (not isinstance(store, str) or not store.strip()):
        raise InputError(f"{path}: store: expected a folder or s3://bucket/prefix string")
    tables = doc.get("source")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise InputError(f"{path}: expected one or more [[source]] tables")
    sources: list[Source] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, table in enumerate(tables, start=1):
        where = f"source {index}"
        if isinstance(table.get("provider"), str) and table["provider"].strip():
            where += f" ({table['provider']})"
        try:
            source = _source(index, table, environ)
        except _Bad as exc:
            raise InputError(f"{path}: {where}: {exc}") from None
        identity = (source.provider, source.kind, source.url)
        if identity in seen:
            raise InputError(f"{path}: {where}: the same provider, kind and url as source {seen[identity]}")
        seen[identity] = index
        sources.append(source)
    return Federation(path, store, tuple(sources))


def _source(index: int, table: dict[str, Any], environ: Mapping[str, str]) -> Source:
    provider = table.get("provider")
    if not isinstance(provider, str) or not provider.strip() or "|" in provider:
        raise _Bad("provider: expected a non-empty name without '|'")
    kind = table.get("kind")
    if kind not in KINDS:
        shown = f"{kind!r}" if isinstance(kind, str) and len(kind) < 20 else "missing or not a string"
        raise _Bad(f"kind: expected one of {', '.join(KINDS)}, got {shown}")
    keys = KEYS[kind]
    for key in table:
        if key not in keys and key not in ("provider", "kind", "url"):
            raise _Bad(f"{key}: {_unknown(key, sorted(keys), kind)}")
    url = _checked_url("url", table.get("url"))
    if kind == "archive" and (urlsplit(url).scheme != "s3" or not urlsplit(url).netloc):
        raise _Bad("url: an archive is s3://bucket[/prefix]")
    params = _command_params(kind)
    settings = {key: _value(key, how, table[key], params.get(key)) for key, how in keys.items() if key in table}
    for key, how in keys.items():
        if key not in settings:
            settings[key] = _default(how, params.get(key))
    source = Source(index, provider.strip(), kind, url, settings)
    for name in source.env_names():
        if name not in environ:
            key = "bearer_env" if name == settings.get("bearer_env") else "header_env"
            raise _Bad(f"{key}: environment variable {name} is not set")
    return source


def _unknown(key: str, known: Sequence[str], kind: str) -> str:
    if key.lower() == "headers":
        return "header values may not be written in the config file (they are credentials); " + (
            'use header_env = { "Header-Name" = "ENVVAR" }' if kind == "api" else _AUTH_HINT[kind]
        )
    if key in KEYS["api"] and key.endswith("_env"):
        return f"only api sources send auth headers; {_AUTH_HINT[kind]}"
    if _SECRET_KEY.search(key):
        return f"credentials may not be written in the config file; {_AUTH_HINT[kind]}"
    return f"unknown key (known: {', '.join(known)})"


def _command_params(kind: str) -> dict[str, click.Parameter]:
    """The single command's click options, for their ranges and defaults."""
    command: click.Command
    if kind == "api":
        from harvester.harvest_api import api as command
    elif kind == "static":
        from harvester.harvest_static import static as command
    else:  # archive.cli is click only; archive.index is imported when an archive is harvested
        from archive.cli import index as command
    return {p.name: p for p in command.params if p.name}


def _default(how: str, param: click.Parameter | None) -> Any:
    if how == "strings":
        return ()
    if how == "header_env":
        return {}
    if (
        param is None
        or how in ("when", "duration", "envvar", "url")
        or not isinstance(param.default, int | float | str)
    ):
        return None
    return param.default


def _value(key: str, how: str, value: Any, param: click.Parameter | None) -> Any:
    """`value` checked and converted; errors never echo a value that could be a credential."""
    if how in ("int", "float"):
        ok = isinstance(value, int) if how == "int" else isinstance(value, int | float)
        if not ok or isinstance(value, bool):
            raise _Bad(f"{key}: expected {'an integer' if how == 'int' else 'a number'}, got {_type(value)}")
        return _in_range(key, int(value) if how == "int" else float(value), param)
    if how == "choice":
        if not isinstance(value, str):
            raise _Bad(f"{key}: expected a string, got {_type(value)}")
        return _in_range(key, value, param)
    if how == "strings":
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise _Bad(f"{key}: expected a list of non-empty strings, got {_type(value)}")
        return tuple(_checked_url(key, v) if key == "allow" else v.strip() for v in value)
    if how == "url":
        return _checked_url(key, value)
    if how == "when":
        text = value.isoformat() if isinstance(value, date | datetime) else value
        try:
            return parse_datetime(text)
        except DatetimeError as exc:
            raise _Bad(f"{key}: {exc}") from None
    if how == "duration":
        if not isinstance(value, str):
            raise _Bad(f"{key}: expected a duration string such as 6h or 2d, got {_type(value)}")
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise _Bad(f"{key}: {exc}") from None
    if how == "envvar":
        return _env_name(key, value)
    if how == "header_env":
        if not isinstance(value, dict) or not value:
            raise _Bad(f'{key}: expected a table {{ "Header-Name" = "ENVVAR" }}, got {_type(value)}')
        for name in value:
            if not _HEADER_NAME.fullmatch(name):
                raise _Bad(f"{key}: {name!r} is not a header name")
        return {name: _env_name(f"{key}.{name}", var) for name, var in value.items()}
    raise AssertionError(how)


def _in_range(key: str, value: Any, param: click.Parameter | None) -> Any:
    if param is None:
        return value
    try:
        return param.type.convert(value, param, None)
    except click.BadParameter as exc:
        raise _Bad(f"{key}: {exc.message}") from None


def _env_name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise _Bad(f"{key}: expected the name of an environment variable (A-Z, 0-9, _), not its value")
    return value


def _checked_url(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"{key}: expected a non-empty string, got {_type(value)}")
    try:
        password = urlsplit(value).password
    except ValueError:
        password = None
    if password:
        raise _Bad(f"{key}: holds a password (user:password@); credentials may not be written in the config file")
    return value.strip()


def _type(value: Any) -> str:
    return {
        type(None): "nothing",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# ------------------------------------------------------------------------------------------------ running


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # committed | unchanged | quarantined | partial | failed
    code: int  # the exit code the single command would have given
    version: int | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    message: str = ""


def harvest_source(
    store_root: str, source: Source, environ: Mapping[str, str], *, progress: bool, verbose: bool
) -> Outcome:
    """One source, as its single command would harvest it; a failure becomes an Outcome, not an exception."""
    from harvester.store import Store

    secrets = [environ[name] for name in source.env_names() if name in environ]
    try:
        store = Store.open(store_root)
        harvest = {"api": _harvest_api, "static": _harvest_static, "archive": _harvest_archive}[source.kind]
        version, counts, code, message = harvest(store, source, environ, progress)
    except CscaleError as exc:
        return Outcome("failed", exc.exit_code, message=_scrub(str(exc), secrets))
    except Exception as exc:  # a bug in one source's harvest must not cost the others theirs
        if verbose:
            traceback.print_exc()
        return Outcome("failed", 6, message=_scrub(f"internal error: {type(exc).__name__}: {exc}", secrets))
    return Outcome(_status(code, message, version), code, version, counts, _scrub(message, secrets))


def _status(code: int, message: str, version: int | None) -> str:
    if code:
        return "partial" if message else "quarantined"
    return "committed" if version is not None else "unchanged"


# (version, counts, exit code, what made it partial)
_Harvested = tuple[int | None, dict[str, int], int, str]


def _harvest_api(store: Any, source: Source, environ: Mapping[str, str], progress: bool) -> _Harvested:
    from datetime import timedelta

    from harvester.harvest_api import ApiOptions, auth_headers, harvest_api
    from harvester.http import HttpOptions

    s = source.settings
    specs = [f"{name}={var}" for name, var in s["header_env"].items()]
    options = ApiOptions(
        provider=source.provider,
        url=source.url,
        collections=s["collections"],
        since=s["since"],
        search=s["search"],
        concurrency=s["concurrency"],
        rate=s["rate"],
        limit=s["limit"],
        max_window_items=s["max_window_items"],
        lag_updated=s["lag"] or timedelta(hours=1),  # the command's defaults for --lag
        lag_datetime=s["lag"] or timedelta(days=2),
        retry_budget=s["retry_budget"],
        headers=auth_headers(specs, s["bearer_env"], environ),
        http=HttpOptions(read_timeout=s["timeout"], retries=s["retries"]),
    )
    # A quiet Context draws nothing: progress was already decided from the caller's terminal and -q.
    with progress_line(Context(0, not progress), f"harvest api {source.provider}") as update:
        result = harvest_api(store, options, progress=update)
    failed = [f"collection {f['collection']} failed: {f['message']}" for f in result.report["failures"]]
    code = 1 if failed else 0
    code = max(code, quarantine_exit(result.counts, s["max_quarantined"]))
    version = result.commit.manifest.version if result.commit.manifest else None
    return version, result.counts, code, "; ".join(failed)


def _harvest_static(store: Any, source: Source, environ: Mapping[str, str], progress: bool) -> _Harvested:
    from harvester.harvest_static import StaticOptions, harvest_static
    from harvester.http import HttpOptions

    s = source.settings
    concurrency = s["concurrency"]
    options = StaticOptions(
        provider=source.provider,
        root=source.url,
        allow=s["allow"],
        concurrency=concurrency,
        max_document_bytes=s["max_document_bytes"],
        http=HttpOptions(read_timeout=s["timeout"], retries=s["retries"], max_connections=concurrency),
    )
    result = harvest_static(store, options, progress=progress)
    report = result.report
    for failure in report["failures"][:5]:
        log.warning("%s: %s (%s)", failure["reason"], failure["href"], failure["message"])
    share = report["failed"] / report["documents"] if report["documents"] else 0.0
    message = ""
    if share > s["max_failed"]:
        message = f"{report['failed']:,} of {report['documents']:,} documents could not be read ({share:.1%})"
    code = max(1 if message else 0, quarantine_exit(result.counts, s["max_quarantined"]))
    version = result.commit.manifest.version if result.commit.manifest else None
    return version, result.counts, code, message


def _harvest_archive(store: Any, source: Source, environ: Mapping[str, str], progress: bool) -> _Harvested:
    from archive.index import IndexOptions, index_archive

    s = source.settings
    options = IndexOptions(
        site=source.provider,
        endpoint_url=s["endpoint_url"] or environ.get("CSCALE_ARCHIVE_ENDPOINT"),  # as `--endpoint-url` falls back
        inventory=s["inventory"],
        workers=s["workers"],
        lookback_days=s["lookback_days"],
        full_scan_days=s["full_scan_days"],
    )
    with progress_line(Context(0, not progress), f"index {source.provider}") as update:
        result = index_archive(store, source.url, options, progress=update)
    version = result.manifest.version if result.manifest else None
    return version, result.counts, quarantine_exit(result.counts, s["max_quarantined"]), ""


def _scrub(text: str, secrets: Sequence[str]) -> str:
    """Belt and braces: no message leaves with a credential in it, whatever a library put there."""
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def summary_row(source: Source, outcome: Outcome) -> dict[str, Any]:
    counts = outcome.counts
    return {
        "source": source.index,
        "provider": source.provider,
        "kind": source.kind,
        "url": redact(source.url),
        "status": outcome.status,
        "exit_code": outcome.code,
        "version": outcome.version,
        **{k: counts.get(k) for k in ("seen", "written", "quarantined", "deleted")},
        "message": outcome.message or None,
    }


# ------------------------------------------------------------------------------------------------ command


@click.command("run", epilog=EXIT_CODES)
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Federation config file (TOML): one [[source]] table per provider source.",
)
@click.option(
    "--store",
    "store_root",
    envvar="CSCALE_STORE",
    default=None,
    help="Snapshot store (default: $CSCALE_STORE, else the config's store).",
)
@click.option(
    "--only",
    multiple=True,
    metavar="PROVIDER[,PROVIDER...]",
    help="Only the sources of these providers (repeatable or comma-separated).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None, help="Output format of the summary.")
@click.pass_obj
def run(ctx: Any, config_path: Path, store_root: str | None, only: tuple[str, ...], fmt: str | None) -> None:
    """Harvest every source of a federation config file, in order, each as its own snapshot version (as
    `cscale harvest api|static` and `cscale archive index` would). The whole file is checked first; a source
    that fails is reported and the run goes on. Prints one summary row per source and exits with the worst
    source's code (1 also when a source was partial: an API collection failed, or more static documents than
    its max_failed could not be read).

    \b
    Example:
      EODC_TOKEN=... cscale harvest run --config federation.toml --store ./store
    """

    context = ctx if isinstance(ctx, Context) else Context(0, False)

    def body() -> int:
        federation = load_federation(config_path, os.environ)
        sources = federation.select(only)
        root = store_root or federation.store
        if not root:
            raise InputError(
                f"no snapshot store: give --store, set $CSCALE_STORE or write store = ... in {config_path}"
            )
        rows: list[dict[str, Any]] = []
        worst = 0
        for source in sources:
            log.info("harvesting %s from %s", source.label, redact(source.url))
            outcome = harvest_source(
                root, source, os.environ, progress=context.progress_enabled, verbose=bool(context.verbose)
            )
            if outcome.message:
                click.echo(f"cscale: {source.label}: {outcome.status}: {outcome.message}", err=True)
            rows.append(summary_row(source, outcome))
            worst = max(worst, outcome.code)
        emit_table(pa.Table.from_pylist(rows), fmt or default_format())
        return worst

    run_safely(context, body)
