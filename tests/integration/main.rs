//! The one integration-test binary (DataFusion is linked once). Each module drives remdb
//! the way a user does: the sqllogictest files, the library API, the `remdb` binary.

mod api;
mod cli;
mod concurrency;
mod crash;
mod differential;
mod execution;
mod faults;
mod fuzz;
mod graph;
mod hybrid;
mod isolation;
mod limits;
mod prepared;
mod server;
mod shell;
mod slt;
mod vectors;

use remdb::{Db, Tenant};

/// A fresh database in a temporary directory with one tenant.
pub fn fresh(tenant: &str) -> (tempfile::TempDir, Db, Tenant) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), Default::default()).expect("open db");
    let t = db.create_tenant(tenant).expect("create tenant");
    (dir, db, t)
}

/// Runs SQL and renders the result as lines (`|`-separated cells), for assertions.
pub async fn rows(t: &Tenant, sql: &str) -> Vec<String> {
    let batches = t.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    slt::render(&batches)
        .into_iter()
        .map(|r| r.join("|"))
        .collect()
}
