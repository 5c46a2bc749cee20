"""rem_db: REM memory (Resources, Entities, Moments) on the embedded remdb engine.

    from rem_db import REMDatabase, Query, Predicate
    db = REMDatabase(tenant_id="tenant-123", path="./data")
    eid = db.create_entity(type="person", name="Ada", properties={"role": "engineer"})
    people = db.query_entities(Query().filter(Predicate.eq("role", "engineer")))

See the README's Python section for the whole API.
"""

from ._db import Batch, PreparedStatement, REMDatabase, Results, drop_tenant, list_tenants
from ._model import Edge, Entity, Hop, Moment, Resource, SearchHit
from ._query import Predicate, Query
from ._rem_db import (
    AlreadyExists,
    Cancelled,
    CorruptionError,
    InternalError,
    InvalidArgument,
    NotFound,
    QueryError,
    RemDbError,
    ResourcesExhausted,
    StorageError,
)

__all__ = [
    "AlreadyExists",
    "Batch",
    "Cancelled",
    "CorruptionError",
    "Edge",
    "Entity",
    "Hop",
    "InternalError",
    "InvalidArgument",
    "Moment",
    "NotFound",
    "Predicate",
    "PreparedStatement",
    "Query",
    "QueryError",
    "REMDatabase",
    "RemDbError",
    "Resource",
    "ResourcesExhausted",
    "Results",
    "SearchHit",
    "StorageError",
    "drop_tenant",
    "list_tenants",
]
