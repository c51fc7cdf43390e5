"""Rows (dicts in stac-geoparquet layout) ⇄ Arrow, with type conflicts resolved instead of crashing (pure).

Inside a batch, each column's type is inferred by Arrow from all its values. When the values disagree (an int and a
string in one property, a nested object whose fields change type), the type shared by most values wins and the
others are moved verbatim into the `cscale:overflow` JSON column of their row. Across batches the same happens at
batch granularity (`target_schema` + `conform`), so a part's schema always comes from every row it holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from harvester.records import CORE_COLUMNS, CSCALE_COLUMNS, OVERFLOW, TIMESTAMP_COLUMNS

TIMESTAMP = pa.timestamp("us", tz="UTC")
_Tabular = TypeVar("_Tabular", pa.RecordBatch, pa.Table)
BBOX = pa.struct([(name, pa.float64()) for name in ("xmin", "ymin", "xmax", "ymax")])
_FIXED: dict[str, pa.DataType] = {
    "geometry": pa.binary(),
    "proj:geometry": pa.binary(),
    "bbox": BBOX,
    "id": pa.string(),
    "provider": pa.string(),
    "product_key": pa.string(),
    "content_hash": pa.string(),
    "source_href": pa.string(),
    OVERFLOW: pa.string(),
}
_CONFLICT_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError)


def column_order(names: Iterable[str]) -> list[str]:
    """Core STAC columns first, then properties sorted, then cscale's columns: stable across parts."""
    present = set(names)
    core = [n for n in CORE_COLUMNS if n in present]
    tail = [n for n in CSCALE_COLUMNS if n in present]
    props = sorted(present.difference(CORE_COLUMNS, CSCALE_COLUMNS))
    return core + props + tail


def overflow_path(column: str) -> str:
    return column if column in CORE_COLUMNS else "properties." + column


def rows_to_batch(rows: Sequence[dict[str, Any]]) -> pa.RecordBatch:
    """Build one RecordBatch from rows; never raises for type disagreements between rows."""
    names = column_order({k for row in rows for k in row})
    overflow: list[dict[str, Any] | None] = [None] * len(rows)
    arrays: dict[str, pa.Array] = {}
    for name in names:
        if name == OVERFLOW:
            continue
        values = [row.get(name) for row in rows]
        array = _column(name, values, overflow)
        if not pa.types.is_null(array.type):  # an all-null column says nothing; readers restore absence
            arrays[name] = array
    arrays[OVERFLOW] = _merge_overflow([row.get(OVERFLOW) for row in rows], overflow)
    fields = [pa.field(n, arrays[n].type) for n in names if n in arrays and n != OVERFLOW]
    fields.append(pa.field(OVERFLOW, pa.string()))
    return pa.RecordBatch.from_arrays([arrays[f.name] for f in fields], schema=pa.schema(fields))


def _column(name: str, values: list[Any], overflow: list[dict[str, Any] | None]) -> pa.Array:
    if name in _FIXED:
        return pa.array(values, _FIXED[name])
    if name in TIMESTAMP_COLUMNS:
        return pa.array(values, pa.string()).cast(TIMESTAMP)
    try:
        array = pa.array(values)
    except _CONFLICT_ERRORS:
        array = _resolve(name, values, overflow)
    if name == "assets" and pa.types.is_struct(array.type) and array.type.num_fields == 0:
        return pa.nulls(len(values), pa.null())  # `assets: {}` everywhere: readers restore `{}`
    if _has_empty_struct(array.type):
        # Parquet cannot store a struct without fields (e.g. `{}` everywhere): keep those values verbatim.
        for i, value in enumerate(values):
            if value is not None:
                _put(overflow, i, overflow_path(name), value)
        return pa.nulls(len(values), pa.null())
    return array


def _resolve(name: str, values: list[Any], overflow: list[dict[str, Any] | None]) -> pa.Array:
    """The most common value type wins; values that cannot share its column go to the overflow."""
    types: list[pa.DataType | None] = []
    for value in values:
        try:
            types.append(pa.array([value]).type if value is not None else None)
        except _CONFLICT_ERRORS:
            types.append(None)  # not representable at all (an int over 64 bits): overflow
    counts = Counter(t for t in types if t is not None)
    accepted: set[pa.DataType] = set()
    winner: pa.DataType | None = None
    for candidate, _ in counts.most_common():
        merged = unify_types(winner, candidate)
        if merged is not None:
            winner = merged
            accepted.add(candidate)
    kept: list[Any] = []
    for i, (value, vtype) in enumerate(zip(values, types, strict=True)):
        if value is not None and vtype not in accepted:
            _put(overflow, i, overflow_path(name), value)
            kept.append(None)
        else:
            kept.append(value)
    return pa.array(kept, winner or pa.null())


def unify_types(a: pa.DataType | None, b: pa.DataType) -> pa.DataType | None:
    """Arrow's permissive promotion (int→float, struct fields merged, null→anything); None when incompatible."""
    if a is None or a == b:
        return b
    try:
        schema = pa.unify_schemas([pa.schema([("c", a)]), pa.schema([("c", b)])], promote_options="permissive")
    except _CONFLICT_ERRORS:
        return None
    merged: pa.DataType = schema.field("c").type
    if pa.types.is_string(merged) and not (pa.types.is_string(a) and pa.types.is_string(b)):
        return None  # permissive promotion may turn numbers into strings: that would stringify values
    return merged


def _has_empty_struct(dtype: pa.DataType) -> bool:
    if pa.types.is_struct(dtype):
        return dtype.num_fields == 0 or any(_has_empty_struct(dtype.field(i).type) for i in range(dtype.num_fields))
    if pa.types.is_list(dtype) or pa.types.is_large_list(dtype) or pa.types.is_fixed_size_list(dtype):
        return _has_empty_struct(dtype.value_type)
    if pa.types.is_map(dtype):
        return _has_empty_struct(dtype.item_type)
    return False


def _put(overflow: list[dict[str, Any] | None], index: int, path: str, value: Any) -> None:
    slot = overflow[index]
    if slot is None:
        slot = overflow[index] = {}
    slot[path] = value


def _merge_overflow(existing: list[Any], extra: list[dict[str, Any] | None]) -> pa.Array:
    out: list[str | None] = []
    for text, more in zip(existing, extra, strict=True):
        if more is None:
            out.append(text)
            continue
        merged = orjson.loads(text) if text else {}
        merged.update(more)
        out.append(orjson.dumps(merged).decode())
    return pa.array(out, pa.string())


def target_schema(schemas: Sequence[tuple[pa.Schema, int]]) -> pa.Schema:
    """One schema for a part from its batches' schemas (each with its row count): per column, the types are
    merged in order of how many rows carry them; a type that cannot merge loses (its batch's values overflow)."""
    by_column: dict[str, Counter[pa.DataType]] = {}
    for schema, rows in schemas:
        for field in schema:
            by_column.setdefault(field.name, Counter())[field.type] += rows
    fields = []
    for name in column_order(by_column):
        winner: pa.DataType | None = None
        for candidate, _ in by_column[name].most_common():
            winner = unify_types(winner, candidate) or winner
        if winner is not None and not pa.types.is_null(winner):
            fields.append(pa.field(name, winner))
    if not any(f.name == OVERFLOW for f in fields):
        fields.append(pa.field(OVERFLOW, pa.string()))
    return pa.schema(fields)


def conform(batch: _Tabular, schema: pa.Schema) -> _Tabular:
    """Cast a batch (or a table, chunk by chunk, without combining) to the part's schema; columns whose type
    cannot be cast keep their values in the overflow."""
    overflow: list[dict[str, Any] | None] = [None] * batch.num_rows
    arrays: list[pa.Array | pa.ChunkedArray | None] = []
    for field in schema:
        if field.name == OVERFLOW:
            arrays.append(None)
            continue
        index = batch.schema.get_field_index(field.name)
        if index < 0:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(index)
        if column.type == field.type:
            arrays.append(column)
            continue
        try:
            arrays.append(column.cast(field.type))
        except _CONFLICT_ERRORS:
            _evict(field.name, column, overflow)
            arrays.append(pa.nulls(batch.num_rows, field.type))
    for name in batch.schema.names:
        if name not in schema.names:
            _evict(name, batch.column(name), overflow)
    merged: pa.Array | pa.ChunkedArray
    if OVERFLOW in batch.schema.names and not any(overflow):
        merged = batch.column(OVERFLOW)  # nothing moved: keep the column as it is (no Python round trip)
    else:
        existing = batch.column(OVERFLOW).to_pylist() if OVERFLOW in batch.schema.names else [None] * batch.num_rows
        merged = _merge_overflow(existing, overflow)
    columns = [merged if a is None else a for a in arrays]  # the overflow column's slot is None
    if isinstance(batch, pa.Table):
        return pa.Table.from_arrays(columns, schema=schema)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _evict(name: str, column: pa.Array | pa.ChunkedArray, overflow: list[dict[str, Any] | None]) -> None:
    values = _plain(column)
    for i, value in enumerate(values):
        if value is not None:
            _put(overflow, i, overflow_path(name), value)


def _plain(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Column values as JSON-ready Python values (timestamps as canonical strings, nested nulls dropped)."""
    if pa.types.is_timestamp(column.type):
        return pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ").to_pylist()  # type: ignore[no-any-return]
    return [strip_nulls(v) for v in column.to_pylist()]


def strip_nulls(value: Any) -> Any:
    """Drop keys whose value is null inside objects: Arrow structs hold every field for every row."""
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value
