//! The crash loop: a child process writes synced batches to all four tables, with
//! vector upserts, creates and drops JSON indexes and saves its vector index now and
//! then, and is killed (SIGKILL, no destructor runs) at a random point, `REMDB_CRASH_ROUNDS`
//! times (50 by default). After each kill the database is opened again and checked:
//! every acknowledged batch is whole, no batch is partial, and every index (the built-in
//! ones, the declared JSON indexes, the vector index) answers as a full scan of the rows
//! does. The next child then carries on from what is there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{
    Batch, Db, DbOptions, Direction, Edge, Entity, IndexKind, Moment, QueryOptions, Resource,
    StorageOptions, Table, Tenant, VectorOptions,
};

use super::vectors::random_unit;

const DIR_VAR: &str = "REMDB_CRASH_DIR";
const PER_BATCH: usize = 8;
const DIMS: usize = 16;
const TEAMS: [&str; 3] = ["red", "green", "blue"];
/// 2024-01-01T00:00:00Z in microseconds: moment `m{b}` is `b` seconds after it.
const EPOCH: i64 = 1_704_067_200_000_000;

/// The embedding of resource `i` of batch `b`, as first written (`version` 0) or as
/// upserted by the next batch (1).
fn vector(b: usize, i: usize, version: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(((b * PER_BATCH + i) as u64) << 1 | version);
    random_unit(&mut rng, DIMS)
}

fn team(b: usize, i: usize) -> &'static str {
    TEAMS[(b + i) % TEAMS.len()]
}

fn resource(b: usize, i: usize, version: u64) -> Resource {
    Resource {
        id: format!("r{b}-{i}"),
        content: format!("chunk {i} of batch {b}"),
        metadata: format!(r#"{{"team": "{}", "b": {b}}}"#, team(b, i)),
        embedding: Some(vector(b, i, version)),
        ..Default::default()
    }
}

/// Batch `b`: `PER_BATCH` entities chained by edges, as many resources, a moment that
/// refers to the first of each, and the upsert of a vector written by batch `b - 1`.
fn batch(b: usize) -> Batch {
    let mut batch = Batch::new();
    for i in 0..PER_BATCH {
        batch = batch
            .insert(Entity {
                id: format!("e{b}-{i}"),
                entity_type: if i % 2 == 0 { "person" } else { "project" }.into(),
                name: format!("n{b}-{i}"),
                properties: format!(r#"{{"team": "{}", "b": {b}}}"#, team(b, i)),
                ..Default::default()
            })
            .insert(resource(b, i, 0));
        if i + 1 < PER_BATCH {
            batch = batch.insert(Edge {
                src: format!("e{b}-{i}"),
                dst: format!("e{b}-{}", i + 1),
                edge_type: "next".into(),
                properties: "{}".into(),
                ..Default::default()
            });
        }
    }
    batch = batch.insert(Moment {
        id: format!("m{b}"),
        timestamp: EPOCH + b as i64 * 1_000_000,
        moment_type: "step".into(),
        classifications: vec![team(b, 0).into()],
        resource_refs: vec![format!("r{b}-0")],
        entity_refs: vec![format!("e{b}-0")],
        metadata: "{}".into(),
        ..Default::default()
    });
    if b > 0 {
        batch = batch.update(resource(b - 1, 1, 1));
    }
    batch
}

/// Index DDL the child runs after batch `b`: each index is created, then dropped ten
/// batches later, then created again.
fn ddl(t: &Tenant, b: usize) {
    let declared = |name: &str| t.list_indexes().unwrap().iter().any(|d| d.name == name);
    let toggle = |name: &str, table: Table, column: &str| {
        if declared(name) {
            t.drop_index(name).unwrap();
        } else {
            t.create_index(name, table, column, &["team"], IndexKind::Value)
                .unwrap();
        }
    };
    match b % 10 {
        4 => toggle("idx_team", Table::Entities, "properties"),
        7 => toggle("idx_rteam", Table::Resources, "metadata"),
        _ => {}
    }
}

/// The child: writes batches from where the rows end, printing each acknowledged one.
/// Run only by [`kill_nine_at_random_points_loses_nothing_acknowledged`].
#[test]
#[ignore = "run by the crash loop as a child process"]
fn crash_loop_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else {
        return;
    };
    let storage = StorageOptions {
        sync: true,
        ..Default::default()
    };
    let db = Db::open(&dir, DbOptions { storage }).unwrap();
    let t = if db.has_tenant("crash") {
        db.tenant("crash").unwrap()
    } else {
        let t = db.create_tenant("crash").unwrap();
        t.configure_vectors(VectorOptions {
            dimensions: Some(DIMS),
            ..Default::default()
        })
        .unwrap();
        t
    };
    let start = t.count(Table::Entities).unwrap() as usize / PER_BATCH;
    for b in start.. {
        t.write(batch(b)).unwrap();
        println!("acked {b}");
        ddl(&t, b);
        if b % 7 == 3 {
            t.save_vectors().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_at_random_points_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("REMDB_CRASH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(50);
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(11);
    let mut acked: Option<usize> = None;
    for round in 0..rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash::crash_loop_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VAR, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let kill_after = rng.random_range(1..6);
        let delay = Duration::from_micros(rng.random_range(0..4_000));
        let note_ack = |line: std::io::Result<String>| {
            let line = line.unwrap();
            line.strip_prefix("acked ")
                .map(|n| n.parse::<usize>().unwrap())
        };
        let mut seen = 0;
        for line in lines.by_ref() {
            if let Some(n) = note_ack(line) {
                acked = Some(n);
                seen += 1;
                if seen == kill_after {
                    break;
                }
            }
        }
        // Somewhere in the next write, its index DDL or a save of the vector index.
        std::thread::sleep(delay);
        child.kill().unwrap();
        child.wait().unwrap();
        // Acknowledgements printed before the kill may still sit in the pipe.
        for line in lines {
            if let Some(n) = note_ack(line) {
                acked = Some(n);
            }
        }
        let acked = acked.expect("the child acknowledged a batch");
        check(dir.path(), round, acked).await;
    }
}

/// The time of moment `m{b}`, as SQL text.
fn at_second(b: usize) -> String {
    format!(
        "2024-01-01T{:02}:{:02}:{:02}",
        b / 3600,
        b / 60 % 60,
        b % 60
    )
}

/// Opens the database the child left and checks it against what it acknowledged.
async fn check(dir: &std::path::Path, round: usize, acked: usize) {
    let db = Db::open(dir, Default::default()).unwrap();
    let t = db.tenant("crash").unwrap();
    let scan = db
        .tenant_with(
            "crash",
            QueryOptions {
                use_indexes: false,
                ..Default::default()
            },
        )
        .unwrap();
    let entities = t.count(Table::Entities).unwrap() as usize;
    assert_eq!(entities % PER_BATCH, 0, "round {round}: a partial batch");
    let batches = entities / PER_BATCH;
    assert!(
        batches == acked + 1 || batches == acked + 2,
        "round {round}: acknowledged up to {acked}, found {batches} batches"
    );
    for (table, per_batch) in [
        (Table::Resources, PER_BATCH),
        (Table::Edges, PER_BATCH - 1),
        (Table::Moments, 1),
    ] {
        let n = t.count(table).unwrap() as usize;
        assert_eq!(
            n,
            batches * per_batch,
            "round {round}: {table:?} is partial"
        );
    }
    // The upsert of a vector is part of its batch: the last batch's is there whole.
    for b in 0..batches {
        let r = t.get_resource(&format!("r{b}-1")).unwrap().unwrap();
        let version = u64::from(b + 1 < batches);
        assert_eq!(
            r.embedding,
            Some(vector(b, 1, version)),
            "round {round}: the vector of r{b}-1"
        );
    }

    // Every index answers as a scan of the rows does.
    let last = batches - 1;
    let names = (0..batches)
        .step_by(3)
        .map(|b| format!("'n{b}-1'"))
        .collect::<Vec<_>>()
        .join(", ");
    let queries = [
        "SELECT id FROM entities WHERE properties->>'team' = 'red'".to_string(),
        "SELECT id FROM entities WHERE type = 'project' AND properties->>'team' <> 'blue'".into(),
        format!("SELECT id FROM entities WHERE name IN ({names})"),
        format!("SELECT id FROM entities WHERE id = 'e{last}-3'"),
        "SELECT id FROM resources WHERE metadata->>'team' IN ('green', 'blue')".into(),
        format!(
            "SELECT id FROM moments WHERE timestamp >= '{}' AND timestamp < '{}'",
            at_second(2),
            at_second(last)
        ),
        format!("SELECT id FROM moments WHERE array_has(resource_refs, 'r{last}-0')"),
        format!("SELECT dst FROM edges WHERE src = 'e{last}-2'"),
        "SELECT id FROM moments WHERE array_has(classifications, 'red')".into(),
    ];
    for sql in &queries {
        let sql = format!("{sql} ORDER BY 1");
        let indexed = super::rows(&t, &sql).await;
        let scanned = super::rows(&scan, &sql).await;
        assert_eq!(indexed, scanned, "round {round}: {sql}");
    }
    assert_eq!(
        super::rows(
            &t,
            &format!("SELECT id FROM entities WHERE id = 'e{last}-3'")
        )
        .await,
        [format!("e{last}-3")]
    );
    for b in [0, last] {
        let reached = t
            .traverse(&format!("e{b}-0"), Direction::Out, 10, &["next"])
            .unwrap();
        assert_eq!(
            reached.len(),
            PER_BATCH - 1,
            "round {round}: walk of batch {b}"
        );
        let back = t
            .traverse(
                &format!("e{b}-{}", PER_BATCH - 1),
                Direction::In,
                10,
                &["next"],
            )
            .unwrap();
        assert_eq!(
            back.len(),
            PER_BATCH - 1,
            "round {round}: walk back in batch {b}"
        );
    }

    // The vector index holds each row's current vector, once.
    let (indexed, _) = t.vector_index_stats().unwrap();
    assert_eq!(
        indexed,
        batches * PER_BATCH,
        "round {round}: vectors indexed"
    );
    let mut found = 0;
    let mut tried = 0;
    for b in 0..batches {
        for i in [0, 1] {
            let r = t.get_resource(&format!("r{b}-{i}")).unwrap().unwrap();
            let hits = t
                .search_similar(r.embedding.as_ref().unwrap(), 1, None)
                .unwrap();
            tried += 1;
            found += usize::from(hits[0].0.id == r.id);
        }
    }
    assert!(
        found * 100 >= tried * 99,
        "round {round}: only {found} of {tried} vectors find their row"
    );
}
