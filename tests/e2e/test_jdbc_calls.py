"""What the Arrow Flight SQL JDBC driver does when an application connects, reads
DatabaseMetaData, prepares a statement with `?` and binds it with setString and
setTimestamp, and reads a result of every column type — made as the same Flight SQL
calls through pyarrow.flight (the JDBC driver's jar is on Maven Central, which the CI
machine does not reach)."""

import datetime

import pyarrow as pa
import pytest

from conftest import Server, remdb
from flight_sql_wire import message, unpack

flight = pytest.importorskip("pyarrow.flight")

# The JDBC driver reads these SqlInfo ids, each as one type (ArrowDatabaseMetadata);
# a missing one, or one of another type, is an exception in the application.
STRINGS = [0, 1, 504, 513, 514, 529, 530, 531]
BOOLS = [3, 515, 516, 518, 519, 520, 521, 523, 524, 527, 532, 536, 537, 539, 556, 563,
         565, 566, 572, 573, 574, 575, 576]
LONGS = [i for i in range(541, 563) if i != 556]
BITMASKS = [522, 525, 526, 528, 533, 534, 535, 538, 540, 564, 567]
LISTS = [508, 509, 510, 511, 512]


@pytest.fixture(scope="module")
def jdbc_server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("jdbc") / "db")
    remdb("sql", "--path", path, "--tenant", "acme", "--create", "-c", """
        INSERT INTO entities (id, type, name, aliases, properties)
          VALUES ('ada', 'person', 'Ada', ['Countess'], '{"role": "engineer"}'),
                 ('alan', 'person', 'Alan', [], '{}');
        INSERT INTO resources (id, uri, chunk_index, content, metadata, embedding)
          VALUES ('r1', 'doc://1', 0, 'notes', '{"lang": "en"}', [0.1, 0.2, 0.3]);
        INSERT INTO moments (id, timestamp, end_timestamp, type, classifications,
                             resource_refs, entity_refs)
          VALUES ('m1', TIMESTAMP '2024-05-01 10:00:00', TIMESTAMP '2024-05-01 11:00:00',
                  'meeting', ['technical'], ['r1'], ['ada']);
        INSERT INTO edges (src, dst, edge_type) VALUES ('ada', 'alan', 'knows')""")
    remdb("tenant", "add-user", "--path", path, "acme", "ada", input="pw-acme\n")
    server = Server(path, timeout=30)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def connection(jdbc_server):
    """jdbc:arrow-flight-sql://host:port?user=ada&password=...&useEncryption=false"""
    client = flight.FlightClient(jdbc_server.uri.replace("grpc://", "grpc+tcp://"))
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token("ada", "pw-acme")])
    return client, options


def fetch(connection, command):
    client, options = connection
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command), options)
    return info, client.do_get(info.endpoints[0].ticket, options).read_all()


def action(connection, name, body):
    client, options = connection
    results = list(client.do_action(flight.Action(name, body), options))
    return results[0].body.to_pybytes() if results else b""


def no_view_types(schema):
    def views(t):
        if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
            return True
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
            return pa.types.is_list_view(t) or views(t.value_type)
        if pa.types.is_struct(t):
            return any(views(t.field(i).type) for i in range(t.num_fields))
        return False

    return [f"{f.name}: {f.type}" for f in schema if views(f.type)]


def test_database_metadata(connection):
    # getSQLKeywords, supportsTransactions, getMaxStatementLength, ...: one GetSqlInfo.
    _, info = fetch(connection, message("CommandGetSqlInfo"))
    values = dict(zip(info.column("info_name").to_pylist(), info.column("value").chunk(0)))
    member = {0: STRINGS, 1: BOOLS, 2: LONGS, 3: BITMASKS, 4: LISTS, 5: [517]}
    for type_code, ids in member.items():
        for i in ids:
            assert i in values, f"SqlInfo {i} is not answered"
            union = info.column("value").chunk(0)
            row = info.column("info_name").to_pylist().index(i)
            assert union.type_codes[row].as_py() == type_code, f"SqlInfo {i}"
    assert values[0].as_py() == "remdb"
    assert values[563].as_py() is False  # no transactions
    assert "sqrt" in values[509].as_py() and "SELECT" in values[508].as_py()
    # remdb's own functions are listed with the system functions.
    assert {"vector_similar", "traverse", "json_get", "coalesce"} <= set(values[511].as_py())

    # getTableTypes, getTables(null, null, "%", {"BASE TABLE"}), getColumns.
    _, types = fetch(connection, message("CommandGetTableTypes"))
    assert "BASE TABLE" in types.column("table_type").to_pylist()
    _, tables = fetch(connection, message(
        "CommandGetTables", (3, "%"), (4, ["BASE TABLE"]), (5, True)))
    names = tables.column("table_name").to_pylist()
    assert {"entities", "resources", "moments", "edges"} <= set(names), names
    for name, schema_bytes in zip(names, tables.column("table_schema").to_pylist()):
        schema = pa.ipc.read_schema(pa.py_buffer(schema_bytes))
        assert no_view_types(schema) == [], name
    entities = pa.ipc.read_schema(pa.py_buffer(
        tables.column("table_schema").to_pylist()[names.index("entities")]))
    assert entities.names[:3] == ["id", "type", "name"]

    # getPrimaryKeys(null, null, "edges"), getImportedKeys, getTypeInfo.
    _, keys = fetch(connection, message("CommandGetPrimaryKeys", (3, "edges")))
    assert keys.column("column_name").to_pylist() == ["src", "edge_type", "dst"]
    _, imported = fetch(connection, message("CommandGetImportedKeys", (3, "edges")))
    assert imported.num_rows == 0 and imported.num_columns == 13
    _, xdbc = fetch(connection, message("CommandGetXdbcTypeInfo"))
    assert {"VARCHAR", "TIMESTAMP", "BIGINT"} <= set(xdbc.column("type_name").to_pylist())


def test_prepared_statement_with_set_string_and_set_timestamp(connection):
    client, options = connection
    sql = ("SELECT name, created_at FROM entities WHERE type = ? AND created_at > ? "
           "ORDER BY name")
    created = unpack(action(connection, "CreatePreparedStatement",
                            message("ActionCreatePreparedStatementRequest", (1, sql))),
                     "ActionCreatePreparedStatementResult")
    handle = created[1][0]
    # The driver builds its binders from the parameter schema.
    parameters = pa.ipc.read_schema(pa.py_buffer(created[3][0]))
    assert parameters.types == [pa.string(), pa.timestamp("us", tz="UTC")], parameters
    dataset = pa.ipc.read_schema(pa.py_buffer(created[2][0]))
    assert dataset.names == ["name", "created_at"] and no_view_types(dataset) == []

    # setString(1, "person"); setTimestamp(2, ...): one row in the parameter schema.
    row = pa.record_batch([
        pa.array(["person"], pa.string()),
        pa.array([datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)],
                 pa.timestamp("us", tz="UTC")),
    ], schema=parameters)
    command = message("CommandPreparedStatementQuery", (1, handle))
    writer, reader = client.do_put(flight.FlightDescriptor.for_command(command),
                                   parameters, options)
    writer.write_batch(row)
    writer.done_writing()
    reader.read()
    writer.close()
    info, result = fetch(connection, command)
    assert result.column("name").to_pylist() == ["Ada", "Alan"]
    assert no_view_types(result.schema) == []
    assert info.schema == result.schema

    # Closed with the statement; using it after is an error, not another tenant's data.
    action(connection, "ClosePreparedStatement",
           message("ActionClosePreparedStatementRequest", (1, handle)))
    with pytest.raises(pa.ArrowException, match="no such prepared statement"):
        fetch(connection, command)


def test_every_column_type_of_the_four_tables_reads_as_jdbc_types(connection):
    sql = """
        SELECT e.id, e.type, e.name, e.aliases, e.properties, e.created_at, e.updated_at,
               r.uri, r.chunk_index, r.content, r.metadata, r.embedding,
               m.timestamp, m.end_timestamp, m.classifications, m.resource_refs,
               m.entity_refs, d.edge_type, d.properties AS edge_properties,
               CAST(e.name AS VARCHAR) AS name_text
        FROM entities e
        JOIN edges d ON d.src = e.id
        CROSS JOIN resources r
        CROSS JOIN moments m"""
    info, result = fetch(connection, message("CommandStatementQuery", (1, sql)))
    assert result.num_rows == 1
    assert no_view_types(info.schema) == [] and no_view_types(result.schema) == []
    row = result.to_pylist()[0]
    assert row["aliases"] == ["Countess"] and row["name_text"] == "Ada"
    assert row["embedding"] == pytest.approx([0.1, 0.2, 0.3])
    assert row["timestamp"] == datetime.datetime(2024, 5, 1, 10, tzinfo=datetime.timezone.utc)
    assert row["classifications"] == ["technical"] and row["edge_type"] == "knows"
