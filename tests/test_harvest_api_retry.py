"""harvester.http's options for the API harvester: read-only POSTs retried like GETs (429 with Retry-After, 5xx,
bodies cut off), one retry budget shared by a run's requests, and the error document kept on 4xx errors."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

from harvester.http import (
    HttpClient,
    HttpOptions,
    HttpStatusError,
    HttpTransientError,
    RetryBudget,
    RetryBudgetExhausted,
)

pytestmark = pytest.mark.timeout(60)
QUICK = {"backoff_factor": 0.01, "backoff_max": 0.02, "backoff_jitter": 0.01, "retry_after_max": 1}


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers its `plan` in turn (a status, or "cut" for a body cut off mid-way), then 200."""

    protocol_version = "HTTP/1.1"
    plan: ClassVar[list[Any]] = []
    hits: ClassVar[list[str]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer()

    def _answer(self) -> None:
        type(self).hits.append(self.command)
        step = type(self).plan.pop(0) if type(self).plan else 200
        body = b'{"features": [], "description": "limit must be less than or equal to 100"}'
        self.send_response(200 if step == "cut" else step)
        if step == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if step == "cut":
            self.wfile.write(body[:10])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self.wfile.write(body)


@pytest.fixture
def flaky() -> Iterator[str]:
    Flaky.plan, Flaky.hits = [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/search"
    server.shutdown()


def test_post_is_retried_only_when_asked(flaky: str) -> None:
    Flaky.plan = [503]
    with pytest.raises(HttpTransientError, match="HTTP 503"):
        HttpClient(HttpOptions(retries=3, **QUICK)).post_json(flaky, {"limit": 1})  # the default: never retried
    assert Flaky.hits == ["POST"]
    Flaky.plan, Flaky.hits = [429, 500, "cut", 503], []
    started = time.monotonic()
    response = HttpClient(HttpOptions(retries=5, retry_post=True, **QUICK)).post_json(flaky, {"limit": 1})
    assert response.status == 200 and Flaky.hits == ["POST"] * 5
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured


def test_one_budget_for_all_requests_of_a_run(flaky: str) -> None:
    budget = RetryBudget(3)
    client = HttpClient(HttpOptions(retries=5, retry_post=True, retry_budget=budget, **QUICK))
    Flaky.plan = [500, 502]
    assert client.get(flaky).status == 200 and budget.used == 2
    Flaky.plan = ["cut", 503, 503]  # the third retry is one too many
    with pytest.raises(RetryBudgetExhausted, match="retry budget \\(3 retries\\) is spent"):
        client.post_json(flaky, {})
    assert budget.exhausted and budget.used == 3
    Flaky.plan = [500]
    with pytest.raises(RetryBudgetExhausted):  # every later failure ends the run at once
        client.get(flaky)
    Flaky.hits = []
    assert client.get(flaky).status == 200 and Flaky.hits == ["GET"]  # successes still go through


def test_client_errors_keep_the_error_document(flaky: str) -> None:
    Flaky.plan = [400]
    with pytest.raises(HttpStatusError) as caught:
        HttpClient(HttpOptions(retry_post=True, **QUICK)).post_json(flaky, {"limit": 1000})
    assert caught.value.status == 400 and b"less than or equal to 100" in caught.value.body
    Flaky.plan = [422]
    with pytest.raises(HttpStatusError) as again:  # the direct GET path too
        HttpClient(HttpOptions(**QUICK)).get(flaky)
    assert b"less than or equal to 100" in again.value.body
