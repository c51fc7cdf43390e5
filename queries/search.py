"""Federated search over one snapshot version, offline: STAC API item-search semantics on DuckDB.

    result = queries.search("/data/cscale", bbox=[5, 45, 16, 48], datetime="2021-06-01/2021-06-30",
                            collections=["sentinel-2-l2a"], filter="eo:cloud_cover < 20", limit=50)
    result.items          # STAC items (dicts), restored exactly as harvester.parts.batch_to_items does
    result.table          # the same rows as Arrow (stac-geoparquet layout, one schema for the page)
    result.next_token     # pass as token= (with the same parameters) for the next page

Semantics (STAC API item search):
- `datetime`: an instant or an interval `A/B`, `A/..`, `../B` (RFC 3339; a date alone is its whole day). An item
  matches by its `datetime`, or by its `start_datetime`/`end_datetime` range when `datetime` is null.
- `bbox` (4 or 6 numbers; min x > max x crosses the antimeridian) and `intersects` (any GeoJSON geometry) select
  items whose geometry intersects; items with a null geometry never match a spatial filter.
- `collections`: `PROVIDER|collection` (as EO-MQS names them) or a plain id, which matches that collection at
  every provider. `providers` restricts to providers. `ids` are item ids (at any provider).
- `filter`: CQL2 text or JSON (see queries.cql). `sortby`: `+field`/`-field` (default: newest first).
- `merge`: one result per product (`product_key`) with the providers holding it and their hrefs.

How it runs: the manifest's per-part stats (provider, collection, datetime range, latitude range) and the cached
footer stats of queries.search_cache choose the part files. DuckDB filters and sorts over those parts' narrow
copies (queries.search_cache: the same rows without the wide nested columns), one scan per group of parts whose
needed columns are typed alike, with the bbox covering and datetime comparisons pushed into the scan (row groups
are skipped). The page's items then come from the row copies of the parts (queries.search_rows: each item as the
JSON that harvester.parts.batch_to_items restores, written by `Searcher.prepare()`), or, for parts without one and
whenever Arrow rows are asked for (`arrow=True`), from the parts' row groups read with pyarrow and turned into items
by batch_to_items, exactly as the snapshot reader does. Pages are offsets into the ordered results of one pinned
version (versions never change), carried by an opaque token (`_encode_token`). Every item gets `cscale:provider`;
merged ones `cscale:providers`, `cscale:replicas` and `cscale:product_key`.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import io
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import duckdb
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from harvester.arrow_rows import conform, target_schema
from harvester.errors import InputError, StoreError
from harvester.manifest import Manifest, manifest_key
from harvester.parts import ROW_GROUP_ROWS, batch_to_items, part_schema
from harvester.records import OVERFLOW
from harvester.storage import HttpStorage, LocalStorage, S3Storage, arrow_filesystem
from harvester.store import Store
from harvester.timeutil import DatetimeError, format_datetime, parse_datetime
from queries import cql
from queries.connection import _s3_secret, http_settings, new_connection
from queries.search_cache import (
    Columns,
    PartCache,
    build_id_index,
    cache_dir,
    index_path,
    lookup_ids,
    narrow_path,
)
from queries.search_rows import RowCopies, build_row_copies, rows_path

log = logging.getLogger(__name__)

DEFAULT_LIMIT = 10
MAX_LIMIT = 10_000
MAX_IDS = 10_000
MAX_LIST = 1_000  # collections, providers
MAX_INTERSECTS_POINTS = 100_000
MAX_TEXT = 64 * 1024  # a filter, a datetime, an id...
SINGLE_THREAD_ROWS = 500_000  # scans of fewer rows than this (over the parts chosen) run on one DuckDB thread
ID_INDEX_MIN_PARTS = 16  # below this, scanning the parts' id columns is as quick as the index
PROVIDER_PROPERTY = "cscale:provider"
PROVIDERS_PROPERTY = "cscale:providers"
REPLICAS_PROPERTY = "cscale:replicas"
PRODUCT_KEY_PROPERTY = "cscale:product_key"
_TOKEN_KEY_ENV = "CSCALE_TOKEN_KEY"
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ITEM_FIELDS = (
    "type", "stac_version", "stac_extensions", "id", "geometry", "bbox", "properties", "links", "assets", "collection",
)  # fmt: skip


# ---------------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True, slots=True)
class Fields:
    """STAC fields extension: dotted paths to include and to exclude."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    """Validated search parameters (build with `make_query`)."""

    bbox: tuple[float, float, float, float] | None = None
    intersects: dict[str, Any] | None = None
    interval: tuple[datetime | None, datetime | None] | None = None
    collections: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    filter: dict[str, Any] | None = None
    sortby: tuple[tuple[str, bool], ...] = ()  # (property, descending)
    limit: int = DEFAULT_LIMIT
    fields: Fields | None = None
    merge: bool = False

    def fingerprint(self) -> str:
        """What a page token is bound to: everything but the limit and the fields."""
        body = {
            "bbox": self.bbox,
            "intersects": self.intersects,
            "interval": [format_datetime(t) if t else None for t in self.interval] if self.interval else None,
            "collections": self.collections,
            "providers": self.providers,
            "ids": self.ids,
            "filter": self.filter,
            "sortby": self.sortby,
            "merge": self.merge,
        }
        return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]

    def get_params(self) -> dict[str, str]:
        """The query as STAC API GET parameters (for `next` links)."""
        params: dict[str, str] = {}
        if self.bbox:
            params["bbox"] = ",".join(_num(v) for v in self.bbox)
        if self.intersects:
            params["intersects"] = orjson.dumps(self.intersects).decode()
        if self.interval:
            params["datetime"] = "/".join(format_datetime(t) if t else ".." for t in self.interval)
        for name in ("collections", "providers", "ids"):
            if getattr(self, name):
                params[name] = ",".join(getattr(self, name))
        if self.filter:
            params["filter"] = orjson.dumps(self.filter).decode()
            params["filter-lang"] = "cql2-json"
        if self.sortby:
            params["sortby"] = ",".join(("-" if d else "+") + f for f, d in self.sortby)
        if self.fields:
            params["fields"] = ",".join([*self.fields.include, *("-" + f for f in self.fields.exclude)])
        params["limit"] = str(self.limit)
        if self.merge:
            params["merge"] = "true"
        return params


def make_query(
    *,
    bbox: str | Sequence[float] | None = None,
    intersects: str | Mapping[str, Any] | None = None,
    datetime: str | None = None,
    collections: str | Sequence[str] | None = None,
    providers: str | Sequence[str] | None = None,
    ids: str | Sequence[str] | None = None,
    filter: str | Mapping[str, Any] | None = None,
    filter_lang: str | None = None,
    sortby: str | Sequence[str | Mapping[str, str]] | None = None,
    limit: int | None = None,
    fields: str | Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    merge: bool = False,
) -> Query:
    """Check every parameter as a STAC API would; any problem is an InputError with a one-line message."""
    if bbox is not None and intersects is not None:
        raise InputError("bbox and intersects cannot be used together")
    return Query(
        bbox=parse_bbox(bbox) if bbox is not None else None,
        intersects=parse_intersects(intersects) if intersects is not None else None,
        interval=parse_interval(datetime) if datetime is not None else None,
        collections=_names(collections, "collections", MAX_LIST),
        providers=_names(providers, "providers", MAX_LIST),
        ids=_names(ids, "ids", MAX_IDS),
        filter=_filter(filter, filter_lang) if filter is not None else None,
        sortby=parse_sortby(sortby) if sortby is not None else (),
        limit=_limit(limit),
        fields=parse_fields(fields) if fields is not None else None,
        merge=bool(merge),
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InputError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {str(limit)[:40]!r}")
    return limit


def parse_bbox(value: str | Sequence[float]) -> tuple[float, float, float, float]:
    """4 or 6 numbers (2D or 3D); min x > max x is a box crossing the antimeridian."""
    if isinstance(value, str):
        if len(value) > 1000:
            raise InputError("bbox is too long")
        parts = [p.strip() for p in value.strip().strip("[]").split(",")]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"bbox must be 4 or 6 comma-separated numbers, got {value[:80]!r}") from None
    else:
        numbers = []
        for v in value:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise InputError(f"bbox must be 4 or 6 numbers, got {v!r:.40}")
            numbers.append(float(v))
    if len(numbers) not in (4, 6):
        raise InputError(f"bbox must have 4 or 6 numbers, got {len(numbers)}")
    if not all(math.isfinite(n) for n in numbers):
        raise InputError("bbox numbers must be finite")
    half = len(numbers) // 2
    xmin, ymin, xmax, ymax = numbers[0], numbers[1], numbers[half], numbers[half + 1]
    if not (-90 <= ymin <= 90 and -90 <= ymax <= 90):
        raise InputError(f"bbox latitude must be within [-90, 90], got {_num(ymin)} and {_num(ymax)}")
    if ymin > ymax:
        raise InputError(f"bbox min latitude {_num(ymin)} is above its max latitude {_num(ymax)}")
    if not (-180 <= xmin <= 180 and -180 <= xmax <= 180):
        raise InputError(f"bbox longitude must be within [-180, 180], got {_num(xmin)} and {_num(xmax)}")
    if half == 3 and numbers[2] > numbers[5]:
        raise InputError("bbox min elevation is above its max elevation")
    return xmin, ymin, xmax, ymax


def parse_intersects(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """A GeoJSON geometry (a Feature's geometry is taken too)."""
    if isinstance(value, str):
        if len(value) > 64 << 20:
            raise InputError("intersects geometry is larger than 64 MiB")
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"intersects is not JSON: {exc}") from None
    if not isinstance(value, Mapping):
        raise InputError("intersects must be a GeoJSON geometry object")
    geometry = dict(value)
    if geometry.get("type") == "Feature":
        geometry = dict(geometry.get("geometry") or {})
    points = _count_points(geometry.get("coordinates"), 0) + sum(
        _count_points(g.get("coordinates"), 0) for g in geometry.get("geometries") or () if isinstance(g, dict)
    )
    if points > MAX_INTERSECTS_POINTS:
        raise InputError(
            f"intersects geometry has {points:,} points, more than {MAX_INTERSECTS_POINTS:,}; simplify it first"
        )
    cql.geometry_wkb(geometry)  # validates (type, structure) with a clear message
    return geometry


def _count_points(node: Any, depth: int) -> int:
    if depth > 6 or not isinstance(node, list):
        return 0
    if node and isinstance(node[0], int | float):
        return 1
    return sum(_count_points(child, depth + 1) for child in node)


def parse_interval(value: str) -> tuple[datetime | None, datetime | None]:
    """`A`, `A/B`, `A/..`, `../B` (an empty end is open too); a date alone covers its whole day."""
    text = value.strip()
    if not text or len(text) > 200:
        raise InputError(f"datetime must be an RFC 3339 instant or interval, got {value[:60]!r}")
    if "/" not in text:
        return _instant(text, end=False), _instant(text, end=True)
    if text.count("/") != 1:
        raise InputError(f"datetime interval must have one '/', got {value[:60]!r}")
    a, b = (s.strip() for s in text.split("/"))
    start: datetime | None = None if a in ("", "..") else _instant(a, end=False)
    end: datetime | None = None if b in ("", "..") else _instant(b, end=True)
    if start is None and end is None:
        raise InputError("datetime interval must have at least one closed end")
    if start is not None and end is not None and start > end:
        raise InputError(f"datetime interval starts after it ends: {value[:80]!r}")
    return start, end


def _instant(text: str, *, end: bool) -> datetime:
    try:
        when = parse_datetime(text)
    except DatetimeError:
        raise InputError(f"datetime must be RFC 3339 (2021-06-01T00:00:00Z) or '..', got {text[:60]!r}") from None
    if end and _DATE_ONLY.match(text):
        return when + timedelta(days=1) - timedelta(microseconds=1)
    return when


def _names(value: str | Sequence[str] | None, what: str, limit: int) -> tuple[str, ...]:
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise InputError(f"{what} must be strings, got {type(item).__name__}")
        item = item.strip()
        if not item:
            continue
        if len(item) > 1024 or "\x00" in item:
            raise InputError(f"{what}: {item[:40]!r}... is not a valid name")
        names.append(item)
    if len(names) > limit:
        raise InputError(f"too many {what}: {len(names):,} (at most {limit:,})")
    return tuple(dict.fromkeys(names))


def _filter(value: str | Mapping[str, Any], lang: str | None) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return cql.parse(json_value=dict(value))
    if len(value) > MAX_TEXT:
        raise InputError(f"filter is longer than {MAX_TEXT:,} characters")
    lang = (lang or ("cql2-json" if value.lstrip().startswith("{") else "cql2-text")).lower()
    if lang == "cql2-json":
        return cql.parse(json_value=value)
    if lang == "cql2-text":
        return cql.parse(text=value)
    raise InputError(f"filter-lang must be cql2-text or cql2-json, got {lang[:30]!r}")


def parse_sortby(value: str | Sequence[str | Mapping[str, str]]) -> tuple[tuple[str, bool], ...]:
    items: list[str | Mapping[str, str]] = [s for s in value.split(",")] if isinstance(value, str) else list(value)
    keys = []
    for item in items:
        if isinstance(item, Mapping):
            name, direction = str(item.get("field", "")), str(item.get("direction", "asc")).lower()
            if direction not in ("asc", "desc"):
                raise InputError(f"sortby direction must be asc or desc, got {direction[:20]!r}")
            keys.append((name.strip(), direction == "desc"))
            continue
        text = item.strip()
        if not text:
            continue
        descending = text.startswith("-")
        keys.append((text.lstrip("+-").strip(), descending))
    for name, _ in keys:
        if not name or len(name) > 256:
            raise InputError("sortby needs field names (+field or -field)")
    if len(keys) > 16:
        raise InputError("sortby takes at most 16 fields")
    return tuple(keys)


def parse_fields(value: str | Sequence[str] | Mapping[str, Sequence[str]]) -> Fields:
    if isinstance(value, Mapping):
        include = [str(v) for v in value.get("include") or ()]
        exclude = [str(v) for v in value.get("exclude") or ()]
    else:
        names = value.split(",") if isinstance(value, str) else list(value)
        include = [n.strip().lstrip("+") for n in names if n.strip() and not n.strip().startswith("-")]
        exclude = [n.strip()[1:] for n in names if n.strip().startswith("-")]
    for name in include + exclude:
        if not name or len(name) > 256:
            raise InputError("fields must be dotted names (id, properties.eo:cloud_cover, -assets)")
    return Fields(tuple(include), tuple(exclude))


# ---------------------------------------------------------------------------------------------------- page tokens
def _token_key() -> bytes:
    return os.environ.get(_TOKEN_KEY_ENV, "cscale-search-token-v1").encode()


def _encode_token(version: int, offset: int, fingerprint: str) -> str:
    """An opaque page cursor: base64url(JSON {version, offset, query fingerprint}) + '.' + a truncated
    HMAC-SHA256 of it. The MAC makes an edited or corrupted token an error instead of a wrong page; the key is
    $CSCALE_TOKEN_KEY (set it to a secret where tokens must be unforgeable, e.g. behind a public server), else a
    fixed default (tamper-evident only). The version pins the page to the snapshot the first page came from."""
    body = base64.urlsafe_b64encode(orjson.dumps({"v": version, "o": offset, "q": fingerprint})).rstrip(b"=")
    mac = base64.urlsafe_b64encode(hmac.new(_token_key(), body, hashlib.sha256).digest()[:12]).rstrip(b"=")
    return (body + b"." + mac).decode()


def decode_token(token: str) -> tuple[int, int, str]:
    """(version, offset, query fingerprint) of a token; InputError if it was not made by us."""
    bad = InputError("the page token is invalid or was altered; start again without --token")
    if not isinstance(token, str) or len(token) > 512 or token.count(".") != 1:
        raise bad
    body, mac = token.encode().split(b".")
    expected = base64.urlsafe_b64encode(hmac.new(_token_key(), body, hashlib.sha256).digest()[:12]).rstrip(b"=")
    if not hmac.compare_digest(mac, expected):
        raise bad
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        return int(payload["v"]), int(payload["o"]), str(payload["q"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise bad from None


# ---------------------------------------------------------------------------------------------------- results
@dataclass
class Hit:
    """One result of the ordered search (a product when merged): where its row(s) live."""

    part: int  # index in the manifest's parts
    row: int  # row number in that part
    provider: str
    id: str
    replicas: list[tuple[int, int, str]] = field(default_factory=list)  # (part, row, provider) when merged
    product_key: str | None = None


@dataclass
class SearchResult:
    query: Query
    version: int
    offset: int
    hits: list[Hit]
    items: list[dict[str, Any]]
    next_token: str | None
    explain: str | None
    stats: dict[str, Any]
    _rows: list[tuple[pa.Table, int]] = field(default_factory=list, repr=False)  # (part rows, index) per hit
    _table: pa.Table | None = field(default=None, repr=False)

    @property
    def table(self) -> pa.Table:
        """The page's rows as one Arrow table in stac-geoparquet layout (cscale's columns included). Parts that
        disagree on a column's type are unified as the commit does: the losing values go to `cscale:overflow`.
        When merged, `cscale:providers` and `cscale:hrefs` list the replicas of each product. Needs a search made
        with `arrow=True` (otherwise items may have come from row copies, which hold no Arrow rows)."""
        if self._table is None:
            if self.hits and len(self._rows) != len(self.items):
                raise InputError("this page's rows were not kept as Arrow: search with arrow=True to get result.table")
            self._table = _page_table(self._rows)
            if self.query.merge and self.hits:
                replicas = [item["properties"].get(REPLICAS_PROPERTY, []) for item in self.items]
                providers = pa.array([[r["provider"] for r in reps] for reps in replicas], pa.list_(pa.string()))
                hrefs = pa.array([[r.get("href") for r in reps] for reps in replicas], pa.list_(pa.string()))
                self._table = self._table.append_column(PROVIDERS_PROPERTY, providers).append_column(
                    "cscale:hrefs", hrefs
                )
        return self._table

    def item_collection(self, *, base_url: str = "search") -> dict[str, Any]:
        """A STAC ItemCollection; a `next` link (GET, with a `token` parameter) when more results exist."""
        links = []
        if self.next_token:
            params = {**self.query.get_params(), "token": self.next_token}
            links.append(
                {
                    "rel": "next",
                    "type": "application/geo+json",
                    "method": "GET",
                    "href": f"{base_url}?{urlencode(params)}",
                }
            )
        return {
            "type": "FeatureCollection",
            "features": self.items,
            "links": links,
            "numberReturned": len(self.items),
            "cscale:version": self.version,
        }


def unify(tables: Sequence[pa.Table]) -> pa.Table:
    """Tables of several parts as one, conformed to one schema as a commit conforms a part's batches."""
    if not tables:
        return pa.table({"id": pa.array([], pa.string())})
    schema = target_schema([(t.schema.remove_metadata(), t.num_rows) for t in tables])
    pieces = [
        pa.Table.from_batches([conform(b, schema) for b in t.replace_schema_metadata(None).to_batches()], schema)
        for t in tables
    ]
    return pa.concat_tables(pieces)


def _page_table(rows: list[tuple[pa.Table, int]]) -> pa.Table:
    """The page's rows in order: the rows of each part taken at once (never one-row slices, which conform's casts
    of nested types mishandle), unified, then put back in the page's order."""
    groups: dict[int, tuple[pa.Table, list[int], list[int]]] = {}
    for position, (table, index) in enumerate(rows):
        group = groups.setdefault(id(table), (table, [], []))
        group[1].append(index)
        group[2].append(position)
    taken = [t.take(pa.array(indexes, pa.int64())).combine_chunks() for t, indexes, _ in groups.values()]
    table = unify(taken)
    positions = [p for _, _, where in groups.values() for p in where]
    order = sorted(range(len(positions)), key=positions.__getitem__)
    return table.take(pa.array(order, pa.int64())) if rows else table


# ---------------------------------------------------------------------------------------------------- searcher
class Searcher:
    """Searches one snapshot version; keep one open to answer many searches (it caches footers, part schemas and
    open files — all safe to keep, since a version's files never change)."""

    def __init__(
        self,
        root: str,
        version: int | None = None,
        *,
        threads: int | None = None,
        cache: str | Path | None = None,
        id_index: bool | None = None,
    ) -> None:
        self.store = Store.open(root)
        self.manifest: Manifest = self.store.manifest(version)
        self.storage = self.store.storage
        self.remote = isinstance(self.storage, S3Storage | HttpStorage)
        self.con = new_connection(httpfs=self.remote, threads=threads)
        self.con.execute("SET parquet_metadata_cache = true")
        self.threads = threads
        self._default_threads = int(self.con.execute("SELECT current_setting('threads')").fetchone()[0])  # type: ignore[index]
        self._threads_now = self._default_threads
        if isinstance(self.storage, S3Storage):
            _s3_secret(self.con)
        elif isinstance(self.storage, HttpStorage):
            http_settings(self.con, self.storage, manifest_key(self.manifest.version))
        self.cache_dir = cache_dir(cache)
        self.id_index = id_index
        self.part_cache = PartCache(self.cache_dir)
        self.urls = [self.storage.uri(p.path) for p in self.manifest.parts]
        self._all_columns: set[str] | None = None
        self._narrow_used = 0
        self._reader = _PartReader(self.storage)
        self.root = root
        self.row_copies = RowCopies(self.part_cache.folder)

    @property
    def version(self) -> int:
        return self.manifest.version

    def close(self) -> None:
        self.con.close()
        self._reader.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- the search ------------------------------------------------------------------------------------------------
    def search(
        self,
        query: Query,
        *,
        token: str | None = None,
        explain: bool = False,
        fetch: bool = True,
        arrow: bool = False,
    ) -> SearchResult:
        """One page. With `fetch=False` only the hits (provider, id, where) are found: no rows are read whole,
        `items` stays empty. With `arrow`, the page's rows are read from the parts and kept as Arrow
        (`result.table`); otherwise items come from the row copies where prepare() made them."""
        started = time.perf_counter()
        offset = 0
        if token is not None:
            version, offset, fingerprint = decode_token(token)
            if fingerprint != query.fingerprint():
                raise InputError("the page token belongs to another search; repeat the same parameters with it")
            if version != self.version:
                raise InputError(f"the page token belongs to version {version}, not {self.version}")
        notes: dict[str, Any] = {"parts_in_version": len(self.manifest.parts)}
        parts = self._plan(query, notes)
        hits: list[Hit] = []
        more = False
        plan_text = None
        if parts:
            sql, params, members = self._phase1(query, parts, offset)
            hits, more = self._run_phase1(sql, params, members, query)
            if explain:
                plan_text = self._explain(sql, params)
                notes["sql"] = sql
        notes["parts_read"] = len(parts)
        notes["narrow_copies"] = self._narrow_used if parts else 0
        t1 = time.perf_counter()
        items, tables = self._materialise(query, hits, arrow, notes) if fetch else ([], [])
        notes["rows_fetched_from_parts"] = len(
            {(p, r) for h in hits for p, r, _ in (h.replicas or [(h.part, h.row, "")])}
        )
        notes["ms_search"] = round((t1 - started) * 1000, 1)
        notes["ms_fetch"] = round((time.perf_counter() - t1) * 1000, 1)
        next_token = _encode_token(self.version, offset + len(hits), query.fingerprint()) if more else None
        text = _explain_text(notes, plan_text) if explain else None
        return SearchResult(query, self.version, offset, hits, items, next_token, text, notes, tables)

    # -- planning: which parts ---------------------------------------------------------------------------------------
    def _plan(self, query: Query, notes: dict[str, Any]) -> list[int]:
        chosen = list(range(len(self.manifest.parts)))
        parts = self.manifest.parts
        if query.providers:
            wanted = set(query.providers)
            chosen = [i for i in chosen if parts[i].provider in wanted]
        if query.collections:
            match = self._collection_matcher(query.collections)
            chosen = [i for i in chosen if match(parts[i])]
        notes["parts_after_provider_collection"] = len(chosen)
        if query.interval is not None:
            chosen = self._prune_time(chosen, query.interval)
        notes["parts_after_datetime"] = len(chosen)
        extent = self._query_extent(query)
        if extent is not None:
            # Latitude only: a part's bbox is the min/max of its items' bboxes, which says nothing about longitude
            # once an item crosses the antimeridian.
            chosen = [i for i in chosen if _lat_overlap(parts[i].bbox, extent)]
        notes["parts_after_bbox"] = len(chosen)
        if query.ids and self.id_index is not False and (self.id_index or len(chosen) >= ID_INDEX_MIN_PARTS):
            holding = self._id_index_parts(query.ids, notes)
            if holding is not None:
                chosen = [i for i in chosen if i in holding]
        notes["parts_after_ids"] = len(chosen)
        return chosen

    def _collection_matcher(self, collections: tuple[str, ...]) -> Any:
        providers = {p.provider for p in self.manifest.parts}
        exact: set[tuple[str, str]] = set()
        plain: set[str] = set()
        for name in collections:
            provider, sep, collection = name.partition("|")
            if sep and provider in providers:
                exact.add((provider, collection))
            else:
                plain.add(name)
        return lambda p: (
            (p.provider, p.collection or "") in exact or ((p.collection or "") in plain and bool(p.collection))
        )

    def _prune_time(self, chosen: list[int], interval: tuple[datetime | None, datetime | None]) -> list[int]:
        start, end = interval
        parts = self.manifest.parts
        keep = []
        older = []
        for i in chosen:
            part = parts[i]
            low = parse_datetime(part.datetime_min) if part.datetime_min else None
            high = parse_datetime(part.datetime_max) if part.datetime_max else None
            if end is not None and low is not None and low > end:
                continue  # every item starts after the interval (sort key = datetime or start_datetime)
            if start is not None and high is not None and high < start:
                older.append(i)  # only a range item (null datetime) reaching past `start` could match
                continue
            keep.append(i)
        if older:
            stats = self.part_cache.get_stats(self.con, [(parts[i].path, self.urls[i]) for i in older])
            for i in older:
                s = stats.get(parts[i].path)
                if (
                    s is None
                    or s.datetime_nulls is None
                    or (s.datetime_nulls > 0 and (s.end_max is None or start is None or s.end_max >= start))
                ):
                    keep.append(i)
        return sorted(keep)

    def _query_extent(self, query: Query) -> tuple[float, float] | None:
        if query.bbox is not None:
            return query.bbox[1], query.bbox[3]
        if query.intersects is not None:
            import shapely
            from shapely.geometry import shape

            bounds = shapely.bounds(shape(query.intersects))
            return float(bounds[1]), float(bounds[3])
        return None

    def _id_index_parts(self, ids: tuple[str, ...], notes: dict[str, Any]) -> set[int] | None:
        paths = [p.path for p in self.manifest.parts]
        target = index_path(self.cache_dir, paths)
        if not target.exists():
            auto = self.id_index is None
            if auto and self.manifest.rows < 100_000:
                notes["id_index"] = "not used (small version: scanning is as quick)"
                return None
            try:
                t = time.perf_counter()
                build_id_index(self.con, self.urls, target)
                notes["id_index_built_ms"] = round((time.perf_counter() - t) * 1000, 1)
            except (OSError, duckdb.IOException, duckdb.PermissionException) as exc:
                log.warning("cannot build the id index in %s (%s); scanning instead", self.cache_dir, exc)
                notes["id_index"] = "unavailable (cache folder not writable)"
                return None
        holding = lookup_ids(self.con, target, ids)
        notes["id_index"] = f"{target.name}: {len(holding)} part(s) hold the ids"
        return holding

    # -- phase 1: DuckDB over the narrow columns -----------------------------------------------------------------
    def _columns(self, chosen: Sequence[int]) -> dict[int, Columns]:
        parts = self.manifest.parts
        found = self.part_cache.get_columns(self.con, [(parts[i].path, self.urls[i]) for i in chosen], cql.kind_of)
        return {i: found[parts[i].path] for i in chosen}

    def _known(self, name: str) -> bool:
        """Whether any part of the version has a column for this property (read only when a filter names a
        property absent from the parts being searched)."""
        if self._all_columns is None:
            self._all_columns = set()
            for columns in self._columns(range(len(self.manifest.parts))).values():
                self._all_columns.update(columns)
        return name in self._all_columns

    def _resolver(self, columns: Columns) -> cql.Resolver:
        has_overflow = OVERFLOW in columns

        def resolve(name: str) -> cql.Column | None:
            if name in columns:
                kind = columns[name][0]
                overflow = f"properties.{name}" if has_overflow and name not in _ITEM_COLUMNS else None
                return cql.Column(cql.quote_identifier(name), kind, overflow)
            head, dot, rest = name.partition(".")
            if dot and head in columns and columns[head][0] == "struct":
                sql = cql.quote_identifier(head)
                for key in rest.split("."):
                    sql = f"struct_extract({sql}, {_sql_string(key)})"
                return cql.Column(sql, "any")
            if self._known(name) or (dot and self._known(head)):
                return None  # other parts have it; none of these do
            raise InputError(f"unknown property {name[:80]!r}: no item of version {self.version} has it")

        return resolve

    def _phase1(self, query: Query, chosen: list[int], offset: int) -> tuple[str, list[Any], list[list[int]]]:
        """The ordered page as SQL: one scan per group of parts whose needed columns are typed alike (no
        union_by_name: binding it over hundreds of wide asset structs costs more than the scan), UNION ALL."""
        columns = self._columns(chosen)
        needed = {"id", "provider", "product_key", "datetime", "start_datetime", "end_datetime", OVERFLOW}
        if query.bbox is not None or query.intersects is not None:
            needed |= {"bbox", "geometry"}
        names = [cql.normalise_property(n) for n in cql.properties(query.filter or {})]
        names += [cql.normalise_property(n) for n, _ in query.sortby]
        needed |= {n for n in names} | {n.partition(".")[0] for n in names}
        groups: dict[tuple[tuple[str, str, str, bool], ...], list[int]] = {}
        for i in chosen:
            signature = tuple(sorted((n, *columns[i][n]) for n in needed if n in columns[i]))
            groups.setdefault(signature, []).append(i)
        sources = self._scan_sources(
            chosen, {i: all(c[3] for c in sig) for sig, parts in groups.items() for i in parts}
        )
        self._narrow_used = sum(1 for i in chosen if sources[i] != self.urls[i])
        params: list[Any] = []
        sort_kinds = self._sort_kinds(query, [{n: (k, d, w) for n, k, d, w in sig} for sig in groups])
        branches = []
        members = []
        for number, (signature, parts) in enumerate(groups.items()):
            present: Columns = {n: (k, d, w) for n, k, d, w in signature}
            params.append([sources[i] for i in parts])
            branches.append(self._branch(query, number, len(params), present, sort_kinds, params))
            members.append(parts)
        union = "\n  UNION ALL\n".join(branches)
        order_by = ", ".join(
            f"s{i} {'DESC' if desc else 'ASC'} NULLS LAST" for i, (_, desc) in enumerate(self._sort_keys(query))
        )
        params.append(query.limit + 1)
        limit = f"${len(params)}::BIGINT"
        params.append(offset)
        skip = f"${len(params)}::BIGINT"
        if not query.merge:
            sql = f"SELECT * FROM ({union}) ORDER BY {order_by}, provider, id LIMIT {limit} OFFSET {skip}"
            return (*_compact_params(sql, params), members)
        picks = ", ".join(f"arg_min(s{i}, provider) AS s{i}" for i in range(len(self._sort_keys(query))))
        sql = f"""WITH hits AS ({union}),
          products AS (
            SELECT coalesce(product_key, provider || '|' || id) AS k, min(provider) AS provider,
                   arg_min(id, provider) AS id, arg_min(g, provider) AS g, arg_min(f, provider) AS f,
                   arg_min(r, provider) AS r, list([g, f, r] ORDER BY provider) AS replicas,
                   list(provider ORDER BY provider) AS holders, any_value(product_key) AS product_key, {picks}
            FROM hits GROUP BY k)
          SELECT g, f, r, provider, id, replicas, holders, product_key FROM products
          ORDER BY {order_by}, provider, id LIMIT {limit} OFFSET {skip}"""
        return (*_compact_params(sql, params), members)

    def _scan_sources(self, chosen: list[int], narrow_ok: dict[int, bool]) -> dict[int, str]:
        """What phase 1 reads for each part: its narrow copy when the query needs no column the copy leaves out
        (the copy is written now if missing), else the part itself."""
        sources = {i: self.urls[i] for i in chosen}
        folder = self.part_cache.folder
        if folder is None:
            return sources
        missing = []
        for i in chosen:
            if not narrow_ok[i]:
                continue
            target = narrow_path(folder, self.manifest.parts[i].path)
            if target.exists():
                sources[i] = str(target)
            else:
                missing.append((i, target))
        if missing:
            columns = self._columns([i for i, _ in missing])  # DuckDB work stays on this thread
            jobs = [(i, target, [n for n, c in columns[i].items() if c[2]]) for i, target in missing]
            with ThreadPoolExecutor(max_workers=2) as pool:
                built = list(pool.map(lambda job: self._write_narrow(*job), jobs))
            for (i, target, _), ok in zip(jobs, built, strict=True):
                if ok:
                    sources[i] = str(target)
        return sources

    def _write_narrow(self, index: int, target: Path, keep: list[str]) -> bool:
        part = self.manifest.parts[index]
        try:
            table = self._reader.columns(part.path, keep)
            schema = part_schema(table.schema.remove_metadata(), None, None)  # GeoParquet: geometry stays typed
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
            pq.write_table(
                table.replace_schema_metadata(schema.metadata), tmp, compression="zstd", row_group_size=ROW_GROUP_ROWS
            )
            os.replace(tmp, target)
            return True
        except OSError as exc:
            log.warning("cannot write a narrow copy of %s in %s: %s", part.path, target.parent, exc)
            return False

    def prepare(
        self, *, rows: bool = True, workers: int | None = None, progress: Callable[[int, int], None] | None = None
    ) -> dict[str, float]:
        """Do now what searches would do lazily: narrow copies of every part, footer facts, the id index; and
        what only this does: the row copies (queries.search_rows), unless `rows` is false. A server opening a new
        version, or a cron job after a harvest, calls this once; parts already prepared (for this or an earlier
        version) cost nothing. `progress(items done, items to do)` follows the row copies. Returns seconds per
        step."""
        timings = {}
        started = time.perf_counter()
        everything = list(range(len(self.manifest.parts)))
        self._columns(everything)
        self._scan_sources(everything, {i: True for i in everything})
        timings["narrow_copies_s"] = time.perf_counter() - started
        started = time.perf_counter()
        self.part_cache.get_stats(self.con, [(p.path, u) for p, u in zip(self.manifest.parts, self.urls, strict=True)])
        timings["footer_stats_s"] = time.perf_counter() - started
        started = time.perf_counter()
        if self.manifest.parts:
            target = index_path(self.cache_dir, [p.path for p in self.manifest.parts])
            if not target.exists():
                build_id_index(self.con, self.urls, target)
        timings["id_index_s"] = time.perf_counter() - started
        if rows:
            started = time.perf_counter()
            self._build_row_copies(workers, progress)
            timings["row_copies_s"] = time.perf_counter() - started
        return timings

    def _build_row_copies(self, workers: int | None, progress: Callable[[int, int], None] | None) -> None:
        """Row copies of the parts that have none (queries.search_rows), in worker processes."""
        folder = self.part_cache.folder
        if folder is None:
            log.warning("no writable search cache folder: searches will read whole rows from the parts")
            return
        todo = [p for p in self.manifest.parts if not self.row_copies.has(p.path, p.rows)]
        todo.sort(key=lambda p: -p.rows)  # the biggest first: the workers end together
        total = sum(p.rows for p in todo)
        finished = 0

        def done(part_path: str, rows: int, error: str | None) -> None:
            nonlocal finished
            if error:
                log.warning("cannot write the row copy of %s: %s", part_path, error)
            self.row_copies.written(part_path)
            finished += rows
            if progress:
                progress(finished, total)

        if progress and todo:
            progress(0, total)
        count = max(1, min(workers or os.cpu_count() or 1, len(todo)))
        jobs = [(p.path, p.rows, rows_path(folder, p.path)) for p in todo]
        build_row_copies(self.root, jobs, workers=count, done=done)

    def _sort_keys(self, query: Query) -> list[tuple[str | None, bool]]:
        """(property, descending) of the order; None is the default key, the item's time."""
        return [*((cql.normalise_property(n), d) for n, d in query.sortby), (None, True)]

    def _sort_kinds(self, query: Query, groups: list[Columns]) -> list[str]:
        """One type per sort key across every scan: its kind where all parts agree, else text."""
        kinds = []
        for name, _ in self._sort_keys(query):
            if name is None:
                kinds.append("timestamp")
                continue
            seen = {g[name][0] for g in groups if name in g}
            kinds.append(seen.pop() if len(seen) == 1 else "text")
        return kinds

    def _branch(
        self, query: Query, number: int, files: int, present: Columns, sort_kinds: list[str], params: list[Any]
    ) -> str:
        def param(value: Any, cast: str) -> str:
            params.append(value)
            return f"${len(params)}::{cast}"

        has = present.__contains__
        resolve = self._resolver(present)
        where: list[str] = []
        if query.bbox is not None or query.intersects is not None:
            where.append(self._spatial(query, has, param))
        if query.interval is not None:
            where.append(_time_condition(query.interval, has, param))
        if query.ids:
            where.append(f"list_contains({param(list(query.ids), 'VARCHAR[]')}, id)")
        if query.filter is not None:
            where.append(cql.compile_filter(query.filter, resolve, params)[0])
        keys = []
        for i, ((name, _), kind) in enumerate(zip(self._sort_keys(query), sort_kinds, strict=True)):
            cast = _SORT_CASTS.get(kind, "VARCHAR")
            if name is None:
                expr = _sort_time(has)
            else:
                column = resolve(name)
                expr = "NULL" if column is None else column.sql
            keys.append(f"TRY_CAST({expr} AS {cast}) AS s{i}")
        product_key = "product_key" if has("product_key") else "NULL::VARCHAR AS product_key"
        sql = (
            f"SELECT {number} AS g, file_index AS f, file_row_number AS r, provider, id, {product_key}, "
            f"{', '.join(keys)} FROM read_parquet(${files}, hive_partitioning = false)"
        )
        return sql + (" WHERE " + " AND ".join(f"({w})" for w in where) if where else "")

    def _spatial(self, query: Query, has: Any, param: Any) -> str:
        if not has("geometry") or not has("bbox"):
            return "false"  # none of these parts has a geometry
        if query.bbox is not None:
            xmin, ymin, xmax, ymax = query.bbox
            geometry = cql._bbox_geometry([xmin, ymin, xmax, ymax])
        else:
            import shapely
            from shapely.geometry import shape

            assert query.intersects is not None
            geometry = query.intersects
            xmin, ymin, xmax, ymax = (float(v) for v in shapely.bounds(shape(geometry)))
        wkb = cql.geometry_wkb(geometry)
        lat = f"bbox.ymin <= {param(ymax, 'DOUBLE')} AND bbox.ymax >= {param(ymin, 'DOUBLE')}"
        # The covering prefilter is pushed into the scan; an item bbox crossing the antimeridian (min x > max x)
        # passes it and is decided by the exact test, like everything else.
        if xmin <= xmax:
            lon = f"(bbox.xmin <= {param(xmax, 'DOUBLE')} AND bbox.xmax >= {param(xmin, 'DOUBLE')})"
        else:
            lon = f"(bbox.xmax >= {param(xmin, 'DOUBLE')} OR bbox.xmin <= {param(xmax, 'DOUBLE')})"
        lon = f"({lon} OR bbox.xmin > bbox.xmax)"
        exact = f"ST_Intersects(geometry, ST_GeomFromWKB({param(wkb, 'BLOB')}))"
        return f"{lat} AND {lon} AND {exact}"

    def _query(self, sql: str, params: list[Any]) -> duckdb.DuckDBPyConnection:
        try:
            return self.con.execute(sql, params)
        except (duckdb.IOException, duckdb.HTTPException) as exc:
            raise StoreError(f"cannot read the store: {_first_line(exc)}") from None
        except (
            duckdb.BinderException,
            duckdb.ConversionException,
            duckdb.InvalidInputException,
            duckdb.OutOfRangeException,
            duckdb.NotImplementedException,
        ) as exc:
            raise InputError(f"search failed: {_first_line(exc)}") from None

    def _run_phase1(
        self, sql: str, params: list[Any], members: list[list[int]], query: Query
    ) -> tuple[list[Hit], bool]:
        # Small scans run on one thread: DuckDB splits work by row group, and over many small parts the
        # scheduling costs more than it saves (measured: 56 corpus parts, 1 thread 2-3x quicker under load).
        parts = [i for group in members for i in group]
        small = sum(self.manifest.parts[i].rows for i in parts) < SINGLE_THREAD_ROWS
        threads = 1 if small or self.threads == 1 else (self.threads or self._default_threads)
        if threads != self._threads_now:
            self.con.execute(f"SET threads = {int(threads)}")
            self._threads_now = threads
        rows = self._query(sql, params).fetchall()
        more = len(rows) > query.limit
        hits = []
        # (scan number, file_index within that scan) → the manifest's part number
        for row in rows[: query.limit]:
            if query.merge:
                g, f, r, provider, item_id, replicas, holders, key = row
                copies = [(members[a][b], c, h) for (a, b, c), h in zip(replicas, holders, strict=True)]
                hits.append(Hit(members[g][f], r, provider, item_id, copies, key))
            else:
                g, f, r, provider, item_id = row[:5]
                hits.append(Hit(members[g][f], r, provider, item_id))
        return hits, more

    def _explain(self, sql: str, params: list[Any]) -> str:
        rows = self._query("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchall()
        return _plan_summary(orjson.loads(rows[0][1]))

    # -- phase 2: the page's items: from row copies, else the parts' rows with pyarrow ----------------------------
    def _materialise(
        self, query: Query, hits: list[Hit], arrow: bool, notes: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[tuple[pa.Table, int]]]:
        if not hits:
            return [], []
        wanted: dict[int, list[int]] = {}
        for hit in hits:
            for part, row, _ in hit.replicas or [(hit.part, hit.row, hit.provider)]:
                wanted.setdefault(part, []).append(row)
        parts = self.manifest.parts
        rows: dict[tuple[int, int], tuple[dict[str, Any], tuple[pa.Table, int] | None]] = {}
        jobs = []
        for part, numbers in wanted.items():
            copied = None if arrow else self.row_copies.items(parts[part].path, parts[part].rows, numbers)
            if copied is None:
                jobs.append((part, numbers))
                continue
            for number, item in zip(numbers, copied, strict=True):
                rows[(part, number)] = (item, None)
        notes["parts_read_whole_rows"] = len(jobs)
        fetched = []
        if len(jobs) == 1:
            fetched = [self._reader.rows(parts[jobs[0][0]].path, jobs[0][1])]
        elif jobs:
            with ThreadPoolExecutor(max_workers=min(4, len(jobs))) as pool:
                fetched = list(pool.map(lambda job: self._reader.rows(parts[job[0]].path, job[1]), jobs))
        for (part, numbers), table in zip(jobs, fetched, strict=True):
            for number, item, index in zip(numbers, batch_to_items(table), range(table.num_rows), strict=True):
                rows[(part, number)] = (item, (table, index))
        items = []
        page_rows = []
        for hit in hits:
            item, where = rows[(hit.part, hit.row)]
            item = dict(item)
            item["properties"] = {**item["properties"], PROVIDER_PROPERTY: hit.provider}
            if query.merge:
                replicas = [_replica(rows[(p, r)][0], provider) for p, r, provider in hit.replicas]
                item["properties"][PROVIDERS_PROPERTY] = [r["provider"] for r in replicas]
                item["properties"][REPLICAS_PROPERTY] = replicas
                if hit.product_key:
                    item["properties"][PRODUCT_KEY_PROPERTY] = hit.product_key
            items.append(apply_fields(item, query.fields) if query.fields else item)
            if where is not None:
                page_rows.append(where)
        return items, page_rows if len(page_rows) == len(hits) else []


# Item fields (not properties): a value of theirs that overflowed is not under "properties." in the overflow.
_ITEM_COLUMNS = frozenset(("id", "collection", "geometry", "bbox", "type", "links", "assets", "stac_version"))
_SORT_CASTS = {"number": "DOUBLE", "text": "VARCHAR", "bool": "BOOLEAN", "timestamp": "TIMESTAMPTZ"}


def _replica(item: dict[str, Any], provider: str) -> dict[str, Any]:
    href = next((link.get("href") for link in item.get("links") or () if link.get("rel") == "self"), None)
    out = {"provider": provider, "collection": item.get("collection"), "id": item["id"]}
    if href:
        out["href"] = href
    return out


def _time_condition(interval: tuple[datetime | None, datetime | None], has: Any, param: Any) -> str:
    start, end = interval
    lo = param(start, "TIMESTAMPTZ") if start else "'-infinity'::TIMESTAMPTZ"
    hi = param(end, "TIMESTAMPTZ") if end else "'infinity'::TIMESTAMPTZ"
    pieces = []
    if has("datetime"):
        # pushed into the scan: parts are sorted by datetime, so row groups outside the interval are skipped
        pieces.append(f"(datetime >= {lo} AND datetime <= {hi})")
    if has("start_datetime") and has("end_datetime"):
        null = "datetime IS NULL AND " if has("datetime") else ""
        pieces.append(f"({null}start_datetime <= {hi} AND end_datetime >= {lo})")
    if len(pieces) == 2:
        # An OR over two columns is not pushed into the scan, so no row group would be skipped; this conjunct
        # (implied by both branches) is on `datetime` alone: DuckDB pushes it and prunes by the parts' datetime
        # statistics (at 4.3M items it cut a month's scan from a whole year of rows).
        return f"({pieces[0]} OR {pieces[1]}) AND (datetime IS NULL OR (datetime >= {lo} AND datetime <= {hi}))"
    return " OR ".join(pieces) if pieces else "false"


def _sort_time(has: Any) -> str:
    if has("datetime") and has("start_datetime"):
        return "coalesce(datetime, start_datetime)"
    if has("datetime"):
        return "datetime"
    return "start_datetime" if has("start_datetime") else "NULL"


def _lat_overlap(bbox: list[float] | None, extent: tuple[float, float]) -> bool:
    return bbox is None or (bbox[1] <= extent[1] and bbox[3] >= extent[0])


def _compact_params(sql: str, params: list[Any]) -> tuple[str, list[Any]]:
    """Renumber the `$n` parameters the SQL uses and drop the others: DuckDB refuses unused parameters, and a
    comparison that can never match (a property absent from some parts) drops its literal from the text."""
    out: list[str] = []
    kept: list[Any] = []
    numbers: dict[int, int] = {}
    i = 0
    while i < len(sql):
        c = sql[i]
        if c in "'\"":  # copy quoted text whole: a '$1' inside a literal or identifier is not a parameter
            end = i + 1
            while end < len(sql) and not (sql[end] == c and sql[end + 1 : end + 2] != c):
                end += 2 if sql[end] == c else 1
            out.append(sql[i : end + 1])
            i = end + 1
            continue
        match = _PARAM.match(sql, i) if c == "$" else None
        if match:
            old = int(match.group(1))
            if old not in numbers:
                kept.append(params[old - 1])
                numbers[old] = len(kept)
            out.append(f"${numbers[old]}")
            i = match.end()
            continue
        out.append(c)
        i += 1
    return "".join(out), kept


_PARAM = re.compile(r"\$(\d+)")


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _first_line(exc: Exception) -> str:
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


# ---------------------------------------------------------------------------------------------------- fields
def apply_fields(item: dict[str, Any], fields: Fields) -> dict[str, Any]:
    """STAC fields extension: with `include`, only those paths (plus `type`, `id` and `properties`, maybe empty);
    then drop `exclude`.
    A bare name that is not an item field is a property (`eo:cloud_cover` = `properties.eo:cloud_cover`)."""
    out: dict[str, Any] = item
    if fields.include:
        out = {k: item[k] for k in ("type", "id") if k in item}
        out["properties"] = {}
        for path in fields.include:
            keys = _path(path)
            value = _get(item, keys)
            if value is not _MISSING:
                _set(out, keys, value)
    else:
        out = orjson.loads(orjson.dumps(item))  # a copy we may cut
    for path in fields.exclude:
        _delete(out, _path(path))
    return out


_MISSING = object()


def _path(name: str) -> list[str]:
    if name in _ITEM_FIELDS or name.startswith(tuple(f + "." for f in _ITEM_FIELDS)):
        head, _, rest = name.partition(".")
        return [head, rest] if rest and head == "properties" else [head, *([rest] if rest else [])]
    return ["properties", name]


def _get(item: Mapping[str, Any], keys: list[str]) -> Any:
    node: Any = item
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return _MISSING
        node = node[key]
    return node


def _set(item: dict[str, Any], keys: list[str], value: Any) -> None:
    node = item
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value


def _delete(item: dict[str, Any], keys: list[str]) -> None:
    node: Any = item
    for key in keys[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(keys[-1], None)


# ---------------------------------------------------------------------------------------------------- explain
def _plan_summary(plan: dict[str, Any]) -> str:
    lines = [
        f"latency {plan.get('latency', 0) * 1000:.1f} ms, rows scanned {plan.get('cumulative_rows_scanned', 0):,}, "
        f"bytes read {plan.get('total_bytes_read', 0):,}"
    ]

    def walk(node: dict[str, Any], depth: int) -> None:
        name = node.get("operator_name") or node.get("operator_type")
        if name and name != "EXPLAIN_ANALYZE":
            info = node.get("extra_info") or {}
            detail = []
            for key in ("Function", "Filters", "Total Files Read", "Join Type", "Order By", "Aggregates"):
                if key in info:
                    value = info[key]
                    text = value if isinstance(value, str) else "; ".join(map(str, value))
                    detail.append(f"{key.lower()}: {' '.join(text.split())[:160]}")
            lines.append(
                f"{'  ' * depth}{name.strip()}: {node.get('operator_cardinality', 0):,} rows, "
                f"{node.get('operator_timing', 0) * 1000:.1f} ms" + (f" [{'; '.join(detail)}]" if detail else "")
            )
            depth += 1
        for child in node.get("children") or ():
            walk(child, depth)

    walk(plan, 0)
    return "\n".join(lines)


def _explain_text(notes: dict[str, Any], plan: str | None) -> str:
    lines = [
        f"parts in version: {notes['parts_in_version']}",
        f"after provider/collection: {notes['parts_after_provider_collection']}",
        f"after datetime (manifest + footer stats): {notes['parts_after_datetime']}",
        f"after bbox latitude: {notes['parts_after_bbox']}",
        f"after id index: {notes['parts_after_ids']}" + (f" ({notes['id_index']})" if notes.get("id_index") else ""),
        f"parts read: {notes['parts_read']} (filtered through {notes['narrow_copies']} narrow copies); "
        f"whole rows fetched: {notes['rows_fetched_from_parts']} "
        f"({notes.get('parts_read_whole_rows', 0)} part(s) without a row copy read whole)",
        f"time: {notes['ms_search']} ms searching, {notes['ms_fetch']} ms fetching rows",
    ]
    if notes.get("id_index_built_ms"):
        lines.append(f"id index built in {notes['id_index_built_ms']} ms")
    if plan:
        lines += ["DuckDB EXPLAIN ANALYZE:", plan]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------- part rows
class _PartReader:
    """Whole rows of part files, read with pyarrow as harvester.reader does (so items come back identical):
    only the row groups holding the wanted rows. Open files are kept (parts never change)."""

    def __init__(self, storage: Any) -> None:
        self.storage = storage
        self._files: dict[str, pq.ParquetFile] = {}
        self._http: dict[str, _HttpFile] = {}
        self._fs: tuple[Any, str] | None = None
        self._lock = threading.Lock()  # parts are opened from a thread pool

    def close(self) -> None:
        for pf in self._files.values():
            pf.close()
        self._files.clear()
        self._http.clear()

    def _open(self, path: str) -> pq.ParquetFile:
        with self._lock:
            return self._open_locked(path)

    def _open_locked(self, path: str) -> pq.ParquetFile:
        pf = self._files.get(path)
        if pf is None:
            if isinstance(self.storage, LocalStorage):
                pf = pq.ParquetFile(str(self.storage.root / path))
            elif isinstance(self.storage, S3Storage):
                if self._fs is None:
                    self._fs = arrow_filesystem(self.storage)
                fs, prefix = self._fs
                pf = pq.ParquetFile(fs.open_input_file(prefix + path), pre_buffer=True)
            elif isinstance(self.storage, HttpStorage):
                self._http[path] = _HttpFile(self.storage, path)
                pf = pq.ParquetFile(self._http[path])
            else:
                raise StoreError(f"cannot read parts of {self.storage.url}")
            for old in list(self._files)[: max(0, len(self._files) - 511)]:  # keep at most 512 open
                self._files.pop(old)
                self._http.pop(old, None)
            self._files[path] = pf
        return pf

    def columns(self, path: str, names: list[str]) -> pa.Table:
        """Whole columns of one part (for its narrow copy), in row order."""
        try:
            pf = self._open(path)
            raw = self._http.get(path)
            if raw is not None:
                for g in range(pf.metadata.num_row_groups):
                    raw.prefetch(*_group_span(pf.metadata.row_group(g)))
            table = pf.read(columns=names)
            if raw is not None:
                raw.forget()
            return table
        except pa.ArrowException as exc:
            raise OSError(f"cannot read part {path}: {exc}") from None

    def rows(self, path: str, numbers: list[int]) -> pa.Table:
        """The rows `numbers` (in that order) of one part."""
        try:
            pf = self._open(path)
            meta = pf.metadata
            starts = [0]
            for g in range(meta.num_row_groups):
                starts.append(starts[-1] + meta.row_group(g).num_rows)
            groups = sorted({bisect.bisect_right(starts, n) - 1 for n in numbers})
            raw = self._http.get(path)
            if raw is not None:
                for g in groups:
                    raw.prefetch(*_group_span(meta.row_group(g)))
            table = pf.read_row_groups(groups)
            if raw is not None:
                raw.forget()
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot read part {path}: {exc}") from None
        base = {g: sum(meta.row_group(x).num_rows for x in groups if x < g) for g in groups}
        take = [base[g] + n - starts[g] for n in numbers for g in [bisect.bisect_right(starts, n) - 1]]
        return table.take(pa.array(take, pa.int64()))


def _group_span(group: Any) -> tuple[int, int]:
    start = None
    end = 0
    for c in range(group.num_columns):
        column = group.column(c)
        first = column.data_page_offset
        if column.has_dictionary_page and column.dictionary_page_offset is not None:
            first = min(first, column.dictionary_page_offset)
        start = first if start is None else min(start, first)
        end = max(end, first + column.total_compressed_size)
    return start or 0, end


class _HttpFile(io.RawIOBase):
    """A part file over HTTP for pyarrow: reads become range requests (a row group is fetched in one), or one
    whole download when the server ignores ranges (python -m http.server)."""

    def __init__(self, storage: HttpStorage, key: str) -> None:
        super().__init__()
        self.storage = storage
        self.url = storage.uri(key)
        self._pos = 0
        self._chunks: list[tuple[int, bytes]] = []
        head = storage.session.head(self.url, timeout=storage.timeout)
        if head.status_code >= 400:
            raise OSError(f"{self.url} answered HTTP {head.status_code}")
        self.ranges = head.headers.get("Accept-Ranges", "").lower() == "bytes"
        length = head.headers.get("Content-Length")
        if not self.ranges or length is None:
            body = self._get(None)
            self.size = len(body)
            self._chunks = [(0, body)]
        else:
            self.size = int(length)
            tail = max(0, self.size - 256 * 1024)  # the footer, in one request
            self._chunks = [(tail, self._get((tail, self.size)))]
        self._keep = list(self._chunks)

    def _get(self, span: tuple[int, int] | None) -> bytes:
        import requests

        headers = {"Range": f"bytes={span[0]}-{span[1] - 1}"} if span else {}
        try:
            response = self.storage.session.get(self.url, headers=headers, timeout=self.storage.timeout)
        except requests.RequestException as exc:
            raise OSError(f"cannot read {self.url}: {type(exc).__name__}") from None
        if response.status_code >= 400:
            raise OSError(f"{self.url} answered HTTP {response.status_code}")
        body = bytes(response.content)
        if span and response.status_code == 200:  # range ignored: the whole file came
            return body[span[0] : span[1]]
        return body

    def prefetch(self, start: int, end: int) -> None:
        if not any(s <= start and end <= s + len(b) for s, b in self._chunks):
            self._chunks.append((start, self._get((start, min(end, self.size)))))

    def forget(self) -> None:
        self._chunks = list(self._keep)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.size - self._pos)
        if n <= 0:
            return 0
        start, end = self._pos, self._pos + n
        chunk = next(((s, b) for s, b in self._chunks if s <= start and end <= s + len(b)), None)
        data = chunk[1][start - chunk[0] : end - chunk[0]] if chunk else self._get((start, end))
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


# ---------------------------------------------------------------------------------------------------- entry point
def search(
    root: str,
    *,
    version: int | None = None,
    token: str | None = None,
    explain: bool = False,
    cache: str | Path | None = None,
    arrow: bool = False,
    **params: Any,
) -> SearchResult:
    """One search (see the module docstring for parameters: bbox, intersects, datetime, collections, providers,
    ids, filter, filter_lang, sortby, limit, fields, merge). With `token`, the version is the token's; with
    `arrow`, `result.table` holds the page's rows."""
    query = make_query(**params)
    if token is not None:
        token_version = decode_token(token)[0]
        if version is not None and version != token_version:
            raise InputError(f"the page token belongs to version {token_version}, not {version}")
        version = token_version
    with Searcher(root, version, cache=cache) as searcher:
        return searcher.search(query, token=token, explain=explain, arrow=arrow)


def combine(results: Sequence[SearchResult], max_items: int | None = None) -> SearchResult:
    """Consecutive pages of one search as one result (the last page's token, at most `max_items` results)."""
    if len(results) == 1 and max_items is None:
        return results[0]
    first, last = results[0], results[-1]
    hits = [h for r in results for h in r.hits][:max_items]
    items = [i for r in results for i in r.items][:max_items]
    tables = [t for r in results for t in r._rows][:max_items] if all(r._rows or not r.hits for r in results) else []
    stats = {**first.stats, "pages": len(results)}
    return SearchResult(first.query, first.version, first.offset, hits, items, last.next_token, None, stats, tables)


def iter_pages(searcher: Searcher, query: Query) -> Iterator[SearchResult]:
    """Every page of a search, following the tokens."""
    token = None
    while True:
        result = searcher.search(query, token=token)
        yield result
        if not result.next_token:
            return
        token = result.next_token


__all__ = [
    "DEFAULT_LIMIT",
    "Fields",
    "Query",
    "SearchResult",
    "Searcher",
    "apply_fields",
    "combine",
    "decode_token",
    "iter_pages",
    "make_query",
    "search",
]
