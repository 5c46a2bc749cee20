//! Query layer: `VectorTopKRule`, which turns `ORDER BY <distance>(embedding, const)
//! LIMIT k` over a plain scan of `resources` into an HNSW probe of k rows, and the plan
//! walk it shares with the ordered-index rule (`order.rs`).

use std::sync::Arc;

use datafusion::common::Result as DfResult;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::physical_expr::expressions::{CastExpr, Column, Literal};
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, replace_children_if_necessary};

use super::vector_from_scalar;
use crate::query::exec::{RemScanExec, external};
use crate::storage::{AccessPath, Table};
use crate::vector::Metric;

/// Rewrites `ORDER BY <distance>(embedding, const) LIMIT k` over a plain scan of
/// `resources` into an HNSW probe of k rows (see the module docs).
#[derive(Debug, Default)]
pub struct VectorTopKRule;

impl PhysicalOptimizerRule for VectorTopKRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        rewrite_sort_inputs(plan, rewrite_sort)
    }

    fn name(&self) -> &str {
        "remdb_vector_topk"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The new input of a sort, or `None` to leave it.
pub(crate) type SortRewrite = fn(&SortExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>>;

/// The body of a rule that replaces what a `SortExec` sorts: `rewrite` gives the new
/// input of a sort, or `None` to leave it.
pub(crate) fn rewrite_sort_inputs(
    plan: Arc<dyn ExecutionPlan>,
    rewrite: SortRewrite,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(sort) = node.downcast_ref::<SortExec>() else {
            return Ok(Transformed::no(node));
        };
        match rewrite(sort)? {
            Some(input) => Ok(Transformed::yes(replace_children_if_necessary(
                Arc::clone(&node),
                vec![input],
            )?)),
            None => Ok(Transformed::no(node)),
        }
    })
    .data()
}

/// The metric a distance function orders by, and in which direction it must be sorted.
pub(super) fn metric_of(function: &str) -> Option<(Metric, bool)> {
    match function {
        "cosine_distance" => Some((Metric::Cosine, false)),
        "array_distance" => Some((Metric::L2, false)),
        "inner_product" => Some((Metric::InnerProduct, true)),
        _ => None,
    }
}

/// The new input of `sort` when its key is a distance to a constant vector over an
/// unfiltered `resources` scan whose index has the matching metric.
pub(super) fn rewrite_sort(sort: &SortExec) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    let Some(k) = sort.fetch() else {
        return Ok(None);
    };
    let first = sort.expr().first();
    let Some(function) = first.expr.downcast_ref::<ScalarFunctionExpr>() else {
        return Ok(None);
    };
    let Some((metric, descending)) = metric_of(function.name()) else {
        return Ok(None);
    };
    if first.options.descending != descending || function.args().len() != 2 {
        return Ok(None);
    }
    // The column may be cast to the literal's list type (f32 -> f64).
    let column_of = |e: &Arc<dyn PhysicalExpr>| match e.downcast_ref::<CastExpr>() {
        Some(cast) => cast.expr().downcast_ref::<Column>().cloned(),
        None => e.downcast_ref::<Column>().cloned(),
    };
    let (column, literal) = match (
        column_of(&function.args()[0]),
        function.args()[1].downcast_ref::<Literal>(),
        column_of(&function.args()[1]),
        function.args()[0].downcast_ref::<Literal>(),
    ) {
        (Some(c), Some(l), _, _) | (_, _, Some(c), Some(l)) => (c.index(), l.value().clone()),
        _ => return Ok(None),
    };
    let Ok(query) = vector_from_scalar(&literal) else {
        return Ok(None);
    };
    replace_scan(sort.input(), column, &|scan: &RemScanExec, name: &str| {
        if name != "embedding"
            || scan.table() != Table::Resources
            || !scan.is_unfiltered_full_scan()
        {
            return Ok(None);
        }
        let options = scan.store().vector_options().map_err(external)?;
        match options {
            Some(o) if o.metric == metric && o.dimensions == Some(query.len()) => {
                Ok(Some(scan.with_path(AccessPath::Nearest {
                    query: query.clone(),
                    k,
                    ef: None,
                })))
            }
            _ => Ok(None),
        }
    })
}

/// A new scan for a scan, given the name of the scan's column the rewrite follows.
pub(crate) type ScanRewrite<'a> = &'a dyn Fn(&RemScanExec, &str) -> DfResult<Option<RemScanExec>>;

/// Walks down through projections (following `column`) and pass-through nodes to the
/// scan that produces `column`, and rebuilds the path with the scan `rewrite` makes of it
/// (given the name of that column in the scan). A filter between them stops the walk:
/// the scan owns every filter but volatile ones, and a limit set in the scan would count
/// rows before such a filter.
pub(crate) fn replace_scan(
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
    rewrite: ScanRewrite,
) -> DfResult<Option<Arc<dyn ExecutionPlan>>> {
    if let Some(scan) = plan.downcast_ref::<RemScanExec>() {
        let schema = plan.schema();
        let Some(field) = schema.fields().get(column) else {
            return Ok(None);
        };
        return Ok(rewrite(scan, field.name())?.map(|s| Arc::new(s) as Arc<dyn ExecutionPlan>));
    }
    let child_column = if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        match projection
            .expr()
            .get(column)
            .and_then(|p| p.expr.downcast_ref::<Column>())
        {
            Some(c) => c.index(),
            None => return Ok(None),
        }
    } else if plan.name() == "CooperativeExec" {
        column
    } else {
        return Ok(None);
    };
    let children = plan.children();
    let [child] = children.as_slice() else {
        return Ok(None);
    };
    match replace_scan(child, child_column, rewrite)? {
        Some(new_child) => Ok(Some(replace_children_if_necessary(
            Arc::clone(plan),
            vec![new_child],
        )?)),
        None => Ok(None),
    }
}
