//! Query layer: everything that speaks DataFusion. Above storage, below the session.
//!
//! * `convert`: Arrow schemas of the tables, rows <-> RecordBatch.
//! * `access`: the access planner, pure: filters -> access path, one parser per index
//!   kind, one AND/OR/NOT walker, and how EXPLAIN shows the path.
//! * `provider`: `RemTable`, the `TableProvider` of one table of one tenant.
//! * `exec`: the physical nodes (`RemScanExec`, `RemDmlExec`, the insert sink).
//! * `leaf`: `LeafExec`, the one plan node every leaf of ours is.
//! * `lazy`: how those nodes run: one step per poll, on the blocking pool, stoppable.
//! * `vector`: `vector_similar(...)` and the `ORDER BY distance LIMIT k` rewrite.
//! * `graph`: `traverse(...)` and `lookup(...)`, the REM graph and key verbs.
//! * `order`: `ORDER BY timestamp LIMIT n` over moments as an ordered walk of the time index.
//! * `index_ddl`: `CREATE/DROP INDEX`, `list_indexes()`, `json_array_contains(...)`.
//! * `verbs`: the REM statements (`LOOKUP`, `TRAVERSE`, `SEARCH`) rewritten into SQL.
//!
//! [`tenant_context`] builds the one `SessionContext` of a tenant: its catalog holds that
//! tenant's four tables and nothing else, so no SQL it runs can name another tenant.
//! Errors cross this boundary as [`crate::Error`] in both directions.

pub mod access;
mod bounded;
pub mod convert;
pub mod exec;
pub mod graph;
pub mod index_ddl;
mod inlist_guard;
pub mod lazy;
pub mod leaf;
pub mod order;
pub mod provider;
pub mod vector;
pub mod verbs;

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::{Error, Result};
use crate::storage::{Table, TenantStore};
use provider::RemTable;
pub use vector::Strategy as VectorStrategy;

impl From<DataFusionError> for Error {
    fn from(e: DataFusionError) -> Self {
        if let DataFusionError::External(inner) = e.find_root()
            && let Some(err) = inner.downcast_ref::<Error>()
        {
            return err.clone();
        }
        match e.find_root() {
            DataFusionError::ArrowError(inner, _) => {
                if let datafusion::arrow::error::ArrowError::ExternalError(inner) = inner.as_ref()
                    && let Some(err) = inner.downcast_ref::<Error>()
                {
                    return err.clone();
                }
                Error::Query(e.to_string())
            }
            DataFusionError::ResourcesExhausted(_) => Error::ResourcesExhausted(e.to_string()),
            _ => match misreported_user_error(&e.to_string()) {
                Some(message) => Error::InvalidArgument(message),
                None => Error::Query(e.to_string()),
            },
        }
    }
}

/// DataFusion 55 reports some mistakes of the SQL as its own internal errors (with a
/// plea to file a bug): values of two types BETWEEN cannot compare, a function called
/// with arguments no signature takes. They are the statement's errors: said as such,
/// without the plea.
fn misreported_user_error(text: &str) -> Option<String> {
    if let Some(start) = text.find("No function matches the given name and argument types") {
        return Some(text[start..].to_string());
    }
    if let Some(at) = text.find("failed to match any signature") {
        let start = text[..at].rfind("Function '").unwrap_or(at);
        let end = text
            .find("\nThis issue was likely caused by a bug")
            .unwrap_or(text.len());
        return Some(text[start..end.max(start)].replace("Error during planning: ", ""));
    }
    let start = text.find("Failed to coerce types")?;
    let sentence = &text[start..];
    let end = sentence
        .find(" expression.")
        .map_or(sentence.len(), |i| i + 12);
    Some(format!(
        "{} Compare values of one type (cast one of them).",
        &sentence[..end]
    ))
}

impl From<Error> for DataFusionError {
    fn from(e: Error) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// Options of a tenant's SQL session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueryOptions {
    /// Use indexes for filters (false: every filter over a full scan, and filtered
    /// vector searches post-filter; for comparisons).
    pub use_indexes: bool,
    /// Run every filtered vector search with an index candidate set this way instead
    /// of choosing by candidate count (for measurements and tests; `None`: choose).
    pub vector_strategy: Option<VectorStrategy>,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            use_indexes: true,
            vector_strategy: None,
        }
    }
}

/// The table functions of a tenant's session, in the order `tenant_context` registers them.
const TABLE_FUNCTIONS: [&str; 4] = ["vector_similar", "traverse", "lookup", "list_indexes"];

/// The scalar functions of ours a tenant's session registers beside DataFusion's and the
/// JSON functions.
fn scalar_functions() -> [datafusion::logical_expr::ScalarUDF; 2] {
    use datafusion::logical_expr::ScalarUDF;
    [
        ScalarUDF::new_from_impl(index_ddl::JsonArrayContains::default()),
        ScalarUDF::new_from_impl(vector::VectorParamFunc::default()),
    ]
}

/// The names of the functions a tenant's session has beyond DataFusion's own: ours, the
/// table functions and the JSON functions, sorted (what clients are told exists, e.g. the
/// Flight SQL `GetSqlInfo` function lists).
pub fn extension_function_names() -> Result<Vec<String>> {
    let mut state = SessionStateBuilder::new().build();
    datafusion_functions_json::register_all(&mut state)?;
    let mut names: Vec<String> = state.scalar_functions().keys().cloned().collect();
    names.extend(scalar_functions().iter().map(|f| f.name().to_string()));
    names.extend(TABLE_FUNCTIONS.iter().map(|f| f.to_string()));
    names.sort();
    names.dedup();
    Ok(names)
}

/// Builds the SessionContext of one tenant: its tables, the JSON functions, and a
/// configuration for low-latency embedded queries.
pub fn tenant_context(store: &TenantStore, options: QueryOptions) -> Result<SessionContext> {
    // One partition: scans are single streams, and on small machines the repartitioning
    // DataFusion adds for more costs more than it gains for the point and top-k queries
    // this engine serves.
    let config = SessionConfig::new()
        .with_target_partitions(1)
        .with_information_schema(true)
        .set_str("datafusion.sql_parser.dialect", "PostgreSQL");
    // The leaf-extraction rules move `properties->>'role'` out of a filter into a
    // projection below it: that hides the filter from our scan's pushdown (the JSON
    // index needs it) and breaks the filters DataFusion hands to `delete_from`/`update`.
    // Before each pass of the simplifier, the IN-list folds it gets wrong for NULL (see
    // `inlist_guard`).
    let mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = Vec::new();
    for rule in Optimizer::new().rules {
        match rule.name() {
            "extract_leaf_expressions" | "push_down_leaf_projections" => continue,
            "simplify_expressions" => rules.push(Arc::new(inlist_guard::InListNullGuard)),
            _ => {}
        }
        rules.push(rule);
    }
    let mut state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .with_optimizer_rules(rules)
        .with_physical_optimizer_rule(Arc::new(vector::VectorTopKRule))
        .with_physical_optimizer_rule(Arc::new(order::OrderRule))
        .build();
    datafusion_functions_json::register_all(&mut state)?;
    bounded::bound_functions(&mut state, bounded::MAX_FUNCTION_RESULT_BYTES)?;
    let ctx = SessionContext::new_with_state(state);
    let [vector_similar, traverse, lookup, list_indexes] = TABLE_FUNCTIONS;
    ctx.register_udtf(
        vector_similar,
        Arc::new(vector::VectorSimilarFunc::new(store.clone(), options)),
    );
    ctx.register_udtf(traverse, Arc::new(graph::TraverseFunc::new(store.clone())));
    ctx.register_udtf(lookup, Arc::new(graph::LookupFunc::new(store.clone())));
    ctx.register_udtf(
        list_indexes,
        Arc::new(index_ddl::ListIndexesFunc::new(store.clone())),
    );
    for udf in scalar_functions() {
        ctx.register_udf(udf);
    }
    for table in Table::ALL {
        let provider = RemTable::new(store.clone(), table, options.use_indexes);
        ctx.register_table(table.name(), Arc::new(provider))?;
    }
    Ok(ctx)
}
