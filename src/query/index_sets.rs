//! Query layer: which rows the indexes answer for a filter, as a [`RowSet`] (pure).
//!
//! [`filter_set`] turns one filter into an AND/OR tree of index key ranges, with whether
//! the set is exactly the rows that pass (`exact`) or a superset that must be re-checked.
//! Leaves are:
//! * built-in indexes: `col = v`, `col IN (...)` on `entities.type`/`name`,
//!   `resources.uri`, `moments.type`, and ranges on `moments.timestamp`;
//! * user indexes on a JSON path: `json_as_text` (`->>`), `json_get_str`, `json_get_int`,
//!   `json_get_float`, `json_get_bool` of `column, 'key', ...` compared with a constant
//!   (`=`, `<>`, `<`, `<=`, `>`, `>=`, `IN`, `NOT IN`, `BETWEEN`), `IS [NOT] NULL`, and
//!   `json_array_contains(column, 'key', ..., v)` for a `list` index.
//!
//! `AND` needs one side with a set (the other side makes it inexact), `OR` needs both;
//! `NOT` is pushed down to the leaves (De Morgan holds in SQL's three-valued logic) and
//! only exact leaves are negated: the complement of an exact value set among the non-null
//! values is exact again, because a comparison with NULL is never true.
//!
//! SQL semantics of the values: `->>` returns text, so it matches strings, and also numbers,
//! booleans and objects whose text might equal the constant (those make the set inexact);
//! `json_get_int`/`json_get_float` compare numbers numerically but also parse strings, so
//! their sets take every string and are re-checked; `json_get_bool` reads `true`/`false`
//! and the strings "true"/"false"; `json_get_str` strings only.

use std::ops::Bound;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use crate::storage::{IndexDef, IndexKind, IndexValue, RowSet, Table, ValueRange};

use super::pushdown::{fact_set, micros};
use crate::storage::timestamp_column;

/// The rows the indexes answer for `expr`, and whether exactly.
pub fn filter_set(table: Table, expr: &Expr, user: &[IndexDef]) -> Option<(RowSet, bool)> {
    set(table, expr, user, false)
}

fn set(table: Table, expr: &Expr, user: &[IndexDef], negated: bool) -> Option<(RowSet, bool)> {
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
                    (Some((a, ea)), Some((b, eb))) => Some((RowSet::And(vec![a, b]), ea && eb)),
                    (Some((a, _)), None) | (None, Some((a, _))) => Some((a, false)),
                    (None, None) => None,
                }
            } else {
                let ((a, ea), (b, eb)) = (l?, r?);
                Some((RowSet::Or(vec![a, b]), ea && eb))
            }
        }
        Expr::Not(inner) => set(table, inner, user, !negated),
        // NOT (x < v) is x >= v in three-valued logic: the leaf negates its operator.
        _ if negated => {
            user_leaf(table, expr, user, true).or_else(|| column_leaf(table, expr, user, true))
        }
        // A built-in index first: it answers `name = 'x'` as well as a column's own.
        _ => user_leaf(table, expr, user, false)
            .or_else(|| fact_set(table, expr))
            .or_else(|| column_leaf(table, expr, user, false)),
    }
}

/// Which JSON accessor a filter applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accessor {
    AsText,
    Str,
    Int,
    Float,
    Bool,
}

/// `json_fn(column, 'k1', 'k2', ...)`, also when written as nested `->` calls.
fn json_path(expr: &Expr) -> Option<(Accessor, String, Vec<String>)> {
    let Expr::ScalarFunction(f) = expr else {
        return None;
    };
    let accessor = match f.func.name() {
        "json_as_text" => Accessor::AsText,
        "json_get_str" => Accessor::Str,
        "json_get_int" => Accessor::Int,
        "json_get_float" => Accessor::Float,
        "json_get_bool" => Accessor::Bool,
        _ => return None,
    };
    let (column, mut path) = json_object(f.args.first()?)?;
    for arg in &f.args[1..] {
        path.push(text_literal(arg)?);
    }
    Some((accessor, column, path))
}

/// A JSON column, or `json_get(column, 'k', ...)` of one: the column and the path so far.
fn json_object(expr: &Expr) -> Option<(String, Vec<String>)> {
    match expr {
        Expr::Column(c) => Some((c.name.clone(), vec![])),
        Expr::ScalarFunction(f) if f.func.name() == "json_get" => {
            let (column, mut path) = json_object(f.args.first()?)?;
            for arg in &f.args[1..] {
                path.push(text_literal(arg)?);
            }
            Some((column, path))
        }
        _ => None,
    }
}

fn text_literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)),
            _,
        ) => Some(s.clone()),
        _ => None,
    }
}

/// A constant as an index value, for the accessor comparing it.
fn value(accessor: Accessor, expr: &Expr) -> Option<IndexValue> {
    let Expr::Literal(v, _) = expr else {
        return None;
    };
    match accessor {
        Accessor::AsText | Accessor::Str => text_literal(expr).map(IndexValue::Text),
        Accessor::Int | Accessor::Float => {
            let n = match v.cast_to(&datafusion::arrow::datatypes::DataType::Float64) {
                Ok(ScalarValue::Float64(Some(n))) if n.is_finite() => n,
                _ => return None,
            };
            Some(IndexValue::Number(n))
        }
        Accessor::Bool => match v {
            ScalarValue::Boolean(Some(b)) => Some(IndexValue::Bool(*b)),
            _ => None,
        },
    }
}

fn point(v: IndexValue) -> ValueRange {
    (Bound::Included(v.clone()), Bound::Included(v))
}

/// The lowest non-null value: every value above `Null`.
fn not_null() -> Bound<IndexValue> {
    Bound::Excluded(IndexValue::Null)
}

/// The complement of sorted, disjoint point values among the non-null values.
fn between_points(points: &[IndexValue]) -> Vec<ValueRange> {
    gaps((not_null(), Bound::Unbounded), points)
}

/// The complement of sorted, disjoint point values within `(start, end)`.
fn gaps((start, end): ValueRange, points: &[IndexValue]) -> Vec<ValueRange> {
    let mut out = Vec::with_capacity(points.len() + 1);
    let mut lower = start;
    for p in points {
        out.push((lower, Bound::Excluded(p.clone())));
        lower = Bound::Excluded(p.clone());
    }
    out.push((lower, end));
    out
}

fn sort_values(values: &mut Vec<IndexValue>) {
    let key = |v: &IndexValue| {
        let mut b = Vec::new();
        v.encode(&mut b);
        b
    };
    values.sort_by_key(key);
    values.dedup();
}

/// Extra values whose `->>` text could equal `text`: numbers, booleans, objects.
fn text_lookalikes(text: &str) -> Vec<ValueRange> {
    let mut out = Vec::new();
    if let Ok(n) = text.trim().parse::<f64>()
        && n.is_finite()
    {
        out.push(point(IndexValue::Number(n)));
    }
    match text {
        "true" => out.push(point(IndexValue::Bool(true))),
        "false" => out.push(point(IndexValue::Bool(false))),
        _ => {}
    }
    if text.starts_with('{') || text.starts_with('[') {
        out.push(point(IndexValue::Json(text.to_string())));
    }
    out
}

/// Every value that is not text or null: numbers, booleans, objects and arrays (whose
/// `->>` text a range of text might include).
fn all_non_text() -> Vec<ValueRange> {
    vec![
        (
            Bound::Included(IndexValue::Bool(false)),
            Bound::Excluded(IndexValue::Text(String::new())),
        ),
        (
            Bound::Included(IndexValue::Json(String::new())),
            Bound::Unbounded,
        ),
    ]
}

fn op_name(op: Operator) -> &'static str {
    match op {
        Operator::Eq => "=",
        Operator::NotEq => "<>",
        Operator::Lt => "<",
        Operator::LtEq => "<=",
        Operator::Gt => ">",
        Operator::GtEq => ">=",
        _ => "?",
    }
}

/// A value as SQL text, for EXPLAIN.
pub(super) fn show(v: &IndexValue) -> String {
    match v {
        IndexValue::Null => "NULL".into(),
        IndexValue::Bool(b) => b.to_string(),
        IndexValue::Number(n) => n.to_string(),
        IndexValue::Text(s) | IndexValue::Json(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

/// A leaf over a user index: the value ranges it selects and whether exactly.
fn user_leaf(
    table: Table,
    expr: &Expr,
    user: &[IndexDef],
    negated: bool,
) -> Option<(RowSet, bool)> {
    let find = |column: &str, path: &[String], kind: IndexKind| {
        user.iter().find(|d| {
            d.table == table.name() && d.column == column && d.path == path && d.kind == kind
        })
    };
    // Membership in a list index.
    if let Expr::ScalarFunction(f) = expr
        && f.func.name() == "json_array_contains"
        && f.args.len() >= 3
    {
        let (column, mut path) = json_object(&f.args[0])?;
        for arg in &f.args[1..f.args.len() - 1] {
            path.push(text_literal(arg)?);
        }
        let def = find(&column, &path, IndexKind::List)?;
        let last = f.args.last()?;
        let v = value(Accessor::AsText, last)
            .or_else(|| value(Accessor::Float, last))
            .or_else(|| value(Accessor::Bool, last))?;
        if negated {
            // Rows without the element include rows with no array: not in the index.
            return None;
        }
        let label = format!("{} contains {}", def.name, show(&v));
        return Some((RowSet::user(def, &[point(v)], label).ok()?, true));
    }
    // A bare boolean accessor is `= true` (NOT of it, `= false`).
    if let Some((Accessor::Bool, column, path)) = json_path(expr) {
        let def = find(&column, &path, IndexKind::Value)?;
        let (ranges, exact) = compare(Accessor::Bool, Operator::Eq, IndexValue::Bool(!negated))?;
        let label = format!("{} = {}", def.name, !negated);
        return Some((RowSet::user(def, &ranges, label).ok()?, exact));
    }
    let (target, ranges, exact, label) = match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (target, constant, op) = match (json_path(left), json_path(right)) {
                (Some(t), None) => (t, right.as_ref(), *op),
                (None, Some(t)) => (t, left.as_ref(), op.swap()?),
                _ => return None,
            };
            let op = if negated { op.negate()? } else { op };
            let v = value(target.0, constant)?;
            let (ranges, exact) = compare(target.0, op, v.clone())?;
            let label = format!("{} {} {}", "{}", op_name(op), show(&v));
            (target, ranges, exact, label)
        }
        Expr::InList(list) => {
            let target = json_path(&list.expr)?;
            let mut values = list
                .list
                .iter()
                .map(|e| value(target.0, e))
                .collect::<Option<Vec<_>>>()?;
            if values.is_empty() || values.len() > 1024 {
                return None;
            }
            sort_values(&mut values);
            let shown: Vec<String> = values.iter().map(show).collect();
            let not = list.negated != negated;
            let mut ranges = Vec::new();
            let mut exact = true;
            for v in &values {
                let (r, e) = compare(target.0, Operator::Eq, v.clone())?;
                ranges.extend(r);
                exact &= e;
            }
            if not {
                // The complement of exact points: among all non-null values for `->>`
                // (each has a text), among the strings for json_get_str; the typed
                // accessors read strings too, so they are left to a scan.
                ranges = match target.0 {
                    Accessor::AsText if exact => between_points(&values),
                    Accessor::Str => gaps(
                        (
                            Bound::Included(IndexValue::Text(String::new())),
                            Bound::Excluded(IndexValue::Json(String::new())),
                        ),
                        &values,
                    ),
                    _ => return None,
                };
            }
            let label = format!(
                "{{}} {}IN ({})",
                if not { "NOT " } else { "" },
                shown.join(", ")
            );
            (target, ranges, exact, label)
        }
        Expr::Between(Between {
            expr: inner,
            negated: between_negated,
            low,
            high,
        }) => {
            let target = json_path(inner)?;
            if *between_negated != negated {
                return None;
            }
            let (lo, hi) = (value(target.0, low)?, value(target.0, high)?);
            let (mut ranges, ea) = compare(target.0, Operator::GtEq, lo.clone())?;
            let (upper, eb) = compare(target.0, Operator::LtEq, hi.clone())?;
            // The first range of each is the accessor's own type: intersect those; the
            // rest (values whose text might match) stay as they are.
            if let (Some(first), Some(second)) = (ranges.first_mut(), upper.first()) {
                first.1 = second.1.clone();
            }
            let label = format!("{{}} BETWEEN {} AND {}", show(&lo), show(&hi));
            (target, ranges, ea && eb, label)
        }
        Expr::IsNull(inner) | Expr::IsNotNull(inner) => {
            let target = json_path(inner)?;
            if target.0 != Accessor::AsText {
                return None;
            }
            let is_null = matches!(expr, Expr::IsNull(_)) != negated;
            let ranges = if is_null {
                vec![point(IndexValue::Null)]
            } else {
                vec![(not_null(), Bound::Unbounded)]
            };
            let label = format!("{{}} IS {}NULL", if is_null { "" } else { "NOT " });
            (target, ranges, true, label)
        }
        _ => return None,
    };
    let (_, column, path) = target;
    let def = find(&column, &path, IndexKind::Value)?;
    let mut unique: Vec<ValueRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if !unique.contains(&r) {
            unique.push(r);
        }
    }
    let ranges = unique;
    let label = label.replacen("{}", &def.name, 1);
    Some((RowSet::user(def, &ranges, label).ok()?, exact))
}

/// A leaf over the user index of a whole timestamp column (`created_at`, `updated_at`):
/// the column compared with a constant (`=`, `<>`, `<`, `<=`, `>`, `>=`, `IN`, `NOT IN`;
/// DataFusion's simplifier turns BETWEEN into two comparisons before the scan sees it,
/// and `plan_access` merges those into one range, see [`column_window`]). These columns are never NULL and their
/// index holds every row's value, so the set is exact, negated or not. Text columns'
/// comparisons stay in the residual: an ordered walk over the column's own index takes
/// its bounds from there (`name > $last ORDER BY name LIMIT n`, see `order.rs`).
fn column_leaf(
    table: Table,
    expr: &Expr,
    user: &[IndexDef],
    negated: bool,
) -> Option<(RowSet, bool)> {
    let (column, ranges, label) = match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (column, constant, op) = match (left.as_ref(), right.as_ref()) {
                (Expr::Column(c), other) => (c, other, *op),
                (other, Expr::Column(c)) => (c, other, op.swap()?),
                _ => return None,
            };
            let op = if negated { op.negate()? } else { op };
            let v = column_value(table, &column.name, constant)?;
            let ranges = within(all_numbers(), op, v.clone())?;
            let label = format!("{{}} {} {}", op_name(op), show(&v));
            (column, ranges, label)
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
            let shown: Vec<String> = values.iter().map(show).collect();
            let not = list.negated != negated;
            let ranges = if not {
                gaps(all_numbers(), &values)
            } else {
                values.into_iter().map(point).collect()
            };
            let label = format!(
                "{{}} {}IN ({})",
                if not { "NOT " } else { "" },
                shown.join(", ")
            );
            (column, ranges, label)
        }
        _ => return None,
    };
    let def = column_index(table, &column.name, user)?;
    let label = label.replacen("{}", &format!("{} ({})", def.name, def.column), 1);
    Some((RowSet::user(def, &ranges, label).ok()?, true))
}

/// The set of rows whose timestamp `column` lies in `(lower, upper)` (microseconds), from
/// the column's user index: the comparisons of one column merged into one range.
pub fn column_window(
    table: Table,
    column: &str,
    lower: Bound<i64>,
    upper: Bound<i64>,
    user: &[IndexDef],
) -> Option<RowSet> {
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
    let side = |b: &Bound<IndexValue>, incl: &str, excl: &str| match b {
        Bound::Included(v) => format!(" {incl} {}", show(v)),
        Bound::Excluded(v) => format!(" {excl} {}", show(v)),
        Bound::Unbounded => String::new(),
    };
    let (lower_text, upper_text) = (side(&lo, ">=", ">"), side(&hi, "<=", "<"));
    let and = if lower_text.is_empty() || upper_text.is_empty() {
        ""
    } else {
        " and"
    };
    let label = format!("{} ({column}){lower_text}{and}{upper_text}", def.name);
    RowSet::user(def, &[(lo, hi)], label).ok()
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

/// The value ranges of `accessor(...) op v`, and whether they are exact.
fn compare(accessor: Accessor, op: Operator, v: IndexValue) -> Option<(Vec<ValueRange>, bool)> {
    let text = || {
        (
            Bound::Included(IndexValue::Text(String::new())),
            Bound::Excluded(IndexValue::Json(String::new())),
        )
    };
    let numbers = || {
        (
            Bound::Included(IndexValue::Number(f64::NEG_INFINITY)),
            Bound::Excluded(IndexValue::Text(String::new())),
        )
    };
    match accessor {
        // Only strings have a json_get_str: `<>` is the rest of the strings.
        Accessor::Str => Some((within(text(), op, v)?, true)),
        Accessor::AsText => {
            let IndexValue::Text(s) = &v else {
                return None;
            };
            let lookalikes = text_lookalikes(s);
            match op {
                Operator::Eq => {
                    let exact = lookalikes.is_empty();
                    let mut ranges = vec![point(v)];
                    ranges.extend(lookalikes);
                    Some((ranges, exact))
                }
                // Every non-null value has a text: `<>` is every other non-null value.
                Operator::NotEq if lookalikes.is_empty() => Some((between_points(&[v]), true)),
                Operator::NotEq => None,
                _ => {
                    let mut ranges = within(text(), op, v)?;
                    ranges.extend(all_non_text());
                    Some((ranges, false))
                }
            }
        }
        Accessor::Int | Accessor::Float => {
            // json_get_int compares i64s that f64 keys may round together, and -0.0 is
            // not 0.0 in SQL's float order: open bounds are closed, and `<>` takes every
            // number. Both also parse numbers written as strings, so every string is a
            // candidate: the set is always re-checked.
            let op = match op {
                Operator::Lt => Operator::LtEq,
                Operator::Gt => Operator::GtEq,
                Operator::NotEq => return Some((vec![numbers(), text()], false)),
                op => op,
            };
            let mut ranges = within(numbers(), op, v)?;
            ranges.push(text());
            Some((ranges, false))
        }
        Accessor::Bool => {
            // json_get_bool also reads the strings "true" and "false".
            let IndexValue::Bool(b) = v else {
                return None;
            };
            let b = match op {
                Operator::Eq => b,
                Operator::NotEq => !b,
                _ => return None,
            };
            Some((
                vec![
                    point(IndexValue::Bool(b)),
                    point(IndexValue::Text(b.to_string())),
                ],
                true,
            ))
        }
    }
}

/// Values of one type's range `(start, end)` that compare with `v` as `op` does.
fn within(
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
