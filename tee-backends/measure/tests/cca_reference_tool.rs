//! Our QEMU and kvmtool realm layouts against the reference calculator,
//! `realm-measurements` from the `cca-realm-measurements` crate 0.1.0, on
//! generated arm64 kernels, initrds and the DTBs the tool generates for each
//! launch.
//!
//! The tool is installed by `tee-backends/measure/scripts/install-reference-tool.sh`
//! into `<workspace>/target/tools/bin` (or point `CLOISTER_REALM_MEASUREMENTS`
//! at the binary). Without it these tests fail and say so.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use cloister_measure::cca::vmm::{ArmImageHeader, Kvmtool, LaunchImages, QemuVirt, RealmLayout};
use cloister_measure::cca::{HashAlgo, RealmFeatures, RmmVersion};

fn tool() -> PathBuf {
    if let Some(p) = std::env::var_os("CLOISTER_REALM_MEASUREMENTS") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tools/bin/realm-measurements");
    assert!(
        p.exists(),
        "reference tool not found at {}: run tee-backends/measure/scripts/install-reference-tool.sh \
         (or set CLOISTER_REALM_MEASUREMENTS to a realm-measurements 0.1.0 binary)",
        p.display()
    );
    p
}

/// Deterministic filler bytes.
fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn kernel(text_offset: u64, image_size: u64, len: usize, seed: u64) -> Vec<u8> {
    let mut k = filler(len, seed);
    let h = ArmImageHeader {
        text_offset,
        image_size,
        flags: 0xa,
    };
    k[..64].copy_from_slice(&h.to_bytes());
    k
}

struct Case {
    name: &'static str,
    vmm: &'static str,
    ram_mib: u64,
    kernel: Option<Vec<u8>>,
    initrd: Option<Vec<u8>>,
    log: bool,
    features: RealmFeatures,
    /// Host capabilities given to the tool.
    host_args: Vec<String>,
    /// VMM arguments given to the tool.
    vmm_args: Vec<String>,
}

fn host(ipa: u8, bps: u8, wps: u8, sve: u16, pmu: Option<u8>) -> Vec<String> {
    let mut v = vec![
        "--ipa-bits".into(),
        ipa.to_string(),
        "--num-bps".into(),
        bps.to_string(),
        "--num-wps".into(),
        wps.to_string(),
        "--sve-vl".into(),
        sve.to_string(),
        "--lpa2".into(),
        "false".into(),
    ];
    match pmu {
        Some(n) => v.extend([
            "--pmu".into(),
            "true".into(),
            "--pmu-num-ctrs".into(),
            n.to_string(),
        ]),
        None => v.extend([
            "--pmu".into(),
            "false".into(),
            "--pmu-num-ctrs".into(),
            "0".into(),
        ]),
    }
    v
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn cases() -> Vec<Case> {
    let f = |ipa, algo, sve, bps, wps, pmu| RealmFeatures {
        ipa_bits: ipa,
        lpa2: false,
        sve_vl_bits: sve,
        num_bps: bps,
        num_wps: wps,
        pmu_counters: pmu,
        hash_algo: algo,
    };
    let kv = |ram: u64| {
        Kvmtool {
            ram_size: ram << 20,
            measurement_log: false,
        }
        .s2sz()
    };
    vec![
        Case {
            name: "qemu-sha256-kernel-initrd",
            vmm: "qemu",
            ram_mib: 1024,
            kernel: Some(kernel(0, 0x200_0000, 1_000_003, 1)),
            initrd: Some(filler(100_001, 2)),
            log: false,
            features: f(QemuVirt::DEFAULT_S2SZ, HashAlgo::Sha256, 512, 6, 4, Some(6)),
            host_args: host(48, 6, 4, 512, Some(6)),
            vmm_args: s(&[
                "-M",
                "virt,confidential-guest-support=rme0",
                "-object",
                "rme-guest,id=rme0,measurement-algo=sha256",
                "-cpu",
                "host",
                "-enable-kvm",
                "-smp",
                "2",
                "-m",
                "1G",
                "-nographic",
                "-kernel",
                "Image",
                "-initrd",
                "initrd",
                "-append",
                "console=ttyAMA0 cloister.channel=serial",
            ]),
        },
        Case {
            name: "qemu-sha512-big-image-no-initrd",
            vmm: "qemu",
            ram_mib: 512,
            kernel: Some(kernel(0, 0xc00_0000, 3 * 1024 * 1024 + 5, 3)),
            initrd: None,
            log: false,
            features: f(QemuVirt::DEFAULT_S2SZ, HashAlgo::Sha512, 0, 2, 2, None),
            host_args: host(44, 2, 2, 0, None),
            vmm_args: s(&[
                "-M", "virt", "-smp", "1", "-m", "512M", "-kernel", "Image", "-append", "quiet",
            ]),
        },
        Case {
            name: "qemu-sha256-initrd-after-large-kernel-with-log",
            vmm: "qemu",
            ram_mib: 2048,
            kernel: Some(kernel(0, 0x900_0000, 200_000, 4)),
            initrd: Some(filler(4096, 5)),
            log: true,
            features: f(
                QemuVirt::DEFAULT_S2SZ,
                HashAlgo::Sha256,
                2048,
                16,
                16,
                Some(31),
            ),
            host_args: host(52, 16, 16, 2048, Some(31)),
            vmm_args: s(&[
                "-object",
                "rme-guest,id=rme0,measurement-algo=sha256,measurement-log=on",
                "-smp",
                "4",
                "-m",
                "2G",
                "-kernel",
                "Image",
                "-initrd",
                "initrd",
            ]),
        },
        Case {
            name: "qemu-sha512-no-payload",
            vmm: "qemu",
            ram_mib: 128,
            kernel: None,
            initrd: None,
            log: false,
            features: f(QemuVirt::DEFAULT_S2SZ, HashAlgo::Sha512, 0, 6, 6, None),
            host_args: host(52, 6, 6, 0, None),
            vmm_args: s(&["-smp", "1"]),
        },
        Case {
            name: "kvmtool-sha256-kernel-initrd",
            vmm: "kvmtool",
            ram_mib: 512,
            kernel: Some(kernel(0, 0x180_0000, 700_001, 6)),
            initrd: Some(filler(300_007, 7)),
            log: false,
            features: f(kv(512), HashAlgo::Sha256, 256, 6, 6, Some(6)),
            host_args: host(48, 6, 6, 512, Some(6)),
            vmm_args: s(&[
                "-c",
                "2",
                "-m",
                "512",
                "-k",
                "Image",
                "-i",
                "initrd",
                "--realm",
                "--irqchip",
                "gicv3",
                "--pmu",
                "--sve-max-vl",
                "256",
                "-p",
                "console=hvc0",
            ]),
        },
        Case {
            name: "kvmtool-sha512-small-ram-log",
            vmm: "kvmtool",
            ram_mib: 128,
            kernel: Some(kernel(0x8_0000, 0x100_0000, 50_000, 8)),
            initrd: Some(filler(5000, 9)),
            log: true,
            features: f(kv(128), HashAlgo::Sha512, 0, 2, 2, None),
            host_args: host(40, 2, 2, 0, None),
            vmm_args: s(&[
                "-c",
                "1",
                "-m",
                "128",
                "-k",
                "Image",
                "-i",
                "initrd",
                "--realm",
                "--irqchip",
                "gicv3",
                "--measurement-algo",
                "sha512",
                "--measurement-log",
            ]),
        },
        Case {
            name: "kvmtool-sha256-kernel-only-1g",
            vmm: "kvmtool",
            ram_mib: 1024,
            kernel: Some(kernel(0, 0x400_0000, 2 * 1024 * 1024, 10)),
            initrd: None,
            log: false,
            features: f(kv(1024), HashAlgo::Sha256, 0, 4, 4, None),
            host_args: host(48, 4, 4, 0, None),
            vmm_args: s(&[
                "-c",
                "4",
                "-m",
                "1024",
                "-k",
                "Image",
                "--realm",
                "--irqchip",
                "gicv3",
            ]),
        },
    ]
}

fn run_tool(dir: &Path, c: &Case) -> (String, Vec<u8>) {
    let dtb = dir.join(format!("{}.dtb", c.name));
    let mut cmd = Command::new(tool());
    cmd.args(&c.host_args).arg("--output-dtb").arg(&dtb);
    if let Some(k) = &c.kernel {
        let p = dir.join("Image");
        std::fs::write(&p, k).unwrap();
        cmd.arg("-k").arg(p);
    }
    if let Some(i) = &c.initrd {
        let p = dir.join("initrd");
        std::fs::write(&p, i).unwrap();
        cmd.arg("-i").arg(p);
    }
    cmd.arg(c.vmm).args(&c.vmm_args);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}: tool failed: {}",
        c.name,
        String::from_utf8_lossy(&out.stderr)
    );
    let rim = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RIM: "))
        .unwrap_or_else(|| panic!("{}: no RIM line in {stdout}", c.name))
        .trim()
        .to_string();
    (rim, std::fs::read(&dtb).unwrap())
}

fn layout(c: &Case) -> RealmLayout {
    let il = c.initrd.as_ref().map(|i| i.len() as u64);
    match c.vmm {
        "qemu" => QemuVirt {
            ram_size: c.ram_mib << 20,
            measurement_log: c.log,
        }
        .layout(c.kernel.as_deref(), il),
        _ => Kvmtool {
            ram_size: c.ram_mib << 20,
            measurement_log: c.log,
        }
        .layout(c.kernel.as_deref(), il),
    }
    .unwrap()
}

#[test]
fn layouts_agree_with_reference_tool() {
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for c in cases() {
        let (want, dtb) = run_tool(dir.path(), &c);
        let plan = layout(&c)
            .plan(
                c.features.to_params().unwrap(),
                RmmVersion::V1,
                LaunchImages {
                    kernel: c.kernel.as_deref(),
                    initrd: c.initrd.as_deref(),
                    dtb: &dtb,
                },
            )
            .unwrap();
        let got = plan.rim().unwrap();
        assert_eq!(
            hex::encode(got.register()),
            want,
            "{}: RIM differs from realm-measurements",
            c.name
        );
        compared += 1;
    }
    assert_eq!(compared, 7);
}

/// A changed byte of the initrd, or a different DTB, changes the RIM (the
/// comparison above is not vacuous).
#[test]
fn tampering_changes_rim() {
    let c = &cases()[0];
    let dir = tempfile::tempdir().unwrap();
    let (_, dtb) = run_tool(dir.path(), c);
    let l = layout(c);
    let p = c.features.to_params().unwrap();
    let base = l
        .plan(
            p,
            RmmVersion::V1,
            LaunchImages {
                kernel: c.kernel.as_deref(),
                initrd: c.initrd.as_deref(),
                dtb: &dtb,
            },
        )
        .unwrap()
        .rim()
        .unwrap();
    let mut initrd = c.initrd.clone().unwrap();
    initrd[77_777] ^= 1;
    let t = l
        .plan(
            p,
            RmmVersion::V1,
            LaunchImages {
                kernel: c.kernel.as_deref(),
                initrd: Some(&initrd),
                dtb: &dtb,
            },
        )
        .unwrap()
        .rim()
        .unwrap();
    assert_ne!(base, t);
    let mut dtb2 = dtb.clone();
    dtb2[100] ^= 0x80;
    let t = l
        .plan(
            p,
            RmmVersion::V1,
            LaunchImages {
                kernel: c.kernel.as_deref(),
                initrd: c.initrd.as_deref(),
                dtb: &dtb2,
            },
        )
        .unwrap()
        .rim()
        .unwrap();
    assert_ne!(base, t);
}
