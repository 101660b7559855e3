//! Test harness: a real server (`emberdb_server::run`) on `127.0.0.1:0` over a
//! real RocksDB in a temp dir, reached through our real client.

pub mod hostile;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use emberdb_client::{Client, pb};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
    tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server on a fresh temp data dir.
    pub async fn start() -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut s = Self::start_in(tmp.path(), emberdb_server::DEFAULT_MAX_MESSAGE_BYTES).await?;
        s.tmp = Some(tmp);
        Ok(s)
    }

    /// A server on a fresh temp data dir with a 1 MiB message limit.
    pub async fn start_in_small() -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut s = Self::start_in(tmp.path(), 1024 * 1024).await?;
        s.tmp = Some(tmp);
        Ok(s)
    }

    /// A server on an existing data dir (for restarts).
    pub async fn start_in(dir: &Path, max_message_bytes: usize) -> anyhow::Result<Self> {
        let mut config = emberdb_server::ServerConfig::new(dir);
        config.max_message_bytes = max_message_bytes;
        Self::start_config(config).await
    }

    /// A server on a fresh temp data dir, configured by `f` (keys, TLS, limits, ...).
    pub async fn start_with(
        f: impl FnOnce(&mut emberdb_server::ServerConfig),
    ) -> anyhow::Result<Self> {
        let tmp = tempfile::tempdir()?;
        let mut config = emberdb_server::ServerConfig::new(tmp.path());
        f(&mut config);
        let mut s = Self::start_config(config).await?;
        s.tmp = Some(tmp);
        Ok(s)
    }

    async fn start_config(config: emberdb_server::ServerConfig) -> anyhow::Result<Self> {
        let dir = config.data_dir.clone();
        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = grpc.local_addr()?;
        let metrics_addr = metrics.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(emberdb_server::run(
            config,
            grpc,
            Some(metrics),
            async move {
                let _ = rx.await;
            },
        ));
        Ok(TestServer {
            addr,
            metrics_addr,
            data_dir: dir,
            shutdown: Some(tx),
            handle: Some(handle),
            tmp: None,
        })
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        self.client_with(emberdb_client::ConnectOptions::default())
            .await
    }

    /// A client with an API key and/or TLS settings, once the server answers it.
    pub async fn client_with(
        &self,
        opts: emberdb_client::ConnectOptions,
    ) -> anyhow::Result<Client> {
        // The listener is bound before run() starts, so connecting cannot race the bind;
        // the first RPC waits until the engine has opened.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let scheme = if opts.tls_ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        loop {
            match Client::connect_with(format!("{scheme}://{}", self.addr), opts.clone()).await {
                Ok(mut c) => match c.list_collections().await {
                    Ok(_) => return Ok(c),
                    Err(e) if std::time::Instant::now() < deadline => {
                        let _ = e;
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e.into()),
                },
                Err(e) if std::time::Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Graceful stop; returns the temp dir (if owned) so the data survives for a restart.
    pub async fn stop(mut self) -> anyhow::Result<Option<tempfile::TempDir>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await??;
        }
        Ok(self.tmp.take())
    }

    /// Fetches `/metrics`.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics_addr).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Seeded clustered Gaussian vectors: `n` points around `clusters` centres; the
/// label is the cluster index. Every seed is printed.
pub fn clustered(seed: u64, n: usize, dim: usize, clusters: usize) -> (Vec<Vec<f32>>, Vec<String>) {
    println!("clustered data seed={seed} n={n} dim={dim} clusters={clusters}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let centre = Normal::new(0.0f32, 4.0).expect("valid normal");
    let noise = Normal::new(0.0f32, 1.0).expect("valid normal");
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| (0..dim).map(|_| centre.sample(&mut rng)).collect())
        .collect();
    let mut vs = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let c = rng.random_range(0..clusters);
        vs.push(
            centres[c]
                .iter()
                .map(|x| x + noise.sample(&mut rng))
                .collect(),
        );
        labels.push(format!("c{c}"));
    }
    (vs, labels)
}

pub fn points(vectors: &[Vec<f32>], labels: &[String], id_offset: u64) -> Vec<pb::Point> {
    vectors
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(i, (v, l))| pb::Point {
            id: id_offset + i as u64,
            vector: v.clone(),
            label: l.clone(),
            metadata: Default::default(),
            timestamp_ms: 0,
        })
        .collect()
}

/// Brute-force kNN in f64: (id, euclidean distance), ties by lower id.
pub fn brute_force_l2(data: &[(u64, Vec<f32>)], q: &[f32], k: usize) -> Vec<(u64, f64)> {
    let mut all: Vec<(u64, f64)> = data
        .iter()
        .map(|(id, v)| {
            let d: f64 = v
                .iter()
                .zip(q)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                .sum();
            (*id, d.sqrt())
        })
        .collect();
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Upserts in batches of `batch`.
pub async fn upsert_all(
    c: &mut Client,
    col: &str,
    ver: &str,
    pts: Vec<pb::Point>,
    batch: usize,
) -> anyhow::Result<()> {
    for chunk in pts.chunks(batch) {
        c.upsert(col, ver, chunk.to_vec()).await?;
    }
    Ok(())
}

/// Waits until every point of the version is in the graph.
pub async fn wait_ready(c: &mut Client, col: &str, ver: &str) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        let v = c.describe(col, ver).await?;
        if v.state == pb::VersionState::Ready as i32 {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "index not ready: {v:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A random vector with values in [-1, 1).
pub fn random_vector(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
    (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect()
}

/// The `ember` CLI binary, which `cargo test --workspace` builds for the client's own tests
/// next to the test executables' `deps` directory.
pub fn ember_binary() -> anyhow::Result<std::path::PathBuf> {
    std::env::current_exe()?
        .parent()
        .and_then(|deps| deps.parent())
        .map(|release| release.join("ember"))
        .filter(|p| p.exists())
        .ok_or_else(|| anyhow::anyhow!("the ember binary is not built next to this test"))
}
