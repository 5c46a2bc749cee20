//! Soak: writers and readers on several tenants at once, for minutes, through the
//! library; invariants checked at the end. Each tenant has a writer thread that commits
//! batches (entities with a JSON property, resources with embeddings, a moment, edges,
//! and the upsert of an earlier vector) and the reader threads run a mix of statements
//! on random tenants: a point lookup, a JSON filter served by an index, a vector search
//! through SQL, a one-hop walk, a time window.
//!
//! `cargo bench --bench remdb -- soak` (or `scripts/dev.sh soak`) prints the throughput
//! and p50/p99 of each statement kind and of the writes, measured while the others run,
//! then checks that every acknowledged batch is there whole in its own tenant only, and
//! that every index answers as a scan of the rows does. `REMDB_SOAK_SECS` (120),
//! `REMDB_SOAK_TENANTS` (4) and `REMDB_SOAK_READERS` (4) change the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{
    Batch, Db, DbOptions, Direction, Edge, Entity, IndexKind, Moment, QueryOptions, Resource,
    Table, Tenant, VectorOptions,
};

use crate::common::{SEED, env, normal, normalized, percentiles};

const PER_BATCH: usize = 20;
const DIMS: usize = 128;
const TEAMS: [&str; 5] = ["red", "green", "blue", "amber", "violet"];
/// 2024-01-01T00:00:00Z in microseconds: moment `m{b}` is `b` seconds after it.
const EPOCH: i64 = 1_704_067_200_000_000;

fn vector(tenant: usize, b: usize, i: usize, version: u64) -> Vec<f32> {
    let seed = (((tenant * 1_000_000 + b) * PER_BATCH + i) as u64) << 1 | version;
    let mut rng = StdRng::seed_from_u64(seed);
    normalized((0..DIMS).map(|_| normal(&mut rng)).collect())
}

fn resource(tenant: usize, b: usize, i: usize, version: u64) -> Resource {
    Resource {
        id: format!("t{tenant}-r{b}-{i}"),
        content: format!("chunk {i} of batch {b}"),
        metadata: format!(r#"{{"team": "{}"}}"#, TEAMS[(b + i) % TEAMS.len()]),
        embedding: Some(vector(tenant, b, i, version)),
        ..Default::default()
    }
}

fn batch(tenant: usize, b: usize) -> Batch {
    let mut batch = Batch::new();
    for i in 0..PER_BATCH {
        batch = batch
            .insert(Entity {
                id: format!("t{tenant}-e{b}-{i}"),
                entity_type: if i % 4 == 0 { "person" } else { "project" }.into(),
                name: format!("n{b}-{i}"),
                properties: format!(r#"{{"team": "{}", "b": {b}}}"#, TEAMS[(b + i) % 5]),
                ..Default::default()
            })
            .insert(resource(tenant, b, i, 0));
        if i > 0 {
            batch = batch.insert(Edge {
                src: format!("t{tenant}-e{b}-0"),
                dst: format!("t{tenant}-e{b}-{i}"),
                edge_type: "has".into(),
                properties: "{}".into(),
                ..Default::default()
            });
        }
    }
    batch = batch.insert(Moment {
        id: format!("t{tenant}-m{b}"),
        timestamp: EPOCH + b as i64 * 1_000_000,
        moment_type: "step".into(),
        resource_refs: vec![format!("t{tenant}-r{b}-0")],
        entity_refs: vec![format!("t{tenant}-e{b}-0")],
        metadata: "{}".into(),
        ..Default::default()
    });
    if b > 0 {
        batch = batch.update(resource(tenant, b - 1, 1, 1));
    }
    batch
}

const KINDS: [&str; 5] = [
    "point lookup",
    "JSON filter (index)",
    "vector top-10 (SQL)",
    "one-hop walk",
    "time window",
];

fn statement(rng: &mut StdRng, tenant: usize, batches: usize, kind: usize) -> String {
    let b = rng.random_range(0..batches.max(1));
    match kind {
        0 => format!("SELECT * FROM entities WHERE id = 't{tenant}-e{b}-3'"),
        1 => format!(
            "SELECT id FROM entities WHERE properties->>'team' = '{}' LIMIT 50",
            TEAMS[rng.random_range(0..TEAMS.len())]
        ),
        2 => {
            let v = vector(tenant, b, 2, 0);
            let list = v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
            format!(
                "SELECT id, score FROM vector_similar('resources', ARRAY[{}], 10)",
                list.join(",")
            )
        }
        3 => format!("SELECT id FROM traverse('t{tenant}-e{b}-0', 'out', 1)"),
        _ => format!(
            "SELECT id FROM moments WHERE timestamp >= '{}' AND timestamp < '{}'",
            at_second(b),
            at_second(b + 30)
        ),
    }
}

fn at_second(b: usize) -> String {
    format!(
        "2024-01-01T{:02}:{:02}:{:02}",
        b / 3600,
        b / 60 % 60,
        b % 60
    )
}

pub fn run() {
    let secs: u64 = env("REMDB_SOAK_SECS", 120);
    let tenants: usize = env("REMDB_SOAK_TENANTS", 4);
    let reader_count: usize = env("REMDB_SOAK_READERS", 4);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Arc::new(Db::open(dir.path(), DbOptions::default()).expect("open"));
    for k in 0..tenants {
        let t = db.create_tenant(&format!("tenant-{k}")).expect("create");
        t.configure_vectors(VectorOptions {
            dimensions: Some(DIMS),
            ..Default::default()
        })
        .expect("vectors");
        t.create_index(
            "idx_team",
            Table::Entities,
            "properties",
            &["team"],
            IndexKind::Value,
        )
        .expect("index");
    }
    eprintln!("soak: {tenants} tenants, {tenants} writers, {reader_count} readers, {secs} s");
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicUsize>> =
        Arc::new((0..tenants).map(|_| AtomicUsize::new(0)).collect());
    let started = Instant::now();
    let writers: Vec<_> = (0..tenants)
        .map(|k| {
            let (db, stop, acked) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || {
                let t = db.tenant(&format!("tenant-{k}")).expect("tenant");
                let mut took = Vec::new();
                let mut b = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t0 = Instant::now();
                    t.write(batch(k, b)).expect("write");
                    took.push(t0.elapsed());
                    b += 1;
                    acked[k].store(b, Ordering::Release);
                    if b % 500 == 0 {
                        t.save_vectors().expect("save");
                    }
                }
                took
            })
        })
        .collect();
    let readers: Vec<_> = (0..reader_count)
        .map(|r| {
            let (db, stop, acked) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let mut rng = StdRng::seed_from_u64(SEED + r as u64);
                let handles: Vec<Tenant> = (0..tenants)
                    .map(|k| db.tenant(&format!("tenant-{k}")).expect("tenant"))
                    .collect();
                let mut took: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.random_range(0..tenants);
                    let kind = rng.random_range(0..KINDS.len());
                    let batches = acked[k].load(Ordering::Acquire);
                    let sql = statement(&mut rng, k, batches, kind);
                    let t0 = Instant::now();
                    rt.block_on(handles[k].sql(&sql))
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                    took[kind].push(t0.elapsed());
                }
                took
            })
        })
        .collect();
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            let written: usize = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
            eprintln!(
                "soak: {:.0} s, {} batches written",
                started.elapsed().as_secs_f64(),
                written
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let writes: Vec<Duration> = writers
        .into_iter()
        .flat_map(|w| w.join().expect("writer"))
        .collect();
    let mut reads: Vec<Vec<Duration>> = vec![Vec::new(); KINDS.len()];
    for r in readers {
        for (kind, took) in r.join().expect("reader").into_iter().enumerate() {
            reads[kind].extend(took);
        }
    }

    println!("\n## Soak: {tenants} tenants, {tenants} writers, {reader_count} readers, {secs} s\n");
    println!("| work | count | per second | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    let line = |name: &str, took: Vec<Duration>| {
        let n = took.len();
        if n == 0 {
            println!("| {name} | 0 | | | |");
            return;
        }
        let p = percentiles(took);
        println!(
            "| {name} | {n} | {:.0} | {:.2} | {:.2} |",
            n as f64 / elapsed,
            p.p50,
            p.p99
        );
    };
    let rows_per_batch = 2 * PER_BATCH + (PER_BATCH - 1) + 1;
    println!(
        "| rows written ({rows_per_batch} a batch, 4 tables) | {} | {:.0} | | |",
        writes.len() * rows_per_batch,
        (writes.len() * rows_per_batch) as f64 / elapsed
    );
    line("write batch", writes);
    for (kind, took) in reads.into_iter().enumerate() {
        line(KINDS[kind], took);
    }
    let checked = check(&db, tenants, &acked);
    println!("\nInvariants: {checked}.");
}

/// Every acknowledged batch whole in its tenant only, each index as a scan answers.
fn check(db: &Db, tenants: usize, acked: &[AtomicUsize]) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rows = |t: &Tenant, sql: &str| {
        let batches = rt
            .block_on(t.sql(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let mut out: Vec<String> = Vec::new();
        for b in batches.into_batches() {
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&[b])
                .expect("format")
                .to_string();
            out.extend(
                text.lines()
                    .skip(3)
                    .filter(|l| !l.starts_with('+'))
                    .map(String::from),
            );
        }
        out
    };
    let mut total = 0;
    for (k, acked) in acked.iter().enumerate() {
        let id = format!("tenant-{k}");
        let t = db.tenant(&id).expect("tenant");
        let scan = db
            .tenant_with(
                &id,
                QueryOptions {
                    use_indexes: false,
                    ..Default::default()
                },
            )
            .expect("tenant");
        let batches = acked.load(Ordering::Acquire);
        total += batches;
        for (table, per_batch) in [
            (Table::Entities, PER_BATCH),
            (Table::Resources, PER_BATCH),
            (Table::Edges, PER_BATCH - 1),
            (Table::Moments, 1),
        ] {
            let n = t.count(table).expect("count") as usize;
            assert_eq!(n, batches * per_batch, "{id}: {table:?}");
        }
        let foreign = rows(
            &t,
            &format!("SELECT id FROM entities WHERE id NOT LIKE 't{k}-%'"),
        );
        assert!(foreign.is_empty(), "{id} holds another tenant's rows");
        for team in TEAMS {
            let sql =
                format!("SELECT id FROM entities WHERE properties->>'team' = '{team}' ORDER BY id");
            assert_eq!(rows(&t, &sql), rows(&scan, &sql), "{id}: {sql}");
        }
        let sql = "SELECT id FROM entities WHERE type = 'person' ORDER BY id";
        assert_eq!(rows(&t, sql), rows(&scan, sql), "{id}: {sql}");
        let (indexed, _) = t.vector_index_stats().expect("stats");
        assert_eq!(indexed, batches * PER_BATCH, "{id}: vectors indexed");
        for b in (0..batches).step_by((batches / 50).max(1)) {
            let r = t
                .get_resource(&format!("t{k}-r{b}-1"))
                .expect("read")
                .expect("row");
            let version = u64::from(b + 1 < batches);
            assert_eq!(
                r.embedding,
                Some(vector(k, b, 1, version)),
                "{id}: upsert of r{b}-1"
            );
            let walk = t
                .traverse(&format!("t{k}-e{b}-0"), Direction::Out, 1, &["has"])
                .expect("walk");
            assert_eq!(walk.len(), PER_BATCH - 1, "{id}: walk of batch {b}");
        }
    }
    format!(
        "{total} batches acknowledged in {tenants} tenants, all there whole and in their \
         own tenant only; JSON and built-in indexes answer as scans do; every row's \
         vector indexed once, upserts applied"
    )
}
