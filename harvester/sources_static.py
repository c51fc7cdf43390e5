"""Static STAC catalogs on local disk, http(s) or S3: link resolution and examining documents (pure), and
fetching them (I/O edge). The crawl's scheduler is harvester.static_crawl, its workers harvester.static_workers.

The crawl starts at a root catalog, collection or ItemCollection and follows `child`, `item` and `items` links
(and `next` inside ItemCollections), relative or absolute, Windows-style or not, STAC 0.6 to 1.1 (pre-1.0
objects carry no `type`: their shape tells). Only targets under an allow-list of URL prefixes are fetched (by
default the root's own folder); the rest are recorded, not fetched. Every document is visited once (loops and
diamonds are recorded). Each fetch asks "changed since?" with the validators a previous run kept (ETag /
Last-Modified over HTTP, ETag on S3, mtime and size on disk), then compares content hashes, so an unchanged
tree costs one conditional request per document and stages nothing.

Examining a document gives its *journal line* (a JSON-able dict: validators, links, item ids, failure), the
links that lead on and the raw records read from it; the driver journals the line before those records are
staged, which makes a killed crawl resumable (see harvester.harvest_static).
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import stat
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson

from harvester.errors import InputError
from harvester.http import (
    BodyTooLargeError,
    HttpResponse,
    HttpStatusError,
    HttpTransientError,
    NotFoundError,
    redact,
)
from harvester.sources_file import RawRecord, stac_kind

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
# Link relations that lead to more of the tree, and what the target is expected to be.
CONTAINER_RELS = frozenset({"child", "items"})
ITEM_RELS = frozenset({"item"})
FAILURES = ("not_found", "too_large", "failed", "invalid_json", "not_stac")


# ------------------------------------------------------------------------------------------- pure: URLs


def root_url(location: str) -> str:
    """A root given as a path, file://, http(s):// or s3:// location → its canonical URL."""
    location = location.strip()
    match = _SCHEME.match(location)
    if match and len(match.group(1)) > 1:  # a one-letter "scheme" is a Windows drive
        scheme = match.group(1).lower()
        if scheme not in ("file", "http", "https", "s3"):
            raise InputError(f"unsupported catalog location {location!r}: use a path, file://, http(s):// or s3://")
        url = canonical(location)
        if url is None:
            raise InputError(f"cannot read catalog location {location!r}")
        return url
    path = os.path.abspath(os.path.expanduser(location))
    if os.path.isdir(path):
        for name in ("catalog.json", "collection.json"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
    return "file://" + path


def canonical(url: str) -> str | None:
    """Scheme and host in lower case, dot segments removed, fragment dropped (and the query, for files and S3):
    the form documents are known by (visited set, state, allow-list)."""
    try:
        parts = urlsplit(url.replace("\\", "/"))
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme == "file":
        # file:/p, file:///p and file://localhost/p are the same file
        netloc = "" if parts.netloc in ("", "localhost") else parts.netloc
        return "file://" + netloc + _clean_path(parts.path or "/")
    if scheme in ("http", "https"):
        if not parts.netloc:
            return None
        return urlunsplit((scheme, parts.netloc.lower(), _clean_path(parts.path or "/"), parts.query, ""))
    if scheme == "s3":
        if not parts.netloc:
            return None
        return f"s3://{parts.netloc}{_clean_path(parts.path or '/')}"
    return None


def _clean_path(path: str) -> str:
    trailing = path.endswith("/") and path != "/"
    clean = posixpath.normpath(path)
    if clean.startswith("//"):
        clean = "/" + clean.lstrip("/")  # normpath keeps a leading "//"; a URL path does not need it
    return clean + "/" if trailing else clean


def resolve(base: str, href: str) -> str | None:
    """The canonical URL an href in the document at `base` points to; None for an href that names nothing.

    Backslashes count as slashes (catalogs written on Windows), absolute hrefs stand alone, a leading "/" is
    relative to the host (or the bucket, or the file system root), anything else to the document's folder;
    ".." never climbs above the root of the path (as in browsers) — the allow-list then decides."""
    href = href.strip().replace("\\", "/")
    if not href or href.startswith("#"):
        return None
    match = _SCHEME.match(href)
    if match and len(match.group(1)) > 1:
        return canonical(href)
    base_parts = urlsplit(base)
    target = urlsplit(href)
    if href.startswith("//"):  # scheme-relative
        return canonical(f"{base_parts.scheme}:{href}")
    path = target.path if target.path.startswith("/") else posixpath.dirname(base_parts.path) + "/" + target.path
    if not target.path:
        path = base_parts.path
    query = target.query if base_parts.scheme in ("http", "https") else ""
    return canonical(urlunsplit((base_parts.scheme, base_parts.netloc, path, query, "")))


def default_prefix(root: str) -> str:
    """The root's own folder: what a crawl may read unless told otherwise."""
    parts = urlsplit(root)
    folder = posixpath.dirname(parts.path).rstrip("/") + "/"
    return urlunsplit((parts.scheme, parts.netloc, folder, "", ""))


def allow_prefix(prefix: str) -> str:
    """An --allow value (URL or path) as a canonical URL prefix ending in "/" (a prefix "…/data" must not let
    "…/database" in)."""
    match = _SCHEME.match(prefix.strip())
    if match and len(match.group(1)) > 1:
        url = canonical(prefix.strip())
        if url is None:
            raise InputError(f"cannot use {prefix!r} as an --allow prefix")
    else:
        url = "file://" + os.path.abspath(os.path.expanduser(prefix.strip()))
    return url if url.endswith("/") else url + "/"


def allowed(url: str, prefixes: Sequence[str]) -> bool:
    return any(url.startswith(p) for p in prefixes)


def url_key(url: str) -> int:
    """A 64-bit key for a URL: sets and sorted arrays of these stay small for millions of documents."""
    return int.from_bytes(hashlib.blake2b(url.encode(), digest_size=8).digest(), "little")


# -------------------------------------------------------------------------------------- pure: documents


def classify(obj: Any) -> str | None:
    """Catalog, Collection, Item or ItemCollection; pre-1.0 objects without `type` by their shape."""
    kind = stac_kind(obj)
    if kind == "FeatureCollection":
        return "ItemCollection" if isinstance(obj.get("features"), list) else None
    if kind is None and isinstance(obj, dict) and "id" in obj and isinstance(obj.get("properties"), dict):
        return "Item"  # 0.x items without "type"
    return kind


@dataclass(frozen=True, slots=True)
class Links:
    containers: list[str] = field(default_factory=list)  # child / items / next targets
    items: list[str] = field(default_factory=list)
    invalid: int = 0  # links without a usable href


def links_of(doc: Mapping[str, Any], base: str, *, next_links: bool = False) -> Links:
    """The links of a catalog, collection (or, with next_links, ItemCollection) that lead on, resolved."""
    out = Links()
    invalid = 0
    raw = doc.get("links")
    for link in raw if isinstance(raw, list) else ():
        if not isinstance(link, dict):
            invalid += 1
            continue
        rel = link.get("rel")
        if rel not in CONTAINER_RELS and rel not in ITEM_RELS and not (next_links and rel == "next"):
            continue
        href = link.get("href")
        if link.get("method", "GET") != "GET" or link.get("body") is not None:
            continue  # an API page link (POST), not a document
        target = resolve(base, href) if isinstance(href, str) else None
        if target is None:
            invalid += 1
        elif rel in ITEM_RELS:
            out.items.append(target)
        else:
            out.containers.append(target)
    return Links(out.containers, out.items, invalid)


def content_hash(body: bytes) -> str:
    return hashlib.blake2b(body, digest_size=16).hexdigest()


# ----------------------------------------------------------------------------------------------- fetching


@dataclass(frozen=True, slots=True)
class Validators:
    """What a later run sends back to ask "changed since?"."""

    etag: str | None = None
    last_modified: str | None = None
    mtime_ns: int | None = None
    size: int | None = None


@dataclass(frozen=True, slots=True)
class Fetched:
    status: str  # ok | unchanged | not_found | too_large | failed
    body: bytes | None = None
    validators: Validators = Validators()
    url: str | None = None  # after redirects
    message: str = ""
    size: int | None = None


class Fetcher(Protocol):
    def fetch(self, url: str, previous: Validators | None, max_bytes: int) -> Fetched: ...
    def close(self) -> None: ...


class FileFetcher:
    """Local files; "unchanged" is the same mtime and size as before."""

    def fetch(self, url: str, previous: Validators | None, max_bytes: int) -> Fetched:
        path = urlsplit(url).path
        try:
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                return Fetched("failed", message=f"{path} is a folder")
            validators = Validators(mtime_ns=info.st_mtime_ns, size=info.st_size)
            if previous and previous.mtime_ns == info.st_mtime_ns and previous.size == info.st_size:
                return Fetched("unchanged", validators=validators)
            if info.st_size > max_bytes:
                return Fetched("too_large", size=info.st_size, message=f"{info.st_size:,} bytes")
            with open(path, "rb") as handle:
                body = handle.read(max_bytes + 1)
        except (FileNotFoundError, NotADirectoryError):
            return Fetched("not_found", message="no such file")
        except OSError as exc:
            return Fetched("failed", message=exc.strerror or str(exc))
        if len(body) > max_bytes:  # grew since the stat
            return Fetched("too_large", size=len(body), message=f"over {max_bytes:,} bytes")
        return Fetched("ok", body, validators)

    def close(self) -> None:
        pass


def conditional_headers(previous: Validators | None) -> dict[str, str]:
    """If-None-Match / If-Modified-Since from what a previous run kept."""
    headers = {}
    if previous and previous.etag:
        headers["If-None-Match"] = previous.etag
    if previous and previous.last_modified:
        headers["If-Modified-Since"] = previous.last_modified
    return headers


def http_fetched(url: str, previous: Validators | None, result: HttpResponse | Exception) -> Fetched:
    """An http(s) answer (harvester.http_multi) as a Fetched; a 304 is "unchanged"."""
    if isinstance(result, NotFoundError):
        return Fetched("not_found", message=str(result))
    if isinstance(result, BodyTooLargeError):
        return Fetched("too_large", size=result.size, message=str(result))
    if isinstance(result, (HttpTransientError, HttpStatusError, InputError)):
        return Fetched("failed", message=str(result))
    if isinstance(result, Exception):
        raise result  # a bug, not bad input
    if result.status == 304:
        if previous is None:
            return Fetched("failed", message=f"{redact(url)}: 304 to an unconditional request")
        kept = Validators(result.etag or previous.etag, result.last_modified or previous.last_modified)
        return Fetched("unchanged", validators=kept)
    validators = Validators(result.etag, result.last_modified, size=len(result.body))
    return Fetched("ok", result.body, validators, url=canonical(result.url))


class S3Fetcher:
    """s3:// with conditional GETs on the ETag (a 304 costs no body)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def fetch(self, url: str, previous: Validators | None, max_bytes: int) -> Fetched:
        from botocore.exceptions import BotoCoreError, ClientError

        parts = urlsplit(url)
        bucket, key = parts.netloc, parts.path.lstrip("/")
        extra = {"IfNoneMatch": previous.etag} if previous and previous.etag else {}
        try:
            response = self.client.get_object(Bucket=bucket, Key=key, **extra)
            size = int(response["ContentLength"])
            validators = Validators(etag=response.get("ETag"), size=size)
            if size > max_bytes:
                response["Body"].close()
                return Fetched("too_large", size=size, message=f"{size:,} bytes")
            body = response["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("304", "NotModified"):
                return Fetched("unchanged", validators=previous or Validators())
            if code in ("NoSuchKey", "404", "NotFound"):
                return Fetched("not_found", message=f"s3://{bucket}/{key}: {code}")
            return Fetched("failed", message=f"s3://{bucket}/{key}: {code}")
        except (BotoCoreError, OSError) as exc:
            return Fetched("failed", message=f"s3://{bucket}/{key}: {type(exc).__name__}: {exc}")
        return Fetched("ok", body, validators)

    def close(self) -> None:
        pass


def s3_client(max_connections: int) -> Any:
    """boto3 with standard retries and a connection pool as large as the crawl's concurrency."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 10},
        s3={"addressing_style": "path"},
        max_pool_connections=max_connections,
    )
    return boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None, config=config)


class Fetchers:
    """One blocking fetcher per scheme but http(s) (which harvester.http_multi fetches), made on first use (an
    allow-list may span schemes)."""

    def __init__(self, *, max_connections: int) -> None:
        self.max_connections = max_connections
        self._made: dict[str, Fetcher] = {}
        self._lock = threading.Lock()

    def for_url(self, url: str) -> Fetcher:
        scheme = url.split(":", 1)[0]
        scheme = "http" if scheme == "https" else scheme
        with self._lock:
            if scheme not in self._made:
                self._made[scheme] = self._make(scheme)
            return self._made[scheme]

    def _make(self, scheme: str) -> Fetcher:
        if scheme == "file":
            return FileFetcher()
        if scheme == "s3":
            return S3Fetcher(s3_client(self.max_connections))
        raise InputError(f"unsupported scheme {scheme!r}")

    def close(self) -> None:
        for fetcher in self._made.values():
            fetcher.close()


# ------------------------------------------------------------------------------------------------ crawling


@dataclass(frozen=True, slots=True)
class PrevDoc:
    """What the previous committed crawl knew about a document."""

    kind: str
    status: str
    validators: Validators
    content_hash: str | None
    child_links: tuple[str, ...]
    item_links: tuple[str, ...]
    item_ids: tuple[str, ...]


class Previous(Protocol):
    def get(self, url: str) -> PrevDoc | None: ...


@dataclass(frozen=True, slots=True)
class CrawlOptions:
    allow: tuple[str, ...]  # canonical URL prefixes
    max_item_bytes: int  # items above this are quarantined unread (records.DEFAULT_MAX_ITEM_BYTES by default)
    max_document_bytes: int = 64 << 20
    concurrency: int = 16  # fetches in flight (and connections: each fetcher's pool is bounded)
    force: bool = False  # ignore validators and content hashes: read and stage everything again


@dataclass(frozen=True, slots=True)
class Resume:
    """Where an interrupted crawl stopped: documents already settled, and what to visit next."""

    visited: set[int]
    frontier: list[tuple[str, str, str | None]]  # (url, "container" | "item", parent url)
    parents: dict[int, int]  # container key → parent container key (for telling loops from diamonds)
    staged: dict[str, set[str]]  # url → record suffixes already staged (documents to read again only in part)


@dataclass(frozen=True, slots=True)
class Task:
    url: str
    expect: str  # "container" | "item"
    parent: str | None
    prev: PrevDoc | None
    skip: frozenset[str]


@dataclass(slots=True)
class Outcome:
    task: Task
    line: dict[str, Any]
    records: list[RawRecord]
    containers: list[str]
    items: list[str]


def asked(task: Task, options: CrawlOptions) -> tuple[Validators | None, int]:
    """The validators to send ("changed since?") and the size cap of a task's fetch."""
    use_prev = task.prev is not None and not options.force
    cap = options.max_item_bytes if task.expect == "item" else options.max_document_bytes
    return (task.prev.validators if use_prev and task.prev else None), cap


def examine(task: Task, fetched: Fetched, options: CrawlOptions) -> Outcome:
    """Say what a fetched document is, what it holds and where it leads (runs in the crawl's workers, see
    harvester.static_workers). Never raises for bad input: failures are statuses in the journal line."""
    prev = task.prev
    use_prev = prev is not None and not options.force
    cap = asked(task, options)[1]
    v = fetched.validators
    line: dict[str, Any] = {
        "href": task.url,
        "kind": task.expect,
        "status": fetched.status,
        "etag": v.etag,
        "last_modified": v.last_modified,
        "mtime_ns": v.mtime_ns,
        "size": v.size,
    }
    outcome = Outcome(task, line, [], [], [])
    digest = content_hash(fetched.body) if fetched.body is not None else None
    if prev is not None and use_prev and (fetched.status == "unchanged" or _same_bytes(digest, prev)):
        line["status"] = "unchanged"
        for name in ("etag", "last_modified", "mtime_ns", "size"):  # a 304 need not repeat every validator
            if line[name] is None:
                line[name] = getattr(prev.validators, name)
        _carry(line, outcome, prev)
        return outcome
    if fetched.status != "ok":
        line["message"] = fetched.message
        if prev is not None and prev.status == fetched.status:
            line["same"] = True  # failing as last time: the state to commit has not changed
        if fetched.status == "too_large" and task.expect == "item" and not line.get("same"):
            # An item candidate too large to read: quarantined as item_too_large through the records path
            # (once: the next runs find it as large as before).
            _record(outcome, RawRecord(task.url, None, None, size=fetched.size or cap + 1), "")
        if fetched.status != "not_found" and prev is not None:
            _carry(line, outcome, prev, follow=False)  # kept as it was: a failure is not a deletion
            line["retain"] = True
        return outcome
    body = fetched.body or b""
    base = fetched.url or task.url
    line["content_hash"] = digest
    line["size"] = len(body)
    if prev is not None and _same_bytes(digest, prev):
        line["same"] = True  # read again (--force): the same bytes as committed
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        line["status"] = "invalid_json"
        line["message"] = f"cannot parse JSON: {exc}"
        if task.expect == "item":  # an unreadable item candidate is quarantined (invalid_json / not_utf8)
            _record(outcome, RawRecord(task.url, body, size=len(body)), "")
        if prev is not None:
            _carry(line, outcome, prev, follow=False)
            line["retain"] = True
        return outcome
    kind = classify(obj)
    if kind in ("Catalog", "Collection"):
        line["kind"] = kind.lower()
        found = links_of(obj, base)
        outcome.containers, outcome.items = found.containers, found.items
        line["child_links"], line["item_links"] = found.containers, found.items
        if found.invalid:
            line["invalid_links"] = found.invalid
        if kind == "Collection":
            line["collection"] = obj
    elif kind == "ItemCollection":
        line["kind"] = "itemcollection"
        found = links_of(obj, base, next_links=True)
        outcome.containers = found.containers
        line["child_links"] = found.containers
        ids = []
        for i, feature in enumerate(obj["features"]):
            if classify(feature) in ("Catalog", "Collection"):
                continue  # not an item; an ItemCollection does not hold sub-catalogs
            if isinstance(feature, dict) and isinstance(feature.get("id"), str):
                ids.append(feature["id"])
            suffix = f"#/features/{i}"
            _record(outcome, RawRecord(task.url + suffix, None, feature, size=_size(feature)), suffix)
        line["item_ids"] = ids
    elif kind == "Item" or task.expect == "item":
        # An item link to something that is not an item still takes the records path: it is quarantined with
        # a reason (not_an_item, ...) like any bad item.
        line["kind"] = "item"
        if isinstance(obj, dict) and isinstance(obj.get("id"), str):
            line["item_ids"] = [obj["id"]]
        _record(outcome, RawRecord(task.url, None, obj, size=len(body)), "")  # normalised where it was parsed
    else:
        line["status"] = "not_stac"
        line["message"] = "not a STAC catalog, collection, item or ItemCollection"
    return outcome


def _same_bytes(digest: str | None, prev: PrevDoc) -> bool:
    """Read again, and the same bytes as last time."""
    return digest is not None and prev.content_hash == digest


def _record(outcome: Outcome, record: RawRecord, suffix: str) -> None:
    outcome.line.setdefault("staged", []).append(suffix)
    if suffix not in outcome.task.skip:  # a resumed crawl staged this one already
        outcome.records.append(record)


def _carry(line: dict[str, Any], outcome: Outcome, prev: PrevDoc, *, follow: bool = True) -> None:
    """Keep what the previous run knew (links, item ids, content hash); with `follow`, crawl on below it."""
    line["kind"] = prev.kind
    line.setdefault("content_hash", prev.content_hash)
    line["child_links"] = list(prev.child_links)
    line["item_links"] = list(prev.item_links)
    line["item_ids"] = list(prev.item_ids)
    # The same bytes as an unreadable document are still unreadable; a document whose fetch failed last time
    # and that now hashes like before (its last good content) is fine again.
    line["prev_status"] = prev.status if prev.status in ("invalid_json", "not_stac") else "ok"
    if follow:
        outcome.containers = list(prev.child_links)
        outcome.items = list(prev.item_links)


def _size(obj: Any) -> int:
    try:
        return len(orjson.dumps(obj))
    except TypeError:
        return 0


def describe(url: str) -> str:
    """A URL for messages: file:// shown as a path, credentials never shown."""
    return url[len("file://") :] if url.startswith("file://") else redact(url)
