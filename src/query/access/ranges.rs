//! Ranges of index values: points, complements and comparisons, shared by the leaves.

use std::ops::Bound;

use datafusion::logical_expr::Operator;

use crate::storage::{IndexValue, ValueRange};

pub(super) fn point(v: IndexValue) -> ValueRange {
    (Bound::Included(v.clone()), Bound::Included(v))
}

/// The lowest non-null value: every value above `Null`.
pub(super) fn not_null() -> Bound<IndexValue> {
    Bound::Excluded(IndexValue::Null)
}

/// The complement of sorted, disjoint point values among the non-null values.
pub(super) fn between_points(points: &[IndexValue]) -> Vec<ValueRange> {
    gaps((not_null(), Bound::Unbounded), points)
}

/// The complement of sorted, disjoint point values within `(start, end)`.
pub(super) fn gaps((start, end): ValueRange, points: &[IndexValue]) -> Vec<ValueRange> {
    let mut out = Vec::with_capacity(points.len() + 1);
    let mut lower = start;
    for p in points {
        out.push((lower, Bound::Excluded(p.clone())));
        lower = Bound::Excluded(p.clone());
    }
    out.push((lower, end));
    out
}

pub(super) fn sort_values(values: &mut Vec<IndexValue>) {
    let key = |v: &IndexValue| {
        let mut b = Vec::new();
        v.encode(&mut b);
        b
    };
    values.sort_by_key(key);
    values.dedup();
}

/// Values of one type's range `(start, end)` that compare with `v` as `op` does.
pub(super) fn within(
    (start, end): (Bound<IndexValue>, Bound<IndexValue>),
    op: Operator,
    v: IndexValue,
) -> Option<Vec<ValueRange>> {
    Some(match op {
        Operator::Eq => vec![point(v)],
        Operator::NotEq => vec![
            (start, Bound::Excluded(v.clone())),
            (Bound::Excluded(v), end),
        ],
        Operator::Lt => vec![(start, Bound::Excluded(v))],
        Operator::LtEq => vec![(start, Bound::Included(v))],
        Operator::Gt => vec![(Bound::Excluded(v), end)],
        Operator::GtEq => vec![(Bound::Included(v), end)],
        _ => return None,
    })
}
