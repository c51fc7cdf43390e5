"""The .sql files as the plain duckdb CLI runs them (open_store.sql, views.sql, macros.sql, the examples) on stores
built by `cscale ingest`: stores without quarantined records, archive inventory or parts, and what the `items` view
shows of the hive-style part paths (nothing: the files' own columns)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from harvester.cli import cli
from harvester.store import Store
from queries import connect
from queries.connection import SQL_DIR, extension_path, new_connection
from queries.search import Searcher, make_query

from conftest import write_ndjson
from test_bad_input import item

REPO = Path(__file__).resolve().parents[1]
VIEWS = ("items", "parts", "collections", "providers", "quarantine", "runs", "products", "archive_objects")


def cli_script(con: duckdb.DuckDBPyConnection, path: Path) -> duckdb.DuckDBPyConnection | None:
    """Run a script as the duckdb CLI does from the repository root: whole-line `--` comments skipped, `.read FILE`
    (relative to the working directory) run in place, statements up to a line ending in `;`. Like the CLI (1.5.5),
    stop at the first error: it propagates. Returns the last statement's result."""
    result = None
    buffer: list[str] = []
    for line in path.read_text().splitlines():
        if not buffer and line.startswith("--"):
            continue
        if not buffer and line.startswith("."):
            command, _, argument = line.partition(" ")
            assert command == ".read", f"{path.name}: dot command {command} not expected"
            result = cli_script(con, Path(argument.strip()))
            continue
        buffer.append(line)
        if line.rstrip().endswith(";"):
            result = con.execute("\n".join(buffer))
            buffer = []
    assert not "".join(buffer).strip(), f"{path.name} ends without ';'"
    return result


def open_store(root: str, monkeypatch: pytest.MonkeyPatch) -> duckdb.DuckDBPyConnection:
    """`duckdb -cmd "LOAD '<spatial>'" -cmd "SET VARIABLE cscale_root = ROOT" -cmd ".read queries/sql/open_store.sql"`,
    run from the repository root."""
    monkeypatch.chdir(REPO)
    con = new_connection()  # no autoload, spatial LOADed from the wheel: as the README tells CLI users
    con.execute("SET VARIABLE cscale_root = ?", [root])
    cli_script(con, SQL_DIR / "open_store.sql")
    return con


def ingest(store: Path, source: Path, provider: str, *extra: str) -> None:
    args = ["-q", "ingest", str(source), "--provider", provider, "--store", str(store), *extra]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output


def described(con: duckdb.DuckDBPyConnection, view: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {view}").fetchall()]


@pytest.fixture
def corpus_store(corpus: Path, tmp_path: Path) -> Path:
    """Real Sentinel-2 items of two providers, ingested by the CLI: parts, no quarantine, no archive inventory."""
    store = tmp_path / "store"
    ingest(store, corpus / "items/rustac/core/two-sentinel-2-items.json", "EODC")
    ingest(store, corpus / "items/rustac/server/sentinel-2/item-collection.json", "CESNET")
    manifest = Store.open(str(store)).manifest()
    assert len(manifest.parts) >= 2 and not manifest.quarantine
    assert not any(k.startswith("archive:") for k in manifest.state)
    return store


def test_open_store_runs_on_a_store_without_quarantine_or_archive(
    corpus_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    con = open_store(str(corpus_store), monkeypatch)
    assert con.execute("SELECT count(*) FROM items").fetchone() == (12,)
    assert con.execute("SELECT count(*) FROM quarantine").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM archive_objects").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM search_datetime('2024-01-01', NULL)").fetchone() == (12,)
    assert con.execute("SELECT count(*) FROM search_bbox(-180, -90, 180, 90)").fetchone() == (12,)
    providers = con.execute("SELECT provider, items FROM providers ORDER BY provider").fetchall()
    assert providers == [("CESNET", 10), ("EODC", 2)]
    # the same views, column for column, as queries.connect builds them
    python = connect(str(corpus_store))
    for view in VIEWS:
        assert described(con, view) == described(python, view), view
    for example in sorted((SQL_DIR / "examples").glob("*.sql")):
        result = cli_script(con, example)
        assert result is not None and result.description, example.name


def test_open_store_runs_on_a_version_with_only_quarantined_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.ndjson"
    bad.write_bytes(b'{"id": 1}\nnot json\n')
    ingest(tmp_path / "store", bad, "P", "--max-quarantined", "1")
    manifest = Store.open(str(tmp_path / "store")).manifest()
    assert not manifest.parts and manifest.quarantine
    con = open_store(str(tmp_path / "store"), monkeypatch)
    assert con.execute("SELECT count(*) FROM items").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM search_datetime(NULL, NULL)").fetchone() == (0,)
    assert sorted(r[0] for r in con.execute("SELECT reason FROM quarantine").fetchall()) == [
        "invalid_json",
        "not_an_item",
    ]
    python = connect(str(tmp_path / "store"))
    for view in VIEWS:
        assert described(con, view) == described(python, view), view


def test_items_view_shows_the_files_columns_not_the_partition_path(tmp_path: Path) -> None:
    """Parts live under items/provider=/collection=/year=/: hive keys of the layout, not item data. The view has
    no `year` column, a STAC property named `year` keeps its own value, and provider/collection keep the files'
    types (a provider named 123 is no number); filters on them still reach the Parquet scan, and search still
    prunes parts by the manifest."""
    store = tmp_path / "store"
    ingest(store, write_ndjson(tmp_path / "a.ndjson", [item(1), item(2)]), "123")
    with_year = item(3, year=1999)
    with_year["collection"] = "2020"
    ingest(store, write_ndjson(tmp_path / "b.ndjson", [with_year, item(4)]), "EODC")
    assert any("/year=2021/" in p.path for p in Store.open(str(store)).manifest().parts)

    first = connect(str(store), version=1)  # no item has a `year` property yet
    assert "year" not in [d[0] for d in first.execute("SELECT * FROM items").description]
    assert ("year", "INTEGER") in described(first, "parts")  # the partition is there, as part metadata
    con = connect(str(store))
    assert ("provider", "VARCHAR") in described(con, "items") and ("collection", "VARCHAR") in described(con, "items")
    rows = con.execute("SELECT provider, collection, id FROM items ORDER BY id").fetchall()
    assert rows == [
        ("123", "c1", "item-1"),
        ("123", "c1", "item-2"),
        ("EODC", "2020", "item-3"),
        ("EODC", "c1", "item-4"),
    ]
    eodc = con.execute("SELECT id, year FROM items WHERE provider = 'EODC' ORDER BY id").fetchall()
    assert eodc == [("item-3", 1999), ("item-4", None)]  # the property, not the partition's 2021

    plan = con.execute("EXPLAIN SELECT id FROM items WHERE provider = '123'").fetchall()[0][1]
    assert "READ_PARQUET" in plan and "provider='123'" in plan.replace(" ", "")  # pushed into the scan
    with Searcher(str(store), cache=tmp_path / "cache") as s:
        result = s.search(make_query(collections=["EODC|2020"], limit=10), explain=True)
    assert [h.id for h in result.hits] == ["item-3"]
    assert result.stats["parts_read"] == 1 < result.stats["parts_in_version"] == 3


def _duckdb_cli() -> str | None:
    """A duckdb CLI of the pinned version ($CSCALE_DUCKDB_CLI, or `duckdb` beside Python or on PATH)."""
    found = os.environ.get("CSCALE_DUCKDB_CLI") or shutil.which("duckdb", path=str(Path(sys.executable).parent))
    found = found or shutil.which("duckdb")
    if not found:
        return None
    version = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60).stdout
    return found if version.startswith(f"v{duckdb.__version__} ") else None


def test_open_store_in_the_real_duckdb_cli(corpus_store: Path) -> None:
    binary = _duckdb_cli()
    if binary is None:
        pytest.skip(f"no duckdb CLI v{duckdb.__version__} (pip install duckdb-cli, or set CSCALE_DUCKDB_CLI)")
    commands = [f"LOAD '{extension_path('spatial')}'", f"SET VARIABLE cscale_root = '{corpus_store}'"]
    args = [binary, "-csv", "-noheader"]
    for command in [*commands, ".read queries/sql/open_store.sql"]:
        args += ["-cmd", command]
    sql = "SELECT count(*) FROM items; SELECT count(*) FROM quarantine; SELECT count(*) FROM archive_objects;\n"
    proc = subprocess.run(args, input=sql, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0 and proc.stdout.split() == ["12", "0", "0"], proc.stderr
