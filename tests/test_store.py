"""The snapshot store: versions, no-op commits, time travel, gc, concurrent writers, crashes, S3."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from harvester.errors import ConcurrentCommitError, VersionNotFound
from harvester.ingest import IngestOptions, ingest
from harvester.reader import iter_items
from harvester.store import CRASH_ENV, Store
from queries import connect

from conftest import write_ndjson
from test_bad_input import item


def run(store: Store, path: Path, provider: str = "P") -> Any:
    return ingest(store, [str(path)], IngestOptions(provider=provider, workers=1))


def ids(store: Store, version: int | None = None) -> set[str]:
    return {i["id"] for _, i in iter_items(store, version)}


def assert_complete(store: Store) -> None:
    """CURRENT names a manifest whose every part exists with the row count the manifest says."""
    manifest = store.manifest()
    for part in manifest.parts:
        assert pq.read_metadata(str(Path(store.url) / part.path)).num_rows == part.rows


def test_versions_noop_and_time_travel(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    first = write_ndjson(tmp_path / "a.ndjson", [item(i) for i in range(5)])
    assert run(store, first).manifest.version == 1
    assert run(store, first).manifest is None  # nothing changed: no new version, nothing written
    assert store.versions() == [1]
    second = write_ndjson(tmp_path / "b.ndjson", [item(i, cloud=i) for i in range(3, 8)])
    result = run(store, second)
    assert result.manifest.version == 2 and result.counts["changed"] == 2 and result.counts["new"] == 3
    assert ids(store, 1) == {f"item-{i}" for i in range(5)}
    assert ids(store) == {f"item-{i}" for i in range(8)}
    # One partition, rewritten whole and sorted: one part per version.
    assert len(store.manifest().parts) == 1
    con = connect(store.url, version=1)
    assert con.execute("SELECT count(*) FROM items").fetchone() == (5,)
    con = connect(store.url)
    assert con.execute("SELECT count(*) FROM items WHERE cloud IS NOT NULL").fetchone() == (5,)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)


def test_gc_keeps_what_retained_versions_reference(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    for n in range(3):
        run(store, write_ndjson(tmp_path / f"{n}.ndjson", [item(i, n=n) for i in range(4)]))
    files_before = list((tmp_path / "store" / "items").rglob("*.parquet"))
    assert len(files_before) == 3
    report = store.gc(keep=1, grace_seconds=0)
    assert report.removed_versions == [1, 2]
    assert len(list((tmp_path / "store" / "items").rglob("*.parquet"))) == 1
    assert ids(store) == {f"item-{i}" for i in range(4)}
    with pytest.raises(VersionNotFound):
        store.manifest(1)


def test_two_writers_exactly_one_wins(tmp_path: Path) -> None:
    store = Store.open(str(tmp_path / "store"))
    run(store, write_ndjson(tmp_path / "a.ndjson", [item(1)]))
    base = store.head()
    one = store.next_manifest(base, run={"writer": 1})
    two = store.next_manifest(base, run={"writer": 2})
    store.commit(one)
    with pytest.raises(ConcurrentCommitError):
        store.commit(two)
    assert store.manifest().run == {"writer": 1}


def test_losing_writer_replans_and_no_update_is_lost(tmp_path: Path) -> None:
    root = str(tmp_path / "store")
    store = Store.open(root)
    run(store, write_ndjson(tmp_path / "a.ndjson", [item(1)]))
    real_commit = store.commit
    raced: list[bool] = []

    def racing_commit(manifest: Any) -> Any:
        if not raced:  # another process commits between our planning and our commit
            raced.append(True)
            run(Store.open(root), write_ndjson(tmp_path / "other.ndjson", [item(9)]), provider="OTHER")
        return real_commit(manifest)

    store.commit = racing_commit  # type: ignore[method-assign]
    result = run(store, write_ndjson(tmp_path / "b.ndjson", [item(2)]))
    assert raced and result.manifest.version == 3
    assert ids(store) == {"item-1", "item-2", "item-9"}


@pytest.mark.parametrize("point", ["during_parts", "after_parts", "before_manifest", "after_manifest", "after_current"])
def test_kill_9_at_every_commit_step(tmp_path: Path, point: str) -> None:
    root = str(tmp_path / "store")
    store = Store.open(root)
    run(store, write_ndjson(tmp_path / "a.ndjson", [item(i) for i in range(3)]))
    # Two collections → two partitions → the crash during parts leaves one part written.
    batch = [item(i, v=2) for i in range(6)]
    for it in batch[3:]:
        it["collection"] = "c2"
    path = write_ndjson(tmp_path / "b.ndjson", batch)
    env = {**os.environ, CRASH_ENV: point}
    cmd = [
        sys.executable,
        "-m",
        "harvester.cli",
        "-q",
        "ingest",
        str(path),
        "--provider",
        "P",
        "--store",
        root,
        "--workers",
        "1",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert_complete(store)
    committed = point in ("after_manifest", "after_current")
    assert store.current_version() == (2 if point == "after_current" else 1)
    # The next writer rolls forward over a committed manifest and finishes the work; the end state equals
    # an uninterrupted run's.
    result = run(store, path)
    assert (result.manifest is None) == committed
    assert store.current_version() == 2
    assert_complete(store)
    got = {i["id"]: i["properties"].get("v") for _, i in iter_items(store)}
    assert got == {f"item-{i}": 2 for i in range(6)}


def test_s3_store_on_moto(bucket: str, tmp_path: Path) -> None:
    root = f"s3://{bucket}/federation"
    store = Store.open(root)
    assert run(store, write_ndjson(tmp_path / "a.ndjson", [item(i) for i in range(5)])).manifest.version == 1
    assert run(store, write_ndjson(tmp_path / "b.ndjson", [item(i, x=1) for i in range(3)])).manifest.version == 2
    assert ids(store) == {f"item-{i}" for i in range(5)}
    assert ids(store, 1) == {f"item-{i}" for i in range(5)}
    con = connect(root)  # DuckDB reads the parts in place over httpfs
    assert con.execute("SELECT count(*), count(x) FROM items").fetchone() == (5, 3)
    assert con.execute("SELECT count(*) FROM runs").fetchone() == (2,)
    base = store.head()
    store.commit(store.next_manifest(base, run={"w": 1}))
    with pytest.raises(ConcurrentCommitError):
        store.commit(store.next_manifest(base, run={"w": 2}))
    report = store.gc(keep=1, grace_seconds=0)
    assert report.removed_versions == [1, 2, 3][: len(report.removed_versions)] and ids(store) == ids(store, 3)
