//! Front end: what the server counts, served in Prometheus' text format on an address
//! of its own (`--metrics-listen`), beside a health check. Nothing there needs a
//! credential, so it carries no data: counts, latencies and bytes, per tenant only as
//! counts of queries and errors.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::error::{Error, Result};

/// What a request was, as the metrics name it.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Query,
    Update,
    Ingest,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Query => "query",
            Kind::Update => "update",
            Kind::Ingest => "ingest",
        }
    }
}

/// The server's counters (one set per server).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    errors: IntCounterVec,
    seconds: HistogramVec,
    tenant_requests: IntCounterVec,
    tenant_errors: IntCounterVec,
    rows_sent: IntCounter,
    bytes_sent: IntCounter,
    bytes_received: IntCounter,
    sign_ins: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Arc<Metrics>> {
        let registry = Registry::new_custom(Some("remdb".into()), None).map_err(prom)?;
        let counter = |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), labels).map_err(prom)?;
            registry.register(Box::new(c.clone())).map_err(prom)?;
            Ok(c)
        };
        let single = |name: &str, help: &str| -> Result<IntCounter> {
            let c = IntCounter::new(name, help).map_err(prom)?;
            registry.register(Box::new(c.clone())).map_err(prom)?;
            Ok(c)
        };
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "request_seconds",
                "Time from a request's start to its last row or its error",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 120.0,
            ]),
            &["kind"],
        )
        .map_err(prom)?;
        registry.register(Box::new(seconds.clone())).map_err(prom)?;
        Ok(Arc::new(Metrics {
            requests: counter("requests_total", "Requests run, by kind", &["kind"])?,
            errors: counter(
                "errors_total",
                "Requests that failed, by kind and gRPC code",
                &["kind", "code"],
            )?,
            tenant_requests: counter(
                "tenant_requests_total",
                "Requests run, by tenant",
                &["tenant"],
            )?,
            tenant_errors: counter(
                "tenant_errors_total",
                "Requests failed, by tenant",
                &["tenant"],
            )?,
            rows_sent: single("rows_sent_total", "Result rows sent to clients")?,
            bytes_sent: single(
                "bytes_sent_total",
                "Result bytes sent to clients (Arrow memory of the batches)",
            )?,
            bytes_received: single(
                "bytes_received_total",
                "Bytes uploaded by clients (ingest, parameters), decoded",
            )?,
            sign_ins: counter(
                "sign_ins_total",
                "Password sign-ins, by outcome",
                &["outcome"],
            )?,
            seconds,
            registry,
        }))
    }

    /// A request that ended: `code` is its gRPC status when it failed.
    pub(super) fn finished(
        &self,
        kind: Kind,
        tenant: &str,
        took: Duration,
        code: Option<tonic::Code>,
    ) {
        let k = kind.label();
        self.requests.with_label_values(&[k]).inc();
        self.tenant_requests.with_label_values(&[tenant]).inc();
        self.seconds
            .with_label_values(&[k])
            .observe(took.as_secs_f64());
        if let Some(code) = code {
            let code = format!("{code:?}");
            self.errors.with_label_values(&[k, code.as_str()]).inc();
            self.tenant_errors.with_label_values(&[tenant]).inc();
        }
    }

    pub(super) fn sent(&self, rows: usize, bytes: usize) {
        self.rows_sent.inc_by(rows as u64);
        self.bytes_sent.inc_by(bytes as u64);
    }

    pub(super) fn received(&self, bytes: usize) {
        self.bytes_received.inc_by(bytes as u64);
    }

    pub(super) fn sign_in(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "refused" };
        self.sign_ins.with_label_values(&[outcome]).inc();
    }

    /// Everything, in Prometheus' text format.
    pub fn render(&self) -> Result<String> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(prom)?;
        String::from_utf8(out).map_err(|e| Error::Storage(e.to_string()))
    }
}

fn prom(e: prometheus::Error) -> Error {
    Error::Storage(format!("metrics: {e}"))
}

/// Serves `GET /metrics` and `GET /health` on `listener` until `shutdown` resolves.
pub async fn serve_metrics(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    match metrics.render() {
                        Ok(text) => (
                            StatusCode::OK,
                            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                            text,
                        ),
                        Err(e) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            [(header::CONTENT_TYPE, "text/plain")],
                            e.to_string(),
                        ),
                    }
                }
            }),
        )
        .route("/health", get(|| async { "ok\n" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::Storage(format!("the metrics endpoint failed: {e}")))
}
