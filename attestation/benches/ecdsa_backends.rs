//! Peer bench for the signature backend: one ECDSA verification of the same
//! message and signature with RustCrypto (`p256`/`p384`/`p521`), `ring` and
//! `aws-lc-rs`, public keys parsed once. Picks the backend the verifiers use.
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use p384::ecdsa::signature::{Signer as _, Verifier as _};

fn bench(c: &mut Criterion) {
    // A message the size of a CCA platform Sig_structure.
    let msg: Vec<u8> = (0..700u32).map(|i| (i * 7) as u8).collect();

    let sk = p384::ecdsa::SigningKey::from_slice(&[0x42; 48]).unwrap();
    let sig: p384::ecdsa::Signature = sk.sign(&msg);
    let raw = sig.to_bytes().to_vec();
    let vk = *sk.verifying_key();
    let sec1 = vk.to_encoded_point(false).as_bytes().to_vec();
    let ring_pk =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, &sec1);
    let aws_pk = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
        &sec1,
    )
    .unwrap();
    vk.verify(&msg, &sig).unwrap();
    ring_pk.verify(&msg, &raw).unwrap();
    aws_pk.verify_sig(&msg, &raw).unwrap();
    c.bench_function("p384/rustcrypto", |b| {
        b.iter(|| vk.verify(black_box(&msg), black_box(&sig)).unwrap())
    });
    c.bench_function("p384/ring", |b| {
        b.iter(|| ring_pk.verify(black_box(&msg), black_box(&raw)).unwrap())
    });
    c.bench_function("p384/aws_lc_rs", |b| {
        b.iter(|| aws_pk.verify_sig(black_box(&msg), black_box(&raw)).unwrap())
    });

    let sk = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let sig: p256::ecdsa::Signature = sk.sign(&msg);
    let raw = sig.to_bytes().to_vec();
    let sec1 = sk
        .verifying_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let ring_pk =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &sec1);
    let aws_pk = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &sec1,
    )
    .unwrap();
    c.bench_function("p256/ring", |b| {
        b.iter(|| ring_pk.verify(black_box(&msg), black_box(&raw)).unwrap())
    });
    c.bench_function("p256/aws_lc_rs", |b| {
        b.iter(|| aws_pk.verify_sig(black_box(&msg), black_box(&raw)).unwrap())
    });

    let mut d = [0x42; 66];
    d[0] = 0x01; // below the P-521 order
    let sk = p521::ecdsa::SigningKey::from_slice(&d).unwrap();
    let sig: p521::ecdsa::Signature = sk.sign(&msg);
    let raw = sig.to_bytes().to_vec();
    let vk = p521::ecdsa::VerifyingKey::from(&sk);
    let sec1 = vk.to_encoded_point(false).as_bytes().to_vec();
    let aws_pk = aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED,
        &sec1,
    )
    .unwrap();
    aws_pk.verify_sig(&msg, &raw).unwrap();
    c.bench_function("p521/rustcrypto", |b| {
        b.iter(|| vk.verify(black_box(&msg), black_box(&sig)).unwrap())
    });
    c.bench_function("p521/aws_lc_rs", |b| {
        b.iter(|| aws_pk.verify_sig(black_box(&msg), black_box(&raw)).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
