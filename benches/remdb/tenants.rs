//! W-TEN (../shared/BENCHMARKS.md): what one column family per tenant costs at 1, 100 and
//! 1,000 tenants with 1,000 entities each: creating the tenants, writing their rows,
//! process memory (RSS), reopening the database, and the first query of a tenant after
//! reopen.
//!
//! `cargo bench --bench remdb -- tenants` prints a Markdown table. Each tenant count runs in a
//! fresh child process so that its memory figures start from zero.

use std::process::Command;
use std::time::Instant;

use remdb::{Db, DbOptions};

use crate::common::{load_entities, percentiles, rss_bytes, sample};

const CHILD: &str = "REMDB_TENANTS_CHILD";

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn child(tenants: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let base_rss = rss_bytes();

    let db = Db::open(dir.path(), DbOptions::default()).expect("open");
    let t = Instant::now();
    for i in 0..tenants {
        db.create_tenant(&format!("tenant-{i:04}")).expect("create");
    }
    let create_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for i in 0..tenants {
        let tenant = db.tenant(&format!("tenant-{i:04}")).expect("tenant");
        load_entities(&tenant, 1000);
    }
    let write_s = t.elapsed().as_secs_f64();
    let rows = tenants * 1000;
    let loaded_rss = rss_bytes();
    let (memtables, cache) = db.storage().memory_usage().expect("memory");
    drop(db);

    let t = Instant::now();
    let db = Db::open(dir.path(), DbOptions::default()).expect("reopen");
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    let tenant = db
        .tenant(&format!("tenant-{:04}", tenants / 2))
        .expect("tenant");
    let batches = rt
        .block_on(tenant.sql("SELECT count(*) FROM entities WHERE type = 'person'"))
        .expect("query");
    std::hint::black_box(batches);
    let first_query_ms = t.elapsed().as_secs_f64() * 1e3;
    // Warm: a query on a different tenant each time (session lookup included).
    let warm = percentiles(sample(tenants.min(50), 200, |i| {
        let tenant = db
            .tenant(&format!("tenant-{:04}", (i * 7919) % tenants))
            .expect("tenant");
        let batches = rt
            .block_on(tenant.sql("SELECT count(*) FROM entities WHERE type = 'person'"))
            .expect("query");
        std::hint::black_box(batches);
    }));
    let open_rss = rss_bytes();
    let disk: u64 = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();

    println!(
        "| {tenants} | {create_s:.2} | {:.0} | {:.1} | {:.3} | {:.1} | {:.1} | {open_ms:.0} | {first_query_ms:.1} | {:.3} | {:.1} | {:.1} |",
        rows as f64 / write_s,
        mib(loaded_rss.saturating_sub(base_rss)),
        mib(loaded_rss.saturating_sub(base_rss)) / tenants as f64,
        mib(memtables),
        mib(cache),
        warm.p50,
        mib(open_rss.saturating_sub(base_rss)),
        mib(disk),
    );
}

/// Whether this process is a child started by [`run`] for one tenant count.
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

pub fn child_main() {
    let n = std::env::var(CHILD)
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("tenant count");
    child(n);
}

pub fn run() {
    let counts: Vec<usize> = std::env::var("REMDB_TENANT_COUNTS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 100, 1000]);
    println!("\n### Tenants: one column family each, 1,000 entities per tenant\n");
    println!(
        "| tenants | create s | write rows/s | RSS after load MiB | RSS per tenant MiB | memtables MiB | block cache MiB | reopen ms | first query ms | warm query p50 ms | RSS after reopen MiB | disk MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("current exe");
    for n in counts {
        let status = Command::new(&exe)
            .env(CHILD, n.to_string())
            .status()
            .expect("child");
        assert!(status.success(), "child for {n} tenants failed");
    }
}
