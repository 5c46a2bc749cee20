//! Query layer: the access planner, pure functions from filters to an access path.
//!
//! [`plan_access`] looks at the conjuncts DataFusion offers a table scan, finds those an
//! index can answer, picks one access path by a fixed preference (the primary key first,
//! then a set of row ids from the indexes, then the most selective built-in index), and
//! says for every filter whether that path alone decides it (`Exact`); a filter the path
//! narrows but does not decide (a normalized name match) is `Inexact`, the rest
//! `Unsupported`. The scan evaluates every filter that is not `Exact` here as its
//! residual (`provider.rs` claims every filter for the scan: no filter depends on the
//! others for its answer, none is evaluated twice).
//!
//! The parts:
//! * one leaf parser per kind of index: [`builtin`] (the primary key and the built-in
//!   indexes: `col = v`, `col IN (...)`, `c = a OR c = b`, timestamp ranges), [`json`]
//!   (user indexes on a JSON path: values and list membership), [`column`] (user indexes
//!   on a whole timestamp column);
//! * [`walk`], the one AND/OR/NOT walker that combines leaves into a row set;
//! * [`show`], the `Display` of a path and of what each leaf of its set stands for
//!   ([`Condition`]), for EXPLAIN.

use std::ops::Bound;

use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};

use crate::storage::{
    AccessPath, IndexDef, IndexId, IndexValue, KeyPart, RowSet, Table, normalize_name,
    timestamp_column,
};
use builtin::{Fact, builtin_fact, fact, micros, text_part};
use column::column_window;
use walk::filter_set;

mod builtin;
mod column;
mod json;
mod ranges;
mod show;
mod walk;

/// A set of row ids from the indexes, and what each of its leaves stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct Set {
    pub rows: RowSet,
    pub shown: Shown,
}

/// The shape of a [`Set`] as EXPLAIN shows it: its leaves' conditions, combined.
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    Leaf(Condition),
    And(Vec<Shown>),
    Or(Vec<Shown>),
}

/// What one leaf of a set selects, as the filter said it.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// Keys of a built-in index: `entities_type = 'person'`, `... IN (...)`.
    Keys {
        index: IndexId,
        prefixes: Vec<Vec<KeyPart>>,
    },
    /// A range of a built-in index: `moments_timestamp range >= ...`.
    Range {
        index: IndexId,
        lower: Bound<Vec<KeyPart>>,
        upper: Bound<Vec<KeyPart>>,
    },
    /// A test of a user index; `column` is shown for an index of a whole column.
    User {
        index: String,
        column: Option<String>,
        test: Test,
    },
}

/// The test a leaf over a user index makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Compare(Operator, IndexValue),
    In {
        negated: bool,
        values: Vec<IndexValue>,
    },
    Between(IndexValue, IndexValue),
    IsNull(bool),
    Contains(IndexValue),
    /// Comparisons of one column merged into one range.
    Window(Bound<IndexValue>, Bound<IndexValue>),
}

impl Set {
    pub fn leaf(rows: RowSet, condition: Condition) -> Set {
        Set {
            rows,
            shown: Shown::Leaf(condition),
        }
    }

    pub fn and(parts: Vec<Set>) -> Set {
        let (rows, shown) = parts.into_iter().map(|s| (s.rows, s.shown)).unzip();
        Set {
            rows: RowSet::And(rows),
            shown: Shown::And(shown),
        }
    }

    pub fn or(parts: Vec<Set>) -> Set {
        let (rows, shown) = parts.into_iter().map(|s| (s.rows, s.shown)).unzip();
        Set {
            rows: RowSet::Or(rows),
            shown: Shown::Or(shown),
        }
    }
}

/// An access path of one table, with what its row set (if it has one) stands for: the
/// planner's result as a scan holds it, and EXPLAIN prints it (`Display`).
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    pub table: Table,
    pub path: AccessPath,
    /// The conditions of the path's row set (`AccessPath::RowSet`, also within an
    /// ordered walk).
    pub set: Option<Shown>,
}

impl Access {
    /// A path without a row set (a full scan, keys, a range, a vector search).
    pub fn plain(table: Table, path: AccessPath) -> Access {
        Access {
            table,
            path,
            set: None,
        }
    }

    /// The same access by another path that keeps this one's row set, if any (an
    /// ordered walk within it).
    pub fn with_path(&self, path: AccessPath) -> Access {
        Access {
            path,
            ..self.clone()
        }
    }
}

/// Comparisons of one timestamp column: the column, the merged bounds, and the sets they
/// replace when the column's index answers the merged range.
type Window = (String, Bound<i64>, Bound<i64>, Vec<Set>);

/// At most this many keys are probed for one IN-list (or the product of several).
const MAX_PROBES: usize = 1024;

/// An IN-list of up to this many names (uris) is read through the built-in index rather
/// than any set (see [`plan_access`]).
const NEAR_UNIQUE_PROBES: usize = 64;

/// What a scan will do with its filters.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessPlan {
    pub path: AccessPath,
    /// What the path's row set stands for, when it has one.
    pub set: Option<Shown>,
    /// For each offered filter, how far the path answers it.
    pub pushdown: Vec<TableProviderFilterPushDown>,
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
        return AccessPlan {
            path,
            set: None,
            pushdown,
        };
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
    let sets: Vec<Option<(Set, bool)>> = if near_unique {
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
            _ => Set::and(parts),
        };
        return AccessPlan {
            path: AccessPath::RowSet(set.rows),
            set: Some(set.shown),
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
            return AccessPlan {
                path,
                set: None,
                pushdown,
            };
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
            return AccessPlan {
                path,
                set: None,
                pushdown,
            };
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
                set: None,
                pushdown,
            };
        }
    }
    AccessPlan {
        path: AccessPath::FullScan,
        set: None,
        pushdown,
    }
}

impl AccessPlan {
    /// The chosen path of `table` with what its set stands for.
    pub fn access(&self, table: Table) -> Access {
        Access {
            table,
            path: self.path.clone(),
            set: self.set.clone(),
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

#[cfg(test)]
mod tests;
