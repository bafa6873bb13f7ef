//! Verify + check one SEV-SNP report and one TDX quote, with the AMD roots
//! and the TDX collateral parsed once up front. Peers measured in the same
//! run: the `sev` crate's own chain + report verification (SNP) and plain
//! `dcap_qvl::verify::verify` (TDX).
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};

use cloister_attestation::{snp, tdx};
use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;

const DIR: &str = env!("CARGO_MANIFEST_DIR");

fn read(p: &str) -> Vec<u8> {
    std::fs::read(format!("{DIR}/{p}")).unwrap()
}

fn bench_snp(c: &mut Criterion) {
    let report = read("testdata/snp/virtee-sev-report_milan.bin");
    let vcek = read("testdata/snp/virtee-sev-vcek_milan.der");
    let certs = vec![vcek.clone()];
    let verifier = snp::SnpVerifier::builtin().unwrap();
    let now = 1_748_736_000;
    let cfg = snp::SnpConfig {
        expected_report_data: Some(report[0x50..0x90].to_vec()),
        expected_host_data: Some(vec![0; 32]),
        ..snp::SnpConfig::default()
    };
    verifier.verify(&report, &certs, &cfg, now).unwrap();
    c.bench_function("snp_verify_and_check", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&report), &certs, &cfg, now)
                .unwrap()
        })
    });

    // Peer: sev 8 (crypto_nossl) — ARK->ASK->VCEK chain and report signature.
    // virtee-sev-cert_chain_milan is the PEM stack [ASK, ARK].
    let pems = x509_split(&read("testdata/snp/virtee-sev-cert_chain_milan"));
    let ca = ca::Chain::from_pem(&pems[1], &pems[0]).unwrap();
    let chain = Chain {
        ca,
        vek: Certificate::from_der(&vcek).unwrap(),
    };
    c.bench_function("peer_sev_crate_verify", |b| {
        b.iter(|| {
            let r = AttestationReport::from_bytes(black_box(&report)).unwrap();
            (&chain, &r).verify().unwrap();
        })
    });
}

fn x509_split(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    text.split_inclusive("-----END CERTIFICATE-----")
        .filter(|s| s.contains("BEGIN"))
        .map(|s| s.trim_start().as_bytes().to_vec())
        .collect()
}

fn bench_tdx(c: &mut Criterion) {
    let quote = read("testdata/tdx/dcap-qvl-tdx_quote");
    let coll = tdx::collateral_from_json(&read("testdata/tdx/dcap-qvl-tdx_quote_collateral.json"))
        .unwrap();
    let now = 1_750_329_207;
    let verifier = tdx::TdxVerifier::new();
    let cfg = tdx::TdxConfig {
        expected_report_data: Some(quote[48 + 520..48 + 584].to_vec()),
        expected_mr_config_id: Some(vec![]),
        ..tdx::TdxConfig::default()
    };
    verifier.verify(&quote, &coll, &cfg, now).unwrap();
    c.bench_function("tdx_verify_and_check", |b| {
        b.iter(|| {
            verifier
                .verify(black_box(&quote), &coll, &cfg, now)
                .unwrap()
        })
    });
    c.bench_function("peer_dcap_qvl_verify", |b| {
        b.iter(|| dcap_qvl::verify::verify(black_box(&quote[..4936]), &coll, now).unwrap())
    });
    let log = {
        let mut l = read("testdata/tdx/trustee-CCEL_data.trimmed-5756B.bin");
        l.resize(1 << 20, 0);
        l
    };
    c.bench_function("tdx_ccel_replay_1mib", |b| {
        b.iter(|| tdx::ccel::replay(black_box(&log)).unwrap())
    });
}

criterion_group!(benches, bench_snp, bench_tdx);
criterion_main!(benches);
