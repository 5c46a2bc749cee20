"""`remdb serve` driven by a real Flight SQL client: ADBC's Flight SQL driver with
pyarrow, as applications use it."""

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import Server, make_database
from flight_sql_wire import message


def connect_acme(server, password="pw-acme", **kwargs):
    return flightsql.connect(
        server.uri,
        db_kwargs={"username": "ada", "password": password, **kwargs},
        autocommit=True,
    )


def connect_globex(server, database):
    return flightsql.connect(
        server.uri,
        db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {database['globex_token']}"},
        autocommit=True,
    )


def test_good_and_bad_credentials(server, database):
    with pytest.raises(adbc_driver_manager.Error) as bad:
        connect_acme(server, password="wrong")
    assert "wrong user name or password" in str(bad.value)
    with pytest.raises(adbc_driver_manager.Error):
        flightsql.connect(
            server.uri,
            db_kwargs={"adbc.flight.sql.authorization_header": "Bearer rdb_forged"},
            autocommit=True,
        ).cursor().execute("SELECT 1")
    with connect_acme(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM entities ORDER BY name")
        assert cur.fetchall() == [("Ada",), ("Alan",)]
    with connect_globex(server, database) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM entities ORDER BY name")
        assert cur.fetchall() == [("Grace",)]


def test_parameters_and_vector_search(server):
    with connect_acme(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT name FROM entities WHERE id = $1", ("alan",))
        assert cur.fetchall() == [("Alan",)]
        cur.execute(
            "INSERT INTO resources (id, uri, content, embedding) VALUES "
            "('r1', 'doc://1', 'one', [1.0, 0.0, 0.0]), "
            "('r2', 'doc://2', 'two', [0.0, 1.0, 0.0]), "
            "('r3', 'doc://3', 'three', [0.0, 0.0, 1.0])"
        )
        cur.execute(
            "SELECT id, content FROM vector_similar('resources', $1, 2) ORDER BY score DESC",
            ([0.1, 0.9, 0.0],),
        )
        rows = cur.fetchall()
        assert rows[0] == ("r2", "two"), rows
        assert len(rows) == 2


def test_executemany_rows_are_really_written(server):
    with connect_acme(server) as conn, conn.cursor() as cur:
        rows = [(f"m{i}", f"Member {i}") for i in range(40)]
        cur.executemany("INSERT INTO entities (id, type, name) VALUES ($1, 'member', $2)", rows)
        cur.execute("SELECT count(*) FROM entities WHERE type = 'member'")
        assert cur.fetchone() == (40,)
        cur.execute("SELECT name FROM entities WHERE id = 'm39'")
        assert cur.fetchone() == ("Member 39",)


def test_ingest_then_count(server):
    table = pa.table({
        "id": [f"t{i}" for i in range(500)],
        "type": ["topic"] * 500,
        "name": [f"Topic {i}" for i in range(500)],
        "properties": ['{"rank": %d}' % i for i in range(500)],
    })
    with connect_acme(server) as conn, conn.cursor() as cur:
        assert cur.adbc_ingest("entities", table, mode="append") == 500
        cur.execute("SELECT count(*), max(CAST(properties->>'rank' AS INT)) FROM entities WHERE type = 'topic'")
        assert cur.fetchone() == (500, 499)
        # Resources with embeddings: searchable right after the ingest.
        chunks = pa.table({
            "id": ["x1", "x2"],
            "uri": ["doc://ingest", "doc://ingest"],
            "chunk_index": [0, 1],
            "content": ["ingested alpha", "ingested beta"],
            "metadata": ['{"lang": "en"}', '{"lang": "de"}'],
            "embedding": [[0.6, 0.0, 0.8], [0.0, 0.6, 0.8]],
        })
        assert cur.adbc_ingest("resources", chunks, mode="append") == 2
        cur.execute(
            "SELECT id FROM vector_similar('resources', $1, 1) WHERE uri = 'doc://ingest'",
            ([0.0, 0.6, 0.8],),
        )
        assert cur.fetchall() == [("x2",)]
        cur.execute("SELECT content FROM resources WHERE metadata->>'lang' = 'en' AND uri = 'doc://ingest'")
        assert cur.fetchall() == [("ingested alpha",)]
        with pytest.raises(adbc_driver_manager.Error) as refused:
            cur.adbc_ingest("entities", table, mode="replace")
        assert "append" in str(refused.value)
        with pytest.raises(adbc_driver_manager.Error) as unknown:
            cur.adbc_ingest("people", table, mode="append")
        assert "no table 'people'" in str(unknown.value)


def test_metadata_calls_are_scoped_to_the_tenant(server):
    with connect_acme(server) as conn:
        info = conn.adbc_get_info()
        assert info["vendor_name"] == "remdb"
        objects = conn.adbc_get_objects().read_all().to_pylist()
        tables = table_names(objects)
        assert {"resources", "entities", "edges", "moments"} <= tables
        schema = conn.adbc_get_table_schema("entities", db_schema_filter="public")
        assert "properties" in schema.names
        # With a catalog filter: the session's catalog, and one that does not exist.
        catalog = objects[0]["catalog_name"]
        named = conn.adbc_get_objects(catalog_filter=catalog).read_all().to_pylist()
        assert [c["catalog_name"] for c in named] == [catalog]
        other = conn.adbc_get_objects(catalog_filter="acme_other").read_all().to_pylist()
        assert table_names(other) == set(), other


def table_names(objects):
    return {
        t["table_name"]
        for catalog in objects
        for schema in catalog["catalog_db_schemas"] or []
        for t in schema["db_schema_tables"] or []
    }


def test_timeout_fires(server):
    with connect_acme(server) as conn, conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as timed_out:
            cur.execute("SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3")
            cur.fetchall()
        assert "timeout" in str(timed_out.value)
        # The connection still works afterwards.
        cur.execute("SELECT 1 AS one")
        assert cur.fetchone() == (1,)


def test_cross_tenant_attempts_are_refused(server, database):
    with connect_globex(server, database) as conn, conn.cursor() as cur:
        # globex's session has no way to name acme's tables.
        for sql in ["SELECT * FROM acme.entities", "SELECT * FROM acme.public.entities"]:
            with pytest.raises(adbc_driver_manager.Error):
                cur.execute(sql)
        cur.execute("SELECT count(*) FROM entities WHERE id = 'ada'")
        assert cur.fetchone() == (0,)
    # Server-side files are out of reach.
    with connect_acme(server) as conn, conn.cursor() as cur:
        for sql in [
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "COPY (SELECT 1) TO '/tmp/remdb-e2e-copy.csv'",
            "SELECT * FROM '/etc/passwd'",
        ]:
            with pytest.raises(adbc_driver_manager.Error):
                cur.execute(sql)


def test_ticket_replayed_under_another_tenant_is_refused(server, database):
    """A ticket acme got, presented with globex's token, through the raw Flight client."""
    flight = pytest.importorskip("pyarrow.flight")
    host_port = server.uri.removeprefix("grpc://")
    client = flight.FlightClient(f"grpc+tcp://{host_port}")
    token_pair = client.authenticate_basic_token("ada", "pw-acme")
    acme_options = flight.FlightCallOptions(headers=[token_pair])
    command = command_statement_query("SELECT name FROM entities WHERE type = 'person'")
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), acme_options)
    ticket = info.endpoints[0].ticket
    assert client.do_get(ticket, acme_options).read_all().num_rows == 2
    globex_options = flight.FlightCallOptions(
        headers=[(b"authorization", f"Bearer {database['globex_token']}".encode())]
    )
    with pytest.raises(flight.FlightError) as refused:
        client.do_get(ticket, globex_options).read_all()
    assert "another tenant" in str(refused.value)


def command_statement_query(sql):
    """A CommandStatementQuery packed in google.protobuf.Any."""
    return message("CommandStatementQuery", (1, sql))


def test_sigterm_shuts_down_gracefully():
    # Its own database: the shared server holds the other one's lock.
    srv = Server(make_database()["path"], timeout=5)
    with connect_acme(srv) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")
        assert cur.fetchone() == (1,)
    assert srv.stop() == 0
    assert "server stopped" in srv.logs()
    # Every line of a query carries its tenant and query id.
    query_lines = [l for l in srv.logs().splitlines() if "query started" in l]
    assert query_lines and all("tenant=acme" in l and "query_id=" in l for l in query_lines)


def test_json_logs_are_one_object_per_line():
    import json

    srv = Server(make_database()["path"], timeout=5, env={"REMDB_LOG_FORMAT": "json"})
    with connect_acme(srv) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 AS one")
        assert cur.fetchone() == (1,)
    assert srv.stop() == 0
    lines = [json.loads(l) for l in srv.logs().splitlines() if l.strip()]
    assert all({"timestamp", "level", "fields"} <= set(l) for l in lines), lines
    messages = [l["fields"].get("message") for l in lines]
    assert "server stopped" in messages, messages
    # A query's lines carry its span: the tenant and the query id as fields.
    started = [l for l in lines if l["fields"].get("message") == "query started"]
    assert started and all(l["span"]["tenant"] == "acme" and "query_id" in l["span"]
                           for l in started), started


# The cancelled client's statement is closed after its server is gone: ADBC complains
# from a destructor, which pytest reports as a warning.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_sigterm_cancels_a_query_that_outlasts_the_grace_period():
    import threading
    import time

    srv = Server(make_database()["path"], timeout=120, grace=1)
    outcome = {}

    def long_query():
        try:
            with connect_acme(srv) as conn, conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3"
                )
                outcome["rows"] = cur.fetchall()
        except Exception as e:  # the cancelled query's error
            outcome["error"] = str(e)

    worker = threading.Thread(target=long_query)
    worker.start()
    time.sleep(1.5)
    started = time.monotonic()
    assert srv.stop() == 0, srv.logs()
    assert time.monotonic() - started < 15
    worker.join(timeout=30)
    assert "error" in outcome, outcome
    assert "grace period over" in srv.logs()
