"""Rendering query results and reports: aligned tables for a terminal, CSV / JSON / NDJSON for programs."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import shapely

FORMATS = ("table", "csv", "json", "ndjson")
MAX_CELL = 60


def default_format(stream: TextIO | None = None) -> str:
    return "table" if (stream or sys.stdout).isatty() else "ndjson"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return shapely.to_wkt(shapely.from_wkb(value), rounding_precision=6)
        except shapely.errors.GEOSException:
            return value.hex()
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_pylist()]


def emit_table(table: pa.Table, fmt: str, out: TextIO | None = None) -> None:
    out = out or sys.stdout  # looked up per call: tests and callers may swap sys.stdout
    if fmt == "csv":
        flat = pa.table(
            {n: pa.array([_cell(v, 10**9) for v in table.column(n).to_pylist()]) for n in table.column_names}
        )
        buffer = io.BytesIO()
        pacsv.write_csv(flat, buffer)
        out.write(buffer.getvalue().decode())
    elif fmt == "json":
        out.write(orjson.dumps(rows_of(table), option=orjson.OPT_INDENT_2).decode() + "\n")
    elif fmt == "ndjson":
        for row in rows_of(table):
            out.write(orjson.dumps(row).decode() + "\n")
    else:
        text_table(table.column_names, [[_cell(v) for v in row.values()] for row in table.to_pylist()], out)


def _cell(value: Any, width: int = MAX_CELL) -> str:
    value = _plain(value)
    if value is None:
        return ""
    text = (
        value
        if isinstance(value, str)
        else orjson.dumps(value).decode()
        if isinstance(value, dict | list)
        else str(value)
    )
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    out.write("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        out.write("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
