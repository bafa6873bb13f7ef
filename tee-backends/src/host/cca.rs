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
