//! W-HYB (../shared/BENCHMARKS.md): filtered vector search through SQL over N resources
//! of 768-d clustered vectors with metadata (`language` en 50%, `tags` important 10% /
//! urgent 1%, `source` one of 1,000), with JSON indexes on the three paths.
//!
//! Per filter (selectivity 50%, 10%, 1%, 0.1%, and the seed's query): recall@10 against
//! the exact top-10 among passing rows, p50/p95, rows returned and the strategy chosen;
//! beside it the "vector-first" answer (top-10 by similarity, then the filter) for the
//! seed's comparison. Also W-ENT P3/P4 with their JSON index.
//!
//! A filter's first search reads at most a capped number of candidate ids and fills the
//! tenant's candidate cache in the background; the figures are taken after that (the
//! "first search" column is the cold one).
//!
//! `cargo bench --bench remdb -- whyb`; `REMDB_HYB_ROWS` (default 100000), `REMDB_HYB_PRECISION`
//! (`f32`, `f16` or `i8`; unset, the default), `REMDB_HYB_QUERIES`
//! (200), `REMDB_HYB_EF` (the tenant's ef_search, default 64), `REMDB_WENT_SAMPLES` (runs of
//! each W-ENT query, 300).

use crate::common;

use std::time::Instant;

use datafusion::arrow::array::AsArray;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, Db, IndexKind, Param, QueryOptions, Resource, Table, Tenant, VectorStrategy};

use crate::common::{
    K, Progress, env, generate_vectors, ground_truth, load_entities, percentiles, recall, sample,
};

const LANGUAGES: [&str; 10] = ["en", "de", "fr", "es", "it", "pt", "nl", "sv", "pl", "ja"];

/// The W-HYB metadata of one resource.
pub struct Meta {
    pub language: &'static str,
    pub important: bool,
    pub urgent: bool,
    pub source: usize,
    /// 0..1000, uniform and independent of the vector: `bucket < N` keeps N per mille,
    /// for the strategy sweep.
    pub bucket: u32,
}

impl Meta {
    pub fn tags(&self) -> Vec<&'static str> {
        let mut tags = vec![];
        if self.important {
            tags.push("important");
        }
        if self.urgent {
            tags.push("urgent");
        }
        tags
    }

    /// The `metadata` JSON of the resource.
    pub fn json(&self) -> String {
        serde_json::json!({
            "language": self.language, "tags": self.tags(), "source": format!("s{}", self.source),
            "bucket": self.bucket
        })
        .to_string()
    }
}

/// The metadata of rows `0..n`, the same in every run (and in `export`).
pub fn metadatas(n: usize) -> Vec<Meta> {
    let mut rng = StdRng::seed_from_u64(common::SEED + 3);
    (0..n)
        .map(|i| {
            let mut m = metadata(&mut rng);
            // A hash of the row number, so the other fields keep their values.
            m.bucket = ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as u32 % 1000;
            m
        })
        .collect()
}

fn metadata(rng: &mut StdRng) -> Meta {
    Meta {
        bucket: 0,
        language: if rng.random_range(0..2) == 0 {
            "en"
        } else {
            LANGUAGES[rng.random_range(1..10)]
        },
        important: rng.random_range(0..10) == 0,
        urgent: rng.random_range(0..100) == 0,
        source: rng.random_range(0..1000),
    }
}

fn search(rt: &tokio::runtime::Runtime, t: &Tenant, sql: &str, q: &[f32]) -> Vec<u64> {
    let batches = rt
        .block_on(t.sql_with_params(sql, &[Param::Vector(q.to_vec())]))
        .expect("query");
    ids_of(&batches)
}

/// The strategy a search took, from its EXPLAIN ANALYZE metrics (`strategy_<name>=1`).
fn strategy_taken(rt: &tokio::runtime::Runtime, t: &Tenant, sql: &str, q: &[f32]) -> String {
    let analyze = rt
        .block_on(t.sql_with_params(
            &format!("EXPLAIN ANALYZE {sql}"),
            &[Param::Vector(q.to_vec())],
        ))
        .expect("explain analyze");
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&analyze)
        .expect("format")
        .to_string();
    if let Some(line) = text.lines().find(|l| l.contains("VectorSearchExec")) {
        eprintln!("{sql}\n{}", line.trim());
    }
    text.split("strategy_")
        .skip(1)
        .find_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            rest[name.len()..].starts_with("=1").then_some(name)
        })
        .unwrap_or_else(|| "?".into())
}

/// Waits until the tenant's background read of a candidate set (started by a filter's
/// first search) is done, so that the samples after it measure the steady state.
fn settle(db: &Db) {
    let store = db.storage().tenant("hyb").expect("tenant");
    while store.filling_candidates() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The row numbers of the `r0000042` ids in the first column.
fn ids_of(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<u64> {
    let mut out = vec![];
    for b in batches {
        let ids = b.column(0).as_string::<i32>();
        out.extend(
            ids.iter()
                .flatten()
                .map(|id| id[1..].parse::<u64>().expect("id")),
        );
    }
    out
}

pub fn run() {
    let n = env("REMDB_HYB_ROWS", 100_000);
    let nq = env("REMDB_HYB_QUERIES", 200);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let t0 = Instant::now();
    let (data, queries) = generate_vectors(n, nq);
    let metas = metadatas(n);
    eprintln!("generated {n} rows in {:.1}s", t0.elapsed().as_secs_f64());

    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), Default::default()).expect("open");
    let tenant = db.create_tenant("hyb").expect("tenant");
    // `REMDB_HYB_PRECISION=f32|f16|i8`: the index's precision (unset, the default).
    if let Ok(p) = std::env::var("REMDB_HYB_PRECISION") {
        tenant
            .configure_vectors(remdb::VectorOptions {
                dimensions: Some(768),
                precision: remdb::Precision::parse(&p).expect("REMDB_HYB_PRECISION"),
                ..Default::default()
            })
            .expect("precision");
    }
    tenant.vector_index_stats().expect("load index");
    let t0 = Instant::now();
    let mut progress = Progress::new("resources", n);
    for start in (0..n).step_by(1000) {
        let mut batch = Batch::new();
        for i in start..(start + 1000).min(n) {
            batch = batch.insert(Resource {
                id: format!("r{i:07}"),
                uri: Some(format!("doc://{}", i / 8)),
                content: format!("chunk {i}"),
                metadata: metas[i].json(),
                embedding: Some(data[i].clone()),
                ..Default::default()
            });
        }
        tenant.write(batch).expect("write");
        progress.set((start + 1000).min(n));
    }
    progress.finish();
    eprintln!("loaded in {:.1}s", t0.elapsed().as_secs_f64());
    let t0 = Instant::now();
    for (name, path, kind) in [
        ("idx_lang", "language", IndexKind::Value),
        ("idx_tags", "tags", IndexKind::List),
        ("idx_source", "source", IndexKind::Value),
        ("idx_bucket", "bucket", IndexKind::Value),
    ] {
        tenant
            .create_index(name, Table::Resources, "metadata", &[path], kind)
            .expect("index");
    }
    eprintln!("indexed in {:.1}s", t0.elapsed().as_secs_f64());
    db.storage().flush().expect("flush");
    // One table per ef_search given (`REMDB_HYB_EF=64,256`); the sweep runs at the last.
    let efs: Vec<usize> = std::env::var("REMDB_HYB_EF")
        .unwrap_or_else(|_| "64".into())
        .split(',')
        .map(|ef| {
            ef.trim()
                .parse()
                .expect("REMDB_HYB_EF: numbers, comma-separated")
        })
        .collect();

    type Keep<'a> = Box<dyn Fn(usize) -> bool + Sync + 'a>;
    let cases: Vec<(&str, &str, Keep, usize, Option<f32>)> = vec![
        ("none (unfiltered)", "true", Box::new(|_| true), K, None),
        (
            "50% language = 'en'",
            "metadata->>'language' = 'en'",
            Box::new(|i| metas[i].language == "en"),
            K,
            None,
        ),
        (
            "10% 'important' in tags",
            "json_array_contains(metadata, 'tags', 'important')",
            Box::new(|i| metas[i].important),
            K,
            None,
        ),
        (
            "1% 'urgent' in tags",
            "json_array_contains(metadata, 'tags', 'urgent')",
            Box::new(|i| metas[i].urgent),
            K,
            None,
        ),
        (
            "0.1% source = 's42'",
            "metadata->>'source' = 's42'",
            Box::new(|i| metas[i].source == 42),
            K,
            None,
        ),
        (
            "seed: top 50, min 0.7, en, LIMIT 10",
            "metadata->>'language' = 'en'",
            Box::new(|i| metas[i].language == "en"),
            50,
            Some(0.7),
        ),
    ];
    // Exact filtered top-10 of every query, per case.
    let truths: Vec<Vec<Vec<u64>>> = cases
        .iter()
        .map(|(_, _, keep, _, min_score)| {
            let keep: &(dyn Fn(usize) -> bool + Sync) = keep.as_ref();
            let mut truth = ground_truth(&data, &queries, keep);
            if let Some(min) = min_score {
                // The seed's query keeps only hits over the score, then the first 10.
                for (t, q) in truth.iter_mut().zip(&queries) {
                    t.retain(|i| common::dot(q, &data[*i as usize]) >= *min);
                }
            }
            truth
        })
        .collect();
    for &ef in &efs {
        let mut options = tenant
            .vector_options()
            .expect("options")
            .expect("vectors configured");
        options.ef_search = ef;
        tenant.configure_vectors(options).expect("ef_search");
        println!("\n### W-HYB at {n} x 768, ef_search {ef}, top-10 through SQL, {nq} queries\n");
        println!(
            "| filter | strategy | recall@10 | p50 ms | p95 ms | first search ms | mean rows | vector-first recall@10 | vector-first mean rows |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for ((label, filter, keep, top_k, min_score), truth) in cases.iter().zip(&truths) {
            let keep: &(dyn Fn(usize) -> bool + Sync) = keep.as_ref();
            let min = min_score.map_or("NULL".to_string(), |m| m.to_string());
            let sql = format!(
                "SELECT id FROM vector_similar('resources', $1, {top_k}, {min}) WHERE {filter} LIMIT {K}"
            );
            let t0 = Instant::now();
            search(&rt, &tenant, &sql, &queries[0]);
            let first_ms = t0.elapsed().as_secs_f64() * 1e3;
            settle(&db);
            let mut found = vec![];
            let times = sample(10, nq, |i| {
                found.push(search(&rt, &tenant, &sql, &queries[i]))
            });
            let found = &found[10..];
            let p = percentiles(times);
            let rows = found.iter().map(Vec::len).sum::<usize>() as f64 / nq as f64;
            // Vector-first: the top-10 by similarity, then the filter.
            let first_sql =
                format!("SELECT id FROM vector_similar('resources', $1, {top_k}, {min})");
            let mut first = vec![];
            for q in &queries {
                let ids = search(&rt, &tenant, &first_sql, q);
                first.push(
                    ids.into_iter()
                        .filter(|i| keep(*i as usize))
                        .take(K)
                        .collect::<Vec<u64>>(),
                );
            }
            let first_rows = first.iter().map(Vec::len).sum::<usize>() as f64 / nq as f64;
            let strategy = strategy_taken(&rt, &tenant, &sql, &queries[0]);
            let show_recall = |found: &[Vec<u64>]| {
                if truth.iter().all(Vec::is_empty) {
                    "n/a (no row passes)".to_string()
                } else {
                    format!("{:.3}", recall(found, truth))
                }
            };
            println!(
                "| {label} | {strategy} | {} | {:.3} | {:.3} | {first_ms:.3} | {rows:.1} | {} | {first_rows:.1} |",
                show_recall(found),
                p.p50,
                p.p95,
                show_recall(&first),
            );
        }
    }

    if env("REMDB_HYB_SWEEP", 1) == 1 {
        sweep(&rt, &db, &data, &queries, &metas);
    }

    // W-ENT P3 / P4 with the JSON index on properties.
    let went = db.create_tenant("went").expect("tenant");
    let rows = env("REMDB_BENCH_ROWS", 100_000);
    load_entities(&went, rows);
    for (name, path) in [("idx_role", "role"), ("idx_team", "team")] {
        went.create_index(
            name,
            Table::Entities,
            "properties",
            &[path],
            IndexKind::Value,
        )
        .expect("index");
    }
    // P4 orders by name: a user index on the column, walked in order; its time window
    // is answered by an index on created_at (an exact set, ANDed with type and team).
    went.create_index("idx_name", Table::Entities, "name", &[], IndexKind::Value)
        .expect("index");
    went.create_index(
        "idx_created",
        Table::Entities,
        "created_at",
        &[],
        IndexKind::Value,
    )
    .expect("index");
    // Queries run on the compacted steady state, not beside a compaction backlog.
    db.storage().compact().expect("compact");
    println!(
        "\n### W-ENT P3/P4 at {rows} entities with JSON indexes, idx_name and idx_created (single-threaded)\n"
    );
    println!(
        "| query | first ms | p50 ms | p95 ms | p99 ms | planned each run p50 ms | prepared p50 ms | access |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, sql) in [
        (
            "P3 JSON",
            "SELECT * FROM entities WHERE properties->>'role' = 'engineer' LIMIT 100",
        ),
        (
            "P4 composite",
            "SELECT * FROM entities WHERE type = 'person' AND properties->>'team' IN ('platform','infra') AND created_at > '2024-01-01' ORDER BY name LIMIT 100",
        ),
        // A later page of P4: the walk starts at the last name seen.
        (
            "P4 next page",
            "SELECT * FROM entities WHERE type = 'person' AND properties->>'team' IN ('platform','infra') AND created_at > '2024-01-01' AND name > 'person 50000' ORDER BY name LIMIT 100",
        ),
    ] {
        // The first run reads the filter's index set into memory (see candidates.rs).
        let started = Instant::now();
        std::hint::black_box(rt.block_on(went.sql(sql)).expect("query"));
        let first = started.elapsed().as_secs_f64() * 1e3;
        let runs = env("REMDB_WENT_SAMPLES", 300);
        let times = sample(20, runs, |_| {
            std::hint::black_box(rt.block_on(went.sql(sql)).expect("query"));
        });
        // The same statement, its text new on every run (a comment): planned each time,
        // where the runs above take the plan kept for their repeated text.
        let mut run = 0;
        let planned_times = sample(20, runs, |_| {
            run += 1;
            let text = format!("{sql} -- run {run}");
            std::hint::black_box(rt.block_on(went.sql(&text)).expect("query"));
        });
        // The same statement prepared once: execution without parsing and planning.
        let prepared = rt.block_on(went.prepare(sql)).expect("prepare");
        let prepared_times = sample(20, runs, |_| {
            std::hint::black_box(rt.block_on(prepared.execute(&[])).expect("query"));
        });
        let plan = rt
            .block_on(went.sql(&format!("EXPLAIN {sql}")))
            .expect("explain");
        let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
            .expect("format")
            .to_string();
        let access = plan
            .lines()
            .find_map(|l| l.split("access=").nth(1))
            .and_then(|rest| rest.split(", projection").next())
            .unwrap_or("?")
            .trim()
            .to_string();
        let p = percentiles(times);
        let planned = percentiles(planned_times);
        let prepared = percentiles(prepared_times);
        println!(
            "| {name} | {first:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | `{access}` |",
            p.p50, p.p95, p.p99, planned.p50, prepared.p50
        );
    }
}

/// Every strategy forced, at selectivities from 0.1% to 50% (`bucket < N`), beside the
/// planner's choice: where each one wins, which is what the thresholds are set from.
fn sweep(
    rt: &tokio::runtime::Runtime,
    db: &Db,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    metas: &[Meta],
) {
    let nq = env("REMDB_HYB_SWEEP_QUERIES", 50).min(queries.len());
    let queries = &queries[..nq];
    let strategies: [(&str, Option<VectorStrategy>); 5] = [
        ("chosen", None),
        ("exact", Some(VectorStrategy::Exact)),
        ("in-graph", Some(VectorStrategy::InGraph)),
        ("overfetch", Some(VectorStrategy::Overfetch)),
        ("post-filter", Some(VectorStrategy::PostFilter)),
    ];
    println!(
        "\n### Strategy sweep at {} x 768: p50 ms (recall@10), {nq} prepared queries per cell\n",
        data.len()
    );
    println!(
        "| selectivity | {} | chosen strategy |",
        strategies.map(|(name, _)| name).join(" | ")
    );
    println!("|---|---|---|---|---|---|---|");
    for per_mille in [1u32, 5, 10, 20, 50, 100, 200, 500] {
        let keep = |i: usize| metas[i].bucket < per_mille;
        let truth = ground_truth(data, queries, &keep);
        let sql = format!(
            "SELECT id FROM vector_similar('resources', $1, {K}) WHERE json_get_int(metadata, 'bucket') < {per_mille}"
        );
        let mut cells = vec![];
        let mut chosen = String::new();
        for (_, strategy) in strategies {
            let tenant = db
                .tenant_with(
                    "hyb",
                    QueryOptions {
                        vector_strategy: strategy,
                        ..Default::default()
                    },
                )
                .expect("tenant");
            let prepared = rt.block_on(tenant.prepare(&sql)).expect("prepare");
            rt.block_on(prepared.execute(&[Param::Vector(queries[0].clone())]))
                .expect("search");
            settle(db);
            let mut found = vec![];
            let times = sample(5, nq, |i| {
                let batches = rt
                    .block_on(prepared.execute(&[Param::Vector(queries[i].clone())]))
                    .expect("search");
                found.push(ids_of(&batches));
            });
            let p = percentiles(times);
            cells.push(format!("{:.3} ({:.3})", p.p50, recall(&found[5..], &truth)));
            if strategy.is_none() {
                chosen = strategy_taken(rt, &tenant, &sql, &queries[0]);
            }
        }
        println!(
            "| {:.1}% | {} | {chosen} |",
            per_mille as f64 / 10.0,
            cells.join(" | ")
        );
    }
}
