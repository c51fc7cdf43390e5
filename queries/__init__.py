"""The read path: DuckDB over a snapshot version (views, search, routing, publishing)."""

from queries.connection import connect
from queries.search import search  # `queries.search(root, bbox=..., ...)`: the function, not the module

__all__ = ["connect", "search"]
