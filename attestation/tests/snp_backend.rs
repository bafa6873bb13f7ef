//! `SnpBackend` with a collateral directory that also holds unrelated files
//! (vectors: testdata/snp/SOURCES.md, virtee Milan report + VCEK).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use cloister_attestation::backends::SnpBackend;
use cloister_attestation::{Tee, Verifier, VerifierConfig};

fn td(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/{dir}/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// 2025-06-01, inside the virtee Milan VCEK's validity.
const JUNE_2025: i64 = 1_748_736_000;

#[test]
fn collateral_dir_takes_certificates_and_skips_the_rest() {
    let dir = std::env::temp_dir().join(format!("cloister-snp-backend-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vcek.der"), td("snp", "virtee-sev-vcek_milan.der")).unwrap();
    std::fs::write(dir.join("rv.json"), td("cca", "ccatoken-rv.json")).unwrap();
    std::fs::write(
        dir.join("evidence.json"),
        td("snp", "trustee-as-e2e-snp-evidence.json"),
    )
    .unwrap();
    std::fs::write(
        dir.join("key.pem"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    std::fs::write(dir.join("junk.der"), b"not DER").unwrap();
    let backend = SnpBackend::new(Some(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(backend.certs.len(), 1);
    let mut skipped: Vec<String> = backend
        .skipped
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    skipped.sort();
    assert_eq!(skipped, ["evidence.json", "junk.der", "key.pem", "rv.json"]);

    let v = Verifier::new(VerifierConfig::default())
        .unwrap()
        .with_backend(Tee::Snp, Arc::new(backend));
    let report = td("snp", "virtee-sev-report_milan.bin");
    let a = v
        .appraise(Tee::Snp, &report, None, None, JUNE_2025)
        .unwrap();
    for claim in ["snp endorsement chain", "snp report signature"] {
        let c = a.checks.iter().find(|c| c.claim == claim).unwrap();
        assert!(c.ok, "{c:?}");
    }
}
