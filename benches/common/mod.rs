//! Shared helpers of the bench binaries: deterministic data and latency percentiles.

#![allow(dead_code)]

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
    for start in (0..n).step_by(1000) {
        let mut batch = Batch::new();
        for i in start..(start + 1000).min(n) {
            batch = batch.insert(went_entity(&mut rng, i));
        }
        tenant.write(batch).expect("load batch");
    }
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
