//! Calculator throughput on realistic inputs (a 16 MiB kernel, a 32 MiB
//! initramfs, OVMF), side by side with coreutils `sha256sum`/`sha512sum`
//! over the same bytes, and with plain in-process SHA-2 as the floor.
//!
//! Run: `nice -n 10 cargo bench -p cloister-measure --bench calculators`
//! (needs Debian's `ovmf` for /usr/share/ovmf/OVMF.fd and coreutils).

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::process::Command;
use std::time::Duration;

use cloister_measure::cca::vmm::{ArmImageHeader, LaunchImages, QemuVirt};
use cloister_measure::cca::{HashAlgo, RealmFeatures, RmmVersion};
use cloister_measure::snp::{launch_digest, KernelHashes, Ovmf, SnpLaunch};
use cloister_measure::tdx::mrtd;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sha2::Digest;

const KERNEL: usize = 16 << 20;
const INITRD: usize = 32 << 20;

fn filler(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn kernel() -> Vec<u8> {
    let mut k = filler(KERNEL, 1);
    k[..64].copy_from_slice(
        &ArmImageHeader {
            text_offset: 0,
            image_size: KERNEL as u64 + (4 << 20),
            flags: 0xa,
        }
        .to_bytes(),
    );
    k
}

fn coreutils(c: &mut Criterion, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernel+initrd");
    std::fs::write(&path, bytes).unwrap();
    let mut g = c.benchmark_group("coreutils");
    g.throughput(Throughput::Bytes(bytes.len() as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    for tool in ["sha256sum", "sha512sum"] {
        g.bench_function(format!("{tool} 48MiB"), |b| {
            b.iter(|| {
                let out = Command::new(tool).arg(&path).output().unwrap();
                assert!(out.status.success());
                black_box(out.stdout)
            })
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    let k = kernel();
    let i = filler(INITRD, 2);
    let mut both = k.clone();
    both.extend_from_slice(&i);

    let mut g = c.benchmark_group("sha2-floor");
    g.throughput(Throughput::Bytes(both.len() as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    g.bench_function("sha256 48MiB", |b| {
        b.iter(|| black_box(sha2::Sha256::digest(&both)))
    });
    g.bench_function("sha512 48MiB", |b| {
        b.iter(|| black_box(sha2::Sha512::digest(&both)))
    });
    g.finish();

    coreutils(c, &both);

    let layout = QemuVirt {
        ram_size: 1 << 30,
        measurement_log: false,
    }
    .layout(Some(&k), Some(i.len() as u64))
    .unwrap();
    let dtb = filler(6000, 3);
    let mut g = c.benchmark_group("cca-rim");
    g.throughput(Throughput::Bytes(both.len() as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    for algo in [HashAlgo::Sha256, HashAlgo::Sha512] {
        let p = RealmFeatures {
            ipa_bits: 41,
            lpa2: false,
            sve_vl_bits: 0,
            num_bps: 6,
            num_wps: 6,
            pmu_counters: None,
            hash_algo: algo,
        }
        .to_params()
        .unwrap();
        g.bench_function(format!("qemu {algo} 16MiB kernel + 32MiB initrd"), |b| {
            b.iter(|| {
                let plan = layout
                    .plan(
                        p,
                        RmmVersion::V1,
                        LaunchImages {
                            kernel: Some(&k),
                            initrd: Some(&i),
                            dtb: &dtb,
                        },
                    )
                    .unwrap();
                black_box(plan.rim().unwrap())
            })
        });
    }
    g.finish();

    // SNP: a 4 MiB OVMF (filler + the published AmdSev footer page) with
    // kernel hashes over the same kernel and initrd.
    let suffix = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/snp/virtee-sev-ovmf_AmdSev_suffix.bin"
    ))
    .unwrap();
    let mut fw = filler((4 << 20) - suffix.len(), 4);
    fw.extend_from_slice(&suffix);
    let ovmf = Ovmf::parse(&fw).unwrap();
    let mut g = c.benchmark_group("snp");
    g.throughput(Throughput::Bytes((both.len() + fw.len()) as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    g.bench_function(
        "launch digest 4MiB OVMF + 16MiB kernel + 32MiB initrd, 4 vCPUs",
        |b| {
            b.iter(|| {
                let launch = SnpLaunch {
                    ovmf: &ovmf,
                    vcpus: 4,
                    vcpu_type: "EPYC-v4",
                    guest_features: 0x21,
                    kernel_hashes: Some(KernelHashes::new(&k, Some(&i), Some("console=ttyS0"))),
                };
                black_box(launch_digest(&launch).unwrap())
            })
        },
    );
    g.finish();

    let tdvf = std::fs::read("/usr/share/ovmf/OVMF.fd")
        .expect("/usr/share/ovmf/OVMF.fd missing: apt-get install ovmf");
    let mut g = c.benchmark_group("tdx");
    g.throughput(Throughput::Bytes(tdvf.len() as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    g.bench_function("mrtd Debian OVMF.fd 2MiB", |b| {
        b.iter(|| black_box(mrtd(&tdvf).unwrap()))
    });
    g.finish();
}

criterion_group!(calculators, benches);
criterion_main!(calculators);
