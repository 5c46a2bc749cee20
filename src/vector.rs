//! Vector layer: a usearch HNSW index for one (tenant, table), with atomic persistence.
//!
//! This module is a leaf: it knows usearch and files, not RocksDB or DataFusion. The
//! storage layer owns one [`VectorIndex`] per tenant as a *derived* index: RocksDB holds
//! every vector and a change log, and the index is updated after each commit. The index
//! is saved atomically (temp file, fsync, rename, fsync of the directory) under a name
//! that carries the number of the last change it covers (`<table>.<change>.usearch`); on
//! open the newest file that loads is taken and caught up from the change log, and if no
//! file loads the index is rebuilt from the stored vectors.

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::error::{Error, Result};

/// How vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Cosine distance `1 - cos(a, b)`; score = cosine similarity.
    #[default]
    Cosine,
    /// Inner-product distance `1 - a·b`; score = a·b.
    InnerProduct,
    /// Squared Euclidean distance; score = `1 / (1 + d)`.
    L2,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::InnerProduct => "inner_product",
            Metric::L2 => "l2",
        }
    }

    pub fn parse(s: &str) -> Result<Metric> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" | "cos" => Ok(Metric::Cosine),
            "inner_product" | "ip" | "dot" => Ok(Metric::InnerProduct),
            "l2" | "l2sq" | "euclidean" => Ok(Metric::L2),
            other => Err(Error::invalid(format!(
                "unknown metric '{other}' (cosine, inner_product, l2)"
            ))),
        }
    }

    /// The metric of the usearch index: cosine is served as inner product on vectors
    /// normalized as they enter the index (one multiply-add per dimension instead of three).
    fn kind(self) -> MetricKind {
        match self {
            Metric::Cosine => MetricKind::IP,
            Metric::InnerProduct => MetricKind::IP,
            Metric::L2 => MetricKind::L2sq,
        }
    }

    /// The exact distance of two vectors under this metric (what usearch computes).
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine => {
                let [dot, na, nb] = sums(a, b, |x, y| [x * y, x * x, y * y]);
                cosine_distance(dot, na, nb)
            }
            Metric::InnerProduct => 1.0 - sums(a, b, |x, y| [x * y])[0],
            Metric::L2 => sums(a, b, |x, y| [(x - y) * (x - y)])[0],
        }
    }

    /// A similarity where larger is closer, for `score` columns and `min_score`.
    pub fn score(self, distance: f32) -> f32 {
        match self {
            Metric::Cosine | Metric::InnerProduct => 1.0 - distance,
            Metric::L2 => 1.0 / (1.0 + distance),
        }
    }
}

/// Cosine distance from a dot product and the two squared norms.
fn cosine_distance(dot: f32, na: f32, nb: f32) -> f32 {
    if na == 0.0 || nb == 0.0 {
        1.0
    } else {
        1.0 - dot / (na.sqrt() * nb.sqrt())
    }
}

/// Sums of `terms(a[i], b[i])` over both vectors, in 8 independent lanes so that the
/// compiler can keep them in SIMD registers (one running sum cannot be vectorized
/// without reordering float additions).
fn sums<const N: usize>(a: &[f32], b: &[f32], terms: impl Fn(f32, f32) -> [f32; N]) -> [f32; N] {
    const LANES: usize = 8;
    let mut acc = [[0f32; LANES]; N];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (xa, xb) in ca.zip(cb) {
        for lane in 0..LANES {
            let t = terms(xa[lane], xb[lane]);
            for (sum, v) in acc.iter_mut().zip(t) {
                sum[lane] += v;
            }
        }
    }
    let mut out = [0f32; N];
    for (o, lanes) in out.iter_mut().zip(&acc) {
        *o = lanes.iter().sum();
    }
    for (x, y) in ra.iter().zip(rb) {
        for (o, v) in out.iter_mut().zip(terms(*x, *y)) {
            *o += v;
        }
    }
    out
}

/// Precision of the vectors kept in the index (RocksDB always keeps the f32 vector as
/// written). With f16 and i8 the index only ranks: the hits a search keeps are scored
/// again, exactly, from the f32 copy ([`VectorOptions::rescore_depth`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    F32,
    /// Half the memory of f32 and faster distances, at the same recall on the benchmark
    /// data (docs/BENCHMARKS.md, W-VEC).
    #[default]
    F16,
    /// A quarter of f32: each vector's direction scaled to -127..=127 (cosine only).
    I8,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            "i8" => Ok(Precision::I8),
            other => Err(Error::invalid(format!(
                "unknown precision '{other}' (f32, f16, i8)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::I8 => "i8",
        }
    }

    /// The rescoring depth when none is declared: i8 ranks coarsely enough that the
    /// nearest rows are often not its first k (docs/BENCHMARKS.md, W-VEC).
    pub fn default_rescore(self) -> usize {
        match self {
            Precision::F32 | Precision::F16 => 1,
            Precision::I8 => 4,
        }
    }

    fn scalar(self) -> ScalarKind {
        match self {
            Precision::F32 => ScalarKind::F32,
            Precision::F16 => ScalarKind::F16,
            Precision::I8 => ScalarKind::I8,
        }
    }
}

/// The largest accepted rescoring depth.
pub const MAX_RESCORE: usize = 64;

/// The most rows one vector search returns (`k` of `vector_similar`, `top_k` of
/// `Tenant::search_similar`): with the rescoring depth, what the index is asked for stays
/// bounded.
pub const MAX_SEARCH_K: usize = 10_000;

/// Index parameters of one (tenant, table). Fixed once the first vector is stored,
/// except `ef_search` and `rescore`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorOptions {
    /// Fixed by the first vector when not declared.
    pub dimensions: Option<usize>,
    pub metric: Metric,
    /// HNSW connectivity (M).
    pub connectivity: usize,
    pub ef_construction: usize,
    /// Default search expansion; a query may ask for more.
    pub ef_search: usize,
    pub precision: Precision,
    /// With f16 or i8: a search takes this many index hits per row it returns (`k *
    /// rescore`), scores them exactly from the stored f32 vectors, and keeps the best k.
    /// `None`: the precision's [`Precision::default_rescore`]. Ignored for f32, whose
    /// index distances are exact.
    #[serde(default)]
    pub rescore: Option<usize>,
}

impl Default for VectorOptions {
    fn default() -> Self {
        VectorOptions {
            dimensions: None,
            metric: Metric::Cosine,
            connectivity: 16,
            ef_construction: 128,
            ef_search: 64,
            precision: Precision::default(),
            rescore: None,
        }
    }
}

/// The largest accepted dimension count.
pub const MAX_DIMENSIONS: usize = 16_384;

impl VectorOptions {
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = self.dimensions
            && (d == 0 || d > MAX_DIMENSIONS)
        {
            return Err(Error::invalid(format!(
                "dimensions must be within 1..={MAX_DIMENSIONS}, got {d}"
            )));
        }
        if !(2..=256).contains(&self.connectivity) {
            return Err(Error::invalid(format!(
                "connectivity must be within 2..=256, got {}",
                self.connectivity
            )));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(Error::invalid(
                "ef_construction and ef_search must be positive",
            ));
        }
        if let Some(r) = self.rescore
            && !(1..=MAX_RESCORE).contains(&r)
        {
            return Err(Error::invalid(format!(
                "rescore must be within 1..={MAX_RESCORE}, got {r}"
            )));
        }
        if self.precision == Precision::I8 && self.metric != Metric::Cosine {
            return Err(Error::invalid(format!(
                "precision i8 keeps only each vector's direction: it needs the cosine metric, not {}",
                self.metric.name()
            )));
        }
        Ok(())
    }

    /// How many index hits per wanted row a search rescores from the f32 vectors; `None`
    /// when the index's distances are exact (f32).
    pub fn rescore_depth(&self) -> Option<usize> {
        match self.precision {
            Precision::F32 => None,
            p => Some(self.rescore.unwrap_or(p.default_rescore())),
        }
    }

    /// Checks a vector against these options (dimensions fixed, finite values);
    /// `subject` names it in errors (`resources.embedding`, `the query vector`).
    pub fn check(&self, subject: &str, vector: &[f32]) -> Result<()> {
        if let Some(d) = self.dimensions
            && vector.len() != d
        {
            return Err(Error::invalid(format!(
                "{subject} has {} dimensions, the table's vectors have {d}",
                vector.len()
            )));
        }
        if vector.is_empty() || vector.len() > MAX_DIMENSIONS {
            return Err(Error::invalid(format!(
                "{subject} must have 1..={MAX_DIMENSIONS} dimensions, got {}",
                vector.len()
            )));
        }
        if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
            return Err(Error::invalid(format!(
                "{subject}[{i}] is {} (NaN and infinity are refused)",
                vector[i]
            )));
        }
        if self.metric == Metric::Cosine && vector.iter().all(|x| *x == 0.0) {
            return Err(Error::invalid(format!(
                "{subject} is all zeros, which has no cosine direction"
            )));
        }
        Ok(())
    }
}

/// A batch is indexed on several threads only when each gets at least this many vectors:
/// below that, starting threads costs more than it saves.
const MIN_ADDS_PER_THREAD: usize = 64;

/// Exact scoring is split over threads only when each gets at least this many keys:
/// enough reads that starting a thread is a small part of them.
const MIN_SCORES_PER_THREAD: usize = 1024;

/// Runs `work` over `0..n` cut into one range per core (each at least `min_per_thread`
/// long; one range when `n` is smaller), the first on the calling thread; the results
/// in range order.
fn on_cores<R: Send>(
    n: usize,
    min_per_thread: usize,
    work: impl Fn(std::ops::Range<usize>) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let threads = std::thread::available_parallelism()
        .map(|t| t.get())
        .unwrap_or(1)
        .min(n / min_per_thread.max(1))
        .max(1);
    if threads == 1 {
        return Ok(vec![work(0..n)?]);
    }
    let per_thread = n.div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (per_thread..n)
            .step_by(per_thread)
            .map(|start| scope.spawn(move || work(start..(start + per_thread).min(n))))
            .collect();
        let mut out = vec![work(0..per_thread)?];
        for worker in workers {
            out.push(
                worker
                    .join()
                    .map_err(|_| Error::Storage("vector worker thread panicked".into()))??,
            );
        }
        Ok(out)
    })
}

fn usearch_err(e: impl std::fmt::Display) -> Error {
    Error::Storage(format!("vector index: {e}"))
}

/// The vectors of a set of keys copied out of the index into one block, with their
/// squared norms: scoring the candidates of a hot filter again reads memory in order
/// instead of making one random read of the index per key (several times faster per
/// vector; figures in docs/BENCHMARKS.md, W-HYB). Distances equal
/// [`VectorIndex::exact_distances`]'.
#[derive(Debug)]
pub struct SetVectors {
    keys: Vec<u64>,
    data: Vec<f32>,
    norms: Vec<f32>,
    dimensions: usize,
    metric: Metric,
}

impl SetVectors {
    /// How many vectors the block holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Heap bytes held.
    pub fn bytes(&self) -> usize {
        self.data.len() * 4 + self.keys.len() * 8 + self.norms.len() * 4
    }

    /// The distance from `query` to every vector of the block, in key order, on as many
    /// threads as there are cores when the block is large.
    pub fn distances(&self, query: &[f32]) -> Result<Vec<(u64, f32)>> {
        let parts = on_cores(self.keys.len(), MIN_SCORES_PER_THREAD, |rows| {
            Ok(self.score(query, rows))
        })?;
        Ok(parts.concat())
    }

    fn score(&self, query: &[f32], rows: std::ops::Range<usize>) -> Vec<(u64, f32)> {
        let [query_norm] = sums(query, query, |x, _| [x * x]);
        rows.map(|i| {
            let v = &self.data[i * self.dimensions..(i + 1) * self.dimensions];
            let d = match self.metric {
                Metric::Cosine => {
                    let [dot] = sums(query, v, |x, y| [x * y]);
                    cosine_distance(dot, query_norm, self.norms[i])
                }
                _ => self.metric.distance(query, v),
            };
            (self.keys[i], d)
        })
        .collect()
    }
}

/// Searches and adds that run in one index at once: one per core. usearch keeps a
/// context (a visited set, a cast buffer) for each thread it was reserved for and fails
/// a call that finds none free ("Reserve capacity ahead of searches!"); with queries on
/// threads of their own, three clients searching one tenant on two cores were enough.
/// The index is reserved for this many, and a call beyond them waits for a context
/// (the calls are CPU-bound: more at once would not finish sooner).
pub fn concurrent_calls() -> usize {
    static CALLS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CALLS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// A count of free usearch thread contexts (see [`concurrent_calls`]).
struct Contexts {
    free: parking_lot::Mutex<usize>,
    freed: parking_lot::Condvar,
}

impl Contexts {
    fn new() -> Self {
        Contexts {
            free: parking_lot::Mutex::new(concurrent_calls()),
            freed: parking_lot::Condvar::new(),
        }
    }

    fn take(&self) -> ContextHeld<'_> {
        let mut free = self.free.lock();
        while *free == 0 {
            self.freed.wait(&mut free);
        }
        *free -= 1;
        ContextHeld(self)
    }
}

struct ContextHeld<'a>(&'a Contexts);

impl Drop for ContextHeld<'_> {
    fn drop(&mut self) {
        *self.0.free.lock() += 1;
        self.0.freed.notify_one();
    }
}

/// One HNSW index. Searches share a read lock; adds and removes take the write lock.
pub struct VectorIndex {
    index: RwLock<Index>,
    contexts: Contexts,
    options: VectorOptions,
    /// The tenant's ef_search and rescore (0: the precision's default): the options that
    /// can change on a loaded index.
    ef_search: std::sync::atomic::AtomicUsize,
    rescore: std::sync::atomic::AtomicUsize,
    /// Vectors are normalized on the way in (cosine served as inner product). False for
    /// an index file saved with usearch's cosine metric, which is served as it was built.
    normalized: bool,
    dimensions: usize,
}

impl std::fmt::Debug for VectorIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VectorIndex")
            .field("options", &self.options)
            .field("len", &self.len())
            .finish()
    }
}

impl VectorIndex {
    fn native_options(options: &VectorOptions, dimensions: usize) -> IndexOptions {
        IndexOptions {
            dimensions,
            metric: options.metric.kind(),
            quantization: options.precision.scalar(),
            connectivity: options.connectivity,
            expansion_add: options.ef_construction,
            expansion_search: options.ef_search,
            multi: false,
        }
    }

    /// An empty index for vectors of `dimensions`.
    pub fn new(options: VectorOptions, dimensions: usize) -> Result<VectorIndex> {
        let index = Index::new(&Self::native_options(&options, dimensions)).map_err(usearch_err)?;
        index
            .reserve_capacity_and_threads(1024, concurrent_calls())
            .map_err(usearch_err)?;
        Ok(VectorIndex {
            index: RwLock::new(index),
            contexts: Contexts::new(),
            ef_search: std::sync::atomic::AtomicUsize::new(options.ef_search),
            rescore: std::sync::atomic::AtomicUsize::new(options.rescore.unwrap_or(0)),
            normalized: options.metric == Metric::Cosine,
            options,
            dimensions,
        })
    }

    /// The search expansion used when a query names none.
    pub fn ef_search(&self) -> usize {
        self.ef_search.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`VectorOptions::rescore_depth`] of the tenant's current options.
    pub fn rescore_depth(&self) -> Option<usize> {
        let rescore = self.rescore.load(std::sync::atomic::Ordering::Relaxed);
        VectorOptions {
            rescore: (rescore > 0).then_some(rescore),
            ..self.options
        }
        .rescore_depth()
    }

    /// Takes the options that change without a rebuild (ef_search, rescore) in place.
    pub fn set_query_options(&self, options: &VectorOptions) {
        use std::sync::atomic::Ordering::Relaxed;
        self.ef_search.store(options.ef_search, Relaxed);
        self.rescore.store(options.rescore.unwrap_or(0), Relaxed);
    }

    /// `vector` as the index takes it: normalized to unit length when cosine is served as
    /// inner product (a zero vector, refused for cosine by [`VectorOptions::check`], is
    /// left as it is).
    fn prepared<'a>(&self, vector: &'a [f32]) -> std::borrow::Cow<'a, [f32]> {
        if !self.normalized {
            return std::borrow::Cow::Borrowed(vector);
        }
        let [norm] = sums(vector, vector, |x, _| [x * x]);
        if norm <= 0.0 || (norm - 1.0).abs() < 1e-6 {
            return std::borrow::Cow::Borrowed(vector);
        }
        let scale = 1.0 / norm.sqrt();
        std::borrow::Cow::Owned(vector.iter().map(|x| x * scale).collect())
    }

    /// The options the index was built with (`ef_search` as of then: see
    /// [`VectorIndex::ef_search`]).
    pub fn options(&self) -> &VectorOptions {
        &self.options
    }

    pub fn len(&self) -> usize {
        self.index.read().size()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the index holds in memory.
    pub fn memory_usage(&self) -> usize {
        self.index.read().memory_usage()
    }

    /// Adds or replaces the vector of `key`.
    pub fn upsert(&self, key: u64, vector: &[f32]) -> Result<()> {
        self.upsert_many(&[(key, vector)])
    }

    /// Adds or replaces many vectors. Capacity is reserved and replaced keys removed under
    /// the write lock; the adds themselves run under the read lock (usearch adds are
    /// thread-safe), spread over the machine's cores when there are enough of them, so
    /// searches keep running while a large batch is indexed.
    pub fn upsert_many(&self, items: &[(u64, &[f32])]) -> Result<()> {
        if let Some((_, v)) = items.iter().find(|(_, v)| v.len() != self.dimensions) {
            return Err(Error::invalid(format!(
                "vector of {} dimensions for an index of {}",
                v.len(),
                self.dimensions
            )));
        }
        {
            let index = self.index.write();
            for (key, _) in items {
                if index.contains(*key) {
                    index.remove(*key).map_err(usearch_err)?;
                }
            }
            let needed = index.size() + items.len() + 1;
            if needed >= index.capacity() {
                let grown = (index.capacity() * 2).max(needed).max(1024);
                index
                    .reserve_capacity_and_threads(grown, concurrent_calls())
                    .map_err(usearch_err)?;
            }
        }
        let index = self.index.read();
        on_cores(items.len(), MIN_ADDS_PER_THREAD, |range| {
            let _context = self.contexts.take();
            for (key, vector) in &items[range] {
                index
                    .add(*key, &self.prepared(vector))
                    .map_err(usearch_err)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    pub fn remove(&self, key: u64) -> Result<()> {
        let index = self.index.write();
        if index.contains(key) {
            index.remove(key).map_err(usearch_err)?;
        }
        Ok(())
    }

    /// The `k` nearest keys with their distances, nearest first. `ef` raises the search
    /// expansion for this query; `filter` skips keys during graph traversal.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<(u64, f32)>> {
        if query.len() != self.dimensions {
            return Err(Error::invalid(format!(
                "query vector has {} dimensions, the index has {}",
                query.len(),
                self.dimensions
            )));
        }
        let want_ef = ef.unwrap_or(self.ef_search()).max(k);
        let query = &*self.prepared(query);
        {
            let index = self.index.read();
            if index.expansion_search() == want_ef {
                let _context = self.contexts.take();
                return search_with(&index, query, k, filter);
            }
        }
        // A different expansion is an index-wide setting: change it under the write lock.
        let index = self.index.write();
        index.change_expansion_search(want_ef);
        let _context = self.contexts.take();
        search_with(&index, query, k, filter)
    }

    /// The exact distances from `query` to the vectors of `keys` (keys without a vector
    /// are left out), read from the index itself, in the order of `keys`. Above
    /// [`MIN_SCORES_PER_THREAD`] keys per core the keys are split over the cores: the
    /// cost is reading each vector out of a multi-GB index (memory latency, not
    /// arithmetic), which threads overlap.
    pub fn exact_distances(&self, query: &[f32], keys: &[u64]) -> Result<Vec<(u64, f32)>> {
        let index = self.index.read();
        let parts = on_cores(keys.len(), MIN_SCORES_PER_THREAD, |range| {
            self.score(&index, query, &keys[range])
        })?;
        Ok(parts.concat())
    }

    /// The vectors of `keys` (keys without one are left out), copied into one block, on
    /// as many threads as there are cores for many keys (as [`VectorIndex::exact_distances`]).
    pub fn copy_vectors(&self, keys: &[u64]) -> Result<SetVectors> {
        let index = self.index.read();
        let parts = on_cores(keys.len(), MIN_SCORES_PER_THREAD, |range| {
            self.copy_part(&index, &keys[range])
        })?;
        let mut parts = parts.into_iter();
        let mut out = parts
            .next()
            .ok_or_else(|| Error::Storage("no vectors copied".into()))?;
        for part in parts {
            out.keys.extend(part.keys);
            out.data.extend(part.data);
            out.norms.extend(part.norms);
        }
        Ok(out)
    }

    fn copy_part(&self, index: &Index, keys: &[u64]) -> Result<SetVectors> {
        let d = self.dimensions;
        let mut out = SetVectors {
            keys: Vec::with_capacity(keys.len()),
            data: vec![0f32; keys.len() * d],
            norms: Vec::with_capacity(keys.len()),
            dimensions: d,
            metric: self.options.metric,
        };
        let mut at = 0;
        for key in keys {
            let slot = &mut out.data[at * d..(at + 1) * d];
            if index.get(*key, slot).map_err(usearch_err)? == 1 {
                let [norm] = sums(slot, slot, |x, _| [x * x]);
                out.norms.push(norm);
                out.keys.push(*key);
                at += 1;
            }
        }
        out.data.truncate(at * d);
        Ok(out)
    }

    /// [`VectorIndex::exact_distances`] on the calling thread.
    fn score(&self, index: &Index, query: &[f32], keys: &[u64]) -> Result<Vec<(u64, f32)>> {
        let mut buf = vec![0f32; self.dimensions];
        let mut out = Vec::with_capacity(keys.len());
        let metric = self.options.metric;
        // The query's own norm is the same for every key: summed once.
        let [query_norm] = sums(query, query, |x, _| [x * x]);
        for key in keys {
            if index.get(*key, &mut buf).map_err(usearch_err)? == 1 {
                let d = match metric {
                    Metric::Cosine => {
                        let [dot, nb] = sums(query, &buf, |x, y| [x * y, y * y]);
                        cosine_distance(dot, query_norm, nb)
                    }
                    _ => metric.distance(query, &buf),
                };
                out.push((*key, d));
            }
        }
        Ok(out)
    }
}

fn search_with(
    index: &Index,
    query: &[f32],
    k: usize,
    filter: Option<&(dyn Fn(u64) -> bool + Sync)>,
) -> Result<Vec<(u64, f32)>> {
    let matches = match filter {
        None => index.search(query, k),
        Some(f) => index.filtered_search(query, k, f),
    }
    .map_err(usearch_err)?;
    Ok(matches.keys.into_iter().zip(matches.distances).collect())
}

/// Encodes a vector as little-endian f32 bytes (its form in RocksDB).
pub fn encode_vector(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn decode_vector(bytes: &[u8]) -> Result<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return Err(Error::Corruption(format!(
            "vector of {} bytes",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

mod files;
pub use files::save_image;
#[cfg(test)]
use files::saved_files;

#[cfg(test)]
mod tests;
