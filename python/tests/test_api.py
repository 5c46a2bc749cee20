"""The rest of the package's surface: CRUD, batches, Arrow in and out, indexes and the
access paths predicates take, errors, tenants, threads."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from typing import List

import numpy as np
import pyarrow as pa
import pytest

import rem_db
from rem_db import (
    AlreadyExists,
    Edge,
    Entity,
    InvalidArgument,
    NotFound,
    Predicate,
    Query,
    QueryError,
    REMDatabase,
    RemDbError,
    Resource,
    StorageError,
)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "data")


@pytest.fixture
def db(path: str) -> REMDatabase:
    return REMDatabase(tenant_id="acme", path=path)


def people(db: REMDatabase, n: int) -> List[str]:
    return [
        db.create_entity(
            type="person" if i % 2 == 0 else "project",
            name=f"name {i:03}",
            properties={"n": i, "team": ["platform", "infra", "research"][i % 3],
                        "score": i / 10, "active": i % 5 == 0},
        )
        for i in range(n)
    ]


def test_crud_of_each_kind(db: REMDatabase) -> None:
    rid = db.create_resource(content="a", uri="doc://a", metadata={"k": 1}, chunk_index=2)
    db.update_resource(rid, content="b")
    r = db.get_resource(rid)
    assert r is not None and (r.content, r.uri, r.chunk_index, r.metadata) == ("b", "doc://a", 2, {"k": 1})
    assert r.created_at is not None and r.updated_at is not None and r.updated_at >= r.created_at
    assert db.delete_resource(rid) and not db.delete_resource(rid)
    assert db.get_resource(rid) is None

    eid = db.create_entity(Entity(type="person", name="Ada", aliases=["Countess"], id="ada"))
    assert eid == "ada"
    e = db.get_entity("ada")
    assert e is not None
    e.properties = {"role": "engineer"}
    db.update_entity(e)
    got_e = db.get_entity("ada")
    assert got_e is not None and got_e.properties == {"role": "engineer"}
    assert got_e.aliases == ["Countess"] and got_e.created_at == e.created_at
    assert [f.id for f in db.lookup("countess")] == ["ada"]
    with pytest.raises(AlreadyExists):
        db.create_entity(type="person", name="Other", id="ada")
    with pytest.raises(NotFound):
        db.update_entity("nobody", name="x")

    db.create_entity(type="project", name="P", id="p")
    db.create_edge(Edge(src="ada", dst="p", edge_type="works_on"))
    db.update_edge(Edge(src="ada", dst="p", edge_type="works_on", properties={"since": 2024}))
    got = db.get_edge("ada", "works_on", "p")
    assert got is not None and got.properties == {"since": 2024}
    assert db.delete_edge("ada", "works_on", "p")
    assert db.get_edge("ada", "works_on", "p") is None

    mid = db.create_moment(timestamp=date(2024, 5, 1), type="meeting")
    db.update_moment(mid, type="call")
    m = db.get_moment(mid)
    assert m is not None and m.type == "call"
    assert m.timestamp == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert db.delete_moment(mid)
    assert db.count("moments") == 0


def test_resource_without_uri_in_sql(db: REMDatabase) -> None:
    db.sql("INSERT INTO resources (id, content) VALUES ('r1', 'no uri')")
    db.sql("INSERT INTO resources (id, uri, content) VALUES ('r2', 'doc://2', 'uri')")
    t = db.sql("SELECT id, uri FROM resources ORDER BY id")
    assert t.to_pylist() == [{"id": "r1", "uri": None}, {"id": "r2", "uri": "doc://2"}]
    assert [r.id for r in db.lookup("doc://2")] == ["r2"]
    with pytest.raises(InvalidArgument, match="uri must not be empty"):
        db.create_resource(content="x", uri="")


def test_batch_is_atomic(db: REMDatabase) -> None:
    with db.batch() as b:
        a = b.create_entity(type="person", name="A")
        p = b.create_entity(type="project", name="P")
        b.create_edge(src=a, dst=p, edge_type="works_on")
        b.create_moment(timestamp=datetime(2024, 1, 1), type="kickoff", entity_refs=[a, p])
    assert db.count("entities") == 2 and db.count("edges") == 1 and db.count("moments") == 1

    with pytest.raises(AlreadyExists):
        with db.batch() as b:
            b.create_entity(type="person", name="B", id="b")
            b.create_entity(type="person", name="A again", id=a)
    assert db.get_entity("b") is None, "a failed batch writes nothing"

    with pytest.raises(RuntimeError):
        with db.batch() as b:
            b.create_entity(type="person", name="C", id="c")
            raise RuntimeError("stop")
    assert db.get_entity("c") is None
    with db.batch() as b:
        b.delete("edges", a, "works_on", p)
        b.delete("entities", p)
    assert db.count("edges") == 0 and db.get_entity(p) is None


def test_sql_arrow_round_trip(db: REMDatabase) -> None:
    n = 1000
    table = pa.table({
        "id": [f"e{i}" for i in range(n)],
        "type": ["person"] * n,
        "name": [f"Person {i}" for i in range(n)],
        "properties": [f'{{"n": {i}}}' for i in range(n)],
    })
    assert db.insert_arrow("entities", table) == n
    out = db.query_entities(Query().order_by("name").limit(n)).to_arrow()
    assert isinstance(out, pa.Table) and out.num_rows == n
    back = out.select(["id", "type", "name"]).sort_by("id")
    assert back.to_pylist() == table.select(["id", "type", "name"]).sort_by("id").to_pylist()
    # The same rows through SQL, with parameters of every kind.
    t = db.sql(
        "SELECT count(*) AS c FROM entities WHERE type = $1 AND json_get_int(properties, 'n') >= $2 "
        "AND created_at > $3 AND $4",
        ["person", 500, datetime(2020, 1, 1), True],
    )
    assert t.column("c").to_pylist() == [500]
    # An empty result keeps its columns.
    empty = db.sql("SELECT id, name FROM entities WHERE id = $1", ["none"])
    assert empty.num_rows == 0 and empty.column_names == ["id", "name"]
    frame = db.query_entities(Query().filter(Predicate.eq("n", 7))).to_pandas()
    assert list(frame["name"]) == ["Person 7"]


def test_prepared_statements(db: REMDatabase) -> None:
    people(db, 30)
    stmt = db.prepare("SELECT name FROM entities WHERE json_get_int(properties, 'n') = $1")
    for i in (3, 17, 29):
        assert stmt.execute([i]).column("name").to_pylist() == [f"name {i:03}"]
    assert "RemScanExec" in stmt.explain([3])


def test_predicates_against_sql(db: REMDatabase) -> None:
    """Each predicate returns the rows its SQL form returns."""
    people(db, 60)
    cases = [
        (Predicate.eq("team", "infra"), "properties->>'team' = 'infra'"),
        (Predicate.ne("team", "infra"), "properties->>'team' <> 'infra'"),
        (Predicate.gt("n", 50), "json_get_int(properties, 'n') > 50"),
        (Predicate.lte("score", 0.5), "json_get_float(properties, 'score') <= 0.5"),
        (Predicate.between("n", 10, 12), "json_get_int(properties, 'n') BETWEEN 10 AND 12"),
        (Predicate.eq("active", True), "json_get_bool(properties, 'active')"),
        (Predicate.not_in("team", ["infra", "research"]), "properties->>'team' = 'platform'"),
        (Predicate.is_null("missing"), "TRUE"),
        (Predicate.exists("missing"), "FALSE"),
        (Predicate.or_([Predicate.eq("n", 1), Predicate.eq("name", "name 002")]),
         "json_get_int(properties, 'n') = 1 OR name = 'name 002'"),
        (Predicate.not_(Predicate.eq("type", "person")), "type <> 'person'"),
        (Predicate.eq("type", "person") & ~Predicate.in_("team", ["infra"]),
         "type = 'person' AND properties->>'team' <> 'infra'"),
        (Predicate.and_([]), "TRUE"),
        (Predicate.in_("team", []), "FALSE"),
    ]
    for predicate, where in cases:
        got = sorted(e.id for e in db.query_entities(Query().filter(predicate)))
        want = sorted(db.sql(f"SELECT id FROM entities WHERE {where}").column("id").to_pylist())
        assert got == want, (predicate, where)


def test_predicates_take_the_indexes(db: REMDatabase) -> None:
    people(db, 200)
    db.create_index("idx_team", "entities", "team")
    db.create_index("idx_created", "entities", "created_at")
    db.create_index("idx_name", "entities", "name")
    assert {ix["name"] for ix in db.list_indexes()} == {"idx_team", "idx_created", "idx_name"}
    q = Query().filter(Predicate.and_([
        Predicate.eq("type", "person"),
        Predicate.in_("team", ["platform", "infra"]),
        Predicate.gt("created_at", datetime(2024, 1, 1)),
    ])).order_by("name", "asc").limit(10)
    plan = db.explain("entities", q)
    assert "idx_team IN ('infra', 'platform')" in plan, plan
    assert "full_scan" not in plan, plan
    names = [e.name for e in db.query_entities(q)]
    assert names == sorted(names) and len(names) == 10
    db.drop_index("idx_team")
    assert "idx_team" not in db.explain("entities", q)


def test_list_index_makes_in_any_element(db: REMDatabase) -> None:
    for i, tags in enumerate([["a", "b"], ["c"], "a", [], None]):
        meta = {} if tags is None else {"tags": tags}
        db.create_resource(id=f"r{i}", content="x", metadata=meta)
    q = Query().filter(Predicate.in_("tags", ["a", "c"]))
    # No index: a value in the list, or an array with one of them.
    assert sorted(r.id for r in db.query_resources(q)) == ["r0", "r1", "r2"]
    db.create_index("idx_tags", "resources", "tags", kind="list")
    assert sorted(r.id for r in db.query_resources(q)) == ["r0", "r1"]
    assert "idx_tags contains" in db.explain("resources", q)
    assert [r.id for r in db.query_resources(Query().filter(Predicate.contains("tags", "b")))] == ["r0"]


def test_errors_are_typed(db: REMDatabase, path: str) -> None:
    rid = db.create_resource(content="x")
    db.set_embedding(rid, [0.1, 0.2, 0.3])
    with pytest.raises(InvalidArgument, match="dimension"):
        db.set_embedding(rid, [0.1, 0.2])
    with pytest.raises(InvalidArgument):
        db.search_similar(query_vector=[0.1, 0.2], top_k=3)
    with pytest.raises(NotFound):
        REMDatabase(tenant_id="nobody", path=path, create=False)
    with pytest.raises(InvalidArgument):
        REMDatabase(tenant_id="bad/name", path=path)
    with pytest.raises(TypeError, match="timestamp"):
        db.query_entities(Query().filter(Predicate.gt("created_at", "2024-01-01")))
    with pytest.raises(TypeError, match="cannot compare"):
        db.query_entities(Query().filter(Predicate.eq("role", {"a": 1})))
    with pytest.raises(ValueError, match="vector_similar"):
        db.query_resources(Query().filter(Predicate.or_([
            Predicate.vector_similar(query=[0.1, 0.2, 0.3], top_k=3), Predicate.eq("a", "b")])))
    with pytest.raises(InvalidArgument, match="vector"):
        db.set_embedding(rid, ["a", "b", "c"])
    with pytest.raises(InvalidArgument, match="1-d"):
        db.set_embedding(rid, np.zeros((3, 1), dtype=np.float32))
    with pytest.raises(QueryError):
        db.sql("SELECT nope FROM entities")
    with pytest.raises(InvalidArgument):
        db.sql("SELECT $1", [object()])
    with pytest.raises(RemDbError):
        db.sql("SELEC 1")
    assert issubclass(NotFound, RemDbError) and issubclass(QueryError, RemDbError)
    db.close()
    with pytest.raises(RemDbError, match="closed"):
        db.count("entities")


def test_tenants_share_one_open_database(path: str) -> None:
    a = REMDatabase(tenant_id="a", path=path)
    b = REMDatabase(tenant_id="b", path=path)
    a.create_entity(type="person", name="only in a")
    assert b.count("entities") == 0, "tenants are isolated"
    assert sorted(rem_db.list_tenants(path)) == ["a", "b"]
    again = REMDatabase(tenant_id="a", path=path)
    assert again.count("entities") == 1
    code = (
        "import sys, rem_db\n"
        "try:\n"
        f"    rem_db.REMDatabase(tenant_id='a', path={path!r})\n"
        "except rem_db.StorageError as e:\n"
        "    print('refused:', e); sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stdout + other.stderr
    assert "another process" in other.stdout and "LOCK" in other.stdout
    rem_db.drop_tenant(path, "b")
    assert rem_db.list_tenants(path) == ["a"]
    for d in (a, b, again):
        d.close()
    with REMDatabase(tenant_id="a", path=path) as reopened:
        assert reopened.count("entities") == 1


def test_threads_write_and_read(db: REMDatabase) -> None:
    errors: List[BaseException] = []

    def writer(t: int) -> None:
        try:
            for i in range(50):
                db.create_entity(type="person", name=f"t{t} {i}", properties={"t": t, "i": i})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(50):
                rows = db.query_entities(Query().filter(Predicate.eq("type", "person")).limit(10))
                assert len(rows) <= 10
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not errors, errors
    assert db.count("entities") == 200
    for t in range(4):
        got = db.query_entities(Query().filter(Predicate.eq("t", t)))
        assert sorted(e.properties["i"] for e in got) == list(range(50))


def test_vectors_configured_and_searched_in_sql(db: REMDatabase) -> None:
    db.configure_vectors(dimensions=4, metric="cosine", ef_search=32)
    opts = db.vector_options()
    assert opts is not None and opts["dimensions"] == 4 and opts["ef_search"] == 32
    assert opts["precision"] == "f16" and opts["rescore"] is None
    for i in range(10):
        db.create_resource(id=f"r{i}", content=f"c{i}", metadata={"even": i % 2 == 0},
                           embedding=[1.0, float(i), 0.0, 0.0])
    t = db.sql("SELECT id FROM vector_similar('resources', $1, 3) WHERE json_get_bool(metadata, 'even')",
               [np.array([1.0, 4.0, 0.0, 0.0], dtype=np.float32)])
    assert t.column("id").to_pylist()[0] == "r4"
    r = db.get_resource("r3")
    assert r is not None and r.embedding == [1.0, 3.0, 0.0, 0.0]
    hits = db.query_resources(Query().filter(Predicate.vector_similar(query=[1.0, 4.0, 0.0, 0.0], top_k=2)))
    assert [h.id for h in hits] == ["r4", "r3"] or [h.id for h in hits] == ["r4", "r5"]
    with pytest.raises(ValueError):
        db.query_entities(Query().filter(Predicate.vector_similar(query=[1.0], top_k=1)))
    # With vectors stored, the rescoring depth changes; the precision does not.
    db.configure_vectors(rescore=8)
    opts = db.vector_options()
    assert opts is not None and opts["rescore"] == 8
    with pytest.raises(InvalidArgument):
        db.configure_vectors(precision="f32")
    with pytest.raises(InvalidArgument):
        db.configure_vectors(rescore=0)


def test_resource_object_and_embedding_on_create(db: REMDatabase) -> None:
    rid = db.create_resource(Resource(content="c", embedding=[0.5, 0.5]))
    r = db.get_resource(rid)
    assert r is not None and r.embedding == [0.5, 0.5]
    with pytest.raises(TypeError):
        db.create_resource(Resource(content="c"), content="d")


def test_numbers_compare_numerically_whatever_their_python_type(db: REMDatabase) -> None:
    db.create_entity(type="p", name="a", id="a", properties={"rating": 4.5, "age": 30.5})
    db.create_entity(type="p", name="b", id="b", properties={"rating": 3, "age": 9})
    db.create_entity(type="p", name="c", id="c", properties={"rating": "n/a", "age": 100})

    def ids(p: Predicate) -> List[str]:
        return sorted(e.id for e in db.query_entities(Query().filter(p)))

    assert ids(Predicate.gt("rating", 4)) == ["a"]
    assert ids(Predicate.gte("age", 30)) == ["a", "c"]
    assert ids(Predicate.in_("rating", [3, 4.5])) == ["a", "b"]
    assert ids(Predicate.between("rating", 3, 4.6)) == ["a", "b"]
    with pytest.raises(TypeError, match="mix"):
        ids(Predicate.in_("rating", [3, "n/a"]))
    # JSON order: numbers first, numerically, then the rest as text.
    order = [e.id for e in db.query_entities(Query().order_by("rating"))]
    assert order == ["b", "a", "c"]
    assert [e.id for e in db.query_entities(Query().order_by("age", "desc"))] == ["c", "a", "b"]
    # `score` is a JSON key outside a vector search.
    db.create_entity(type="p", name="s", id="s", properties={"score": 1})
    assert [e.id for e in db.query_entities(Query().filter(Predicate.exists("score")).order_by("score"))] == ["s"]


def test_not_in_is_the_negation_of_in(db: REMDatabase) -> None:
    for i, tags in enumerate([["a", "b"], "a", ["c"]]):
        db.create_entity(type="p", name=f"n{i}", id=f"n{i}", properties={"tags": tags})
    db.create_entity(type="p", name="none", id="none")

    def ids(p: Predicate) -> List[str]:
        return sorted(e.id for e in db.query_entities(Query().filter(p)))

    assert ids(Predicate.in_("tags", ["a"])) == ["n0", "n1"]
    assert ids(Predicate.not_in("tags", ["a"])) == ["n2"]
    assert ids(~Predicate.in_("tags", ["a"])) == ["n2"]


def test_bad_values_are_refused_before_they_reach_sql(db: REMDatabase) -> None:
    with pytest.raises(TypeError, match="aliases"):
        db.create_entity(type="p", name="n", aliases="abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="classifications"):
        db.create_moment(type="x", timestamp=datetime(2024, 1, 1), classifications="abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        db.create_entity(type="p", name="n", properties={"x": float("nan")})
    with pytest.raises(ValueError, match="min_score"):
        Predicate.vector_similar(query=[1.0], top_k=3, min_score=float("inf"))
    with pytest.raises(InvalidArgument, match="min_score"):
        db.search_similar([1.0], top_k=3, min_score=float("nan"))
    with pytest.raises(ValueError, match="top_k"):
        db.search_similar([1.0], top_k=-1)
    with pytest.raises(ValueError, match="max_depth"):
        db.traverse("x", max_depth=-1)
    with pytest.raises(ValueError, match="is a list"):
        db.query_entities(Query().filter(Predicate.eq("aliases", "x")))
    with pytest.raises(ValueError, match="bounds"):
        db.query_entities(Query().filter(Predicate.between("n", None, 10)))
    with pytest.raises(ValueError, match="field name"):
        db.query_entities(Query().filter(Predicate.eq(None, 1)))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Query().order_by("name", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        Query().limit(10**30)


def test_close_releases_prepared_statements(path: str) -> None:
    db = REMDatabase(tenant_id="t", path=path)
    stmt = db.prepare("SELECT count(*) AS c FROM entities")
    assert stmt.execute().column("c").to_pylist() == [0]
    db.close()
    with pytest.raises(RemDbError, match="closed"):
        stmt.execute()
    # Nothing holds the directory any more: another process can open it.
    code = f"import rem_db; rem_db.REMDatabase(tenant_id='t', path={path!r}).close()"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert other.returncode == 0, other.stderr


def test_a_long_in_list_on_a_list_index(db: REMDatabase) -> None:
    # 3,000 values: one index lookup each, ORed as a balanced tree (a flat chain of
    # 3,000 would pass the engine's limit of 1,000 levels of nesting).
    db.create_index("idx_tags", "resources", "tags", kind="list")
    for i, tags in enumerate([["t5"], ["t2999", "x"], ["none"]]):
        db.create_resource(id=f"r{i}", content="x", metadata={"tags": tags})
    q = Query().filter(Predicate.in_("tags", [f"t{i}" for i in range(3000)]))
    assert sorted(r.id for r in db.query_resources(q)) == ["r0", "r1"]
    plan = db.explain("resources", q)
    assert "idx_tags contains" in plan and "full_scan" not in plan, plan[:500]
