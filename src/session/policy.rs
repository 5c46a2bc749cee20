//! What a statement may do, decided by who sends it: one [`Policy`] per entry point,
//! checked on the statement's logical plan in [`Policy::check`] before it runs.
//!
//! | entry point | policy | tables (read, DML) | index DDL | other DDL | `COPY` (files) | `SET`, `PREPARE` |
//! |---|---|---|---|---|---|---|
//! | `Tenant::sql`, `sql_script`, `sql_with_params`, `prepare`, the Python package | [`Policy::Application`] | yes | yes | no | no | no |
//! | `remdb serve` (Flight SQL clients) | [`Policy::Client`] | yes | yes | no | no | no |
//! | `remdb sql`, `remdb shell` | [`Policy::Operator`] | yes | yes | no | yes | yes |
//!
//! The tenant's tables are fixed for everyone (no `CREATE TABLE`, no external tables):
//! DDL would create session-local tables or read files. DML names one table without
//! subqueries (see [`check_dml`]).

use super::Error;
use crate::error::Result;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp as DfWriteOp};

/// Who sends a statement, and so what it may do (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// An application embedding the library, which may hand it text it did not write
    /// (a user's or a model's): the tenant's tables and indexes, nothing beyond them.
    /// No file is written (`COPY`) and no setting changes (`SET`): the session is
    /// shared by every handle of the tenant in the process.
    #[default]
    Application,
    /// A remote client of `remdb serve`: what an application may do, and its queries
    /// run under the server's client limits (memory, time, rows).
    Client,
    /// The operator at a local terminal (`remdb sql`, `remdb shell`), who owns the files
    /// and the process: also `COPY ... TO` a file and `SET` of the session's settings.
    Operator,
}

impl Policy {
    /// Refuses what this policy does not allow anywhere in `plan` (an `EXPLAIN ANALYZE`
    /// runs the statement below it).
    pub fn check(self, plan: &LogicalPlan) -> Result<()> {
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_statements(true)
            .with_allow_dml(true)
            .verify_plan(plan)?;
        if self != Policy::Operator {
            let mut refused = None;
            plan.apply(|node| {
                refused = match node {
                    LogicalPlan::Copy(_) => Some("COPY, which writes files,"),
                    LogicalPlan::Statement(_) => {
                        Some("SET and other session statements (PREPARE, EXECUTE, transactions)")
                    }
                    _ => None,
                };
                Ok(if refused.is_some() {
                    TreeNodeRecursion::Stop
                } else {
                    TreeNodeRecursion::Continue
                })
            })?;
            if let Some(what) = refused {
                return Err(Error::invalid(format!("{what} {}", self.refusal())));
            }
        }
        check_dml(plan)
    }

    fn refusal(self) -> &'static str {
        match self {
            Policy::Client => {
                "is not allowed from a client of the server: it would reach the server's \
                 files or the session other clients of the tenant share"
            }
            _ => {
                "is not allowed in SQL from an application (Tenant::sql): use the DataFrame \
                 API of Tenant::context(), or `remdb sql` / `remdb shell` at a terminal"
            }
        }
    }
}

/// DataFusion hands a table's `delete_from`/`update` only the filters on that table: a
/// WHERE with a subquery or a join would lose its condition and touch every row. Such
/// statements are refused until they are supported properly.
pub(super) fn check_dml(plan: &LogicalPlan) -> Result<()> {
    // Anywhere in the plan: `EXPLAIN ANALYZE DELETE ...` runs the DELETE below its Analyze.
    let mut found = Ok(());
    plan.apply(|node| {
        found = check_one_dml(node);
        Ok(if found.is_ok() {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    })?;
    found
}

pub(super) fn check_one_dml(plan: &LogicalPlan) -> Result<()> {
    let LogicalPlan::Dml(DmlStatement {
        op: op @ (DfWriteOp::Delete | DfWriteOp::Update),
        input,
        table_name,
        ..
    }) = plan
    else {
        return Ok(());
    };
    let mut unsupported = false;
    input.apply(|node| {
        let subquery = node.expressions().iter().any(|e| {
            e.exists(|e| {
                Ok(matches!(
                    e,
                    datafusion::logical_expr::Expr::ScalarSubquery(_)
                        | datafusion::logical_expr::Expr::InSubquery(_)
                        | datafusion::logical_expr::Expr::Exists(_)
                ))
            })
            .unwrap_or(true)
        });
        if subquery || matches!(node, LogicalPlan::Join(_) | LogicalPlan::Subquery(_)) {
            unsupported = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if unsupported {
        let op = if matches!(op, DfWriteOp::Delete) {
            "DELETE"
        } else {
            "UPDATE"
        };
        return Err(Error::invalid(format!(
            "{op} on {table_name} with a subquery or join in its WHERE clause is not supported; \
             select the keys first, then {op} WHERE id IN (...)"
        )));
    }
    Ok(())
}
