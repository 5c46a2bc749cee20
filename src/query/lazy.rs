//! Query layer: how the leaf nodes of ours run.
//!
//! A node's work is a [`Chunks`]: a state that does one bounded piece of work per call
//! (read a chunk of rows, probe the index, commit a chunk of changes). [`chunk_stream`]
//! makes it a record-batch stream that calls it only when polled, each call on tokio's
//! blocking pool, since RocksDB reads, usearch probes and row decoding block. So
//! `execute()` does no work (DataFusion's contract), a dropped stream (the query's
//! timeout, a cancelled client) stops between chunks, and a tenant's long statement
//! holds a blocking thread rather than one of the few async workers that every other
//! query needs. Work that cannot be cut into steps (a search, a walk) checks the stream's
//! stop flag, set when the stream is dropped, and gives up with [`cancelled`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
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

/// A leaf node's work, one bounded step per call. `stop` is set once the stream is
/// dropped: a long step may check it and end with [`cancelled`].
pub trait Chunks: Send + 'static {
    fn step(&mut self, stop: &AtomicBool) -> DfResult<Step>;
}

/// The error of work given up because its stream was dropped (no one reads it).
pub fn cancelled() -> DataFusionError {
    DataFusionError::External(Box::new(crate::error::Error::Cancelled(
        "the query was stopped".into(),
    )))
}

/// Sets the stop flag when the stream (which owns it) is dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A stream of the batches `work` makes, one step per poll on the blocking pool.
/// `metrics` (when given) records the time spent in `work` and the rows returned.
pub fn chunk_stream(
    schema: SchemaRef,
    work: impl Chunks,
    metrics: Option<BaselineMetrics>,
) -> SendableRecordBatchStream {
    let stop = StopOnDrop(Arc::new(AtomicBool::new(false)));
    let stream = futures::stream::unfold(Some(work), move |state| {
        let metrics = metrics.clone();
        let flag = Arc::clone(&stop.0);
        async move {
            let mut work = state?;
            loop {
                let timing = metrics.clone();
                let flag = Arc::clone(&flag);
                let joined = tokio::task::spawn_blocking(move || {
                    let timer = timing.as_ref().map(|m| m.elapsed_compute().timer());
                    let step = work.step(&flag);
                    drop(timer);
                    (work, step)
                })
                .await;
                let (returned, step) = match joined {
                    Ok(done) => done,
                    Err(e) => {
                        let e = DataFusionError::Execution(format!("a query step failed: {e}"));
                        return Some((Err(e), None));
                    }
                };
                work = returned;
                match step {
                    Ok(Step::Batch(batch)) => {
                        if let Some(m) = &metrics {
                            m.record_output(batch.num_rows());
                        }
                        return Some((Ok(batch), Some(work)));
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
/// shares the cores with the others through the OS, and a timeout fires on time; once
/// the returned stream is dropped, the query stops at its next yield.
pub fn on_own_thread(stream: SendableRecordBatchStream) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let (sender, receiver) = tokio::sync::mpsc::channel(2);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut stream = stream;
        loop {
            // A dropped receiver stops the query at its next yield (DataFusion's
            // operators yield at least once per batch and within tokio's budget).
            let next = runtime.block_on(async {
                tokio::select! {
                    biased;
                    () = sender.closed() => None,
                    item = stream.next() => item,
                }
            });
            let Some(item) = next else { return };
            if sender.blocking_send(item).is_err() {
                return;
            }
        }
    });
    let batches = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
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
    F: FnOnce(&AtomicBool) -> DfResult<RecordBatch> + Send + 'static,
{
    fn step(&mut self, stop: &AtomicBool) -> DfResult<Step> {
        match self.0.take() {
            Some(run) => run(stop).map(Step::Batch),
            None => Ok(Step::Done),
        }
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
        fn step(&mut self, _stop: &AtomicBool) -> DfResult<Step> {
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
        let failing = Once::new(|_: &AtomicBool| Err(DataFusionError::Execution("no".into())));
        let out: Vec<_> = chunk_stream(batch(0).schema(), failing, None)
            .collect()
            .await;
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
    }
}
