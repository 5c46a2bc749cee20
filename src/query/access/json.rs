//! Leaves over user indexes on a JSON path: `json_as_text` (`->>`), `json_get_str`,
//! `json_get_int`, `json_get_float`, `json_get_bool` of `column, 'key', ...` compared
//! with a constant (`=`, `<>`, `<`, `<=`, `>`, `>=`, `IN`, `NOT IN`, `BETWEEN`), and
//! `IS [NOT] NULL`, for a `value` index; `json_array_contains(column, 'key', ..., v)` for
//! a `list` index. Each gives the value ranges it selects and whether exactly.
//!
//! SQL semantics of the values: `->>` returns text, so it matches strings, and also numbers,
//! booleans and objects whose text might equal the constant (those make the set inexact);
//! `json_get_int`/`json_get_float` compare numbers numerically but also parse strings, so
//! their sets take every string and are re-checked; `json_get_bool` reads `true`/`false`
//! and the strings "true"/"false"; `json_get_str` strings only.

use std::ops::Bound;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

use super::ranges::{between_points, gaps, not_null, point, sort_values, within};
use super::{Condition, Set, Test};
use crate::storage::{IndexDef, IndexKind, IndexValue, RowSet, Table, ValueRange};

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

/// The user index of `table` on `column` and `path` of this kind.
fn find<'a>(
    table: Table,
    user: &'a [IndexDef],
    column: &str,
    path: &[String],
    kind: IndexKind,
) -> Option<&'a IndexDef> {
    user.iter()
        .find(|d| d.table == table.name() && d.column == column && d.path == path && d.kind == kind)
}

/// The leaf of a user index's test: its set of the rows whose values lie in `ranges`.
fn leaf(def: &IndexDef, ranges: &[ValueRange], test: Test) -> Option<Set> {
    let condition = Condition::User {
        index: def.name.clone(),
        column: None,
        test,
    };
    Some(Set::leaf(RowSet::user(def, ranges).ok()?, condition))
}

/// Membership in a `list` index: `json_array_contains(column, 'key', ..., v)`. Never
/// negated: rows without the element include rows with no array, which the index lacks.
pub(super) fn list_leaf(
    table: Table,
    expr: &Expr,
    user: &[IndexDef],
    negated: bool,
) -> Option<(Set, bool)> {
    let Expr::ScalarFunction(f) = expr else {
        return None;
    };
    if negated || f.func.name() != "json_array_contains" || f.args.len() < 3 {
        return None;
    }
    let (column, mut path) = json_object(&f.args[0])?;
    for arg in &f.args[1..f.args.len() - 1] {
        path.push(text_literal(arg)?);
    }
    let def = find(table, user, &column, &path, IndexKind::List)?;
    let last = f.args.last()?;
    let v = value(Accessor::AsText, last)
        .or_else(|| value(Accessor::Float, last))
        .or_else(|| value(Accessor::Bool, last))?;
    Some((leaf(def, &[point(v.clone())], Test::Contains(v))?, true))
}

/// A test of a JSON path that a `value` index answers: a comparison with a constant,
/// `IN`, `BETWEEN`, `IS [NOT] NULL`, or a bare boolean accessor (`= true`).
pub(super) fn value_leaf(
    table: Table,
    expr: &Expr,
    user: &[IndexDef],
    negated: bool,
) -> Option<(Set, bool)> {
    let find = |column: &str, path: &[String]| find(table, user, column, path, IndexKind::Value);
    // A bare boolean accessor is `= true` (NOT of it, `= false`).
    if let Some((Accessor::Bool, column, path)) = json_path(expr) {
        let def = find(&column, &path)?;
        let v = IndexValue::Bool(!negated);
        let (ranges, exact) = compare(Accessor::Bool, Operator::Eq, v.clone())?;
        return Some((leaf(def, &ranges, Test::Compare(Operator::Eq, v))?, exact));
    }
    let (target, ranges, exact, test) = match expr {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (target, constant, op) = match (json_path(left), json_path(right)) {
                (Some(t), None) => (t, right.as_ref(), *op),
                (None, Some(t)) => (t, left.as_ref(), op.swap()?),
                _ => return None,
            };
            let op = if negated { op.negate()? } else { op };
            let v = value(target.0, constant)?;
            let (ranges, exact) = compare(target.0, op, v.clone())?;
            (target, ranges, exact, Test::Compare(op, v))
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
            let test = Test::In {
                negated: not,
                values,
            };
            (target, ranges, exact, test)
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
            (target, ranges, ea && eb, Test::Between(lo, hi))
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
            (target, ranges, true, Test::IsNull(is_null))
        }
        _ => return None,
    };
    let (_, column, path) = target;
    let def = find(&column, &path)?;
    let mut unique: Vec<ValueRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        if !unique.contains(&r) {
            unique.push(r);
        }
    }
    Some((leaf(def, &unique, test)?, exact))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::index_ddl::JsonArrayContains;
    use datafusion::logical_expr::{ScalarUDF, col, lit};
    use datafusion_functions_json::functions::{json_as_text, json_get_int};

    fn index(name: &str, key: &str, kind: IndexKind) -> IndexDef {
        IndexDef {
            name: name.into(),
            table: "resources".into(),
            column: "metadata".into(),
            path: vec![key.into()],
            kind,
            id: 1,
        }
    }

    fn shown(leaf: Option<(Set, bool)>) -> Option<(String, bool)> {
        leaf.map(|(set, exact)| (set.shown.to_string(), exact))
    }

    #[test]
    fn value_leaves_say_what_they_select_and_how_exactly() {
        let user = [index("idx_lang", "lang", IndexKind::Value)];
        let lang = || json_as_text(col("metadata"), lit("lang"));
        let leaf = |e: Expr, negated: bool| shown(value_leaf(Table::Resources, &e, &user, negated));
        assert_eq!(
            leaf(lang().eq(lit("en")), false),
            Some(("idx_lang = 'en'".into(), true))
        );
        // '5' may be the text of the number 5: a superset, re-checked.
        assert_eq!(
            leaf(lang().eq(lit("5")), false),
            Some(("idx_lang = '5'".into(), false))
        );
        // NOT (x < v) is x >= v; the constant may stand on either side.
        assert_eq!(
            leaf(lit("m").gt(lang()), true),
            Some(("idx_lang >= 'm'".into(), false))
        );
        assert_eq!(
            leaf(lang().in_list(vec![lit("fr"), lit("de")], true), false),
            Some(("idx_lang NOT IN ('de', 'fr')".into(), true))
        );
        assert_eq!(
            leaf(lang().is_null(), true),
            Some(("idx_lang IS NOT NULL".into(), true))
        );
        // A typed accessor reads the same index, as a superset (it parses strings too).
        let typed = json_get_int(col("metadata"), lit("lang")).gt(lit(3));
        assert_eq!(leaf(typed, false), Some(("idx_lang > 3".into(), false)));
        // Another key is not this index's.
        let other = json_as_text(col("metadata"), lit("other")).eq(lit("en"));
        assert_eq!(leaf(other, false), None);
    }

    #[test]
    fn list_leaves_are_membership_and_never_negated() {
        let user = [index("idx_tags", "tags", IndexKind::List)];
        let contains = ScalarUDF::from(JsonArrayContains::default()).call(vec![
            col("metadata"),
            lit("tags"),
            lit("urgent"),
        ]);
        let leaf = |negated: bool| shown(list_leaf(Table::Resources, &contains, &user, negated));
        assert_eq!(
            leaf(false),
            Some(("idx_tags contains 'urgent'".into(), true))
        );
        assert_eq!(leaf(true), None);
        // A value index on the same path does not answer membership.
        let value = [index("idx_tags", "tags", IndexKind::Value)];
        assert!(list_leaf(Table::Resources, &contains, &value, false).is_none());
    }
}
