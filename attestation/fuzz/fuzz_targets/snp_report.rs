//! Fuzz the SEV-SNP report parser and verifier, the certificate-table parser
//! and the Trustee JSON evidence decoder. Seeds: attestation/testdata/snp.
#![no_main]

use std::sync::OnceLock;

use cloister_attestation::snp::{self, Report, SnpConfig, SnpVerifier};
use libfuzzer_sys::fuzz_target;

const VCEK: &[u8] = include_bytes!("../../testdata/snp/trustee-test-vcek.der");
const REPORT: &[u8] = include_bytes!("../../testdata/snp/trustee-test-report.bin");
/// 2025-06-01, inside the test certificates' validity.
const NOW: u64 = 1_748_736_000;

fn verifier() -> &'static SnpVerifier {
    static V: OnceLock<SnpVerifier> = OnceLock::new();
    V.get_or_init(|| SnpVerifier::builtin().expect("built-in AMD roots parse"))
}

fuzz_target!(|data: &[u8]| {
    let certs = [VCEK.to_vec()];
    if let Ok(r) = Report::parse(data) {
        let _ = (r.signing_key(), r.generation(), r.debug_allowed());
        if let Ok(c) = verifier().verify_evidence(data, &certs, NOW) {
            let _ = c.to_json();
            let _ = snp::check_claims(&c, &SnpConfig::default());
        }
    }
    // Arbitrary bytes as the certificate list of a genuine report.
    let _ = verifier().verify_evidence(REPORT, &[data.to_vec()], NOW);
    if let Ok(certs) = snp::parse_cert_table(data) {
        let _ = verifier().verify_evidence(REPORT, &certs, NOW);
    }
    if let Ok((report, certs)) = snp::from_trustee_json(data) {
        let _ = verifier().verify_evidence(&report, &certs, NOW);
    }
});
