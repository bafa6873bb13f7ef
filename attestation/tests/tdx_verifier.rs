//! `TdxEvidenceVerifier` through the `Verifier`: the dcap-qvl TDX vectors (provenance
//! in testdata/tdx/SOURCES.md) appraised with collateral from a directory.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use cloister_attestation::verifiers::TdxEvidenceVerifier;
use cloister_attestation::{
    Category, ReferenceValues, ReportData, Status, TeeKind, Verifier, VerifierConfig,
};

fn td(name: &str) -> Vec<u8> {
    let p = format!("{}/testdata/tdx/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// 2025-06-19T10:33:27Z, inside dcap-qvl-tdx_quote's collateral window.
const NOW_V4: i64 = 1_750_329_207;
/// 2026-02-18T10:59:51Z, inside the outdated quote's collateral window.
const NOW_OUTDATED: i64 = 1_771_412_391;
const MR_TD: &str = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";

/// A directory with the v4 and the outdated quote's collateral (distinct FMSPCs).
fn collateral_dir(tag: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("cloister-tdx-backend-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for n in [
        "dcap-qvl-tdx_quote_collateral.json",
        "dcap-qvl-tdx_quote_outdated_collateral.json",
    ] {
        std::fs::write(dir.join(n), td(n)).unwrap();
    }
    dir
}

fn verifier(tag: &str, mr_td: &str) -> Verifier {
    let dir = collateral_dir(tag);
    let backend = TdxEvidenceVerifier::new(Some(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let rv = full_rv(mr_td);
    Verifier::new(VerifierConfig {
        reference_values: rv,
        ..Default::default()
    })
    .unwrap()
    .with_verifier(TeeKind::Tdx, Arc::new(backend))
}

/// Reference values that identify the quote's launch: MRTD (as given) and
/// the quote's RTMR0..2.
fn full_rv(mr_td: &str) -> ReferenceValues {
    let q = cloister_attestation::tdx::Quote::parse(&td("dcap-qvl-tdx_quote")).unwrap();
    let c = cloister_attestation::tdx::TdxClaims::from_quote(&q, "UpToDate".into(), Vec::new());
    ReferenceValues::parse(&format!(
        r#"{{"named": {{"tdx.mr_td": ["{mr_td}"], "tdx.rtmr0": ["{}"], "tdx.rtmr1": ["{}"], "tdx.rtmr2": ["{}"]}}}}"#,
        c.rtmr0, c.rtmr1, c.rtmr2
    ))
    .unwrap()
}

#[test]
fn mrtd_alone_does_not_identify_the_launch() {
    let dir = collateral_dir("mrtd-only");
    let backend = TdxEvidenceVerifier::new(Some(&dir)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let rv =
        ReferenceValues::parse(&format!(r#"{{"named": {{"tdx.mr_td": ["{MR_TD}"]}}}}"#)).unwrap();
    let v = Verifier::new(VerifierConfig {
        reference_values: rv,
        ..Default::default()
    })
    .unwrap()
    .with_verifier(TeeKind::Tdx, Arc::new(backend));
    let a = v
        .appraise(
            TeeKind::Tdx,
            &td("dcap-qvl-tdx_quote"),
            Some(quote_report_data()),
            Some(&[]),
            NOW_V4,
        )
        .unwrap();
    // Firmware (MRTD) matched: hardware; the kernel is unidentified.
    assert_eq!(a.status, Status::Warning, "{:?}", a.failures);
    assert_eq!(a.trust_vector["executables"], 33);
    assert_eq!(a.trust_vector["hardware"], 2);
    let f = a
        .failures
        .iter()
        .find(|f| f.claim == "reference values identify the launch")
        .unwrap();
    assert!(
        f.expected.contains("tdx.rtmr0, tdx.rtmr1, tdx.rtmr2"),
        "{f:?}"
    );
}

fn quote_report_data() -> ReportData {
    let q = cloister_attestation::tdx::Quote::parse(&td("dcap-qvl-tdx_quote")).unwrap();
    ReportData(q.report_data)
}

#[test]
fn up_to_date_quote_is_affirming() {
    let v = verifier("ok", MR_TD);
    let rd = quote_report_data();
    let a = v
        .appraise(
            TeeKind::Tdx,
            &td("dcap-qvl-tdx_quote"),
            Some(rd),
            Some(&[]),
            NOW_V4,
        )
        .unwrap();
    assert_eq!(a.status, Status::Affirming, "{:?}", a.failures);
    assert!(a.failures.is_empty());
    assert!(!a.simulated);
    assert_eq!(a.claims["mr_td"], MR_TD);
    assert_eq!(a.claims["tcb_status"], "UpToDate");
    assert_eq!(a.claims["td_attributes"]["debug"], false);
    for k in [
        "rtmr0",
        "rtmr1",
        "rtmr2",
        "rtmr3",
        "mr_config_id",
        "mr_owner",
        "xfam",
    ] {
        assert!(a.claims[k].is_string(), "claim {k} missing");
    }
    assert_eq!(a.report_data, hex::encode(rd.0));
    assert_eq!(a.init_data.as_deref(), Some("0".repeat(96).as_str()));
    let names: Vec<_> = a.checks.iter().map(|c| c.claim.as_str()).collect();
    for n in [
        "tdx pck chain",
        "tdx quote signature",
        "tcb_status",
        "tdx.mr_td",
        "report_data",
        "init_data",
    ] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
}

#[test]
fn wrong_nonce_mrconfigid_and_mrtd_are_named() {
    let v = verifier("nonce", &"00".repeat(48));
    let a = v
        .appraise(
            TeeKind::Tdx,
            &td("dcap-qvl-tdx_quote"),
            Some(ReportData([0x11; 64])),
            Some(&[0x22; 32]),
            NOW_V4,
        )
        .unwrap();
    assert_eq!(a.status, Status::Contraindicated);
    let names: Vec<_> = a.failures.iter().map(|f| f.claim.as_str()).collect();
    assert_eq!(names, ["tdx.mr_td", "report_data", "init_data"]);
    assert_eq!(a.failures[1].expected, "11".repeat(64));
    assert!(a.failures[1].found.starts_with("9a9d48e7"));
    assert_eq!(a.failures[2].found, "0".repeat(96));
    assert_eq!(a.failures[0].found, MR_TD);
}

#[test]
fn outdated_quote_is_not_affirming() {
    let v = verifier("outdated", MR_TD);
    let a = v
        .appraise(
            TeeKind::Tdx,
            &td("dcap-qvl-tdx_quote_outdated"),
            None,
            None,
            NOW_OUTDATED,
        )
        .unwrap();
    // dcap-qvl refuses the TCB outright: contraindicated hardware.
    assert_eq!(a.status, Status::Contraindicated);
    assert_eq!(a.trust_vector["hardware"], 96);
    let tcb = a.checks.iter().find(|c| c.claim == "tcb_status").unwrap();
    assert!(!tcb.ok);
    assert_eq!(tcb.category, Category::TcbRevoked);
    assert!(tcb.found.contains("No matching TCB level"), "{}", tcb.found);
}

#[test]
fn expired_collateral_and_missing_collateral() {
    // After the PCK CRL's nextUpdate: a failing check, not an error.
    let v = verifier("expired", MR_TD);
    let a = v
        .appraise(
            TeeKind::Tdx,
            &td("dcap-qvl-tdx_quote"),
            None,
            None,
            1_752_920_100,
        )
        .unwrap();
    assert_eq!(a.status, Status::Contraindicated);
    assert!(!a.failures.is_empty());
    // No collateral for the quote's platform: unusable input naming the fix.
    let v = Verifier::new(VerifierConfig::default())
        .unwrap()
        .with_verifier(
            TeeKind::Tdx,
            Arc::new(TdxEvidenceVerifier::new(None).unwrap()),
        );
    let e = v
        .appraise(TeeKind::Tdx, &td("dcap-qvl-tdx_quote"), None, None, NOW_V4)
        .unwrap_err();
    let msg = format!(
        "{e:#} {:?}",
        std::error::Error::source(&e).map(|s| s.to_string())
    );
    assert!(msg.contains("--collateral-dir"), "{msg}");
    // Not a quote at all: unusable.
    assert!(v
        .appraise(TeeKind::Tdx, b"not a quote", None, None, NOW_V4)
        .is_err());
}

/// CCEL replay values (testdata/tdx/SOURCES.md, trustee CCEL_data_ovmf row).
const OVMF_RTMR0: &str = "8566f998798db09443b244c62de9a3041fb02e2e6936c4396d784bba2e90177329ec5aba3bb484404f2ab9cc90abe193";

#[test]
fn event_log_is_replayed_against_the_rtmrs() {
    // No published event log belongs to a quote with collateral, so the
    // OVMF log must mismatch dcap-qvl-tdx_quote's RTMR0..2 (RTMR3 is zero in
    // both); each mismatch names the RTMR, the replayed and the quoted value.
    let dir = collateral_dir("ccel");
    let backend = TdxEvidenceVerifier::new(Some(&dir))
        .unwrap()
        .with_event_log(td("trustee-CCEL_data_ovmf"));
    std::fs::remove_dir_all(&dir).unwrap();
    let v = Verifier::new(VerifierConfig::default())
        .unwrap()
        .with_verifier(TeeKind::Tdx, Arc::new(backend.clone()));
    let quote = td("dcap-qvl-tdx_quote");
    let a = v
        .appraise(TeeKind::Tdx, &quote, None, None, NOW_V4)
        .unwrap();
    assert_ne!(a.status, Status::Affirming);
    let q = cloister_attestation::tdx::Quote::parse(&quote).unwrap();
    let f0 = a.failures.iter().find(|f| f.claim == "rtmr0").unwrap();
    assert_eq!(f0.expected, format!("{OVMF_RTMR0} (event log replay)"));
    assert_eq!(f0.found, hex::encode(q.rtmr[0]));
    for i in 1..3 {
        assert!(
            a.failures.iter().any(|f| f.claim == format!("rtmr{i}")),
            "rtmr{i} not named: {:?}",
            a.failures
        );
    }
    let rtmr3 = a.checks.iter().find(|c| c.claim == "rtmr3").unwrap();
    assert!(rtmr3.ok, "{rtmr3:?}");
    assert_eq!(rtmr3.category, Category::Executables);

    // An unusable log makes the evidence unusable (not a verdict).
    let mut junk = td("trustee-CCEL_data_ovmf");
    junk.truncate(40);
    let v = Verifier::new(VerifierConfig::default())
        .unwrap()
        .with_verifier(TeeKind::Tdx, Arc::new(backend.with_event_log(junk)));
    let e = v
        .appraise(TeeKind::Tdx, &quote, None, None, NOW_V4)
        .unwrap_err();
    assert!(e.to_string().contains("CCEL"), "{e}");
}

#[test]
fn collateral_dir_skips_files_that_are_not_collateral() {
    let dir = collateral_dir("mixed");
    let cca = |n: &str| {
        std::fs::read(format!("{}/testdata/cca/{n}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    // Unrelated JSON (reference values, a claims array, trust anchors), a
    // certificate and an event log next to the collateral.
    std::fs::write(dir.join("rv.json"), cca("ccatoken-rv.json")).unwrap();
    std::fs::write(dir.join("claims.json"), cca("trustee-cca-claims.json")).unwrap();
    std::fs::write(dir.join("ta.json"), cca("ccatoken-ta.json")).unwrap();
    std::fs::write(dir.join("list.json"), b"[1, 2, 3]").unwrap();
    std::fs::write(dir.join("notes.json"), b"not json at all").unwrap();
    std::fs::write(dir.join("root.der"), td("dcap-qvl-tdx_quote")).unwrap();
    std::fs::write(dir.join("ccel.bin"), td("trustee-CCEL_data_ovmf")).unwrap();
    std::fs::create_dir_all(dir.join("sub.json")).unwrap();
    let backend = TdxEvidenceVerifier::new(Some(&dir)).unwrap();
    assert_eq!(backend.collateral.len(), 2);
    let skipped: Vec<String> = backend
        .collateral
        .skipped()
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        skipped,
        [
            "ccel.bin",
            "claims.json",
            "list.json",
            "notes.json",
            "root.der",
            "rv.json",
            "ta.json"
        ]
    );
    let rv = full_rv(MR_TD);
    let v = Verifier::new(VerifierConfig {
        reference_values: rv,
        ..Default::default()
    })
    .unwrap()
    .with_verifier(TeeKind::Tdx, Arc::new(backend));
    let a = v
        .appraise(
            TeeKind::Tdx,
            &td("dcap-qvl-tdx_quote"),
            Some(quote_report_data()),
            Some(&[]),
            NOW_V4,
        )
        .unwrap();
    assert_eq!(a.status, Status::Affirming, "{:?}", a.failures);

    // A file that claims to be collateral but is broken is an error naming it.
    std::fs::write(dir.join("broken.json"), br#"{"tcb_info": "{}"}"#).unwrap();
    let e = TdxEvidenceVerifier::new(Some(&dir))
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.json"), "{e}");

    // Only unrelated files: the missing collateral names what was skipped.
    for n in [
        "broken.json",
        "dcap-qvl-tdx_quote_collateral.json",
        "dcap-qvl-tdx_quote_outdated_collateral.json",
    ] {
        std::fs::remove_file(dir.join(n)).unwrap();
    }
    let backend = TdxEvidenceVerifier::new(Some(&dir)).unwrap();
    let v = Verifier::new(VerifierConfig::default())
        .unwrap()
        .with_verifier(TeeKind::Tdx, Arc::new(backend));
    let e = v
        .appraise(TeeKind::Tdx, &td("dcap-qvl-tdx_quote"), None, None, NOW_V4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no collateral for FMSPC"), "{e}");
    assert!(e.contains("rv.json"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trustee_evidence_json_carries_quote_and_event_log() {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let v = verifier("json", MR_TD);
    let quote = td("dcap-qvl-tdx_quote");
    let rd = quote_report_data();
    // No event log: the same verdict as the raw quote.
    let ev = serde_json::json!({"quote": b64(&quote), "cc_eventlog": null}).to_string();
    let a = v
        .appraise(TeeKind::Tdx, ev.as_bytes(), Some(rd), Some(&[]), NOW_V4)
        .unwrap();
    assert_eq!(a.status, Status::Affirming, "{:?}", a.failures);
    // The evidence's event log is replayed against the RTMRs.
    let ev = serde_json::json!({
        "quote": b64(&quote),
        "cc_eventlog": b64(&td("trustee-CCEL_data_ovmf")),
    })
    .to_string();
    let a = v
        .appraise(TeeKind::Tdx, ev.as_bytes(), Some(rd), Some(&[]), NOW_V4)
        .unwrap();
    let f0 = a.failures.iter().find(|f| f.claim == "rtmr0").unwrap();
    assert_eq!(f0.expected, format!("{OVMF_RTMR0} (event log replay)"));
    // Malformed JSON evidence is unusable, with the reason.
    for (ev, why) in [
        (r#"{"quote": 5}"#.to_string(), "quote"),
        (r#"{"quote": "!!"}"#.to_string(), "base64"),
        (
            serde_json::json!({"quote": b64(&quote), "cc_eventlog": 1}).to_string(),
            "cc_eventlog",
        ),
        ("{".to_string(), "JSON"),
    ] {
        let e = v
            .appraise(TeeKind::Tdx, ev.as_bytes(), None, None, NOW_V4)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{ev}: {e}");
    }
}
