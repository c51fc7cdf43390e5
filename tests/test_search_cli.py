"""`cscale search`: output formats, paging, explain, exit codes on bad input (3, one line), remote roots."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from harvester.cli import cli
from harvester.parts import batch_to_items
from harvester.store import Store

from conftest import free_port
from test_search import ANNOTATIONS, build_small, shared_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return shared_store(tmp_path_factory, "small", build_small)  # the one test_search.py uses


@pytest.fixture
def env(store: Store, tmp_path: Path) -> dict[str, str]:
    return {"CSCALE_STORE": store.url, "CSCALE_CACHE_DIR": str(tmp_path / "cache")}


def invoke(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _bare(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "properties": {k: v for k, v in item["properties"].items() if k not in ANNOTATIONS}}


def test_formats(env: dict[str, str], tmp_path: Path) -> None:
    args = ["search", "--datetime", "2021-01-01/2022-12-31", "--limit", "20", "--sortby", "-datetime"]
    code, out, _ = invoke([*args, "--format", "ndjson"], env)
    assert code == 0
    items = [orjson.loads(line) for line in out.splitlines()]
    assert len(items) == 20 and all(i["properties"]["cscale:provider"] in ("CESNET", "CREODIAS") for i in items)
    stamps = [i["properties"]["datetime"] for i in items]
    assert stamps == sorted(stamps, reverse=True)

    code, out, _ = invoke([*args, "--format", "itemcollection"], env)
    collection = orjson.loads(out)
    assert collection["type"] == "FeatureCollection" and collection["features"] == items
    assert collection["numberReturned"] == 20 and collection["links"][0]["rel"] == "next"

    code, out, _ = invoke([*args, "--format", "csv"], env)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["id"] for r in rows] == [i["id"] for i in items] and rows[0]["href"].startswith("https://")

    code, out, _ = invoke([*args, "--format", "table", "--fields", "platform"], env)
    header = out.splitlines()[0].split()
    assert code == 0 and header == ["product", "datetime", "collection", "providers", "platform"]  # merged

    target = tmp_path / "page.parquet"
    code, _, _ = invoke([*args, "--format", "geoparquet", "--output", str(target)], env)
    assert code == 0 and b"geo" in pq.read_metadata(target).metadata
    assert list(batch_to_items(pq.read_table(target))) == [_bare(i) for i in items]


def test_prepare_alone_then_searches_read_the_row_copies(env: dict[str, str], tmp_path: Path) -> None:
    args = ["search", "--datetime", "2021-01-01/2022-12-31", "--limit", "30", "--format", "ndjson"]
    _, before, _ = invoke(args, env)
    code, out, err = invoke(["search", "--prepare"], env)
    assert code == 0 and out == "" and "search cache of version" in err and "row copies" in err
    assert list((tmp_path / "cache" / "rows").glob("*.arrow"))
    code, after, _ = invoke(args, env)
    assert code == 0 and after == before
    target = tmp_path / "page.parquet"  # geoparquet still reads the Arrow rows from the parts
    code, _, _ = invoke([*args[:-2], "--format", "geoparquet", "--output", str(target), "--prepare"], env)
    assert code == 0 and pq.read_metadata(target).num_rows == 30


def test_fields_merge_and_intersects_file(env: dict[str, str], tmp_path: Path) -> None:
    code, out, _ = invoke(
        ["search", "--limit", "3", "--fields", "id,eo:cloud_cover,-geometry", "--format", "ndjson"], env
    )
    assert code == 0
    for line in out.splitlines():
        item = orjson.loads(line)
        assert set(item) <= {"type", "id", "properties"} and set(item["properties"]) <= {"eo:cloud_cover"}
    shape = tmp_path / "area.geojson"
    shape.write_bytes(
        orjson.dumps({"type": "Polygon", "coordinates": [[[170, -30], [180, -30], [180, 5], [170, 5], [170, -30]]]})
    )
    code, out, _ = invoke(
        ["search", "--intersects", str(shape), "--merge", "--limit", "100", "--format", "ndjson"], env
    )
    merged = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and "edge-antimeridian" in {i["id"] for i in merged}
    assert all(i["properties"]["cscale:providers"] for i in merged)


def test_paging_with_tokens_and_max_items(env: dict[str, str]) -> None:
    args = ["search", "--limit", "5", "--format", "ndjson", "--bbox", "-180,-90,180,90"]
    code, out, err = invoke(args, env)
    first = [orjson.loads(line)["id"] for line in out.splitlines()]
    token = err.rsplit("--token ", 1)[1].strip()
    code, out, _ = invoke([*args, "--token", token], env)
    second = [orjson.loads(line)["id"] for line in out.splitlines()]
    assert code == 0 and len(first) == len(second) == 5 and not set(first) & set(second)
    code, out, _ = invoke([*args, "--max-items", "12"], env)
    assert code == 0 and [orjson.loads(line)["id"] for line in out.splitlines()][:10] == first + second
    assert len(out.splitlines()) == 12
    code, _, err = invoke([*args[:-2], "--bbox", "0,0,1,1", "--token", token], env)
    assert code == 3 and "another search" in err


def test_explain_goes_to_stderr(env: dict[str, str]) -> None:
    code, out, err = invoke(
        ["search", "--collections", "CESNET|sentinel2-l2a", "--datetime", "2021-06", "--explain", "--format", "ndjson"],
        env,
    )
    assert code == 3 and "RFC 3339" in err  # a month alone is not RFC 3339
    code, out, err = invoke(
        [
            "search",
            "--collections",
            "sentinel-2-l2a",
            "--datetime",
            "2021-06-01/2021-06-30",
            "--explain",
            "--format",
            "ndjson",
        ],
        env,
    )
    assert code == 0 and "parts in version" in err and "READ_PARQUET" in err and "parts in version" not in out


ATTACK = "x'); DROP TABLE items; --"
BAD = [
    (["--bbox", "1,2,3"], "4 or 6"),
    (["--bbox", "0,0,10,91"], "latitude"),
    (["--bbox", f"1,2,3,{ATTACK}"], "numbers"),
    (["--datetime", "last tuesday"], "RFC 3339"),
    (["--datetime", ATTACK], "RFC 3339"),
    (["--filter", "eo:cloud_cover <"], "invalid CQL2"),
    (["--filter", "nope:nope = 1"], "unknown property"),
    (["--filter", f"{ATTACK} = 1"], "invalid CQL2"),
    (["--filter-json", '{"op": "=", "args": [1]}'], "invalid CQL2"),
    (["--filter-json", "/no/such/file.json"], "cannot read"),
    (["--filter", "id = 'a'", "--filter-json", "{}"], "not both"),
    (["--intersects", "/no/such/area.geojson"], "cannot read"),
    (["--intersects", '{"type": "Polygon"'], "not JSON"),
    (["--sortby", f"-{ATTACK}"], "unknown property"),
    (["--token", "not-a-token"], "token"),
    (["--limit", "0"], "limit"),
    (["--version", "999"], "does not exist"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_input_exits_with_one_line(env: dict[str, str], args: list[str], message: str) -> None:
    code, out, err = invoke(["search", "--format", "ndjson", *args], env)
    assert code in (3, 4) and message in err, err
    assert code == (4 if message == "does not exist" else 3)
    assert err.count("\n") == 1 and err.startswith("cscale: error: ") and out == ""


@pytest.mark.parametrize("option", ["--collections", "--providers", "--ids"])
def test_injection_in_names_finds_nothing(env: dict[str, str], option: str) -> None:
    code, out, err = invoke(["search", option, ATTACK, "--format", "ndjson"], env)
    assert code == 0 and out == "" and err == ""


def test_huge_intersects_is_refused_quickly(env: dict[str, str], tmp_path: Path) -> None:
    ring = [[(i % 360) - 180 + i * 1e-7, (i % 170) - 85] for i in range(250_000)]
    shape = tmp_path / "huge.geojson"
    shape.write_bytes(orjson.dumps({"type": "Polygon", "coordinates": [[*ring, ring[0]]]}))
    started = time.perf_counter()
    code, _, err = invoke(["search", "--intersects", str(shape)], env)
    assert code == 3 and "points" in err and time.perf_counter() - started < 20


@pytest.fixture
def served(store: Store) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", store.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_search_a_published_store_over_http(env: dict[str, str], served: str) -> None:
    args = ["search", "--collections", "sentinel-1-grd", "--limit", "7", "--format", "ndjson"]
    local = invoke(args, env)
    remote = invoke([*args, "--store", served], env)
    assert local[0] == remote[0] == 0 and local[1] == remote[1] and local[1].count("\n") == 7
    code, _, err = invoke(["search", "--store", served + "/nowhere"], env)
    assert code == 4 and err.count("\n") == 1


def test_console_script_registers_search(store: Store, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "harvester.cli", "search", "--store", store.url, "--limit", "2", "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0 and proc.stdout.startswith('"provider","collection","id"'), proc.stderr
