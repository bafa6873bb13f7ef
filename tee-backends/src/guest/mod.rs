//! Guest side: attesters that produce evidence for a 64-byte report_data,
//! and the detector the agent calls to pick one.
//!
//! Order of preference: a configfs-tsm provider (real hardware), then
//! `/dev/sev-guest` (SNP without configfs-tsm), then the sim channel (a
//! virtio-serial port to the host's software RMM). Hardware wins so that a
//! host cannot swap a real TEE's evidence for host-made sim evidence.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::TeeKind;

mod sev_guest;
mod sim;
mod sys;
mod tsm;

pub use sev_guest::SevGuestAttester;
pub use sim::SimAttester;
pub use sim::SimChannel;
pub use tsm::{provider_tee, ConfigFs, FakeConfigFs, RealConfigFs, TsmAttester};

/// Why evidence could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// File or device I/O failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// configfs-tsm's generation changed between writing inblob and reading
    /// outblob on every attempt: another writer kept racing us.
    #[error("configfs-tsm report {path} was rewritten concurrently {attempts} times (generation changed); giving up")]
    Race {
        /// The report directory.
        path: PathBuf,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider is one we do not know.
    #[error(
        "configfs-tsm provider {0:?} is unknown: expected arm_cca_guest, sev_guest or tdx_guest"
    )]
    UnknownProvider(String),
    /// The TEE answered with an error.
    #[error("{tee} firmware refused the report request: {detail}")]
    Firmware {
        /// TEE.
        tee: TeeKind,
        /// Status detail.
        detail: String,
    },
    /// The sim host channel failed.
    #[error("sim attestation through the host")]
    Sim(#[from] crate::simproto::ProtoError),
    /// The attester cannot do this.
    #[error("{tee} attester cannot {what}")]
    Unsupported {
        /// TEE.
        tee: TeeKind,
        /// The operation.
        what: &'static str,
    },
}

/// Produces evidence inside a guest.
pub trait Attester: Send + Sync + fmt::Debug {
    /// The TEE this attester speaks for.
    fn tee(&self) -> TeeKind;

    /// Evidence binding `report_data`: an SNP report, a TDX quote, or a CCA
    /// token (CCA and sim).
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError>;

    /// Extends runtime measurement register `index` with `data` (CCA REM,
    /// sim REM). TEEs without a guest-extendable register say Unsupported.
    fn extend(&self, index: u32, data: &[u8]) -> Result<(), AttestError>;
}

/// Where the detector looks. [`GuestPaths::system`] is the real guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPaths {
    /// The configfs-tsm report directory.
    pub tsm_report: PathBuf,
    /// The SNP guest device.
    pub sev_guest: PathBuf,
    /// sysfs class directory of virtio-serial ports (`vportNpM/name`).
    pub virtio_ports: PathBuf,
    /// Device directory holding `vportNpM` nodes.
    pub dev: PathBuf,
}

impl GuestPaths {
    /// The paths of a real Linux guest.
    pub fn system() -> Self {
        Self {
            tsm_report: PathBuf::from("/sys/kernel/config/tsm/report"),
            sev_guest: PathBuf::from("/dev/sev-guest"),
            virtio_ports: PathBuf::from("/sys/class/virtio-ports"),
            dev: PathBuf::from("/dev"),
        }
    }

    /// The same layout under `root` (tests).
    pub fn under(root: &Path) -> Self {
        Self {
            tsm_report: root.join("sys/kernel/config/tsm/report"),
            sev_guest: root.join("dev/sev-guest"),
            virtio_ports: root.join("sys/class/virtio-ports"),
            dev: root.join("dev"),
        }
    }
}

/// No attester could be found.
#[derive(Debug, thiserror::Error)]
#[error("no TEE attestation interface in this guest: {tried}")]
pub struct DetectError {
    /// What was tried and why each failed.
    pub tried: String,
}

/// Detects the attester on a real guest.
pub fn detect() -> Result<Box<dyn Attester>, DetectError> {
    detect_in(&GuestPaths::system())
}

/// Detects the attester under `paths`.
pub fn detect_in(paths: &GuestPaths) -> Result<Box<dyn Attester>, DetectError> {
    let mut tried = Vec::new();
    let fs = RealConfigFs::new(&paths.tsm_report);
    match TsmAttester::probe(fs) {
        Ok(a) => return Ok(Box::new(a)),
        Err(e) => tried.push(format!(
            "configfs-tsm at {}: {e}",
            paths.tsm_report.display()
        )),
    }
    if paths.sev_guest.exists() {
        return Ok(Box::new(SevGuestAttester::new(&paths.sev_guest)));
    }
    tried.push(format!("{}: absent", paths.sev_guest.display()));
    match sim::find_port(&paths.virtio_ports, &paths.dev) {
        Ok(port) => return Ok(Box::new(SimAttester::open(port))),
        Err(e) => tried.push(format!("sim port {}: {e}", crate::simproto::SIM_PORT_NAME)),
    }
    Err(DetectError {
        tried: tried.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_present_names_every_interface() {
        let dir = tempfile::tempdir().unwrap();
        let err = detect_in(&GuestPaths::under(dir.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("configfs-tsm"), "{err}");
        assert!(err.contains("sev-guest"), "{err}");
        assert!(err.contains("cloister.sim"), "{err}");
    }

    #[test]
    fn sim_port_detected_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let paths = GuestPaths::under(dir.path());
        for (port, name) in [("vport0p1", "cloister.agent"), ("vport0p2", "cloister.sim")] {
            std::fs::create_dir_all(paths.virtio_ports.join(port)).unwrap();
            std::fs::write(
                paths.virtio_ports.join(port).join("name"),
                format!("{name}\n"),
            )
            .unwrap();
        }
        std::fs::create_dir_all(&paths.dev).unwrap();
        std::fs::write(paths.dev.join("vport0p2"), b"").unwrap();
        let a = detect_in(&paths).unwrap();
        assert_eq!(a.tee(), TeeKind::Sim);
    }
}
