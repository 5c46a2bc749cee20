//! Storage layer: the write path. [`TenantStore::apply`] validates every row outside the
//! lock, then, holding the tenant's write lock, checks primary keys, allocates row ids,
//! stages rows, primary-key and index entries and vector changes, and commits them in one
//! `WriteBatch`. [`TenantStore::with_writer`] holds the lock across a read-modify-write.

use std::collections::HashSet;

use super::family::Batch;
use super::json_index;
use super::keys;
use super::{IndexDef, Resource, Row, TenantStore, WriteOp, now_micros};
use crate::error::{Error, Result};

/// The counters writers allocate from, loaded from meta keys on first use; guarded by
/// the tenant's write lock.
#[derive(Debug, Default)]
pub(super) struct WriterState {
    pub(super) next_row_id: Option<u64>,
    pub(super) next_vector_change: Option<u64>,
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
pub(super) fn prepare_all(ops: &mut [WriteOp], now: i64) -> Result<()> {
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

pub(super) fn put_row(
    batch: &mut Batch<'_>,
    pk: &[u8],
    row_id: u64,
    row: &Row,
    user: &[IndexDef],
) -> Result<()> {
    let table = row.table();
    let encoded = row.encode()?;
    for (index, parts) in row.index_entries() {
        let value: &[u8] = if index.holds_rows() { &encoded } else { &[] };
        batch.put(keys::index_key(index, &parts, row_id), value);
    }
    batch.put(keys::row_key(table, row_id), &encoded);
    batch.put(pk, row_id.to_be_bytes());
    for (key, holds_row) in json_index::user_index_keys(user, row, row_id)? {
        let value: &[u8] = if holds_row { &encoded } else { &[] };
        batch.put(key, value);
    }
    Ok(())
}

pub(super) fn delete_index_entries(
    batch: &mut Batch<'_>,
    old: &Row,
    row_id: u64,
    user: &[IndexDef],
) -> Result<()> {
    for (index, parts) in old.index_entries() {
        batch.delete(keys::index_key(index, &parts, row_id));
    }
    for (key, _) in json_index::user_index_keys(user, old, row_id)? {
        batch.delete(key);
    }
    Ok(())
}

pub(super) fn delete_row(
    batch: &mut Batch<'_>,
    old: &Row,
    row_id: u64,
    user: &[IndexDef],
) -> Result<()> {
    let table = old.table();
    batch.delete(keys::row_key(table, row_id));
    batch.delete(keys::primary_key(table, &old.primary_key()));
    delete_index_entries(batch, old, row_id, user)
}

impl TenantStore {
    /// Takes the tenant's write lock: every change of its keys holds it.
    pub(super) fn lock_writer(&self) -> parking_lot::MutexGuard<'_, WriterState> {
        self.state.write_lock.lock()
    }

    /// Applies a batch of writes atomically and returns how many rows each op touched.
    /// On any error nothing is written.
    pub fn apply(&self, ops: Vec<WriteOp>) -> Result<Vec<u64>> {
        let now = now_micros();
        // Validation that needs no lock happens first, so the lock is held only for the
        // key checks and the commit.
        let mut ops = ops;
        prepare_all(&mut ops, now)?;

        let mut writer = self.lock_writer();
        self.commit(&mut writer, ops, now)
    }

    /// Runs `f` holding the tenant's write lock: what it reads through this handle is the
    /// latest state, and what it applies through the [`Writer`] commits before any other
    /// writer's change. So a read-modify-write (`SET n = n + 1`) loses no update. Keep `f`
    /// short: every writer of the tenant waits for it.
    pub fn with_writer<T>(&self, f: impl FnOnce(&mut Writer<'_>) -> Result<T>) -> Result<T> {
        let state = self.lock_writer();
        f(&mut Writer { store: self, state })
    }

    /// Commits validated ops holding the write lock (`writer`).
    pub(super) fn commit(
        &self,
        writer: &mut WriterState,
        ops: Vec<WriteOp>,
        now: i64,
    ) -> Result<Vec<u64>> {
        let family = self.family()?;
        let user = self.user_indexes()?;
        let mut next = match writer.next_row_id {
            Some(n) => n,
            None => self.meta_u64(keys::META_NEXT_ROW_ID)?.unwrap_or(1),
        };
        // Vector changes of this batch, in order: Some = upsert, None = remove.
        let mut vector_changes: Vec<(u64, Option<Vec<f32>>)> = Vec::new();
        let first_free = next;

        let mut batch = family.batch();
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
        let existing = family.multi_get(&insert_keys);
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
                    put_row(&mut batch, &pk, row_id, &row, &user)?;
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
                    delete_index_entries(&mut batch, &old, row_id, &user)?;
                    put_row(&mut batch, &pk, row_id, &row, &user)?;
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
                        batch.delete(&old_pk);
                    }
                    self.claim(&mut touched_keys, &pk, &row)?;
                    delete_index_entries(&mut batch, &old, row_id, &user)?;
                    put_row(&mut batch, &pk, row_id, &row, &user)?;
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
            Some(self.stage_vectors(&mut batch, writer, &vector_changes)?)
        };
        if next != first_free {
            batch.put(keys::meta_key(keys::META_NEXT_ROW_ID), next.to_be_bytes());
        }
        family.write(batch)?;
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

    /// Stages the deletion of a found row (its keys, index entries and vector); returns
    /// the number of rows deleted.
    pub(super) fn stage_delete(
        &self,
        batch: &mut Batch<'_>,
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
        delete_row(batch, &old, row_id, user)?;
        if self.has_vector(table, row_id)? {
            vector_changes.push((row_id, None));
        }
        Ok(1)
    }

    /// A primary key may be written once per batch: a second write of the same key in
    /// one batch would read stale state, so it is refused.
    pub(super) fn claim(&self, touched: &mut HashSet<Vec<u8>>, pk: &[u8], row: &Row) -> Result<()> {
        if !touched.insert(pk.to_vec()) {
            return Err(Error::invalid(format!(
                "{} row with key {} is written twice in one batch",
                row.table().name(),
                row.key_display()
            )));
        }
        Ok(())
    }
}
