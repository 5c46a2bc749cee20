//! Query layer: `ORDER BY timestamp [DESC] LIMIT n` over moments, served by the time index.
//!
//! [`TimeOrderRule`] finds a `SortExec` with a fetch whose only key is the `timestamp` of
//! a moments scan that reads the whole table or a timestamp range, and makes the scan walk
//! `moments_timestamp` in the sort's direction and stop after n rows (after its residual
//! filters). The sort stays above it, ordering those n rows; the table is never sorted.

use std::ops::Bound;
use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::common::config::ConfigOptions;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort::SortExec;

use super::exec::RemScanExec;
use super::vector::{replace_scan, rewrite_sort_inputs};
use crate::storage::{AccessPath, IndexId, Table};

/// Turns a top-n by `moments.timestamp` into an ordered, limited walk of the time index.
#[derive(Debug, Default)]
pub struct TimeOrderRule;

impl PhysicalOptimizerRule for TimeOrderRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        rewrite_sort_inputs(plan, rewrite_sort)
    }

    fn name(&self) -> &str {
        "remdb_time_order"
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
        "timestamp",
        &|scan: &RemScanExec| {
            if scan.table() != Table::Moments {
                return Ok(None);
            }
            let (lower, upper) = match scan.access_path() {
                AccessPath::FullScan => (Bound::Unbounded, Bound::Unbounded),
                AccessPath::IndexRange {
                    index: IndexId::MomentTimestamp,
                    lower,
                    upper,
                    ..
                } => (lower.clone(), upper.clone()),
                _ => return Ok(None),
            };
            let path = AccessPath::IndexRange {
                index: IndexId::MomentTimestamp,
                lower,
                upper,
                descending,
            };
            let limit = scan.limit().map_or(n, |l| l.min(n));
            Ok(Some(scan.with_path(path).with_limit(Some(limit))))
        },
    )
}
