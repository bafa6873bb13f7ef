//! Criterion bench: verify + appraise one CCA token with the trust anchors,
//! reference values and Rego policy parsed once (as the KBS holds them).
//! Also measures the parts (decode, signature checks, policy) so the
//! total can be read against them.
#![allow(clippy::unwrap_used)]

use cloister_attestation::cca::{self, TrustAnchorStore};
use cloister_attestation::{ReferenceValues, ReportData, Tee, Verifier, VerifierConfig};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

const TD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/cca/");

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{TD}{p}")).unwrap()
}

fn bench(c: &mut Criterion) {
    let token = read("ccatoken-cca-token-01.cbor");
    let store =
        TrustAnchorStore::parse(&String::from_utf8(read("ccatoken-ta-tfa.json")).unwrap()).unwrap();
    let rv = ReferenceValues::parse(&String::from_utf8(read("ccatoken-rv.json")).unwrap()).unwrap();
    let verifier = Verifier::new(VerifierConfig {
        cca_trust_anchors: store.clone(),
        reference_values: rv,
        ..Default::default()
    })
    .unwrap();
    let nonce = ReportData([0xab; 64]);
    let a = verifier
        .appraise(Tee::Cca, &token, Some(nonce), None, 0)
        .unwrap();
    assert!(a.affirming(), "{:#?}", a.failures);

    c.bench_function("cca/decode", |b| {
        b.iter(|| cca::decode(black_box(&token)).unwrap())
    });
    let t = cca::decode(&token).unwrap();
    c.bench_function("cca/verify_signatures", |b| {
        b.iter(|| t.verify(black_box(&store)))
    });
    c.bench_function("cca/verify_and_appraise", |b| {
        b.iter(|| {
            verifier
                .appraise(Tee::Cca, black_box(&token), Some(nonce), None, 0)
                .unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
