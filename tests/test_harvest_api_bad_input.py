"""Bad input from a STAC API gives a clear error or a report entry, never a hang: a page that is not JSON, a page
without `features`, a next-link loop, a next link to another host, items without id, an HTML error page served
with 200, broken landing and collections documents, a server that never answers. A small scripted API on
127.0.0.1 serves each case; the other collection of the run is committed all the same."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest

from harvester.errors import InputError
from harvester.harvest_api import ApiOptions, ApiResult, harvest_api
from harvester.http import HttpOptions, HttpTransientError
from harvester.store import Store

pytestmark = pytest.mark.timeout(60)

Answer = tuple[int, str, bytes]  # status, content type, body
JSON = "application/geo+json"


def item(i: int, collection: str) -> dict[str, Any]:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": f"{collection}-{i}",
        "collection": collection,
        "geometry": {"type": "Point", "coordinates": [10.0 + i / 100, 45.0]},
        "bbox": [10.0 + i / 100, 45.0, 10.0 + i / 100, 45.0],
        "properties": {"datetime": f"2021-06-{1 + i % 28:02d}T10:00:00Z", "updated": "2021-07-01T00:00:00Z"},
        "links": [],
        "assets": {},
    }


def page(features: list[Any], token: str | None, base: str, *, href: str | None = None) -> bytes:
    links = []
    if token is not None:
        links.append({"rel": "next", "method": "POST", "href": href or f"{base}/search", "body": {"token": token}})
    return orjson.dumps({"type": "FeatureCollection", "features": features, "links": links})


class ScriptedApi:
    """A STAC API whose /search answers come from `script(collection, token)`; collections C (scripted) and OK."""

    def __init__(self) -> None:
        self.script: Callable[[str, str | None], Answer] = lambda c, t: (200, JSON, page([], None, self.url))
        self.landing: Answer | None = None
        self.collections: Answer | None = None
        self.requests: list[tuple[str, str, Any]] = []
        self.stall = 0.0
        handler = type("Handler", (_Handler,), {"api": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, method: str, path: str, body: Any) -> Answer:
        self.requests.append((method, path, body))
        if self.stall:
            time.sleep(self.stall)
        if path == "/":
            return self.landing or (
                200,
                "application/json",
                orjson.dumps(
                    {
                        "type": "Catalog",
                        "id": "scripted",
                        "description": "d",
                        "stac_version": "1.0.0",
                        "conformsTo": [
                            "https://api.stacspec.org/v1.0.0/core",
                            "https://api.stacspec.org/v1.0.0/item-search",
                        ],
                        "links": [
                            {"rel": "data", "href": f"{self.url}/collections"},
                            {"rel": "search", "href": f"{self.url}/search", "method": "POST"},
                        ],
                    }
                ),
            )
        if path == "/collections":
            colls = [
                {
                    "type": "Collection",
                    "id": cid,
                    "description": cid,
                    "license": "other",
                    "links": [],
                    "stac_version": "1.0.0",
                    "extent": {
                        "spatial": {"bbox": [[-180, -90, 180, 90]]},
                        "temporal": {"interval": [["2021-01-01T00:00:00Z", None]]},
                    },
                }
                for cid in ("C", "OK")
            ]
            return self.collections or (200, "application/json", orjson.dumps({"collections": colls, "links": []}))
        if path == "/search" and method == "POST":
            collection = body["collections"][0]
            if collection == "OK":
                return 200, JSON, page([item(i, "OK") for i in range(3)], None, self.url)
            return self.script(collection, body.get("token"))
        return 404, "application/json", b'{"code": "NotFound"}'


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    api: ScriptedApi

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._reply(None)

    def do_POST(self) -> None:
        self._reply(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))

    def _reply(self, body: Any) -> None:
        status, kind, payload = self.api.answer(self.command, self.path.split("?")[0], body)
        try:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True


@pytest.fixture
def api() -> Iterator[ScriptedApi]:
    server = ScriptedApi()
    yield server
    server.server.shutdown()


HTTP = HttpOptions(read_timeout=2, retries=2, backoff_factor=0.01, backoff_max=0.05, backoff_jitter=0.01)


def run(api: ScriptedApi, tmp_path: Path, **kw: Any) -> tuple[Store, ApiResult]:
    store = Store.open(str(tmp_path / "store"))
    started = time.monotonic()
    result = harvest_api(
        store, ApiOptions(provider="P", url=api.url, workers=1, windows=1, concurrency=2, http=HTTP, **kw)
    )
    assert time.monotonic() - started < 20
    return store, result


def failed(result: ApiResult) -> dict[str, str]:
    assert len(result.failures) == 1, result.failures
    failure = result.failures[0]
    assert failure["collection"] == "C"
    # the good collection is committed; the failed one keeps no watermark, so the next run reads it again
    assert result.counts["new"] >= 3 and result.commit.manifest is not None
    state = result.commit.manifest.state[f"api:P:{result.report['url']}"]["collections"]
    assert "OK" in state and "C" not in state
    return failure


def two_pages(second: Answer) -> Callable[[str, str | None], Answer]:
    def script(collection: str, token: str | None) -> Answer:
        if token is None:
            return 200, JSON, page([item(1, "C"), item(2, "C")], "t1", "")
        return second

    return script


def test_invalid_json_page(api: ScriptedApi, tmp_path: Path) -> None:
    api.script = two_pages((200, JSON, b'{"type": "FeatureCollection", "features": [{"id": "x", '))
    _, result = run(api, tmp_path)
    failure = failed(result)
    assert failure["reason"] == "invalid_json" and "not valid JSON" in failure["message"]
    assert sum(1 for r in api.requests if r[2] and r[2].get("token") == "t1") == 3  # fetched again twice
    assert result.counts["new"] == 5  # C's first page and OK's items


def test_page_without_features(api: ScriptedApi, tmp_path: Path) -> None:
    api.script = two_pages((200, JSON, b'{"code": "SearchError", "description": "token expired"}'))
    _, result = run(api, tmp_path)
    failure = failed(result)
    assert failure["reason"] == "no_features" and "token expired" in failure["message"]


def test_html_error_page_with_200(api: ScriptedApi, tmp_path: Path) -> None:
    html = b"<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>Down</body></html>"
    api.script = two_pages((200, "text/html", html))
    _, result = run(api, tmp_path)
    failure = failed(result)
    assert failure["reason"] == "html_page" and "Service Unavailable" in failure["message"]


def test_next_link_loop(api: ScriptedApi, tmp_path: Path) -> None:
    def script(collection: str, token: str | None) -> Answer:
        following = {None: "t1", "t1": "t2", "t2": "t1"}[token]  # t2's next is t1 again: the same token twice
        return 200, JSON, page([item(len(token or ""), "C")], following, api.url)

    api.script = script
    _, result = run(api, tmp_path)
    failure = failed(result)
    assert failure["reason"] == "next_link_loop" and "same token twice" in failure["message"]
    assert len(api.requests) < 20


def test_next_link_to_another_host(api: ScriptedApi, tmp_path: Path) -> None:
    def script(collection: str, token: str | None) -> Answer:
        return 200, JSON, page([item(1, "C")], "t1", "", href="http://elsewhere.invalid/search")

    api.script = script
    _, result = run(api, tmp_path)
    failure = failed(result)
    assert failure["reason"] == "foreign_next_link" and "elsewhere.invalid" in failure["message"]
    assert result.counts["new"] == 4  # the page that carried the link is kept
    assert not any(r[2] and r[2].get("token") for r in api.requests)


def test_items_without_id_are_quarantined(api: ScriptedApi, tmp_path: Path) -> None:
    anonymous = item(9, "C")
    del anonymous["id"]

    def script(collection: str, token: str | None) -> Answer:
        return 200, JSON, page([item(1, "C"), anonymous, "not an item"], None, api.url)

    api.script = script
    store, result = run(api, tmp_path)
    assert not result.failures
    assert result.counts["quarantined"] == 2 and result.counts["new"] == 4
    manifest = store.manifest()
    rows = [r for q in manifest.quarantine for r in pq.read_table(str(Path(store.url) / q.path)).to_pylist()]
    assert sorted(r["reason"] for r in rows) == ["missing_id", "not_an_item"]
    assert all(r["source_href"].startswith(f"{api.url}/search#/features/") for r in rows)


def test_broken_landing_and_collections_documents(api: ScriptedApi, tmp_path: Path) -> None:
    api.landing = (200, "text/html", b"<html><title>Welcome to nginx!</title></html>")
    with pytest.raises(InputError, match=r"landing page .* is not JSON .*Welcome to nginx"):
        run(api, tmp_path)
    api.landing = (404, "application/json", b'{"code": "NotFound", "description": "no API here"}')
    with pytest.raises(InputError, match=r"HTTP 404 .*no API here"):
        run(api, tmp_path)
    api.landing = None
    api.collections = (200, "application/json", b'{"links": []}')
    with pytest.raises(InputError, match="no `collections` list"):
        run(api, tmp_path)
    api.collections = None
    with pytest.raises(InputError, match="collection 'nope' is not offered"):
        run(api, tmp_path, collections=("nope",))
    assert Store.open(str(tmp_path / "store")).current_version() is None


def test_a_server_that_never_answers_fails_the_run_in_bounded_time(api: ScriptedApi, tmp_path: Path) -> None:
    api.stall = 1.0
    started = time.monotonic()
    with pytest.raises(HttpTransientError, match=r"timed out"):
        harvest_api(
            Store.open(str(tmp_path / "store")),
            ApiOptions(
                provider="P", url=api.url, workers=1, http=HttpOptions(read_timeout=0.3, retries=1, backoff_factor=0.01)
            ),
        )
    assert time.monotonic() - started < 10


def test_a_collection_failing_before_the_next_is_submitted_ends_nothing_early(
    api: ScriptedApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The submitting thread may be descheduled between two collections' first windows (a busy machine): C fails
    meanwhile, and OK must still be harvested, not committed empty with a watermark."""
    import harvester.harvest_api as module

    api.script = lambda collection, token: (200, JSON, b"not json at all")
    submit = module._Harvest._submit
    calls: list[int] = []

    def slow_submit(self: Any, task: Any) -> None:
        submit(self, task)
        calls.append(1)
        if len(calls) == 1:  # after the first collection's window: wait until it has failed
            deadline = time.monotonic() + 10
            while task.plan.collection not in self.failures and time.monotonic() < deadline:
                time.sleep(0.01)

    monkeypatch.setattr(module._Harvest, "_submit", slow_submit)
    _, result = run(api, tmp_path)
    failure = failed(result)
    assert failure["collection"] == "C"
