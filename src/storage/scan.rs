//! Storage layer: reads. An access path resolved to row ids ([`TenantStore::resolve`],
//! [`TenantStore::resolve_at_most`]), and [`RowCursor`], which reads a scan's rows a chunk
//! at a time from a key walk, an ordered walk or a list of row ids.

use std::ops::Bound;

use super::family::Handle;
use super::keys;
use super::walk::{Entry, IdIn, KeyWalk, OrderedWalk, index_range_keys};
use super::{
    AccessPath, Candidates, IndexDef, KeySet, Row, RowSet, Table, TenantStore, ValueRange,
};
use crate::error::{Error, Result};

pub(super) enum Source {
    /// A full scan; `next` is the key to resume from.
    Table { next: Option<Vec<u8>> },
    /// Row ids resolved from an index.
    Ids { ids: Vec<u64>, pos: usize },
    /// Row ids read lazily from key ranges, in key order.
    Walk(KeyWalk),
    /// The rows of a set in the order of a user index.
    Ordered(Box<OrderedWalk>),
}

/// Reading one row by id costs about as much as visiting this many index entries (a
/// random read against a step of an iterator): an ordered walk gives up on the index
/// after this many entries per row of its set, and sorts the rest of the set.
pub(super) const ENTRIES_PER_ROW_READ: usize = 32;

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
        let family = self.store.family()?;
        let mut out = Vec::with_capacity(want.min(8192));
        match &mut self.source {
            Source::Table { next } => {
                let Some(start) = next.take() else {
                    return Ok(vec![]);
                };
                let end = keys::prefix_successor(&keys::row_prefix(self.table));
                let mut last = None;
                for item in family.range(start, end) {
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
                        .next_entries(&self.store, &family, want - out.len())?;
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
                        family.multi_get(&row_keys)
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
        let family = self.store.family()?;
        // Counting needs no rows.
        if let Source::Walk(walk) = &mut self.source {
            walk.with_rows = false;
        }
        let n = self
            .source
            .next_entries(&self.store, &family, n.min(self.remaining))?
            .len();
        self.keys_read += n;
        self.remaining -= n;
        Ok(n)
    }
}

impl Source {
    /// The next row ids of an index source (empty for a full scan or when exhausted),
    /// with their rows where the index holds them.
    pub(super) fn next_entries(
        &mut self,
        store: &TenantStore,
        family: &Handle<'_>,
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
            Source::Walk(walk) => walk.next_entries(family, max),
            Source::Ordered(ordered) => ordered.next_entries(store, family, max),
        }
    }
}

impl TenantStore {
    /// Resolves an index path to row ids (without duplicates; in index order, and in
    /// row-id order for a [`RowSet`]); `None` for a full scan.
    pub fn resolve(&self, table: Table, path: &AccessPath) -> Result<Option<Vec<u64>>> {
        match reading(table, path) {
            Reading::Table => Ok(None),
            Reading::Set(set) => self.row_set(set).map(Some),
            Reading::Nearest { query, k, ef } => Ok(Some(
                self.nearest(table, query, k, ef)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect(),
            )),
            Reading::Keys(walk) => self.walk_ids(walk, usize::MAX),
            Reading::Ordered { within, .. } => self.resolve(table, within),
        }
    }

    /// The vector search of a path: only resources have embeddings.
    fn nearest(
        &self,
        table: Table,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
    ) -> Result<Vec<(u64, f32)>> {
        if table != Table::Resources {
            return Err(Error::invalid(format!(
                "{} has no embeddings",
                table.name()
            )));
        }
        self.search_vectors(query, k, ef, None)
    }

    /// The row ids a key walk finds, in walk order, or `None` once there are more than
    /// `cap`. Only the ids are wanted: rows held by the index are not copied out.
    pub(super) fn walk_ids(&self, mut walk: KeyWalk, cap: usize) -> Result<Option<Vec<u64>>> {
        let family = self.family()?;
        walk.with_rows = false;
        let mut ids = Vec::new();
        loop {
            let want = cap.saturating_add(1).saturating_sub(ids.len()).min(8192);
            let chunk = walk.next_entries(&family, want)?;
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
        match reading(table, path) {
            Reading::Table => Ok(Candidates::All),
            Reading::Set(set) => Ok(match self.row_set_at_most(set, cap)? {
                Some((ids, superset)) => Candidates::Ids { ids, superset },
                None => Candidates::Many,
            }),
            Reading::Nearest { query, k, ef } => {
                let mut ids: Vec<u64> = self
                    .nearest(table, query, k, ef)?
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                Ok(Candidates::Ids {
                    ids,
                    superset: false,
                })
            }
            Reading::Keys(walk) => Ok(match self.walk_ids(walk, cap)? {
                Some(mut ids) => {
                    ids.sort_unstable();
                    Candidates::Ids {
                        ids,
                        superset: false,
                    }
                }
                None => Candidates::Many,
            }),
            Reading::Ordered { within, .. } => self.resolve_at_most(table, within, cap),
        }
    }

    /// Opens a cursor over the rows a path selects, stopping after `limit` rows. Key
    /// ranges are walked lazily, so a limit reads only the entries it needs; an AND/OR
    /// index set and a vector search are resolved first.
    pub fn scan(&self, table: Table, path: &AccessPath, limit: Option<usize>) -> Result<RowCursor> {
        let source = match reading(table, path) {
            Reading::Keys(walk) => Source::Walk(walk),
            Reading::Set(RowSet::Keys(keys)) => {
                Source::Walk(KeyWalk::new(self.key_ranges(keys)?, false, IdIn::Key))
            }
            Reading::Ordered {
                index,
                descending,
                within,
                range,
            } => Source::Ordered(Box::new(
                self.ordered_walk(table, index, descending, within, range)?,
            )),
            Reading::Table | Reading::Set(_) | Reading::Nearest { .. } => {
                match self.resolve(table, path)? {
                    None => Source::Table {
                        next: Some(keys::row_prefix(table)),
                    },
                    Some(ids) => Source::Ids { ids, pos: 0 },
                }
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
    pub(super) fn ordered_walk(
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
        let keys = KeySet::user(index, std::slice::from_ref(range))?;
        let mut walk = KeyWalk::new(keys.ranges, descending, IdIn::Key);
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
        let family = self.family()?;
        let start = keys::row_prefix(table);
        let end = keys::prefix_successor(&start);
        let mut n = 0;
        for item in family.range(start, end) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

/// A path as it is read.
pub(super) enum Reading<'a> {
    /// Key ranges of the primary key or of a built-in index, walked lazily.
    Keys(KeyWalk),
    /// Every row of the table.
    Table,
    /// A set of row ids from the indexes (one index's key ranges, or an AND/OR of sets).
    Set(&'a RowSet),
    /// The `k` nearest resources.
    Nearest {
        query: &'a [f32],
        k: usize,
        ef: Option<usize>,
    },
    /// A user index walked in order within another path's rows.
    Ordered {
        index: &'a IndexDef,
        descending: bool,
        within: &'a AccessPath,
        range: &'a ValueRange,
    },
}

/// How `path` of `table` is read.
pub(super) fn reading(table: Table, path: &AccessPath) -> Reading<'_> {
    match path {
        AccessPath::FullScan => Reading::Table,
        AccessPath::RowSet(set) => Reading::Set(set),
        AccessPath::Nearest { query, k, ef } => Reading::Nearest {
            query,
            k: *k,
            ef: *ef,
        },
        AccessPath::IndexOrder {
            index,
            descending,
            within,
            range,
        } => Reading::Ordered {
            index,
            descending: *descending,
            within,
            range,
        },
        AccessPath::PrimaryPrefix { prefixes } => Reading::Keys(KeyWalk::prefixes(
            prefixes.iter().map(|p| keys::primary_key(table, p)),
            IdIn::Value,
        )),
        AccessPath::IndexPrefix { index, prefixes } => Reading::Keys(KeyWalk::prefixes(
            prefixes.iter().map(|p| keys::index_prefix(*index, p)),
            IdIn::Key,
        )),
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
            Reading::Keys(walk)
        }
    }
}
