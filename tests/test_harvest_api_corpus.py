"""Recorded pages of real STAC APIs (Planetary Computer, earth-search v0/v1, eoapi; shared/corpus/api): every
page parses, every next link resolves, the request cscale builds from a next link is the one the recording
made next, and recorded chains replayed by a local server are followed page by page over HTTP."""

from __future__ import annotations

import collections
import http.server
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import orjson
import pytest

from harvester.http import HttpClient, HttpOptions
from harvester.sources_api import (
    ACCEPT,
    PAGING_PARAMS,
    Page,
    PageError,
    Request,
    follow,
    next_request,
    origin_of,
    parse_page,
)

INDEXES = ("api/cassettes-pystac-client/index.ndjson", "api/cassettes-stac-geoparquet/index.ndjson")


@dataclass(frozen=True)
class Interaction:
    cassette: str
    number: int
    method: str
    uri: str
    body: Any  # parsed request body or None
    file: Path | None
    status: int

    def page(self) -> Any:
        return orjson.loads(self.file.read_bytes()) if self.file else None


def interactions(corpus: Path) -> list[Interaction]:
    out = []
    for index in INDEXES:
        for line in (corpus / index).read_bytes().splitlines():
            row = orjson.loads(line)
            body = orjson.loads(row["request_body"]) if row.get("request_body") else None
            path = corpus / row["file"] if row.get("file") else None
            path = path if path is not None and path.exists() else None  # bodies over 1.5 MB were left out
            out.append(
                Interaction(row["cassette"], row["interaction"], row["method"], row["uri"], body, path, row["status"])
            )
    return out


def member_of(uri: str) -> str | None:
    """Which list a recorded response holds: item pages and /collections pages."""
    path = urlsplit(uri).path.rstrip("/")
    if path.endswith("/search") or path.endswith("/items"):
        return "features"
    if path.endswith("/collections"):
        return "collections"
    return None


def paging(request: Request) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if request.body is not None:
        values.update({k: v for k, v in request.body.items() if k in PAGING_PARAMS})
    values.update({k: v for k, v in parse_qsl(urlsplit(request.url).query) if k in PAGING_PARAMS})
    return values


def covers(ours: Request, recorded: Request) -> bool:
    """Our request asks at least what the recorded one asked, with the same paging token: cscale keeps the
    window's query even where a server's next link drops it (earth-search after a filter)."""
    if ours.method != recorded.method or urlsplit(ours.url).path != urlsplit(recorded.url).path:
        return False
    if paging(ours) != paging(recorded):
        return False
    if recorded.body is not None and any(ours.body is None or ours.body.get(k) != v for k, v in recorded.body.items()):
        return False
    have = collections.Counter(parse_qsl(urlsplit(ours.url).query))
    return all(have[pair] for pair in parse_qsl(urlsplit(recorded.url).query))


def as_request(row: Interaction) -> Request:
    return Request(row.method, row.uri, row.body if row.method == "POST" else None)


def test_every_recorded_page_parses_and_its_next_link_resolves(corpus: Path) -> None:
    pages = with_next = 0
    for row in interactions(corpus):
        member = member_of(row.uri)
        if row.status != 200 or member is None or row.file is None:
            continue
        page = parse_page(row.file.read_bytes(), "application/json", member=member, where=row.uri)
        pages += 1
        assert all(isinstance(m, dict) for m in page.members)
        request = as_request(row)
        nxt = next_request(page.links, request, request, origin=origin_of(row.uri))
        if nxt is not None:
            with_next += 1
            assert origin_of(nxt.url) == origin_of(row.uri)
            assert paging(nxt), f"{row.uri}: a next request without a paging token"
    assert pages >= 140 and with_next >= 100, (pages, with_next)


def continuations(corpus: Path) -> list[list[Interaction]]:
    """Chains of a recorded request and the ones the recording made from its pages' next links."""
    by_cassette: dict[str, list[Interaction]] = collections.defaultdict(list)
    for row in interactions(corpus):
        by_cassette[row.cassette].append(row)
    chains = []
    for rows in by_cassette.values():
        rows.sort(key=lambda r: r.number)
        chain: list[Interaction] = []
        for a, b in itertools.pairwise(rows):
            member = member_of(a.uri)
            page = a.page() if member and a.status == 200 else None
            if not isinstance(page, dict):
                chain = []
                continue
            nxt = next_request(page.get("links") or [], as_request(a), as_request(a), origin=origin_of(a.uri))
            recorded = as_request(b)
            if (
                nxt is not None
                and urlsplit(nxt.url).path == urlsplit(recorded.url).path
                and paging(nxt) == paging(recorded)
            ):
                chain = chain or [a]
                chain.append(b)
            else:
                if len(chain) > 1:
                    chains.append(chain)
                chain = []
        if len(chain) > 1:
            chains.append(chain)
    return chains


def test_next_requests_match_what_the_recordings_asked(corpus: Path) -> None:
    chains = continuations(corpus)
    assert len(chains) >= 10
    styles = set()
    for chain in chains:
        first = as_request(chain[0])
        for a, b in itertools.pairwise(chain):
            nxt = next_request(a.page()["links"], as_request(a), first, origin=origin_of(a.uri))
            assert nxt is not None and covers(nxt, as_request(b)), (a.uri, nxt, b.body)
            styles.add((b.method, *sorted(paging(nxt))))
    # PC's token, earth-search's `next` (also after a filter that its next body drops)
    assert {("POST", "token"), ("POST", "next")} <= styles


# ------------------------------------------------------------------------------------------------ replay


class ReplayServer:
    """Serves recorded interactions on 127.0.0.1; https://HOST/... in bodies become http://127.0.0.1:PORT/HOST/..."""

    def __init__(self) -> None:
        self.entries: list[tuple[Request, bytes]] = []
        self.served: list[str] = []
        handler = type("Handler", (_ReplayHandler,), {"replay": self})
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def local(self, uri: str) -> str:
        parts = urlsplit(uri)
        return f"{self.url}/{parts.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")

    def load(self, rows: list[tuple[Request, bytes]]) -> None:
        self.entries = rows
        self.served = []

    def rewrite(self, body: bytes) -> bytes:
        hosts = {urlsplit(r.url).netloc for r, _ in self.entries}
        for host in hosts:
            body = body.replace(f"https://{host}".encode(), f"{self.url}/{host}".encode())
        return body

    def answer(self, request: Request) -> bytes | None:
        remote = request.url.removeprefix(self.url + "/")
        host, _, rest = remote.partition("/")
        wanted = Request(request.method, f"https://{host}/{rest}", request.body)
        for recorded, body in self.entries:
            if covers(wanted, recorded):
                self.served.append(recorded.url)
                return self.rewrite(body)
        return None


class _ReplayHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    replay: ReplayServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        self._answer(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))

    def _answer(self, body: Any) -> None:
        url = self.replay.url + unquote(self.path) if "?" not in self.path else self.replay.url + self.path
        found = self.replay.answer(Request(self.command, url, body))
        payload = found if found is not None else b'{"code": "NotRecorded"}'
        self.send_response(200 if found is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    server = ReplayServer()
    yield server
    server.server.shutdown()


def replay_chain(replay: ReplayServer, first: Request, pages: int, member: str = "features") -> list[list[str]]:
    client = HttpClient(HttpOptions(retries=0))

    def fetch(request: Request) -> tuple[Request, Page]:
        if request.method == "POST":
            response = client.post_json(request.url, request.body, headers=ACCEPT)
        else:
            response = client.get(request.url, headers=ACCEPT)
        return request, parse_page(response.body, None, member=member, where=request.url)

    def retry() -> None:
        raise AssertionError("a replayed page needed a retry")

    got = []
    start = Request(first.method, replay.local(first.url), first.body)
    for _, page, _ in follow(start, fetch, origin=origin_of(replay.url), retry=retry):
        got.append([m.get("id") for m in page.members])
        if len(got) == pages:
            break
    client.close()
    return got


def test_recorded_chains_replayed_over_http(corpus: Path, replay: ReplayServer) -> None:
    for chain in continuations(corpus):
        replay.load([(as_request(r), r.file.read_bytes()) for r in chain if r.file])
        got = replay_chain(replay, as_request(chain[0]), len(chain))
        assert got == [[m["id"] for m in r.page()["features"]] for r in chain], chain[0].cassette
        assert replay.served == [r.uri for r in chain]


def test_rustac_mock_pages_replayed_over_http(corpus: Path, replay: ReplayServer) -> None:
    """rustac's mocks of Planetary Computer (GET token, POST token) and eoapi (offset) pages."""
    mocks = corpus / "api/rustac-mocks"
    cases = [
        (
            "items",
            "features",
            Request(
                "GET", "https://planetarycomputer.microsoft.com/api/stac/v1/collections/sentinel-2-l2a/items?limit=1"
            ),
        ),
        (
            "search",
            "features",
            Request(
                "POST",
                "https://planetarycomputer.microsoft.com/api/stac/v1/search",
                {"collections": ["sentinel-2-l2a"], "limit": 1},
            ),
        ),
        ("collections", "collections", Request("GET", "https://stac.eoapi.dev/collections")),
    ]
    for name, member, first in cases:
        one, two = (orjson.loads((mocks / f"{name}-page-{n}.json").read_bytes()) for n in (1, 2))
        nxt = next_request(one["links"], first, first, origin=origin_of(first.url))
        assert nxt is not None
        replay.load([(first, orjson.dumps(one)), (nxt, orjson.dumps(two))])
        got = replay_chain(replay, first, 2, member)
        assert got == [[m["id"] for m in page[member]] for page in (one, two)]
        assert len(got[0]) == len(one[member]) > 0
    with pytest.raises(PageError) as caught:  # rustac's "not found" body with a 200 is not a page
        parse_page((mocks / "not-a-collection.json").read_bytes(), "application/json")
    assert "NotFoundError" in str(caught.value)
