//! Storage layer: walks of keys. A [`KeyWalk`] reads key ranges (primary-key prefixes,
//! index prefixes and ranges) a chunk of keys at a time, each chunk narrowing its range
//! past the keys read, returning each row id once; an [`OrderedWalk`] walks a user index
//! in order, keeping the rows of a set.

use std::collections::HashSet;
use std::ops::Bound;
use std::sync::Arc;

use rocksdb::{IteratorMode, ReadOptions};

use super::family::Handle;
use super::json_index;
use super::keys;
use super::keys::{decode_row_id, index_row_id};
use super::{AccessPath, IndexDef, IndexId, KeyPart, KeyRange, Row, RowBitmap, TenantStore};
use crate::error::Result;

/// A row id and, from an index that holds rows, the encoded row.
pub(super) type Entry = (u64, Option<Box<[u8]>>);

/// The key range `[start, end)` of the index entries between two bounds of values.
pub(super) fn index_range_keys(
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
pub(super) enum IdIn {
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
pub(super) struct KeyWalk {
    /// The ranges still to walk; the first one is in progress.
    pub(super) ranges: std::collections::VecDeque<KeyRange>,
    pub(super) descending: bool,
    pub(super) id_in: IdIn,
    /// Row ids returned so far: a row listed in two ranges (an IN list over a list-valued
    /// column) or whose key moved ahead of the walk between two chunks (its value was
    /// updated) is returned once.
    pub(super) returned: HashSet<u64>,
    /// The entries' values are copies of their rows (see [`IndexId::holds_rows`]).
    pub(super) with_rows: bool,
    /// Only rows of this set are returned (the others' entries are skipped).
    pub(super) keep: Option<Arc<RowBitmap>>,
    /// Entries the walk may still visit; when spent, it stops (see [`OrderedWalk`]).
    pub(super) budget: usize,
    /// Entries visited and passed over (rows outside `keep`, or returned already).
    pub(super) skipped: usize,
}

impl KeyWalk {
    pub(super) fn new(ranges: Vec<KeyRange>, descending: bool, id_in: IdIn) -> Self {
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
    pub(super) fn prefixes(starts: impl IntoIterator<Item = Vec<u8>>, id_in: IdIn) -> Self {
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
    pub(super) fn next_entries(&mut self, family: &Handle<'_>, max: usize) -> Result<Vec<Entry>> {
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
            for item in family.iterate(read_options, mode) {
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

/// An ordered walk that passes over this many entries of rows outside its set asks for
/// the set's order to be listed in memory for the next walks (a walk that long costs
/// more than listing the order once).
/// A walk that gives up on the index early (a set under 128 rows) does not ask.
pub(super) const ORDER_AFTER_SKIPPED: usize = 4096;

/// The rows of a set in the order of a user value index (see [`AccessPath::IndexOrder`]).
pub(super) struct OrderedWalk {
    pub(super) walk: KeyWalk,
    pub(super) index: IndexDef,
    pub(super) descending: bool,
    /// Once the walk's budget is spent: the rest of the set, read and sorted (reversed,
    /// so that the next entry is popped from the end).
    pub(super) sorted: Option<Vec<Entry>>,
    /// The path of the set (`walk.keep`), for asking for its order.
    pub(super) within: AccessPath,
    /// The set's rows in index order, from memory, and how many were taken: read
    /// instead of the walk.
    pub(super) kept: Option<(Arc<Vec<u64>>, usize)>,
    /// The set's order was asked for (once per walk).
    pub(super) order_asked: bool,
}

impl OrderedWalk {
    pub(super) fn next_entries(
        &mut self,
        store: &TenantStore,
        family: &Handle<'_>,
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
            out = self.walk.next_entries(family, max)?;
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
            self.sorted = Some(self.sort_rest(family)?);
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
    pub(super) fn sort_rest(&self, family: &Handle<'_>) -> Result<Vec<Entry>> {
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
        let values = family.multi_get(&row_keys);
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
