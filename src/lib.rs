//! remdb: an embedded SQL engine for REM memory (Resources, Entities, Moments), built on
//! Apache DataFusion over RocksDB.
//!
//! Layers, with dependencies pointing down only:
//!
//! | module      | layer    | promise |
//! |-------------|----------|---------|
//! | [`cli`]     | front end| `remdb` command line: `sql -c/-f`, tenants, demo data |
//! | [`session`] | session  | `Db` -> `Tenant`: SQL returning Arrow batches, typed REM calls |
//! | [`query`]   | query    | DataFusion glue: table providers, pushdown, exec nodes |
//! | [`storage`] | storage  | RocksDB, one column family per tenant; no DataFusion |
//! | [`vector`]  | vector   | usearch HNSW wrapper with atomic save/load (a leaf, used by storage) |
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

pub mod cli;
pub mod error;
pub mod query;
pub mod session;
pub mod storage;
pub mod vector;

pub use error::{Error, Result};
pub use query::QueryOptions;
pub use session::{Batch, Db, DbOptions, Param, StatementResult, Tenant};
pub use storage::{
    Direction, Edge, Entity, Found, Hop, IndexDef, IndexKind, MAX_TRAVERSE_DEPTH, Moment, Resource,
    Row, StorageOptions, Table,
};
pub use vector::{Metric, Precision, VectorOptions};
