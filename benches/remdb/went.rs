//! W-ENT (../shared/BENCHMARKS.md): predicate queries over 100k entities through SQL, with
//! the built-in indexes and without (every filter over a full scan), plus ingestion.
//!
//! `cargo bench --bench remdb -- went` prints a Markdown table of p50/p95/p99 (planning and
//! execution apart) and then runs the criterion benchmarks of the same queries.
//! `REMDB_BENCH_ROWS` changes the row count (default 100000).

use crate::common;

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput};
use rand::SeedableRng;
use rand::rngs::StdRng;
use remdb::{Batch, Db, QueryOptions, Tenant};

use crate::common::{load_entities, percentiles, sample, went_entity};

const QUERIES: [(&str, &str); 5] = [
    ("P1 point", "SELECT * FROM entities WHERE id = '{id}'"),
    (
        "P2 simple",
        "SELECT * FROM entities WHERE type = 'person' LIMIT 100",
    ),
    (
        "P3 JSON",
        "SELECT * FROM entities WHERE properties->>'role' = 'engineer' LIMIT 100",
    ),
    (
        "P4 composite",
        "SELECT * FROM entities WHERE type = 'person' AND properties->>'team' IN ('platform','infra') AND created_at > '2024-01-01' ORDER BY name LIMIT 100",
    ),
    (
        "P5 count",
        "SELECT count(*) FROM entities WHERE type = 'person'",
    ),
];

fn query_text(template: &str, i: usize, rows: usize) -> String {
    // A different point id per call, spread over the table.
    template.replace("{id}", &format!("ent-{:07}", (i * 7919) % rows))
}

fn report(rt: &tokio::runtime::Runtime, indexed: &Tenant, scan: &Tenant, n: usize) {
    println!("\n### W-ENT at {n} entities (single-threaded, after 20 warm-up queries)\n");
    println!("| query | session | p50 ms | p95 ms | p99 ms | plan p50 ms | exec p50 ms |");
    println!("|---|---|---|---|---|---|---|");
    for (name, template) in QUERIES {
        for (label, tenant, count) in [("indexes on", indexed, 300), ("indexes off", scan, 20)] {
            let mut plan_times = vec![];
            let mut exec_times = vec![];
            let total = sample(20.min(count), count, |i| {
                let (p, e, _) =
                    rt.block_on(common::plan_and_run(tenant, &query_text(template, i, n)));
                plan_times.push(p);
                exec_times.push(e);
            });
            let (t, p, e) = (
                percentiles(total),
                percentiles(plan_times),
                percentiles(exec_times),
            );
            println!(
                "| {name} | {label} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                t.p50, t.p95, t.p99, p.p50, e.p50
            );
        }
    }
}

fn ingest_report(n: usize) {
    println!("\n### Ingestion, entities in batches of 1,000\n");
    println!("| writers | tenants | rows | seconds | rows/s |");
    println!("|---|---|---|---|---|");
    // Writers of one tenant share its write lock; writers of different tenants do not.
    for (writers, tenants) in [(1usize, 1usize), (2, 1), (2, 2)] {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(dir.path(), Default::default()).expect("open");
        for t in 0..tenants {
            db.create_tenant(&format!("ingest{t}")).expect("tenant");
        }
        let per_writer = n / writers;
        let t = Instant::now();
        std::thread::scope(|s| {
            for w in 0..writers {
                let tenant = db
                    .tenant(&format!("ingest{}", w % tenants))
                    .expect("tenant");
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(common::SEED + w as u64);
                    for start in (0..per_writer).step_by(1000) {
                        let mut batch = Batch::new();
                        for i in start..(start + 1000).min(per_writer) {
                            let mut e = went_entity(&mut rng, i);
                            e.id = format!("w{w}-{i}");
                            batch = batch.insert(e);
                        }
                        tenant.write(batch).expect("write");
                    }
                });
            }
        });
        let secs = t.elapsed().as_secs_f64();
        let total = per_writer * writers;
        let stored: u64 = (0..tenants)
            .map(|t| {
                db.tenant(&format!("ingest{t}"))
                    .expect("tenant")
                    .count(remdb::Table::Entities)
                    .expect("count")
            })
            .sum();
        assert_eq!(stored as usize, total, "concurrent writers lost rows");
        println!(
            "| {writers} | {tenants} | {total} | {secs:.2} | {:.0} |",
            total as f64 / secs
        );
    }
}

pub fn run() {
    let n = common::env("REMDB_BENCH_ROWS", 100_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), Default::default()).expect("open");
    let tenant = db.create_tenant("went").expect("tenant");
    let t = Instant::now();
    load_entities(&tenant, n);
    eprintln!("loaded {n} entities in {:.1}s", t.elapsed().as_secs_f64());
    db.storage().flush().expect("flush");
    let scan = db
        .tenant_with(
            "went",
            QueryOptions {
                use_indexes: false,
                ..Default::default()
            },
        )
        .expect("tenant");

    report(&rt, &tenant, &scan, n);
    ingest_report(n);

    let mut c = Criterion::default().sample_size(30);
    let mut group = c.benchmark_group("went");
    for (name, template) in QUERIES {
        let mut i = 0;
        group.bench_function(BenchmarkId::new(name, "index"), |b| {
            b.iter(|| {
                i += 1;
                rt.block_on(tenant.sql(&query_text(template, i, n)))
                    .expect("query")
            })
        });
    }
    group.throughput(Throughput::Elements(1000));
    let mut rng = StdRng::seed_from_u64(1);
    let mut next = n;
    group.bench_function("ingest 1000 entities", |b| {
        b.iter(|| {
            let mut batch = Batch::new();
            for _ in 0..1000 {
                batch = batch.insert(went_entity(&mut rng, next));
                next += 1;
            }
            tenant.write(batch).expect("write")
        })
    });
    group.finish();
    c.final_summary();
}
