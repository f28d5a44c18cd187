//! Shared by the engine's test files (each includes it with `mod support;`).

use std::path::PathBuf;

use reflow::{ChangeSignature, NetworkId, SignedChange};

/// A golden file's path (engine/tests/golden/, see its README).
pub fn golden(name: &str) -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// A golden network: `{"network": id, "changes": [{"change": hex, "signature": hex}]}`.
pub fn read_network(name: &str) -> (NetworkId, Vec<SignedChange>) {
    let text = std::fs::read_to_string(golden(name)).expect("golden file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let network: NetworkId = v["network"].as_str().expect("id").parse().expect("id");
    let changes = v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| SignedChange {
            change: automerge::Change::from_bytes(
                hex::decode(c["change"].as_str().expect("hex")).expect("hex"),
            )
            .expect("change"),
            signature: ChangeSignature(
                hex::decode(c["signature"].as_str().expect("hex"))
                    .expect("hex")
                    .try_into()
                    .expect("64 bytes"),
            ),
        })
        .collect();
    (network, changes)
}
