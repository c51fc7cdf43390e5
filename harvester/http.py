"""A small shared HTTP client (I/O edge) for every source that reads over HTTP: static catalogs, STAC APIs.

A requests Session whose adapter carries a urllib3 Retry: standard exponential backoff with jitter, Retry-After
honoured up to a cap, retries on 429/5xx, connection errors and timeouts for idempotent methods. On top of it:
connect/read timeouts, a connection pool that blocks at its bound (the cap on connections in flight), bodies
streamed and cut at a size cap, a body that breaks off mid-way read again, and every failure as a typed error.
Headers (they may carry credentials) are never logged; URLs are logged without their userinfo.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

import orjson
import requests
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError, ResponseError
from urllib3.response import BaseHTTPResponse
from urllib3.util import Timeout
from urllib3.util.retry import Retry

from harvester.errors import InputError, TransientError

log = logging.getLogger(__name__)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS"})


def user_agent() -> str:
    try:
        return f"cscale/{version('cscale')}"
    except PackageNotFoundError:
        return "cscale"


class HttpStatusError(InputError):
    """The server answered with a status that retrying will not change (4xx other than 429)."""

    def __init__(self, message: str, *, url: str, status: int, body: bytes = b"") -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.body = body  # the first few KB of the error document (e.g. a STAC API's {"code", "description"})


class NotFoundError(HttpStatusError):
    """404 or 410: the document is not there (a definite answer, unlike a failure)."""


class BodyTooLargeError(InputError):
    """The body is larger than the cap; it was not read beyond the cap."""

    def __init__(self, message: str, *, url: str, size: int | None) -> None:
        super().__init__(message)
        self.url = url
        self.size = size  # from Content-Length, or None when only the cap is known to be exceeded


class HttpTransientError(TransientError):
    """Retries exhausted on a failure that may go away later (429, 5xx, resets, timeouts, truncated bodies)."""

    exit_code = 3

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class RetryBudgetExhausted(HttpTransientError):
    """The run's retry budget (HttpOptions.retry_budget) is spent: the run should stop."""


class RetryBudget:
    """Retries shared by every request of a run, on every thread: against a server that keeps failing, a run
    stops after this many retries in all instead of retrying each of thousands of requests to its own limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.exhausted = False
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Spend one retry; False (and exhausted from then on) when none is left."""
        with self._lock:
            if self.used >= self.limit:
                self.exhausted = True
                return False
            self.used += 1
            return True


class _BudgetedRetry(Retry):
    """urllib3's Retry, spending one retry of the run's budget per retry (redirects are free)."""

    budget: RetryBudget | None = None

    def new(self, **kw: Any) -> Self:
        made = super().new(**kw)
        made.budget = self.budget
        return made

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: BaseHTTPResponse | None = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: TracebackType | None = None,
    ) -> Self:
        # super() raises MaxRetryError once this request's own retries are spent.
        made = super().increment(method, url, response, error, _pool, _stacktrace)
        redirect = error is None and response is not None and bool(response.get_redirect_location())
        if self.budget is not None and not redirect and not self.budget.take():
            # MaxRetryError takes urllib3's own give-up path: the connection is released, the last 429/5xx
            # comes back and becomes an HttpTransientError (then RetryBudgetExhausted, see HttpClient.request).
            raise MaxRetryError(_pool, url or "", ResponseError("the run's retry budget is spent"))
        return made


class _Session(requests.Session):
    """requests follows redirects itself (the direct path leaves them to urllib3's Retry) and strips only
    Authorization when the origin changes; this strips the client's other credential headers too."""

    def __init__(self, credential_headers: frozenset[str]) -> None:
        super().__init__()
        self.credential_headers = credential_headers

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        strip = self.should_strip_auth(response.request.url, prepared_request.url)  # type: ignore[no-untyped-call]
        if self.credential_headers and strip:
            for name in self.credential_headers:
                prepared_request.headers.pop(name, None)


@dataclass(frozen=True, slots=True)
class HttpOptions:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0  # between bytes, not for the whole body
    retries: int = 5
    backoff_factor: float = 0.5  # sleeps 0.5, 1, 2, 4 ... s (+ jitter), at most backoff_max
    backoff_max: float = 30.0
    backoff_jitter: float = 0.5
    retry_after_max: float = 120.0  # a server asking for longer is taken to mean this long
    max_body_bytes: int = 256 << 20
    max_connections: int = 16  # per host; a request waits for a free connection beyond this
    trust_env: bool = True  # proxies and .netrc from the environment, as requests does by default
    retry_post: bool = False  # retry POSTs like GETs: only for read-only POSTs (STAC API searches)
    retry_budget: RetryBudget | None = None  # shared by every request of a run; None: no run-wide limit


@dataclass(frozen=True, slots=True)
class HttpResponse:
    url: str  # after redirects
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes

    @property
    def etag(self) -> str | None:
        return self.headers.get("ETag")

    @property
    def last_modified(self) -> str | None:
        return self.headers.get("Last-Modified")

    def json(self) -> Any:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{redact(self.url)} is not JSON: {exc}") from None


def redact(url: str) -> str:
    """The URL without user:password@ (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not even a URL: cut anything that could be userinfo
        return url.split("://", 1)[0] + "://…" + url.rsplit("@", 1)[-1] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class HttpClient:
    """Thread-safe for concurrent GETs (one Session, one bounded pool per host)."""

    def __init__(
        self,
        options: HttpOptions | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.options = options or HttpOptions()
        # The caller's headers carry credentials (API keys, tokens): on a redirect to another origin they are
        # dropped, as urllib3 and requests already do for Authorization and cookies only.
        self.credential_headers = frozenset(h.lower() for h in headers or ())
        self.session = session or _Session(self.credential_headers)
        self.session.trust_env = self.options.trust_env
        self.session.headers["User-Agent"] = user_agent()
        self.session.headers["Accept-Encoding"] = "gzip, deflate"
        if headers:
            self.session.headers.update(headers)
        self._retry_methods = IDEMPOTENT | {"POST"} if self.options.retry_post else IDEMPOTENT
        retry = _BudgetedRetry(
            total=self.options.retries,
            connect=self.options.retries,
            read=self.options.retries,
            status=self.options.retries,
            other=0,
            redirect=10,
            allowed_methods=self._retry_methods,
            status_forcelist=RETRY_STATUSES,
            backoff_factor=self.options.backoff_factor,
            backoff_max=self.options.backoff_max,
            backoff_jitter=self.options.backoff_jitter,
            retry_after_max=int(self.options.retry_after_max),
            respect_retry_after_header=True,
            raise_on_status=False,  # the last 429/5xx comes back and becomes an HttpTransientError
            remove_headers_on_redirect=Retry.DEFAULT_REMOVE_HEADERS_ON_REDIRECT | self.credential_headers,
        )
        retry.budget = self.options.retry_budget
        size = self.options.max_connections
        adapter = HTTPAdapter(pool_connections=size, pool_maxsize=size, pool_block=True, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self._timeout = Timeout(connect=self.options.connect_timeout, read=self.options.read_timeout)
        self._direct_hosts: dict[str, bool] = {}

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
        ok_statuses: frozenset[int] = frozenset({304}),
    ) -> HttpResponse:
        """GET `url`. 2xx and `ok_statuses` (default: 304 for conditional requests) come back; 404/410 raise
        NotFoundError, other 4xx HttpStatusError, 429/5xx/network failures after retries HttpTransientError, a
        body above `max_bytes` (default: options.max_body_bytes) BodyTooLargeError."""
        return self.request("GET", url, headers=headers, max_bytes=max_bytes, ok_statuses=ok_statuses)

    def post_json(
        self, url: str, body: Any, *, headers: Mapping[str, str] | None = None, max_bytes: int | None = None
    ) -> HttpResponse:
        """POST a JSON body (e.g. a STAC API /search). Not retried (POST is not idempotent in general) unless
        options.retry_post says the client's POSTs are read-only; otherwise a caller that knows the call is safe
        to repeat may retry on HttpTransientError."""
        merged = {"Content-Type": "application/json", **(headers or {})}
        return self.request("POST", url, headers=merged, data=orjson.dumps(body), max_bytes=max_bytes)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        max_bytes: int | None = None,
        ok_statuses: frozenset[int] = frozenset(),
    ) -> HttpResponse:
        cap = self.options.max_body_bytes if max_bytes is None else max_bytes
        attempts = self.options.retries + 1 if method in self._retry_methods else 1
        budget = self.options.retry_budget
        for attempt in range(attempts):
            try:
                return self._once(method, url, headers, data, cap, ok_statuses)
            except HttpTransientError as exc:
                if budget is not None and budget.exhausted and not isinstance(exc, RetryBudgetExhausted):
                    raise RetryBudgetExhausted(
                        f"{redact(url)}: the run's retry budget ({budget.limit} retries) is spent; last: {exc}",
                        url=url,
                        status=exc.status,
                    ) from None
                raise
            except _BrokenBody as exc:
                # urllib3 retries until the headers arrive; a body that breaks off later is ours to retry.
                if attempt + 1 == attempts:
                    raise HttpTransientError(
                        f"{redact(url)}: connection broke off mid-body {attempts} times ({exc})", url=url
                    ) from None
                if budget is not None and not budget.take():
                    raise RetryBudgetExhausted(
                        f"{redact(url)}: the run's retry budget ({budget.limit} retries) is spent; last: body "
                        f"broke off ({exc})",
                        url=url,
                    ) from None
                delay = self._backoff(attempt)
                log.info("%s: body broke off (%s); retrying in %.1f s", redact(url), exc, delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        o = self.options
        return float(min(o.backoff_max, o.backoff_factor * 2**attempt)) + random.uniform(0, o.backoff_jitter)

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        data: bytes | None,
        cap: int,
        ok_statuses: frozenset[int],
    ) -> HttpResponse:
        if method == "GET" and data is None and self._direct(url):
            return self._direct_get(url, headers, cap, ok_statuses)
        timeout = (self.options.connect_timeout, self.options.read_timeout)
        try:
            response = self.session.request(method, url, headers=headers, data=data, stream=True, timeout=timeout)
        except requests.exceptions.RetryError as exc:
            raise HttpTransientError(f"{redact(url)}: gave up after retries ({_reason(exc)})", url=url) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise HttpTransientError(f"{redact(url)}: {_reason(exc)} (after retries)", url=url) from None
        except requests.RequestException as exc:  # invalid URL, too many redirects, ...
            raise InputError(f"cannot fetch {redact(url)}: {_reason(exc)}") from None
        with response:
            try:
                self._check(url, response.status_code, response.reason, ok_statuses)
            except HttpStatusError as exc:
                exc.body = _snippet(response.iter_content(1 << 12))
                raise
            if response.status_code == 304:
                body = b""
            else:
                declared = response.headers.get("Content-Length")
                encoded = "Content-Encoding" in response.headers
                _check_declared(url, declared, encoded, cap)
                body = _read_capped(response.iter_content(1 << 16), url, cap)
            return HttpResponse(response.url, response.status_code, response.headers, body)

    def _direct(self, url: str) -> bool:
        """Plain GETs go straight to the Session adapter's urllib3 pool (same pool bound, same Retry), skipping
        requests' per-request preparation, which costs twice the request itself (about 0.3 ms of CPU per
        document: what a crawl of static catalogs does all day). Only when nothing that needs requests applies:
        no auth, no cookies, no proxy for this host."""
        if self.session.auth is not None or len(self.session.cookies):
            return False
        origin = url.split("/", 3)[:3]
        key = "/".join(origin)
        direct = self._direct_hosts.get(key)
        if direct is None:
            proxies = dict(self.session.proxies)
            if self.session.trust_env:
                try:
                    proxies.update(requests.utils.get_environ_proxies(url, no_proxy=None))
                except ValueError as exc:
                    raise InputError(f"cannot fetch {redact(url)}: {exc}") from None
            direct = not proxies.get(origin[0].rstrip(":")) and not proxies.get("all")
            self._direct_hosts[key] = direct
        return direct

    def _direct_get(
        self, url: str, headers: Mapping[str, str] | None, cap: int, ok_statuses: frozenset[int]
    ) -> HttpResponse:
        adapter = self.session.get_adapter(url)
        assert isinstance(adapter, HTTPAdapter)
        merged = dict(self.session.headers)
        if headers:
            merged.update(headers)
        try:
            response = adapter.poolmanager.urlopen(
                "GET",
                url,
                headers=merged,
                retries=adapter.max_retries,
                redirect=True,
                preload_content=False,
                decode_content=True,
                timeout=self._timeout,
            )
        except MaxRetryError as exc:
            raise HttpTransientError(f"{redact(url)}: {_reason(exc)} (after retries)", url=url) from None
        except (Urllib3Error, ValueError) as exc:
            raise InputError(f"cannot fetch {redact(url)}: {_reason(exc)}") from None
        complete = False
        try:
            try:
                self._check(url, response.status, response.reason or "", ok_statuses)
            except HttpStatusError as exc:
                exc.body = _snippet(response.stream(1 << 12))
                raise
            body = b""
            if response.status != 304:
                declared = response.headers.get("Content-Length")
                _check_declared(url, declared, "Content-Encoding" in response.headers, cap)
                body = _read_capped(response.stream(1 << 16), url, cap)
            complete = True
            final = response.geturl() or url
            return HttpResponse(final, response.status, CaseInsensitiveDict(response.headers), body)
        finally:
            if not complete:
                _discard(response)
            response.release_conn()  # the slot goes back to the (blocking) pool in every case

    def _check(self, url: str, status: int, reason: str, ok_statuses: frozenset[int]) -> None:
        if status in RETRY_STATUSES:
            raise HttpTransientError(
                f"{redact(url)}: HTTP {status} after {self.options.retries} retries", url=url, status=status
            )
        if status in (404, 410):
            raise NotFoundError(f"{redact(url)}: HTTP {status}", url=url, status=status)
        if status >= 400 or (status >= 300 and status not in ok_statuses):
            raise HttpStatusError(f"{redact(url)}: HTTP {status} {reason}".rstrip(), url=url, status=status)


class _BrokenBody(Exception):
    pass


def _check_declared(url: str, declared: str | None, encoded: bool, cap: int) -> None:
    """Refuse a body whose Content-Length alone says it is too large (compressed lengths say nothing)."""
    if declared and declared.isdigit() and int(declared) > cap and not encoded:
        raise BodyTooLargeError(
            f"{redact(url)} is {int(declared):,} bytes, above the {cap:,} byte limit", url=url, size=int(declared)
        )


def _read_capped(chunks: Iterator[bytes], url: str, cap: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise BodyTooLargeError(f"{redact(url)} is above the {cap:,} byte limit", url=url, size=None)
            parts.append(chunk)
    except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError, Urllib3Error) as exc:
        raise _BrokenBody(_reason(exc)) from None
    return b"".join(parts)


def _snippet(chunks: Iterator[bytes], limit: int = 1 << 12) -> bytes:
    """The start of an error document, for the message; a body that cannot be read gives nothing."""
    data = b""
    try:
        for chunk in chunks:
            data += chunk
            if len(data) >= limit:
                break
    except Exception:  # the error is what matters; its document is a courtesy
        pass
    return data[:limit]


def _discard(response: BaseHTTPResponse) -> None:
    """Make a connection whose body was not read reusable (a short error page is read away) or close it."""
    remaining = response.length_remaining
    if remaining is not None and remaining <= 1 << 16:
        try:
            response.drain_conn()
            return
        except Exception:  # the connection broke: closing it is all that is left to do
            pass
    response.close()


def _reason(exc: BaseException) -> str:
    """The innermost useful message, without the request (and never its headers)."""
    inner: BaseException = exc
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]
    text = str(getattr(inner, "reason", None) or inner)
    return text.split(" (Caused by ")[0][:300]
