"""Pure planning for `cscale publish`: safe file names, the catalog tree's shape, hrefs, and the JSON of catalogs,
collections and items. No I/O here; queries/publish.py drives it over a snapshot and an output.

Published tree (paths relative to --out):

    catalog.json                                   root: one child per provider
    EODC/catalog.json                              provider: one child per collection
    EODC/sentinel-2-l2a/collection.json            collection: extents and summaries from the data
    EODC/sentinel-2-l2a/parquet/part-<uuid>.parquet   the snapshot's parts (the `collection-mirror` asset)
    EODC/sentinel-2-l2a/2022/catalog.json          year → month (→ day → hour → hash buckets, only when needed)
    EODC/sentinel-2-l2a/2022/06/catalog.json       a leaf: lists at most `max_items` items
    EODC/sentinel-2-l2a/2022/06/<item>.json        items live next to the leaf catalog that lists them

Items without a collection go to a plain catalog `PROVIDER/~items/` split the same way.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

STAC_VERSION = "1.1.0"  # catalogs and collections we author; items keep their own stac_version
MEDIA_JSON = "application/json"
MEDIA_GEOJSON = "application/geo+json"
MEDIA_PARQUET = "application/vnd.apache.parquet"
MIRROR_ASSET = "collection-mirror"
MIRROR_DIR = "parquet"
NO_COLLECTION_DIR = "~items"  # `~` never occurs in a plain safe name, so no collection can take this folder
UNDATED = "undated"
STRUCTURAL_RELS = frozenset({"self", "root", "parent", "collection"})
DEFAULT_MAX_ITEMS = 2000
MAX_HASH_LEVELS = 4  # 256**4 buckets below one hour: enough for any count of items sharing a timestamp

# A name is used verbatim only when it is short, ASCII, cannot be `.`/`..` (no leading dot) and cannot be taken
# for a file the tree writes itself; anything else gets a readable slug plus a hash of the exact id.
_PLAIN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_RESERVED = frozenset({"catalog", "collection", MIRROR_DIR, UNDATED})
_SLUG_DROP = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(raw: str) -> str:
    """A file or folder name for an untrusted id: unique, deterministic, and never a path.

    Plain ids (ASCII letters, digits, `._-`, up to 128 characters, not starting with a dot, not ending in
    `.json` and not one of the tree's own names) are kept; every other id becomes `slug~hash`, where the hash
    (96 bits of BLAKE2b over the UTF-8 id) makes it unique and `~` keeps it apart from every plain name.
    Names are case-sensitive, like S3 keys and Linux file names."""
    if _PLAIN.fullmatch(raw) and not raw.lower().endswith(".json") and raw.lower() not in _RESERVED:
        return raw
    ascii_text = unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode("ascii")
    slug = _SLUG_DROP.sub("_", ascii_text).strip("._-")[:60].rstrip("._-") or "id"
    digest = hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return f"{slug}~{digest}"


def is_plain(raw: str) -> bool:
    return safe_name(raw) == raw


def group_dir(provider: str, collection: str | None) -> str:
    """The folder of one provider × collection (the collection-level node)."""
    return f"{safe_name(provider)}/{safe_name(collection) if collection is not None else NO_COLLECTION_DIR}"


# ------------------------------------------------------------------------------------------------ tree shape

TimeKey = tuple[int | None, int | None, int | None, int | None]  # year, month, day, hour (None: undated)


@dataclass(frozen=True, slots=True)
class TimeLeaf:
    """Where the items of one (group, hour) go: `leaf` is a folder; `hashed` means the hour itself holds more
    than max_items items and is split further by hash buckets of the item id."""

    gdir: str
    key: TimeKey
    leaf: str
    hashed: bool


def time_leaves(counts: Iterable[tuple[str, TimeKey, int]], max_items: int) -> list[TimeLeaf]:
    """Split each group's items by year and month, and a month further by day and hour only where it holds more
    than `max_items` items. Deterministic in the counts, so an unchanged month keeps its layout."""
    by_group: dict[str, dict[TimeKey, int]] = defaultdict(dict)
    for gdir, key, n in counts:
        by_group[gdir][key] = by_group[gdir].get(key, 0) + n
    leaves: list[TimeLeaf] = []
    for gdir, hours in by_group.items():
        months: dict[tuple[int | None, int | None], int] = defaultdict(int)
        days: dict[tuple[int | None, int | None, int | None], int] = defaultdict(int)
        for (y, m, d, _h), n in hours.items():
            months[(y, m)] += n
            days[(y, m, d)] += n
        for key, n in hours.items():
            y, m, d, h = key
            if y is None or m is None or d is None or h is None:
                leaves.append(TimeLeaf(gdir, key, f"{gdir}/{UNDATED}", months[(y, m)] > max_items))
            elif months[(y, m)] <= max_items:
                leaves.append(TimeLeaf(gdir, key, f"{gdir}/{y:04d}/{m:02d}", False))
            elif days[(y, m, d)] <= max_items:
                leaves.append(TimeLeaf(gdir, key, f"{gdir}/{y:04d}/{m:02d}/{d:02d}", False))
            else:
                leaves.append(TimeLeaf(gdir, key, f"{gdir}/{y:04d}/{m:02d}/{d:02d}/{h:02d}", n > max_items))
    return leaves


def bucket_dir(prefix: str) -> str:
    """Folders for a hash-bucket prefix (two hex digits a level): 'a3f0' → 'ha3/hf0'."""
    return "/".join(f"h{prefix[i : i + 2]}" for i in range(0, len(prefix), 2))


@dataclass(slots=True)
class Node:
    """One catalog or collection of the published tree (items excluded)."""

    path: str  # folder relative to the output root ("" for the root)
    kind: str  # root | provider | collection | catalog (a group without collection) | time
    children: set[str] = field(default_factory=set)

    @property
    def file(self) -> str:
        name = "collection.json" if self.kind == "collection" else "catalog.json"
        return f"{self.path}/{name}" if self.path else name

    @property
    def depth(self) -> int:
        return self.path.count("/") + 1 if self.path else 0


def build_tree(leaves: Iterable[str], groups: Mapping[str, bool]) -> dict[str, Node]:
    """Every node from the leaf folders up to the root. `groups` maps each group folder to whether it is a
    collection (True) or a catalog of items without collection (False); groups without items still appear."""
    nodes: dict[str, Node] = {"": Node("", "root")}

    def ensure(path: str) -> Node:
        node = nodes.get(path)
        if node is not None:
            return node
        depth = path.count("/") + 1
        if depth == 1:
            kind = "provider"
        elif depth == 2:
            kind = "collection" if groups.get(path, True) else "catalog"
        else:
            kind = "time"
        node = nodes[path] = Node(path, kind)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        ensure(parent).children.add(path)
        return node

    for gdir in groups:
        ensure(gdir)
    for leaf in leaves:
        ensure(leaf)
    return nodes


def parent_file(nodes: Mapping[str, Node], path: str) -> str | None:
    if not path:
        return None
    parent = path.rsplit("/", 1)[0] if "/" in path else ""
    return nodes[parent].file


# ------------------------------------------------------------------------------------------------ hrefs


@dataclass(frozen=True, slots=True)
class Layout:
    """How links are written: relative (a self-contained catalog, no self links) or absolute under href_base."""

    href_base: str | None = None
    max_items: int = DEFAULT_MAX_ITEMS

    def href(self, source_file: str, target: str) -> str:
        """The href to `target` (a path under the output root) written in `source_file`; a target ending in `/`
        is a folder."""
        if self.href_base is not None:
            return f"{self.href_base.rstrip('/')}/{target}"
        return relative_href(source_file, target)

    def fingerprint(self) -> dict[str, Any]:
        """What, besides an item's content and path, decides its bytes: a change rewrites everything."""
        return {"format": 1, "href_base": self.href_base, "stac_version": STAC_VERSION}


def relative_href(source_file: str, target: str) -> str:
    """`./x`, `../../x` or `./folder/` from one clean relative path to another (no `.`/`..` segments: the tree
    builds only such paths). posixpath.relpath would do, at several times the cost (it asks for the cwd)."""
    folder = target.endswith("/")
    src = source_file.split("/")[:-1]
    stripped = target.rstrip("/")
    dst = stripped.split("/") if stripped else []
    i = 0
    while i < len(src) and i < len(dst) and src[i] == dst[i]:
        i += 1
    rest = "/".join(dst[i:])
    up = "../" * (len(src) - i)
    if not rest:
        return (up or "./") if folder else (up.rstrip("/") or ".")
    return f"{up or './'}{rest}{'/' if folder else ''}"


def _link(rel: str, href: str, media: str, title: str | None = None) -> dict[str, Any]:
    link: dict[str, Any] = {"rel": rel, "href": href, "type": media}
    if title is not None:
        link["title"] = title
    return link


def item_links(item_path: str, collection_file: str | None, layout: Layout) -> list[dict[str, Any]]:
    """The structural links of a published item: root, parent (the leaf catalog next to it), collection, self."""
    leaf_catalog = posixpath.join(posixpath.dirname(item_path), "catalog.json")
    links = [
        _link("root", layout.href(item_path, "catalog.json"), MEDIA_JSON),
        _link("parent", layout.href(item_path, leaf_catalog), MEDIA_JSON),
    ]
    if collection_file is not None:
        links.append(_link("collection", layout.href(item_path, collection_file), MEDIA_JSON))
    if layout.href_base is not None:
        links.append(_link("self", layout.href(item_path, item_path), MEDIA_GEOJSON))
    return links


def publish_item(item: dict[str, Any], links: list[dict[str, Any]]) -> dict[str, Any]:
    """The item as published: ours, then its own links except the structural ones (which point into the
    source's tree); the source's absolute `self` link is kept as `via` (where the record came from). Everything
    else is left exactly as the snapshot holds it."""
    own = []
    for link in item.get("links") or ():
        rel = link.get("rel")
        if rel == "self" and str(link.get("href", "")).startswith(("http://", "https://")):
            own.append({**link, "rel": "via"})
        elif rel not in STRUCTURAL_RELS:
            own.append(link)
    item["links"] = links + own
    return item


# ------------------------------------------------------------------------------------------------ documents


def node_id(node: Node, names: Mapping[str, str]) -> str:
    """Catalog ids: the provider, the collection id, or the time path ('2022-06-15-10-ha3')."""
    if node.kind == "root":
        return "cscale"
    if node.kind in ("provider", "collection", "catalog"):
        return names[node.path]
    return "-".join(node.path.split("/")[2:])


def structural_links(nodes: Mapping[str, Node], node: Node, layout: Layout, titles: Mapping[str, str]) -> list[Any]:
    links = [_link("root", layout.href(node.file, "catalog.json"), MEDIA_JSON)]
    parent = parent_file(nodes, node.path)
    if parent is not None:
        links.append(_link("parent", layout.href(node.file, parent), MEDIA_JSON))
    if layout.href_base is not None:
        links.append(_link("self", layout.href(node.file, node.file), MEDIA_JSON))
    for child in sorted(node.children):
        child_file = nodes[child].file
        links.append(_link("child", layout.href(node.file, child_file), MEDIA_JSON, titles.get(child)))
    return links


def catalog_doc(node_id_: str, title: str, description: str, links: list[Any]) -> dict[str, Any]:
    return {
        "type": "Catalog",
        "stac_version": STAC_VERSION,
        "id": node_id_,
        "title": title,
        "description": description,
        "links": links,
    }


def item_link(leaf_file: str, item_path: str, layout: Layout) -> dict[str, Any]:
    return _link("item", layout.href(leaf_file, item_path), MEDIA_GEOJSON)


# Links a source collection carried that point into the source's own tree: replaced by ours.
_SOURCE_TREE_RELS = frozenset({"self", "root", "parent", "child", "item", "items", "collection"})


def collection_doc(
    *,
    collection_id: str,
    provider: str,
    source: Mapping[str, Any] | None,
    extent: dict[str, Any],
    summaries: dict[str, Any],
    links: list[Any],
    mirror: dict[str, Any] | None,
) -> dict[str, Any]:
    """The published collection: the snapshot's collection JSON when a source gave one (its description, license,
    providers, keywords, assets, extensions ...), with extent and summaries computed from the published items
    (they override the source's: they describe exactly what is published), our links, and the mirror asset."""
    doc: dict[str, Any] = {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": collection_id,
        "title": f"{collection_id} ({provider})",
        "description": f"Items of {collection_id} held by {provider}, harvested by cscale.",
        "license": "other",
    }
    if source:
        doc.update({k: v for k, v in source.items() if k not in ("links", "extent", "summaries", "type")})
        doc["stac_version"] = STAC_VERSION
        doc["id"] = collection_id
        if not isinstance(doc.get("stac_extensions"), list):
            doc["stac_extensions"] = []
        summaries = {**dict(source.get("summaries") or {}), **summaries}
    doc["extent"] = extent
    if summaries:
        doc["summaries"] = summaries
    own = [link for link in (source or {}).get("links") or () if link.get("rel") not in _SOURCE_TREE_RELS]
    doc["links"] = links + own
    if mirror is not None:
        assets = dict(doc.get("assets") or {})
        assets[MIRROR_ASSET] = mirror
        doc["assets"] = assets
    return doc


def mirror_asset(collection_file: str, files: Sequence[str], layout: Layout) -> dict[str, Any]:
    """The `collection-mirror` asset: the folder of this collection's stac-geoparquet parts (copied next to the
    collection, so relative hrefs keep the tree self-contained), with the file names (a folder cannot be listed
    over plain HTTP)."""
    folder = posixpath.join(posixpath.dirname(collection_file), MIRROR_DIR) + "/"
    return {
        "href": layout.href(collection_file, folder),
        "type": MEDIA_PARQUET,
        "title": "stac-geoparquet parts of this collection (GeoParquet 1.1)",
        "description": "Every item of this collection as stac-geoparquet: read all files of this folder together, "
        "e.g. DuckDB read_parquet('<folder>/*.parquet', union_by_name = true). Files: cscale:files.",
        "roles": [MIRROR_ASSET, "data"],
        "cscale:files": list(files),
    }


def iso(micros: int) -> str:
    """Microseconds since the epoch → RFC 3339 UTC ('...Z'), like the snapshot's own datetimes."""
    from datetime import UTC, datetime, timedelta

    when = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{when.microsecond:06d}Z" if when.microsecond else f"{text}Z"


def extent_doc(ts_min: int | None, ts_max: int | None, bbox: Sequence[float] | None, crosses: bool) -> dict[str, Any]:
    """Spatial extent (a bbox union; [-180, ymin, 180, ymax] when some item crosses the antimeridian, since a
    union of crossing boxes is not one box) and temporal extent (datetime or start, to datetime or end)."""
    if bbox is None:
        spatial = [-180.0, -90.0, 180.0, 90.0]
    else:
        spatial = [float(v) for v in bbox]
        if crosses:
            spatial = [-180.0, spatial[1], 180.0, spatial[3]]
    interval = [iso(ts_min) if ts_min is not None else None, iso(ts_max) if ts_max is not None else None]
    return {"spatial": {"bbox": [spatial]}, "temporal": {"interval": [interval]}}
