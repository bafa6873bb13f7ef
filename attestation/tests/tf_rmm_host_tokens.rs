//! The tokens the reference RMM (TF-RMM v0.8.0, host build) issued for the
//! realm builds in tee-backends/measure/testdata/cca/tf-rmm-host: each
//! verifies with the TF-A sample anchor and is affirming against its RIM,
//! RPV and challenge; one flipped bit of the RIM reference fails it.

#![allow(clippy::unwrap_used)] // tests may unwrap

use cloister_attestation::cca::TrustAnchorStore;
use cloister_attestation::{
    ReferenceValues, ReportData, Status, TeeKind, Verifier, VerifierConfig,
};

const TD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tee-backends/measure/testdata/cca/tf-rmm-host/"
);

fn read(name: &str) -> String {
    std::fs::read_to_string(format!("{TD}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The scenario's `rpv` (zero when absent) and `attest` challenge.
fn rpv_and_challenge(scen: &str) -> (String, [u8; 64]) {
    let mut rpv = "00".repeat(64);
    let mut challenge = [0u8; 64];
    for line in scen.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.first() {
            Some(&"rpv") => rpv = w[1].to_owned(),
            Some(&"attest") => challenge.copy_from_slice(&hex::decode(w[1]).unwrap()),
            _ => {}
        }
    }
    (rpv, challenge)
}

fn verifier(rim: &str, rpv: &str) -> Verifier {
    let anchors = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/cca/ccatoken-ta-tfa.json"
    ))
    .unwrap();
    // The RMM host build hashes its RAK with SHA-256 whatever the realm's
    // measurement algorithm.
    let rv = format!(
        r#"{{"cca": {{"realm": [{{"initial-measurement": "{rim}", "personalization-value": "{rpv}", "rak-hash-algorithm": "sha-256"}}]}}}}"#
    );
    Verifier::new(VerifierConfig {
        cca_trust_anchors: TrustAnchorStore::parse(&anchors).unwrap(),
        reference_values: ReferenceValues::parse(&rv).unwrap(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn every_reference_rmm_token_is_affirming_and_a_flipped_rim_is_not() {
    let mut names: Vec<String> = std::fs::read_dir(TD)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_suffix(".scen").map(str::to_owned)
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), 9);
    for name in &names {
        let (rpv, challenge) = rpv_and_challenge(&read(&format!("{name}.scen")));
        let rim = read(&format!("{name}.rim")).trim().to_owned();
        let token = std::fs::read(format!("{TD}{name}.token.cbor")).unwrap();
        let a = verifier(&rim, &rpv)
            .appraise(TeeKind::Cca, &token, Some(ReportData(challenge)), None, 0)
            .unwrap();
        assert_eq!(a.status, Status::Affirming, "{name}: {:#?}", a.failures);
        // One flipped bit of the expected RIM: no longer affirming.
        let mut flipped = hex::decode(&rim).unwrap();
        flipped[0] ^= 1;
        let a = verifier(&hex::encode(flipped), &rpv)
            .appraise(TeeKind::Cca, &token, Some(ReportData(challenge)), None, 0)
            .unwrap();
        assert_ne!(a.status, Status::Affirming, "{name} with another RIM");
    }
}
