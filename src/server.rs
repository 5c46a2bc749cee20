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
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetCrossReference,
    CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys, CommandGetPrimaryKeys,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TableExistsOption, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::arrow::array::RecordBatch;
use futures::Stream;
use parking_lot::Mutex;
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::{Credentials, Origin, Sessions};
use crate::error::{Error, Result};
use crate::session::{ClientLimits, Db, Param, PreparedStatement, Tenant};
use crate::storage::Table;

mod metadata;
pub mod metrics;
mod params;
mod replies;
mod run;
mod serve;
mod types;
mod upload;
use params::param_rows;
use replies::{flight_info, one_batch, random_id, schema_info, status, tenant_tables, timed_out};
pub use serve::{ServeOptions, TlsIdentity, serve, serve_with_metrics};
use upload::read_batches;

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
    /// Memory of the bound parameters as uploaded (their Arrow values).
    param_bytes: usize,
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
    metrics: Arc<metrics::Metrics>,
}

type DoGetStream = <RemFlightSql as FlightService>::DoGetStream;

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
        self.metrics
            .received(batches.iter().map(RecordBatch::get_array_memory_size).sum());
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        tracing::info!(parent: &span, table = %command.table, rows, "ingest started");
        let started = std::time::Instant::now();
        let written = tokio::time::timeout(
            self.options.query_timeout,
            tenant
                .insert_batches(table, batches)
                .instrument(span.clone()),
        )
        .await
        .map_err(|_| timed_out(self.options.query_timeout))
        .and_then(|r| {
            r.map_err(|e| {
                tracing::info!(parent: &span, "ingest failed: {e}");
                status(e)
            })
        });
        let code = written.as_ref().err().map(Status::code);
        self.metrics
            .finished(metrics::Kind::Ingest, tenant.id(), started.elapsed(), code);
        let written = written?;
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
            Ok(schema) => schema_info(&self.boundary().schema(&schema))?,
            Err(Error::InvalidArgument(_)) | Err(Error::Query(_)) => vec![],
            Err(e) => return Err(status(e)),
        };
        // The parameters in plain types whatever the results carry: a driver builds its
        // binders from them (JDBC's setString, setTimestamp), and any type is accepted.
        let parameter_schema = match tenant.parameter_schema(&query.query).await {
            Ok(schema) => schema_info(&types::Boundary::default().schema(&schema))?,
            Err(_) => vec![],
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
                    param_bytes: 0,
                    statement,
                },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: dataset_schema.into(),
            parameter_schema: parameter_schema.into(),
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
        self.metrics
            .received(batches.iter().map(RecordBatch::get_array_memory_size).sum());
        // What the values take, not the buffers decoded arrays share with their message.
        let bytes = batches
            .iter()
            .flat_map(|b| b.columns())
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(usize::MAX))
            .fold(0usize, usize::saturating_add);
        let rows = param_rows(&batches).map_err(status)?;
        let key = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        let mut map = self.prepared.lock();
        // Bound parameters stay until their statement closes: a tenant's together are
        // bounded, so that many statements each bound near the upload limit cannot
        // hold the server's memory.
        let held: usize = map
            .iter()
            .filter(|(k, p)| p.tenant == tenant.id() && **k != key)
            .map(|(_, p)| p.param_bytes)
            .sum();
        let max = self.options.max_bound_param_bytes;
        if held.saturating_add(bytes) > max {
            let mib = |b: usize| b as f64 / f64::from(1 << 20);
            return Err(Status::resource_exhausted(format!(
                "this tenant's other prepared statements hold {:.2} MiB of bound parameters \
                 and these take {:.2} MiB, more than the server's limit of {:.2} MiB together \
                 (--max-bound-params-mib): close some first",
                mib(held),
                mib(bytes),
                mib(max)
            )));
        }
        if let Some(p) = map.get_mut(&key) {
            p.params = rows;
            p.param_bytes = bytes;
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
                let schema = self.boundary().schema(&schema);
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
        self.metrics
            .received(batches.iter().map(RecordBatch::get_array_memory_size).sum());
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
            let table_schema = self.boundary().schema(&table_schema);
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
        let schema = query.into_builder(metadata::sql_info()?).schema();
        flight_info(&schema, ticket, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.caller(&request).await?;
        let builder = query.into_builder(metadata::sql_info()?);
        let schema = builder.schema();
        Ok(one_batch(schema, builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        let schema = query.into_builder().schema();
        self.metadata_info(ticket, schema, request).await
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let mut builder = query.into_builder();
        for kind in metadata::TABLE_TYPES {
            builder.append(kind);
        }
        self.metadata_batch(&request, builder.build()).await
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(ticket, metadata::primary_keys_schema(), request)
            .await
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_batch(&request, metadata::primary_keys(&query))
            .await
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(ticket, metadata::foreign_keys_schema(), request)
            .await
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_batch(&request, metadata::no_foreign_keys())
            .await
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(ticket, metadata::foreign_keys_schema(), request)
            .await
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_batch(&request, metadata::no_foreign_keys())
            .await
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        self.metadata_info(ticket, metadata::foreign_keys_schema(), request)
            .await
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.metadata_batch(&request, metadata::no_foreign_keys())
            .await
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let types = metadata::xdbc_types()?;
        let ticket = query.as_any().encode_to_vec();
        let schema = query.into_builder(types).schema();
        self.metadata_info(ticket, schema, request).await
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let types = metadata::xdbc_types()?;
        self.metadata_batch(&request, query.into_builder(types).build())
            .await
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
