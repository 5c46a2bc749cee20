"""``REMDatabase``: one tenant of a remdb database directory, from Python."""

from __future__ import annotations

from datetime import date, datetime
from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Generic,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
    Union,
    overload,
)

import pyarrow as pa

from . import _rem_db
from ._model import Edge, Entity, Hop, Moment, Resource, SearchHit, rows_from_native
from ._query import COLUMNS, JSON_COLUMN, Query, compile_query

T = TypeVar("T")

Param = Any
"""A SQL parameter: None, bool, int, float, str, datetime, date, or a vector (a list of
floats or a 1-d numpy array)."""


def _bind(params: Optional[Sequence[Param]]) -> List[Any]:
    if params is None:
        return []
    if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
        raise TypeError("params must be a list of values")
    out: List[Any] = []
    for p in params:
        if isinstance(p, (datetime, date)):
            from ._model import to_micros

            out.append(_rem_db.Timestamp(to_micros(p)))
        else:
            out.append(p)
    return out


def _table(result: _rem_db.ArrowResult) -> pa.Table:
    return pa.table(result)


class Results(Generic[T]):
    """The rows of a query: a sequence of typed objects, built when first read, and the
    Arrow table they come from (``to_arrow()``, ``to_pandas()``)."""

    def __init__(self, result: _rem_db.ArrowResult, build: Callable[[List[Dict[str, Any]]], List[T]]) -> None:
        self._result = result
        self._build = build
        self._rows: Optional[List[T]] = None
        self._table: Optional[pa.Table] = None

    def _all(self) -> List[T]:
        if self._rows is None:
            self._rows = self._build(self._result.rows())
        return self._rows

    def __len__(self) -> int:
        return self._result.num_rows

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> List[T]: ...
    def __getitem__(self, i: Union[int, slice]) -> Union[T, List[T]]:
        return self._all()[i]

    def __iter__(self) -> Iterator[T]:
        return iter(self._all())

    def __bool__(self) -> bool:
        return self._result.num_rows > 0

    def __repr__(self) -> str:
        return f"Results({self._all()!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Results):
            return self._all() == other._all()
        if isinstance(other, list):
            return self._all() == other
        return NotImplemented

    def to_list(self) -> List[T]:
        """The rows as a list."""
        return list(self._all())

    def to_arrow(self) -> pa.Table:
        """The rows as a ``pyarrow.Table`` (JSON columns as JSON text)."""
        if self._table is None:
            self._table = _table(self._result)
        return self._table

    def to_pandas(self) -> Any:
        """The rows as a ``pandas.DataFrame`` (needs pandas)."""
        return self.to_arrow().to_pandas()


def _builder(table: str, vector: bool) -> Callable[[List[Dict[str, Any]]], List[Any]]:
    def build(rows: List[Dict[str, Any]]) -> List[Any]:
        if not vector:
            return rows_from_native(table, rows)
        return [SearchHit(Resource._from_native(r), float(r["score"])) for r in rows]

    return build


class PreparedStatement:
    """A SQL statement planned once (see ``REMDatabase.prepare``)."""

    def __init__(self, statement: _rem_db.Prepared) -> None:
        self._statement = statement

    def execute(self, params: Optional[Sequence[Param]] = None) -> pa.Table:
        """Runs the statement with values for ``$1``, ``$2``, ...; its rows as Arrow."""
        return _table(self._statement.execute(_bind(params)))

    def explain(self, params: Optional[Sequence[Param]] = None) -> str:
        """The physical plan these values run with."""
        return self._statement.explain(_bind(params))


def _row(kind: Type[T], given: Optional[T], fields: Dict[str, Any], what: str) -> T:
    if given is not None:
        if not isinstance(given, kind):
            raise TypeError(f"{what} takes a {kind.__name__}, got {type(given).__name__}")
        if any(v is not None for v in fields.values()):
            raise TypeError(f"{what}: pass a {kind.__name__} or keyword arguments, not both")
        return given
    return kind(**{k: v for k, v in fields.items() if v is not None})


class Batch:
    """Writes gathered by ``REMDatabase.batch()`` and applied atomically, all or nothing,
    when the ``with`` block ends without an exception."""

    def __init__(self) -> None:
        self._ops: List[Tuple[str, str, Any]] = []

    def _insert(self, table: str, row: Dict[str, Any]) -> str:
        if table != "edges" and not row.get("id"):
            row["id"] = _rem_db.new_id()
        self._ops.append(("insert", table, row))
        return str(row.get("id", ""))

    def create_resource(self, resource: Optional[Resource] = None, **fields: Any) -> str:
        """As ``REMDatabase.create_resource``; the id is known before the commit."""
        return self._insert("resources", _row(Resource, resource, fields, "create_resource")._to_native())

    def create_entity(self, entity: Optional[Entity] = None, **fields: Any) -> str:
        """As ``REMDatabase.create_entity``."""
        return self._insert("entities", _row(Entity, entity, fields, "create_entity")._to_native())

    def create_moment(self, moment: Optional[Moment] = None, **fields: Any) -> str:
        """As ``REMDatabase.create_moment``."""
        return self._insert("moments", _row(Moment, moment, fields, "create_moment")._to_native())

    def create_edge(self, edge: Optional[Edge] = None, **fields: Any) -> None:
        """As ``REMDatabase.create_edge``."""
        self._insert("edges", _row(Edge, edge, fields, "create_edge")._to_native())

    def update(self, row: Union[Resource, Entity, Edge, Moment]) -> None:
        """Replaces a stored row (the whole row: read it first to change a field)."""
        self._ops.append(("update", _table_of(row), row._to_native()))

    def delete(self, table: str, *key: str) -> None:
        """Deletes a row by id (edges: ``src, edge_type, dst``)."""
        self._ops.append(("delete", table, list(key)))


def _table_of(row: Any) -> str:
    for name, kind in (("resources", Resource), ("entities", Entity), ("edges", Edge), ("moments", Moment)):
        if isinstance(row, kind):
            return name
    raise TypeError(f"expected a Resource, Entity, Edge or Moment, got {type(row).__name__}")


class _BatchContext:
    def __init__(self, db: "REMDatabase") -> None:
        self._db = db
        self._batch = Batch()

    def __enter__(self) -> Batch:
        return self._batch

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        value: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        if kind is None and self._batch._ops:
            self._db._tenant.write(self._batch._ops)


class REMDatabase:
    """One tenant of the database in directory ``path``.

    The tenant is created on first use (``create=False`` refuses an unknown tenant with
    ``NotFound``). Every ``REMDatabase`` of one process on one directory shares one open
    database; another process gets ``StorageError``. Objects are safe to share between
    threads; calls release the GIL while they run.
    """

    def __init__(self, tenant_id: str, path: str = "./data", create: bool = True) -> None:
        self._db = _rem_db.Database(str(path))
        try:
            self._tenant = self._db.tenant(tenant_id, create)
        except BaseException:
            self._db.close()
            raise
        self.tenant_id = tenant_id
        self.path = str(path)

    # -- lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Lets go of the database (it closes, saving vector indexes, when the last
        ``REMDatabase`` on its directory lets go). Later calls raise ``RemDbError``."""
        self._tenant.close()
        self._db.close()

    def __enter__(self) -> "REMDatabase":
        return self

    def __exit__(
        self,
        kind: Optional[Type[BaseException]],
        value: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"REMDatabase(tenant_id={self.tenant_id!r}, path={self.path!r})"

    # -- writes ----------------------------------------------------------------------

    def _insert(self, table: str, row: Dict[str, Any]) -> str:
        if table != "edges" and not row.get("id"):
            row["id"] = _rem_db.new_id()
        return self._tenant.write([("insert", table, row)])[0]

    def create_resource(
        self,
        resource: Optional[Resource] = None,
        *,
        content: Optional[str] = None,
        metadata: Optional[Dict[str, Any]] = None,
        uri: Optional[str] = None,
        chunk_index: Optional[int] = None,
        id: Optional[str] = None,
        embedding: Optional[Any] = None,
    ) -> str:
        """Stores a resource (a ``Resource``, or its fields as keywords); returns its id."""
        r = _row(Resource, resource, dict(content=content, metadata=metadata, uri=uri,
                                          chunk_index=chunk_index, id=id, embedding=embedding),
                 "create_resource")
        return self._insert("resources", r._to_native())

    def create_entity(
        self,
        entity: Optional[Entity] = None,
        *,
        type: Optional[str] = None,
        name: Optional[str] = None,
        properties: Optional[Dict[str, Any]] = None,
        aliases: Optional[List[str]] = None,
        id: Optional[str] = None,
    ) -> str:
        """Stores an entity; returns its id."""
        e = _row(Entity, entity, dict(type=type, name=name, properties=properties,
                                      aliases=aliases, id=id), "create_entity")
        return self._insert("entities", e._to_native())

    def create_moment(
        self,
        moment: Optional[Moment] = None,
        *,
        timestamp: Optional[Union[datetime, date]] = None,
        type: Optional[str] = None,
        classifications: Optional[List[str]] = None,
        resource_refs: Optional[List[str]] = None,
        entity_refs: Optional[List[str]] = None,
        metadata: Optional[Dict[str, Any]] = None,
        end_timestamp: Optional[Union[datetime, date]] = None,
        id: Optional[str] = None,
    ) -> str:
        """Stores a moment; returns its id. A naive ``datetime`` is taken as UTC, a
        ``date`` as its midnight in UTC."""
        m = _row(Moment, moment, dict(timestamp=timestamp, type=type,
                                      classifications=classifications,
                                      resource_refs=resource_refs, entity_refs=entity_refs,
                                      metadata=metadata, end_timestamp=end_timestamp, id=id),
                 "create_moment")
        return self._insert("moments", m._to_native())

    def create_edge(
        self,
        edge: Optional[Edge] = None,
        *,
        src: Optional[str] = None,
        dst: Optional[str] = None,
        edge_type: Optional[str] = None,
        properties: Optional[Dict[str, Any]] = None,
    ) -> None:
        """Stores the edge ``src -[edge_type]-> dst``."""
        e = _row(Edge, edge, dict(src=src, dst=dst, edge_type=edge_type, properties=properties),
                 "create_edge")
        self._insert("edges", e._to_native())

    def _update(self, kind: Type[Any], table: str, row: Any, key: List[str], changes: Dict[str, Any]) -> None:
        if isinstance(row, kind):
            if changes:
                raise TypeError("pass the changed object or the changes as keywords, not both")
            self._tenant.write([("update", table, row._to_native())])
            return
        current = self._tenant.get_row(table, key)
        if current is None:
            raise _rem_db.NotFound(f"{table} row {'|'.join(key)} does not exist")
        obj = kind._from_native(current)
        for name, value in changes.items():
            if not hasattr(obj, name) or name in ("id", "created_at"):
                raise TypeError(f"{kind.__name__} has no field {name!r} to change")
            setattr(obj, name, value)
        self._tenant.write([("update", table, obj._to_native())])

    def update_resource(self, resource: Union[Resource, str], **changes: Any) -> None:
        """Replaces a resource (pass the changed ``Resource``), or changes the given fields
        of the one with this id. Without ``embedding``, the stored vector is kept."""
        key = [resource.id if isinstance(resource, Resource) else resource]
        self._update(Resource, "resources", resource, key, changes)

    def update_entity(self, entity: Union[Entity, str], **changes: Any) -> None:
        """Replaces an entity, or changes the given fields of the one with this id."""
        key = [entity.id if isinstance(entity, Entity) else entity]
        self._update(Entity, "entities", entity, key, changes)

    def update_moment(self, moment: Union[Moment, str], **changes: Any) -> None:
        """Replaces a moment, or changes the given fields of the one with this id."""
        key = [moment.id if isinstance(moment, Moment) else moment]
        self._update(Moment, "moments", moment, key, changes)

    def update_edge(self, edge: Edge) -> None:
        """Replaces an edge (its properties)."""
        self._update(Edge, "edges", edge, [edge.src, edge.edge_type, edge.dst], {})

    def delete_resource(self, id: str) -> bool:
        """Deletes a resource and its vector; False when there was none."""
        return self._tenant.delete_row("resources", [id])

    def delete_entity(self, id: str) -> bool:
        """Deletes an entity (its edges stay); False when there was none."""
        return self._tenant.delete_row("entities", [id])

    def delete_moment(self, id: str) -> bool:
        """Deletes a moment; False when there was none."""
        return self._tenant.delete_row("moments", [id])

    def delete_edge(self, src: str, edge_type: str, dst: str) -> bool:
        """Deletes an edge; False when there was none."""
        return self._tenant.delete_row("edges", [src, edge_type, dst])

    def batch(self) -> _BatchContext:
        """``with db.batch() as b:`` gathers writes and applies them atomically at the end
        of the block (nothing is written if it raises)."""
        return _BatchContext(self)

    def insert_arrow(self, table: str, data: Any) -> int:
        """Appends the rows of an Arrow table or stream (anything with
        ``__arrow_c_stream__``: pyarrow, polars, ...) in one atomic write; columns match
        by name, missing ones get their defaults. Returns the number of rows."""
        return self._tenant.insert_arrow(table, data)

    # -- reads -----------------------------------------------------------------------

    def _get(self, table: str, key: List[str]) -> Any:
        row = self._tenant.get_row(table, key)
        return None if row is None else rows_from_native(table, [row])[0]

    def get_resource(self, id: str) -> Optional[Resource]:
        """The resource with this id (with its embedding), or None."""
        return self._get("resources", [id])  # type: ignore[no-any-return]

    def get_entity(self, id: str) -> Optional[Entity]:
        """The entity with this id, or None."""
        return self._get("entities", [id])  # type: ignore[no-any-return]

    def get_moment(self, id: str) -> Optional[Moment]:
        """The moment with this id, or None."""
        return self._get("moments", [id])  # type: ignore[no-any-return]

    def get_edge(self, src: str, edge_type: str, dst: str) -> Optional[Edge]:
        """The edge ``src -[edge_type]-> dst``, or None."""
        return self._get("edges", [src, edge_type, dst])  # type: ignore[no-any-return]

    def count(self, table: str) -> int:
        """The number of rows in a table."""
        return self._tenant.count(table)

    # -- vectors ---------------------------------------------------------------------

    def set_embedding(self, resource_id: str, embedding: Optional[Any]) -> None:
        """Sets a resource's embedding (a list of floats or a 1-d numpy array; None
        removes it). The first vector fixes the tenant's dimensions."""
        self._tenant.set_embedding(resource_id, embedding)

    def search_similar(
        self, query_vector: Any, top_k: int = 10, min_score: Optional[float] = None
    ) -> List[SearchHit]:
        """The ``top_k`` resources nearest to ``query_vector``, best first, leaving out
        those scoring under ``min_score``."""
        _positive("top_k", top_k)
        hits = self._tenant.search_similar(query_vector, top_k, min_score)
        return [SearchHit(Resource._from_native(r), score) for r, score in hits]

    def configure_vectors(
        self,
        dimensions: Optional[int] = None,
        metric: Optional[str] = None,
        connectivity: Optional[int] = None,
        ef_construction: Optional[int] = None,
        ef_search: Optional[int] = None,
        precision: Optional[str] = None,
        rescore: Optional[int] = None,
    ) -> None:
        """Declares the vector index: ``metric`` cosine | inner_product | l2, ``precision``
        f16 (the default) | f32 | i8 (cosine only), HNSW ``connectivity`` (M),
        ``ef_construction``, ``ef_search``, and ``rescore``: with f16 or i8 a search takes
        ``top_k * rescore`` index hits, scores them exactly from the stored f32 vectors and
        keeps the best (default 1 for f16, 4 for i8). All but ``ef_search`` and
        ``rescore`` are fixed once the first vector is stored."""
        self._tenant.configure_vectors(dimensions, metric, connectivity, ef_construction,
                                       ef_search, precision, rescore)

    def vector_options(self) -> Optional[Dict[str, Any]]:
        """The vector index's options, or None before any are set."""
        return self._tenant.vector_options()

    # -- queries ---------------------------------------------------------------------

    def _query(self, table: str, query: Query) -> Results[Any]:
        sql, params, vector = compile_query(table, query, lambda: self._indexes_for(table))
        return Results(self._tenant.sql(sql, _bind(params)), _builder(table, vector))

    def _indexes_for(self, table: str) -> List[Dict[str, Any]]:
        return [ix for ix in self._tenant.list_indexes() if ix["table"] == table]

    def query_resources(self, query: Query) -> Results[Any]:
        """Resources matching the query; ``SearchHit`` objects (with ``score``) when it has
        a ``Predicate.vector_similar``, else ``Resource`` objects."""
        return self._query("resources", query)

    def query_entities(self, query: Query) -> Results[Entity]:
        """Entities matching the query."""
        return self._query("entities", query)

    def query_moments(self, query: Query) -> Results[Moment]:
        """Moments matching the query."""
        return self._query("moments", query)

    def query_edges(self, query: Query) -> Results[Edge]:
        """Edges matching the query."""
        return self._query("edges", query)

    def explain(self, table: str, query: Query) -> str:
        """The physical plan of ``query_<table>(query)``: its access path (index set,
        ordered walk, vector strategy) and what is left to check."""
        sql, params, _ = compile_query(table, query, lambda: self._indexes_for(table))
        return self._tenant.explain(sql, _bind(params))

    def to_sql(self, table: str, query: Query) -> Tuple[str, List[Any]]:
        """The SQL text and parameters ``query_<table>(query)`` runs."""
        sql, params, _ = compile_query(table, query, lambda: self._indexes_for(table))
        return sql, params

    def sql(self, sql: str, params: Optional[Sequence[Param]] = None) -> pa.Table:
        """Runs one SQL statement with values for ``$1``, ``$2``, ...; the rows as a
        ``pyarrow.Table``. Statements are prepared once per text and kept."""
        return _table(self._tenant.sql(sql, _bind(params)))

    def prepare(self, sql: str) -> PreparedStatement:
        """Plans a statement with ``$n`` placeholders once, for repeated runs."""
        return PreparedStatement(self._tenant.prepare(sql))

    # -- graph -----------------------------------------------------------------------

    def traverse(
        self,
        start: str,
        edge_type: Optional[Union[str, Sequence[str]]] = None,
        direction: str = "outgoing",
        max_depth: int = 1,
    ) -> List[Hop]:
        """Nodes reachable from ``start`` within ``max_depth`` edges (of ``edge_type``,
        one or several; None means any), nearest first, each once; ``direction`` is
        outgoing (or out), incoming (or in) or both."""
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
            raise ValueError("max_depth must be a non-negative int")
        if edge_type is None:
            types: List[str] = []
        elif isinstance(edge_type, str):
            types = [edge_type]
        else:
            types = list(edge_type)
        hops = self._tenant.traverse(start, direction, max_depth, types)
        return [
            Hop(id=i, depth=d, edge_type=t, path=p,
                entity=None if e is None else Entity._from_native(e))
            for i, d, t, p, e in hops
        ]

    def lookup(self, *keys: str) -> List[Union[Entity, Resource]]:
        """REM's LOOKUP: entities whose id, name or alias is a key (names ignoring case
        and spacing) and resources whose id or uri is one."""
        found = self._tenant.lookup(list(keys))
        return [rows_from_native(table, [row])[0] for _, table, row in found]

    # -- indexes ---------------------------------------------------------------------

    def create_index(self, name: str, table: str, field: str, kind: str = "value") -> Dict[str, Any]:
        """Declares an index and builds it over the existing rows; later writes maintain
        it. ``field`` is a key or dotted path of the table's JSON column (``kind`` value,
        or list for each element of an array) or one of the columns ``name`` (entities),
        ``uri`` (resources), ``created_at``, ``updated_at``."""
        if table not in COLUMNS:
            raise _rem_db.InvalidArgument(f"unknown table {table!r}")
        if field in COLUMNS[table]:
            return self._tenant.create_index(name, table, field, [], kind)
        return self._tenant.create_index(name, table, JSON_COLUMN[table], field.split("."), kind)

    def drop_index(self, name: str) -> None:
        """Drops a declared index."""
        self._tenant.drop_index(name)

    def list_indexes(self) -> List[Dict[str, Any]]:
        """The declared indexes: name, table, column, path, kind."""
        return self._tenant.list_indexes()


def _positive(name: str, n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n < 2**63:
        raise ValueError(f"{name} must be a positive int")


def list_tenants(path: str) -> List[str]:
    """The tenants of the database in ``path``."""
    db = _rem_db.Database(str(path))
    try:
        return db.list_tenants()
    finally:
        db.close()


def drop_tenant(path: str, tenant_id: str) -> None:
    """Drops a tenant and all its data."""
    db = _rem_db.Database(str(path))
    try:
        db.drop_tenant(tenant_id)
    finally:
        db.close()
