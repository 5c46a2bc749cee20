//! Front end: what the server answers: errors as gRPC statuses (by kind), FlightInfos,
//! and result streams cut off at the query's deadline.

use std::pin::Pin;
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Response, Status};

use super::DoGetStream;
use crate::error::{Error, Result};
use crate::session::Tenant;

pub(super) fn status(e: Error) -> Status {
    match e {
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::AlreadyExists(m) => Status::already_exists(m),
        Error::ResourcesExhausted(m) => Status::resource_exhausted(m),
        Error::Cancelled(m) => Status::cancelled(m),
        Error::Query(m) => Status::invalid_argument(m),
        Error::Internal(m) => Status::internal(m),
        // The message may name the server's files: it goes to the log, not the client.
        Error::Storage(m) | Error::Corruption(m) => {
            tracing::error!("internal error: {m}");
            Status::internal("internal error (see the server's log)")
        }
    }
}

pub(super) fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => Status::invalid_argument(other.to_string()),
    }
}

/// 128 random bits, hex.
pub(super) fn random_id() -> String {
    use rand_core::{OsRng, RngCore};
    format!("{:016x}{:016x}", OsRng.next_u64(), OsRng.next_u64())
}

pub(super) fn timed_out(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "query cancelled: it ran longer than the server's timeout of {:.1} s",
        timeout.as_secs_f64()
    ))
}

pub(super) fn truncate(sql: &str) -> String {
    const MAX: usize = 300;
    if sql.len() <= MAX {
        return sql.to_string();
    }
    let mut end = MAX;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &sql[..end])
}

/// What a result stream reports when it ends: its log line and its metrics.
pub(super) struct Ending {
    pub metrics: std::sync::Arc<super::metrics::Metrics>,
    pub tenant: String,
    pub span: tracing::Span,
    pub started: Instant,
}

impl Ending {
    fn finished(&self, code: Option<tonic::Code>) {
        self.metrics.finished(
            super::metrics::Kind::Query,
            &self.tenant,
            self.started.elapsed(),
            code,
        );
    }
}

/// Ends a result stream with a deadline-exceeded error once the deadline passes, and
/// logs and counts how the query ended.
pub(super) fn with_deadline(
    stream: Pin<Box<dyn Stream<Item = datafusion::error::Result<RecordBatch>> + Send>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    end: Ending,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send {
    struct State {
        stream: Pin<Box<dyn Stream<Item = datafusion::error::Result<RecordBatch>> + Send>>,
        rows: usize,
        done: bool,
        end: Ending,
    }
    let state = State {
        stream,
        rows: 0,
        done: false,
        end,
    };
    futures::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        let ms = s.end.started.elapsed().as_secs_f64() * 1e3;
        match tokio::time::timeout_at(deadline, s.stream.next()).await {
            Ok(Some(Ok(batch))) => {
                s.rows += batch.num_rows();
                s.end
                    .metrics
                    .sent(batch.num_rows(), batch.get_array_memory_size());
                Some((Ok(batch), s))
            }
            Ok(Some(Err(e))) => {
                tracing::info!(parent: &s.end.span, ms, "query failed: {e}");
                s.done = true;
                let e = status(Error::from(e));
                s.end.finished(Some(e.code()));
                Some((Err(FlightError::Tonic(Box::new(e))), s))
            }
            Ok(None) => {
                tracing::info!(parent: &s.end.span, rows = s.rows, ms, "query finished");
                s.end.finished(None);
                None
            }
            Err(_) => {
                tracing::info!(parent: &s.end.span, ms, "query timed out");
                s.done = true;
                let e = timed_out(timeout);
                s.end.finished(Some(e.code()));
                Some((Err(FlightError::Tonic(Box::new(e))), s))
            }
        }
    })
}

pub(super) fn schema_info(schema: &Schema) -> Result<Vec<u8>, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes.to_vec())
}

pub(super) fn flight_info(
    schema: &Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

pub(super) fn one_batch(
    schema: SchemaRef,
    batch: Result<RecordBatch, FlightError>,
) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async { batch }))
        .map_err(flight_status);
    Response::new(Box::pin(stream))
}

/// The tables of a tenant's session, by catalog and schema, with their schemas.
pub(super) async fn tenant_tables(
    tenant: &Tenant,
) -> Result<Vec<(String, String, String, String, SchemaRef)>> {
    let ctx = tenant.context();
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for name in names {
                if let Some(table) = schema.table(&name).await? {
                    // Named as information_schema.tables names them.
                    let kind = match table.table_type() {
                        datafusion::datasource::TableType::Base => "BASE TABLE",
                        datafusion::datasource::TableType::View => "VIEW",
                        datafusion::datasource::TableType::Temporary => "LOCAL TEMPORARY",
                    };
                    out.push((
                        catalog_name.clone(),
                        schema_name.clone(),
                        name,
                        kind.to_string(),
                        table.schema(),
                    ));
                }
            }
        }
    }
    Ok(out)
}
