//! Runs due monitors, one at a time, on a blocking thread (their searches use
//! the engine's query pool, their math the analysis monitor thread), and hands each result to
//! the flight recorder (a drift bundle when the score crossed the threshold). Results stay in the
//! analysis service; `/metrics` reads
//! them at scrape time, so a deleted monitor's series disappear with it.

use std::sync::Arc;
use std::time::Duration;

use emberdb_analysis::Analysis;
use tokio::sync::broadcast;

use crate::bundle::FlightRecorder;

/// How often the scheduler looks for due monitors.
const TICK: Duration = Duration::from_millis(250);

pub async fn run(
    analysis: Arc<Analysis>,
    recorder: Arc<FlightRecorder>,
    mut stop: broadcast::Receiver<()>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.recv() => return,
            _ = tick.tick() => {}
        }
        for spec in analysis.due_monitors() {
            let (a, rec) = (analysis.clone(), recorder.clone());
            let run = tokio::task::spawn_blocking(move || {
                let r = a.run_monitor(&spec);
                if let Ok(result) = &r {
                    rec.after_run(&a, &spec, result);
                }
                (spec, r)
            });
            tokio::select! {
                _ = stop.recv() => return,
                done = run => match done {
                    Ok((spec, Err(err))) => tracing::warn!(collection = %spec.collection, version = %spec.version, error = %err, "monitor run failed"),
                    Ok((spec, Ok(r))) => tracing::debug!(collection = %spec.collection, version = %spec.version, recall = r.recall_at_k, "monitor ran"),
                    Err(err) => tracing::error!(error = %err, "monitor task panicked"),
                },
            }
        }
    }
}
