//! Query layer: vector search in SQL.
//!
//! * `vector_similar('resources', <query vector>, k [, min_score [, ef]])` is a table
//!   function whose rows are the table's rows plus `score` and `distance`, nearest first.
//! * [`VectorTopKRule`] turns the pgvector form, `ORDER BY cosine_distance(embedding, q)
//!   LIMIT k` (or `array_distance` for L2, `inner_product(...) DESC` for inner product),
//!   over an unfiltered scan of `resources` into the same HNSW probe, when the tenant's
//!   index uses the matching metric. The sort above still orders the k rows by the exact
//!   distance; without an index the query runs as an exact scan.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Builder, ListBuilder, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult, ScalarValue, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDFImpl, Signature, TableProviderFilterPushDown,
    TableType, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;

use super::access::plan_access;
use super::convert::table_schema;
use super::exec::external;
use super::provider::unqualified;
use crate::query::QueryOptions;
use crate::storage::{Table, TenantStore};
use crate::vector::MAX_SEARCH_K;

mod search;
mod topk;
use super::leaf::LeafExec;
use search::RowCheck;
pub use search::{
    CANDIDATE_CAP_SCALE, EXACT_MAX_CANDIDATES, Strategy, VectorSearch, VectorSearchExec,
    candidate_cap, choose_strategy, exact_max,
};
pub use topk::VectorTopKRule;
pub(super) use topk::{replace_scan, rewrite_sort_inputs};

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
        let k = match constant(session, &exprs[2], "vector_similar", "k")?
            .cast_to(&DataType::Int64)?
        {
            ScalarValue::Int64(Some(k)) if (1..=MAX_SEARCH_K as i64).contains(&k) => k as usize,
            other => {
                return plan_err!(
                    "vector_similar: k must be an integer within 1..={MAX_SEARCH_K}, got {other}"
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
        let search = VectorSearch {
            store: self.store.clone(),
            query: self.query.clone(),
            param: self.bound_from.clone(),
            k: self.k,
            min_score: self.min_score,
            ef: self.ef,
            metric,
            candidates: plan.access(Table::Resources),
            force: self.options.vector_strategy,
            residual,
            filter,
            projection,
        };
        Ok(Arc::new(LeafExec::new(search, schema)))
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
