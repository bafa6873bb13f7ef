//! The EAR JWT payload uses Trustee's claim names (`ear.status`,
//! `ear.trustworthiness-vector`, `ear.verifier-id`, ...), not the
//! underscore spelling of draft-ietf-rats-ear-04 that the `ear` crate 0.6
//! writes, and Trustee's own `ear` version (0.5) verifies and reads it.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cloister_attestation::cca::TrustAnchorStore;
use cloister_attestation::ear::{EarIssuer, Submod, ANNOTATED_EVIDENCE, EAR_PROFILE};
use cloister_attestation::{ReferenceValues, ReportData, TeeKind, Verifier, VerifierConfig};
use serde_json::Value;

fn read(p: &str) -> String {
    std::fs::read_to_string(format!("{}/testdata/cca/{p}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn no_underscore_ear_keys(v: &Value, path: &str) {
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            assert!(!k.starts_with("ear_"), "{path}/{k}: draft-04 spelling");
            no_underscore_ear_keys(x, &format!("{path}/{k}"));
        }
    }
}

#[test]
fn jwt_payload_uses_trustee_claim_names() {
    let v = Verifier::new(VerifierConfig {
        cca_trust_anchors: TrustAnchorStore::parse(&read("ccatoken-ta-tfa.json")).unwrap(),
        reference_values: ReferenceValues::parse(&read("ccatoken-rv.json")).unwrap(),
        ..Default::default()
    })
    .unwrap();
    let token = std::fs::read(format!(
        "{}/testdata/cca/ccatoken-cca-token-01.cbor",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    // Trustee's jsonwebtoken-based check judges `exp` by the system clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let a = v
        .appraise(
            TeeKind::Cca,
            &token,
            Some(ReportData([0xab; 64])),
            None,
            now,
        )
        .unwrap();
    assert!(a.affirming(), "{:?}", a.failures);
    let issuer = EarIssuer::generate();
    let sub = || Submod {
        name: "cpu0".into(),
        appraisal: &a,
        runtime_data_claims: Some(serde_json::json!({"nonce": "n"})),
        init_data_claims: None,
    };
    let jwt = issuer.issue(&[sub()], now).unwrap();
    let payload: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    // The CLI prints the same claims set.
    let mut printed = issuer.claims_json(&[sub()], now).unwrap();
    printed["ear.verifier-id"] = payload["ear.verifier-id"].clone();
    assert_eq!(printed, payload);

    assert_eq!(
        keys(&payload),
        BTreeSet::from([
            "eat_profile",
            "iat",
            "exp",
            "ear.verifier-id",
            "ear.status",
            "submods"
        ])
    );
    assert_eq!(payload["eat_profile"], EAR_PROFILE);
    assert_eq!(payload["iat"], now);
    assert_eq!(payload["ear.status"], "affirming");
    assert_eq!(
        keys(&payload["ear.verifier-id"]),
        BTreeSet::from(["developer", "build"])
    );
    let cpu0 = &payload["submods"]["cpu0"];
    assert_eq!(
        keys(cpu0),
        BTreeSet::from([
            "ear.status",
            "ear.trustworthiness-vector",
            "ear.appraisal-policy-id",
            ANNOTATED_EVIDENCE,
            "ear.cloister.simulated",
        ])
    );
    assert_eq!(ANNOTATED_EVIDENCE, "ear.veraison.annotated-evidence");
    assert_eq!(cpu0["ear.status"], "affirming");
    assert_eq!(cpu0["ear.appraisal-policy-id"], "appraisal.rego");
    assert_eq!(cpu0["ear.trustworthiness-vector"]["instance-identity"], 2);
    no_underscore_ear_keys(&payload, "");

    // Trustee's `ear` version verifies the JWT with our public JWK and reads
    // the status, trust vector and annotated evidence under these names.
    let jwk = issuer.public_jwk().to_string();
    let e = ear_trustee::Ear::from_jwt_jwk(&jwt, ear_trustee::Algorithm::ES256, jwk.as_bytes())
        .unwrap();
    assert_eq!(e.profile, EAR_PROFILE);
    assert_eq!(e.iat, now);
    let t = &e.submods["cpu0"];
    assert_eq!(t.status, ear_trustee::TrustTier::Affirming);
    assert_eq!(t.policy_id.as_deref(), Some("appraisal.rego"));
    assert_eq!(
        serde_json::to_value(t.trust_vector).unwrap(),
        cpu0["ear.trustworthiness-vector"]
    );
    assert!(t.annotated_evidence.contains_key("cca"));
    assert!(t.annotated_evidence.contains_key("runtime_data_claims"));
}
