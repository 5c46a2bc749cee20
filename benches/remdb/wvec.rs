//! W-VEC (../shared/BENCHMARKS.md): vector search over N clustered 768-d unit vectors,
//! through remdb's SQL (`vector_similar`) and, in the same run on the same vectors, straight
//! through the usearch crate at the same parameters; the ratio of the two is our overhead.
//!
//! `cargo bench --bench remdb -- wvec` prints Markdown tables: build rate and memory, then per ef
//! recall@10, p50/p95/p99 single-threaded and QPS on 2 threads for both. Environment:
//! `REMDB_VEC_ROWS` (default 100000), `REMDB_VEC_QUERIES` (1000), `REMDB_VEC_EF`
//! (`16,32,64,128,256`), `REMDB_VEC_PRECISION` (`f32`, `f16` or `i8`; unset, the default
//! options' precision), `REMDB_VEC_RESCORE` (the rescoring depth; unset, the precision's
//! default), `REMDB_VEC_RAW_COS=1` (also a usearch index with its cosine metric beside the
//! inner-product one remdb's cosine is served as).

use crate::common;

use std::time::Instant;

use remdb::{Batch, Db, Metric, Param, Precision, Resource, Tenant, VectorOptions};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::common::{
    DIMS, K, Progress, env, generate_vectors as generate, ground_truth, percentiles, recall,
    rss_bytes,
};

const M: usize = 16;
const EF_CONSTRUCTION: usize = 128;

fn row_id(i: usize) -> String {
    format!("r{i:07}")
}

/// The data index of a row id written by [`row_id`].
fn data_index(id: &str) -> u64 {
    id[1..].parse().expect("row id")
}

const SQL: &str = "SELECT id FROM vector_similar('resources', $1, 10, NULL, {ef})";

fn sql_search(rt: &tokio::runtime::Runtime, tenant: &Tenant, query: &[f32], ef: usize) -> Vec<u64> {
    let sql = SQL.replace("{ef}", &ef.to_string());
    let batches = rt
        .block_on(tenant.sql_with_params(&sql, &[Param::Vector(query.to_vec())]))
        .expect("vector_similar");
    found_ids(&batches)
}

/// The same statement, prepared once per ef: binding the vector skips parsing and the
/// logical optimizer.
fn prepared_search(
    rt: &tokio::runtime::Runtime,
    prepared: &remdb::PreparedStatement,
    query: &[f32],
) -> Vec<u64> {
    let batches = rt
        .block_on(prepared.execute(&[Param::Vector(query.to_vec())]))
        .expect("prepared vector_similar");
    found_ids(&batches)
}

/// The data indexes of the ids in the first column of a search's result.
fn found_ids(batches: &[datafusion::arrow::array::RecordBatch]) -> Vec<u64> {
    let mut out = Vec::with_capacity(K);
    for batch in batches {
        let ids = datafusion::arrow::array::AsArray::as_string::<i32>(batch.column(0));
        out.extend(ids.iter().flatten().map(data_index));
    }
    out
}

fn raw_search(index: &Index, query: &[f32]) -> Vec<u64> {
    index.search(query, K).expect("usearch search").keys
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Queries per second with 2 threads, each answering half of the queries with its own
/// tokio runtime (a current-thread one, as an embedding application would have).
fn qps_2_threads(
    queries: &[Vec<f32>],
    search: impl Fn(&tokio::runtime::Runtime, &[f32]) + Sync,
) -> f64 {
    let half = queries.len().div_ceil(2);
    let t = Instant::now();
    std::thread::scope(|s| {
        for chunk in queries.chunks(half) {
            let search = &search;
            s.spawn(move || {
                let rt = runtime();
                chunk.iter().for_each(|q| search(&rt, q))
            });
        }
    });
    queries.len() as f64 / t.elapsed().as_secs_f64()
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

pub fn run() {
    let n: usize = env("REMDB_VEC_ROWS", 100_000);
    let nq: usize = env("REMDB_VEC_QUERIES", 1000);
    let efs: Vec<usize> = std::env::var("REMDB_VEC_EF")
        .unwrap_or_else(|_| "16,32,64,128,256".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let precision = match std::env::var("REMDB_VEC_PRECISION") {
        Ok(p) => Precision::parse(&p).expect("REMDB_VEC_PRECISION"),
        Err(_) => VectorOptions::default().precision,
    };
    let rescore = std::env::var("REMDB_VEC_RESCORE")
        .ok()
        .map(|r| r.parse::<usize>().expect("REMDB_VEC_RESCORE"));

    let t = Instant::now();
    let (data, queries) = generate(n, nq);
    eprintln!(
        "generated {n} x {DIMS} in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let truth = ground_truth(&data, &queries, &|_| true);
    eprintln!(
        "exact top-{K} of {nq} queries in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let base_rss = rss_bytes();

    // remdb: rows with vectors written in batches of 1,000 through the library, the HNSW
    // index loaded (empty) first so every batch is indexed as it commits.
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), Default::default()).expect("open");
    let tenant = db.create_tenant("wvec").expect("tenant");
    tenant
        .configure_vectors(VectorOptions {
            dimensions: Some(DIMS),
            metric: Metric::Cosine,
            connectivity: M,
            ef_construction: EF_CONSTRUCTION,
            ef_search: 64,
            precision,
            rescore,
        })
        .expect("configure");
    tenant.vector_index_stats().expect("load index");
    let t = Instant::now();
    let mut progress = Progress::new("remdb", n);
    for start in (0..n).step_by(1000) {
        let mut batch = Batch::new();
        for (i, v) in data.iter().enumerate().skip(start).take(1000) {
            batch = batch.insert(Resource {
                id: row_id(i),
                uri: Some(format!("doc://{}", i / 8)),
                chunk_index: (i % 8) as i64,
                content: format!("chunk {i}"),
                embedding: Some(v.clone()),
                ..Default::default()
            });
        }
        tenant.write(batch).expect("write");
        progress.set((start + 1000).min(n));
    }
    progress.finish();
    let remdb_build = t.elapsed().as_secs_f64();
    let (indexed, index_bytes) = tenant.vector_index_stats().expect("stats");
    assert_eq!(indexed, n, "every vector is indexed");
    let remdb_rss = rss_bytes();

    // Writers go on while the index is saved: the longest of their writes meanwhile is
    // how long the save holds them off.
    let ((), save_s, save_write) = with_writes(&tenant, "s", || {
        tenant.save_vectors().expect("save");
    });
    tenant.unload_vectors().expect("unload");
    let t = Instant::now();
    tenant.vector_index_stats().expect("reload");
    let load_s = t.elapsed().as_secs_f64();
    // Optional: the index files lost (a restore without them), rebuilt from the rows.
    let rebuild = if env("REMDB_VEC_REBUILD", 0) == 1 {
        tenant.unload_vectors().expect("unload");
        std::fs::remove_dir_all(dir.path().join("vectors").join("wvec")).expect("remove index");
        let ((rebuilt, _), seconds, longest) = with_writes(&tenant, "r", || {
            tenant.vector_index_stats().expect("rebuild")
        });
        assert_eq!(rebuilt, n, "every vector is indexed again");
        format!(
            ", rebuild from rows {seconds:.1}s (longest write meanwhile {:.0} ms)",
            longest * 1000.0
        )
    } else {
        String::new()
    };

    // Raw usearch at the same parameters (the vectors are unit length: inner product is
    // their cosine, as remdb serves it), built with 2 threads, without rescoring.
    let (raw, raw_build) = raw_index(&data, MetricKind::IP, precision);
    let raw_bytes = raw.memory_usage();
    let raw_cos =
        (env("REMDB_VEC_RAW_COS", 0) == 1).then(|| raw_index(&data, MetricKind::Cos, precision));

    let depth = VectorOptions {
        precision,
        rescore,
        ..Default::default()
    }
    .rescore_depth()
    .map_or(String::new(), |d| format!(", rescoring k x {d} from f32"));
    println!(
        "\n### W-VEC at {n} x {DIMS}, cosine, M={M}, ef_construction={EF_CONSTRUCTION}, {}{depth}\n",
        precision.name()
    );
    println!("| system | build s | vectors/s | index MiB | bytes/vector | notes |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| remdb | {remdb_build:.1} | {:.0} | {:.1} | {:.0} | rows + vectors written to RocksDB in batches of 1,000, indexed on commit (2 threads); RSS +{:.0} MiB; save {save_s:.2}s (longest write meanwhile {:.0} ms), reload {load_s:.2}s{rebuild} |",
        n as f64 / remdb_build,
        mib(index_bytes as u64),
        index_bytes as f64 / n as f64,
        mib(remdb_rss.saturating_sub(base_rss)),
        save_write * 1000.0,
    );
    println!(
        "| usearch | {raw_build:.1} | {:.0} | {:.1} | {:.0} | `Index::add` from 2 threads, inner product |",
        n as f64 / raw_build,
        mib(raw_bytes as u64),
        raw_bytes as f64 / n as f64,
    );
    if let Some((cos, build)) = &raw_cos {
        println!(
            "| usearch, cosine metric | {build:.1} | {:.0} | {:.1} | {:.0} | `Index::add` from 2 threads |",
            n as f64 / build,
            mib(cos.memory_usage() as u64),
            cos.memory_usage() as f64 / n as f64,
        );
    }

    println!(
        "\n| ef | system | recall@10 | p50 ms | p95 ms | p99 ms | QPS (2 threads) | p50 ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let rt = runtime();
    for ef in efs {
        raw.change_expansion_search(ef.max(K));
        let warm = queries.len().min(50);
        let mut found = vec![];
        let raw_times = common::sample(warm, queries.len(), |i| {
            found.push(raw_search(&raw, &queries[i]));
        });
        let raw_recall = recall(&found[warm..], &truth);
        let raw_qps = qps_2_threads(&queries, |_, q| {
            std::hint::black_box(raw_search(&raw, q));
        });

        let mut found = vec![];
        let sql_times = common::sample(warm, queries.len(), |i| {
            found.push(sql_search(&rt, &tenant, &queries[i], ef));
        });
        let sql_recall = recall(&found[warm..], &truth);
        let sql_qps = qps_2_threads(&queries, |rt, q| {
            std::hint::black_box(sql_search(rt, &tenant, q, ef));
        });
        let prepared = rt
            .block_on(tenant.prepare(&SQL.replace("{ef}", &ef.to_string())))
            .expect("prepare");
        let mut found = vec![];
        let prep_times = common::sample(warm, queries.len(), |i| {
            found.push(prepared_search(&rt, &prepared, &queries[i]));
        });
        let prep_recall = recall(&found[warm..], &truth);
        let prep_qps = qps_2_threads(&queries, |rt, q| {
            std::hint::black_box(prepared_search(rt, &prepared, q));
        });
        if let Some((cos, _)) = &raw_cos {
            cos.change_expansion_search(ef.max(K));
            let mut found = vec![];
            let times = common::sample(warm, queries.len(), |i| {
                found.push(raw_search(cos, &queries[i]));
            });
            let cos_recall = recall(&found[warm..], &truth);
            let qps = qps_2_threads(&queries, |_, q| {
                std::hint::black_box(raw_search(cos, q));
            });
            let c = percentiles(times);
            println!(
                "| {ef} | usearch, cosine metric | {cos_recall:.4} | {:.3} | {:.3} | {:.3} | {qps:.0} | - |",
                c.p50, c.p95, c.p99
            );
        }
        let (r, s) = (percentiles(raw_times), percentiles(sql_times));
        let p = percentiles(prep_times);
        println!(
            "| {ef} | usearch | {raw_recall:.4} | {:.3} | {:.3} | {:.3} | {raw_qps:.0} | 1.00 |",
            r.p50, r.p95, r.p99
        );
        println!(
            "| {ef} | remdb SQL | {sql_recall:.4} | {:.3} | {:.3} | {:.3} | {sql_qps:.0} | {:.2} |",
            s.p50,
            s.p95,
            s.p99,
            s.p50 / r.p50
        );
        println!(
            "| {ef} | remdb SQL, prepared | {prep_recall:.4} | {:.3} | {:.3} | {:.3} | {prep_qps:.0} | {:.2} |",
            p.p50,
            p.p95,
            p.p99,
            p.p50 / r.p50
        );
    }
}

/// A usearch index of `data` at the bench's parameters, built from 2 threads, and the
/// seconds the build took.
fn raw_index(data: &[Vec<f32>], metric: MetricKind, precision: Precision) -> (Index, f64) {
    let raw = Index::new(&IndexOptions {
        dimensions: DIMS,
        metric,
        quantization: match precision {
            Precision::F32 => ScalarKind::F32,
            Precision::F16 => ScalarKind::F16,
            Precision::I8 => ScalarKind::I8,
        },
        connectivity: M,
        expansion_add: EF_CONSTRUCTION,
        expansion_search: 64,
        multi: false,
    })
    .expect("usearch index");
    raw.reserve(data.len()).expect("reserve");
    let t = Instant::now();
    let per_thread = data.len().div_ceil(2);
    std::thread::scope(|s| {
        for (part, chunk) in data.chunks(per_thread).enumerate() {
            let raw = &raw;
            s.spawn(move || {
                for (i, v) in chunk.iter().enumerate() {
                    raw.add((part * per_thread + i) as u64, v)
                        .expect("usearch add");
                }
            });
        }
    });
    (raw, t.elapsed().as_secs_f64())
}

/// Runs `work` while another thread writes one small row (no vector) every 5 ms (a
/// light load, so that `work` keeps the cores); returns what `work` returned, its
/// seconds, and the longest of those writes in seconds.
fn with_writes<R: Send>(
    tenant: &Tenant,
    prefix: &str,
    work: impl FnOnce() -> R + Send,
) -> (R, f64, f64) {
    let running = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut longest = 0f64;
            let mut i = 0;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let t = Instant::now();
                tenant
                    .create_resource(Resource {
                        id: format!("{prefix}{i}"),
                        content: "written meanwhile".into(),
                        ..Default::default()
                    })
                    .expect("write meanwhile");
                longest = longest.max(t.elapsed().as_secs_f64());
                i += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            longest
        });
        let t = Instant::now();
        let out = work();
        let seconds = t.elapsed().as_secs_f64();
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        (out, seconds, writer.join().expect("writer"))
    })
}
