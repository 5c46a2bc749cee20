//! `remdb serve` through arrow-flight's own Flight SQL client: sign-in, queries,
//! prepared statements with parameters, writes, ingest, metadata, the guards, and tenant
//! isolation. (The ADBC end-to-end tests in tests/e2e drive the `remdb` binary.)

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandStatementIngest, ProstMessageExt,
};
use arrow_flight::{Action, FlightDescriptor, FlightInfo};
use datafusion::arrow::array::{Array, ArrayRef, ListArray, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use futures::TryStreamExt;
use prost::Message;
use remdb::auth::Credentials;
use remdb::server::{ServeOptions, serve};
use remdb::{Db, Entity, Resource, VectorOptions};
use tonic::transport::Channel;

struct Running {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<remdb::Result<()>>,
    dir: tempfile::TempDir,
    globex_token: String,
}

/// Two tenants with a few rows each, a user of `acme` (ada / pw) and a token of
/// `globex`, served on a free port.
async fn start() -> Running {
    start_with(ServeOptions {
        query_timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
}

async fn start_with(options: ServeOptions) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Default::default()).unwrap();
    for (tenant, names) in [("acme", ["Ada", "Alan"]), ("globex", ["Grace", "Gus"])] {
        let t = db.create_tenant(tenant).unwrap();
        for name in names {
            t.create_entity(Entity {
                id: name.to_lowercase(),
                entity_type: "person".into(),
                name: name.into(),
                ..Default::default()
            })
            .unwrap();
        }
    }
    let acme = db.tenant("acme").unwrap();
    acme.configure_vectors(VectorOptions {
        dimensions: Some(3),
        ..Default::default()
    })
    .unwrap();
    for (i, v) in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        .iter()
        .enumerate()
    {
        acme.create_resource(Resource {
            id: format!("r{i}"),
            uri: Some(format!("doc://{i}")),
            content: format!("chunk {i}"),
            embedding: Some(v.to_vec()),
            ..Default::default()
        })
        .unwrap();
    }
    let creds = Credentials::open(dir.path());
    creds.add_user("ada", "acme", "pw").unwrap();
    let (_, globex_token) = creds.create_token("globex", "test").unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(Arc::new(db), options, listener, async move {
        let _ = stopped.await;
    }));
    Running {
        addr,
        stop: Some(stop),
        task,
        dir,
        globex_token,
    }
}

async fn client(addr: std::net::SocketAddr) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightSqlServiceClient::new(channel)
}

async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    fetch(client, &info).await
}

/// The batches of the first endpoint of a FlightInfo.
async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: &FlightInfo,
) -> Result<Vec<RecordBatch>, String> {
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
    stream.try_collect().await.map_err(|e| e.to_string())
}

fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let a = datafusion::arrow::compute::cast(b.column(column), &DataType::Utf8).unwrap();
            let a = a.as_any().downcast_ref::<StringArray>().unwrap().clone();
            (0..a.len()).map(move |i| a.value(i).to_string())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_credential_reaches_only_its_tenant() {
    let mut server = start().await;

    // No credential, a wrong password: refused.
    let mut anonymous = client(server.addr).await;
    let err = query(&mut anonymous, "SELECT 1").await.unwrap_err();
    assert!(err.contains("no credentials"), "{err}");
    let mut acme = client(server.addr).await;
    assert!(acme.handshake("ada", "wrong").await.is_err());
    assert!(acme.handshake("nobody", "pw").await.is_err());

    // The password signs in to acme; the token reaches globex.
    acme.handshake("ada", "pw").await.unwrap();
    let batches = query(&mut acme, "SELECT name FROM entities ORDER BY name")
        .await
        .unwrap();
    assert_eq!(strings(&batches, 0), ["Ada", "Alan"]);
    let mut globex = client(server.addr).await;
    globex.set_token(server.globex_token.clone());
    let batches = query(&mut globex, "SELECT name FROM entities ORDER BY name")
        .await
        .unwrap();
    assert_eq!(strings(&batches, 0), ["Grace", "Gus"]);

    // A ticket made for acme, replayed with globex's token, is refused.
    let info = acme
        .execute("SELECT name FROM entities".into(), None)
        .await
        .unwrap();
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let replayed = match globex.do_get(ticket.clone()).await {
        Ok(stream) => stream.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let err = replayed.unwrap_err().to_string();
    assert!(err.contains("another tenant"), "{err}");
    // So is a prepared statement of acme's used under globex's token.
    let handle = create_prepared(&mut acme, "SELECT name FROM entities").await;
    let command = CommandPreparedStatementQuery {
        prepared_statement_handle: handle,
    };
    let mut request =
        tonic::Request::new(FlightDescriptor::new_cmd(command.as_any().encode_to_vec()));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", server.globex_token).parse().unwrap(),
    );
    let err = globex
        .inner()
        .clone()
        .get_flight_info(request)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");

    // SQL cannot name another tenant: its tables are simply not in this tenant's catalog.
    let err = query(&mut globex, "SELECT * FROM acme.entities")
        .await
        .unwrap_err();
    assert!(
        err.contains("acme.entities") || err.contains("not found"),
        "{err}"
    );

    // Guards: no DDL, no COPY, no SET, no URL tables.
    for (sql, expected) in [
        (
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "DDL",
        ),
        ("COPY (SELECT 1) TO '/tmp/remdb-copy.csv'", "COPY"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        ("SELECT * FROM '/etc/passwd'", "passwd"),
        // 1.5 GB from 33 bytes of SQL: refused before it is made.
        ("SELECT repeat('x', 1500000000)", "bounded at"),
        (
            "SELECT count(*) FROM (SELECT unnest(range(1, 10000000000)))",
            "bounded at",
        ),
    ] {
        let err = query(&mut acme, sql).await.unwrap_err();
        assert!(err.contains(expected), "{sql}: {err}");
    }
    assert!(!std::path::Path::new("/tmp/remdb-copy.csv").exists());

    // The timeout cancels a query that runs too long.
    let started = std::time::Instant::now();
    let err = query(
        &mut acme,
        "SELECT count(*) FROM generate_series(1, 100000000000) WHERE value % 7 = 3",
    )
    .await
    .unwrap_err();
    assert!(err.contains("timeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A new password ends the sessions signed in with the old one.
    Credentials::open(server.dir.path())
        .set_password("ada", "changed")
        .unwrap();
    let err = query(&mut acme, "SELECT 1").await.unwrap_err();
    assert!(err.contains("removed or changed"), "{err}");

    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// Creates a prepared statement through the raw action and returns its handle.
async fn create_prepared(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> prost::bytes::Bytes {
    let request = ActionCreatePreparedStatementRequest {
        query: sql.to_string(),
        transaction_id: None,
    };
    let action = Action {
        r#type: "CreatePreparedStatement".into(),
        body: request.as_any().encode_to_vec().into(),
    };
    let mut results = client.do_action(action).await.unwrap();
    let result = results.message().await.unwrap().unwrap();
    let any = Any::decode(&*result.body).unwrap();
    let created: ActionCreatePreparedStatementResult = any.unpack().unwrap().unwrap();
    created.prepared_statement_handle
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_writes_ingest_and_metadata() {
    let mut server = start().await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();

    // A prepared query with a text parameter.
    let mut prepared = acme
        .prepare("SELECT name FROM entities WHERE id = $1".into(), None)
        .await
        .unwrap();
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from(vec!["alan"])) as ArrayRef],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut acme, &info).await.unwrap();
    assert_eq!(strings(&batches, 0), ["Alan"]);
    prepared.close().await.unwrap();

    // JDBC's form: `?` placeholders, and a parameter schema a driver builds its binders
    // from, in the plain types (a VARCHAR cast is Utf8View inside DataFusion).
    let mut prepared = acme
        .prepare(
            "SELECT CAST(name AS VARCHAR) AS name, properties FROM entities \
             WHERE CAST(type AS VARCHAR) = ? AND created_at > ? ORDER BY name"
                .into(),
            None,
        )
        .await
        .unwrap();
    let parameters = prepared.parameter_schema().unwrap().clone();
    let types: Vec<(&str, &DataType)> = parameters
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type()))
        .collect();
    assert_eq!(
        types,
        [
            ("$1", &DataType::Utf8),
            (
                "$2",
                &DataType::Timestamp(
                    datafusion::arrow::datatypes::TimeUnit::Microsecond,
                    Some("UTC".into())
                )
            )
        ]
    );
    // Results carry Utf8, not the Utf8View DataFusion computes on.
    let dataset = prepared.dataset_schema().unwrap().clone();
    assert_eq!(dataset.field(0).data_type(), &DataType::Utf8, "{dataset:?}");
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("0", DataType::Utf8, false),
            Field::new("1", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["person"])) as ArrayRef,
            Arc::new(StringArray::from(vec!["2000-01-01T00:00:00Z"])) as ArrayRef,
        ],
    )
    .unwrap();
    prepared.set_parameters(params).unwrap();
    let info = prepared.execute().await.unwrap();
    let batches = fetch(&mut acme, &info).await.unwrap();
    assert_eq!(strings(&batches, 0), ["Ada", "Alan"]);
    assert!(
        batches
            .iter()
            .all(|b| b.schema().fields() == dataset.fields())
    );
    let info_schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(info_schema.fields(), dataset.fields());
    prepared.close().await.unwrap();
    let sql = "SELECT CAST(name AS VARCHAR), [CAST(id AS VARCHAR)], CAST(x'01' AS BYTEA) \
               FROM entities WHERE id = 'ada'";
    let batches = query(&mut acme, sql).await.unwrap();
    let types: Vec<DataType> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    assert_eq!(types[0], DataType::Utf8);
    assert_eq!(types[2], DataType::Binary);
    assert!(
        matches!(&types[1], DataType::List(item) if item.data_type() == &DataType::Utf8),
        "{types:?}"
    );

    // A vector parameter (a list of doubles, as Python clients send) in vector_similar.
    let mut search = acme
        .prepare(
            "SELECT id FROM vector_similar('resources', $1, 1)".into(),
            None,
        )
        .await
        .unwrap();
    // Run twice with different vectors: the statement planned once answers for each.
    for (vector, nearest) in [([0.0, 0.1, 0.9], "r2"), ([0.9, 0.2, 0.0], "r0")] {
        let vector = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![Some(
            vector.into_iter().map(Some).collect::<Vec<_>>(),
        )]);
        let params = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "0",
                vector.data_type().clone(),
                false,
            )])),
            vec![Arc::new(vector) as ArrayRef],
        )
        .unwrap();
        search.set_parameters(params).unwrap();
        let info = search.execute().await.unwrap();
        let batches = fetch(&mut acme, &info).await.unwrap();
        assert_eq!(strings(&batches, 0), [nearest]);
    }

    // A prepared update with many rows of parameters: every row is written.
    let mut insert = acme
        .prepare(
            "INSERT INTO entities (id, type, name) VALUES ($1, 'project', $2)".into(),
            None,
        )
        .await
        .unwrap();
    let ids: Vec<String> = (0..25).map(|i| format!("p{i}")).collect();
    let names: Vec<String> = (0..25).map(|i| format!("Project {i}")).collect();
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("0", DataType::Utf8, false),
            Field::new("1", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(names)) as ArrayRef,
        ],
    )
    .unwrap();
    insert.set_parameters(params).unwrap();
    assert_eq!(insert.execute_update().await.unwrap(), 25);
    let batches = query(
        &mut acme,
        "SELECT count(*) FROM entities WHERE type = 'project'",
    )
    .await
    .unwrap();
    assert_eq!(strings(&batches, 0), ["25"]);

    // A plain update statement.
    let changed = acme
        .execute_update("DELETE FROM entities WHERE id = 'p0'".into(), None)
        .await
        .unwrap();
    assert_eq!(changed, 1);

    // Bulk ingest: columns by name, missing ones get their defaults.
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["i1", "i2", "i3"])) as ArrayRef,
            Arc::new(StringArray::from(vec!["topic"; 3])) as ArrayRef,
            Arc::new(StringArray::from(vec!["x", "y", "z"])) as ArrayRef,
        ],
    )
    .unwrap();
    let ingest = append_to_entities();
    let written = acme
        .execute_ingest(ingest, futures::stream::iter(vec![Ok(batch)]))
        .await
        .unwrap();
    assert_eq!(written, 3);
    let batches = query(
        &mut acme,
        "SELECT name FROM entities WHERE type = 'topic' ORDER BY name",
    )
    .await
    .unwrap();
    assert_eq!(strings(&batches, 0), ["x", "y", "z"]);

    // Metadata: only this tenant's session's catalog and tables.
    let info = acme
        .get_tables(CommandGetTables {
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let batches = fetch(&mut acme, &info).await.unwrap();
    let tables = strings(&batches, 2);
    for t in ["edges", "entities", "moments", "resources"] {
        assert!(tables.iter().any(|x| x == t), "{tables:?}");
    }
    let info = acme
        .get_db_schemas(CommandGetDbSchemas::default())
        .await
        .unwrap();
    let batches = fetch(&mut acme, &info).await.unwrap();
    assert!(strings(&batches, 1).iter().any(|s| s == "public"));

    // The table types information_schema names, and the tables of one type.
    let info = acme.get_table_types().await.unwrap();
    let batches = fetch(&mut acme, &info).await.unwrap();
    assert_eq!(strings(&batches, 0), ["BASE TABLE", "VIEW"]);
    let info = acme
        .get_tables(CommandGetTables {
            table_types: vec!["BASE TABLE".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let batches = fetch(&mut acme, &info).await.unwrap();
    assert_eq!(
        strings(&batches, 2),
        ["edges", "entities", "moments", "resources"]
    );
    // Primary keys from the catalog; no foreign keys; the SQL types.
    let info = acme
        .get_primary_keys(CommandGetPrimaryKeys {
            table: "edges".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let batches = fetch(&mut acme, &info).await.unwrap();
    assert_eq!(strings(&batches, 3), ["src", "edge_type", "dst"]);
    let exported = acme
        .get_exported_keys(CommandGetExportedKeys {
            table: "entities".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let imported = acme
        .get_imported_keys(CommandGetImportedKeys {
            table: "edges".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let cross = acme
        .get_cross_reference(CommandGetCrossReference {
            pk_table: "entities".into(),
            fk_table: "edges".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for info in [exported, imported, cross] {
        let batches = fetch(&mut acme, &info).await.unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 0);
        assert_eq!(info.clone().try_decode_schema().unwrap().fields().len(), 13);
    }
    let info = acme
        .get_xdbc_type_info(CommandGetXdbcTypeInfo { data_type: None })
        .await
        .unwrap();
    let batches = fetch(&mut acme, &info).await.unwrap();
    let types = strings(&batches, 0);
    for t in ["BIGINT", "BOOLEAN", "TIMESTAMP", "VARCHAR"] {
        assert!(types.iter().any(|x| x == t), "{types:?}");
    }
    check_sql_info(&mut acme).await;

    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// `--keep-view-types`: results are sent in the view types DataFusion computes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn view_types_are_kept_when_asked() {
    let mut server = start_with(ServeOptions {
        keep_view_types: true,
        ..Default::default()
    })
    .await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();
    let sql = "SELECT CAST(name AS VARCHAR) FROM entities WHERE id = 'ada'";
    let info = acme.execute(sql.into(), None).await.unwrap();
    let schema = info.clone().try_decode_schema().unwrap();
    assert_eq!(schema.field(0).data_type(), &DataType::Utf8View);
    let batches = fetch(&mut acme, &info).await.unwrap();
    assert_eq!(batches[0].column(0).data_type(), &DataType::Utf8View);
    assert_eq!(strings(&batches, 0), ["Ada"]);
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// GetSqlInfo answers every id the Arrow Flight SQL JDBC driver's `DatabaseMetaData`
/// reads, each in the union member the driver casts it to (a missing one or another
/// member is a driver exception).
async fn check_sql_info(client: &mut FlightSqlServiceClient<Channel>) {
    use datafusion::arrow::array::{UInt32Array, UnionArray};
    // Union members: 0 string, 1 bool, 2 i64, 3 i32 bitmask, 4 string list, 5 map.
    let strings = [0, 1, 504, 513, 514, 529, 530, 531];
    let bools = [
        3, 515, 516, 518, 519, 520, 521, 523, 524, 527, 532, 536, 537, 539, 556, 563, 565, 566,
        572, 573, 574, 575, 576,
    ];
    let longs: Vec<u32> = (541..=562).filter(|id| *id != 556).collect();
    let bitmasks = [522, 525, 526, 528, 533, 534, 535, 538, 540, 564, 567];
    let lists = [508, 509, 510, 511, 512];
    let expected: Vec<(u32, i8)> = [
        (&strings[..], 0),
        (&bools[..], 1),
        (&longs[..], 2),
        (&bitmasks[..], 3),
        (&lists[..], 4),
        (&[517][..], 5),
    ]
    .iter()
    .flat_map(|(ids, member)| ids.iter().map(move |id| (*id, *member)))
    .collect();
    let info = client.get_sql_info(vec![]).await.unwrap();
    let batches = fetch(client, &info).await.unwrap();
    let mut answered = std::collections::HashMap::new();
    for b in &batches {
        let names = b.column(0).as_any().downcast_ref::<UInt32Array>().unwrap();
        let values = b.column(1).as_any().downcast_ref::<UnionArray>().unwrap();
        for i in 0..b.num_rows() {
            answered.insert(names.value(i), (values.type_id(i), values.value(i)));
        }
    }
    for (id, member) in expected {
        let Some((got, _)) = answered.get(&id) else {
            panic!("GetSqlInfo does not answer id {id}");
        };
        assert_eq!(*got, member, "id {id}");
    }
    // The function lists are DataFusion's own.
    let (_, numeric) = &answered[&509];
    let numeric = numeric
        .as_any()
        .downcast_ref::<ListArray>()
        .unwrap()
        .value(0);
    let numeric = numeric.as_any().downcast_ref::<StringArray>().unwrap();
    assert!(numeric.iter().any(|f| f == Some("sqrt")), "{numeric:?}");
}

/// An ingest that appends to `entities`.
fn append_to_entities() -> CommandStatementIngest {
    CommandStatementIngest {
        table_definition_options: Some(arrow_flight::sql::TableDefinitionOptions {
            if_not_exist: 2,
            if_exists: 2,
        }),
        table: "entities".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_over_the_limit_is_refused() {
    let mut server = start_with(ServeOptions {
        max_upload_bytes: 64 << 10,
        ..Default::default()
    })
    .await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();
    let n = 20_000;
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("big{i}")),
            )) as ArrayRef,
            Arc::new(StringArray::from(vec!["bulk"; n])) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("name {i}")),
            )) as ArrayRef,
        ],
    )
    .unwrap();
    let ingest = append_to_entities();
    let err = acme
        .execute_ingest(ingest, futures::stream::iter(vec![Ok(batch)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than the server's limit"), "{err}");
    // Nothing of it was written.
    let batches = query(
        &mut acme,
        "SELECT count(*) FROM entities WHERE type = 'bulk'",
    )
    .await
    .unwrap();
    assert_eq!(strings(&batches, 0), ["0"]);
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// Hostile input a signed-in client can send, each refused with a clear error where it
/// enters, the server answering the next request. Without the bounds, the first aborts
/// the process (stack overflow), the next plans half a million values, the second takes
/// ~4 GiB, the third writes 4 MiB past a 64 KiB upload limit, the fourth converts 2^31
/// rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_sql_parameter_rows_and_compressed_uploads_are_bounded() {
    use arrow_flight::encode::FlightDataEncoderBuilder;
    use datafusion::arrow::array::NullArray;
    use datafusion::arrow::ipc::CompressionType;
    use datafusion::arrow::ipc::writer::IpcWriteOptions;

    let mut server = start_with(ServeOptions {
        max_upload_bytes: 64 << 10,
        ..Default::default()
    })
    .await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();

    // 1. A 4 KB chain of operators, planned on a runtime worker.
    let deep = format!("SELECT {}", vec!["1"; 2_000].join("+"));
    let err = query(&mut acme, &deep).await.unwrap_err();
    assert!(err.contains("more than 1000 deep"), "{err}");

    // 1b. A vector literal of 500,000 values filling the 1 MiB text: refused before it
    // is planned (planning took 630 MB and 10 s).
    let values = vec!["0"; (1 << 20) / 2 - 100].join(",");
    let long = format!("SELECT id FROM resources WHERE vector_similar(embedding, [{values}], 10)");
    let err = query(&mut acme, &long).await.unwrap_err();
    assert!(err.contains("values, more than the limit"), "{err}");

    // 1c. A 1 MiB line of 100,000 statements and a REM verb: the verbs are found and
    // the text refused in time proportional to its length (locating each `;` from the
    // line's start held a core for minutes).
    let many = format!("{}LOOKUP 'a'", "SELECT 1;".repeat(100_000));
    let started = std::time::Instant::now();
    let err = query(&mut acme, &many).await.unwrap_err();
    assert!(err.contains("expected one SQL statement"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "{err}");

    // 2. 2^31-1 rows of null parameters: a few bytes on the wire, no buffer decoded.
    let mut prepared = acme.prepare("SELECT $1".into(), None).await.unwrap();
    let nulls = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Null, true)])),
        vec![Arc::new(NullArray::new(i32::MAX as usize)) as ArrayRef],
    )
    .unwrap();
    prepared.set_parameters(nulls).unwrap();
    let err = prepared.execute().await.unwrap_err().to_string();
    assert!(err.contains("rows of parameters"), "{err}");

    // 3. 4 MiB of entities compressed with zstd to a few KB.
    let n = 2_000;
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("type", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("z{i}")),
            )) as ArrayRef,
            Arc::new(StringArray::from(vec!["zipped"; n])) as ArrayRef,
            Arc::new(StringArray::from(vec!["x".repeat(2_000); n])) as ArrayRef,
        ],
    )
    .unwrap();
    let ingest = append_to_entities();
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .unwrap();
    let data: Vec<_> = FlightDataEncoderBuilder::new()
        .with_options(options)
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(
            ingest.as_any().encode_to_vec(),
        )))
        .build(futures::stream::iter(vec![Ok(batch)]))
        .try_collect()
        .await
        .unwrap();
    let wire: usize = data
        .iter()
        .map(|d| d.data_header.len() + d.data_body.len())
        .sum();
    assert!(
        wire < 64 << 10,
        "the upload is small on the wire: {wire} bytes"
    );
    let err = match acme.do_put(futures::stream::iter(data.clone())).await {
        Ok(results) => results
            .try_collect::<Vec<_>>()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
    .unwrap_err();
    assert!(err.contains("once decoded"), "{err}");

    // 3b. The same message with the decompressed-length prefix of its largest buffer
    // forged: claiming 1 TiB is refused before anything is allocated for it (decoding
    // would ask for the whole capacity at once); claiming 16 bytes fails to decompress.
    let forge = |claimed: i64| {
        let mut data = data.clone();
        let body = data.iter_mut().find(|d| !d.data_body.is_empty()).unwrap();
        let message = datafusion::arrow::ipc::root_as_message(&body.data_header).unwrap();
        let buffers = message.header_as_record_batch().unwrap().buffers().unwrap();
        let largest = buffers.iter().max_by_key(|b| b.length()).unwrap();
        let start = largest.offset() as usize;
        let mut bytes = body.data_body.to_vec();
        bytes[start..start + 8].copy_from_slice(&claimed.to_le_bytes());
        body.data_body = bytes.into();
        data
    };
    for (claimed, expected) in [(1i64 << 40, "once decoded"), (16, "")] {
        let err = match acme.do_put(futures::stream::iter(forge(claimed))).await {
            Ok(results) => results
                .try_collect::<Vec<_>>()
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
        .unwrap_err();
        assert!(err.contains(expected), "prefix {claimed}: {err}");
    }

    // 4. An ingest of 2^31-1 rows of null columns: no buffer on the wire, yet a value per
    // row and column once converted to the table's types.
    let nulls = RecordBatch::try_new(
        Arc::new(Schema::new(
            ["id", "type", "name"]
                .map(|name| Field::new(name, DataType::Null, true))
                .to_vec(),
        )),
        (0..3)
            .map(|_| Arc::new(NullArray::new(i32::MAX as usize)) as ArrayRef)
            .collect(),
    )
    .unwrap();
    let err = acme
        .execute_ingest(append_to_entities(), futures::stream::iter(vec![Ok(nulls)]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("once decoded"), "{err}");

    // The server still answers, and wrote nothing of the refused upload.
    let batches = query(
        &mut acme,
        "SELECT count(*) FROM entities WHERE type = 'zipped'",
    )
    .await
    .unwrap();
    assert_eq!(strings(&batches, 0), ["0"]);
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// The parameters bound to a tenant's open prepared statements are bounded together:
/// a client cannot hold memory by binding near the upload limit to statement after
/// statement; closing one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_bound_to_open_statements_are_bounded_per_tenant() {
    let mut server = start_with(ServeOptions {
        query_timeout: Duration::from_secs(10),
        max_upload_bytes: 64 << 10,
        max_bound_param_bytes: 100 << 10,
        ..Default::default()
    })
    .await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();
    let value = || {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("0", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["x".repeat(40 << 10)])) as ArrayRef],
        )
        .unwrap()
    };
    let mut open = vec![];
    for _ in 0..2 {
        let mut p = acme
            .prepare("SELECT length($1) AS n".into(), None)
            .await
            .unwrap();
        p.set_parameters(value()).unwrap();
        p.execute().await.unwrap();
        open.push(p);
    }
    let mut third = acme
        .prepare("SELECT length($1) AS n".into(), None)
        .await
        .unwrap();
    third.set_parameters(value()).unwrap();
    let err = third.execute().await.unwrap_err().to_string();
    assert!(err.contains("--max-bound-params-mib"), "{err}");
    // Binding again to a statement replaces what it held.
    open[0].set_parameters(value()).unwrap();
    open[0].execute().await.unwrap();
    open.remove(0).close().await.unwrap();
    third.set_parameters(value()).unwrap();
    third.execute().await.unwrap();
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// A prepared update over many rows of parameters that runs past the timeout says how
/// many rows of parameters were applied, and that is what the table holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_timed_out_midway_says_how_many_rows_of_parameters_were_applied() {
    let mut server = start_with(ServeOptions {
        query_timeout: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();
    // Each row of parameters inserts 5,000 rows: one commit (under the 8,192-row chunk).
    const PER_ROW: usize = 5_000;
    let mut insert = acme
        .prepare(
            format!(
                "INSERT INTO entities (id, type, name) \
                 SELECT $1 || '-' || value, 'bulk', 'n' FROM generate_series(1, {PER_ROW})"
            ),
            None,
        )
        .await
        .unwrap();
    let total = 2_000;
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("0", DataType::Utf8, false)])),
        vec![Arc::new(StringArray::from_iter_values(
            (0..total).map(|i| format!("b{i}")),
        )) as ArrayRef],
    )
    .unwrap();
    insert.set_parameters(params).unwrap();
    let err = insert.execute_update().await.unwrap_err().to_string();
    let marker = format!(" of {total} rows of parameters had been applied");
    let applied: usize = err
        .split(marker.as_str())
        .next()
        .and_then(|head| head.rsplit('(').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count of applied rows: {err}"));
    assert!(applied < total, "{err}");
    let batches = query(
        &mut acme,
        "SELECT count(*) FROM entities WHERE type = 'bulk'",
    )
    .await
    .unwrap();
    let written: usize = strings(&batches, 0)[0].parse().unwrap();
    // The statement running when the timeout fired may have committed its rows too.
    assert!(
        written == applied * PER_ROW || written == (applied + 1) * PER_ROW,
        "{written} rows for {applied} rows of parameters applied"
    );
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// A peer that keeps sending wrong passwords is refused without a password check after
/// `MAX_FAILED_SIGN_INS`, so its flood does not queue other peers' sign-ins behind its
/// Argon2 hashes; another address signs in as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_passwords_is_cut_off_per_peer() {
    use remdb::server::MAX_FAILED_SIGN_INS;
    let mut server = start().await;
    let flooding = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .local_address(Some("127.0.0.2".parse().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut flood = FlightSqlServiceClient::new(flooding);
    for _ in 0..MAX_FAILED_SIGN_INS {
        let err = flood
            .handshake("ada", "wrong")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("wrong user name or password"), "{err}");
    }
    // Refused now, even with the right password, before any password check.
    let err = flood.handshake("ada", "pw").await.unwrap_err().to_string();
    assert!(err.contains("too many failed sign-ins"), "{err}");
    // Another address is not affected.
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();
    assert_eq!(
        strings(
            &query(&mut acme, "SELECT count(*) FROM entities")
                .await
                .unwrap(),
            0
        ),
        ["2"]
    );
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// Timestamps bind as instants in every unit, with a zone or without (read as UTC), and
/// dates as dates: a Python `datetime` bound to `$1` arrives as one of these.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_and_date_parameters_bind() {
    use datafusion::arrow::array::{
        Date32Array, TimestampMicrosecondArray, TimestampMillisecondArray,
        TimestampNanosecondArray, TimestampSecondArray,
    };
    let mut server = start().await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();
    // 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z in seconds; the rows were made now.
    let (past, future) = (946_684_800i64, 4_102_444_800i64);
    let values: Vec<(&str, ArrayRef)> = vec![
        (
            "s, UTC",
            Arc::new(TimestampSecondArray::from(vec![past, future]).with_timezone("UTC")),
        ),
        (
            "ms, +02:00",
            Arc::new(
                TimestampMillisecondArray::from(vec![past * 1_000, future * 1_000])
                    .with_timezone("+02:00"),
            ),
        ),
        (
            "us, UTC",
            Arc::new(
                TimestampMicrosecondArray::from(vec![past * 1_000_000, future * 1_000_000])
                    .with_timezone("UTC"),
            ),
        ),
        (
            "ns, no zone",
            Arc::new(TimestampNanosecondArray::from(vec![
                past * 1_000_000_000,
                future * 1_000_000_000,
            ])),
        ),
        (
            "date",
            Arc::new(Date32Array::from(vec![
                (past / 86_400) as i32,
                (future / 86_400) as i32,
            ])),
        ),
    ];
    for (what, array) in values {
        for (row, expected) in [(0, "2"), (1, "0")] {
            let mut prepared = acme
                .prepare(
                    "SELECT count(*) FROM entities WHERE created_at > $1".into(),
                    None,
                )
                .await
                .unwrap();
            let value = array.slice(row, 1);
            let params = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new(
                    "0",
                    value.data_type().clone(),
                    false,
                )])),
                vec![value],
            )
            .unwrap();
            prepared.set_parameters(params).unwrap();
            let info = prepared
                .execute()
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let batches = fetch(&mut acme, &info)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(strings(&batches, 0), [expected], "{what}, row {row}");
            prepared.close().await.unwrap();
        }
    }
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// `--tls-cert` / `--tls-key`: a client that trusts the certificate signs in and queries
/// over TLS; a plain-text client gets nothing; an unusable key stops the server at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_clients_that_trust_the_certificate() {
    use tonic::transport::{Certificate, ClientTlsConfig};
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = generated.cert.pem();
    let mut server = start_with(ServeOptions {
        tls: Some(remdb::server::TlsIdentity {
            cert_pem: cert_pem.clone().into_bytes(),
            key_pem: generated.signing_key.serialize_pem().into_bytes(),
        }),
        ..Default::default()
    })
    .await;
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut acme = FlightSqlServiceClient::new(channel);
    acme.handshake("ada", "pw").await.unwrap();
    let batches = query(&mut acme, "SELECT name FROM entities ORDER BY name")
        .await
        .unwrap();
    assert_eq!(strings(&batches, 0), ["Ada", "Alan"]);

    // Plain text to the TLS port: refused, whether at connect or at the first call.
    let plain = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client = FlightSqlServiceClient::new(channel);
        assert!(client.handshake("ada", "pw").await.is_err());
    }
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), Default::default()).unwrap());
    let options = ServeOptions {
        tls: Some(remdb::server::TlsIdentity {
            cert_pem: cert_pem.into_bytes(),
            key_pem: b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_vec(),
        }),
        ..Default::default()
    };
    let err = serve(db, options, listener, std::future::pending())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("TLS"), "{err}");
}

/// `--metrics-listen`: Prometheus counters of requests, errors, latency, bytes and
/// sign-ins, per tenant where cheap, and a health check, over plain HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_errors_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), Default::default()).unwrap();
    let t = db.create_tenant("acme").unwrap();
    t.create_entity(Entity {
        id: "ada".into(),
        entity_type: "person".into(),
        name: "Ada".into(),
        ..Default::default()
    })
    .unwrap();
    Credentials::open(dir.path())
        .add_user("ada", "acme", "pw")
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(remdb::server::serve_with_metrics(
        Arc::new(db),
        ServeOptions::default(),
        listener,
        Some(metrics),
        async move {
            let _ = stopped.await;
        },
    ));
    let mut acme = client(addr).await;
    assert!(acme.handshake("ada", "nope").await.is_err());
    acme.handshake("ada", "pw").await.unwrap();
    let batches = query(&mut acme, "SELECT name FROM entities").await.unwrap();
    assert_eq!(strings(&batches, 0), ["Ada"]);
    assert!(query(&mut acme, "SELECT nope FROM entities").await.is_err());

    let get = |path: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).await.unwrap();
        response
    };
    let health = get("/health").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let text = get("/metrics").await;
    for line in [
        "remdb_requests_total{kind=\"query\"} 2",
        "remdb_errors_total{code=\"InvalidArgument\",kind=\"query\"} 1",
        "remdb_tenant_requests_total{tenant=\"acme\"} 2",
        "remdb_rows_sent_total 1",
        "remdb_sign_ins_total{outcome=\"ok\"} 1",
        "remdb_sign_ins_total{outcome=\"refused\"} 1",
        "remdb_request_seconds_count{kind=\"query\"} 2",
    ] {
        assert!(text.contains(line), "{line} in\n{text}");
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// Prepares `sql`, runs it without parameters and fetches its result.
async fn run_prepared(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let mut prepared = client
        .prepare(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let info = prepared.execute().await.map_err(|e| e.to_string())?;
    fetch(client, &info).await
}

/// DataFusion 55 asserts, instead of returning an error, when `avg` is given an
/// `ORDER BY` in a grouped query (apache/datafusion#25401): the statement fails with `internal`, naming the
/// panic, and is never taken for an empty answer; the same connection and the other
/// tenants go on. Without the catch, the query's thread dies, its channel closes, and
/// the client reads zero rows as the whole answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_engine_fails_its_statement_and_nothing_else() {
    let mut server = start().await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();
    let mut globex = client(server.addr).await;
    globex.set_token(server.globex_token.clone());
    let panicking = "SELECT type, avg(length(name) ORDER BY name) FROM entities GROUP BY type";
    for round in 0..3 {
        let err = query(&mut acme, panicking).await.unwrap_err();
        assert!(
            err.contains("Internal") && err.contains("panic"),
            "round {round}: {err}"
        );
        // Prepared, planned once: the same.
        let err = run_prepared(&mut acme, panicking).await.unwrap_err();
        assert!(err.contains("panic"), "round {round}: {err}");
        let names = query(&mut acme, "SELECT name FROM entities ORDER BY name").await;
        assert_eq!(strings(&names.unwrap(), 0), ["Ada", "Alan"]);
        let names = query(&mut globex, "SELECT name FROM entities ORDER BY name").await;
        assert_eq!(strings(&names.unwrap(), 0), ["Grace", "Gus"]);
    }
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}

/// The batches of a result count against the query's memory limit until they are
/// sent: a query whose answer is larger than the limit fails with `resource_exhausted`
/// (without the charge, its three batches of 1.2 MB each stream under a 1 MiB limit); a
/// smaller answer, and a larger one in smaller batches, stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_batches_count_against_the_query_memory_limit() {
    let mut server = start_with(ServeOptions {
        memory_limit: 1 << 20,
        ..Default::default()
    })
    .await;
    let mut acme = client(server.addr).await;
    acme.handshake("ada", "pw").await.unwrap();
    let rows = "(VALUES (1), (2), (3)) AS t(i)";
    let big = format!("SELECT i, repeat('x', 400000) AS v FROM {rows}");
    let err = query(&mut acme, &big).await.unwrap_err();
    assert!(
        err.contains("Resources exhausted") && err.contains("result batches"),
        "{err}"
    );
    let err = run_prepared(&mut acme, &big).await.unwrap_err();
    assert!(err.contains("result batches"), "{err}");
    let small = format!("SELECT i, repeat('x', 100000) AS v FROM {rows}");
    for _ in 0..3 {
        let batches = query(&mut acme, &small).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
        let batches = run_prepared(&mut acme, &small).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 3);
    }
    let _ = server.stop.take().map(|s| s.send(()));
    server.task.await.unwrap().unwrap();
}
