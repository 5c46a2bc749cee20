"""The typed REM objects, and their conversion to and from the native module's dicts.

Rows cross the native boundary as dicts of plain values: JSON columns as JSON text,
timestamps as microseconds since the Unix epoch (UTC). Here they become dataclasses with
Python values: dicts for JSON, ``datetime`` objects in UTC for timestamps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, List, Optional, Sequence, Union

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

JsonObject = Dict[str, Any]


def to_micros(value: Union[datetime, date]) -> int:
    """Microseconds since the epoch. A naive ``datetime`` is taken as UTC; a ``date``
    as its midnight in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        delta = value - EPOCH
    elif isinstance(value, date):
        delta = datetime(value.year, value.month, value.day, tzinfo=timezone.utc) - EPOCH
    else:
        raise TypeError(f"expected a datetime or a date, got {type(value).__name__}")
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(micros: int) -> datetime:
    """The UTC ``datetime`` of microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=micros)


def _json_text(value: Optional[JsonObject], what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, separators=(",", ":"), default=_json_default, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"{what}: {e} (JSON has no NaN or infinity)") from None


def _texts(value: Any, what: str) -> List[str]:
    """A list of text; a lone string is refused (it would become its characters)."""
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a list of str, got {type(value).__name__}")
    for v in value:
        if not isinstance(v, str):
            raise TypeError(f"{what} must be a list of str, got an element {type(v).__name__}")
    return list(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _json_value(text: Optional[str]) -> JsonObject:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def _time(value: Optional[Union[datetime, date, int]]) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, (datetime, date)):
        return to_micros(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected a datetime, got {type(value).__name__}")
    return value


@dataclass
class Resource:
    """A chunk of content with JSON ``metadata``, optionally embedded."""

    content: str = ""
    metadata: JsonObject = field(default_factory=dict)
    uri: Optional[str] = None
    chunk_index: int = 0
    id: str = ""
    embedding: Optional[List[float]] = None
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None

    def _to_native(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "uri": self.uri,
            "chunk_index": self.chunk_index,
            "content": self.content,
            "metadata": _json_text(self.metadata, "metadata"),
            "created_at": _time(self.created_at),
            "updated_at": _time(self.updated_at),
            "embedding": self.embedding,
        }

    @classmethod
    def _from_native(cls, row: Dict[str, Any]) -> "Resource":
        return cls(
            id=row["id"],
            uri=row.get("uri"),
            chunk_index=row.get("chunk_index") or 0,
            content=row.get("content") or "",
            metadata=_json_value(row.get("metadata")),
            embedding=_embedding(row.get("embedding")),
            created_at=_dt(row.get("created_at")),
            updated_at=_dt(row.get("updated_at")),
        )


@dataclass
class Entity:
    """A typed graph node with JSON ``properties``."""

    type: str = ""
    name: str = ""
    properties: JsonObject = field(default_factory=dict)
    aliases: List[str] = field(default_factory=list)
    id: str = ""
    created_at: Optional[datetime] = None
    updated_at: Optional[datetime] = None

    def _to_native(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "aliases": _texts(self.aliases, "aliases"),
            "properties": _json_text(self.properties, "properties"),
            "created_at": _time(self.created_at),
            "updated_at": _time(self.updated_at),
        }

    @classmethod
    def _from_native(cls, row: Dict[str, Any]) -> "Entity":
        return cls(
            id=row["id"],
            type=row.get("type") or "",
            name=row.get("name") or "",
            aliases=list(row.get("aliases") or []),
            properties=_json_value(row.get("properties")),
            created_at=_dt(row.get("created_at")),
            updated_at=_dt(row.get("updated_at")),
        )


@dataclass
class Edge:
    """A typed, directed relation ``src -[edge_type]-> dst`` with JSON ``properties``."""

    src: str = ""
    dst: str = ""
    edge_type: str = ""
    properties: JsonObject = field(default_factory=dict)
    created_at: Optional[datetime] = None

    def _to_native(self) -> Dict[str, Any]:
        return {
            "src": self.src,
            "dst": self.dst,
            "edge_type": self.edge_type,
            "properties": _json_text(self.properties, "properties"),
            "created_at": _time(self.created_at),
        }

    @classmethod
    def _from_native(cls, row: Dict[str, Any]) -> "Edge":
        return cls(
            src=row["src"],
            dst=row["dst"],
            edge_type=row["edge_type"],
            properties=_json_value(row.get("properties")),
            created_at=_dt(row.get("created_at")),
        )


@dataclass
class Moment:
    """A time-stamped classification pointing at resources and entities."""

    timestamp: Optional[datetime] = None
    type: str = ""
    classifications: List[str] = field(default_factory=list)
    resource_refs: List[str] = field(default_factory=list)
    entity_refs: List[str] = field(default_factory=list)
    metadata: JsonObject = field(default_factory=dict)
    end_timestamp: Optional[datetime] = None
    id: str = ""
    created_at: Optional[datetime] = None

    def _to_native(self) -> Dict[str, Any]:
        if self.timestamp is None:
            raise TypeError("a moment needs a timestamp")
        return {
            "id": self.id,
            "timestamp": _time(self.timestamp),
            "end_timestamp": _time(self.end_timestamp),
            "type": self.type,
            "classifications": _texts(self.classifications, "classifications"),
            "resource_refs": _texts(self.resource_refs, "resource_refs"),
            "entity_refs": _texts(self.entity_refs, "entity_refs"),
            "metadata": _json_text(self.metadata, "metadata"),
            "created_at": _time(self.created_at),
        }

    @classmethod
    def _from_native(cls, row: Dict[str, Any]) -> "Moment":
        return cls(
            id=row["id"],
            timestamp=_dt(row.get("timestamp")),
            end_timestamp=_dt(row.get("end_timestamp")),
            type=row.get("type") or "",
            classifications=list(row.get("classifications") or []),
            resource_refs=list(row.get("resource_refs") or []),
            entity_refs=list(row.get("entity_refs") or []),
            metadata=_json_value(row.get("metadata")),
            created_at=_dt(row.get("created_at")),
        )


@dataclass
class SearchHit:
    """A resource found by vector search, with its ``score`` (cosine similarity for the
    cosine metric; higher is nearer)."""

    resource: Resource
    score: float

    def __getattr__(self, name: str) -> Any:
        # `hit.content`, `hit.metadata`, ... read through to the resource.
        if name == "resource":
            raise AttributeError(name)
        return getattr(self.resource, name)


@dataclass
class Hop:
    """A node reached by ``traverse``: its id, the depth, the type of the edge that first
    reached it, the path of ids from the start, and its entity when it has one."""

    id: str
    depth: int
    edge_type: str
    path: List[str]
    entity: Optional[Entity]


def _dt(value: Any) -> Optional[datetime]:
    """Arrow gives timestamps as ``datetime`` (in its own UTC zone); the native dicts as
    microseconds. Either way the result is in ``timezone.utc``."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc)
    return from_micros(int(value))


def _embedding(value: Any) -> Optional[List[float]]:
    if value is None:
        return None
    return [float(x) for x in value]


Row = Union[Resource, Entity, Edge, Moment]

ROW_TYPES: Dict[str, Any] = {
    "resources": Resource,
    "entities": Entity,
    "edges": Edge,
    "moments": Moment,
}


def rows_from_native(table: str, rows: Sequence[Dict[str, Any]]) -> List[Any]:
    kind = ROW_TYPES[table]
    return [kind._from_native(r) for r in rows]
