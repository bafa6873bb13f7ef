//! Shared helpers for the crate tests: real tools (skopeo 1.9, umoci,
//! openssl, gpg, python3-cryptography) run in temp dirs; a missing tool
//! fails the test with the fix.

#![allow(dead_code)]
// Test helpers fail the test by panicking: unwrap is the point here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a command, panicking with its output if it fails.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{cmd:?}: {e}: install the test tools with scripts/install-deps.sh (skopeo, umoci, openssl, gnupg, python3-cryptography)"
        )
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `sh -c SCRIPT` in `dir`.
pub fn sh(dir: &Path, script: &str) -> Vec<u8> {
    run(Command::new("sh").arg("-ec").arg(script).current_dir(dir))
}

/// A layer descriptor of a layout's manifest.
#[derive(Debug, Clone)]
pub struct Layer {
    pub media_type: String,
    pub digest: String,
    pub annotations: BTreeMap<String, String>,
}

/// Path of a blob in a layout.
pub fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

/// The manifest digest and layers of `dir:tag`.
pub fn layers(dir: &Path, tag: &str) -> (String, Vec<Layer>) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag} in {}", dir.display()))
        .clone();
    let digest = entry["digest"].as_str().unwrap().to_string();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(dir, &digest)).unwrap()).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| Layer {
            media_type: l["mediaType"].as_str().unwrap().to_string(),
            digest: l["digest"].as_str().unwrap().to_string(),
            annotations: l
                .get("annotations")
                .and_then(|a| a.as_object())
                .map(|a| {
                    a.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    (digest, layers)
}

/// An OCI layout `DIR/img:v1` with two gzip layers (made by umoci), and
/// a marker file.
pub fn make_image(dir: &Path) -> PathBuf {
    sh(
        dir,
        "mkdir -p l1/etc l2/data
         echo marker-one > l1/marker
         head -c 300000 /dev/urandom > l1/etc/random
         seq 1 50000 > l2/data/seq
         echo marker-two > l2/marker
         umoci init --layout img
         umoci new --image img:v1
         umoci insert --image img:v1 l1 /
         umoci insert --image img:v1 l2 /",
    );
    dir.join("img")
}
