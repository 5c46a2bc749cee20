//! The bench entry point: `cargo bench --bench remdb -- <workload>...` generates the
//! workloads of ../shared/BENCHMARKS.md from a fixed seed, runs them through the library
//! and prints their tables as Markdown on standard output (progress goes to standard
//! error). With no workload named it prints this list.
//!
//! | workload | what it measures |
//! |---|---|
//! | `went` | W-ENT predicate queries P1-P5, indexes on and off; ingestion, 1 and 2 writers |
//! | `wvec` | W-VEC vector search through SQL and prepared SQL vs raw usearch, per ef |
//! | `whyb` | W-HYB filtered vector search per selectivity; W-ENT P3/P4 with JSON indexes |
//! | `graph` | W-GRAPH traversals and W-TIME windows over edges and moments |
//! | `tenants` | W-TEN: 1, 100, 1,000 tenants (column families): time, memory, reopen |
//! | `layouts` | tenants as RocksDB instances vs column families vs key prefixes |
//! | `soak` | writers and readers on several tenants for minutes; throughput, p99, invariants (not part of `all`) |
//! | `replay DIR TENANT FILE` | times given statements, prepared, on an existing database (the Python package's reference, `benches/python`) |
//! | `export DIR` | writes the W-ENT, W-VEC and W-HYB data as Arrow IPC files (for `benches/compare`) |
//! | `all` | went, wvec, whyb, graph, tenants and layouts, one after the other |
//!
//! Sizes come from environment variables, named in each workload's documentation
//! (`REMDB_BENCH_ROWS`, `REMDB_VEC_ROWS`, `REMDB_HYB_ROWS`, ...). Run it in the release
//! profile (`cargo bench` does); figures from a debug build are not comparable.

mod common;
mod export;
mod graph;
mod layouts;
mod replay;
mod soak;
mod tenants;
mod went;
mod whyb;
mod wvec;

const WORKLOADS: [(&str, fn()); 6] = [
    ("went", went::run),
    ("wvec", wvec::run),
    ("whyb", whyb::run),
    ("graph", graph::run),
    ("tenants", tenants::run),
    ("layouts", layouts::run),
];

fn usage() {
    eprintln!(
        "usage: cargo bench --bench remdb -- <workload>...\n\
         workloads: {}, soak, export DIR, replay DIR TENANT FILE, all",
        WORKLOADS.map(|(name, _)| name).join(", ")
    );
}

fn main() {
    // Child processes of the tenants and layouts workloads (a fresh process per size).
    if tenants::is_child() {
        tenants::child_main();
        return;
    }
    if layouts::is_child() {
        layouts::child_main();
        return;
    }
    // `cargo bench` passes `--bench` to a harness-less target; flags are not workloads.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.is_empty() {
        usage();
        return;
    }
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "all" => WORKLOADS.iter().for_each(|(_, run)| run()),
            "soak" => soak::run(),
            "replay" => {
                let (Some(dir), Some(tenant), Some(file)) = (args.next(), args.next(), args.next())
                else {
                    eprintln!("replay needs a database directory, a tenant and a statements file");
                    std::process::exit(2);
                };
                replay::run(
                    std::path::Path::new(&dir),
                    &tenant,
                    std::path::Path::new(&file),
                );
            }
            "export" => {
                let Some(dir) = args.next() else {
                    eprintln!("export needs a directory");
                    std::process::exit(2);
                };
                export::run(std::path::Path::new(&dir));
            }
            name => match WORKLOADS.iter().find(|(n, _)| *n == name) {
                Some((_, run)) => run(),
                None => {
                    eprintln!("unknown workload {name:?}");
                    usage();
                    std::process::exit(2);
                }
            },
        }
    }
}
