//! The sim realm layout: how the sim backend models a QEMU x86 guest as a
//! realm, so that its RIM covers exactly the bytes handed to QEMU.
//!
//! Version 1, all addresses guest-physical, all integers little-endian:
//!
//! 1. `REALM_CREATE` with flags 0, s2sz 40, sve_vl 0, num_bps 0, num_wps 0,
//!    pmu_num_ctrs 0 and the chosen hash (SHA-256 by default, or SHA-512).
//! 2. `INIT_RIPAS` over all guest RAM `[0, memory)` (RMM 1.0 rules).
//! 3. `DATA_CREATE` (measured), in ascending address order:
//!    - boot block at 0x1000, one granule: `b"CLSTRSIM"`, then u64 fields
//!      layout version (1), vCPUs, memory bytes, kernel gpa, kernel size,
//!      initrd gpa, initrd size, cmdline gpa, cmdline size; rest zero;
//!    - command line at 0x2000: its bytes, NUL-terminated, zero-padded;
//!    - kernel at 0x100000 (1 MiB): the kernel file handed to `-kernel`;
//!    - initrd at the first 2 MiB boundary after the kernel: the file handed
//!      to `-initrd`.
//! 4. `REC_CREATE` for each vCPU in order: vCPU 0 runnable with PC = kernel
//!    gpa and X0 = boot block gpa; the others not runnable, PC 0.
//!
//! Everything must fit in guest RAM, or the launch is refused.

use std::borrow::Cow;

use cloister_measure::cca::vmm::{PlanStep, RealmLaunchPlan};
use cloister_measure::cca::{HashAlgo, RealmFlags, RealmParams, RecParams, RmmVersion};

use crate::host::MeasureError;

/// Layout version recorded in the boot block.
pub const LAYOUT_VERSION: u64 = 1;
/// Boot block address.
pub const BOOT_BLOCK: u64 = 0x1000;
/// Command line address.
pub const CMDLINE: u64 = 0x2000;
/// Kernel address.
pub const KERNEL: u64 = 0x10_0000;
/// Alignment of the initrd.
pub const INITRD_ALIGN: u64 = 2 << 20;
/// IPA width of the sim realm.
pub const S2SZ: u8 = 40;

/// The inputs the RIM is computed over.
#[derive(Debug, Clone, Copy)]
pub struct SimImages<'a> {
    /// Kernel file bytes.
    pub kernel: &'a [u8],
    /// Initramfs file bytes.
    pub initrd: &'a [u8],
    /// Kernel command line.
    pub cmdline: &'a str,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
}

/// The realm parameters of a sim realm.
pub fn realm_params(algo: HashAlgo) -> RealmParams {
    RealmParams {
        flags: RealmFlags::default(),
        s2sz: S2SZ,
        sve_vl: 0,
        num_bps: 0,
        num_wps: 0,
        pmu_num_ctrs: 0,
        hash_algo: algo,
    }
}

/// The launch plan for a sim realm.
pub fn plan<'a>(
    images: SimImages<'a>,
    algo: HashAlgo,
) -> Result<RealmLaunchPlan<'a>, MeasureError> {
    let memory = u64::from(images.memory_mib) << 20;
    if images.vcpus == 0 {
        return Err(MeasureError::Input(
            "sim launch needs at least one vCPU".into(),
        ));
    }
    let mut cmdline = images.cmdline.as_bytes().to_vec();
    cmdline.push(0);
    if cmdline.len() as u64 > KERNEL - CMDLINE {
        return Err(MeasureError::Input(format!(
            "kernel command line is {} bytes, at most {} fit the sim layout",
            cmdline.len() - 1,
            KERNEL - CMDLINE - 1
        )));
    }
    let kernel_len = images.kernel.len() as u64;
    let initrd_gpa = (KERNEL + kernel_len).div_ceil(INITRD_ALIGN) * INITRD_ALIGN;
    let end = initrd_gpa + images.initrd.len() as u64;
    if end > memory {
        return Err(MeasureError::Input(format!(
            "kernel and initrd end at {end:#x}, beyond the guest's {} MiB of RAM: give the guest more memory",
            images.memory_mib
        )));
    }
    let mut boot = vec![0u8; 4096];
    boot[..8].copy_from_slice(b"CLSTRSIM");
    let fields = [
        LAYOUT_VERSION,
        u64::from(images.vcpus),
        memory,
        KERNEL,
        kernel_len,
        initrd_gpa,
        images.initrd.len() as u64,
        CMDLINE,
        cmdline.len() as u64,
    ];
    for (i, f) in fields.iter().enumerate() {
        boot[8 + 8 * i..16 + 8 * i].copy_from_slice(&f.to_le_bytes());
    }
    let mut steps = vec![
        PlanStep::InitRipas {
            base: 0,
            top: memory,
        },
        PlanStep::Populate {
            what: "boot block",
            ipa: BOOT_BLOCK,
            bytes: Cow::Owned(boot),
        },
        PlanStep::Populate {
            what: "cmdline",
            ipa: CMDLINE,
            bytes: Cow::Owned(cmdline),
        },
        PlanStep::Populate {
            what: "kernel",
            ipa: KERNEL,
            bytes: Cow::Borrowed(images.kernel),
        },
        PlanStep::Populate {
            what: "initrd",
            ipa: initrd_gpa,
            bytes: Cow::Borrowed(images.initrd),
        },
    ];
    steps.push(PlanStep::CreateRec(RecParams::boot(KERNEL, BOOT_BLOCK)));
    for _ in 1..images.vcpus {
        steps.push(PlanStep::CreateRec(RecParams {
            runnable: false,
            pc: 0,
            gprs: [0; 8],
        }));
    }
    Ok(RealmLaunchPlan {
        params: realm_params(algo),
        version: RmmVersion::V1,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images<'a>(k: &'a [u8], i: &'a [u8]) -> SimImages<'a> {
        SimImages {
            kernel: k,
            initrd: i,
            cmdline: "console=ttyS0",
            vcpus: 2,
            memory_mib: 64,
        }
    }

    #[test]
    fn rim_is_deterministic_and_covers_every_input() {
        let (k, i) = (vec![1u8; 10_000], vec![2u8; 20_000]);
        let base = plan(images(&k, &i), HashAlgo::Sha256)
            .unwrap()
            .rim()
            .unwrap();
        assert_eq!(
            base,
            plan(images(&k, &i), HashAlgo::Sha256)
                .unwrap()
                .rim()
                .unwrap()
        );
        let mut i2 = i.clone();
        i2[12_345] ^= 1;
        assert_ne!(
            base,
            plan(images(&k, &i2), HashAlgo::Sha256)
                .unwrap()
                .rim()
                .unwrap()
        );
        let mut k2 = k.clone();
        k2[0] ^= 1;
        assert_ne!(
            base,
            plan(images(&k2, &i), HashAlgo::Sha256)
                .unwrap()
                .rim()
                .unwrap()
        );
        let mut other = images(&k, &i);
        other.cmdline = "console=ttyS0 quiet";
        assert_ne!(base, plan(other, HashAlgo::Sha256).unwrap().rim().unwrap());
        other = images(&k, &i);
        other.vcpus = 3;
        assert_ne!(base, plan(other, HashAlgo::Sha256).unwrap().rim().unwrap());
        let sha512 = plan(images(&k, &i), HashAlgo::Sha512)
            .unwrap()
            .rim()
            .unwrap();
        assert_eq!(sha512.as_bytes().len(), 64);
        assert_eq!(base.as_bytes().len(), 32);
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let big = vec![0u8; 70 << 20];
        let e = plan(images(&[1], &big), HashAlgo::Sha256)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more memory"), "{e}");
        let mut im = images(&[1], &[2]);
        im.vcpus = 0;
        assert!(plan(im, HashAlgo::Sha256).is_err());
    }
}
