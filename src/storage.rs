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
//! Durability: with `sync = false` (the default) a committed write survives a crash of
//! the process (it is in the write-ahead log, handed to the OS) but the last writes can
//! be lost on power loss; with `sync = true` every commit is fsynced before it returns.

pub mod candidates;
pub mod graph;
pub mod json_index;
pub mod keys;
pub mod rows;

use std::collections::{HashMap, HashSet};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamilyDescriptor, DBWithThreadMode, IteratorMode,
    MultiThreaded, Options, ReadOptions, WriteBatch, WriteBufferManager, WriteOptions,
};

use crate::error::{Error, Result};
use crate::vector::{VectorIndex, VectorOptions, decode_vector, encode_vector};
pub use candidates::{MAX_KEPT_SET_VECTORS, RowBitmap};
pub use graph::{Direction, Found, Hop, MAX_TRAVERSE_DEPTH};
pub use json_index::{
    IndexDef, IndexKind, KeyRange, RowSet, ValueRange, index_column, index_value, json_column,
    text_column, timestamp_column,
};
pub use keys::IndexValue;
pub use rows::{
    Edge, Entity, IndexId, KeyPart, Micros, Moment, Resource, Row, Table, normalize_name,
    now_micros,
};

type Rocks = DBWithThreadMode<MultiThreaded>;
type KeyValue = (Box<[u8]>, Box<[u8]>);

const TENANT_CF_PREFIX: &str = "t:";
const MAX_TENANT_ID_BYTES: usize = 64;
/// Vectors read from storage and added to the index at a time when it is rebuilt.
const REBUILD_CHUNK: usize = 10_000;

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
struct TenantState {
    id: String,
    cf_name: String,
    /// Set when the tenant is dropped: a handle kept from before must not reach the
    /// column family of a new tenant of the same name (families are found by name).
    dropped: std::sync::atomic::AtomicBool,
    /// Where the tenant's HNSW index files live.
    vector_dir: PathBuf,
    /// Serializes writers; guards the counters (loaded from meta keys on first use).
    write_lock: Mutex<WriterState>,
    /// The HNSW index of `resources.embedding`, when loaded in memory.
    vectors: RwLock<Option<Arc<VectorIndex>>>,
    /// The user-declared indexes, once read from their meta key.
    user_indexes: RwLock<Option<Arc<Vec<IndexDef>>>>,
    /// Bumped after every committed write: what the candidate cache is valid for.
    generation: std::sync::atomic::AtomicU64,
    /// Candidate sets of filtered vector searches (see [`candidates`]).
    candidates: Mutex<candidates::CandidateCache>,
}

#[derive(Debug, Default)]
struct WriterState {
    next_row_id: Option<u64>,
    next_vector_change: Option<u64>,
}

/// The tenant's write lock, held (see [`TenantStore::with_writer`]).
pub struct Writer<'a> {
    store: &'a TenantStore,
    state: parking_lot::MutexGuard<'a, WriterState>,
}

impl Writer<'_> {
    /// Applies a batch of writes atomically, as [`TenantStore::apply`] does.
    pub fn apply(&mut self, ops: Vec<WriteOp>) -> Result<Vec<u64>> {
        let now = now_micros();
        let mut ops = ops;
        prepare_all(&mut ops, now)?;
        self.store.commit(&mut self.state, ops, now)
    }
}

/// Validates the rows of `ops` and fills in generated ids and timestamps.
fn prepare_all(ops: &mut [WriteOp], now: i64) -> Result<()> {
    for op in ops {
        match op {
            WriteOp::Insert(row) | WriteOp::Update(row) | WriteOp::Replace { row, .. } => {
                row.prepare(now)?
            }
            WriteOp::Delete { .. } | WriteOp::DeleteAt { .. } => {}
        }
    }
    Ok(())
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
        // the size of the column family: a 1-hop walk over the same keys took 4.4 ms
        // beside 1M moments and 0.4 ms beside 1k. Partitioned: 0.44 ms beside 1M (blocks
        // outside the cache: 0.37 ms, but memory that grows with the data).
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
        let _ = std::fs::remove_dir_all(&state.vector_dir);
        self.db.create_cf(&state.cf_name, &self.cf_options)?;
        tenants.insert(id.to_string(), Arc::new(state));
        Ok(())
    }

    /// Drops a tenant and all of its data.
    pub fn drop_tenant(&self, id: &str) -> Result<()> {
        validate_tenant_id(id)?;
        let mut tenants = self.tenants.write();
        let Some(state) = tenants.get(id).cloned() else {
            return Err(Error::NotFound(format!("tenant '{id}'")));
        };
        // Wait for in-flight writes of the tenant before the family disappears.
        let _writer = state.write_lock.lock();
        // Before the family goes: a handle that finds a family and then sees the flag
        // clear found this tenant's (see `TenantStore::cf`).
        state
            .dropped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.db.drop_cf(&state.cf_name)?;
        tenants.remove(id);
        *state.vectors.write() = None;
        let _ = std::fs::remove_dir_all(&state.vector_dir);
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
        Ok(TenantStore {
            db: Arc::clone(&self.db),
            state,
            sync: self.options.sync,
        })
    }

    /// Bytes RocksDB holds in memtables over all tenants and in the shared block cache
    /// (which is also charged for the memtables, through the write-buffer manager).
    pub fn memory_usage(&self) -> Result<(u64, u64)> {
        let mut memtables = 0;
        for state in self.tenants.read().values() {
            if let Some(cf) = self.db.cf_handle(&state.cf_name) {
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
            let store = TenantStore {
                db: Arc::clone(&self.db),
                state,
                sync: self.options.sync,
            };
            store.save_vectors()?;
        }
        Ok(())
    }

    /// Flushes every tenant's memtable to disk (tests and benchmarks).
    pub fn flush(&self) -> Result<()> {
        for state in self.tenants.read().values() {
            if let Some(cf) = self.db.cf_handle(&state.cf_name) {
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
            .map(|s| s.cf_name.clone())
            .collect();
        for name in names {
            if let Some(cf) = self.db.cf_handle(&name) {
                self.db.compact_range_cf(&cf, None::<&[u8]>, None::<&[u8]>);
            }
        }
        Ok(())
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
        id: id.to_string(),
        cf_name: format!("{TENANT_CF_PREFIX}{id}"),
        dropped: std::sync::atomic::AtomicBool::new(false),
        // Tenant ids are validated (no separators, no `..`): safe as a directory name.
        vector_dir: db_path.join("vectors").join(id),
        write_lock: Mutex::new(WriterState::default()),
        vectors: RwLock::new(None),
        user_indexes: RwLock::new(None),
        generation: std::sync::atomic::AtomicU64::new(0),
        candidates: Mutex::new(candidates::CandidateCache::new(Arc::clone(
            candidate_budget,
        ))),
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
    db: Arc<Rocks>,
    state: Arc<TenantState>,
    sync: bool,
}

impl std::fmt::Debug for TenantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantStore")
            .field("tenant", &self.state.id)
            .finish()
    }
}

impl TenantStore {
    pub fn tenant_id(&self) -> &str {
        &self.state.id
    }

    fn cf(&self) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>> {
        let dropped = || Error::NotFound(format!("tenant '{}' (dropped)", self.state.id));
        let cf = self.db.cf_handle(&self.state.cf_name).ok_or_else(dropped)?;
        // Checked after the lookup: the flag is set before the family is dropped, and a
        // new tenant of the name is created after, so a clear flag here means `cf` is
        // this tenant's family.
        if self.state.dropped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(dropped());
        }
        Ok(cf)
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(&self.cf()?, key)?)
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

    /// Applies a batch of writes atomically and returns how many rows each op touched.
    /// On any error nothing is written.
    pub fn apply(&self, ops: Vec<WriteOp>) -> Result<Vec<u64>> {
        let now = now_micros();
        // Validation that needs no lock happens first, so the lock is held only for the
        // key checks and the commit.
        let mut ops = ops;
        prepare_all(&mut ops, now)?;

        let mut writer = self.state.write_lock.lock();
        self.commit(&mut writer, ops, now)
    }

    /// Runs `f` holding the tenant's write lock: what it reads through this handle is the
    /// latest state, and what it applies through the [`Writer`] commits before any other
    /// writer's change. So a read-modify-write (`SET n = n + 1`) loses no update. Keep `f`
    /// short: every writer of the tenant waits for it.
    pub fn with_writer<T>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T> {
        let state = self.state.write_lock.lock();
        f(&mut Writer { store: self, state })
    }

    /// Commits validated ops holding the write lock (`writer`).
    fn commit(&self, writer: &mut WriterState, ops: Vec<WriteOp>, now: i64) -> Result<Vec<u64>> {
        let cf = self.cf()?;
        let user = self.user_indexes()?;
        let mut next = match writer.next_row_id {
            Some(n) => n,
            None => self.meta_u64(keys::META_NEXT_ROW_ID)?.unwrap_or(1),
        };
        // Vector changes of this batch, in order: Some = upsert, None = remove.
        let mut vector_changes: Vec<(u64, Option<Vec<f32>>)> = Vec::new();
        let first_free = next;

        let mut batch = WriteBatch::default();
        let mut touched_keys: HashSet<Vec<u8>> = HashSet::new();
        let mut counts = Vec::with_capacity(ops.len());
        // Existence of primary keys for inserts is checked in one multi-get.
        let insert_keys: Vec<Vec<u8>> = ops
            .iter()
            .filter_map(|op| match op {
                WriteOp::Insert(row) => Some(keys::primary_key(row.table(), &row.primary_key())),
                _ => None,
            })
            .collect();
        let existing = self.db.batched_multi_get_cf(&cf, insert_keys.iter(), false);
        let mut existing = existing.into_iter();

        for op in ops {
            match op {
                WriteOp::Insert(row) => {
                    let pk = keys::primary_key(row.table(), &row.primary_key());
                    let found = existing.next().transpose()?.flatten();
                    if found.is_some() || !touched_keys.insert(pk.clone()) {
                        return Err(Error::AlreadyExists(format!(
                            "{} row with key {}",
                            row.table().name(),
                            row.key_display()
                        )));
                    }
                    let row_id = next;
                    next += 1;
                    put_row(&mut batch, &cf, &pk, row_id, &row, &user)?;
                    if let Row::Resource(Resource {
                        embedding: Some(v), ..
                    }) = &row
                    {
                        vector_changes.push((row_id, Some(v.clone())));
                    }
                    counts.push(1);
                }
                WriteOp::Update(mut row) => {
                    let table = row.table();
                    let pk_parts = row.primary_key();
                    let Some((row_id, old)) = self.get(table, &pk_parts)? else {
                        return Err(Error::NotFound(format!(
                            "{} row with key {}",
                            table.name(),
                            row.key_display()
                        )));
                    };
                    let pk = keys::primary_key(table, &pk_parts);
                    self.claim(&mut touched_keys, &pk, &row)?;
                    row.carry_over(&old, now);
                    delete_index_entries(&mut batch, &cf, &old, row_id, &user)?;
                    put_row(&mut batch, &cf, &pk, row_id, &row, &user)?;
                    // Through the API, no embedding means "keep the stored one".
                    if let Row::Resource(Resource {
                        embedding: Some(v), ..
                    }) = &row
                    {
                        vector_changes.push((row_id, Some(v.clone())));
                    }
                    counts.push(1);
                }
                WriteOp::Replace { row_id, row } => {
                    let table = row.table();
                    let Some(old) = self.get_row(table, row_id)? else {
                        counts.push(0);
                        continue;
                    };
                    let old_pk = keys::primary_key(table, &old.primary_key());
                    let pk = keys::primary_key(table, &row.primary_key());
                    if pk != old_pk {
                        if self.get_raw(&pk)?.is_some() {
                            return Err(Error::AlreadyExists(format!(
                                "{} row with key {}",
                                table.name(),
                                row.key_display()
                            )));
                        }
                        batch.delete_cf(&cf, &old_pk);
                    }
                    self.claim(&mut touched_keys, &pk, &row)?;
                    delete_index_entries(&mut batch, &cf, &old, row_id, &user)?;
                    put_row(&mut batch, &cf, &pk, row_id, &row, &user)?;
                    // A replacement states the whole row: no embedding means none.
                    if let Row::Resource(r) = &row {
                        match &r.embedding {
                            Some(v) => vector_changes.push((row_id, Some(v.clone()))),
                            None if self.has_vector(table, row_id)? => {
                                vector_changes.push((row_id, None))
                            }
                            None => {}
                        }
                    }
                    counts.push(1);
                }
                WriteOp::Delete { table, key } => {
                    let found = self.get(table, &key)?;
                    let n = self.stage_delete(
                        &mut batch,
                        &cf,
                        &user,
                        &mut touched_keys,
                        &mut vector_changes,
                        found,
                    )?;
                    counts.push(n);
                }
                WriteOp::DeleteAt { table, row_id } => {
                    let found = self.get_row(table, row_id)?.map(|row| (row_id, row));
                    let n = self.stage_delete(
                        &mut batch,
                        &cf,
                        &user,
                        &mut touched_keys,
                        &mut vector_changes,
                        found,
                    )?;
                    counts.push(n);
                }
            }
        }
        let next_change = if vector_changes.is_empty() {
            None
        } else {
            Some(self.stage_vectors(&mut batch, &cf, writer, &vector_changes)?)
        };
        if next != first_free {
            batch.put_cf(
                &cf,
                keys::meta_key(keys::META_NEXT_ROW_ID),
                next.to_be_bytes(),
            );
        }
        let mut write_options = WriteOptions::default();
        write_options.set_sync(self.sync);
        self.db.write_opt(batch, &write_options)?;
        self.bump_generation();
        writer.next_row_id = Some(next);
        if let Some(change) = next_change {
            writer.next_vector_change = Some(change);
            self.apply_to_loaded_index(&vector_changes);
            // Again once the HNSW index holds the change: vectors a search copied out of
            // the index in between are not kept (see `candidates.rs`).
            self.bump_generation();
        }
        Ok(counts)
    }

    fn meta_u64(&self, name: &str) -> Result<Option<u64>> {
        match self.get_raw(&keys::meta_key(name))? {
            Some(v) => decode_row_id(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The number of the tenant's next vector change. Read from its meta key on the
    /// tenant's first use after open, before any write, which is also when saved index
    /// files covering changes the rows do not have are removed: saved before a power
    /// loss took the end of the write-ahead log, they would look current once later
    /// writes reuse those change numbers.
    fn next_vector_change(&self, writer: &mut WriterState) -> Result<u64> {
        if let Some(n) = writer.next_vector_change {
            return Ok(n);
        }
        let n = self.meta_u64(keys::META_NEXT_VECTOR_CHANGE)?.unwrap_or(1);
        let removed = VectorIndex::remove_saved_ahead(&self.state.vector_dir, "resources", n);
        if removed > 0 {
            tracing::warn!(
                tenant = %self.state.id,
                removed,
                "vector index files ahead of the rows (a power loss?) removed; the index is rebuilt"
            );
        }
        writer.next_vector_change = Some(n);
        Ok(n)
    }

    fn has_vector(&self, table: Table, row_id: u64) -> Result<bool> {
        Ok(table == Table::Resources && self.get_raw(&keys::vector_key(table, row_id))?.is_some())
    }

    /// The vector options of the resources table, if any were declared or fixed.
    pub fn vector_options(&self) -> Result<Option<VectorOptions>> {
        match self.get_raw(&keys::meta_key(keys::META_VECTOR_OPTIONS))? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| Error::Corruption(format!("vector options: {e}"))),
        }
    }

    /// Declares the vector options of the resources table. Only `ef_search` may change
    /// once vectors exist.
    pub fn set_vector_options(&self, options: VectorOptions) -> Result<()> {
        options.validate()?;
        let cf = self.cf()?;
        let _writer = self.state.write_lock.lock();
        let prefix = keys::vector_prefix(Table::Resources);
        let has_vectors = self
            .range(&cf, prefix.clone(), keys::prefix_successor(&prefix))
            .next()
            .transpose()?
            .is_some();
        if let Some(current) = self.vector_options()?
            && has_vectors
        {
            let same = VectorOptions {
                ef_search: options.ef_search,
                ..current
            };
            let requested = VectorOptions {
                dimensions: options.dimensions.or(current.dimensions),
                ..options
            };
            if same != requested {
                return Err(Error::invalid(format!(
                    "resources already has vectors with {current:?}; only ef_search can change"
                )));
            }
        }
        let json = serde_json::to_vec(&options).map_err(|e| Error::Storage(e.to_string()))?;
        self.db
            .put_cf(&cf, keys::meta_key(keys::META_VECTOR_OPTIONS), json)?;
        if has_vectors {
            // Only ef_search changed (checked above): the loaded index takes it in place;
            // rebuilding it from the rows would take minutes at 1M vectors.
            if let Some(index) = self.state.vectors.read().as_ref() {
                index.set_ef_search(options.ef_search);
            }
        } else {
            // The in-memory index is rebuilt with the new options on next use.
            *self.state.vectors.write() = None;
        }
        Ok(())
    }

    /// Validates a batch's vectors, fixes the dimensions on the first one, and stages the
    /// vector keys and log entries. Returns the next change number after the batch.
    fn stage_vectors(
        &self,
        batch: &mut WriteBatch,
        cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
        writer: &mut WriterState,
        changes: &[(u64, Option<Vec<f32>>)],
    ) -> Result<u64> {
        let mut options = self.vector_options()?.unwrap_or_default();
        let declared = options.dimensions;
        for v in changes.iter().filter_map(|(_, v)| v.as_ref()) {
            if options.dimensions.is_none() {
                options.dimensions = Some(v.len());
            }
            options.check("resources.embedding", v)?;
        }
        if options.dimensions != declared {
            let json = serde_json::to_vec(&options).map_err(|e| Error::Storage(e.to_string()))?;
            batch.put_cf(cf, keys::meta_key(keys::META_VECTOR_OPTIONS), json);
        }
        let mut change = self.next_vector_change(writer)?;
        for (row_id, vector) in changes {
            let key = keys::vector_key(Table::Resources, *row_id);
            let mut entry = row_id.to_be_bytes().to_vec();
            match vector {
                Some(v) => {
                    batch.put_cf(cf, key, encode_vector(v));
                    entry.push(1);
                }
                None => {
                    batch.delete_cf(cf, key);
                    entry.push(0);
                }
            }
            batch.put_cf(cf, keys::vector_log_key(Table::Resources, change), entry);
            change += 1;
        }
        batch.put_cf(
            cf,
            keys::meta_key(keys::META_NEXT_VECTOR_CHANGE),
            change.to_be_bytes(),
        );
        Ok(change)
    }

    /// Mirrors committed vector changes into the in-memory index, if it is loaded. On
    /// failure the index is dropped: it is rebuilt from storage (the truth) on next use.
    fn apply_to_loaded_index(&self, changes: &[(u64, Option<Vec<f32>>)]) {
        let Some(index) = self.state.vectors.read().clone() else {
            return;
        };
        let upserts: Vec<(u64, &[f32])> = changes
            .iter()
            .filter_map(|(row_id, v)| v.as_deref().map(|v| (*row_id, v)))
            .collect();
        let result = changes
            .iter()
            .filter(|(_, v)| v.is_none())
            .try_for_each(|(row_id, _)| index.remove(*row_id))
            .and_then(|()| index.upsert_many(&upserts));
        if let Err(e) = result {
            tracing::warn!(tenant = %self.state.id, error = %e, "vector index update failed; it will be rebuilt");
            *self.state.vectors.write() = None;
        }
    }

    /// Whether the HNSW index is in memory now (without loading it).
    pub fn vector_index_loaded(&self) -> bool {
        self.state.vectors.read().is_some()
    }

    /// The in-memory HNSW index of `resources.embedding`, loading it (and catching it up
    /// from the vector log, or rebuilding it) on first use. `None` while no vector exists.
    pub fn vector_index(&self) -> Result<Option<Arc<VectorIndex>>> {
        if let Some(index) = self.state.vectors.read().clone() {
            return Ok(Some(index));
        }
        // Writers wait while the index loads, so no change slips between file and log.
        let mut writer = self.state.write_lock.lock();
        if let Some(index) = self.state.vectors.read().clone() {
            return Ok(Some(index));
        }
        let Some(options) = self.vector_options()? else {
            return Ok(None);
        };
        let Some(dimensions) = options.dimensions else {
            return Ok(None);
        };
        let next_change = self.next_vector_change(&mut writer)?;
        let trimmed = self.meta_u64(keys::META_VECTOR_LOG_TRIMMED)?.unwrap_or(0);
        let dir = &self.state.vector_dir;
        let loaded = VectorIndex::load_latest(dir, "resources", options, dimensions)?;
        let index = match loaded {
            // Usable when the log still holds every change after the file.
            Some((index, covered)) if covered >= trimmed && covered < next_change => {
                let replayed = self.replay_vector_log(&index, covered + 1)?;
                tracing::debug!(tenant = %self.state.id, covered, replayed, "vector index loaded");
                index
            }
            _ => self.rebuild_vector_index(options, dimensions)?,
        };
        let index = Arc::new(index);
        *self.state.vectors.write() = Some(Arc::clone(&index));
        drop(writer);
        Ok(Some(index))
    }

    fn replay_vector_log(&self, index: &VectorIndex, from: u64) -> Result<usize> {
        let cf = self.cf()?;
        let start = keys::vector_log_key(Table::Resources, from);
        let end = keys::prefix_successor(&[keys::VECTOR_LOG, Table::Resources.tag()]);
        let mut n = 0;
        for item in self.range(&cf, start, end) {
            let (_, value) = item?;
            let row_id = decode_row_id(
                value
                    .get(..8)
                    .ok_or_else(|| Error::Corruption("short vector log entry".into()))?,
            )?;
            match self.get_raw(&keys::vector_key(Table::Resources, row_id))? {
                Some(bytes) if value.get(8) == Some(&1) => {
                    index.upsert(row_id, &decode_vector(&bytes)?)?
                }
                _ => index.remove(row_id)?,
            }
            n += 1;
        }
        Ok(n)
    }

    fn rebuild_vector_index(
        &self,
        options: VectorOptions,
        dimensions: usize,
    ) -> Result<VectorIndex> {
        let cf = self.cf()?;
        let index = VectorIndex::new(options, dimensions)?;
        let prefix = keys::vector_prefix(Table::Resources);
        let started = std::time::Instant::now();
        let mut n = 0usize;
        let mut chunk: Vec<(u64, Vec<f32>)> = Vec::with_capacity(REBUILD_CHUNK);
        let add = |chunk: &mut Vec<(u64, Vec<f32>)>| -> Result<()> {
            let items: Vec<(u64, &[f32])> =
                chunk.iter().map(|(id, v)| (*id, v.as_slice())).collect();
            index.upsert_many(&items)?;
            chunk.clear();
            Ok(())
        };
        for item in self.range(&cf, prefix.clone(), keys::prefix_successor(&prefix)) {
            let (key, value) = item?;
            let row_id = keys::trailing_row_id(&key)
                .ok_or_else(|| Error::Corruption("short vector key".into()))?;
            chunk.push((row_id, decode_vector(&value)?));
            n += 1;
            if chunk.len() == REBUILD_CHUNK {
                add(&mut chunk)?;
                tracing::info!(tenant = %self.state.id, vectors = n, "rebuilding vector index");
            }
        }
        add(&mut chunk)?;
        let seconds = started.elapsed().as_secs_f64();
        if n >= 10_000 {
            tracing::info!(tenant = %self.state.id, vectors = n, seconds, "vector index rebuilt");
        } else {
            tracing::debug!(tenant = %self.state.id, vectors = n, seconds, "vector index rebuilt");
        }
        Ok(index)
    }

    /// Saves the loaded vector index (atomically) and trims the log it covers. Returns
    /// false when no index is loaded.
    pub fn save_vectors(&self) -> Result<bool> {
        let Some(index) = self.state.vectors.read().clone() else {
            return Ok(false);
        };
        let cf = self.cf()?;
        let mut writer = self.state.write_lock.lock();
        let next_change = self.next_vector_change(&mut writer)?;
        let covered = next_change - 1;
        // The file must not cover changes a power loss can take back: with `sync` off,
        // commits reach the write-ahead log's file but not the disk; sync it first.
        if !self.sync {
            self.db.flush_wal(true)?;
        }
        index.save(&self.state.vector_dir, "resources", covered)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            &cf,
            keys::vector_log_key(Table::Resources, 0),
            keys::vector_log_key(Table::Resources, next_change),
        );
        batch.put_cf(
            &cf,
            keys::meta_key(keys::META_VECTOR_LOG_TRIMMED),
            covered.to_be_bytes(),
        );
        self.db.write(batch)?;
        Ok(true)
    }

    /// Saves and then drops the in-memory index; the next search reloads it.
    pub fn unload_vectors(&self) -> Result<()> {
        self.save_vectors()?;
        *self.state.vectors.write() = None;
        Ok(())
    }

    /// The `k` nearest resources (row id, distance) to `query`; empty while the tenant
    /// has no vectors.
    pub fn search_vectors(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<(u64, f32)>> {
        let Some(index) = self.vector_index()? else {
            return Ok(vec![]);
        };
        index.options().check("the query vector", query)?;
        index.search(query, k, ef, filter)
    }

    /// The stored vectors of these rows (None where a row has none).
    pub fn vectors_of(&self, table: Table, row_ids: &[u64]) -> Result<Vec<Option<Vec<f32>>>> {
        let cf = self.cf()?;
        let keys: Vec<Vec<u8>> = row_ids
            .iter()
            .map(|id| keys::vector_key(table, *id))
            .collect();
        self.db
            .batched_multi_get_cf(&cf, keys.iter(), false)
            .into_iter()
            .map(|v| match v? {
                Some(bytes) => decode_vector(&bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// Stages the deletion of a found row (its keys, index entries and vector); returns
    /// the number of rows deleted.
    fn stage_delete(
        &self,
        batch: &mut WriteBatch,
        cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
        user: &[IndexDef],
        touched: &mut HashSet<Vec<u8>>,
        vector_changes: &mut Vec<(u64, Option<Vec<f32>>)>,
        found: Option<(u64, Row)>,
    ) -> Result<u64> {
        let Some((row_id, old)) = found else {
            return Ok(0);
        };
        let table = old.table();
        self.claim(touched, &keys::primary_key(table, &old.primary_key()), &old)?;
        delete_row(batch, cf, &old, row_id, user)?;
        if self.has_vector(table, row_id)? {
            vector_changes.push((row_id, None));
        }
        Ok(1)
    }

    /// A primary key may be written once per batch: a second write of the same key in
    /// one batch would read stale state, so it is refused.
    fn claim(&self, touched: &mut HashSet<Vec<u8>>, pk: &[u8], row: &Row) -> Result<()> {
        if !touched.insert(pk.to_vec()) {
            return Err(Error::invalid(format!(
                "{} row with key {} is written twice in one batch",
                row.table().name(),
                row.key_display()
            )));
        }
        Ok(())
    }

    /// Resolves an index path to row ids (without duplicates; in index order, and in
    /// row-id order for a [`RowSet`]); `None` for a full scan.
    pub fn resolve(&self, table: Table, path: &AccessPath) -> Result<Option<Vec<u64>>> {
        match path {
            AccessPath::FullScan => Ok(None),
            AccessPath::RowSet(set) => self.row_set(set).map(Some),
            AccessPath::Nearest { query, k, ef } => {
                if table != Table::Resources {
                    return Err(Error::invalid(format!(
                        "{} has no embeddings",
                        table.name()
                    )));
                }
                Ok(Some(
                    self.search_vectors(query, *k, *ef, None)?
                        .into_iter()
                        .map(|(id, _)| id)
                        .collect(),
                ))
            }
            AccessPath::PrimaryPrefix { .. }
            | AccessPath::IndexPrefix { .. }
            | AccessPath::IndexRange { .. } => self.walk_ids(table, path, usize::MAX),
            AccessPath::IndexOrder { within, .. } => self.resolve(table, within),
        }
    }

    /// The row ids a key walk finds, in walk order, or `None` once there are more than
    /// `cap`. Only the ids are wanted: rows held by the index are not copied out.
    fn walk_ids(&self, table: Table, path: &AccessPath, cap: usize) -> Result<Option<Vec<u64>>> {
        let cf = self.cf()?;
        let mut walk = self.key_walk(table, path)?;
        walk.with_rows = false;
        let mut ids = Vec::new();
        loop {
            let want = cap.saturating_add(1).saturating_sub(ids.len()).min(8192);
            let chunk = walk.next_entries(self, &cf, want)?;
            if chunk.is_empty() {
                return Ok(Some(ids));
            }
            ids.extend(chunk.into_iter().map(|(id, _)| id));
            if ids.len() > cap {
                return Ok(None);
            }
        }
    }

    /// The rows of a path when there are at most `cap` of them, reading at most about
    /// `cap` index entries per index it names: what a filtered vector search needs to
    /// choose between scoring candidates and searching the graph, without resolving
    /// half a million ids to learn that a filter keeps half the rows.
    pub fn resolve_at_most(
        &self,
        table: Table,
        path: &AccessPath,
        cap: usize,
    ) -> Result<Candidates> {
        match path {
            AccessPath::FullScan => Ok(Candidates::All),
            AccessPath::RowSet(set) => Ok(match self.row_set_at_most(set, cap)? {
                Some((ids, superset)) => Candidates::Ids { ids, superset },
                None => Candidates::Many,
            }),
            AccessPath::Nearest { .. } => {
                let mut ids = self.resolve(table, path)?.unwrap_or_default();
                ids.sort_unstable();
                ids.dedup();
                Ok(Candidates::Ids {
                    ids,
                    superset: false,
                })
            }
            AccessPath::PrimaryPrefix { .. }
            | AccessPath::IndexPrefix { .. }
            | AccessPath::IndexRange { .. } => Ok(match self.walk_ids(table, path, cap)? {
                Some(mut ids) => {
                    ids.sort_unstable();
                    Candidates::Ids {
                        ids,
                        superset: false,
                    }
                }
                None => Candidates::Many,
            }),
            AccessPath::IndexOrder { within, .. } => self.resolve_at_most(table, within, cap),
        }
    }

    /// The lazy walk over the keys of a path that names key ranges: primary-key and index
    /// prefixes, an index range, and a [`RowSet`] of one index (no AND/OR).
    fn key_walk(&self, table: Table, path: &AccessPath) -> Result<KeyWalk> {
        Ok(match path {
            AccessPath::PrimaryPrefix { prefixes } => KeyWalk::prefixes(
                prefixes.iter().map(|p| keys::primary_key(table, p)),
                IdIn::Value,
            ),
            AccessPath::IndexPrefix { index, prefixes } => KeyWalk::prefixes(
                prefixes.iter().map(|p| keys::index_prefix(*index, p)),
                IdIn::Key,
            ),
            AccessPath::IndexRange {
                index,
                lower,
                upper,
                descending,
            } => {
                let mut walk = KeyWalk::new(
                    vec![index_range_keys(*index, lower, upper)],
                    *descending,
                    IdIn::Key,
                );
                walk.with_rows = index.holds_rows();
                walk
            }
            AccessPath::RowSet(set) => match self.leaf_ranges(set)? {
                Some(ranges) => KeyWalk::new(ranges, false, IdIn::Key),
                None => return Err(Error::Query("an AND/OR index set is not one walk".into())),
            },
            other => {
                return Err(Error::Query(format!("{other:?} is not a walk over keys")));
            }
        })
    }

    fn range<'a>(
        &'a self,
        cf: &Arc<rocksdb::BoundColumnFamily<'a>>,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
    ) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        let mut read_options = ReadOptions::default();
        if let Some(end) = end {
            read_options.set_iterate_upper_bound(end);
        }
        self.db
            .iterator_cf_opt(
                cf,
                read_options,
                IteratorMode::From(&start, rocksdb::Direction::Forward),
            )
            .map(|item| item.map_err(Error::from))
    }

    /// Opens a cursor over the rows a path selects, stopping after `limit` rows. Key
    /// ranges are walked lazily, so a limit reads only the entries it needs; an AND/OR
    /// index set and a vector search are resolved first.
    pub fn scan(&self, table: Table, path: &AccessPath, limit: Option<usize>) -> Result<RowCursor> {
        let lazy = match path {
            AccessPath::FullScan | AccessPath::Nearest { .. } | AccessPath::IndexOrder { .. } => {
                false
            }
            AccessPath::RowSet(set) => matches!(set, RowSet::Keys { .. }),
            _ => true,
        };
        let source = if let AccessPath::IndexOrder {
            index,
            descending,
            within,
            range,
        } = path
        {
            Source::Ordered(Box::new(self.ordered_walk(
                table,
                index,
                *descending,
                within,
                range,
            )?))
        } else if lazy {
            Source::Walk(self.key_walk(table, path)?)
        } else {
            match self.resolve(table, path)? {
                None => Source::Table {
                    next: Some(keys::row_prefix(table)),
                },
                Some(ids) => Source::Ids { ids, pos: 0 },
            }
        };
        Ok(RowCursor {
            store: self.clone(),
            table,
            source,
            remaining: limit.unwrap_or(usize::MAX),
            with_vectors: false,
            keys_read: 0,
        })
    }

    /// The walk of an [`AccessPath::IndexOrder`]: `within`'s set from memory (read now
    /// and kept when it is not), the index checked to still exist.
    fn ordered_walk(
        &self,
        table: Table,
        index: &IndexDef,
        descending: bool,
        within: &AccessPath,
        range: &ValueRange,
    ) -> Result<OrderedWalk> {
        if !self.user_indexes()?.iter().any(|d| d.id == index.id) {
            return Err(Error::Query(format!(
                "index {} this query planned with was dropped; run the query again",
                index.name
            )));
        }
        let keep = self.all_candidates(table, within)?;
        let bounded = !matches!(range, (Bound::Unbounded, Bound::Unbounded));
        // A hot filter's rows in index order, listed by an earlier walk's request (the
        // whole set's: a bounded walk seeks its start in the index instead).
        let kept = match &keep {
            Some(_) if !bounded => self.kept_order(table, within, index),
            _ => None,
        };
        let key_ranges = match RowSet::user(index, std::slice::from_ref(range), String::new())? {
            RowSet::Keys { ranges, .. } => ranges,
            _ => return Err(Error::Query("an ordered walk is one key range".into())),
        };
        let mut walk = KeyWalk::new(key_ranges, descending, IdIn::Key);
        walk.with_rows = index.holds_rows();
        // Reading a row costs about as much as visiting this many index entries.
        walk.budget = keep.as_ref().map_or(usize::MAX, |set| {
            set.len().saturating_mul(ENTRIES_PER_ROW_READ)
        });
        walk.keep = keep;
        Ok(OrderedWalk {
            walk,
            index: index.clone(),
            descending,
            sorted: None,
            within: within.clone(),
            kept: kept.map(|ids| (ids, 0)),
            // A bounded walk would not use the set's order.
            order_asked: bounded,
        })
    }

    /// A cursor over the rows with these row ids, in this order.
    pub fn scan_row_ids(&self, table: Table, ids: Vec<u64>) -> RowCursor {
        RowCursor {
            store: self.clone(),
            table,
            source: Source::Ids { ids, pos: 0 },
            remaining: usize::MAX,
            with_vectors: false,
            keys_read: 0,
        }
    }

    /// Number of rows in a table (walks the row keys without decoding values).
    pub fn count(&self, table: Table) -> Result<u64> {
        let cf = self.cf()?;
        let start = keys::row_prefix(table);
        let end = keys::prefix_successor(&start);
        let mut n = 0;
        for item in self.range(&cf, start, end) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// The key range `[start, end)` of the index entries between two bounds of values.
fn index_range_keys(
    index: IndexId,
    lower: &Bound<Vec<KeyPart>>,
    upper: &Bound<Vec<KeyPart>>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let base = keys::index_prefix(index, &[]);
    let start = match lower {
        Bound::Unbounded => base.clone(),
        Bound::Included(v) => keys::index_prefix(index, v),
        Bound::Excluded(v) => {
            keys::prefix_successor(&keys::index_prefix(index, v)).unwrap_or_else(|| base.clone())
        }
    };
    let end = match upper {
        Bound::Unbounded => keys::prefix_successor(&base),
        Bound::Included(v) => keys::prefix_successor(&keys::index_prefix(index, v)),
        Bound::Excluded(v) => Some(keys::index_prefix(index, v)),
    };
    (start, end)
}

/// Where a walked key holds its row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdIn {
    /// The last 8 bytes of the key (secondary index entries).
    Key,
    /// The value (primary-key entries map the key to its row id).
    Value,
}

/// A lazy walk over the keys of one or more ranges `[start, end)`, one range after the
/// other, each in key order or backwards, a chunk at a time. Like a full scan it holds no
/// iterator between chunks: it narrows the current range past the keys it has read. A
/// LIMIT therefore reads only the entries it needs, however many the ranges hold.
#[derive(Debug)]
struct KeyWalk {
    /// The ranges still to walk; the first one is in progress.
    ranges: std::collections::VecDeque<KeyRange>,
    descending: bool,
    id_in: IdIn,
    /// Row ids returned so far: a row listed in two ranges (an IN list over a list-valued
    /// column) or whose key moved ahead of the walk between two chunks (its value was
    /// updated) is returned once.
    returned: HashSet<u64>,
    /// The entries' values are copies of their rows (see [`IndexId::holds_rows`]).
    with_rows: bool,
    /// Only rows of this set are returned (the others' entries are skipped).
    keep: Option<Arc<RowBitmap>>,
    /// Entries the walk may still visit; when spent, it stops (see [`OrderedWalk`]).
    budget: usize,
    /// Entries visited and passed over (rows outside `keep`, or returned already).
    skipped: usize,
}

/// A row id and, from an index that holds rows, the encoded row.
type Entry = (u64, Option<Box<[u8]>>);

impl KeyWalk {
    fn new(ranges: Vec<KeyRange>, descending: bool, id_in: IdIn) -> Self {
        let ranges = ranges
            .into_iter()
            .filter(|(start, end)| end.as_ref().is_none_or(|end| start < end))
            .collect();
        KeyWalk {
            ranges,
            descending,
            id_in,
            returned: HashSet::new(),
            with_rows: false,
            keep: None,
            budget: usize::MAX,
            skipped: 0,
        }
    }

    /// A walk over the entries of `prefixes`, in the order given.
    fn prefixes(starts: impl IntoIterator<Item = Vec<u8>>, id_in: IdIn) -> Self {
        let ranges = starts
            .into_iter()
            .map(|start| {
                let end = keys::prefix_successor(&start);
                (start, end)
            })
            .collect();
        KeyWalk::new(ranges, false, id_in)
    }

    /// The row ids of the next `max` entries (fewer at the end of the last range), with
    /// their rows when the index holds them.
    fn next_entries(
        &mut self,
        store: &TenantStore,
        cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
        max: usize,
    ) -> Result<Vec<Entry>> {
        let mut ids = Vec::with_capacity(max.min(8192));
        while ids.len() < max && self.budget > 0 {
            let Some((start, end)) = self.ranges.front_mut() else {
                break;
            };
            let mut read_options = ReadOptions::default();
            read_options.set_iterate_lower_bound(start.clone());
            if let Some(end) = end.as_ref() {
                read_options.set_iterate_upper_bound(end.clone());
            }
            let mode = if self.descending {
                IteratorMode::End
            } else {
                IteratorMode::Start
            };
            let mut last = None;
            for item in store.db.iterator_cf_opt(cf, read_options, mode) {
                let (key, value) = item?;
                let id = match self.id_in {
                    IdIn::Key => index_row_id(&key)?,
                    IdIn::Value => decode_row_id(&value)?,
                };
                self.budget -= 1;
                if self.keep.as_ref().is_none_or(|set| set.contains(id)) && self.returned.insert(id)
                {
                    // An entry written before its index held rows has an empty value.
                    let row = (self.with_rows && !value.is_empty()).then_some(value);
                    ids.push((id, row));
                } else {
                    self.skipped += 1;
                }
                if ids.len() == max || self.budget == 0 {
                    last = Some(key);
                    break;
                }
            }
            match last {
                None => {
                    self.ranges.pop_front();
                }
                // Keys are unique: the walk resumes just past the last key read.
                Some(key) if self.descending => *end = Some(key.into_vec()),
                Some(key) => {
                    let mut next = key.into_vec();
                    next.push(0);
                    *start = next;
                }
            }
        }
        Ok(ids)
    }
}

fn decode_row_id(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corruption(format!("row id of {} bytes", bytes.len())))?;
    Ok(u64::from_be_bytes(arr))
}

fn index_row_id(key: &[u8]) -> Result<u64> {
    keys::trailing_row_id(key).ok_or_else(|| Error::Corruption("short index key".into()))
}

fn put_row(
    batch: &mut WriteBatch,
    cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
    pk: &[u8],
    row_id: u64,
    row: &Row,
    user: &[IndexDef],
) -> Result<()> {
    let table = row.table();
    let encoded = row.encode()?;
    for (index, parts) in row.index_entries() {
        let value: &[u8] = if index.holds_rows() { &encoded } else { &[] };
        batch.put_cf(cf, keys::index_key(index, &parts, row_id), value);
    }
    batch.put_cf(cf, keys::row_key(table, row_id), &encoded);
    batch.put_cf(cf, pk, row_id.to_be_bytes());
    for (key, holds_row) in json_index::user_index_keys(user, row, row_id)? {
        let value: &[u8] = if holds_row { &encoded } else { &[] };
        batch.put_cf(cf, key, value);
    }
    Ok(())
}

fn delete_index_entries(
    batch: &mut WriteBatch,
    cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
    old: &Row,
    row_id: u64,
    user: &[IndexDef],
) -> Result<()> {
    for (index, parts) in old.index_entries() {
        batch.delete_cf(cf, keys::index_key(index, &parts, row_id));
    }
    for (key, _) in json_index::user_index_keys(user, old, row_id)? {
        batch.delete_cf(cf, key);
    }
    Ok(())
}

fn delete_row(
    batch: &mut WriteBatch,
    cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
    old: &Row,
    row_id: u64,
    user: &[IndexDef],
) -> Result<()> {
    let table = old.table();
    batch.delete_cf(cf, keys::row_key(table, row_id));
    batch.delete_cf(cf, keys::primary_key(table, &old.primary_key()));
    delete_index_entries(batch, cf, old, row_id, user)
}

enum Source {
    /// A full scan; `next` is the key to resume from.
    Table { next: Option<Vec<u8>> },
    /// Row ids resolved from an index.
    Ids { ids: Vec<u64>, pos: usize },
    /// Row ids read lazily from key ranges, in key order.
    Walk(KeyWalk),
    /// The rows of a set in the order of a user index.
    Ordered(Box<OrderedWalk>),
}

/// Reading one row by id costs about as much as visiting this many index entries
/// (~8 us against ~0.2 us here): an ordered walk gives up on the index after this many
/// entries per row of its set, and sorts the rest of the set.
const ENTRIES_PER_ROW_READ: usize = 32;

/// An ordered walk that passes over this many entries of rows outside its set asks for
/// the set's order to be listed in memory for the next walks (about 1 ms of walking).
/// A walk that gives up on the index early (a set under 128 rows) does not ask.
const ORDER_AFTER_SKIPPED: usize = 4096;

/// The rows of a set in the order of a user value index (see [`AccessPath::IndexOrder`]).
struct OrderedWalk {
    walk: KeyWalk,
    index: IndexDef,
    descending: bool,
    /// Once the walk's budget is spent: the rest of the set, read and sorted (reversed,
    /// so that the next entry is popped from the end).
    sorted: Option<Vec<Entry>>,
    /// The path of the set (`walk.keep`), for asking for its order.
    within: AccessPath,
    /// The set's rows in index order, from memory, and how many were taken: read
    /// instead of the walk.
    kept: Option<(Arc<Vec<u64>>, usize)>,
    /// The set's order was asked for (once per walk).
    order_asked: bool,
}

impl OrderedWalk {
    fn next_entries(
        &mut self,
        store: &TenantStore,
        cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
        max: usize,
    ) -> Result<Vec<Entry>> {
        if let Some((ids, taken)) = &mut self.kept {
            let take = max.min(ids.len() - *taken);
            let chunk: Vec<Entry> = if self.descending {
                let end = ids.len() - *taken;
                ids[end - take..end]
                    .iter()
                    .rev()
                    .map(|id| (*id, None))
                    .collect()
            } else {
                ids[*taken..*taken + take]
                    .iter()
                    .map(|id| (*id, None))
                    .collect()
            };
            *taken += take;
            return Ok(chunk);
        }
        let mut out = Vec::new();
        if self.sorted.is_none() {
            out = self.walk.next_entries(store, cf, max)?;
            let given_up = out.len() < max && self.walk.budget == 0;
            // Only a walk that paid about what listing the order costs asks for it: a
            // small set that gives up early sorts itself cheaply.
            if !self.order_asked && self.walk.skipped >= ORDER_AFTER_SKIPPED {
                self.order_asked = true;
                store.fill_order_in_background(self.index.table()?, &self.within, &self.index);
            }
            if !given_up {
                return Ok(out);
            }
            self.sorted = Some(self.sort_rest(store, cf)?);
        }
        if let Some(rest) = &mut self.sorted {
            while out.len() < max {
                let Some(entry) = rest.pop() else { break };
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The rows of the set the walk has not returned: all after its position in index
    /// order (rows updated meanwhile aside, as in any walk), read and sorted by their
    /// entry in the index.
    fn sort_rest(
        &self,
        store: &TenantStore,
        cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
    ) -> Result<Vec<Entry>> {
        let Some(set) = &self.walk.keep else {
            return Ok(vec![]);
        };
        let table = self.index.table()?;
        let ids: Vec<u64> = set
            .ids()
            .into_iter()
            .filter(|id| !self.walk.returned.contains(id))
            .collect();
        let row_keys: Vec<Vec<u8>> = ids.iter().map(|id| keys::row_key(table, *id)).collect();
        let values = store.db.batched_multi_get_cf(cf, row_keys.iter(), false);
        let one = [self.index.clone()];
        let mut keyed = Vec::with_capacity(ids.len());
        for (id, value) in ids.into_iter().zip(values) {
            // A row deleted since the set was read is skipped.
            let Some(bytes) = value? else { continue };
            let row = Row::decode(table, &bytes)?;
            let key = json_index::user_index_keys(&one, &row, id)?
                .into_iter()
                .next()
                .map(|(key, _)| key)
                .unwrap_or_default();
            keyed.push((key, (id, Some(Box::<[u8]>::from(&bytes[..])))));
        }
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        // Popped from the end: ascending order is stored reversed.
        if !self.descending {
            keyed.reverse();
        }
        Ok(keyed.into_iter().map(|(_, entry)| entry).collect())
    }
}

/// Reads a scan's rows chunk by chunk. It holds no RocksDB iterator between chunks, so a
/// slow consumer pins nothing; each chunk sees the latest committed state.
pub struct RowCursor {
    store: TenantStore,
    table: Table,
    source: Source,
    remaining: usize,
    with_vectors: bool,
    keys_read: usize,
}

impl RowCursor {
    /// Also read each resource's embedding (stored apart from the row).
    pub fn with_vectors(mut self, yes: bool) -> Self {
        self.with_vectors = yes && self.table == Table::Resources;
        self
    }

    /// The next rows (at most `max`), with their row ids; empty when the scan is done.
    pub fn next_chunk(&mut self, max: usize) -> Result<Vec<(u64, Row)>> {
        let want = max.min(self.remaining);
        if want == 0 {
            return Ok(vec![]);
        }
        let cf = self.store.cf()?;
        let mut out = Vec::with_capacity(want.min(8192));
        match &mut self.source {
            Source::Table { next } => {
                let Some(start) = next.take() else {
                    return Ok(vec![]);
                };
                let end = keys::prefix_successor(&keys::row_prefix(self.table));
                let mut last = None;
                for item in self.store.range(&cf, start, end) {
                    let (key, value) = item?;
                    let row_id = keys::trailing_row_id(&key)
                        .ok_or_else(|| Error::Corruption("short row key".into()))?;
                    out.push((row_id, Row::decode(self.table, &value)?));
                    if out.len() == want {
                        last = Some(key);
                        break;
                    }
                }
                // Resume just after the last key read: appending a byte is its successor.
                *next = last.map(|k| {
                    let mut k = k.into_vec();
                    k.push(0);
                    k
                });
            }
            Source::Ids { .. } | Source::Walk(_) | Source::Ordered(_) => {
                while out.len() < want {
                    let chunk = self
                        .source
                        .next_entries(&self.store, &cf, want - out.len())?;
                    if chunk.is_empty() {
                        break;
                    }
                    self.keys_read += chunk.len();
                    // Rows not held by their index entry are read in one batch.
                    let row_keys: Vec<Vec<u8>> = chunk
                        .iter()
                        .filter(|(_, row)| row.is_none())
                        .map(|(id, _)| keys::row_key(self.table, *id))
                        .collect();
                    let mut values = if row_keys.is_empty() {
                        Vec::new()
                    } else {
                        self.store
                            .db
                            .batched_multi_get_cf(&cf, row_keys.iter(), false)
                    }
                    .into_iter();
                    for (id, row) in chunk {
                        if let Some(bytes) = row {
                            out.push((id, Row::decode(self.table, &bytes)?));
                            continue;
                        }
                        let value = values.next().ok_or_else(|| {
                            Error::Storage("multi-get returned fewer values than keys".into())
                        })?;
                        // A row deleted after its ids were resolved is skipped.
                        if let Some(bytes) = value? {
                            out.push((id, Row::decode(self.table, &bytes)?));
                        }
                    }
                }
            }
        }
        self.remaining -= out.len();
        if self.with_vectors && !out.is_empty() {
            let ids: Vec<u64> = out.iter().map(|(id, _)| *id).collect();
            for ((_, row), vector) in out.iter_mut().zip(self.store.vectors_of(self.table, &ids)?) {
                if let Row::Resource(r) = row {
                    r.embedding = vector;
                }
            }
        }
        Ok(out)
    }

    /// True when the rows come from an index (their ids are known without reading them).
    pub fn is_indexed(&self) -> bool {
        !matches!(self.source, Source::Table { .. })
    }

    /// Index entries read so far.
    pub fn index_keys_read(&self) -> usize {
        self.keys_read
    }

    /// Index entries passed over so far: those of rows outside an ordered walk's set.
    pub fn index_entries_skipped(&self) -> usize {
        match &self.source {
            Source::Walk(walk) => walk.skipped,
            Source::Ordered(ordered) => ordered.walk.skipped,
            Source::Table { .. } | Source::Ids { .. } => 0,
        }
    }

    /// Rows an ordered walk took in order from memory (see [`TenantStore::kept_order`]).
    pub fn ordered_from_memory(&self) -> usize {
        match &self.source {
            Source::Ordered(ordered) => ordered.kept.as_ref().map_or(0, |(_, taken)| *taken),
            _ => 0,
        }
    }

    /// Consumes up to `n` row ids of an index path without reading their rows (for row
    /// counts); 0 when the index is exhausted or the cursor is a full scan.
    pub fn skip_ids(&mut self, n: usize) -> Result<usize> {
        if !self.is_indexed() {
            return Ok(0);
        }
        let cf = self.store.cf()?;
        // Counting needs no rows.
        if let Source::Walk(walk) = &mut self.source {
            walk.with_rows = false;
        }
        let n = self
            .source
            .next_entries(&self.store, &cf, n.min(self.remaining))?
            .len();
        self.keys_read += n;
        self.remaining -= n;
        Ok(n)
    }
}

impl Source {
    /// The next row ids of an index source (empty for a full scan or when exhausted),
    /// with their rows where the index holds them.
    fn next_entries(
        &mut self,
        store: &TenantStore,
        cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
        max: usize,
    ) -> Result<Vec<Entry>> {
        match self {
            Source::Table { .. } => Ok(vec![]),
            Source::Ids { ids, pos } => {
                let take = max.min(ids.len() - *pos);
                let chunk = ids[*pos..*pos + take]
                    .iter()
                    .map(|id| (*id, None))
                    .collect();
                *pos += take;
                Ok(chunk)
            }
            Source::Walk(walk) => walk.next_entries(store, cf, max),
            Source::Ordered(ordered) => ordered.next_entries(store, cf, max),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: &str, ty: &str, name: &str) -> Row {
        Row::Entity(Entity {
            id: id.into(),
            entity_type: ty.into(),
            name: name.into(),
            ..Default::default()
        })
    }

    #[test]
    fn tenant_ids_are_validated() {
        for bad in [
            "",
            "a/b",
            "..",
            "a..b",
            "nul\0",
            "tab\t",
            " pad",
            &"x".repeat(65),
        ] {
            assert!(
                matches!(validate_tenant_id(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        for good in ["acme", "Acme-Corp_2", "ü.x", &"x".repeat(64)] {
            validate_tenant_id(good).unwrap();
        }
    }

    #[test]
    fn write_index_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        storage.create_tenant("a").unwrap();
        let t = storage.tenant("a").unwrap();
        t.apply(vec![
            WriteOp::Insert(entity("e1", "person", "Ada")),
            WriteOp::Insert(entity("e2", "project", "Remdb")),
            WriteOp::Insert(entity("e3", "person", "Bob")),
        ])
        .unwrap();
        let dup = t.apply(vec![
            WriteOp::Insert(entity("e4", "x", "y")),
            WriteOp::Insert(entity("e1", "x", "y")),
        ]);
        assert!(matches!(dup, Err(Error::AlreadyExists(_))));
        assert!(
            t.get(Table::Entities, &["e4".into()]).unwrap().is_none(),
            "nothing of a failed batch lands"
        );

        let path = AccessPath::IndexPrefix {
            index: IndexId::EntityType,
            prefixes: vec![vec!["person".into()]],
        };
        assert_eq!(t.resolve(Table::Entities, &path).unwrap(), Some(vec![1, 3]));
        let mut cursor = t
            .scan(Table::Entities, &AccessPath::FullScan, None)
            .unwrap();
        assert_eq!(cursor.next_chunk(2).unwrap().len(), 2);
        assert_eq!(cursor.next_chunk(2).unwrap().len(), 1);
        assert!(cursor.next_chunk(2).unwrap().is_empty());

        // Updating the type moves the index entry.
        t.apply(vec![WriteOp::Update(entity("e1", "robot", "Ada"))])
            .unwrap();
        assert_eq!(t.resolve(Table::Entities, &path).unwrap(), Some(vec![3]));
        assert_eq!(
            t.apply(vec![WriteOp::Delete {
                table: Table::Entities,
                key: vec!["e3".into()]
            }])
            .unwrap(),
            [1]
        );
        assert_eq!(t.resolve(Table::Entities, &path).unwrap(), Some(vec![]));
        assert_eq!(t.count(Table::Entities).unwrap(), 2);

        // Row ids keep growing across reopen.
        drop((t, cursor, storage));
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        let t = storage.tenant("a").unwrap();
        t.apply(vec![WriteOp::Insert(entity("e5", "person", "Eve"))])
            .unwrap();
        assert_eq!(
            t.get(Table::Entities, &["e5".into()]).unwrap().unwrap().0,
            4
        );
    }

    #[test]
    fn the_time_index_holds_current_rows() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        storage.create_tenant("a").unwrap();
        let t = storage.tenant("a").unwrap();
        let moment = |id: &str, ts: i64, ty: &str| {
            Row::Moment(Moment {
                id: id.into(),
                timestamp: ts,
                moment_type: ty.into(),
                ..Default::default()
            })
        };
        t.apply(
            (1..=4)
                .map(|i| WriteOp::Insert(moment(&format!("m{i}"), i * 10, "note")))
                .collect(),
        )
        .unwrap();
        // An update keeps the copy current; one that moves the timestamp moves it.
        t.apply(vec![
            WriteOp::Update(moment("m2", 20, "chat")),
            WriteOp::Update(moment("m3", 50, "call")),
        ])
        .unwrap();
        // An entry written before the index held rows (an empty value) is read through
        // its row.
        let cf = t.cf().unwrap();
        let key = keys::index_key(IndexId::MomentTimestamp, &[KeyPart::I64(40)], 4);
        t.db.put_cf(&cf, key, []).unwrap();
        let walk = |descending| AccessPath::IndexRange {
            index: IndexId::MomentTimestamp,
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            descending,
        };
        let read = |descending| -> Vec<(String, i64, String)> {
            let mut cursor = t.scan(Table::Moments, &walk(descending), None).unwrap();
            cursor
                .next_chunk(100)
                .unwrap()
                .into_iter()
                .map(|(_, row)| match row {
                    Row::Moment(m) => (m.id, m.timestamp, m.moment_type),
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        let expect = |id: &str, ts: i64, ty: &str| (id.to_string(), ts, ty.to_string());
        assert_eq!(
            read(true),
            [
                expect("m3", 50, "call"),
                expect("m4", 40, "note"),
                expect("m2", 20, "chat"),
                expect("m1", 10, "note"),
            ]
        );
        t.apply(vec![WriteOp::Delete {
            table: Table::Moments,
            key: vec!["m4".into()],
        }])
        .unwrap();
        assert_eq!(read(false).len(), 3);
        // Resolving ids does not need the rows.
        assert_eq!(
            t.resolve(Table::Moments, &walk(false)).unwrap(),
            Some(vec![1, 2, 3])
        );
    }

    #[test]
    fn prefix_scans_read_only_what_a_limit_needs() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        storage.create_tenant("a").unwrap();
        let t = storage.tenant("a").unwrap();
        let ops = (0..500)
            .map(|i| {
                let ty = if i % 2 == 0 { "person" } else { "project" };
                WriteOp::Insert(entity(&format!("e{i:03}"), ty, &format!("n{i}")))
            })
            .collect();
        t.apply(ops).unwrap();

        // Two prefixes (an IN list), walked one after the other, 10 rows at a time.
        let path = AccessPath::IndexPrefix {
            index: IndexId::EntityType,
            prefixes: vec![vec!["project".into()], vec!["person".into()]],
        };
        let mut cursor = t.scan(Table::Entities, &path, Some(260)).unwrap();
        let first = cursor.next_chunk(10).unwrap();
        assert_eq!(first.len(), 10);
        assert_eq!(
            cursor.index_keys_read(),
            10,
            "a chunk reads only its own keys"
        );
        assert!(
            first
                .iter()
                .all(|(_, r)| matches!(r, Row::Entity(e) if e.entity_type == "project"))
        );
        let mut all = first;
        loop {
            let chunk = cursor.next_chunk(64).unwrap();
            if chunk.is_empty() {
                break;
            }
            all.extend(chunk);
        }
        assert_eq!(
            all.len(),
            260,
            "the limit stops the walk in the second prefix"
        );
        let persons = all
            .iter()
            .filter(|(_, r)| matches!(r, Row::Entity(e) if e.entity_type == "person"))
            .count();
        assert_eq!(persons, 10);
        assert_eq!(cursor.index_keys_read(), 260);

        // The same prefix twice gives each row once; primary prefixes walk lazily too.
        let twice = AccessPath::IndexPrefix {
            index: IndexId::EntityType,
            prefixes: vec![vec!["person".into()], vec!["person".into()]],
        };
        assert_eq!(
            t.resolve(Table::Entities, &twice).unwrap().unwrap().len(),
            250
        );
        let ids = AccessPath::PrimaryPrefix {
            prefixes: vec![
                vec!["e007".into()],
                vec!["e003".into()],
                vec!["nope".into()],
            ],
        };
        let rows = t
            .scan(Table::Entities, &ids, None)
            .unwrap()
            .next_chunk(10)
            .unwrap();
        let names: Vec<&str> = rows
            .iter()
            .map(|(_, r)| match r {
                Row::Entity(e) => e.name.as_str(),
                _ => "",
            })
            .collect();
        assert_eq!(names, ["n7", "n3"]);
    }

    #[test]
    fn timestamp_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path(), StorageOptions::default()).unwrap();
        storage.create_tenant("a").unwrap();
        let t = storage.tenant("a").unwrap();
        let ops = (0..10)
            .map(|i| {
                WriteOp::Insert(Row::Moment(Moment {
                    id: format!("m{i}"),
                    timestamp: (i - 5) * 10,
                    moment_type: "chat".into(),
                    ..Default::default()
                }))
            })
            .collect();
        t.apply(ops).unwrap();
        let range = |lower, upper| {
            let path = AccessPath::IndexRange {
                index: IndexId::MomentTimestamp,
                lower,
                upper,
                descending: false,
            };
            t.resolve(Table::Moments, &path).unwrap().unwrap().len()
        };
        let ts = |v: i64| vec![KeyPart::I64(v)];
        assert_eq!(range(Bound::Included(ts(-20)), Bound::Excluded(ts(10))), 3);
        assert_eq!(range(Bound::Excluded(ts(-20)), Bound::Included(ts(10))), 3);
        assert_eq!(range(Bound::Unbounded, Bound::Excluded(ts(0))), 5);
        assert_eq!(range(Bound::Included(ts(100)), Bound::Unbounded), 0);
        assert_eq!(range(Bound::Included(ts(10)), Bound::Excluded(ts(0))), 0);
    }
}
