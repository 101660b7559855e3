//! `ember keygen`: a fresh random key every time, 32 bytes base64url, and the `[[auth.keys]]`
//! lines whose sha256 is that key's.

use std::process::Command;

use base64::Engine as _;
use sha2::Digest as _;

fn keygen() -> (String, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["keygen", "--name", "ci-canary", "--role", "writer"])
        .output()
        .expect("run ember keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf8");
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"))
            .trim()
            .trim_matches('"')
            .to_string()
    };
    let key = field("key: ");
    let hash = field("sha256 = ");
    assert!(text.contains("[[auth.keys]]") && text.contains("name = \"ci-canary\""));
    assert!(text.contains("role = \"writer\""));
    (key, hash, text)
}

#[test]
fn keygen_prints_a_random_key_and_its_hash() {
    let (key, hash, _) = keygen();
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&key)
        .expect("base64url");
    assert_eq!(raw.len(), 32);
    let want: String = sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hash, want);
    let (other, _, _) = keygen();
    assert_ne!(key, other, "every key is new");
}
