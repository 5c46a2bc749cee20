//! Front end: how `remdb serve` is set up and run: its options, TLS, the metrics
//! endpoint beside it, and the shutdown (stop accepting, a grace period, then cancel and
//! save the vector indexes).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use super::{RemFlightSql, metrics};
use crate::error::{Error, Result};
use crate::session::Db;

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
    /// Memory the bound parameters of one tenant's open prepared statements may hold
    /// together (as uploaded).
    pub max_bound_param_bytes: usize,
    /// Send results in DataFusion's view types (`Utf8View`, ...) instead of the plain
    /// types every client reads (see `server/types.rs`).
    pub keep_view_types: bool,
    /// Serve TLS with this certificate and key (none: plain TCP).
    pub tls: Option<TlsIdentity>,
}

/// A server's certificate chain and private key, PEM.
#[derive(Clone)]
pub struct TlsIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.write_str("TlsIdentity(..)")
    }
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
            max_bound_param_bytes: 1 << 30,
            keep_view_types: false,
            tls: None,
        }
    }
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
    serve_with_metrics(db, options, listener, None, shutdown).await
}

/// [`serve`], and the metrics and health check (see `server/metrics.rs`) on
/// `metrics_listener`, until the server stops.
pub async fn serve_with_metrics(
    db: Arc<Db>,
    options: ServeOptions,
    listener: tokio::net::TcpListener,
    metrics_listener: Option<tokio::net::TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let grace = options.shutdown_grace;
    let max_message = options.max_message_bytes;
    let mut builder = Server::builder();
    if let Some(tls) = &options.tls {
        let identity = tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem);
        builder = builder
            .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                Error::invalid(format!("the TLS certificate or key is not usable: {e}"))
            })?;
    }
    let metrics = metrics::Metrics::new()?;
    let (metrics_stop, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(listener) = metrics_listener {
        let serving = metrics::serve_metrics(Arc::clone(&metrics), listener, async move {
            let _ = metrics_stopped.await;
        });
        tokio::spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!("{e}");
            }
        });
    }
    let service = RemFlightSql::new(Arc::clone(&db), options, metrics);
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
    let server = builder
        .layer(tower::layer::layer_fn(CatchPanic))
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
    let _ = metrics_stop.send(());
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

/// Turns a panic in a call's handler into the call's `internal` error: the client hears
/// what happened, its connection and the other calls on it go on. (A panic while a
/// result streams is caught where the query is polled, `query::lazy`; one in planning,
/// by the session.)
#[derive(Clone)]
struct CatchPanic<S>(S);

type HttpRequest = http::Request<tonic::body::Body>;

impl<S> tower::Service<HttpRequest> for CatchPanic<S>
where
    S: tower::Service<HttpRequest, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        let call = std::panic::catch_unwind(AssertUnwindSafe(|| self.0.call(request)));
        Box::pin(async move {
            let outcome = match call {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(payload) => Err(payload),
            };
            outcome.unwrap_or_else(|payload| {
                let e = Error::from_panic("the call", &*payload);
                Ok(tonic::Status::internal(e.message()).into_http())
            })
        })
    }
}
