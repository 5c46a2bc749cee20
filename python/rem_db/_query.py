"""Predicates and queries, compiled to one SQL statement with ``$n`` parameters.

A predicate compiles to the SQL a person would write for it, so it plans to the same
DataFusion expression and takes the same indexes (``REMDatabase.explain`` shows the access
path). Field names resolve per table: a built-in column when the table has one (``type``,
``name``, ``created_at``, ``timestamp``, ``uri``, ...), else a key, or a dotted path, of
the table's JSON column (``properties`` of entities and edges, ``metadata`` of resources
and moments).

Values keep their Python type:

* on a JSON path, a ``str`` compares as text (``->>``), an ``int`` or ``float``
  numerically (``json_get_float``: ``gt("rating", 4)`` finds 4.5), a ``bool`` as a
  boolean; a ``datetime`` compares as its ISO-8601 text (``isoformat()``, so it matches
  only values stored in that form, zone suffix included);
* on a timestamp column, a ``datetime`` (naive means UTC) or a ``date`` (its midnight, UTC);
* ``eq(f, None)`` is ``IS NULL`` and ``ne(f, None)`` is ``IS NOT NULL``; otherwise SQL's
  rules hold: a comparison with a missing field is never true, so ``ne`` and ``not_``
  leave out rows without the field.

``in_(f, values)`` on a list field means "any element in": the built-in list columns
(``aliases``, ``classifications``, ``resource_refs``, ``entity_refs``), and a JSON path
declared with a ``list`` index. On a JSON path with no index at all it matches both a
value in the list and an array holding one of them; on a path with a ``value`` index it
compares the value (so that the index answers it). ``not_in`` is ``not_(in_(...))``.

``order_by`` on a JSON path puts numbers first, in numeric order, then the other values
in text order. ``Query`` methods change the query and return it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ._model import to_micros
from ._rem_db import Timestamp

#: The built-in columns of each table and their kinds.
COLUMNS: Dict[str, Dict[str, str]] = {
    "resources": {
        "id": "text",
        "uri": "text",
        "chunk_index": "int",
        "content": "text",
        "metadata": "json",
        "embedding": "vector",
        "created_at": "time",
        "updated_at": "time",
    },
    "entities": {
        "id": "text",
        "type": "text",
        "name": "text",
        "aliases": "list",
        "properties": "json",
        "created_at": "time",
        "updated_at": "time",
    },
    "edges": {
        "src": "text",
        "dst": "text",
        "edge_type": "text",
        "properties": "json",
        "created_at": "time",
    },
    "moments": {
        "id": "text",
        "timestamp": "time",
        "end_timestamp": "time",
        "type": "text",
        "classifications": "list",
        "resource_refs": "list",
        "entity_refs": "list",
        "metadata": "json",
        "created_at": "time",
    },
}

#: The JSON column a field name that is not a column reads from.
JSON_COLUMN = {
    "resources": "metadata",
    "entities": "properties",
    "edges": "properties",
    "moments": "metadata",
}

_COMPARISONS = {"eq": "=", "ne": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class Predicate:
    """A condition on a row; build them with the static methods and combine them with
    ``and_``, ``or_`` and ``not_``."""

    __slots__ = ("op", "field", "values", "children", "options")

    def __init__(
        self,
        op: str,
        field: Optional[str] = None,
        values: Sequence[Any] = (),
        children: Sequence["Predicate"] = (),
        options: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.op = op
        self.field = field
        self.values = list(values)
        self.children = list(children)
        self.options = options or {}

    def __repr__(self) -> str:
        if self.children:
            return f"Predicate.{self.op}({self.children!r})"
        if self.op == "vector_similar":
            return f"Predicate.vector_similar(top_k={self.options['top_k']})"
        return f"Predicate.{self.op}({self.field!r}, {self.values!r})"

    def __and__(self, other: "Predicate") -> "Predicate":
        return Predicate.and_([self, other])

    def __or__(self, other: "Predicate") -> "Predicate":
        return Predicate.or_([self, other])

    def __invert__(self) -> "Predicate":
        return Predicate.not_(self)

    @staticmethod
    def eq(field: str, value: Any) -> "Predicate":
        """``field = value`` (``IS NULL`` for None)."""
        return Predicate("eq", field, [value])

    @staticmethod
    def ne(field: str, value: Any) -> "Predicate":
        """``field <> value`` (``IS NOT NULL`` for None)."""
        return Predicate("ne", field, [value])

    @staticmethod
    def gt(field: str, value: Any) -> "Predicate":
        """``field > value``."""
        return Predicate("gt", field, [value])

    @staticmethod
    def gte(field: str, value: Any) -> "Predicate":
        """``field >= value``."""
        return Predicate("gte", field, [value])

    @staticmethod
    def lt(field: str, value: Any) -> "Predicate":
        """``field < value``."""
        return Predicate("lt", field, [value])

    @staticmethod
    def lte(field: str, value: Any) -> "Predicate":
        """``field <= value``."""
        return Predicate("lte", field, [value])

    @staticmethod
    def between(field: str, low: Any, high: Any) -> "Predicate":
        """``low <= field <= high``."""
        return Predicate("between", field, [low, high])

    @staticmethod
    def in_(field: str, values: Sequence[Any]) -> "Predicate":
        """``field IN values``; on a list field, any element in ``values``."""
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError("in_ takes a list of values")
        return Predicate("in_", field, list(values))

    @staticmethod
    def not_in(field: str, values: Sequence[Any]) -> "Predicate":
        """``field NOT IN values`` (rows without the field are left out, as in SQL)."""
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise TypeError("not_in takes a list of values")
        return Predicate("not_in", field, list(values))

    @staticmethod
    def exists(field: str) -> "Predicate":
        """The field is present and not null."""
        return Predicate("exists", field)

    @staticmethod
    def is_null(field: str) -> "Predicate":
        """The field is missing or null."""
        return Predicate("is_null", field)

    @staticmethod
    def contains(field: str, value: Any) -> "Predicate":
        """The list at ``field`` has ``value`` as an element."""
        return Predicate("contains", field, [value])

    @staticmethod
    def and_(predicates: Sequence["Predicate"]) -> "Predicate":
        """All of ``predicates``."""
        return Predicate("and_", children=_predicates(predicates))

    @staticmethod
    def or_(predicates: Sequence["Predicate"]) -> "Predicate":
        """Any of ``predicates``."""
        return Predicate("or_", children=_predicates(predicates))

    @staticmethod
    def not_(predicate: "Predicate") -> "Predicate":
        """Not ``predicate``."""
        return Predicate("not_", children=_predicates([predicate]))

    @staticmethod
    def vector_similar(
        query: Any,
        top_k: int = 10,
        min_score: Optional[float] = None,
        field: str = "embedding",
    ) -> "Predicate":
        """The ``top_k`` resources nearest to ``query`` (with ``score >= min_score``) among
        those the other conditions of the same ``and_`` keep; only in ``query_resources``,
        alone or directly under the top-level ``and_``."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise ValueError("top_k must be a positive int")
        if min_score is not None and (
            isinstance(min_score, bool)
            or not isinstance(min_score, (int, float))
            or not math.isfinite(min_score)
        ):
            raise ValueError("min_score must be a finite number")
        return Predicate(
            "vector_similar",
            field,
            [query],
            options={"top_k": top_k, "min_score": min_score},
        )


def _predicates(predicates: Sequence[Predicate]) -> List[Predicate]:
    out = list(predicates)
    for p in out:
        if not isinstance(p, Predicate):
            raise TypeError(f"expected a Predicate, got {type(p).__name__}")
    return out


@dataclass
class Query:
    """Filters, order and limits of a ``query_*`` call; each method returns the query."""

    filters: List[Predicate] = field(default_factory=list)
    order: List[Tuple[str, str]] = field(default_factory=list)
    limit_: Optional[int] = None
    offset_: Optional[int] = None
    embeddings: bool = False

    def filter(self, predicate: Predicate) -> "Query":
        """Adds a condition (several are ANDed)."""
        if not isinstance(predicate, Predicate):
            raise TypeError(f"filter takes a Predicate, got {type(predicate).__name__}")
        self.filters.append(predicate)
        return self

    def order_by(self, field: str, direction: str = "asc") -> "Query":
        """Orders by a field, ``asc`` or ``desc``; call again for a second key. In a
        ``Predicate.vector_similar`` query, ``score`` is the similarity."""
        if not isinstance(field, str) or not isinstance(direction, str):
            raise TypeError("order_by takes a field name and 'asc' or 'desc'")
        d = direction.lower()
        if d not in ("asc", "desc"):
            raise ValueError(f"direction must be 'asc' or 'desc', got {direction!r}")
        self.order.append((field, d))
        return self

    def limit(self, n: int) -> "Query":
        """At most ``n`` rows."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**63:
            raise ValueError("limit must be an int from 0 to 2**63 - 1")
        self.limit_ = n
        return self

    def offset(self, n: int) -> "Query":
        """Skips the first ``n`` rows."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < 2**63:
            raise ValueError("offset must be an int from 0 to 2**63 - 1")
        self.offset_ = n
        return self

    def include_embeddings(self, include: bool = True) -> "Query":
        """Also read resources' embeddings (left out by default: they are large)."""
        self.embeddings = include
        return self


class _Compiler:
    def __init__(self, table: str, indexes: Callable[[], Sequence[Dict[str, Any]]]) -> None:
        self.table = table
        self.columns = COLUMNS[table]
        self.json = JSON_COLUMN[table]
        self.params: List[Any] = []
        self.indexes = indexes
        self.paths: Optional[Tuple[Set[Tuple[str, ...]], Set[Tuple[str, ...]]]] = None

    def declared(self) -> Tuple[Set[Tuple[str, ...]], Set[Tuple[str, ...]]]:
        """The JSON paths with a list index and with a value index (read once, when an
        IN list on a JSON path needs them)."""
        if self.paths is None:
            lists: Set[Tuple[str, ...]] = set()
            values: Set[Tuple[str, ...]] = set()
            for ix in self.indexes():
                if ix["table"] == self.table and ix["column"] == self.json and ix["path"]:
                    (lists if ix["kind"] == "list" else values).add(tuple(ix["path"]))
            self.paths = (lists, values)
        return self.paths

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def where(self, p: Predicate) -> str:
        op = p.op
        if op in ("and_", "or_"):
            if not p.children:
                return "TRUE" if op == "and_" else "FALSE"
            joiner = " AND " if op == "and_" else " OR "
            return _balanced([self.where(c) for c in p.children], joiner)
        if op == "not_":
            return f"(NOT {self.where(p.children[0])})"
        if op == "vector_similar":
            raise ValueError(
                "Predicate.vector_similar must stand alone or directly under the top-level and_"
            )
        kind = self.kind(p.field)
        if kind == "list" and op not in ("in_", "not_in", "contains", "exists", "is_null"):
            raise ValueError(
                f"{self.table}.{p.field} is a list: use contains, in_ or not_in"
            )
        assert p.field is not None
        if op in _COMPARISONS:
            value = p.values[0]
            if value is None and op in ("eq", "ne"):
                null = "IS NULL" if op == "eq" else "IS NOT NULL"
                return f"{self.operand(p.field, kind, None)} {null}"
            if value is None:
                raise ValueError(f"{op}({p.field!r}, None): compare with None through eq or ne")
            return f"{self.operand(p.field, kind, value)} {_COMPARISONS[op]} {self.value(p.field, kind, value)}"
        if op == "between":
            low, high = p.values
            if low is None or high is None:
                raise ValueError(f"between({p.field!r}, ...): the bounds must not be None")
            e = self.operand(p.field, kind, low)
            return f"({e} BETWEEN {self.value(p.field, kind, low)} AND {self.value(p.field, kind, high)})"
        if op in ("exists", "is_null"):
            null = "IS NOT NULL" if op == "exists" else "IS NULL"
            return f"{self.operand(p.field, kind, None)} {null}"
        if op == "contains":
            value = p.values[0]
            if kind == "list":
                return f"array_has({p.field}, {self.value(p.field, 'text', value)})"
            if kind == "json":
                return f"json_array_contains({self.json}, {self.path_args(p.field)}, {self.param(_json_param(value))})"
            raise ValueError(f"contains: {self.table}.{p.field} is not a list")
        if op in ("in_", "not_in"):
            return self.in_list(p, kind)
        raise ValueError(f"unknown predicate {op}")

    def in_list(self, p: Predicate, kind: str) -> str:
        assert p.field is not None
        negated = p.op == "not_in"
        values = p.values
        if not values:
            return "TRUE" if negated else "FALSE"
        if kind == "list":
            items = ", ".join(self.value(p.field, "text", v) for v in values)
            e = f"array_has_any({p.field}, make_array({items}))"
        elif kind == "json":
            _one_kind(p.field, values)
            path = tuple(p.field.split("."))
            list_paths, value_paths = self.declared()
            if path in list_paths:
                e = self.any_element(p.field, values)
            elif path in value_paths:
                e = self.value_in(p.field, kind, values)
            else:
                # No index decides the field's shape: a value in the list, or an array
                # with an element in it.
                e = f"({self.any_element(p.field, values)} OR {self.value_in(p.field, kind, values)})"
        else:
            e = self.value_in(p.field, kind, values)
        return f"(NOT {e})" if negated else e

    def any_element(self, name: str, values: Sequence[Any]) -> str:
        args = self.path_args(name)
        return _balanced(
            [f"json_array_contains({self.json}, {args}, {self.param(_json_param(v))})" for v in values],
            " OR ",
        )

    def value_in(self, name: str, kind: str, values: Sequence[Any]) -> str:
        e = self.operand(name, kind, values[0])
        items = ", ".join(self.value(name, kind, v) for v in values)
        return f"{e} IN ({items})"

    def kind(self, name: Optional[str]) -> str:
        if not isinstance(name, str) or not name:
            raise ValueError("a field name must be a non-empty str")
        kind = self.columns.get(name)
        if kind == "vector":
            raise ValueError("the embedding is searched with Predicate.vector_similar")
        if kind is None or kind == "json":
            if kind == "json":
                raise ValueError(f"name a key of {self.table}.{name}, e.g. 'role', not the column")
            return "json"
        return kind

    def path_args(self, name: str) -> str:
        keys = name.split(".")
        if any(not k for k in keys):
            raise ValueError(f"bad field path {name!r}")
        return ", ".join(_quote(k) for k in keys)

    def operand(self, name: str, kind: str, value: Any) -> str:
        """The SQL expression of a field, for comparing with ``value``."""
        if kind != "json":
            return name
        args = self.path_args(name)
        if isinstance(value, bool):
            return f"json_get_bool({self.json}, {args})"
        if isinstance(value, (int, float)):
            # Every number as a float: an int then also finds 4.5 (json_get_int would not).
            return f"json_get_float({self.json}, {args})"
        return f"json_as_text({self.json}, {args})"

    def value(self, name: str, kind: str, value: Any) -> str:
        """A parameter for ``value``, checked against the field's kind."""
        if value is None:
            return "NULL"
        if kind == "time":
            if not isinstance(value, (datetime, date)):
                raise TypeError(
                    f"{self.table}.{name} is a timestamp: compare it with a datetime, got {type(value).__name__}"
                )
            return self.param(Timestamp(to_micros(value)))
        if kind in ("text", "list"):
            if not isinstance(value, str):
                raise TypeError(f"{self.table}.{name} is text: got {type(value).__name__}")
            return self.param(value)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{self.table}.{name} is an integer: got {type(value).__name__}")
            return self.param(value)
        # A JSON value.
        if isinstance(value, (datetime, date)):
            return self.param(value.isoformat())
        if isinstance(value, bool) or isinstance(value, str):
            return self.param(value)
        if isinstance(value, (int, float)):
            if not math.isfinite(value):
                raise ValueError(f"{self.table} field {name!r}: cannot compare with {value}")
            return self.param(float(value))
        raise TypeError(
            f"cannot compare {self.table} field {name!r} with a {type(value).__name__} "
            "(use str, int, float, bool, datetime or None)"
        )

    def order_keys(self, name: str, direction: str, vector: bool) -> str:
        if name == "score" and vector:
            return f"score {direction}"
        kind = self.kind(name)
        if kind == "json":
            # Numbers first in numeric order, then the rest in text order.
            args = self.path_args(name)
            return (f"json_get_float({self.json}, {args}) {direction} NULLS LAST, "
                    f"json_as_text({self.json}, {args}) {direction}")
        return f"{name} {direction}"


def _one_kind(name: str, values: Sequence[Any]) -> None:
    """The values of an IN list on a JSON path compare through one accessor."""
    def kind(v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, (int, float)):
            return "number"
        return "text"

    kinds = {kind(v) for v in values}
    if len(kinds) > 1:
        raise TypeError(f"in_/not_in on {name!r}: mix of {', '.join(sorted(kinds))} values")


def _balanced(parts: List[str], joiner: str) -> str:
    """``parts`` joined by ``joiner`` as a balanced tree of parenthesized halves: the
    engine refuses expressions nested more than 1,000 deep, and a flat chain of n terms is
    n deep, a balanced one about log2(n) levels of up to 8."""
    if len(parts) <= 8:
        return "(" + joiner.join(parts) + ")"
    mid = len(parts) // 2
    return "(" + _balanced(parts[:mid], joiner) + joiner + _balanced(parts[mid:], joiner) + ")"


def _json_param(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot look for a {type(value).__name__} in a list")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Columns read by ``query_*`` (resources leave out their embedding unless asked).
def _select_columns(table: str, embeddings: bool) -> str:
    cols = [c for c in COLUMNS[table] if embeddings or c != "embedding"]
    return ", ".join(cols)


def compile_query(
    table: str, query: Query, indexes: Callable[[], Sequence[Dict[str, Any]]]
) -> Tuple[str, List[Any], bool]:
    """The SQL text of ``query`` over ``table``, its parameters, and whether it is a
    vector search (its rows have a ``score``). ``indexes`` lists the declared indexes;
    it is called only when an IN list on a JSON path needs them."""
    if not isinstance(query, Query):
        raise TypeError(f"expected a Query, got {type(query).__name__}")
    c = _Compiler(table, indexes)
    conditions: List[Predicate] = []
    vector: Optional[Predicate] = None
    for p in query.filters:
        for q in p.children if p.op == "and_" else [p]:
            if q.op == "vector_similar":
                if vector is not None:
                    raise ValueError("a query takes at most one Predicate.vector_similar")
                vector = q
            else:
                conditions.append(q)
    columns = _select_columns(table, query.embeddings)
    if vector is not None:
        if table != "resources":
            raise ValueError("Predicate.vector_similar searches resources: use query_resources")
        if vector.field != "embedding":
            raise ValueError(f"resources have one vector column, embedding, not {vector.field!r}")
        args = [_quote("resources"), c.param(vector.values[0]), str(vector.options["top_k"])]
        if vector.options["min_score"] is not None:
            args.append(repr(float(vector.options["min_score"])))
        source = f"vector_similar({', '.join(args)})"
        columns += ", score"
    else:
        source = table
    sql = f"SELECT {columns} FROM {source}"
    if conditions:
        sql += " WHERE " + " AND ".join(c.where(p) for p in conditions)
    order = list(query.order)
    if vector is not None and not order:
        order = [("score", "desc")]
    if order:
        sql += " ORDER BY " + ", ".join(
            c.order_keys(f, d.upper(), vector is not None) for f, d in order
        )
    if query.limit_ is not None:
        sql += f" LIMIT {query.limit_}"
    if query.offset_ is not None:
        sql += f" OFFSET {query.offset_}"
    return sql, c.params, vector is not None

