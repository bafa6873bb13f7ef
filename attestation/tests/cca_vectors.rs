//! Every CCA vector in testdata/cca with the outcome its SOURCES.md states.
#![allow(clippy::unwrap_used)]

use cloister_attestation::cca::{self, Collection, PlatformClaims, RealmClaims, TrustAnchorStore};
use cloister_attestation::{Category, ReferenceValues, Status, TeeKind, Verifier, VerifierConfig};

const TD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cca/");

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{TD}{p}")).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn store(p: &str) -> TrustAnchorStore {
    TrustAnchorStore::parse(&String::from_utf8(read(p)).unwrap()).unwrap()
}

#[derive(Debug, PartialEq)]
enum Want {
    AllOk,
    BindingFails,
    PlatformSigFails,
}

#[test]
fn tokens_verify_as_sources_md_states() {
    let cases: &[(&str, &str, Collection, Want)] = &[
        (
            "ccatoken-cca-token-01.cbor",
            "ccatoken-cpak.json",
            Collection::Tag399,
            Want::AllOk,
        ),
        (
            "ccatoken-cca-token-01.cbor",
            "ccatoken-ta-tfa.json",
            Collection::Tag399,
            Want::AllOk,
        ),
        (
            "ccatoken-cca-token-02.cbor",
            "ccatoken-ta-02-ok.json",
            Collection::Tag399,
            Want::AllOk,
        ),
        (
            "ccatoken-cca-token-02.cbor",
            "ccatoken-ta-02-bad.json",
            Collection::Tag399,
            Want::PlatformSigFails,
        ),
        (
            "ccatoken-bug-33-repro.cbor",
            "ccatoken-ta-tfa.json",
            Collection::Tag399,
            Want::BindingFails,
        ),
        (
            "ccatoken-cca-token-draft-ffm-00.cbor",
            "ccatoken-ta-tfa.json",
            Collection::Tag399,
            Want::AllOk,
        ),
        (
            "trustee-cca-example-token.cbor",
            "trustee-tastore.json",
            Collection::Tag399,
            Want::AllOk,
        ),
        (
            "tokens/tf-m-tools/cca_example_token.cbor",
            "keys/tf-cpak-p384.pub.pem",
            Collection::Tag907,
            Want::AllOk,
        ),
        (
            "tokens/tf-m-tools/cca_example_token.realm-1.0.0.cbor",
            "keys/tf-cpak-p384.pub.pem",
            Collection::Tag907,
            Want::AllOk,
        ),
        (
            "tokens/tf-m-tools/cca_example_token_legacy.cbor",
            "keys/tf-cpak-p384.pub.pem",
            Collection::Tag907,
            Want::AllOk,
        ),
        (
            "tokens/tf-m-tools/cca_token.cbor",
            "keys/tf-cpak-p384.pub.pem",
            Collection::Tag907,
            Want::AllOk,
        ),
        (
            "tokens/veraison-services/cca-good.cbor",
            "keys/veraison-services-iak-p256.pub.jwk",
            Collection::Tag399,
            Want::AllOk,
        ),
        (
            "tokens/veraison-services/e2e-cca-evidence.cbor",
            "ccatoken-ta-02-ok.json",
            Collection::Tag399,
            Want::AllOk,
        ),
    ];
    for (tok, ta, coll, want) in cases {
        let t = cca::decode(&read(tok)).unwrap_or_else(|e| panic!("{tok}: {e}"));
        assert_eq!(t.collection, *coll, "{tok}");
        let v = t.verify(&store(ta));
        let failed: Vec<_> = v.checks.iter().filter(|c| !c.ok).collect();
        match want {
            Want::AllOk => assert!(failed.is_empty(), "{tok} with {ta}: {failed:#?}"),
            Want::BindingFails => {
                assert_eq!(failed.len(), 1, "{tok}: {failed:#?}");
                assert_eq!(failed[0].category, Category::Binding, "{tok}");
            }
            Want::PlatformSigFails => {
                assert_eq!(failed.len(), 1, "{tok}: {failed:#?}");
                assert_eq!(failed[0].claim, "platform signature", "{tok}");
                assert!(
                    failed[0].found.contains("trust anchor key unusable"),
                    "{:?}",
                    failed[0]
                );
            }
        }
    }
}

#[test]
fn profiles_and_rak_forms_are_recognised() {
    let t = cca::decode(&read("tokens/tf-m-tools/cca_example_token.cbor")).unwrap();
    assert_eq!(t.platform_claims.profile, cca::PlatformProfile::V1);
    assert_eq!(t.realm_claims.profile, Some(cca::RealmProfile::V2));
    assert_eq!(
        t.realm_claims.instance_id.as_ref().map(|i| i.len()),
        Some(33)
    );
    assert_eq!(t.realm_claims.mec_policy, Some(cca::MecPolicy::Int(1)));
    let t = cca::decode(&read(
        "tokens/tf-m-tools/cca_example_token.realm-1.0.0.cbor",
    ))
    .unwrap();
    assert_eq!(t.realm_claims.profile, Some(cca::RealmProfile::V1));
    assert_eq!(
        t.realm_claims.mec_policy,
        Some(cca::MecPolicy::Text("private".into()))
    );
    let t = cca::decode(&read("tokens/tf-m-tools/cca_example_token_legacy.cbor")).unwrap();
    assert_eq!(t.platform_claims.profile, cca::PlatformProfile::Legacy);
    assert_eq!(t.realm_claims.profile, None);
    assert_eq!(t.realm_claims.rak.len(), 97);
    let t = cca::decode(&read("ccatoken-cca-token-02.cbor")).unwrap();
    assert_eq!(t.platform_alg, cca::SigAlg::Es256);
    assert_eq!(t.realm_alg, cca::SigAlg::Es384);
    assert_eq!(t.realm_claims.rak_hash_algo_id, cca::HashAlg::Sha512);
    let t = cca::decode(&read("ccatoken-cca-token-01.cbor")).unwrap();
    assert_eq!(t.realm_claims.challenge, [0xab; 64]);
    assert_eq!(
        &t.realm_claims.personalization_value[..],
        b"The quick brown fox jumps over 13 lazy dogs.The quick brown fox "
    );
    assert_eq!(t.platform_claims.lifecycle, 0x3003);
    assert_eq!(t.platform_claims.sw_components.len(), 4);
}

#[test]
fn platform_token_alone_is_not_a_collection() {
    let err = cca::decode(&read("tokens/tf-m-tools/cca_example_platform_token.cbor")).unwrap_err();
    assert!(err.to_string().contains("tag 399 or 907"), "{err}");
}

#[test]
fn bare_claim_sets() {
    PlatformClaims::from_cbor(&read("ccatoken-platform-claims.cbor")).unwrap();
    RealmClaims::from_cbor(&read("ccatoken-realm-claims.cbor")).unwrap();
    let e =
        RealmClaims::from_cbor(&read("ccatoken-realm-claims-missing-challenge.cbor")).unwrap_err();
    assert_eq!(e.to_string(), "missing mandatory claim realm challenge");
    let e = RealmClaims::from_cbor(&read("ccatoken-realm-claims+spurious-numeric-key.cbor"))
        .unwrap_err();
    assert!(e.to_string().starts_with("unknown claim"), "{e}");
    let e =
        RealmClaims::from_cbor(&read("ccatoken-realm-claims+spurious-text-key.cbor")).unwrap_err();
    assert!(e.to_string().starts_with("unknown claim"), "{e}");
}

/// go-ccatoken JSON claim vectors: valid ones decode, the others are
/// rejected (the file name states the defect).
#[test]
fn go_ccatoken_json_claims() {
    for (dir, platform) in [
        ("claims/go-ccatoken/platform", true),
        ("claims/go-ccatoken/realm", false),
    ] {
        let mut n = 0;
        for e in std::fs::read_dir(format!("{TD}{dir}")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().and_then(|x| x.to_str()) != Some("json") {
                continue;
            }
            let name = p.file_name().unwrap().to_str().unwrap().to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            let j: serde_json::Value = match serde_json::from_str(&text) {
                Ok(j) => j,
                Err(_) => {
                    assert!(
                        !name.contains("valid-full") && !name.contains("all-valid"),
                        "{name}"
                    );
                    n += 1;
                    continue;
                }
            };
            let r = if platform {
                PlatformClaims::from_json(&j).map(|_| ())
            } else {
                RealmClaims::from_json(&j).map(|_| ())
            };
            let should_pass = name.contains("valid-full") || name.contains("all-valid");
            assert_eq!(r.is_ok(), should_pass, "{dir}/{name}: {r:?}");
            n += 1;
        }
        assert!(n >= 10, "{dir}: only {n} vectors");
    }
}

fn verifier(ta: &str, rv: Option<&str>) -> Verifier {
    let mut cfg = VerifierConfig {
        cca_trust_anchors: store(ta),
        ..Default::default()
    };
    if let Some(rv) = rv {
        cfg.reference_values =
            ReferenceValues::parse(&String::from_utf8(read(rv)).unwrap()).unwrap();
    }
    Verifier::new(cfg).unwrap()
}

#[test]
fn token_01_appraises_ok_against_rv_json() {
    let v = verifier("ccatoken-ta-tfa.json", Some("ccatoken-rv.json"));
    let nonce = cloister_attestation::ReportData([0xab; 64]);
    let a = v
        .appraise(
            TeeKind::Cca,
            &read("ccatoken-cca-token-01.cbor"),
            Some(nonce),
            None,
            0,
        )
        .unwrap();
    assert_eq!(a.status, Status::Affirming, "{:#?}", a.failures);
    assert!(a.failures.is_empty());
    assert_eq!(a.trust_vector["instance-identity"], 2);
    assert_eq!(a.trust_vector["executables"], 2);
    assert_eq!(a.trust_vector["hardware"], 2);
    assert!(!a.simulated);
}

#[test]
fn trustee_example_token_against_trustee_rvstore() {
    let v = verifier("trustee-tastore.json", Some("trustee-rvstore.json"));
    let a = v
        .appraise(
            TeeKind::Cca,
            &read("trustee-cca-example-token.cbor"),
            None,
            None,
            0,
        )
        .unwrap();
    assert_eq!(a.status, Status::Affirming, "{:#?}", a.failures);
    // The stale challenge is not the nonce we expect: freshness fails.
    let a = v
        .appraise(
            TeeKind::Cca,
            &read("trustee-cca-example-token.cbor"),
            Some(cloister_attestation::ReportData([7; 64])),
            None,
            0,
        )
        .unwrap();
    assert_eq!(a.status, Status::Contraindicated);
    assert_eq!(a.failures.len(), 1, "{:#?}", a.failures);
    assert_eq!(a.failures[0].claim, "report_data");
    assert_eq!(a.failures[0].expected, hex::encode([7u8; 64]));
}

#[test]
fn bug_33_is_contraindicated_naming_the_binding() {
    let v = verifier("ccatoken-ta-tfa.json", None);
    let a = v
        .appraise(
            TeeKind::Cca,
            &read("ccatoken-bug-33-repro.cbor"),
            None,
            None,
            0,
        )
        .unwrap();
    assert_eq!(a.status, Status::Contraindicated);
    assert_eq!(a.trust_vector["instance-identity"], 99);
    assert!(
        a.failures.iter().any(|f| f.claim.contains("RAK binding")),
        "{:#?}",
        a.failures
    );
}

#[test]
fn ta_02_bad_is_a_crypto_failure() {
    let v = verifier("ccatoken-ta-02-bad.json", None);
    let a = v
        .appraise(
            TeeKind::Cca,
            &read("ccatoken-cca-token-02.cbor"),
            None,
            None,
            0,
        )
        .unwrap();
    assert_eq!(a.status, Status::Contraindicated);
    assert_eq!(a.trust_vector["instance-identity"], 99);
    assert_eq!(a.failures[0].claim, "platform signature");
}

#[test]
fn unknown_root_is_unrecognized_instance() {
    // cca-token-01 against the P-256 store of another platform.
    let v = verifier("ccatoken-ta-02-ok.json", None);
    let a = v
        .appraise(
            TeeKind::Cca,
            &read("ccatoken-cca-token-01.cbor"),
            None,
            None,
            0,
        )
        .unwrap();
    assert_eq!(a.status, Status::Contraindicated);
    assert_eq!(a.trust_vector["instance-identity"], 97);
    assert_eq!(a.failures[0].claim, "platform trust anchor");
}

#[test]
fn trustee_evidence_json_wrapper_is_accepted() {
    let tok = read("ccatoken-cca-token-01.cbor");
    let json = serde_json::json!({"token": tok}).to_string();
    let v = verifier("ccatoken-ta-tfa.json", None);
    let a = v
        .appraise(TeeKind::Cca, json.as_bytes(), None, None, 0)
        .unwrap();
    assert!(a.failures.is_empty(), "{:#?}", a.failures);
}
