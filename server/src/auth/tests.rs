use super::*;

fn ring(keys: &[(&str, &str, Role, Option<&[&str]>)]) -> Keyring {
    let cfg = AuthConfig {
        keys: keys
            .iter()
            .map(|(name, key, role, cols)| KeyConfig {
                name: name.to_string(),
                sha256: hash_hex(key),
                role: *role,
                collections: cols.map(|c| c.iter().map(|s| s.to_string()).collect()),
            })
            .collect(),
        metrics_key_sha256: Some(hash_hex("scrape")),
    };
    Keyring::from_config(&cfg).expect("valid config")
}

#[test]
fn hash_hex_is_sha256() {
    // sha256("abc"), FIPS 180-2 test vector.
    assert_eq!(
        hash_hex("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

#[test]
fn authenticates_by_hash_and_bearer() {
    let r = ring(&[
        ("ci", "k-ci", Role::Writer, None),
        ("ro", "k-ro", Role::Reader, Some(&["images", "docs-*"])),
    ]);
    assert!(r.enabled());
    let p = r.authenticate(Some(b"Bearer k-ci")).expect("known key");
    assert_eq!((&*p.name, p.role), ("ci", Role::Writer));
    assert_eq!(
        r.authenticate(None).unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        r.authenticate(Some(b"Bearer nope")).unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        r.authenticate(Some(b"k-ci")).unwrap_err().code(),
        Code::Unauthenticated,
        "the scheme is required"
    );
    let ro = r.authenticate(Some(b"Bearer k-ro")).expect("known key");
    assert!(ro.can_see("images") && ro.can_see("docs-a") && ro.can_see("docs-"));
    assert!(!ro.can_see("images2") && !ro.can_see("doc"));
    assert!(ro.authorize(Role::Reader, "docs-x").is_ok());
    let denied = ro.authorize(Role::Reader, "secret").unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert_eq!(
        ro.authorize(Role::Writer, "images").unwrap_err().code(),
        Code::PermissionDenied
    );
    assert!(r.metrics_allowed(Some(b"Bearer scrape")));
    assert!(!r.metrics_allowed(Some(b"Bearer k-ci")) && !r.metrics_allowed(None));
}

#[test]
fn empty_keyring_is_anonymous_admin() {
    let r = Keyring::from_config(&AuthConfig::default()).expect("empty is valid");
    assert!(!r.enabled());
    let p = r.authenticate(None).expect("open");
    assert_eq!(p.role, Role::Admin);
    assert!(r.metrics_allowed(None));
}

#[test]
fn config_errors_name_the_field() {
    let bad = |k: KeyConfig| {
        Keyring::from_config(&AuthConfig {
            keys: vec![k],
            metrics_key_sha256: None,
        })
        .unwrap_err()
    };
    let key = |sha: &str, cols: Option<Vec<&str>>| KeyConfig {
        name: "a".into(),
        sha256: sha.into(),
        role: Role::Reader,
        collections: cols.map(|c| c.into_iter().map(String::from).collect()),
    };
    assert!(bad(key("abc", None)).contains("auth.keys[0].sha256"));
    assert!(bad(key(&hash_hex("x"), Some(vec!["a*b"]))).contains("collections"));
    assert!(bad(key(&hash_hex("x"), Some(vec![""]))).contains("collections"));
    let two = AuthConfig {
        keys: vec![key(&hash_hex("x"), None), key(&hash_hex("y"), None)],
        metrics_key_sha256: None,
    };
    assert!(
        Keyring::from_config(&two)
            .unwrap_err()
            .contains("used twice")
    );
}

#[test]
fn every_rpc_has_a_role() {
    let fds = <prost_types::FileDescriptorSet as prost::Message>::decode(
        emberdb_proto::v1::FILE_DESCRIPTOR_SET,
    )
    .expect("descriptor set");
    let known_reads = [
        "ListCollections",
        "DescribeVersion",
        "Get",
        "Search",
        "SearchBatch",
        "Recall",
        "Margin",
        "Confusion",
        "Actions",
        "Project",
        "Drift",
        "CompareVersions",
        "CheckConsistency",
        "ListMonitors",
        "ExportBundle",
        "ListBundles",
        "DownloadBundle",
    ];
    for f in &fds.file {
        for s in &f.service {
            for m in &s.method {
                let path = format!("/{}.{}/{}", f.package(), s.name(), m.name());
                let role = method_role(&path).expect("every EmberDB RPC needs a key");
                if known_reads.contains(&m.name()) {
                    assert_eq!(role, Role::Reader, "{path}");
                } else {
                    assert!(role >= Role::Writer, "{path}");
                }
            }
        }
    }
    assert_eq!(method_role("/grpc.health.v1.Health/Check"), None);
}
