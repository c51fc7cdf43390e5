"""Differences between two snapshot versions, item by item (provider, id, content hash)."""

from __future__ import annotations

import pyarrow as pa

from harvester.storage import arrow_filesystem
from harvester.store import Store
from queries.connection import new_connection

_KEYS = ["provider", "collection", "id", "content_hash"]


def _keys(store: Store, version: int) -> pa.Table:
    import pyarrow.parquet as pq

    manifest = store.manifest(version)
    fs, prefix = arrow_filesystem(store.storage)
    tables = [pq.read_table(prefix + p.path, columns=_KEYS, filesystem=fs) for p in manifest.parts]
    schema = pa.schema([(k, pa.string()) for k in _KEYS])
    return pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()


def diff_versions(root: str, old: int, new: int | None = None, *, ids: bool = False) -> pa.Table:
    store = Store.open(root)
    new_version = new if new is not None else store.manifest().version
    con = new_connection()
    con.register("a", _keys(store, old))
    con.register("b", _keys(store, new_version))
    changes = """
      SELECT coalesce(b.provider, a.provider) AS provider, coalesce(b.collection, a.collection) AS collection,
             coalesce(b.id, a.id) AS id,
             CASE WHEN a.id IS NULL THEN 'added' WHEN b.id IS NULL THEN 'removed' ELSE 'changed' END AS change
      FROM a FULL OUTER JOIN b ON a.provider = b.provider AND a.id = b.id
      WHERE a.id IS NULL OR b.id IS NULL OR a.content_hash <> b.content_hash"""
    if ids:
        return con.execute(changes + " ORDER BY ALL").to_arrow_table()
    return con.execute(
        f"""SELECT provider, collection, count(*) FILTER (WHERE change = 'added') AS added,
                   count(*) FILTER (WHERE change = 'removed') AS removed,
                   count(*) FILTER (WHERE change = 'changed') AS changed
            FROM ({changes}) GROUP BY ALL ORDER BY ALL"""
    ).to_arrow_table()
