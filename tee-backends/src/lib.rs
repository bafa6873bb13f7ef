//! TEE backends behind one trait: the host side turns a [`Launch`] into
//! hypervisor settings and predicts reference values; the guest side
//! produces evidence for a 64-byte report_data. Backends: `none` (no TEE),
//! `sim` (a software RMM on the host), Arm CCA, AMD SEV-SNP and Intel TDX.
//!
//! This crate is not a hypervisor driver: it describes what a launch needs and
//! leaves starting the VM to `cloister-runtime`. It does not verify evidence
//! either (that is `cloister-attestation`).
//!
//! The guest side ([`guest`], [`evidence`], [`initdata`], [`simproto`]) is
//! always built and stays light for the static agent. Host-only parts (QEMU
//! backends, the sim RMM, reference values, host probes) need feature `host`.

pub mod evidence;
pub mod guest;
#[cfg(feature = "host")]
pub mod host;
pub mod initdata;
pub mod simproto;

/// Trustee's SNP evidence JSON, which the agent builds from the raw report.
pub use cloister_tee_types::snp_evidence;
pub use cloister_tee_types::{NoEvidence, TeeKind, UnknownTee};
pub use guest::{detect, AttestError, Attester};

use std::fmt;
use std::path::{Path, PathBuf};

/// Everything that determines what a guest is at launch, and so what it
/// measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Guest kernel image handed to the hypervisor.
    pub kernel: PathBuf,
    /// Initramfs handed to the hypervisor.
    pub initramfs: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Initdata document (TOML), if any. Its digest is bound into the TEE.
    pub initdata: Option<Vec<u8>>,
    /// Guest firmware (OVMF/TDVF) where the TEE needs one.
    pub firmware: Option<PathBuf>,
}

/// QEMU settings a backend adds to a launch. The runtime merges these into
/// its own command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QemuSettings {
    /// Properties appended to `-machine` (e.g. `confidential-guest-support=tee0`).
    pub machine_props: Vec<String>,
    /// `-object` values (e.g. `sev-snp-guest,id=tee0,...`).
    pub objects: Vec<String>,
    /// If set, guest RAM must come from this memory backend (the runtime
    /// adds it as an `-object` and names its id in `memory-backend=`).
    pub memory_backend: Option<MemoryBackend>,
    /// Further raw arguments (devices, chardevs, `-bios`).
    pub extra_args: Vec<String>,
    /// Words appended to the kernel command line.
    pub cmdline_extra: Vec<String>,
    /// If set, QEMU loads the kernel from here instead of the launch's path:
    /// a backend that measured the kernel pins the bytes it measured (e.g.
    /// `/proc/<pid>/fd/<n>` of a file it keeps open in its guard), so a file
    /// replaced after measuring cannot slip in.
    pub kernel: Option<PathBuf>,
    /// Likewise for the initramfs.
    pub initramfs: Option<PathBuf>,
}

/// The kind of a guest RAM backend object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryBackendKind {
    /// `memory-backend-ram`: anonymous private memory.
    Ram,
    /// `memory-backend-memfd`, shared with other processes (vhost-user)
    /// or not.
    Memfd {
        /// `share=on`.
        share: bool,
    },
}

/// A guest RAM backend, typed so that the runtime never parses an option
/// string back: it renders the `-object` value and names `id` in the
/// machine's `memory-backend=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBackend {
    /// Which backend object.
    pub kind: MemoryBackendKind,
    /// The object id (`ram0`).
    pub id: String,
    /// Size in MiB (the guest's RAM).
    pub size_mib: u32,
}

impl MemoryBackend {
    /// The `-object` value QEMU takes.
    pub fn qemu_object(&self) -> String {
        match self.kind {
            MemoryBackendKind::Ram => {
                format!("memory-backend-ram,id={},size={}M", self.id, self.size_mib)
            }
            MemoryBackendKind::Memfd { share } => format!(
                "memory-backend-memfd,id={},size={}M,share={}",
                self.id,
                self.size_mib,
                if share { "on" } else { "off" }
            ),
        }
    }
}

/// A launch prepared by a backend: QEMU settings plus whatever host-side
/// service must live as long as the sandbox (dropped at teardown).
pub struct Prepared {
    /// Settings to merge into the QEMU command line.
    pub qemu: QemuSettings,
    /// Keeps host-side services (e.g. the sim RMM) alive; dropping it stops them.
    pub guard: Option<Box<dyn Send>>,
}

impl fmt::Debug for Prepared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("qemu", &self.qemu)
            .field("guard", &self.guard.is_some())
            .finish()
    }
}

/// Why a backend could not prepare a launch.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// The host cannot launch this TEE.
    #[error("this host cannot launch {tee} guests: {reason}")]
    Unsupported {
        /// The TEE asked for.
        tee: TeeKind,
        /// Why not, and what would fix it.
        reason: String,
    },
    /// A launch input was unusable.
    #[error("invalid launch: {0}")]
    InvalidLaunch(String),
    /// Setting up a host-side service failed.
    #[error("setting up the {tee} host service")]
    HostService {
        /// The TEE.
        tee: TeeKind,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The host side of a TEE backend, as the sandbox runtime uses it.
pub trait HostBackend: Send + Sync {
    /// Which TEE this is.
    fn kind(&self) -> TeeKind;

    /// Turns a launch into QEMU settings. `state_dir` is the sandbox's private
    /// directory, where the backend may create sockets.
    fn prepare(&self, launch: &Launch, state_dir: &Path) -> Result<Prepared, PrepareError>;
}

/// The `none` backend: a plain VM with nothing added.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTee;

impl HostBackend for NoTee {
    fn kind(&self) -> TeeKind {
        TeeKind::None
    }

    fn prepare(&self, _launch: &Launch, _state_dir: &Path) -> Result<Prepared, PrepareError> {
        Ok(Prepared {
            qemu: QemuSettings::default(),
            guard: None,
        })
    }
}

/// One host capability check, as `cloister check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it when it failed.
    pub fix: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_names_round_trip() {
        for tee in [
            TeeKind::None,
            TeeKind::Sim,
            TeeKind::Cca,
            TeeKind::Snp,
            TeeKind::Tdx,
        ] {
            assert_eq!(tee.as_str().parse::<TeeKind>().unwrap(), tee);
        }
        let err = "sgx".parse::<TeeKind>().unwrap_err();
        assert!(err.to_string().contains("sgx"));
    }
}
