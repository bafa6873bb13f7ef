//! Host side (feature `host`): QEMU settings for each TEE, reference-value
//! prediction, the sim backend's software RMM, the CCA KVM launch plan and
//! host capability probes.

use std::path::{Path, PathBuf};

use crate::initdata::{InitdataDigest, InitdataError};
use crate::{HostBackend, Launch, NoTee, PrepareError, TeeKind};

pub mod cca;
pub mod kvm_rmi;
pub mod probe;
pub mod refvals;
pub mod sim;
pub mod snp;
pub mod tdx;

pub use refvals::{MeasureError, ReferenceValues};

/// Host-wide settings a backend may need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostOptions {
    /// Where per-host state lives (the sim platform key).
    pub config_dir: PathBuf,
}

impl HostOptions {
    /// `$CLOISTER_CONFIG_DIR`, else `$XDG_CONFIG_HOME/cloister`, else
    /// `~/.config/cloister`.
    pub fn from_env() -> Self {
        let config_dir = std::env::var_os("CLOISTER_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("cloister"))
            })
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/cloister")))
            .unwrap_or_else(|| PathBuf::from("/etc/cloister"));
        Self { config_dir }
    }
}

/// The backend for `tee`.
pub fn backend(tee: TeeKind, opts: &HostOptions) -> Box<dyn HostBackend> {
    match tee {
        TeeKind::None => Box::new(NoTee),
        TeeKind::Sim => Box::new(sim::SimBackend::new(opts.clone())),
        TeeKind::Cca => Box::new(cca::CcaBackend::default()),
        TeeKind::Snp => Box::new(snp::SnpBackend::default()),
        TeeKind::Tdx => Box::new(tdx::TdxBackend::default()),
    }
}

/// Reads a launch input file, naming it on failure.
pub(crate) fn read_input(what: &'static str, path: &Path) -> Result<Vec<u8>, MeasureError> {
    std::fs::read(path).map_err(|source| MeasureError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// The initdata digest of a launch, fitted to `tee`'s field (zeros when
/// the launch has none).
pub fn initdata_field(launch: &Launch, tee: TeeKind) -> Result<Vec<u8>, InitdataError> {
    let len = crate::initdata::tee_field_len(tee).unwrap_or(0);
    match &launch.initdata {
        Some(doc) => Ok(InitdataDigest::of(doc)?.fitted(len)),
        None => Ok(vec![0; len]),
    }
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn invalid(e: impl std::fmt::Display) -> PrepareError {
    PrepareError::InvalidLaunch(e.to_string())
}

/// Fails unless the launch names a firmware file that exists.
pub(crate) fn require_firmware(
    tee: TeeKind,
    launch: &Launch,
    what: &str,
) -> Result<PathBuf, PrepareError> {
    match &launch.firmware {
        Some(f) if f.is_file() => Ok(f.clone()),
        Some(f) => Err(invalid(format!(
            "{tee} firmware {} does not exist: expected {what}",
            f.display()
        ))),
        None => Err(invalid(format!("{tee} needs guest firmware: pass {what}"))),
    }
}

/// An error and its sources, one line.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub(crate) fn invalid_chain(e: MeasureError) -> PrepareError {
    PrepareError::InvalidLaunch(chain(&e))
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;

    pub const INITDATA: &str = "algorithm = \"sha384\"\nversion = \"0.1.0\"\n\n[data]\n\"policy.rego\" = \"package agent_policy\\ndefault ExecProcess := true\\n\"\n";

    /// A launch over small synthetic files in `dir`.
    pub fn launch(dir: &Path) -> Launch {
        let kernel = dir.join("bzImage");
        let initramfs = dir.join("initramfs.cpio");
        let firmware = dir.join("OVMF.fd");
        std::fs::write(&kernel, vec![0x4b; 300_000]).unwrap();
        std::fs::write(&initramfs, vec![0x49; 200_000]).unwrap();
        std::fs::write(&firmware, vec![0x46; 65536]).unwrap();
        Launch {
            kernel,
            initramfs,
            cmdline: "console=ttyS0 cloister.channel=serial".into(),
            vcpus: 2,
            memory_mib: 256,
            initdata: Some(INITDATA.as_bytes().to_vec()),
            firmware: Some(firmware),
        }
    }
}
