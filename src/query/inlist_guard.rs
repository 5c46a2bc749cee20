//! A guard before DataFusion's expression simplifier: its IN-list rules fold two lists on
//! one expression into a literal when they share nothing (`x NOT IN (1) OR x NOT IN (2)`
//! becomes `true`, `x IN (1) AND x IN (2)` becomes `false`), which is wrong when `x` is
//! NULL: SQL says NULL, so `WHERE properties->>'role' NOT IN ('researcher') OR
//! properties->>'role' NOT IN ('engineer')` returned the rows without a role too
//! (DataFusion 55.2; fixed upstream in apache/datafusion#24258). This rule runs before
//! each simplifier pass and does the same folds with NULL kept:
//!
//! | pair (same `x`, lists of non-null literals) | shared values | else |
//! |---|---|---|
//! | `x IN a AND x IN b` | `x IN (a ∩ b)` | `x IS NULL AND NULL` |
//! | `x IN a AND x NOT IN b` (either order) | `x IN (a − b)` | `x IS NULL AND NULL` |
//! | `x NOT IN a OR x NOT IN b` | `x NOT IN (a ∩ b)` | `x IS NOT NULL OR NULL` |
//!
//! `x IS NULL AND NULL` is false for a value and NULL for NULL; `x IS NOT NULL OR NULL`
//! true for a value and NULL for NULL: what the pair is, in three-valued logic.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::InList;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, Operator, lit};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

#[derive(Debug, Default)]
pub struct InListNullGuard;

impl OptimizerRule for InListNullGuard {
    fn name(&self) -> &str {
        "remdb_inlist_null_guard"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        plan.map_expressions(|e| e.transform_up(fold_pair))
    }
}

fn fold_pair(expr: Expr) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let (Some(l), Some(r)) = (literal_list(left), literal_list(right)) else {
        return Ok(Transformed::no(expr));
    };
    if l.expr != r.expr {
        return Ok(Transformed::no(expr));
    }
    let x = l.expr.as_ref().clone();
    // The values left, as one list (negated or not); none left: `empty` for `x`.
    let one_list = |values: Vec<Expr>, negated: bool, empty: fn(&Expr) -> Expr| {
        if values.is_empty() {
            empty(&x)
        } else {
            Expr::InList(InList::new(Box::new(x.clone()), values, negated))
        }
    };
    let folded = match (op, l.negated, r.negated) {
        (Operator::And, false, false) => {
            one_list(shared(&l.list, &r.list, true), false, false_unless_null)
        }
        (Operator::And, false, true) => {
            one_list(shared(&l.list, &r.list, false), false, false_unless_null)
        }
        (Operator::And, true, false) => {
            one_list(shared(&r.list, &l.list, false), false, false_unless_null)
        }
        (Operator::Or, true, true) => {
            one_list(shared(&l.list, &r.list, true), true, true_unless_null)
        }
        _ => return Ok(Transformed::no(expr)),
    };
    Ok(Transformed::yes(folded))
}

/// An IN list whose values are all non-null literals (what the simplifier's rules fold).
fn literal_list(expr: &Expr) -> Option<&InList> {
    match expr {
        Expr::InList(list)
            if list
                .list
                .iter()
                .all(|v| matches!(v, Expr::Literal(value, _) if !value.is_null())) =>
        {
            Some(list)
        }
        _ => None,
    }
}

/// The values of `a` that are (`in_b`) or are not in `b`, in `a`'s order.
fn shared(a: &[Expr], b: &[Expr], in_b: bool) -> Vec<Expr> {
    a.iter()
        .filter(|v| b.contains(v) == in_b)
        .cloned()
        .collect()
}

fn false_unless_null(x: &Expr) -> Expr {
    x.clone().is_null().and(lit(ScalarValue::Boolean(None)))
}

fn true_unless_null(x: &Expr) -> Expr {
    x.clone().is_not_null().or(lit(ScalarValue::Boolean(None)))
}
