//! Query layer: how the leaf nodes of ours run.
//!
//! A node's work is a [`Chunks`]: a state that does one bounded piece of work per call
//! (read a chunk of rows, probe the index, commit a chunk of changes). [`chunk_stream`]
//! makes it a record-batch stream that calls it only when polled. So `execute()` does no
//! work (DataFusion's contract), and a dropped stream (the query's timeout, a cancelled
//! client) stops between steps; work that cannot be cut into steps (a search, a walk)
//! checks a [`Stop`] and gives up with [`cancelled`].
//!
//! Where a step runs: RocksDB reads, usearch probes and row decoding block, and a long
//! statement must not hold one of the few async workers that every other query needs. A
//! stream polled on a thread of its own ([`on_own_thread`], every statement of the
//! server; or [`polled_here`], a caller that blocks on the query anyway) runs its steps
//! right there. Any other runs its steps in place while they have taken less than
//! [`INLINE_BUDGET`] in all, and each later step on tokio's blocking pool: a hop to the
//! pool costs tens of microseconds (a point query or a prepared vector search would pay
//! it twice, a third of its time), a long statement pays it once per chunk.

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::Array;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::physical_plan::metrics::BaselineMetrics;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

/// What one call of a [`Chunks`] did.
#[derive(Debug)]
pub enum Step {
    /// A batch for the stream.
    Batch(RecordBatch),
    /// A piece of work with nothing to show (rows read that all failed a filter, a
    /// chunk of changes committed): the stream calls again.
    Continue,
    /// The work is done.
    Done,
}

/// A leaf node's work, one bounded step per call. A long step checks `stop` as it goes
/// and ends with [`cancelled`] once it is set.
pub trait Chunks: Send + 'static {
    fn step(&mut self, stop: &Stop) -> DfResult<Step>;

    /// True when the next step would be `Done` without any work (a scan whose limit is
    /// reached): the stream ends without running it.
    fn is_done(&self) -> bool {
        false
    }
}

impl Chunks for Box<dyn Chunks> {
    fn step(&mut self, stop: &Stop) -> DfResult<Step> {
        (**self).step(stop)
    }

    fn is_done(&self) -> bool {
        (**self).is_done()
    }
}

/// Whether the reader of a stream is gone: its stream was dropped, or the client of the
/// thread it is polled on ([`on_own_thread`]) stopped reading.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    stream: Arc<AtomicBool>,
    client: Option<Arc<AtomicBool>>,
}

impl Stop {
    pub fn is_set(&self) -> bool {
        self.stream.load(Ordering::Relaxed)
            || self
                .client
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// The error of work given up because its stream was dropped (no one reads it).
pub fn cancelled() -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::Error::Cancelled(
        "the query was stopped".into(),
    )))
}

/// Sets a flag when dropped (held by whoever waits for the work the flag can stop).
pub(crate) struct SetOnDrop(pub(crate) Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The step time a stream that is not on a thread of its own spends in place before it
/// moves its steps to the blocking pool.
pub const INLINE_BUDGET: std::time::Duration = std::time::Duration::from_millis(2);

thread_local! {
    /// Set while a query is polled on a thread of its own: the flag its client sets
    /// when it stops reading.
    static OWN_THREAD: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `f` (which polls queries to their end on this thread, e.g. `block_on`) with the
/// steps of our nodes run right here rather than on the blocking pool.
pub fn polled_here<T>(f: impl FnOnce() -> T) -> T {
    with_own_thread(Arc::new(AtomicBool::new(false)), f)
}

fn with_own_thread<T>(client: Arc<AtomicBool>, f: impl FnOnce() -> T) -> T {
    let before = OWN_THREAD.with(|t| t.replace(Some(client)));
    let out = f();
    OWN_THREAD.with(|t| *t.borrow_mut() = before);
    out
}

/// A stream of the batches `work` makes, one step per poll (see the module docs for
/// where it runs). `metrics` (when given) records the time spent in `work` and the rows
/// returned.
pub fn chunk_stream<W: Chunks>(
    schema: SchemaRef,
    work: W,
    metrics: Option<BaselineMetrics>,
) -> SendableRecordBatchStream {
    let dropped = SetOnDrop(Arc::new(AtomicBool::new(false)));
    let stream = futures::stream::unfold(Some((work, std::time::Duration::ZERO)), move |state| {
        let metrics = metrics.clone();
        let flag = Arc::clone(&dropped.0);
        async move {
            let (mut work, mut spent) = state?;
            loop {
                if work.is_done() {
                    if let Some(m) = &metrics {
                        m.done();
                    }
                    return None;
                }
                let stop = Stop {
                    stream: Arc::clone(&flag),
                    client: OWN_THREAD.with(|t| t.borrow().clone()),
                };
                let timing = metrics.clone();
                let run = move |mut work: W| {
                    let timer = timing.as_ref().map(|m| m.elapsed_compute().timer());
                    let started = std::time::Instant::now();
                    let step = work.step(&stop);
                    drop(timer);
                    (work, step, started.elapsed())
                };
                let in_place = OWN_THREAD.with(|t| t.borrow().is_some()) || spent < INLINE_BUDGET;
                let (returned, step, took) = if in_place {
                    run(work)
                } else {
                    match tokio::task::spawn_blocking(move || run(work)).await {
                        Ok(done) => done,
                        Err(e) => {
                            let e = DataFusionError::Execution(format!("a query step failed: {e}"));
                            return Some((Err(e), None));
                        }
                    }
                };
                work = returned;
                spent += took;
                match step {
                    Ok(Step::Batch(batch)) => {
                        if let Some(m) = &metrics {
                            m.record_output(batch.num_rows());
                        }
                        return Some((Ok(batch), Some((work, spent))));
                    }
                    // Steps in place yield within tokio's budget, so that a timeout or
                    // another task gets its turn between them.
                    Ok(Step::Continue) if in_place => {
                        tokio::task::consume_budget().await;
                        continue;
                    }
                    Ok(Step::Continue) => continue,
                    Ok(Step::Done) => {
                        if let Some(m) = &metrics {
                            m.done();
                        }
                        return None;
                    }
                    Err(e) => return Some((Err(e), None)),
                }
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, stream))
}

/// `stream`, polled on a thread of its own (from tokio's blocking pool) that hands its
/// batches over through a channel of two. DataFusion's own operators (a filter, a sort,
/// an aggregate) compute a whole batch per poll on whichever thread polls them: a
/// costly expression over a large batch would hold an async worker for seconds, and a
/// server's other clients and its timeouts with it. On a thread of its own the query
/// shares the cores with the others through the OS, a timeout fires on time, and our
/// nodes' steps run on that thread too. Once the returned stream is dropped, the query
/// stops at its next yield (and a long step of ours at its next check of [`Stop`]).
pub fn on_own_thread(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    on_own_thread_charged(stream, None)
}

/// [`on_own_thread`], with every batch the query hands out charged to `pool` (the
/// query's own) from when it is made until its reader asks for the one after it: the
/// batches in the channel and the one being sent count against the query's limit with
/// its sorts and joins, and a query whose answer outgrows the limit fails with
/// ResourcesExhausted instead of holding the memory. A batch counts its own slice of its
/// buffers: slices of one sorted buffer are not each counted whole.
pub fn on_own_thread_charged(
    stream: SendableRecordBatchStream,
    pool: Option<&Arc<dyn MemoryPool>>,
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    // Grown by each batch, then split: the batch's own reservation frees it when dropped.
    let charged = pool.map(|pool| MemoryConsumer::new("result batches").register(pool));
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<(DfResult<RecordBatch>, Option<MemoryReservation>)>(2);
    let runtime = tokio::runtime::Handle::current();
    let gone = SetOnDrop(Arc::new(AtomicBool::new(false)));
    let client = Arc::clone(&gone.0);
    tokio::task::spawn_blocking(move || {
        with_own_thread(client, || {
            let mut stream = stream;
            loop {
                // A dropped receiver stops the query at its next yield (DataFusion's
                // operators yield at least once per batch and within tokio's budget).
                let next = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(async {
                        tokio::select! {
                            biased;
                            () = sender.closed() => None,
                            item = stream.next() => item,
                        }
                    })
                }));
                // A panic below (DataFusion asserts where it should return errors) ends
                // the query with an error: were the thread left to die, the channel
                // would close and the reader would take the rows so far for the whole
                // answer.
                let (next, panicked) = match next {
                    Ok(next) => (next, false),
                    Err(payload) => {
                        let error = crate::error::Error::from_panic("the query", &*payload);
                        (Some(Err(DataFusionError::External(Box::new(error)))), true)
                    }
                };
                let Some(item) = next else { return };
                let mut stop = panicked;
                let (item, charge) = match (item, &charged) {
                    (Ok(batch), Some(charged)) => {
                        let bytes = slice_bytes(&batch);
                        match charged.try_grow(bytes) {
                            Ok(()) => (Ok(batch), Some(charged.split(bytes))),
                            Err(e) => {
                                stop = true;
                                (Err(e), None)
                            }
                        }
                    }
                    (item, _) => (item, None),
                };
                if sender.blocking_send((item, charge)).is_err() || stop {
                    return;
                }
            }
        })
    });
    // The reader holds the charge of the batch it was handed last until it asks again.
    let held: Option<MemoryReservation> = None;
    let batches = futures::stream::unfold(
        (receiver, gone, held),
        |(mut receiver, gone, held)| async move {
            drop(held);
            let (item, charge) = receiver.recv().await?;
            Some((item, (receiver, gone, charge)))
        },
    );
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// The bytes of the values a batch holds: its slice of its buffers, not their capacity.
fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// Work that makes one batch once (a search, a walk): `run` is called on the first
/// poll, with the stop flag.
pub struct Once<F>(Option<F>);

impl<F> Once<F> {
    pub fn new(run: F) -> Self {
        Once(Some(run))
    }
}

impl<F> Chunks for Once<F>
where
    F: FnOnce(&Stop) -> DfResult<RecordBatch> + Send + 'static,
{
    fn step(&mut self, stop: &Stop) -> DfResult<Step> {
        match self.0.take() {
            Some(run) => run(stop).map(Step::Batch),
            None => Ok(Step::Done),
        }
    }

    fn is_done(&self) -> bool {
        self.0.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn batch(n: i32) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int32, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(vec![n]))]).unwrap()
    }

    struct Count {
        steps: Arc<AtomicUsize>,
        until: usize,
    }

    impl Chunks for Count {
        fn step(&mut self, _stop: &Stop) -> DfResult<Step> {
            let n = self.steps.fetch_add(1, Ordering::SeqCst);
            Ok(match n {
                n if n >= self.until => Step::Done,
                n if n % 2 == 0 => Step::Continue,
                n => Step::Batch(batch(n as i32)),
            })
        }
    }

    #[tokio::test]
    async fn nothing_runs_until_polled_and_a_dropped_stream_stops() {
        let steps = Arc::new(AtomicUsize::new(0));
        let work = Count {
            steps: Arc::clone(&steps),
            until: 1_000_000,
        };
        let mut stream = chunk_stream(batch(0).schema(), work, None);
        assert_eq!(steps.load(Ordering::SeqCst), 0, "execute ran work");
        // Step 0 continues, step 1 makes a batch.
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.num_rows(), 1);
        assert_eq!(steps.load(Ordering::SeqCst), 2);
        drop(stream);
        tokio::task::yield_now().await;
        assert_eq!(steps.load(Ordering::SeqCst), 2, "a dropped stream went on");
    }

    #[tokio::test]
    async fn steps_until_done_and_errors_end_the_stream() {
        let steps = Arc::new(AtomicUsize::new(0));
        let work = Count {
            steps: Arc::clone(&steps),
            until: 6,
        };
        let batches: Vec<_> = chunk_stream(batch(0).schema(), work, None).collect().await;
        assert_eq!(batches.len(), 3);
        let failing = Once::new(|_: &Stop| Err(DataFusionError::Execution("no".into())));
        let out: Vec<_> = chunk_stream(batch(0).schema(), failing, None)
            .collect()
            .await;
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
    }

    /// A first step over the in-place budget, then one that runs until its stop is set
    /// (at most 10 s).
    struct Spin {
        ended: Arc<AtomicBool>,
        warmed: bool,
    }

    impl Chunks for Spin {
        fn step(&mut self, stop: &Stop) -> DfResult<Step> {
            if !self.warmed {
                self.warmed = true;
                std::thread::sleep(INLINE_BUDGET + std::time::Duration::from_millis(1));
                return Ok(Step::Continue);
            }
            let started = std::time::Instant::now();
            while !stop.is_set() && started.elapsed() < std::time::Duration::from_secs(10) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            self.ended.store(true, Ordering::SeqCst);
            Err(cancelled())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_step_stops_when_its_reader_goes() {
        for own_thread in [false, true] {
            let ended = Arc::new(AtomicBool::new(false));
            let work = Spin {
                ended: Arc::clone(&ended),
                warmed: false,
            };
            let stream = chunk_stream(batch(0).schema(), work, None);
            let mut stream = if own_thread {
                on_own_thread(stream)
            } else {
                stream
            };
            let wait = std::time::Duration::from_millis(100);
            assert!(tokio::time::timeout(wait, stream.next()).await.is_err());
            assert!(!ended.load(Ordering::SeqCst));
            let started = std::time::Instant::now();
            drop(stream);
            while !ended.load(Ordering::SeqCst) {
                assert!(
                    started.elapsed() < std::time::Duration::from_secs(5),
                    "the step went on (own thread: {own_thread})"
                );
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
    }

    /// Three steps of 3 ms, each noting the thread it ran on.
    struct Slow {
        threads: Arc<parking_lot::Mutex<Vec<std::thread::ThreadId>>>,
    }

    impl Chunks for Slow {
        fn step(&mut self, _stop: &Stop) -> DfResult<Step> {
            let mut threads = self.threads.lock();
            if threads.len() == 3 {
                return Ok(Step::Done);
            }
            threads.push(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_millis(3));
            Ok(Step::Batch(batch(1)))
        }
    }

    #[test]
    fn steps_run_in_place_until_the_budget_then_on_the_pool() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let run = |runtime: &tokio::runtime::Runtime| {
            let threads = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let work = Slow {
                threads: Arc::clone(&threads),
            };
            let out: Vec<_> =
                runtime.block_on(chunk_stream(batch(0).schema(), work, None).collect());
            assert_eq!(out.len(), 3);
            threads.lock().clone()
        };
        let here = std::thread::current().id();
        // Polled to its end here: every step here.
        assert_eq!(polled_here(|| run(&runtime)), [here, here, here]);
        // Else the first step (under the budget) in place, the others on the pool.
        let seen = run(&runtime);
        assert_eq!(seen[0], here);
        assert!(seen[1..].iter().all(|t| *t != here), "{seen:?}");
    }
}
