"""The versioned snapshot store (the spine): CURRENT → manifests/NNNNNNNN.json → parts.

Commit protocol (see README, "Snapshot format"):
1. parts are written under unique names and their footers checked (invisible until a manifest names them);
2. the next manifest is created exclusively (local: hard link; S3: If-None-Match) — this is the commit point,
   so of two concurrent writers exactly one wins and the other gets ConcurrentCommitError;
3. CURRENT is swapped (local: lock + os.replace; S3: If-Match), last.
A crash before 2 leaves only unreferenced files (removed by gc); a crash between 2 and 3 leaves a complete
version that the next writer rolls CURRENT forward to. CURRENT therefore always names a complete version.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from harvester.errors import ConcurrentCommitError, StoreError, StoreNotFound, VersionNotFound
from harvester.manifest import Manifest, manifest_key
from harvester.storage import Storage, open_storage

log = logging.getLogger(__name__)
CURRENT = "CURRENT"
CRASH_ENV = "CSCALE_CRASH_AT"  # test hook: kill -9 this process at a named commit step


def crash_point(name: str) -> None:
    """Die like `kill -9` when the test harness asks for it at this step (no cleanup, no flush)."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class Store:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    @classmethod
    def open(cls, root: str) -> Store:
        return cls(open_storage(root))

    @property
    def url(self) -> str:
        return self.storage.url

    # -- reading ---------------------------------------------------------------------------------------------
    def _current(self) -> tuple[int, str] | None:
        tagged = self.storage.read_tagged(CURRENT)
        if tagged is None:
            return None
        try:
            return int(tagged[0].decode().strip()), tagged[1]
        except ValueError:
            raise StoreError(f"{self.storage.uri(CURRENT)} is corrupt: {tagged[0][:40]!r}") from None

    def current_version(self) -> int | None:
        current = self._current()
        return None if current is None else current[0]

    def manifest(self, version: int | None = None) -> Manifest:
        """The manifest of `version` (default: the one CURRENT names)."""
        if version is None:
            version = self.current_version()
            if version is None:
                raise StoreNotFound(f"no snapshot in {self.url} yet (run `cscale ingest` or a harvest first)")
        data = self.storage.read(manifest_key(version))
        if data is None:
            raise VersionNotFound(f"version {version} does not exist in {self.url} (or was garbage-collected)")
        return Manifest.from_json(data, where=self.storage.uri(manifest_key(version)))

    def versions(self) -> list[int]:
        found = []
        for obj in self.storage.listing("manifests/"):
            name = obj.key.rsplit("/", 1)[-1]
            if name.endswith(".json") and name[:-5].isdigit():
                found.append(int(name[:-5]))
        return sorted(found)

    def head(self) -> Manifest | None:
        """The newest complete version for a writer to build on: CURRENT, rolled forward over versions whose
        manifest was committed but whose CURRENT swap did not happen (a crash between steps 2 and 3)."""
        current = self._current()
        version = current[0] if current else 0
        rolled = version
        while self.storage.exists(manifest_key(rolled + 1)):
            rolled += 1
        if rolled != version:
            log.warning("CURRENT named version %s; rolling forward to committed version %s", version, rolled)
            self._swap(current, rolled)
        return self.manifest(rolled) if rolled else None

    # -- writing ---------------------------------------------------------------------------------------------
    def next_manifest(self, base: Manifest | None, **changes: object) -> Manifest:
        version = (base.version if base else 0) + 1
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        if base is None:
            return Manifest(version=version, parent=None, committed_at=stamp, **changes)  # type: ignore[arg-type]
        return replace(base, version=version, parent=base.version, committed_at=stamp, **changes)  # type: ignore[arg-type]

    def commit(self, manifest: Manifest) -> Manifest:
        """Publish a manifest whose parts are already written; raises ConcurrentCommitError if lost."""
        crash_point("before_manifest")
        if not self.storage.create_exclusive(manifest_key(manifest.version), manifest.to_json()):
            raise ConcurrentCommitError(
                f"another writer committed version {manifest.version} first",
                base_version=manifest.version - 1,
                wanted_version=manifest.version,
            )
        crash_point("after_manifest")
        self._swap(self._current(), manifest.version)
        crash_point("after_current")
        log.info("committed version %s (%s parts, %s rows)", manifest.version, len(manifest.parts), manifest.rows)
        return manifest

    def _swap(self, current: tuple[int, str] | None, version: int) -> None:
        for _ in range(5):
            if current is not None and current[0] >= version:
                return  # someone already rolled forward past us
            if self.storage.swap(CURRENT, f"{version}\n".encode(), current[1] if current else None):
                return
            current = self._current()
        raise StoreError(f"could not update {self.storage.uri(CURRENT)} after 5 attempts")

    # -- garbage collection ----------------------------------------------------------------------------------
    def gc(self, *, keep: int, grace_seconds: float = 3600.0, dry_run: bool = False) -> GcReport:
        """Keep the newest `keep` versions; delete older manifests and every part or quarantine file that no
        kept version references. Files younger than `grace_seconds` are spared: they may belong to a commit in
        flight."""
        if keep < 1:
            raise StoreError("gc must keep at least one version")
        current = self.current_version()
        if current is None:
            raise StoreNotFound(f"no snapshot in {self.url}")
        versions = [v for v in self.versions() if v <= current]
        kept = versions[-keep:]
        referenced: set[str] = set()
        for version in kept:
            manifest = self.manifest(version)
            referenced.update(manifest.referenced_files())
        now = time.time()
        doomed = [manifest_key(v) for v in versions if v not in kept]
        freed = 0
        for prefix in ("items/", "quarantine/", "state/", "archive/"):
            for obj in self.storage.listing(prefix):
                if obj.key not in referenced and now - obj.mtime > grace_seconds:
                    doomed.append(obj.key)
                    freed += obj.size
        if not dry_run:
            self.storage.delete(doomed)
        return GcReport(kept=kept, removed_versions=[v for v in versions if v not in kept], files=doomed, bytes=freed)


@dataclass(frozen=True, slots=True)
class GcReport:
    kept: list[int]
    removed_versions: list[int]
    files: list[str]
    bytes: int
