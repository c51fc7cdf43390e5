"""The `cscale` command line: formats, exit codes, $CSCALE_STORE, snapshots commands."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from harvester.cli import cli

from conftest import write_ndjson
from test_bad_input import item


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CSCALE_STORE": str(tmp_path / "store")}


def invoke(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_help_documents_exit_codes() -> None:
    for args in (["--help"], ["ingest", "--help"], ["sql", "--help"], ["snapshots", "gc", "--help"]):
        code, out, _ = invoke(args, {})
        assert code == 0 and "Exit codes" in out


def test_ingest_sql_and_snapshots(tmp_path: Path, env: dict[str, str]) -> None:
    first = write_ndjson(tmp_path / "a.ndjson", [item(i) for i in range(4)])
    code, out, _ = invoke(["ingest", str(first), "--provider", "EODC", "--format", "json"], env)
    assert code == 0
    report = orjson.loads(out)[0]
    assert report["version"] == 1 and report["written"] == 4 and report["seen"] == 4

    # unchanged file: skipped, no version; --force reads it and finds nothing new
    code, out, _ = invoke(["ingest", str(first), "--provider", "EODC", "--format", "ndjson"], env)
    assert code == 0 and orjson.loads(out)["seen"] == 0 and orjson.loads(out)["committed"] is False
    code, out, _ = invoke(["ingest", str(first), "--provider", "EODC", "--format", "ndjson", "--force"], env)
    assert orjson.loads(out)["unchanged"] == 4

    second = write_ndjson(tmp_path / "b.ndjson", [item(i, v=1) for i in range(2, 6)])
    assert invoke(["ingest", str(second), "--provider", "GRNET", "--format", "json"], env)[0] == 0

    query = "SELECT provider, count(*) AS n FROM items GROUP BY ALL ORDER BY ALL"
    code, out, _ = invoke(["sql", query, "--format", "csv"], env)
    assert code == 0 and list(csv.DictReader(io.StringIO(out))) == [
        {"provider": "EODC", "n": "4"},
        {"provider": "GRNET", "n": "4"},
    ]
    code, out, _ = invoke(["sql", query, "--format", "json", "--version", "1"], env)
    assert orjson.loads(out) == [{"provider": "EODC", "n": 4}]
    code, out, _ = invoke(["sql", "SELECT id, geometry FROM items LIMIT 1", "--format", "ndjson"], env)
    assert orjson.loads(out)["geometry"].startswith("POLYGON")
    code, out, _ = invoke(["sql", query, "--format", "table"], env)
    assert "EODC" in out and "(2 rows)" in out
    (tmp_path / "q.sql").write_text("SELECT count(*) AS n FROM items")
    assert orjson.loads(invoke(["sql", f"@{tmp_path / 'q.sql'}", "--format", "ndjson"], env)[1]) == {"n": 8}

    code, out, _ = invoke(["snapshots", "list", "--format", "json"], env)
    assert [v["version"] for v in orjson.loads(out)] == [2, 1]
    code, out, _ = invoke(["snapshots", "show"], env)
    assert "8 items" in out and "GRNET" in out
    code, out, _ = invoke(["snapshots", "diff", "1", "--format", "json"], env)
    assert orjson.loads(out) == [{"provider": "GRNET", "collection": "c1", "added": 4, "removed": 0, "changed": 0}]
    code, out, _ = invoke(["snapshots", "diff", "1", "2", "--ids", "--format", "json"], env)
    assert len(orjson.loads(out)) == 4
    code, out, _ = invoke(["snapshots", "gc", "--keep", "1", "--grace", "0"], env)
    assert code == 0 and "removed 1 versions" in out


def test_exit_codes(tmp_path: Path, env: dict[str, str]) -> None:
    bad = write_ndjson(tmp_path / "bad.ndjson", [item(1), {"type": "Feature", "id": "x"}])
    code, _, err = invoke(["ingest", str(bad), "--provider", "P", "--format", "json"], env)
    assert code == 1 and "quarantined" in err
    bad2 = write_ndjson(tmp_path / "bad2.ndjson", [item(2), {"type": "Feature", "id": "y"}])
    code, _, _ = invoke(["ingest", str(bad2), "--provider", "P", "--max-quarantined", "0.5"], env)
    assert code == 0
    code, _, err = invoke(["ingest", str(tmp_path / "missing.ndjson"), "--provider", "P"], env)
    assert code == 3 and err.count("\n") == 1 and "cannot read" in err
    code, _, err = invoke(["sql", "SELECT * FROM no_such_table"], env)
    assert code == 3 and err.startswith("cscale: error: SQL error")
    code, _, err = invoke(["sql", "SELECT 1"], {"CSCALE_STORE": str(tmp_path / "empty")})
    assert code == 4 and "no snapshot" in err
    code, _, err = invoke(["sql", "SELECT 1", "--version", "99"], env)
    assert code == 4 and "version 99" in err
    code, _, err = invoke(["ingest", str(bad), "--provider", "A|B"], env)
    assert code == 3
    code, _, _ = invoke(["ingest", str(bad)], env)
    assert code == 2  # usage: --provider missing


def test_console_script_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("cscale")
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "cscale" in proc.stdout
