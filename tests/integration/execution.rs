//! How statements run: every node of ours stops at the server's query timeout, DML
//! commits whole chunks, concurrent read-modify-writes lose no update, and one tenant's
//! long statement leaves another tenant's queries answered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::sql::client::FlightSqlServiceClient;
use datafusion::arrow::array::RecordBatch;
use futures::TryStreamExt;
use remdb::auth::Credentials;
use remdb::server::{ServeOptions, serve};
use remdb::{Batch, Db, Edge, Entity, Resource, Tenant, VectorOptions};
use tonic::transport::Channel;

use super::rows;

/// Rows of the big tenant: enough that each heavy statement below runs for many seconds
/// when nothing stops it.
const N: usize = 6_000;

/// A per-row cost that keeps a core busy (an edit distance of two texts of about 1,000
/// characters) and never holds: the statements built on it read every row.
const HEAVY: &str = "levenshtein(repeat(name, 60), repeat(id, 60)) < 0";

/// `big`: N entities (`e{i}`, each with three `knows` edges and `{"n": i}`) and N
/// resources with 3-d embeddings; `small`: one entity.
fn load(db: &Db) -> (Tenant, Tenant) {
    let big = db.create_tenant("big").unwrap();
    big.configure_vectors(VectorOptions {
        dimensions: Some(3),
        ..Default::default()
    })
    .unwrap();
    for part in 0..(N / 1000) {
        let mut batch = Batch::new();
        for i in part * 1000..(part + 1) * 1000 {
            batch = batch
                .insert(Entity {
                    id: format!("e{i}"),
                    entity_type: "person".into(),
                    name: format!("person number {i}"),
                    properties: format!(r#"{{"n": {i}}}"#),
                    ..Default::default()
                })
                .insert(Resource {
                    id: format!("r{i}"),
                    content: format!("chunk number {i}"),
                    embedding: Some(vec![1.0, i as f32, (i % 7) as f32]),
                    ..Default::default()
                });
            for step in [1, 7, 13] {
                batch = batch.insert(Edge {
                    src: format!("e{i}"),
                    dst: format!("e{}", (i + step) % N),
                    edge_type: "knows".into(),
                    ..Default::default()
                });
            }
        }
        big.write(batch).unwrap();
    }
    let small = db.create_tenant("small").unwrap();
    small
        .create_entity(Entity {
            id: "only".into(),
            entity_type: "person".into(),
            name: "Only One".into(),
            ..Default::default()
        })
        .unwrap();
    (big, small)
}

struct Server {
    addr: std::net::SocketAddr,
    big_token: String,
    small_token: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve_with_timeout(db: Arc<Db>, dir: &std::path::Path, timeout: Duration) -> Server {
    let creds = Credentials::open(dir);
    let (_, big_token) = creds.create_token("big", "test").unwrap();
    let (_, small_token) = creds.create_token("small", "test").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        query_timeout: timeout,
        ..Default::default()
    };
    tokio::spawn(serve(db, options, listener, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        big_token,
        small_token,
        _stop: stop,
    }
}

async fn client(addr: std::net::SocketAddr, token: &str) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    client.set_token(token.to_string());
    client
}

async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
    stream.try_collect().await.map_err(|e| e.to_string())
}

async fn count(t: &Tenant, sql: &str) -> usize {
    rows(t, sql).await[0].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_stops_at_the_timeout_and_dml_leaves_whole_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), Default::default()).unwrap());
    let (big, _small) = load(&db);
    // Far below what any statement below needs to end (a full HEAVY scan takes ~2.5 s
    // here, a filtered search that gives up early at least several 100 ms), so that
    // each is cut by the timeout, however fast the machine.
    let timeout = Duration::from_millis(300);
    let server = serve_with_timeout(Arc::clone(&db), dir.path(), timeout).await;
    let mut c = client(server.addr, &server.big_token).await;

    let reads = [
        // A costly filter over a scan (DataFusion's FilterExec, a whole batch per poll).
        format!("SELECT id FROM entities WHERE {HEAVY} LIMIT 5"),
        // A filtered vector search that reads every row for its filter.
        "SELECT id FROM vector_similar('resources', [1.0, 0.0, 0.0], 5) \
         WHERE levenshtein(repeat(content, 60), repeat(id, 60)) < 0"
            .to_string(),
    ];
    for sql in &reads {
        let started = Instant::now();
        let err = query(&mut c, sql).await.unwrap_err();
        let took = started.elapsed();
        assert!(err.contains("timeout"), "{sql}: {err}");
        assert!(took < timeout + Duration::from_secs(2), "{sql}: {took:?}");
    }

    // UPDATE and DELETE: stopped between chunks, they leave whole chunks (1,024 rows).
    let chunk = remdb::query::exec::DML_CHUNK_ROWS;
    let update = format!("UPDATE entities SET name = name || ' (seen)' WHERE NOT ({HEAVY})");
    let started = Instant::now();
    let err = c
        .execute_update(update, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("timeout"), "{err}");
    assert!(started.elapsed() < timeout + Duration::from_secs(2));
    // A chunk in flight at the timeout still commits whole: wait for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = count(
        &big,
        "SELECT count(*) FROM entities WHERE name LIKE '%(seen)'",
    )
    .await;
    assert!(seen < N, "the update ran to its end: {seen}");
    assert_eq!(seen % chunk, 0, "{seen} rows updated: not whole chunks");

    let delete = format!("DELETE FROM entities WHERE NOT ({HEAVY})");
    let started = Instant::now();
    let err = c
        .execute_update(delete, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("timeout"), "{err}");
    assert!(started.elapsed() < timeout + Duration::from_secs(2));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = count(&big, "SELECT count(*) FROM entities").await;
    assert!(left > 0, "the delete ran to its end");
    assert_eq!(
        (N - left) % chunk,
        0,
        "{} rows deleted: not whole chunks",
        N - left
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_index_build_leaves_no_index() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), Default::default()).unwrap());
    let big = db.create_tenant("big").unwrap();
    db.create_tenant("small").unwrap();
    for part in 0..40 {
        let mut batch = Batch::new();
        for i in part * 1000..(part + 1) * 1000 {
            batch = batch.insert(Entity {
                id: format!("e{i}"),
                entity_type: "person".into(),
                name: format!("person number {i}"),
                properties: format!(r#"{{"n": {i}, "text": "{}"}}"#, "x".repeat(200)),
                ..Default::default()
            });
        }
        big.write(batch).unwrap();
    }
    let timeout = Duration::from_millis(50);
    let server = serve_with_timeout(Arc::clone(&db), dir.path(), timeout).await;
    let mut c = client(server.addr, &server.big_token).await;
    let started = Instant::now();
    let outcome = c
        .execute_update(
            "CREATE INDEX idx_n ON entities (properties->>'n')".into(),
            None,
        )
        .await;
    let took = started.elapsed();
    let err = outcome.unwrap_err().to_string();
    assert!(err.contains("timeout"), "{err}");
    assert!(took < timeout + Duration::from_secs(1), "{took:?}");
    // The build stops at its next chunk and leaves nothing behind.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        rows(&big, "SELECT name FROM list_indexes() WHERE name = 'idx_n'")
            .await
            .is_empty()
    );
    // The name is free and a build that runs to its end works.
    big.sql("CREATE INDEX idx_n ON entities (properties->>'n')")
        .await
        .unwrap();
    assert_eq!(
        rows(
            &big,
            "SELECT id FROM entities WHERE properties->>'n' = '17'"
        )
        .await,
        ["e17"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_queries_are_answered_while_a_long_statement_runs() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), Default::default()).unwrap());
    load(&db);
    let server = serve_with_timeout(Arc::clone(&db), dir.path(), Duration::from_secs(3)).await;
    let mut heavy_clients = Vec::new();
    // As many long statements as the server has async workers, and one more.
    for _ in 0..3 {
        let mut c = client(server.addr, &server.big_token).await;
        heavy_clients.push(tokio::spawn(async move {
            query(
                &mut c,
                &format!("SELECT id FROM entities WHERE {HEAVY} LIMIT 5"),
            )
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut small = client(server.addr, &server.small_token).await;
    for _ in 0..20 {
        let batches = query(&mut small, "SELECT name FROM entities WHERE id = 'only'")
            .await
            .unwrap();
        let names = super::slt::render(&batches);
        assert_eq!(names, [["Only One"]]);
    }
    // Each long statement was still running: it ends at the timeout, not before.
    for heavy in heavy_clients {
        let err = heavy.await.unwrap().unwrap_err();
        assert!(err.contains("timeout"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_lose_no_update() {
    let (_dir, db, t) = super::fresh("acme");
    t.create_entity(Entity {
        id: "counter".into(),
        entity_type: "counter".into(),
        name: "counter".into(),
        properties: r#"{"n": 0}"#.into(),
        ..Default::default()
    })
    .unwrap();
    let increment = "UPDATE entities SET properties = '{\"n\": ' || \
                     CAST(CAST(properties->>'n' AS BIGINT) + 1 AS TEXT) || '}' WHERE id = 'counter'";
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let t = db.tenant("acme").unwrap();
        tasks.push(tokio::spawn(async move {
            for _ in 0..40 {
                assert_eq!(rows(&t, increment).await, ["1"]);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        rows(
            &t,
            "SELECT properties->>'n' FROM entities WHERE id = 'counter'"
        )
        .await,
        ["80"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_select_commits_in_chunks_and_counts_them_all() {
    let (_dir, _db, t) = super::fresh("acme");
    let n = 3 * remdb::query::exec::INSERT_CHUNK_ROWS + 17;
    let written = rows(
        &t,
        &format!(
            "INSERT INTO entities (id, type, name) \
             SELECT 'g' || CAST(value AS TEXT), 'gen', 'generated ' || CAST(value AS TEXT) \
             FROM generate_series(1, {n})"
        ),
    )
    .await;
    assert_eq!(written, [n.to_string()]);
    assert_eq!(
        count(&t, "SELECT count(*) FROM entities WHERE type = 'gen'").await,
        n
    );
    // A duplicate key in a later chunk: the chunks before it stay, and the error says so.
    let err = t
        .sql(&format!(
            "INSERT INTO entities (id, type, name) \
             SELECT 'h' || CAST(value % {} AS TEXT), 'dup', 'x' FROM generate_series(1, {})",
            remdb::query::exec::INSERT_CHUNK_ROWS + 5,
            2 * remdb::query::exec::INSERT_CHUNK_ROWS
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, remdb::Error::AlreadyExists(_)), "{err}");
    let kept = count(&t, "SELECT count(*) FROM entities WHERE type = 'dup'").await;
    assert_eq!(kept, remdb::query::exec::INSERT_CHUNK_ROWS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_walk_stops_at_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path(), Default::default()).unwrap());
    let graph = db.create_tenant("big").unwrap();
    db.create_tenant("small").unwrap();
    const NODES: usize = 100_000;
    graph
        .create_entity(Entity {
            id: "g0".into(),
            entity_type: "node".into(),
            name: "start".into(),
            ..Default::default()
        })
        .unwrap();
    for part in 0..(NODES / 10_000) {
        let mut batch = Batch::new();
        for i in part * 10_000..(part + 1) * 10_000 {
            // A binary tree, with its levels also joined along: 16 levels reach all.
            for dst in [2 * i + 1, 2 * i + 2, 7 * i + 3] {
                batch = batch.insert(Edge {
                    src: format!("g{i}"),
                    dst: format!("g{}", dst % NODES),
                    edge_type: "next".into(),
                    ..Default::default()
                });
            }
        }
        graph.write(batch).unwrap();
    }
    // Run to its end, the walk reaches every node (and takes seconds in a debug build).
    assert_eq!(
        rows(&graph, "SELECT count(*) FROM traverse('g0', 'both', 16)").await,
        [(NODES - 1).to_string()]
    );
    let timeout = Duration::from_millis(300);
    let server = serve_with_timeout(Arc::clone(&db), dir.path(), timeout).await;
    let mut c = client(server.addr, &server.big_token).await;
    let started = Instant::now();
    let err = query(&mut c, "SELECT count(*) FROM traverse('g0', 'both', 16)")
        .await
        .unwrap_err();
    assert!(err.contains("timeout"), "{err}");
    assert!(started.elapsed() < timeout + Duration::from_secs(1));
}
