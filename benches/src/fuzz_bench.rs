//! `ember-fuzz-bench`: the long run of the hostile-input check (`tests/hostile_input.rs` runs
//! 10,000 cases per decoder in `make test`). Prints, per decoder, cases, accepted, rejected,
//! panics (must be 0), the slowest input and the rate.

use clap::Parser;
use emberdb_tests::hostile;

#[derive(Debug, Parser)]
struct Args {
    /// Inputs per decoder.
    #[arg(long, default_value_t = 1_000_000)]
    cases: u64,
    /// Seed of the first decoder's run (the next ones add 1).
    #[arg(long, default_value_t = 20261204)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    hostile::quiet_panics();
    let mut panicked = 0;
    for (i, t) in hostile::targets().iter().enumerate() {
        let started = std::time::Instant::now();
        let r = hostile::run(t, args.cases, args.seed + i as u64);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{:<20} seed {:>9}: {} cases, {} accepted, {} rejected, {} panics, slowest {:?}, {:.0} inputs/s",
            t.name,
            args.seed + i as u64,
            r.cases,
            r.accepted,
            r.rejected,
            r.panics.len(),
            r.slowest,
            r.cases as f64 / secs
        );
        for (input, msg) in &r.panics {
            println!("  panic {msg:?} on {input:?}");
        }
        panicked += r.panics.len();
    }
    anyhow::ensure!(panicked == 0, "{panicked} inputs panicked");
    Ok(())
}
