//! The server process a benchmark measures: the real `emberdb` binary (next to
//! the bench binary) on a temp data dir and a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use emberdb_client::Client;

pub struct Server {
    pub child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `emberdb` with `extra` arguments and waits until it answers.
    pub async fn start(extra: &[&str]) -> anyhow::Result<(Server, Client)> {
        Self::start_with_key(extra, "").await
    }

    /// As `start`, connecting with an API key (none when empty).
    pub async fn start_with_key(extra: &[&str], key: &str) -> anyhow::Result<(Server, Client)> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let bin = std::env::current_exe()?.with_file_name("emberdb");
        let child = Command::new(bin)
            .args([
                "--data-dir",
                dir.path().join("data").to_str().unwrap_or("."),
            ])
            .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("EMBERDB_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let addr = format!("http://127.0.0.1:{port}");
        let client = loop {
            let opts = emberdb_client::ConnectOptions {
                api_key: (!key.is_empty()).then(|| key.to_string()),
                ..Default::default()
            };
            if let Ok(mut c) = Client::connect_with(addr.clone(), opts).await
                && c.list_collections().await.is_ok()
            {
                break c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Ok((
            Server {
                child,
                addr,
                _dir: dir,
            },
            client,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
