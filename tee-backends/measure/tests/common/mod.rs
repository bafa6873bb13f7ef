//! Helpers shared by the measurement integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Command, Output};

use serde_json::Value;

/// A file of testdata/tdx.
pub fn read_tdx(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/tdx/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// testdata/tdx/tdx-measurement-vectors.json.
pub fn tdx_vectors() -> Value {
    serde_json::from_slice(&read_tdx("tdx-measurement-vectors.json")).unwrap()
}

/// Runs `cmd`, asserting it succeeds (its stderr shown if not).
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
