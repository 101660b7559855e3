//! deploy/ is tested like code: promtool validates the scrape config and rules
//! and runs the rule unit tests; the dashboards are valid JSON whose queries name
//! only metrics the server exports; the example config file parses to the defaults.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy())
        .output()
        .expect("promtool (Debian package prometheus; make test installs it)");
    println!(
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed");
}

#[test]
fn promtool_accepts_config_and_rules_and_their_tests_pass() {
    promtool(&["check", "config", "prometheus.yml"]);
    promtool(&["check", "rules", "prometheus/rules.yml"]);
    promtool(&["test", "rules", "prometheus/rules_test.yml"]);
}

/// Metric names the server exports (and the recording rules derive).
const KNOWN: &[&str] = &[
    "emberdb_grpc_requests_total",
    "emberdb_grpc_request_duration_seconds_bucket",
    "emberdb_search_duration_seconds_bucket",
    "emberdb_recall_at_k",
    "emberdb_precision_at_1",
    "emberdb_low_margin_fraction",
    "emberdb_drift_score",
    "emberdb_index_consistent",
    "emberdb_points",
    "emberdb_index_rebuilds_total",
    "emberdb_eval_last_run_timestamp_seconds",
    "emberdb_monitor_last_success_timestamp_seconds",
    "emberdb_monitor_runs_total",
    "emberdb_metrics_series_dropped_total",
];

#[test]
fn dashboards_are_valid_and_query_exported_metrics() {
    let rules = std::fs::read_to_string(deploy().join("prometheus/rules.yml")).unwrap();
    for name in ["executive", "oncall", "debug"] {
        let text = std::fs::read_to_string(deploy().join(format!("grafana/{name}.json"))).unwrap();
        let d: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let panels = d["panels"].as_array().expect("panels");
        assert!(panels.len() >= 4, "{name}: {} panels", panels.len());
        for p in panels {
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for word in expr.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                    if word.starts_with("emberdb:") {
                        assert!(
                            rules.contains(&format!("record: {word}")),
                            "{name}: unknown recording rule {word}"
                        );
                    } else if word.starts_with("emberdb_") {
                        assert!(KNOWN.contains(&word), "{name}: unknown metric {word}");
                    }
                }
            }
        }
    }
}

#[test]
fn example_config_parses_to_the_defaults() {
    let file = emberdb_server::ConfigFile::load(&deploy().join("emberdb.toml")).expect("parses");
    let defaults = emberdb_analysis::EvalConfig::default();
    assert_eq!(format!("{:?}", file.eval), format!("{defaults:?}"));
    assert_eq!(
        file.metrics.max_series,
        emberdb_server::MetricsConfig::default().max_series
    );
}

#[test]
fn kubernetes_probes_use_grpc_health() {
    let k8s = std::fs::read_to_string(deploy().join("k8s/emberdb.yaml")).unwrap();
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        let at = k8s.find(probe).unwrap_or_else(|| panic!("{probe} missing"));
        assert!(
            k8s[at..]
                .lines()
                .nth(1)
                .unwrap()
                .contains("grpc: {port: 50051}"),
            "{probe}"
        );
    }
    assert!(k8s.contains("kind: StatefulSet") && k8s.contains("volumeClaimTemplates"));
    // Keys come from a Secret, and the config there has some: the server listens on all
    // interfaces in the pod and would refuse to start without them.
    assert!(k8s.contains("kind: Secret") && k8s.contains("secret: {secretName: emberdb-config}"));
    assert!(k8s.contains("[[auth.keys]]") && !k8s.contains("kind: ConfigMap"));
}
