//! EmberDB's gRPC server: the transport, conversions between protobuf and the
//! storage engine's types, and Prometheus metrics.
//!
//! **Architecture invariant:** this is the only crate that sees both the proto
//! types and the storage engine; business logic lives in `emberdb-storage`.

pub mod auth;
pub mod bundle;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod monitors;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use emberdb_analysis::{Analysis, AnalysisConfig, EvalConfig};
use emberdb_storage::{Engine, EngineConfig};
use tokio::net::TcpListener;

/// Default cap on one gRPC message (each direction).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// What `run` needs besides its listeners.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub max_message_bytes: usize,
    /// After the shutdown signal, how long open connections may take to finish
    /// their requests and close before the server stops serving them anyway.
    pub drain_timeout: std::time::Duration,
    /// Evaluation thresholds and owners (the `[eval]` table of the config file).
    pub eval: EvalConfig,
    /// Metrics settings (the `[metrics]` table).
    pub metrics: MetricsConfig,
    /// API keys (the `[auth]` table); empty means access control is off.
    pub keys: Arc<auth::Keyring>,
    /// Serve gRPC over TLS (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub tls: Option<TlsFiles>,
    /// Concurrency and memory limits of evaluations (the `[limits]` table).
    pub limits: LimitsConfig,
    /// The flight recorder's limits (the `[bundles]` table).
    pub bundles: bundle::BundlesConfig,
    /// How long a committed, idle version keeps hnsw_rs's graph in memory (`--graph-park-after-s`);
    /// `None` keeps it resident.
    pub graph_park_after: Option<std::time::Duration>,
}

/// PEM contents of the server's TLS identity and, for mutual TLS, the CA that signs client
/// certificates.
#[derive(Clone)]
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the private key.
        f.debug_struct("TlsFiles")
            .field("mutual", &self.client_ca_pem.is_some())
            .finish()
    }
}

/// MemTotal from /proc/meminfo (None where it cannot be read).
fn total_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The `[limits]` table of the config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Evaluation and operation RPCs running at once; more get RESOURCE_EXHAUSTED. Default: cores.
    pub max_concurrent_evaluations: usize,
    /// Exact leave-one-out evaluations (Margin, Confusion, Actions) whose estimated working memory
    /// exceeds this are refused with FAILED_PRECONDITION. Default: half the machine's memory.
    pub evaluation_memory_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_concurrent_evaluations: std::thread::available_parallelism().map_or(2, |n| n.get()),
            evaluation_memory_bytes: total_memory_bytes().map_or(8 << 30, |m| m / 2),
        }
    }
}

/// The `[metrics]` table of the config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// At most this many (collection, version) pairs are exported as label values;
    /// monitored versions are admitted first.
    pub max_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            max_series: metrics::DEFAULT_MAX_SERIES,
        }
    }
}

impl ServerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            data_dir: data_dir.into(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            eval: EvalConfig::default(),
            metrics: MetricsConfig::default(),
            keys: Arc::new(auth::Keyring::default()),
            tls: None,
            limits: LimitsConfig::default(),
            bundles: bundle::BundlesConfig::default(),
            graph_park_after: EngineConfig::new("").graph_park_after,
        }
    }
}

/// The server's config file (TOML). Every key is optional; see `deploy/emberdb.toml`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConfigFile {
    pub eval: EvalConfig,
    pub metrics: MetricsConfig,
    pub auth: auth::AuthConfig,
    pub limits: LimitsConfig,
    pub bundles: bundle::BundlesConfig,
}

impl ConfigFile {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses the TOML text and validates the `[auth]` table (what `main` does before serving).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: ConfigFile = toml::from_str(text)?;
        auth::Keyring::from_config(&file.auth).map_err(|e| anyhow::anyhow!(e))?;
        Ok(file)
    }
}

/// Default for [`ServerConfig::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens the engine, serves gRPC (and `/metrics` when a listener is given) until
/// `shutdown` resolves, drains requests, then closes the engine: pending index
/// generations are committed and the WAL is synced.
pub async fn run(
    config: ServerConfig,
    grpc: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if config.limits.max_concurrent_evaluations == 0 {
        anyhow::bail!("[limits] max_concurrent_evaluations must be at least 1");
    }
    let mut engine_config = EngineConfig::new(config.data_dir.clone());
    engine_config.graph_park_after = config.graph_park_after;
    let mut analysis_config = AnalysisConfig {
        eval: config.eval.clone(),
        ..AnalysisConfig::default()
    };
    analysis_config.eval.exact_memory_bytes = Some(config.limits.evaluation_memory_bytes);
    let engine = tokio::task::spawn_blocking(move || Engine::open(engine_config)).await??;
    let engine = Arc::new(engine);
    let analysis = Arc::new(Analysis::new(engine.clone(), analysis_config)?);
    let metrics = metrics::Metrics::with_max_series(config.metrics.max_series)?;

    let (stop_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let metrics_task = metrics_listener.map(|l| {
        let m = metrics.clone();
        let a = analysis.clone();
        let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || refresh_gauges(&m, &a));
        let mut rx = stop_tx.subscribe();
        let m = metrics.clone();
        let keys = config.keys.clone();
        tokio::spawn(async move {
            metrics::serve(l, m, keys, refresh, async move {
                let _ = rx.recv().await;
            })
            .await
        })
    });

    let recorder = Arc::new(bundle::FlightRecorder::new(
        &config.data_dir,
        config.bundles.clone(),
        metrics.bundles_written.clone(),
    ));
    let monitor_task = {
        let rx = stop_tx.subscribe();
        tokio::spawn(monitors::run(analysis.clone(), recorder.clone(), rx))
    };

    tracing::info!(addr = %grpc.local_addr()?, "serving gRPC");
    // Graceful drain waits for clients to close their connections; one that never
    // does (idle, or stuck) must not keep the server from committing and exiting.
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = signalled_tx.send(());
    };
    let serve = grpc::serve(
        analysis.clone(),
        grpc,
        metrics,
        grpc::ServeOptions {
            max_message_bytes: config.max_message_bytes,
            keys: config.keys.clone(),
            tls: config.tls.clone(),
            max_concurrent_evaluations: config.limits.max_concurrent_evaluations,
            recorder,
        },
        shutdown,
    );
    tokio::pin!(serve);
    let drain = config.drain_timeout;
    let served = tokio::select! {
        r = &mut serve => r,
        () = async move {
            if signalled_rx.await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(drain).await;
        } => {
            tracing::warn!(
                drain_timeout_s = drain.as_secs_f64(),
                "connections still open after the drain timeout; closing them"
            );
            Ok(())
        }
    };
    let _ = stop_tx.send(());
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let _ = monitor_task.await;
    // The analysis service's pools go before the engine closes.
    drop(analysis);
    tracing::info!("closing storage");
    tokio::task::spawn_blocking(move || engine.close()).await??;
    served
}

/// Updates scrape-time gauges from the engine: monitor results first (so
/// monitored versions win the series cap), then point counts.
fn refresh_gauges(m: &metrics::Metrics, analysis: &Analysis) {
    let engine = analysis.engine();
    // Every gauge is rebuilt from the engine at each scrape, so a dropped version's series vanish.
    m.points.reset();
    // (collection, version) pairs that still exist; pairs missing from it lose their series.
    let mut live = std::collections::HashSet::new();
    let mut complete = true;
    if let Ok(monitors) = analysis.list_monitors("") {
        m.recall_at_k.reset();
        m.precision_at_1.reset();
        m.low_margin_fraction.reset();
        m.drift_score.reset();
        m.index_consistent.reset();
        m.last_run.reset();
        m.last_success.reset();
        m.monitor_runs.reset();
        for mon in monitors {
            let (c, v) = (mon.spec.collection.as_str(), mon.spec.version.as_str());
            live.insert((c.to_string(), v.to_string()));
            if !m.admit(c, v) {
                continue;
            }
            for (outcome, n) in [("ok", mon.runs_ok), ("error", mon.runs_error)] {
                m.monitor_runs.with_label_values(&[c, v, outcome]).inc_by(n);
            }
            if let Some(at) = mon.last_run_ms {
                m.last_run
                    .with_label_values(&[c, v])
                    .set(at as f64 / 1000.0);
            }
            if let Some(at) = mon.last_success_ms {
                m.last_success
                    .with_label_values(&[c, v])
                    .set(at as f64 / 1000.0);
            }
            // A failed last run publishes no SLI: the old values would read as fresh.
            let Some(r) = mon.result.as_ref().filter(|_| mon.last_error.is_empty()) else {
                continue;
            };
            let k = mon.spec.k.to_string();
            m.recall_at_k
                .with_label_values(&[c, v, k.as_str()])
                .set(r.recall_at_k);
            m.precision_at_1
                .with_label_values(&[c, v])
                .set(r.precision_at_1);
            m.low_margin_fraction
                .with_label_values(&[c, v])
                .set(r.low_margin_fraction);
            if let Some(d) = r.drift_score {
                m.drift_score.with_label_values(&[c, v]).set(d);
            }
            m.index_consistent
                .with_label_values(&[c, v])
                .set(i64::from(r.consistent));
            // The gauges name the version as the monitor does (an alias stays an alias).
            m.points.with_label_values(&[c, v]).set(r.points as i64);
        }
    } else {
        complete = false;
    }
    if let Ok(collections) = engine.list_collections() {
        for c in collections {
            for v in c.versions {
                live.insert((c.name.clone(), v.version.clone()));
                if m.admit(&c.name, &v.version) {
                    m.points
                        .with_label_values(&[c.name.as_str(), v.version.as_str()])
                        .set(v.point_count as i64);
                }
            }
        }
    } else {
        complete = false;
    }
    if complete {
        m.forget_missing(&live);
    }
    let s = engine.stats();
    for (reason, counter) in [
        ("corrupt", &s.rebuilds_corrupt),
        ("dead_points", &s.rebuilds_dead),
    ] {
        catch_up(&m.index_rebuilds.with_label_values(&[reason]), counter);
    }
    catch_up(&m.searches_offloaded, &s.searches_offloaded);
    catch_up(&m.graphs_parked, &s.graphs_parked);
    catch_up(&m.graphs_reloaded, &s.graphs_reloaded);
    catch_up(
        &m.evaluations_cancelled,
        &analysis.stats().evaluations_cancelled,
    );
}

/// Brings a Prometheus counter up to the engine's own count (counters only go up).
fn catch_up(counter: &prometheus::IntCounter, engine_count: &std::sync::atomic::AtomicU64) {
    let (want, have) = (engine_count.load(Ordering::Relaxed), counter.get());
    if want > have {
        counter.inc_by(want - have);
    }
}
