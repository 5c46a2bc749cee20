//! Session layer: the physical plans of repeated SQL text, kept per tenant session.
//!
//! An application that serves queries sends the same statement text again and again.
//! Parsing, SQL-to-logical planning, the logical optimizer and physical planning take
//! longer than executing an indexed query (W-ENT P4 in docs/BENCHMARKS.md), so [`Tenant::sql`]
//! keeps the physical plan of a read-only statement, keyed by its exact text, when the
//! plan holds no state across runs (see [`reusable`]); the next run of the same text
//! renews every node's run state and executes it, with no planning at all.
//!
//! A kept plan is used only under what it was made from:
//! * the session settings: compared by pointer, as `SET` replaces the shared options;
//! * the tenant's declared indexes (the access paths came from them): compared by
//!   pointer, as `CREATE INDEX` and `DROP INDEX` replace the list.
//!
//! Writes do not age a plan: its scans read the rows when they run, and the filtered
//! vector search picks its strategy when it runs. Statements calling `now()` and the
//! like are never kept (the optimizer folds their value into the plan), nor are
//! `EXPLAIN`, DML, or plans with nodes outside [`reusable`]'s list (joins, aggregates,
//! table functions whose rows are read at planning). At most [`CAPACITY`] texts are
//! kept per session; the least recently used goes first.
//!
//! [`Tenant::sql`]: super::Tenant::sql

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;

use crate::error::Result;
use crate::storage::IndexDef;

/// A kept plan, renewed for one run, and the task context it was made with.
pub(super) type KeptPlan = (Arc<dyn ExecutionPlan>, Arc<TaskContext>);

/// Texts kept per tenant session.
pub const CAPACITY: usize = 256;

/// See the module documentation.
#[derive(Default)]
pub(super) struct PlanCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Ticks on every use: an entry's `used` orders the evictions.
    clock: u64,
    hits: u64,
    misses: u64,
}

struct Entry {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    options: Arc<ConfigOptions>,
    indexes: Arc<Vec<IndexDef>>,
    used: u64,
}

/// How the plan cache of a session has served (see [`Tenant::plan_cache_stats`]).
///
/// [`Tenant::plan_cache_stats`]: super::Tenant::plan_cache_stats
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanCacheStats {
    /// Statement texts whose plans are kept.
    pub entries: usize,
    /// Runs that took a kept plan.
    pub hits: u64,
    /// Runs of a read-only statement that planned (nothing kept, or kept under other
    /// settings or indexes).
    pub misses: u64,
}

impl PlanCache {
    /// The plan kept for `sql`, renewed for a run, when it was made under these options
    /// and indexes; a kept plan made under others is dropped.
    pub fn get(
        &self,
        sql: &str,
        options: &Arc<ConfigOptions>,
        indexes: &Arc<Vec<IndexDef>>,
    ) -> Result<Option<KeptPlan>> {
        let found = {
            let mut inner = self.inner.lock();
            inner.clock += 1;
            let clock = inner.clock;
            let current = match inner.entries.get_mut(sql) {
                Some(entry)
                    if Arc::ptr_eq(&entry.options, options)
                        && Arc::ptr_eq(&entry.indexes, indexes) =>
                {
                    entry.used = clock;
                    Some((Arc::clone(&entry.plan), Arc::clone(&entry.task)))
                }
                Some(_) => {
                    inner.entries.remove(sql);
                    None
                }
                None => None,
            };
            if current.is_some() {
                inner.hits += 1;
            }
            current
        };
        match found {
            Some((plan, task)) => Ok(Some((renewed(plan)?, task))),
            None => Ok(None),
        }
    }

    /// Counts a read-only statement that was planned.
    pub fn planned(&self) {
        self.inner.lock().misses += 1;
    }

    /// Keeps `plan` for `sql` when it can run again (see [`reusable`]).
    pub fn put(
        &self,
        sql: &str,
        plan: &Arc<dyn ExecutionPlan>,
        task: &Arc<TaskContext>,
        options: Arc<ConfigOptions>,
        indexes: Arc<Vec<IndexDef>>,
    ) {
        if !reusable(plan) {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.entries.len() >= CAPACITY && !inner.entries.contains_key(sql) {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                inner.entries.remove(&oldest);
            }
        }
        inner.clock += 1;
        let used = inner.clock;
        inner.entries.insert(
            sql.to_string(),
            Entry {
                plan: Arc::clone(plan),
                task: Arc::clone(task),
                options,
                indexes,
                used,
            },
        );
    }

    pub fn stats(&self) -> PlanCacheStats {
        let inner = self.inner.lock();
        PlanCacheStats {
            entries: inner.entries.len(),
            hits: inner.hits,
            misses: inner.misses,
        }
    }
}

/// True when a physical plan can run again: its nodes keep no state across runs that
/// `reset_state` does not renew. No joins (their dynamic filters reach into the scans
/// below them), no aggregates, no table functions that read their rows at planning.
/// Our scans' paths are fixed by the statement's constants and the declared indexes,
/// which the callers compare; a scan's reset drops a dynamic filter it took as join keys
/// (without a join above, a top-k sort's).
pub(super) fn reusable(plan: &Arc<dyn ExecutionPlan>) -> bool {
    const STATELESS: [&str; 10] = [
        "VectorSearchExec",
        "RemScanExec",
        "ProjectionExec",
        "FilterExec",
        "SortExec",
        "SortExec(TopK)",
        "GlobalLimitExec",
        "LocalLimitExec",
        "CoalesceBatchesExec",
        "CooperativeExec",
    ];
    let mut ok = true;
    let _ = plan.apply(|node| {
        ok &= STATELESS.contains(&node.name());
        Ok(if ok {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    ok
}

/// A reusable plan (see [`reusable`]) with every node's run state renewed (a top-k
/// sort's dynamic filter, a scan's metrics), ready for one more run.
pub(super) fn renewed(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| Ok(Transformed::yes(node.reset_state()?)))
        .data()?)
}
