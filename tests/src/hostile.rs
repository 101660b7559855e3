//! Hostile input for every decoder of bytes EmberDB did not write itself in this process
//! (issue: fuzzed decoders). Each target is fed random bytes and mutations of a valid encoding
//! (bit flips, overwritten bytes, truncation, insertion, duplicated slices, huge length fields);
//! it must return — `Ok` or an error — without panicking. `tests/hostile_input.rs` runs 10,000
//! cases per target (and checks allocation and time bounds); `ember-fuzz-bench` runs millions.

use std::panic::AssertUnwindSafe;

use rand::{Rng, SeedableRng};

/// A decoder under test: its name, one valid input to mutate, and the call.
pub struct Target {
    pub name: &'static str,
    pub seed_input: Vec<u8>,
    pub decode: fn(&[u8]) -> bool,
}

/// Every decoder of untrusted bytes. `decode` returns whether the input was accepted.
pub fn targets() -> Vec<Target> {
    use emberdb_storage::decode as d;
    let point = d::StoredPoint {
        id: 7,
        seq: 42,
        timestamp_ms: 1_700_000_000_000,
        vector: vec![0.5, -1.25, 3.0, f32::MIN_POSITIVE],
        label: "cat".into(),
        metadata: [("split".to_string(), "train".to_string())].into(),
    };
    let record = d::CollectionRecord {
        name: "images".into(),
        created_ms: 1,
        versions: [(
            "v1".to_string(),
            d::VersionRecord {
                id: 3,
                name: "v1".into(),
                dim: 4,
                metric: emberdb_storage::distance::Metric::L2,
                m: 16,
                ef_construction: 200,
                created_ms: 1,
            },
        )]
        .into(),
        aliases: [("prod".to_string(), "v1".to_string())].into(),
    };
    let manifest = d::Manifest {
        format_version: d::MANIFEST_FORMAT_VERSION,
        generation: 2,
        basename: "g".into(),
        files: vec![d::FileEntry {
            name: "g.hnsw.graph".into(),
            size: 10,
            crc32c: 99,
        }],
        applied_seq: 5,
        slot_count: 3,
        graph_points: 3,
        dim: 4,
        metric: "l2".into(),
        m: 16,
        ef_construction: 200,
        hnsw_rs_version: "0.3.5".into(),
    };
    let slots = [
        d::SlotEntry { id: 1, seq: 1 },
        d::SlotEntry { id: 9, seq: 4 },
    ];
    let config = format!(
        "{}\n[[auth.keys]]\nname = \"ci\"\nsha256 = \"{}\"\nrole = \"writer\"\ncollections = [\"images\", \"docs-*\"]\n",
        include_str!("../../deploy/emberdb.toml"),
        "ab".repeat(32)
    );
    vec![
        Target {
            name: "point record",
            seed_input: d::encode_point(&point),
            decode: |b| d::decode_point(1, b).is_ok(),
        },
        Target {
            name: "point key",
            seed_input: d::point_key(3, 99).to_vec(),
            decode: |b| d::point_id_from_key(b).is_ok(),
        },
        Target {
            name: "catalog record",
            seed_input: serde_json::to_vec(&record).unwrap_or_default(),
            decode: |b| d::decode_collection_record(b).is_ok(),
        },
        Target {
            name: "generation manifest",
            seed_input: d::encode_manifest(&manifest).unwrap_or_default(),
            decode: |b| d::decode_manifest(b).is_ok(),
        },
        Target {
            name: "slot map",
            seed_input: d::encode_slots(&slots),
            decode: |b| d::decode_slots(b).is_ok(),
        },
        Target {
            name: "graph links",
            seed_input: d::encode_links(&d::Links {
                entry: Some(1),
                levels: vec![0, 1, d::NOT_A_NODE, 0],
                offsets: vec![0, 2, 4, 4, 6],
                targets: vec![1, 3, 0, 3, 0, 1],
                upper: vec![vec![(1, vec![])]],
            }),
            decode: |b| d::decode_links(b).is_ok(),
        },
        Target {
            name: "config file",
            seed_input: config.into_bytes(),
            decode: |b| {
                std::str::from_utf8(b).is_ok_and(|t| emberdb_server::ConfigFile::parse(t).is_ok())
            },
        },
        Target {
            name: "npy",
            seed_input: emberdb_client::formats::npy_f32_bytes(2, 3, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.5]),
            decode: |b| emberdb_client::formats::parse_npy_f32(b).is_ok(),
        },
        Target {
            name: "csv",
            seed_input: b"id,label,v0,v1\n1,cat,0.5,1\n2,dog,2,3e2\n".to_vec(),
            decode: |b| emberdb_client::formats::parse_csv(b, "fuzz").is_ok(),
        },
        Target {
            name: "jsonl",
            seed_input: b"{\"id\":3,\"vector\":[1,2.5],\"label\":\"x\",\"metadata\":{\"k\":\"v\"},\"timestamp_ms\":5}\n{\"id\":4,\"vector\":[0,1]}\n".to_vec(),
            decode: |b| emberdb_client::formats::parse_jsonl(b, "fuzz").is_ok(),
        },
    ]
}

/// One hostile input: random bytes (1 in 4) or a mutation of `valid`.
pub fn input(rng: &mut impl Rng, valid: &[u8]) -> Vec<u8> {
    if rng.random_range(0..4) == 0 {
        let n = rng.random_range(0..256);
        return (0..n).map(|_| rng.random()).collect();
    }
    let mut b = valid.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = b.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                b[i] = rng.random();
            }
            2 => b.truncate(rng.random_range(0..=len)),
            3 => {
                let i = rng.random_range(0..=len);
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                b.splice(i..i, extra);
            }
            4 if len > 0 => {
                // A duplicated slice (repeated fields, records, lines).
                let i = rng.random_range(0..len);
                let j = rng.random_range(i..len.min(i + 64) + 1).min(len);
                let dup = b[i..j].to_vec();
                b.splice(j..j, dup);
            }
            5 if len >= 4 => {
                // A huge little-endian length or count where one may sit.
                let i = rng.random_range(0..len - 3);
                b[i..i + 4].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f]);
            }
            _ if len > 0 => {
                // Interesting text tokens for the text formats.
                const TOKENS: &[&[u8]] = &[
                    b"NaN",
                    b"inf",
                    b"-1",
                    b"1e999",
                    b"99999999999999999999",
                    b"\"",
                    b"[",
                    b"{",
                    b",",
                    b"\n",
                    b"'shape': (99999999999, 99999999999)",
                    b"\x00",
                    b"\xff",
                ];
                let t = TOKENS[rng.random_range(0..TOKENS.len())];
                let i = rng.random_range(0..=len);
                b.splice(i..i, t.iter().copied());
            }
            _ => {}
        }
    }
    b
}

/// What a run saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub cases: u64,
    pub accepted: u64,
    pub rejected: u64,
    /// Inputs that panicked, with the panic text (must stay empty).
    pub panics: Vec<(Vec<u8>, String)>,
    pub slowest: std::time::Duration,
}

/// Feeds `cases` hostile inputs to `t`, seeded by `seed`.
pub fn run(t: &Target, cases: u64, seed: u64) -> Report {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut r = Report::default();
    assert!(
        (t.decode)(&t.seed_input),
        "{}: the valid input must decode",
        t.name
    );
    for _ in 0..cases {
        let b = input(&mut rng, &t.seed_input);
        let started = std::time::Instant::now();
        match std::panic::catch_unwind(AssertUnwindSafe(|| (t.decode)(&b))) {
            Ok(true) => r.accepted += 1,
            Ok(false) => r.rejected += 1,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                if r.panics.len() < 5 {
                    r.panics.push((b.clone(), msg));
                }
            }
        }
        r.slowest = r.slowest.max(started.elapsed());
        r.cases += 1;
    }
    r
}

/// Silences the default panic hook's output while fuzzing (panics are collected instead).
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|_| {}));
}
