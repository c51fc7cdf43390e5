"""Objects → products (pure): which product an S3 key belongs to, and what its name says.

A product is either a folder (`X.SAFE/`, `X.SEN3/`, a Landsat folder, any folder named like a product) whose
objects are its files, or a single object (`X.SAFE.zip`, `X.zip`, `X.SEN3.zip`, `X.nc`, `X.tar`, `X.tar.gz`).
The leftmost such path component wins, so a SAFE's inner folders (`GRANULE/L1C_T01LAC_.../`) never count.
Checksum sidecars (`X.SAFE.zip.md5`) belong to the product they describe.

Names are parsed with `harvester.product_names` (the grammar every source shares), so an archive copy gets the
same `product_key` as a STAC provider's item for the same product.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from harvester.product_names import ProductName, explain_rejection, parse_product_name

FOLDER_SUFFIXES = (".SAFE", ".SEN3")
OBJECT_SUFFIXES = (".SAFE.zip", ".SEN3.zip", ".zip", ".nc", ".nc4", ".tar", ".tar.gz", ".tgz")
SIDECAR_SUFFIXES = (".md5", ".sha1", ".sha256", ".sha512")
_STEM_SUFFIXES = (".zip", ".SAFE", ".SEN3", ".nc4", ".nc", ".tar", ".tgz", ".gz")
_NAME_START = re.compile(r"(?:S1|S2|S3|S5P_|L[CEOTM]\d)")

# Reasons for objects that belong to no recognised product (explain_rejection's codes come on top of these)
NOT_IN_PRODUCT = "not_in_product"
FOLDER_MARKER = "folder_marker"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one object belongs: its product's root (a folder ending in '/' or the object's own key), the item
    id (the product name without suffixes), the canonical key, and a reason when the name is not a product."""

    root: str | None
    product_id: str | None
    product_key: str | None
    reason: str | None
    name: ProductName | None


def stem(name: str) -> str:
    """A product name without its container suffixes ('X.SAFE.zip' → 'X')."""
    base = name.rstrip("/")
    while True:
        lower = base.lower()
        cut = next((s for s in _STEM_SUFFIXES if lower.endswith(s.lower())), None)
        if cut is None:
            return base
        base = base[: -len(cut)]


def _has_suffix(name: str, suffixes: tuple[str, ...]) -> bool:
    lower = name.lower()
    return any(lower.endswith(s.lower()) for s in suffixes)


class Classifier:
    """Places keys into products; caches what it parsed (the objects of one product share a name)."""

    def __init__(self) -> None:
        self._names: dict[str, ProductName | None] = {}
        self._folders: dict[str, bool] = {}

    def parse(self, name_stem: str) -> ProductName | None:
        if name_stem not in self._names:
            if len(self._names) > 200_000:
                self._names.clear()
            self._names[name_stem] = parse_product_name(name_stem)
        return self._names[name_stem]

    def is_product_folder(self, component: str) -> bool:
        known = self._folders.get(component)
        if known is None:
            known = _has_suffix(component, FOLDER_SUFFIXES) or (
                _NAME_START.match(component) is not None and self.parse(stem(component)) is not None
            )
            if len(self._folders) > 200_000:
                self._folders.clear()
            self._folders[component] = known
        return known

    def place(self, key: str, root_prefix: str = "") -> Placement:
        """The product `key` belongs to; `root_prefix` (the indexed prefix) is never part of a product name."""
        relative = key[len(root_prefix) :] if key.startswith(root_prefix) else key
        parts = relative.split("/")
        offset = len(key) - len(relative)
        for index, component in enumerate(parts[:-1]):
            if component and self.is_product_folder(component):
                end = offset + sum(len(p) + 1 for p in parts[: index + 1])
                return self._placed(key[:end], component)
        name = parts[-1]
        if not name:
            return Placement(None, None, None, FOLDER_MARKER, None)
        for sidecar in SIDECAR_SUFFIXES:
            if name.lower().endswith(sidecar):
                name = name[: -len(sidecar)]
                key = key[: -len(sidecar)]
                break
        if _has_suffix(name, OBJECT_SUFFIXES):
            return self._placed(key, name)
        return Placement(None, None, None, NOT_IN_PRODUCT, None)

    def _placed(self, root: str, component: str) -> Placement:
        product_id = stem(component)
        parsed = self.parse(product_id)
        if parsed is None:
            return Placement(root, product_id, None, explain_rejection(product_id) or "malformed", None)
        return Placement(root, product_id, parsed.product_key, None, parsed)


_DEFAULT = Classifier()


def is_product_folder(prefix: str) -> bool:
    """Whether a listed folder ('a/b/X.SAFE/') is a product folder (listed flat, never walked)."""
    return _DEFAULT.is_product_folder(prefix.rstrip("/").rsplit("/", 1)[-1])


def collection_for(name: ProductName) -> str:
    """The collection an archive item goes to, by mission and product type (`sentinel-1-grd`, ...)."""
    props = name.properties
    product_type = str(props.get("product_type") or "")
    if name.mission == "sentinel-1":
        return f"sentinel-1-{str(props.get('sar:product_type', 'unknown')).lower()}"
    if name.mission == "sentinel-2":
        return f"sentinel-2-{str(props.get('processing:level', 'unknown')).lower()}"
    if name.mission == "sentinel-3":
        return "sentinel-3-" + "-".join(p.lower() for p in product_type.split("_") if p)
    if name.mission == "sentinel-5p":
        return "sentinel-5p-" + "-".join(p.lower() for p in product_type.split("_") if p)
    if name.mission == "landsat":
        number = props.get("landsat:collection_number")
        level = str(props.get("processing:level") or "").lower()
        return f"landsat-c{int(str(number))}-{level}" if number and level else "landsat-scene"
    return name.mission
