"""`connect(root, version)`: a DuckDB connection with spatial (and httpfs for S3) loaded offline from the pinned
extension wheels — never INSTALL from the network — and cscale's views over one snapshot version."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from harvester.errors import StoreError
from harvester.manifest import manifest_key
from harvester.storage import HttpStorage, LocalStorage, S3Storage
from harvester.store import Store

SQL_DIR = Path(__file__).with_name("sql")
EMPTY_STAND_INS = ("empty_views.sql", "empty_quarantine.sql", "empty_archive.sql")


def extension_path(name: str) -> str:
    """Where the `duckdb-extension-<name>` wheel keeps the binary for this DuckDB version."""
    spec = importlib.util.find_spec(f"duckdb_extension_{name}")
    if spec is None or spec.origin is None:
        raise StoreError(f"the duckdb-extension-{name}=={duckdb.__version__} wheel is not installed")
    path = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not path.exists():
        raise StoreError(f"no {name} extension for DuckDB {duckdb.__version__} at {path} (pin duckdb==1.5.5)")
    return str(path)


def new_connection(*, httpfs: bool = False, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that can never reach the network for extensions."""
    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if threads:
        config["threads"] = threads
    con = duckdb.connect(config=config)
    con.execute(f"LOAD '{extension_path('spatial')}'")
    if httpfs:
        con.execute(f"LOAD '{extension_path('httpfs')}'")
    return con


def _s3_secret(con: duckdb.DuckDBPyConnection) -> None:
    """Credentials and endpoint from the standard AWS environment variables (never from the command line)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    options = {
        "KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", ""),
        "SECRET": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        "REGION": os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1")),
    }
    if os.environ.get("AWS_SESSION_TOKEN"):
        options["SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
    clauses = [f"{k} ${i + 1}" for i, k in enumerate(options)]
    values: list[object] = list(options.values())
    if endpoint:
        parsed = urlparse(endpoint)
        clauses += [
            f"ENDPOINT ${len(values) + 1}",
            "URL_STYLE 'path'",
            f"USE_SSL {parsed.scheme == 'https'}",
        ]
        values.append(parsed.netloc)
    # CREATE SECRET takes no bound parameters: quote the values as SQL string literals.
    literal = [("'" + str(v).replace("'", "''") + "'") for v in values]
    sql = "CREATE OR REPLACE SECRET cscale_s3 (TYPE s3, " + ", ".join(clauses) + ")"
    for i in range(len(literal), 0, -1):
        sql = sql.replace(f"${i}", literal[i - 1])
    con.execute(sql)


def connect(root: str, version: int | None = None, *, threads: int | None = None) -> duckdb.DuckDBPyConnection:
    """A connection with the views `items`, `parts`, `collections`, `providers`, `products`, `quarantine`, `runs`,
    `archive_objects` over one version (default: the one CURRENT names), and the macros of macros.sql
    (`search_bbox`, ...)."""
    store = Store.open(root)
    manifest = store.manifest(version)
    storage = store.storage
    remote = isinstance(storage, S3Storage | HttpStorage)
    con = new_connection(httpfs=remote, threads=threads)
    if isinstance(storage, S3Storage):
        _s3_secret(con)
    elif isinstance(storage, HttpStorage):
        http_settings(con, storage, manifest_key(manifest.version))
    base = storage.url if remote else str(storage.root if isinstance(storage, LocalStorage) else storage.url)
    con.execute("SET VARIABLE cscale_root = ?", [base])
    con.execute("SET VARIABLE cscale_version = ?", [manifest.version])
    con.execute("SET VARIABLE cscale_manifest = ?", [storage.uri(manifest_key(manifest.version))])
    con.execute("SET VARIABLE cscale_parts = ?::VARCHAR[]", [[storage.uri(p.path) for p in manifest.parts]])
    con.execute("SET VARIABLE cscale_quarantine = ?::VARCHAR[]", [[storage.uri(q.path) for q in manifest.quarantine]])
    archive = [  # inventory parts of `cscale archive index`, named by its state entries
        storage.uri(str(f))
        for k, v in manifest.state.items()
        if k.startswith("archive:") and isinstance(v, dict)
        for f in v.get("files") or ()
    ]
    con.execute("SET VARIABLE cscale_archive = ?::VARCHAR[]", [archive])
    # The typed empty stand-ins that views.sql falls back to when a version has no parts, no quarantined records
    # or no archive inventory (read_parquet needs one file at least); open_store.sql runs the same files.
    for name in EMPTY_STAND_INS:
        for statement in sql_statements(name):
            con.execute(statement)
    skip = set()
    if isinstance(storage, HttpStorage):
        skip.add("VIEW runs ")
        _http_runs(con, storage, manifest.version)
    for statement in sql_statements("views.sql"):
        if not any(marker in statement for marker in skip):
            con.execute(statement)
    for statement in sql_statements("macros.sql"):
        try:
            con.execute(statement)
        except duckdb.BinderException:  # a table macro over columns this version lacks (no start_datetime...)
            continue
    return con


def _http_runs(con: duckdb.DuckDBPyConnection, storage: HttpStorage, version: int) -> None:
    """Plain HTTP cannot list manifests/ (the `runs` view globs it): read the retained versions' manifests by name."""
    keys = [manifest_key(v) for v in range(1, version + 1)]
    con.execute("SET VARIABLE cscale_manifests = ?::VARCHAR[]", [[storage.uri(k) for k in keys if storage.exists(k)]])
    glob = "getvariable('cscale_root') || '/manifests/*.json'"
    for statement in sql_statements("views.sql"):
        if "VIEW runs " in statement and glob in statement:
            con.execute(statement.replace(glob, "getvariable('cscale_manifests')"))


def http_settings(con: duckdb.DuckDBPyConnection, storage: HttpStorage, probe_key: str) -> None:
    """A server that ignores range requests (python -m http.server) gets whole-file downloads: DuckDB's
    range probing against it costs several round trips per file."""
    if not storage.supports_ranges(probe_key):
        con.execute("SET force_download = true")


def sql_statements(name: str) -> list[str]:
    """The statements of one of our own .sql files (they keep `;` at line ends only)."""
    text = "\n".join(line for line in (SQL_DIR / name).read_text().splitlines() if not line.startswith("--"))
    return [s.strip() for s in text.split(";\n") if s.strip().rstrip(";")]
