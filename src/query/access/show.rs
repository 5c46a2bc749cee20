//! How EXPLAIN shows an access path: `index entities_type = 'person'`, `primary id IN
//! ('a', 'b')`, `index set (idx_lang = 'en' AND entities_type = 'person')`.

use std::fmt;
use std::ops::Bound;

use datafusion::logical_expr::Operator;

use super::{Access, Condition, Shown, Test};
use crate::storage::{AccessPath, IndexValue, KeyPart};

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
fn show(v: &IndexValue) -> String {
    match v {
        IndexValue::Null => "NULL".into(),
        IndexValue::Bool(b) => b.to_string(),
        IndexValue::Number(n) => n.to_string(),
        IndexValue::Text(s) | IndexValue::Json(s) => format!("'{}'", s.replace('\'', "''")),
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
fn describe_keys(prefixes: &[Vec<KeyPart>]) -> String {
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

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.show_path(&self.path, f)
    }
}

impl Access {
    fn show_path(&self, path: &AccessPath, f: &mut fmt::Formatter) -> fmt::Result {
        match path {
            AccessPath::FullScan => write!(f, "full_scan"),
            AccessPath::RowSet(_) => match &self.set {
                Some(set) => write!(f, "index set {set}"),
                None => write!(f, "index set"),
            },
            AccessPath::Nearest { query, k, ef } => {
                let ef = ef.map(|e| format!(", ef={e}")).unwrap_or_default();
                write!(
                    f,
                    "hnsw nearest k={k}{ef} (query of {} dimensions)",
                    query.len()
                )
            }
            AccessPath::PrimaryPrefix { prefixes } => {
                let key = match self.table.primary_key() {
                    [one] => one.to_string(),
                    many => format!("({})", many.join(", ")),
                };
                write!(f, "primary {key} {}", describe_keys(prefixes))
            }
            AccessPath::IndexPrefix { index, prefixes } => {
                write!(f, "index {} {}", index.name(), describe_keys(prefixes))
            }
            AccessPath::IndexRange {
                index,
                lower,
                upper,
                descending,
            } => write!(
                f,
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
                write!(f, "index {} ({}", index.name, index.expression())?;
                let bounds: Vec<String> = [bound(&range.0, ">", ">="), bound(&range.1, "<", "<=")]
                    .into_iter()
                    .flatten()
                    .collect();
                if !bounds.is_empty() {
                    write!(f, " {}", bounds.join(" and "))?;
                }
                write!(
                    f,
                    ") in order{}",
                    if *descending { ", descending" } else { "" }
                )?;
                match within.as_ref() {
                    AccessPath::FullScan => Ok(()),
                    other => {
                        write!(f, " within ")?;
                        self.show_path(other, f)
                    }
                }
            }
        }
    }
}

/// `> v` (open) or `>= v` (closed) of a bound; nothing when unbounded.
fn bound(b: &Bound<IndexValue>, open: &str, closed: &str) -> Option<String> {
    match b {
        Bound::Unbounded => None,
        Bound::Excluded(v) => Some(format!("{open} {}", show(v))),
        Bound::Included(v) => Some(format!("{closed} {}", show(v))),
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let (parts, op) = match self {
            Shown::Leaf(condition) => return write!(f, "{condition}"),
            Shown::And(parts) => (parts, " AND "),
            Shown::Or(parts) => (parts, " OR "),
        };
        let inner: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
        write!(f, "({})", inner.join(op))
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Condition::Keys { index, prefixes } => {
                write!(f, "{} {}", index.name(), describe_keys(prefixes))
            }
            Condition::Range {
                index,
                lower,
                upper,
            } => write!(f, "{} range {}", index.name(), describe_range(lower, upper)),
            Condition::User {
                index,
                column,
                test,
            } => {
                write!(f, "{index}")?;
                if let Some(column) = column {
                    write!(f, " ({column})")?;
                }
                write!(f, "{test}")
            }
        }
    }
}

/// A test, with its leading space (a window without bounds shows nothing).
impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Test::Compare(op, v) => write!(f, " {} {}", op_name(*op), show(v)),
            Test::In { negated, values } => {
                let shown: Vec<String> = values.iter().map(show).collect();
                let not = if *negated { "NOT " } else { "" };
                write!(f, " {not}IN ({})", shown.join(", "))
            }
            Test::Between(lo, hi) => write!(f, " BETWEEN {} AND {}", show(lo), show(hi)),
            Test::IsNull(true) => write!(f, " IS NULL"),
            Test::IsNull(false) => write!(f, " IS NOT NULL"),
            Test::Contains(v) => write!(f, " contains {}", show(v)),
            Test::Window(lower, upper) => {
                let bounds: Vec<String> = [bound(lower, ">", ">="), bound(upper, "<", "<=")]
                    .into_iter()
                    .flatten()
                    .collect();
                if bounds.is_empty() {
                    Ok(())
                } else {
                    write!(f, " {}", bounds.join(" and "))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{IndexId, Table};

    #[test]
    fn keys_ranges_and_sets() {
        let many: Vec<Vec<KeyPart>> = (0..7)
            .map(|i| vec![format!("k{i}").as_str().into()])
            .collect();
        assert_eq!(
            describe_keys(&many),
            "IN ('k0', 'k1', 'k2', 'k3', 'k4', ... 7 keys)"
        );
        assert_eq!(describe_keys(&[vec!["it's".into()]]), "= 'it''s'");
        let edges = Access::plain(
            Table::Edges,
            AccessPath::PrimaryPrefix {
                prefixes: vec![vec!["a".into(), "knows".into()]],
            },
        );
        assert_eq!(
            edges.to_string(),
            "primary (src, edge_type, dst) = ('a', 'knows')"
        );
        let set = Shown::And(vec![
            Shown::Leaf(Condition::Keys {
                index: IndexId::EntityType,
                prefixes: vec![vec!["person".into()]],
            }),
            Shown::Leaf(Condition::User {
                index: "idx_n".into(),
                column: None,
                test: Test::Between(IndexValue::Number(1.0), IndexValue::Number(2.5)),
            }),
        ]);
        assert_eq!(
            set.to_string(),
            "(entities_type = 'person' AND idx_n BETWEEN 1 AND 2.5)"
        );
    }
}
