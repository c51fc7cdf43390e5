"""`cscale harvest api`: a STAC API → one new snapshot version, concurrently and incrementally.

1. Landing page and conformance say how items can be read: POST /search, GET /search or
   /collections/{id}/items (harvester.sources_api.Capabilities); /collections is read page by page.
2. Each collection starts as one query over [lower bound, open end), asked newest first where the server sorts.
   When its first page has a next link, the rest is split into time windows (as many as numberMatched asks for,
   else as the time span of the first page suggests; a newest-first page is kept and only the time before it is
   split), which a bounded thread pool pages through in parallel under a per-provider request-rate limit. A
   window whose numberMatched passes the deep-paging cap, or that pages up to a configured cap, is split again.
3. Items go on as raw records into the normal pipeline (harvester.ingest.stage_records: normalise in worker
   processes, stage) and are committed with harvester.commit.commit_stage, together with each collection's new
   watermark (CommitRequest.state) and JSON. Unchanged items write nothing; a rerun with no upstream change
   commits nothing.
4. Failures: 429/5xx/timeouts/resets/cut-off bodies are retried for GET and POST (searches are read-only) by
   harvester.http, honouring Retry-After up to a cap, all drawing on one retry budget per run; a spent budget or a
   request that keeps failing stops the run and commits nothing. A collection whose pages stay broken (not JSON,
   no features, a next-link loop, a next link to another host) is reported, keeps its old watermark, and the run
   exits 1; the other collections are committed.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin

import click
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from harvester.cli import (
    EXIT_CODES,
    MAX_QUARANTINED,
    WORKERS,
    format_option,
    progress_line,
    quarantine_exit,
    report_run,
    run_safely,
    store_option,
)
from harvester.commit import CommitRequest, CommitResult, commit_stage
from harvester.errors import InputError
from harvester.http import (
    HttpClient,
    HttpOptions,
    HttpStatusError,
    HttpTransientError,
    NotFoundError,
    RetryBudget,
    RetryBudgetExhausted,
    redact,
)
from harvester.ingest import IngestOptions, stage_records
from harvester.records import DEFAULT_MAX_ITEM_BYTES
from harvester.sources_api import (
    ACCEPT,
    DATETIME,
    EPOCH,
    SEARCH_METHODS,
    UPDATED,
    Bounds,
    Capabilities,
    Page,
    RateLimiter,
    Request,
    Watermark,
    Window,
    advance,
    bounds,
    capabilities,
    error_description,
    estimate_items,
    extent_of,
    follow,
    item_request,
    origin_of,
    outside,
    parse_duration,
    parse_page,
    parts_for,
    request_limit,
    smaller_limit,
    sort_time,
    sorted_rest,
    split_window,
    updated_is_timestamp,
    window_parts,
    with_limit,
)
from harvester.sources_file import FileSummary, RawRecord
from harvester.staging import Stage
from harvester.store import Store
from harvester.timeutil import DatetimeError, format_datetime, parse_datetime

log = logging.getLogger(__name__)
# Brotli where urllib3 can decode it: stac-fastapi compresses with it for less CPU than with gzip (measured here:
# ~1 % of a 1000-item page's server time against ~4 %), and the server's CPU is what bounds a harvest.
_BROTLI = any(importlib.util.find_spec(m) for m in ("brotli", "brotlicffi"))
HEADERS = {**ACCEPT, "Accept-Encoding": "br, gzip, deflate" if _BROTLI else "gzip, deflate"}


@dataclass(frozen=True, slots=True)
class ApiOptions:
    provider: str
    url: str
    collections: tuple[str, ...] = ()  # empty: every collection the server lists
    since: datetime | None = None  # only items acquired at or after this instant
    full: bool = False  # ignore the watermarks
    search: str = "auto"  # auto | post | get | items
    concurrency: int = 8  # windows paged at once (and the cap on connections)
    rate: float = 0.0  # requests per second for the provider; 0: no limit beyond the concurrency
    limit: int = 1000  # page size asked for (the server may cap it; a 400 about it lowers it)
    windows: int = 0  # windows a large collection is cut into when the server does not count; 0: estimated
    max_window_items: int = 0  # deep-paging cap: a window with more results is split (0: none)
    window_pages: int = 4  # pages a window is cut to hold: fewer mean more parallel windows, more requests
    lag_updated: timedelta = timedelta(hours=1)  # an incremental run re-reads this much before the watermark ...
    lag_datetime: timedelta = timedelta(days=2)  # ... (datetime mode: items published late)
    retry_budget: int = 500  # retries over the whole run (all requests, all threads)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # credentials: never logged or reported
    workers: int = 0  # normalising processes; 0: one per CPU
    max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES
    workdir: Path | None = None
    http: HttpOptions = field(default_factory=HttpOptions)


@dataclass(frozen=True, slots=True)
class ApiResult:
    commit: CommitResult
    report: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        return self.commit.counts

    @property
    def failures(self) -> list[dict[str, str]]:
        return list(self.report.get("failures", []))


def state_key(provider: str, url: str) -> str:
    return f"api:{provider}:{redact(url).rstrip('/')}"


def auth_headers(header_env: Sequence[str], bearer_env: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """Request headers from environment variables named on the command line (`NAME=ENVVAR`, a bearer token's
    variable). Errors name the variable, never its value."""
    headers: dict[str, str] = {}
    for spec in header_env:
        name, sep, var = spec.partition("=")
        if not sep or not name.strip() or not var.strip():
            raise InputError(f"--header-env takes NAME=ENVVAR, got {spec!r}")
        if var.strip() not in environ:
            raise InputError(f"environment variable {var.strip()} (for header {name.strip()}) is not set")
        headers[name.strip()] = environ[var.strip()]
    if bearer_env:
        if bearer_env not in environ:
            raise InputError(f"environment variable {bearer_env} (for --bearer-env) is not set")
        headers["Authorization"] = f"Bearer {environ[bearer_env]}"
    return headers


# --------------------------------------------------------------------------------------------- HTTP edge


class _Stopped(Exception):
    """The run is stopping (another thread failed, or the consumer went away)."""


class RequestRefused(InputError):
    """A 4xx other than 404/429 on an item request, with the server's description."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Api:
    """The HTTP side: one client, one rate limiter, the negotiated page size, request counts."""

    def __init__(self, client: HttpClient, options: ApiOptions, budget: RetryBudget, stop: threading.Event) -> None:
        self.client = client
        self.options = options
        self.budget = budget
        self.stop = stop
        self.limiter = RateLimiter(options.rate, burst=max(1, min(options.concurrency, 4)))
        self.limit = options.limit
        self.requests = 0
        self.refetches = 0
        self.negotiated: list[int] = []
        self._lock = threading.Lock()

    def get_json(self, url: str, what: str) -> tuple[str, Any]:
        self.limiter.acquire()
        try:
            response = self.client.get(url, headers=HEADERS)
        except HttpStatusError as exc:
            raise InputError(f"cannot read the {what} {redact(url)}: {_status_text(exc)}") from None
        self._count()
        final = urljoin(url, response.url)  # http.py's direct GET path reports the path only
        try:
            return final, orjson.loads(response.body)
        except orjson.JSONDecodeError:
            raise InputError(f"the {what} {redact(url)} is not JSON ({error_description(response.body)!r})") from None

    def fetch(self, request: Request, member: str = "features") -> tuple[Request, Page]:
        """Send `request` (POST or GET) and parse the page; a 400/422 about `limit` lowers the page size and
        sends it again."""
        while True:
            if self.stop.is_set():
                raise _Stopped
            self.limiter.acquire()
            try:
                if request.method == "POST":
                    response = self.client.post_json(request.url, request.body, headers=HEADERS)
                else:
                    response = self.client.get(request.url, headers=HEADERS)
            except NotFoundError as exc:
                raise RequestRefused(f"{request.describe()}: {_status_text(exc)}", status=exc.status) from None
            except HttpStatusError as exc:
                current = request_limit(request)
                smaller = smaller_limit(current, error_description(exc.body)) if current else None
                if exc.status in (400, 422) and smaller is not None:
                    with self._lock:
                        self.limit = min(self.limit, smaller)
                        self.negotiated.append(smaller)
                    log.info("%s refused limit=%s; asking for %s", redact(request.url), current, smaller)
                    request = with_limit(request, smaller)
                    continue
                raise RequestRefused(f"{request.describe()}: {_status_text(exc)}", status=exc.status) from None
            self._count()
            where = redact(request.describe())
            return request, parse_page(response.body, response.headers.get("Content-Type"), member=member, where=where)

    def refetch(self) -> None:
        """A bad or repeated page is fetched again: one retry of the run's budget."""
        with self._lock:
            self.refetches += 1
        if not self.budget.take():
            raise RetryBudgetExhausted(
                f"the run's retry budget ({self.budget.limit} retries) is spent (last: a bad page fetched again)",
                url=self.options.url,
            )

    def _count(self) -> None:
        with self._lock:
            self.requests += 1


def _status_text(exc: HttpStatusError) -> str:
    detail = error_description(exc.body) if exc.body else ""
    return f"HTTP {exc.status}" + (f" ({detail})" if detail else "")


def discover(api: _Api, url: str) -> Capabilities:
    """Landing page and conformance classes."""
    final, landing = api.get_json(url, "landing page")
    if not isinstance(landing, dict):
        raise InputError(f"{redact(url)} is not a STAC API landing page")
    conformance = landing.get("conformsTo")
    if not isinstance(conformance, list):
        link = next(
            (x for x in landing.get("links") or [] if isinstance(x, dict) and x.get("rel") == "conformance"), None
        )
        target = urljoin(final if final.endswith("/") else final + "/", link["href"] if link else "conformance")
        if origin_of(target) != origin_of(final):
            target = urljoin(final if final.endswith("/") else final + "/", "conformance")
        try:
            _, doc = api.get_json(target, "conformance document")
            conformance = doc.get("conformsTo") if isinstance(doc, dict) else None
        except InputError as exc:
            log.warning("no conformance classes: %s", exc)
        conformance = conformance if isinstance(conformance, list) else []
    caps = capabilities(landing, conformance, final)
    base = final if final.endswith("/") else final + "/"
    # Links to another origin (a proxy that forgot its public name) are taken relative to the landing page.
    if origin_of(caps.collections_url) != caps.origin:
        caps = replace(caps, collections_url=urljoin(base, "collections"))
    if caps.search_url and origin_of(caps.search_url) != caps.origin:
        caps = replace(caps, search_url=urljoin(base, "search"))
    if caps.filter_post or caps.filter_get:
        links = [x for x in landing.get("links") or [] if isinstance(x, dict) and isinstance(x.get("href"), str)]
        href = next((x["href"] for x in links if str(x.get("rel", "")).endswith("/queryables")), "queryables")
        target = urljoin(base, href)
        target = target if origin_of(target) == caps.origin else base + "queryables"
        try:
            _, queryables = api.get_json(target, "queryables")
            caps = replace(caps, updated_timestamp=updated_is_timestamp(queryables))
        except InputError as exc:
            log.info("no queryables (%s): `updated` compared as a string", exc)
    return caps


def list_collections(api: _Api, caps: Capabilities, wanted: Sequence[str]) -> dict[str, dict[str, Any]]:
    """id → collection JSON: /collections page by page, then any wanted id not listed, read on its own."""
    found: dict[str, dict[str, Any]] = {}
    first = Request("GET", caps.collections_url)
    for _, page, _ in follow(
        first, lambda r: api.fetch(r, "collections"), origin=caps.origin, retry=api.refetch, refetches=2
    ):
        for collection in page.members:
            if isinstance(collection, dict) and isinstance(collection.get("id"), str):
                found.setdefault(collection["id"], collection)
    if not wanted:
        return found
    out: dict[str, dict[str, Any]] = {}
    for cid in wanted:
        if cid in found:
            out[cid] = found[cid]
            continue
        url = urljoin(caps.collections_url.rstrip("/") + "/", quote(cid, safe=""))
        try:
            _, doc = api.get_json(url, "collection")
        except InputError:
            raise InputError(f"collection {cid!r} is not offered by {redact(caps.root)}") from None
        if not isinstance(doc, dict) or doc.get("id") != cid:
            raise InputError(f"{redact(url)} is not the collection {cid!r}")
        out[cid] = doc
    return out


# ------------------------------------------------------------------------------------------- scheduling


@dataclass(frozen=True, slots=True)
class _Plan:
    collection: str
    bounds: Bounds  # what this run asks for
    fallback: Bounds  # the same in datetime mode, if the server refuses the `updated` filter
    items_url: str | None
    floor: datetime  # where open window ends are cut
    ceiling: datetime


@dataclass(frozen=True, slots=True)
class _Task:
    plan: _Plan
    window: Window
    depth: int = 0
    skip: frozenset[str] = frozenset()  # ids a split parent already passed on
    fallback: bool = False  # runs the plan's datetime-mode fallback


@dataclass(slots=True)
class _Stats:
    windows: int = 0
    splits: int = 0
    pages: int = 0
    items: int = 0
    discarded_pages: int = 0
    over_cap_windows: int = 0


_DONE = object()


class _Harvest:
    """Windows paged by a bounded thread pool; pages handed to the consumer through a bounded queue."""

    def __init__(self, api: _Api, caps: Capabilities, plans: Sequence[_Plan], options: ApiOptions, method: str) -> None:
        self.api = api
        self.caps = caps
        self.plans = plans
        self.options = options
        self.method = method
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=2 * options.concurrency)
        self.pool = ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="cscale-api")
        self.stop = api.stop
        self.lock = threading.Lock()
        self.pending = 0
        self.fatal: BaseException | None = None
        self.failures: dict[str, InputError] = {}
        self.fallback: set[str] = set()
        self.stats = {plan.collection: _Stats() for plan in plans}

    # -- consumer side --------------------------------------------------------------------------------------
    def records(self) -> Iterator[RawRecord]:
        if not self.plans:
            return
        # The submitting counts as pending work until every first window is in: otherwise a first window that
        # ends (fails) before the next is submitted would bring `pending` to 0 and end the harvest, and the
        # collections not yet submitted would be committed with their watermarks but none of their items.
        with self.lock:
            self.pending += 1
        try:
            for plan in self.plans:
                self._submit(_Task(plan, Window(plan.bounds.lower, None)))
        finally:
            self._settle_one()
        while True:
            if self.fatal is not None:
                raise self.fatal
            try:
                got = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if got is _DONE:
                break
            yield from got
        if self.fatal is not None:
            raise self.fatal

    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)

    # -- worker side ----------------------------------------------------------------------------------------
    def _submit(self, task: _Task) -> None:
        with self.lock:
            self.pending += 1
            self.stats[task.plan.collection].windows += 1
        self.pool.submit(self._run, task)

    def _put(self, item: Any) -> None:
        while True:
            if self.stop.is_set() and item is not _DONE:
                raise _Stopped
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                if item is _DONE and self.stop.is_set():
                    return  # nobody is reading any more

    def _run(self, task: _Task) -> None:
        try:
            if not self.stop.is_set() and task.plan.collection not in self.failures:
                self._window(task)
        except _Stopped:
            pass
        except HttpTransientError as exc:  # retries or the run's budget spent: the run fails
            self._fail_run(exc)
        except InputError as exc:  # this collection's pages stay broken: report it, go on with the others
            with self.lock:
                self.failures.setdefault(task.plan.collection, exc)
            log.info("collection %s failed: %s", task.plan.collection, exc)
        except BaseException as exc:
            self._fail_run(exc)
        finally:
            self._settle_one()

    def _settle_one(self) -> None:
        """One piece of pending work is over; the last one ends the harvest."""
        with self.lock:
            self.pending -= 1
            done = self.pending == 0
        if done:
            self._put(_DONE)

    def _fail_run(self, exc: BaseException) -> None:
        with self.lock:
            if self.fatal is None:
                self.fatal = exc
        self.stop.set()

    def _bounds(self, task: _Task) -> Bounds:
        return task.plan.fallback if task.fallback else task.plan.bounds

    def _window(self, task: _Task) -> None:
        plan, window = task.plan, task.window
        if task.plan.bounds.mode == UPDATED and not task.fallback and plan.collection in self.fallback:
            return  # the fallback's windows replace this one
        asked = self._bounds(task)
        method = self.method
        updated_after = asked.updated_after if self.caps.can_filter(method) else None
        if asked.updated_after is not None and updated_after is None:
            self._fall_back(task, "the item endpoint in use cannot filter")
            return
        # A query's first page, asked newest first, tells what is left to split (see sorted_rest).
        newest_first = task.depth == 0 and self.caps.can_sort(method)
        first = item_request(
            self.caps,
            method,
            plan.collection,
            limit=self.api.limit,
            window=window,
            updated_after=updated_after,
            items_url=plan.items_url,
            newest_first=newest_first,
        )
        bounded = window.start is not None or window.end is not None

        def check(page: Page) -> str | None:
            bad = sum(1 for f in page.members if outside(window, f)) if bounded else 0
            if bad:
                return (
                    f"{bad} of {len(page.members)} items lie outside the window {window} (a page of another "
                    "query, or a server that ignores `datetime`)"
                )
            return None

        stats = self.stats[plan.collection]
        cap = self.options.max_window_items
        passed: set[str] | None = set(task.skip) if cap else None
        count = 0
        over = False  # past the cap in a window too narrow to split
        pages = follow(first, self.api.fetch, origin=self.caps.origin, retry=self.api.refetch, check=check)
        try:
            for index, (sent, page, nxt) in enumerate(pages):
                with self.lock:
                    stats.pages += 1
                if index == 0 and nxt is not None and self._split_first(task, sent, page, newest_first):
                    return
                count += len(page.members)
                self._emit(plan.collection, sent, page.members, task.skip, passed)
                page.members.clear()  # passed on as bytes: the parsed page need not live through the next request
                if cap and count >= cap and nxt is not None and page.matched is None and not over:
                    halves = split_window(window, 2, floor=plan.floor, ceiling=plan.ceiling)
                    if halves is None:  # one instant holds more than the cap: page on and hope
                        over = True
                        with self.lock:
                            stats.over_cap_windows += 1
                        continue
                    with self.lock:
                        stats.splits += 1
                    for half in halves:
                        self._submit(replace(task, window=half, depth=task.depth + 1, skip=frozenset(passed or ())))
                    return
        except RequestRefused as exc:
            if exc.status == 405 and method == "post":
                self._switch_method(task)
                return
            if exc.status in (400, 422) and updated_after is not None:
                self._fall_back(task, str(exc))
                return
            raise

    def _split_first(self, task: _Task, sent: Request, page: Page, newest_first: bool) -> bool:
        """After a window's first page (it has a next one): cut the window into parallel windows? True when
        done so (the page is passed on when it was newest-first, else dropped: the windows read it again)."""
        plan, stats = task.plan, self.stats[task.plan.collection]
        per_window = self.options.window_pages * max(len(page.members), 1)  # the server may cap the page size
        cap = self.options.max_window_items
        per_window = min(per_window, cap) if cap else per_window
        most = 4 * self.options.concurrency
        rest = sorted_rest(task.window, page) if newest_first else None
        if rest is not None:
            left, ties = rest
            if page.matched is not None:
                estimate: float | None = page.matched - len(page.members)
            else:
                times = [t for t in map(sort_time, page.members) if t is not None]
                estimate = estimate_items(left, times, floor=plan.floor, ceiling=plan.ceiling)
            parts = self.options.windows or parts_for(estimate, per_window=per_window, most=most)
            windows = split_window(left, parts, floor=plan.floor, ceiling=plan.ceiling) if parts > 1 else None
            if not windows and cap and page.matched is not None and page.matched > cap:
                windows = [left]  # paging on would pass the deep-paging cap; what is left is within it
            if not windows:
                return False  # small: page on
            self._emit(plan.collection, sent, page.members, task.skip, None)
            page.members.clear()
            skip = task.skip | ties
        else:
            parts = (self.options.windows if page.matched is None and task.depth == 0 else 0) or window_parts(
                task.window,
                page,
                floor=plan.floor,
                ceiling=plan.ceiling,
                per_window=per_window,
                most=most,
                first=task.depth == 0,
            )
            windows = split_window(task.window, parts, floor=plan.floor, ceiling=plan.ceiling) if parts > 1 else None
            if not windows:
                return False
            skip = task.skip
            with self.lock:
                stats.discarded_pages += 1
        with self.lock:
            stats.splits += 1
        for part in windows:
            self._submit(replace(task, window=part, depth=task.depth + 1, skip=skip))
        return True

    def _switch_method(self, task: _Task) -> None:
        with self.lock:
            if self.method == "post":
                self.method = "get" if self.caps.search_get else "items"
                log.warning("POST /search refused (405): using %s", self.method)
        self._submit(task)

    def _fall_back(self, task: _Task, why: str) -> None:
        """The server refuses the CQL2 `updated` filter: this collection goes incremental on datetime."""
        with self.lock:
            first = task.plan.collection not in self.fallback
            self.fallback.add(task.plan.collection)
        if first:
            log.warning("collection %s: filtering on `updated` failed (%s); using datetime", task.plan.collection, why)
            self._submit(_Task(task.plan, Window(task.plan.fallback.lower, None), fallback=True))

    def _emit(
        self, collection: str, sent: Request, features: list[Any], skip: frozenset[str], passed: set[str] | None
    ) -> None:
        out: list[RawRecord] = []
        base = self.caps.collections_url.rstrip("/") + "/"
        for i, feature in enumerate(features):
            fid = feature.get("id") if isinstance(feature, dict) else None
            if isinstance(fid, str) and fid:
                if fid in skip:
                    continue
                if passed is not None:
                    passed.add(fid)
            if isinstance(feature, dict) and "collection" not in feature:
                feature["collection"] = collection  # fetched from this collection: say so, as STAC 1.0 items do
            if isinstance(fid, str) and fid:
                owner = feature.get("collection") if isinstance(feature.get("collection"), str) else collection
                href = f"{base}{quote(owner, safe='')}/items/{quote(fid, safe='')}"
            else:
                href = f"{redact(sent.url)}#/features/{i}"
            raw = orjson.dumps(feature)
            out.append(RawRecord(href, raw, None, len(raw)))
        with self.lock:
            self.stats[collection].items += len(out)
        if out:
            self._put(out)


# ------------------------------------------------------------------------------------------------ driver


def _watermarks(stage: Stage, collections: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per collection: items staged, how many lack `updated`, the newest `updated` and acquisition time."""
    meta = stage.meta()
    if meta.num_rows == 0:
        return {}
    meta = meta.filter(pc.is_in(meta.column("collection"), pa.array(list(collections), pa.string())))
    grouped = meta.group_by("collection").aggregate(
        [
            ("id", "count"),
            ("updated", "count", pc.CountOptions(mode="only_null")),
            ("updated", "max"),
            ("sort_ts", "max"),
        ]
    )
    out = {}
    for row in grouped.to_pylist():
        out[row["collection"]] = {
            "seen": row["id_count"],
            "missing_updated": row["updated_count"],
            "max_updated": _from_micros(row["updated_max"]),
            "max_datetime": _from_micros(row["sort_ts_max"]),
        }
    return out


def _from_micros(value: int | None) -> datetime | None:
    return None if value is None else EPOCH + timedelta(microseconds=value)


def _plan(
    collection: str,
    doc: dict[str, Any],
    previous: Watermark | None,
    *,
    caps: Capabilities,
    method: str,
    options: ApiOptions,
    now: datetime,
) -> _Plan:
    def ask(mark: Watermark | None, can_filter: bool, full: bool) -> Bounds:
        lags = {"lag_updated": options.lag_updated, "lag_datetime": options.lag_datetime}
        return bounds(mark, can_filter=can_filter, since=options.since, full=full, **lags)

    asked = ask(previous, caps.can_filter(method), options.full)
    fallback = asked
    if asked.mode == UPDATED and previous is not None:
        fallback = ask(replace(previous, mode=DATETIME), False, False)
    start, end = extent_of(doc)
    items = next(
        (
            urljoin(caps.root, x["href"])
            for x in doc.get("links") or []
            if isinstance(x, dict) and x.get("rel") == "items" and isinstance(x.get("href"), str)
        ),
        None,
    )
    if items is not None and origin_of(items) != caps.origin:
        items = None
    return _Plan(
        collection=collection,
        bounds=asked,
        fallback=fallback,
        items_url=items,
        floor=start or EPOCH,
        ceiling=end if end is not None and (start is None or end > start) else now,
    )


def harvest_api(store: Store, options: ApiOptions, *, progress: Callable[[int], None] | None = None) -> ApiResult:
    """Harvest one provider's STAC API into one new snapshot version (or none when nothing changed)."""
    started = datetime.now(UTC)
    clock = time.monotonic()
    store.storage.check_writable()
    base = store.head()
    key = state_key(options.provider, options.url)
    previous_state = base.state.get(key) if base else None
    previous_marks: dict[str, Any] = {}
    if isinstance(previous_state, dict) and isinstance(previous_state.get("collections"), dict):
        previous_marks = previous_state["collections"]
    budget = RetryBudget(options.retry_budget)
    http = replace(
        options.http,
        retry_post=True,  # STAC searches are read-only
        retry_budget=budget,
        max_connections=max(options.concurrency, 1),
    )
    stop = threading.Event()
    with HttpClient(http, headers=dict(options.headers)) as client:
        api = _Api(client, options, budget, stop)
        caps = discover(api, options.url)
        method = caps.method(options.search)
        docs = list_collections(api, caps, options.collections)
        plans = [
            _plan(
                cid,
                doc,
                Watermark.from_json(previous_marks.get(cid)),
                caps=caps,
                method=method,
                options=options,
                now=started,
            )
            for cid, doc in docs.items()
        ]
        harvest = _Harvest(api, caps, plans, options, method)
        stage = Stage(options.workdir)
        try:
            ingest_options = IngestOptions(
                provider=options.provider,
                workers=options.workers,
                max_item_bytes=options.max_item_bytes,
                workdir=options.workdir,
            )
            try:
                stage_records(stage, harvest.records(), ingest_options, FileSummary(), progress=progress)
            finally:
                harvest.close()
            if harvest.fatal is not None:
                raise harvest.fatal
            fetched = time.monotonic() - clock
            seen = _watermarks(stage, [p.collection for p in plans])
            marks = dict(previous_marks)
            report_collections: dict[str, Any] = {}
            can_filter = caps.can_filter(harvest.method)
            for plan in plans:
                cid = plan.collection
                asked = plan.fallback if cid in harvest.fallback else plan.bounds
                s = harvest.stats[cid]
                report_collections[cid] = {
                    "mode": asked.mode,
                    "lower": format_datetime(asked.lower) if asked.lower else None,
                    "updated_after": format_datetime(asked.updated_after) if asked.updated_after else None,
                    "windows": s.windows,
                    "splits": s.splits,
                    "pages": s.pages,
                    "items": s.items,
                    "discarded_pages": s.discarded_pages,
                    "over_cap_windows": s.over_cap_windows,
                }
                if cid in harvest.failures:
                    continue  # its watermark stays: the next run reads it again
                got = seen.get(cid, {})
                previous = Watermark.from_json(previous_marks.get(cid))
                marks[cid] = advance(
                    previous,
                    asked=asked,
                    can_filter=can_filter and cid not in harvest.fallback,
                    seen=int(got.get("seen", 0)),
                    missing_updated=int(got.get("missing_updated", 0)),
                    max_updated=got.get("max_updated"),
                    max_datetime=got.get("max_datetime"),
                    started=started,
                ).to_json()
            failures = [
                {"collection": cid, "reason": getattr(exc, "kind", "request_refused"), "message": str(exc)}
                for cid, exc in sorted(harvest.failures.items())
            ]
            report: dict[str, Any] = {
                "kind": "api",
                "provider": options.provider,
                "url": redact(options.url),
                "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "method": harvest.method,
                "page_size": api.limit,
                "page_size_negotiated": api.negotiated,
                "requests": api.requests,
                "retries": budget.used,
                "retry_budget": budget.limit,
                "pages_refetched": api.refetches,
                "fetch_seconds": round(fetched, 3),
                "collections": report_collections,
                "failures": failures,
                "auth_headers": sorted(options.headers),  # names only
            }
            state = {key: {"url": redact(options.url), "collections": marks}}
            commit = commit_stage(
                store,
                stage,
                CommitRequest(
                    state=state,
                    collections={f"{options.provider}|{cid}": doc for cid, doc in docs.items()},
                    report=report,
                ),
            )
            log.info("api harvest of %s for %s: %s", redact(options.url), options.provider, commit.counts)
            return ApiResult(commit, report)
        finally:
            stage.close()


# ----------------------------------------------------------------------------------------------- command


def _when(value: str) -> datetime:
    try:
        return parse_datetime(value)
    except DatetimeError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("api", epilog=EXIT_CODES)
@click.argument("url")
@click.option("--provider", required=True, help="Provider name, e.g. EODC (a column of every row).")
@store_option
@click.option(
    "--collections",
    multiple=True,
    metavar="ID[,ID...]",
    help="Only these collections (repeatable or comma-separated; default: every collection the server lists).",
)
@click.option("--since", metavar="DATE", help="Only items acquired (datetime) at or after DATE.")
@click.option("--full", is_flag=True, help="Ignore the watermarks: read every item (of --since, if given).")
@click.option(
    "--search",
    type=click.Choice(SEARCH_METHODS),
    default="auto",
    show_default=True,
    help="Item endpoint: POST /search, GET /search or /collections/{id}/items (auto: as the conformance allows).",
)
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True, help="Windows paged at once.")
@click.option(
    "--rate", type=click.FloatRange(0), default=0.0, help="Requests per second for this provider (default: no limit)."
)
@click.option(
    "--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True, help="Items per page asked for."
)
@click.option(
    "--windows",
    type=click.IntRange(0, 10_000),
    default=0,
    help="Time windows a large collection is cut into when the server does not count matches (default: "
    "estimated from the time span of its first page, about 4 pages a window).",
)
@click.option(
    "--max-window-items",
    type=click.IntRange(0),
    default=0,
    help="The server's deep-paging cap (e.g. 10000 for Elasticsearch from/size paging): windows with more results "
    "are split (default: none).",
)
@click.option(
    "--lag",
    metavar="DURATION",
    default=None,
    help="How far before the watermark an incremental run starts reading (e.g. 6h, 2d; default: 1h on `updated`, "
    "2d on datetime).",
)
@click.option("--timeout", type=click.FloatRange(0.1), default=60.0, show_default=True, help="HTTP read timeout (s).")
@click.option("--retries", type=click.IntRange(0, 20), default=5, show_default=True, help="Retries per request.")
@click.option(
    "--retry-budget",
    type=click.IntRange(0),
    default=500,
    show_default=True,
    help="Retries over the whole run; when spent, the run stops and commits nothing.",
)
@click.option(
    "--retry-after-max",
    type=click.FloatRange(0),
    default=120.0,
    show_default=True,
    help="Longest Retry-After honoured (s).",
)
@click.option(
    "--header-env",
    multiple=True,
    metavar="NAME=ENVVAR",
    help="Send header NAME with the value of environment variable ENVVAR (repeatable; never logged).",
)
@click.option("--bearer-env", metavar="ENVVAR", help="Send `Authorization: Bearer $ENVVAR` (never logged).")
@WORKERS
@click.option(
    "--max-item-bytes",
    type=click.IntRange(1024),
    default=DEFAULT_MAX_ITEM_BYTES,
    show_default=True,
    help="Items larger than this are quarantined (item_too_large).",
)
@MAX_QUARANTINED
@format_option
@click.pass_obj
def api(
    ctx: Any,
    url: str,
    provider: str,
    store_root: str,
    collections: tuple[str, ...],
    since: str | None,
    full: bool,
    search: str,
    concurrency: int,
    rate: float,
    limit: int,
    windows: int,
    max_window_items: int,
    lag: str | None,
    timeout: float,
    retries: int,
    retry_budget: int,
    retry_after_max: float,
    header_env: tuple[str, ...],
    bearer_env: str | None,
    workers: int,
    max_item_bytes: int,
    max_quarantined: float,
    fmt: str | None,
) -> None:
    """Harvest a STAC API (its landing page URL) for one provider, as one new snapshot version.

    Items are read through POST /search, GET /search or /collections/{id}/items, whichever the server's
    conformance allows, in time windows paged in parallel. A later run reads only what changed since the
    watermark committed with the data (`updated` through a CQL2 filter when the server filters, else
    datetime), and commits nothing when nothing did. Throttling (429 + Retry-After), 5xx, timeouts and cut-off
    bodies are retried within a per-run budget; a collection whose pages stay broken is reported (exit 1).

    \b
    Examples:
      cscale harvest api https://stac.example.org/api/v1 --provider EODC --store ./store
      cscale harvest api https://planetarycomputer.microsoft.com/api/stac/v1 --provider PC \\
          --collections sentinel-2-l2a --since 2024-01-01 --store ./store
      TOKEN=... cscale harvest api https://stac.example.org --provider X --bearer-env TOKEN --store ./store
    """

    def body() -> int:
        if not provider.strip() or "|" in provider:
            raise InputError("--provider must be a non-empty name without '|'")
        try:
            lag_value = parse_duration(lag) if lag else None
        except ValueError as exc:
            raise InputError(f"--lag: {exc}") from None
        options = ApiOptions(
            provider=provider,
            url=url,
            collections=tuple(c.strip() for spec in collections for c in spec.split(",") if c.strip()),
            since=_when(since) if since else None,
            full=full,
            search=search,
            concurrency=concurrency,
            rate=rate,
            limit=limit,
            windows=windows,
            max_window_items=max_window_items,
            lag_updated=lag_value or timedelta(hours=1),
            lag_datetime=lag_value or timedelta(days=2),
            retry_budget=retry_budget,
            headers=auth_headers(header_env, bearer_env, os.environ),
            workers=workers,
            max_item_bytes=max_item_bytes,
            http=HttpOptions(read_timeout=timeout, retries=retries, retry_after_max=retry_after_max),
        )
        with progress_line(ctx, f"harvest api {provider}") as progress:
            result = harvest_api(Store.open(store_root), options, progress=progress)
        version = result.commit.manifest.version if result.commit.manifest else None
        report = result.report
        shown = {
            **result.counts,
            "requests": report["requests"],
            "retries": report["retries"],
            "collections": len(report["collections"]),
            "collections_failed": len(report["failures"]),
        }
        report_run(shown, version, fmt, {"provider": provider, "url": report["url"]})
        code = quarantine_exit(result.counts, max_quarantined)
        for failure in report["failures"]:
            click.echo(f"cscale: collection {failure['collection']} failed: {failure['message']}", err=True)
            code = 1
        return code

    run_safely(ctx, body)
