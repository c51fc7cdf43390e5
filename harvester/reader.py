"""Reading a snapshot version back as STAC items (used by tests, publish and export)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Any

import pyarrow.parquet as pq

from harvester.parts import batch_to_items
from harvester.storage import arrow_filesystem
from harvester.store import Store


def iter_items(
    store: Store, version: int | None = None, *, providers: Collection[str] | None = None
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(provider, item) for every item of a version, one row group in memory at a time."""
    manifest = store.manifest(version)
    fs, prefix = arrow_filesystem(store.storage)
    for part in manifest.parts:
        if providers is not None and part.provider not in providers:
            continue
        parquet = pq.ParquetFile(prefix + part.path, filesystem=fs)
        for index in range(parquet.num_row_groups):
            for item in batch_to_items(parquet.read_row_group(index)):
                yield part.provider, item
