//! Storage layer: user-declared indexes over JSON paths, and row-id sets built from
//! indexes (no DataFusion).
//!
//! An [`IndexDef`] indexes one path of a JSON column (`resources.metadata`,
//! `entities.properties`, `edges.properties`, `moments.metadata`), or a text column itself
//! (`entities.name`, `resources.uri`: an empty path), whose index serves `ORDER BY` that
//! column (see [`AccessPath::IndexOrder`](super::AccessPath::IndexOrder)). A `value` index holds
//! one entry per row: the typed value at the path, with `Null` for JSON null or a missing
//! key, so `IS NULL` is answered too. A `list` index holds one entry per element of the
//! JSON array at the path (and none when there is no array), for membership tests.
//! Entries are written in the same `WriteBatch` as their row; [`TenantStore::create_index`]
//! builds a new index over the rows that exist, holding the tenant's write lock so that
//! no write slips past it.
//!
//! A [`RowSet`] is an AND/OR tree whose leaves are key ranges of one index (built-in or
//! user); [`TenantStore::row_set`] evaluates it to sorted, distinct row ids.

use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::family::Handle;
use super::keys::index_row_id;
use super::keys::{self, IndexValue};
use super::{IndexId, KeyPart, Row, Table, TenantStore};
use crate::catalog::ColumnType;
use crate::error::{Error, Result};

/// What a user index holds for each row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    /// The value at the path (null when missing).
    Value,
    /// Each element of the array at the path.
    List,
}

/// A user-declared index over a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexDef {
    /// Unique per tenant.
    pub name: String,
    pub table: String,
    /// The JSON column (`metadata` or `properties`), or a text column (empty `path`).
    pub column: String,
    /// Object keys from the column's root to the value; empty for a text column.
    pub path: Vec<String>,
    pub kind: IndexKind,
    /// Number in keys; never reused.
    pub id: u32,
}

impl IndexDef {
    pub fn table(&self) -> Result<Table> {
        Table::from_name(&self.table)
            .ok_or_else(|| Error::Corruption(format!("index on unknown table {}", self.table)))
    }

    /// `metadata->'a'->>'b'` style, for messages and listings.
    pub fn expression(&self) -> String {
        let mut out = self.column.clone();
        for (i, key) in self.path.iter().enumerate() {
            let arrow = if i + 1 == self.path.len() && self.kind == IndexKind::Value {
                "->>"
            } else {
                "->"
            };
            out.push_str(&format!("{arrow}'{}'", key.replace('\'', "''")));
        }
        out
    }

    /// True for an index over a text column itself (no JSON path).
    pub fn is_column(&self) -> bool {
        self.path.is_empty()
    }

    /// True when the index's entries hold a copy of their row (the encoded row is the
    /// entry's value): an index of a text column, which serves ordered walks (`ORDER BY
    /// name LIMIT n`), so that a walk reads one key range and no row by id. It costs the
    /// row bytes twice. A timestamp column's index holds row ids only.
    pub fn holds_rows(&self) -> bool {
        self.is_column() && self.table().is_ok_and(|t| text_column(t, &self.column))
    }

    /// The values this index holds for a row (its JSON column already parsed).
    fn values(&self, json: &serde_json::Value) -> Vec<IndexValue> {
        let mut at = Some(json);
        for key in &self.path {
            at = at.and_then(|v| step(v, key));
        }
        match (self.kind, at) {
            (IndexKind::Value, None) => vec![IndexValue::Null],
            (IndexKind::Value, Some(v)) => vec![index_value(v)],
            (IndexKind::List, Some(serde_json::Value::Array(items))) => {
                let mut values: Vec<IndexValue> = items.iter().map(index_value).collect();
                // One entry per distinct element.
                let mut seen = Vec::with_capacity(values.len());
                values.retain(|v| {
                    let mut key = Vec::new();
                    v.encode(&mut key);
                    if seen.contains(&key) {
                        false
                    } else {
                        seen.push(key);
                        true
                    }
                });
                values
            }
            (IndexKind::List, _) => vec![],
        }
    }
}

/// One step of a path, as datafusion-functions-json takes it: an object's key, or, on an
/// array, a key that is an integer is a position (negative from the end).
fn step<'a>(value: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match value {
        serde_json::Value::Array(items) => {
            let i = key.parse::<i64>().ok()?;
            let i = if i < 0 { items.len() as i64 + i } else { i };
            items.get(usize::try_from(i).ok()?)
        }
        other => other.get(key),
    }
}

/// A JSON value as an index value (objects and arrays as their compact text, which is
/// also what `->>` returns for them, under a type of their own).
pub fn index_value(v: &serde_json::Value) -> IndexValue {
    match v {
        serde_json::Value::Null => IndexValue::Null,
        serde_json::Value::Bool(b) => IndexValue::Bool(*b),
        serde_json::Value::Number(n) => IndexValue::Number(n.as_f64().unwrap_or(f64::NAN)),
        serde_json::Value::String(s) => IndexValue::Text(s.clone()),
        other => IndexValue::Json(other.to_string()),
    }
}

/// The text columns an index may cover whole (for `ORDER BY column LIMIT n`, and
/// comparisons with the column).
pub fn text_column(table: Table, column: &str) -> bool {
    table
        .column(column)
        .is_some_and(|c| c.indexable && c.ty == ColumnType::Text)
}

/// The timestamp columns an index may cover whole (for comparisons with the column:
/// `created_at > '2024-01-01'`). Their values are microseconds since the epoch, as
/// numbers (exact: every timestamp of years 0 to 9999 is below 2^53 microseconds).
pub fn timestamp_column(table: Table, column: &str) -> bool {
    table
        .column(column)
        .is_some_and(|c| c.indexable && c.ty == ColumnType::Timestamp)
}

/// The columns an index may cover whole.
pub fn index_column(table: Table, column: &str) -> bool {
    text_column(table, column) || timestamp_column(table, column)
}

/// The value of a column an index covers.
fn column_value(row: &Row, column: &str) -> Option<IndexValue> {
    let micros = |t: i64| Some(IndexValue::Number(t as f64));
    match (row, column) {
        (Row::Entity(e), "name") => Some(IndexValue::Text(e.name.clone())),
        (Row::Resource(r), "uri") => r.uri.clone().map(IndexValue::Text),
        (Row::Entity(e), "created_at") => micros(e.created_at),
        (Row::Entity(e), "updated_at") => micros(e.updated_at),
        (Row::Resource(r), "created_at") => micros(r.created_at),
        (Row::Resource(r), "updated_at") => micros(r.updated_at),
        _ => None,
    }
}

/// The JSON columns an index may cover.
pub fn json_column(table: Table, column: &str) -> bool {
    table.json_column() == column
}

fn row_json(row: &Row) -> &str {
    match row {
        Row::Resource(r) => &r.metadata,
        Row::Entity(e) => &e.properties,
        Row::Edge(e) => &e.properties,
        Row::Moment(m) => &m.metadata,
    }
}

/// The keys of a row's entries in the user indexes of its table, each with whether the
/// entry holds a copy of the row (see [`IndexDef::holds_rows`]).
pub(super) fn user_index_keys(
    defs: &[IndexDef],
    row: &Row,
    row_id: u64,
) -> Result<Vec<(Vec<u8>, bool)>> {
    let table = row.table();
    let mine: Vec<&IndexDef> = defs.iter().filter(|d| d.table == table.name()).collect();
    if mine.is_empty() {
        return Ok(vec![]);
    }
    let mut out = Vec::new();
    let (columns, paths): (Vec<&IndexDef>, Vec<&IndexDef>) =
        mine.into_iter().partition(|d| d.is_column());
    for def in columns {
        let value = column_value(row, &def.column).ok_or_else(|| {
            Error::Corruption(format!(
                "index {} on {}.{}",
                def.name,
                table.name(),
                def.column
            ))
        })?;
        out.push((
            keys::user_index_key(table, def.id, &value, row_id),
            def.holds_rows(),
        ));
    }
    if paths.is_empty() {
        return Ok(out);
    }
    // Stored JSON is normalized on write; an empty text means `{}`.
    let text = row_json(row);
    let json: serde_json::Value = if text.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_str(text)
            .map_err(|e| Error::Corruption(format!("stored JSON of {}: {e}", table.name())))?
    };
    for def in paths {
        for value in def.values(&json) {
            out.push((keys::user_index_key(table, def.id, &value, row_id), false));
        }
    }
    Ok(out)
}

/// The keys `[start, end)`; no end means up to the end of the column family.
pub type KeyRange = (Vec<u8>, Option<Vec<u8>>);

/// Rows whose entries fall into key ranges of indexes, combined with AND and OR.
#[derive(Debug, Clone, PartialEq)]
pub enum RowSet {
    /// The rows of one index's key ranges.
    Keys(KeySet),
    And(Vec<RowSet>),
    Or(Vec<RowSet>),
}

/// Rows with an entry in `[start, end)` of one of `ranges` of one index.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    pub ranges: Vec<KeyRange>,
    /// The user index read, checked to still exist when the set is evaluated.
    pub user_index: Option<UserIndexRef>,
}

/// A user index a row set reads: its id, and its name for errors.
#[derive(Debug, Clone, PartialEq)]
pub struct UserIndexRef {
    pub id: u32,
    pub name: String,
}

/// The user-declared indexes of a tenant, once read from their meta key.
#[derive(Debug, Default)]
pub(super) struct Definitions(parking_lot::RwLock<Option<Arc<Vec<IndexDef>>>>);

/// A range of index values.
pub type ValueRange = (Bound<IndexValue>, Bound<IndexValue>);

/// The key range `[start, end)` of the entries whose value prefix lies in a range.
fn key_range(
    base: &[u8],
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let start = match lower {
        Bound::Unbounded => base.to_vec(),
        Bound::Included(p) => p,
        Bound::Excluded(p) => keys::prefix_successor(&p).unwrap_or_else(|| base.to_vec()),
    };
    let end = match upper {
        Bound::Unbounded => keys::prefix_successor(base),
        Bound::Included(p) => keys::prefix_successor(&p),
        Bound::Excluded(p) => Some(p),
    };
    (start, end)
}

impl RowSet {
    /// Rows whose built-in `index` entry starts with one of `prefixes`.
    pub fn builtin_prefixes(index: IndexId, prefixes: &[Vec<KeyPart>]) -> RowSet {
        RowSet::Keys(KeySet::builtin_prefixes(index, prefixes))
    }

    /// Rows whose built-in `index` entry lies between the bounds.
    pub fn builtin_range(
        index: IndexId,
        lower: &Bound<Vec<KeyPart>>,
        upper: &Bound<Vec<KeyPart>>,
    ) -> RowSet {
        RowSet::Keys(KeySet::builtin_range(index, lower, upper))
    }

    /// Rows whose entry in user index `def` lies in one of `ranges` of values.
    pub fn user(def: &IndexDef, ranges: &[ValueRange]) -> Result<RowSet> {
        KeySet::user(def, ranges).map(RowSet::Keys)
    }
}

impl KeySet {
    fn builtin_prefixes(index: IndexId, prefixes: &[Vec<KeyPart>]) -> KeySet {
        let ranges = prefixes
            .iter()
            .map(|p| {
                let start = keys::index_prefix(index, p);
                let end = keys::prefix_successor(&start);
                (start, end)
            })
            .collect();
        KeySet {
            ranges,
            user_index: None,
        }
    }

    fn builtin_range(
        index: IndexId,
        lower: &Bound<Vec<KeyPart>>,
        upper: &Bound<Vec<KeyPart>>,
    ) -> KeySet {
        let prefix = |v: &Vec<KeyPart>| keys::index_prefix(index, v);
        let range = key_range(
            &keys::index_prefix(index, &[]),
            lower.as_ref().map(prefix),
            upper.as_ref().map(prefix),
        );
        KeySet {
            ranges: vec![range],
            user_index: None,
        }
    }

    /// Rows whose entry in user index `def` lies in one of `ranges` of values.
    pub fn user(def: &IndexDef, ranges: &[ValueRange]) -> Result<KeySet> {
        let table = def.table()?;
        let base = keys::user_index_prefix(table, def.id);
        let prefix = |v: &IndexValue| keys::user_index_value_prefix(table, def.id, v);
        let ranges = ranges
            .iter()
            .map(|(lo, hi)| key_range(&base, lo.as_ref().map(prefix), hi.as_ref().map(prefix)))
            .collect();
        Ok(KeySet {
            ranges,
            user_index: Some(UserIndexRef {
                id: def.id,
                name: def.name.clone(),
            }),
        })
    }
}

/// Sorted, distinct row ids: the AND of two is a merge.
fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

impl TenantStore {
    /// The user-declared indexes of the tenant (cached; reloaded after a change).
    pub fn user_indexes(&self) -> Result<Arc<Vec<IndexDef>>> {
        if let Some(defs) = self.state.user_indexes.0.read().clone() {
            return Ok(defs);
        }
        // Loaded under the cache's lock, so a load cannot overwrite a newer list that
        // create_index or drop_index stored meanwhile.
        let mut cache = self.state.user_indexes.0.write();
        if let Some(defs) = cache.clone() {
            return Ok(defs);
        }
        let defs = Arc::new(self.stored_user_indexes()?);
        *cache = Some(Arc::clone(&defs));
        Ok(defs)
    }

    fn stored_user_indexes(&self) -> Result<Vec<IndexDef>> {
        match self.get_raw(&keys::meta_key(keys::META_USER_INDEXES))? {
            None => Ok(vec![]),
            Some(v) => serde_json::from_slice(&v)
                .map_err(|e| Error::Corruption(format!("user index definitions: {e}"))),
        }
    }

    /// Creates an index over a JSON path and builds it over the existing rows, calling
    /// `progress(rows done, rows in table)` as it goes: an error from it stops the build,
    /// leaving no index and none of its entries. Writers of the tenant wait until it is
    /// built; readers do not.
    pub fn create_index(
        &self,
        name: &str,
        table: Table,
        column: &str,
        path: &[String],
        kind: IndexKind,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<IndexDef> {
        validate_index_name(name)?;
        if index_column(table, column) {
            if !path.is_empty() || kind != IndexKind::Value {
                return Err(Error::invalid(format!(
                    "{}.{column} is not a JSON column: index it whole, as ({column})",
                    table.name()
                )));
            }
        } else if !json_column(table, column) {
            return Err(Error::invalid(format!(
                "{}.{column} cannot be indexed; indexes cover a path of {}{}",
                table.name(),
                table.json_column(),
                match table.indexable_columns().as_slice() {
                    [] => String::new(),
                    columns => format!(" or one of the columns {}", columns.join(", ")),
                }
            )));
        } else if path.is_empty() || path.iter().any(|k| k.is_empty()) {
            return Err(Error::invalid(
                "an index needs a JSON path of one or more non-empty keys",
            ));
        }
        let family = self.family()?;
        let _writer = self.lock_writer();
        let mut defs = self.stored_user_indexes()?;
        if defs.iter().any(|d| d.name == name) || IndexId::is_builtin_name(name) {
            return Err(Error::AlreadyExists(format!("index '{name}'")));
        }
        let id = self.meta_u64(keys::META_NEXT_USER_INDEX)?.unwrap_or(1);
        let id32 = u32::try_from(id).map_err(|_| Error::invalid("too many indexes created"))?;
        let def = IndexDef {
            name: name.to_string(),
            table: table.name().to_string(),
            column: column.to_string(),
            path: path.to_vec(),
            kind,
            id: id32,
        };
        // Entries of an earlier build of this id that crashed half-way are not ours.
        let prefix = keys::user_index_prefix(table, id32);
        if let Some(end) = keys::prefix_successor(&prefix) {
            family.delete_range(&prefix, &end)?;
        }

        let built = self.build_entries(&family, &def, progress);
        if built.is_err()
            && let Some(end) = keys::prefix_successor(&prefix)
        {
            family.delete_range(&prefix, &end)?;
        }
        built?;
        // The definition and the next id land last, together: until then no reader plans
        // with a half-built index, and a crash leaves entries the next build of this id
        // clears first.
        defs.push(def.clone());
        let mut batch = family.batch();
        batch.put(
            keys::meta_key(keys::META_NEXT_USER_INDEX),
            (id + 1).to_be_bytes(),
        );
        batch.put(
            keys::meta_key(keys::META_USER_INDEXES),
            serde_json::to_vec(&defs).map_err(|e| Error::Storage(e.to_string()))?,
        );
        family.write(batch)?;
        self.bump_generation();
        *self.state.user_indexes.0.write() = Some(Arc::new(defs));
        Ok(def)
    }

    /// Writes the entries of a new index for every row of its table, a chunk at a time.
    fn build_entries(
        &self,
        family: &Handle<'_>,
        def: &IndexDef,
        progress: &mut dyn FnMut(u64, u64) -> Result<()>,
    ) -> Result<()> {
        let table = def.table()?;
        let total = self.count(table)?;
        let one = [def.clone()];
        let mut cursor = self.scan(table, &super::AccessPath::FullScan, None)?;
        let mut done = 0u64;
        progress(0, total)?;
        loop {
            let rows = cursor.next_chunk(BUILD_CHUNK)?;
            if rows.is_empty() {
                break;
            }
            let mut batch = family.batch();
            for (row_id, row) in &rows {
                for (key, holds_row) in user_index_keys(&one, row, *row_id)? {
                    if holds_row {
                        batch.put(key, row.encode()?);
                    } else {
                        batch.put(key, []);
                    }
                }
            }
            family.write(batch)?;
            done += rows.len() as u64;
            progress(done, total)?;
        }
        Ok(())
    }

    /// Drops a user index and its entries.
    pub fn drop_index(&self, name: &str) -> Result<IndexDef> {
        let family = self.family()?;
        let _writer = self.lock_writer();
        let mut defs = self.stored_user_indexes()?;
        let Some(at) = defs.iter().position(|d| d.name == name) else {
            if IndexId::is_builtin_name(name) {
                return Err(Error::invalid(format!(
                    "index '{name}' is built in and cannot be dropped"
                )));
            }
            return Err(Error::NotFound(format!("index '{name}'")));
        };
        let def = defs.remove(at);
        let mut batch = family.batch();
        batch.put(
            keys::meta_key(keys::META_USER_INDEXES),
            serde_json::to_vec(&defs).map_err(|e| Error::Storage(e.to_string()))?,
        );
        let prefix = keys::user_index_prefix(def.table()?, def.id);
        if let Some(end) = keys::prefix_successor(&prefix) {
            batch.delete_range(prefix, end);
        }
        family.write(batch)?;
        self.bump_generation();
        *self.state.user_indexes.0.write() = Some(Arc::new(defs));
        Ok(def)
    }

    /// The key ranges of a one-index set, after checking that its index still exists:
    /// a plan made before a DROP INDEX must not read an emptied index as "no rows".
    pub(super) fn key_ranges(&self, keys: &KeySet) -> Result<Vec<KeyRange>> {
        let KeySet { ranges, user_index } = keys;
        if let Some(index) = user_index
            && !self.user_indexes()?.iter().any(|d| d.id == index.id)
        {
            return Err(Error::Query(format!(
                "index {} this query planned with was dropped; run the query again",
                index.name
            )));
        }
        let ranges = ranges
            .iter()
            .filter(|(start, end)| end.as_ref().is_none_or(|e| start < e))
            .cloned()
            .collect();
        Ok(ranges)
    }

    /// The sorted, distinct row ids of a set when it has at most `cap` rows (`None`:
    /// more), reading at most `cap + 1` entries of each index range set it names. An AND
    /// is answered from its parts that have at most `cap` rows: a superset (`true`)
    /// when some part had more.
    pub fn row_set_at_most(&self, set: &RowSet, cap: usize) -> Result<Option<(Vec<u64>, bool)>> {
        match set {
            RowSet::Keys(keys) => {
                let family = self.family()?;
                let mut ids = Vec::new();
                for (start, end) in self.key_ranges(keys)? {
                    for item in family.range(start, end) {
                        let (key, _) = item?;
                        ids.push(index_row_id(&key)?);
                        // Entries, not rows: a list index can name a row twice.
                        if ids.len() > cap {
                            return Ok(None);
                        }
                    }
                }
                ids.sort_unstable();
                ids.dedup();
                Ok(Some((ids, false)))
            }
            RowSet::And(parts) => {
                let mut small = Vec::new();
                let mut superset = false;
                for part in parts {
                    match self.row_set_at_most(part, cap)? {
                        Some((ids, sup)) => {
                            superset |= sup;
                            small.push(ids);
                        }
                        None => superset = true,
                    }
                }
                small.sort_by_key(|s| s.len());
                let mut small = small.into_iter();
                let Some(mut acc) = small.next() else {
                    return Ok(None);
                };
                for s in small {
                    if acc.is_empty() {
                        break;
                    }
                    acc = intersect(&acc, &s);
                }
                Ok(Some((acc, superset)))
            }
            RowSet::Or(parts) => {
                let mut ids = Vec::new();
                let mut superset = false;
                for p in parts {
                    let Some((part, sup)) = self.row_set_at_most(p, cap)? else {
                        return Ok(None);
                    };
                    superset |= sup;
                    ids.extend(part);
                    if ids.len() > cap {
                        return Ok(None);
                    }
                }
                ids.sort_unstable();
                ids.dedup();
                Ok(Some((ids, superset)))
            }
        }
    }

    /// The sorted, distinct row ids of a set.
    pub fn row_set(&self, set: &RowSet) -> Result<Vec<u64>> {
        // Without a cap every part is read: the answer is never missing nor a superset.
        Ok(self
            .row_set_at_most(set, usize::MAX)?
            .map(|(ids, _)| ids)
            .unwrap_or_default())
    }
}

/// Rows read and indexed per write while an index is built.
const BUILD_CHUNK: usize = 4096;

fn validate_index_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "index name {name:?} must be 1..=64 letters, digits, '_' or '-'"
        )))
    }
}

#[cfg(test)]
mod tests;
