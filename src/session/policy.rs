//! Session: what a statement may do, checked on its logical plan: the tenant's tables are
//! fixed (no DDL), DML names one table without subqueries, and a remote client changes
//! no session setting and writes no file.

use super::Error;
use crate::error::Result;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp as DfWriteOp};

pub(super) const NO_COPY: &str =
    "COPY is not allowed from a client: it would write the server's files";

/// Refuses what a prepared or remote statement may not do: DDL, session statements
/// (`SET`), and DML the tables cannot run (see [`check_dml`]).
pub(super) fn check_fixed_session(plan: &LogicalPlan) -> Result<()> {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_statements(false)
        .verify_plan(plan)?;
    check_dml(plan)
}

/// Refuses `COPY` anywhere in a remote client's plan: it would write the server's files.
pub(super) fn refuse_copy(plan: &LogicalPlan) -> Result<()> {
    let mut copy = false;
    plan.apply(|node| {
        copy |= matches!(node, LogicalPlan::Copy(_));
        Ok(if copy {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if copy {
        return Err(Error::invalid(NO_COPY));
    }
    Ok(())
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
