//! Fuzz the SNP and TDX evidence JSON shapes a KBS receives from Trustee
//! clients, through the whole verifier as the KBS calls it: SNP
//! `{"attestation_report": {...}, "cert_chain": [...]}` and TDX
//! `{"quote": base64, "cc_eventlog": base64 | null}`. The first byte picks
//! the TEE; the rest is the JSON. Appraisal must return an appraisal or a
//! typed error, never panic. Seeds: attestation/testdata/snp (JSON) and
//! `corpus/evidence_json` seeds made from the TDX vectors (docs/fuzzing.md).
#![no_main]

use std::sync::{Arc, OnceLock};

use cloister_attestation::verifiers::{SnpEvidenceVerifier, TdxEvidenceVerifier};
use cloister_attestation::{ReportData, Tee, Verifier, VerifierConfig};
use libfuzzer_sys::fuzz_target;

/// 2025-06-01, inside the test certificates' validity.
const NOW: i64 = 1_748_736_000;

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let snp = SnpEvidenceVerifier::new(None).expect("built-in AMD roots parse");
        let tdx = TdxEvidenceVerifier::new(None).expect("Intel root parses");
        Verifier::new(VerifierConfig::default())
            .expect("shipped appraisal policy compiles")
            .with_verifier(Tee::Snp, Arc::new(snp))
            .with_verifier(Tee::Tdx, Arc::new(tdx))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    let tee = if sel & 1 == 0 { Tee::Snp } else { Tee::Tdx };
    let _ = verifier().appraise(tee, json, Some(ReportData([0; 64])), Some(&[0; 32]), NOW);
    let _ = cloister_attestation::verifiers::unwrap_tdx_evidence(json);
    let _ = cloister_attestation::snp::from_trustee_json(json);
});
