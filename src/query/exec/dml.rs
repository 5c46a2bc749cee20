//! Query layer: the write nodes. [`RemSink`] receives the batches of an `INSERT` and
//! commits them a chunk at a time; [`RemDmlExec`] runs an `UPDATE` or `DELETE` a chunk at
//! a time under the tenant's write lock (see [`DML_CHUNK_ROWS`]).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::sink::DataSink;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::StreamExt;

use super::{Stop, external};
use crate::error::Error;
use crate::query::access::Access;
use crate::query::convert::{batch_to_rows, rows_to_batch, table_schema};
use crate::query::lazy::{Chunks, Step};
use crate::query::leaf::{Leaf, LeafExec};
use crate::storage::{AccessPath, Row, RowCursor, Table, TenantStore, WriteOp, now_micros};
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;

/// Rows an `INSERT` (or a bulk ingest) commits at a time, and the Arrow bytes of a chunk
/// at most: a statement within both is one atomic write.
pub const INSERT_CHUNK_ROWS: usize = 8192;
pub const INSERT_CHUNK_BYTES: usize = 16 << 20;

/// Receives the batches of an `INSERT` and commits them a chunk at a time (see
/// [`INSERT_CHUNK_ROWS`]): the rows waiting for their commit are charged to the query's
/// memory pool, and each commit runs on the blocking pool.
#[derive(Debug)]
pub struct RemSink {
    store: TenantStore,
    table: Table,
    schema: SchemaRef,
}

impl RemSink {
    pub fn new(store: TenantStore, table: Table) -> Self {
        RemSink {
            store,
            table,
            schema: table_schema(table),
        }
    }

    /// Commits one chunk of batches; returns the rows written.
    pub(super) async fn commit(&self, batches: Vec<RecordBatch>) -> DfResult<u64> {
        let (store, table) = (self.store.clone(), self.table);
        tokio::task::spawn_blocking(move || {
            let mut ops = Vec::new();
            for batch in &batches {
                let rows = batch_to_rows(table, batch).map_err(external)?;
                ops.extend(rows.into_iter().map(WriteOp::Insert));
            }
            let n = ops.len() as u64;
            if n > 0 {
                store.apply(ops).map_err(external)?;
            }
            Ok(n)
        })
        .await
        .map_err(|e| DataFusionError::Execution(format!("an insert failed: {e}")))?
    }
}

impl DisplayAs for RemSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "RemSink: table={}", self.table.name())
    }
}

#[async_trait::async_trait]
impl DataSink for RemSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        context: &Arc<TaskContext>,
    ) -> DfResult<u64> {
        let reservation = MemoryConsumer::new(format!("RemSink[{}]", self.table.name()))
            .register(context.memory_pool());
        let mut pending: Vec<RecordBatch> = Vec::new();
        let mut pending_rows = 0usize;
        let mut written = 0u64;
        // Known only as it goes: a bar (or log lines) once it passes 10,000 rows.
        let mut progress =
            crate::progress::Progress::start(format!("rows into {}", self.table.name()), None);
        let committed = |written: u64, e: DataFusionError| match written {
            0 => e,
            n => e.context(format!("{n} rows of the statement were committed before")),
        };
        while let Some(batch) = data.next().await {
            let batch = batch.map_err(|e| committed(written, e))?;
            reservation
                .try_grow(batch.get_array_memory_size())
                .map_err(|e| committed(written, e))?;
            pending_rows += batch.num_rows();
            pending.push(batch);
            if pending_rows >= INSERT_CHUNK_ROWS || reservation.size() >= INSERT_CHUNK_BYTES {
                let chunk = std::mem::take(&mut pending);
                written += self
                    .commit(chunk)
                    .await
                    .map_err(|e| committed(written, e))?;
                pending_rows = 0;
                reservation.free();
                progress.set(written);
            }
        }
        written += self
            .commit(pending)
            .await
            .map_err(|e| committed(written, e))?;
        progress.set(written);
        progress.finish();
        Ok(written)
    }
}

/// What a [`RemDmlExec`] does to the rows it selects.
#[derive(Debug, Clone)]
pub enum DmlKind {
    Delete,
    /// New values by column index, as expressions over the old row.
    Update(Vec<(usize, Arc<dyn PhysicalExpr>)>),
}

/// Runs an `UPDATE` or `DELETE` and returns one row with the `count` of rows changed.
pub type RemDmlExec = LeafExec<Dml>;

/// What a [`RemDmlExec`] changes: the rows of `path` that pass every filter.
#[derive(Debug, Clone)]
pub struct Dml {
    store: TenantStore,
    table: Table,
    access: Access,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    kind: DmlKind,
}

impl RemDmlExec {
    pub fn dml(
        store: TenantStore,
        table: Table,
        access: Access,
        filters: Vec<Arc<dyn PhysicalExpr>>,
        kind: DmlKind,
    ) -> Self {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]));
        let dml = Dml {
            store,
            table,
            access,
            filters,
            kind,
        };
        LeafExec::new(dml, schema)
    }
}

/// Rows an `UPDATE` or `DELETE` reads, changes and commits at a time, holding the
/// tenant's write lock for that chunk only.
pub const DML_CHUNK_ROWS: usize = 1024;

/// The work of a [`RemDmlExec`]: one chunk per step, each read, checked, changed and
/// committed under the tenant's write lock, so a chunk's rows are the latest ones and no
/// other writer's change falls between reading a row and writing it back. A statement
/// of more than one chunk commits chunk by chunk: stopped (a timeout, a crash), it
/// leaves whole chunks done and the rest untouched.
struct DmlWork {
    store: TenantStore,
    table: Table,
    path: AccessPath,
    filters: Vec<Arc<dyn PhysicalExpr>>,
    kind: DmlKind,
    cursor: Option<RowCursor>,
    changed: u64,
    now: i64,
    schema: SchemaRef,
    done: bool,
}

impl Chunks for DmlWork {
    fn step(&mut self, _stop: &Stop) -> DfResult<Step> {
        if self.done {
            return Ok(Step::Done);
        }
        let cursor = match &mut self.cursor {
            Some(cursor) => cursor,
            None => self.cursor.insert(
                self.store
                    .scan(self.table, &self.path, None)
                    .map_err(external)?
                    // Full rows, embeddings included: an UPDATE restates the whole row.
                    .with_vectors(true),
            ),
        };
        let (table, filters, kind, now) = (self.table, &self.filters, &self.kind, self.now);
        let changed = self
            .store
            .with_writer(|writer| {
                let chunk = cursor.next_chunk(DML_CHUNK_ROWS)?;
                if chunk.is_empty() {
                    return Ok(None);
                }
                let ops = changes(table, filters, kind, now, chunk)?;
                if ops.is_empty() {
                    return Ok(Some(0));
                }
                Ok(Some(writer.apply(ops)?.iter().sum::<u64>()))
            })
            .map_err(external)?;
        match changed {
            Some(n) => {
                self.changed += n;
                Ok(Step::Continue)
            }
            None => {
                self.done = true;
                Ok(Step::Batch(RecordBatch::try_new(
                    Arc::clone(&self.schema),
                    vec![Arc::new(UInt64Array::from(vec![self.changed]))],
                )?))
            }
        }
    }

    fn is_done(&self) -> bool {
        self.done
    }
}

/// The writes a DML statement makes of one chunk of rows: every filter is evaluated
/// again (the access path may answer only some of them), and the rows that pass are
/// deleted or replaced by their new values.
fn changes(
    table: Table,
    filters: &[Arc<dyn PhysicalExpr>],
    kind: &DmlKind,
    now: i64,
    chunk: Vec<(u64, Row)>,
) -> crate::error::Result<Vec<WriteOp>> {
    let full: Vec<usize> = (0..table_schema(table).fields().len()).collect();
    let (ids, rows): (Vec<u64>, Vec<Row>) = chunk.into_iter().unzip();
    let batch = rows_to_batch(table, &rows, &full)?;
    let mut mask = datafusion::arrow::array::BooleanArray::from(vec![true; batch.num_rows()]);
    for filter in filters {
        let value = filter.evaluate(&batch)?.into_array(batch.num_rows())?;
        let value = value
            .as_boolean_opt()
            .ok_or_else(|| Error::Query("WHERE clause is not boolean".into()))?;
        mask =
            datafusion::arrow::compute::and_kleene(&mask, value).map_err(DataFusionError::from)?;
    }
    let selected = filter_record_batch(&batch, &mask).map_err(DataFusionError::from)?;
    let selected_ids: Vec<u64> = ids
        .iter()
        .zip(mask.iter())
        .filter(|(_, m)| *m == Some(true))
        .map(|(id, _)| *id)
        .collect();
    if selected.num_rows() == 0 {
        return Ok(vec![]);
    }
    Ok(match kind {
        DmlKind::Delete => selected_ids
            .into_iter()
            .map(|row_id| WriteOp::DeleteAt { table, row_id })
            .collect(),
        DmlKind::Update(assignments) => {
            let schema = table_schema(table);
            let mut columns: Vec<ArrayRef> = selected.columns().to_vec();
            for (index, expr) in assignments {
                let value = expr.evaluate(&selected)?.into_array(selected.num_rows())?;
                columns[*index] = cast(&value, schema.field(*index).data_type())
                    .map_err(DataFusionError::from)?;
            }
            let updates_timestamp = assignments
                .iter()
                .any(|(i, _)| schema.field(*i).name() == "updated_at");
            let new_batch = RecordBatch::try_new(Arc::clone(&schema), columns)
                .map_err(DataFusionError::from)?;
            let new_rows = batch_to_rows(table, &new_batch)?;
            selected_ids
                .into_iter()
                .zip(new_rows)
                .map(|(row_id, mut row)| {
                    if !updates_timestamp {
                        stamp_update(&mut row, now);
                    }
                    WriteOp::Replace { row_id, row }
                })
                .collect()
        }
    })
}

fn stamp_update(row: &mut Row, now: i64) {
    match row {
        Row::Resource(r) => r.updated_at = now,
        Row::Entity(e) => e.updated_at = now,
        Row::Edge(_) | Row::Moment(_) => {}
    }
}

impl Leaf for Dml {
    const NAME: &'static str = "RemDmlExec";
    const EMISSION: EmissionType = EmissionType::Final;

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let op = match self.kind {
            DmlKind::Delete => "delete",
            DmlKind::Update(_) => "update",
        };
        write!(
            f,
            "op={op}, table={}, access={}",
            self.table.name(),
            self.access
        )
    }

    fn expressions(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        let assignments: &[(usize, Arc<dyn PhysicalExpr>)] = match &self.kind {
            DmlKind::Delete => &[],
            DmlKind::Update(assignments) => assignments,
        };
        self.filters
            .iter()
            .chain(assignments.iter().map(|(_, expr)| expr))
            .collect()
    }

    fn start(
        &self,
        _partition: usize,
        _context: &TaskContext,
        schema: &SchemaRef,
        _metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn Chunks>> {
        Ok(Box::new(DmlWork {
            store: self.store.clone(),
            table: self.table,
            path: self.access.path.clone(),
            filters: self.filters.clone(),
            kind: self.kind.clone(),
            cursor: None,
            changed: 0,
            now: now_micros(),
            schema: Arc::clone(schema),
            done: false,
        }))
    }
}
