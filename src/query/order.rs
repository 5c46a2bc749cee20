//! Query layer: `ORDER BY column [DESC] LIMIT n` served by an index walked in order.
//!
//! [`OrderRule`] finds a `SortExec` with a fetch whose only key is the `timestamp` of
//! a moments scan that reads the whole table or a timestamp range, and makes the scan walk
//! `moments_timestamp` in the sort's direction and stop after n rows (after its residual
//! filters). The sort stays above it, ordering those n rows; the table is never sorted.
//!
//! It does the same for a text column with a user index (`CREATE INDEX
//! idx_name ON entities (name)`): the scan walks that index in order and skips the rows
//! its own filters' index set does not hold ([`AccessPath::IndexOrder`]).
//!
//! The scan owns every filter (its residual), so the limit it is given counts rows that
//! pass them all.

use std::ops::Bound;
use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, Literal};
use datafusion::physical_expr::utils::split_conjunction;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;

use super::exec::{RemScanExec, external};
use super::vector::{replace_scan, rewrite_sort_inputs};
use crate::storage::{AccessPath, IndexId, IndexKind, IndexValue, ValueRange};

/// Turns a top-n by `moments.timestamp`, or by a text column with a user index, into an
/// ordered, limited walk of that index.
#[derive(Debug, Default)]
pub struct OrderRule;

impl PhysicalOptimizerRule for OrderRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        rewrite_sort_inputs(plan, rewrite_sort)
    }

    fn name(&self) -> &str {
        "remdb_order"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn rewrite_sort(sort: &SortExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(n) = sort.fetch() else {
        return Ok(None);
    };
    if sort.expr().len() != 1 {
        return Ok(None);
    }
    let key = sort.expr().first();
    let Some(column) = key.expr.downcast_ref::<Column>() else {
        return Ok(None);
    };
    let descending = key.options.descending;
    replace_scan(
        sort.input(),
        column.index(),
        &|scan: &RemScanExec, name: &str| match scan.table().builtin_index(name) {
            Some(index) if index.is_time() => Ok(time_walk(scan, index, n, descending)),
            _ => ordered_scan(scan, name, n, descending),
        },
    )
}

/// The moments scan walking the time index in order, when it reads the whole table or a
/// timestamp range.
fn time_walk(
    scan: &RemScanExec,
    index: IndexId,
    n: usize,
    descending: bool,
) -> Option<RemScanExec> {
    let (lower, upper) = match scan.access_path() {
        AccessPath::FullScan => (Bound::Unbounded, Bound::Unbounded),
        AccessPath::IndexRange {
            index: walked,
            lower,
            upper,
            ..
        } if *walked == index => (lower.clone(), upper.clone()),
        _ => return None,
    };
    let path = AccessPath::IndexRange {
        index,
        lower,
        upper,
        descending,
    };
    let limit = scan.limit().map_or(n, |l| l.min(n));
    Some(scan.with_path(path).with_limit(Some(limit)))
}

/// The scan walking the user index on its column `name` in order, when there is one.
/// Scans of a few keys (ids, a vector search) keep their path: sorting their rows is
/// cheaper than any walk.
fn ordered_scan(
    scan: &RemScanExec,
    name: &str,
    n: usize,
    descending: bool,
) -> DfResult<Option<RemScanExec>> {
    if scan.limit().is_some()
        || matches!(
            scan.access_path(),
            AccessPath::PrimaryPrefix { .. }
                | AccessPath::Nearest { .. }
                | AccessPath::IndexOrder { .. }
        )
    {
        return Ok(None);
    }
    let user = scan.store().user_indexes().map_err(external)?;
    let Some(def) = user.iter().find(|d| {
        d.is_column()
            && d.kind == IndexKind::Value
            && d.table == scan.table().name()
            && d.column == name
    }) else {
        return Ok(None);
    };
    let path = AccessPath::IndexOrder {
        index: def.clone(),
        descending,
        within: Box::new(scan.access_path().clone()),
        range: text_bounds(scan.residual(), name),
    };
    // A scan reached from a sort through projections and a filter is no join's probe
    // side: a dynamic filter it holds is the top-k sort's own.
    Ok(Some(
        scan.with_path(path).without_join_keys().with_limit(Some(n)),
    ))
}

/// The range the scan's residual keeps of the text column `name`: its conjuncts
/// `name op 'text'` (`=`, `<`, `<=`, `>`, `>=`; BETWEEN arrives as two of them), so that
/// an ordered walk starts and stops there (`WHERE name > $last ORDER BY name LIMIT n`,
/// the next page). The residual still checks them; anything else leaves a side open.
fn text_bounds(residual: Option<&Arc<dyn PhysicalExpr>>, name: &str) -> ValueRange {
    let mut range: ValueRange = (Bound::Unbounded, Bound::Unbounded);
    let Some(residual) = residual else {
        return range;
    };
    for conjunct in split_conjunction(residual) {
        let Some(binary) = conjunct.downcast_ref::<BinaryExpr>() else {
            continue;
        };
        let (column, literal, op) = match (
            binary.left().downcast_ref::<Column>(),
            binary.right().downcast_ref::<Literal>(),
            binary.right().downcast_ref::<Column>(),
            binary.left().downcast_ref::<Literal>(),
        ) {
            (Some(c), Some(l), _, _) => (c, l, *binary.op()),
            (_, _, Some(c), Some(l)) => match binary.op().swap() {
                Some(op) => (c, l, op),
                None => continue,
            },
            _ => continue,
        };
        let text = match literal.value() {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => s.clone(),
            _ => continue,
        };
        if column.name() != name {
            continue;
        }
        let v = IndexValue::Text(text);
        let (lower, upper) = match op {
            Operator::Eq => (Bound::Included(v.clone()), Bound::Included(v)),
            Operator::Gt => (Bound::Excluded(v), Bound::Unbounded),
            Operator::GtEq => (Bound::Included(v), Bound::Unbounded),
            Operator::Lt => (Bound::Unbounded, Bound::Excluded(v)),
            Operator::LtEq => (Bound::Unbounded, Bound::Included(v)),
            _ => continue,
        };
        range.0 = tighter(range.0, lower, std::cmp::Ordering::Greater);
        range.1 = tighter(range.1, upper, std::cmp::Ordering::Less);
    }
    range
}

/// Of two bounds on one side, the one that keeps less: `keeps_less` is how its value
/// compares with the other's (`Greater` for lower bounds, `Less` for upper ones); at the
/// same value an excluded bound keeps less.
fn tighter(
    a: Bound<IndexValue>,
    b: Bound<IndexValue>,
    keeps_less: std::cmp::Ordering,
) -> Bound<IndexValue> {
    let value = |b: &Bound<IndexValue>| match b {
        Bound::Included(IndexValue::Text(s)) | Bound::Excluded(IndexValue::Text(s)) => {
            Some(s.clone())
        }
        _ => None,
    };
    match (value(&a), value(&b)) {
        (None, _) => b,
        (_, None) => a,
        (Some(x), Some(y)) if x == y => match a {
            Bound::Excluded(_) => a,
            _ => b,
        },
        (Some(x), Some(y)) if y.cmp(&x) == keeps_less => b,
        _ => a,
    }
}
