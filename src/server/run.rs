//! Front end: the work behind the Flight SQL calls: signing in, finding the caller's
//! tenant, running statements and updates under the server's limits, prepared
//! statements and write results kept between calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightDescriptor, FlightInfo};
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::metrics::{Kind, Metrics};
use super::replies::{flight_status, truncate, with_deadline};
use super::upload::UploadLimit;
use super::{
    DoGetStream, Identity, MAX_FAILED_SIGN_INS, MAX_TRACKED_PEERS, PreparedRef, RemFlightSql,
    SIGN_IN_WINDOW, ServeOptions, SignInFailures, StatementTicket, WRITE_RESULT_LIFETIME,
    WriteResult, flight_info, random_id, status, timed_out,
};
use crate::auth::{Credentials, Origin, Sessions};
use crate::error::{Error, Result};
use crate::session::{ClientLimits, Db, Param, PreparedStatement, Tenant, count_of};

impl RemFlightSql {
    pub fn new(db: Arc<Db>, options: ServeOptions, metrics: Arc<Metrics>) -> RemFlightSql {
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
            metrics,
        }
    }

    /// The tenant a basic-auth header (`base64(user:password)`) signs in to.
    pub(super) async fn check_basic(
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
                self.metrics.sign_in(true);
                if let Some(peer) = peer {
                    self.failed_sign_ins.lock().remove(&peer);
                }
                Ok(signed_in)
            }
            Err((user, e)) => {
                self.metrics.sign_in(false);
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
    pub(super) fn refuse_flooding_peer(&self, peer: std::net::IpAddr) -> Result<(), Status> {
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

    pub(super) fn count_failed_sign_in(&self, peer: std::net::IpAddr) {
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
    pub(super) async fn identify<T>(
        &self,
        request: &Request<T>,
        handshake: bool,
    ) -> Result<Identity, Status> {
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

    pub(super) fn session_of(&self, tenant: &str) -> Result<Tenant, Status> {
        self.db.tenant(tenant).map_err(|e| {
            tracing::warn!(tenant, "credential of a missing tenant: {e}");
            Status::unauthenticated("the tenant of this credential does not exist")
        })
    }

    /// The tenant whose session runs this request.
    pub(super) async fn caller<T>(&self, request: &Request<T>) -> Result<Tenant, Status> {
        let identity = self.identify(request, false).await?;
        self.session_of(&identity.tenant)
    }

    /// The limit of one upload: its decoded bytes, and rows for parameters.
    pub(super) fn upload_limit(&self, rows: Option<usize>) -> UploadLimit {
        UploadLimit {
            bytes: self.options.max_upload_bytes,
            rows,
        }
    }

    /// How results cross to clients (view types or plain ones).
    pub(super) fn boundary(&self) -> super::types::Boundary {
        super::types::Boundary {
            keep_views: self.options.keep_view_types,
        }
    }

    pub(super) fn query_span(&self, tenant: &Tenant) -> (u64, tracing::Span) {
        let id = self.next_query.fetch_add(1, Ordering::Relaxed);
        let span = tracing::info_span!("query", tenant = %tenant.id(), query_id = id);
        (id, span)
    }

    /// Streams a statement's result as Flight data, cancelled at the query timeout.
    pub(super) async fn stream_statement(
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
                .map_err(|_| timed_out(timeout))
                .and_then(|r| {
                    r.map_err(|e| {
                        tracing::info!(parent: &span, "query failed: {e}");
                        status(e)
                    })
                })
                .inspect_err(|s| {
                    let took = started.elapsed();
                    self.metrics
                        .finished(Kind::Query, tenant.id(), took, Some(s.code()));
                })?;
            streams.push(stream);
        }
        let boundary = self.boundary();
        let schema = streams
            .first()
            .map(|s| boundary.schema(&s.schema()))
            .unwrap_or_else(|| Arc::new(Schema::empty()));
        let to = Arc::clone(&schema);
        let batches = futures::stream::iter(streams)
            .flatten()
            .map(move |batch| Ok(boundary.batch(batch?, &to)?));
        let end = super::replies::Ending {
            metrics: Arc::clone(&self.metrics),
            tenant: tenant.id().to_string(),
            span,
            started,
        };
        let limited = with_deadline(Box::pin(batches), deadline, timeout, end);
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .with_max_flight_data_size(self.options.max_message_bytes / 2)
            .build(limited)
            .map_err(flight_status);
        Ok(Response::new(Box::pin(flight)))
    }

    /// Runs an update for each row of parameters and returns the rows it changed.
    pub(super) async fn run_update(
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
        // Rows of parameters whose statement committed: a timeout says how many.
        let applied = std::sync::atomic::AtomicUsize::new(0);
        let work = async {
            let mut changed = 0u64;
            for (i, row) in rows.iter().enumerate() {
                // Counted as the batches come: a query sent as an update is not
                // collected whole.
                let outcome = async {
                    let mut stream = tenant.client_stream(sql, row, &self.limits).await?;
                    let mut n = 0;
                    while let Some(batch) = stream.try_next().await? {
                        n += count_of(std::slice::from_ref(&batch));
                    }
                    Ok::<_, Error>(n)
                }
                .await;
                match outcome {
                    Ok(n) => {
                        changed += n;
                        applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
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
                let applied = applied.load(std::sync::atomic::Ordering::Relaxed);
                tracing::info!(parent: &span, applied, "update timed out");
                let status = timed_out(timeout);
                if total > 1 {
                    Status::new(
                        status.code(),
                        format!(
                            "{} ({applied} of {total} rows of parameters had been applied when it fired)",
                            status.message()
                        ),
                    )
                } else {
                    status
                }
            })
            .and_then(|r| {
                r.map_err(|e| {
                    tracing::info!(parent: &span, "update failed: {e}");
                    status(e)
                })
            });
        let code = changed.as_ref().err().map(Status::code);
        self.metrics
            .finished(Kind::Update, tenant.id(), started.elapsed(), code);
        let changed = changed?;
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
    pub(super) async fn statement_info(
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
        let started = Instant::now();
        let schema = tenant
            .client_schema(sql, &first, &self.limits)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                tracing::info!(parent: &span, sql = %truncate(sql), "planning failed: {e}");
                let e = status(e);
                // A query that does not plan ends here: it never reaches a ticket.
                self.metrics
                    .finished(Kind::Query, tenant.id(), started.elapsed(), Some(e.code()));
                e
            })?;
        flight_info(&self.boundary().schema(&schema), query_ticket, descriptor)
    }

    /// A prepared statement of the caller's tenant.
    pub(super) fn prepared_of(
        &self,
        tenant: &Tenant,
        handle: &[u8],
    ) -> Result<PreparedRef, Status> {
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
