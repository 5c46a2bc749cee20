//! The one AND/OR/NOT walker: which rows the indexes answer for a filter, as a [`Set`].
//!
//! `AND` needs one side with a set (the other side makes it inexact), `OR` needs both;
//! `NOT` is pushed down to the leaves (De Morgan holds in SQL's three-valued logic) and
//! only exact leaves are negated: the complement of an exact value set among the non-null
//! values is exact again, because a comparison with NULL is never true.

use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::Set;
use super::builtin::builtin_leaf;
use super::column::column_leaf;
use super::json::{list_leaf, value_leaf};
use crate::storage::{IndexDef, Table};

/// The rows the indexes answer for `expr`, and whether exactly.
pub fn filter_set(table: Table, expr: &Expr, user: &[IndexDef]) -> Option<(Set, bool)> {
    set(table, expr, user, false)
}

fn set(table: Table, expr: &Expr, user: &[IndexDef], negated: bool) -> Option<(Set, bool)> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right })
            if matches!(op, Operator::And | Operator::Or) =>
        {
            // NOT (a AND b) = NOT a OR NOT b, and the other way round.
            let and = (*op == Operator::And) != negated;
            let l = set(table, left, user, negated);
            let r = set(table, right, user, negated);
            if and {
                match (l, r) {
                    (Some((a, ea)), Some((b, eb))) => Some((Set::and(vec![a, b]), ea && eb)),
                    (Some((a, _)), None) | (None, Some((a, _))) => Some((a, false)),
                    (None, None) => None,
                }
            } else {
                let ((a, ea), (b, eb)) = (l?, r?);
                Some((Set::or(vec![a, b]), ea && eb))
            }
        }
        Expr::Not(inner) => set(table, inner, user, !negated),
        // NOT (x < v) is x >= v in three-valued logic: a leaf negates its operator.
        // A user index first; then a built-in one, which answers `name = 'x'` as well as
        // a column's own would. Built-in leaves are never negated: their keys are not
        // every row's.
        _ => list_leaf(table, expr, user, negated)
            .or_else(|| value_leaf(table, expr, user, negated))
            .or_else(|| (!negated).then(|| builtin_leaf(table, expr)).flatten())
            .or_else(|| column_leaf(table, expr, user, negated)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn walked(e: Expr) -> Option<(String, bool)> {
        filter_set(Table::Entities, &e, &[]).map(|(set, exact)| (set.shown.to_string(), exact))
    }

    #[test]
    fn and_or_not() {
        let ty = |v: &str| col("type").eq(lit(v.to_string()));
        // OR needs both sides; AND one (the other makes it a superset).
        assert_eq!(
            walked(ty("a").or(ty("b").and(col("name").eq(lit("x"))))),
            Some((
                "(entities_type = 'a' OR (entities_type = 'b' AND entities_name = 'x'))".into(),
                false
            ))
        );
        assert_eq!(
            walked(ty("a").and(col("aliases").is_null())),
            Some(("entities_type = 'a'".into(), false))
        );
        assert_eq!(walked(ty("a").or(col("aliases").is_null())), None);
        // A built-in index's keys are not every row's: its leaves are never negated.
        assert_eq!(walked(Expr::Not(Box::new(ty("a")))), None);
    }
}
