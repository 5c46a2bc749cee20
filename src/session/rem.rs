//! Session: the typed REM calls of a tenant (create, get, update and delete of each kind,
//! batches, embeddings and vector search, traversal and lookup), straight to storage.

use super::{
    Direction, Edge, Entity, Error, Found, Hop, KeyPart, Moment, Resource, Row, Table, Tenant,
    VectorOptions, WriteOp,
};
use crate::error::Result;

/// A batch of writes that land atomically: all or nothing.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<WriteOp>,
}

impl Batch {
    pub fn new() -> Self {
        Batch::default()
    }
    pub fn insert(mut self, row: impl Into<Row>) -> Self {
        self.ops.push(WriteOp::Insert(row.into()));
        self
    }
    pub fn update(mut self, row: impl Into<Row>) -> Self {
        self.ops.push(WriteOp::Update(row.into()));
        self
    }
    pub fn delete(mut self, table: Table, key: &[&str]) -> Self {
        let key = key.iter().map(|k| KeyPart::from(*k)).collect();
        self.ops.push(WriteOp::Delete { table, key });
        self
    }
    pub fn len(&self) -> usize {
        self.ops.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl From<Resource> for Row {
    fn from(r: Resource) -> Row {
        Row::Resource(r)
    }
}

impl From<Entity> for Row {
    fn from(e: Entity) -> Row {
        Row::Entity(e)
    }
}

impl From<Edge> for Row {
    fn from(e: Edge) -> Row {
        Row::Edge(e)
    }
}

impl From<Moment> for Row {
    fn from(m: Moment) -> Row {
        Row::Moment(m)
    }
}

impl Tenant {
    /// Applies a batch of writes atomically; returns the rows each write touched.
    pub fn write(&self, batch: Batch) -> Result<Vec<u64>> {
        self.inner.store.apply(batch.ops)
    }

    pub(super) fn insert_one(&self, row: Row) -> Result<Row> {
        let mut row = row;
        // Fill the generated id here so the caller learns it.
        row.prepare(crate::storage::now_micros())?;
        self.inner.store.apply(vec![WriteOp::Insert(row.clone())])?;
        Ok(row)
    }

    pub(super) fn get_row(&self, table: Table, key: &[&str]) -> Result<Option<Row>> {
        let key: Vec<KeyPart> = key.iter().map(|k| KeyPart::from(*k)).collect();
        Ok(self.inner.store.get(table, &key)?.map(|(_, row)| row))
    }

    pub(super) fn delete_row(&self, table: Table, key: &[&str]) -> Result<bool> {
        let key = key.iter().map(|k| KeyPart::from(*k)).collect();
        let counts = self
            .inner
            .store
            .apply(vec![WriteOp::Delete { table, key }])?;
        Ok(counts.first() == Some(&1))
    }

    /// Creates a resource; returns its id (generated when empty).
    pub fn create_resource(&self, resource: Resource) -> Result<String> {
        match self.insert_one(Row::Resource(resource))? {
            Row::Resource(r) => Ok(r.id),
            _ => Err(Error::Query("row changed table".into())),
        }
    }

    /// The resource with this id, with its embedding.
    pub fn get_resource(&self, id: &str) -> Result<Option<Resource>> {
        let Some((row_id, Row::Resource(mut r))) = self
            .inner
            .store
            .get(Table::Resources, &[KeyPart::from(id)])?
        else {
            return Ok(None);
        };
        r.embedding = self
            .inner
            .store
            .vectors_of(Table::Resources, &[row_id])?
            .pop()
            .flatten();
        Ok(Some(r))
    }

    /// Sets (or with `None` removes) the embedding of a resource.
    pub fn set_embedding(&self, id: &str, embedding: Option<Vec<f32>>) -> Result<()> {
        let store = &self.inner.store;
        let Some((row_id, Row::Resource(mut r))) =
            store.get(Table::Resources, &[KeyPart::from(id)])?
        else {
            return Err(Error::NotFound(format!("resource '{id}'")));
        };
        r.embedding = embedding;
        store.apply(vec![WriteOp::Replace {
            row_id,
            row: Row::Resource(r),
        }])?;
        Ok(())
    }

    /// Declares how this tenant's resource vectors are indexed (metric, dimensions, M,
    /// ef_construction, ef_search, precision, rescore). Only `ef_search` and `rescore`
    /// can change once vectors exist.
    pub fn configure_vectors(&self, options: VectorOptions) -> Result<()> {
        self.inner.store.set_vector_options(options)
    }

    pub fn vector_options(&self) -> Result<Option<VectorOptions>> {
        self.inner.store.vector_options()
    }

    /// The `top_k` resources most similar to `query`, best first, with their score
    /// (cosine similarity for the cosine metric); rows under `min_score` are left out.
    pub fn search_similar(
        &self,
        query: &[f32],
        top_k: usize,
        min_score: Option<f32>,
    ) -> Result<Vec<(Resource, f32)>> {
        if !(1..=crate::vector::MAX_SEARCH_K).contains(&top_k) {
            return Err(Error::invalid(format!(
                "top_k must be within 1..={}, got {top_k}",
                crate::vector::MAX_SEARCH_K
            )));
        }
        let store = &self.inner.store;
        let Some(options) = store.vector_options()? else {
            return Ok(vec![]);
        };
        let hits = store.search_vectors(query, top_k, None, None)?;
        let mut out = Vec::with_capacity(hits.len());
        for (row_id, distance) in hits {
            let score = options.metric.score(distance);
            if min_score.is_some_and(|m| score < m) {
                continue;
            }
            if let Some(Row::Resource(r)) = store.get_row(Table::Resources, row_id)? {
                out.push((r, score));
            }
        }
        Ok(out)
    }

    /// Saves the tenant's vector index to disk (it is also saved when the Db closes).
    pub fn save_vectors(&self) -> Result<()> {
        self.inner.store.save_vectors().map(|_| ())
    }

    /// Saves, then drops the tenant's vector index from memory; the next search reloads it.
    pub fn unload_vectors(&self) -> Result<()> {
        self.inner.store.unload_vectors()
    }

    /// Whether the vector index is in memory now (without loading it).
    pub fn vector_index_loaded(&self) -> bool {
        self.inner.store.vector_index_loaded()
    }

    /// Vectors held by the in-memory index and its size in bytes, loading the index if
    /// it is not in memory; (0, 0) while the tenant has no vector options.
    pub fn vector_index_stats(&self) -> Result<(usize, usize)> {
        Ok(match self.inner.store.vector_index()? {
            Some(index) => (index.len(), index.memory_usage()),
            None => (0, 0),
        })
    }

    /// Replaces the resource with the same id (created_at is kept, updated_at set).
    pub fn update_resource(&self, resource: Resource) -> Result<()> {
        self.write(Batch::new().update(resource)).map(|_| ())
    }

    /// Deletes a resource; false if there was none.
    pub fn delete_resource(&self, id: &str) -> Result<bool> {
        self.delete_row(Table::Resources, &[id])
    }

    /// Creates an entity; returns its id (generated when empty).
    pub fn create_entity(&self, entity: Entity) -> Result<String> {
        match self.insert_one(Row::Entity(entity))? {
            Row::Entity(e) => Ok(e.id),
            _ => Err(Error::Query("row changed table".into())),
        }
    }

    pub fn get_entity(&self, id: &str) -> Result<Option<Entity>> {
        Ok(match self.get_row(Table::Entities, &[id])? {
            Some(Row::Entity(e)) => Some(e),
            _ => None,
        })
    }

    pub fn update_entity(&self, entity: Entity) -> Result<()> {
        self.write(Batch::new().update(entity)).map(|_| ())
    }

    pub fn delete_entity(&self, id: &str) -> Result<bool> {
        self.delete_row(Table::Entities, &[id])
    }

    /// Creates an edge; `(src, edge_type, dst)` must be new.
    pub fn create_edge(&self, edge: Edge) -> Result<()> {
        self.insert_one(Row::Edge(edge)).map(|_| ())
    }

    pub fn get_edge(&self, src: &str, edge_type: &str, dst: &str) -> Result<Option<Edge>> {
        Ok(match self.get_row(Table::Edges, &[src, edge_type, dst])? {
            Some(Row::Edge(e)) => Some(e),
            _ => None,
        })
    }

    /// Replaces the properties of the edge with the same `(src, edge_type, dst)`.
    pub fn update_edge(&self, edge: Edge) -> Result<()> {
        self.write(Batch::new().update(edge)).map(|_| ())
    }

    pub fn delete_edge(&self, src: &str, edge_type: &str, dst: &str) -> Result<bool> {
        self.delete_row(Table::Edges, &[src, edge_type, dst])
    }

    /// Creates a moment; returns its id (generated when empty).
    pub fn create_moment(&self, moment: Moment) -> Result<String> {
        match self.insert_one(Row::Moment(moment))? {
            Row::Moment(m) => Ok(m.id),
            _ => Err(Error::Query("row changed table".into())),
        }
    }

    pub fn get_moment(&self, id: &str) -> Result<Option<Moment>> {
        Ok(match self.get_row(Table::Moments, &[id])? {
            Some(Row::Moment(m)) => Some(m),
            _ => None,
        })
    }

    pub fn update_moment(&self, moment: Moment) -> Result<()> {
        self.write(Batch::new().update(moment)).map(|_| ())
    }

    pub fn delete_moment(&self, id: &str) -> Result<bool> {
        self.delete_row(Table::Moments, &[id])
    }

    /// Walks the graph breadth-first from entity `start` (see `traverse()` in SQL): every
    /// node within `max_depth` edges, once, nearest first, with its entity when it has one.
    /// `edge_types` empty means every type.
    pub fn traverse(
        &self,
        start: &str,
        direction: Direction,
        max_depth: u32,
        edge_types: &[&str],
    ) -> Result<Vec<(Hop, Option<Entity>)>> {
        let store = &self.inner.store;
        let types: Vec<String> = edge_types.iter().map(|t| t.to_string()).collect();
        let hops = store.traverse(start, direction, max_depth, &types)?;
        let ids: Vec<&str> = hops.iter().map(|h| h.id.as_str()).collect();
        let entities = store.entities_by_id(&ids)?;
        Ok(hops
            .into_iter()
            .zip(entities)
            .map(|(hop, row)| match row {
                Some(Row::Entity(e)) => (hop, Some(e)),
                _ => (hop, None),
            })
            .collect())
    }

    /// REM's LOOKUP: entities whose id, name or alias matches a key (names ignoring case
    /// and spacing) and resources whose id or uri is the key.
    pub fn lookup(&self, keys: &[&str]) -> Result<Vec<Found>> {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        self.inner.store.lookup(&keys)
    }

    /// Number of rows in a table.
    pub fn count(&self, table: Table) -> Result<u64> {
        self.inner.store.count(table)
    }
}
