//! `SnpEvidenceVerifier` with a collateral directory that also holds unrelated files
//! (vectors: testdata/snp/SOURCES.md, virtee Milan report + VCEK).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use cloister_attestation::verifiers::SnpEvidenceVerifier;
use cloister_attestation::{TeeKind, Verifier, VerifierConfig};

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
    let backend = SnpEvidenceVerifier::new(Some(&dir)).unwrap();
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
        .with_verifier(TeeKind::Snp, Arc::new(backend));
    let report = td("snp", "virtee-sev-report_milan.bin");
    let a = v
        .appraise(TeeKind::Snp, &report, None, None, JUNE_2025)
        .unwrap();
    for claim in ["snp endorsement chain", "snp report signature"] {
        let c = a.checks.iter().find(|c| c.claim == claim).unwrap();
        assert!(c.ok, "{c:?}");
    }
}

fn backend_with(certs: &[&str], rv: &str) -> Verifier {
    // One dir per call: tests run in parallel, and two with the same
    // certificates must not remove each other's dir.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "cloister-snp-backend-{}-{n}-{}",
        std::process::id(),
        certs.join("-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for c in certs {
        std::fs::write(dir.join(c), td("snp", c)).unwrap();
    }
    let backend = SnpEvidenceVerifier::new(Some(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    Verifier::new(VerifierConfig {
        reference_values: cloister_attestation::ReferenceValues::parse(rv).unwrap(),
        ..Default::default()
    })
    .unwrap()
    .with_verifier(TeeKind::Snp, Arc::new(backend))
}

#[test]
fn a_tcb_below_the_floor_is_contraindicated_and_named() {
    let report = td("snp", "virtee-sev-report_milan.bin");
    let v = backend_with(
        &["virtee-sev-vcek_milan.der"],
        r#"{"snp_min_tcb": {"bootloader": 255}}"#,
    );
    let a = v
        .appraise(TeeKind::Snp, &report, None, None, JUNE_2025)
        .unwrap();
    assert_eq!(a.status, cloister_attestation::Status::Contraindicated);
    assert_eq!(a.trust_vector["hardware"], 96);
    for name in ["snp reported_tcb", "snp committed_tcb", "snp launch_tcb"] {
        let f = a.failures.iter().find(|f| f.claim == name).unwrap();
        assert!(
            f.found.contains("bootloader") && f.found.contains("< 255"),
            "{f:?}"
        );
    }
    // At or above the floor: the TCB checks pass.
    let v = backend_with(&["virtee-sev-vcek_milan.der"], r#"{"snp_min_tcb": {}}"#);
    let a = v
        .appraise(TeeKind::Snp, &report, None, None, JUNE_2025)
        .unwrap();
    for name in ["snp reported_tcb", "snp committed_tcb", "snp launch_tcb"] {
        let c = a.checks.iter().find(|c| c.claim == name).unwrap();
        assert!(c.ok, "{c:?}");
        assert_eq!(c.category, cloister_attestation::Category::TcbRevoked);
    }
}

#[test]
fn a_report_at_vmpl_above_zero_is_contraindicated() {
    // Trustee's VLEK test report was requested at VMPL 1.
    let report = td("snp", "trustee-test-vlek-report.bin");
    let v = backend_with(&["trustee-test-vlek.der"], "{}");
    let a = v
        .appraise(TeeKind::Snp, &report, None, None, JUNE_2025)
        .unwrap();
    let f = a.checks.iter().find(|c| c.claim == "vmpl").unwrap();
    assert!(!f.ok);
    assert_eq!(f.category, cloister_attestation::Category::UnsafeState);
    assert_eq!(a.status, cloister_attestation::Status::Contraindicated);
    assert_eq!(a.trust_vector["configuration"], 96);
    assert_eq!(a.trust_vector["runtime-opaque"], 96);
}

/// Trustee JSON evidence as the guest agent sends it without the host's
/// certificates (`cert_chain: null`): the VCEK comes from the collateral
/// directory; without one the evidence is unusable, naming the VCEK.
#[test]
fn json_evidence_without_a_cert_chain_takes_the_vcek_from_the_collateral_dir() {
    use cloister_tee_types::snp_evidence::SnpEvidence;
    let report = td("snp", "virtee-sev-report_milan.bin");
    let json = serde_json::to_vec(&SnpEvidence::from_raw(&report, None).unwrap()).unwrap();
    let v = backend_with(&["virtee-sev-vcek_milan.der"], "{}");
    let a = v
        .appraise(TeeKind::Snp, &json, None, None, JUNE_2025)
        .unwrap();
    for claim in ["snp endorsement chain", "snp report signature"] {
        let c = a.checks.iter().find(|c| c.claim == claim).unwrap();
        assert!(c.ok, "{c:?}");
    }
    let bare = Verifier::new(VerifierConfig::default())
        .unwrap()
        .with_verifier(
            TeeKind::Snp,
            Arc::new(SnpEvidenceVerifier::new(None).unwrap()),
        );
    let e = bare
        .appraise(TeeKind::Snp, &json, None, None, JUNE_2025)
        .unwrap_err();
    assert!(e.to_string().contains("no VCEK certificate given"), "{e}");
}
