//! `ember-auth-bench`: what access control costs a search. Two `emberdb` servers, one without
//! keys and one with `[[auth.keys]]` (the client sends its key), the same 10,000 × 128 points;
//! single-client sequential k = 10 searches, rounds interleaved between the two, p50 per round.
//! Reports the medians and their difference (the bar: ≤ 5 µs).

use std::time::Instant;

use clap::Parser;
use emberdb_benches::median;
use emberdb_client::{Client, ConnectOptions, Metric, SearchOptions, pb};
use rand::{Rng, SeedableRng};

#[derive(Debug, Parser)]
struct Args {
    /// Searches per round.
    #[arg(long, default_value_t = 5000)]
    calls: usize,
    /// Rounds per server (interleaved).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

const KEY: &str = "bench-reader-key-0123456789abcdef";

async fn load(c: &mut Client, data: &[Vec<f32>]) -> anyhow::Result<()> {
    c.create_version("bench", "v1", 128, Metric::L2).await?;
    for (b, chunk) in data.chunks(1000).enumerate() {
        let pts = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| pb::Point {
                id: (b * 1000 + i) as u64,
                vector: v.clone(),
                ..Default::default()
            })
            .collect();
        c.upsert("bench", "v1", pts).await?;
    }
    emberdb_benches::wait_indexed(c, "bench", "v1").await
}

async fn round(c: &mut Client, queries: &[Vec<f32>], calls: usize) -> anyhow::Result<f64> {
    let mut lat = Vec::with_capacity(calls);
    for i in 0..calls {
        let q = queries[i % queries.len()].clone();
        let t = Instant::now();
        c.search(
            "bench",
            "v1",
            q,
            10,
            SearchOptions {
                ef: 32,
                ..Default::default()
            },
        )
        .await?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat[lat.len() / 2])
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let data: Vec<Vec<f32>> = (0..10_000)
        .map(|_| (0..128).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    let queries: Vec<Vec<f32>> = (0..1000)
        .map(|_| (0..128).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();

    let (_open, mut open) =
        emberdb_benches::server::Server::start(&["--metrics-addr", "off"]).await?;
    load(&mut open, &data).await?;

    let dir = tempfile::tempdir()?;
    let config = dir.path().join("emberdb.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.keys]]\nname = \"bench\"\nsha256 = \"{}\"\nrole = \"reader\"\n\n\
             [[auth.keys]]\nname = \"loader\"\nsha256 = \"{}\"\nrole = \"admin\"\n",
            emberdb_server::auth::hash_hex(KEY),
            emberdb_server::auth::hash_hex("loader-key")
        ),
    )?;
    let cfg = config.to_string_lossy().into_owned();
    let (keyed_server, _) = emberdb_benches::server::Server::start_with_key(
        &["--metrics-addr", "off", "--config", &cfg],
        "loader-key",
    )
    .await?;
    let with = |key: &str| ConnectOptions {
        api_key: Some(key.into()),
        ..Default::default()
    };
    let mut loader = Client::connect_with(keyed_server.addr.clone(), with("loader-key")).await?;
    load(&mut loader, &data).await?;
    let mut keyed = Client::connect_with(keyed_server.addr.clone(), with(KEY)).await?;

    // Warm both.
    round(&mut open, &queries, 1000).await?;
    round(&mut keyed, &queries, 1000).await?;
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for r in 0..args.rounds {
        let (a, b) = if r % 2 == 0 {
            let a = round(&mut open, &queries, args.calls).await?;
            (a, round(&mut keyed, &queries, args.calls).await?)
        } else {
            let b = round(&mut keyed, &queries, args.calls).await?;
            (round(&mut open, &queries, args.calls).await?, b)
        };
        println!("round {r}: p50 auth off {a:.1} µs, auth on {b:.1} µs");
        off.push(a);
        on.push(b);
    }
    let (a, b) = (median(off), median(on));
    println!(
        "Search p50 (10,000 x 128, k=10, ef=32, {} calls x {} rounds): auth off {a:.1} µs, auth on {b:.1} µs, overhead {:+.1} µs",
        args.calls,
        args.rounds,
        b - a
    );
    Ok(())
}
