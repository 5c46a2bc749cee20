//! Query layer: [`LeafExec`], the one plan node every leaf of ours is (a scan, a vector
//! search, a table function, an `UPDATE` / `DELETE`). A [`Leaf`] says what the node is
//! (its name, its EXPLAIN line, the expressions it holds) and what work an execution
//! starts; `LeafExec` does the rest the same way for all of them: no children, fresh
//! metrics on every reset, and the work run by [`chunk_stream`] only when polled.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result as DfResult;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildPushdownResult, FilterPushdownPhase, FilterPushdownPropagation, PushedDown,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};

use super::lazy::{Chunks, chunk_stream};

/// What one kind of leaf node is and does.
pub trait Leaf: fmt::Debug + Clone + Send + Sync + 'static {
    /// The node's name in plans.
    const NAME: &'static str;
    /// How the node emits its rows: `Incremental` for a stream, `Final` for one batch.
    const EMISSION: EmissionType;

    /// The EXPLAIN line after `NAME: `.
    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result;

    /// The physical expressions the node holds, for DataFusion's visitors (a hash join
    /// computes its dynamic filter only when a node below holds it).
    fn expressions(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        Vec::new()
    }

    /// The work of one execution. Nothing is read here: the work runs a step per poll.
    fn start(
        &self,
        partition: usize,
        context: &TaskContext,
        schema: &SchemaRef,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn Chunks>>;

    /// The leaf of a plan that runs again (a kept plan, a recursive query's next round):
    /// by default the same leaf.
    fn reset(&self) -> Self {
        self.clone()
    }

    /// A leaf that takes one of the filters a parent offers after planning (a hash
    /// join's dynamic filter); the filters are never reported as applied.
    fn take_parent_filter(&self, _filters: &[Arc<dyn PhysicalExpr>]) -> Option<Self> {
        None
    }
}

/// A leaf of ours as a DataFusion plan node (see the module docs); it derefs to its leaf.
#[derive(Debug)]
pub struct LeafExec<L> {
    leaf: L,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl<L: Leaf> LeafExec<L> {
    /// The node of `leaf`, whose batches have `schema`.
    pub fn new(leaf: L, schema: SchemaRef) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            L::EMISSION,
            Boundedness::Bounded,
        ));
        LeafExec {
            leaf,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The node of another leaf with the same schema, and fresh metrics.
    pub fn with_leaf(&self, leaf: L) -> Self {
        LeafExec {
            leaf,
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn leaf(&self) -> &L {
        &self.leaf
    }
}

impl<L> Deref for LeafExec<L> {
    type Target = L;

    fn deref(&self) -> &L {
        &self.leaf
    }
}

impl<L: Leaf> DisplayAs for LeafExec<L> {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}: ", L::NAME)?;
        self.leaf.describe(f)
    }
}

impl<L: Leaf> ExecutionPlan for LeafExec<L> {
    fn name(&self) -> &str {
        L::NAME
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        for expr in self.leaf.expressions() {
            if f(expr)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn handle_child_pushdown_result(
        &self,
        phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        _config: &ConfigOptions,
    ) -> DfResult<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let filters: Vec<Arc<dyn PhysicalExpr>> = child_pushdown_result
            .parent_filters
            .iter()
            .map(|f| Arc::clone(&f.filter))
            .collect();
        let propagation = FilterPushdownPropagation::with_parent_pushdown_result(vec![
            PushedDown::No;
            filters.len()
        ]);
        if phase != FilterPushdownPhase::Post {
            return Ok(propagation);
        }
        Ok(match self.leaf.take_parent_filter(&filters) {
            Some(leaf) => propagation
                .with_updated_node(Arc::new(self.with_leaf(leaf)) as Arc<dyn ExecutionPlan>),
            None => propagation,
        })
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn reset_state(self: Arc<Self>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(self.with_leaf(self.leaf.reset())))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema();
        let work = self
            .leaf
            .start(partition, &context, &schema, &self.metrics)?;
        Ok(chunk_stream(
            schema,
            work,
            Some(BaselineMetrics::new(&self.metrics, partition)),
        ))
    }
}
