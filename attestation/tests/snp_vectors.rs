//! SEV-SNP vectors from testdata/snp (provenance in testdata/snp/SOURCES.md),
//! each with the outcome its SOURCES.md row states, plus tampering cases.
#![allow(clippy::unwrap_used)]

use cloister_attestation::snp::{
    self, from_trustee_json, Generation, SigningKey, SnpConfig, SnpError, SnpVerifier, TrustStore,
};

fn td(name: &str) -> Vec<u8> {
    let p = format!("{}/testdata/snp/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// 2025-06-01T00:00:00Z: inside every test certificate's validity window
/// (the test VLEK is valid 2024-12-10..2025-12-10).
const JUNE_2025: u64 = 1_748_736_000;
/// 2026-11-28: after the test VLEK expired.
const NOV_2026: u64 = 1_795_824_000;

fn verifier() -> SnpVerifier {
    SnpVerifier::builtin().unwrap()
}

fn no_checks() -> SnpConfig {
    SnpConfig {
        max_vmpl: 3,
        allow_debug: true,
        ..SnpConfig::default()
    }
}

fn hexd(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn trustee_vcek_report_v2_milan_verifies() {
    let report = td("trustee-test-report.bin");
    let c = verifier()
        .verify_evidence(&report, &[td("trustee-test-vcek.der")], JUNE_2025)
        .unwrap();
    assert_eq!(c.version, 2);
    assert_eq!(c.generation, Generation::Milan);
    assert_eq!(c.signing_key, SigningKey::Vcek);
    assert_eq!(c.guest_svn, 4);
    assert_eq!(c.policy.raw, 0x3001f);
    assert_eq!(c.vmpl, 0);
    assert_eq!(c.measurement, "a1f3930413247bb38cfc171579ea3c12d5fe4901f0c792f63fd75d98f1ef827c23500644e0e692e6be917f9050d3d38c");
    assert_eq!(
        c.report_data,
        format!(
            "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2{}",
            "0".repeat(64)
        )
    );
    assert_eq!(c.host_data, "0".repeat(64));
    let t = c.reported_tcb;
    assert_eq!((t.bootloader, t.tee, t.snp, t.microcode), (3, 0, 8, 115));
    assert!(c.chip_id.starts_with("c38427a3"));
    // JSON form carries the same claims.
    let j = c.to_json();
    assert_eq!(j["measurement"], c.measurement);
    assert_eq!(j["reported_tcb"]["snp"], 8);
    assert_eq!(j["generation"], "milan");

    // Nonce and host_data checks: the right nonce (32 bytes, zero-padded) passes.
    let cfg = SnpConfig {
        expected_report_data: Some(hexd(
            "ec6c52d7533cc2c4f45be7849cf112ab82b2009fe7bd43e71ed08c14400ad7e2",
        )),
        expected_host_data: Some(vec![]),
        ..SnpConfig::default()
    };
    verifier()
        .verify(&report, &[td("trustee-test-vcek.der")], &cfg, JUNE_2025)
        .unwrap();
}

#[test]
fn trustee_report_byte_42_flip_breaks_signature() {
    let mut report = td("trustee-test-report.bin");
    report[42] ^= 1;
    let e = verifier()
        .verify_evidence(&report, &[td("trustee-test-vcek.der")], JUNE_2025)
        .unwrap_err();
    assert!(
        matches!(&e, SnpError::Signature { what, .. } if what == "report"),
        "{e}"
    );
    assert!(e.to_string().contains("signature"), "{e}");
}

#[test]
fn trustee_report_byte_384_flip_is_tcb_mismatch() {
    // Byte 384 = 0x180 = reported_tcb.bootloader. The signature breaks too and is
    // checked first; the TCB check alone is exercised by re-signing below.
    let mut report = td("trustee-test-report.bin");
    report[384] ^= 1;
    let e = verifier()
        .verify_evidence(&report, &[td("trustee-test-vcek.der")], JUNE_2025)
        .unwrap_err();
    assert!(matches!(e, SnpError::Signature { .. }), "{e}");
}

#[test]
fn virtee_milan_report_verifies_with_builtin_roots() {
    let report = td("virtee-sev-report_milan.bin");
    let c = verifier()
        .verify_evidence(&report, &[td("virtee-sev-vcek_milan.der")], JUNE_2025)
        .unwrap();
    assert_eq!(c.measurement, "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f");
    assert_eq!(c.policy.raw, 0x30000);
    assert!(c.report_data.starts_with("d447b55d"));
    assert!(c.chip_id.starts_with("d49554ec"));
    // With the ASK/ARK from the evidence too (the ARK is ignored, the ASK is
    // the same as the built-in one).
    verifier()
        .verify_evidence(
            &report,
            &[
                td("virtee-sev-vcek_milan.der"),
                td("virtee-sev-cert_chain_milan"),
            ],
            JUNE_2025,
        )
        .unwrap();
}

#[test]
fn virtee_milan_report_byte_21_flip_fails() {
    let mut report = td("virtee-sev-report_milan.bin");
    report[21] ^= 0xff;
    let e = verifier()
        .verify_evidence(&report, &[td("virtee-sev-vcek_milan.der")], JUNE_2025)
        .unwrap_err();
    assert!(
        matches!(&e, SnpError::Signature { what, .. } if what == "report"),
        "{e}"
    );
}

#[test]
fn vlek_report_v3_verifies_then_fails_vmpl() {
    let report = td("trustee-test-vlek-report.bin");
    let vlek = td("trustee-test-vlek.der");
    let c = verifier()
        .verify_evidence(&report, std::slice::from_ref(&vlek), JUNE_2025)
        .unwrap();
    assert_eq!(c.version, 3);
    assert_eq!(c.signing_key, SigningKey::Vlek);
    assert_eq!(c.generation, Generation::Milan);
    assert_eq!(c.vmpl, 1);
    assert_eq!(c.cpuid, Some([0x19, 0x01, c.cpuid.unwrap()[2]]));
    assert_eq!(c.measurement, "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4e8c9af857f5ceeb5a493df2a570d7bf0");
    let t = c.reported_tcb;
    assert_eq!((t.bootloader, t.tee, t.snp, t.microcode), (4, 0, 24, 217));
    assert_eq!(c.chip_id, "0".repeat(128));
    // The default policy requires VMPL 0, as trustee does.
    let e = verifier()
        .verify(&report, &[vlek], &SnpConfig::default(), JUNE_2025)
        .unwrap_err();
    match e {
        SnpError::Claims(f) => {
            assert_eq!(f.len(), 1, "{f:?}");
            assert_eq!(f[0].claim, "vmpl");
            assert_eq!(f[0].expected, "<= 0");
            assert_eq!(f[0].found, "1");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn expired_vlek_is_rejected_at_a_later_time() {
    // Deliberate: the test VLEK expired on 2025-12-10; at a later `now` the
    // chain is refused with the dates, inside the window it verifies (above).
    let e = verifier()
        .verify_evidence(
            &td("trustee-test-vlek-report.bin"),
            &[td("trustee-test-vlek.der")],
            NOV_2026,
        )
        .unwrap_err();
    assert!(
        matches!(&e, SnpError::Validity { cn, .. } if cn == "SEV-VLEK"),
        "{e}"
    );
}

#[test]
fn vlek_report_with_vcek_only_is_missing_key() {
    let e = verifier()
        .verify_evidence(
            &td("trustee-test-vlek-report.bin"),
            &[td("trustee-test-vcek.der")],
            JUNE_2025,
        )
        .unwrap_err();
    assert_eq!(e, SnpError::MissingKey("VLEK"));
}

#[test]
fn invalid_vceks_do_not_chain() {
    for name in [
        "trustee-test-vcek-invalid-legacy.der",
        "trustee-test-vcek-invalid-new.der",
    ] {
        let e = verifier()
            .verify_evidence(&td("trustee-test-report.bin"), &[td(name)], JUNE_2025)
            .unwrap_err();
        assert!(
            matches!(&e, SnpError::Signature { what, .. } if what.contains("SEV-VCEK")),
            "{name}: {e}"
        );
    }
}

#[test]
fn wrong_vcek_is_report_signature_failure() {
    // A genuine VCEK of another chip: the chain is fine, the report signature is not.
    let e = verifier()
        .verify_evidence(
            &td("trustee-test-report.bin"),
            &[td("virtee-sev-vcek_milan.der")],
            JUNE_2025,
        )
        .unwrap_err();
    assert!(
        matches!(&e, SnpError::Signature { what, .. } if what == "report"),
        "{e}"
    );
}

#[test]
fn vcek_certificate_byte_flip_names_the_certificate_signature() {
    // Flip a byte inside the VCEK's signed TBS that keeps the DER well-formed:
    // the last byte of the serial number (offset 15 in this encoding).
    let vcek = td("virtee-sev-vcek_milan.der");
    let mut bad = vcek.clone();
    // Find the serial number INTEGER: 30 82 xx xx 30 82 xx xx a0 03 02 01 02 02 <len> ...
    assert_eq!(&bad[8..13], &[0xa0, 0x03, 0x02, 0x01, 0x02]);
    assert_eq!(bad[13], 0x02);
    let serial_last = 14 + usize::from(bad[14]);
    bad[serial_last] ^= 0x01;
    let e = verifier()
        .verify_evidence(&td("virtee-sev-report_milan.bin"), &[bad], JUNE_2025)
        .unwrap_err();
    assert!(
        matches!(&e, SnpError::Signature { what, .. } if what.contains("SEV-VCEK certificate")),
        "{e}"
    );
    // Flipping a byte in the VCEK signature value itself.
    let mut bad = vcek;
    let n = bad.len();
    bad[n - 10] ^= 0x01;
    let e = verifier()
        .verify_evidence(&td("virtee-sev-report_milan.bin"), &[bad], JUNE_2025)
        .unwrap_err();
    assert!(matches!(&e, SnpError::Signature { .. }), "{e}");
}

#[test]
fn every_signed_report_byte_flip_is_rejected() {
    // Every 16th byte of the signed region, plus the signature itself.
    let report = td("trustee-test-report.bin");
    let vcek = [td("trustee-test-vcek.der")];
    let v = verifier();
    for i in (0..snp::SIGNED_LEN)
        .step_by(16)
        .chain([0x2A0, 0x2A0 + 47, 0x2A0 + 72, 0x2A0 + 119])
    {
        let mut r = report.clone();
        r[i] ^= 0x01;
        let e = v.verify_evidence(&r, &vcek, JUNE_2025).unwrap_err();
        // A flip may make the report unparsable (version, sig_algo, key_info) –
        // also a rejection; otherwise it must name the report signature.
        assert!(
            matches!(&e, SnpError::Signature { what, .. } if what == "report")
                || matches!(e, SnpError::Report(_) | SnpError::MissingKey(_)),
            "byte {i}: {e}"
        );
    }
}

#[test]
fn wrong_nonce_and_host_data_are_named() {
    let cfg = SnpConfig {
        expected_report_data: Some(vec![0xAA; 32]),
        expected_host_data: Some(vec![0xBB; 32]),
        ..SnpConfig::default()
    };
    let e = snp::verify(
        &td("trustee-test-report.bin"),
        &[td("trustee-test-vcek.der")],
        &cfg,
        JUNE_2025,
    )
    .unwrap_err();
    let SnpError::Claims(f) = e else {
        panic!("{e}")
    };
    let claims: Vec<_> = f.iter().map(|f| f.claim.as_str()).collect();
    assert_eq!(claims, ["report_data", "host_data"]);
    assert_eq!(
        f[0].expected,
        format!("{}{}", "aa".repeat(32), "0".repeat(64))
    );
    assert!(f[0].found.starts_with("ec6c52d7"));
}

#[test]
fn debug_policy_bit_is_refused_by_default() {
    // Policy 0x3001f has bit 19 clear; make a claims copy with debug set.
    let mut c = verifier()
        .verify_evidence(
            &td("trustee-test-report.bin"),
            &[td("trustee-test-vcek.der")],
            JUNE_2025,
        )
        .unwrap();
    c.policy.debug = true;
    let f = snp::check_claims(&c, &SnpConfig::default()).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].claim, "policy.debug");
    assert!(snp::check_claims(&c, &no_checks()).unwrap().is_empty());
}

#[test]
fn oversized_expectations_are_config_errors() {
    let c = verifier()
        .verify_evidence(
            &td("trustee-test-report.bin"),
            &[td("trustee-test-vcek.der")],
            JUNE_2025,
        )
        .unwrap();
    let cfg = SnpConfig {
        expected_report_data: Some(vec![0; 65]),
        ..SnpConfig::default()
    };
    assert!(
        matches!(snp::check_claims(&c, &cfg), Err(SnpError::Config(m)) if m.contains("at most 64"))
    );
    let cfg = SnpConfig {
        expected_host_data: Some(vec![0; 48]),
        ..SnpConfig::default()
    };
    assert!(
        matches!(snp::check_claims(&c, &cfg), Err(SnpError::Config(m)) if m.contains("at most 32"))
    );
}

#[test]
fn unknown_root_is_rejected() {
    // A store with only the Genoa roots does not know the Milan ASK.
    let mut store = TrustStore::empty();
    store
        .add(
            &std::fs::read(format!(
                "{}/src/snp/roots/genoa_ask_ark_asvk.pem",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
    let v = SnpVerifier::with_store(store);
    let e = v
        .verify_evidence(
            &td("trustee-test-report.bin"),
            &[td("trustee-test-vcek.der")],
            JUNE_2025,
        )
        .unwrap_err();
    assert!(matches!(&e, SnpError::UnknownRoot(_)), "{e}");
    // Supplying the Milan ASK+ARK in the evidence does not help: evidence ARKs are not trusted.
    let e = v
        .verify_evidence(
            &td("trustee-test-report.bin"),
            &[
                td("trustee-test-vcek.der"),
                td("virtee-sev-cert_chain_milan"),
            ],
            JUNE_2025,
        )
        .unwrap_err();
    assert!(matches!(&e, SnpError::UnknownRoot(_)), "{e}");
    // An extra root from config makes it verify.
    let mut store = TrustStore::empty();
    store.add(&td("virtee-sev-cert_chain_milan")).unwrap();
    SnpVerifier::with_store(store)
        .verify_evidence(
            &td("trustee-test-report.bin"),
            &[td("trustee-test-vcek.der")],
            JUNE_2025,
        )
        .unwrap();
}

#[test]
fn truncated_and_oversized_reports_are_rejected() {
    let report = td("trustee-test-report.bin");
    let vcek = [td("trustee-test-vcek.der")];
    for r in [&report[..report.len() - 1], &report[..100], &[][..]] {
        let e = verifier().verify_evidence(r, &vcek, JUNE_2025).unwrap_err();
        assert!(e.to_string().contains("expected 1184"), "{e}");
    }
    let mut big = report.clone();
    big.push(0);
    let e = verifier()
        .verify_evidence(&big, &vcek, JUNE_2025)
        .unwrap_err();
    assert!(e.to_string().contains("1185 bytes, expected 1184"), "{e}");
    // Truncated certificate.
    let e = verifier()
        .verify_evidence(&report, &[vcek[0][..200].to_vec()], JUNE_2025)
        .unwrap_err();
    assert!(matches!(e, SnpError::Certificate { .. }), "{e}");
}

#[test]
fn turin_vcek_chains_to_builtin_turin() {
    // No Turin report is published; check the Turin VCEK's chain and its
    // 8-byte hwID through the trust store instead.
    let mut store = TrustStore::empty();
    store.add(&td("virtee-sev-cert_chain_turin")).unwrap();
    store
        .add(
            &std::fs::read(format!(
                "{}/src/snp/roots/turin_ask_ark_asvk.pem",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
    // A Milan report with a Turin VCEK: chain OK, report signature not.
    let e = SnpVerifier::with_store(store)
        .verify_evidence(
            &td("trustee-test-report.bin"),
            &[td("virtee-sev-vcek_turin.der")],
            JUNE_2025,
        )
        .unwrap_err();
    assert!(
        matches!(&e, SnpError::Signature { what, .. } if what == "report"),
        "{e}"
    );
}

#[test]
fn trustee_json_evidence_genoa_v3_verifies() {
    let (report, certs) = from_trustee_json(&td("trustee-as-e2e-snp-evidence.json")).unwrap();
    assert_eq!(report.len(), snp::REPORT_LEN);
    assert_eq!(certs.len(), 1);
    let c = verifier()
        .verify_evidence(&report, &certs, JUNE_2025)
        .unwrap();
    assert_eq!(c.version, 3);
    assert_eq!(c.generation, Generation::Genoa);
    assert_eq!(c.firmware, "1.55.40");
    assert_eq!(c.policy.raw, 0x30000);
    assert_eq!(c.measurement, "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e");
    let t = c.reported_tcb;
    assert_eq!((t.bootloader, t.tee, t.snp, t.microcode), (10, 0, 23, 25));
    assert!(c.chip_id.starts_with("371c55d6"));
}

#[test]
fn trustee_json_refuses_bad_input_with_a_reason_instead_of_truncating() {
    let text = String::from_utf8(td("trustee-as-e2e-snp-evidence.json")).unwrap();
    let base: serde_json::Value = serde_json::from_str(&text).unwrap();
    let refused = |edit: &dyn Fn(&mut serde_json::Value)| -> String {
        let mut v = base.clone();
        edit(&mut v);
        from_trustee_json(v.to_string().as_bytes())
            .unwrap_err()
            .to_string()
    };
    // A version that does not fit 32 bits was truncated before.
    let e = refused(&|v| v["attestation_report"]["version"] = serde_json::json!(1u64 << 33));
    assert!(e.contains("version") || e.contains("u32"), "{e}");
    // A TCB SPL above 255 was truncated to its low byte before.
    let e = refused(&|v| v["attestation_report"]["reported_tcb"]["snp"] = serde_json::json!(256));
    assert!(e.contains("256"), "{e}");
    // A missing TCB SPL was zero-filled before.
    let e = refused(&|v| {
        v["attestation_report"]["launch_tcb"]
            .as_object_mut()
            .unwrap()
            .remove("microcode");
    });
    assert!(e.contains("microcode"), "{e}");
    // Wrong lengths name the field.
    let e = refused(&|v| v["attestation_report"]["measurement"] = serde_json::json!([1, 2, 3]));
    assert!(e.contains("measurement: 3 bytes, expected 48"), "{e}");
    let e = refused(&|v| v["cert_chain"][0]["data"] = serde_json::json!([1, 300]));
    assert!(e.contains("300"), "{e}");
    let e = refused(&|v| {
        v.as_object_mut().unwrap().remove("attestation_report");
    });
    assert!(e.contains("attestation_report"), "{e}");
}

/// What the guest agent sends (cloister-tee-types' `SnpEvidence::from_raw`
/// of its raw report, serialised) is what this verifier reads back: every
/// raw vector survives the JSON byte for byte, and still verifies through it.
#[test]
fn guest_built_json_evidence_rebuilds_the_raw_report_and_verifies() {
    use cloister_tee_types::snp_evidence::{CertTableEntry, CertType, SnpEvidence};
    for (report, cert, cert_type) in [
        (
            "trustee-test-report.bin",
            "trustee-test-vcek.der",
            CertType::Vcek,
        ),
        (
            "trustee-test-vlek-report.bin",
            "trustee-test-vlek.der",
            CertType::Vlek,
        ),
        (
            "virtee-sev-report_milan.bin",
            "virtee-sev-vcek_milan.der",
            CertType::Vcek,
        ),
    ] {
        let raw = td(report);
        // As the agent sends it today: no certificates (`cert_chain: null`).
        let json = serde_json::to_vec(&SnpEvidence::from_raw(&raw, None).unwrap()).unwrap();
        let (back, certs) = from_trustee_json(&json).unwrap();
        assert!(back == raw, "{report}: the rebuilt report differs");
        assert!(certs.is_empty());
        // With the certificate table's VCEK/VLEK.
        let chain = vec![CertTableEntry {
            cert_type,
            data: td(cert),
        }];
        let ev = SnpEvidence::from_raw(&raw, Some(chain)).unwrap();
        let (back, certs) = from_trustee_json(&serde_json::to_vec(&ev).unwrap()).unwrap();
        assert!(back == raw, "{report}: the rebuilt report differs");
        assert_eq!(certs, [td(cert)]);
        verifier()
            .verify_evidence(&back, &certs, JUNE_2025)
            .unwrap_or_else(|e| panic!("{report}: {e}"));
    }
}

#[test]
fn cert_table_is_parsed() {
    // Build a table: VCEK entry + terminator.
    let vcek = td("trustee-test-vcek.der");
    let mut t = Vec::new();
    let guid: [u8; 16] = [
        0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac,
        0xcd,
    ];
    t.extend_from_slice(&guid);
    t.extend_from_slice(&48u32.to_le_bytes());
    t.extend_from_slice(&(vcek.len() as u32).to_le_bytes());
    t.extend_from_slice(&[0u8; 24]);
    t.extend_from_slice(&vcek);
    let certs = snp::parse_cert_table(&t).unwrap();
    assert_eq!(certs, vec![vcek.clone()]);
    verifier()
        .verify_evidence(&td("trustee-test-report.bin"), &certs, JUNE_2025)
        .unwrap();
    // Entry pointing outside the table; missing terminator.
    let mut bad = t.clone();
    bad[20..24].copy_from_slice(&100_000u32.to_le_bytes());
    assert!(snp::parse_cert_table(&bad).is_err());
    assert!(snp::parse_cert_table(&t[..30]).is_err());
}

#[test]
fn the_matching_vcek_is_chosen_among_several() {
    // A cache directory may hold VCEKs of several chips: pick by hwID/TCB.
    let certs = [
        td("virtee-sev-vcek_milan.der"),
        td("trustee-test-vlek.der"),
        td("trustee-test-vcek.der"),
    ];
    verifier()
        .verify_evidence(&td("trustee-test-report.bin"), &certs, JUNE_2025)
        .unwrap();
    verifier()
        .verify_evidence(&td("virtee-sev-report_milan.bin"), &certs, JUNE_2025)
        .unwrap();
    verifier()
        .verify_evidence(&td("trustee-test-vlek-report.bin"), &certs, JUNE_2025)
        .unwrap();
}

#[test]
fn cached_vek_does_not_let_a_tampered_one_through() {
    let v = verifier();
    let report = td("virtee-sev-report_milan.bin");
    let vcek = td("virtee-sev-vcek_milan.der");
    for _ in 0..2 {
        v.verify_evidence(&report, std::slice::from_ref(&vcek), JUNE_2025)
            .unwrap();
    }
    let mut bad = vcek.clone();
    let serial_last = 14 + usize::from(bad[14]);
    bad[serial_last] ^= 0x01;
    let e = v.verify_evidence(&report, &[bad], JUNE_2025).unwrap_err();
    assert!(matches!(e, SnpError::Signature { .. }), "{e}");
    // Validity is still judged per call even for a cached key.
    let e = v
        .verify_evidence(&report, &[vcek], 4_000_000_000)
        .unwrap_err();
    assert!(matches!(e, SnpError::Validity { .. }), "{e}");
}
