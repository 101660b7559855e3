//! Architecture invariants, checked from `cargo metadata`: storage never sees gRPC types nor
//! the analysis crate, analysis sees storage and eval but no gRPC, the client sees only the
//! proto crate, eval depends on nothing of ours.

use std::collections::{BTreeMap, BTreeSet};

fn deps() -> anyhow::Result<BTreeMap<String, BTreeSet<String>>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut map = BTreeMap::new();
    for p in v["packages"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let ds = p["dependencies"]
            .as_array()
            .into_iter()
            .flatten()
            // Normal dependencies only: tests may use anything.
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str().map(str::to_string))
            .collect();
        map.insert(name, ds);
    }
    Ok(map)
}

#[test]
fn dependency_arrows_hold() -> anyhow::Result<()> {
    let d = deps()?;
    let of = |p: &str| d.get(p).cloned().unwrap_or_default();
    let transport = [
        "tonic",
        "prost",
        "emberdb-proto",
        "emberdb-server",
        "emberdb-client",
    ];
    for (package, also) in [
        ("emberdb-storage", Some("emberdb-analysis")),
        // Analysis: storage's public API and the math; nothing of the transport.
        ("emberdb-analysis", None),
    ] {
        for forbidden in transport.iter().copied().chain(also) {
            assert!(
                !of(package).contains(forbidden),
                "{package} must not depend on {forbidden}"
            );
        }
    }
    let ours = |set: BTreeSet<String>| {
        set.into_iter()
            .filter(|n| n.starts_with("emberdb-"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ours(of("emberdb-client")),
        vec!["emberdb-proto".to_string()]
    );
    assert_eq!(
        ours(of("emberdb-analysis")),
        vec!["emberdb-eval".to_string(), "emberdb-storage".to_string()]
    );
    assert!(ours(of("emberdb-eval")).is_empty());
    assert!(ours(of("emberdb-proto")).is_empty());
    assert!(
        of("emberdb-server").contains("emberdb-storage")
            && of("emberdb-server").contains("emberdb-analysis")
            && of("emberdb-server").contains("emberdb-proto")
    );
    assert!(d.len() >= 8, "workspace members: {:?}", d.keys());
    Ok(())
}
