//! Intel TDX under QEMU 10: `tdx-guest` with MRCONFIGID = the initdata digest
//! (48 B, base64), the split IRQ chip TDX requires, RAM from a
//! `memory-backend-ram` object (QEMU adds the guest_memfd private memory
//! itself), and TDVF via `-bios`.

use std::path::Path;

use super::{b64, initdata_field, invalid, require_firmware};
use crate::{HostBackend, Launch, PrepareError, Prepared, QemuSettings, TeeKind};

/// TDX settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TdxBackend {
    /// Set TD attribute SEPT_VE_DISABLE (bit 28), as Linux guests expect.
    pub sept_ve_disable: bool,
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
    /// `tdx.mr_td`, and MRCONFIGID (the initdata digest fitted to 48 bytes)
    /// as `tdx.mr_config_id`. RTMR1/2 (kernel, command line, initrd) depend
    /// on TDVF's event log and are checked by replaying the CCEL instead.
    pub fn reference_values(
        &self,
        launch: &Launch,
    ) -> Result<super::ReferenceValues, super::MeasureError> {
        let fw_path = launch.firmware.as_ref().ok_or_else(|| {
            super::MeasureError::Input("--tee tdx needs --firmware (a TDVF build)".into())
        })?;
        let fw = super::read_input("firmware", fw_path)?;
        let mrtd = cloister_measure::tdx::mrtd(&fw).map_err(|e| {
            super::MeasureError::Input(format!("TDX MRTD of {}: {e}", fw_path.display()))
        })?;
        let mut rv = super::ReferenceValues::default();
        rv.add_named("tdx.mr_td", mrtd.as_bytes().to_vec());
        rv.add_named("tdx.mr_config_id", initdata_field(launch, TeeKind::Tdx)?);
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
