//! Query layer: `VectorSearchExec`, one (filtered) vector search: the candidate set an
//! index gives, the strategy chosen by its size (exact scoring, a filtered graph search,
//! over-fetching, post-filtering), and the rows read and checked until k are found.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{Array, AsArray, Float32Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder};

use crate::query::access::Access;
use crate::query::convert::{EMBEDDING_COLUMN, rows_to_batch, table_schema};
use crate::query::exec::external;
use crate::query::lazy::Chunks;
use crate::query::lazy::{Once, Stop, cancelled};
use crate::query::leaf::{Leaf, LeafExec};
use crate::storage::{
    AccessPath, Candidates, MAX_KEPT_SET_VECTORS, Row, RowBitmap, Table, TenantStore,
};
use crate::vector::Metric;
use datafusion::physical_plan::execution_plan::EmissionType;

/// How a search finds its k rows (chosen when it runs, from the candidate count m of the
/// filter's index set and the n vectors of the index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// No filter: one HNSW search.
    Hnsw,
    /// m <= [`exact_max`]: score every candidate exactly (recall 1.0).
    Exact,
    /// HNSW search that skips rows outside the set (only when forced).
    InGraph,
    /// m > [`exact_max`]: search more than k (about k n / m), keep the hits
    /// in the candidate set, and widen until k rows pass or every vector was considered.
    Overfetch,
    /// More than [`candidate_cap`] candidates not in memory, or a filter no index answers: search
    /// more than k without a candidate set, check the filter on the rows read, widen.
    PostFilter,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Hnsw => "hnsw",
            Strategy::Exact => "exact",
            Strategy::InGraph => "hnsw_in_graph_filter",
            Strategy::Overfetch => "hnsw_overfetch",
            Strategy::PostFilter => "hnsw_post_filter",
        }
    }

    /// The strategy of a name [`Strategy::name`] gives.
    pub fn parse(name: &str) -> Option<Strategy> {
        [
            Strategy::Hnsw,
            Strategy::Exact,
            Strategy::InGraph,
            Strategy::Overfetch,
            Strategy::PostFilter,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// Candidate sets up to this size are scored exactly, at any index size: from the kept
/// block of a set's vectors, exact scoring of 10,000 of 100k vectors (768-d) took 1.7 ms
/// at recall 1.000 where over-fetching took 3.1 ms at 0.962, and 20,000 took 3.1 ms
/// against 1.6 ms (docs/BENCHMARKS.md, W-HYB sweep).
pub const EXACT_MAX_CANDIDATES: usize = 16_384;
/// The fewest candidate ids a search reads from the indexes in line (below
/// [`candidate_cap`]'s square root).
pub const CANDIDATE_CAP_FLOOR: usize = 8_192;
/// The most rows an over-fetching search asks the graph for before it widens again.
pub(super) const WIDEN_FACTOR: usize = 4;

/// Scale of [`candidate_cap`].
pub const CANDIDATE_CAP_SCALE: f64 = 262.0;

/// The most candidate ids a search reads from the indexes in line (about sqrt(262 n),
/// at least [`CANDIDATE_CAP_FLOOR`]: 8,192 of 100k vectors, 16,200 of 1M); with more,
/// and no whole set in the tenant's candidate cache, it post-filters, and the set is read
/// in the background for the searches after it (`TenantStore::candidates`). Resolving m
/// ids costs m id reads, and post-filtering about 10 / s row reads plus a wider graph
/// search, for selectivity s = m / n: with the measured cost of a row read against an id
/// read (docs/BENCHMARKS.md, W-HYB sweep) the two meet near s = sqrt(262 / n).
pub fn candidate_cap(total: usize) -> usize {
    ((CANDIDATE_CAP_SCALE * total as f64).sqrt() as usize).max(CANDIDATE_CAP_FLOOR)
}

/// The most candidates scored exactly in an index of `total` vectors: at least
/// [`EXACT_MAX_CANDIDATES`], as many as a search reads in line ([`candidate_cap`]) where
/// that is more, at most [`MAX_KEPT_SET_VECTORS`]. A set over the in-line cap is scored
/// exactly from its kept set, by the searches after the first (which post-filters while
/// the set is read). The first exact search of a set pays one random read of the index
/// per candidate; it copies the set's vectors into memory, and later searches on that
/// filter score them in order, several times faster (docs/BENCHMARKS.md).
pub fn exact_max(total: usize) -> usize {
    candidate_cap(total).clamp(EXACT_MAX_CANDIDATES, MAX_KEPT_SET_VECTORS)
}

/// The strategy for a candidate set: exact scoring up to [`exact_max`], else
/// over-fetching against the set; post-filtering without one. In-graph filtering is never
/// chosen: with the set in memory, over-fetching was as good or better at every
/// selectivity the W-HYB sweep measured (docs/BENCHMARKS.md); it stays for forcing.
pub fn choose_strategy(candidates: &Candidates, filtered: bool, total: usize) -> Strategy {
    let m = match candidates {
        Candidates::All if filtered => return Strategy::PostFilter,
        Candidates::All => return Strategy::Hnsw,
        Candidates::Many => return Strategy::PostFilter,
        Candidates::Ids { ids, .. } => ids.len(),
        Candidates::Set(set) => set.len(),
    };
    if m <= exact_max(total) {
        Strategy::Exact
    } else {
        Strategy::Overfetch
    }
}

/// A filter evaluated on rows read by a search, over the table columns it names.
#[derive(Debug, Clone)]
pub(super) struct RowCheck {
    pub(super) expr: Arc<dyn PhysicalExpr>,
    pub(super) columns: Vec<usize>,
}

impl RowCheck {
    pub(super) fn new(state: &dyn Session, filters: Vec<Expr>) -> DfResult<Option<RowCheck>> {
        let table = table_schema(Table::Resources);
        let mut columns: Vec<usize> = Vec::new();
        for expr in &filters {
            for column in expr.column_refs() {
                let index = table.index_of(&column.name)?;
                if !columns.contains(&index) {
                    columns.push(index);
                }
            }
        }
        let Some(expr) = conjunction(filters) else {
            return Ok(None);
        };
        let read_schema = DFSchema::try_from(table.project(&columns)?)?;
        Ok(Some(RowCheck {
            expr: state.create_physical_expr(expr, &read_schema)?,
            columns,
        }))
    }

    /// Which of `rows` pass.
    pub(super) fn keep(&self, rows: &[(u64, Row)]) -> DfResult<Vec<bool>> {
        let values: Vec<Row> = rows.iter().map(|(_, r)| r.clone()).collect();
        let batch = rows_to_batch(Table::Resources, &values, &self.columns).map_err(external)?;
        let mask = self.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let mask = mask.as_boolean_opt().ok_or_else(|| {
            DataFusionError::Internal("vector search filter is not boolean".into())
        })?;
        Ok((0..mask.len())
            .map(|i| mask.is_valid(i) && mask.value(i))
            .collect())
    }
}

/// Runs one (filtered) vector search and returns the rows it finds with their score and
/// distance, nearest first.
pub type VectorSearchExec = LeafExec<VectorSearch>;

/// What a [`VectorSearchExec`] searches for, and where.
#[derive(Debug, Clone)]
pub struct VectorSearch {
    pub(super) store: TenantStore,
    pub(super) query: Vec<f32>,
    /// The prepared statement's placeholder the query vector came from.
    pub(super) param: Option<String>,
    pub(super) k: usize,
    pub(super) min_score: Option<f32>,
    pub(super) ef: Option<usize>,
    pub(super) metric: Metric,
    /// Where candidates come from: a full scan means "every vector".
    pub(super) candidates: Access,
    /// A strategy forced by the session's options (measurements, tests).
    pub(super) force: Option<Strategy>,
    /// Pushed filters the candidate set does not decide.
    pub(super) residual: Option<RowCheck>,
    /// Every pushed filter: checked on the rows when there is no exact candidate set.
    pub(super) filter: Option<RowCheck>,
    pub(super) projection: Vec<usize>,
}

/// A row found by a search: its row id, its distance, the row.
pub(super) type Hit = (u64, f32, Row);

/// Rows found so far, nearest first, and what was done to find them.
pub(super) struct Found {
    rows: Vec<Hit>,
    seen: std::collections::HashSet<u64>,
    /// Set when a hit scored under `min_score`: no farther hit can qualify.
    below_min: bool,
    /// Rows to find: k, or k times the rescoring depth of an f16 / i8 index.
    wanted: usize,
    /// Whether hits are scored again from the stored f32 vectors before they are kept
    /// (counted in `rescored`).
    rescore: bool,
    rescored: Count,
}

impl VectorSearchExec {
    /// The same search for another query vector (checked when the search runs), with
    /// fresh metrics: how a prepared statement reuses its physical plan.
    pub fn with_query(&self, query: Vec<f32>) -> VectorSearchExec {
        self.with_leaf(VectorSearch {
            query,
            ..self.leaf().clone()
        })
    }
}

impl VectorSearch {
    /// The placeholder (`$1`) of a prepared statement the query vector was bound from.
    pub fn parameter(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// Reads the rows of `hits` (nearest first) not seen yet, keeps those that pass
    /// `check` and `min_score`, until `found.wanted` are found. When rescoring, each part
    /// of hits is scored exactly first and `min_score` applies to the exact scores; a part
    /// with a hit under it is the last one read (hits are ranked by the index's
    /// approximate distances: every hit of that part is checked, a hit ranked after it
    /// is not, though its exact score may pass by up to the quantization error).
    pub(super) fn collect(
        &self,
        hits: &[(u64, f32)],
        metric: Metric,
        check: Option<&RowCheck>,
        found: &mut Found,
        checked: &Count,
        stop: &Stop,
    ) -> DfResult<()> {
        let fresh: Vec<(u64, f32)> = hits
            .iter()
            .filter(|(id, _)| !found.seen.contains(id))
            .copied()
            .collect();
        let wants_vectors = self.projection.contains(&EMBEDDING_COLUMN)
            || check.is_some_and(|c| c.columns.contains(&EMBEDDING_COLUMN));
        // Rows are read in parts; rescored hits, with nothing to check on their rows, in
        // parts of the rows still wanted (each hit costs a vector read from RocksDB).
        let chunk = match check {
            None if found.rescore => found.wanted.saturating_sub(found.rows.len()).max(1),
            _ => (found.wanted * 2).max(64),
        };
        for part in fresh.chunks(chunk) {
            if found.rows.len() >= found.wanted || found.below_min {
                return Ok(());
            }
            if stop.is_set() {
                return Err(cancelled());
            }
            let mut part = part.to_vec();
            if found.rescore {
                for (id, _) in &part {
                    found.seen.insert(*id);
                }
                part = self
                    .store
                    .rescore(metric, &self.query, &part)
                    .map_err(external)?;
                found.rescored.add(part.len());
                if let Some(min) = self.min_score {
                    let before = part.len();
                    part.retain(|(_, d)| metric.score(*d) >= min);
                    found.below_min |= part.len() < before;
                }
            } else if let Some(cut) = part
                .iter()
                .position(|(_, d)| self.min_score.is_some_and(|m| metric.score(*d) < m))
            {
                part.truncate(cut);
                found.below_min = true;
            }
            for (id, _) in &part {
                found.seen.insert(*id);
            }
            let ids: Vec<u64> = part.iter().map(|(id, _)| *id).collect();
            let mut cursor = self
                .store
                .scan_row_ids(Table::Resources, ids)
                .with_vectors(wants_vectors);
            let mut rows: Vec<(u64, Row)> = Vec::with_capacity(part.len());
            loop {
                let next = cursor.next_chunk(1024).map_err(external)?;
                if next.is_empty() {
                    break;
                }
                rows.extend(next);
            }
            checked.add(rows.len());
            let keep: Vec<bool> = match check {
                None => vec![true; rows.len()],
                Some(check) => check.keep(&rows)?,
            };
            let distance_of: std::collections::HashMap<u64, f32> = part.iter().copied().collect();
            for ((id, row), pass) in rows.into_iter().zip(keep) {
                if pass && found.rows.len() < found.wanted {
                    let d = distance_of.get(&id).copied().unwrap_or(f32::NAN);
                    found.rows.push((id, d, row));
                }
            }
        }
        Ok(())
    }

    /// The rows found, nearest first, and the metric of the index that found them (the
    /// index's own: a plan may outlive a change of the tenant's options).
    pub(super) fn search(
        &self,
        partition: usize,
        metrics: &ExecutionPlanMetricsSet,
        stop: &Stop,
    ) -> DfResult<(Vec<Hit>, Metric)> {
        let metric = |name: &'static str| MetricBuilder::new(metrics).counter(name, partition);
        let (candidates_seen, distances, checked, widenings) = (
            metric("candidates"),
            metric("distance_computations"),
            metric("rows_checked"),
            metric("widenings"),
        );
        let Some(index) = self
            .store
            .vector_index_until(&|| stop.is_set())
            .map_err(external)?
        else {
            return Ok((vec![], self.metric));
        };
        let depth = index.rescore_depth();
        let mut found = Found {
            rows: Vec::with_capacity(self.k),
            seen: std::collections::HashSet::new(),
            below_min: false,
            wanted: self.k * depth.unwrap_or(1),
            rescore: depth.is_some(),
            rescored: metric("rescored"),
        };
        let wanted = found.wanted;
        let index_metric = index.options().metric;
        index
            .options()
            .check("the query vector", &self.query)
            .map_err(external)?;
        let total = index.len();
        let filtered = self.filter.is_some();
        let candidates = match (&self.candidates.path, self.force) {
            (AccessPath::FullScan, _) => Candidates::All,
            (_, Some(Strategy::PostFilter)) => Candidates::Many,
            // A forced strategy that needs the candidate set gets all of it.
            (path, Some(forced)) if forced != Strategy::Hnsw => {
                match self
                    .store
                    .all_candidates(Table::Resources, path)
                    .map_err(external)?
                {
                    Some(set) => Candidates::Set(set),
                    None => Candidates::All,
                }
            }
            (path, _) => self
                .store
                .candidates(Table::Resources, path, candidate_cap(total))
                .map_err(external)?,
        };
        let strategy = match (self.force, &candidates) {
            (Some(forced), Candidates::Ids { .. } | Candidates::Set(_))
                if forced != Strategy::Hnsw =>
            {
                forced
            }
            _ => choose_strategy(&candidates, filtered, total),
        };
        metric(match strategy {
            Strategy::Hnsw => "strategy_hnsw",
            Strategy::Exact => "strategy_exact",
            Strategy::InGraph => "strategy_in_graph",
            Strategy::Overfetch => "strategy_overfetch",
            Strategy::PostFilter => "strategy_post_filter",
        })
        .add(1);
        // The set is the path's own (not a superset): its vectors may be kept for it.
        let own_set = matches!(
            candidates,
            Candidates::Set(_)
                | Candidates::Ids {
                    superset: false,
                    ..
                }
        );
        // With an exact candidate set, only what the indexes did not decide is checked.
        let (set, check) = match candidates {
            Candidates::Ids {
                ids,
                superset: false,
            } => (
                Some(Arc::new(RowBitmap::from_ids(&ids))),
                self.residual.as_ref(),
            ),
            Candidates::Ids { ids, .. } => (
                Some(Arc::new(RowBitmap::from_ids(&ids))),
                self.filter.as_ref(),
            ),
            Candidates::Set(set) => (Some(set), self.residual.as_ref()),
            Candidates::All | Candidates::Many => (None, self.filter.as_ref()),
        };
        if let Some(set) = &set {
            candidates_seen.add(set.len());
        }
        if strategy == Strategy::Exact {
            let mut scored = match &set {
                Some(set) if own_set => {
                    let (scored, in_memory) = self
                        .store
                        .exact_distances(
                            Table::Resources,
                            &self.candidates.path,
                            set,
                            &index,
                            &self.query,
                        )
                        .map_err(external)?;
                    if in_memory {
                        metric("vectors_in_memory").add(scored.len());
                    }
                    scored
                }
                Some(set) => index
                    .exact_distances(&self.query, &set.ids())
                    .map_err(external)?,
                None => vec![],
            };
            distances.add(scored.len());
            // Usually only the nearest few rows are read: order those first, the rest
            // only when the filter or min_score leaves fewer than k of them.
            let head = (wanted * WIDEN_FACTOR).max(64).min(scored.len());
            let by_distance = |a: &(u64, f32), b: &(u64, f32)| a.1.total_cmp(&b.1);
            if head < scored.len() {
                scored.select_nth_unstable_by(head, by_distance);
            }
            let (near, rest) = scored.split_at_mut(head);
            near.sort_by(by_distance);
            self.collect(near, index_metric, check, &mut found, &checked, stop)?;
            if found.rows.len() < wanted && !found.below_min {
                rest.sort_by(by_distance);
                self.collect(rest, index_metric, check, &mut found, &checked, stop)?;
            }
            return Ok((self.nearest(found), index_metric));
        }
        let bits = set.as_deref();
        let visited = std::sync::atomic::AtomicUsize::new(0);
        let in_set = |id: u64| {
            visited.fetch_add(1, Ordering::Relaxed);
            bits.is_none_or(|b| b.contains(id))
        };
        // Over-fetching starts from the expected share of passing rows.
        let mut fetch = match (strategy, bits) {
            (Strategy::Overfetch, Some(set)) if !set.is_empty() => {
                (wanted as f64 * total as f64 / set.len() as f64 * 1.5).ceil() as usize
            }
            (Strategy::Overfetch | Strategy::PostFilter, _) => wanted * WIDEN_FACTOR,
            _ => wanted,
        }
        .clamp(wanted, total.max(wanted));
        loop {
            // The call's ef, else the tenant's ef_search; never below the rows wanted.
            let ef = self.ef.unwrap_or(index.ef_search()).max(fetch);
            let filter: Option<&(dyn Fn(u64) -> bool + Sync)> = match strategy {
                Strategy::InGraph => Some(&in_set),
                _ => None,
            };
            let hits = index
                .search(&self.query, fetch, Some(ef), filter)
                .map_err(external)?;
            distances.add(hits.len());
            // A graph search that skips rows can come back short of `fetch` while more
            // rows pass: it widens; an unfiltered one that comes back short has seen all.
            let exhausted = fetch >= total || (strategy != Strategy::InGraph && hits.len() < fetch);
            let hits: Vec<(u64, f32)> = match (bits, strategy) {
                (Some(b), Strategy::Overfetch) => {
                    hits.into_iter().filter(|(id, _)| b.contains(*id)).collect()
                }
                _ => hits,
            };
            self.collect(&hits, index_metric, check, &mut found, &checked, stop)?;
            if found.rows.len() >= wanted || found.below_min || exhausted {
                break;
            }
            widenings.add(1);
            fetch = (fetch * WIDEN_FACTOR).min(total);
        }
        metric("graph_filter_checks").add(visited.into_inner());
        Ok((self.nearest(found), index_metric))
    }

    /// The k nearest rows found. A wider search can find a nearer row than an earlier
    /// round did, and rescored rows come a part at a time: they are sorted here.
    fn nearest(&self, found: Found) -> Vec<Hit> {
        let mut rows = found.rows;
        rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        rows.truncate(self.k);
        rows
    }

    pub(super) fn run(
        &self,
        partition: usize,
        schema: &SchemaRef,
        metrics: &ExecutionPlanMetricsSet,
        stop: &Stop,
    ) -> DfResult<RecordBatch> {
        let (found, metric) = self.search(partition, metrics, stop)?;
        let table_columns = table_schema(Table::Resources).fields().len();
        let distances: Vec<f32> = found.iter().map(|(_, d, _)| *d).collect();
        let row_values: Vec<Row> = found.into_iter().map(|(_, _, r)| r).collect();
        let table_projection: Vec<usize> = self
            .projection
            .iter()
            .copied()
            .filter(|c| *c < table_columns)
            .collect();
        let base =
            rows_to_batch(Table::Resources, &row_values, &table_projection).map_err(external)?;
        let mut columns = Vec::with_capacity(self.projection.len());
        let mut base_pos = 0;
        for c in &self.projection {
            if *c < table_columns {
                columns.push(Arc::clone(base.column(base_pos)));
                base_pos += 1;
            } else if *c == table_columns {
                columns.push(Arc::new(Float32Array::from_iter_values(
                    distances.iter().map(|d| metric.score(*d)),
                )) as _);
            } else {
                columns.push(Arc::new(Float32Array::from(distances.clone())) as _);
            }
        }
        let options = datafusion::arrow::array::RecordBatchOptions::new()
            .with_row_count(Some(row_values.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(schema),
            columns,
            &options,
        )?)
    }
}

impl Leaf for VectorSearch {
    const NAME: &'static str = "VectorSearchExec";
    const EMISSION: EmissionType = EmissionType::Final;

    fn describe(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "table=resources, metric={}, k={}",
            self.metric.name(),
            self.k
        )?;
        if let Some(ef) = self.ef {
            write!(f, ", ef={ef}")?;
        }
        if let Some(m) = self.min_score {
            write!(f, ", min_score={m}")?;
        }
        match (&self.candidates.path, self.force) {
            (AccessPath::FullScan, _) if self.filter.is_none() => {
                write!(f, ", strategy={}", Strategy::Hnsw.name())?
            }
            (AccessPath::FullScan, _) => write!(f, ", strategy={}", Strategy::PostFilter.name())?,
            (_, Some(forced)) => write!(
                f,
                ", candidates={}, strategy={} (forced)",
                self.candidates,
                forced.name()
            )?,
            (_, None) => write!(
                f,
                ", candidates={}, strategy=by candidate count m (exact if m <= max({EXACT_MAX_CANDIDATES}, sqrt({CANDIDATE_CAP_SCALE} n)), else {} with the set in memory, {} without)",
                self.candidates,
                Strategy::Overfetch.name(),
                Strategy::PostFilter.name(),
            )?,
        }
        if let Some(residual) = &self.residual {
            write!(f, ", residual={}", residual.expr)?;
        }
        Ok(())
    }

    fn start(
        &self,
        partition: usize,
        _context: &TaskContext,
        schema: &SchemaRef,
        metrics: &ExecutionPlanMetricsSet,
    ) -> DfResult<Box<dyn Chunks>> {
        let (search, schema, metrics) = (self.clone(), Arc::clone(schema), metrics.clone());
        Ok(Box::new(Once::new(move |stop: &Stop| {
            search.run(partition, &schema, &metrics, stop)
        })))
    }
}
