//! Leaves over the primary key and the built-in indexes: the facts one filter states
//! about a column (`col = v`, `col IN (...)`, `c = a OR c = b`, a timestamp range), and
//! a fact as a set of a built-in index.

use std::ops::Bound;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use super::{Condition, MAX_PROBES, Set};
use crate::storage::{IndexId, KeyPart, RowSet, Table, normalize_name};

/// A fact an index can use, extracted from one filter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Fact {
    /// `column` equals one of `values`.
    In {
        column: String,
        values: Vec<ScalarValue>,
    },
    /// `column` lies within a range; `exact` is false if the bound was widened.
    Range {
        column: String,
        lower: Bound<i64>,
        upper: Bound<i64>,
        exact: bool,
    },
}

/// Extracts the index-usable fact of one filter, if it has one.
pub(super) fn fact(expr: &Expr) -> Option<Fact> {
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::Or {
                return or_fact(left, right);
            }
            let (column, value, op) = match (
                column_name(left),
                literal(right),
                column_name(right),
                literal(left),
            ) {
                (Some(c), Some(v), _, _) => (c, v, *op),
                (_, _, Some(c), Some(v)) => (c, v, op.swap()?),
                _ => return None,
            };
            match op {
                Operator::Eq => Some(Fact::In {
                    column: column.to_string(),
                    values: vec![value.clone()],
                }),
                Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                    let (t, exact) = micros(value)?;
                    // A truncated nanosecond bound is widened so the range stays a superset.
                    let (lower, upper) = match op {
                        Operator::Gt if exact => (Bound::Excluded(t), Bound::Unbounded),
                        Operator::Gt | Operator::GtEq => (Bound::Included(t), Bound::Unbounded),
                        Operator::Lt if exact => (Bound::Unbounded, Bound::Excluded(t)),
                        _ if exact => (Bound::Unbounded, Bound::Included(t)),
                        _ => (Bound::Unbounded, Bound::Included(t + 1)),
                    };
                    Some(Fact::Range {
                        column: column.to_string(),
                        lower,
                        upper,
                        exact,
                    })
                }
                _ => None,
            }
        }
        Expr::InList(list) if !list.negated => {
            let column = column_name(&list.expr)?;
            let values: Option<Vec<ScalarValue>> =
                list.list.iter().map(|e| literal(e).cloned()).collect();
            Some(Fact::In {
                column: column.to_string(),
                values: values?,
            })
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) => {
            let column = column_name(expr)?;
            let (lo, lo_exact) = micros(literal(low)?)?;
            let (hi, hi_exact) = micros(literal(high)?)?;
            let upper = if hi_exact { hi } else { hi + 1 };
            Some(Fact::Range {
                column: column.to_string(),
                lower: Bound::Included(lo),
                upper: Bound::Included(upper),
                exact: lo_exact && hi_exact,
            })
        }
        _ => None,
    }
}

/// `c = a OR c = b OR c IN (...)` on one column is an IN-list.
fn or_fact(left: &Expr, right: &Expr) -> Option<Fact> {
    match (fact(left)?, fact(right)?) {
        (
            Fact::In {
                column: a,
                values: mut va,
            },
            Fact::In {
                column: b,
                values: vb,
            },
        ) if a == b => {
            va.extend(vb);
            Some(Fact::In {
                column: a,
                values: va,
            })
        }
        _ => None,
    }
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(c) => Some(c.name.as_str()),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(v, _) if !v.is_null() => Some(v),
        _ => None,
    }
}

/// The text of a string literal as a key part.
pub(super) fn text_part(value: &ScalarValue) -> Option<KeyPart> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Some(KeyPart::Str(s.clone())),
        _ => None,
    }
}

/// A timestamp literal in microseconds, and whether the conversion was exact.
pub(super) fn micros(value: &ScalarValue) -> Option<(i64, bool)> {
    match value {
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some((*v, true)),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000).map(|t| (t, true)),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000).map(|t| (t, true)),
        ScalarValue::TimestampNanosecond(Some(v), _) => {
            Some((v.div_euclid(1_000), v.rem_euclid(1_000) == 0))
        }
        _ => None,
    }
}

/// True when a path of step 1 or 3 of [`plan_access`] can use the fact: the primary key,
/// a built-in index, the time index of moments. A comparison with another column (a
/// timestamp column a user index covers, say) is only a set's.
pub(super) fn builtin_fact(table: Table, fact: &Fact) -> bool {
    match fact {
        Fact::In { column, .. } => {
            table.primary_key().contains(&column.as_str()) || table.builtin_index(column).is_some()
        }
        Fact::Range { column, .. } => time_index_on(table, column).is_some(),
    }
}

/// The built-in time index on `table.column` (moments by `timestamp`), if there is one.
fn time_index_on(table: Table, column: &str) -> Option<IndexId> {
    table.builtin_index(column).filter(|i| i.is_time())
}

/// The built-in text index on `table.column` alone, if there is one.
fn text_index_on(table: Table, column: &str) -> Option<IndexId> {
    table
        .builtin_index(column)
        .filter(|i| i.columns().len() == 1 && !i.is_time())
}

/// One filter's built-in index fact as a row set (a leaf of an AND/OR combination), and
/// whether it is exact.
pub(super) fn builtin_leaf(table: Table, expr: &Expr) -> Option<(Set, bool)> {
    match fact(expr)? {
        Fact::In { column, values } => {
            let index = text_index_on(table, &column)?;
            let exact = !index.normalized();
            let prefixes: Vec<Vec<KeyPart>> = values
                .iter()
                .map(|v| {
                    text_part(v).map(|p| match p {
                        KeyPart::Str(s) if !exact => vec![KeyPart::Str(normalize_name(&s))],
                        p => vec![p],
                    })
                })
                .collect::<Option<_>>()?;
            if prefixes.is_empty() || prefixes.len() > MAX_PROBES {
                return None;
            }
            let rows = RowSet::builtin_prefixes(index, &prefixes);
            Some((Set::leaf(rows, Condition::Keys { index, prefixes }), exact))
        }
        Fact::Range {
            column,
            lower,
            upper,
            exact,
        } => {
            let index = time_index_on(table, &column)?;
            let wrap = |b: Bound<i64>| b.map(|t| vec![KeyPart::I64(t)]);
            let (lower, upper) = (wrap(lower), wrap(upper));
            let rows = RowSet::builtin_range(index, &lower, &upper);
            let condition = Condition::Range {
                index,
                lower,
                upper,
            };
            Some((Set::leaf(rows, condition), exact))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    #[test]
    fn facts_of_one_column() {
        let or = col("type").eq(lit("a")).or(lit("b").eq(col("type")));
        assert_eq!(
            fact(&or),
            Some(Fact::In {
                column: "type".into(),
                values: vec!["a".into(), "b".into()],
            })
        );
        // Two columns are no one index's fact.
        assert_eq!(
            fact(&col("type").eq(lit("a")).or(col("name").eq(lit("b")))),
            None
        );
        // A truncated nanosecond bound widens the range and says so.
        let nanos = lit(ScalarValue::TimestampNanosecond(Some(1_500), None));
        assert_eq!(
            fact(&col("timestamp").gt(nanos)),
            Some(Fact::Range {
                column: "timestamp".into(),
                lower: Bound::Included(1),
                upper: Bound::Unbounded,
                exact: false,
            })
        );
    }

    #[test]
    fn builtin_leaves() {
        let shown = |table, e: Expr| {
            builtin_leaf(table, &e).map(|(set, exact)| (set.shown.to_string(), exact))
        };
        // Names are indexed normalized: a superset.
        assert_eq!(
            shown(Table::Entities, col("name").eq(lit("Ada  LOVELACE"))),
            Some(("entities_name = 'ada lovelace'".into(), false))
        );
        assert_eq!(
            shown(
                Table::Moments,
                col("type").in_list(vec![lit("a"), lit("b")], false)
            ),
            Some(("moments_type IN ('a', 'b')".into(), true))
        );
        let micros = |v| lit(ScalarValue::TimestampMicrosecond(Some(v), None));
        assert_eq!(
            shown(Table::Moments, col("timestamp").lt(micros(0))),
            Some((
                "moments_timestamp range < 1970-01-01T00:00:00Z".into(),
                true
            ))
        );
        // The primary key and columns without a built-in index are not leaves here.
        assert_eq!(shown(Table::Entities, col("id").eq(lit("e1"))), None);
        assert_eq!(shown(Table::Resources, col("content").eq(lit("x"))), None);
    }
}
