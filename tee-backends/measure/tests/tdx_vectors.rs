//! TDX: the self-contained cases of testdata/tdx/tdx-measurement-vectors.json
//! (td-shim payload reference, CCEL replays) and MRTD of Debian's OVMF
//! (TDVF metadata) against an independent Python/hashlib computation.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use cloister_measure::tdx::{
    mrtd, replay_ccel, td_payload_reference, tdvf_sections, TdvfSectionType, TdxError,
};

mod common;
use common::{read_tdx as read, tdx_vectors as vectors};

#[test]
fn td_shim_payload_param_reference() {
    let v = vectors();
    let p = &v["td_shim_payload_reference"]["param"];
    let pad =
        usize::from_str_radix(p["pad_to"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let got = td_payload_reference(p["input_ascii"].as_str().unwrap().as_bytes(), pad).unwrap();
    assert_eq!(got.to_hex(), p["sha384"].as_str().unwrap());
}

#[test]
fn ccel_replays() {
    let v = vectors();
    let replays = v["ccel_replays"].as_object().unwrap();
    let mut n = 0;
    for (file, want) in replays {
        if file.starts_with('_') || file == "negative" {
            continue;
        }
        let mut log = read(file);
        if file.contains("trimmed") {
            log.resize(1 << 20, 0); // the original is zero-padded to 1 MiB
        }
        let r = replay_ccel(&log).unwrap();
        for i in 0..4 {
            assert_eq!(
                r.0[i].to_hex(),
                want[format!("rtmr{i}")].as_str().unwrap(),
                "{file} RTMR{i}"
            );
        }
        n += 1;
    }
    assert_eq!(n, 3);
    // The negative: a reference with RTMR1's first nibble changed must not match.
    let mut log = read("trustee-CCEL_data.trimmed-5756B.bin");
    log.resize(1 << 20, 0);
    let r = replay_ccel(&log).unwrap();
    assert_ne!(r.0[1].to_hex(), "2fa3be56af61208bbd179dc7b124988eb929319154663c539d6f46445ecac2fec287075047ff7bd1922829fec28cd3cf");
    // Truncated mid-event: refused, naming the offset.
    assert!(matches!(
        replay_ccel(&read("trustee-CCEL_data.trimmed-5756B.bin")),
        Err(TdxError::EventLog { offset: 5640, .. })
    ));
}

#[test]
fn corrupt_ccel_is_refused_with_offset() {
    let mut log = read("trustee-CCEL_data_ovmf");
    // Break the first TCG_PCR_EVENT2's digest count (after the Spec ID event).
    let hsize = u32::from_le_bytes(log[28..32].try_into().unwrap()) as usize;
    let first = 32 + hsize;
    log[first + 8..first + 12].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(replay_ccel(&log), Err(TdxError::EventLog { .. })));
    assert!(matches!(
        replay_ccel(&[0u8; 16]),
        Err(TdxError::EventLog { offset: 0, .. })
    ));
}

const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

#[test]
fn mrtd_of_debian_ovmf_matches_independent_python() {
    assert!(
        Path::new(DEBIAN_OVMF).exists(),
        "{DEBIAN_OVMF} missing: install Debian's `ovmf` package (apt-get install ovmf; it is in scripts/install-deps.sh)"
    );
    let image = std::fs::read(DEBIAN_OVMF).unwrap();
    let sections = tdvf_sections(&image).unwrap();
    assert_eq!(sections[0].kind, TdvfSectionType::Bfv);
    assert!(sections[0].mr_extend());
    assert!(sections.iter().any(|s| s.kind == TdvfSectionType::TdHob));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tdx_mrtd_reference.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(DEBIAN_OVMF)
        .output()
        .expect("python3 is needed for the independent MRTD reference (apt-get install python3)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = String::from_utf8(out.stdout).unwrap();
    assert_eq!(mrtd(&image).unwrap().to_hex(), want.trim());
    // A one-byte change in the measured BFV changes MRTD.
    let mut t = image.clone();
    t[sections[0].data_offset as usize + 12345] ^= 1;
    assert_ne!(mrtd(&t).unwrap(), mrtd(&image).unwrap());
}
