//! Tenant layouts (the seed's "instances vs column families vs prefixes"): the same rows
//! of T tenants kept three ways in RocksDB, straight through the `rocksdb` crate with the
//! options remdb uses (shared 256 MiB LRU block cache, a 256 MiB write-buffer manager
//! charged to it, 8 MiB memtables, partitioned bloom filters and indexes, LZ4):
//!
//! - `instances`: one RocksDB database (directory) per tenant, sharing cache and
//!   write-buffer manager;
//! - `column families`: one database, a column family per tenant (what remdb does);
//! - `prefixes`: one database, one column family, the tenant id as a key prefix.
//!
//! Per layout and tenant count: time to create the tenants, write throughput (1,000 rows
//! of ~150 bytes per tenant, one WriteBatch per tenant), RSS after the load, reopen time,
//! a point read and a scan of one tenant's rows (p50, warm, after reopen), dropping one
//! tenant, open files and disk. Each (layout, count) runs in a fresh child process.
//!
//! `cargo bench --bench remdb -- layouts`; `REMDB_LAYOUT_TENANTS` (default `1,100,1000`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DB, IteratorMode, Options, ReadOptions,
    WriteBatch, WriteBufferManager,
};

use crate::common::{SEED, percentiles, rss_bytes, sample, went_entity};

const CHILD: &str = "REMDB_LAYOUT_CHILD";
const ROWS: usize = 1000;
const LAYOUTS: [&str; 3] = ["instances", "column families", "prefixes"];

pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

pub fn run() {
    let counts: Vec<usize> = std::env::var("REMDB_LAYOUT_TENANTS")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 100, 1000]);
    println!(
        "\n### Tenant layouts in RocksDB: {ROWS} rows per tenant, remdb's options, one process per cell\n"
    );
    println!(
        "| layout | tenants | create ms | write rows/s | RSS after load MiB | reopen ms | point read p50 us | tenant scan p50 us | drop tenant ms | open files | disk MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let exe = std::env::current_exe().expect("current exe");
    for n in counts {
        for layout in LAYOUTS {
            let status = Command::new(&exe)
                .env(CHILD, format!("{layout}:{n}"))
                .status()
                .expect("child");
            assert!(status.success(), "child for {layout} x {n} failed");
        }
    }
}

pub fn child_main() {
    let spec = std::env::var(CHILD).expect("child spec");
    let (layout, n) = spec.rsplit_once(':').expect("layout:count");
    let n: usize = n.parse().expect("tenant count");
    let dir = tempfile::tempdir().expect("temp dir");
    measure(layout, n, dir.path());
}

/// The options of remdb's storage (src/storage.rs), for every layout.
struct Shared {
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl Shared {
    fn new() -> Self {
        let cache = Cache::new_lru_cache(256 << 20);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            256 << 20,
            false,
            cache.clone(),
        );
        Shared {
            cache,
            write_buffers,
        }
    }

    fn db_options(&self) -> Options {
        let mut o = Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        o.set_write_buffer_manager(&self.write_buffers);
        o.set_max_background_jobs(2);
        o.set_keep_log_file_num(4);
        o.set_max_total_wal_size(256 << 20);
        o
    }

    fn cf_options(&self) -> Options {
        let mut t = BlockBasedOptions::default();
        t.set_block_cache(&self.cache);
        t.set_bloom_filter(10.0, false);
        t.set_cache_index_and_filter_blocks(true);
        t.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        t.set_partition_filters(true);
        t.set_pin_top_level_index_and_filter(true);
        t.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut o = Options::default();
        o.set_block_based_table_factory(&t);
        o.set_write_buffer_size(8 << 20);
        o.set_compression_type(rocksdb::DBCompressionType::Lz4);
        o
    }

    /// Database options that also apply `cf_options` to the default column family.
    fn single_options(&self) -> Options {
        let mut o = self.cf_options();
        o.create_if_missing(true);
        o.set_write_buffer_manager(&self.write_buffers);
        o.set_max_background_jobs(2);
        o.set_keep_log_file_num(4);
        o.set_max_total_wal_size(256 << 20);
        o
    }
}

/// The tenants of one layout, open.
enum Store {
    Instances(Vec<DB>),
    Families(DB),
    Prefixes(DB),
}

fn tenant_name(t: usize) -> String {
    format!("t{t:04}")
}

fn row_key(j: usize) -> String {
    format!("ent-{j:07}")
}

impl Store {
    fn open(layout: &str, shared: &Shared, path: &Path, tenants: usize) -> Store {
        match layout {
            "instances" => Store::Instances(
                (0..tenants)
                    .map(|t| {
                        DB::open(&shared.single_options(), path.join(tenant_name(t)))
                            .expect("open instance")
                    })
                    .collect(),
            ),
            "column families" => {
                let descriptors = (0..tenants)
                    .map(|t| ColumnFamilyDescriptor::new(tenant_name(t), shared.cf_options()));
                Store::Families(
                    DB::open_cf_descriptors(&shared.db_options(), path, descriptors)
                        .expect("open families"),
                )
            }
            "prefixes" => {
                Store::Prefixes(DB::open(&shared.single_options(), path).expect("open prefixes"))
            }
            other => panic!("unknown layout {other}"),
        }
    }

    fn write(&self, t: usize, rows: &[(String, Vec<u8>)]) {
        let mut batch = WriteBatch::default();
        match self {
            Store::Instances(dbs) => {
                rows.iter().for_each(|(k, v)| batch.put(k, v));
                dbs[t].write(batch).expect("write");
            }
            Store::Families(db) => {
                let cf = db.cf_handle(&tenant_name(t)).expect("cf");
                rows.iter().for_each(|(k, v)| batch.put_cf(&cf, k, v));
                db.write(batch).expect("write");
            }
            Store::Prefixes(db) => {
                let prefix = tenant_name(t);
                rows.iter()
                    .for_each(|(k, v)| batch.put(format!("{prefix}/{k}"), v));
                db.write(batch).expect("write");
            }
        }
    }

    fn get(&self, t: usize, key: &str) -> Option<Vec<u8>> {
        match self {
            Store::Instances(dbs) => dbs[t].get(key),
            Store::Families(db) => db.get_cf(&db.cf_handle(&tenant_name(t)).expect("cf"), key),
            Store::Prefixes(db) => db.get(format!("{}/{key}", tenant_name(t))),
        }
        .expect("get")
    }

    /// Reads every row of tenant `t`; returns how many.
    fn scan(&self, t: usize) -> usize {
        match self {
            Store::Instances(dbs) => dbs[t].iterator(IteratorMode::Start).count(),
            Store::Families(db) => db
                .iterator_cf(
                    &db.cf_handle(&tenant_name(t)).expect("cf"),
                    IteratorMode::Start,
                )
                .count(),
            Store::Prefixes(db) => {
                // Bounded like remdb's own range scans: the iterator stops at the bound.
                let mut read = ReadOptions::default();
                read.set_iterate_lower_bound(format!("{}/", tenant_name(t)));
                read.set_iterate_upper_bound(format!("{}0", tenant_name(t)));
                db.iterator_opt(IteratorMode::Start, read).count()
            }
        }
    }

    /// Deletes tenant `t` and everything in it.
    fn drop_tenant(&mut self, t: usize, path: &Path) {
        match self {
            Store::Instances(dbs) => {
                let db = dbs.remove(t);
                drop(db);
                DB::destroy(&Options::default(), path.join(tenant_name(t))).expect("destroy");
            }
            Store::Families(db) => db.drop_cf(&tenant_name(t)).expect("drop cf"),
            Store::Prefixes(db) => {
                let mut batch = WriteBatch::default();
                batch.delete_range(
                    format!("{}/", tenant_name(t)),
                    format!("{}0", tenant_name(t)),
                );
                db.write(batch).expect("delete range");
                // What frees the space: compacting the range away.
                db.compact_range(
                    Some(format!("{}/", tenant_name(t))),
                    Some(format!("{}0", tenant_name(t))),
                );
            }
        }
    }

    fn flush(&self) {
        match self {
            Store::Instances(dbs) => dbs.iter().for_each(|db| db.flush().expect("flush")),
            Store::Families(db) => {
                for name in DB::list_cf(&Options::default(), db.path()).expect("list") {
                    if let Some(cf) = db.cf_handle(&name) {
                        db.flush_cf(&cf).expect("flush");
                    }
                }
            }
            Store::Prefixes(db) => db.flush().expect("flush"),
        }
    }
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn disk_bytes(path: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += disk_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn measure(layout: &str, tenants: usize, path: &Path) {
    let base_rss = rss_bytes();
    let shared = Shared::new();
    let t0 = Instant::now();
    let store = Store::open(layout, &shared, path, tenants);
    let create_ms = t0.elapsed().as_secs_f64() * 1e3;

    // The same rows in every tenant and layout: W-ENT entities, as text.
    let mut rng = StdRng::seed_from_u64(SEED);
    let rows: Vec<(String, Vec<u8>)> = (0..ROWS)
        .map(|j| {
            let e = went_entity(&mut rng, j);
            let value = format!(
                "{}|{}|{}|{}",
                e.entity_type, e.name, e.properties, e.created_at
            );
            (row_key(j), value.into_bytes())
        })
        .collect();
    let t0 = Instant::now();
    for t in 0..tenants {
        store.write(t, &rows);
    }
    let write_rate = (tenants * ROWS) as f64 / t0.elapsed().as_secs_f64();
    let loaded_rss = rss_bytes();
    store.flush();
    drop(store);

    let t0 = Instant::now();
    let mut store = Store::open(layout, &shared, path, tenants);
    let reopen_ms = t0.elapsed().as_secs_f64() * 1e3;

    let mut rng = StdRng::seed_from_u64(SEED + 9);
    let picks: Vec<(usize, usize)> = (0..2000)
        .map(|_| (rng.random_range(0..tenants), rng.random_range(0..ROWS)))
        .collect();
    let point = percentiles(sample(200, 2000, |i| {
        let (t, j) = picks[i];
        assert!(store.get(t, &row_key(j)).is_some(), "row missing");
    }));
    let scans = percentiles(sample(20, 200, |i| {
        assert_eq!(store.scan(picks[i].0), ROWS, "tenant scan");
    }));
    let files = open_files();
    let disk = disk_bytes(path);
    let t0 = Instant::now();
    store.drop_tenant(tenants / 2, path);
    let drop_ms = t0.elapsed().as_secs_f64() * 1e3;

    println!(
        "| {layout} | {tenants} | {create_ms:.1} | {write_rate:.0} | {:.1} | {reopen_ms:.1} | {:.1} | {:.1} | {drop_ms:.2} | {files} | {:.1} |",
        (loaded_rss.saturating_sub(base_rss)) as f64 / (1024.0 * 1024.0),
        point.p50 * 1e3,
        scans.p50 * 1e3,
        disk as f64 / (1024.0 * 1024.0),
    );
}
