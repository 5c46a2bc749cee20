//! Storage layer: RocksDB with one column family per tenant. Knows nothing of DataFusion.
//!
//! [`Storage`] owns the RocksDB instance of one database directory and the tenant
//! registry (the set of column families). A [`TenantStore`] is the only way to read or
//! write rows, and it is bound to exactly one column family: no method takes a tenant
//! name, so no code path below the session layer can build a key of another tenant.
//!
//! Writes ([`TenantStore::apply`]) are all-or-nothing: every row of a batch is validated,
//! then the rows, their primary-key and index entries and the row-id counter land in one
//! `WriteBatch`. Writes of one tenant are serialized by a per-tenant lock, which makes
//! the uniqueness checks and row-id allocation race-free; reads never take it.
//!
//! The parts, each over the tenant's [`family::Family`] (the only door to RocksDB below
//! the registry) and owning its piece of the tenant's state: `write` (the write path
//! and the write lock), `scan` and `walk` (cursors, key walks, ordered walks),
//! `json_index` (user indexes, row sets), `vectors` (the vector index's lifecycle),
//! `candidates` (the candidate cache of filtered searches), `graph` (edges, traversal,
//! lookup); `keys` and `rows` encode keys and rows; the tables themselves are in the
//! [`crate::catalog`].
//!
//! Durability: with `sync = false` (the default) a committed write survives a crash of
//! the process (it is in the write-ahead log, handed to the OS) but the last writes can
//! be lost on power loss; with `sync = true` every commit is fsynced before it returns.

pub mod candidates;
mod family;
pub mod graph;
pub mod json_index;
pub mod keys;
pub mod rows;
mod scan;
#[cfg(test)]
mod tests;
mod vectors;
mod walk;
mod write;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocksdb::{BlockBasedOptions, Cache, ColumnFamilyDescriptor, Options, WriteBufferManager};

use crate::error::{Error, Result};
pub use candidates::{MAX_KEPT_SET_VECTORS, RowBitmap};
pub use graph::{Direction, Found, Hop, MAX_TRAVERSE_DEPTH};
pub use json_index::{
    IndexDef, IndexKind, KeyRange, KeySet, RowSet, UserIndexRef, ValueRange, index_column,
    index_value, json_column, text_column, timestamp_column,
};
pub use keys::IndexValue;
pub use rows::{
    Edge, Entity, IndexId, KeyPart, Micros, Moment, Resource, Row, Table, normalize_name,
    now_micros,
};
pub use scan::RowCursor;
pub use write::Writer;

use family::{Family, FamilyName, Rocks};
use keys::decode_row_id;

const TENANT_CF_PREFIX: &str = "t:";
const MAX_TENANT_ID_BYTES: usize = 64;

/// Tunables of the storage engine; the defaults suit a laptop-sized embedded database.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Block cache shared by all tenants.
    pub block_cache_bytes: usize,
    /// Bound on memtable memory over all tenants (a shared write-buffer manager).
    pub total_write_buffer_bytes: usize,
    /// Memtable size of one tenant before it is flushed.
    pub tenant_write_buffer_bytes: usize,
    /// fsync the write-ahead log on every commit (survives power loss, slower).
    pub sync: bool,
    /// Bound on the candidate sets of filtered vector searches kept in memory, over all
    /// tenants (see [`candidates`]).
    pub candidate_cache_bytes: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            block_cache_bytes: 256 << 20,
            total_write_buffer_bytes: 256 << 20,
            tenant_write_buffer_bytes: 8 << 20,
            sync: false,
            candidate_cache_bytes: 256 << 20,
        }
    }
}

/// Checks a tenant id: 1..=64 bytes, no `/`, no `..`, no NUL or control characters.
/// Creates the database directory, if missing, readable by its owner only (0700 on
/// Unix): RocksDB writes its files with the process's umask, usually world-readable,
/// and the directory is what keeps other users out of them (as `credentials.json` is
/// 0600). A directory that exists keeps its mode; one that others can read is reported.
fn create_private_dir(path: &Path) -> Result<()> {
    if !path.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(path)?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                "database directory {} is readable by other users (mode {:o}): \
                 chmod 700 it to keep its files private",
                path.display(),
                mode & 0o777
            );
        }
    }
    Ok(())
}

pub fn validate_tenant_id(id: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("tenant id {id:?} {why}")));
    if id.is_empty() {
        return bad("is empty");
    }
    if id.len() > MAX_TENANT_ID_BYTES {
        return bad(&format!("is longer than {MAX_TENANT_ID_BYTES} bytes"));
    }
    if id.contains('/') || id.contains('\\') {
        return bad("contains a path separator");
    }
    if id.contains("..") {
        return bad("contains '..'");
    }
    // "." would name the directory of every tenant's vector index files.
    if id == "." {
        return bad("is '.'");
    }
    if id.chars().any(|c| c.is_control()) {
        return bad("contains a NUL or control character");
    }
    if id.trim() != id {
        return bad("has leading or trailing whitespace");
    }
    Ok(())
}

/// Per-tenant state shared by every handle on the tenant.
#[derive(Debug)]
/// Each part belongs to the module that uses it.
struct TenantState {
    family: Arc<FamilyName>,
    /// Serializes writers; guards the counters (see `write.rs`).
    write_lock: Mutex<write::WriterState>,
    /// The HNSW index of `resources.embedding` and its files (see `vectors.rs`).
    vectors: vectors::VectorState,
    /// The user-declared indexes (see `json_index.rs`).
    user_indexes: json_index::Definitions,
    /// Candidate sets of filtered vector searches (see [`candidates`]).
    candidates: candidates::CandidateState,
}

/// What [`TenantStore::resolve_at_most`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidates {
    /// The path names no index: every row.
    All,
    /// At most the cap: sorted, distinct row ids. A `superset` holds every row of the
    /// path and maybe others (an AND whose larger parts were not read): whoever uses it
    /// checks the filter on the rows.
    Ids { ids: Vec<u64>, superset: bool },
    /// More rows than the cap.
    Many,
    /// Every row of the path, from memory (read by an earlier search, no write since).
    Set(Arc<candidates::RowBitmap>),
}

/// The RocksDB instance of one database directory and its tenants.
pub struct Storage {
    db: Arc<Rocks>,
    path: PathBuf,
    options: StorageOptions,
    cf_options: Options,
    tenants: RwLock<HashMap<String, Arc<TenantState>>>,
    candidate_budget: Arc<candidates::CandidateBudget>,
    // Kept alive for the lifetime of the DB: shared by all column families.
    _cache: Cache,
    _write_buffers: WriteBufferManager,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("path", &self.path).finish()
    }
}

impl Storage {
    /// Opens (creating if needed) the database directory at `path`.
    pub fn open(path: impl AsRef<Path>, options: StorageOptions) -> Result<Storage> {
        let path = path.as_ref().to_path_buf();
        create_private_dir(&path)?;
        let cache = Cache::new_lru_cache(options.block_cache_bytes);
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(
            options.total_write_buffer_bytes,
            false,
            cache.clone(),
        );

        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.set_write_buffer_manager(&write_buffers);
        db_options.set_max_background_jobs(2);
        db_options.set_keep_log_file_num(4);
        // With many column families the WAL can only be recycled once every family that
        // has data in it is flushed; bound it so that a cold tenant does not pin it.
        db_options.set_max_total_wal_size(options.total_write_buffer_bytes as u64);

        let mut table_options = BlockBasedOptions::default();
        table_options.set_block_cache(&cache);
        table_options.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the bounded cache, partitioned, with the top
        // level (and L0's) pinned. Whole, in the cache, they made reads slow down with
        // the size of the column family (a 1-hop walk beside 1M moments was ten times
        // slower than beside 1k; docs/FINDINGS.md); partitioned, reads stay flat. Outside
        // the cache they would be as fast, but hold memory that grows with the data.
        table_options.set_cache_index_and_filter_blocks(true);
        table_options.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table_options.set_partition_filters(true);
        table_options.set_pin_top_level_index_and_filter(true);
        table_options.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let mut cf_options = Options::default();
        cf_options.set_block_based_table_factory(&table_options);
        cf_options.set_write_buffer_size(options.tenant_write_buffer_bytes);
        cf_options.set_compression_type(rocksdb::DBCompressionType::Lz4);

        let existing = if path.join("CURRENT").exists() {
            Rocks::list_cf(&db_options, &path)?
        } else {
            vec![]
        };
        let descriptors = existing
            .iter()
            .filter(|name| name.starts_with(TENANT_CF_PREFIX))
            .map(|name| ColumnFamilyDescriptor::new(name, cf_options.clone()));
        let db = Rocks::open_cf_descriptors(&db_options, &path, descriptors)?;

        let candidate_budget = Arc::new(candidates::CandidateBudget::new(
            options.candidate_cache_bytes,
        ));
        let tenants = existing
            .iter()
            .filter_map(|name| name.strip_prefix(TENANT_CF_PREFIX))
            .map(|id| {
                let state = tenant_state(&path, id, &candidate_budget);
                (id.to_string(), Arc::new(state))
            })
            .collect();
        tracing::debug!(path = %path.display(), "opened database");
        Ok(Storage {
            db: Arc::new(db),
            path,
            options,
            cf_options,
            tenants: RwLock::new(tenants),
            candidate_budget,
            _cache: cache,
            _write_buffers: write_buffers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tenants of the database in `path`, read from its manifest without opening
    /// it (so it works while another process holds the database).
    pub fn tenants_at(path: impl AsRef<Path>) -> Result<Vec<String>> {
        let path = path.as_ref();
        if !path.join("CURRENT").exists() {
            return Err(Error::NotFound(format!(
                "no remdb database in {}",
                path.display()
            )));
        }
        let mut ids: Vec<String> = Rocks::list_cf(&Options::default(), path)?
            .into_iter()
            .filter_map(|name| name.strip_prefix(TENANT_CF_PREFIX).map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Creates a tenant (an empty column family).
    pub fn create_tenant(&self, id: &str) -> Result<()> {
        validate_tenant_id(id)?;
        let mut tenants = self.tenants.write();
        if tenants.contains_key(id) {
            return Err(Error::AlreadyExists(format!("tenant '{id}'")));
        }
        let state = tenant_state(&self.path, id, &self.candidate_budget);
        // A leftover index directory of an earlier tenant of this name is not ours.
        let _ = std::fs::remove_dir_all(&state.vectors.dir);
        self.db.create_cf(&state.family.name, &self.cf_options)?;
        tenants.insert(id.to_string(), Arc::new(state));
        Ok(())
    }

    /// Drops a tenant and all of its data.
    pub fn drop_tenant(&self, id: &str) -> Result<()> {
        validate_tenant_id(id)?;
        let not_found = || Error::NotFound(format!("tenant '{id}'"));
        let first = self.tenants.read().get(id).cloned().ok_or_else(not_found)?;
        // A save or load of the tenant's vector index ends before its directory goes.
        let _saving = first.vectors.saving.lock();
        let mut tenants = self.tenants.write();
        // Another drop may have come first (and the name been created again since).
        let Some(state) = tenants.get(id).filter(|s| Arc::ptr_eq(s, &first)).cloned() else {
            return Err(not_found());
        };
        // Wait for in-flight writes of the tenant before the family disappears.
        let _writer = state.write_lock.lock();
        // Before the family goes: a handle that finds a family and then sees the flag
        // clear found this tenant's (see `TenantStore::cf`).
        state
            .family
            .dropped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.db.drop_cf(&state.family.name)?;
        tenants.remove(id);
        state.vectors.forget();
        let _ = std::fs::remove_dir_all(&state.vectors.dir);
        Ok(())
    }

    /// Tenant ids, sorted.
    pub fn list_tenants(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.tenants.read().keys().cloned().collect();
        ids.sort();
        ids
    }

    pub fn has_tenant(&self, id: &str) -> bool {
        self.tenants.read().contains_key(id)
    }

    /// The handle through which all reads and writes of one tenant go.
    pub fn tenant(&self, id: &str) -> Result<TenantStore> {
        validate_tenant_id(id)?;
        let state = self
            .tenants
            .read()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("tenant '{id}' (create it first)")))?;
        Ok(self.store(state))
    }

    /// Bytes RocksDB holds in memtables over all tenants and in the shared block cache
    /// (which is also charged for the memtables, through the write-buffer manager).
    pub fn memory_usage(&self) -> Result<(u64, u64)> {
        let mut memtables = 0;
        for state in self.tenants.read().values() {
            if let Some(cf) = self.db.cf_handle(&state.family.name) {
                memtables += self
                    .db
                    .property_int_value_cf(&cf, "rocksdb.cur-size-all-mem-tables")?
                    .unwrap_or(0);
            }
        }
        Ok((memtables, self._cache.get_usage() as u64))
    }

    /// Saves every loaded vector index (so that the next open replays no log).
    pub fn checkpoint(&self) -> Result<()> {
        let states: Vec<Arc<TenantState>> = self.tenants.read().values().cloned().collect();
        for state in states {
            self.store(state).save_vectors()?;
        }
        Ok(())
    }

    /// Flushes every tenant's memtable to disk (tests and benchmarks).
    pub fn flush(&self) -> Result<()> {
        for state in self.tenants.read().values() {
            if let Some(cf) = self.db.cf_handle(&state.family.name) {
                self.db.flush_cf(&cf)?;
            }
        }
        Ok(())
    }

    /// Flushes and fully compacts every tenant's column family, waiting until done: after
    /// a bulk load, range reads then touch one sorted run per level instead of every
    /// freshly flushed file (benchmarks measure the steady state this way).
    pub fn compact(&self) -> Result<()> {
        self.flush()?;
        let names: Vec<String> = self
            .tenants
            .read()
            .values()
            .map(|s| s.family.name.clone())
            .collect();
        for name in names {
            if let Some(cf) = self.db.cf_handle(&name) {
                self.db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
            }
        }
        Ok(())
    }
}

impl Storage {
    fn store(&self, state: Arc<TenantState>) -> TenantStore {
        TenantStore {
            family: Family::new(
                Arc::clone(&self.db),
                Arc::clone(&state.family),
                self.options.sync,
            ),
            state,
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Err(e) = self.checkpoint() {
            tracing::warn!(error = %e, "could not save vector indexes on close; they will be caught up on open");
        }
    }
}

fn tenant_state(
    db_path: &Path,
    id: &str,
    candidate_budget: &Arc<candidates::CandidateBudget>,
) -> TenantState {
    TenantState {
        family: Arc::new(FamilyName::new(id, format!("{TENANT_CF_PREFIX}{id}"))),
        write_lock: Mutex::new(write::WriterState::default()),
        // Tenant ids are validated (no separators, no `..`): safe as a directory name.
        vectors: vectors::VectorState::new(db_path.join("vectors").join(id)),
        user_indexes: json_index::Definitions::default(),
        candidates: candidates::CandidateState::new(Arc::clone(candidate_budget)),
    }
}

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Create a row; fails if its primary key exists.
    Insert(Row),
    /// Replace the row with the same primary key; fails if there is none.
    Update(Row),
    /// Replace the row stored under `row_id` (its primary key may change).
    Replace { row_id: u64, row: Row },
    /// Delete the row with this primary key, if any.
    Delete { table: Table, key: Vec<KeyPart> },
    /// Delete the row stored under `row_id`, if any.
    DeleteAt { table: Table, row_id: u64 },
}

/// How to find the rows of a scan.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessPath {
    /// Every row of the table, in row-id order.
    FullScan,
    /// Rows whose primary key starts with one of `prefixes` (point and IN-list lookups by
    /// id; edges by `src` or `(src, edge_type)`).
    PrimaryPrefix { prefixes: Vec<Vec<KeyPart>> },
    /// Rows with an entry in `index` that starts with one of `prefixes`.
    IndexPrefix {
        index: IndexId,
        prefixes: Vec<Vec<KeyPart>>,
    },
    /// Rows whose entry in `index` lies between the bounds, in index order (from the
    /// upper end when `descending`). A scan walks the index lazily, so a limit stops it.
    IndexRange {
        index: IndexId,
        lower: Bound<Vec<KeyPart>>,
        upper: Bound<Vec<KeyPart>>,
        descending: bool,
    },
    /// Rows in a set built from one or more indexes (AND/OR), in row-id order.
    RowSet(RowSet),
    /// The `k` resources whose embeddings are nearest to `query` (HNSW), nearest first.
    Nearest {
        query: Vec<f32>,
        k: usize,
        ef: Option<usize>,
    },
    /// The rows of `within` in the order of the user value index `index` (from the top
    /// when `descending`): `ORDER BY column LIMIT n` over an indexed text column. The scan
    /// walks the index and skips rows not in `within`'s set (held in memory), so a limit
    /// stops it after about `n / selectivity` entries. When the walk has visited more
    /// entries than reading and sorting the rest of the set would cost, it reads and
    /// sorts the rest instead, so a small `within` never walks the whole index. `range`
    /// bounds the walk (`name > 'k'`: a page after the last name seen); the scan still
    /// checks the filters it came from.
    IndexOrder {
        index: IndexDef,
        descending: bool,
        within: Box<AccessPath>,
        range: ValueRange,
    },
}

impl AccessPath {
    /// True when the path reads the table without an index.
    pub fn is_full_scan(&self) -> bool {
        matches!(self, AccessPath::FullScan)
    }
}

/// A tenant-bound handle: every read and write of the tenant's rows.
#[derive(Clone)]
pub struct TenantStore {
    family: Family,
    state: Arc<TenantState>,
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore")
            .field("tenant", &self.family.tenant())
            .finish()
    }
}

impl TenantStore {
    pub fn tenant_id(&self) -> &str {
        self.family.tenant()
    }

    /// The tenant's column family, bound for one piece of work.
    fn family(&self) -> Result<family::Handle<'_>> {
        self.family.handle()
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.family()?.get(key)
    }

    fn row_id_of(&self, table: Table, key: &[KeyPart]) -> Result<Option<u64>> {
        match self.get_raw(&keys::primary_key(table, key))? {
            None => Ok(None),
            Some(v) => decode_row_id(&v).map(Some),
        }
    }

    /// The row with this primary key, with its row id.
    pub fn get(&self, table: Table, key: &[KeyPart]) -> Result<Option<(u64, Row)>> {
        let Some(row_id) = self.row_id_of(table, key)? else {
            return Ok(None);
        };
        Ok(self.get_row(table, row_id)?.map(|row| (row_id, row)))
    }

    /// The row stored under `row_id`.
    pub fn get_row(&self, table: Table, row_id: u64) -> Result<Option<Row>> {
        match self.get_raw(&keys::row_key(table, row_id))? {
            None => Ok(None),
            Some(bytes) => Row::decode(table, &bytes).map(Some),
        }
    }

    fn meta_u64(&self, name: &str) -> Result<Option<u64>> {
        match self.get_raw(&keys::meta_key(name))? {
            Some(v) => decode_row_id(&v).map(Some),
            None => Ok(None),
        }
    }
}
