//! Shared helpers of the workloads: deterministic data, latency percentiles, progress.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remdb::{Batch, Entity, Tenant};

pub const SEED: u64 = 0x5EED_2026;

/// 2022-01-01T00:00:00Z and 2026-01-01T00:00:00Z in microseconds.
const FROM: i64 = 1_640_995_200_000_000;
const TO: i64 = 1_767_225_600_000_000;

/// The W-ENT entities of ../shared/BENCHMARKS.md: row `i` is the same in every run.
pub fn went_entity(rng: &mut StdRng, i: usize) -> Entity {
    let roll = rng.random_range(0..100);
    let ty = match roll {
        0..30 => "person",
        30..50 => "project",
        50..60 => "organization",
        60..85 => "document",
        _ => "concept",
    };
    let team = ["platform", "infra", "ml", "product", "sales"][rng.random_range(0..5)];
    let status = if rng.random_range(0..100) < 70 {
        "active"
    } else {
        "archived"
    };
    let level = rng.random_range(1..=10);
    let role = match rng.random_range(0..100) {
        0..40 => "engineer",
        40..60 => "manager",
        60..80 => "designer",
        _ => "researcher",
    };
    let properties = if ty == "person" {
        format!(r#"{{"role":"{role}","team":"{team}","status":"{status}","level":{level}}}"#)
    } else {
        format!(r#"{{"team":"{team}","status":"{status}","level":{level}}}"#)
    };
    Entity {
        id: format!("ent-{i:07}"),
        entity_type: ty.into(),
        name: format!("{ty} {i}"),
        aliases: vec![],
        properties,
        created_at: rng.random_range(FROM..TO),
        updated_at: 0,
    }
}

/// Loads `n` W-ENT entities in batches of 1,000.
pub fn load_entities(tenant: &Tenant, n: usize) {
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut progress = Progress::new("entities", n);
    for start in (0..n).step_by(1000) {
        let mut batch = Batch::new();
        for i in start..(start + 1000).min(n) {
            batch = batch.insert(went_entity(&mut rng, i));
        }
        tenant.write(batch).expect("load batch");
        progress.set((start + 1000).min(n));
    }
    progress.finish();
}

/// Progress of a long load or build on standard error: remdb's bar on a terminal
/// (`remdb::progress`), one line per 10% otherwise (a log file).
pub struct Progress {
    label: &'static str,
    total: usize,
    done: usize,
    started: Instant,
    bar: Option<remdb::progress::Progress>,
    last_tenth: usize,
    /// Small loads (a tenant of 1,000 rows) show nothing.
    quiet: bool,
}

impl Progress {
    pub fn new(label: &'static str, total: usize) -> Self {
        remdb::progress::show_bars();
        let bar = std::io::stderr()
            .is_terminal()
            .then(|| remdb::progress::Progress::start(label, Some(total as u64)));
        Progress {
            label,
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            bar,
            last_tenth: 0,
            quiet: (total as u64) < remdb::progress::MIN_SHOWN,
        }
    }

    pub fn set(&mut self, done: usize) {
        self.done = done.min(self.total);
        if let Some(bar) = &mut self.bar {
            bar.set(self.done as u64);
            return;
        }
        let tenth = self.done * 10 / self.total;
        if !self.quiet && tenth > self.last_tenth {
            self.last_tenth = tenth;
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            eprintln!(
                "{}: {}/{} ({:.0}/s, {:.1}s)",
                self.label,
                self.done,
                self.total,
                self.done as f64 / secs,
                secs
            );
        }
    }

    /// Clears the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish();
        }
    }
}

/// A number (or other value) from the environment, or `default`.
pub fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latency percentiles of a sample, in milliseconds.
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

pub fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1e3
    };
    Percentiles {
        p50: at(0.50),
        p95: at(0.95),
        p99: at(0.99),
    }
}

/// Plans one query (SQL text to physical plan) and runs it, timing each part.
pub async fn plan_and_run(tenant: &Tenant, sql: &str) -> (Duration, Duration, usize) {
    let ctx = tenant.context();
    let t0 = Instant::now();
    let plan = ctx
        .sql(sql)
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("physical plan");
    let planned = t0.elapsed();
    let t1 = Instant::now();
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
        .await
        .expect("run");
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    (planned, t1.elapsed(), rows)
}

/// Times `f` `n` times after `warmup` untimed calls.
pub fn sample(warmup: usize, n: usize, mut f: impl FnMut(usize)) -> Vec<Duration> {
    for i in 0..warmup {
        f(i);
    }
    (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed()
        })
        .collect()
}

/// Resident set size of this process, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// W-VEC / W-HYB vectors: 768 dimensions (nomic-embed-text-v1.5 size).
pub const DIMS: usize = 768;
const CLUSTERS: usize = 1000;
/// Recall is measured at 10.
pub const K: usize = 10;
/// Spread of a vector around its cluster centre, per coordinate, before normalizing.
const NOISE: f32 = 0.03;

pub fn normal(rng: &mut StdRng) -> f32 {
    // Box-Muller: two uniforms give one standard normal.
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
}

pub fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `n` vectors and `q` held-out queries from the same 1,000 Gaussian clusters.
pub fn generate_vectors(n: usize, q: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let mut rng = StdRng::seed_from_u64(SEED);
    let centres: Vec<Vec<f32>> = (0..CLUSTERS)
        .map(|_| normalized((0..DIMS).map(|_| normal(&mut rng)).collect()))
        .collect();
    let sample = |rng: &mut StdRng| {
        let c = &centres[rng.random_range(0..CLUSTERS)];
        normalized(c.iter().map(|x| x + NOISE * normal(rng)).collect())
    };
    let data = (0..n).map(|_| sample(&mut rng)).collect();
    let queries = (0..q).map(|_| sample(&mut rng)).collect();
    (data, queries)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent sums, so that the compiler can use SIMD registers.
    let mut lanes = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// Exact top-k (by cosine, the vectors being unit length) of every query among the rows
/// `keep` accepts, on 2 threads.
pub fn ground_truth(
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    keep: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<Vec<u64>> {
    let half = queries.len().div_ceil(2);
    std::thread::scope(|s| {
        let parts: Vec<_> = queries
            .chunks(half)
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|q| {
                            let mut best: Vec<(f32, u64)> = Vec::with_capacity(K + 1);
                            for (i, v) in data.iter().enumerate() {
                                if !keep(i) {
                                    continue;
                                }
                                let d = dot(q, v);
                                if best.len() < K || d > best[K - 1].0 {
                                    let at = best.partition_point(|(x, _)| *x >= d);
                                    best.insert(at, (d, i as u64));
                                    best.truncate(K);
                                }
                            }
                            best.into_iter().map(|(_, i)| i).collect::<Vec<u64>>()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("ground truth worker"))
            .collect()
    })
}

pub fn recall(found: &[Vec<u64>], truth: &[Vec<u64>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|x| t.contains(x)).count())
        .sum();
    let total: usize = truth.iter().map(|t| t.len()).sum();
    hits as f64 / total.max(1) as f64
}
