//! remdb: an embedded SQL engine for REM memory (Resources, Entities, Moments), built on
//! Apache DataFusion over RocksDB.
//!
//! Layers, with dependencies pointing down only:
//!
//! | module      | layer    | promise |
//! |-------------|----------|---------|
//! | [`cli`]     | front end| `remdb` command line: `sql`, `shell`, `serve`, tenants, tokens, demo |
//! | [`shell`]   | front end| interactive SQL shell of one tenant (line editing, history, formats) |
//! | [`server`]  | front end| Arrow Flight SQL server; every request bound to one tenant |
//! | [`auth`]    | front end| users and tokens of the server, stored hashed, one tenant each |
//! | [`session`] | session  | `Db` -> `Tenant`: SQL returning Arrow batches, typed REM calls |
//! | [`query`]   | query    | DataFusion glue: table providers, pushdown, exec nodes |
//! | [`storage`] | storage  | RocksDB, one column family per tenant; no DataFusion |
//! | [`vector`]  | vector   | usearch HNSW wrapper with atomic save/load (a leaf, used by storage) |
//! | [`catalog`] | catalog  | the tables, columns, primary keys and built-in indexes, written once |
//! | [`error`]   | all      | one error type, converted at the query boundary |
//!
//! ```no_run
//! # async fn demo() -> remdb::Result<()> {
//! let db = remdb::Db::open("/tmp/remdb", Default::default())?;
//! let acme = db.create_tenant("acme")?;
//! acme.create_entity(remdb::Entity { entity_type: "person".into(), name: "Ada".into(), ..Default::default() })?;
//! let batches = acme.sql("SELECT name FROM entities WHERE type = 'person'").await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod catalog;
pub mod cli;
pub mod error;
pub mod progress;
pub mod query;
pub mod server;
pub mod session;
pub mod shell;
pub mod storage;
pub mod vector;

pub use error::{Error, Result};
pub use query::{QueryOptions, VectorStrategy};
pub use session::{
    Batch, ClientLimits, Db, DbOptions, Param, PlanCacheStats, Policy, PreparedStatement,
    QueryResult, StatementResult, Tenant,
};
pub use storage::{
    Direction, Edge, Entity, Found, Hop, IndexDef, IndexKind, MAX_TRAVERSE_DEPTH, Moment, Resource,
    Row, StorageOptions, Table,
};
pub use vector::{MAX_SEARCH_K, Metric, Precision, VectorOptions};
