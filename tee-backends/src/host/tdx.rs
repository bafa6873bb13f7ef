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

/// Which kernel bytes TDVF measures for `-kernel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelHeaderSource {
    /// The setup blob QEMU patched as a boot loader (QEMU up to 10.1, and
    /// a TDVF that does not read `etc/boot/kernel`): RTMR1 depends on the
    /// memory size (initrd address) and initrd size.
    QemuPatched,
    /// The kernel file as given: QEMU 10.2+ does not patch for
    /// confidential guests, and a TDVF with named-blob support (EDK II
    /// change of early 2025, here taken as edk2-stable202502) loads QEMU's
    /// unpatched `etc/boot/kernel` (QEMU 10.0+).
    AsFile,
}

/// First edk2 stable release (YYYYMM) whose TdTcg2Dxe puts the ReadyToBoot
/// separator in RTMR1 (commit efaf893).
pub const EDK2_SEPARATOR_IN_RTMR1: u32 = 202411;
/// First edk2 stable release (YYYYMM) taken to read `etc/boot/kernel`
/// (QemuKernelLoaderFsDxe named blobs, PR 10628).
pub const EDK2_NAMED_BLOBS: u32 = 202502;

/// TDX settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TdxBackend {
    /// Set TD attribute SEPT_VE_DISABLE (bit 28), as Linux guests expect.
    pub sept_ve_disable: bool,
    /// QEMU (major, minor) that launches the guest; None: not known, and
    /// RTMR1 lists the values of every behaviour.
    pub qemu_version: Option<(u32, u32)>,
    /// edk2 stable release of the TDVF as YYYYMM (e.g. 202411); None: not
    /// known, and RTMR1 lists the values of every behaviour.
    pub tdvf_edk2: Option<u32>,
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
            memory_backend: Some(crate::MemoryBackend {
                kind: crate::MemoryBackendKind::Ram,
                id: "ram0".into(),
                size_mib: launch.memory_mib,
            }),
            extra_args: vec!["-bios".into(), firmware.display().to_string()],
            cmdline_extra: Vec::new(),
            ..QemuSettings::default()
        })
    }
}

impl TdxBackend {
    /// The kernel-byte behaviours possible for the known versions.
    pub fn kernel_sources(&self) -> Vec<KernelHeaderSource> {
        use KernelHeaderSource::*;
        let named = self.tdvf_edk2.map(|v| v >= EDK2_NAMED_BLOBS);
        match (self.qemu_version, named) {
            (Some(q), _) if q >= (10, 2) => vec![AsFile],
            (Some(q), _) if q < (10, 0) => vec![QemuPatched],
            (Some(_), Some(true)) => vec![AsFile],
            (Some(_), Some(false)) => vec![QemuPatched],
            _ => vec![QemuPatched, AsFile],
        }
    }

    /// The separator layouts possible for the known TDVF release.
    pub fn layouts(&self) -> Vec<SeparatorLayout> {
        match self.tdvf_edk2 {
            Some(v) if v >= EDK2_SEPARATOR_IN_RTMR1 => vec![SeparatorLayout::Edk2Stable202411],
            Some(_) => vec![SeparatorLayout::Legacy],
            None => vec![SeparatorLayout::Edk2Stable202411, SeparatorLayout::Legacy],
        }
    }

    /// The reference values for `launch`: MRTD over the TDVF image (its
    /// TDVF metadata decides which pages are added and extended) as
    /// `tdx.mr_td`, MRCONFIGID (the initdata digest fitted to 48 bytes) as
    /// `tdx.mr_config_id`, and the direct boot's `tdx.rtmr1` (kernel; one
    /// value per QEMU/TDVF behaviour the known versions leave possible) and
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
    /// and RTMR2 events must agree with one of the predicted variants (which
    /// then is the only `tdx.rtmr1`), else the mismatch is an error naming
    /// the differing events.
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
        let mut variants = Vec::new();
        for source in self.kernel_sources() {
            for layout in self.layouts() {
                let boot = DirectBoot {
                    kernel: &kernel,
                    initrd: Some(&initrd),
                    cmdline: &launch.cmdline,
                    header: match source {
                        KernelHeaderSource::QemuPatched => {
                            cloister_measure::qemu_x86::KernelHeader::QemuPatched { memory_bytes }
                        }
                        KernelHeaderSource::AsFile => {
                            cloister_measure::qemu_x86::KernelHeader::AsFile
                        }
                    },
                    layout,
                };
                let p = predict_direct_boot(&boot)
                    .map_err(|e| input(format!("TDX RTMRs of {}: {e}", launch.kernel.display())))?;
                variants.push((source, layout, p));
            }
        }
        let mut rv = super::ReferenceValues::default();
        rv.add_named("tdx.mr_td", mrtd.as_bytes().to_vec());
        rv.add_named("tdx.mr_config_id", initdata_field(launch, TeeKind::Tdx)?);
        let describe = |source: KernelHeaderSource, layout: SeparatorLayout| {
            format!(
                "{} and {}",
                match source {
                    KernelHeaderSource::QemuPatched => format!(
                        "the QEMU-patched kernel header (QEMU <= 10.1 without a TDVF that \
                         reads etc/boot/kernel; q35 with {} MiB)",
                        launch.memory_mib
                    ),
                    KernelHeaderSource::AsFile => "the kernel file unmodified (QEMU >= 10.2, or \
                         QEMU >= 10.0 with a TDVF from edk2-stable202502 on)"
                        .to_string(),
                },
                match layout {
                    SeparatorLayout::Edk2Stable202411 =>
                        "the ReadyToBoot separator in RTMR1 (TDVF from edk2-stable202411 on)",
                    SeparatorLayout::Legacy =>
                        "the ReadyToBoot separator in RTMR0 (TDVF before edk2-stable202411)",
                }
            )
        };
        if let Some(log) = event_log {
            let events = parse_ccel(log).map_err(|e| input(format!("TDX event log: {e}")))?;
            let diffs: Vec<Vec<String>> = variants
                .iter()
                .map(|(_, _, p)| compare_with_log(&p.events, &events))
                .collect();
            let Some(i) = diffs.iter().position(Vec::is_empty) else {
                return Err(input(format!(
                    "the recorded TDX event log disagrees with every predicted RTMR1/RTMR2 \
                     event sequence (different kernel, initrd, command line, memory size, QEMU \
                     or TDVF?): {}",
                    diffs
                        .iter()
                        .zip(&variants)
                        .map(|(d, (s, l, _))| format!("[{}] {}", describe(*s, *l), d.join("; ")))
                        .collect::<Vec<_>>()
                        .join(" | ")
                )));
            };
            variants = vec![variants.swap_remove(i)];
            let r = replay_ccel(log).map_err(|e| input(format!("TDX event log: {e}")))?;
            rv.add_named("tdx.rtmr0", r.0[0].as_bytes().to_vec());
            rv.notes.push(
                "tdx.rtmr0 replayed from the recorded event log: it holds for this host's QEMU, \
                 machine shape and TDVF only"
                    .into(),
            );
        } else {
            rv.notes.push(
                "tdx.rtmr0 not predicted: TDVF measures the TD HOB, QEMU's ACPI tables and \
                 firmware configuration into it, which depend on the host (pass a recorded \
                 CCEL with --event-log to take it from there)"
                    .into(),
            );
        }
        for (source, layout, p) in &variants {
            let v = p.rtmr1.as_bytes().to_vec();
            if !rv.named.get("tdx.rtmr1").is_some_and(|l| l.contains(&v)) {
                rv.add_named("tdx.rtmr1", v);
            }
            rv.notes.push(format!(
                "tdx.rtmr1 {} assumes {}",
                p.rtmr1,
                describe(*source, *layout)
            ));
        }
        rv.add_named("tdx.rtmr2", variants[0].2.rtmr2.as_bytes().to_vec());
        if variants.len() > 1 {
            rv.notes.push(
                "tdx.rtmr1 lists one value per QEMU/TDVF behaviour still possible: give the \
                 QEMU version and the TDVF's edk2 release to keep only the one that applies"
                    .into(),
            );
        }
        match cloister_measure::qemu_x86::kernel_release(&kernel) {
            Some((release, v)) if v < (6, 8) => rv.notes.push(format!(
                "kernel {release} predates Linux 6.8, whose EFI stub measures LoadOptions and \
                 the initrd through the CC measurement protocol: on TDX (no TPM) an older stub \
                 measures neither, and RTMR2 stays zero instead of tdx.rtmr2"
            )),
            Some(_) => {}
            None => rv.notes.push(
                "kernel names no release in its setup header: tdx.rtmr2 assumes an EFI stub \
                 that measures LoadOptions and the initrd (Linux 6.8+)"
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
        let exact = TdxBackend {
            qemu_version: Some((10, 0)),
            tdvf_edk2: Some(202411),
            ..Default::default()
        };
        let rv = exact.reference_values(&launch).unwrap();
        assert_eq!(rv.named["tdx.rtmr1"].len(), 1);
        let names: Vec<&str> = rv.named.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["tdx.mr_config_id", "tdx.mr_td", "tdx.rtmr1", "tdx.rtmr2"]
        );
        assert!(rv
            .notes
            .iter()
            .any(|n| n.starts_with("tdx.rtmr0 not predicted")));
        // Cloister's kernel (6.12) has the CC-measuring EFI stub: no warning.
        assert!(
            !rv.notes.iter().any(|n| n.contains("predates")),
            "{:?}",
            rv.notes
        );
        // Equal to the calculator on the same inputs.
        let p = patched_202411_prediction(&launch);
        assert_eq!(rv.named["tdx.rtmr1"], vec![p.rtmr1.as_bytes().to_vec()]);
        assert_eq!(rv.named["tdx.rtmr2"], vec![p.rtmr2.as_bytes().to_vec()]);
        // Unknown versions: every behaviour is listed, RTMR2 is one value.
        let all = TdxBackend::default().reference_values(&launch).unwrap();
        assert_eq!(all.named["tdx.rtmr1"].len(), 4);
        assert!(all.named["tdx.rtmr1"].contains(&p.rtmr1.as_bytes().to_vec()));
        assert_eq!(all.named["tdx.rtmr2"], rv.named["tdx.rtmr2"]);
        // QEMU 10.2 or a 2025 TDVF: the file as given.
        for b in [
            TdxBackend {
                qemu_version: Some((10, 2)),
                tdvf_edk2: Some(202411),
                ..Default::default()
            },
            TdxBackend {
                qemu_version: Some((10, 0)),
                tdvf_edk2: Some(202505),
                ..Default::default()
            },
        ] {
            let other = b.reference_values(&launch).unwrap();
            assert_eq!(other.named["tdx.rtmr1"].len(), 1);
            assert_ne!(other.named["tdx.rtmr1"], rv.named["tdx.rtmr1"]);
            assert_eq!(other.named["tdx.rtmr2"], rv.named["tdx.rtmr2"]);
        }
        // The JSON carries no notes and parses in the verifier.
        let text = rv.to_json().to_string();
        let parsed = cloister_attestation::refvals::ReferenceValues::parse(&text).unwrap();
        assert_eq!(parsed.named["tdx.rtmr1"], rv.named["tdx.rtmr1"]);
    }

    /// The calculator's prediction for `launch` (256 MiB) with QEMU's
    /// patched header and the edk2-stable202411 separator layout.
    fn patched_202411_prediction(launch: &Launch) -> cloister_measure::tdx::DirectBootPrediction {
        let kernel = std::fs::read(&launch.kernel).unwrap();
        let initrd = std::fs::read(&launch.initramfs).unwrap();
        predict_direct_boot(&DirectBoot {
            kernel: &kernel,
            initrd: Some(&initrd),
            cmdline: &launch.cmdline,
            header: cloister_measure::qemu_x86::KernelHeader::QemuPatched {
                memory_bytes: 256 << 20,
            },
            layout: SeparatorLayout::Edk2Stable202411,
        })
        .unwrap()
    }

    #[test]
    fn rtmr0_is_taken_from_a_matching_event_log_only() {
        let dir = tempfile::tempdir().unwrap();
        let launch = real_launch(dir.path());
        let b = TdxBackend::default(); // every variant: the log picks one
        let p = patched_202411_prediction(&launch);
        let mut events = vec![(1u32, 0x8000_000au32, [7u8; 48])]; // an RTMR0 event
        events.extend(
            p.events
                .iter()
                .map(|e| (e.rtmr as u32 + 1, e.event_type, *e.digest.as_bytes())),
        );
        let rv = b
            .reference_values_with_event_log(&launch, Some(&ccel(&events)))
            .unwrap();
        assert_eq!(rv.named["tdx.rtmr1"], vec![p.rtmr1.as_bytes().to_vec()]);
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
        assert!(e.contains("disagrees with every predicted"), "{e}");
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
            s.memory_backend.map(|m| m.qemu_object()).as_deref(),
            Some("memory-backend-ram,id=ram0,size=256M")
        );
    }
}
