//! The real `emberdb` binary as a child process, for tests that signal or kill it.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use emberdb_client::Client;

/// A running server; killed and reaped on drop.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Starts `emberdb` on `dir`, gRPC on loopback `port`, metrics off, plus `extra` flags.
pub fn spawn(dir: &std::path::Path, port: u16, extra: &[&str]) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_emberdb"))
        .args(["--data-dir", dir.to_str().expect("utf8 path")])
        .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", "off"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn emberdb");
    Server(child)
}

/// [`spawn`] with stdout (the server's log) and stderr (panic messages) appended to `log`.
pub fn spawn_logged(
    dir: &std::path::Path,
    port: u16,
    extra: &[&str],
    log: &std::path::Path,
) -> Server {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open server log");
    let child = Command::new(env!("CARGO_BIN_EXE_emberdb"))
        .args(["--data-dir", dir.to_str().expect("utf8 path")])
        .args(["--grpc-addr", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", "off"])
        .args(extra)
        .stdout(Stdio::from(file.try_clone().expect("clone log handle")))
        .stderr(Stdio::from(file))
        .spawn()
        .expect("spawn emberdb");
    Server(child)
}

/// A client once the server answers (at most 60 s).
pub async fn connect(port: u16) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(mut c) = Client::connect(format!("http://127.0.0.1:{port}")).await
            && c.list_collections().await.is_ok()
        {
            return Ok(c);
        }
        anyhow::ensure!(Instant::now() < deadline, "server did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
