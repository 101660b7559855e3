//! Prometheus metrics: a tower layer that counts every gRPC request and records
//! its latency by `{method, code}`, and a small HTTP server for `/metrics` on its
//! own (loopback by default) port.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::net::TcpListener;

/// Every RPC path we serve, sorted; anything else is labelled `other` so user
/// input never becomes a label value.
pub const METHODS: &[&str] = &[
    "/emberdb.v1.Collections/CreateVersion",
    "/emberdb.v1.Collections/DeleteAlias",
    "/emberdb.v1.Collections/DescribeVersion",
    "/emberdb.v1.Collections/DropCollection",
    "/emberdb.v1.Collections/DropVersion",
    "/emberdb.v1.Collections/ListCollections",
    "/emberdb.v1.Collections/SetAlias",
    "/emberdb.v1.Evaluation/Actions",
    "/emberdb.v1.Evaluation/Confusion",
    "/emberdb.v1.Evaluation/Margin",
    "/emberdb.v1.Evaluation/Project",
    "/emberdb.v1.Evaluation/Recall",
    "/emberdb.v1.Operations/CheckConsistency",
    "/emberdb.v1.Operations/CompareVersions",
    "/emberdb.v1.Operations/DeleteMonitor",
    "/emberdb.v1.Operations/DownloadBundle",
    "/emberdb.v1.Operations/Drift",
    "/emberdb.v1.Operations/ExportBundle",
    "/emberdb.v1.Operations/ListBundles",
    "/emberdb.v1.Operations/ListMonitors",
    "/emberdb.v1.Operations/SetMonitor",
    "/emberdb.v1.Points/Delete",
    "/emberdb.v1.Points/Get",
    "/emberdb.v1.Points/Search",
    "/emberdb.v1.Points/SearchBatch",
    "/emberdb.v1.Points/Upsert",
    "/emberdb.v1.Points/UpsertStream",
    "/emberdb.v1.Snapshots/CreateSnapshot",
    "/emberdb.v1.Snapshots/DeleteSnapshot",
    "/emberdb.v1.Snapshots/DownloadSnapshot",
    "/emberdb.v1.Snapshots/ListSnapshots",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
];

/// gRPC status code names, indexed by code.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub fn method_label(path: &str) -> &'static str {
    match METHODS.binary_search(&path) {
        Ok(i) => METHODS[i].rsplit('/').next().unwrap_or("other"),
        Err(_) => "other",
    }
}

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub points: IntGaugeVec,
    pub index_rebuilds: IntCounterVec,
    pub searches_offloaded: IntCounter,
    pub graphs_parked: IntCounter,
    pub graphs_reloaded: IntCounter,
    pub evaluations_cancelled: IntCounter,
    pub bundles_written: IntCounter,
    /// Search latency by collection and the version that answered (aliases resolved).
    pub search_latency: HistogramVec,
    // Monitor results, labelled as the monitor names the version.
    pub recall_at_k: GaugeVec,
    pub precision_at_1: GaugeVec,
    pub low_margin_fraction: GaugeVec,
    pub drift_score: GaugeVec,
    pub index_consistent: IntGaugeVec,
    pub last_run: GaugeVec,
    /// When each monitor last succeeded; `EmberMonitorStale` alerts on it.
    pub last_success: GaugeVec,
    /// Finished monitor runs by outcome (`ok`, `error`).
    pub monitor_runs: IntCounterVec,
    /// Series not exported because the cap was reached.
    pub series_dropped: IntCounter,
    series: SeriesCap,
}

/// Bounds label cardinality: at most `max` (collection, version) pairs are ever
/// exported; later pairs are counted in `emberdb_metrics_series_dropped_total`.
pub struct SeriesCap {
    max: usize,
    /// collection → versions admitted; read without allocating on the search path.
    admitted:
        std::sync::RwLock<std::collections::HashMap<String, std::collections::HashSet<String>>>,
}

impl SeriesCap {
    pub fn new(max: usize) -> Self {
        SeriesCap {
            max,
            admitted: std::sync::RwLock::new(std::collections::HashMap::new()),
        }
    }

    /// Forgets every admitted pair `keep` rejects (dropped versions and collections), freeing
    /// their places; returns the forgotten pairs.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<(String, String)> {
        let Ok(mut m) = self.admitted.write() else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for (c, vs) in m.iter_mut() {
            vs.retain(|v| {
                let k = keep(c, v);
                if !k {
                    gone.push((c.clone(), v.clone()));
                }
                k
            });
        }
        m.retain(|_, vs| !vs.is_empty());
        gone
    }

    /// Whether (collection, version) may be a label pair; admits it when there is room.
    pub fn admit(&self, collection: &str, version: &str) -> bool {
        let known = |m: &std::collections::HashMap<String, std::collections::HashSet<String>>| {
            m.get(collection).is_some_and(|vs| vs.contains(version))
        };
        match self.admitted.read() {
            Ok(m) if known(&m) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
        let Ok(mut m) = self.admitted.write() else {
            return false;
        };
        if known(&m) {
            return true;
        }
        if m.values().map(|vs| vs.len()).sum::<usize>() >= self.max {
            return false;
        }
        m.entry(collection.to_string())
            .or_default()
            .insert(version.to_string());
        true
    }
}

/// Default cap on exported (collection, version) pairs.
pub const DEFAULT_MAX_SERIES: usize = 200;

impl Metrics {
    pub fn new() -> Result<Arc<Metrics>, prometheus::Error> {
        Self::with_max_series(DEFAULT_MAX_SERIES)
    }

    pub fn with_max_series(max_series: usize) -> Result<Arc<Metrics>, prometheus::Error> {
        let registry = Registry::new();
        let cv = ["collection", "version"];
        let gauge =
            |name: &str, help: &str, labels: &[&str]| -> Result<GaugeVec, prometheus::Error> {
                let g = GaugeVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(g.clone()))?;
                Ok(g)
            };
        let recall_at_k = gauge(
            "emberdb_recall_at_k",
            "ANN recall@k against exact search, from the last monitor run",
            &["collection", "version", "k"],
        )?;
        let precision_at_1 = gauge(
            "emberdb_precision_at_1",
            "Share of sampled labelled points whose nearest other point has their label (last monitor run)",
            &cv,
        )?;
        let low_margin_fraction = gauge(
            "emberdb_low_margin_fraction",
            "Share of sampled points whose 1-NN margin is below the threshold (last monitor run)",
            &cv,
        )?;
        let drift_score = gauge(
            "emberdb_drift_score",
            "MMD² of the version against the monitor's baseline window (last monitor run)",
            &cv,
        )?;
        let last_run = gauge(
            "emberdb_eval_last_run_timestamp_seconds",
            "When the monitor last finished a run (successful or not), Unix seconds",
            &cv,
        )?;
        let last_success = gauge(
            "emberdb_monitor_last_success_timestamp_seconds",
            "When the monitor last finished a successful run, Unix seconds",
            &cv,
        )?;
        let monitor_runs = IntCounterVec::new(
            Opts::new(
                "emberdb_monitor_runs_total",
                "Finished monitor runs by outcome (ok, error)",
            ),
            &["collection", "version", "outcome"],
        )?;
        registry.register(Box::new(monitor_runs.clone()))?;
        let index_consistent = IntGaugeVec::new(
            Opts::new(
                "emberdb_index_consistent",
                "1 when the HNSW graph agrees with the stored points (last monitor run)",
            ),
            &cv,
        )?;
        registry.register(Box::new(index_consistent.clone()))?;
        let search_latency = HistogramVec::new(
            HistogramOpts::new(
                "emberdb_search_duration_seconds",
                "Search latency by collection and the version that answered, aliases resolved (successful searches)",
            )
            .buckets(prometheus::exponential_buckets(1e-4, 2.0, 16)?),
            &cv,
        )?;
        registry.register(Box::new(search_latency.clone()))?;
        let series_dropped = IntCounter::new(
            "emberdb_metrics_series_dropped_total",
            "Observations not exported because the (collection, version) series cap was reached",
        )?;
        registry.register(Box::new(series_dropped.clone()))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "emberdb_grpc_requests_total",
                "gRPC requests by method and status code",
            ),
            &["method", "code"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "emberdb_grpc_request_duration_seconds",
                "gRPC request latency",
            )
            .buckets(prometheus::exponential_buckets(1e-4, 2.0, 16)?),
            &["method"],
        )?;
        let points = IntGaugeVec::new(
            Opts::new("emberdb_points", "Live points per collection version"),
            &["collection", "version"],
        )?;
        let index_rebuilds = IntCounterVec::new(
            Opts::new(
                "emberdb_index_rebuilds_total",
                "HNSW graphs rebuilt, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(points.clone()))?;
        let searches_offloaded = IntCounter::new(
            "emberdb_search_offloaded_total",
            "Unfiltered ANN searches that had to scan (no graph yet, or a long unindexed tail) and ran on the blocking pool instead of the request thread",
        )?;
        registry.register(Box::new(index_rebuilds.clone()))?;
        registry.register(Box::new(searches_offloaded.clone()))?;
        let evaluations_cancelled = IntCounter::new(
            "emberdb_evaluations_cancelled_total",
            "Evaluations and operations stopped because their client went away (cancelled or disconnected)",
        )?;
        registry.register(Box::new(evaluations_cancelled.clone()))?;
        let graphs_parked = IntCounter::new(
            "emberdb_index_graph_parks_total",
            "hnsw_rs graphs dropped from memory once committed and idle (searches walk the view; the next insert reloads the graph)",
        )?;
        registry.register(Box::new(graphs_parked.clone()))?;
        let graphs_reloaded = IntCounter::new(
            "emberdb_index_graph_reloads_total",
            "Parked graphs loaded back from their committed generation for new inserts",
        )?;
        registry.register(Box::new(graphs_reloaded.clone()))?;
        let bundles_written = IntCounter::new(
            "emberdb_bundles_written_total",
            "Incident bundles the flight recorder wrote under <data-dir>/bundles/ (monitors with record_bundles whose drift score crossed the threshold)",
        )?;
        registry.register(Box::new(bundles_written.clone()))?;
        Ok(Arc::new(Metrics {
            registry,
            requests,
            latency,
            points,
            index_rebuilds,
            searches_offloaded,
            graphs_parked,
            graphs_reloaded,
            evaluations_cancelled,
            bundles_written,
            search_latency,
            recall_at_k,
            precision_at_1,
            low_margin_fraction,
            drift_score,
            index_consistent,
            last_run,
            last_success,
            monitor_runs,
            series_dropped,
            series: SeriesCap::new(max_series),
        }))
    }

    /// Removes the series of every (collection, version) pair that no longer exists and frees its
    /// place under the cap. Gauges are rebuilt at each scrape; the search histogram is not, so its
    /// vanished pairs are removed here.
    pub fn forget_missing(&self, live: &std::collections::HashSet<(String, String)>) {
        let gone = self
            .series
            .retain(|c, v| live.contains(&(c.to_string(), v.to_string())));
        for (c, v) in gone {
            let _ = self
                .search_latency
                .remove_label_values(&[c.as_str(), v.as_str()]);
        }
    }

    /// Whether (collection, version) may be exported; counts a drop when not.
    pub fn admit(&self, collection: &str, version: &str) -> bool {
        let ok = self.series.admit(collection, version);
        if !ok {
            self.series_dropped.inc();
        }
        ok
    }

    /// Records a successful search's latency.
    pub fn observe_search(&self, collection: &str, version: &str, started: Instant) {
        if self.admit(collection, version) {
            self.search_latency
                .with_label_values(&[collection, version])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn observe(&self, method: &str, code: &str, started: Instant) {
        self.requests.with_label_values(&[method, code]).inc();
        self.latency
            .with_label_values(&[method])
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Tower layer recording request count and latency.
#[derive(Clone)]
pub struct MetricsLayer(pub Arc<Metrics>);

impl<S> tower_layer::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for MetricsService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = method_label(req.uri().path());
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let request_id = request_id(req.headers().get("x-request-id"));
        // One span per request: everything logged while serving it carries the method, the
        // request id (the client's `x-request-id`, else one of ours) and, once a handler has
        // checked access, the collection and the version (or alias) as the request names it.
        let span = tracing::info_span!(
            "request",
            method,
            request_id = %request_id,
            collection = tracing::field::Empty,
            version = tracing::field::Empty,
        );
        let fut = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        Box::pin(tracing::Instrument::instrument(
            async move {
                let mut res = fut.await;
                let code = match &res {
                    // tonic sends handler errors trailers-only, so grpc-status is a header;
                    // a unary response without it completed OK.
                    Ok(r) => r
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<usize>().ok())
                        .and_then(|c| CODES.get(c).copied())
                        .unwrap_or("OK"),
                    Err(_) => "UNKNOWN",
                };
                metrics.observe(method, code, started);
                tracing::debug!(
                    code,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
                    "request finished"
                );
                if let Ok(r) = &mut res
                    && let Ok(v) = http::HeaderValue::from_str(&request_id)
                {
                    r.headers_mut().insert("x-request-id", v);
                }
                res
            },
            span,
        ))
    }
}

/// The client's `x-request-id` when it is a short token of safe characters, else a new one
/// (process-unique: a per-process random prefix and a counter).
fn request_id(given: Option<&http::HeaderValue>) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if let Some(v) = given.and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 64
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return v.to_string();
    }
    let prefix = PREFIX.get_or_init(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        t ^ std::process::id().rotate_left(16)
    });
    format!("{prefix:08x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Serves `GET /metrics` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    keys: Arc<crate::auth::Keyring>,
    refresh: Arc<dyn Fn() + Send + Sync>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            _ = &mut shutdown => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let metrics = metrics.clone();
        let refresh = refresh.clone();
        let keys = keys.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    let refresh = refresh.clone();
                    let allowed = keys.metrics_allowed(
                        req.headers()
                            .get(hyper::header::AUTHORIZATION)
                            .map(|v| v.as_bytes()),
                    );
                    async move {
                        let resp = if req.uri().path() != "/metrics" {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"not found\n")))
                        } else if !allowed {
                            hyper::Response::builder()
                                .status(401)
                                .header("www-authenticate", "Bearer")
                                .body(Full::new(Bytes::from_static(
                                    b"/metrics needs `authorization: Bearer <key>` ([auth] metrics_key_sha256)\n",
                                )))
                        } else {
                            refresh();
                            hyper::Response::builder()
                                .header("content-type", "text/plain; version=0.0.4")
                                .body(Full::new(Bytes::from(metrics.render())))
                        };
                        Ok::<_, Infallible>(resp.unwrap_or_default())
                    }
                },
            );
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_sorted_and_labelled() {
        let mut sorted = METHODS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, METHODS);
        assert_eq!(method_label("/emberdb.v1.Points/Search"), "Search");
        assert_eq!(method_label("/evil/../path"), "other");
    }

    #[test]
    fn series_cap_admits_up_to_max_pairs() {
        let cap = SeriesCap::new(2);
        assert!(cap.admit("a", "v1"));
        assert!(cap.admit("a", "v2"));
        assert!(!cap.admit("b", "v1"), "third pair refused");
        assert!(cap.admit("a", "v1"), "admitted pairs stay admitted");
    }
}
