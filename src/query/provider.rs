//! Query layer: `RemTable`, the DataFusion `TableProvider` of one REM table of one tenant.
//!
//! It is a thin adapter in the GreptimeDB manner: it turns DataFusion's scan arguments
//! into an access path (via [`plan_access`]) and hands the storage layer a plain request;
//! `INSERT`, `UPDATE` and `DELETE` go through the same tenant-bound store.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::{
    Column, DFSchema, DataFusionError, Result as DfResult, SchemaExt, not_impl_err, plan_err,
};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;

use super::access::{Access, plan_access};
use super::convert::table_schema;
use super::exec::{DmlKind, RemDmlExec, RemScanExec, RemSink};
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
    ) -> DfResult<(Access, Vec<TableProviderFilterPushDown>)> {
        if !self.use_indexes {
            return Ok((
                Access::plain(self.table, AccessPath::FullScan),
                vec![TableProviderFilterPushDown::Unsupported; filters.len()],
            ));
        }
        let user = self.store.user_indexes().map_err(DataFusionError::from)?;
        let plan = plan_access(self.table, filters, &user);
        Ok((plan.access(self.table), plan.pushdown))
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
        Ok(Arc::new(RemDmlExec::dml(
            self.store.clone(),
            self.table,
            path,
            physical,
            kind,
        )))
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

    /// One contract: the scan evaluates every filter it is given. A filter its access
    /// path decides is not evaluated at all; every other one is the scan's residual,
    /// checked on the rows it reads (see `scan`). So each filter is `Exact`, whatever the
    /// others are: none is evaluated twice, no `FilterExec` sits above a scan, and a
    /// `LIMIT` reaches the scan, which counts the rows that pass. Only volatile filters
    /// (`random() < 0.5`), which must run once per row where DataFusion put them, stay
    /// above it. A filter with a placeholder (a prepared statement) is `Exact` too: the
    /// scan gets it bound.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.use_indexes && !f.is_volatile() {
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
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let refs: Vec<&Expr> = filters.iter().collect();
        let (path, pushdown) = self.access_path(&refs)?;
        let projection = projection
            .cloned()
            .unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        // Every filter the path does not decide is the scan's residual.
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
        let exec = RemScanExec::scan(
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
