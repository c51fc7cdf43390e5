"""The read path: DuckDB over a snapshot version (views, search, routing, publishing)."""

from queries.connection import connect

__all__ = ["connect"]
