//! Intel TDX under QEMU 10: `tdx-guest` with MRCONFIGID = the initdata digest
//! (48 B, base64), the split IRQ chip TDX requires, RAM from a
//! `memory-backend-ram` object (QEMU adds the guest_memfd private memory
//! itself), and TDVF via `-bios`.
//!
//! Reference values: MRTD from the TDVF metadata, MRCONFIGID, and RTMR1/RTMR2
//! of the direct kernel boot (`cloister_measure::tdx::predict_direct_boot`).
//! RTMR0 is not predicted: TDVF measures the TD HOB, QEMU's ACPI tables and
//! firmware configuration into it, which depend on the host's QEMU build
//! and machine shape; it can be taken from a recorded event log instead
//! ([`TdxBackend::reference_values_with_event_log`]).

use std::path::Path;

use cloister_measure::tdx::{
    compare_with_log, parse_ccel, predict_direct_boot, replay_ccel, DirectBoot, SeparatorLayout,
};

use super::{b64, initdata_field, invalid, require_firmware};
use crate::{HostBackend, Launch, PrepareError, Prepared, QemuSettings, TeeKind};

/// Which kernel bytes QEMU hands TDVF for `-kernel`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum KernelHeaderSource {
    /// QEMU up to 10.1 (the QEMU 10.0 this runtime installs) fills in the
    /// bzImage setup header as a boot loader, also for TDX; the firmware
    /// measures the patched image (it depends on memory and initrd size).
    #[default]
    QemuPatched,
    /// QEMU 10.2 and later leave the header alone for confidential guests.
    AsFile,
}

impl KernelHeaderSource {
    /// The behaviour of QEMU `major.minor`.
    pub fn for_qemu(major: u32, minor: u32) -> Self {
        if (major, minor) >= (10, 2) {
            Self::AsFile
        } else {
            Self::QemuPatched
        }
    }
}

/// TDX settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TdxBackend {
    /// Set TD attribute SEPT_VE_DISABLE (bit 28), as Linux guests expect.
    pub sept_ve_disable: bool,
    /// QEMU behaviour the RTMR1 prediction follows.
    pub kernel_header: KernelHeaderSource,
    /// TDVF generation the RTMR1 prediction follows (where the ReadyToBoot
    /// separator goes).
    pub tdvf_layout: SeparatorLayout,
}

impl TdxBackend {
    /// The QEMU settings for `launch`.
    pub fn settings(&self, launch: &Launch) -> Result<QemuSettings, PrepareError> {
        let firmware = require_firmware(
            TeeKind::Tdx,
            launch,
            "a TDVF build (--firmware, e.g. OVMF.inteltdx.fd)",
        )?;
        let mrconfigid = initdata_field(launch, TeeKind::Tdx).map_err(invalid)?;
        let mut obj = format!("tdx-guest,id=tee0,mrconfigid={}", b64(&mrconfigid));
        if self.sept_ve_disable {
            obj.push_str(",sept-ve-disable=on");
        }
        Ok(QemuSettings {
            machine_props: vec![
                "confidential-guest-support=tee0".into(),
                "kernel-irqchip=split".into(),
            ],
            objects: vec![obj],
            memory_backend: Some(format!(
                "memory-backend-ram,id=ram0,size={}M",
                launch.memory_mib
            )),
            extra_args: vec!["-bios".into(), firmware.display().to_string()],
            cmdline_extra: Vec::new(),
        })
    }
}

impl TdxBackend {
    /// The reference values for `launch`: MRTD over the TDVF image (its
    /// TDVF metadata decides which pages are added and extended) as
    /// `tdx.mr_td`, MRCONFIGID (the initdata digest fitted to 48 bytes) as
    /// `tdx.mr_config_id`, and the direct boot's `tdx.rtmr1` (kernel) and
    /// `tdx.rtmr2` (command line, initrd). RTMR0 and RTMR3 are listed in
    /// `notes` as not predicted.
    pub fn reference_values(
        &self,
        launch: &Launch,
    ) -> Result<super::ReferenceValues, super::MeasureError> {
        self.reference_values_with_event_log(launch, None)
    }

    /// As [`Self::reference_values`], plus `tdx.rtmr0` replayed from a CCEL
    /// recorded on a boot of the same host configuration. The log's RTMR1
    /// and RTMR2 events must agree with the prediction, else the mismatch is
    /// an error naming the first differing events.
    pub fn reference_values_with_event_log(
        &self,
        launch: &Launch,
        event_log: Option<&[u8]>,
    ) -> Result<super::ReferenceValues, super::MeasureError> {
        let input = |m: String| super::MeasureError::Input(m);
        let fw_path = launch
            .firmware
            .as_ref()
            .ok_or_else(|| input("--tee tdx needs --firmware (a TDVF build)".into()))?;
        let fw = super::read_input("firmware", fw_path)?;
        let mrtd = cloister_measure::tdx::mrtd(&fw)
            .map_err(|e| input(format!("TDX MRTD of {}: {e}", fw_path.display())))?;
        let kernel = super::read_input("kernel", &launch.kernel)?;
        let initrd = super::read_input("initramfs", &launch.initramfs)?;
        let memory_bytes = u64::from(launch.memory_mib) << 20;
        let boot = DirectBoot {
            kernel: &kernel,
            initrd: Some(&initrd),
            cmdline: &launch.cmdline,
            header: match self.kernel_header {
                KernelHeaderSource::QemuPatched => {
                    cloister_measure::qemu_x86::KernelHeader::QemuPatched { memory_bytes }
                }
                KernelHeaderSource::AsFile => cloister_measure::qemu_x86::KernelHeader::AsFile,
            },
            layout: self.tdvf_layout,
        };
        let p = predict_direct_boot(&boot)
            .map_err(|e| input(format!("TDX RTMRs of {}: {e}", launch.kernel.display())))?;
        let mut rv = super::ReferenceValues::default();
        rv.add_named("tdx.mr_td", mrtd.as_bytes().to_vec());
        rv.add_named("tdx.mr_config_id", initdata_field(launch, TeeKind::Tdx)?);
        rv.add_named("tdx.rtmr1", p.rtmr1.as_bytes().to_vec());
        rv.add_named("tdx.rtmr2", p.rtmr2.as_bytes().to_vec());
        rv.notes.push(format!(
            "tdx.rtmr1/rtmr2 assume {} and {}",
            match self.kernel_header {
                KernelHeaderSource::QemuPatched => format!(
                    "QEMU <= 10.1 patching the bzImage setup header for a q35 guest with {} MiB",
                    launch.memory_mib
                ),
                KernelHeaderSource::AsFile =>
                    "QEMU >= 10.2 handing TDVF the kernel file unmodified".to_string(),
            },
            match self.tdvf_layout {
                SeparatorLayout::Edk2Stable202411 =>
                    "a TDVF from edk2-stable202411 or later (ReadyToBoot separator in RTMR1)",
                SeparatorLayout::Legacy =>
                    "a TDVF before edk2-stable202411 (ReadyToBoot separator in RTMR0)",
            }
        ));
        match event_log {
            Some(log) => {
                let events = parse_ccel(log).map_err(|e| input(format!("TDX event log: {e}")))?;
                let diff = compare_with_log(&p.events, &events);
                if !diff.is_empty() {
                    return Err(input(format!(
                        "the recorded TDX event log disagrees with the predicted RTMR1/RTMR2 \
                         events (different kernel, initrd, command line, memory size, QEMU or \
                         TDVF?): {}",
                        diff.join("; ")
                    )));
                }
                let r = replay_ccel(log).map_err(|e| input(format!("TDX event log: {e}")))?;
                rv.add_named("tdx.rtmr0", r.0[0].as_bytes().to_vec());
                rv.notes.push(
                    "tdx.rtmr0 replayed from the recorded event log: it holds for this host's \
                     QEMU, machine shape and TDVF only"
                        .into(),
                );
            }
            None => rv.notes.push(
                "tdx.rtmr0 not predicted: TDVF measures the TD HOB, QEMU's ACPI tables and \
                 firmware configuration into it, which depend on the host (pass a recorded \
                 CCEL with --event-log to take it from there)"
                    .into(),
            ),
        }
        rv.notes
            .push("tdx.rtmr3 not predicted: it holds runtime extensions by the guest".into());
        Ok(rv)
    }
}

impl HostBackend for TdxBackend {
    fn kind(&self) -> TeeKind {
        TeeKind::Tdx
    }

    fn prepare(&self, launch: &Launch, _state_dir: &Path) -> Result<Prepared, PrepareError> {
        super::probe::require(TeeKind::Tdx)?;
        Ok(Prepared {
            qemu: self.settings(launch)?,
            guard: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initdata::InitdataDigest;

    #[test]
    fn reference_values_name_a_firmware_without_tdvf_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let launch = crate::host::testutil::launch(dir.path());
        let e = TdxBackend::default().reference_values(&launch).unwrap_err();
        assert!(e.to_string().contains("TDX MRTD"), "{e}");
    }

    const DEBIAN_OVMF: &str = "/usr/share/ovmf/OVMF.fd";

    /// A launch of Cloister's guest kernel with Debian's OVMF (it carries
    /// TDVF metadata).
    fn real_launch(dir: &Path) -> Launch {
        assert!(
            Path::new(DEBIAN_OVMF).exists(),
            "{DEBIAN_OVMF} missing: install Debian's `ovmf` package (scripts/install-deps.sh)"
        );
        let cache = std::env::var_os("CLOISTER_CACHE_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::path::PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/cloister")
            });
        let kernel = cache.join("assets/vmlinuz");
        assert!(
            kernel.is_file(),
            "guest kernel {} not found: run `cloister assets build`",
            kernel.display()
        );
        let mut l = crate::host::testutil::launch(dir);
        l.kernel = kernel;
        l.firmware = Some(DEBIAN_OVMF.into());
        l
    }

    /// A TCG2 crypto-agile log (SHA-384 only) holding `events`.
    fn ccel(events: &[(u32, u32, [u8; 48])]) -> Vec<u8> {
        let mut spec = b"Spec ID Event03\0".to_vec();
        spec.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 2]); // class, versions, uintn
        spec.extend_from_slice(&1u32.to_le_bytes());
        spec.extend_from_slice(&0x000cu16.to_le_bytes());
        spec.extend_from_slice(&48u16.to_le_bytes());
        spec.push(0);
        let mut log = vec![0u8; 28];
        log[4..8].copy_from_slice(&3u32.to_le_bytes());
        log.extend_from_slice(&(spec.len() as u32).to_le_bytes());
        log.extend_from_slice(&spec);
        for (mr, ty, d) in events {
            log.extend_from_slice(&mr.to_le_bytes());
            log.extend_from_slice(&ty.to_le_bytes());
            log.extend_from_slice(&1u32.to_le_bytes());
            log.extend_from_slice(&0x000cu16.to_le_bytes());
            log.extend_from_slice(d);
            log.extend_from_slice(&4u32.to_le_bytes());
            log.extend_from_slice(&[0; 4]);
        }
        log.extend_from_slice(&[0xff; 64]);
        log
    }

    #[test]
    fn reference_values_predict_rtmr1_and_rtmr2_not_rtmr0() {
        let dir = tempfile::tempdir().unwrap();
        let launch = real_launch(dir.path());
        let rv = TdxBackend::default().reference_values(&launch).unwrap();
        let names: Vec<&str> = rv.named.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["tdx.mr_config_id", "tdx.mr_td", "tdx.rtmr1", "tdx.rtmr2"]
        );
        assert!(rv
            .notes
            .iter()
            .any(|n| n.starts_with("tdx.rtmr0 not predicted")));
        // Equal to the calculator on the same inputs.
        let kernel = std::fs::read(&launch.kernel).unwrap();
        let initrd = std::fs::read(&launch.initramfs).unwrap();
        let p = predict_direct_boot(&DirectBoot {
            kernel: &kernel,
            initrd: Some(&initrd),
            cmdline: &launch.cmdline,
            header: cloister_measure::qemu_x86::KernelHeader::QemuPatched {
                memory_bytes: 256 << 20,
            },
            layout: SeparatorLayout::Edk2Stable202411,
        })
        .unwrap();
        assert_eq!(rv.named["tdx.rtmr1"], vec![p.rtmr1.as_bytes().to_vec()]);
        assert_eq!(rv.named["tdx.rtmr2"], vec![p.rtmr2.as_bytes().to_vec()]);
        // The other QEMU behaviour and TDVF generation change RTMR1 only.
        let other = TdxBackend {
            kernel_header: KernelHeaderSource::for_qemu(10, 2),
            tdvf_layout: SeparatorLayout::Legacy,
            ..Default::default()
        }
        .reference_values(&launch)
        .unwrap();
        assert_ne!(other.named["tdx.rtmr1"], rv.named["tdx.rtmr1"]);
        assert_eq!(other.named["tdx.rtmr2"], rv.named["tdx.rtmr2"]);
        // The JSON carries no notes and parses in the verifier.
        let text = rv.to_json().to_string();
        let parsed = cloister_attestation::refvals::ReferenceValues::parse(&text).unwrap();
        assert_eq!(parsed.named["tdx.rtmr1"], rv.named["tdx.rtmr1"]);
    }

    #[test]
    fn rtmr0_is_taken_from_a_matching_event_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let launch = real_launch(dir.path());
        let b = TdxBackend::default();
        let kernel = std::fs::read(&launch.kernel).unwrap();
        let initrd = std::fs::read(&launch.initramfs).unwrap();
        let p = predict_direct_boot(&DirectBoot {
            kernel: &kernel,
            initrd: Some(&initrd),
            cmdline: &launch.cmdline,
            header: cloister_measure::qemu_x86::KernelHeader::QemuPatched {
                memory_bytes: 256 << 20,
            },
            layout: SeparatorLayout::Edk2Stable202411,
        })
        .unwrap();
        let mut events = vec![(1u32, 0x8000_000au32, [7u8; 48])]; // an RTMR0 event
        events.extend(
            p.events
                .iter()
                .map(|e| (e.rtmr as u32 + 1, e.event_type, *e.digest.as_bytes())),
        );
        let rv = b
            .reference_values_with_event_log(&launch, Some(&ccel(&events)))
            .unwrap();
        let mut r0 = cloister_measure::tdx::Rtmrs::default();
        r0.extend(0, &cloister_measure::digest::Digest([7u8; 48]))
            .unwrap();
        assert_eq!(rv.named["tdx.rtmr0"], vec![r0.0[0].as_bytes().to_vec()]);
        // A log of another initrd is refused, naming the event.
        let n = events.len();
        events[n - 3].2[0] ^= 1;
        let e = b
            .reference_values_with_event_log(&launch, Some(&ccel(&events)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("RTMR2 event 1: expected initrd"), "{e}");
    }

    #[test]
    fn a_non_pe_kernel_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut launch = real_launch(dir.path());
        launch.kernel = dir.path().join("bzImage"); // 0x4b bytes: not a bzImage
        let e = TdxBackend::default()
            .reference_values(&launch)
            .unwrap_err()
            .to_string();
        assert!(e.contains("TDX RTMRs of"), "{e}");
        assert!(e.contains("not a Linux bzImage"), "{e}");
    }

    #[test]
    fn settings_carry_mrconfigid() {
        let dir = tempfile::tempdir().unwrap();
        let launch = crate::host::testutil::launch(dir.path());
        let s = TdxBackend::default().settings(&launch).unwrap();
        let digest = InitdataDigest::of(launch.initdata.as_deref().unwrap()).unwrap();
        assert_eq!(digest.as_bytes().len(), 48);
        assert_eq!(
            s.objects[0],
            format!("tdx-guest,id=tee0,mrconfigid={}", b64(digest.as_bytes()))
        );
        assert!(s
            .machine_props
            .contains(&"kernel-irqchip=split".to_string()));
        assert_eq!(
            s.memory_backend.as_deref(),
            Some("memory-backend-ram,id=ram0,size=256M")
        );
    }
}
