//! TDX vectors from testdata/tdx (provenance in testdata/tdx/SOURCES.md),
//! each with the outcome its SOURCES.md row states, plus tampering cases
//! and CCEL replays.
#![allow(clippy::unwrap_used)]

use cloister_attestation::tdx::{
    self, ccel, collateral_from_json, BodyType, CollateralStore, Quote, QuoteError, TdxConfig,
    TdxError, TdxVerifier,
};

fn td(name: &str) -> Vec<u8> {
    let p = format!("{}/testdata/tdx/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn hexfile(name: &str) -> Vec<u8> {
    let s = String::from_utf8(td(name)).unwrap();
    hex::decode(s.trim().trim_start_matches("0x")).unwrap()
}

/// 2025-06-19T10:33:27Z, inside dcap-qvl-tdx_quote's collateral window.
const NOW_V4: u64 = 1_750_329_207;
/// 2025-07-19T10:15Z: after the PCK CRL's nextUpdate.
const AFTER_V4: u64 = 1_752_920_100;
/// 2026-02-18T10:59:51Z, inside the outdated quote's collateral window.
const NOW_OUTDATED: u64 = 1_771_412_391;
/// 2026-10-08T00:10:46Z, inside the td15ex collateral window.
const NOW_TD15EX: u64 = 1_791_418_246;

fn coll(name: &str) -> tdx::QuoteCollateralV3 {
    collateral_from_json(&td(name)).unwrap()
}

/// trustee's CCEL_data: the vector is the non-zero prefix; SOURCES.md says to
/// zero-pad it to 1 MiB to get the original.
fn ccel_data() -> Vec<u8> {
    let mut full = td("trustee-CCEL_data.trimmed-5756B.bin");
    full.resize(1 << 20, 0);
    full
}

#[test]
fn dcap_qvl_v4_quote_is_up_to_date() {
    let q = td("dcap-qvl-tdx_quote");
    let c = TdxVerifier::new()
        .verify(
            &q,
            &coll("dcap-qvl-tdx_quote_collateral.json"),
            &TdxConfig::default(),
            NOW_V4,
        )
        .unwrap();
    assert_eq!(c.version, 4);
    assert_eq!(c.body_type, BodyType::Td10);
    assert_eq!(c.tcb_status, "UpToDate");
    assert!(c.advisory_ids.is_empty());
    assert_eq!(c.mr_td, "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7");
    assert!(c.tee_tcb_svn.starts_with("06010300"));
    assert!(c.rtmr0.starts_with("44c0197b") && c.rtmr0.ends_with("c9c0"));
    assert!(c.rtmr1.starts_with("0084452c") && c.rtmr1.ends_with("9378"));
    assert!(c.rtmr2.starts_with("d833feef") && c.rtmr2.ends_with("3132"));
    assert!(c.report_data.starts_with("9a9d48e7"));
    assert!(!c.td_attributes.debug);
    let j = c.to_json();
    assert_eq!(j["tcb_status"], "UpToDate");
    assert_eq!(j["mr_td"], c.mr_td);
    assert_eq!(j["td_attributes"]["debug"], false);

    // The right nonce passes; a wrong one is named.
    let rd = hex::decode(&c.report_data).unwrap();
    let cfg = TdxConfig {
        expected_report_data: Some(rd),
        expected_mr_config_id: Some(vec![]),
        ..TdxConfig::default()
    };
    tdx::verify(
        &q,
        &coll("dcap-qvl-tdx_quote_collateral.json"),
        &cfg,
        NOW_V4,
    )
    .unwrap();
}

#[test]
fn dcap_qvl_v4_quote_fails_after_collateral_expiry() {
    let e = TdxVerifier::new()
        .verify_evidence(
            &td("dcap-qvl-tdx_quote"),
            &coll("dcap-qvl-tdx_quote_collateral.json"),
            AFTER_V4,
        )
        .unwrap_err();
    // dcap-qvl reports the expired CRL as a certificate-chain failure.
    assert!(
        matches!(e, TdxError::Signature(_) | TdxError::Verification(_)),
        "{e}"
    );
}

#[test]
fn wrong_nonce_and_mrconfigid_are_named() {
    let cfg = TdxConfig {
        expected_report_data: Some(vec![0x11; 48]),
        expected_mr_config_id: Some(vec![0x22; 32]),
        ..TdxConfig::default()
    };
    let e = tdx::verify(
        &td("dcap-qvl-tdx_quote"),
        &coll("dcap-qvl-tdx_quote_collateral.json"),
        &cfg,
        NOW_V4,
    )
    .unwrap_err();
    let TdxError::Claims(f) = e else {
        panic!("{e}")
    };
    let names: Vec<_> = f.iter().map(|f| f.claim.as_str()).collect();
    assert_eq!(names, ["report_data", "mr_config_id"]);
    assert_eq!(
        f[0].expected,
        format!("{}{}", "11".repeat(48), "0".repeat(32))
    );
    assert!(f[0].found.starts_with("9a9d48e7"));
    assert_eq!(f[1].found, "0".repeat(96));
}

#[test]
fn outdated_v5_quote_has_no_matching_tcb_level() {
    let q = td("dcap-qvl-tdx_quote_outdated");
    let parsed = Quote::parse(&q).unwrap();
    assert_eq!(parsed.version, 5);
    assert_eq!(parsed.body_type, BodyType::Td15);
    assert_eq!(hex::encode(parsed.mr_td), "273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd");
    assert!(parsed.rtmr.iter().all(|r| r.iter().all(|&b| b == 0)));
    let e = TdxVerifier::new()
        .verify_evidence(
            &q,
            &coll("dcap-qvl-tdx_quote_outdated_collateral.json"),
            NOW_OUTDATED,
        )
        .unwrap_err();
    assert!(
        matches!(&e, TdxError::Verification(m) if m.contains("No matching TCB level")),
        "{e}"
    );
}

#[test]
fn td15ex_v5_body_type_4_is_up_to_date() {
    let q = td("dcap-qvl-tdx_quote_td15ex");
    assert_eq!(&q[48..54], &[4, 0, 0x75, 3, 0, 0]);
    let c = TdxVerifier::new()
        .verify(
            &q,
            &coll("dcap-qvl-tdx_quote_td15ex_collateral.json"),
            &TdxConfig::default(),
            NOW_TD15EX,
        )
        .unwrap();
    assert_eq!(c.version, 5);
    assert_eq!(c.body_type, BodyType::Td15Ex);
    assert_eq!(c.tcb_status, "UpToDate");
    assert_eq!(c.mr_td, "2a674327c50218dba880066b349b8d559d749ed68dce33fd651c184a877d084b07a9e583767a7ad5da13ed91deec2b70");
    assert!(c.rtmr0.starts_with("0345d2a1") && c.rtmr0.ends_with("827165"));
    assert!(c.rtmr3.starts_with("556d4986") && c.rtmr3.ends_with("3b5fdf"));
    assert_eq!(
        c.mr_config_id,
        format!(
            "0151ed70bddb5f12574176b37e3f53bbfc4ba15c33cbddc2d03d90b6de14596cc{}",
            "0".repeat(31)
        )
    );
    assert!(c.tee_tcb_svn.starts_with("0f010400"));
    assert!(c.tee_tcb_svn2.is_some() && c.mr_servicetd.is_some());
}

#[test]
fn td15ex_flips_are_rejected() {
    let q = td("dcap-qvl-tdx_quote_td15ex");
    let col = coll("dcap-qvl-tdx_quote_td15ex_collateral.json");
    for off in [48 + 6 + 649, 48 + 6 + 884] {
        let mut b = q.clone();
        b[off] ^= 1;
        let e = TdxVerifier::new()
            .verify_evidence(&b, &col, NOW_TD15EX)
            .unwrap_err();
        assert!(matches!(e, TdxError::Signature(_)), "byte {off}: {e}");
    }
    let mut b = q;
    b[50] ^= 1;
    let e = Quote::parse(&b).unwrap_err();
    assert!(matches!(e, QuoteError::BodySize { .. }), "{e}");
}

#[test]
fn every_signed_region_byte_flip_names_a_signature() {
    let q = td("dcap-qvl-tdx_quote");
    let col = coll("dcap-qvl-tdx_quote_collateral.json");
    let v = TdxVerifier::new();
    let auth = 48 + 584 + 4;
    let regions = [
        ("header user_data", 40),
        ("body mr_td", 48 + 16 + 48 + 48 + 24 + 5),
        ("body report_data", 48 + 584 - 3),
        ("quote signature", auth + 10),
        ("attestation key", auth + 64 + 10),
        ("QE report", auth + 128 + 6 + 100),
        ("QE report signature", auth + 128 + 6 + 384 + 10),
    ];
    for (what, off) in regions {
        let mut b = q.clone();
        b[off] ^= 1;
        let e = v.verify_evidence(&b, &col, NOW_V4).unwrap_err();
        assert!(
            matches!(e, TdxError::Signature(_)),
            "{what} (byte {off}): {e}"
        );
        assert!(e.to_string().contains("signature"), "{what}: {e}");
    }
    // Collateral signed regions: TCB info and QE identity bodies.
    let mut c = col.clone();
    c.tcb_info = c.tcb_info.replacen(
        "\"tcbEvaluationDataNumber\":17",
        "\"tcbEvaluationDataNumber\":18",
        1,
    );
    assert_ne!(c.tcb_info, col.tcb_info);
    let e = v.verify_evidence(&q, &c, NOW_V4).unwrap_err();
    assert!(
        matches!(&e, TdxError::Signature(m) if m.contains("tcb_info")),
        "{e}"
    );
    let mut c = col.clone();
    c.qe_identity = c.qe_identity.replacen("\"version\":2", "\"version\":3", 1);
    assert_ne!(c.qe_identity, col.qe_identity);
    let e = v.verify_evidence(&q, &c, NOW_V4).unwrap_err();
    assert!(
        matches!(&e, TdxError::Signature(m) if m.contains("qe_identity")),
        "{e}"
    );
}

#[test]
fn unknown_root_is_rejected() {
    // Trusting another root (the SNP Milan ARK is not Intel's) fails the chains.
    let other = std::fs::read(format!(
        "{}/testdata/snp/virtee-sev-vcek_milan.der",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let e = TdxVerifier::with_root_ca(other)
        .verify_evidence(
            &td("dcap-qvl-tdx_quote"),
            &coll("dcap-qvl-tdx_quote_collateral.json"),
            NOW_V4,
        )
        .unwrap_err();
    assert!(
        matches!(e, TdxError::Signature(_) | TdxError::Verification(_)),
        "{e}"
    );
}

#[test]
fn sgx_quotes_are_not_tdx() {
    for name in ["dcap-qvl-sgx_quote", "trustee-occlum_quote.dat"] {
        let e = Quote::parse(&td(name)).unwrap_err();
        assert_eq!(e, QuoteError::Version(3), "{name}");
    }
}

#[test]
fn truncated_and_oversized_quotes_are_rejected() {
    let q = td("dcap-qvl-tdx_quote");
    for n in [0, 10, 47, 48 + 100, 48 + 584 + 2, 48 + 584 + 4 + 200, 4935] {
        let e = Quote::parse(&q[..n]).unwrap_err();
        assert!(
            matches!(e, QuoteError::Truncated { .. } | QuoteError::AuthData(_)),
            "{n}: {e}"
        );
        assert!(e.to_string().contains("truncated"), "{n}: {e}");
    }
    // Zero padding after the quote is fine (the file itself has 70 bytes of it);
    // a non-zero trailing byte is not, nor is a huge input.
    let mut b = q.clone();
    b.push(1);
    let e = Quote::parse(&b).unwrap_err();
    assert!(matches!(e, QuoteError::Oversized(_)), "{e}");
    let e = Quote::parse(&vec![0u8; tdx::MAX_QUOTE_LEN + 1]).unwrap_err();
    assert!(matches!(e, QuoteError::Oversized(_)), "{e}");
    // Wrong v5 body size claim.
    let mut b = td("trustee-tdx_quote_5.dat");
    b[50..54].copy_from_slice(&600u32.to_le_bytes());
    assert_eq!(
        Quote::parse(&b).unwrap_err(),
        QuoteError::BodySize {
            body_type: 3,
            found: 600,
            expected: 648
        }
    );
    // Unknown body type.
    let mut b = td("trustee-tdx_quote_5.dat");
    b[48] = 9;
    assert_eq!(Quote::parse(&b).unwrap_err(), QuoteError::BodyType(9));
}

#[test]
fn oversized_expectations_are_config_errors() {
    let c = TdxVerifier::new()
        .verify_evidence(
            &td("dcap-qvl-tdx_quote"),
            &coll("dcap-qvl-tdx_quote_collateral.json"),
            NOW_V4,
        )
        .unwrap();
    let cfg = TdxConfig {
        expected_mr_config_id: Some(vec![0; 49]),
        ..TdxConfig::default()
    };
    assert!(
        matches!(tdx::check_claims(&c, &cfg), Err(TdxError::Config(m)) if m.contains("at most 48"))
    );
    let cfg = TdxConfig {
        expected_report_data: Some(vec![0; 65]),
        ..TdxConfig::default()
    };
    assert!(
        matches!(tdx::check_claims(&c, &cfg), Err(TdxError::Config(m)) if m.contains("at most 64"))
    );
}

#[test]
fn trustee_quotes_parse_with_expected_claims() {
    // v4 debug TD.
    let q = Quote::parse(&td("trustee-tdx_quote_4.dat")).unwrap();
    assert_eq!(q.version, 4);
    assert_eq!(hex::encode(q.td_attributes), "0100001000000000");
    assert_eq!(hex::encode(q.mr_td), "705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031");
    assert_eq!(hex::encode(q.xfam), "e742060000000000");
    assert_eq!(hex::encode(q.report_data), "7c71fe2c86eff65a7cf8dbc22b3275689fd0464a267baced1bf94fc1324656aeb755da3d44d098c0c87382f3a5f85b45c8a28fee1d3bdb38342bf96671501429");
    assert_eq!(q.pck_cert_type, 5);
    let c = tdx::TdxClaims::from_quote(&q, "UpToDate".into(), vec![]);
    assert!(c.td_attributes.debug && c.td_attributes.sept_ve_disable);
    // A debug TD is refused unless allowed.
    let f = tdx::check_claims(&c, &TdxConfig::default()).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(
        (
            f[0].claim.as_str(),
            f[0].expected.as_str(),
            f[0].found.as_str()
        ),
        ("td_attributes.debug", "false", "true")
    );
    let allow = TdxConfig {
        allow_debug: true,
        ..TdxConfig::default()
    };
    assert!(tdx::check_claims(&c, &allow).unwrap().is_empty());

    // v5, body type 3, non-debug.
    let q = Quote::parse(&td("trustee-tdx_quote_5.dat")).unwrap();
    assert_eq!((q.version, q.body_type), (5, BodyType::Td15));
    assert_eq!(hex::encode(q.td_attributes), "0000001000000000");
    assert_eq!(hex::encode(q.mr_td), "dfba221b48a22af8511542ee796603f37382800840dcd978703909bf8e64d4c8a1e9de86e7c9638bfcba422f3886400a");
    assert!(hex::encode(q.tee_tcb_svn).starts_with("05010200"));
    assert!(hex::encode(q.mr_servicetd.unwrap()).starts_with("383c87d3"));
    assert!(hex::encode(q.report_data).starts_with("6d6ab13b"));

    // v4 with MRCONFIGID and a 48-byte report_data hash, 70 bytes of zero padding.
    let q = Quote::parse(&td("trustee-tdx_quote_6.dat")).unwrap();
    assert_eq!(q.len, 4936);
    assert_eq!(hex::encode(q.mr_config_id), "889abf4718f037e38d74464c11e7c91a6e9890b5546409e1e7df9de7a51ca93152bf847bd2440328e90adb18b150ed67");
    assert_eq!(hex::encode(q.report_data), format!("26cae1c77185617fb6a03fc29bf1f924596e52352b9b7594940b576ae126cd4a570cc3202a900c5d19a6eb0a95b32cfd{}", "0".repeat(32)));
    let c = tdx::TdxClaims::from_quote(&q, "UpToDate".into(), vec![]);
    let cfg = TdxConfig {
        expected_mr_config_id: Some(q.mr_config_id.to_vec()),
        expected_report_data: Some(q.report_data[..48].to_vec()),
        ..TdxConfig::default()
    };
    assert!(tdx::check_claims(&c, &cfg).unwrap().is_empty());

    // Azure vTPM TD quote and the two hex quotes.
    let q = Quote::parse(&td("trustee-az-tdx-vtpm-td-quote.bin")).unwrap();
    assert_eq!(hex::encode(q.mr_td), "024a32b070383331181619fa387cb4d55d1e38879f989933055ccad5bc2db795d1737b66205949d15469dc8c1ba7ab7b");
    assert_eq!(q.td_attributes, [0; 8]);
    let q = Quote::parse(&hexfile("dcap-qvl-tdx-quote.hex")).unwrap();
    assert!(hex::encode(q.mr_td).starts_with("7ba9e262"));
    assert_ne!(q.rtmr[3], [0; 48]);
    let q = Quote::parse(&hexfile("dcap-qvl-quote-from-tappd.hex")).unwrap();
    assert!(hex::encode(q.mr_td).starts_with("c68518a0"));
}

#[test]
fn collateral_store_picks_by_fmspc() {
    let dir = std::env::temp_dir().join(format!("cloister-tdx-coll-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for n in [
        "dcap-qvl-tdx_quote_collateral.json",
        "dcap-qvl-tdx_quote_outdated_collateral.json",
    ] {
        std::fs::write(dir.join(n), td(n)).unwrap();
    }
    let store = CollateralStore::from_dir(&dir).unwrap();
    let q = td("dcap-qvl-tdx_quote");
    let c = store.for_quote(&q).unwrap();
    TdxVerifier::new().verify_evidence(&q, c, NOW_V4).unwrap();
    // The td15ex quote's FMSPC (B0C06F000000) is the same as dcap-qvl-tdx_quote's;
    // the outdated quote's (90C06F000000) has its own file.
    assert!(store.for_quote(&td("dcap-qvl-tdx_quote_outdated")).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
    let empty = CollateralStore::new();
    assert!(
        matches!(empty.for_quote(&q), Err(TdxError::Collateral(m)) if m.contains("no collateral for FMSPC"))
    );
}

const ZERO: &str = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

#[test]
fn ccel_replays_match_published_rtmrs() {
    let cases = [
        ("trustee-CCEL_data.trimmed-5756B.bin", [
            "2dc712306a963eadb894ad47dbaa17df44814151555aee11cbb843becca88950ffd079664902e6f22c66f7c8213543f4",
            "0fa3be56af61208bbd179dc7b124988eb929319154663c539d6f46445ecac2fec287075047ff7bd1922829fec28cd3cf",
            ZERO, ZERO,
        ]),
        ("trustee-CCEL_data_ovmf", [
            "8566f998798db09443b244c62de9a3041fb02e2e6936c4396d784bba2e90177329ec5aba3bb484404f2ab9cc90abe193",
            "775b9f6bfe99f8a31396f0d0218e67ffa796d3b96ccf961cbb0deba48c79c00f082cda1a5567c1c16305f1fc210c13c6",
            "94eaf7a7bf398ed8d888c91057ae0261802e4f3df084213a76ca7f0b5055ac9d2241de43cd58d9e8b49c503bbf25f34a",
            ZERO,
        ]),
        ("trustee-eventlog-CCEL_data_grub", [
            "cec0a104f691f60da2387fea3c2de00c4ac035e2bb479ff02edcce69039d9e9907f0b3e55031da3dc7038f423adebd79",
            "6c289e0c62182d41ebe97bdbc9872d10998a08eaa86adcdc684001a363207ee72942c7522cdf00a4bbc3d784bed7b670",
            "08919d017ba0e52cd6d966351c7de16fe76c1d3d3d3da4554239e4c7d16cb8b82a94e7eaea3a0e6e18eb690b999fd31e",
            ZERO,
        ]),
    ];
    for (name, want) in cases {
        let log = if name.contains("trimmed") {
            ccel_data()
        } else {
            td(name)
        };
        let got = ccel::replay(&log).unwrap();
        for i in 0..4 {
            assert_eq!(hex::encode(got[i]), want[i], "{name} rtmr{i}");
        }
    }
    // Without its padding the last event is cut short: refused, not guessed.
    let e = ccel::replay(&td("trustee-CCEL_data.trimmed-5756B.bin")).unwrap_err();
    assert!(matches!(e, tdx::EventLogError::Truncated { .. }), "{e}");
}

#[test]
fn event_log_checked_against_quote_rtmrs() {
    // A quote whose RTMRs equal the CCEL_data replay (trustee quote_4 with its
    // RTMR1 fields replaced) passes; the original names rtmr0 and rtmr1.
    let log = ccel_data();
    let q = Quote::parse(&td("trustee-tdx_quote_4.dat")).unwrap();
    let c = tdx::TdxClaims::from_quote(&q, "UpToDate".into(), vec![]);
    let f = tdx::check_event_log(&c, &log).unwrap();
    let names: Vec<_> = f.iter().map(|f| f.claim.as_str()).collect();
    assert_eq!(names, ["rtmr0", "rtmr1"]);
    assert!(f[1].expected.starts_with("0fa3be56"));
    let mut q2 = q.clone();
    let replay = ccel::replay(&log).unwrap();
    q2.rtmr = replay;
    let c2 = tdx::TdxClaims::from_quote(&q2, "UpToDate".into(), vec![]);
    assert!(tdx::check_event_log(&c2, &log).unwrap().is_empty());
    // One changed nibble in the reference is named (trustee's negative case).
    let mut q3 = q2;
    q3.rtmr[1][0] = 0x2f;
    let c3 = tdx::TdxClaims::from_quote(&q3, "UpToDate".into(), vec![]);
    let f = tdx::check_event_log(&c3, &log).unwrap();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].claim, "rtmr1");
}

#[test]
fn malformed_event_logs_are_rejected() {
    let log = td("trustee-CCEL_data_ovmf");
    assert!(matches!(
        ccel::replay(&log[..10]),
        Err(tdx::EventLogError::Truncated { .. })
    ));
    let mut bad = log.clone();
    bad[4] = 1; // header event type
    assert!(matches!(
        ccel::replay(&bad),
        Err(tdx::EventLogError::Header(_))
    ));
    let events = ccel::parse(&log).unwrap();
    assert!(events.len() > 10);
    // Truncate in the middle of the last event.
    let used: usize = 2000;
    assert!(ccel::replay(&log[..used]).is_err());
}
