//! AMD SEV-SNP under QEMU 10: `sev-snp-guest` with HOST_DATA = the initdata
//! digest (32 B), a guest policy, the C-bit position, `kernel-hashes=on` (so
//! OVMF measures kernel, initrd and command line into the launch digest),
//! guest RAM from `memory-backend-memfd`, and an SEV-capable OVMF via `-bios`.

use std::path::Path;

use super::{b64, initdata_field, invalid, require_firmware};
use crate::{HostBackend, Launch, PrepareError, Prepared, QemuSettings, TeeKind};

/// Default guest policy: bit 17 (reserved, must be 1) and bit 16 (SMT
/// allowed); debug, migration agent and single-socket off.
pub const DEFAULT_POLICY: u64 = 0x30000;

/// SNP settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpBackend {
    /// Guest policy.
    pub policy: u64,
    /// C-bit position (51 on Milan, Genoa and Turin).
    pub cbitpos: u32,
    /// Physical address bits lost to encryption.
    pub reduced_phys_bits: u32,
}

impl Default for SnpBackend {
    fn default() -> Self {
        Self {
            policy: DEFAULT_POLICY,
            cbitpos: 51,
            reduced_phys_bits: 1,
        }
    }
}

impl SnpBackend {
    /// The QEMU settings for `launch`.
    pub fn settings(&self, launch: &Launch) -> Result<QemuSettings, PrepareError> {
        let firmware = require_firmware(
            TeeKind::Snp,
            launch,
            "an SEV-SNP OVMF (--firmware, e.g. OVMF.amdsev.fd)",
        )?;
        let host_data = initdata_field(launch, TeeKind::Snp).map_err(invalid)?;
        Ok(QemuSettings {
            machine_props: vec!["confidential-guest-support=tee0".into()],
            objects: vec![format!(
                "sev-snp-guest,id=tee0,policy={:#x},cbitpos={},reduced-phys-bits={},kernel-hashes=on,host-data={}",
                self.policy,
                self.cbitpos,
                self.reduced_phys_bits,
                b64(&host_data)
            )],
            memory_backend: Some(crate::MemoryBackend {
                kind: crate::MemoryBackendKind::Memfd { share: true },
                id: "ram0".into(),
                size_mib: launch.memory_mib,
            }),
            extra_args: vec!["-bios".into(), firmware.display().to_string()],
            cmdline_extra: Vec::new(),
            ..QemuSettings::default()
        })
    }
}

/// SEV_FEATURES QEMU 10 sets for an SNP guest: SNPActive only.
pub const DEFAULT_GUEST_FEATURES: u64 = 0x1;

impl SnpBackend {
    /// The reference values for `launch`: the launch digest (OVMF, the
    /// kernel-hashes table over kernel, initrd and command line, one VMSA per
    /// vCPU of `vcpu_type`) as `snp.measurement`, and HOST_DATA (the initdata
    /// digest fitted to 32 bytes) as `snp.host_data`.
    pub fn reference_values(
        &self,
        launch: &Launch,
        vcpu_type: &str,
    ) -> Result<super::ReferenceValues, super::MeasureError> {
        use cloister_measure::snp::{launch_digest, KernelHashes, Ovmf, SnpLaunch};
        let fw_path = launch.firmware.as_ref().ok_or_else(|| {
            super::MeasureError::Input("--tee snp needs --firmware (an SEV-SNP OVMF)".into())
        })?;
        let fw = super::read_input("firmware", fw_path)?;
        let kernel = super::read_input("kernel", &launch.kernel)?;
        let initrd = super::read_input("initramfs", &launch.initramfs)?;
        let snp_err = |e: cloister_measure::snp::SnpError| {
            super::MeasureError::Input(format!("SNP launch digest: {e}"))
        };
        let ovmf = Ovmf::parse(&fw).map_err(snp_err)?;
        let digest = launch_digest(&SnpLaunch {
            ovmf: &ovmf,
            vcpus: launch.vcpus,
            vcpu_type,
            guest_features: DEFAULT_GUEST_FEATURES,
            kernel_hashes: Some(KernelHashes::new(
                &kernel,
                Some(&initrd),
                Some(&launch.cmdline),
            )),
        })
        .map_err(snp_err)?;
        let mut rv = super::ReferenceValues::default();
        rv.add_named("snp.measurement", digest.as_bytes().to_vec());
        rv.add_named("snp.host_data", initdata_field(launch, TeeKind::Snp)?);
        Ok(rv)
    }
}

impl HostBackend for SnpBackend {
    fn kind(&self) -> TeeKind {
        TeeKind::Snp
    }

    fn prepare(&self, launch: &Launch, _state_dir: &Path) -> Result<Prepared, PrepareError> {
        super::probe::require(TeeKind::Snp)?;
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
    fn settings_carry_host_data_policy_and_memfd() {
        let dir = tempfile::tempdir().unwrap();
        let launch = crate::host::testutil::launch(dir.path());
        let s = SnpBackend::default().settings(&launch).unwrap();
        let digest = InitdataDigest::of(launch.initdata.as_deref().unwrap()).unwrap();
        let hd = b64(&digest.fitted(32));
        assert_eq!(
            s.objects[0],
            format!("sev-snp-guest,id=tee0,policy=0x30000,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on,host-data={hd}")
        );
        assert_eq!(
            s.memory_backend.map(|m| m.qemu_object()).as_deref(),
            Some("memory-backend-memfd,id=ram0,size=256M,share=on")
        );
        assert_eq!(s.machine_props, ["confidential-guest-support=tee0"]);
        assert_eq!(s.extra_args[0], "-bios");
    }

    #[test]
    fn reference_values_need_a_real_ovmf() {
        let dir = tempfile::tempdir().unwrap();
        let launch = crate::host::testutil::launch(dir.path());
        // The synthetic firmware has no OVMF footer table.
        let e = SnpBackend::default()
            .reference_values(&launch, "EPYC-v4")
            .unwrap_err();
        assert!(e.to_string().contains("SNP launch digest"), "{e}");
        let mut no_fw = launch.clone();
        no_fw.firmware = None;
        let e = SnpBackend::default()
            .reference_values(&no_fw, "EPYC-v4")
            .unwrap_err();
        assert!(e.to_string().contains("--firmware"), "{e}");
    }

    #[test]
    fn missing_firmware_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut launch = crate::host::testutil::launch(dir.path());
        launch.firmware = None;
        let e = SnpBackend::default()
            .settings(&launch)
            .unwrap_err()
            .to_string();
        assert!(e.contains("OVMF"), "{e}");
    }

    #[test]
    fn no_initdata_means_zero_host_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut launch = crate::host::testutil::launch(dir.path());
        launch.initdata = None;
        let s = SnpBackend::default().settings(&launch).unwrap();
        assert!(s.objects[0].ends_with(&format!("host-data={}", b64(&[0; 32]))));
    }
}
