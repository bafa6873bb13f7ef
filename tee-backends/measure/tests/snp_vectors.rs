//! testdata/snp/snp-launch-digest-vectors.json: every QEMU case, and the
//! firmware digests (see testdata/snp/SOURCES.md).

#![allow(clippy::unwrap_used)]

use cloister_measure::snp::{launch_digest, KernelHashes, Ovmf, SnpError, SnpLaunch};
use serde_json::Value;

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/testdata/snp/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn vectors() -> Value {
    serde_json::from_slice(&read("snp-launch-digest-vectors.json")).unwrap()
}

#[test]
fn ovmf_digests() {
    let v = vectors();
    for (file, want) in v["ovmf_hash"].as_object().unwrap() {
        let data = read(file);
        let ovmf = Ovmf::parse(&data).unwrap();
        assert_eq!(ovmf.gpa(), 0xFFFF_F000);
        assert_eq!(ovmf.digest().to_hex(), want.as_str().unwrap(), "{file}");
    }
}

#[test]
fn every_qemu_case() {
    let v = vectors();
    let mut ran = 0;
    for case in v["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        if case["vmm"] != "qemu" {
            continue; // GCE cases use another VMM's VMSA (sev-snp-measure only).
        }
        let data = read(case["ovmf"].as_str().unwrap());
        let ovmf = Ovmf::parse(&data).unwrap();
        // "" means an empty file, null means no kernel.
        let kernel_hashes = case["kernel"].as_str().map(|_| {
            KernelHashes::new(
                &[],
                case["initrd"].as_str().map(|_| &[][..]),
                case["append"].as_str(),
            )
        });
        let gf = u64::from_str_radix(
            case["guest_features"]
                .as_str()
                .unwrap()
                .trim_start_matches("0x"),
            16,
        )
        .unwrap();
        let launch = SnpLaunch {
            ovmf: &ovmf,
            vcpus: case["vcpus"].as_u64().unwrap() as u32,
            vcpu_type: case["vcpu_type"].as_str().unwrap(),
            guest_features: gf,
            kernel_hashes,
        };
        match case.get("expected_error") {
            Some(_) => assert_eq!(
                launch_digest(&launch),
                Err(SnpError::NoKernelHashesSection),
                "{name}"
            ),
            None => assert_eq!(
                launch_digest(&launch).unwrap().to_hex(),
                case["expected"].as_str().unwrap(),
                "{name}"
            ),
        }
        ran += 1;
    }
    assert_eq!(ran, 11);
}

#[test]
fn bad_inputs_are_refused_with_a_reason() {
    let data = read("virtee-sev-ovmf_AmdSev_suffix.bin");
    let ovmf = Ovmf::parse(&data).unwrap();
    let mut l = SnpLaunch {
        ovmf: &ovmf,
        vcpus: 1,
        vcpu_type: "Pentium",
        guest_features: 1,
        kernel_hashes: None,
    };
    assert_eq!(launch_digest(&l), Err(SnpError::VcpuType("Pentium".into())));
    l.vcpu_type = "EPYC-v4";
    l.vcpus = 0;
    assert_eq!(launch_digest(&l), Err(SnpError::Vcpus(0)));
    let mut broken = data.clone();
    let n = broken.len();
    broken[n - 40] ^= 0xff; // inside the footer GUID
    assert!(matches!(Ovmf::parse(&broken), Err(SnpError::Ovmf(_))));
}

#[test]
fn kernel_bytes_change_the_digest() {
    let data = read("virtee-sev-ovmf_AmdSev_suffix.bin");
    let ovmf = Ovmf::parse(&data).unwrap();
    let d = |k: &[u8]| {
        launch_digest(&SnpLaunch {
            ovmf: &ovmf,
            vcpus: 2,
            vcpu_type: "EPYC-Milan",
            guest_features: 0x21,
            kernel_hashes: Some(KernelHashes::new(k, Some(b"initrd"), Some("console=ttyS0"))),
        })
        .unwrap()
    };
    assert_ne!(d(b"kernel-a"), d(b"kernel-b"));
}
