//! Leaves over user indexes on a whole timestamp column (`created_at`, `updated_at`).

use std::ops::Bound;

use datafusion::logical_expr::{BinaryExpr, Expr};

use super::builtin::micros;
use super::ranges::{gaps, point, sort_values, within};
use super::{Condition, Set, Test};
use crate::storage::{
    IndexDef, IndexKind, IndexValue, RowSet, Table, ValueRange, timestamp_column,
};

/// A leaf over the user index of a whole timestamp column (`created_at`, `updated_at`):
/// the column compared with a constant (`=`, `<>`, `<`, `<=`, `>`, `>=`, `IN`, `NOT IN`;
/// DataFusion's simplifier turns BETWEEN into two comparisons before the scan sees it,
/// and `plan_access` merges those into one range, see [`column_window`]). These columns are never NULL and their
/// index holds every row's value, so the set is exact, negated or not. Text columns'
/// comparisons stay in the residual: an ordered walk over the column's own index takes
/// its bounds from there (`name > $last ORDER BY name LIMIT n`, see `order.rs`).
pub(super) fn column_leaf(
    table: Table,
    expr: &Expr,
    user: &[IndexDef],
    negated: bool,
) -> Option<(Set, bool)> {
    let (column, ranges, test) = match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, constant, op) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), other) => (c, other, *op),
                (other, Expr::Column(c)) => (c, other, op.swap()?),
                _ => return None,
            };
            let op = if negated { op.negate()? } else { op };
            let v = column_value(table, &column.name, constant)?;
            let ranges = within(all_numbers(), op, v.clone())?;
            (column, ranges, Test::Compare(op, v))
        }
        Expr::InList(list) => {
            let Expr::Column(column) = list.expr.as_ref() else {
                return None;
            };
            let mut values = list
                .list
                .iter()
                .map(|e| column_value(table, &column.name, e))
                .collect::<Option<Vec<_>>>()?;
            if values.is_empty() || values.len() > 1024 {
                return None;
            }
            sort_values(&mut values);
            let not = list.negated != negated;
            let ranges = if not {
                gaps(all_numbers(), &values)
            } else {
                values.iter().cloned().map(point).collect()
            };
            let test = Test::In {
                negated: not,
                values,
            };
            (column, ranges, test)
        }
        _ => return None,
    };
    let def = column_index(table, &column.name, user)?;
    Some((leaf(def, &ranges, test)?, true))
}

/// The leaf of a column index's test.
fn leaf(def: &IndexDef, ranges: &[ValueRange], test: Test) -> Option<Set> {
    let condition = Condition::User {
        index: def.name.clone(),
        column: Some(def.column.clone()),
        test,
    };
    Some(Set::leaf(RowSet::user(def, ranges).ok()?, condition))
}

/// The set of rows whose timestamp `column` lies in `(lower, upper)` (microseconds), from
/// the column's user index: the comparisons of one column merged into one range.
pub(super) fn column_window(
    table: Table,
    column: &str,
    lower: Bound<i64>,
    upper: Bound<i64>,
    user: &[IndexDef],
) -> Option<Set> {
    let def = column_index(table, column, user)?;
    // An empty window is left to the two sets (whose AND is empty).
    if let (Bound::Included(a) | Bound::Excluded(a), Bound::Included(b) | Bound::Excluded(b)) =
        (lower, upper)
        && a > b
    {
        return None;
    }
    let (start, end) = all_numbers();
    let lo = match lower {
        Bound::Unbounded => start,
        Bound::Included(t) => Bound::Included(micros_value(t)?),
        Bound::Excluded(t) => Bound::Excluded(micros_value(t)?),
    };
    let hi = match upper {
        Bound::Unbounded => end,
        Bound::Included(t) => Bound::Included(micros_value(t)?),
        Bound::Excluded(t) => Bound::Excluded(micros_value(t)?),
    };
    // The window shows the bounds it was given, not the numbers' whole range.
    let shown = (
        if matches!(lower, Bound::Unbounded) {
            Bound::Unbounded
        } else {
            lo.clone()
        },
        if matches!(upper, Bound::Unbounded) {
            Bound::Unbounded
        } else {
            hi.clone()
        },
    );
    leaf(def, &[(lo, hi)], Test::Window(shown.0, shown.1))
}

/// A constant compared with an indexed timestamp column, in microseconds (only when
/// exact: a nanosecond literal off the microsecond is left to the residual).
fn column_value(table: Table, column: &str, expr: &Expr) -> Option<IndexValue> {
    if !timestamp_column(table, column) {
        return None;
    }
    let Expr::Literal(v, _) = expr else {
        return None;
    };
    match micros(v)? {
        (t, true) => micros_value(t),
        (_, false) => None,
    }
}

/// Microseconds as a timestamp index's value: a number, exact below 2^53.
fn micros_value(t: i64) -> Option<IndexValue> {
    (t.unsigned_abs() < 1 << 53).then_some(IndexValue::Number(t as f64))
}

/// The user index over the whole column `table.column`, if one is declared.
fn column_index<'a>(table: Table, column: &str, user: &'a [IndexDef]) -> Option<&'a IndexDef> {
    user.iter().find(|d| {
        d.table == table.name() && d.is_column() && d.kind == IndexKind::Value && d.column == column
    })
}

/// Every number: the values of a timestamp column's index.
fn all_numbers() -> ValueRange {
    (
        Bound::Included(IndexValue::Number(f64::NEG_INFINITY)),
        Bound::Excluded(IndexValue::Text(String::new())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{col, lit};

    fn created() -> [IndexDef; 1] {
        [IndexDef {
            name: "idx_created".into(),
            table: "entities".into(),
            column: "created_at".into(),
            path: vec![],
            kind: IndexKind::Value,
            id: 7,
        }]
    }

    fn ts(v: i64) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(v),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn comparisons_of_an_indexed_timestamp_column_are_exact_sets() {
        let user = created();
        let leaf = |e: Expr, negated: bool| {
            column_leaf(Table::Entities, &e, &user, negated)
                .map(|(set, exact)| (set.shown.to_string(), exact))
        };
        assert_eq!(
            leaf(col("created_at").lt(ts(9)), false),
            Some(("idx_created (created_at) < 9".into(), true))
        );
        // Negated, the operator flips: the column is never NULL.
        assert_eq!(
            leaf(col("created_at").lt(ts(9)), true),
            Some(("idx_created (created_at) >= 9".into(), true))
        );
        assert_eq!(
            leaf(col("created_at").in_list(vec![ts(2), ts(1)], false), false),
            Some(("idx_created (created_at) IN (1, 2)".into(), true))
        );
        // A column without an index, a text column, a nanosecond off the microsecond.
        assert_eq!(leaf(col("updated_at").lt(ts(9)), false), None);
        assert_eq!(leaf(col("name").eq(lit("Ada")), false), None);
        let nanos = lit(ScalarValue::TimestampNanosecond(Some(1_500), None));
        assert_eq!(leaf(col("created_at").gt(nanos), false), None);
    }

    #[test]
    fn a_window_is_one_range_showing_its_own_bounds() {
        let user = created();
        let window = |lower, upper| {
            column_window(Table::Entities, "created_at", lower, upper, &user)
                .map(|set| set.shown.to_string())
        };
        assert_eq!(
            window(Bound::Included(1), Bound::Excluded(5)),
            Some("idx_created (created_at) >= 1 and < 5".into())
        );
        assert_eq!(
            window(Bound::Unbounded, Bound::Included(5)),
            Some("idx_created (created_at) <= 5".into())
        );
        // An empty window is left to the two sets it came from.
        assert_eq!(window(Bound::Included(9), Bound::Excluded(5)), None);
    }
}
