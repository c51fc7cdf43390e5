"""`cscale harvest api` against real STAC API servers on 127.0.0.1: stac-fastapi-pgstac on PostgreSQL + PostGIS
and `rustac serve`, directly and behind a proxy that faults 10 % of the responses (429 + Retry-After, 500, 503,
stalls past the timeout, cut-off bodies, an older page served again) or behaves like a picky real server (page
size cap, no POST search, an API key)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from stac_servers import FAULTS, FaultProxy, PgStacServer, RustacServer, collections_for, pgstac_missing, running

from harvester.harvest_api import ApiOptions, ApiResult, harvest_api
from harvester.http import HttpOptions, HttpTransientError, RetryBudgetExhausted
from harvester.reader import iter_items
from harvester.store import Store

from conftest import ROOT, write_ndjson
from sample_federation import generate

FAST = HttpOptions(read_timeout=1.0, retries=5, backoff_factor=0.02, backoff_max=0.2, backoff_jitter=0.02)


def options(url: str, **kw: Any) -> ApiOptions:
    kw.setdefault("provider", "EODC")
    kw.setdefault("workers", 1)
    kw.setdefault("http", FAST)
    kw.setdefault("concurrency", 4)
    return ApiOptions(url=url, **kw)


def harvest(store: Store, url: str, **kw: Any) -> ApiResult:
    return harvest_api(store, options(url, **kw))


def stored_ids(store: Store) -> set[tuple[str, str]]:
    from queries import connect

    con = connect(store.url)
    try:
        return {(str(c), str(i)) for c, i in con.execute("SELECT collection, id FROM items").fetchall()}
    finally:
        con.close()


@pytest.fixture(scope="session")
def items() -> list[dict[str, Any]]:
    return [item for _, item in generate(provider="EODC", count=300, seed=11)]


@pytest.fixture(scope="session")
def pgstac(items: list[dict[str, Any]]) -> Iterator[PgStacServer]:
    """stac-fastapi-pgstac on a throwaway PostgreSQL cluster, started once per test process."""
    missing = pgstac_missing()
    if missing:
        pytest.skip(missing)
    server = PgStacServer()
    try:
        server.start()
        server.load(collections_for(items), items)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def rustac(items: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RustacServer]:
    path = write_ndjson(tmp_path_factory.mktemp("rustac") / "items.ndjson", items)
    with running(RustacServer(path)) as server:
        yield server


def test_pgstac_harvest_equals_the_server_items(pgstac: PgStacServer, tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    result = harvest(store, pgstac.url, limit=20, windows=4)
    expected = pgstac.item_ids()
    assert len(expected) == 300 and len({c for c, _ in expected}) >= 4
    assert stored_ids(store) == expected
    counts = result.counts
    assert counts["quarantined"] == 0 and counts["new"] == 300
    report = result.report
    assert report["method"] == "post" and not report["failures"] and report["retries"] == 0
    big = [c for c in report["collections"].values() if c["items"] > 20]
    assert big and all(c["splits"] >= 1 and c["windows"] >= 5 for c in big)  # probe, then 4 windows in parallel
    manifest = store.manifest()
    assert set(manifest.collections) == {f"EODC|{c}" for c, _ in expected}
    state = manifest.state[f"api:EODC:{pgstac.url}"]["collections"]
    assert {v["mode"] for v in state.values()} == {"updated"}  # pgstac filters, every item has `updated`
    # what comes back is what the server served (its links point at the server)
    one = next(item for _, item in iter_items(store) if item["collection"] == "SENTINEL2_L2A")
    assert any(link["href"].startswith(pgstac.url) for link in one["links"])


def test_pgstac_incremental_rerun_and_upstream_changes(pgstac: PgStacServer, tmp_path: Path) -> None:
    # A collection of its own: this test changes it.
    base = [
        dict(item, collection="CHANGES", id=f"chg-{item['id']}")
        for _, item in generate(provider="EODC", count=40, seed=5)
    ]
    pgstac.load(collections_for(base), base)
    store = Store.open(str(tmp_path / "store"))
    first = harvest(store, pgstac.url, collections=("CHANGES",), limit=15)
    assert first.commit.manifest is not None and first.counts["new"] == 40
    again = harvest(store, pgstac.url, collections=("CHANGES",), limit=15)
    assert again.commit.manifest is None  # no upstream change: no version
    report = again.report["collections"]["CHANGES"]
    assert report["mode"] == "updated" and report["updated_after"] and report["windows"] == 1
    assert again.report["requests"] <= 6  # landing, queryables, collections, one search
    # upstream: one item changed, one added with an old acquisition date; both carry a fresh `updated`
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    changed = dict(base[3], properties={**base[3]["properties"], "updated": now, "eo:cloud_cover": 1.5})
    added = dict(base[4], id="chg-added", properties={**base[4]["properties"], "updated": now})
    pgstac.load([], [changed, added])
    third = harvest(store, pgstac.url, collections=("CHANGES",), limit=15)
    assert third.counts["new"] == 1 and third.counts["changed"] == 1 and third.commit.manifest is not None
    assert stored_ids(store) == {(c, i) for c, i in pgstac.item_ids() if c == "CHANGES"}
    assert harvest(store, pgstac.url, collections=("CHANGES",), limit=15).commit.manifest is None
    # --full reads everything again; still nothing to commit
    full = harvest(store, pgstac.url, collections=("CHANGES",), limit=15, full=True)
    assert full.commit.manifest is None and full.counts["unchanged"] == 41


def test_pgstac_modes_without_updated_and_without_filters(pgstac: PgStacServer, tmp_path: Path) -> None:
    # GRNET's items lack `updated` now and then: a filter on it would never match them
    partial = [dict(item, collection="PARTIAL") for _, item in generate(provider="GRNET", count=60, seed=8)]
    assert any("updated" not in item["properties"] for item in partial)
    pgstac.load(collections_for(partial), partial)
    store = Store.open(str(tmp_path / "store"))
    with running(FaultProxy(pgstac.url)) as proxy:
        harvest(store, proxy.url, collections=("PARTIAL", "SENTINEL1_SLC"))
        state = store.manifest().state[f"api:EODC:{proxy.url}"]["collections"]
        assert state["PARTIAL"]["mode"] == "datetime" and state["SENTINEL1_SLC"]["mode"] == "updated"
        again = harvest(store, proxy.url, collections=("PARTIAL",))
        assert again.commit.manifest is None and again.report["collections"]["PARTIAL"]["mode"] == "datetime"
        assert again.report["collections"]["PARTIAL"]["lower"] is not None  # watermark minus the lag
        # the server stops taking the `updated` filter: that collection goes on on datetime, nothing is lost
        proxy.state.refuse_filter = True  # type: ignore[union-attr]
        refused = harvest(store, proxy.url, collections=("SENTINEL1_SLC",))
    assert not refused.failures and refused.commit.manifest is None
    assert refused.report["collections"]["SENTINEL1_SLC"]["mode"] == "datetime"
    assert refused.report["collections"]["SENTINEL1_SLC"]["windows"] == 2  # the refused query, then datetime
    assert stored_ids(store) == {(c, i) for c, i in pgstac.item_ids() if c in ("PARTIAL", "SENTINEL1_SLC")}


def test_pgstac_behind_a_proxy_faulting_10_percent(pgstac: PgStacServer, tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    with running(FaultProxy(pgstac.url, rate=0.1, stall=1.5)) as proxy:
        result = harvest(store, proxy.url, limit=4, windows=3, http=FAST)
        stats = proxy.stats()
    assert stored_ids(store) == pgstac.item_ids()
    assert set(stats["faults"]) == set(FAULTS), stats  # every kind of fault happened
    assert 0.05 <= sum(stats["faults"].values()) / stats["requests"] <= 0.17
    report = result.report
    assert report["retries"] >= sum(stats["faults"].values()) - stats["faults"]["repeat"]
    assert report["pages_refetched"] >= 1 and not report["failures"]
    assert result.counts["quarantined"] == 0


def test_pgstac_counted_windows_split_at_the_deep_paging_cap(pgstac: PgStacServer, tmp_path: Path) -> None:
    pgstac.set_context(True)  # numberMatched on
    try:
        store = Store.open(str(tmp_path / "store"))
        with running(FaultProxy(pgstac.url)) as proxy:  # no faults: it counts the pages of every query
            result = harvest(
                store, proxy.url, limit=10, max_window_items=25, collections=("SENTINEL1_GRD", "SENTINEL2_L2A")
            )
            queries = proxy.state.queries  # type: ignore[union-attr]
    finally:
        pgstac.set_context(False)
    expected = {(c, i) for c, i in pgstac.item_ids() if c in ("SENTINEL1_GRD", "SENTINEL2_L2A")}
    assert stored_ids(store) == expected and len(expected) > 4 * 25
    for stats in result.report["collections"].values():
        assert stats["splits"] >= 1 and stats["over_cap_windows"] == 0 and stats["windows"] > 4
    # no query was paged past the cap: 25 items are 3 pages of 10
    searches = {k: n for k, n in queries.items() if k.startswith("POST /search")}
    assert len(searches) > 8 and max(searches.values()) <= 3


def test_pgstac_page_size_negotiation_and_no_post(pgstac: PgStacServer, tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    with running(FaultProxy(pgstac.url, max_limit=7, refuse_post=True)) as proxy:
        result = harvest(store, proxy.url, limit=500, collections=("SENTINEL1_SLC",))
    assert result.report["method"] == "get" and result.report["page_size"] == 7
    assert result.report["page_size_negotiated"][0] == 7
    assert stored_ids(store) == {(c, i) for c, i in pgstac.item_ids() if c == "SENTINEL1_SLC"}


def test_retry_budget_spent_commits_nothing(pgstac: PgStacServer, tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    harvest(store, pgstac.url, collections=("SENTINEL1_SLC",))
    version = store.current_version()
    with running(FaultProxy(pgstac.url, rate=0.6, kinds=("503", "500"), seed=3)) as proxy:
        with pytest.raises(RetryBudgetExhausted, match="retry budget"):
            harvest(store, proxy.url, retry_budget=3, full=True)
        # one request failing past its own retries ends the run the same way
        with pytest.raises(HttpTransientError, match="HTTP 50"):
            harvest(store, proxy.url, http=HttpOptions(retries=0), full=True)
    assert store.current_version() == version


def test_rustac_serve_with_a_configured_cap(rustac: RustacServer, items: list[dict[str, Any]], tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    # rustac counts nothing and pages with skip: windows past 20 items are split and re-read, minus what passed
    result = harvest(store, rustac.url, limit=8, max_window_items=20, windows=2)
    expected = {(i["collection"], i["id"]) for i in items}
    assert stored_ids(store) == expected
    assert result.counts["superseded_in_run"] == 0  # nothing passed on twice
    assert sum(c["splits"] for c in result.report["collections"].values()) > 4
    again = harvest(store, rustac.url, limit=8, max_window_items=20)
    assert again.commit.manifest is None
    modes = {c["mode"] for c in again.report["collections"].values()}
    assert modes == {"datetime"}  # no filter conformance: incremental on acquisition time, with a lag


def test_cli_with_an_api_key_that_is_never_logged(rustac: RustacServer, tmp_path: Path) -> None:
    secret = "k3y-" + os.urandom(6).hex()
    store = tmp_path / "store"
    with running(FaultProxy(rustac.url, require=("X-Api-Key", secret))) as proxy:
        command = [
            str(Path(sys.executable).with_name("cscale")),
            "-vv",
            "harvest",
            "api",
            proxy.url,
            "--provider",
            "EODC",
            "--store",
            str(store),
            "--collections",
            "SENTINEL2_L1C,SENTINEL1_SLC",
            "--header-env",
            "X-Api-Key=CSCALE_TEST_KEY",
            "--workers",
            "1",
            "--format",
            "json",
        ]
        env = {**os.environ, "CSCALE_TEST_KEY": secret}
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert done.returncode == 0, done.stderr
        assert all(h.get("X-Api-Key") == secret for h in proxy.state.seen_headers)  # type: ignore[union-attr]
        anonymous = [arg for arg in command if arg not in ("--header-env", "X-Api-Key=CSCALE_TEST_KEY")]
        denied = subprocess.run(anonymous, capture_output=True, text=True, env=os.environ, cwd=ROOT, timeout=120)
    out = orjson.loads(done.stdout)[0]
    assert out["committed"] is True and out["collections"] == 2 and out["new"] > 0
    assert secret not in done.stdout + done.stderr
    assert all(secret.encode() not in p.read_bytes() for p in store.rglob("*.json"))
    manifest = orjson.loads((store / "manifests/00000001.json").read_bytes())
    assert manifest["run"]["auth_headers"] == ["X-Api-Key"]
    assert denied.returncode == 3 and "HTTP 401" in denied.stderr and "missing or wrong API key" in denied.stderr
