//! Candidate sets of filtered vector searches, kept in memory between queries.
//!
//! A filtered vector search needs the rows its filter's indexes name (the candidate
//! set) as a bitmap it can test inside the graph walk. Reading half a million ids from
//! a RocksDB index (1M rows at 50% selectivity) costs far more than the search itself
//! (docs/BENCHMARKS.md, W-HYB), so [`TenantStore::candidates`] keeps the sets it
//! resolved, per access path, until the tenant's next write:
//!
//! - Every committed write (rows, index DDL) bumps the tenant's
//!   generation after it lands; a set is used only while the generation it was read at
//!   is current. Invalidation is all-or-nothing per tenant: simple and always correct,
//!   and right for the read-mostly memory workloads remdb serves.
//! - A set small enough to read within the search's cap is read in line and kept.
//!   A larger one is answered "many" for this query (the search post-filters) and read
//!   on a background thread, one per tenant at a time, so that the next search on the
//!   same filter gets the whole set.
//! - All tenants' sets share one bound (`StorageOptions::candidate_cache_bytes`); a
//!   tenant over it drops its own oldest sets first, and keeps none when that is not
//!   enough. A dropped or closed tenant gives its bytes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{AccessPath, Candidates, IndexDef, TenantStore, keys};
use crate::error::{Error, Result};
use crate::storage::Table;
use crate::vector::{SetVectors, VectorIndex};

/// The vectors of sets up to this many rows are kept for exact scoring (96 MiB at 768
/// dimensions); larger sets are over-fetched, not scored.
pub const MAX_KEPT_SET_VECTORS: usize = 32_768;

/// The bytes of candidate sets held by all tenants of a database, and their bound.
#[derive(Debug)]
pub(super) struct CandidateBudget {
    used: AtomicUsize,
    max: usize,
}

impl CandidateBudget {
    pub(super) fn new(max: usize) -> CandidateBudget {
        CandidateBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }
}

/// A set of row ids as a dense bitmap: constant-time membership for the graph walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowBitmap {
    words: Vec<u64>,
    len: usize,
}

impl RowBitmap {
    /// The set of `ids` (any order, duplicates allowed).
    pub fn from_ids(ids: &[u64]) -> RowBitmap {
        let max = ids.iter().copied().max().unwrap_or(0) as usize;
        let mut words = vec![0u64; max / 64 + 1];
        let mut len = 0;
        for id in ids {
            let (w, bit) = (*id as usize / 64, 1u64 << (id % 64));
            if words[w] & bit == 0 {
                words[w] |= bit;
                len += 1;
            }
        }
        RowBitmap { words, len }
    }

    pub fn contains(&self, id: u64) -> bool {
        self.words
            .get(id as usize / 64)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// How many ids the set holds.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The ids, ascending.
    pub fn ids(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.len);
        for (i, word) in self.words.iter().enumerate() {
            let mut w = *word;
            while w != 0 {
                out.push(i as u64 * 64 + w.trailing_zeros() as u64);
                w &= w - 1;
            }
        }
        out
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

/// What the cache keeps for a path: its set, its rows' vectors copied out of the HNSW
/// index (for the exact scoring of a hot filter), or its row ids in the order of a
/// column index (for the ordered walks of a hot filter, see [`TenantStore::kept_order`]).
#[derive(Debug, Clone)]
enum Kept {
    Set(Arc<RowBitmap>),
    Vectors(Arc<SetVectors>),
    /// The id of the user index, and the set's row ids in its key order.
    Order(u32, Arc<Vec<u64>>),
}

impl Kept {
    fn bytes(&self) -> usize {
        match self {
            Kept::Set(set) => set.bytes(),
            Kept::Vectors(vectors) => vectors.bytes(),
            Kept::Order(_, ids) => ids.len() * 8,
        }
    }

    fn same_kind(&self, other: &Kept) -> bool {
        match (self, other) {
            (Kept::Set(_), Kept::Set(_)) | (Kept::Vectors(_), Kept::Vectors(_)) => true,
            (Kept::Order(a, _), Kept::Order(b, _)) => a == b,
            _ => false,
        }
    }
}

/// The candidate sets of one tenant and the write generation they are valid for.
#[derive(Debug)]
pub(super) struct CandidateState {
    /// Bumped after every committed write.
    generation: std::sync::atomic::AtomicU64,
    cache: parking_lot::Mutex<CandidateCache>,
}

impl CandidateState {
    pub(super) fn new(budget: Arc<CandidateBudget>) -> CandidateState {
        CandidateState {
            generation: std::sync::atomic::AtomicU64::new(0),
            cache: parking_lot::Mutex::new(CandidateCache::new(budget)),
        }
    }
}

/// The candidate sets (and set vectors) of one tenant, valid for one generation.
#[derive(Debug)]
pub(super) struct CandidateCache {
    budget: Arc<CandidateBudget>,
    generation: u64,
    /// Oldest first.
    entries: Vec<(Table, AccessPath, Kept)>,
    bytes: usize,
    /// A background read is under way.
    filling: bool,
}

impl CandidateCache {
    pub(super) fn new(budget: Arc<CandidateBudget>) -> CandidateCache {
        CandidateCache {
            budget,
            generation: 0,
            entries: Vec::new(),
            bytes: 0,
            filling: false,
        }
    }

    /// Forgets everything read before `generation`.
    fn at(&mut self, generation: u64) -> &mut CandidateCache {
        if self.generation != generation {
            self.entries.clear();
            self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
            self.bytes = 0;
            self.generation = generation;
        }
        self
    }

    fn find(&self, table: Table, path: &AccessPath, like: &Kept) -> Option<&Kept> {
        self.entries
            .iter()
            .find(|(t, p, kept)| *t == table && p == path && kept.same_kind(like))
            .map(|(_, _, kept)| kept)
    }

    fn get(&self, table: Table, path: &AccessPath) -> Option<Arc<RowBitmap>> {
        self.entries.iter().find_map(|(t, p, kept)| match kept {
            Kept::Set(set) if *t == table && p == path => Some(Arc::clone(set)),
            _ => None,
        })
    }

    fn get_vectors(&self, table: Table, path: &AccessPath) -> Option<Arc<SetVectors>> {
        self.entries.iter().find_map(|(t, p, kept)| match kept {
            Kept::Vectors(v) if *t == table && p == path => Some(Arc::clone(v)),
            _ => None,
        })
    }

    fn get_order(&self, table: Table, path: &AccessPath, index: u32) -> Option<Arc<Vec<u64>>> {
        self.entries.iter().find_map(|(t, p, kept)| match kept {
            Kept::Order(i, ids) if *i == index && *t == table && p == path => Some(Arc::clone(ids)),
            _ => None,
        })
    }

    #[cfg(test)]
    fn put(&mut self, table: Table, path: &AccessPath, set: Arc<RowBitmap>) {
        self.keep(table, path, Kept::Set(set));
    }

    fn keep(&mut self, table: Table, path: &AccessPath, kept: Kept) {
        if self.find(table, path, &kept).is_some() {
            return;
        }
        let bytes = kept.bytes();
        let over = |cache: &CandidateCache| {
            cache.budget.used.load(Ordering::Acquire) + bytes > cache.budget.max
        };
        while over(self) && !self.entries.is_empty() {
            let (_, _, old) = self.entries.remove(0);
            self.bytes -= old.bytes();
            self.budget.used.fetch_sub(old.bytes(), Ordering::AcqRel);
        }
        if over(self) {
            return;
        }
        self.bytes += bytes;
        self.budget.used.fetch_add(bytes, Ordering::AcqRel);
        self.entries.push((table, path.clone(), kept));
    }
}

impl Drop for CandidateCache {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Clears the tenant's `filling` flag when dropped: at the end of a background read, also
/// when the read panics or its thread could not start (the closure holding it is
/// dropped), so that one failure does not stop every later background read.
struct FillingDone(TenantStore);

impl Drop for FillingDone {
    fn drop(&mut self) {
        self.0.state.candidates.cache.lock().filling = false;
    }
}

/// Paths whose sets are worth keeping: those read from secondary indexes.
fn cacheable(path: &AccessPath) -> bool {
    matches!(
        path,
        AccessPath::RowSet(_) | AccessPath::IndexPrefix { .. } | AccessPath::IndexRange { .. }
    )
}

impl TenantStore {
    /// The tenant's write generation: bumped after every committed write.
    pub(super) fn generation(&self) -> u64 {
        self.state.candidates.generation.load(Ordering::Acquire)
    }

    /// Marks a committed write (called with the write lock held, after the write).
    pub(super) fn bump_generation(&self) {
        self.state
            .candidates
            .generation
            .fetch_add(1, Ordering::AcqRel);
    }

    /// The candidate set of `path` for a filtered vector search: from memory when an
    /// earlier search read it and nothing was written since ([`Candidates::Set`]),
    /// else as [`TenantStore::resolve_at_most`] answers with `cap`. A set with more
    /// than `cap` rows (or a superset) is then read whole in the background for the
    /// next search.
    pub fn candidates(&self, table: Table, path: &AccessPath, cap: usize) -> Result<Candidates> {
        if !cacheable(path) {
            return self.resolve_at_most(table, path, cap);
        }
        if let Some(set) = self.cached_candidates(table, path) {
            return Ok(Candidates::Set(set));
        }
        let generation = self.generation();
        let found = self.resolve_at_most(table, path, cap)?;
        Ok(match found {
            Candidates::Ids {
                ids,
                superset: false,
            } => Candidates::Set(self.keep_candidates(table, path, generation, &ids)),
            Candidates::Ids { superset: true, .. } | Candidates::Many => {
                self.fill_in_background(table, path);
                found
            }
            Candidates::All | Candidates::Set(_) => found,
        })
    }

    /// The whole candidate set of `path` (`None` for a full scan): from memory, else read
    /// now and kept.
    pub fn all_candidates(
        &self,
        table: Table,
        path: &AccessPath,
    ) -> Result<Option<Arc<RowBitmap>>> {
        if let Some(set) = self.cached_candidates(table, path) {
            return Ok(Some(set));
        }
        let generation = self.generation();
        Ok(self
            .resolve(table, path)?
            .map(|ids| self.keep_candidates(table, path, generation, &ids)))
    }

    /// The whole candidate set of `path`, if it is in memory and current.
    pub fn cached_candidates(&self, table: Table, path: &AccessPath) -> Option<Arc<RowBitmap>> {
        let generation = self.generation();
        self.state
            .candidates
            .cache
            .lock()
            .at(generation)
            .get(table, path)
    }

    /// The whole set `ids` of `path`, read at `generation`, as a bitmap; kept for later
    /// searches unless a write landed since or the path is not cacheable.
    fn keep_candidates(
        &self,
        table: Table,
        path: &AccessPath,
        generation: u64,
        ids: &[u64],
    ) -> Arc<RowBitmap> {
        let set = Arc::new(RowBitmap::from_ids(ids));
        if cacheable(path) {
            self.keep_current(table, path, generation, Kept::Set(Arc::clone(&set)));
        }
        set
    }

    /// Keeps `kept`, read for `path` at `generation`, unless a write landed since.
    /// Checked under the cache lock: a write bumps the generation after it commits, so
    /// what was read across a write is either dropped here or outdated at once.
    fn keep_current(&self, table: Table, path: &AccessPath, generation: u64, kept: Kept) {
        let mut cache = self.state.candidates.cache.lock();
        if self.generation() == generation {
            cache.at(generation).keep(table, path, kept);
        }
    }

    /// Runs `read` on a background thread, the tenant's one background reader: nothing
    /// when another read is under way. The flag is cleared when `read` ends, also when it
    /// panics or its thread cannot start.
    fn read_in_background(&self, name: &str, read: impl FnOnce(TenantStore) + Send + 'static) {
        {
            let mut cache = self.state.candidates.cache.lock();
            if cache.filling {
                return;
            }
            cache.filling = true;
        }
        let done = FillingDone(self.clone());
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let _done = done;
                read(store);
            });
        if let Err(e) = spawned {
            tracing::debug!(error = %e, thread = name, "no thread for a background read");
        }
    }

    /// The exact distances from `query` to the vectors of `set`, the set of `path`: from
    /// a copy of those vectors in memory when an earlier search made one and nothing was
    /// written since, else read from the index, and copied for the next search when the
    /// path is cacheable and the set has at most [`MAX_KEPT_SET_VECTORS`] rows. Also
    /// says whether the vectors came from memory.
    pub fn exact_distances(
        &self,
        table: Table,
        path: &AccessPath,
        set: &RowBitmap,
        index: &VectorIndex,
        query: &[f32],
    ) -> Result<(Vec<(u64, f32)>, bool)> {
        if !cacheable(path) || set.len() > MAX_KEPT_SET_VECTORS {
            return Ok((index.exact_distances(query, &set.ids())?, false));
        }
        let generation = self.generation();
        let kept = self
            .state
            .candidates
            .cache
            .lock()
            .at(generation)
            .get_vectors(table, path);
        if let Some(vectors) = kept {
            return Ok((vectors.distances(query)?, true));
        }
        // The ids are listed only when the vectors are not in memory yet.
        let vectors = Arc::new(index.copy_vectors(&set.ids())?);
        self.keep_current(table, path, generation, Kept::Vectors(Arc::clone(&vectors)));
        Ok((vectors.distances(query)?, false))
    }

    /// Reads the whole set of `path` on a background thread (one per tenant at a time).
    fn fill_in_background(&self, table: Table, path: &AccessPath) {
        let path = path.clone();
        self.read_in_background("remdb-candidates", move |store| {
            let generation = store.generation();
            match store.resolve(table, &path) {
                Ok(Some(ids)) => {
                    store.keep_candidates(table, &path, generation, &ids);
                }
                Ok(None) => {}
                // A dropped tenant or a dropped index: the next search says so.
                Err(e) => tracing::debug!(error = %e, "candidate set not read"),
            }
        });
    }

    /// The rows of the set of `path` in the key order of the column index `index`, if a
    /// background read made that list and nothing was written since (see
    /// [`TenantStore::fill_order_in_background`]).
    pub(super) fn kept_order(
        &self,
        table: Table,
        path: &AccessPath,
        index: &IndexDef,
    ) -> Option<Arc<Vec<u64>>> {
        let generation = self.generation();
        self.state
            .candidates
            .cache
            .lock()
            .at(generation)
            .get_order(table, path, index.id)
    }

    /// Lists, on a background thread (one per tenant at a time, shared with
    /// [`TenantStore::candidates`]), the rows of the kept set of `path` in the key order of
    /// the column index `index`, by walking that index's keys once: an ordered walk over
    /// a hot filter then reads its rows in order from memory instead of skipping the
    /// entries of rows outside the set. Kept like the set, until the next write.
    pub(super) fn fill_order_in_background(
        &self,
        table: Table,
        path: &AccessPath,
        index: &IndexDef,
    ) {
        if !cacheable(path) || !index.is_column() {
            return;
        }
        let path = path.clone();
        let index = index.clone();
        self.read_in_background("remdb-order", move |store| {
            let generation = store.generation();
            let Some(set) = store.cached_candidates(table, &path) else {
                return;
            };
            match store.index_order(table, &index, &set) {
                Ok(ids) => store.keep_current(
                    table,
                    &path,
                    generation,
                    Kept::Order(index.id, Arc::new(ids)),
                ),
                // A dropped tenant or index: the next query says so.
                Err(e) => tracing::debug!(error = %e, "set order not read"),
            }
        });
    }

    /// The ids of `set` in the key order of the column index `index` (one entry per
    /// row), from a walk over the index's keys that reads no value.
    fn index_order(&self, table: Table, index: &IndexDef, set: &RowBitmap) -> Result<Vec<u64>> {
        let family = self.family()?;
        let prefix = keys::user_index_prefix(table, index.id);
        let mut read_options = rocksdb::ReadOptions::default();
        // One pass over the whole index: the block cache stays with the queries' blocks.
        read_options.fill_cache(false);
        if let Some(end) = keys::prefix_successor(&prefix) {
            read_options.set_iterate_upper_bound(end);
        }
        let mut iter = family.raw_iterator(read_options);
        iter.seek(&prefix);
        let mut ids = Vec::with_capacity(set.len());
        while let Some(key) = iter.key() {
            let id = keys::trailing_row_id(key)
                .ok_or_else(|| Error::Corruption("short index key".into()))?;
            if set.contains(id) {
                ids.push(id);
            }
            iter.next();
        }
        iter.status()?;
        ids.shrink_to_fit();
        Ok(ids)
    }

    /// Whether a background read of a candidate set is under way (for tests and benches
    /// that wait for it).
    pub fn filling_candidates(&self) -> bool {
        self.state.candidates.cache.lock().filling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmaps_hold_sets() {
        let set = RowBitmap::from_ids(&[130, 3, 64, 3, 0]);
        assert_eq!(set.len(), 4);
        assert_eq!(set.ids(), vec![0, 3, 64, 130]);
        assert!(set.contains(64) && set.contains(130) && !set.contains(65));
        assert!(!set.contains(1 << 40));
        let empty = RowBitmap::from_ids(&[]);
        assert!(empty.is_empty() && empty.ids().is_empty());
    }

    /// Sets of 8 KiB each (ids up to 65,535) under a 20 KiB bound shared by two caches.
    #[test]
    fn caches_share_one_bound() {
        let budget = Arc::new(CandidateBudget::new(20 << 10));
        let path = |n: u64| AccessPath::PrimaryPrefix {
            prefixes: vec![vec![super::super::KeyPart::I64(n as i64)]],
        };
        let set = |n: u64| Arc::new(RowBitmap::from_ids(&[n, 65_535]));
        let mut a = CandidateCache::new(Arc::clone(&budget));
        let mut b = CandidateCache::new(Arc::clone(&budget));
        a.put(Table::Resources, &path(1), set(1));
        a.put(Table::Resources, &path(2), set(2));
        assert_eq!(budget.used.load(Ordering::Acquire), 16 << 10);
        // b is over the bound with nothing of its own to drop: it keeps nothing.
        b.put(Table::Resources, &path(3), set(3));
        assert!(b.get(Table::Resources, &path(3)).is_none());
        // a drops its oldest set for a new one.
        a.put(Table::Resources, &path(4), set(4));
        assert!(a.get(Table::Resources, &path(1)).is_none());
        assert_eq!(a.get(Table::Resources, &path(4)), Some(set(4)));
        assert_eq!(budget.used.load(Ordering::Acquire), 16 << 10);
        // A new generation forgets the old sets; a dropped cache gives its bytes back.
        a.at(1);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
        b.put(Table::Resources, &path(3), set(3));
        assert_eq!(budget.used.load(Ordering::Acquire), 8 << 10);
        drop(b);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }
}
