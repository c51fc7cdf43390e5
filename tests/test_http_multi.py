"""harvester.http_multi (libcurl's multi interface) against the same fault-injecting server process as
test_http: the same policy as harvester.http — typed errors, retries with Retry-After and backoff, bodies cut
off, resets, timeouts, size caps, conditional requests, the connection bound, the run's retry budget."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_http import FaultServer

from harvester.errors import InputError
from harvester.http import (
    BodyTooLargeError,
    HttpOptions,
    HttpResponse,
    HttpStatusError,
    HttpTransientError,
    NotFoundError,
    RetryBudget,
    RetryBudgetExhausted,
)
from harvester.http_multi import MultiGet

FAST = HttpOptions(retries=3, backoff_factor=0.01, backoff_jitter=0.01, read_timeout=1, retry_after_max=1)


class Answers:
    """Collects answers by token; `wait(n)` until n have come."""

    def __init__(self) -> None:
        self.got: dict[Any, HttpResponse | Exception] = {}
        self.threads: set[str] = set()
        self.cond = threading.Condition()

    def __call__(self, token: Any, result: HttpResponse | Exception) -> None:
        with self.cond:
            self.got[token] = result
            self.threads.add(threading.current_thread().name)
            self.cond.notify_all()

    def wait(self, count: int, timeout: float = 30) -> dict[Any, HttpResponse | Exception]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.got) >= count, timeout), f"{len(self.got)} of {count} answers"
            return dict(self.got)


def get(url: str, options: HttpOptions = FAST, **kw: Any) -> HttpResponse:
    """One GET through a MultiGet, raising the error it answers with (as HttpClient.get would)."""
    answers = Answers()
    multi = MultiGet(options, answers, connections=2)
    try:
        multi.submit(url, "t", **kw)
        result = answers.wait(1)["t"]
    finally:
        multi.close()
    if isinstance(result, Exception):
        raise result
    return result


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    root = tmp_path_factory.mktemp("served")
    (root / "doc.json").write_bytes(orjson.dumps({"hello": "world", "n": list(range(50))}))
    (root / "big.json").write_bytes(b"[" + b"1," * 600_000 + b"1]")
    running = FaultServer(root)
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _reset(server: FaultServer) -> None:
    server.configure()


def test_get_with_validators_and_conditional_304(server: FaultServer) -> None:
    first = get(server.url("doc.json"))
    assert first.status == 200 and first.json()["hello"] == "world"
    assert first.etag and first.last_modified and first.url == server.url("doc.json")
    again = get(server.url("doc.json"), headers={"If-None-Match": first.etag})
    assert again.status == 304 and again.body == b""
    since = get(server.url("doc.json"), headers={"If-Modified-Since": first.last_modified})
    assert since.status == 304
    assert [s for _, s in server.log()] == [200, 304, 304]
    assert "user-agent" in server.stats()["headers"]["/doc.json"]


def test_not_found_and_other_client_errors_are_typed_and_not_retried(server: FaultServer) -> None:
    server.configure(faults={"/forbidden.json": {"status": 403}})
    with pytest.raises(NotFoundError) as missing:
        get(server.url("nope.json"))
    assert missing.value.status == 404
    with pytest.raises(HttpStatusError) as forbidden:
        get(server.url("forbidden.json"))
    assert forbidden.value.status == 403 and not isinstance(forbidden.value, NotFoundError)
    assert forbidden.value.body == b'{"error": "injected"}'
    assert server.log() == [("/nope.json", 404), ("/forbidden.json", 403)]


def test_429_honours_retry_after_up_to_the_cap(server: FaultServer) -> None:
    server.configure(faults={"/doc.json": {"status": 429, "retry_after": 3600, "times": 1}})
    started = time.monotonic()
    assert get(server.url("doc.json")).status == 200
    assert 0.9 <= time.monotonic() - started < 10  # Retry-After capped at retry_after_max=1 s, not an hour
    assert [s for _, s in server.log()] == [429, 200]


def test_5xx_is_retried_then_a_transient_error(server: FaultServer) -> None:
    server.configure(faults={"/doc.json": {"status": 503, "times": 2}, "/down.json": {"status": 502}})
    assert get(server.url("doc.json")).status == 200
    with pytest.raises(HttpTransientError) as down:
        get(server.url("down.json"))
    assert down.value.status == 502
    assert [s for p, s in server.log() if p == "/down.json"] == [502] * 4  # the first try and 3 retries


def test_body_cut_off_mid_way_is_read_again(server: FaultServer) -> None:
    server.configure(faults={"/doc.json": {"truncate": True, "times": 2}})
    assert get(server.url("doc.json")).json()["hello"] == "world"
    assert [s for _, s in server.log()] == ["truncated", "truncated", 200]
    server.configure(faults={"/doc.json": {"truncate": True}})
    with pytest.raises(HttpTransientError, match="mid-body"):
        get(server.url("doc.json"))
    assert len(server.log()) == 4


def test_connection_reset_and_read_timeout_are_retried(server: FaultServer) -> None:
    options = HttpOptions(retries=1, backoff_factor=0.01, backoff_jitter=0.0, read_timeout=1)
    server.configure(faults={"/doc.json": {"reset": True, "times": 1}})
    assert get(server.url("doc.json"), options).status == 200
    server.configure(faults={"/doc.json": {"hang": 6}})
    started = time.monotonic()
    with pytest.raises(HttpTransientError):
        get(server.url("doc.json"), options)
    assert time.monotonic() - started < 5.5  # two attempts of ~1-2 s, not the server's 6 s each


def test_size_cap_by_content_length_and_while_streaming(server: FaultServer) -> None:
    server.configure(faults={"/huge.json": {"huge": 50 << 20}, "/chunked.json": {"huge": 50 << 20, "chunked": 1}})
    started = time.monotonic()
    with pytest.raises(BodyTooLargeError) as declared:
        get(server.url("huge.json"), max_bytes=1 << 20)
    assert declared.value.size == 50 << 20
    with pytest.raises(BodyTooLargeError) as streamed:
        get(server.url("chunked.json"), max_bytes=1 << 20)
    assert streamed.value.size is None
    with pytest.raises(BodyTooLargeError):
        get(server.url("big.json"), max_bytes=1 << 20)  # a real file, 1.2 MB
    assert time.monotonic() - started < 5  # 50 MB bodies were not read
    assert get(server.url("big.json")).status == 200  # the default cap is larger


def test_many_at_once_on_one_thread_with_the_connections_bounded(server: FaultServer) -> None:
    server.configure(faults={"*": {"delay": 0.05}})
    answers = Answers()
    multi = MultiGet(FAST, answers, connections=3)
    try:
        for i in range(36):
            multi.submit(server.url("doc.json" if i % 3 else "missing.json"), i)
        got = answers.wait(36)
    finally:
        multi.close()
    assert sum(isinstance(r, HttpResponse) and r.status == 200 for r in got.values()) == 24
    assert sum(isinstance(r, NotFoundError) for r in got.values()) == 12
    assert server.stats()["max_active"] == 3
    assert answers.threads == {"cscale-curl"}


def test_the_runs_retry_budget_stops_retrying(server: FaultServer) -> None:
    server.configure(faults={"*": {"status": 503}})
    budget = RetryBudget(2)
    options = HttpOptions(retries=5, backoff_factor=0.01, backoff_jitter=0.0, retry_budget=budget)
    answers = Answers()
    multi = MultiGet(options, answers, connections=1)
    try:
        for i in range(3):
            multi.submit(server.url(f"{i}.json"), i)
        got = answers.wait(3)
    finally:
        multi.close()
    assert all(isinstance(r, RetryBudgetExhausted) for r in got.values())
    assert len(server.log()) == 5  # three first tries and the budget's two retries


def test_redirects_are_followed_and_the_final_url_kept(server: FaultServer, tmp_path: Path) -> None:
    (tmp_path / "doc.json").write_bytes(b'{"elsewhere": true}')
    other = FaultServer(tmp_path)
    try:
        other.configure()
        server.configure(faults={"/away.json": {"redirect": other.url("doc.json")}})
        moved = get(server.url("away.json").replace("http://", "http://alice:hunter2@"))
        assert moved.json() == {"elsewhere": True} and moved.url == other.url("doc.json")
        assert "authorization" not in other.stats()["headers"]["/doc.json"]  # credentials stay with their host
    finally:
        other.close()


def test_unreachable_host_is_transient_and_bad_urls_are_input_errors() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once it is closed
    options = HttpOptions(retries=1, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=1)
    with pytest.raises(HttpTransientError):
        get(f"http://127.0.0.1:{port}/x.json", options)
    with pytest.raises(InputError):
        get("http://[not-a-host/x.json", options)
    with pytest.raises(InputError):
        get("ftp://127.0.0.1/x.json", options)


def test_close_with_transfers_outstanding_returns_promptly(server: FaultServer) -> None:
    server.configure(faults={"*": {"hang": 5}})
    answers = Answers()
    multi = MultiGet(FAST, answers, connections=2)
    for i in range(4):
        multi.submit(server.url("doc.json"), i)
    time.sleep(0.2)
    started = time.monotonic()
    multi.close()
    assert time.monotonic() - started < 1
    assert answers.got == {}
