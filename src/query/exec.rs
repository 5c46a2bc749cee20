//! Query layer: the physical plan nodes that read and write a tenant's tables.
//!
//! * [`RemScanExec`] streams the rows an access path selects; EXPLAIN prints the path.
//! * [`RemSink`] receives `INSERT` batches and commits them a chunk at a time (`dml`).
//! * [`RemDmlExec`] runs `UPDATE` and `DELETE`: it finds the rows through the same access
//!   path as a `SELECT` with that `WHERE`, and per chunk, under the tenant's write lock,
//!   re-checks every filter and commits the changes (`dml`). The work happens when the
//!   plan is polled, not when it is planned, so `EXPLAIN DELETE ...` changes nothing.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::{concat, filter_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result as DfResult, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr};
use datafusion::physical_expr::utils::{Guarantee, LiteralGuarantee};
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};

use super::access::{Access, plan_access};
use super::convert::{EMBEDDING_COLUMN, rows_to_batch, table_schema};
use super::lazy::{Chunks, Step, Stop, cancelled};
use super::leaf::{Leaf, LeafExec};
use crate::error::Error;
use crate::storage::{AccessPath, IndexDef, Row, RowCursor, Table, TenantStore};

mod dml;
pub use dml::{
    DML_CHUNK_ROWS, DmlKind, INSERT_CHUNK_BYTES, INSERT_CHUNK_ROWS, RemDmlExec, RemSink,
};

pub(super) fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Reads rows of one table of one tenant through an access path.
///
/// The scan owns every filter it is given: those the path does not decide are checked
/// here, on the rows read (`residual`).
pub type RemScanExec = LeafExec<Scan>;

/// What a [`RemScanExec`] reads, and how.
#[derive(Debug, Clone)]
pub struct Scan {
    store: TenantStore,
    table: Table,
    access: Access,
    /// Columns read from storage (table-schema indexes): the output plus residual inputs.
    read: Vec<usize>,
    /// Positions in `read` of the output columns.
    output: Vec<usize>,
    residual: Option<Arc<dyn PhysicalExpr>>,
    limit: Option<usize>,
    /// The dynamic filter of a hash join above whose probe side this full scan is: when
    /// the join's build side has few enough keys, it becomes an IN list on an indexed
    /// column and the scan reads those keys through the index instead of every row.
    join_keys: Option<JoinKeys>,
    /// The names of the output columns.
    columns: Vec<String>,
}

/// A hash join's dynamic filter on one indexed column of the scan.
#[derive(Debug, Clone)]
struct JoinKeys {
    filter: Arc<dyn PhysicalExpr>,
    /// The table column the join compares (the filter's only column).
    column: String,
}

impl JoinKeys {
    /// The access path for the keys the filter holds now: `None` while it holds no IN
    /// list (not built yet, or too many keys, when DataFusion sends a hash-table check).
    fn path(&self, table: Table, user: &[IndexDef]) -> DfResult<Option<AccessPath>> {
        let current = match self.filter.downcast_ref::<DynamicFilterPhysicalExpr>() {
            Some(dynamic) => dynamic.current()?,
            None => Arc::clone(&self.filter),
        };
        Ok(in_list_values(&current, &self.column)
            .and_then(|values| in_list_path(table, &self.column, values, user)))
    }
}

/// The index path of `column IN (values)`, if an index answers it.
fn in_list_path(
    table: Table,
    column: &str,
    values: Vec<ScalarValue>,
    user: &[IndexDef],
) -> Option<AccessPath> {
    let expr = datafusion::prelude::col(column).in_list(
        values
            .into_iter()
            .map(|v| datafusion::logical_expr::Expr::Literal(v, None))
            .collect(),
        false,
    );
    let path = plan_access(table, &[&expr], user).path;
    (!path.is_full_scan()).then_some(path)
}

/// The values a hash join's dynamic filter (bounds AND membership) holds `column` to,
/// as DataFusion's literal guarantees find them (NULL, which no key equals, left out).
fn in_list_values(expr: &Arc<dyn PhysicalExpr>, column: &str) -> Option<Vec<ScalarValue>> {
    let guarantee = LiteralGuarantee::analyze(expr)
        .into_iter()
        .find(|g| g.guarantee == Guarantee::In && g.column.name() == column)?;
    let mut values: Vec<ScalarValue> = guarantee
        .literals
        .into_iter()
        .filter(|v| !v.is_null())
        .collect();
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (!values.is_empty()).then_some(values)
}

impl RemScanExec {
    /// `residual` is evaluated over the columns `read` (in that order).
    pub fn scan(
        store: TenantStore,
        table: Table,
        access: Access,
        projection: Vec<usize>,
        read: Vec<usize>,
        residual: Option<Arc<dyn PhysicalExpr>>,
        limit: Option<usize>,
    ) -> DfResult<Self> {
        let schema = Arc::new(table_schema(table).project(&projection)?);
        let output = projection
            .iter()
            .map(|c| read.iter().position(|r| r == c))
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| DataFusionError::Internal("scan output column not read".into()))?;
        let columns = schema.fields().iter().map(|f| f.name().clone()).collect();
        let scan = Scan {
            store,
            table,
            access,
            read,
            output,
            residual,
            limit,
            join_keys: None,
            columns,
        };
        Ok(LeafExec::new(scan, schema))
    }

    /// The same scan, returning at most `limit` rows.
    pub fn with_limit(&self, limit: Option<usize>) -> Self {
        self.with_leaf(Scan {
            limit,
            ..self.leaf().clone()
        })
    }

    /// The same scan, with its rows found by another path (the top-k rewrite).
    pub fn with_path(&self, path: AccessPath) -> Self {
        self.with_leaf(Scan {
            access: self.access.with_path(path),
            ..self.leaf().clone()
        })
    }

    /// The same scan without a dynamic filter taken as join keys: under a top-k sort
    /// that filter is the sort's own (it is still applied by the sort).
    pub fn without_join_keys(&self) -> Self {
        self.with_leaf(self.leaf().reset())
    }
}

impl Scan {
    pub fn access_path(&self) -> &AccessPath {
        &self.access.path
    }

    pub fn table(&self) -> Table {
        self.table
    }

    pub fn limit(&self) -> Option<usize> {
        self.limit
    }

    pub fn store(&self) -> &TenantStore {
        &self.store
    }

    /// The filters the scan checks on the rows it reads (over the table's columns as read).
    pub fn residual(&self) -> Option<&Arc<dyn PhysicalExpr>> {
        self.residual.as_ref()
    }

    /// True when the scan applies no filter of its own (a plain full scan).
    pub fn is_unfiltered_full_scan(&self) -> bool {
        self.access.path.is_full_scan() && self.residual.is_none() && self.limit.is_none()
    }

    /// The column of the scan's output that a hash join's dynamic filter compares, when
    /// an IN list on it would be answered by an index of the table.
    fn join_key_column(&self, filter: &Arc<dyn PhysicalExpr>) -> Option<String> {
        filter.downcast_ref::<DynamicFilterPhysicalExpr>()?;
        let children = filter.children();
        let [child] = children.as_slice() else {
            return None;
        };
        let column = child.downcast_ref::<Column>()?;
        let name = self.columns.get(column.index())?;
        if name != column.name() {
            return None;
        }
        let user = self.store.user_indexes().ok()?;
        let probe = vec![ScalarValue::from("k")];
        in_list_path(self.table, name, probe, &user).map(|_| name.clone())
    }
}

impl Leaf for Scan {
    const NAME: &'static str = "RemScanExec";
    const EMISSION: EmissionType = EmissionType::Incremental;

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "table={}, access={}", self.table.name(), self.access)?;
        if let Some(keys) = &self.join_keys {
            write!(f, " or join keys of {} by index", keys.column)?;
        }
        if let Some(residual) = &self.residual {
            write!(f, ", residual={residual}")?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        write!(f, ", projection=[{}]", self.columns.join(", "))
    }

    /// The join filter the scan consumes: a hash join computes its dynamic filter only
    /// when it finds a consumer of it below.
    fn expressions(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.join_keys.iter().map(|k| &k.filter).collect()
    }

    /// Takes a hash join's dynamic filter on an indexed column (see `join_keys`). The
    /// filter is not applied to the rows (the join does that).
    fn take_parent_filter(&self, filters: &[Arc<dyn PhysicalExpr>]) -> Option<Self> {
        if !self.access.path.is_full_scan() || self.join_keys.is_some() {
            return None;
        }
        let keys = filters.iter().find_map(|filter| {
            self.join_key_column(filter).map(|column| JoinKeys {
                filter: Arc::clone(filter),
                column,
            })
        })?;
        Some(Scan {
            join_keys: Some(keys),
            ..self.clone()
        })
    }

    /// Without a dynamic filter taken as join keys. A reset join drops its filter and
    /// makes a new one that this scan never hears of: keys kept from the last run would
    /// be stale, and a full scan is always right. (In a kept plan, which has no joins,
    /// the filter can only be a top-k sort's, which is never an IN list anyway.)
    fn reset(&self) -> Self {
        Scan {
            join_keys: None,
            ..self.clone()
        }
    }

    fn start(
        &self,
        partition: usize,
        context: &TaskContext,
        schema: &SchemaRef,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn Chunks>> {
        let batch_size = context.session_config().batch_size().max(1);
        let counter = |name: &'static str| MetricBuilder::new(metrics).counter(name, partition);
        let index_keys = counter("index_keys");
        // With a residual the limit counts rows that pass it, so storage cannot stop early.
        let storage_limit = if self.residual.is_some() {
            None
        } else {
            self.limit
        };
        let with_vectors = self.read.contains(&EMBEDDING_COLUMN);
        let cursor = match &self.join_keys {
            // The join fills its filter once its build side is read, before it pulls
            // the first row from this scan: the path is chosen then.
            Some(keys) => Cursor::JoinKeys {
                keys: keys.clone(),
                lookups: counter("join_key_lookups"),
            },
            None => Cursor::Path(self.access.path.clone()),
        };
        Ok(Box::new(ScanState {
            store: self.store.clone(),
            cursor,
            storage_limit,
            with_vectors,
            table: self.table,
            read: self.read.clone(),
            output: self.output.clone(),
            residual: self.residual.clone(),
            remaining: self.limit.unwrap_or(usize::MAX),
            schema: Arc::clone(schema),
            batch_size,
            chunk: first_chunk(self.limit, self.residual.is_some(), batch_size),
            limited: self.limit.is_some(),
            index_keys,
            skipped: counter("index_entries_skipped"),
            from_memory: counter("order_in_memory"),
        }))
    }
}

/// A scan's cursor, or what it opens one from on its first read (opening resolves row
/// sets and may sort, so it is work of the first step, not of `execute()`).
enum Cursor {
    Open(RowCursor),
    Path(AccessPath),
    /// A hash join's keys, when they are few enough to be an index path.
    JoinKeys {
        keys: JoinKeys,
        lookups: Count,
    },
}

struct ScanState {
    store: TenantStore,
    cursor: Cursor,
    /// The limit storage may stop at (none when a residual decides which rows count).
    storage_limit: Option<usize>,
    with_vectors: bool,
    table: Table,
    read: Vec<usize>,
    output: Vec<usize>,
    residual: Option<Arc<dyn PhysicalExpr>>,
    remaining: usize,
    schema: SchemaRef,
    batch_size: usize,
    /// Rows to read next: starts near the limit, then (with a residual and a limit) what
    /// the rows still wanted need at the pass rate seen so far, else double, up to the
    /// batch size; so an ordered walk with a residual filter reads little more than it
    /// returns.
    chunk: usize,
    /// The scan has a limit (`remaining` counts down from it).
    limited: bool,
    index_keys: Count,
    /// Entries an ordered walk passed over (rows outside its set).
    skipped: Count,
    /// Rows an ordered walk took in order from memory.
    from_memory: Count,
}

/// The rows to read after a chunk of `chunk`: with a residual (`rows read, passed` in
/// that chunk) and a limit (`remaining` rows still wanted), what `remaining` needs at
/// the chunk's pass rate, with a quarter more and 8 rows to spare; else (or when the
/// chunk passed nothing) twice as many. At most `batch_size`. The last chunk's rate, not
/// the scan's: after a run of rows that fail, chunks grow again.
fn next_chunk(
    chunk: usize,
    filtered: Option<(usize, usize)>,
    remaining: Option<usize>,
    batch_size: usize,
) -> usize {
    let doubled = chunk.saturating_mul(2).min(batch_size);
    match (filtered, remaining) {
        (Some((read, passed)), Some(remaining)) if passed > 0 => {
            let need = remaining as f64 * read as f64 / passed as f64 * 1.25;
            (need.ceil() as usize).saturating_add(8).min(batch_size)
        }
        _ => doubled,
    }
}

fn first_chunk(limit: Option<usize>, residual: bool, batch_size: usize) -> usize {
    match limit {
        Some(n) if residual => n.max(64).min(batch_size),
        Some(n) => n.clamp(1, batch_size),
        None => batch_size,
    }
}

impl Chunks for ScanState {
    /// One chunk read from storage; rows that all fail the residual make no batch.
    fn step(&mut self, stop: &Stop) -> DfResult<Step> {
        if self.remaining == 0 {
            return Ok(Step::Done);
        }
        let Some(batch) = self.read_batch()? else {
            return Ok(Step::Done);
        };
        let read = batch.num_rows();
        let batch = match &self.residual {
            None => batch,
            Some(residual) => keep_passing(&batch, residual, stop)?,
        };
        self.chunk = next_chunk(
            self.chunk,
            self.residual.is_some().then_some((read, batch.num_rows())),
            self.limited
                .then(|| self.remaining.saturating_sub(batch.num_rows())),
            self.batch_size,
        );
        let batch = batch.project(&self.output)?;
        if batch.num_rows() == 0 && self.residual.is_some() {
            return Ok(Step::Continue);
        }
        let batch = if batch.num_rows() > self.remaining {
            batch.slice(0, self.remaining)
        } else {
            batch
        };
        self.remaining -= batch.num_rows();
        Ok(Step::Batch(batch))
    }

    fn is_done(&self) -> bool {
        self.remaining == 0
    }
}

/// Rows a residual is evaluated over at a time: a costly filter over a large chunk
/// checks the stop flag between slices.
const RESIDUAL_SLICE: usize = 1024;

/// The rows of `batch` that pass `residual`: evaluated a slice at a time, filtered once.
fn keep_passing(
    batch: &RecordBatch,
    residual: &Arc<dyn PhysicalExpr>,
    stop: &Stop,
) -> DfResult<RecordBatch> {
    let mut masks: Vec<ArrayRef> = Vec::with_capacity(batch.num_rows().div_ceil(RESIDUAL_SLICE));
    let mut at = 0;
    while at < batch.num_rows() {
        if stop.is_set() {
            return Err(cancelled());
        }
        let part = batch.slice(at, RESIDUAL_SLICE.min(batch.num_rows() - at));
        masks.push(residual.evaluate(&part)?.into_array(part.num_rows())?);
        at += part.num_rows();
    }
    let mask = match masks.len() {
        0 => return Ok(batch.clone()),
        1 => masks.swap_remove(0),
        _ => {
            let parts: Vec<&dyn Array> = masks.iter().map(|m| m.as_ref()).collect();
            concat(&parts)?
        }
    };
    let mask = mask
        .as_boolean_opt()
        .ok_or_else(|| DataFusionError::Internal("scan residual is not boolean".into()))?;
    Ok(filter_record_batch(batch, mask)?)
}

impl ScanState {
    /// The open cursor, opened on the first read: through the access path, or (below a
    /// hash join) through the join's keys when they are few enough to be an IN list on
    /// an indexed column.
    fn cursor(&mut self) -> DfResult<&mut RowCursor> {
        let path = match &self.cursor {
            Cursor::Open(_) => None,
            Cursor::Path(path) => Some(path.clone()),
            Cursor::JoinKeys { keys, lookups } => {
                let user = self.store.user_indexes().map_err(external)?;
                Some(match keys.path(self.table, &user)? {
                    Some(path) => {
                        lookups.add(1);
                        path
                    }
                    None => AccessPath::FullScan,
                })
            }
        };
        if let Some(path) = path {
            let cursor = self
                .store
                .scan(self.table, &path, self.storage_limit)
                .map_err(external)?
                .with_vectors(self.with_vectors);
            self.cursor = Cursor::Open(cursor);
        }
        match &mut self.cursor {
            Cursor::Open(cursor) => Ok(cursor),
            _ => Err(DataFusionError::Internal("scan cursor not open".into())),
        }
    }

    /// The next batch of the `read` columns, straight from storage.
    fn read_batch(&mut self) -> DfResult<Option<RecordBatch>> {
        let batch_size = self.batch_size;
        let chunk = self.chunk;
        let read_nothing = self.read.is_empty();
        let cursor = self.cursor()?;
        // No columns wanted (count(*)): an index path is counted without reading rows.
        if read_nothing && cursor.is_indexed() {
            let n = cursor.skip_ids(batch_size).map_err(external)?;
            self.index_keys.add(n);
            if n == 0 {
                return Ok(None);
            }
            let options = RecordBatchOptions::new().with_row_count(Some(n));
            return Ok(Some(RecordBatch::try_new_with_options(
                Arc::clone(&self.schema),
                vec![],
                &options,
            )?));
        }
        let before = (
            cursor.index_keys_read(),
            cursor.index_entries_skipped(),
            cursor.ordered_from_memory(),
        );
        let rows = cursor.next_chunk(chunk).map_err(external)?;
        let after = (
            cursor.index_keys_read(),
            cursor.index_entries_skipped(),
            cursor.ordered_from_memory(),
        );
        self.index_keys.add(after.0 - before.0);
        self.skipped.add(after.1 - before.1);
        self.from_memory.add(after.2 - before.2);
        if rows.is_empty() {
            return Ok(None);
        }
        let rows: Vec<Row> = rows.into_iter().map(|(_, row)| row).collect();
        rows_to_batch(self.table, &rows, &self.read)
            .map(Some)
            .map_err(external)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_follow_the_pass_rate() {
        // Half of 100 rows passed, 50 wanted: 125 rows and 8 to spare.
        assert_eq!(next_chunk(100, Some((100, 50)), Some(50), 8192), 133);
        // Nothing passed yet, no residual, or no limit: double.
        assert_eq!(next_chunk(100, Some((100, 0)), Some(50), 8192), 200);
        assert_eq!(next_chunk(100, None, Some(50), 8192), 200);
        assert_eq!(next_chunk(100, Some((100, 50)), None, 8192), 200);
        // Never above a batch.
        assert_eq!(next_chunk(100, Some((1000, 1)), Some(50), 8192), 8192);
        assert_eq!(next_chunk(6000, None, None, 8192), 8192);
        // Everything passed: a little more than wanted.
        assert_eq!(next_chunk(64, Some((64, 64)), Some(36), 8192), 53);
        // A huge limit does not overflow.
        assert_eq!(next_chunk(64, Some((64, 1)), Some(usize::MAX), 8192), 8192);
        assert_eq!(first_chunk(Some(100), true, 8192), 100);
        assert_eq!(first_chunk(Some(10), true, 8192), 64);
        assert_eq!(first_chunk(None, true, 8192), 8192);
    }
}
