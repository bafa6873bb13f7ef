//! Criterion bench: verify + appraise one CCA token with the trust anchors,
//! reference values and Rego policy parsed once (as the KBS holds them).
//!
//! - `cca/verify_and_appraise_cold`: platform-token cache disabled, so both
//!   ECDSA P-384 signatures are verified on every call;
//! - `cca/verify_and_appraise_warm`: default verifier; the platform token
//!   was seen before (as for every realm of one booted platform), so only
//!   the realm signature is verified;
//! - parts (decode, signature checks, appraisal policy) and a peer: the same
//!   two COSE signatures verified with RustCrypto `p384` (the pure-Rust
//!   backend used before), measured in the same run.
#![allow(clippy::unwrap_used)]

use cloister_attestation::cca::{self, PublicKey, TrustAnchorStore};
use cloister_attestation::{ReferenceValues, ReportData, TeeKind, Verifier, VerifierConfig};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use p384::ecdsa::signature::Verifier as _;

const TD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cca/");

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{TD}{p}")).unwrap()
}

fn rustcrypto_verify(s: &coset::CoseSign1, key: &p384::ecdsa::VerifyingKey) {
    s.verify_signature(b"", |sig, tbs| {
        let sig = p384::ecdsa::Signature::from_slice(sig).map_err(|_| ())?;
        key.verify(tbs, &sig).map_err(|_| ())
    })
    .unwrap();
}

fn bench(c: &mut Criterion) {
    let token = read("ccatoken-cca-token-01.cbor");
    let store =
        TrustAnchorStore::parse(&String::from_utf8(read("ccatoken-ta-tfa.json")).unwrap()).unwrap();
    let rv = ReferenceValues::parse(&String::from_utf8(read("ccatoken-rv.json")).unwrap()).unwrap();
    let warm = Verifier::new(VerifierConfig {
        cca_trust_anchors: store.clone(),
        reference_values: rv,
        ..Default::default()
    })
    .unwrap();
    let cold = warm.clone().with_platform_cache(0);
    let nonce = ReportData([0xab; 64]);
    for v in [&warm, &cold] {
        let a = v
            .appraise(TeeKind::Cca, &token, Some(nonce), None, 0)
            .unwrap();
        assert!(a.affirming(), "{:#?}", a.failures);
    }

    c.bench_function("cca/decode", |b| {
        b.iter(|| cca::decode(black_box(&token)).unwrap())
    });
    let t = cca::decode(&token).unwrap();
    c.bench_function("cca/verify_signatures", |b| {
        b.iter(|| t.verify(black_box(&store)))
    });
    // Peer: the same two signatures with RustCrypto p384 (keys parsed once).
    let rak = match PublicKey::from_rak(&t.realm_claims.rak).unwrap() {
        PublicKey::P384(k) => k,
        other => panic!("RAK is not P-384: {other:?}"),
    };
    let cpak = match store
        .lookup(
            &t.platform_claims.implementation_id,
            &t.platform_claims.instance_id,
        )
        .unwrap()
        .key
        .clone()
        .unwrap()
    {
        PublicKey::P384(k) => k,
        other => panic!("CPAK is not P-384: {other:?}"),
    };
    c.bench_function("cca/peer_rustcrypto_p384_signatures", |b| {
        b.iter(|| {
            rustcrypto_verify(black_box(&t.realm), &rak);
            rustcrypto_verify(black_box(&t.platform), &cpak);
        })
    });
    c.bench_function("cca/verify_and_appraise_cold", |b| {
        b.iter(|| {
            cold.appraise(TeeKind::Cca, black_box(&token), Some(nonce), None, 0)
                .unwrap()
        })
    });
    c.bench_function("cca/verify_and_appraise_warm", |b| {
        b.iter(|| {
            warm.appraise(TeeKind::Cca, black_box(&token), Some(nonce), None, 0)
                .unwrap()
        })
    });
    let policy = cloister_policy::Policy::appraisal().unwrap();
    let input = serde_json::json!({
        "tee": "cca",
        "checks": warm.appraise(TeeKind::Cca, &token, Some(nonce), None, 0).unwrap().checks,
        "simulated": false,
        "allow_simulated": false,
    });
    c.bench_function("cca/appraisal_policy", |b| {
        b.iter(|| {
            policy
                .eval(cloister_policy::APPRAISAL_QUERY, black_box(&input), None)
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
