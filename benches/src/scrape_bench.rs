//! `ember-scrape-bench`: what one `/metrics` scrape costs as a version grows. Two `emberdb`
//! servers, one holding a version of 10,000 points and one of 1,000,000 (8-d, fully indexed,
//! a monitor on each so every gauge family is present); scrapes timed from the request to the
//! last byte, rounds interleaved between the two, median per round. Reports the medians and
//! their ratio (the bar: the same within noise).

use std::time::{Duration, Instant};

use clap::Parser;
use emberdb_benches::median;
use emberdb_client::{Client, Metric, pb};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
struct Args {
    /// Points in the large version.
    #[arg(long, default_value_t = 1_000_000)]
    large: usize,
    /// Points in the small version.
    #[arg(long, default_value_t = 10_000)]
    small: usize,
    /// Scrapes per round.
    #[arg(long, default_value_t = 200)]
    scrapes: usize,
    /// Rounds per server (interleaved).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

const DIM: u32 = 8;

async fn load(c: &mut Client, n: usize, seed: u64) -> anyhow::Result<()> {
    c.create_version("bench", "v1", DIM, Metric::L2).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let started = Instant::now();
    for start in (0..n).step_by(5000) {
        let pts = (start..(start + 5000).min(n))
            .map(|i| pb::Point {
                id: i as u64,
                vector: (0..DIM).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
                label: format!("c{}", i % 10),
                ..Default::default()
            })
            .collect();
        c.upsert("bench", "v1", pts).await?;
    }
    emberdb_benches::wait_indexed(c, "bench", "v1").await?;
    println!("loaded and indexed {n} points in {:.0?}", started.elapsed());
    Ok(())
}

async fn scrape(addr: &str) -> anyhow::Result<usize> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    anyhow::ensure!(out.starts_with(b"HTTP/1.1 200"), "scrape failed");
    Ok(out.len())
}

async fn round(addr: &str, scrapes: usize) -> anyhow::Result<f64> {
    let mut lat = Vec::with_capacity(scrapes);
    for _ in 0..scrapes {
        let t = Instant::now();
        scrape(addr).await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat[lat.len() / 2])
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut servers = Vec::new();
    for (n, seed) in [(args.small, 1), (args.large, 2)] {
        let metrics = format!("127.0.0.1:{}", free_port()?);
        let (server, mut c) =
            emberdb_benches::server::Server::start(&["--metrics-addr", &metrics]).await?;
        load(&mut c, n, seed).await?;
        // A monitor run adds the SLI families; the scrape then renders everything it can.
        c.set_monitor(pb::MonitorSpec {
            collection: "bench".into(),
            version: "v1".into(),
            interval_s: 3600,
            k: 10,
            sample_size: 100,
            ..Default::default()
        })
        .await?;
        servers.push((n, metrics, server));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (_, addr, _) in &servers {
        round(addr, 50).await?; // warm-up
    }
    let (mut small, mut large) = (Vec::new(), Vec::new());
    for r in 0..args.rounds {
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut got = [0.0; 2];
        for i in order {
            got[i] = round(&servers[i].1, args.scrapes).await?;
        }
        println!(
            "round {r}: scrape p50 {} points {:.1} µs, {} points {:.1} µs",
            servers[0].0, got[0], servers[1].0, got[1]
        );
        small.push(got[0]);
        large.push(got[1]);
    }
    let bytes = scrape(&servers[1].1).await?;
    let (a, b) = (median(small), median(large));
    println!(
        "/metrics scrape p50 ({} scrapes x {} rounds, {bytes} bytes): {} points {a:.1} µs, {} points {b:.1} µs, ratio {:.2}",
        args.scrapes,
        args.rounds,
        servers[0].0,
        servers[1].0,
        b / a
    );
    Ok(())
}
