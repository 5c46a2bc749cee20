//! Storage layer: the lifecycle of a tenant's HNSW index: its options, loading (the newest
//! saved file and the change log after it, or a rebuild from the stored vectors), keeping
//! it in step with every commit, saving, unloading, and searching it.

use std::sync::Arc;

use super::family::Batch;
use super::keys;
use super::keys::decode_row_id;
use super::write::WriterState;
use super::{Table, TenantStore};
use crate::error::{Error, Result};
use crate::vector::{Metric, VectorIndex, VectorOptions, decode_vector, encode_vector};

/// Vectors read from storage and added to the index at a time when it is rebuilt.
pub(super) const REBUILD_CHUNK: usize = 10_000;

/// Log changes replayed between checks of a stop flag.
pub(super) const STOP_CHECK: usize = 1024;

fn stopped_loading() -> Error {
    Error::Cancelled("loading the vector index was stopped".into())
}

/// The vector index of a tenant: where its files live, and the index when loaded.
#[derive(Debug)]
pub(super) struct VectorState {
    pub(super) dir: std::path::PathBuf,
    /// The HNSW index of `resources.embedding`, when loaded in memory.
    loaded: parking_lot::RwLock<Option<Arc<VectorIndex>>>,
    /// Held by the one load (or rebuild) of the index at a time; searches that need the
    /// index wait on it, writers do not.
    loading: parking_lot::Mutex<()>,
    /// Held by the one save at a time, and by a drop of the tenant (taken before the
    /// write lock), so no file is written into a directory being removed.
    pub(super) saving: parking_lot::Mutex<()>,
}

impl VectorState {
    pub(super) fn new(dir: std::path::PathBuf) -> VectorState {
        VectorState {
            dir,
            loaded: parking_lot::RwLock::new(None),
            loading: parking_lot::Mutex::new(()),
            saving: parking_lot::Mutex::new(()),
        }
    }

    /// Drops the loaded index without saving it (its tenant is gone).
    pub(super) fn forget(&self) {
        *self.loaded.write() = None;
    }
}

impl TenantStore {
    /// The number of the tenant's next vector change. Read from its meta key on the
    /// tenant's first use after open, before any write, which is also when saved index
    /// files covering changes the rows do not have are removed: saved before a power
    /// loss took the end of the write-ahead log, they would look current once later
    /// writes reuse those change numbers.
    pub(super) fn next_vector_change(&self, writer: &mut WriterState) -> Result<u64> {
        if let Some(n) = writer.next_vector_change {
            return Ok(n);
        }
        let n = self.meta_u64(keys::META_NEXT_VECTOR_CHANGE)?.unwrap_or(1);
        let removed = VectorIndex::remove_saved_ahead(&self.state.vectors.dir, "resources", n);
        if removed > 0 {
            tracing::warn!(
                tenant = %self.tenant_id(),
                removed,
                "vector index files ahead of the rows (a power loss?) removed; the index is rebuilt"
            );
        }
        writer.next_vector_change = Some(n);
        Ok(n)
    }

    pub(super) fn has_vector(&self, table: Table, row_id: u64) -> Result<bool> {
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

    /// Declares the vector options of the resources table. Only `ef_search` and
    /// `rescore` may change once vectors exist.
    pub fn set_vector_options(&self, options: VectorOptions) -> Result<()> {
        options.validate()?;
        let family = self.family()?;
        let _writer = self.lock_writer();
        let prefix = keys::vector_prefix(Table::Resources);
        let has_vectors = family
            .range(prefix.clone(), keys::prefix_successor(&prefix))
            .next()
            .transpose()?
            .is_some();
        if let Some(current) = self.vector_options()?
            && has_vectors
        {
            let same = VectorOptions {
                ef_search: options.ef_search,
                rescore: options.rescore,
                ..current
            };
            let requested = VectorOptions {
                dimensions: options.dimensions.or(current.dimensions),
                ..options
            };
            if same != requested {
                return Err(Error::invalid(format!(
                    "resources already has vectors with {current:?}; only ef_search and rescore can change"
                )));
            }
        }
        let json = serde_json::to_vec(&options).map_err(|e| Error::Storage(e.to_string()))?;
        family.put(&keys::meta_key(keys::META_VECTOR_OPTIONS), &json)?;
        if has_vectors {
            // Only ef_search or rescore changed (checked above): the loaded index takes
            // them in place; rebuilding it from the rows would take minutes at 1M vectors.
            if let Some(index) = self.state.vectors.loaded.read().as_ref() {
                index.set_query_options(&options);
            }
        } else {
            // The in-memory index is rebuilt with the new options on next use.
            *self.state.vectors.loaded.write() = None;
        }
        Ok(())
    }

    /// Validates a batch's vectors, fixes the dimensions on the first one, and stages the
    /// vector keys and log entries. Returns the next change number after the batch.
    pub(super) fn stage_vectors(
        &self,
        batch: &mut Batch<'_>,
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
            batch.put(keys::meta_key(keys::META_VECTOR_OPTIONS), json);
        }
        let mut change = self.next_vector_change(writer)?;
        for (row_id, vector) in changes {
            let key = keys::vector_key(Table::Resources, *row_id);
            let mut entry = row_id.to_be_bytes().to_vec();
            match vector {
                Some(v) => {
                    batch.put(key, encode_vector(v));
                    entry.push(1);
                }
                None => {
                    batch.delete(key);
                    entry.push(0);
                }
            }
            batch.put(keys::vector_log_key(Table::Resources, change), entry);
            change += 1;
        }
        batch.put(
            keys::meta_key(keys::META_NEXT_VECTOR_CHANGE),
            change.to_be_bytes(),
        );
        Ok(change)
    }

    /// Mirrors committed vector changes into the in-memory index, if it is loaded. On
    /// failure the index is dropped: it is rebuilt from storage (the truth) on next use.
    pub(super) fn apply_to_loaded_index(&self, changes: &[(u64, Option<Vec<f32>>)]) {
        let Some(index) = self.state.vectors.loaded.read().clone() else {
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
            tracing::warn!(tenant = %self.tenant_id(), error = %e, "vector index update failed; it will be rebuilt");
            *self.state.vectors.loaded.write() = None;
        }
    }

    /// Whether the HNSW index is in memory now (without loading it).
    pub fn vector_index_loaded(&self) -> bool {
        self.state.vectors.loaded.read().is_some()
    }

    /// The in-memory HNSW index of `resources.embedding`, loading it (and catching it up
    /// from the vector log, or rebuilding it) on first use. `None` while no vector exists.
    pub fn vector_index(&self) -> Result<Option<Arc<VectorIndex>>> {
        self.vector_index_until(&|| false)
    }

    /// [`TenantStore::vector_index`], given up with [`Error::Cancelled`] once `stop` says
    /// so: a catch-up from the log checks it every [`STOP_CHECK`] changes and a rebuild
    /// every [`REBUILD_CHUNK`] vectors, and nothing half-built is kept. (Reading a saved
    /// file is one call into usearch and is not cut.)
    ///
    /// Writers go on while the index loads: the saved file is read (or the index rebuilt
    /// from the stored vectors) and caught up from the vector log without the tenant's
    /// write lock, which is taken only to read where the log ends and, at the end, to
    /// replay the changes committed meanwhile and publish the index, so that every later
    /// commit updates it. Replaying a change sets its row to the row's current vector, so a
    /// change seen twice (by the rebuild's scan and by the log) leaves the same index.
    pub fn vector_index_until(&self, stop: &dyn Fn() -> bool) -> Result<Option<Arc<VectorIndex>>> {
        if let Some(index) = self.state.vectors.loaded.read().clone() {
            return Ok(Some(index));
        }
        let _loading = self.state.vectors.loading.lock();
        // No save trims the log while the index loads from it (nor a drop removes its
        // files); a save needs a loaded index, so this waits only for one that was under
        // way when the index was dropped from memory.
        let _saving = self.state.vectors.saving.lock();
        loop {
            if let Some(index) = self.state.vectors.loaded.read().clone() {
                return Ok(Some(index));
            }
            let (options, next_change, trimmed) = {
                let mut writer = self.lock_writer();
                let Some(options) = self.vector_options()? else {
                    return Ok(None);
                };
                let next_change = self.next_vector_change(&mut writer)?;
                let trimmed = self.meta_u64(keys::META_VECTOR_LOG_TRIMMED)?.unwrap_or(0);
                (options, next_change, trimmed)
            };
            let Some(dimensions) = options.dimensions else {
                return Ok(None);
            };
            let dir = &self.state.vectors.dir;
            // The log is trimmed only by a save, which needs a loaded index: none is.
            let (index, from) =
                match VectorIndex::load_latest(dir, "resources", options, dimensions)? {
                    // Usable when the log still holds every change after the file.
                    Some((index, covered)) if covered >= trimmed && covered < next_change => {
                        (index, covered + 1)
                    }
                    _ => (
                        self.rebuild_vector_index(options, dimensions, stop)?,
                        next_change,
                    ),
                };
            let caught_up = self.replay_vector_log(&index, from, stop)?;
            let writer = self.lock_writer();
            let current = self.vector_options()?;
            let same = current.is_some_and(|c| {
                c.dimensions == Some(dimensions)
                    && VectorOptions {
                        ef_search: options.ef_search,
                        rescore: options.rescore,
                        ..c
                    } == options
            });
            if !same {
                // The options changed while the index loaded (no vector was stored yet
                // then): load again with the new ones.
                drop(writer);
                continue;
            }
            if let Some(current) = current {
                index.set_query_options(&current);
            }
            let replayed = self.replay_vector_log(&index, caught_up, stop)?;
            tracing::debug!(tenant = %self.tenant_id(), from, caught_up, replayed, "vector index loaded");
            let index = Arc::new(index);
            *self.state.vectors.loaded.write() = Some(Arc::clone(&index));
            drop(writer);
            return Ok(Some(index));
        }
    }

    /// Applies the vector log from change `from` to `index`; returns the number of the
    /// change after the last one applied (`from` when there was none).
    pub(super) fn replay_vector_log(
        &self,
        index: &VectorIndex,
        from: u64,
        stop: &dyn Fn() -> bool,
    ) -> Result<u64> {
        let family = self.family()?;
        let start = keys::vector_log_key(Table::Resources, from);
        let end = keys::prefix_successor(&[keys::VECTOR_LOG, Table::Resources.tag()]);
        let mut next = from;
        for (n, item) in family.range(start, end).enumerate() {
            if n % STOP_CHECK == 0 && stop() {
                return Err(stopped_loading());
            }
            let (key, value) = item?;
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
            // The log key ends with its change number, as a row key ends with its id.
            next = keys::trailing_row_id(&key)
                .ok_or_else(|| Error::Corruption("short vector log key".into()))?
                + 1;
        }
        Ok(next)
    }

    pub(super) fn rebuild_vector_index(
        &self,
        options: VectorOptions,
        dimensions: usize,
        stop: &dyn Fn() -> bool,
    ) -> Result<VectorIndex> {
        let family = self.family()?;
        let index = VectorIndex::new(options, dimensions)?;
        let prefix = keys::vector_prefix(Table::Resources);
        let started = std::time::Instant::now();
        let mut n = 0usize;
        let mut progress =
            crate::progress::Progress::start(format!("vector index of {}", self.tenant_id()), None);
        let mut chunk: Vec<(u64, Vec<f32>)> = Vec::with_capacity(REBUILD_CHUNK);
        let add = |chunk: &mut Vec<(u64, Vec<f32>)>| -> Result<()> {
            let items: Vec<(u64, &[f32])> =
                chunk.iter().map(|(id, v)| (*id, v.as_slice())).collect();
            index.upsert_many(&items)?;
            chunk.clear();
            Ok(())
        };
        for item in family.range(prefix.clone(), keys::prefix_successor(&prefix)) {
            if chunk.is_empty() && stop() {
                return Err(stopped_loading());
            }
            let (key, value) = item?;
            let row_id = keys::trailing_row_id(&key)
                .ok_or_else(|| Error::Corruption("short vector key".into()))?;
            chunk.push((row_id, decode_vector(&value)?));
            n += 1;
            if chunk.len() == REBUILD_CHUNK {
                add(&mut chunk)?;
                progress.set(n as u64);
            }
        }
        add(&mut chunk)?;
        progress.set(n as u64);
        progress.finish();
        let seconds = started.elapsed().as_secs_f64();
        tracing::debug!(tenant = %self.tenant_id(), vectors = n, seconds, "vector index rebuilt");
        Ok(index)
    }

    /// Saves the loaded vector index (atomically) and trims the log it covers. Returns
    /// false when no index is loaded. Writers wait only while the index is copied in
    /// memory ([`VectorIndex::image_into`]); the file is written and synced without the write
    /// lock, while they commit (and the log keeps their changes for the next load).
    pub fn save_vectors(&self) -> Result<bool> {
        let Some(index) = self.state.vectors.loaded.read().clone() else {
            return Ok(false);
        };
        let family = self.family()?;
        let _saving = self.state.vectors.saving.lock();
        let mut image = index.image_buffer();
        let covered = {
            let mut writer = self.lock_writer();
            let next_change = self.next_vector_change(&mut writer)?;
            // The file must not cover changes a power loss can take back: with `sync` off,
            // commits reach the write-ahead log's file but not the disk; sync it first.
            family.flush_wal()?;
            // Commits apply their changes to the index holding the write lock: none runs
            // while it is copied, so the image is the index as of `next_change - 1`.
            index.image_into(&mut image)?;
            next_change - 1
        };
        crate::vector::save_image(&self.state.vectors.dir, "resources", covered, &image)?;
        drop(image);
        let mut batch = family.batch();
        batch.delete_range(
            keys::vector_log_key(Table::Resources, 0),
            keys::vector_log_key(Table::Resources, covered + 1),
        );
        batch.put(
            keys::meta_key(keys::META_VECTOR_LOG_TRIMMED),
            covered.to_be_bytes(),
        );
        family.write(batch)?;
        Ok(true)
    }

    /// Saves and then drops the in-memory index; the next search reloads it.
    pub fn unload_vectors(&self) -> Result<()> {
        self.save_vectors()?;
        *self.state.vectors.loaded.write() = None;
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
        let Some(depth) = index.rescore_depth() else {
            return index.search(query, k, ef, filter);
        };
        let hits = index.search(query, k * depth, ef, filter)?;
        let mut exact = self.rescore(index.options().metric, query, &hits)?;
        exact.truncate(k);
        Ok(exact)
    }

    /// `hits` scored again under `metric` from the stored f32 vectors, nearest first (a
    /// hit whose row has no vector any more is left out): what a search of an f16 or i8
    /// index returns instead of the index's approximate distances.
    pub fn rescore(
        &self,
        metric: Metric,
        query: &[f32],
        hits: &[(u64, f32)],
    ) -> Result<Vec<(u64, f32)>> {
        let ids: Vec<u64> = hits.iter().map(|(id, _)| *id).collect();
        let vectors = self.vectors_of(Table::Resources, &ids)?;
        let mut out: Vec<(u64, f32)> = ids
            .into_iter()
            .zip(vectors)
            .filter_map(|(id, v)| v.map(|v| (id, metric.distance(query, &v))))
            .collect();
        out.sort_by(|a, b| a.1.total_cmp(&b.1));
        Ok(out)
    }

    /// The stored vectors of these rows (None where a row has none).
    pub fn vectors_of(&self, table: Table, row_ids: &[u64]) -> Result<Vec<Option<Vec<f32>>>> {
        let family = self.family()?;
        let keys: Vec<Vec<u8>> = row_ids
            .iter()
            .map(|id| keys::vector_key(table, *id))
            .collect();
        family
            .multi_get(&keys)
            .into_iter()
            .map(|v| match v? {
                Some(bytes) => decode_vector(&bytes).map(Some),
                None => Ok(None),
            })
            .collect()
    }
}
