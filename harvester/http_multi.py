"""Many GETs in flight on one thread, through libcurl's multi interface (I/O edge): what a crawl of a static
catalog does all day.

Why not harvester.http's client: urllib3 parses every response in Python, ~0.27 ms of CPU a document, and a
crawl on two cores is CPU-bound on it; libcurl does the HTTP in C, ~0.03 ms a document (measured on the
benchmark's nginx tree), with every transfer on one thread. The *policy* is harvester.http's and is kept the
same: HttpOptions (timeouts, retries with exponential backoff and jitter, Retry-After up to a cap, the run's
retry budget, body cap, connection cap) and its typed errors (NotFoundError, HttpStatusError,
BodyTooLargeError, HttpTransientError). The retry loop is written here because libcurl has none for a multi
handle (`--retry` belongs to the curl tool, not the library).

Differences from harvester.http, all deliberate: no cookies are kept between requests (static documents need
none); proxies come from the environment as libcurl reads them (it ignores an upper-case HTTP_PROXY, as a
CGI-safety rule); the read timeout has one-second resolution (libcurl's low-speed limit); redirects only go to
http(s), and libcurl sends credentials from the URL or .netrc only to the host they were given for.
"""

from __future__ import annotations

import heapq
import io
import itertools
import logging
import math
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pycurl
from requests.structures import CaseInsensitiveDict

from harvester.errors import InputError
from harvester.http import (
    RETRY_STATUSES,
    BodyTooLargeError,
    HttpOptions,
    HttpResponse,
    HttpStatusError,
    HttpTransientError,
    NotFoundError,
    RetryBudgetExhausted,
    redact,
    user_agent,
)

log = logging.getLogger(__name__)

# libcurl error codes worth another attempt: resolve, connect, HTTP/2 framing, body cut short, timeout, TLS
# handshake, empty reply, send, receive, bad content encoding (a cut-off gzip stream), HTTP/2 stream.
TRANSIENT_CODES = frozenset({6, 7, 16, 18, 28, 35, 52, 55, 56, 61, 92})
BROKEN_BODY_CODES = frozenset({18, 56, 61, 92})  # the answer had begun: "broke off mid-body"
RETRY_AFTER_STATUSES = frozenset({429, 503})  # urllib3's rule: Retry-After means something only for these
POLL_SECONDS = 0.005  # longest wait on the sockets before new submissions are looked at


def ca_bundle() -> str | None:
    """The CA file requests would use: REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, SSL_CERT_FILE, else certifi's."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(name)
        if value:
            return value
    try:
        import certifi

        return str(certifi.where())
    except ImportError:  # libcurl's own default then
        return None


Done = Callable[[Any, HttpResponse | Exception], None]


@dataclass(slots=True)
class _Request:
    url: str
    headers: list[str]
    max_bytes: int
    token: Any
    attempt: int = 0


@dataclass(slots=True)
class _Transfer:
    request: _Request
    body: io.BytesIO = field(default_factory=io.BytesIO)
    header_lines: list[bytes] = field(default_factory=list)


class MultiGet:
    """GETs submitted from any thread; each ends in one call of `done(token, HttpResponse | error)` on the
    transfer thread (the callback must be quick or hand the work on). At most `connections` transfers (and
    connections) at once; more wait in order. `close()` stops at once: what is still outstanding gets no answer."""

    def __init__(self, options: HttpOptions, done: Done, *, connections: int) -> None:
        self.options = options
        self.done = done
        self.connections = max(1, connections)
        self._submitted: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._closing = False
        self._ca = ca_bundle()
        self._thread = threading.Thread(target=self._run, name="cscale-curl", daemon=True)
        self._thread.start()

    def submit(
        self, url: str, token: Any, *, headers: Mapping[str, str] | None = None, max_bytes: int | None = None
    ) -> None:
        lines = [f"{name}: {value}" for name, value in (headers or {}).items()]
        cap = self.options.max_body_bytes if max_bytes is None else max_bytes
        self._submitted.put(_Request(url, lines, cap, token))

    def close(self) -> None:
        self._closing = True
        self._submitted.put(None)
        self._thread.join()

    # -- the transfer thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        multi = pycurl.CurlMulti()
        multi.setopt(pycurl.M_MAX_HOST_CONNECTIONS, self.connections)
        multi.setopt(pycurl.M_MAX_TOTAL_CONNECTIONS, self.connections)
        multi.setopt(pycurl.M_MAXCONNECTS, self.connections)
        free = [self._handle() for _ in range(self.connections)]
        active: dict[pycurl.Curl, _Transfer] = {}
        waiting: deque[_Request] = deque()
        timers: list[tuple[float, int, _Request]] = []  # retries, by when they are due
        order = itertools.count()
        try:
            while not self._closing:
                self._take(waiting, block=not active and not waiting, timers=timers)
                now = time.monotonic()
                while timers and timers[0][0] <= now:
                    waiting.append(heapq.heappop(timers)[2])
                while waiting and free:
                    self._start(multi, free.pop(), waiting.popleft(), active)
                while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                    pass
                while True:
                    left, ok, failed = multi.info_read()
                    for handle in ok:
                        self._end(multi, handle, None, active, free, timers, order)
                    for handle, code, message in failed:
                        self._end(multi, handle, (code, message), active, free, timers, order)
                    if not left:
                        break
                if active:
                    wait = multi.timeout()
                    multi.select(POLL_SECONDS if wait < 0 else min(wait / 1000, POLL_SECONDS))
        except BaseException as exc:  # a bug here must not leave the caller waiting for answers
            if not self._closing:
                for transfer in active.values():
                    self.done(transfer.request.token, RuntimeError(f"HTTP transfer loop failed: {exc!r}"))
            raise
        finally:
            for handle in list(active):
                multi.remove_handle(handle)
            for handle in (*active, *free):
                handle.close()
            multi.close()

    def _take(self, waiting: deque[_Request], *, block: bool, timers: list[tuple[float, int, _Request]]) -> None:
        """Move submissions into `waiting`; with nothing in flight, wait for one (or for the next retry)."""
        try:
            if block:
                timeout = max(0.0, timers[0][0] - time.monotonic()) if timers else None
                request = self._submitted.get(timeout=timeout)
                if request is None:
                    return
                waiting.append(request)
            while True:
                request = self._submitted.get_nowait()
                if request is None:
                    return
                waiting.append(request)
        except queue.Empty:
            return

    def _handle(self) -> pycurl.Curl:
        o = self.options
        handle = pycurl.Curl()
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.FOLLOWLOCATION, 1)
        handle.setopt(pycurl.MAXREDIRS, 10)
        handle.setopt(pycurl.PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.REDIR_PROTOCOLS, pycurl.PROTO_HTTP | pycurl.PROTO_HTTPS)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(o.connect_timeout * 1000)))
        handle.setopt(pycurl.LOW_SPEED_LIMIT, 1)  # the read timeout: less than a byte a second for this long
        handle.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(o.read_timeout)))
        handle.setopt(pycurl.USERAGENT, user_agent())
        handle.setopt(pycurl.ACCEPT_ENCODING, "gzip, deflate")
        if self._ca:
            handle.setopt(pycurl.CAINFO, self._ca)
        if o.trust_env:
            handle.setopt(pycurl.NETRC, pycurl.NETRC_OPTIONAL)
        else:
            handle.setopt(pycurl.PROXY, "")  # not even the environment's
        return handle

    def _start(self, multi: pycurl.CurlMulti, handle: pycurl.Curl, request: _Request, active: dict[Any, Any]) -> None:
        transfer = _Transfer(request)
        handle.setopt(pycurl.URL, request.url)
        handle.setopt(pycurl.HTTPHEADER, request.headers)
        handle.setopt(pycurl.MAXFILESIZE_LARGE, request.max_bytes)  # by Content-Length, and while reading
        handle.setopt(pycurl.WRITEFUNCTION, transfer.body.write)
        handle.setopt(pycurl.HEADERFUNCTION, transfer.header_lines.append)
        active[handle] = transfer
        multi.add_handle(handle)

    def _end(
        self,
        multi: pycurl.CurlMulti,
        handle: pycurl.Curl,
        error: tuple[int, str] | None,
        active: dict[pycurl.Curl, _Transfer],
        free: list[pycurl.Curl],
        timers: list[tuple[float, int, _Request]],
        order: itertools.count[int],
    ) -> None:
        transfer = active.pop(handle)
        request = transfer.request
        status = int(handle.getinfo(pycurl.RESPONSE_CODE)) if error is None else 0
        final_url = str(handle.getinfo(pycurl.EFFECTIVE_URL)) if error is None else request.url
        retry_after = int(handle.getinfo(pycurl.RETRY_AFTER)) if status in RETRY_AFTER_STATUSES else 0
        multi.remove_handle(handle)
        free.append(handle)
        headers = _last_headers(transfer.header_lines)
        url = request.url
        result: HttpResponse | Exception
        if error is not None:
            code, message = error
            if code == pycurl.E_FILESIZE_EXCEEDED:
                declared = headers.get("Content-Length")
                size = int(declared) if declared and declared.isdigit() else None
                result = BodyTooLargeError(
                    f"{redact(url)} is above the {request.max_bytes:,} byte limit", url=url, size=size
                )
            elif code in TRANSIENT_CODES:
                what = "connection broke off mid-body" if code in BROKEN_BODY_CODES else _message(message)
                if self._retry(request, None, timers, order, what):
                    return
                result = self._gave_up(url, what, None)
            else:
                result = InputError(f"cannot fetch {redact(url)}: {_message(message)}")
        elif status in RETRY_STATUSES:
            if self._retry(request, float(retry_after) or None, timers, order, f"HTTP {status}"):
                return
            result = self._gave_up(url, f"HTTP {status}", status)
        elif status in (404, 410):
            result = NotFoundError(f"{redact(url)}: HTTP {status}", url=url, status=status)
        elif status < 200 or (status >= 300 and status != 304):
            body = transfer.body.getvalue()[: 1 << 12]
            result = HttpStatusError(f"{redact(url)}: HTTP {status}", url=url, status=status, body=body)
        else:
            body = b"" if status == 304 else transfer.body.getvalue()
            result = HttpResponse(final_url, status, headers, body)
        self.done(request.token, result)

    def _retry(
        self,
        request: _Request,
        retry_after: float | None,
        timers: list[tuple[float, int, _Request]],
        order: itertools.count[int],
        what: str,
    ) -> bool:
        """Schedule another attempt, unless this request's retries or the run's budget are spent."""
        o = self.options
        if request.attempt >= o.retries:
            return False
        budget = o.retry_budget
        if budget is not None and not budget.take():
            return False
        if retry_after is not None:
            delay = min(retry_after, o.retry_after_max)
        else:
            delay = min(o.backoff_max, o.backoff_factor * 2**request.attempt) + random.uniform(0, o.backoff_jitter)
        request.attempt += 1
        log.info("%s: %s; retrying in %.1f s", redact(request.url), what, delay)
        heapq.heappush(timers, (time.monotonic() + delay, next(order), request))
        return True

    def _gave_up(self, url: str, what: str, status: int | None) -> HttpTransientError:
        budget = self.options.retry_budget
        if budget is not None and budget.exhausted:
            return RetryBudgetExhausted(
                f"{redact(url)}: the run's retry budget ({budget.limit} retries) is spent; last: {what}",
                url=url,
                status=status,
            )
        return HttpTransientError(f"{redact(url)}: {what} after {self.options.retries} retries", url=url, status=status)


def _last_headers(lines: list[bytes]) -> CaseInsensitiveDict[str]:
    """The headers of the last response (libcurl passes on those of every redirect and 100-continue too)."""
    start = 0
    for i, line in enumerate(lines):
        if line.startswith(b"HTTP/"):
            start = i + 1
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()
    for line in lines[start:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip()] = value.strip()
    return headers


def _message(message: str) -> str:
    return message[:300]  # libcurl's own words; they name the host, never credentials
