"""The examples of the specification (../shared/SPEC.md and the Python package's issue),
run one by one against a real database directory."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import List

import numpy as np
import pyarrow as pa
import pytest

from rem_db import (
    Entity,
    Moment,
    Predicate,
    Query,
    REMDatabase,
    Resource,
    SearchHit,
)

DIM = 16


def unit(seed: int) -> List[float]:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return [float(x) for x in v / np.linalg.norm(v)]


@pytest.fixture
def db(tmp_path: Path) -> REMDatabase:
    return REMDatabase(tenant_id="tenant-123", path=str(tmp_path / "data"))


def test_phase1_core_operations(db: REMDatabase) -> None:
    resource_id = db.create_resource(
        content="The quick brown fox...", metadata={"source": "document.pdf", "page": 1}
    )
    entity_id = db.create_entity(
        type="person", name="John Doe", properties={"role": "engineer", "team": "platform"}
    )
    now = datetime.now()
    moment_id = db.create_moment(
        timestamp=now, type="conversation", resource_refs=[resource_id], entity_refs=[entity_id]
    )
    r = db.get_resource(resource_id)
    assert r is not None and r.content == "The quick brown fox..."
    assert r.metadata == {"source": "document.pdf", "page": 1}
    assert r.uri is None
    e = db.get_entity(entity_id)
    assert e is not None and (e.type, e.name) == ("person", "John Doe")
    assert e.properties == {"role": "engineer", "team": "platform"}
    m = db.get_moment(moment_id)
    assert m is not None and m.type == "conversation"
    assert m.resource_refs == [resource_id] and m.entity_refs == [entity_id]
    # A naive datetime is UTC.
    assert m.timestamp == now.replace(tzinfo=timezone.utc)


def test_phase2_vector_search(db: REMDatabase) -> None:
    ids = [db.create_resource(content=f"doc {i}", metadata={"i": i}) for i in range(20)]
    for i, rid in enumerate(ids):
        # A numpy float32 array, as an embedding model returns it.
        db.set_embedding(rid, np.array(unit(i), dtype=np.float32))
    results = db.search_similar(query_vector=unit(7), top_k=10, min_score=0.7)
    assert results, "the vector's own resource scores 1.0"
    assert isinstance(results[0], SearchHit)
    assert results[0].id == ids[7] and results[0].score == pytest.approx(1.0, abs=1e-4)
    assert all(h.score >= 0.7 for h in results)
    assert [h.score for h in results] == sorted((h.score for h in results), reverse=True)
    everything = db.search_similar(query_vector=unit(7), top_k=10)
    assert len(everything) == 10


def test_phase3_predicates(db: REMDatabase) -> None:
    db.create_entity(type="person", name="Ada", properties={"team": "platform", "status": "active"})
    db.create_entity(type="person", name="Alan", properties={"team": "infra", "status": "active"})
    db.create_entity(type="person", name="Grace", properties={"team": "research"})
    db.create_entity(type="project", name="Percolate", properties={"status": "active"})

    query = Query().filter(Predicate.eq("status", "active")).limit(100)
    assert sorted(e.name for e in db.query_entities(query)) == ["Ada", "Alan", "Percolate"]

    query = Query().filter(
        Predicate.and_([
            Predicate.eq("type", "person"),
            Predicate.in_("team", ["platform", "infra"]),
            Predicate.gt("created_at", datetime(2024, 1, 1)),
        ])
    ).order_by("name", "asc")
    entities = db.query_entities(query)
    assert [e.name for e in entities] == ["Ada", "Alan"]
    assert all(isinstance(e, Entity) for e in entities)


def test_phase4_hybrid_search(db: REMDatabase) -> None:
    ids = []
    for i in range(40):
        meta = {"language": "en" if i % 2 == 0 else "de",
                "tags": ["important"] if i % 4 == 0 else (["urgent"] if i % 4 == 1 else [])}
        rid = db.create_resource(content=f"doc {i}", metadata=meta)
        db.set_embedding(rid, unit(i))
        ids.append(rid)
    query_vector = unit(8)
    query = Query().filter(
        Predicate.and_([
            Predicate.vector_similar(field="embedding", query=query_vector, top_k=50, min_score=-1.0),
            Predicate.eq("language", "en"),
            Predicate.in_("tags", ["important", "urgent"]),
        ])
    ).limit(10)
    results = db.query_resources(query)
    # English and tagged: i % 4 == 0 (i % 4 == 1 is German).
    expected = {ids[i] for i in range(0, 40, 4)}
    assert {r.id for r in results} == expected
    assert results[0].id == ids[8]
    assert all(r.metadata["language"] == "en" for r in results)
    scores = [r.score for r in results]
    assert scores == sorted(scores, reverse=True)


def test_resource_operations(db: REMDatabase) -> None:
    resource = Resource(
        content="Long document content...",
        metadata={"source": "document.pdf", "page": 5, "author": "John Doe",
                  "language": "en", "tags": ["important", "technical"]},
    )
    resource_id = db.create_resource(resource)
    db.create_resource(content="other", metadata={"author": "Jane Roe"})
    embedding = unit(1)
    db.set_embedding(resource_id, embedding)

    results = db.query_resources(Query().filter(Predicate.eq("author", "John Doe")))
    assert [r.id for r in results] == [resource_id]
    assert results[0].metadata["tags"] == ["important", "technical"]

    results2 = db.search_similar(query_vector=embedding, top_k=10)
    assert results2[0].id == resource_id

    results3 = db.query_resources(
        Query().filter(
            Predicate.and_([
                Predicate.vector_similar(query=embedding, top_k=50, min_score=0.7),
                Predicate.eq("language", "en"),
                Predicate.in_("tags", ["important"]),
            ])
        ).limit(10)
    )
    assert [r.id for r in results3] == [resource_id]


def test_entity_graph_operations(db: REMDatabase) -> None:
    person_id = db.create_entity(type="person", name="Alice", properties={"role": "engineer", "team": "infra"})
    bob = db.create_entity(type="person", name="Bob", properties={"role": "engineer"})
    project_id = db.create_entity(type="project", name="Percolate", properties={"status": "active"})
    repo = db.create_entity(type="repo", name="percolate-rust")
    db.create_edge(src=person_id, dst=project_id, edge_type="works_on", properties={"since": "2024-01-01"})
    db.create_edge(src=project_id, dst=repo, edge_type="works_on")
    db.create_edge(src=bob, dst=project_id, edge_type="reviews")

    related = db.traverse(start=person_id, edge_type="works_on", direction="outgoing", max_depth=2)
    assert [(h.id, h.depth) for h in related] == [(project_id, 1), (repo, 2)]
    assert related[0].entity is not None and related[0].entity.name == "Percolate"
    assert related[1].path == [person_id, project_id, repo]
    edge = db.get_edge(person_id, "works_on", project_id)
    assert edge is not None and edge.properties == {"since": "2024-01-01"}

    engineers = db.query_entities(
        Query().filter(
            Predicate.and_([
                Predicate.eq("type", "person"),
                Predicate.eq("role", "engineer"),
                Predicate.exists("team"),
            ])
        ).order_by("name", "asc")
    )
    assert [e.name for e in engineers] == ["Alice"]


def test_moment_queries(db: REMDatabase) -> None:
    now = datetime.now(timezone.utc)
    rid = db.create_resource(content="notes")
    pid = db.create_entity(type="person", name="Alice")
    moment = db.create_moment(
        timestamp=now,
        type="conversation",
        classifications=["technical", "planning"],
        resource_refs=[rid],
        entity_refs=[pid],
        metadata={"duration_minutes": 30},
    )
    old = db.create_moment(timestamp=now - timedelta(days=30), type="conversation")
    mid = db.create_moment(Moment(timestamp=now - timedelta(days=2), type="meeting"))

    recent = db.query_moments(
        Query().filter(Predicate.gte("timestamp", datetime.now() - timedelta(days=7)))
        .order_by("timestamp", "desc")
    )
    assert [m.id for m in recent] == [moment, mid]
    assert recent[0].metadata == {"duration_minutes": 30}
    assert recent[0].classifications == ["technical", "planning"]

    conversations = db.query_moments(Query().filter(Predicate.eq("type", "conversation")))
    assert sorted(m.id for m in conversations) == sorted([moment, old])
    # Numbers in JSON compare numerically.
    long = db.query_moments(Query().filter(Predicate.gt("duration_minutes", 29)))
    assert [m.id for m in long] == [moment]
    tagged = db.query_moments(Query().filter(Predicate.in_("classifications", ["planning", "x"])))
    assert [m.id for m in tagged] == [moment]


def test_issue_example_end_to_end(tmp_path: Path) -> None:
    """The issue's block of calls, in order."""
    db = REMDatabase(tenant_id="tenant-123", path=str(tmp_path / "data"))
    rid = db.create_resource(content="The quick brown fox...", metadata={"source": "document.pdf", "page": 1})
    rid2 = db.create_resource(Resource(content="Long document content...",
                                       metadata={"language": "en", "tags": ["important"]}))
    eid = db.create_entity(type="person", name="John Doe", properties={"role": "engineer", "team": "platform"})
    pid = db.create_entity(type="project", name="Percolate", properties={"status": "active"})
    mid = db.create_moment(timestamp=datetime.now(), type="conversation", classifications=["technical"],
                           resource_refs=[rid], entity_refs=[eid], metadata={"duration_minutes": 30})
    db.create_edge(src=eid, dst=pid, edge_type="works_on", properties={"since": "2024-01-01"})
    embedding = np.array(unit(3), dtype=np.float32)
    db.set_embedding(rid, embedding)
    db.set_embedding(rid2, unit(4))
    q = unit(4)
    hits = db.search_similar(query_vector=q, top_k=10, min_score=0.7)
    assert [h.id for h in hits] == [rid2]
    engineers = db.query_entities(Query().filter(Predicate.and_([
        Predicate.eq("type", "person"), Predicate.eq("role", "engineer"), Predicate.exists("team"),
        Predicate.in_("team", ["platform", "infra"]), Predicate.gt("created_at", datetime(2024, 1, 1))])
    ).order_by("name", "asc").limit(100))
    assert [e.id for e in engineers] == [eid]
    hybrid = db.query_resources(Query().filter(Predicate.and_([
        Predicate.vector_similar(field="embedding", query=q, top_k=50, min_score=0.7),
        Predicate.eq("language", "en"), Predicate.in_("tags", ["important", "urgent"])])).limit(10))
    assert [h.id for h in hybrid] == [rid2]
    related = db.traverse(start=eid, edge_type="works_on", direction="outgoing", max_depth=2)
    assert [h.id for h in related] == [pid]
    recent = db.query_moments(Query().filter(Predicate.gte("timestamp", datetime.now() - timedelta(days=7)))
                              .order_by("timestamp", "desc"))
    assert [m.id for m in recent] == [mid]
    table = db.sql("SELECT name FROM entities WHERE type = $1", ["person"])
    assert isinstance(table, pa.Table)
    assert table.column("name").to_pylist() == ["John Doe"]
    db.close()
