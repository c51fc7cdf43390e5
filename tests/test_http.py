"""harvester.http against a real server process on 127.0.0.1 that injects faults: retries with Retry-After,
5xx, bodies cut off mid-way, resets, timeouts, size caps, conditional requests, the connection bound, and no
credentials in logs. Both request paths (straight to the urllib3 pool, and through requests) are exercised.

Run as a script, this module *is* that server (`FaultServer` starts it): it serves files from a folder with
ETag and Last-Modified, honours If-None-Match / If-Modified-Since, and applies per-path fault rules that a test
sets through POST /_control; GET /_stats returns what was asked and answered.
"""

from __future__ import annotations

import email.utils
import http.server
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import pytest
import requests

from harvester.errors import InputError
from harvester.http import (
    BodyTooLargeError,
    HttpClient,
    HttpOptions,
    HttpStatusError,
    HttpTransientError,
    NotFoundError,
)

# ------------------------------------------------------------------------------------------ the server


class _State:
    def __init__(self, root: str) -> None:
        self.root = root
        self.faults: dict[str, dict[str, Any]] = {}
        self.hits: dict[str, int] = {}
        self.log: list[list[Any]] = []  # [path, status]
        self.headers: dict[str, list[str]] = {}  # path → the header names of its last request
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms delayed-ACK stall
    state: _State

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        path = urlsplit(self.path).path
        if path == "/_control":
            control = orjson.loads(body)
            with self.state.lock:
                if "root" in control:
                    self.state.root = control["root"]
                if "faults" in control:
                    self.state.faults = control["faults"]
                    self.state.hits = {}
                if control.get("reset"):
                    self.state.log = []
                    self.state.headers = {}
                    self.state.max_active = 0
            self._send(200, b"{}")
        elif path == "/_echo":
            self._send(200, body)
        else:
            self._send(405, b"")

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/_stats":
            with self.state.lock:
                payload = {"log": self.state.log, "max_active": self.state.max_active, "headers": self.state.headers}
            self._send(200, orjson.dumps(payload), record=False)
            return
        with self.state.lock:
            rule = self.state.faults.get(path) or self.state.faults.get("*")
            hit = self.state.hits[path] = self.state.hits.get(path, 0) + 1
            self.state.headers[path] = sorted(k.lower() for k in self.headers)
        self._get(path, rule, hit)

    def _delay(self, seconds: float) -> None:
        """Requests waiting here at once: a client cannot have more than its connections in this state (the
        count drops before the answer is sent, so a client reusing the connection cannot overtake it)."""
        with self.state.lock:
            self.state.active += 1
            self.state.max_active = max(self.state.max_active, self.state.active)
        time.sleep(seconds)
        with self.state.lock:
            self.state.active -= 1

    def _get(self, path: str, rule: dict[str, Any] | None, hit: int) -> None:
        if rule and (rule.get("times", -1) < 0 or hit <= rule["times"]):
            if rule.get("delay"):
                self._delay(rule["delay"])
            if "hang" in rule:
                time.sleep(rule["hang"])
            if rule.get("reset"):
                self._record(path, "reset")
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            if "redirect" in rule:
                self._send(302, b"", {"Location": rule["redirect"]}, path=path)
                return
            if "status" in rule:
                headers = {"Retry-After": str(rule["retry_after"])} if "retry_after" in rule else {}
                self._send(rule["status"], b'{"error": "injected"}', headers, path=path)
                return
            if "huge" in rule:
                self._huge(path, int(rule["huge"]), chunked=bool(rule.get("chunked")))
                return
            if rule.get("truncate"):
                data = self._file(path)
                if data is not None:
                    self._record(path, "truncated")
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
        full = os.path.join(self.state.root, path.lstrip("/"))
        try:
            stat = os.stat(full)
            with open(full, "rb") as handle:
                data = handle.read()
        except OSError:
            self._send(404, b"not found", path=path)
            return
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
        since = self.headers.get("If-Modified-Since")
        if self.headers.get("If-None-Match") == etag or (
            since and "If-None-Match" not in self.headers and since == modified
        ):
            self._send(304, b"", {"ETag": etag, "Last-Modified": modified}, path=path)
            return
        self._send(200, data, {"ETag": etag, "Last-Modified": modified}, path=path)

    def _file(self, path: str) -> bytes | None:
        try:
            with open(os.path.join(self.state.root, path.lstrip("/")), "rb") as handle:
                return handle.read()
        except OSError:
            return None

    def _huge(self, path: str, size: int, *, chunked: bool) -> None:
        self._record(path, "huge")
        self.send_response(200)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        block = b"[" + b"0," * 32767 + b"0]"
        try:
            sent = 0
            while sent < size:
                piece = block[: min(len(block), size - sent)]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                sent += len(piece)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client stopped reading: expected

    def _record(self, path: str, status: Any) -> None:
        with self.state.lock:
            self.state.log.append([path, status])

    def _send(
        self, status: int, body: bytes, headers: dict[str, str] | None = None, *, path: str = "", record: bool = True
    ) -> None:
        if record and path:
            self._record(path, status)
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if status != 304:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 304:
            self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (killed crawls, size caps) are part of the tests


def serve(root: str) -> None:
    _Handler.state = _State(root)
    server = _Server(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


class FaultServer:
    """The server above in its own process; `url(path)`, `configure(...)`, `log()`."""

    def __init__(self, root: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(root)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.base = f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base}/{path.lstrip('/')}"

    def configure(self, *, root: Path | None = None, faults: dict[str, Any] | None = None) -> None:
        control: dict[str, Any] = {"faults": faults or {}, "reset": True}
        if root is not None:
            control["root"] = str(root)
        requests.post(self.url("_control"), data=orjson.dumps(control), timeout=10).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return dict(requests.get(self.url("_stats"), timeout=10).json())

    def log(self) -> list[tuple[str, Any]]:
        return [(p, s) for p, s in self.stats()["log"]]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


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


@pytest.fixture(params=["direct", "requests"])
def client(request: pytest.FixtureRequest) -> Iterator[HttpClient]:
    """Both paths: plain GETs straight to the urllib3 pool, and (with auth set) through requests."""
    options = HttpOptions(retries=3, backoff_factor=0.01, backoff_jitter=0.01, read_timeout=5, retry_after_max=1)
    made = HttpClient(options)
    if request.param == "requests":
        made.session.auth = ("user", "secret-password")
    yield made
    made.close()


# ----------------------------------------------------------------------------------------------- tests


def test_get_json_with_validators_and_conditional_304(server: FaultServer, client: HttpClient) -> None:
    first = client.get(server.url("doc.json"))
    assert first.status == 200 and first.json()["hello"] == "world"
    assert first.etag and first.last_modified
    again = client.get(server.url("doc.json"), headers={"If-None-Match": first.etag})
    assert again.status == 304 and again.body == b""
    since = client.get(server.url("doc.json"), headers={"If-Modified-Since": first.last_modified})
    assert since.status == 304
    assert [s for _, s in server.log()] == [200, 304, 304]


def test_not_found_and_other_client_errors_are_typed(server: FaultServer, client: HttpClient) -> None:
    server.configure(faults={"/forbidden.json": {"status": 403}})
    with pytest.raises(NotFoundError) as missing:
        client.get(server.url("nope.json"))
    assert missing.value.status == 404
    with pytest.raises(HttpStatusError) as forbidden:
        client.get(server.url("forbidden.json"))
    assert forbidden.value.status == 403 and not isinstance(forbidden.value, NotFoundError)
    assert isinstance(forbidden.value, InputError)
    # Neither is retried: one request each.
    assert server.log() == [("/nope.json", 404), ("/forbidden.json", 403)]


def test_429_honours_retry_after_up_to_the_cap(server: FaultServer, client: HttpClient) -> None:
    server.configure(faults={"/doc.json": {"status": 429, "retry_after": 3600, "times": 1}})
    started = time.monotonic()
    response = client.get(server.url("doc.json"))
    elapsed = time.monotonic() - started
    assert response.status == 200
    assert 0.9 <= elapsed < 10  # waited Retry-After, capped at retry_after_max=1 s instead of an hour
    assert [s for _, s in server.log()] == [429, 200]


def test_5xx_is_retried_then_a_transient_error(server: FaultServer, client: HttpClient) -> None:
    server.configure(faults={"/doc.json": {"status": 503, "times": 2}, "/down.json": {"status": 502}})
    assert client.get(server.url("doc.json")).status == 200
    with pytest.raises(HttpTransientError) as down:
        client.get(server.url("down.json"))
    assert down.value.status == 502
    statuses = [s for p, s in server.log() if p == "/down.json"]
    assert statuses == [502] * 4  # the first try and 3 retries


def test_body_cut_off_mid_way_is_read_again(server: FaultServer, client: HttpClient) -> None:
    server.configure(faults={"/doc.json": {"truncate": True, "times": 2}})
    assert client.get(server.url("doc.json")).json()["hello"] == "world"
    assert [s for _, s in server.log()] == ["truncated", "truncated", 200]
    server.configure(faults={"/doc.json": {"truncate": True}})
    with pytest.raises(HttpTransientError, match="mid-body"):
        client.get(server.url("doc.json"))
    assert len(server.log()) == 4


def test_connection_reset_and_read_timeout_are_retried(server: FaultServer) -> None:
    options = HttpOptions(retries=2, backoff_factor=0.01, backoff_jitter=0.0, read_timeout=0.3)
    with HttpClient(options) as fast:
        server.configure(faults={"/doc.json": {"reset": True, "times": 2}})
        assert fast.get(server.url("doc.json")).status == 200
        server.configure(faults={"/doc.json": {"hang": 3}})
        started = time.monotonic()
        with pytest.raises(HttpTransientError):
            fast.get(server.url("doc.json"))
        assert time.monotonic() - started < 2.5  # three attempts of 0.3 s, not the server's 3 s each


def test_size_cap_by_content_length_and_while_streaming(server: FaultServer, client: HttpClient) -> None:
    server.configure(faults={"/huge.json": {"huge": 50 << 20}, "/chunked.json": {"huge": 50 << 20, "chunked": 1}})
    started = time.monotonic()
    with pytest.raises(BodyTooLargeError) as declared:
        client.get(server.url("huge.json"), max_bytes=1 << 20)
    assert declared.value.size == 50 << 20
    with pytest.raises(BodyTooLargeError) as streamed:
        client.get(server.url("chunked.json"), max_bytes=1 << 20)
    assert streamed.value.size is None
    with pytest.raises(BodyTooLargeError):
        client.get(server.url("big.json"), max_bytes=1 << 20)  # a real file, 1.2 MB
    assert time.monotonic() - started < 5  # 50 MB bodies were not read
    assert client.get(server.url("big.json")).status == 200  # the default cap is larger


def test_connections_in_flight_are_bounded(server: FaultServer) -> None:
    server.configure(faults={"*": {"delay": 0.05}})
    with HttpClient(HttpOptions(max_connections=3)) as bounded, ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda _: bounded.get(server.url("doc.json")).status, range(36)))
        # A failed request still gives its slot back: after errors the pool keeps working at its bound.
        errors = list(pool.map(lambda _: _status_of(bounded, server.url("missing.json")), range(12)))
    assert statuses == [200] * 36 and errors == [404] * 12
    assert server.stats()["max_active"] == 3


def _status_of(client: HttpClient, url: str) -> int:
    try:
        return client.get(url).status
    except HttpStatusError as exc:
        return exc.status


def test_post_json(server: FaultServer, client: HttpClient) -> None:
    response = client.post_json(server.url("_echo"), {"collections": ["a"], "limit": 2})
    assert response.json() == {"collections": ["a"], "limit": 2}


def test_credentials_never_reach_the_logs(server: FaultServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.configure(faults={"/doc.json": {"truncate": True}})
    url = server.url("doc.json").replace("http://", "http://alice:hunter2@")
    options = HttpOptions(retries=1, backoff_factor=0.01, backoff_jitter=0.0)
    with HttpClient(options, headers={"Authorization": "Bearer TOKEN-xyz"}) as authed:
        with pytest.raises(HttpTransientError) as failed:
            authed.get(url)
        with pytest.raises(NotFoundError):
            authed.get(server.url("nope.json"))
    text = caplog.text + str(failed.value)
    assert "hunter2" not in text and "TOKEN-xyz" not in text and "alice" not in text
    assert "doc.json" in str(failed.value)


@pytest.mark.parametrize("path", ["direct", "requests"])
def test_credential_headers_do_not_follow_a_redirect_to_another_origin(
    server: FaultServer, tmp_path: Path, path: str
) -> None:
    (tmp_path / "doc.json").write_bytes(b'{"elsewhere": true}')
    other = FaultServer(tmp_path)  # another port: another origin
    try:
        other.configure()
        server.configure(
            faults={"/away.json": {"redirect": other.url("doc.json")}, "/near.json": {"redirect": "/doc.json"}}
        )
        secrets = {"X-Api-Key": "key-123", "Authorization": "Bearer TOKEN-xyz"}
        with HttpClient(HttpOptions(retries=1), headers=secrets) as authed:
            if path == "requests":
                authed.session.cookies.set("session", "c00kie")  # cookies take the requests path
            assert authed.get(server.url("away.json")).json() == {"elsewhere": True}
            assert authed.get(server.url("near.json")).json()["hello"] == "world"
        seen_there = other.stats()["headers"]["/doc.json"]
        assert "x-api-key" not in seen_there and "authorization" not in seen_there
        seen_here = server.stats()["headers"]["/doc.json"]
        assert "x-api-key" in seen_here and "authorization" in seen_here  # same origin: kept
    finally:
        other.close()


def test_unreachable_host_is_transient_and_bad_url_is_input_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once it is closed
    with HttpClient(HttpOptions(retries=1, backoff_factor=0.01, backoff_jitter=0.0, connect_timeout=1)) as c:
        with pytest.raises(HttpTransientError):
            c.get(f"http://127.0.0.1:{port}/x.json")
        with pytest.raises(InputError):
            c.get("http://[not-a-host/x.json")


if __name__ == "__main__" and sys.argv[1:2] == ["--serve"]:
    serve(sys.argv[2])
