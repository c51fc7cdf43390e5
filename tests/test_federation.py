"""`cscale harvest run --config FILE`: the federation config's validation (every bad case is one clear line and
nothing is harvested) and whole runs over real servers on 127.0.0.1: a corpus catalog served over HTTP by
test_http's server process, a URL that 404s, and corpus items behind `rustac serve`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from stac_servers import RustacServer, running
from test_http import FaultServer

from harvester.cli import cli
from harvester.errors import InputError
from harvester.federation import Federation, load_federation
from harvester.store import Store

from conftest import write_ndjson

SECRET = "s3cr3t-T0KEN-value-9f8e7d"  # must never show up in output, errors or the store
ENV = {"EODC_TOKEN": SECRET, "EODC_KEY": SECRET + "-key"}


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "federation.toml"
    path.write_text(text)
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Federation:
    return load_federation(config(tmp_path, text), ENV if environ is None else environ)


GOOD = """
store = "s3://bucket/snapshot"
[[source]]
provider = "EODC"
kind = "api"
url = "https://stac.eodc.eu/api/v1"
collections = ["SENTINEL2_L2A"]
since = 2024-01-01
lag = "6h"
rate = 2
bearer_env = "EODC_TOKEN"
header_env = { "X-Api-Key" = "EODC_KEY" }
[[source]]
provider = "GRNET"
kind = "static"
url = "https://stac.grnet.gr/catalog.json"
allow = ["https://data.grnet.gr/"]
max_failed = 0.05
[[source]]
provider = "INCD"
kind = "archive"
url = "s3://incd-archive/sentinel"
endpoint_url = "http://127.0.0.1:9000"
"""


# ------------------------------------------------------------------------------------------- validation


def test_a_good_config_gets_the_commands_defaults(tmp_path: Path) -> None:
    fed = load(tmp_path, GOOD)
    assert fed.store == "s3://bucket/snapshot"
    api, static, archive = fed.sources
    assert (api.index, api.provider, api.kind) == (1, "EODC", "api")
    assert api.settings["collections"] == ("SENTINEL2_L2A",)
    assert api.settings["since"].isoformat() == "2024-01-01T00:00:00+00:00"  # a TOML date is a whole day
    assert api.settings["lag"].total_seconds() == 6 * 3600 and api.settings["rate"] == 2.0
    assert api.settings["concurrency"] == 8 and api.settings["limit"] == 1000  # `cscale harvest api` defaults
    assert api.env_names() == ["EODC_KEY", "EODC_TOKEN"]
    assert SECRET not in repr(fed)  # names only: the values are read when the source is harvested
    assert static.settings["concurrency"] == 16 and static.settings["allow"] == ("https://data.grnet.gr/",)
    assert archive.settings["workers"] == 16 and archive.settings["endpoint_url"] == "http://127.0.0.1:9000"
    assert [s.provider for s in fed.select(["INCD,EODC"])] == ["EODC", "INCD"]
    with pytest.raises(InputError, match="--only CESNET: no source"):
        fed.select(["CESNET"])


SOURCE = '[[source]]\nprovider = "EODC"\nkind = "api"\nurl = "https://stac.eodc.eu/api/v1"\n'
STATIC = '[[source]]\nprovider = "GRNET"\nkind = "static"\nurl = "https://stac.grnet.gr/catalog.json"\n'

# (what is wrong, the file, what the one error line must say after "federation.toml: ")
BAD = [
    ("unknown key", SOURCE + "colections = ['A']", "source 1 (EODC): colections: unknown key (known: "),
    ("wrong type", SOURCE + 'concurrency = "8"', "source 1 (EODC): concurrency: expected an integer, got a string"),
    ("bool for int", SOURCE + "retries = true", "source 1 (EODC): retries: expected an integer, got a boolean"),
    ("string not list", SOURCE + 'collections = "A"', "source 1 (EODC): collections: expected a list of non-empty"),
    ("out of range", STATIC + "concurrency = 0", "source 1 (GRNET): concurrency: 0 is not in the range 1<=x<=256"),
    ("bad choice", SOURCE + 'search = "put"', "source 1 (EODC): search: 'put' is not one of"),
    ("bad date", SOURCE + 'since = "yesterday"', "source 1 (EODC): since: "),
    ("bad lag", SOURCE + 'lag = "soon"', "source 1 (EODC): lag: not a duration"),
    ("missing env", SOURCE + 'bearer_env = "NOT_SET_ANYWHERE"', "bearer_env: environment variable NOT_SET_ANYWHERE"),
    ("missing header env", SOURCE + 'header_env = { "X-Key" = "NOPE" }', "header_env: environment variable NOPE is"),
    ("value, not name", SOURCE + f'bearer_env = "{SECRET}"', "bearer_env: expected the name of an environment"),
    ("header value", SOURCE + f'header_env = {{ "X-Key" = "{SECRET}" }}', "header_env.X-Key: expected the name of"),
    ("token inline", SOURCE + f'token = "{SECRET}"', "token: credentials may not be written in the config file"),
    ("bearer inline", SOURCE + f'bearer = "{SECRET}"', "bearer: credentials may not be written in the config file"),
    ("auth inline", SOURCE + f'Authorization = "Bearer {SECRET}"', "Authorization: credentials may not be written"),
    ("password inline", SOURCE + f'password = "{SECRET}"', "password: credentials may not be written"),
    ("headers table", SOURCE + f'headers = {{ "X-Key" = "{SECRET}" }}', "headers: header values may not be written"),
    ("password in url", STATIC.replace("https://", f"https://me:{SECRET}@"), "url: holds a password"),
    ("auth on static", STATIC + 'bearer_env = "EODC_TOKEN"', "(GRNET): bearer_env: only api sources send auth headers"),
    ("bad kind", SOURCE.replace('"api"', '"ftp"'), "source 1 (EODC): kind: expected one of api, static, archive"),
    ("no provider", SOURCE.replace('provider = "EODC"\n', ""), "source 1: provider: expected a non-empty name"),
    ("no url", STATIC.replace('url = "https://stac.grnet.gr/catalog.json"\n', ""), "(GRNET): url: expected a non"),
    ("archive not s3", SOURCE.replace('"api"', '"archive"'), "source 1 (EODC): url: an archive is s3://"),
    ("second source", SOURCE + STATIC + "timeout = 0", "source 2 (GRNET): timeout: 0.0 is not in the range x>=0.1"),
    ("duplicate", SOURCE + SOURCE, "source 2 (EODC): the same provider, kind and url as source 1"),
    ("top-level key", 'stor = "x"\n' + SOURCE, "stor: unknown key (known: store, source)"),
    ("top-level secret", f'token = "{SECRET}"\n' + SOURCE, "token: credentials may not be written"),
    ("store type", "store = 3\n" + SOURCE, "store: expected a folder or s3://bucket/prefix string"),
    ("no sources", 'store = "x"\n', "expected one or more [[source]] tables"),
    ("not TOML", SOURCE + f"bearer_env = {SECRET}", "not valid TOML: "),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD], ids=[w for w, _, _ in BAD])
def test_each_bad_config_is_one_clear_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'federation.toml'}: ")
    assert expected in message, message
    assert "\n" not in message and SECRET not in message


def test_an_unreadable_config_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"cannot read the config .*missing\.toml: No such file"):
        load_federation(tmp_path / "missing.toml", {})


def invoke(args: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    running_server = FaultServer(tmp_path_factory.mktemp("served"))
    yield running_server
    running_server.close()


@pytest.fixture
def sentinel2(corpus: Path, server: FaultServer) -> str:
    """The URL of the corpus' stactools Sentinel-2 example catalog (two collections, one item each), served
    over HTTP; the server's request log starts empty."""
    server.configure(root=corpus / "catalogs/stactools-sentinel2-examples")
    return server.url("catalog.json")


def test_a_bad_source_stops_the_run_before_anything_is_harvested(
    tmp_path: Path, server: FaultServer, sentinel2: str
) -> None:
    store = tmp_path / "store"
    good = f'[[source]]\nprovider = "S2"\nkind = "static"\nurl = "{sentinel2}"\n'
    path = config(tmp_path, good + SOURCE + 'bearer_env = "NOT_SET_ANYWHERE"\n')
    code, out, err = invoke(["harvest", "run", "--config", str(path), "--store", str(store)], {})
    assert code == 3 and out == ""
    assert (
        err == f"cscale: error: {path}: source 2 (EODC): bearer_env: environment variable NOT_SET_ANYWHERE is not set\n"
    )
    assert server.log() == [] and not store.exists()  # the valid first source was not harvested either


def test_store_and_only_are_checked_before_harvesting(tmp_path: Path, server: FaultServer, sentinel2: str) -> None:
    path = config(tmp_path, f'[[source]]\nprovider = "S2"\nkind = "static"\nurl = "{sentinel2}"\n')
    code, _, err = invoke(["harvest", "run", "--config", str(path)], {"CSCALE_STORE": ""})
    assert code == 3 and "no snapshot store: give --store, set $CSCALE_STORE or write store = ..." in err
    code, _, err = invoke(["harvest", "run", "--config", str(path), "--store", str(tmp_path / "s"), "--only", "X"], {})
    assert code == 3 and "--only X: no source of" in err
    assert server.log() == []


# ---------------------------------------------------------------------------------------------- whole runs


@pytest.fixture(scope="module")
def landsat_api(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RustacServer]:
    """`rustac serve` over the corpus' stactools Landsat C2 L2 example items (one collection)."""
    items = [
        orjson.loads(p.read_bytes())
        for p in sorted((corpus / "catalogs/stactools-landsat-examples/landsat-c2-l2").glob("*/*.json"))
    ]
    assert items and all(i.get("collection") == "landsat-c2-l2" for i in items)
    path = write_ndjson(tmp_path_factory.mktemp("rustac") / "items.ndjson", items)
    with running(RustacServer(path)) as api:
        yield api


def cscale(args: list[str], env: dict[str, str]) -> tuple[int, list[dict[str, Any]], str]:
    """The command as cron runs it: its own process, output piped (so the summary is NDJSON)."""
    base = {k: v for k, v in os.environ.items() if k not in ("CSCALE_STORE", "EODC_TOKEN", "EODC_KEY")}
    done = subprocess.run(
        [sys.executable, "-m", "harvester.cli", *args], env={**base, **env}, capture_output=True, text=True, timeout=240
    )
    return done.returncode, [orjson.loads(line) for line in done.stdout.splitlines()], done.stderr


def test_a_federation_run_commits_each_source_and_reports_the_failing_one(
    tmp_path: Path, server: FaultServer, sentinel2: str, landsat_api: RustacServer
) -> None:
    root = tmp_path / "store"
    path = config(
        tmp_path,
        f"""store = "{root}"
[[source]]
provider = "S2"
kind = "static"
url = "{sentinel2}"
concurrency = 4
[[source]]
provider = "GONE"
kind = "static"
url = "{server.url("missing/catalog.json")}"
retries = 0
[[source]]
provider = "LANDSAT"
kind = "api"
url = "{landsat_api.url}"
limit = 2
timeout = 10
bearer_env = "EODC_TOKEN"
header_env = {{ "X-Api-Key" = "EODC_KEY" }}
""",
    )
    code, rows, err = cscale(["harvest", "run", "--config", str(path)], ENV)
    assert code == 3, err  # the worst source: GONE's root cannot be read (an input error)
    summary = {r["provider"]: r for r in rows}
    assert [r["provider"] for r in rows] == ["S2", "GONE", "LANDSAT"]
    assert summary["S2"]["status"] == "committed" and summary["S2"]["version"] == 1
    assert summary["S2"]["written"] == 2 and summary["S2"]["exit_code"] == 0
    assert summary["GONE"]["status"] == "failed" and summary["GONE"]["version"] is None
    assert summary["GONE"]["exit_code"] == 3 and "cannot read the root" in summary["GONE"]["message"]
    assert summary["LANDSAT"]["status"] == "committed" and summary["LANDSAT"]["version"] == 2
    assert summary["LANDSAT"]["written"] == 5 and summary["LANDSAT"]["quarantined"] == 0
    assert "source 2 (GONE, static): failed: cannot read the root" in err

    # Each source committed its own version, with the state key its single command uses.
    store = Store.open(str(root))
    assert store.versions() == [1, 2]
    assert {p.provider for p in store.manifest(1).parts} == {"S2"}
    latest = store.manifest(2)
    assert {p.provider for p in latest.parts} == {"S2", "LANDSAT"}
    assert f"static:S2:{sentinel2}" in latest.state and f"api:LANDSAT:{landsat_api.url}" in latest.state
    assert latest.run["auth_headers"] == ["Authorization", "X-Api-Key"]  # names only
    manifests = b"".join(p.read_bytes() for p in (root / "manifests").glob("*.json"))
    assert SECRET.encode() not in manifests and SECRET not in err and SECRET not in str(rows)

    # Again, without the failing source: every source is incremental on its own, nothing changed, exit 0.
    code, rows, err = cscale(["harvest", "run", "--config", str(path), "--only", "S2,LANDSAT"], ENV)
    assert code == 0, err
    assert [(r["provider"], r["status"], r["version"]) for r in rows] == [
        ("S2", "unchanged", None),
        ("LANDSAT", "unchanged", None),
    ]
    assert store.versions() == [1, 2]


def test_the_store_option_overrides_the_config_and_partial_sources_exit_1(
    tmp_path: Path, server: FaultServer, corpus: Path
) -> None:
    """A static catalog with a broken link: what was read is committed, and the run exits 1 (as
    `cscale harvest static` would with its default --max-failed 0)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    source = corpus / "catalogs/stactools-sentinel2-examples"
    for doc in source.rglob("*.json"):
        target = tree / doc.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(doc.read_bytes())
    (tree / "sentinel2-l1c-example/S2A_T01LAC_20200717T221944_L1C/S2A_T01LAC_20200717T221944_L1C.json").unlink()
    server.configure(root=tree)
    path = config(
        tmp_path,
        f'store = "{tmp_path / "ignored"}"\n[[source]]\nprovider = "S2"\nkind = "static"\n'
        f'url = "{server.url("catalog.json")}"\n',
    )
    root = tmp_path / "store"
    code, rows, err = cscale(
        ["harvest", "run", "--config", str(path), "--format", "ndjson"], {"CSCALE_STORE": str(root)}
    )
    assert code == 1, err
    assert [(r["status"], r["version"], r["written"]) for r in rows] == [("partial", 1, 1)]
    assert "1 of 5 documents could not be read" in rows[0]["message"]
    assert Store.open(str(root)).versions() == [1] and not (tmp_path / "ignored").exists()


def test_archive_sources_go_through_the_archive_indexer(tmp_path: Path, moto_server: str, bucket: str) -> None:
    """An empty archive bucket and a missing one on moto's S3 server: the first is listed (nothing to commit),
    the second fails with the archive's input error; credentials come from the AWS_* variables, not the file."""
    path = config(
        tmp_path,
        f'[[source]]\nprovider = "INCD"\nkind = "archive"\nurl = "s3://{bucket}/sentinel"\n'
        f'endpoint_url = "{moto_server}"\nworkers = 2\n'
        f'[[source]]\nprovider = "EODC"\nkind = "archive"\nurl = "s3://{bucket}-missing"\n'
        f'endpoint_url = "{moto_server}"\n',
    )
    code, out, err = invoke(["harvest", "run", "--config", str(path), "--store", str(tmp_path / "store")], {})
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert code == 3, err
    assert [(r["provider"], r["kind"], r["status"], r["exit_code"], r["seen"]) for r in rows] == [
        ("INCD", "archive", "unchanged", 0, 0),  # listed: no product, so no version
        ("EODC", "archive", "failed", 3, None),
    ]
    assert "bucket does not exist" in rows[1]["message"]
