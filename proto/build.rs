//! Compiles `emberdb/v1/*.proto` with a vendored protoc, so no system protoc is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // BTreeMap keeps metadata ordered, so encodings are deterministic.
    config.btree_map(["."]);
    // Reports an incident bundle records as JSON (and `ember bundle replay` compares field by field).
    for message in [
        "DriftReport",
        "ClassDrift",
        "Fingerprint",
        "ShiftScore",
        "ConfusionReport",
        "ConfusionPair",
        "ClassSummary",
        "MarginReport",
        "ClassMargin",
        "LowMarginSample",
        "MonitorStatus",
        "MonitorSpec",
        "Window",
    ] {
        config.type_attribute(
            format!(".emberdb.v1.{message}"),
            "#[derive(serde::Serialize)]",
        );
    }

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = [
        "emberdb/v1/common.proto",
        "emberdb/v1/collections.proto",
        "emberdb/v1/collections_service.proto",
        "emberdb/v1/points.proto",
        "emberdb/v1/points_service.proto",
        "emberdb/v1/evaluation.proto",
        "emberdb/v1/evaluation_service.proto",
        "emberdb/v1/operations.proto",
        "emberdb/v1/operations_service.proto",
        "emberdb/v1/snapshots.proto",
        "emberdb/v1/snapshots_service.proto",
    ];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("emberdb_descriptor.bin"))
        .compile_with_config(config, &protos, &["."])?;
    // tonic-prost-build emits no rerun-if-changed for the folder itself.
    println!("cargo:rerun-if-changed=emberdb");
    Ok(())
}
