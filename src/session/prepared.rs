//! Session layer: prepared statements, planned once and run many times.
//!
//! [`Tenant::prepare`] parses a statement, plans it and runs the logical optimizer with
//! its `$1`, `$2`, ... placeholders still in place. Each [`PreparedStatement::execute`]
//! binds the values into that optimized plan (a vector parameter of `vector_similar` into
//! its table, checked like a literal) and goes straight to physical planning, so parsing,
//! SQL-to-logical planning and the logical optimizer run once per statement rather than
//! once per call. Filters with placeholders still reach the indexes: the scan classifies
//! the bound filters when the physical plan is made (see `RemTable`).
//!
//! A statement that cannot be planned before its values are known (a placeholder where
//! a constant is required, such as `traverse`'s arguments or `vector_similar`'s `k`) is
//! kept as parsed and planned on every call with its values in place, as
//! [`Tenant::sql_with_params`] does; [`PreparedStatement::is_planned`] tells which.
//!
//! The plan is made under the session settings of the moment it is prepared.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::Result as DfResult;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::{DefaultTableSource, provider_as_source};
use datafusion::execution::session_state::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::optimizer::OptimizerRule;
use datafusion::optimizer::simplify_expressions::SimplifyExpressions;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable, execute_stream};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Value, visit_expressions};
use parking_lot::Mutex;

use super::plan_cache::reusable;
use super::{ClientLimits, Param, Tenant, bind_params, client_runtime, guarded};
use crate::error::{Error, Result};
use crate::query::index_ddl::index_command;
use crate::query::lazy::on_own_thread_charged;
use crate::query::vector::{VectorSearchExec, VectorSimilarTable};
use crate::storage::{IndexDef, TenantStore};

/// A statement of one tenant, planned once; see the module documentation.
pub struct PreparedStatement {
    tenant: Tenant,
    form: Form,
}

enum Form {
    Planned(Box<Planned>),
    /// Planned on each call, with the values written into the statement.
    Reparsed(Statement),
}

struct Planned {
    state: SessionState,
    task: Arc<TaskContext>,
    plan: LogicalPlan,
    /// The type DataFusion inferred for each placeholder of an expression (`$1` -> ...).
    types: HashMap<String, Option<DataType>>,
    /// Placeholders that are query vectors of `vector_similar` calls.
    vectors: Vec<String>,
    /// Parameters the statement needs: the highest `$n` it names.
    count: usize,
    /// When every parameter is a query vector of `vector_similar` (or there is none),
    /// the physical plan of the first call, reused with the vectors swapped (see
    /// [`reusable`]), with the tenant's list of declared indexes it was made under.
    physical: Mutex<Option<CachedPlan>>,
}

/// A reusable physical plan and the declared indexes it was made under.
type CachedPlan = (Arc<dyn ExecutionPlan>, Arc<Vec<IndexDef>>);

impl std::fmt::Debug for PreparedStatement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedStatement")
            .field("tenant", &self.tenant.id())
            .field("planned", &self.is_planned())
            .finish()
    }
}

impl Tenant {
    /// Prepares one SQL statement with `$1`, `$2`, ... placeholders, to be run by
    /// [`PreparedStatement::execute`] with a value for each. Index commands cannot be
    /// prepared; DDL and session statements (`SET`) are refused.
    pub async fn prepare(&self, sql: &str) -> Result<PreparedStatement> {
        guarded(async {
            let statement = Self::one_statement(sql, &[])?;
            if index_command(&statement)?.is_some() {
                return Err(Error::invalid(
                    "CREATE INDEX and DROP INDEX cannot be prepared; run them as statements",
                ));
            }
            let state = self.inner.ctx.state();
            // A planning error may come from a placeholder where a constant is required:
            // such a statement is planned per call. Without placeholders, a statement that
            // does not plan now never will.
            let placeholders = has_placeholders(&statement);
            let plan = match state.statement_to_plan(statement.clone()).await {
                Ok(plan) => plan,
                Err(e) if !placeholders => return Err(e.into()),
                Err(_) => return Ok(self.reparsed(statement)),
            };
            // What the policy refuses is refused now, placeholders or not.
            self.policy.check(&plan)?;
            // `now()` and the like are folded into constants by the optimizer: planned once,
            // they would keep the time of `prepare`.
            if calls_stable_functions(&plan)? {
                return Ok(self.reparsed(statement));
            }
            let planned = match plan_once(&state, &plan) {
                Ok(planned) => planned,
                Err(e) if !placeholders => return Err(e),
                Err(_) => return Ok(self.reparsed(statement)),
            };
            Ok(PreparedStatement {
                tenant: self.clone(),
                form: Form::Planned(Box::new(planned)),
            })
        })
        .await
    }

    fn reparsed(&self, statement: Statement) -> PreparedStatement {
        PreparedStatement {
            tenant: self.clone(),
            form: Form::Reparsed(statement),
        }
    }
}

/// True when the plan calls a function whose value is fixed per query, not forever
/// (`now()`, `current_date`, ...).
pub(super) fn calls_stable_functions(plan: &LogicalPlan) -> Result<bool> {
    let mut found = false;
    plan.apply_with_subqueries(|node| {
        for expr in node.expressions() {
            found |= expr.exists(|e| {
                Ok(matches!(e, Expr::ScalarFunction(f)
                    if f.func.signature().volatility == Volatility::Stable))
            })?;
        }
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    Ok(found)
}

/// Optimizes a plan with its placeholders and records what binding it needs.
fn plan_once(state: &SessionState, plan: &LogicalPlan) -> Result<Planned> {
    let plan = state.optimize(plan)?;
    let types = plan.get_parameter_types()?;
    let mut vectors = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let Some(id) = vector_table(node).and_then(|t| t.parameter()) {
            vectors.push(id.to_string());
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mut count = 0;
    for id in types.keys().chain(&vectors) {
        count = count.max(placeholder_index(id)? + 1);
    }
    Ok(Planned {
        task: Arc::new(TaskContext::from(state)),
        state: state.clone(),
        plan,
        types,
        vectors,
        count,
        physical: Mutex::new(None),
    })
}

fn has_placeholders(statement: &Statement) -> bool {
    placeholder_count(statement) > 0
}

/// How many parameters a statement takes: its highest `$n` (0 without placeholders).
fn placeholder_count(statement: &Statement) -> usize {
    let inner = match statement {
        Statement::Statement(inner) => inner.as_ref(),
        Statement::Explain(explain) => return placeholder_count(&explain.statement),
        _ => return 0,
    };
    let mut count = 0;
    let _ = visit_expressions(inner, |expr| {
        if let SqlExpr::Value(v) = expr
            && let Value::Placeholder(name) = &v.value
        {
            let n = name.strip_prefix('$').and_then(|n| n.parse::<usize>().ok());
            count = count.max(n.unwrap_or(1));
        }
        ControlFlow::<()>::Continue(())
    });
    count
}

/// `$3` -> 2.
fn placeholder_index(id: &str) -> Result<usize> {
    id.strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
        .and_then(|n| n.checked_sub(1))
        .ok_or_else(|| {
            Error::invalid(format!(
                "parameter {id}: only numbered parameters ($1, $2, ...) are supported"
            ))
        })
}

fn vector_table(node: &LogicalPlan) -> Option<&VectorSimilarTable> {
    let LogicalPlan::TableScan(scan) = node else {
        return None;
    };
    scan.source
        .as_ref()
        .downcast_ref::<DefaultTableSource>()?
        .table_provider
        .as_ref()
        .downcast_ref::<VectorSimilarTable>()
}

impl Tenant {
    /// The parameters a statement takes, `$1` .. `$n` (or its `?` in order), each with
    /// the type the statement gives it where planning fixes one (compared with a column,
    /// a column of an INSERT), else `Utf8`: a value of any type may be bound there.
    pub async fn parameter_schema(&self, sql: &str) -> Result<SchemaRef> {
        let statement = Self::one_statement(sql, &[])?;
        let count = placeholder_count(&statement);
        if count == 0 {
            return Ok(Arc::new(Schema::empty()));
        }
        let state = self.inner.ctx.state();
        let known = match state.statement_to_plan(statement).await {
            Ok(plan) => plan.get_parameter_types().unwrap_or_default(),
            Err(_) => HashMap::new(),
        };
        let fields = (1..=count).map(|n| {
            let name = format!("${n}");
            let ty = known
                .get(&name)
                .cloned()
                .flatten()
                .unwrap_or(DataType::Utf8);
            Field::new(name, ty, true)
        });
        Ok(Arc::new(Schema::new(fields.collect::<Vec<_>>())))
    }

    /// Prepares a statement of a remote client: as [`Tenant::prepare`], under
    /// [`Policy::Client`](super::Policy::Client).
    pub async fn client_prepare(&self, sql: &str) -> Result<PreparedStatement> {
        self.with_policy(super::Policy::Client).prepare(sql).await
    }

    /// Runs a client's prepared statement under its limits (see [`ClientLimits`]).
    pub async fn client_execute(
        &self,
        prepared: &PreparedStatement,
        params: &[Param],
        limits: &ClientLimits,
    ) -> Result<SendableRecordBatchStream> {
        guarded(async {
            if !Arc::ptr_eq(&prepared.tenant.inner, &self.inner) {
                return Err(Error::invalid(
                    "this prepared statement was made in another session (another tenant, or \
                     the tenant was dropped and created again): prepare it again",
                ));
            }
            match &prepared.form {
                Form::Planned(p) => {
                    let physical = p.physical(&self.inner.store, params).await?;
                    let task = TaskContext::from(&p.state).with_runtime(client_runtime(limits)?);
                    let pool = Arc::clone(task.memory_pool());
                    let stream = execute_stream(physical, Arc::new(task))?;
                    Ok(on_own_thread_charged(stream, Some(&pool)))
                }
                Form::Reparsed(statement) => {
                    let mut statement = statement.clone();
                    bind_params(&mut statement, params)?;
                    match self.client_plan(statement, limits).await? {
                        Some(frame) => {
                            let pool = Arc::clone(frame.task_ctx().memory_pool());
                            let stream = frame.execute_stream().await?;
                            Ok(on_own_thread_charged(stream, Some(&pool)))
                        }
                        None => Err(Error::invalid("index commands cannot be prepared")),
                    }
                }
            }
        })
        .await
    }
}

impl PreparedStatement {
    /// The schema of the result for these values, without running the statement (None
    /// when the statement is planned per call).
    pub fn result_schema(&self, params: &[Param]) -> Result<Option<SchemaRef>> {
        match &self.form {
            Form::Planned(p) => {
                p.check_count(params)?;
                Ok(Some(Arc::clone(p.bind(params)?.schema().inner())))
            }
            Form::Reparsed(_) => Ok(None),
        }
    }

    /// True when the statement was planned once at prepare time; false when it is
    /// planned on every call (see the module documentation).
    pub fn is_planned(&self) -> bool {
        matches!(self.form, Form::Planned(_))
    }

    /// True once the statement keeps its physical plan between calls: when its only
    /// parameters are query vectors of `vector_similar` (or it has none) and its plan
    /// holds no state across runs, each call swaps the vectors into the plan of the
    /// first call and runs it, with no planning at all.
    pub fn reuses_physical_plan(&self) -> bool {
        match &self.form {
            Form::Planned(p) => p.physical.lock().is_some(),
            Form::Reparsed(_) => false,
        }
    }

    /// The schema of the statement's result, when it is planned.
    pub fn schema(&self) -> Option<SchemaRef> {
        match &self.form {
            Form::Planned(p) => Some(Arc::clone(p.plan.schema().inner())),
            Form::Reparsed(_) => None,
        }
    }

    /// Runs the statement with these values for `$1`, `$2`, ... and collects its result.
    pub async fn execute(&self, params: &[Param]) -> Result<Vec<RecordBatch>> {
        guarded(async {
            match &self.form {
                Form::Planned(p) => {
                    let physical = p.physical(&self.tenant.inner.store, params).await?;
                    Ok(collect(physical, Arc::clone(&p.task)).await?)
                }
                Form::Reparsed(statement) => Ok(self
                    .reparsed_frame(statement, params)
                    .await?
                    .collect()
                    .await?),
            }
        })
        .await
    }

    /// Runs the statement and streams its result.
    pub async fn execute_stream(&self, params: &[Param]) -> Result<SendableRecordBatchStream> {
        guarded(async {
            match &self.form {
                Form::Planned(p) => {
                    let physical = p.physical(&self.tenant.inner.store, params).await?;
                    Ok(execute_stream(physical, Arc::clone(&p.task))?)
                }
                Form::Reparsed(statement) => Ok(self
                    .reparsed_frame(statement, params)
                    .await?
                    .execute_stream()
                    .await?),
            }
        })
        .await
    }

    /// The physical plan these values would run with, as `EXPLAIN` shows it.
    pub async fn explain(&self, params: &[Param]) -> Result<String> {
        guarded(async {
            let physical = match &self.form {
                Form::Planned(p) => p.physical(&self.tenant.inner.store, params).await?,
                Form::Reparsed(statement) => {
                    self.reparsed_frame(statement, params)
                        .await?
                        .create_physical_plan()
                        .await?
                }
            };
            Ok(displayable(physical.as_ref()).indent(false).to_string())
        })
        .await
    }

    /// A statement planned per call, with its values in place, under the same refusals
    /// as at prepare time.
    async fn reparsed_frame(&self, statement: &Statement, params: &[Param]) -> Result<DataFrame> {
        let mut statement = statement.clone();
        bind_params(&mut statement, params)?;
        let state = self.tenant.inner.ctx.state();
        let plan = state.statement_to_plan(statement).await?;
        self.tenant.policy.check(&plan)?;
        Ok(DataFrame::new(state, plan))
    }
}

impl Planned {
    fn check_count(&self, params: &[Param]) -> Result<()> {
        if params.len() < self.count {
            return Err(Error::invalid(format!(
                "the statement has {} parameter{}, {} given",
                self.count,
                if self.count == 1 { "" } else { "s" },
                params.len()
            )));
        }
        Ok(())
    }

    async fn physical(
        &self,
        store: &TenantStore,
        params: &[Param],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.check_count(params)?;
        // A plan made before an index was created or dropped is made again.
        let indexes = store.user_indexes()?;
        let cached = self.physical.lock().clone();
        if let Some((plan, made_under)) = cached
            && Arc::ptr_eq(&made_under, &indexes)
        {
            return rebind_vectors(plan, params);
        }
        let plan = self.bind(params)?;
        let physical = self
            .state
            .query_planner()
            .create_physical_plan(&plan, &self.state)
            .await?;
        // Without value parameters the scans' paths are fixed by the statement's
        // constants and the indexes: the plan can run again (when its nodes allow it).
        if self.types.is_empty() && reusable(&physical) {
            *self.physical.lock() = Some((Arc::clone(&physical), indexes));
        }
        Ok(physical)
    }

    /// The optimized plan with the values in place of its placeholders.
    fn bind(&self, params: &[Param]) -> Result<LogicalPlan> {
        let mut plan = self.plan.clone();
        if !self.vectors.is_empty() {
            plan = bind_vectors(plan, params)?;
        }
        if self.types.is_empty() {
            return Ok(plan);
        }
        let values = params
            .iter()
            .enumerate()
            .map(|(i, param)| {
                let id = format!("${}", i + 1);
                let value = param_value(param, &id)?;
                match self.types.get(&id) {
                    Some(Some(t)) if value.data_type() != *t => cast_param(&value, t, &id),
                    _ => Ok(value),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        // Folding the bound values (`CAST($1 AS BIGINT)` in a LIMIT, say) into plain
        // literals, as the optimizer would have: physical planning and our scans expect
        // them.
        let plan = plan.with_param_values(values)?;
        let simplify = SimplifyExpressions::new();
        Ok(plan
            .transform_up_with_subqueries(|node| simplify.rewrite(node, &self.state))
            .data()?)
    }
}

/// A value cast to its placeholder's type; a number that would change (1.5 as an
/// integer) is refused, as comparing the value itself would not match.
fn cast_param(value: &ScalarValue, t: &DataType, id: &str) -> Result<ScalarValue> {
    let cast = value
        .cast_to(t)
        .map_err(|e| Error::invalid(format!("parameter {id}: {value} is not a {t}: {e}")))?;
    let from = value.data_type();
    if from.is_numeric() && t.is_numeric() && cast.cast_to(&from).ok().as_ref() != Some(value) {
        return Err(Error::invalid(format!(
            "parameter {id}: {value} does not fit {t} without changing"
        )));
    }
    Ok(cast)
}

/// Binds the query vectors of the plan's `vector_similar` tables.
fn bind_vectors(plan: LogicalPlan, params: &[Param]) -> Result<LogicalPlan> {
    let bound = plan
        .transform_up_with_subqueries(|node| {
            let bound = match vector_table(&node) {
                Some(table) => match table.parameter() {
                    Some(id) => table.bind(vector_param(params, id)?)?,
                    None => return Ok(Transformed::no(node)),
                },
                None => return Ok(Transformed::no(node)),
            };
            let LogicalPlan::TableScan(mut scan) = node else {
                return Ok(Transformed::no(node));
            };
            scan.source = provider_as_source(Arc::new(bound));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        })
        .data()?;
    Ok(bound)
}

/// The vector bound to placeholder `id` of a `vector_similar` call.
fn vector_param(params: &[Param], id: &str) -> DfResult<Vec<f32>> {
    match placeholder_index(id).ok().and_then(|i| params.get(i)) {
        Some(Param::Vector(v)) => Ok(v.clone()),
        Some(other) => Err(Error::invalid(format!(
            "parameter {id}: the query vector of vector_similar must be a vector, got {other:?}"
        ))
        .into()),
        None => Err(Error::invalid(format!("no value for parameter {id}")).into()),
    }
}

/// A reusable plan (see [`reusable`]) with these query vectors, every node's run state
/// renewed (a top-k sort's dynamic filter, say).
fn rebind_vectors(
    plan: Arc<dyn ExecutionPlan>,
    params: &[Param],
) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = plan
        .transform_up(|node| {
            let Some(search) = node.downcast_ref::<VectorSearchExec>() else {
                return Ok(Transformed::yes(node.reset_state()?));
            };
            let Some(id) = search.parameter() else {
                return Ok(Transformed::no(node));
            };
            let vector = vector_param(params, id)?;
            Ok(Transformed::yes(
                Arc::new(search.with_query(vector)) as Arc<dyn ExecutionPlan>
            ))
        })
        .data()?;
    Ok(plan)
}

/// The value of a parameter, in its natural type (cast to the placeholder's later).
fn param_value(param: &Param, id: &str) -> Result<ScalarValue> {
    Ok(match param {
        Param::Null => ScalarValue::Null,
        Param::Bool(b) => ScalarValue::Boolean(Some(*b)),
        Param::Int(i) => ScalarValue::Int64(Some(*i)),
        Param::Float(f) if f.is_finite() => ScalarValue::Float64(Some(*f)),
        Param::Float(f) => {
            return Err(Error::invalid(format!(
                "parameter {id}: {f} is not a finite number"
            )));
        }
        Param::Text(s) => ScalarValue::Utf8(Some(s.clone())),
        Param::Timestamp(t) => ScalarValue::TimestampMicrosecond(Some(*t), Some("UTC".into())),
        Param::Vector(v) => {
            if let Some(x) = v.iter().find(|x| !x.is_finite()) {
                return Err(Error::invalid(format!(
                    "parameter {id}: the vector contains {x}"
                )));
            }
            let values: Vec<ScalarValue> =
                v.iter().map(|x| ScalarValue::Float32(Some(*x))).collect();
            ScalarValue::List(ScalarValue::new_list_nullable(&values, &DataType::Float32))
        }
    })
}
