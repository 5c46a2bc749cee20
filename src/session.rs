//! Session layer: [`Db`] opens a database directory; [`Tenant`] is the library API of one
//! tenant: SQL that returns Arrow batches, and typed calls for the REM operations.
//!
//! A `Tenant` is cheap to clone and is built once per tenant: its DataFusion
//! `SessionContext` is cached by the `Db`, so a point query plans in microseconds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{Column, ScalarValue};
use datafusion::dataframe::{DataFrame, DataFrameWriteOptions};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{cast, col, lit};
use datafusion::physical_plan::{EmptyRecordBatchStream, collect};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;
use parking_lot::Mutex;

mod limits;
mod params;
mod policy;
mod rem;
pub use limits::{MAX_EXPR_DEPTH, MAX_SQL_BYTES};
pub use params::Param;
use params::bind_params;
pub use policy::Policy;
pub use rem::Batch;
mod plan_cache;
mod prepared;
pub use plan_cache::PlanCacheStats;
pub use prepared::PreparedStatement;

use crate::error::{Error, Result};
use crate::query::index_ddl::{IndexCommand, index_command};
use crate::query::lazy::{SetOnDrop, on_own_thread_charged};
use crate::query::vector::{VECTOR_PARAM_FUNC, encode_vector_param};
use crate::query::{QueryOptions, tenant_context};
use crate::storage::{
    Direction, Edge, Entity, Found, Hop, IndexDef, IndexKind, KeyPart, Moment, Resource, Row,
    Storage, StorageOptions, Table, TenantStore, WriteOp,
};
use crate::vector::VectorOptions;
use plan_cache::PlanCache;

/// Limits on the statements of a remote client (see [`Tenant::client_stream`]).
#[derive(Debug, Clone)]
pub struct ClientLimits {
    /// Memory a query's sorts, joins and aggregates, and the result batches it has made
    /// and not yet handed over, may hold (the query fails beyond it).
    pub memory_bytes: usize,
}

/// The row count a DML statement reports (its `count` column), 0 for anything else.
pub fn count_of(batches: &[RecordBatch]) -> u64 {
    batches
        .iter()
        .filter_map(|b| {
            b.column_by_name("count")?
                .as_any()
                .downcast_ref::<UInt64Array>()
                .map(|a| a.iter().flatten().sum::<u64>())
        })
        .sum()
}

/// Options for [`Db::open`].
#[derive(Debug, Clone, Default)]
pub struct DbOptions {
    pub storage: StorageOptions,
}

/// A database directory: many tenants, one RocksDB instance.
pub struct Db {
    storage: Arc<Storage>,
    sessions: Mutex<HashMap<(String, QueryOptions), Tenant>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.storage.path())
            .finish()
    }
}

impl Db {
    /// Opens (creating if needed) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>, options: DbOptions) -> Result<Db> {
        let storage = Storage::open(path, options.storage)?;
        Ok(Db {
            storage: Arc::new(storage),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Creates a tenant and returns its session.
    pub fn create_tenant(&self, id: &str) -> Result<Tenant> {
        self.storage.create_tenant(id)?;
        self.tenant(id)
    }

    /// The session of an existing tenant.
    pub fn tenant(&self, id: &str) -> Result<Tenant> {
        self.tenant_with(id, QueryOptions::default())
    }

    /// The session of an existing tenant, with query options (e.g. indexes off).
    pub fn tenant_with(&self, id: &str, options: QueryOptions) -> Result<Tenant> {
        let mut sessions = self.sessions.lock();
        let key = (id.to_string(), options);
        if let Some(t) = sessions.get(&key) {
            return Ok(t.clone());
        }
        let store = self.storage.tenant(id)?;
        let ctx = tenant_context(&store, options)?;
        let tenant = Tenant {
            inner: Arc::new(TenantInner {
                store,
                ctx,
                plans: PlanCache::default(),
            }),
            policy: Policy::default(),
        };
        sessions.insert(key, tenant.clone());
        Ok(tenant)
    }

    pub fn has_tenant(&self, id: &str) -> bool {
        self.storage.has_tenant(id)
    }

    /// Drops a tenant and all of its rows; its sessions stop working.
    pub fn drop_tenant(&self, id: &str) -> Result<()> {
        if !self.storage.has_tenant(id) {
            return Err(Error::NotFound(format!("tenant '{id}'")));
        }
        // Its users and tokens go first: a later tenant of that name is someone else, and
        // must not inherit them even if dropping the data fails halfway.
        crate::auth::Credentials::open(self.storage.path()).remove_tenant(id)?;
        self.sessions.lock().retain(|(t, _), _| t != id);
        self.storage.drop_tenant(id)
    }

    pub fn list_tenants(&self) -> Vec<String> {
        self.storage.list_tenants()
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }
}

struct TenantInner {
    store: TenantStore,
    ctx: SessionContext,
    /// Physical plans of repeated statement texts (see `plan_cache`).
    plans: PlanCache,
}

/// The session of one tenant. Every read and write it can express stays in the tenant.
/// Its SQL runs under a [`Policy`]: [`Policy::Application`] unless the handle was made
/// with [`Tenant::with_policy`].
#[derive(Clone)]
pub struct Tenant {
    inner: Arc<TenantInner>,
    policy: Policy,
}

/// What one SQL statement returned: its columns, also when no row came back, and its
/// rows. It derefs to its batches.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryResult {
    /// A result of `batches`, whose schema is `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> QueryResult {
        QueryResult { schema, batches }
    }

    /// The result of a statement that returns nothing (an index command).
    pub fn nothing() -> QueryResult {
        QueryResult::new(Arc::new(Schema::empty()), Vec::new())
    }

    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    pub fn into_batches(self) -> Vec<RecordBatch> {
        self.batches
    }
}

impl std::ops::Deref for QueryResult {
    type Target = [RecordBatch];

    fn deref(&self) -> &[RecordBatch] {
        &self.batches
    }
}

/// The result of one SQL statement of a script.
#[derive(Debug)]
pub struct StatementResult {
    /// The statement as parsed (normalized SQL text).
    pub sql: String,
    pub result: QueryResult,
}

impl Tenant {
    pub fn id(&self) -> &str {
        self.inner.store.tenant_id()
    }

    /// A handle on the same tenant whose SQL runs under `policy` (e.g.
    /// [`Policy::Operator`] for a local terminal, which may `COPY` to files and `SET`).
    pub fn with_policy(&self, policy: Policy) -> Tenant {
        Tenant {
            inner: Arc::clone(&self.inner),
            policy,
        }
    }

    /// The policy this handle's SQL runs under.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The tenant's DataFusion context (its catalog holds only this tenant's tables).
    /// For the embedding application's own use (DataFrame API, benches): its `sql()`
    /// skips the [`Policy`] [`Tenant::sql`] applies (no DDL, files or SET, DML
    /// restrictions), so it must not run untrusted SQL.
    pub fn context(&self) -> &SessionContext {
        &self.inner.ctx
    }

    /// Runs one SQL statement under the handle's [`Policy`] and collects its result,
    /// with its schema.
    ///
    /// A read-only statement run again with the same text takes the physical plan of
    /// the last run when it can (see [`Tenant::plan_cache_stats`]): no parsing and no
    /// planning.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult> {
        guarded(async {
            let options = Arc::clone(self.inner.ctx.state_ref().read().config().options());
            // Read before planning: an index created meanwhile makes the kept plan stale
            // (a mismatch on the next run), never the other way round.
            let indexes = self.inner.store.user_indexes()?;
            if let Some((plan, task)) = self.inner.plans.get(sql, &options, &indexes)? {
                return collect_result(plan, task).await;
            }
            let mut statements = parse(sql)?;
            if statements.len() != 1 {
                return Err(Error::invalid(format!(
                    "expected one SQL statement, got {} (use sql_script for several)",
                    statements.len()
                )));
            }
            let statement = statements
                .pop()
                .ok_or_else(|| Error::invalid("empty SQL"))?;
            self.run(statement, Some((sql, indexes))).await
        })
        .await
    }

    /// How [`Tenant::sql`] has reused the plans of repeated statement texts: the texts
    /// kept, runs that took a kept plan, runs of read-only statements that planned.
    pub fn plan_cache_stats(&self) -> PlanCacheStats {
        self.inner.plans.stats()
    }

    /// Runs `;`-separated statements in order, stopping at the first error.
    pub async fn sql_script(&self, script: &str) -> Result<Vec<StatementResult>> {
        guarded(async {
            let mut out = Vec::new();
            for statement in parse(script)? {
                let sql = statement.to_string();
                let result = self.run(statement, None).await?;
                out.push(StatementResult { sql, result });
            }
            Ok(out)
        })
        .await
    }

    /// Runs one statement. A query run from its text (`keep`: the text, and the declared
    /// indexes read before planning) leaves its physical plan for the next run of that
    /// text when the plan can run again (see `plan_cache`).
    async fn run(
        &self,
        statement: Statement,
        keep: Option<(&str, Arc<Vec<IndexDef>>)>,
    ) -> Result<QueryResult> {
        if let Some(command) = index_command(&statement)? {
            self.run_index_command(command).await?;
            return Ok(QueryResult::nothing());
        }
        let is_query = matches!(
            &statement,
            Statement::Statement(inner) if matches!(inner.as_ref(), SqlStatement::Query(_))
        );
        let state = self.inner.ctx.state();
        let plan = state.statement_to_plan(statement).await?;
        self.policy.check(&plan)?;
        if !is_query {
            let frame = self.inner.ctx.execute_logical_plan(plan).await?;
            let schema = Arc::new(frame.schema().as_arrow().clone());
            return Ok(QueryResult::new(schema, frame.collect().await?));
        }
        let physical = state.create_physical_plan(&plan).await?;
        let task = Arc::new(TaskContext::from(&state));
        if let Some((text, indexes)) = keep {
            self.inner.plans.planned();
            // `now()` and the like were folded into the plan as constants.
            if !prepared::calls_stable_functions(&plan)? {
                let options = Arc::clone(state.config().options());
                self.inner
                    .plans
                    .put(text, &physical, &task, options, indexes);
            }
        }
        collect_result(physical, task).await
    }

    /// Parses exactly one statement and binds its parameters (none given: placeholders
    /// stay, so that a prepared statement can be planned before they are bound).
    fn one_statement(sql: &str, params: &[Param]) -> Result<Statement> {
        let mut statements = parse(sql)?;
        if statements.len() != 1 {
            return Err(Error::invalid(format!(
                "expected one SQL statement, got {}",
                statements.len()
            )));
        }
        let mut statement = statements
            .pop()
            .ok_or_else(|| Error::invalid("empty SQL"))?;
        if !params.is_empty() {
            bind_params(&mut statement, params)?;
        }
        Ok(statement)
    }

    /// Plans a statement of a remote client (the Flight SQL server) under its limits
    /// and [`Policy::Client`]. Index commands run only when executed.
    async fn client_plan(
        &self,
        statement: Statement,
        limits: &ClientLimits,
    ) -> Result<Option<DataFrame>> {
        if index_command(&statement)?.is_some() {
            return Ok(None);
        }
        let state = SessionStateBuilder::new_from_existing(self.inner.ctx.state())
            .with_runtime_env(client_runtime(limits)?)
            .build();
        let plan = state.statement_to_plan(statement).await?;
        Policy::Client.check(&plan)?;
        Ok(Some(DataFrame::new(state, plan)))
    }

    /// True when a statement changes data or indexes (INSERT, UPDATE, DELETE, CREATE or
    /// DROP INDEX): a client runs it for its effect, not for rows.
    pub fn writes_data(sql: &str) -> Result<bool> {
        let statement = Self::one_statement(sql, &[])?;
        if index_command(&statement)?.is_some() {
            return Ok(true);
        }
        Ok(matches!(
            &statement,
            Statement::Statement(inner) if matches!(
                inner.as_ref(),
                SqlStatement::Insert(_) | SqlStatement::Update(_) | SqlStatement::Delete(_)
            )
        ))
    }

    /// The schema a client statement's result will have, without running it.
    pub async fn client_schema(
        &self,
        sql: &str,
        params: &[Param],
        limits: &ClientLimits,
    ) -> Result<SchemaRef> {
        guarded(async {
            let statement = Self::one_statement(sql, params)?;
            Ok(match self.client_plan(statement, limits).await? {
                Some(frame) => Arc::new(frame.schema().as_arrow().clone()),
                None => Arc::new(Schema::empty()),
            })
        })
        .await
    }

    /// Runs a client statement and streams its result (see [`ClientLimits`]), polled on
    /// a thread of its own, its batches charged to its memory limit on their way out
    /// (see [`on_own_thread_charged`]).
    pub async fn client_stream(
        &self,
        sql: &str,
        params: &[Param],
        limits: &ClientLimits,
    ) -> Result<SendableRecordBatchStream> {
        guarded(async {
            let statement = Self::one_statement(sql, params)?;
            match self.client_plan(statement.clone(), limits).await? {
                Some(frame) => {
                    let pool = Arc::clone(frame.task_ctx().memory_pool());
                    let stream = frame.execute_stream().await?;
                    Ok(on_own_thread_charged(stream, Some(&pool)))
                }
                None => {
                    if let Some(command) = index_command(&statement)? {
                        self.run_index_command(command).await?;
                    }
                    let empty: SendableRecordBatchStream =
                        Box::pin(EmptyRecordBatchStream::new(Arc::new(Schema::empty())));
                    Ok(empty)
                }
            }
        })
        .await
    }

    /// Appends Arrow batches to a table (bulk ingest): columns are matched by name,
    /// missing ones are NULL (and get their defaults: a generated id, the current time),
    /// and the whole ingest is one atomic write. Returns the rows written.
    pub async fn insert_batches(&self, table: Table, batches: Vec<RecordBatch>) -> Result<u64> {
        let Some(first) = batches.first() else {
            return Ok(0);
        };
        let target = crate::query::convert::table_schema(table);
        let input = first.schema();
        for field in input.fields() {
            if target.field_with_name(field.name()).is_err() {
                return Err(Error::invalid(format!(
                    "{} has no column '{}' (its columns: {})",
                    table.name(),
                    field.name(),
                    target
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let frame = self.inner.ctx.read_batches(batches)?;
        let columns = target
            .fields()
            .iter()
            .map(|f| {
                let value = if input.field_with_name(f.name()).is_ok() {
                    col(Column::from_name(f.name()))
                } else {
                    lit(ScalarValue::Null)
                };
                cast(value, f.data_type().clone()).alias(f.name())
            })
            .collect::<Vec<_>>();
        let written = frame
            .select(columns)?
            .write_table(table.name(), DataFrameWriteOptions::new())
            .await?;
        Ok(count_of(&written))
    }

    /// Runs an index command on the blocking pool (a build reads the whole table). A
    /// caller that stops waiting (a timeout, a dropped query) stops the build too.
    async fn run_index_command(&self, command: IndexCommand) -> Result<()> {
        let stop = SetOnDrop(Arc::new(AtomicBool::new(false)));
        let (tenant, flag) = (self.clone(), Arc::clone(&stop.0));
        tokio::task::spawn_blocking(move || tenant.index_command_now(command, &flag))
            .await
            .map_err(|e| Error::Query(format!("an index command failed: {e}")))?
    }

    fn index_command_now(&self, command: IndexCommand, stop: &AtomicBool) -> Result<()> {
        match command {
            IndexCommand::Create {
                name,
                table,
                column,
                path,
                kind,
                if_not_exists,
            } => {
                if if_not_exists && self.list_indexes()?.iter().any(|d| d.name == name) {
                    return Ok(());
                }
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                self.build_index(&name, table, &column, &path, kind, stop)
                    .map(|_| ())
            }
            IndexCommand::Drop { names, if_exists } => {
                for name in names {
                    match self.drop_index(&name) {
                        Err(Error::NotFound(_)) if if_exists => {}
                        other => other?,
                    }
                }
                Ok(())
            }
        }
    }

    /// Declares an index over a JSON path of a table's JSON column (`metadata` or
    /// `properties`) and builds it over the existing rows (progress is logged); every
    /// later write maintains it. `IndexKind::List` indexes each element of an array.
    pub fn create_index(
        &self,
        name: &str,
        table: Table,
        column: &str,
        path: &[&str],
        kind: IndexKind,
    ) -> Result<IndexDef> {
        self.build_index(name, table, column, path, kind, &AtomicBool::new(false))
    }

    /// [`Tenant::create_index`], stopped (leaving no index) once `stop` is set.
    fn build_index(
        &self,
        name: &str,
        table: Table,
        column: &str,
        path: &[&str],
        kind: IndexKind,
        stop: &AtomicBool,
    ) -> Result<IndexDef> {
        let path: Vec<String> = path.iter().map(|k| k.to_string()).collect();
        let mut progress: Option<crate::progress::Progress> = None;
        let built = self
            .inner
            .store
            .create_index(name, table, column, &path, kind, &mut |done, total| {
                if stop.load(Ordering::Relaxed) {
                    return Err(Error::Cancelled(format!(
                        "CREATE INDEX {name} stopped after {done} of {total} rows; no index was created"
                    )));
                }
                progress
                    .get_or_insert_with(|| {
                        crate::progress::Progress::start(
                            format!("CREATE INDEX {name} ({})", self.id()),
                            Some(total),
                        )
                    })
                    .set(done);
                Ok(())
            });
        if let Some(progress) = progress {
            progress.finish();
        }
        built
    }

    /// Drops a user-declared index.
    pub fn drop_index(&self, name: &str) -> Result<()> {
        self.inner.store.drop_index(name).map(|_| ())
    }

    /// The user-declared indexes (`list_indexes()` in SQL also lists the built-in ones).
    pub fn list_indexes(&self) -> Result<Vec<IndexDef>> {
        Ok(self.inner.store.user_indexes()?.as_ref().clone())
    }

    /// Runs one SQL statement whose `$1`, `$2`, ... are replaced by `params` (a vector
    /// parameter becomes an array literal, so it works inside `vector_similar`).
    pub async fn sql_with_params(&self, sql: &str, params: &[Param]) -> Result<QueryResult> {
        guarded(async {
            let mut statement = Self::one_statement(sql, &[])?;
            bind_params(&mut statement, params)?;
            self.run(statement, None).await
        })
        .await
    }
}

/// Runs `work`, a panic in it (DataFusion asserts in places where it should return
/// errors) becoming [`Error::Internal`]: the statement fails, the process and the
/// tenant's other statements go on. DataFusion's own tasks hand their panics to the
/// thread that polls them, so this catches those too.
pub(crate) async fn guarded<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(work).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(Error::from_panic("the statement", &*payload)),
    }
}

/// Runs a physical plan to its end, with its schema.
async fn collect_result(
    plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    task: Arc<TaskContext>,
) -> Result<QueryResult> {
    let schema = plan.schema();
    Ok(QueryResult::new(schema, collect(plan, task).await?))
}

/// Splits a script into its statements, each as its own text from the script (cut at
/// the semicolons between statements, so a statement runs exactly as written); a parse
/// error anywhere names the position of the problem before anything runs.
pub fn split_statements(script: &str) -> Result<Vec<String>> {
    let parsed = parse(script)?;
    let pieces = limits::split_at_semicolons(script)?;
    if pieces.len() == parsed.len() {
        return Ok(pieces);
    }
    // Not one piece per statement (a verb whose rewrite changed the count): the parsed
    // statements, printed.
    Ok(parsed.iter().map(|s| s.to_string()).collect())
}

/// The runtime of one client query: its own memory pool of the client limit; beyond it
/// the query fails, it never spills to the server's disk.
fn client_runtime(
    limits: &ClientLimits,
) -> Result<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
    Ok(RuntimeEnvBuilder::new()
        .with_memory_limit(limits.memory_bytes, 1.0)
        .with_disk_manager_builder(
            DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled),
        )
        .build_arc()?)
}

fn parse(sql: &str) -> Result<Vec<Statement>> {
    limits::check_size(sql)?;
    // `?` placeholders are `$1`, `$2`, ... in the order they are written.
    let sql = params::number_question_marks(sql)?;
    // The REM verbs (LOOKUP, TRAVERSE, SEARCH) become SQL over the table functions.
    let sql = crate::query::verbs::rewrite(&sql)?;
    limits::parse(&sql)
}
