//! The CCA token builder, the sim path, tampering and malformed input.
#![allow(clippy::unwrap_used)]

use cloister_attestation::cca::{
    self, Collection, SigAlg, SigningKey, TokenSpec, TrustAnchor, TrustAnchorStore,
};
use cloister_attestation::ear::{verify_jwt, EarIssuer, Submod};
use cloister_attestation::{
    Category, ReferenceValues, ReportData, Status, TeeKind, Verifier, VerifierConfig,
};

fn spec(coll: Collection, cose_key: bool) -> TokenSpec {
    let mut s = TokenSpec::new(
        [0x42; 64],
        [0x17; 64],
        vec![0x33; 32],
        [vec![0; 32], vec![1; 32], vec![2; 32], vec![3; 32]],
    );
    s.collection = coll;
    s.rak_as_cose_key = cose_key;
    s
}

fn anchor(cpak: &SigningKey, s: &TokenSpec, simulated: bool) -> TrustAnchorStore {
    TrustAnchorStore::new(vec![TrustAnchor {
        implementation_id: Some(s.platform.implementation_id.clone()),
        instance_id: Some(s.platform.instance_id.clone()),
        key: Ok(cpak.public()),
        simulated,
    }])
}

#[test]
fn built_tokens_roundtrip_in_every_form() {
    for alg in [SigAlg::Es256, SigAlg::Es384, SigAlg::Es512] {
        for coll in [Collection::Tag399, Collection::Tag907] {
            for cose_key in [true, false] {
                let cpak = SigningKey::generate(alg);
                let rak = SigningKey::generate(SigAlg::Es384);
                let s = spec(coll, cose_key);
                let tok = cca::build(&s, &cpak, &rak).unwrap();
                let t = cca::decode(&tok).unwrap();
                assert_eq!(t.collection, coll);
                assert_eq!(t.platform_alg, alg);
                assert_eq!(t.realm_claims.challenge, [0x42; 64]);
                assert_eq!(t.realm_claims.rak.len() == 97, !cose_key);
                let v = t.verify(&anchor(&cpak, &s, false));
                assert!(v.ok(), "{alg:?} {coll:?} {cose_key}: {:#?}", v.checks);
            }
        }
    }
}

#[test]
fn rak_must_be_p384() {
    let s = spec(Collection::Tag907, true);
    let err = cca::build(
        &s,
        &SigningKey::generate(SigAlg::Es384),
        &SigningKey::generate(SigAlg::Es256),
    )
    .unwrap_err();
    assert!(err.to_string().contains("P-384"), "{err}");
}

/// Flip one byte in every signed region (protected header, payload,
/// signature) of both COSE_Sign1 messages: each is rejected, naming the
/// signature (or, for a tampered payload that no longer decodes, the claim).
#[test]
fn flipping_a_byte_in_any_signed_region_is_rejected() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let s = spec(Collection::Tag399, true);
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let store = anchor(&cpak, &s, false);
    let t = cca::decode(&tok).unwrap();
    let plat_payload = t.platform.payload.clone().unwrap();
    let realm_payload = t.realm.payload.clone().unwrap();
    // (signature named, region, offset inside the region)
    let regions: Vec<(&str, Vec<u8>, usize)> = vec![
        ("platform signature", t.platform.signature.clone(), 0),
        ("platform signature", t.platform.signature.clone(), 95),
        // inside the sw-component measurement (0x11 x 32)
        (
            "platform signature",
            plat_payload.clone(),
            find(&plat_payload, &[0x11; 32]).unwrap() + 5,
        ),
        // inside the platform config (0xcf x 4)
        (
            "platform signature",
            plat_payload.clone(),
            find(&plat_payload, &[0xcf; 4]).unwrap() + 1,
        ),
        (
            "platform signature",
            t.platform.protected.original_data.clone().unwrap(),
            3,
        ),
        ("realm signature", t.realm.signature.clone(), 0),
        ("realm signature", t.realm.signature.clone(), 50),
        // inside the RIM (0x33 x 32) and the RPV (0x17 x 64)
        (
            "realm signature",
            realm_payload.clone(),
            find(&realm_payload, &[0x33; 32]).unwrap() + 7,
        ),
        (
            "realm signature",
            realm_payload.clone(),
            find(&realm_payload, &[0x17; 64]).unwrap() + 63,
        ),
        (
            "realm signature",
            t.realm.protected.original_data.clone().unwrap(),
            3,
        ),
    ];
    let mut by_signature = 0;
    for (which, region, off) in regions {
        // Both protected headers are identical bytes: search the realm's
        // after the platform token.
        let from = if which.starts_with("realm") {
            find(&tok, &realm_payload).unwrap() - 16
        } else {
            0
        };
        let at = from + find(&tok[from..], &region).expect("region is in the token");
        let mut bad = tok.clone();
        bad[at + off] ^= 0x01;
        match cca::decode(&bad) {
            Err(e) => {
                // Only the protected header (alg) may fail to decode; the
                // error names the token it is in.
                let token = which.split(' ').next().unwrap();
                assert!(e.to_string().starts_with(token), "{which} at {off}: {e}");
            }
            Ok(t2) => {
                let v = t2.verify(&store);
                let failed: Vec<_> = v.checks.iter().filter(|c| !c.ok).collect();
                assert!(
                    failed
                        .iter()
                        .any(|c| c.claim == which && c.category == Category::Signature),
                    "{which} at {off}: {failed:#?}"
                );
                by_signature += 1;
            }
        }
    }
    assert!(
        by_signature >= 8,
        "only {by_signature} tamperings reached signature verification"
    );
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn truncated_and_oversized_input_is_unusable() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let tok = cca::build(&spec(Collection::Tag907, true), &cpak, &rak).unwrap();
    for n in [0, 1, 10, tok.len() / 2, tok.len() - 1] {
        assert!(cca::decode(&tok[..n]).is_err(), "truncated to {n} accepted");
    }
    let mut big = tok.clone();
    big.resize(cca::MAX_TOKEN_SIZE + 1, 0);
    let e = cca::decode(&big).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    let mut trailing = tok.clone();
    trailing.push(0);
    let e = cca::decode(&trailing).unwrap_err();
    assert!(e.to_string().contains("trailing"), "{e}");
}

#[test]
fn claim_with_wrong_size_is_rejected_with_reason() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let mut s = spec(Collection::Tag907, true);
    s.realm.rim = vec![0; 20];
    let e = cca::build(&s, &cpak, &rak).unwrap_err();
    assert_eq!(
        e.to_string(),
        "claims are not valid: realm initial-measurement: expected 32 or 48 or 64 bytes, found 20"
    );
    let mut s = spec(Collection::Tag907, true);
    s.platform.implementation_id = vec![0; 31];
    let e = cca::build(&s, &cpak, &rak).unwrap_err();
    assert!(
        e.to_string()
            .contains("platform implementation-id: expected 32 bytes, found 31"),
        "{e}"
    );
    // And the decoder: hand-encode a realm claims map with a 63-byte challenge.
    let mut realm = cca::decode(&cca::build(&spec(Collection::Tag399, true), &cpak, &rak).unwrap())
        .unwrap()
        .realm_claims
        .to_value();
    if let ciborium::value::Value::Map(m) = &mut realm {
        for (k, v) in m.iter_mut() {
            if k.as_integer().map(i128::from) == Some(10) {
                *v = ciborium::value::Value::Bytes(vec![0; 63]);
            }
        }
    }
    let e = cca::RealmClaims::from_value(&realm).unwrap_err();
    assert_eq!(
        e.to_string(),
        "realm challenge: expected 64 bytes, found 63"
    );
}

fn sim_verifier(store: TrustAnchorStore, allow: bool, rv: ReferenceValues) -> Verifier {
    Verifier::new(VerifierConfig {
        cca_trust_anchors: store,
        reference_values: rv,
        allow_simulated: allow,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn sim_tokens_are_marked_simulated() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let s = spec(Collection::Tag907, true);
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let rv = ReferenceValues::parse(&format!(
        r#"{{"cca": {{"realm": [{{"initial-measurement": "{}", "personalization-value": "{}"}}]}}}}"#,
        hex::encode([0x33; 32]),
        hex::encode([0x17; 64])
    ))
    .unwrap();
    let nonce = ReportData([0x42; 64]);
    // Refused by default ...
    let v = sim_verifier(anchor(&cpak, &s, true), false, rv.clone());
    let a = v
        .appraise(TeeKind::Sim, &tok, Some(nonce), Some(&[0x17; 64]), 0)
        .unwrap();
    assert!(a.simulated);
    assert_eq!(a.status, Status::Contraindicated);
    assert!(
        a.failures.iter().any(|f| f.claim == "simulated"),
        "{:#?}",
        a.failures
    );
    // ... appraised on its checks when allowed, still marked simulated, and
    // never rated as hardware: warning at best.
    let v = sim_verifier(anchor(&cpak, &s, true), true, rv.clone());
    let a = v
        .appraise(TeeKind::Sim, &tok, Some(nonce), Some(&[0x17; 64]), 0)
        .unwrap();
    assert_eq!(a.status, Status::Warning, "{:#?}", a.failures);
    assert_eq!(a.trust_vector["hardware"], 32);
    assert_eq!(a.trust_vector["runtime-opaque"], 32);
    assert!(a.simulated);
    assert!(a.failures.is_empty(), "{:#?}", a.failures);
    // Sim evidence against a hardware trust anchor is not sim.
    let v = sim_verifier(anchor(&cpak, &s, false), true, rv.clone());
    let a = v
        .appraise(TeeKind::Sim, &tok, Some(nonce), None, 0)
        .unwrap();
    assert_eq!(a.status, Status::Contraindicated);
    // The same token as CCA with a hardware anchor: affirming.
    let a = v
        .appraise(TeeKind::Cca, &tok, Some(nonce), Some(&[0x17; 64]), 0)
        .unwrap();
    assert_eq!(a.status, Status::Affirming, "{:#?}", a.failures);
}

#[test]
fn wrong_nonce_and_wrong_initdata_are_named() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let s = spec(Collection::Tag907, true);
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let v = sim_verifier(anchor(&cpak, &s, false), false, ReferenceValues::default());
    // A 32-byte nonce is zero-padded to 64 bytes before comparison.
    let a = v
        .appraise(
            TeeKind::Cca,
            &tok,
            Some(ReportData::from_padded(&[0x42; 32]).unwrap()),
            Some(&[9; 32]),
            0,
        )
        .unwrap();
    assert_eq!(a.status, Status::Contraindicated);
    let claims: Vec<_> = a.failures.iter().map(|f| f.claim.as_str()).collect();
    assert_eq!(claims, ["report_data", "init_data"]);
    assert_eq!(a.failures[0].found, hex::encode([0x42; 64]));
    assert!(a.failures[0].expected.starts_with(&hex::encode([0x42; 32])));
    assert!(a.failures[1].expected.starts_with(&hex::encode([9; 32])));
}

#[test]
fn reference_value_mismatch_names_the_measurement() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let s = spec(Collection::Tag907, true);
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let rv = ReferenceValues::parse(&format!(
        r#"{{"cca": {{"realm": [{{"initial-measurement": "{}", "extensible-measurements": ["{z}", "{z}", "{z}", "{z}"]}}]}}}}"#,
        hex::encode([0x33; 32]),
        z = hex::encode([0; 32])
    ))
    .unwrap();
    let v = sim_verifier(anchor(&cpak, &s, false), false, rv);
    let a = v.appraise(TeeKind::Cca, &tok, None, None, 0).unwrap();
    assert_eq!(a.status, Status::Warning);
    assert_eq!(a.trust_vector["executables"], 33);
    let names: Vec<_> = a.failures.iter().map(|f| f.claim.as_str()).collect();
    assert_eq!(
        names,
        [
            "realm extensible-measurements[1]",
            "realm extensible-measurements[2]",
            "realm extensible-measurements[3]"
        ]
    );
    assert_eq!(a.failures[0].expected, hex::encode([0; 32]));
    assert_eq!(a.failures[0].found, hex::encode([1; 32]));
}

#[test]
fn ear_jwt_carries_submods_and_runtime_data() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let s = spec(Collection::Tag907, true);
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let v = sim_verifier(anchor(&cpak, &s, false), false, ReferenceValues::default());
    let a = v
        .appraise(
            TeeKind::Cca,
            &tok,
            Some(ReportData([0x42; 64])),
            None,
            1_700_000_000,
        )
        .unwrap();
    let issuer = EarIssuer::generate();
    let jwk = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "BB"});
    let sub = Submod {
        name: "cpu0".into(),
        appraisal: &a,
        runtime_data_claims: Some(serde_json::json!({"tee-pubkey": jwk, "nonce": "n"})),
        init_data_claims: None,
    };
    let jwt = issuer.issue(&[sub], 1_700_000_000).unwrap();
    let claims = verify_jwt(&jwt, &issuer.verifying_key(), 1_700_000_100).unwrap();
    let cpu0 = &claims["submods"]["cpu0"];
    assert_eq!(
        cpu0["ear.veraison.annotated-evidence"]["runtime_data_claims"]["tee-pubkey"],
        jwk
    );
    assert_eq!(cpu0["ear.status"], "warning", "{claims:#}");
    assert_eq!(cpu0["ear.cloister.simulated"], false);
    assert_eq!(
        cpu0["ear.veraison.annotated-evidence"]["cca"]["realm"]["cca-realm-challenge"],
        serde_json::json!(base64_std(&[0x42; 64]))
    );
    assert_eq!(
        claims["eat_profile"],
        cloister_attestation::ear::EAR_PROFILE
    );
    // Tampered or expired tokens are refused.
    let mut bad = jwt.clone().into_bytes();
    let i = bad.len() / 2;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    assert!(verify_jwt(
        std::str::from_utf8(&bad).unwrap(),
        &issuer.verifying_key(),
        1_700_000_100
    )
    .is_err());
    let e = verify_jwt(&jwt, &issuer.verifying_key(), 1_800_000_000).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
}

fn base64_std(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn verifier_and_issuer_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + Clone + 'static>() {}
    shared::<Verifier>();
    shared::<EarIssuer>();
}

#[test]
fn platform_cache_skips_only_a_verified_identical_platform_token() {
    use cloister_attestation::cca::PlatformCache;
    let cpak = SigningKey::generate(SigAlg::Es384);
    let s = spec(Collection::Tag907, true);
    let store = anchor(&cpak, &s, false);
    let tok = cca::build(&s, &cpak, &SigningKey::generate(SigAlg::Es384)).unwrap();
    let t = cca::decode(&tok).unwrap();
    let cache = PlatformCache::new(4);
    assert!(t.verify_with_cache(&store, &cache).ok());
    assert_eq!(cache.len(), 1);
    assert!(t.verify_with_cache(&store, &cache).ok());
    assert_eq!(cache.len(), 1);

    let failed = |v: &cca::Verified| -> Vec<String> {
        v.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.claim.clone())
            .collect()
    };
    // Same platform token (a hit), realm signature broken: still rejected.
    let mut bad = t.clone();
    bad.realm.signature[5] ^= 1;
    assert_eq!(
        failed(&bad.verify_with_cache(&store, &cache)),
        ["realm signature"]
    );
    // Platform signature broken: a different cache key, verified, rejected.
    let mut bad = t.clone();
    bad.platform.signature[5] ^= 1;
    assert_eq!(
        failed(&bad.verify_with_cache(&store, &cache)),
        ["platform signature"]
    );
    assert_eq!(cache.len(), 1, "failures are not remembered");
    // Another store (another CPAK for the same ids): no hit, rejected.
    let other = anchor(&SigningKey::generate(SigAlg::Es384), &s, false);
    assert_ne!(other.generation(), store.generation());
    assert_eq!(
        failed(&t.verify_with_cache(&other, &cache)),
        ["platform signature"]
    );
    // The store changes: a new generation, so old entries no longer hit.
    let mut grown = store.clone();
    assert_eq!(grown.generation(), store.generation());
    grown.push(TrustAnchor {
        implementation_id: None,
        instance_id: None,
        key: Ok(SigningKey::generate(SigAlg::Es256).public()),
        simulated: false,
    });
    assert_ne!(grown.generation(), store.generation());
    assert!(t.verify_with_cache(&grown, &cache).ok());
    assert_eq!(cache.len(), 2);
    // Bounded: at most `capacity` entries.
    for _ in 0..6 {
        let tok = cca::build(&s, &cpak, &SigningKey::generate(SigAlg::Es384)).unwrap();
        assert!(cca::decode(&tok)
            .unwrap()
            .verify_with_cache(&store, &cache)
            .ok());
    }
    assert_eq!(cache.len(), 4);
    // Capacity 0 disables it.
    let off = PlatformCache::new(0);
    assert!(t.verify_with_cache(&store, &off).ok());
    assert!(off.is_empty());
}

fn cca_verifier(cpak: &SigningKey, s: &TokenSpec, rv: &str) -> Verifier {
    sim_verifier(
        anchor(cpak, s, false),
        false,
        ReferenceValues::parse(rv).unwrap(),
    )
}

#[test]
fn reference_values_are_graded_per_category_and_must_identify_the_launch() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let s = spec(Collection::Tag907, true);
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let rim = hex::encode([0x33; 32]);
    // An initdata value alone (named RPV): the launch is not identified, so
    // executables stay unrecognised: warning, naming what is missing.
    let v = cca_verifier(
        &cpak,
        &s,
        &format!(
            r#"{{"named": {{"cca-realm-personalization-value": ["{}"]}}}}"#,
            hex::encode([0x17; 64])
        ),
    );
    let a = v.appraise(TeeKind::Cca, &tok, None, None, 0).unwrap();
    assert_eq!(a.status, Status::Warning);
    assert_eq!(a.trust_vector["executables"], 33);
    assert_eq!(a.trust_vector["configuration"], 2);
    let f = a
        .failures
        .iter()
        .find(|f| f.claim == "reference values identify the launch")
        .unwrap();
    assert!(
        f.expected.contains("cca-realm-initial-measurement"),
        "{f:?}"
    );
    // The RIM identifies the launch: affirming.
    let v = cca_verifier(
        &cpak,
        &s,
        &format!(r#"{{"named": {{"cca-realm-initial-measurement": ["{rim}"]}}}}"#),
    );
    let a = v.appraise(TeeKind::Cca, &tok, None, None, 0).unwrap();
    assert_eq!(a.status, Status::Affirming, "{:#?}", a.failures);
}

#[test]
fn a_platform_lifecycle_other_than_secured_is_contraindicated() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let mut s = spec(Collection::Tag907, true);
    // non-PSA-RoT debug
    s.platform.lifecycle = 0x4000;
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let v = cca_verifier(&cpak, &s, "{}");
    let a = v.appraise(TeeKind::Cca, &tok, None, None, 0).unwrap();
    assert_eq!(a.status, Status::Contraindicated, "{:#?}", a.failures);
    assert_eq!(a.trust_vector["configuration"], 96);
    assert_eq!(a.trust_vector["runtime-opaque"], 96);
    assert!(a.failures.iter().any(|f| f.claim == "platform lifecycle"));
}

#[test]
fn named_reference_value_sets_report_which_matched() {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let s = spec(Collection::Tag907, true);
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let set = |b: u8| {
        format!(
            r#"{{"named": {{"cca-realm-initial-measurement": ["{}"]}}}}"#,
            hex::encode([b; 32])
        )
    };
    let v = cca_verifier(
        &cpak,
        &s,
        &format!(
            r#"{{"sets": {{"web": {}, "db": {}}}}}"#,
            set(0x33),
            set(0x44)
        ),
    );
    let a = v.appraise(TeeKind::Cca, &tok, None, None, 0).unwrap();
    assert_eq!(a.reference_value_sets, ["web"]);
    assert_eq!(a.status, Status::Affirming, "{:#?}", a.failures);
    // No set matches: an executables failure naming each set.
    let v = cca_verifier(
        &cpak,
        &s,
        &format!(r#"{{"sets": {{"db": {}}}}}"#, set(0x44)),
    );
    let a = v.appraise(TeeKind::Cca, &tok, None, None, 0).unwrap();
    assert!(a.reference_value_sets.is_empty());
    assert_eq!(a.status, Status::Warning);
    let f = a
        .failures
        .iter()
        .find(|f| f.claim == "reference-value sets")
        .unwrap();
    assert!(
        f.found.contains("db: cca-realm-initial-measurement"),
        "{f:?}"
    );
    // Sets do not nest, and a set must parse.
    assert!(ReferenceValues::parse(r#"{"sets": {"a": {"sets": {}}}}"#).is_err());
    assert!(ReferenceValues::parse(r#"{"sets": {"a": 5}}"#).is_err());
}
