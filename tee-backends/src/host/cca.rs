//! Arm CCA realms under QEMU (arm64 hosts with the RME-capable QEMU):
//! `rme-guest` with the Realm Personalization Value = the initdata digest
//! (64 B, base64) and the measurement algorithm. The arguments are rendered
//! on any host; preparing a launch fails unless the host can run realms.

use std::path::Path;

use super::{b64, initdata_field, invalid};
use crate::{HostBackend, Launch, PrepareError, Prepared, QemuSettings, TeeKind};

/// CCA settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcaBackend {
    /// Realm measurement algorithm: `sha256` or `sha512`.
    pub measurement_algorithm: cloister_measure::cca::HashAlgo,
}

impl Default for CcaBackend {
    fn default() -> Self {
        Self {
            measurement_algorithm: cloister_measure::cca::HashAlgo::Sha512,
        }
    }
}

impl CcaBackend {
    /// The QEMU settings for `launch`.
    pub fn settings(&self, launch: &Launch) -> Result<QemuSettings, PrepareError> {
        let rpv = initdata_field(launch, TeeKind::Cca).map_err(invalid)?;
        let algo = match self.measurement_algorithm {
            cloister_measure::cca::HashAlgo::Sha256 => "sha256",
            cloister_measure::cca::HashAlgo::Sha512 => "sha512",
            cloister_measure::cca::HashAlgo::Sha384 => "sha384",
        };
        Ok(QemuSettings {
            machine_props: vec!["confidential-guest-support=tee0".into()],
            objects: vec![format!(
                "rme-guest,id=tee0,measurement-algorithm={algo},personalization-value={}",
                b64(&rpv)
            )],
            memory_backend: None,
            extra_args: Vec::new(),
            cmdline_extra: Vec::new(),
            ..QemuSettings::default()
        })
    }
}

impl HostBackend for CcaBackend {
    fn kind(&self) -> TeeKind {
        TeeKind::Cca
    }

    fn prepare(&self, launch: &Launch, _state_dir: &Path) -> Result<Prepared, PrepareError> {
        super::probe::require(TeeKind::Cca)?;
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
    fn settings_carry_rpv_and_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let launch = crate::host::testutil::launch(dir.path());
        let s = CcaBackend::default().settings(&launch).unwrap();
        let rpv = InitdataDigest::of(launch.initdata.as_deref().unwrap())
            .unwrap()
            .fitted(64);
        assert_eq!(
            s.objects[0],
            format!(
                "rme-guest,id=tee0,measurement-algorithm=sha512,personalization-value={}",
                b64(&rpv)
            )
        );
    }

    #[test]
    #[cfg(not(target_arch = "aarch64"))]
    fn prepare_refuses_on_non_arm_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let launch = crate::host::testutil::launch(dir.path());
        let e = CcaBackend::default()
            .prepare(&launch, dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("arm64"), "{e}");
    }
}

/// Inputs of a CCA realm prediction beyond the [`Launch`]: the DTB QEMU
/// generates for the machine (dump it with `-machine dumpdtb=FILE`), and the
/// realm parameters QEMU's `rme-guest` passes.
#[derive(Debug, Clone)]
pub struct CcaMeasureInputs {
    /// DTB bytes exactly as QEMU loads them.
    pub dtb: Vec<u8>,
    /// Realm parameters (IPA width, SVE, PMU, breakpoints, hash).
    pub params: cloister_measure::cca::RealmParams,
    /// Whether QEMU reserves the (unmeasured) measurement log.
    pub measurement_log: bool,
}

impl CcaBackend {
    /// The realm reference values for `launch` under QEMU `virt`: RIM over
    /// REALM_CREATE, INIT_RIPAS of RAM, the kernel, initrd and DTB at QEMU's
    /// addresses, and the boot REC; RPV = the initdata digest.
    pub fn reference_values(
        &self,
        launch: &Launch,
        inputs: &CcaMeasureInputs,
    ) -> Result<super::ReferenceValues, super::MeasureError> {
        use cloister_measure::cca::vmm::{LaunchImages, QemuVirt};
        let kernel = super::read_input("kernel", &launch.kernel)?;
        let initrd = super::read_input("initramfs", &launch.initramfs)?;
        let mut params = inputs.params;
        params.hash_algo = self.measurement_algorithm;
        let vmm = QemuVirt {
            ram_size: u64::from(launch.memory_mib) << 20,
            measurement_log: inputs.measurement_log,
        };
        let layout = vmm.layout(Some(&kernel), Some(initrd.len() as u64))?;
        let plan = layout.plan(
            params,
            cloister_measure::cca::RmmVersion::V1,
            LaunchImages {
                kernel: Some(&kernel),
                initrd: Some(&initrd),
                dtb: &inputs.dtb,
            },
        )?;
        let rim = plan.rim()?;
        let rpv = initdata_field(launch, TeeKind::Cca)?;
        let mut rv = super::ReferenceValues::default();
        rv.cca_realm.push(super::refvals::RealmRef {
            rim: rim.as_bytes().to_vec(),
            rems: None,
            rpv,
            rak_hash_algorithm: None,
        });
        Ok(rv)
    }
}

#[cfg(test)]
mod refval_tests {
    use super::*;
    use cloister_measure::cca::{RealmFlags, RealmParams};

    #[test]
    fn realm_reference_values_track_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let mut launch = crate::host::testutil::launch(dir.path());
        let mut k = vec![0u8; 8192];
        let h = cloister_measure::cca::vmm::ArmImageHeader {
            text_offset: 0,
            image_size: 8192,
            flags: 0xa,
        };
        k[..64].copy_from_slice(&h.to_bytes());
        std::fs::write(&launch.kernel, &k).unwrap();
        let inputs = CcaMeasureInputs {
            dtb: vec![0xd0; 4000],
            params: RealmParams {
                flags: RealmFlags::default(),
                s2sz: 41,
                sve_vl: 0,
                num_bps: 5,
                num_wps: 3,
                pmu_num_ctrs: 0,
                hash_algo: cloister_measure::cca::HashAlgo::Sha512,
            },
            measurement_log: false,
        };
        let a = CcaBackend::default()
            .reference_values(&launch, &inputs)
            .unwrap();
        assert_eq!(a.cca_realm[0].rim.len(), 64);
        assert_eq!(
            a.cca_realm[0].rpv,
            initdata_field(&launch, TeeKind::Cca).unwrap()
        );
        launch.cmdline.push_str(" x"); // the command line lives in the DTB, not here
        let mut other = inputs.clone();
        other.dtb[10] ^= 1;
        let b = CcaBackend::default()
            .reference_values(&launch, &other)
            .unwrap();
        assert_ne!(a.cca_realm[0].rim, b.cca_realm[0].rim);
        // A bzImage is not an arm64 Image.
        std::fs::write(&launch.kernel, vec![0u8; 8192]).unwrap();
        let e = CcaBackend::default()
            .reference_values(&launch, &inputs)
            .unwrap_err();
        assert!(
            crate::host::chain(&e).contains("arm64"),
            "{}",
            crate::host::chain(&e)
        );
    }
}
