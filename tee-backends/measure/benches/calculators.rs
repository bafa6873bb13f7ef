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
use cloister_measure::qemu_x86::KernelHeader;
use cloister_measure::snp::{launch_digest, KernelHashes, Ovmf, SnpLaunch};
use cloister_measure::tdx::{mrtd, predict_direct_boot, DirectBoot, SeparatorLayout};
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

/// A 16 MiB x86 EFI-stub bzImage lookalike: DOS + PE32+ headers, the
/// boot-protocol setup header at 0x1f1, one section over the rest.
fn efi_bzimage() -> Vec<u8> {
    let mut k = filler(KERNEL, 3);
    k[..0x1000].fill(0);
    let put = |k: &mut [u8], o: usize, v: &[u8]| k[o..o + v.len()].copy_from_slice(v);
    put(&mut k, 0, b"MZ");
    put(&mut k, 0x3c, &0x80u32.to_le_bytes());
    put(&mut k, 0x80, b"PE\0\0");
    put(&mut k, 0x84, &0x8664u16.to_le_bytes());
    put(&mut k, 0x86, &1u16.to_le_bytes()); // sections
    put(&mut k, 0x94, &240u16.to_le_bytes()); // optional header size
    let opt = 0x98;
    put(&mut k, opt, &0x20bu16.to_le_bytes());
    put(&mut k, opt + 60, &0x1000u32.to_le_bytes()); // SizeOfHeaders
    put(&mut k, opt + 108, &16u32.to_le_bytes());
    let sec = opt + 240;
    put(&mut k, sec, b".text\0\0\0");
    put(&mut k, sec + 16, &((KERNEL - 0x1000) as u32).to_le_bytes());
    put(&mut k, sec + 20, &0x1000u32.to_le_bytes());
    k[0x1f1] = 7; // setup_sects: 4 KiB of setup
    put(&mut k, 0x202, b"HdrS");
    put(&mut k, 0x206, &0x20fu16.to_le_bytes());
    k[0x211] = 0x01; // LOADED_HIGH
    put(&mut k, 0x236, &0x7fu16.to_le_bytes());
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
    for tool in ["sha256sum", "sha384sum", "sha512sum"] {
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
    g.bench_function("sha384 48MiB", |b| {
        b.iter(|| black_box(sha2::Sha384::digest(&both)))
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

    let bz = efi_bzimage();
    let initrd = filler(INITRD, 4);
    let mut g = c.benchmark_group("tdx-direct-boot");
    g.throughput(Throughput::Bytes((bz.len() + initrd.len()) as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    g.bench_function("direct boot rtmr1+rtmr2 16MiB kernel + 32MiB initrd", |b| {
        b.iter(|| {
            black_box(
                predict_direct_boot(&DirectBoot {
                    kernel: &bz,
                    initrd: Some(&initrd),
                    cmdline: "console=ttyS0 cloister.channel=serial",
                    header: KernelHeader::QemuPatched {
                        memory_bytes: 512 << 20,
                    },
                    layout: SeparatorLayout::Edk2Stable202411,
                })
                .unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(calculators, benches);
criterion_main!(calculators);
