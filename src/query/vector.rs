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

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, Float32Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult, ScalarValue, plan_err};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions, replace_children_if_necessary,
};

use super::convert::{EMBEDDING_COLUMN, rows_to_batch, table_schema};
use super::exec::{RemScanExec, leaf_exec_plumbing};
use crate::error::Error;
use crate::storage::{AccessPath, Row, Table, TenantStore};
use crate::vector::Metric;

fn external(e: Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Evaluates a constant argument of a table function.
fn constant(session: &dyn Session, expr: &Expr, what: &str) -> DfResult<ScalarValue> {
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
        Err(e) => plan_err!("vector_similar: {what} must be a constant: {e}"),
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

/// `vector_similar(table, query, k [, min_score [, ef]])`.
#[derive(Debug)]
pub struct VectorSimilarFunc {
    store: TenantStore,
}

impl VectorSimilarFunc {
    pub fn new(store: TenantStore) -> Self {
        VectorSimilarFunc { store }
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
        let table = match constant(session, &exprs[0], "the table")? {
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
        let query = vector_from_scalar(&constant(session, &exprs[1], "the query vector")?)?;
        let k = match constant(session, &exprs[2], "k")?.cast_to(&DataType::Int64)? {
            ScalarValue::Int64(Some(k)) if (1..=10_000).contains(&k) => k as usize,
            other => {
                return plan_err!(
                    "vector_similar: k must be an integer within 1..=10000, got {other}"
                );
            }
        };
        let min_score = match exprs
            .get(3)
            .map(|e| constant(session, e, "min_score"))
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
            .map(|e| constant(session, e, "ef"))
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
        if let Some(options) = self.store.vector_options().map_err(external)? {
            options
                .check("the query vector", &query)
                .map_err(|e| DataFusionError::Plan(format!("vector_similar: {e}")))?;
        }
        Ok(Arc::new(VectorSimilarTable {
            store: self.store.clone(),
            query,
            k,
            min_score,
            ef,
            schema: similar_schema(),
        }))
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
#[derive(Debug)]
pub struct VectorSimilarTable {
    store: TenantStore,
    query: Vec<f32>,
    k: usize,
    min_score: Option<f32>,
    ef: Option<usize>,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for VectorSimilarTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
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
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Arc::new(VectorSearchExec {
            store: self.store.clone(),
            query: self.query.clone(),
            k: self.k,
            min_score: self.min_score,
            ef: self.ef,
            metric,
            projection,
            schema,
            properties,
        }))
    }
}

/// Runs one HNSW search and returns the rows it finds with their score and distance.
#[derive(Debug)]
pub struct VectorSearchExec {
    store: TenantStore,
    query: Vec<f32>,
    k: usize,
    min_score: Option<f32>,
    ef: Option<usize>,
    metric: Metric,
    projection: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl VectorSearchExec {
    fn run(&self) -> DfResult<RecordBatch> {
        let hits = self
            .store
            .search_vectors(&self.query, self.k, self.ef, None)
            .map_err(external)?;
        let hits: Vec<(u64, f32)> = hits
            .into_iter()
            .filter(|(_, d)| self.min_score.is_none_or(|m| self.metric.score(*d) >= m))
            .collect();
        let ids: Vec<u64> = hits.iter().map(|(id, _)| *id).collect();
        let table_columns = table_schema(Table::Resources).fields().len();
        let wants_vectors = self.projection.contains(&EMBEDDING_COLUMN);
        let mut cursor = self
            .store
            .scan_row_ids(Table::Resources, ids)
            .with_vectors(wants_vectors);
        let mut rows: Vec<(u64, Row)> = Vec::with_capacity(hits.len());
        loop {
            let chunk = cursor.next_chunk(1024).map_err(external)?;
            if chunk.is_empty() {
                break;
            }
            rows.extend(chunk);
        }
        // A row deleted since the search is skipped; keep distances aligned with rows.
        let distance_of: std::collections::HashMap<u64, f32> = hits.into_iter().collect();
        let distances: Vec<f32> = rows
            .iter()
            .map(|(id, _)| distance_of.get(id).copied().unwrap_or(f32::NAN))
            .collect();
        let row_values: Vec<Row> = rows.into_iter().map(|(_, r)| r).collect();
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
                    distances.iter().map(|d| self.metric.score(*d)),
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
            "VectorSearchExec: table=resources, strategy=hnsw, metric={}, k={}",
            self.metric.name(),
            self.k
        )?;
        if let Some(ef) = self.ef {
            write!(f, ", ef={ef}")?;
        }
        if let Some(m) = self.min_score {
            write!(f, ", min_score={m}")?;
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

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let batch = self.run()?;
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::iter(vec![Ok(batch)]),
        )))
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
        plan.transform_down(|node| {
            let Some(sort) = node.downcast_ref::<SortExec>() else {
                return Ok(Transformed::no(node));
            };
            match rewrite_sort(sort)? {
                Some(new_input) => Ok(Transformed::yes(replace_children_if_necessary(
                    Arc::clone(&node),
                    vec![new_input],
                )?)),
                None => Ok(Transformed::no(node)),
            }
        })
        .data()
    }

    fn name(&self) -> &str {
        "remdb_vector_topk"
    }

    fn schema_check(&self) -> bool {
        true
    }
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
    replace_scan(sort.input(), column, &|scan: &RemScanExec| {
        if scan.table() != Table::Resources || !scan.is_unfiltered_full_scan() {
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

type ScanRewrite<'a> = &'a dyn Fn(&RemScanExec) -> DfResult<Option<RemScanExec>>;

/// Walks down through projections (following `column`) and pass-through nodes to the
/// scan that produces `column` = `embedding`, and rebuilds the path with the new scan.
fn replace_scan(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
    rewrite: ScanRewrite,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(scan) = plan.downcast_ref::<RemScanExec>() {
        if plan.schema().field(column).name() != "embedding" {
            return Ok(None);
        }
        return Ok(rewrite(scan)?.map(|s| Arc::new(s) as Arc<dyn ExecutionPlan>));
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
