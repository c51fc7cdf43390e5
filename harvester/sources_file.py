"""The simplest source: a local file or an http(s) URL holding NDJSON, an ItemCollection, a JSON list of items
or a single item (I/O edge). Yields raw records with where they came from; never parses beyond what it must."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, cast

import orjson

from harvester.errors import InputError

MAX_DOCUMENT_BYTES = 1 << 30  # a single JSON document is parsed whole; NDJSON streams


@dataclass(frozen=True, slots=True)
class RawRecord:
    href: str
    raw: bytes | None  # an NDJSON line (parsed by a worker) ...
    obj: Any = None  # ... or an object already parsed out of a JSON document
    size: int = 0


@dataclass(slots=True)
class FileSummary:
    """What a source held besides items: collections (kept as metadata) and catalogs (reported, not items)."""

    collections: list[dict[str, Any]] = field(default_factory=list)
    catalogs: list[str] = field(default_factory=list)

    def keep(self, obj: Any, href: str) -> bool:
        """Take `obj` if it is a collection or catalog; False when it should go on as an item candidate."""
        kind = stac_kind(obj)
        if kind == "Collection":
            self.collections.append(obj)
        elif kind == "Catalog":
            self.catalogs.append(href)
        return kind in ("Collection", "Catalog")


def stac_kind(obj: Any) -> str | None:
    """Item, Collection or Catalog, also for pre-1.0 objects that carry no `type` (their shape tells)."""
    if not isinstance(obj, dict):
        return None
    kind = obj.get("type")
    if kind in ("Feature", "Collection", "Catalog", "FeatureCollection"):
        return "Item" if kind == "Feature" else str(kind)
    if kind is None and "id" in obj:
        if "extent" in obj and ("license" in obj or "description" in obj):
            return "Collection"  # 0.9 collections may carry `properties` (commons extension)
        if "properties" not in obj and "links" in obj and "description" in obj:
            return "Catalog"
    return None


def open_source(location: str, *, timeout: float = 60.0) -> tuple[BinaryIO, str]:
    """Open a path, file:// or http(s):// URL for streaming reads."""
    if location.startswith(("http://", "https://")):
        import requests

        try:
            response = requests.get(location, stream=True, timeout=timeout)
            response.raise_for_status()
        except requests.RequestException as exc:
            raise InputError(f"cannot fetch {location}: {exc}") from None
        response.raw.decode_content = True
        return cast(BinaryIO, response.raw), location
    path = Path(location[len("file://") :] if location.startswith("file://") else location)
    try:
        return open(path, "rb"), str(path.resolve())
    except OSError as exc:
        raise InputError(f"cannot read {location}: {exc.strerror or exc}") from None


def read_records(location: str, summary: FileSummary) -> Iterator[RawRecord]:
    """Raw records of a file or URL. Collections met on the way are added to `summary.collections`."""
    stream, href = open_source(location)
    with stream:
        head = stream.read(1 << 16)
        first = head.lstrip()[:1]
        if not first:
            return
        if first == b"[" or (first == b"{" and not _is_ndjson(head)):
            data = head + stream.read(MAX_DOCUMENT_BYTES)
            if stream.read(1):
                raise InputError(f"{location} is a single JSON document over 1 GiB: convert it to NDJSON")
            yield from _document(data, href, summary)
            return
        yield from _lines(head, stream, href)


def _is_ndjson(head: bytes) -> bool:
    """NDJSON when the first line is a whole JSON value on its own."""
    line = head.lstrip().split(b"\n", 1)[0]
    try:
        orjson.loads(line)
        return True
    except orjson.JSONDecodeError:
        return False


def _lines(head: bytes, stream: BinaryIO, href: str) -> Iterator[RawRecord]:
    buffer = head
    number = 0
    while True:
        chunk = stream.read(1 << 20)
        buffer += chunk
        lines = buffer.split(b"\n")
        buffer = lines.pop() if chunk else b""
        for line in lines:
            number += 1
            if line.strip():
                yield RawRecord(f"{href}#L{number}", line, size=len(line))
        if not chunk:
            if buffer.strip():
                yield RawRecord(f"{href}#L{number + 1}", buffer, size=len(buffer))
            return


def _document(data: bytes, href: str, summary: FileSummary) -> Iterator[RawRecord]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        yield RawRecord(href, data, size=len(data))  # the worker turns it into an invalid_json rejection
        del exc
        return
    if isinstance(doc, dict) and isinstance(doc.get("features"), list):  # an ItemCollection / API page
        members, base = doc["features"], f"{href}#/features"
    elif isinstance(doc, dict) and isinstance(doc.get("collections"), list) and "id" not in doc:
        members, base = doc["collections"], f"{href}#/collections"  # a /collections response
    elif isinstance(doc, list):
        members, base = doc, f"{href}#"
    else:
        if not summary.keep(doc, href):
            yield RawRecord(href, None, doc, size=len(data))
        return
    for i, obj in enumerate(members):
        if not summary.keep(obj, f"{base}/{i}"):
            yield RawRecord(f"{base}/{i}", None, obj, size=_size(obj))


def _size(obj: Any) -> int:
    try:
        return len(orjson.dumps(obj))
    except TypeError:
        return 0
