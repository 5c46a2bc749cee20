//! Front end: `remdb serve`, an Arrow Flight SQL server in which every request runs in
//! exactly one tenant's session.
//!
//! A request proves who it is with a bearer token (from `remdb token create`, or handed
//! out by the handshake for a user's password) or with basic auth; the credential names
//! one tenant and nothing in a request can name another: tickets and prepared-statement
//! handles carry the tenant they were made for and are refused under any other. Client
//! statements are planned with [`Tenant::client_stream`]: no DDL, no `COPY`, no `SET`,
//! a memory limit per query, and a timeout. Every log line of a request carries its
//! tenant and query id.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TableExistsOption, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::array::{Array, Float32Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataValue;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{Credentials, Origin, Sessions};
use crate::error::{Error, Result};
use crate::session::{ClientLimits, Db, Param, PreparedStatement, Tenant, count_of};
use crate::storage::Table;

/// Settings of `remdb serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// A query (or update) still running after this long is cancelled.
    pub query_timeout: Duration,
    /// Memory one query's sorts, joins and aggregates may hold.
    pub memory_limit: usize,
    /// Largest gRPC message accepted or sent.
    pub max_message_bytes: usize,
    /// Largest upload (parameters, ingest) in all of its messages, counted as decoded
    /// (a compressed message at its decompressed size).
    pub max_upload_bytes: usize,
    /// Most rows of parameters one upload may bind (an `executemany`, or the values of
    /// a prepared query).
    pub max_param_rows: usize,
    /// After SIGTERM, how long in-flight requests may take before they are cancelled.
    pub shutdown_grace: Duration,
    /// Prepared statements one tenant may hold open at once.
    pub max_prepared_per_tenant: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            query_timeout: Duration::from_secs(300),
            memory_limit: 1 << 30,
            max_message_bytes: 64 << 20,
            max_upload_bytes: 1 << 30,
            max_param_rows: 100_000,
            shutdown_grace: Duration::from_secs(30),
            max_prepared_per_tenant: 1024,
        }
    }
}

/// A statement ticket: the tenant it was made for, and the SQL to run or the id of the
/// result of a write that already ran.
#[derive(Debug, Serialize, Deserialize)]
struct StatementTicket {
    tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sql: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<String>,
}

/// The row count of a write, kept until the client fetches it.
struct WriteResult {
    tenant: String,
    made: Instant,
    batch: RecordBatch,
}

/// How long a prepared statement nobody uses is kept.
const PREPARED_IDLE_LIFETIME: Duration = Duration::from_secs(3600);

/// How long an unfetched write result is kept.
const WRITE_RESULT_LIFETIME: Duration = Duration::from_secs(600);

struct Prepared {
    tenant: String,
    last_used: Instant,
    sql: String,
    /// Rows of bound parameters (none bound: run once without parameters).
    params: Vec<Vec<Param>>,
    /// A query planned once (see `Tenant::client_prepare`); writes, and statements that
    /// did not prepare, run from `sql`.
    statement: Option<Arc<PreparedStatement>>,
}

/// A prepared statement as a handler uses it.
struct PreparedRef {
    sql: String,
    params: Vec<Vec<Param>>,
    statement: Option<Arc<PreparedStatement>>,
}

/// Who sent a request.
struct Identity {
    tenant: String,
    origin: Origin,
    /// The session token it came with, if it came with one.
    session: Option<String>,
}

/// Failed password sign-ins from one peer address after which its sign-ins are refused
/// without a password check, until [`SIGN_IN_WINDOW`] after its first failure.
pub const MAX_FAILED_SIGN_INS: u32 = 10;
pub const SIGN_IN_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose failed sign-ins are counted at most at once.
const MAX_TRACKED_PEERS: usize = 10_000;

/// Failed sign-ins of one peer in the window that started at `since`.
struct SignInFailures {
    count: u32,
    since: Instant,
}

/// The Flight SQL service of one database directory.
pub struct RemFlightSql {
    /// Bounds concurrent password checks (each is an Argon2 hash).
    password_checks: tokio::sync::Semaphore,
    /// Failed password sign-ins by peer address (see [`SignInFailures`]).
    failed_sign_ins: Mutex<HashMap<std::net::IpAddr, SignInFailures>>,
    db: Arc<Db>,
    credentials: Arc<Credentials>,
    sessions: Sessions,
    prepared: Mutex<HashMap<String, Prepared>>,
    results: Mutex<HashMap<String, WriteResult>>,
    options: ServeOptions,
    limits: ClientLimits,
    next_query: AtomicU64,
}

type DoGetStream = <RemFlightSql as FlightService>::DoGetStream;

fn status(e: Error) -> Status {
    match e {
        Error::InvalidArgument(m) => Status::invalid_argument(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::AlreadyExists(m) => Status::already_exists(m),
        Error::ResourcesExhausted(m) => Status::resource_exhausted(m),
        Error::Cancelled(m) => Status::cancelled(m),
        Error::Query(m) => Status::invalid_argument(m),
        // The message may name the server's files: it goes to the log, not the client.
        Error::Storage(m) | Error::Corruption(m) => {
            tracing::error!("internal error: {m}");
            Status::internal("internal error (see the server's log)")
        }
    }
}

fn flight_status(e: FlightError) -> Status {
    match e {
        FlightError::Tonic(s) => *s,
        other => Status::invalid_argument(other.to_string()),
    }
}

static SQL_INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "remdb");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    // A static table of constants: building it cannot fail.
    b.build()
        .unwrap_or_else(|_| SqlInfoDataBuilder::new().build().expect("empty SqlInfo"))
});

impl RemFlightSql {
    pub fn new(db: Arc<Db>, options: ServeOptions) -> RemFlightSql {
        let credentials = Arc::new(Credentials::open(db.storage().path()));
        let limits = ClientLimits {
            memory_bytes: options.memory_limit,
        };
        RemFlightSql {
            password_checks: tokio::sync::Semaphore::new(2),
            failed_sign_ins: Mutex::new(HashMap::new()),
            db,
            credentials,
            sessions: Sessions::default(),
            prepared: Mutex::new(HashMap::new()),
            results: Mutex::new(HashMap::new()),
            options,
            limits,
            next_query: AtomicU64::new(1),
        }
    }

    /// The tenant a basic-auth header (`base64(user:password)`) signs in to.
    async fn check_basic(
        &self,
        encoded: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<(String, Origin), Status> {
        use base64::Engine;
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        // Go clients (ADBC) send the value without '=' padding.
        let engine = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let malformed = || Status::unauthenticated("malformed basic authorization header");
        let bytes = engine.decode(encoded.trim()).map_err(|_| malformed())?;
        let text = String::from_utf8(bytes).map_err(|_| malformed())?;
        let (user, password) = text.split_once(':').ok_or_else(malformed)?;
        let (user, password) = (user.to_string(), password.to_string());
        if let Some(peer) = peer {
            self.refuse_flooding_peer(peer)?;
        }
        // Argon2 takes tens of milliseconds of CPU and 19 MiB: a few at a time, off the
        // async workers.
        let _permit = self
            .password_checks
            .acquire()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        // Again after the wait: sign-ins sent at once were all queued before the first
        // of them failed.
        if let Some(peer) = peer {
            self.refuse_flooding_peer(peer)?;
        }
        let credentials = Arc::clone(&self.credentials);
        let checked = tokio::task::spawn_blocking(move || {
            credentials
                .check_password(&user, &password)
                .map_err(|e| (user, e))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        match checked {
            Ok(signed_in) => {
                if let Some(peer) = peer {
                    self.failed_sign_ins.lock().remove(&peer);
                }
                Ok(signed_in)
            }
            Err((user, e)) => {
                tracing::warn!(user, ?peer, "sign-in refused: {e}");
                if let Some(peer) = peer {
                    self.count_failed_sign_in(peer);
                }
                Err(Status::unauthenticated("wrong user name or password"))
            }
        }
    }

    /// Refuses a password sign-in, without hashing, from a peer that failed
    /// [`MAX_FAILED_SIGN_INS`] times within [`SIGN_IN_WINDOW`]: a flood of wrong
    /// passwords would otherwise queue every other peer's sign-in behind its Argon2 hashes.
    fn refuse_flooding_peer(&self, peer: std::net::IpAddr) -> Result<(), Status> {
        let failures = self.failed_sign_ins.lock();
        match failures.get(&peer) {
            Some(f) if f.count >= MAX_FAILED_SIGN_INS && f.since.elapsed() < SIGN_IN_WINDOW => {
                let wait = SIGN_IN_WINDOW.saturating_sub(f.since.elapsed()).as_secs() + 1;
                Err(Status::resource_exhausted(format!(
                    "too many failed sign-ins from this address: try again in {wait} s"
                )))
            }
            _ => Ok(()),
        }
    }

    fn count_failed_sign_in(&self, peer: std::net::IpAddr) {
        let mut failures = self.failed_sign_ins.lock();
        // Bounded: forget windows that have passed once the map grows large, and track
        // no new address while it stays full (the semaphore still bounds their checks).
        if failures.len() >= MAX_TRACKED_PEERS && !failures.contains_key(&peer) {
            failures.retain(|_, f| f.since.elapsed() < SIGN_IN_WINDOW);
            if failures.len() >= MAX_TRACKED_PEERS {
                return;
            }
        }
        let f = failures.entry(peer).or_insert(SignInFailures {
            count: 0,
            since: Instant::now(),
        });
        if f.since.elapsed() >= SIGN_IN_WINDOW {
            *f = SignInFailures {
                count: 0,
                since: Instant::now(),
            };
        }
        f.count += 1;
    }

    /// Who sends a request, from its `authorization` header: a session token (whose
    /// credential must still exist), a stored token, or, at the handshake only, a user
    /// name and password.
    async fn identify<T>(&self, request: &Request<T>, handshake: bool) -> Result<Identity, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated(
                    "no credentials: sign in with a user name and password or send a bearer token",
                )
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("malformed authorization header"))?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            let token = token.trim();
            if let Some((tenant, origin)) = self.sessions.get(token) {
                if !self.credentials.still_valid(&origin, &tenant) {
                    self.sessions.revoke(token);
                    return Err(Status::unauthenticated(
                        "the credential this connection signed in with was removed or changed",
                    ));
                }
                return Ok(Identity {
                    tenant,
                    origin,
                    session: Some(token.to_string()),
                });
            }
            let (tenant, origin) = self
                .credentials
                .check_token(token)
                .map_err(|_| Status::unauthenticated("unknown, expired or revoked token"))?;
            return Ok(Identity {
                tenant,
                origin,
                session: None,
            });
        }
        if let Some(basic) = header.strip_prefix("Basic ") {
            if !handshake {
                return Err(Status::unauthenticated(
                    "a user name and password are accepted by the handshake only: sign in, then \
                     send the bearer token it returns",
                ));
            }
            let peer = request.remote_addr().map(|a| a.ip());
            let (tenant, origin) = self.check_basic(basic, peer).await?;
            return Ok(Identity {
                tenant,
                origin,
                session: None,
            });
        }
        Err(Status::unauthenticated(
            "unsupported authorization scheme (use Basic at the handshake, or Bearer)",
        ))
    }

    fn session_of(&self, tenant: &str) -> Result<Tenant, Status> {
        self.db.tenant(tenant).map_err(|e| {
            tracing::warn!(tenant, "credential of a missing tenant: {e}");
            Status::unauthenticated("the tenant of this credential does not exist")
        })
    }

    /// The tenant whose session runs this request.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Tenant, Status> {
        let identity = self.identify(request, false).await?;
        self.session_of(&identity.tenant)
    }

    /// The limit of one upload: its decoded bytes, and rows for parameters.
    fn upload_limit(&self, rows: Option<usize>) -> UploadLimit {
        UploadLimit {
            bytes: self.options.max_upload_bytes,
            rows,
        }
    }

    fn query_span(&self, tenant: &Tenant) -> (u64, tracing::Span) {
        let id = self.next_query.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("query", tenant = %tenant.id(), query_id = id);
        (id, span)
    }

    /// Streams a statement's result as Flight data, cancelled at the query timeout.
    async fn stream_statement(
        &self,
        tenant: &Tenant,
        sql: &str,
        prepared: Option<&PreparedStatement>,
        params: Vec<Vec<Param>>,
        span: tracing::Span,
    ) -> Result<Response<DoGetStream>, Status> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + self.options.query_timeout;
        let timeout = self.options.query_timeout;
        tracing::info!(parent: &span, sql = %truncate(sql), "query started");
        if params.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "a query takes one row of parameters, {} were bound (executemany is for writes)",
                params.len()
            )));
        }
        let rows = if params.is_empty() {
            vec![vec![]]
        } else {
            params
        };
        let mut streams = Vec::with_capacity(rows.len());
        for row in &rows {
            let run = async {
                match prepared {
                    Some(p) => tenant.client_execute(p, row, &self.limits).await,
                    None => tenant.client_stream(sql, row, &self.limits).await,
                }
            };
            let stream = tokio::time::timeout_at(deadline, run.instrument(span.clone()))
                .await
                .map_err(|_| timed_out(timeout))?
                .map_err(|e| {
                    tracing::info!(parent: &span, "query failed: {e}");
                    status(e)
                })?;
            streams.push(stream);
        }
        let schema = streams
            .first()
            .map(|s| s.schema())
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let batches = futures::stream::iter(streams).flatten();
        let limited = with_deadline(Box::pin(batches), deadline, timeout, span, started);
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.options.max_message_bytes / 2)
            .build(limited)
            .map_err(flight_status);
        Ok(Response::new(Box::pin(flight)))
    }

    /// Runs an update for each row of parameters and returns the rows it changed.
    async fn run_update(
        &self,
        tenant: &Tenant,
        sql: &str,
        params: Vec<Vec<Param>>,
    ) -> Result<i64, Status> {
        let (_, span) = self.query_span(tenant);
        let started = Instant::now();
        let timeout = self.options.query_timeout;
        let rows = if params.is_empty() {
            vec![vec![]]
        } else {
            params
        };
        let total = rows.len();
        let work = async {
            let mut changed = 0u64;
            for (i, row) in rows.iter().enumerate() {
                let outcome = async {
                    let stream = tenant.client_stream(sql, row, &self.limits).await?;
                    let batches: Vec<RecordBatch> = stream.try_collect().await?;
                    Ok::<_, Error>(count_of(&batches))
                }
                .await;
                match outcome {
                    Ok(n) => changed += n,
                    Err(e) if total > 1 => {
                        return Err(Error::invalid(format!(
                            "parameter row {} of {total} failed ({i} rows before it were applied): {e}",
                            i + 1
                        )));
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(changed)
        };
        tracing::info!(parent: &span, sql = %truncate(sql), rows = total, "update started");
        let changed = tokio::time::timeout(timeout, work.instrument(span.clone()))
            .await
            .map_err(|_| {
                tracing::info!(parent: &span, "update timed out");
                timed_out(timeout)
            })?
            .map_err(|e| {
                tracing::info!(parent: &span, "update failed: {e}");
                status(e)
            })?;
        tracing::info!(
            parent: &span,
            changed,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "update finished"
        );
        Ok(changed as i64)
    }

    /// The FlightInfo of a statement. A query is only planned here and runs when its
    /// ticket is fetched; a write runs here (ADBC clients may never fetch its result),
    /// and its ticket fetches the row count.
    async fn statement_info(
        &self,
        tenant: &Tenant,
        sql: &str,
        params: Vec<Vec<Param>>,
        query_ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let writes = Tenant::writes_data(sql).map_err(status)?;
        if !writes && params.len() > 1 {
            return Err(Status::invalid_argument(format!(
                "a query takes one row of parameters, {} were bound (executemany is for writes)",
                params.len()
            )));
        }
        if writes {
            let changed = self.run_update(tenant, sql, params).await?;
            let schema = Arc::new(Schema::new(vec![Field::new(
                "count",
                DataType::UInt64,
                false,
            )]));
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(UInt64Array::from(vec![changed as u64]))],
            )
            .map_err(|e| Status::internal(e.to_string()))?;
            let id = random_id();
            {
                let mut results = self.results.lock();
                results.retain(|_, r| r.made.elapsed() < WRITE_RESULT_LIFETIME);
                results.insert(
                    id.clone(),
                    WriteResult {
                        tenant: tenant.id().to_string(),
                        made: Instant::now(),
                        batch,
                    },
                );
            }
            let ticket = StatementTicket {
                tenant: tenant.id().to_string(),
                sql: None,
                result: Some(id),
            };
            let handle =
                serde_json::to_vec(&ticket).map_err(|e| Status::internal(e.to_string()))?;
            let ticket = TicketStatementQuery {
                statement_handle: handle.into(),
            };
            let info = flight_info(&schema, ticket.as_any().encode_to_vec(), descriptor)?;
            return Ok(Response::new(info.into_inner().with_total_records(changed)));
        }
        let (_, span) = self.query_span(tenant);
        let first = params.first().cloned().unwrap_or_default();
        let schema = tenant
            .client_schema(sql, &first, &self.limits)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                tracing::info!(parent: &span, sql = %truncate(sql), "planning failed: {e}");
                status(e)
            })?;
        flight_info(&schema, query_ticket, descriptor)
    }

    /// A prepared statement of the caller's tenant.
    fn prepared_of(&self, tenant: &Tenant, handle: &[u8]) -> Result<PreparedRef, Status> {
        let key = String::from_utf8_lossy(handle).to_string();
        let mut map = self.prepared.lock();
        match map.get_mut(&key) {
            Some(p) if p.tenant == tenant.id() => {
                p.last_used = Instant::now();
                Ok(PreparedRef {
                    sql: p.sql.clone(),
                    params: p.params.clone(),
                    statement: p.statement.clone(),
                })
            }
            Some(_) => {
                tracing::warn!(tenant = %tenant.id(), "prepared statement of another tenant refused");
                Err(Status::permission_denied(
                    "this prepared statement belongs to another tenant",
                ))
            }
            None => Err(Status::not_found(
                "no such prepared statement (closed, or the server restarted)",
            )),
        }
    }
}

/// 128 random bits, hex.
fn random_id() -> String {
    use rand_core::{OsRng, RngCore};
    format!("{:016x}{:016x}", OsRng.next_u64(), OsRng.next_u64())
}

fn timed_out(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "query cancelled: it ran longer than the server's timeout of {:.1} s",
        timeout.as_secs_f64()
    ))
}

fn truncate(sql: &str) -> String {
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

/// Ends a result stream with a deadline-exceeded error once the deadline passes, and
/// logs how the query ended.
fn with_deadline(
    stream: Pin<Box<dyn Stream<Item = datafusion::error::Result<RecordBatch>> + Send>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
    span: tracing::Span,
    started: Instant,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send {
    struct State {
        stream: Pin<Box<dyn Stream<Item = datafusion::error::Result<RecordBatch>> + Send>>,
        rows: usize,
        done: bool,
        span: tracing::Span,
    }
    let state = State {
        stream,
        rows: 0,
        done: false,
        span,
    };
    futures::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        let ms = || started.elapsed().as_secs_f64() * 1e3;
        match tokio::time::timeout_at(deadline, s.stream.next()).await {
            Ok(Some(Ok(batch))) => {
                s.rows += batch.num_rows();
                Some((Ok(batch), s))
            }
            Ok(Some(Err(e))) => {
                tracing::info!(parent: &s.span, ms = ms(), "query failed: {e}");
                s.done = true;
                let e = status(Error::from(e));
                Some((Err(FlightError::Tonic(Box::new(e))), s))
            }
            Ok(None) => {
                tracing::info!(parent: &s.span, rows = s.rows, ms = ms(), "query finished");
                None
            }
            Err(_) => {
                tracing::info!(parent: &s.span, ms = ms(), "query timed out");
                s.done = true;
                Some((Err(FlightError::Tonic(Box::new(timed_out(timeout)))), s))
            }
        }
    })
}

/// Converts a row of an Arrow parameter batch into statement parameters.
fn params_of(batch: &RecordBatch, row: usize) -> Result<Vec<Param>> {
    batch
        .columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            let value = ScalarValue::try_from_array(column, row)?;
            param_of(&value).ok_or_else(|| {
                Error::invalid(format!(
                    "parameter ${} has a type remdb cannot bind: {}",
                    i + 1,
                    column.data_type()
                ))
            })?
        })
        .collect()
}

/// A timestamp in a unit of `per_micro` microseconds, as microseconds.
fn micros(value: i64, per_micro: i64) -> Result<Param> {
    value
        .checked_mul(per_micro)
        .map(Param::Timestamp)
        .ok_or_else(|| Error::invalid(format!("timestamp parameter {value} is out of range")))
}

fn param_of(value: &ScalarValue) -> Option<Result<Param>> {
    if value.is_null() {
        return Some(Ok(Param::Null));
    }
    let float_list = |values: datafusion::arrow::array::ArrayRef| -> Result<Param> {
        let floats = datafusion::arrow::compute::cast(&values, &DataType::Float32)
            .map_err(|e| Error::invalid(format!("vector parameter: {e}")))?;
        let floats = floats
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| Error::invalid("vector parameter is not a list of numbers"))?;
        if floats.null_count() > 0 {
            return Err(Error::invalid("vector parameter contains NULL"));
        }
        Ok(Param::Vector(floats.values().to_vec()))
    };
    Some(Ok(match value {
        ScalarValue::Boolean(Some(b)) => Param::Bool(*b),
        ScalarValue::Int8(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::Int16(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::Int32(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::Int64(Some(v)) => Param::Int(*v),
        ScalarValue::UInt8(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::UInt16(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::UInt32(Some(v)) => Param::Int(i64::from(*v)),
        ScalarValue::UInt64(Some(v)) => match i64::try_from(*v) {
            Ok(v) => Param::Int(v),
            Err(_) => return Some(Err(Error::invalid(format!("parameter {v} is too large")))),
        },
        ScalarValue::Float32(Some(v)) => Param::Float(f64::from(*v)),
        ScalarValue::Float64(Some(v)) => Param::Float(*v),
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Param::Text(s.clone()),
        ScalarValue::List(list) => return Some(float_list(list.value(0))),
        ScalarValue::LargeList(list) => return Some(float_list(list.value(0))),
        ScalarValue::FixedSizeList(list) => return Some(float_list(list.value(0))),
        // An instant, whatever its unit; a zone (or none, read as UTC) does not move it.
        ScalarValue::TimestampSecond(Some(v), _) => return Some(micros(*v, 1_000_000)),
        ScalarValue::TimestampMillisecond(Some(v), _) => return Some(micros(*v, 1_000)),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Param::Timestamp(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Param::Timestamp(v.div_euclid(1_000)),
        ScalarValue::Date32(..) | ScalarValue::Date64(..) => Param::Text(value.to_string()),
        _ => return None,
    }))
}

/// What an upload may hold: its bytes once decoded (all of its messages), and, for
/// parameters, its rows.
#[derive(Clone, Copy)]
struct UploadLimit {
    bytes: usize,
    rows: Option<usize>,
}

/// Reads the batches of a DoPut within `timeout`. Each message is measured from its IPC
/// header before it is decoded (see [`decoded_size`]): an upload whose decoded bytes, or
/// whose rows, pass the limit is refused before it takes the memory.
async fn read_batches(
    stream: PeekableFlightDataStream,
    limit: UploadLimit,
    timeout: Duration,
) -> Result<Vec<RecordBatch>, Status> {
    let (mut bytes, mut rows) = (0usize, 0usize);
    // An update sends a single message without data; the decoder refuses empty headers.
    let data = stream
        .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty()))
        .and_then(move |fd| {
            let checked = decoded_size(&fd).and_then(|(b, r)| {
                bytes = bytes.saturating_add(b);
                rows = rows.saturating_add(r);
                if let Some(max) = limit.rows
                    && rows > max
                {
                    return Err(Status::resource_exhausted(format!(
                        "the upload binds more than the server's limit of {max} rows of \
                         parameters (--max-param-rows)"
                    )));
                }
                if bytes > limit.bytes {
                    return Err(Status::resource_exhausted(format!(
                        "the upload is larger than the server's limit of {:.2} MiB once \
                         decoded (--max-upload-mib)",
                        limit.bytes as f64 / f64::from(1 << 20)
                    )));
                }
                Ok(fd)
            });
            futures::future::ready(checked)
        })
        .map_err(FlightError::from);
    tokio::time::timeout(
        timeout,
        FlightRecordBatchStream::new_from_flight_data(data).try_collect(),
    )
    .await
    .map_err(|_| timed_out(timeout))?
    .map_err(flight_status)
}

/// The bytes a Flight message holds once decoded, and its rows, read from its IPC
/// header and the length prefixes of its body, without decoding it. A compressed buffer
/// counts at the length its prefix declares (what decompressing it allocates), not at
/// its size on the wire; a null column costs no buffer, so rows are counted apart.
fn decoded_size(fd: &arrow_flight::FlightData) -> Result<(usize, usize), Status> {
    use datafusion::arrow::ipc::{MessageHeader, root_as_message};
    let message = root_as_message(&fd.data_header)
        .map_err(|e| Status::invalid_argument(format!("malformed IPC message header: {e}")))?;
    let batch = match message.header_type() {
        MessageHeader::RecordBatch => message.header_as_record_batch(),
        MessageHeader::DictionaryBatch => message
            .header_as_dictionary_batch()
            .and_then(|dictionary| dictionary.data()),
        _ => None,
    };
    let header = fd.data_header.len();
    let Some(batch) = batch else {
        return Ok((header.saturating_add(fd.data_body.len()), 0));
    };
    let rows = usize::try_from(batch.length()).unwrap_or(usize::MAX);
    let compressed = batch.compression().is_some();
    let mut bytes = header;
    for buffer in batch.buffers().into_iter().flatten() {
        let length = usize::try_from(buffer.length()).unwrap_or(usize::MAX);
        let decoded = if compressed && length >= 8 {
            // Each compressed buffer starts with its decompressed length as an i64 (-1:
            // stored uncompressed after the prefix).
            let prefix = usize::try_from(buffer.offset())
                .ok()
                .and_then(|start| fd.data_body.get(start..start.checked_add(8)?))
                .and_then(|p| <[u8; 8]>::try_from(p).ok())
                .map(i64::from_le_bytes);
            match prefix {
                Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                _ => length,
            }
        } else {
            length
        };
        bytes = bytes.saturating_add(decoded);
    }
    // A column of nulls has no buffer, yet converting it (to the table's types, to
    // parameters) takes a value per row: a row counts at least 8 bytes a column.
    let columns = batch.nodes().map_or(0, |nodes| nodes.len());
    let per_row = rows.saturating_mul(columns).saturating_mul(8);
    Ok((bytes.max(per_row), rows))
}

fn param_rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Param>>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            rows.push(params_of(batch, row)?);
        }
    }
    Ok(rows)
}

fn schema_info(schema: &Schema) -> Result<Vec<u8>, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes.to_vec())
}

fn flight_info(
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

fn one_batch(schema: SchemaRef, batch: Result<RecordBatch, FlightError>) -> Response<DoGetStream> {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async { batch }))
        .map_err(flight_status);
    Response::new(Box::pin(stream))
}

/// The tables of a tenant's session, by catalog and schema, with their schemas.
async fn tenant_tables(
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
                    let kind = match table.table_type() {
                        datafusion::datasource::TableType::View => "VIEW",
                        _ => "TABLE",
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

#[tonic::async_trait]
impl FlightSqlService for RemFlightSql {
    type FlightService = RemFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let identity = self.identify(&request, true).await?;
        let tenant = self.session_of(&identity.tenant)?;
        // A live session token is returned as it is (never renewed by itself).
        let token = match identity.session {
            Some(token) => token,
            None => self.sessions.issue(tenant.id(), identity.origin),
        };
        tracing::info!(tenant = %tenant.id(), "signed in");
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let out = futures::stream::iter(vec![Ok(reply)]);
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(out));
        let header = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| Status::internal(e.to_string()))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let tenant = self.caller(&request).await?;
        let handle = serde_json::to_vec(&StatementTicket {
            tenant: tenant.id().to_string(),
            sql: Some(query.query.clone()),
            result: None,
        })
        .map_err(|e| Status::internal(e.to_string()))?;
        let ticket = TicketStatementQuery {
            statement_handle: handle.into(),
        };
        self.statement_info(
            &tenant,
            &query.query,
            vec![],
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
        .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.caller(&request).await?;
        let statement: StatementTicket = serde_json::from_slice(&ticket.statement_handle)
            .map_err(|_| Status::invalid_argument("malformed statement ticket"))?;
        if statement.tenant != tenant.id() {
            tracing::warn!(tenant = %tenant.id(), "ticket of another tenant refused");
            return Err(Status::permission_denied(
                "this ticket was issued to another tenant",
            ));
        }
        match (statement.sql, statement.result) {
            (Some(sql), _) => {
                let (_, span) = self.query_span(&tenant);
                self.stream_statement(&tenant, &sql, None, vec![], span)
                    .await
            }
            (None, Some(id)) => {
                let mut results = self.results.lock();
                match results.get(&id) {
                    Some(r) if r.tenant == tenant.id() => {}
                    _ => {
                        return Err(Status::not_found(
                            "this result was fetched already or has expired",
                        ));
                    }
                }
                let batch = results
                    .remove(&id)
                    .map(|r| r.batch)
                    .ok_or_else(|| Status::not_found("this result was fetched already"))?;
                Ok(one_batch(batch.schema(), Ok(batch)))
            }
            (None, None) => Err(Status::invalid_argument("malformed statement ticket")),
        }
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let tenant = self.caller(&request).await?;
        self.run_update(&tenant, &command.query, vec![]).await
    }

    async fn do_put_statement_ingest(
        &self,
        command: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let tenant = self.caller(&request).await?;
        let (_, span) = self.query_span(&tenant);
        let table = Table::from_name(&command.table).ok_or_else(|| {
            Status::not_found(format!(
                "no table '{}' to ingest into (the tables are resources, entities, edges, moments)",
                command.table
            ))
        })?;
        if command.temporary {
            return Err(Status::invalid_argument(
                "temporary tables are not supported",
            ));
        }
        if command.transaction_id.is_some() {
            return Err(Status::invalid_argument("transactions are not supported"));
        }
        if let Some(options) = &command.table_definition_options {
            match TableExistsOption::try_from(options.if_exists) {
                Ok(TableExistsOption::Append) => {}
                Ok(TableExistsOption::Fail) => {
                    return Err(Status::already_exists(format!(
                        "table {} exists: ingest with mode 'append' (or 'create_append')",
                        command.table
                    )));
                }
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "ingest into {} can only append (replacing a REM table is not supported)",
                        command.table
                    )));
                }
            }
        }
        let batches = read_batches(
            request.into_inner(),
            self.upload_limit(None),
            self.options.query_timeout,
        )
        .await?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        tracing::info!(parent: &span, table = %command.table, rows, "ingest started");
        let written = tokio::time::timeout(
            self.options.query_timeout,
            tenant
                .insert_batches(table, batches)
                .instrument(span.clone()),
        )
        .await
        .map_err(|_| timed_out(self.options.query_timeout))?
        .map_err(|e| {
            tracing::info!(parent: &span, "ingest failed: {e}");
            status(e)
        })?;
        tracing::info!(parent: &span, written, "ingest finished");
        Ok(written as i64)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let tenant = self.caller(&request).await?;
        if query.transaction_id.is_some() {
            return Err(Status::invalid_argument("transactions are not supported"));
        }
        // Queries are planned once here; writes run from their text per parameter row.
        // A query that does not prepare runs from its text too, which reports its error.
        let statement = if Tenant::writes_data(&query.query).unwrap_or(true) {
            None
        } else {
            match tenant.client_prepare(&query.query).await {
                Ok(statement) => Some(Arc::new(statement)),
                Err(e) => {
                    tracing::debug!(tenant = %tenant.id(), "prepare failed, planned per call: {e}");
                    None
                }
            }
        };
        // The result schema when it does not depend on the parameters (a vector parameter
        // of vector_similar must be bound before the statement can be planned).
        let schema = match statement.as_ref().and_then(|s| s.schema()) {
            Some(schema) => Ok(schema),
            None => tenant.client_schema(&query.query, &[], &self.limits).await,
        };
        let dataset_schema = match schema {
            Ok(schema) => schema_info(&schema)?,
            Err(Error::InvalidArgument(_)) | Err(Error::Query(_)) => vec![],
            Err(e) => return Err(status(e)),
        };
        let handle = random_id();
        {
            let mut map = self.prepared.lock();
            // Clients that crash never close theirs.
            map.retain(|_, p| p.last_used.elapsed() < PREPARED_IDLE_LIFETIME);
            let open = map.values().filter(|p| p.tenant == tenant.id()).count();
            if open >= self.options.max_prepared_per_tenant {
                return Err(Status::resource_exhausted(format!(
                    "{open} prepared statements are open for this tenant: close some first"
                )));
            }
            map.insert(
                handle.clone(),
                Prepared {
                    tenant: tenant.id().to_string(),
                    last_used: Instant::now(),
                    sql: query.query,
                    params: vec![],
                    statement,
                },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: dataset_schema.into(),
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let tenant = self.caller(&request).await?;
        self.prepared_of(&tenant, &query.prepared_statement_handle)?;
        let key = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        self.prepared.lock().remove(&key);
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let tenant = self.caller(&request).await?;
        self.prepared_of(&tenant, &query.prepared_statement_handle)?;
        let batches = read_batches(
            request.into_inner(),
            self.upload_limit(Some(self.options.max_param_rows)),
            self.options.query_timeout,
        )
        .await?;
        let rows = param_rows(&batches).map_err(status)?;
        let key = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        if let Some(p) = self.prepared.lock().get_mut(&key) {
            p.params = rows;
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let tenant = self.caller(&request).await?;
        let p = self.prepared_of(&tenant, &cmd.prepared_statement_handle)?;
        let ticket = cmd.as_any().encode_to_vec();
        // A planned query: its schema for these values, without planning it again.
        if let Some(statement) = &p.statement
            && p.params.len() <= 1
        {
            // Values not bound yet (or not fitting): the planning path reports it.
            let first = p.params.first().cloned().unwrap_or_default();
            if let Ok(Some(schema)) = statement.result_schema(&first) {
                return flight_info(&schema, ticket, request.into_inner());
            }
        }
        self.statement_info(&tenant, &p.sql, p.params, ticket, request.into_inner())
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.caller(&request).await?;
        let p = self.prepared_of(&tenant, &query.prepared_statement_handle)?;
        let (_, span) = self.query_span(&tenant);
        self.stream_statement(&tenant, &p.sql, p.statement.as_deref(), p.params, span)
            .await
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let tenant = self.caller(&request).await?;
        let PreparedRef {
            sql, params: bound, ..
        } = self.prepared_of(&tenant, &query.prepared_statement_handle)?;
        let batches = read_batches(
            request.into_inner(),
            self.upload_limit(Some(self.options.max_param_rows)),
            self.options.query_timeout,
        )
        .await?;
        // executemany sends its rows here; a plain execute of a prepared update may
        // have bound them before.
        let rows = param_rows(&batches).map_err(status)?;
        let rows = match (batches.is_empty(), rows.is_empty()) {
            // No parameter message: the parameters bound before, if any.
            (true, _) => bound,
            // An empty batch of parameters: nothing to run.
            (false, true) => return Ok(0),
            (false, false) => rows,
        };
        self.run_update(&tenant, &sql, rows).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let ticket = query.as_any().encode_to_vec();
        let schema = query.into_builder().schema();
        flight_info(&schema, ticket, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.caller(&request).await?;
        let mut builder = query.into_builder();
        let mut names = tenant.context().catalog_names();
        names.sort();
        for name in names {
            builder.append(name);
        }
        let schema = builder.schema();
        Ok(one_batch(schema, builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let ticket = query.as_any().encode_to_vec();
        let schema = query.into_builder().schema();
        flight_info(&schema, ticket, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.caller(&request).await?;
        let mut builder = query.into_builder();
        let ctx = tenant.context();
        let mut catalogs = ctx.catalog_names();
        catalogs.sort();
        for catalog_name in catalogs {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                let mut schemas = catalog.schema_names();
                schemas.sort();
                for schema in schemas {
                    builder.append(&catalog_name, schema);
                }
            }
        }
        let schema = builder.schema();
        Ok(one_batch(schema, builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let ticket = query.as_any().encode_to_vec();
        let schema = query.into_builder().schema();
        flight_info(&schema, ticket, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let tenant = self.caller(&request).await?;
        let mut builder = query.into_builder();
        for (catalog, schema, table, kind, table_schema) in
            tenant_tables(&tenant).await.map_err(status)?
        {
            builder
                .append(&catalog, &schema, &table, &kind, &table_schema)
                .map_err(|e| Status::internal(e.to_string()))?;
        }
        let schema = builder.schema();
        Ok(one_batch(schema, builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request).await?;
        let ticket = query.as_any().encode_to_vec();
        let schema = query.into_builder(&SQL_INFO).schema();
        flight_info(&schema, ticket, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request).await?;
        let builder = query.into_builder(&SQL_INFO);
        let schema = builder.schema();
        Ok(one_batch(schema, builder.build()))
    }

    async fn do_get_fallback(
        &self,
        request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request).await?;
        Err(Status::unimplemented(format!(
            "remdb does not serve {} tickets",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Serves Flight SQL on `listener` until `shutdown` resolves; then stops accepting,
/// lets in-flight requests finish for the grace period, cancels the rest, and saves
/// the loaded vector indexes.
pub async fn serve(
    db: Arc<Db>,
    options: ServeOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let grace = options.shutdown_grace;
    let max_message = options.max_message_bytes;
    let service = RemFlightSql::new(Arc::clone(&db), options);
    let service = FlightServiceServer::new(service)
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests, waiting for in-flight ones");
        let _ = stopping_tx.send(());
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, signal);
    let cancel = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(grace).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = server => served.map_err(|e| Error::Storage(format!("server failed: {e}")))?,
        _ = cancel => tracing::warn!("grace period over: in-flight requests cancelled"),
    }
    for id in db.list_tenants() {
        if let Ok(tenant) = db.tenant(&id)
            && let Err(e) = tenant.save_vectors()
        {
            tracing::warn!(tenant = %id, "cannot save the vector index: {e}");
        }
    }
    tracing::info!("server stopped");
    Ok(())
}
