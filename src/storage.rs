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
pub use rows::{
    Edge, Entity, IndexId, KeyPart, Micros, Moment, Resource, Row, Table, normalize_name,
    now_micros,
};

type Rocks = DBWithThreadMode<MultiThreaded>;
type KeyValue = (Box<[u8]>, Box<[u8]>);

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
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions {
            block_cache_bytes: 256 << 20,
            total_write_buffer_bytes: 256 << 20,
            tenant_write_buffer_bytes: 8 << 20,
            sync: false,
        }
    }
}

/// Checks a tenant id: 1..=64 bytes, no `/`, no `..`, no NUL or control characters.
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
    /// Serializes writers; guards the row-id counter (`None` until first loaded).
    write_lock: Mutex<Option<u64>>,
}

/// The RocksDB instance of one database directory and its tenants.
pub struct Storage {
    db: Arc<Rocks>,
    path: PathBuf,
    options: StorageOptions,
    cf_options: Options,
    tenants: RwLock<HashMap<String, Arc<TenantState>>>,
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
        std::fs::create_dir_all(&path)?;
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
        table_options.set_cache_index_and_filter_blocks(true);
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

        let tenants = existing
            .iter()
            .filter_map(|name| name.strip_prefix(TENANT_CF_PREFIX))
            .map(|id| (id.to_string(), Arc::new(tenant_state(id))))
            .collect();
        tracing::info!(path = %path.display(), "opened database");
        Ok(Storage {
            db: Arc::new(db),
            path,
            options,
            cf_options,
            tenants: RwLock::new(tenants),
            _cache: cache,
            _write_buffers: write_buffers,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a tenant (an empty column family).
    pub fn create_tenant(&self, id: &str) -> Result<()> {
        validate_tenant_id(id)?;
        let mut tenants = self.tenants.write();
        if tenants.contains_key(id) {
            return Err(Error::AlreadyExists(format!("tenant '{id}'")));
        }
        let state = tenant_state(id);
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
        self.db.drop_cf(&state.cf_name)?;
        tenants.remove(id);
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

    /// Bytes RocksDB holds in memtables over all tenants and in the shared block cache.
    pub fn memory_usage(&self) -> Result<(u64, u64)> {
        let memtables = self
            .db
            .property_int_value("rocksdb.cur-size-all-mem-tables")?
            .unwrap_or(0);
        Ok((memtables, self._cache.get_usage() as u64))
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
}

fn tenant_state(id: &str) -> TenantState {
    TenantState {
        id: id.to_string(),
        cf_name: format!("{TENANT_CF_PREFIX}{id}"),
        write_lock: Mutex::new(None),
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
    /// Rows whose entry in `index` lies between the bounds, in index order.
    IndexRange {
        index: IndexId,
        lower: Bound<Vec<KeyPart>>,
        upper: Bound<Vec<KeyPart>>,
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
        self.db
            .cf_handle(&self.state.cf_name)
            .ok_or_else(|| Error::NotFound(format!("tenant '{}' (dropped)", self.state.id)))
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
        for op in &mut ops {
            match op {
                WriteOp::Insert(row) | WriteOp::Update(row) | WriteOp::Replace { row, .. } => {
                    row.prepare(now)?
                }
                WriteOp::Delete { .. } | WriteOp::DeleteAt { .. } => {}
            }
        }

        let cf = self.cf()?;
        let mut next_row_id = self.state.write_lock.lock();
        let mut next = match *next_row_id {
            Some(n) => n,
            None => match self
                .db
                .get_cf(&cf, keys::meta_key(keys::META_NEXT_ROW_ID))?
            {
                Some(v) => decode_row_id(&v)?,
                None => 1,
            },
        };
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
                    put_row(&mut batch, &cf, &pk, row_id, &row)?;
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
                    delete_index_entries(&mut batch, &cf, &old, row_id);
                    put_row(&mut batch, &cf, &pk, row_id, &row)?;
                    counts.push(1);
                }
                WriteOp::Replace { row_id, mut row } => {
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
                    row.carry_over(&old, now);
                    delete_index_entries(&mut batch, &cf, &old, row_id);
                    put_row(&mut batch, &cf, &pk, row_id, &row)?;
                    counts.push(1);
                }
                WriteOp::Delete { table, key } => {
                    let n = match self.get(table, &key)? {
                        Some((row_id, old)) => {
                            let pk = keys::primary_key(table, &key);
                            self.claim(&mut touched_keys, &pk, &old)?;
                            delete_row(&mut batch, &cf, &old, row_id);
                            1
                        }
                        None => 0,
                    };
                    counts.push(n);
                }
                WriteOp::DeleteAt { table, row_id } => {
                    let n = match self.get_row(table, row_id)? {
                        Some(old) => {
                            let pk = keys::primary_key(table, &old.primary_key());
                            self.claim(&mut touched_keys, &pk, &old)?;
                            delete_row(&mut batch, &cf, &old, row_id);
                            1
                        }
                        None => 0,
                    };
                    counts.push(n);
                }
            }
        }
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
        *next_row_id = Some(next);
        Ok(counts)
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

    /// Resolves an index path to row ids (in index order, without duplicates); `None`
    /// for a full scan.
    pub fn resolve(&self, table: Table, path: &AccessPath) -> Result<Option<Vec<u64>>> {
        let cf = self.cf()?;
        let mut ids = Vec::new();
        let mut seen = HashSet::new();
        let mut push = |id: u64, ids: &mut Vec<u64>| {
            if seen.insert(id) {
                ids.push(id);
            }
        };
        match path {
            AccessPath::FullScan => return Ok(None),
            AccessPath::PrimaryPrefix { prefixes } => {
                for prefix in prefixes {
                    let start = keys::primary_key(table, prefix);
                    for item in self.range(&cf, start.clone(), keys::prefix_successor(&start)) {
                        let (_, value) = item?;
                        push(decode_row_id(&value)?, &mut ids);
                    }
                }
            }
            AccessPath::IndexPrefix { index, prefixes } => {
                for prefix in prefixes {
                    let start = keys::index_prefix(*index, prefix);
                    for item in self.range(&cf, start.clone(), keys::prefix_successor(&start)) {
                        let (key, _) = item?;
                        push(index_row_id(&key)?, &mut ids);
                    }
                }
            }
            AccessPath::IndexRange {
                index,
                lower,
                upper,
            } => {
                let base = keys::index_prefix(*index, &[]);
                let start = match lower {
                    Bound::Unbounded => base.clone(),
                    Bound::Included(v) => keys::index_prefix(*index, v),
                    Bound::Excluded(v) => keys::prefix_successor(&keys::index_prefix(*index, v))
                        .unwrap_or_else(|| base.clone()),
                };
                let end = match upper {
                    Bound::Unbounded => keys::prefix_successor(&base),
                    Bound::Included(v) => keys::prefix_successor(&keys::index_prefix(*index, v)),
                    Bound::Excluded(v) => Some(keys::index_prefix(*index, v)),
                };
                if end.as_ref().is_none_or(|end| start < *end) {
                    for item in self.range(&cf, start, end) {
                        let (key, _) = item?;
                        push(index_row_id(&key)?, &mut ids);
                    }
                }
            }
        }
        Ok(Some(ids))
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

    /// Opens a cursor over the rows a path selects, stopping after `limit` rows.
    pub fn scan(&self, table: Table, path: &AccessPath, limit: Option<usize>) -> Result<RowCursor> {
        let source = match self.resolve(table, path)? {
            None => Source::Table {
                next: Some(keys::row_prefix(table)),
            },
            Some(ids) => Source::Ids { ids, pos: 0 },
        };
        Ok(RowCursor {
            store: self.clone(),
            table,
            source,
            remaining: limit.unwrap_or(usize::MAX),
        })
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
) -> Result<()> {
    let table = row.table();
    batch.put_cf(cf, keys::row_key(table, row_id), row.encode()?);
    batch.put_cf(cf, pk, row_id.to_be_bytes());
    for (index, parts) in row.index_entries() {
        batch.put_cf(cf, keys::index_key(index, &parts, row_id), []);
    }
    Ok(())
}

fn delete_index_entries(
    batch: &mut WriteBatch,
    cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
    old: &Row,
    row_id: u64,
) {
    for (index, parts) in old.index_entries() {
        batch.delete_cf(cf, keys::index_key(index, &parts, row_id));
    }
}

fn delete_row(
    batch: &mut WriteBatch,
    cf: &Arc<rocksdb::BoundColumnFamily<'_>>,
    old: &Row,
    row_id: u64,
) {
    let table = old.table();
    batch.delete_cf(cf, keys::row_key(table, row_id));
    batch.delete_cf(cf, keys::primary_key(table, &old.primary_key()));
    delete_index_entries(batch, cf, old, row_id);
}

enum Source {
    /// A full scan; `next` is the key to resume from.
    Table { next: Option<Vec<u8>> },
    /// Row ids resolved from an index.
    Ids { ids: Vec<u64>, pos: usize },
}

/// Reads a scan's rows chunk by chunk. It holds no RocksDB iterator between chunks, so a
/// slow consumer pins nothing; each chunk sees the latest committed state.
pub struct RowCursor {
    store: TenantStore,
    table: Table,
    source: Source,
    remaining: usize,
}

impl RowCursor {
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
            Source::Ids { ids, pos } => {
                while out.len() < want && *pos < ids.len() {
                    let take = (want - out.len()).min(ids.len() - *pos);
                    let chunk = &ids[*pos..*pos + take];
                    *pos += take;
                    let row_keys: Vec<Vec<u8>> = chunk
                        .iter()
                        .map(|id| keys::row_key(self.table, *id))
                        .collect();
                    let values = self
                        .store
                        .db
                        .batched_multi_get_cf(&cf, row_keys.iter(), false);
                    for (id, value) in chunk.iter().zip(values) {
                        // A row deleted after its ids were resolved is skipped.
                        if let Some(bytes) = value? {
                            out.push((*id, Row::decode(self.table, &bytes)?));
                        }
                    }
                }
            }
        }
        self.remaining -= out.len();
        Ok(out)
    }

    /// The number of ids left, when the cursor was resolved from an index.
    pub fn resolved_len(&self) -> Option<usize> {
        match &self.source {
            Source::Ids { ids, pos } => Some((ids.len() - pos).min(self.remaining)),
            Source::Table { .. } => None,
        }
    }

    /// Consumes `n` resolved ids without reading their rows (for row counts).
    pub fn skip_resolved(&mut self, n: usize) -> usize {
        match &mut self.source {
            Source::Ids { ids, pos } => {
                let n = n.min(ids.len() - *pos).min(self.remaining);
                *pos += n;
                self.remaining -= n;
                n
            }
            Source::Table { .. } => 0,
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
