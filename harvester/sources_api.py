"""STAC API harvesting logic without I/O: what a server can do, the requests for a collection's time windows,
every style of `next` link real servers write, page parsing, window splitting, watermarks, page-size
negotiation and a request-rate limiter. `harvester.harvest_api` does the I/O around it.

Next links seen in the wild (recorded pages under shared/corpus/api):
- GET href carrying a token: Planetary Computer and stac-fastapi-pgstac (`?token=next:...`), rustac (`&skip=50`),
  eoapi collections (`?offset=10`);
- POST with a body: Planetary Computer and pgstac repeat the whole query plus `token`; earth-search v1 sends
  `merge: false` with `next: "<datetime>,<id>,<collection>"` and, after a CQL2 query, a body of *only* that
  token (the filter is gone); earth-search v0 uses `page: 2`; rustac adds `skip`.
So the body of a POST next link is laid over the query that started the chain (`merge: true` lays it over the
current request instead, as the STAC API spec says): the window's collections, datetime and filter are never
lost, whichever style the server uses.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import orjson

from harvester.errors import InputError
from harvester.timeutil import DatetimeError, format_datetime, parse_datetime

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_WINDOW = timedelta(seconds=1)  # narrower windows are not split further
ACCEPT = {"Accept": "application/geo+json, application/json;q=0.9, */*;q=0.1"}
MAX_EMPTY_PAGES = 10  # empty pages in a row that still carry a next link before the chain is called broken
SEARCH_METHODS = ("auto", "post", "get", "items")


class PageError(InputError):
    """A page that is not what the request asked for; `kind` is the report's reason code."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


# --------------------------------------------------------------------------------------------- capabilities


@dataclass(frozen=True, slots=True)
class Capabilities:
    root: str  # the landing page URL as fetched (after redirects)
    origin: str  # scheme://host[:port]: every request of the harvest stays on it
    collections_url: str
    search_url: str | None  # None: no item search, /collections/{id}/items only
    search_get: bool
    search_post: bool
    filter_post: bool  # CQL2 JSON filters on POST /search
    filter_get: bool  # CQL2 text filters on GET /search or /items
    conformance: tuple[str, ...]
    updated_timestamp: bool = False  # the queryables type `updated` as date-time (see updated_filter)
    sort_search: bool = False  # sortby on /search (item-search#sort)
    sort_items: bool = False  # sortby on /collections/{id}/items (ogcapi-features#sort)

    def method(self, wanted: str) -> str:
        """The item endpoint to use: post, get or items ("auto": POST search, else GET search, else items)."""
        if wanted == "auto":
            if self.search_url and self.search_post:
                return "post"
            if self.search_url and self.search_get:
                return "get"
            return "items"
        possible = {"post": bool(self.search_url), "get": bool(self.search_url), "items": True}
        if not possible[wanted]:
            raise InputError(f"{self.root} offers no item search (conformance lacks item-search); use --search items")
        return wanted

    def can_filter(self, method: str) -> bool:
        return self.filter_post if method == "post" else self.filter_get

    def can_sort(self, method: str) -> bool:
        return self.sort_items if method == "items" else self.sort_search


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower(), 0)
    return f"{parts.scheme.lower()}://{host}:{port}"


def capabilities(landing: Any, conformance: Sequence[str], url: str) -> Capabilities:
    """What the server offers, from its landing page and conformance classes."""
    if not isinstance(landing, dict) or not isinstance(landing.get("links"), list):
        raise InputError(f"{url} is not a STAC API landing page (no links)")
    classes = tuple(c for c in conformance if isinstance(c, str))
    base = url if url.endswith("/") else url + "/"

    def has(*suffixes: str) -> bool:
        return any(c.endswith(suffixes) for c in classes)

    item_search = has("/item-search")
    links = [link for link in landing["links"] if isinstance(link, dict) and isinstance(link.get("href"), str)]
    search_links = [link for link in links if link.get("rel") == "search"]
    methods = {str(link.get("method") or "").upper() for link in search_links}
    search_url: str | None = None
    if search_links:
        search_url = urljoin(base, search_links[0]["href"])
    elif item_search:
        search_url = urljoin(base, "search")
    # A search link without a method means GET by the spec, yet Planetary Computer lists one such link and
    # answers POST, like most servers: try POST then (a 405 switches the run to GET).
    search_post = search_url is not None and ("POST" in methods or "" in methods or not methods)
    search_get = search_url is not None and ("GET" in methods or "" in methods or not methods)
    data = [link for link in links if link.get("rel") == "data"]
    collections_url = urljoin(base, data[0]["href"]) if data else urljoin(base, "collections")
    search_filter = any("item-search#filter" in c for c in classes)
    features_filter = has("/conf/features-filter")
    return Capabilities(
        root=url,
        origin=origin_of(url),
        collections_url=collections_url,
        search_url=search_url,
        search_get=search_get,
        search_post=search_post,
        filter_post=search_filter and has("/cql2-json"),
        filter_get=(search_filter or features_filter) and has("/cql2-text"),
        conformance=classes,
        sort_search=any("item-search#sort" in c for c in classes),
        sort_items=any("ogcapi-features#sort" in c for c in classes),
    )


# ----------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Request:
    method: str  # GET | POST
    url: str
    body: Mapping[str, Any] | None = None  # POST JSON; never mutated

    @property
    def key(self) -> bytes:
        """Identity for loop detection: method, URL and the canonical body."""
        return orjson.dumps([self.method, self.url, self.body], option=orjson.OPT_SORT_KEYS)

    def describe(self) -> str:
        if self.body is None:
            return f"{self.method} {self.url}"
        return f"{self.method} {self.url} {orjson.dumps(self.body, option=orjson.OPT_SORT_KEYS).decode()[:300]}"


@dataclass(frozen=True, slots=True)
class Window:
    """A closed datetime interval; None is an open end. Neighbours share their boundary instant, so an item
    exactly on it comes in both (and is deduplicated by id), never in neither."""

    start: datetime | None
    end: datetime | None

    def interval(self) -> str | None:
        if self.start is None and self.end is None:
            return None
        lo = format_datetime(self.start) if self.start else ".."
        hi = format_datetime(self.end) if self.end else ".."
        return f"{lo}/{hi}"

    def __str__(self) -> str:
        return self.interval() or "../.."


def updated_filter(after: datetime, *, text: bool, timestamp: bool = False) -> Any:
    """CQL2 `updated >= after`, as JSON (POST) or text (GET). The literal is a TIMESTAMP only when the server's
    queryables type `updated` as date-time: pgstac keeps an undeclared property as text and answers 500 to a
    text >= timestamp comparison, while a string literal compares correctly there (RFC 3339 UTC strings sort in
    time order) and on Elasticsearch-based servers (which parse it as a date)."""
    stamp = format_datetime(after)
    if text:
        return f"updated >= TIMESTAMP('{stamp}')" if timestamp else f"updated >= '{stamp}'"
    return {"op": ">=", "args": [{"property": "updated"}, {"timestamp": stamp} if timestamp else stamp]}


def updated_is_timestamp(queryables: Any) -> bool:
    """Do the queryables declare `updated` as a date-time?"""
    props = queryables.get("properties") if isinstance(queryables, dict) else None
    updated = props.get("updated") if isinstance(props, dict) else None
    return isinstance(updated, dict) and updated.get("format") == "date-time"


def item_request(
    caps: Capabilities,
    method: str,
    collection: str,
    *,
    limit: int,
    window: Window,
    updated_after: datetime | None = None,
    items_url: str | None = None,
    newest_first: bool = False,
) -> Request:
    """The first request of a window: collection, page size, datetime interval, optional `updated` filter,
    optionally sorted newest first (see sorted_rest)."""
    interval = window.interval()
    if method == "post":
        assert caps.search_url is not None
        body: dict[str, Any] = {"collections": [collection], "limit": limit}
        if interval:
            body["datetime"] = interval
        if updated_after is not None:
            body["filter"] = updated_filter(updated_after, text=False, timestamp=caps.updated_timestamp)
            body["filter-lang"] = "cql2-json"
        if newest_first:
            body["sortby"] = [{"field": "properties.datetime", "direction": "desc"}]
        return Request("POST", caps.search_url, body)
    params: list[tuple[str, str]] = []
    if method == "get":
        assert caps.search_url is not None
        url = caps.search_url
        params.append(("collections", collection))
    else:
        url = items_url or urljoin(caps.collections_url.rstrip("/") + "/", f"{quote(collection, safe='')}/items")
    params.append(("limit", str(limit)))
    if interval:
        params.append(("datetime", interval))
    if updated_after is not None:
        text = updated_filter(updated_after, text=True, timestamp=caps.updated_timestamp)
        params += [("filter", str(text)), ("filter-lang", "cql2-text")]
    if newest_first:
        params.append(("sortby", "-properties.datetime"))
    return Request("GET", _with_params(url, params), None)


def _with_params(url: str, params: Sequence[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params]
    return urlunsplit(parts._replace(query=urlencode(query, safe=":,/.")))


def request_limit(request: Request) -> int | None:
    if request.body is not None:
        value = request.body.get("limit")
        return value if isinstance(value, int) else None
    for key, value in parse_qsl(urlsplit(request.url).query):
        if key == "limit" and value.isdigit():
            return int(value)
    return None


def with_limit(request: Request, limit: int) -> Request:
    """The same request asking for `limit` items per page."""
    if request.body is not None:
        return replace(request, body={**request.body, "limit": limit})
    parts = urlsplit(request.url)
    query = [(k, str(limit) if k == "limit" else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    if not any(k == "limit" for k, _ in query):
        query.append(("limit", str(limit)))
    return replace(request, url=urlunsplit(parts._replace(query=urlencode(query, safe=":,/."))))


_NUMBER = re.compile(r"\d+")


def smaller_limit(current: int, error_text: str) -> int | None:
    """Page-size negotiation: the limit to try after a 400/422 that complains about `limit` ("must be less than
    or equal to 1000", "limit > 10000"...): the largest number in the message below the current limit, else half.
    None when the error is about something else or the limit cannot go lower."""
    if "limit" not in error_text.lower() or current <= 1:
        return None
    below = [int(n) for n in _NUMBER.findall(error_text) if 1 <= int(n) < current]
    return max(below) if below else max(1, current // 2)


# ------------------------------------------------------------------------------------------------- pages


@dataclass(frozen=True, slots=True)
class Page:
    members: list[Any]  # features (or collections)
    links: list[Any]
    matched: int | None  # numberMatched, or context.matched (STAC API 0.9/1.0-beta)


def error_description(body: bytes) -> str:
    """A one-line summary of an error document: a STAC API's {"code", "description"} or the start of the text."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
        title = re.search(r"<title>(.*?)</title>", text, re.I | re.S)
        text = title.group(1) if title else re.sub(r"<[^>]+>", " ", text)
        return " ".join(text.split())[:200]
    if isinstance(doc, dict):
        parts = [str(doc[k]) for k in ("code", "description", "detail", "message", "error") if doc.get(k)]
        if parts:
            return ": ".join(parts)[:300]
    return orjson.dumps(doc).decode()[:200]


def parse_page(body: bytes, content_type: str | None, *, member: str = "features", where: str = "") -> Page:
    """An ItemCollection (or /collections) page, or PageError saying what it is instead."""
    head = body.lstrip()[:1]
    if head == b"<" or (content_type or "").lower().startswith("text/html"):
        raise PageError("html_page", f"{where}: answered an HTML page instead of JSON ({error_description(body)!r})")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise PageError("invalid_json", f"{where}: the page is not valid JSON ({exc}; {len(body):,} bytes)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(member), list):
        what = error_description(body) if isinstance(doc, dict) else type(doc).__name__
        raise PageError(f"no_{member}", f"{where}: the page has no `{member}` list ({what})")
    links = doc.get("links")
    matched = doc.get("numberMatched")
    if matched is None and isinstance(doc.get("context"), dict):
        matched = doc["context"].get("matched")
    return Page(
        members=doc[member],
        links=links if isinstance(links, list) else [],
        matched=matched if isinstance(matched, int) and not isinstance(matched, bool) and matched >= 0 else None,
    )


# -------------------------------------------------------------------------------------------- next links

PAGING_PARAMS = ("token", "next", "skip", "offset", "page", "cursor")


def next_request(links: Sequence[Any], current: Request, first: Request, *, origin: str) -> Request | None:
    """The request for the page after `current`, from its `next` link; None at the last page."""
    link = next((x for x in links if isinstance(x, dict) and x.get("rel") == "next"), None)
    if link is None:
        return None
    href = link.get("href")
    if not isinstance(href, str) or not href.strip():
        raise PageError("invalid_next_link", f"{current.url}: a next link without href: {str(link)[:200]}")
    url = urljoin(current.url, href.strip())
    if origin_of(url) != origin:
        raise PageError(
            "foreign_next_link",
            f"{current.url}: the next link points to another host ({urlsplit(url).netloc}); not followed "
            "(credentials are only sent to the API's own host)",
        )
    method = str(link.get("method") or "GET").upper()
    if method == "POST":
        body = link.get("body")
        extra = body if isinstance(body, dict) else {}
        base = current.body if link.get("merge") is True else first.body
        return Request("POST", url, {**(base or {}), **extra})
    if method != "GET":
        raise PageError("invalid_next_link", f"{current.url}: next link with method {method}")
    return Request("GET", _keep_query(url, first.url), None)


def _keep_query(url: str, first: str) -> str:
    """A GET next link that dropped a parameter of the first request (same path) gets it back: a server that
    forgets `datetime` or `filter` in its next links must not widen the window to the whole collection."""
    parts, start = urlsplit(url), urlsplit(first)
    if parts.path.rstrip("/") != start.path.rstrip("/"):
        return url
    have = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    missing = [(k, v) for k, v in parse_qsl(start.query, keep_blank_values=True) if k not in have]
    missing = [(k, v) for k, v in missing if k not in PAGING_PARAMS]
    if not missing:
        return url
    query = parts.query + ("&" if parts.query else "") + urlencode(missing, safe=":,/.")
    return urlunsplit(parts._replace(query=query))


def follow(
    first: Request,
    fetch: Callable[[Request], tuple[Request, Page]],
    *,
    origin: str,
    retry: Callable[[], None],
    check: Callable[[Page], str | None] | None = None,
    refetches: int = 2,
) -> Iterator[tuple[Request, Page, Request | None]]:
    """(request sent, page, request for the next page or None) of one query, following next links.

    A page that is garbage (PageError from `fetch`), that fails `check`, or whose next link was followed already
    (a repeated page: a cache or load balancer serving an older page) is fetched again up to `refetches` times,
    each one spent through `retry()` (which raises when the run's retry budget is gone); then PageError. So a
    next-link loop ends with a clear error instead of a hang."""
    seen = {first.key}
    request = first
    empty = 0
    while True:
        problem: PageError | None = None
        for attempt in range(refetches + 1):
            if attempt:
                retry()
            broken: PageError | None = None  # a next link not to follow: the chain ends after this page
            try:
                sent, page = fetch(request)
            except PageError as exc:
                problem = exc
                continue
            seen.add(sent.key)  # negotiating the page size may have changed the request
            try:
                nxt = next_request(page.links, sent, first, origin=origin)
            except PageError as exc:
                broken, nxt = exc, None
            if nxt is not None and nxt.key in seen:
                problem = PageError(
                    "next_link_loop",
                    f"{sent.describe()}: its next link repeats a page already followed (same token twice)",
                )
                continue
            message = check(page) if check else None
            if message:
                problem = PageError("page_mismatch", f"{sent.describe()}: {message}")
                continue
            problem = None
            break
        if problem is not None:
            raise problem
        empty = 0 if page.members else empty + 1
        if empty > MAX_EMPTY_PAGES and nxt is not None:
            raise PageError("empty_pages", f"{sent.describe()}: {empty} empty pages in a row, each with a next link")
        yield sent, page, nxt
        if broken is not None:
            raise broken
        if nxt is None:
            return
        seen.add(nxt.key)
        request = nxt


# ---------------------------------------------------------------------------------------------- windows


def split_window(window: Window, parts: int, *, floor: datetime, ceiling: datetime) -> list[Window] | None:
    """`parts` windows covering `window`, cut evenly (at whole seconds); neighbours share their boundary. Open
    ends stay open; for cutting they count as `floor` / `ceiling` (the collection's temporal extent, else 1970
    and now), so items outside a stale extent are still found. None when the window is too narrow to split."""
    start = window.start if window.start is not None else floor
    end = window.end if window.end is not None else ceiling
    if end <= start:  # the known end lies beyond the extent guess: cut over a span of the extent's size
        span = max(ceiling - floor, timedelta(days=1))
        if window.start is None:
            start = end - span
        else:
            end = start + span
    parts = min(parts, int((end - start) / MIN_WINDOW))
    if parts < 2:
        return None
    step = (end - start) / parts
    cuts = [start + step * i for i in range(1, parts)]
    if step > timedelta(seconds=2):
        cuts = [c.replace(microsecond=0) for c in cuts]
    edges: list[datetime | None] = [window.start, *cuts, window.end]
    return [Window(edges[i], edges[i + 1]) for i in range(parts)]


def window_parts(
    window: Window,
    page: Page,
    *,
    floor: datetime,
    ceiling: datetime,
    per_window: int,
    most: int,
    first: bool,
) -> int:
    """How many windows to cut a window into after its first page came with a next link (0 or 1: page it whole),
    so that each holds about `per_window` items. With numberMatched that is exact. Without (only for a query's
    first split), the window's size is estimated from the time span its first page covers: right for servers
    that sort by datetime (pgstac and stac-server do by default), a guess otherwise — it only sets how many
    windows run in parallel, never what is found."""
    if page.matched is not None:
        return parts_for(page.matched, per_window=per_window, most=most) if page.matched > per_window else 0
    if not first:
        return 0
    times = [t for t in map(sort_time, page.members) if t is not None]
    return parts_for(estimate_items(window, times, floor=floor, ceiling=ceiling), per_window=per_window, most=most)


def estimate_items(window: Window, times: Sequence[datetime], *, floor: datetime, ceiling: datetime) -> float | None:
    """Items in `window`, from the times of a run of consecutive items (one page): as many per second as there.
    None when they do not tell (one instant, or nothing)."""
    start = window.start if window.start is not None else floor
    end = window.end if window.end is not None else ceiling
    covered = max(times) - min(times) if len(times) > 1 else timedelta(0)
    if covered <= timedelta(0) or end <= start:
        return None
    return len(times) * ((end - start) / covered)


def parts_for(estimate: float | None, *, per_window: int, most: int) -> int:
    """Windows for about `per_window` items each (an unknown size gets `most`)."""
    if estimate is None:
        return most
    return min(math.ceil(estimate / max(per_window, 1)), most)


def sort_time(feature: Any) -> datetime | None:
    """The instant `sortby: properties.datetime` orders an item by: its datetime, else its start_datetime."""
    props = feature.get("properties") if isinstance(feature, dict) else None
    if not isinstance(props, dict):
        return None
    try:
        value = props.get("datetime")
        return parse_datetime(value if value is not None else props.get("start_datetime"))
    except DatetimeError:
        return None


def sorted_rest(window: Window, page: Page) -> tuple[Window, frozenset[str]] | None:
    """A first page asked newest-first that is in that order holds every item of the window later than its last
    one: what is left is [window start, that instant] (each item's span contains its sort instant, so it
    overlaps what is left), and the ids at that instant are already passed on (ties may straddle pages).
    None when the page is not in that order, or when nothing datable is left to split."""
    times = [sort_time(m) for m in page.members]
    if not times or any(t is None for t in times):
        return None
    ordered = [t for t in times if t is not None]
    if any(a < b for a, b in itertools.pairwise(ordered)):
        return None
    last = ordered[-1]
    if window.start is not None and last <= window.start:
        return None
    ties = frozenset(
        m["id"] for m, t in zip(page.members, ordered, strict=True) if t == last and isinstance(m.get("id"), str)
    )
    return Window(window.start, last), ties


def item_times(feature: Any) -> tuple[datetime, datetime] | None:
    """An item's time span: from the earlier of datetime / start_datetime to the later of datetime /
    end_datetime (servers match a datetime query against either), or None when nothing parses."""
    props = feature.get("properties") if isinstance(feature, dict) else None
    if not isinstance(props, dict):
        return None
    found: dict[str, datetime] = {}
    for key in ("datetime", "start_datetime", "end_datetime"):
        with contextlib.suppress(DatetimeError):
            found[key] = parse_datetime(props.get(key))
    starts = [found[k] for k in ("datetime", "start_datetime") if k in found]
    ends = [found[k] for k in ("datetime", "end_datetime") if k in found]
    if not starts or not ends:
        return None
    return min(starts), max(ends)


def outside(window: Window, feature: Any, slack: timedelta = timedelta(seconds=1)) -> bool:
    """True when the item's time span lies clearly outside the window (the page is not this window's)."""
    span = item_times(feature)
    if span is None:
        return False
    if window.start is not None and span[1] < window.start - slack:
        return True
    return window.end is not None and span[0] > window.end + slack


# ------------------------------------------------------------------------------------------- watermarks

UPDATED, DATETIME = "updated", "datetime"


@dataclass(frozen=True, slots=True)
class Watermark:
    """Per collection, committed in the manifest with the data. `mode` says which field the next run filters
    on: `updated` (CQL2, only when a full pass saw `updated` on every item and the server filters) or
    `datetime` (a window start, with a lag for late arrivals)."""

    mode: str
    updated: datetime | None = None  # newest `updated` seen (never later than the run's start)
    datetime: datetime | None = None  # newest acquisition time seen (idem: forecasts are dated in the future)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "updated": format_datetime(self.updated) if self.updated else None,
            "datetime": format_datetime(self.datetime) if self.datetime else None,
        }

    @classmethod
    def from_json(cls, value: Any) -> Watermark | None:
        if not isinstance(value, dict) or value.get("mode") not in (UPDATED, DATETIME):
            return None
        try:
            return cls(
                mode=value["mode"],
                updated=parse_datetime(value["updated"]) if value.get("updated") else None,
                datetime=parse_datetime(value["datetime"]) if value.get("datetime") else None,
            )
        except DatetimeError:
            return None


@dataclass(frozen=True, slots=True)
class Bounds:
    """What one collection's harvest asks for."""

    mode: str  # "full", UPDATED or DATETIME
    lower: datetime | None  # window start (datetime)
    updated_after: datetime | None  # CQL2 filter


def bounds(
    previous: Watermark | None,
    *,
    can_filter: bool,
    since: datetime | None,
    full: bool,
    lag_updated: timedelta,
    lag_datetime: timedelta,
) -> Bounds:
    """The incremental query: `updated >= watermark - lag` when the server filters and every item carried
    `updated`; else `datetime >= watermark - lag`; a full pass without a watermark (or with --full). `since`
    always bounds the acquisition time too."""
    if full or previous is None:
        return Bounds("full", since, None)
    if previous.mode == UPDATED and can_filter and previous.updated is not None:
        return Bounds(UPDATED, since, previous.updated - lag_updated)
    if previous.datetime is None:
        return Bounds("full", since, None)
    lower = previous.datetime - lag_datetime
    return Bounds(DATETIME, max(lower, since) if since else lower, None)


def advance(
    previous: Watermark | None,
    *,
    asked: Bounds,
    can_filter: bool,
    seen: int,
    missing_updated: int,
    max_updated: datetime | None,
    max_datetime: datetime | None,
    started: datetime,
) -> Watermark:
    """The watermark after a successful harvest of one collection. Never moves back; never passes the run's
    start (a server clock ahead of ours, or items dated in the future, must not skip what arrives next). The
    mode becomes `updated` only after a full pass in which every item had `updated`."""

    def newest(old: datetime | None, new: datetime | None) -> datetime | None:
        new = min(new, started) if new is not None else None
        return max((t for t in (old, new) if t is not None), default=None)

    if asked.mode == "full":
        mode = UPDATED if can_filter and seen > 0 and missing_updated == 0 else DATETIME
    else:
        mode = asked.mode if asked.mode == DATETIME or can_filter else DATETIME
    return Watermark(
        mode=mode,
        updated=newest(previous.updated if previous else None, max_updated),
        datetime=newest(previous.datetime if previous else None, max_datetime),
    )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.I)


def parse_duration(text: str) -> timedelta:
    """`90`, `90s`, `15m`, `6h`, `2d`, `1w`."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (examples: 30m, 6h, 2d)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match[2].lower()]
    return timedelta(seconds=float(match[1]) * unit)


def extent_of(collection: Any) -> tuple[datetime | None, datetime | None]:
    """The first temporal interval of a collection's extent (either end may be open or unparsable: None)."""
    try:
        interval = collection["extent"]["temporal"]["interval"][0]
    except (KeyError, IndexError, TypeError):
        return None, None
    out: list[datetime | None] = []
    for value in interval[:2] if isinstance(interval, list) else []:
        try:
            out.append(parse_datetime(value) if value else None)
        except DatetimeError:
            out.append(None)
    out += [None] * (2 - len(out))
    return out[0], out[1]


# ------------------------------------------------------------------------------------------ rate limiting


class RateLimiter:
    """Requests per second for one provider, over all threads (GCRA: evenly spaced, `burst` may come at once).
    `rate` 0 means no limit."""

    def __init__(
        self,
        rate: float,
        *,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.burst = max(1, burst)
        self._clock = clock
        self._sleep = sleep
        self._tat = 0.0  # theoretical arrival time of the next request
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; the seconds to wait before using it."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            self._tat = tat + self.interval
            return max(0.0, tat - (self.burst - 1) * self.interval - now)

    def acquire(self) -> None:
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)
