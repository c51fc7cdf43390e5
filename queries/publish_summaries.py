"""Collection summaries computed from the published items, one Arrow batch at a time (bounded memory).

Which properties are summarised, and how, follows pystac's `Summarizer` (the stac-fields definitions that pystac
ships): `r` → {minimum, maximum}; `v` → the distinct values; the default → a range for numbers, the distinct
values for strings, booleans and lists of them; lists of 25 values or more are left out, as pystac does. Values
that only live in cscale's overflow column (a type disagreeing with the rest of their part) and object-valued
properties (eo:bands, raster:bands) are not summarised.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from harvester.records import CORE_COLUMNS, CSCALE_COLUMNS

MAXCOUNT = 25  # pystac's Summaries.maxcount: lists of this many values or more are dropped


@lru_cache(maxsize=1)
def strategies() -> dict[str, str]:
    """Property name → 'range' | 'array' | 'default', from pystac's bundled stac-fields definitions."""
    from pystac.summaries import Summarizer, SummaryStrategy

    names = {SummaryStrategy.RANGE: "range", SummaryStrategy.ARRAY: "array", SummaryStrategy.DEFAULT: "default"}
    skip = set(CORE_COLUMNS) | set(CSCALE_COLUMNS)
    return {k: names[v] for k, v in Summarizer().summaryfields.items() if v in names and k not in skip}


def _scalar(value: Any) -> Any:
    if hasattr(value, "isoformat"):  # a timestamp property: the same text the items carry
        text = value.strftime("%Y-%m-%dT%H:%M:%S")
        return f"{text}.{value.microsecond:06d}Z" if value.microsecond else f"{text}Z"
    return value


class Summaries:
    """Accumulates the summaries of one collection over any number of batches."""

    def __init__(self) -> None:
        self.ranges: dict[str, list[Any]] = {}
        self.values: dict[str, set[Any] | None] = {}  # None: reached MAXCOUNT, dropped

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        wanted = strategies()
        for name in batch.schema.names:
            strategy = wanted.get(name)
            if strategy is None:
                continue
            column = batch.column(name)
            kind = column.type
            element = kind.value_type if pa.types.is_list(kind) or pa.types.is_large_list(kind) else None
            numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_timestamp(kind)
            if strategy == "range" or (strategy == "default" and numeric):
                if element is None and not pa.types.is_nested(kind) and not pa.types.is_boolean(kind):
                    self._range(name, column)
            elif element is not None:
                if not pa.types.is_nested(element):
                    self._distinct(name, pc.list_flatten(column))
            elif not pa.types.is_nested(kind):
                self._distinct(name, column)

    def _range(self, name: str, column: Any) -> None:
        if column.null_count == len(column):
            return
        bounds = pc.min_max(column)
        low, high = _scalar(bounds["min"].as_py()), _scalar(bounds["max"].as_py())
        current = self.ranges.get(name)
        if current is None:
            self.ranges[name] = [low, high]
        else:
            try:
                current[0], current[1] = min(current[0], low), max(current[1], high)
            except TypeError:  # int in one part, str in another: no meaningful range
                self.ranges[name] = [None, None]

    def _distinct(self, name: str, column: Any) -> None:
        seen = self.values.get(name, set())
        if seen is None:
            return
        for value in pc.unique(column).to_pylist():
            if value is not None:
                seen.add(_scalar(value))
        self.values[name] = seen if len(seen) < MAXCOUNT else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, values in sorted(self.values.items()):
            if values:
                out[name] = sorted(values, key=lambda v: (type(v).__name__, v))
        for name, (low, high) in sorted(self.ranges.items()):
            if low is not None:
                out[name] = {"minimum": low, "maximum": high}
        return out
