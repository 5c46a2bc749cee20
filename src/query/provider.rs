//! Query layer: `RemTable`, the DataFusion `TableProvider` of one REM table of one tenant.
//!
//! It is a thin adapter in the GreptimeDB manner: it turns DataFusion's scan arguments
//! into an access path (via [`plan_access`]) and hands the storage layer a plain request;
//! `INSERT`, `UPDATE` and `DELETE` go through the same tenant-bound store.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{
    Column, DFSchema, DataFusionError, Result as DfResult, SchemaExt, not_impl_err, plan_err,
};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;

use super::convert::table_schema;
use super::exec::{DmlKind, RemDmlExec, RemScanExec, RemSink};
use super::pushdown::plan_access;
use crate::storage::{AccessPath, Table, TenantStore};

/// One REM table of one tenant.
#[derive(Debug)]
pub struct RemTable {
    store: TenantStore,
    table: Table,
    schema: SchemaRef,
    /// When false, every filter is left to DataFusion over a full scan (for comparisons).
    use_indexes: bool,
}

impl RemTable {
    pub fn new(store: TenantStore, table: Table, use_indexes: bool) -> Self {
        RemTable {
            store,
            table,
            schema: table_schema(table),
            use_indexes,
        }
    }

    fn access_path(
        &self,
        filters: &[&Expr],
    ) -> DfResult<(AccessPath, Vec<TableProviderFilterPushDown>)> {
        if !self.use_indexes {
            return Ok((
                AccessPath::FullScan,
                vec![TableProviderFilterPushDown::Unsupported; filters.len()],
            ));
        }
        let user = self.store.user_indexes().map_err(DataFusionError::from)?;
        let plan = plan_access(self.table, filters, &user);
        Ok((plan.path, plan.pushdown))
    }

    /// DML filters arrive unsimplified (`ts > CAST('2024-01-01' AS TIMESTAMP)`); folding
    /// the constants lets them use the same indexes as a `SELECT`.
    fn simplify(&self, filters: Vec<Expr>) -> DfResult<Vec<Expr>> {
        let df_schema = Arc::new(DFSchema::try_from(Arc::clone(&self.schema))?);
        let context = SimplifyContext::builder().with_schema(df_schema).build();
        let simplifier = ExprSimplifier::new(context);
        filters
            .into_iter()
            .map(|f| simplifier.simplify(f))
            .collect()
    }

    fn dml_plan(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
        kind: impl FnOnce(&DFSchema) -> DfResult<DmlKind>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let filters = self.simplify(filters)?;
        let refs: Vec<&Expr> = filters.iter().collect();
        let (path, _) = self.access_path(&refs)?;
        let df_schema = DFSchema::try_from(Arc::clone(&self.schema))?;
        let physical = filters
            .into_iter()
            .map(|f| state.create_physical_expr(f, &df_schema))
            .collect::<DfResult<Vec<_>>>()?;
        let kind = kind(&df_schema)?;
        Ok(Arc::new(RemDmlExec::new(
            self.store.clone(),
            self.table,
            path,
            physical,
            kind,
        )))
    }
}

fn has_placeholder(expr: &Expr) -> bool {
    expr.exists(|e| Ok(matches!(e, Expr::Placeholder(_))))
        .unwrap_or(false)
}

/// Replaces each placeholder of a known type by a non-null value of that type.
fn with_sample_values(expr: Expr) -> DfResult<Expr> {
    expr.transform(|e| match &e {
        Expr::Placeholder(Placeholder { field, .. }) => {
            // DataFusion infers no type for a function's argument (the value of
            // `json_array_contains(metadata, 'tags', $1)`): sample it as text, the type
            // such values have most often.
            let sample = match field {
                Some(field) => sample_value(field.data_type()),
                None => sample_value(&DataType::Utf8),
            };
            Ok(match sample {
                Some(value) => Transformed::yes(Expr::Literal(value, None)),
                None => Transformed::no(e),
            })
        }
        _ => Ok(Transformed::no(e)),
    })
    .data()
}

fn sample_value(data_type: &DataType) -> Option<ScalarValue> {
    match data_type {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => {
            ScalarValue::Utf8(Some(String::new()))
                .cast_to(data_type)
                .ok()
        }
        DataType::Boolean => Some(ScalarValue::Boolean(Some(false))),
        other => ScalarValue::new_zero(other).ok(),
    }
}

/// Drops table qualifiers (`edges.dst` -> `dst`): the scan evaluates over its own columns.
pub(super) fn unqualified(expr: Expr) -> DfResult<Expr> {
    expr.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .data()
}

#[async_trait]
impl TableProvider for RemTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        if !filters.iter().any(|f| has_placeholder(f)) {
            return Ok(self.access_path(filters)?.1);
        }
        // A statement prepared before its parameters are known: each placeholder is
        // classified as a value of its type, so that a filter an index serves reaches the
        // scan. `scan` classifies the bound filters again and re-checks what the index
        // does not decide, so a misleading sample costs speed, never a wrong row.
        let sampled: Vec<Expr> = filters
            .iter()
            .map(|f| with_sample_values((*f).clone()))
            .collect::<DfResult<_>>()?;
        let refs: Vec<&Expr> = sampled.iter().collect();
        Ok(self.access_path(&refs)?.1)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let refs: Vec<&Expr> = filters.iter().collect();
        let (path, pushdown) = self.access_path(&refs)?;
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        // Every filter the path does not decide is re-checked in the scan (see RemScanExec).
        let residual: Vec<Expr> = filters
            .iter()
            .zip(pushdown)
            .filter(|(_, p)| *p != TableProviderFilterPushDown::Exact)
            .map(|(f, _)| unqualified(f.clone()))
            .collect::<DfResult<_>>()?;
        let mut read = projection.clone();
        for expr in &residual {
            for column in expr.column_refs() {
                let index = self.schema.index_of(&column.name)?;
                if !read.contains(&index) {
                    read.push(index);
                }
            }
        }
        let residual = match conjunction(residual) {
            None => None,
            Some(expr) => {
                let read_schema = DFSchema::try_from(self.schema.project(&read)?)?;
                Some(state.create_physical_expr(expr, &read_schema)?)
            }
        };
        let exec = RemScanExec::new(
            self.store.clone(),
            self.table,
            path,
            projection,
            read,
            residual,
            limit,
        )?;
        Ok(Arc::new(exec))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return not_impl_err!(
                "{insert_op} is not supported for {}; use INSERT INTO",
                self.table.name()
            );
        }
        self.schema
            .logically_equivalent_names_and_types(&input.schema())?;
        let sink = RemSink::new(self.store.clone(), self.table);
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }

    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.dml_plan(state, filters, |_| Ok(DmlKind::Delete))
    }

    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = Arc::clone(&self.schema);
        self.dml_plan(state, filters, |df_schema| {
            let mut out = Vec::with_capacity(assignments.len());
            for (column, expr) in assignments {
                let Ok(index) = schema.index_of(&column) else {
                    return plan_err!(
                        "UPDATE of unknown column '{column}' in table {}",
                        self.table.name()
                    );
                };
                out.push((index, state.create_physical_expr(expr, df_schema)?));
            }
            Ok(DmlKind::Update(out))
        })
    }
}
