//! W-GRAPH and W-TIME: graph walks and moment windows through SQL.
//!
//! * 100k entities and 500k edges whose destinations follow a power law (a few hubs, a
//!   long tail): `traverse(start, 'out', 1)` and `traverse(start, 'out', 3)` from random
//!   starts, p50/p95 and the rows they return.
//! * 1M moments over four years: a 7-day window `ORDER BY timestamp DESC LIMIT 50`, with
//!   the time index and without (a full scan and a sort).
//!
//! `cargo bench --bench remdb -- graph` prints Markdown tables. `REMDB_GRAPH_ENTITIES` (100000),
//! `REMDB_GRAPH_EDGES` (500000) and `REMDB_MOMENTS` (1000000) change the sizes.

use crate::common;

use std::collections::HashSet;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, Db, Edge, Moment, Param, QueryOptions, Tenant};

use crate::common::{Progress, env, load_entities, percentiles, plan_and_run, sample};

/// 2022-01-01 and 2026-01-01 in microseconds.
const FROM: i64 = 1_640_995_200_000_000;
const TO: i64 = 1_767_225_600_000_000;
const DAY: i64 = 86_400_000_000;

fn entity_id(i: usize) -> String {
    format!("ent-{i:07}")
}

/// Edges with uniform sources and power-law destinations (entity `n * u^3`), so a few
/// entities are hubs with thousands of incoming edges.
fn load_edges(tenant: &Tenant, entities: usize, edges: usize) {
    let mut rng = StdRng::seed_from_u64(common::SEED + 1);
    let mut seen = HashSet::with_capacity(edges);
    let mut batch = Batch::new();
    let mut progress = Progress::new("edges", edges);
    while seen.len() < edges {
        let src = rng.random_range(0..entities);
        let u: f64 = rng.random();
        let dst = ((entities as f64) * u.powi(3)) as usize;
        let edge_type = match rng.random_range(0..10) {
            0..6 => "knows",
            6..9 => "works_with",
            _ => "mentors",
        };
        if src == dst || !seen.insert((src, edge_type, dst)) {
            continue;
        }
        batch = batch.insert(Edge {
            src: entity_id(src),
            dst: entity_id(dst),
            edge_type: edge_type.into(),
            ..Default::default()
        });
        if batch.len() == 1000 {
            tenant.write(std::mem::take(&mut batch)).expect("edges");
            progress.set(seen.len());
        }
    }
    if !batch.is_empty() {
        tenant.write(batch).expect("edges");
    }
    progress.set(seen.len());
    progress.finish();
}

fn load_moments(tenant: &Tenant, n: usize, entities: usize) {
    let mut rng = StdRng::seed_from_u64(common::SEED + 2);
    let mut progress = Progress::new("moments", n);
    for start in (0..n).step_by(1000) {
        let mut batch = Batch::new();
        for i in start..(start + 1000).min(n) {
            let refs = (0..rng.random_range(0..3))
                .map(|_| entity_id(rng.random_range(0..entities)))
                .collect();
            batch = batch.insert(Moment {
                id: format!("m-{i:08}"),
                timestamp: rng.random_range(FROM..TO),
                moment_type: ["conversation", "meeting", "note", "task"][rng.random_range(0..4)]
                    .into(),
                entity_refs: refs,
                ..Default::default()
            });
        }
        tenant.write(batch).expect("moments");
        progress.set((start + 1000).min(n));
    }
    progress.finish();
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("timestamp")
        .to_rfc3339()
}

pub fn run() {
    let n_entities = env("REMDB_GRAPH_ENTITIES", 100_000);
    let n_edges = env("REMDB_GRAPH_EDGES", 500_000);
    let n_moments = env("REMDB_MOMENTS", 1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), Default::default()).expect("open");
    let tenant = db.create_tenant("graph").expect("tenant");

    let t = Instant::now();
    load_entities(&tenant, n_entities);
    load_edges(&tenant, n_entities, n_edges);
    eprintln!(
        "loaded {n_entities} entities and {n_edges} edges in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    load_moments(&tenant, n_moments, n_entities);
    eprintln!(
        "loaded {n_moments} moments in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    // Queries run on the compacted steady state, not beside a compaction backlog that
    // would take one of the two cores away from them.
    let t = Instant::now();
    db.storage().compact().expect("compact");
    eprintln!("compacted in {:.1}s", t.elapsed().as_secs_f64());

    println!(
        "\n### W-GRAPH: {n_entities} entities, {n_edges} edges (power-law in-degree), through SQL\n"
    );
    println!("| query | p50 ms | p95 ms | p99 ms | plan p50 ms | exec p50 ms | mean rows |");
    println!("|---|---|---|---|---|---|---|");
    let mut rng = StdRng::seed_from_u64(7);
    let starts: Vec<String> = (0..500)
        .map(|_| entity_id(rng.random_range(0..n_entities)))
        .collect();
    for (name, depth, direction, count) in [
        ("1-hop out", 1, "out", 500),
        ("1-hop both", 1, "both", 200),
        ("3-hop out", 3, "out", 50),
    ] {
        let (mut returned, mut plans, mut execs) = (0, vec![], vec![]);
        let times = sample(10, count, |i| {
            let sql = format!(
                "SELECT id, depth FROM traverse('{}', '{direction}', {depth})",
                starts[i % starts.len()]
            );
            let (plan, exec, rows) = rt.block_on(plan_and_run(&tenant, &sql));
            returned += rows;
            plans.push(plan);
            execs.push(exec);
        });
        let p = percentiles(times);
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} |",
            p.p50,
            p.p95,
            p.p99,
            percentiles(plans).p50,
            percentiles(execs).p50,
            returned as f64 / (count + 10) as f64
        );
    }

    println!("\n### W-TIME: {n_moments} moments over 4 years, 7-day window, newest 50\n");
    println!("| session | p50 ms | p95 ms | p99 ms | plan p50 ms | exec p50 ms | rows |");
    println!("|---|---|---|---|---|---|---|");
    let scan = db
        .tenant_with(
            "graph",
            QueryOptions {
                use_indexes: false,
                ..Default::default()
            },
        )
        .expect("tenant");
    let windows: Vec<i64> = (0..500)
        .map(|_| rng.random_range(FROM..TO - 7 * DAY))
        .collect();
    for (label, session, count) in [
        ("time index", &tenant, 500),
        ("full scan + sort", &scan, 10),
    ] {
        let (mut returned, mut plans, mut execs) = (0, vec![], vec![]);
        let times = sample(3, count, |i| {
            let from = windows[i % windows.len()];
            let sql = format!(
                "SELECT id, type, timestamp FROM moments WHERE timestamp >= '{}' AND timestamp < '{}' ORDER BY timestamp DESC LIMIT 50",
                rfc3339(from),
                rfc3339(from + 7 * DAY)
            );
            let (plan, exec, rows) = rt.block_on(plan_and_run(session, &sql));
            returned = rows;
            plans.push(plan);
            execs.push(exec);
        });
        let p = percentiles(times);
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {returned} |",
            p.p50,
            p.p95,
            p.p99,
            percentiles(plans).p50,
            percentiles(execs).p50
        );
    }
    // The same window as a prepared statement: planned once, the bounds bound per call.
    let prepared = rt
        .block_on(tenant.prepare(
            "SELECT id, type, timestamp FROM moments WHERE timestamp >= $1 AND timestamp < $2 ORDER BY timestamp DESC LIMIT 50",
        ))
        .expect("prepare");
    let mut returned = 0;
    let times = sample(3, 500, |i| {
        let from = windows[i % windows.len()];
        let params = [
            Param::Text(rfc3339(from)),
            Param::Text(rfc3339(from + 7 * DAY)),
        ];
        let batches = rt.block_on(prepared.execute(&params)).expect("window");
        returned = batches.iter().map(|b| b.num_rows()).sum();
    });
    let p = percentiles(times);
    println!(
        "| time index, prepared statement | {:.3} | {:.3} | {:.3} | - | - | {returned} |",
        p.p50, p.p95, p.p99
    );
}
