//! Query layer: filter pushdown analysis, one pure function from filters to access path.
//!
//! [`plan_access`] looks at the conjuncts DataFusion offers a table scan, finds those an
//! index can answer (`col = lit`, `col IN (lits)`, `col = a OR col = b`, and ranges on
//! timestamps), picks one access path by a fixed preference (the primary key first, then
//! the most selective kind of index), and says for every filter whether that path alone
//! decides it (`Exact`); a filter the path narrows but does not decide (a normalized
//! name match) is `Inexact`, the rest `Unsupported`. The scan evaluates every filter
//! that is not `Exact` here as its residual (see `provider.rs`, which claims every
//! filter for the scan: no filter depends on the others for its answer, none is
//! evaluated twice).

use std::ops::Bound;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};

use super::index_sets::{column_window, filter_set, show as show_value};
use crate::storage::{
    AccessPath, IndexDef, IndexId, IndexValue, KeyPart, RowSet, Table, normalize_name,
    timestamp_column,
};

/// Comparisons of one timestamp column: the column, the merged bounds, and the sets they
/// replace when the column's index answers the merged range.
type Window = (String, Bound<i64>, Bound<i64>, Vec<RowSet>);

/// At most this many keys are probed for one IN-list (or the product of several).
const MAX_PROBES: usize = 1024;

/// An IN-list of up to this many names (uris) is read through the built-in index rather
/// than any set (see [`plan_access`]).
const NEAR_UNIQUE_PROBES: usize = 64;

/// What a scan will do with its filters.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPlan {
    pub path: AccessPath,
    /// For each offered filter, how far the path answers it.
    pub pushdown: Vec<TableProviderFilterPushDown>,
}

/// A fact an index can use, extracted from one filter.
#[derive(Debug, Clone, PartialEq)]
enum Fact {
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

/// Chooses the access path for a scan of `table` with these conjunctive filters, given
/// the tenant's user-declared indexes.
pub fn plan_access(table: Table, filters: &[&Expr], user: &[IndexDef]) -> AccessPlan {
    let facts: Vec<Option<Fact>> = filters.iter().map(|f| fact(f)).collect();
    let mut pushdown = vec![TableProviderFilterPushDown::Unsupported; filters.len()];
    let used = |i: usize, exact: bool, pushdown: &mut Vec<TableProviderFilterPushDown>| {
        pushdown[i] = if exact {
            TableProviderFilterPushDown::Exact
        } else {
            TableProviderFilterPushDown::Inexact
        };
    };

    // The first equality (IN) fact on `column`, as key parts.
    let eq = |column: &str| -> Option<(usize, Vec<KeyPart>)> {
        facts.iter().enumerate().find_map(|(i, f)| match f {
            Some(Fact::In { column: c, values }) if c == column => {
                let parts: Option<Vec<KeyPart>> = values.iter().map(text_part).collect();
                parts
                    .filter(|p| !p.is_empty() && p.len() <= MAX_PROBES)
                    .map(|p| (i, p))
            }
            _ => None,
        })
    };

    // 1. The primary key, or a built-in index of several columns (an edge's `dst`),
    //    on equalities of a leading run of its columns.
    let keys = std::iter::once((table.primary_key(), None)).chain(
        IndexId::ALL
            .into_iter()
            .filter(|i| i.table() == table && i.columns().len() > 1)
            .map(|i| (i.columns(), Some(i))),
    );
    for (columns, index) in keys {
        let Some((lead, rest)) = columns.split_first() else {
            continue;
        };
        let Some((i, leads)) = eq(lead) else { continue };
        let mut prefixes: Vec<Vec<KeyPart>> = leads.into_iter().map(|p| vec![p]).collect();
        used(i, true, &mut pushdown);
        for next in rest {
            let Some((j, parts)) = eq(next) else { break };
            if prefixes.len() * parts.len() > MAX_PROBES {
                break;
            }
            prefixes = prefixes
                .iter()
                .flat_map(|p| {
                    parts
                        .iter()
                        .map(move |x| [p.clone(), vec![x.clone()]].concat())
                })
                .collect();
            used(j, true, &mut pushdown);
        }
        let path = match index {
            None => AccessPath::PrimaryPrefix { prefixes },
            Some(index) => AccessPath::IndexPrefix { index, prefixes },
        };
        return AccessPlan { path, pushdown };
    }

    // 2. A set of row ids when a user index answers a filter, or a filter combines
    //    indexes (OR, NOT) in a way no single path below can: the AND of every filter's set.
    //    An equality on a near-unique built-in key (a name, a uri) comes first: it reads
    //    a handful of rows, where a set may read a wide range of another index.
    let near_unique = IndexId::ALL
        .into_iter()
        .find(|i| i.table() == table && i.near_unique())
        .and_then(|i| eq(i.columns()[0]))
        .is_some_and(|(_, parts)| parts.len() <= NEAR_UNIQUE_PROBES);
    let sets: Vec<Option<(RowSet, bool)>> = if near_unique {
        vec![None; filters.len()]
    } else {
        filters.iter().map(|f| filter_set(table, f, user)).collect()
    };
    if sets
        .iter()
        .zip(&facts)
        .any(|(s, f)| s.is_some() && !f.as_ref().is_some_and(|f| builtin_fact(table, f)))
    {
        let mut parts = Vec::new();
        // Comparisons with one timestamp column (BETWEEN arrives as two) make one range
        // of its index, not an AND of two half-open ones.
        let mut windows: Vec<Window> = Vec::new();
        for (i, s) in sets.into_iter().enumerate() {
            let Some((set, exact)) = s else { continue };
            used(i, exact, &mut pushdown);
            match &facts[i] {
                Some(Fact::Range {
                    column,
                    lower,
                    upper,
                    exact: true,
                }) if timestamp_column(table, column) => {
                    match windows.iter_mut().find(|w| &w.0 == column) {
                        Some(w) => {
                            w.1 = tighter_lower(w.1, *lower);
                            w.2 = tighter_upper(w.2, *upper);
                            w.3.push(set);
                        }
                        None => windows.push((column.clone(), *lower, *upper, vec![set])),
                    }
                }
                _ => parts.push(set),
            }
        }
        for (column, lower, upper, sets) in windows {
            match column_window(table, &column, lower, upper, user) {
                Some(window) if sets.len() > 1 => parts.push(window),
                _ => parts.extend(sets),
            }
        }
        let set = match parts.len() {
            1 => parts.remove(0),
            _ => RowSet::And(parts),
        };
        return AccessPlan {
            path: AccessPath::RowSet(set),
            pushdown,
        };
    }

    // 3. Secondary indexes of one column: a time index, then text indexes, the
    //    near-unique ones first.
    let mut candidates: Vec<IndexId> = IndexId::ALL
        .into_iter()
        .filter(|i| i.table() == table && i.columns().len() == 1)
        .collect();
    candidates.sort_by_key(|i| !i.near_unique());
    let (times, candidates): (Vec<IndexId>, Vec<IndexId>) =
        candidates.into_iter().partition(|i| i.is_time());
    for index in times {
        let column = index.columns()[0];
        if let Some((i, stamps)) = eq_timestamps(&facts, column) {
            used(i, true, &mut pushdown);
            let prefixes = stamps.into_iter().map(|t| vec![KeyPart::I64(t)]).collect();
            let path = AccessPath::IndexPrefix { index, prefixes };
            return AccessPlan { path, pushdown };
        }
        let mut lower = Bound::Unbounded;
        let mut upper = Bound::Unbounded;
        let mut any = false;
        for (i, f) in facts.iter().enumerate() {
            if let Some(Fact::Range {
                column,
                lower: lo,
                upper: hi,
                exact,
            }) = f
                && column == index.columns()[0]
            {
                lower = tighter_lower(lower, *lo);
                upper = tighter_upper(upper, *hi);
                used(i, *exact, &mut pushdown);
                any = true;
            }
        }
        if any {
            let wrap = |b: Bound<i64>| b.map(|t| vec![KeyPart::I64(t)]);
            let path = AccessPath::IndexRange {
                index,
                lower: wrap(lower),
                upper: wrap(upper),
                descending: false,
            };
            return AccessPlan { path, pushdown };
        }
    }
    for index in candidates {
        if let Some((i, mut parts)) = eq(index.columns()[0]) {
            // Names are indexed normalized: the index finds a superset, the scan re-checks.
            let exact = !index.normalized();
            if !exact {
                for p in &mut parts {
                    if let KeyPart::Str(s) = p {
                        *s = normalize_name(s);
                    }
                }
            }
            used(i, exact, &mut pushdown);
            let prefixes = parts.into_iter().map(|p| vec![p]).collect();
            return AccessPlan {
                path: AccessPath::IndexPrefix { index, prefixes },
                pushdown,
            };
        }
    }
    AccessPlan {
        path: AccessPath::FullScan,
        pushdown,
    }
}

/// True when a path of step 1 or 3 of [`plan_access`] can use the fact: the primary key,
/// a built-in index, the time index of moments. A comparison with another column (a
/// timestamp column a user index covers, say) is only a set's.
fn builtin_fact(table: Table, fact: &Fact) -> bool {
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
pub(super) fn fact_set(table: Table, expr: &Expr) -> Option<(RowSet, bool)> {
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
            let label = format!("{} {}", index.name(), describe_keys(&prefixes));
            Some((RowSet::builtin_prefixes(index, &prefixes, label), exact))
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
            let label = format!("{} range {}", index.name(), describe_range(&lower, &upper));
            let set = RowSet::builtin_range(index, &lower, &upper, label);
            Some((set, exact))
        }
    }
}

fn tighter_lower(a: Bound<i64>, b: Bound<i64>) -> Bound<i64> {
    match (a, b) {
        (Bound::Unbounded, x) | (x, Bound::Unbounded) => x,
        (Bound::Included(x), Bound::Included(y)) => Bound::Included(x.max(y)),
        (Bound::Excluded(x), Bound::Excluded(y)) => Bound::Excluded(x.max(y)),
        (Bound::Included(i), Bound::Excluded(e)) | (Bound::Excluded(e), Bound::Included(i)) => {
            if i > e {
                Bound::Included(i)
            } else {
                Bound::Excluded(e)
            }
        }
    }
}

fn tighter_upper(a: Bound<i64>, b: Bound<i64>) -> Bound<i64> {
    match (a, b) {
        (Bound::Unbounded, x) | (x, Bound::Unbounded) => x,
        (Bound::Included(x), Bound::Included(y)) => Bound::Included(x.min(y)),
        (Bound::Excluded(x), Bound::Excluded(y)) => Bound::Excluded(x.min(y)),
        (Bound::Included(i), Bound::Excluded(e)) | (Bound::Excluded(e), Bound::Included(i)) => {
            if i < e {
                Bound::Included(i)
            } else {
                Bound::Excluded(e)
            }
        }
    }
}

fn eq_timestamps(facts: &[Option<Fact>], column: &str) -> Option<(usize, Vec<i64>)> {
    facts.iter().enumerate().find_map(|(i, f)| match f {
        Some(Fact::In { column: c, values }) if c == column && values.len() <= MAX_PROBES => {
            let stamps: Option<Vec<i64>> = values
                .iter()
                .map(|v| micros(v).filter(|(_, exact)| *exact).map(|(t, _)| t))
                .collect();
            stamps.filter(|s| !s.is_empty()).map(|s| (i, s))
        }
        _ => None,
    })
}

/// The text of a string literal as a key part.
fn text_part(value: &ScalarValue) -> Option<KeyPart> {
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

/// Extracts the index-usable fact of one filter, if it has one.
fn fact(expr: &Expr) -> Option<Fact> {
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

/// Describes a path for EXPLAIN, e.g. `index entities_type = 'person'`.
fn part(p: &KeyPart) -> String {
    match p {
        KeyPart::Str(s) => format!("'{}'", s.replace('\'', "''")),
        // Integer keys are timestamps (microseconds): show them as such.
        KeyPart::I64(v) => chrono::DateTime::from_timestamp_micros(*v)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| v.to_string()),
    }
}

/// `= 'a'` or `IN ('a', 'b', ...)` for EXPLAIN.
pub(super) fn describe_keys(prefixes: &[Vec<KeyPart>]) -> String {
    let shown: Vec<String> = prefixes
        .iter()
        .take(5)
        .map(|p| {
            let parts: Vec<String> = p.iter().map(part).collect();
            if parts.len() == 1 {
                parts[0].clone()
            } else {
                format!("({})", parts.join(", "))
            }
        })
        .collect();
    let more = if prefixes.len() > 5 {
        format!(", ... {} keys", prefixes.len())
    } else {
        String::new()
    };
    if prefixes.len() == 1 {
        format!("= {}", shown[0])
    } else {
        format!("IN ({}{more})", shown.join(", "))
    }
}

fn describe_range(lower: &Bound<Vec<KeyPart>>, upper: &Bound<Vec<KeyPart>>) -> String {
    let show = |b: &Bound<Vec<KeyPart>>, incl: &str, excl: &str| match b {
        Bound::Unbounded => None,
        Bound::Included(v) => Some(format!(
            "{incl} {}",
            v.iter().map(part).collect::<Vec<_>>().join(",")
        )),
        Bound::Excluded(v) => Some(format!(
            "{excl} {}",
            v.iter().map(part).collect::<Vec<_>>().join(",")
        )),
    };
    let bounds: Vec<String> = [show(lower, ">=", ">"), show(upper, "<=", "<")]
        .into_iter()
        .flatten()
        .collect();
    if bounds.is_empty() {
        "all".to_string()
    } else {
        bounds.join(" AND ")
    }
}

pub fn describe(table: Table, path: &AccessPath) -> String {
    match path {
        AccessPath::FullScan => "full_scan".to_string(),
        AccessPath::RowSet(set) => format!("index set {}", set.describe()),
        AccessPath::Nearest { query, k, ef } => {
            let ef = ef.map(|e| format!(", ef={e}")).unwrap_or_default();
            format!(
                "hnsw nearest k={k}{ef} (query of {} dimensions)",
                query.len()
            )
        }
        AccessPath::PrimaryPrefix { prefixes } => {
            let key = match table.primary_key() {
                [one] => one.to_string(),
                many => format!("({})", many.join(", ")),
            };
            format!("primary {key} {}", describe_keys(prefixes))
        }
        AccessPath::IndexPrefix { index, prefixes } => {
            format!("index {} {}", index.name(), describe_keys(prefixes))
        }
        AccessPath::IndexRange {
            index,
            lower,
            upper,
            descending,
        } => format!(
            "index {} range {}{}",
            index.name(),
            describe_range(lower, upper),
            if *descending { ", descending" } else { "" }
        ),
        AccessPath::IndexOrder {
            index,
            descending,
            within,
            range,
        } => {
            let within = match within.as_ref() {
                AccessPath::FullScan => String::new(),
                other => format!(" within {}", describe(table, other)),
            };
            let bound = |b: &Bound<IndexValue>, open: &str, closed: &str| match b {
                Bound::Unbounded => None,
                Bound::Excluded(v) => Some(format!("{open} {}", show_value(v))),
                Bound::Included(v) => Some(format!("{closed} {}", show_value(v))),
            };
            let bounds: Vec<String> = [bound(&range.0, ">", ">="), bound(&range.1, "<", "<=")]
                .into_iter()
                .flatten()
                .collect();
            let bounds = if bounds.is_empty() {
                String::new()
            } else {
                format!(" {}", bounds.join(" and "))
            };
            format!(
                "index {} ({}{bounds}) in order{}{within}",
                index.name,
                index.expression(),
                if *descending { ", descending" } else { "" }
            )
        }
    }
}

#[cfg(test)]
mod tests;
