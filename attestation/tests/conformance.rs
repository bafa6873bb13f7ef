//! One conformance suite for every `EvidenceVerifier` (CCA, sim, SNP, TDX),
//! run through the `Verifier` as the KBS and the CLI call it. Each case has
//! the outcome and the claim (category) it must name:
//!
//! - genuine evidence with the right report data: no freshness failure;
//! - wrong report_data → a failed `freshness` check named `report_data`;
//! - wrong initdata digest → a failed `init-data` check named `init_data`;
//! - a flipped byte in a signed region → a failed `signature` check;
//! - truncated input → unusable (an error, not an appraisal).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use cloister_attestation::cca::{
    self, Collection, SigAlg, SigningKey, TokenSpec, TrustAnchor, TrustAnchorStore,
};
use cloister_attestation::verifiers::{SnpEvidenceVerifier, TdxEvidenceVerifier};
use cloister_attestation::{Category, ReportData, Status, TeeKind, Verifier, VerifierConfig};

fn td(dir: &str, name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/{dir}/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// One implementation under test.
struct Subject {
    name: &'static str,
    tee: TeeKind,
    verifier: Verifier,
    evidence: Vec<u8>,
    /// The report data the genuine evidence carries.
    report_data: ReportData,
    /// A byte inside a signed region.
    flip_at: usize,
    now: i64,
}

fn cca_subject(simulated: bool) -> Subject {
    let cpak = SigningKey::generate(SigAlg::Es384);
    let rak = SigningKey::generate(SigAlg::Es384);
    let mut s = TokenSpec::new(
        [0x42; 64],
        [0x17; 64],
        vec![0x33; 32],
        [vec![0; 32], vec![1; 32], vec![2; 32], vec![3; 32]],
    );
    s.collection = Collection::Tag907;
    let tok = cca::build(&s, &cpak, &rak).unwrap();
    let store = TrustAnchorStore::new(vec![TrustAnchor {
        implementation_id: Some(s.platform.implementation_id.clone()),
        instance_id: Some(s.platform.instance_id.clone()),
        key: Ok(cpak.public()),
        simulated,
    }]);
    let n = tok.len();
    Subject {
        name: if simulated { "sim" } else { "cca" },
        tee: if simulated {
            TeeKind::Sim
        } else {
            TeeKind::Cca
        },
        verifier: Verifier::new(VerifierConfig {
            cca_trust_anchors: store,
            allow_simulated: simulated,
            ..Default::default()
        })
        .unwrap(),
        evidence: tok,
        report_data: ReportData([0x42; 64]),
        // The last bytes are the realm token's signature.
        flip_at: n - 2,
        now: 0,
    }
}

/// A temp dir unique to this call (tests run in parallel threads).
fn unique_dir(tag: &str) -> std::path::PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "cloister-conformance-{tag}-{}-{n}",
        std::process::id()
    ))
}

fn snp_subject() -> Subject {
    let dir = unique_dir("snp");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vcek.der"), td("snp", "virtee-sev-vcek_milan.der")).unwrap();
    let backend = SnpEvidenceVerifier::new(Some(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let report = td("snp", "virtee-sev-report_milan.bin");
    let rd = ReportData::from_padded(&report[0x50..0x90]).unwrap();
    Subject {
        name: "snp",
        tee: TeeKind::Snp,
        verifier: Verifier::new(VerifierConfig::default())
            .unwrap()
            .with_verifier(TeeKind::Snp, Arc::new(backend)),
        evidence: report,
        report_data: rd,
        // MEASUREMENT (0x90..0xC0), inside the signed body.
        flip_at: 0x95,
        now: 1_748_736_000,
    }
}

fn tdx_subject() -> Subject {
    let dir = unique_dir("tdx");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("c.json"),
        td("tdx", "dcap-qvl-tdx_quote_collateral.json"),
    )
    .unwrap();
    let backend = TdxEvidenceVerifier::new(Some(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let quote = td("tdx", "dcap-qvl-tdx_quote");
    let q = cloister_attestation::tdx::Quote::parse(&quote).unwrap();
    Subject {
        name: "tdx",
        tee: TeeKind::Tdx,
        verifier: Verifier::new(VerifierConfig::default())
            .unwrap()
            .with_verifier(TeeKind::Tdx, Arc::new(backend)),
        evidence: quote,
        report_data: ReportData(q.report_data),
        // MRTD in the TD report body (header 48 + 136), signed by the quote.
        flip_at: 48 + 136 + 3,
        now: 1_750_329_207,
    }
}

fn subjects() -> Vec<Subject> {
    vec![
        cca_subject(false),
        cca_subject(true),
        snp_subject(),
        tdx_subject(),
    ]
}

fn failed(a: &cloister_attestation::Appraisal, category: Category) -> Vec<String> {
    a.checks
        .iter()
        .filter(|c| !c.ok && c.category == category)
        .map(|c| c.claim.clone())
        .collect()
}

#[test]
fn genuine_evidence_is_fresh_and_signed() {
    for s in subjects() {
        let a = s
            .verifier
            .appraise(s.tee, &s.evidence, Some(s.report_data), None, s.now)
            .unwrap();
        assert!(
            failed(&a, Category::Freshness).is_empty(),
            "{}: {:?}",
            s.name,
            a.failures
        );
        assert!(
            failed(&a, Category::Signature).is_empty(),
            "{}: {:?}",
            s.name,
            a.failures
        );
        assert_ne!(a.status, Status::None, "{}", s.name);
    }
}

#[test]
fn wrong_report_data_names_freshness() {
    for s in subjects() {
        let mut wrong = s.report_data;
        wrong.0[0] ^= 0xff;
        let a = s
            .verifier
            .appraise(s.tee, &s.evidence, Some(wrong), None, s.now)
            .unwrap();
        assert_eq!(
            failed(&a, Category::Freshness),
            ["report_data"],
            "{}",
            s.name
        );
        assert_eq!(a.status, Status::Contraindicated, "{}", s.name);
        assert_eq!(a.trust_vector["instance-identity"], 96, "{}", s.name);
    }
}

#[test]
fn wrong_initdata_names_init_data() {
    for s in subjects() {
        let a = s
            .verifier
            .appraise(
                s.tee,
                &s.evidence,
                Some(s.report_data),
                Some(&[0x5a; 32]),
                s.now,
            )
            .unwrap();
        assert_eq!(failed(&a, Category::InitData), ["init_data"], "{}", s.name);
        assert_eq!(a.status, Status::Contraindicated, "{}", s.name);
        assert_eq!(a.trust_vector["configuration"], 96, "{}", s.name);
    }
}

#[test]
fn a_flipped_byte_names_the_signature() {
    for s in subjects() {
        let mut ev = s.evidence.clone();
        ev[s.flip_at] ^= 0x01;
        match s.verifier.appraise(s.tee, &ev, None, None, s.now) {
            Ok(a) => {
                assert!(
                    !failed(&a, Category::Signature).is_empty(),
                    "{}: {:?}",
                    s.name,
                    a.failures
                );
                assert_eq!(a.status, Status::Contraindicated, "{}", s.name);
            }
            Err(e) => panic!(
                "{}: a flipped signed byte must be an appraisal, got {e}",
                s.name
            ),
        }
    }
}

#[test]
fn truncated_input_is_unusable() {
    for s in subjects() {
        for len in [0, 1, s.evidence.len() / 2] {
            assert!(
                s.verifier
                    .appraise(s.tee, &s.evidence[..len], None, None, s.now)
                    .is_err(),
                "{}: truncated to {len} bytes was appraised",
                s.name
            );
        }
    }
}
