//! `emberdb`: the EmberDB server binary.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use emberdb_server::{DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, ServerConfig};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// EmberDB: a vector database that tells ML teams where their embedding model fails.
#[derive(Debug, Parser)]
#[command(name = "emberdb", version)]
struct Args {
    /// Directory holding RocksDB and the index files (created if missing).
    #[arg(long, env = "EMBERDB_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "EMBERDB_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: String,
    /// Prometheus `/metrics` listen address ("off" disables it).
    #[arg(long, env = "EMBERDB_METRICS_ADDR", default_value = "127.0.0.1:9464")]
    metrics_addr: String,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Config file (TOML) with evaluation thresholds and owners; see deploy/emberdb.toml.
    #[arg(long, env = "EMBERDB_CONFIG")]
    config: Option<PathBuf>,
    /// Largest gRPC message accepted or sent, in bytes.
    #[arg(long, default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// Seconds open connections get to finish after SIGTERM/ctrl-c before the server
    /// closes them, commits index generations and exits.
    #[arg(long, default_value_t = DEFAULT_DRAIN_TIMEOUT.as_secs_f64())]
    drain_timeout_s: f64,
    /// Serve gRPC over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, env = "EMBERDB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, env = "EMBERDB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS. Needs --tls-cert.
    #[arg(long, env = "EMBERDB_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Serve without API keys on a non-loopback address (refused by default: anyone who can
    /// reach the port could read and drop every collection).
    #[arg(long)]
    insecure_no_auth: bool,
    /// Seconds after a version's last insert, once its graph is committed, before hnsw_rs's own
    /// copy of the graph leaves memory (searches walk EmberDB's view of it; the next insert loads
    /// it back from disk). A negative value keeps it resident.
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    graph_park_after_s: f64,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Restore a snapshot (a `<data-dir>/snapshots/<name>/` directory, or the .tar that
    /// `ember snapshot download` writes) into an empty data directory, offline. Every file is checked against the snapshot's SHA-256 manifest before
    /// anything is written; on any failure DIR is left empty. Start the server on DIR afterwards.
    Restore {
        /// The snapshot directory or archive.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create (missing or empty).
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn read_pem(flag: &str, path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_env("EMBERDB_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,hnsw_rs=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    // hnsw_rs logs through `log`.
    let _ = tracing_log::LogTracer::init();
    if let Some(Cmd::Restore { from, data_dir }) = &args.cmd {
        let restored = if from.is_file() {
            emberdb_storage::backup::restore_archive(from, data_dir)
        } else {
            emberdb_storage::backup::restore_backup(from, data_dir)
        };
        // An expected failure (a damaged snapshot, a non-empty target): one line, exit code 1.
        let m = match restored {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: restore from {}: {e}", from.display());
                std::process::exit(1);
            }
        };
        println!(
            "restored snapshot {} ({} files, {} bytes, {} versions) into {}",
            m.name,
            m.files.len(),
            m.bytes(),
            m.versions.len(),
            data_dir.display()
        );
        return Ok(());
    }

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let grpc = tokio::net::TcpListener::bind(&args.grpc_addr).await?;
            let metrics = if args.metrics_addr == "off" {
                None
            } else {
                Some(tokio::net::TcpListener::bind(&args.metrics_addr).await?)
            };
            let file = match &args.config {
                Some(p) => emberdb_server::ConfigFile::load(p)?,
                None => emberdb_server::ConfigFile::default(),
            };
            let keys = emberdb_server::auth::Keyring::from_config(&file.auth)
                .map_err(|e| anyhow::anyhow!("config: {e}"))?;
            let local = grpc.local_addr()?;
            if !keys.enabled() && !local.ip().is_loopback() && !args.insecure_no_auth {
                anyhow::bail!(
                    "refusing to serve gRPC on {local} without API keys: anyone who can reach it could \
                     read and drop every collection. Add [[auth.keys]] to the --config file \
                     (`ember keygen` makes one), listen on 127.0.0.1, or pass --insecure-no-auth"
                );
            }
            if keys.enabled() {
                tracing::info!("access control on: API keys required");
            } else {
                tracing::warn!(addr = %local, "access control off: no [[auth.keys]] configured");
            }
            let tls = match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(emberdb_server::TlsFiles {
                    cert_pem: read_pem("--tls-cert", cert)?,
                    key_pem: read_pem("--tls-key", key)?,
                    client_ca_pem: args
                        .tls_client_ca
                        .as_deref()
                        .map(|p| read_pem("--tls-client-ca", p))
                        .transpose()?,
                }),
                _ => None,
            };
            let config = ServerConfig {
                data_dir: args.data_dir,
                max_message_bytes: args.max_message_bytes,
                drain_timeout: std::time::Duration::try_from_secs_f64(args.drain_timeout_s)
                    .map_err(|e| anyhow::anyhow!("--drain-timeout-s: {e}"))?,
                eval: file.eval,
                metrics: file.metrics,
                keys: std::sync::Arc::new(keys),
                tls,
                limits: file.limits,
                bundles: file.bundles,
                graph_park_after: if args.graph_park_after_s < 0.0 {
                    None
                } else {
                    Some(
                        std::time::Duration::try_from_secs_f64(args.graph_park_after_s)
                            .map_err(|e| anyhow::anyhow!("--graph-park-after-s: {e}"))?,
                    )
                },
            };
            emberdb_server::run(config, grpc, metrics, shutdown_signal()).await
        })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown signal received; draining");
}
