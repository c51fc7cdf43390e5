"""The manifest of one snapshot version: every part, per-part stats, collections, harvest state, the run report.

Readers resolve everything through CURRENT → manifest, so a version is exactly the set of files its manifest
names. Wall-clock values live here, never in the rows, so the same input gives the same parts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from harvester.errors import StoreError

FORMAT = "cscale-snapshot"
FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class PartInfo:
    path: str  # relative to the store root
    provider: str
    collection: str | None
    year: int
    rows: int
    bytes: int
    datetime_min: str | None = None
    datetime_max: str | None = None
    bbox: list[float] | None = None


@dataclass(frozen=True, slots=True)
class QuarantineInfo:
    path: str
    provider: str
    rows: int
    version: int


@dataclass(frozen=True, slots=True)
class Manifest:
    version: int
    parent: int | None
    committed_at: str
    parts: tuple[PartInfo, ...] = ()
    quarantine: tuple[QuarantineInfo, ...] = ()
    collections: dict[str, Any] = field(default_factory=dict)  # "PROVIDER|collection" → collection JSON
    state: dict[str, Any] = field(default_factory=dict)  # source key → watermarks, ETags, last full scan
    run: dict[str, Any] = field(default_factory=dict)  # the report of the run that made this version

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    def referenced_files(self) -> set[str]:
        """Every file this version needs: parts, quarantine files, and the files a source's state names under
        its "files" key (e.g. a crawl's per-document state table under `state/`); gc keeps exactly these."""
        files = {p.path for p in self.parts} | {q.path for q in self.quarantine}
        for value in self.state.values():
            if isinstance(value, dict) and isinstance(value.get("files"), list):
                files.update(str(f) for f in value["files"])
        return files

    def to_json(self) -> bytes:
        body = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        return orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)

    @classmethod
    def from_json(cls, data: bytes, *, where: str) -> Manifest:
        try:
            body = orjson.loads(data)
            if body.get("format") != FORMAT:
                raise ValueError("not a cscale manifest")
            if int(body.get("format_version", 0)) > FORMAT_VERSION:
                raise ValueError(f"written by a newer cscale (format {body['format_version']})")
            return cls(
                version=int(body["version"]),
                parent=body.get("parent"),
                committed_at=str(body["committed_at"]),
                parts=tuple(PartInfo(**p) for p in body.get("parts", [])),
                quarantine=tuple(QuarantineInfo(**q) for q in body.get("quarantine", [])),
                collections=dict(body.get("collections", {})),
                state=dict(body.get("state", {})),
                run=dict(body.get("run", {})),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"manifest {where} is unreadable: {exc}") from None


def manifest_key(version: int) -> str:
    return f"manifests/{version:08d}.json"
