"""The API harvester's pure logic: capabilities, requests, next links in every style, paging with loop and
repeat detection, windows, watermarks, page-size negotiation, the rate limiter, auth headers."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from harvester.errors import InputError
from harvester.harvest_api import auth_headers, state_key
from harvester.sources_api import (
    DATETIME,
    EPOCH,
    UPDATED,
    Bounds,
    Page,
    PageError,
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
    next_request,
    outside,
    parse_duration,
    parse_page,
    parts_for,
    request_limit,
    smaller_limit,
    sorted_rest,
    split_window,
    updated_filter,
    updated_is_timestamp,
    window_parts,
    with_limit,
)

API = "https://stac.example.org/api/v1"
ORIGIN = "https://stac.example.org:443"


def t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def landing(*links: dict[str, Any], conforms: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "Catalog", "id": "x", "links": list(links), "conformsTo": list(conforms)}


PGSTAC_CLASSES = (
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
)


# ------------------------------------------------------------------------------------------- capabilities


def test_capabilities_of_recorded_landing_pages(corpus: Path) -> None:
    pc = orjson.loads((corpus / "api/pystac-client-data/planetary-computer-root.json").read_bytes())
    caps = capabilities(pc, pc["conformsTo"], "https://planetarycomputer.microsoft.com/api/stac/v1")
    # One search link without a method: PC answers POST, as pystac-client assumes.
    assert caps.search_url == "https://planetarycomputer.microsoft.com/api/stac/v1/search"
    assert caps.method("auto") == "post" and caps.search_get
    assert caps.collections_url == "https://planetarycomputer.microsoft.com/api/stac/v1/collections"
    assert not caps.filter_post and not caps.filter_get  # that recording predates PC's filter classes

    es = orjson.loads((corpus / "api/cassettes-pystac-client/earth-search.aws.element84.com/v1.json").read_bytes())
    caps = capabilities(es, es["conformsTo"], "https://earth-search.aws.element84.com/v1")
    assert caps.search_post and caps.search_get and caps.method("auto") == "post"
    assert caps.method("get") == "get" and caps.method("items") == "items"


def test_capabilities_filter_and_fallbacks() -> None:
    caps = capabilities(landing(conforms=PGSTAC_CLASSES), PGSTAC_CLASSES, API)
    assert caps.search_url == API + "/search"  # item-search without a link: the conventional path
    assert caps.filter_post and caps.filter_get and caps.can_filter("post")
    bare = capabilities(
        landing({"rel": "data", "href": "/api/v1/collections"}),
        ["https://api.stacspec.org/v1.0.0/ogcapi-features"],
        API,
    )
    assert bare.search_url is None and bare.method("auto") == "items"
    assert bare.collections_url == "https://stac.example.org/api/v1/collections"
    with pytest.raises(InputError, match="no item search"):
        bare.method("post")
    only_get = capabilities(
        landing({"rel": "search", "href": "search", "method": "GET"}),
        ["https://api.stacspec.org/v1.0.0/item-search"],
        API,
    )
    assert only_get.method("auto") == "get" and not only_get.search_post
    with pytest.raises(InputError, match="not a STAC API landing page"):
        capabilities({"type": "FeatureCollection"}, [], API)


def test_item_requests_per_method_and_filter_literals() -> None:
    caps = capabilities(landing(conforms=PGSTAC_CLASSES), PGSTAC_CLASSES, API)
    window = Window(t("2020-01-01T00:00:00Z"), None)
    post = item_request(caps, "post", "S2", limit=500, window=window, updated_after=t("2024-05-01T10:00:00Z"))
    assert post.method == "POST" and post.url == API + "/search"
    assert post.body == {
        "collections": ["S2"],
        "limit": 500,
        "datetime": "2020-01-01T00:00:00Z/..",
        "filter": {"op": ">=", "args": [{"property": "updated"}, "2024-05-01T10:00:00Z"]},
        "filter-lang": "cql2-json",
    }
    get = item_request(caps, "get", "S2", limit=10, window=Window(None, None))
    assert get.body is None and parse_qs(urlsplit(get.url).query) == {"collections": ["S2"], "limit": ["10"]}
    items = item_request(caps, "items", "a b/c", limit=10, window=Window(None, t("2021-01-01T00:00:00Z")))
    assert urlsplit(items.url).path == "/api/v1/collections/a%20b%2Fc/items"
    assert parse_qs(urlsplit(items.url).query)["datetime"] == ["../2021-01-01T00:00:00Z"]
    typed = item_request(
        replace_caps(caps, updated_timestamp=True), "get", "S2", limit=1, window=window, updated_after=EPOCH
    )
    assert parse_qs(urlsplit(typed.url).query)["filter"] == ["updated >= TIMESTAMP('1970-01-01T00:00:00Z')"]
    assert updated_filter(EPOCH, text=False, timestamp=True)["args"][1] == {"timestamp": "1970-01-01T00:00:00Z"}
    assert updated_filter(EPOCH, text=True) == "updated >= '1970-01-01T00:00:00Z'"
    assert updated_is_timestamp({"properties": {"updated": {"type": "string", "format": "date-time"}}})
    assert not updated_is_timestamp({"properties": {"datetime": {"format": "date-time"}}})


def replace_caps(caps: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(caps, **changes)


def test_limit_negotiation_helpers() -> None:
    post = Request("POST", API + "/search", {"collections": ["c"], "limit": 20000})
    assert request_limit(post) == 20000 and with_limit(post, 10000).body == {"collections": ["c"], "limit": 10000}
    get = Request("GET", API + "/search?collections=c&limit=5000&token=next:x")
    smaller = with_limit(get, 1000)
    assert request_limit(smaller) == 1000 and "token=next:x" in smaller.url
    # stac-fastapi (pydantic) and Elasticsearch-style messages
    assert smaller_limit(20000, "limit: Input should be less than or equal to 10000") == 10000
    assert smaller_limit(5000, "Invalid limit: must be between 1 and 1000") == 1000
    assert smaller_limit(64, "limit too large") == 32
    assert smaller_limit(1000, "unknown queryable: updated") is None  # not about the page size
    assert smaller_limit(1, "limit must be positive") is None


def test_error_descriptions() -> None:
    assert error_description(b'{"code": "BadRequest", "description": "bad limit"}') == "BadRequest: bad limit"
    assert error_description(b"<html><head><title>502 Bad Gateway</title></head><body>x</body></html>") == (
        "502 Bad Gateway"
    )
    assert error_description(b"plain   text\n error") == "plain text error"


# ---------------------------------------------------------------------------------------------------- pages


def test_parse_page_variants() -> None:
    page = parse_page(b'{"type": "FeatureCollection", "features": [{"id": "a"}], "numberMatched": 7}', None)
    assert page.members == [{"id": "a"}] and page.matched == 7 and page.links == []
    old = parse_page(b'{"features": [], "links": [{"rel": "next"}], "context": {"matched": 3, "returned": 0}}', None)
    assert old.matched == 3 and old.links == [{"rel": "next"}]
    assert parse_page(b'{"features": [], "numberMatched": true}', None).matched is None
    cols = parse_page(b'{"collections": [{"id": "c"}], "links": []}', None, member="collections")
    assert cols.members == [{"id": "c"}]
    cases = {
        b"<!DOCTYPE html><html><title>Maintenance</title></html>": "html_page",
        b'{"features": [{"id": "a"}': "invalid_json",
        b'{"type": "FeatureCollection"}': "no_features",
        b'{"code": "NotFound", "description": "no such thing"}': "no_features",
        b"[1, 2]": "no_features",
    }
    for body, kind in cases.items():
        with pytest.raises(PageError) as caught:
            parse_page(body, "application/json", where="GET x")
        assert caught.value.kind == kind, body
        assert str(caught.value).startswith("GET x: ")
    with pytest.raises(PageError, match="Maintenance"):
        parse_page(b"<html><title>Maintenance</title></html>", "text/html")
    with pytest.raises(PageError, match="NotFound: no such thing"):
        parse_page(b'{"code": "NotFound", "description": "no such thing"}', None)


# ----------------------------------------------------------------------------------------------- next links

FIRST_POST = Request(
    "POST", API + "/search", {"collections": ["c"], "limit": 10, "datetime": "2020-01-01T00:00:00Z/.."}
)


def test_next_link_styles() -> None:
    first = FIRST_POST
    # Planetary Computer / pgstac: the whole query plus a token
    pc = {"rel": "next", "method": "POST", "href": API + "/search", "body": {**first.body, "token": "next:c:x1"}}  # type: ignore[dict-item]
    nxt = next_request([pc], first, first, origin=ORIGIN)
    assert nxt == Request("POST", API + "/search", {**first.body, "token": "next:c:x1"})  # type: ignore[dict-item]
    # earth-search v1 after a CQL2 query: merge false and a body of only the token; the query stays
    es = {"rel": "next", "method": "POST", "href": API + "/search", "merge": False, "body": {"next": "2021,id,c"}}
    filtered = Request(
        "POST", API + "/search", {"collections": ["c"], "filter": {"op": "="}, "filter-lang": "cql2-json"}
    )
    assert next_request([es], filtered, filtered, origin=ORIGIN) == Request(
        "POST",
        API + "/search",
        {**filtered.body, "next": "2021,id,c"},  # type: ignore[dict-item]
    )
    # merge true lays the body over the *current* request (spec), e.g. an earth-search v0 page counter
    current = Request("POST", API + "/search", {**first.body, "page": 2})  # type: ignore[dict-item]
    v0 = {"rel": "next", "method": "POST", "href": API + "/search", "merge": True, "body": {"page": 3}}
    assert next_request([v0], current, first, origin=ORIGIN).body == {**first.body, "page": 3}  # type: ignore[union-attr, dict-item]
    # GET with a token (PC items), relative href (resolved against the page's URL), no method (GET)
    get_first = Request("GET", API + "/collections/c/items?limit=10&datetime=2020-01-01T00%3A00%3A00Z%2F..")
    rel = {"rel": "next", "href": "items?limit=10&datetime=2020-01-01T00:00:00Z/..&token=next:c:x2"}
    nxt = next_request([{"rel": "self", "href": "x"}, rel], get_first, get_first, origin=ORIGIN)
    assert nxt is not None and nxt.method == "GET" and nxt.body is None
    assert nxt.url == API + "/collections/c/items?limit=10&datetime=2020-01-01T00:00:00Z/..&token=next:c:x2"
    # rustac: skip in the href; a server that forgets the window's datetime gets it back
    forgetful = {"rel": "next", "href": API + "/collections/c/items?limit=10&skip=10"}
    nxt = next_request([forgetful], get_first, get_first, origin=ORIGIN)
    assert nxt is not None
    assert parse_qs(urlsplit(nxt.url).query) == {
        "limit": ["10"],
        "skip": ["10"],
        "datetime": ["2020-01-01T00:00:00Z/.."],
    }
    # the last page
    assert next_request([{"rel": "prev", "href": "x"}], first, first, origin=ORIGIN) is None


def test_next_link_errors() -> None:
    first = FIRST_POST
    with pytest.raises(PageError) as foreign:
        next_request([{"rel": "next", "href": "https://evil.example.com/search"}], first, first, origin=ORIGIN)
    assert foreign.value.kind == "foreign_next_link" and "evil.example.com" in str(foreign.value)
    with pytest.raises(PageError, match="another host"):  # another scheme is another origin
        next_request([{"rel": "next", "href": "http://stac.example.org/api/v1/search"}], first, first, origin=ORIGIN)
    with pytest.raises(PageError) as bad:
        next_request([{"rel": "next"}], first, first, origin=ORIGIN)
    assert bad.value.kind == "invalid_next_link"
    with pytest.raises(PageError, match="method DELETE"):
        next_request([{"rel": "next", "href": "/x", "method": "DELETE"}], first, first, origin=ORIGIN)


class Script:
    """A fake `fetch`: answers from a list of pages (one per call), remembering what was asked."""

    def __init__(self, *answers: Page | PageError) -> None:
        self.answers = list(answers)
        self.asked: list[Request] = []

    def __call__(self, request: Request) -> tuple[Request, Page]:
        self.asked.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, PageError):
            raise answer
        return request, answer


def page(ids: list[str], token: str | None) -> Page:
    links = [{"rel": "next", "href": f"{API}/items?token={token}"}] if token else []
    return Page([{"id": i} for i in ids], links, None)


def run_follow(script: Script, retries: list[int] | None = None, **kw: Any) -> list[list[str]]:
    spent = retries if retries is not None else []
    first = Request("GET", API + "/items")
    out = []
    for _, got, _ in follow(first, script, origin=ORIGIN, retry=lambda: spent.append(1), **kw):
        out.append([f["id"] for f in got.members])
    return out


def test_follow_pages_and_recovers_from_a_repeated_page() -> None:
    # page 2 is first answered with page 1 again (a cache ignoring the token): fetched again, nothing duplicated
    script = Script(page(["a"], "t1"), page(["a"], "t1"), page(["b"], "t2"), page(["c"], None))
    spent: list[int] = []
    assert run_follow(script, spent) == [["a"], ["b"], ["c"]]
    assert len(spent) == 1 and [r.url for r in script.asked][1:3] == [API + "/items?token=t1"] * 2


def test_follow_recovers_from_a_garbage_page_then_gives_up() -> None:
    garbage = PageError("invalid_json", "x: not JSON")
    assert run_follow(Script(page(["a"], "t1"), garbage, page(["b"], None))) == [["a"], ["b"]]
    with pytest.raises(PageError) as caught:
        run_follow(Script(page(["a"], "t1"), garbage, garbage, garbage))
    assert caught.value.kind == "invalid_json"


def test_follow_detects_a_next_link_loop() -> None:
    looping = [page(["a"], "t1"), page(["b"], "t2"), page(["c"], "t1")] + [page(["c"], "t1")] * 2
    with pytest.raises(PageError) as caught:
        run_follow(Script(*looping))
    assert caught.value.kind == "next_link_loop" and "same token twice" in str(caught.value)
    with pytest.raises(PageError, match="same token twice"):  # a page whose next link is itself
        run_follow(Script(*[Page([], [{"rel": "next", "href": API + "/items"}], None)] * 3))


def test_follow_check_and_empty_pages() -> None:
    seen: list[int] = []

    def check(p: Page) -> str | None:
        seen.append(1)
        return "wrong window" if len(seen) == 1 else None

    assert run_follow(Script(page(["x"], None), page(["a"], None)), check=check) == [["a"]]
    empties = [Page([], [{"rel": "next", "href": f"{API}/items?token={i}"}], None) for i in range(20)]
    with pytest.raises(PageError) as caught:
        run_follow(Script(*empties))
    assert caught.value.kind == "empty_pages"


def test_foreign_next_link_is_not_fetched_again() -> None:
    script = Script(Page([{"id": "a"}], [{"rel": "next", "href": "https://other.example.net/items"}], None))
    with pytest.raises(PageError, match="another host"):
        run_follow(script)
    assert len(script.asked) == 1


# ------------------------------------------------------------------------------------------------- windows


def test_split_window_evenly_with_open_ends() -> None:
    top = Window(None, None)
    parts = split_window(top, 4, floor=t("2020-01-01T00:00:00Z"), ceiling=t("2024-01-01T00:00:00Z"))
    assert parts is not None and len(parts) == 4
    assert parts[0].start is None and parts[-1].end is None  # items outside a stale extent are still found
    assert [p.interval() for p in parts] == [
        "../2020-12-31T06:00:00Z",  # 1461 days / 4
        "2020-12-31T06:00:00Z/2021-12-31T12:00:00Z",
        "2021-12-31T12:00:00Z/2022-12-31T18:00:00Z",
        "2022-12-31T18:00:00Z/..",
    ]
    for left, right in itertools.pairwise(parts):
        assert left.end == right.start  # closed intervals sharing their boundary: nothing falls between
    closed = Window(t("2021-01-01T00:00:00Z"), t("2021-01-01T00:00:01Z"))
    assert split_window(closed, 2, floor=EPOCH, ceiling=EPOCH) is None  # too narrow
    halves = split_window(Window(t("2021-01-01T00:00:00Z"), t("2021-01-01T00:00:03Z")), 8, floor=EPOCH, ceiling=EPOCH)
    assert halves is not None and len(halves) == 3  # no narrower than a second
    # an open start before the extent: cut over a span of the extent's size
    early = split_window(
        Window(None, t("2010-01-01T00:00:00Z")), 2, floor=t("2015-01-01T00:00:00Z"), ceiling=t("2016-01-01T00:00:00Z")
    )
    assert early is not None and early[0].start is None and early[0].end == t("2009-07-02T12:00:00Z")


def test_window_parts_from_counts_or_the_first_page_span() -> None:
    def dated(*days: int) -> Page:
        return Page([{"properties": {"datetime": f"2024-01-{d:02d}T00:00:00Z"}} for d in days], [], None)

    top = Window(None, None)
    kw: dict[str, Any] = {"floor": t("2023-01-01T00:00:00Z"), "ceiling": t("2024-01-11T00:00:00Z"), "most": 32}
    # numberMatched: exact
    counted = Page([{}] * 10, [], 1000)
    assert window_parts(top, counted, per_window=40, first=False, **kw) == 25
    assert window_parts(top, Page([{}] * 10, [], 40), per_window=40, first=True, **kw) == 0
    assert window_parts(top, Page([{}] * 10, [], 10**6), per_window=40, first=True, **kw) == 32
    # no count: 10 items over 9 of the window's 375 days (a server sorting by datetime) → about 417 items
    assert window_parts(top, dated(*range(1, 11)), per_window=40, first=True, **kw) == 11
    assert window_parts(top, dated(*range(1, 11)), per_window=40, first=False, **kw) == 0  # only the first split
    assert window_parts(top, dated(5, 5, 5), per_window=40, first=True, **kw) == 32  # one instant: as many as allowed
    # a page spread over the whole window (no datetime order): small, so paged on as one
    spread = Page([{"properties": {"datetime": d}} for d in ("2023-01-01T00:00:00Z", "2024-01-11T00:00:00Z")], [], None)
    assert window_parts(top, spread, per_window=40, first=True, **kw) == 1


def test_sorted_first_page_leaves_the_rest_of_the_window() -> None:
    def newest_first(*stamps: str, ids: str = "abcdefgh") -> Page:
        return Page([{"id": i, "properties": {"datetime": s}} for i, s in zip(ids, stamps, strict=False)], [], None)

    window = Window(t("2020-01-01T00:00:00Z"), None)
    page = newest_first("2024-05-03T00:00:00Z", "2024-05-02T00:00:00Z", "2024-05-01T00:00:00Z", "2024-05-01T00:00:00Z")
    rest = sorted_rest(window, page)
    assert rest == (Window(t("2020-01-01T00:00:00Z"), t("2024-05-01T00:00:00Z")), frozenset({"c", "d"}))
    assert sorted_rest(window, newest_first("2024-05-01T00:00:00Z", "2024-05-02T00:00:00Z")) is None  # not in order
    assert sorted_rest(window, newest_first("2019-05-01T00:00:00Z")) is None  # nothing datable left
    undated = Page([{"id": "x", "properties": {"datetime": None}}], [], None)
    assert sorted_rest(window, undated) is None
    ranged = Page([{"id": "r", "properties": {"datetime": None, "start_datetime": "2021-01-01T00:00:00Z"}}], [], None)
    assert sorted_rest(window, ranged) == (Window(window.start, t("2021-01-01T00:00:00Z")), frozenset({"r"}))
    # 4 items over 2 days, 1582 days left: ~3164 items
    left = rest[0] if rest else window
    times = [t("2024-05-03T00:00:00Z"), t("2024-05-01T00:00:00Z"), t("2024-05-01T00:00:00Z"), t("2024-05-02T00:00:00Z")]
    estimate = estimate_items(left, times, floor=EPOCH, ceiling=EPOCH)
    assert estimate is not None and round(estimate) == 4 * 1582 // 2
    assert parts_for(estimate, per_window=1000, most=32) == 4 and parts_for(None, per_window=1000, most=32) == 32
    assert estimate_items(left, times[1:3], floor=EPOCH, ceiling=EPOCH) is None  # one instant tells nothing


def test_items_outside_a_window() -> None:
    window = Window(t("2021-01-01T00:00:00Z"), t("2021-02-01T00:00:00Z"))

    def item(**props: Any) -> dict[str, Any]:
        return {"properties": props}

    assert not outside(window, item(datetime="2021-01-15T00:00:00Z"))
    assert not outside(window, item(datetime="2021-02-01T00:00:00.5Z"))  # within the slack
    assert outside(window, item(datetime="2021-03-01T00:00:00Z"))
    assert outside(window, item(datetime="2020-12-01T00:00:00+01:00"))
    # a range overlapping the window is inside, even when its nominal datetime is not
    assert not outside(
        window, item(datetime=None, start_datetime="2020-12-01T00:00:00Z", end_datetime="2021-01-02T00:00:00Z")
    )
    assert not outside(window, item(datetime="2020-12-15T00:00:00Z", end_datetime="2021-01-02T00:00:00Z"))
    assert not outside(window, item(datetime="not a date"))  # cannot tell: not flagged
    assert not outside(Window(None, None), item(datetime="1900-01-01T00:00:00Z"))


# ---------------------------------------------------------------------------------------------- watermarks

LAGS = {"lag_updated": timedelta(hours=1), "lag_datetime": timedelta(days=2)}
STARTED = t("2025-06-01T00:00:00Z")


def test_bounds_per_mode() -> None:
    assert bounds(None, can_filter=True, since=None, full=False, **LAGS) == Bounds("full", None, None)
    since = t("2024-01-01T00:00:00Z")
    mark = Watermark(UPDATED, updated=t("2025-05-01T12:00:00Z"), datetime=t("2025-04-30T00:00:00Z"))
    assert bounds(mark, can_filter=True, since=since, full=False, **LAGS) == Bounds(
        UPDATED, since, t("2025-05-01T11:00:00Z")
    )
    # the server stopped filtering: datetime with its lag
    assert bounds(mark, can_filter=False, since=None, full=False, **LAGS) == Bounds(
        DATETIME, t("2025-04-28T00:00:00Z"), None
    )
    assert bounds(mark, can_filter=True, since=None, full=True, **LAGS) == Bounds("full", None, None)
    # --since later than the datetime watermark wins
    later = t("2025-05-01T00:00:00Z")
    dated = Watermark(DATETIME, datetime=t("2025-04-30T00:00:00Z"))
    assert bounds(dated, can_filter=True, since=later, full=False, **LAGS).lower == later
    assert bounds(Watermark(DATETIME), can_filter=True, since=None, full=False, **LAGS).mode == "full"


def test_advance_never_goes_back_nor_past_the_start() -> None:
    full = Bounds("full", None, None)
    first = advance(
        None,
        asked=full,
        can_filter=True,
        seen=10,
        missing_updated=0,
        max_updated=t("2025-05-20T00:00:00Z"),
        max_datetime=t("2030-01-01T00:00:00Z"),  # a forecast dated in the future
        started=STARTED,
    )
    assert first == Watermark(UPDATED, t("2025-05-20T00:00:00Z"), STARTED)
    again = advance(
        first,
        asked=Bounds(UPDATED, None, t("2025-05-19T23:00:00Z")),
        can_filter=True,
        seen=0,
        missing_updated=0,
        max_updated=None,
        max_datetime=None,
        started=STARTED,
    )
    assert again == first  # nothing new: the watermark stays
    one_missing = advance(
        None,
        asked=full,
        can_filter=True,
        seen=10,
        missing_updated=1,
        max_updated=None,
        max_datetime=None,
        started=STARTED,
    )
    assert one_missing.mode == DATETIME  # an item without `updated` would never match the filter
    assert (
        advance(
            None,
            asked=full,
            can_filter=False,
            seen=3,
            missing_updated=0,
            max_updated=None,
            max_datetime=None,
            started=STARTED,
        ).mode
        == DATETIME
    )
    roundtrip = Watermark.from_json(orjson.loads(orjson.dumps(first.to_json())))
    assert roundtrip == first
    assert Watermark.from_json({"mode": "bogus"}) is None and Watermark.from_json(None) is None


def test_extent_and_durations() -> None:
    coll = {"extent": {"temporal": {"interval": [["2015-06-23T00:00:00Z", None]]}}}
    assert extent_of(coll) == (t("2015-06-23T00:00:00Z"), None)
    assert extent_of({"extent": {}}) == (None, None)
    assert extent_of({"extent": {"temporal": {"interval": [["garbage", "2020-01-01"]]}}}) == (
        None,
        t("2020-01-01T00:00:00Z"),
    )
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("6h") == timedelta(hours=6) and parse_duration("2d") == timedelta(days=2)
    assert parse_duration("1.5w") == timedelta(days=10.5)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


# --------------------------------------------------------------------------------------- rate limit, auth


def test_rate_limiter_spaces_requests() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(round(s, 6))
        now[0] += s

    clock: Callable[[], float] = lambda: now[0]  # noqa: E731
    limiter = RateLimiter(4.0, burst=2, clock=clock, sleep=sleep)
    for _ in range(6):
        limiter.acquire()
    assert slept == [0.25, 0.25, 0.25, 0.25]  # two at once (the burst), then one every 1/4 s
    now[0] += 10  # idle: the burst is available again, not ten seconds' worth
    limiter.acquire()
    limiter.acquire()
    limiter.acquire()
    assert slept[4:] == [0.25]
    unlimited = RateLimiter(0, clock=clock, sleep=sleep)
    assert unlimited.reserve() == 0.0


def test_auth_headers_come_from_named_environment_variables() -> None:
    env = {"EODC_KEY": "s3cr3t", "TOKEN": "tok"}
    assert auth_headers(["X-Api-Key=EODC_KEY"], "TOKEN", env) == {"X-Api-Key": "s3cr3t", "Authorization": "Bearer tok"}
    with pytest.raises(InputError) as missing:
        auth_headers(["X-Api-Key=NOPE"], None, env)
    assert "NOPE" in str(missing.value) and "s3cr3t" not in str(missing.value)
    with pytest.raises(InputError, match="NAME=ENVVAR"):
        auth_headers(["X-Api-Key"], None, env)
    with pytest.raises(InputError, match="--bearer-env"):
        auth_headers([], "MISSING", env)
    assert state_key("EODC", "https://user:pw@stac.example.org/api/") == "api:EODC:https://stac.example.org/api"
