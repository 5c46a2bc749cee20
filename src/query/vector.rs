//! Query layer: vector search in SQL.
//!
//! * `vector_similar('resources', <query vector>, k [, min_score [, ef]])` is a table
//!   function whose rows are the table's rows plus `score` and `distance`, nearest first.
//! * [`VectorTopKRule`] turns the pgvector form, `ORDER BY cosine_distance(embedding, q)
//!   LIMIT k` (or `array_distance` for L2, `inner_product(...) DESC` for inner product),
//!   over an unfiltered scan of `resources` into the same HNSW probe, when the tenant's
//!   index uses the matching metric. The sort above still orders the k rows by the exact
//!   distance; without an index the query runs as an exact scan.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float32Builder, ListBuilder, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult, ScalarValue, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, TableProviderFilterPushDown,
    TableType, Volatility,
};
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::EmissionType;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties,
    ReplaceChildrenOptions, replace_children_if_necessary,
};

use super::convert::{EMBEDDING_COLUMN, rows_to_batch, table_schema};
use super::exec::{RemScanExec, external, leaf_exec_plumbing, plan_properties};
use super::lazy::{Once, cancelled, chunk_stream};
use super::provider::unqualified;
use super::pushdown::{describe, plan_access};
use crate::query::QueryOptions;
use crate::storage::{
    AccessPath, Candidates, MAX_KEPT_SET_VECTORS, Row, RowBitmap, Table, TenantStore,
};
use crate::vector::Metric;

/// Evaluates a constant argument of table function `func`.
pub(super) fn constant(
    session: &dyn Session,
    expr: &Expr,
    func: &str,
    what: &str,
) -> DfResult<ScalarValue> {
    let schema = DFSchema::empty();
    let physical = session.create_physical_expr(expr.clone(), &schema)?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match physical.evaluate(&batch) {
        Ok(value) => match value {
            datafusion::logical_expr::ColumnarValue::Scalar(s) => Ok(s),
            datafusion::logical_expr::ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0),
        },
        Err(e) => plan_err!("{func}: {what} must be a constant: {e}"),
    }
}

/// Reads a query vector from a constant list of numbers.
pub fn vector_from_scalar(value: &ScalarValue) -> DfResult<Vec<f32>> {
    let array = match value {
        ScalarValue::List(list) if !list.is_null(0) => list.value(0),
        ScalarValue::LargeList(list) if !list.is_null(0) => list.value(0),
        ScalarValue::FixedSizeList(list) if !list.is_null(0) => list.value(0),
        other => {
            return plan_err!(
                "vector_similar: the query must be an array of numbers, got {}",
                other.data_type()
            );
        }
    };
    let floats = datafusion::arrow::compute::cast(&array, &DataType::Float32).map_err(|_| {
        DataFusionError::Plan(format!(
            "vector_similar: the query must be an array of numbers, got a list of {}",
            array.data_type()
        ))
    })?;
    let floats = floats.as_primitive::<Float32Type>();
    if floats.null_count() > 0 {
        return plan_err!("vector_similar: the query vector contains NULL");
    }
    Ok(floats.values().to_vec())
}

/// The name of [`VectorParamFunc`].
pub const VECTOR_PARAM_FUNC: &str = "remdb_vector";

/// Encodes a vector as the text argument of [`VectorParamFunc`]: the little-endian
/// bytes of each f32, in hex.
pub fn encode_vector_param(v: &[f32]) -> String {
    let mut out = String::with_capacity(v.len() * 8);
    for x in v {
        for b in x.to_le_bytes() {
            out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
    }
    out
}

fn decode_vector_param(text: &str) -> DfResult<Vec<f32>> {
    let digit = |c: u8| -> DfResult<u8> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => plan_err!(
                "{VECTOR_PARAM_FUNC}: '{}' is not a hex digit",
                char::from(c)
            ),
        }
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(8) {
        return plan_err!(
            "{VECTOR_PARAM_FUNC}: {} hex digits are not a whole number of f32 values",
            bytes.len()
        );
    }
    bytes
        .chunks(8)
        .map(|chunk| {
            let mut le = [0u8; 4];
            for (i, pair) in chunk.chunks(2).enumerate() {
                le[i] = digit(pair[0])? << 4 | digit(pair[1])?;
            }
            Ok(f32::from_le_bytes(le))
        })
        .collect()
}

/// `remdb_vector('<hex>')`: a vector parameter as one literal. `sql_with_params` binds a
/// `Param::Vector` through it, so planning a query costs the same at 768 dimensions as at
/// 3 (an `ARRAY[...]` of 768 number literals took milliseconds to plan). The argument is
/// the little-endian f32 bytes in hex ([`encode_vector_param`]).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct VectorParamFunc {
    signature: Signature,
}

impl Default for VectorParamFunc {
    fn default() -> Self {
        VectorParamFunc {
            signature: Signature::string(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for VectorParamFunc {
    fn name(&self) -> &str {
        VECTOR_PARAM_FUNC
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::new_list(DataType::Float32, true))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return plan_err!("{VECTOR_PARAM_FUNC} takes one argument");
        };
        let texts = arg.to_array(args.number_rows)?;
        let texts = datafusion::arrow::compute::cast(&texts, &DataType::Utf8)?;
        let mut lists = ListBuilder::new(Float32Builder::new());
        for text in texts.as_string::<i32>() {
            match text {
                Some(t) => {
                    lists.values().append_slice(&decode_vector_param(t)?);
                    lists.append(true);
                }
                None => lists.append(false),
            }
        }
        let array: ArrayRef = Arc::new(lists.finish());
        Ok(match arg {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(ScalarValue::try_from_array(&array, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(array),
        })
    }
}

/// `vector_similar(table, query, k [, min_score [, ef]])`.
#[derive(Debug)]
pub struct VectorSimilarFunc {
    store: TenantStore,
    options: QueryOptions,
}

impl VectorSimilarFunc {
    pub fn new(store: TenantStore, options: QueryOptions) -> Self {
        VectorSimilarFunc { store, options }
    }
}

impl TableFunctionImpl for VectorSimilarFunc {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(3..=5).contains(&exprs.len()) {
            return plan_err!(
                "vector_similar(table, query_vector, k [, min_score [, ef]]) takes 3 to 5 arguments, got {}",
                exprs.len()
            );
        }
        let session = args.session();
        let table = match constant(session, &exprs[0], "vector_similar", "the table")? {
            ScalarValue::Utf8(Some(t))
            | ScalarValue::Utf8View(Some(t))
            | ScalarValue::LargeUtf8(Some(t)) => t,
            other => {
                return plan_err!(
                    "vector_similar: the table must be a name in quotes, got {other}"
                );
            }
        };
        match Table::from_name(&table) {
            Some(Table::Resources) => {}
            Some(t) => {
                return plan_err!(
                    "vector_similar: table '{}' has no embeddings (only resources has)",
                    t.name()
                );
            }
            None => return plan_err!("vector_similar: unknown table '{table}'"),
        }
        // A placeholder (`$1`) of a prepared statement is bound later (see `bind`).
        let (query, param) = match &exprs[1] {
            Expr::Placeholder(p) => (Vec::new(), Some(p.id.clone())),
            e => (
                vector_from_scalar(&constant(session, e, "vector_similar", "the query vector")?)?,
                None,
            ),
        };
        let k =
            match constant(session, &exprs[2], "vector_similar", "k")?.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(k)) if (1..=10_000).contains(&k) => k as usize,
                other => {
                    return plan_err!(
                        "vector_similar: k must be an integer within 1..=10000, got {other}"
                    );
                }
            };
        let min_score = match exprs
            .get(3)
            .map(|e| constant(session, e, "vector_similar", "min_score"))
            .transpose()?
        {
            None => None,
            Some(v) if v.is_null() => None,
            Some(v) => match v.cast_to(&DataType::Float64)? {
                ScalarValue::Float64(Some(s)) if s.is_finite() => Some(s as f32),
                other => {
                    return plan_err!("vector_similar: min_score must be a number, got {other}");
                }
            },
        };
        let ef = match exprs
            .get(4)
            .map(|e| constant(session, e, "vector_similar", "ef"))
            .transpose()?
        {
            None => None,
            Some(v) => match v.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(ef)) if (1..=100_000).contains(&ef) => Some(ef as usize),
                other => {
                    return plan_err!(
                        "vector_similar: ef must be an integer within 1..=100000, got {other}"
                    );
                }
            },
        };
        let table = VectorSimilarTable {
            store: self.store.clone(),
            options: self.options,
            query,
            param,
            bound_from: None,
            k,
            min_score,
            ef,
            schema: similar_schema(),
        };
        if table.param.is_none() {
            table.check_query()?;
        }
        Ok(Arc::new(table))
    }
}

fn similar_schema() -> SchemaRef {
    let mut fields: Vec<Field> = table_schema(Table::Resources)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("score", DataType::Float32, false));
    fields.push(Field::new("distance", DataType::Float32, false));
    Arc::new(Schema::new(fields))
}

/// The rows of one `vector_similar(...)` call.
#[derive(Debug, Clone)]
pub struct VectorSimilarTable {
    store: TenantStore,
    /// Whether filters use indexes, and a strategy forced for measurements.
    options: QueryOptions,
    query: Vec<f32>,
    /// The placeholder the query vector is still to be bound from (empty `query`).
    param: Option<String>,
    /// The placeholder the query vector was bound from (a prepared statement's).
    bound_from: Option<String>,
    k: usize,
    min_score: Option<f32>,
    ef: Option<usize>,
    schema: SchemaRef,
}

impl VectorSimilarTable {
    /// The placeholder (`$1`) the query vector comes from, while it is not bound.
    pub fn parameter(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The same call with its query vector bound, checked like a literal one.
    pub fn bind(&self, query: Vec<f32>) -> DfResult<VectorSimilarTable> {
        let table = VectorSimilarTable {
            query,
            param: None,
            bound_from: self.param.clone(),
            ..self.clone()
        };
        table.check_query()?;
        Ok(table)
    }

    fn check_query(&self) -> DfResult<()> {
        if let Some(options) = self.store.vector_options().map_err(external)? {
            options
                .check("the query vector", &self.query)
                .map_err(|e| DataFusionError::Plan(format!("vector_similar: {e}")))?;
        }
        Ok(())
    }

    /// Columns of the table (not `score`/`distance`) that a filter reads: such a filter
    /// is evaluated inside the search.
    fn on_table_columns(&self, expr: &Expr) -> bool {
        let table_columns = table_schema(Table::Resources);
        let subquery = expr
            .exists(|e| {
                Ok(matches!(
                    e,
                    Expr::ScalarSubquery(_)
                        | Expr::InSubquery(_)
                        | Expr::Exists(_)
                        | Expr::OuterReferenceColumn(..)
                ))
            })
            .unwrap_or(true);
        !subquery
            && expr
                .column_refs()
                .iter()
                .all(|c| table_columns.index_of(&c.name).is_ok())
    }
}

#[async_trait]
impl TableProvider for VectorSimilarTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    /// Filters on the table's columns are pushed into the search, which applies them in
    /// full (`Exact`): the search returns k rows that pass, when k such rows exist.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.on_table_columns(f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if let Some(id) = &self.param {
            return plan_err!("vector_similar: no value is bound to parameter {id}");
        }
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let schema = Arc::new(self.schema.project(&projection)?);
        let metric = self
            .store
            .vector_options()
            .map_err(external)?
            .map(|o| o.metric)
            .unwrap_or_default();
        // The candidates an index gives, and the filters it does not decide.
        let filters: Vec<Expr> = filters
            .iter()
            .map(|f| unqualified(f.clone()))
            .collect::<DfResult<_>>()?;
        let refs: Vec<&Expr> = filters.iter().collect();
        let plan = if self.options.use_indexes {
            let user = self.store.user_indexes().map_err(external)?;
            plan_access(Table::Resources, &refs, &user)
        } else {
            plan_access(Table::Resources, &[], &[])
        };
        let residual: Vec<Expr> = filters
            .iter()
            .zip(&plan.pushdown)
            .filter(|(_, p)| **p != TableProviderFilterPushDown::Exact)
            .map(|(f, _)| f.clone())
            .collect();
        let residual = if self.options.use_indexes {
            RowCheck::new(state, residual)?
        } else {
            RowCheck::new(state, filters.clone())?
        };
        let filter = RowCheck::new(state, filters)?;
        let properties = plan_properties(Arc::clone(&schema), EmissionType::Final);
        Ok(Arc::new(VectorSearchExec {
            store: self.store.clone(),
            query: self.query.clone(),
            param: self.bound_from.clone(),
            k: self.k,
            min_score: self.min_score,
            ef: self.ef,
            metric,
            candidates: plan.path,
            force: self.options.vector_strategy,
            residual,
            filter,
            projection,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// How a search finds its k rows (chosen when it runs, from the candidate count m of the
/// filter's index set and the n vectors of the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// No filter: one HNSW search.
    Hnsw,
    /// m <= [`exact_max`]: score every candidate exactly (recall 1.0).
    Exact,
    /// HNSW search that skips rows outside the set (only when forced).
    InGraph,
    /// m > [`exact_max`]: search more than k (about k n / m), keep the hits
    /// in the candidate set, and widen until k rows pass or every vector was considered.
    Overfetch,
    /// More than [`candidate_cap`] candidates not in memory, or a filter no index answers: search
    /// more than k without a candidate set, check the filter on the rows read, widen.
    PostFilter,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Hnsw => "hnsw",
            Strategy::Exact => "exact",
            Strategy::InGraph => "hnsw_in_graph_filter",
            Strategy::Overfetch => "hnsw_overfetch",
            Strategy::PostFilter => "hnsw_post_filter",
        }
    }

    /// The strategy of a name [`Strategy::name`] gives.
    pub fn parse(name: &str) -> Option<Strategy> {
        [
            Strategy::Hnsw,
            Strategy::Exact,
            Strategy::InGraph,
            Strategy::Overfetch,
            Strategy::PostFilter,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// Candidate sets up to this size are scored exactly (see docs/BENCHMARKS.md, W-HYB:
/// about 1-2 us per candidate, the vector's 3 KB read from memory being most of it).
pub const EXACT_MAX_CANDIDATES: usize = 8192;
/// The most rows an over-fetching search asks the graph for before it widens again.
const WIDEN_FACTOR: usize = 4;

/// Scale of [`candidate_cap`].
pub const CANDIDATE_CAP_SCALE: f64 = 262.0;

/// The most candidate ids a search reads from the indexes in line (about sqrt(262 n):
/// 5,100 of 100k vectors, 16,200 of 1M); with more, and no whole set in the tenant's
/// candidate cache, it post-filters, and the set is read in the background for the
/// searches after it (`TenantStore::candidates`). Resolving m ids costs about
/// 0.4 us each, and post-filtering about 10 / s rows read at ~7 us plus a wider graph
/// search, for selectivity s = m / n: the two meet near s = sqrt(262 / n).
pub fn candidate_cap(total: usize) -> usize {
    ((CANDIDATE_CAP_SCALE * total as f64).sqrt() as usize).max(EXACT_MAX_CANDIDATES)
}

/// The most candidates scored exactly in an index of `total` vectors: as many as a
/// search reads in line ([`candidate_cap`]: 8,192 up to 256k vectors, 16,200 at 1M), at
/// most [`MAX_KEPT_SET_VECTORS`]. Above 8,192 the first search pays ~2-4 us per candidate
/// (one random read of the index each); it copies the set's vectors into memory, and
/// later searches on that filter score them in order at ~0.3 us (docs/BENCHMARKS.md).
pub fn exact_max(total: usize) -> usize {
    candidate_cap(total).min(MAX_KEPT_SET_VECTORS)
}

/// The strategy for a candidate set: exact scoring up to [`exact_max`], else
/// over-fetching against the set; post-filtering without one. In-graph filtering is never
/// chosen: with the set in memory, over-fetching was as good or better at every
/// selectivity the W-HYB sweep measured (docs/BENCHMARKS.md); it stays for forcing.
pub fn choose_strategy(candidates: &Candidates, filtered: bool, total: usize) -> Strategy {
    let m = match candidates {
        Candidates::All if filtered => return Strategy::PostFilter,
        Candidates::All => return Strategy::Hnsw,
        Candidates::Many => return Strategy::PostFilter,
        Candidates::Ids { ids, .. } => ids.len(),
        Candidates::Set(set) => set.len(),
    };
    if m <= exact_max(total) {
        Strategy::Exact
    } else {
        Strategy::Overfetch
    }
}

/// A filter evaluated on rows read by a search, over the table columns it names.
#[derive(Debug, Clone)]
struct RowCheck {
    expr: Arc<dyn PhysicalExpr>,
    columns: Vec<usize>,
}

impl RowCheck {
    fn new(state: &dyn Session, filters: Vec<Expr>) -> DfResult<Option<RowCheck>> {
        let table = table_schema(Table::Resources);
        let mut columns: Vec<usize> = Vec::new();
        for expr in &filters {
            for column in expr.column_refs() {
                let index = table.index_of(&column.name)?;
                if !columns.contains(&index) {
                    columns.push(index);
                }
            }
        }
        let Some(expr) = conjunction(filters) else {
            return Ok(None);
        };
        let read_schema = DFSchema::try_from(table.project(&columns)?)?;
        Ok(Some(RowCheck {
            expr: state.create_physical_expr(expr, &read_schema)?,
            columns,
        }))
    }

    /// Which of `rows` pass.
    fn keep(&self, rows: &[(u64, Row)]) -> DfResult<Vec<bool>> {
        let values: Vec<Row> = rows.iter().map(|(_, r)| r.clone()).collect();
        let batch = rows_to_batch(Table::Resources, &values, &self.columns).map_err(external)?;
        let mask = self.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            DataFusionError::Internal("vector search filter is not boolean".into())
        })?;
        Ok((0..mask.len())
            .map(|i| mask.is_valid(i) && mask.value(i))
            .collect())
    }
}

/// Runs one (filtered) vector search and returns the rows it finds with their score and
/// distance, nearest first.
#[derive(Debug, Clone)]
pub struct VectorSearchExec {
    store: TenantStore,
    query: Vec<f32>,
    /// The prepared statement's placeholder the query vector came from.
    param: Option<String>,
    k: usize,
    min_score: Option<f32>,
    ef: Option<usize>,
    metric: Metric,
    /// Where candidates come from: a full scan means "every vector".
    candidates: AccessPath,
    /// A strategy forced by the session's options (measurements, tests).
    force: Option<Strategy>,
    /// Pushed filters the candidate set does not decide.
    residual: Option<RowCheck>,
    /// Every pushed filter: checked on the rows when there is no exact candidate set.
    filter: Option<RowCheck>,
    projection: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

/// A row found by a search: its row id, its distance, the row.
type Hit = (u64, f32, Row);

/// Rows found so far, nearest first, and what was done to find them.
struct Found {
    rows: Vec<Hit>,
    seen: std::collections::HashSet<u64>,
    /// Set when a hit scored under `min_score`: no farther hit can qualify.
    below_min: bool,
}

impl VectorSearchExec {
    /// The placeholder (`$1`) of a prepared statement the query vector was bound from.
    pub fn parameter(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// The same search for another query vector (checked when the search runs), with
    /// fresh metrics: how a prepared statement reuses its physical plan.
    pub fn with_query(&self, query: Vec<f32>) -> VectorSearchExec {
        VectorSearchExec {
            query,
            metrics: ExecutionPlanMetricsSet::new(),
            ..self.clone()
        }
    }

    /// Reads the rows of `hits` (nearest first) not seen yet, keeps those that pass
    /// `check` and `min_score`, until k are found.
    fn collect(
        &self,
        hits: &[(u64, f32)],
        metric: Metric,
        check: Option<&RowCheck>,
        found: &mut Found,
        checked: &Count,
        stop: &AtomicBool,
    ) -> DfResult<()> {
        let fresh: Vec<(u64, f32)> = hits
            .iter()
            .filter(|(id, _)| !found.seen.contains(id))
            .copied()
            .collect();
        let wants_vectors = self.projection.contains(&EMBEDDING_COLUMN)
            || check.is_some_and(|c| c.columns.contains(&EMBEDDING_COLUMN));
        let chunk = (self.k * 2).max(64);
        for part in fresh.chunks(chunk) {
            if found.rows.len() >= self.k || found.below_min {
                return Ok(());
            }
            if stop.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let mut part = part.to_vec();
            if let Some(cut) = part
                .iter()
                .position(|(_, d)| self.min_score.is_some_and(|m| metric.score(*d) < m))
            {
                part.truncate(cut);
                found.below_min = true;
            }
            for (id, _) in &part {
                found.seen.insert(*id);
            }
            let ids: Vec<u64> = part.iter().map(|(id, _)| *id).collect();
            let mut cursor = self
                .store
                .scan_row_ids(Table::Resources, ids)
                .with_vectors(wants_vectors);
            let mut rows: Vec<(u64, Row)> = Vec::with_capacity(part.len());
            loop {
                let next = cursor.next_chunk(1024).map_err(external)?;
                if next.is_empty() {
                    break;
                }
                rows.extend(next);
            }
            checked.add(rows.len());
            let keep: Vec<bool> = match check {
                None => vec![true; rows.len()],
                Some(check) => check.keep(&rows)?,
            };
            let distance_of: std::collections::HashMap<u64, f32> = part.iter().copied().collect();
            for ((id, row), pass) in rows.into_iter().zip(keep) {
                if pass && found.rows.len() < self.k {
                    let d = distance_of.get(&id).copied().unwrap_or(f32::NAN);
                    found.rows.push((id, d, row));
                }
            }
        }
        Ok(())
    }

    /// The rows found, nearest first, and the metric of the index that found them (the
    /// index's own: a plan may outlive a change of the tenant's options).
    fn search(&self, partition: usize, stop: &AtomicBool) -> DfResult<(Vec<Hit>, Metric)> {
        let metric =
            |name: &'static str| MetricBuilder::new(&self.metrics).counter(name, partition);
        let (candidates_seen, distances, checked, widenings) = (
            metric("candidates"),
            metric("distance_computations"),
            metric("rows_checked"),
            metric("widenings"),
        );
        let mut found = Found {
            rows: Vec::with_capacity(self.k),
            seen: std::collections::HashSet::new(),
            below_min: false,
        };
        let Some(index) = self.store.vector_index().map_err(external)? else {
            return Ok((vec![], self.metric));
        };
        let index_metric = index.options().metric;
        index
            .options()
            .check("the query vector", &self.query)
            .map_err(external)?;
        let total = index.len();
        let filtered = self.filter.is_some();
        let candidates = match (&self.candidates, self.force) {
            (AccessPath::FullScan, _) => Candidates::All,
            (_, Some(Strategy::PostFilter)) => Candidates::Many,
            // A forced strategy that needs the candidate set gets all of it.
            (path, Some(forced)) if forced != Strategy::Hnsw => {
                match self
                    .store
                    .all_candidates(Table::Resources, path)
                    .map_err(external)?
                {
                    Some(set) => Candidates::Set(set),
                    None => Candidates::All,
                }
            }
            (path, _) => self
                .store
                .candidates(Table::Resources, path, candidate_cap(total))
                .map_err(external)?,
        };
        let strategy = match (self.force, &candidates) {
            (Some(forced), Candidates::Ids { .. } | Candidates::Set(_))
                if forced != Strategy::Hnsw =>
            {
                forced
            }
            _ => choose_strategy(&candidates, filtered, total),
        };
        metric(match strategy {
            Strategy::Hnsw => "strategy_hnsw",
            Strategy::Exact => "strategy_exact",
            Strategy::InGraph => "strategy_in_graph",
            Strategy::Overfetch => "strategy_overfetch",
            Strategy::PostFilter => "strategy_post_filter",
        })
        .add(1);
        // The set is the path's own (not a superset): its vectors may be kept for it.
        let own_set = matches!(
            candidates,
            Candidates::Set(_)
                | Candidates::Ids {
                    superset: false,
                    ..
                }
        );
        // With an exact candidate set, only what the indexes did not decide is checked.
        let (set, check) = match candidates {
            Candidates::Ids {
                ids,
                superset: false,
            } => (
                Some(Arc::new(RowBitmap::from_ids(&ids))),
                self.residual.as_ref(),
            ),
            Candidates::Ids { ids, .. } => (
                Some(Arc::new(RowBitmap::from_ids(&ids))),
                self.filter.as_ref(),
            ),
            Candidates::Set(set) => (Some(set), self.residual.as_ref()),
            Candidates::All | Candidates::Many => (None, self.filter.as_ref()),
        };
        if let Some(set) = &set {
            candidates_seen.add(set.len());
        }
        if strategy == Strategy::Exact {
            let mut scored = match &set {
                Some(set) if own_set => {
                    let (scored, in_memory) = self
                        .store
                        .exact_distances(
                            Table::Resources,
                            &self.candidates,
                            set,
                            &index,
                            &self.query,
                        )
                        .map_err(external)?;
                    if in_memory {
                        metric("vectors_in_memory").add(scored.len());
                    }
                    scored
                }
                Some(set) => index
                    .exact_distances(&self.query, &set.ids())
                    .map_err(external)?,
                None => vec![],
            };
            distances.add(scored.len());
            // Usually only the nearest few rows are read: order those first, the rest
            // only when the filter or min_score leaves fewer than k of them.
            let head = (self.k * WIDEN_FACTOR).max(64).min(scored.len());
            let by_distance = |a: &(u64, f32), b: &(u64, f32)| a.1.total_cmp(&b.1);
            if head < scored.len() {
                scored.select_nth_unstable_by(head, by_distance);
            }
            let (near, rest) = scored.split_at_mut(head);
            near.sort_by(by_distance);
            self.collect(near, index_metric, check, &mut found, &checked, stop)?;
            if found.rows.len() < self.k && !found.below_min {
                rest.sort_by(by_distance);
                self.collect(rest, index_metric, check, &mut found, &checked, stop)?;
            }
            return Ok((found.rows, index_metric));
        }
        let bits = set.as_deref();
        let visited = std::sync::atomic::AtomicUsize::new(0);
        let in_set = |id: u64| {
            visited.fetch_add(1, Ordering::Relaxed);
            bits.is_none_or(|b| b.contains(id))
        };
        // Over-fetching starts from the expected share of passing rows.
        let mut fetch = match (strategy, bits) {
            (Strategy::Overfetch, Some(set)) if !set.is_empty() => {
                (self.k as f64 * total as f64 / set.len() as f64 * 1.5).ceil() as usize
            }
            (Strategy::Overfetch | Strategy::PostFilter, _) => self.k * WIDEN_FACTOR,
            _ => self.k,
        }
        .clamp(self.k, total.max(self.k));
        loop {
            // The call's ef, else the tenant's ef_search; never below the rows wanted.
            let ef = self.ef.unwrap_or(index.ef_search()).max(fetch);
            let filter: Option<&(dyn Fn(u64) -> bool + Sync)> = match strategy {
                Strategy::InGraph => Some(&in_set),
                _ => None,
            };
            let hits = index
                .search(&self.query, fetch, Some(ef), filter)
                .map_err(external)?;
            distances.add(hits.len());
            // A graph search that skips rows can come back short of `fetch` while more
            // rows pass: it widens; an unfiltered one that comes back short has seen all.
            let exhausted = fetch >= total || (strategy != Strategy::InGraph && hits.len() < fetch);
            let hits: Vec<(u64, f32)> = match (bits, strategy) {
                (Some(b), Strategy::Overfetch) => {
                    hits.into_iter().filter(|(id, _)| b.contains(*id)).collect()
                }
                _ => hits,
            };
            self.collect(&hits, index_metric, check, &mut found, &checked, stop)?;
            if found.rows.len() >= self.k || found.below_min || exhausted {
                break;
            }
            widenings.add(1);
            fetch = (fetch * WIDEN_FACTOR).min(total);
        }
        metric("graph_filter_checks").add(visited.into_inner());
        // A wider search can find a nearer row than an earlier round did.
        found.rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        Ok((found.rows, index_metric))
    }

    fn run(&self, partition: usize, stop: &AtomicBool) -> DfResult<RecordBatch> {
        let (found, metric) = self.search(partition, stop)?;
        let table_columns = table_schema(Table::Resources).fields().len();
        let distances: Vec<f32> = found.iter().map(|(_, d, _)| *d).collect();
        let row_values: Vec<Row> = found.into_iter().map(|(_, _, r)| r).collect();
        let table_projection: Vec<usize> = self
            .projection
            .iter()
            .copied()
            .filter(|c| *c < table_columns)
            .collect();
        let base =
            rows_to_batch(Table::Resources, &row_values, &table_projection).map_err(external)?;
        let mut columns = Vec::with_capacity(self.projection.len());
        let mut base_pos = 0;
        for c in &self.projection {
            if *c < table_columns {
                columns.push(Arc::clone(base.column(base_pos)));
                base_pos += 1;
            } else if *c == table_columns {
                columns.push(Arc::new(Float32Array::from_iter_values(
                    distances.iter().map(|d| metric.score(*d)),
                )) as _);
            } else {
                columns.push(Arc::new(Float32Array::from(distances.clone())) as _);
            }
        }
        let options = datafusion::arrow::array::RecordBatchOptions::new()
            .with_row_count(Some(row_values.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }
}

impl DisplayAs for VectorSearchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "VectorSearchExec: table=resources, metric={}, k={}",
            self.metric.name(),
            self.k
        )?;
        if let Some(ef) = self.ef {
            write!(f, ", ef={ef}")?;
        }
        if let Some(m) = self.min_score {
            write!(f, ", min_score={m}")?;
        }
        match (&self.candidates, self.force) {
            (AccessPath::FullScan, _) if self.filter.is_none() => {
                write!(f, ", strategy={}", Strategy::Hnsw.name())?
            }
            (AccessPath::FullScan, _) => write!(f, ", strategy={}", Strategy::PostFilter.name())?,
            (path, Some(forced)) => write!(
                f,
                ", candidates={}, strategy={} (forced)",
                describe(Table::Resources, path),
                forced.name()
            )?,
            (path, None) => write!(
                f,
                ", candidates={}, strategy=by candidate count m (exact if m <= max({EXACT_MAX_CANDIDATES}, sqrt({CANDIDATE_CAP_SCALE} n)), else {} with the set in memory, {} without)",
                describe(Table::Resources, path),
                Strategy::Overfetch.name(),
                Strategy::PostFilter.name(),
            )?,
        }
        if let Some(residual) = &self.residual {
            write!(f, ", residual={}", residual.expr)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for VectorSearchExec {
    leaf_exec_plumbing!("VectorSearchExec");

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let search = self.clone();
        Ok(chunk_stream(
            Arc::clone(&self.schema),
            Once::new(move |stop: &AtomicBool| search.run(partition, stop)),
            None,
        ))
    }
}

/// Rewrites `ORDER BY <distance>(embedding, const) LIMIT k` over a plain scan of
/// `resources` into an HNSW probe of k rows (see the module docs).
#[derive(Debug, Default)]
pub struct VectorTopKRule;

impl PhysicalOptimizerRule for VectorTopKRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        rewrite_sort_inputs(plan, rewrite_sort)
    }

    fn name(&self) -> &str {
        "remdb_vector_topk"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The new input of a sort, or `None` to leave it.
pub(super) type SortRewrite = fn(&SortExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>>;

/// The body of a rule that replaces what a `SortExec` sorts: `rewrite` gives the new
/// input of a sort, or `None` to leave it.
pub(super) fn rewrite_sort_inputs(
    plan: Arc<dyn ExecutionPlan>,
    rewrite: SortRewrite,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(sort) = node.downcast_ref::<SortExec>() else {
            return Ok(Transformed::no(node));
        };
        match rewrite(sort)? {
            Some(input) => Ok(Transformed::yes(replace_children_if_necessary(
                Arc::clone(&node),
                vec![input],
            )?)),
            None => Ok(Transformed::no(node)),
        }
    })
    .data()
}

/// The metric a distance function orders by, and in which direction it must be sorted.
fn metric_of(function: &str) -> Option<(Metric, bool)> {
    match function {
        "cosine_distance" => Some((Metric::Cosine, false)),
        "array_distance" => Some((Metric::L2, false)),
        "inner_product" => Some((Metric::InnerProduct, true)),
        _ => None,
    }
}

/// The new input of `sort` when its key is a distance to a constant vector over an
/// unfiltered `resources` scan whose index has the matching metric.
fn rewrite_sort(sort: &SortExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(k) = sort.fetch() else {
        return Ok(None);
    };
    let first = sort.expr().first();
    let Some(function) = first.expr.downcast_ref::<ScalarFunctionExpr>() else {
        return Ok(None);
    };
    let Some((metric, descending)) = metric_of(function.name()) else {
        return Ok(None);
    };
    if first.options.descending != descending || function.args().len() != 2 {
        return Ok(None);
    }
    // The column may be cast to the literal's list type (f32 -> f64).
    let column_of = |e: &Arc<dyn PhysicalExpr>| match e.downcast_ref::<CastExpr>() {
        Some(cast) => cast.expr().downcast_ref::<Column>().cloned(),
        None => e.downcast_ref::<Column>().cloned(),
    };
    let (column, literal) = match (
        column_of(&function.args()[0]),
        function.args()[1].downcast_ref::<Literal>(),
        column_of(&function.args()[1]),
        function.args()[0].downcast_ref::<Literal>(),
    ) {
        (Some(c), Some(l), _, _) | (_, _, Some(c), Some(l)) => (c.index(), l.value().clone()),
        _ => return Ok(None),
    };
    let Ok(query) = vector_from_scalar(&literal) else {
        return Ok(None);
    };
    replace_scan(sort.input(), column, &|scan: &RemScanExec, name: &str| {
        if name != "embedding"
            || scan.table() != Table::Resources
            || !scan.is_unfiltered_full_scan()
        {
            return Ok(None);
        }
        let options = scan.store().vector_options().map_err(external)?;
        match options {
            Some(o) if o.metric == metric && o.dimensions == Some(query.len()) => {
                Ok(Some(scan.with_path(AccessPath::Nearest {
                    query: query.clone(),
                    k,
                    ef: None,
                })))
            }
            _ => Ok(None),
        }
    })
}

/// A new scan for a scan, given the name of the scan's column the rewrite follows.
pub(super) type ScanRewrite<'a> = &'a dyn Fn(&RemScanExec, &str) -> DfResult<Option<RemScanExec>>;

/// Walks down through projections (following `column`) and pass-through nodes to the
/// scan that produces `column`, and rebuilds the path with the scan `rewrite` makes of it
/// (given the name of that column in the scan). A filter between them stops the walk:
/// the scan owns every filter but volatile ones, and a limit set in the scan would count
/// rows before such a filter.
pub(super) fn replace_scan(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
    rewrite: ScanRewrite,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(scan) = plan.downcast_ref::<RemScanExec>() {
        let schema = plan.schema();
        let Some(field) = schema.fields().get(column) else {
            return Ok(None);
        };
        return Ok(rewrite(scan, field.name())?.map(|s| Arc::new(s) as Arc<dyn ExecutionPlan>));
    }
    let child_column = if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        match projection
            .expr()
            .get(column)
            .and_then(|p| p.expr.downcast_ref::<Column>())
        {
            Some(c) => c.index(),
            None => return Ok(None),
        }
    } else if plan.name() == "CooperativeExec" {
        column
    } else {
        return Ok(None);
    };
    let children = plan.children();
    let [child] = children.as_slice() else {
        return Ok(None);
    };
    match replace_scan(child, child_column, rewrite)? {
        Some(new_child) => Ok(Some(replace_children_if_necessary(
            Arc::clone(plan),
            vec![new_child],
        )?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_params_round_trip() {
        let v = [0.0f32, -1.5, 3.25e-7, f32::MAX];
        let text = encode_vector_param(&v);
        assert_eq!(text.len(), 32);
        assert_eq!(decode_vector_param(&text).unwrap(), v);
        assert!(decode_vector_param("0000803").is_err());
        assert!(decode_vector_param("0000803g").is_err());
    }

    #[test]
    fn query_vectors_from_constants() {
        let values = [
            ScalarValue::Float64(Some(0.5)),
            ScalarValue::Float64(Some(1.0)),
        ];
        let list = ScalarValue::List(ScalarValue::new_list(&values, &DataType::Float64, true));
        assert_eq!(vector_from_scalar(&list).unwrap(), vec![0.5f32, 1.0]);
        assert!(vector_from_scalar(&ScalarValue::Utf8(Some("x".into()))).is_err());
    }
}
