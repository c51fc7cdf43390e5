"""CQL2 filters (text or JSON, parsed by the `cql2` package) → DuckDB SQL with bound parameters.

The `cql2` package parses and validates; it can also print SQL, but with the literals spliced into the text. Here
the parsed CQL2-JSON tree is compiled instead: every literal becomes a `?` parameter, and every property is
resolved against the schema of the parts being read (the resolver) and quoted, so no user text ever reaches the
SQL. Unknown properties and operators are input errors.

Semantics, where CQL2 leaves room:
- `properties.x` and `x` name the same property; `id`, `collection`, `geometry`, `bbox` and cscale's own
  columns (`provider`, `product_key`) are the item's fields. `a.b` reaches into an object-valued property.
- A comparison is typed by its literal: a number compares with numbers, a string with strings, a timestamp with
  timestamps; a property of another type does not match (like a missing one). A string compared with a
  timestamp property is read as a timestamp.
- Values cscale keeps verbatim in the `cscale:overflow` column (a value whose type disagrees with the rest of its
  part) are compared too, with the same typing.
- Temporal operators treat an instant property as a zero-length interval; `..` is an open end.
- Spatial operators are planar, in the coordinates of the geometries (as STAC APIs do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import orjson

from harvester.errors import InputError
from harvester.records import OVERFLOW
from harvester.timeutil import DatetimeError, parse_datetime

# DuckDB type names (as DESCRIBE prints them) → the kind a literal must have to compare with them.
_NUMBER_TYPES = (
    "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
    "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL",
)  # fmt: skip
_COMPARISONS = {"=": "=", "<>": "<>", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_SPATIAL = {
    "s_intersects": "ST_Intersects",
    "s_equals": "ST_Equals",
    "s_disjoint": "ST_Disjoint",
    "s_touches": "ST_Touches",
    "s_within": "ST_Within",
    "s_overlaps": "ST_Overlaps",
    "s_crosses": "ST_Crosses",
    "s_contains": "ST_Contains",
}
# Allen's interval relations between a = [as, ae] and b = [bs, be] (CQL2 temporal operators).
_TEMPORAL = {
    "t_after": "{as_} > {be}",
    "t_before": "{ae} < {bs}",
    "t_contains": "{as_} < {bs} AND {ae} > {be}",
    "t_disjoint": "({ae} < {bs} OR {as_} > {be})",
    "t_during": "{as_} > {bs} AND {ae} < {be}",
    "t_equals": "{as_} = {bs} AND {ae} = {be}",
    "t_finishedby": "{as_} < {bs} AND {ae} = {be}",
    "t_finishes": "{as_} > {bs} AND {ae} = {be}",
    "t_intersects": "{as_} <= {be} AND {ae} >= {bs}",
    "t_meets": "{ae} = {bs}",
    "t_metby": "{as_} = {be}",
    "t_overlappedby": "{as_} > {bs} AND {as_} < {be} AND {ae} > {be}",
    "t_overlaps": "{as_} < {bs} AND {ae} > {bs} AND {ae} < {be}",
    "t_startedby": "{as_} = {bs} AND {ae} > {be}",
    "t_starts": "{as_} = {bs} AND {ae} < {be}",
}
_ARRAY = {
    "a_equals": "list_sort(list_distinct({a})) = list_sort(list_distinct({b}))",
    "a_contains": "list_has_all({a}, {b})",
    "a_containedby": "list_has_all({b}, {a})",
    "a_overlaps": "list_has_any({a}, {b})",
}
_ARITHMETIC = {"+": "+", "-": "-", "*": "*", "/": "/", "%": "%", "div": "//", "^": "**"}
_GEOMETRY_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon", "GeometryCollection"}
)
MAX_DEPTH = 64
MAX_NODES = 10_000


@dataclass(frozen=True, slots=True)
class Column:
    """A resolved property: the SQL that reads it, its kind (`kind_of` its DuckDB type), and where the overflow
    column may hold values of it that its typed column could not (None: nowhere)."""

    sql: str
    kind: str
    overflow_path: str | None = None


# A resolver turns a property name into a Column; None means "known to the store but absent from the parts
# being read" (it compares as NULL); it raises InputError for a property no part has.
Resolver = Callable[[str], Column | None]


@dataclass(frozen=True, slots=True)
class _Sql:
    text: str
    kind: str  # number | text | bool | timestamp | geometry | list | interval | null | any
    column: Column | None = None  # set when this operand is a plain property
    param: int | None = None  # set when this operand is a literal: its index in the parameters


def parse(text: str | None = None, json_value: str | dict[str, Any] | None = None) -> dict[str, Any]:
    """CQL2 text or JSON → CQL2-JSON (a dict), validated by `cql2`; errors are InputError, one line."""
    import cql2

    try:
        if text is not None:
            expr = cql2.parse_text(text)  # the grammar is the check (validate() costs ~50 ms of JSON schema)
        else:
            if isinstance(json_value, dict):
                expr = cql2.Expr(json_value)
            elif json_value is not None:
                expr = cql2.parse_json(json_value)
            else:
                raise InputError("no CQL2 filter given")
            expr.validate()
        tree = expr.to_json()
    except (cql2.ParseError, cql2.ValidationError, ValueError, TypeError) as exc:
        message = " ".join(str(exc).split())
        raise InputError(f"invalid CQL2 filter: {message[:300]}") from None
    if not isinstance(tree, dict):
        raise InputError("invalid CQL2 filter: not an expression")
    return tree


def properties(tree: Any) -> Iterator[str]:
    """Every property name the expression refers to."""
    if isinstance(tree, dict):
        if "property" in tree and isinstance(tree["property"], str):
            yield tree["property"]
        for value in tree.values():
            yield from properties(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from properties(value)


def normalise_property(name: str) -> str:
    return name[len("properties.") :] if name.startswith("properties.") else name


class Compiler:
    """One compilation. Parameters are numbered (`$n`) into a list shared with the rest of the statement, so a
    piece of SQL may appear twice (a comparison and its overflow fallback) and still name its own values."""

    def __init__(self, resolve: Resolver, params: list[Any] | None = None) -> None:
        self.resolve = resolve
        self.params: list[Any] = [] if params is None else params
        self._nodes = 0

    def compile(self, tree: dict[str, Any]) -> tuple[str, list[Any]]:
        result = self._expr(tree, 0)
        if result.kind not in ("bool", "any", "null"):
            raise InputError("invalid CQL2 filter: the expression is not a condition")
        return result.text, self.params

    # -- operands ----------------------------------------------------------------------------------------------
    def _param(self, value: Any, cast: str) -> str:
        self.params.append(value)
        return f"${len(self.params)}::{cast}"

    def _literal(self, value: Any, cast: str, kind: str) -> _Sql:
        return _Sql(self._param(value, cast), kind, param=len(self.params))

    def _expr(self, node: Any, depth: int) -> _Sql:
        self._nodes += 1
        if depth > MAX_DEPTH or self._nodes > MAX_NODES:
            raise InputError(f"CQL2 filter too large (more than {MAX_DEPTH} levels or {MAX_NODES} terms)")
        if isinstance(node, bool):
            return self._literal(node, "BOOLEAN", "bool")
        if isinstance(node, int | float):
            return self._literal(float(node), "DOUBLE", "number")
        if isinstance(node, str):
            return self._literal(node, "VARCHAR", "text")
        if node is None:
            return _Sql("NULL", "null")
        if isinstance(node, list):
            return self._list(node, depth)
        if not isinstance(node, dict):
            raise InputError(f"invalid CQL2 filter: unexpected {type(node).__name__}")
        if "property" in node:
            return self._property(str(node["property"]))
        if "timestamp" in node:
            return _Sql(self._param(_instant(node["timestamp"]), "TIMESTAMPTZ"), "timestamp")
        if "date" in node:
            return _Sql(self._param(_instant(node["date"]), "TIMESTAMPTZ"), "timestamp")
        if "interval" in node:
            return self._interval_literal(node["interval"])
        if "bbox" in node:
            return self._geometry(_bbox_geometry(node["bbox"]))
        if node.get("type") in _GEOMETRY_TYPES:
            return self._geometry(node)
        if "op" in node:
            return self._op(str(node["op"]).lower(), node.get("args") or [], depth)
        raise InputError(f"invalid CQL2 filter: unsupported value {orjson.dumps(node).decode()[:80]}")

    def _property(self, name: str) -> _Sql:
        column = self.resolve(normalise_property(name))
        if column is None:
            return _Sql("NULL", "null")
        return _Sql(column.sql, column.kind, column)

    def _list(self, values: list[Any], depth: int) -> _Sql:
        if all(isinstance(v, str) for v in values):
            return _Sql(self._param(list(values), "VARCHAR[]"), "list")
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return _Sql(self._param([float(v) for v in values], "DOUBLE[]"), "list")
        parts = [self._expr(v, depth + 1).text for v in values]
        return _Sql("[" + ", ".join(parts) + "]", "list")

    def _geometry(self, geometry: dict[str, Any]) -> _Sql:
        return _Sql(f"ST_GeomFromWKB({self._param(geometry_wkb(geometry), 'BLOB')})", "geometry")

    def _interval_literal(self, bounds: Any) -> _Sql:
        if not isinstance(bounds, list) or len(bounds) != 2:
            raise InputError("invalid CQL2 filter: an interval has two ends")
        ends = []
        for bound, open_value in zip(bounds, ("-infinity", "infinity"), strict=True):
            if bound == "..":
                ends.append(f"'{open_value}'::TIMESTAMPTZ")
            elif isinstance(bound, dict) and "property" in bound:
                ends.append(self._property(str(bound["property"])).text)
            else:
                raw = bound.get("timestamp") or bound.get("date") if isinstance(bound, dict) else bound
                ends.append(self._param(_instant(raw), "TIMESTAMPTZ"))
        return _Sql(f"{ends[0]}\x00{ends[1]}", "interval")

    # -- operators ---------------------------------------------------------------------------------------------
    def _op(self, op: str, args: list[Any], depth: int) -> _Sql:
        if op in ("and", "or"):
            if not args:
                raise InputError(f"invalid CQL2 filter: {op} without arguments")
            parts = [self._condition(a, depth) for a in args]
            return _Sql("(" + f" {op.upper()} ".join(parts) + ")", "bool")
        if op == "not":
            return _Sql(f"(NOT {self._condition(_one(args, op), depth)})", "bool")
        if op in _COMPARISONS:
            a, b = _two(args, op)
            return self._compare(_COMPARISONS[op], a, b, depth)
        if op == "like":
            a, b = _two(args, op)
            left, right = self._expr(a, depth + 1), self._expr(b, depth + 1)
            return self._typed(left, right, lambda x, y: f"{x} LIKE {y} ESCAPE '\\'", "text")
        if op == "between":
            if len(args) != 3:
                raise InputError("invalid CQL2 filter: between takes a value and two bounds")
            low = self._compare(">=", args[0], args[1], depth)
            high = self._compare("<=", args[0], args[2], depth)
            return _Sql(f"({low.text} AND {high.text})", "bool")
        if op == "in":
            a, b = _two(args, op)
            if not isinstance(b, list):
                raise InputError("invalid CQL2 filter: in takes a list")
            if not b:
                return _Sql("false", "bool")
            parts = [self._compare("=", a, v, depth).text for v in b]
            return _Sql("(" + " OR ".join(parts) + ")", "bool")
        if op == "isnull":
            operand = self._expr(_one(args, op), depth + 1)
            return _Sql(f"({self._null_test(operand)})", "bool")
        if op in ("casei", "accenti"):
            operand = self._expr(_one(args, op), depth + 1)
            function = "lower" if op == "casei" else "strip_accents"
            text = f"{function}({operand.text})"
            if operand.column is not None and operand.column.overflow_path:
                fallback = self._overflow(operand.column, "VARCHAR")
                text = f"{function}(coalesce({_try_cast(operand, 'VARCHAR')}, {fallback}))"
            elif operand.kind not in ("text", "any"):
                text = f"{function}({_try_cast(operand, 'VARCHAR')})"
            return _Sql(text, "text")
        if op in _SPATIAL:
            a, b = (self._expr(x, depth + 1) for x in _two(args, op))
            for operand in (a, b):
                if operand.kind not in ("geometry", "null", "any"):
                    raise InputError(f"invalid CQL2 filter: {op} compares geometries")
            return _Sql(f"{_SPATIAL[op]}({a.text}, {b.text})", "bool")
        if op in _TEMPORAL:
            a, b = (self._interval(x, depth) for x in _two(args, op))
            return _Sql("(" + _TEMPORAL[op].format(as_=a[0], ae=a[1], bs=b[0], be=b[1]) + ")", "bool")
        if op in _ARRAY:
            a, b = (self._expr(x, depth + 1) for x in _two(args, op))
            for operand in (a, b):
                if operand.kind not in ("list", "null", "any"):
                    raise InputError(f"invalid CQL2 filter: {op} compares arrays")
            return _Sql("(" + _ARRAY[op].format(a=a.text, b=b.text) + ")", "bool")
        if op in _ARITHMETIC:
            a, b = (self._expr(x, depth + 1) for x in _two(args, op))
            parts = [o.text if o.kind in ("number", "null") else _try_cast(o, "DOUBLE") for o in (a, b)]
            return _Sql(f"({parts[0]} {_ARITHMETIC[op]} {parts[1]})", "number")
        raise InputError(f"unsupported CQL2 operator {op!r}")

    def _condition(self, node: Any, depth: int) -> str:
        result = self._expr(node, depth + 1)
        if result.kind == "bool":
            return result.text
        if result.kind == "null":
            return "NULL"
        raise InputError("invalid CQL2 filter: and/or/not combine conditions")

    def _null_test(self, operand: _Sql) -> str:
        test = f"{operand.text} IS NULL"
        column = operand.column
        if column is not None and column.overflow_path:
            # a value that overflowed is not null, even though its typed column is
            path = self._param(_json_path(column.overflow_path), "VARCHAR")
            test += f" AND coalesce(json_type({_quote(OVERFLOW)}, {path}), 'NULL') = 'NULL'"
        return test

    def _compare(self, sql_op: str, a: Any, b: Any, depth: int) -> _Sql:
        left, right = self._expr(a, depth + 1), self._expr(b, depth + 1)
        if left.kind == "null" or right.kind == "null":
            return _Sql("NULL", "bool")
        # the literal decides the type (a property vs a literal); two properties compare as they are
        literal_kind = next((x.kind for x in (right, left) if x.column is None and x.kind != "any"), None)
        kind = literal_kind or left.kind
        if kind == "text" and "timestamp" in (left.kind, right.kind):
            kind = "timestamp"  # datetime > '2021-06-01': the string is a timestamp
        if kind in ("interval", "geometry"):
            raise InputError("invalid CQL2 filter: use T_ or S_ operators on intervals and geometries")
        return self._typed(left, right, lambda x, y: f"{x} {sql_op} {y}", kind)

    def _typed(self, left: _Sql, right: _Sql, build: Callable[[str, str], str], kind: str) -> _Sql:
        cast = {"number": "DOUBLE", "text": "VARCHAR", "bool": "BOOLEAN", "timestamp": "TIMESTAMPTZ"}.get(kind)
        if cast is None:
            return _Sql(f"({build(left.text, right.text)})", "bool")
        sides = []
        fallbacks = []
        for operand in (left, right):
            if operand.kind == kind or operand.kind == "any":
                sides.append(operand.text)
            elif kind == "timestamp" and operand.param is not None and operand.kind == "text":
                sides.append(self._retype_text_literal(operand))
            elif kind == "timestamp" and operand.kind == "text":
                sides.append(_try_cast(operand, "TIMESTAMPTZ"))  # timestamps kept as text (unparsed `created`)
            else:
                sides.append("NULL")  # a value of another type: no match, not an error
            fallbacks.append(operand)
        text = build(sides[0], sides[1])
        extra = []
        for index, operand in enumerate(fallbacks):
            column = operand.column
            if column is not None and column.overflow_path and kind != "timestamp":
                value = self._overflow(column, cast, kind)
                other = sides[1 - index]
                pair = (value, other) if index == 0 else (other, value)
                extra.append(f"({operand.text} IS NULL AND {build(*pair)})")
        if extra:
            text = f"({text}) OR " + " OR ".join(extra)
        return _Sql(f"({text})", "bool")

    def _retype_text_literal(self, operand: _Sql) -> str:
        """A string literal used as a timestamp: parse its parameter in place (positions do not move)."""
        assert operand.param is not None
        self.params[operand.param - 1] = _instant(self.params[operand.param - 1])
        return f"${operand.param}::TIMESTAMPTZ"

    def _overflow(self, column: Column, cast: str, kind: str = "text") -> str:
        """The overflow value of a property, when its JSON type agrees with `kind` (else NULL)."""
        assert column.overflow_path is not None
        path = self._param(_json_path(column.overflow_path), "VARCHAR")
        json_types = {"number": "('BIGINT', 'UBIGINT', 'DOUBLE')", "text": "('VARCHAR')", "bool": "('BOOLEAN')"}
        where = json_types.get(kind, "('VARCHAR')")
        value = f"json_extract_string({_quote(OVERFLOW)}, {path})"
        return f"CASE WHEN json_type({_quote(OVERFLOW)}, {path}) IN {where} THEN TRY_CAST({value} AS {cast}) END"

    def _interval(self, node: Any, depth: int) -> tuple[str, str]:
        operand = self._expr(node, depth + 1)
        if operand.kind == "interval":
            start, end = operand.text.split("\x00")
            return start, end
        if operand.kind == "timestamp":
            return operand.text, operand.text
        if operand.kind == "text" and operand.param is not None:
            text = self._retype_text_literal(operand)
            return text, text
        if operand.kind in ("null", "any"):
            return operand.text, operand.text
        if operand.column is not None:
            cast = _try_cast(operand, "TIMESTAMPTZ")
            return cast, cast
        raise InputError("invalid CQL2 filter: temporal operators compare timestamps and intervals")


def compile_filter(tree: dict[str, Any], resolve: Resolver, params: list[Any] | None = None) -> tuple[str, list[Any]]:
    """CQL2-JSON → (SQL condition, parameters); `params` continues the numbering of an enclosing statement."""
    return Compiler(resolve, params).compile(tree)


def geometry_wkb(geometry: Any) -> bytes:
    """A GeoJSON geometry (dict) → WKB; raises InputError when it is not one."""
    import shapely
    from shapely.geometry import shape

    if not isinstance(geometry, dict) or geometry.get("type") not in _GEOMETRY_TYPES:
        raise InputError("not a GeoJSON geometry (Point, Polygon, MultiPolygon, ...)")
    try:
        geom = shape(geometry)
        if geom.is_empty:
            raise InputError("the geometry is empty")
        wkb: bytes = shapely.to_wkb(geom, flavor="iso")
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, shapely.errors.GEOSException) as exc:
        raise InputError(f"not a valid GeoJSON geometry: {exc}") from None
    return wkb


def _bbox_geometry(values: Any) -> dict[str, Any]:
    if not isinstance(values, list) or len(values) not in (4, 6):
        raise InputError("invalid CQL2 filter: BBOX takes 4 or 6 numbers")
    half = len(values) // 2
    xmin, ymin, xmax, ymax = float(values[0]), float(values[1]), float(values[half]), float(values[half + 1])
    boxes = [(xmin, xmax)] if xmin <= xmax else [(xmin, 180.0), (-180.0, xmax)]
    polygons = [[[[a, ymin], [b, ymin], [b, ymax], [a, ymax], [a, ymin]]] for a, b in boxes]
    return {"type": "MultiPolygon", "coordinates": polygons}


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return parse_datetime(value.isoformat())
    try:
        return parse_datetime(value)
    except DatetimeError as exc:
        raise InputError(f"invalid CQL2 filter: {exc}") from None


def kind_of(duckdb_type: str) -> str:
    """number | text | bool | timestamp | geometry | list | struct | any, from a DuckDB type name."""
    t = duckdb_type.upper()
    if t.endswith("]"):
        return "list"
    if t.startswith("STRUCT"):
        return "struct"
    if t.startswith(_NUMBER_TYPES):
        return "number"
    if t == "VARCHAR":
        return "text"
    if t == "BOOLEAN":
        return "bool"
    if t.startswith(("TIMESTAMP", "DATE")):
        return "timestamp"
    if t.startswith(("GEOMETRY", "BLOB")):
        return "geometry"
    return "any"


def _try_cast(operand: _Sql, cast: str) -> str:
    return f"TRY_CAST({operand.text} AS {cast})"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_identifier(name: str) -> str:
    """A DuckDB identifier, quoted (any text is safe inside)."""
    return _quote(name)


def _json_path(path: str) -> str:
    return "$." + '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _one(args: list[Any], op: str) -> Any:
    if len(args) != 1:
        raise InputError(f"invalid CQL2 filter: {op} takes one argument")
    return args[0]


def _two(args: list[Any], op: str) -> tuple[Any, Any]:
    if len(args) != 2:
        raise InputError(f"invalid CQL2 filter: {op} takes two arguments")
    return args[0], args[1]
