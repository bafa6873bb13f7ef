//! The hypervisor seam: what a sandbox needs from a VM monitor, and nothing
//! more. [`crate::qemu`] implements it with QEMU.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use cloister_tee::QemuSettings;

use crate::accel::Accel;

/// How the host reaches the agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum AgentTransport {
    /// A virtio-serial port whose host end is a unix socket the VMM listens on.
    Serial {
        /// The unix socket path.
        socket: PathBuf,
    },
    /// virtio-vsock through `/dev/vhost-vsock`.
    Vsock {
        /// The guest's context id.
        cid: u32,
        /// The port the agent listens on.
        port: u32,
    },
    /// virtio-vsock served by a vhost-user backend process
    /// ([`crate::vhost_user`]), for hosts without `/dev/vhost-vsock`.
    #[serde(rename = "vhost-user-vsock")]
    VhostUserVsock {
        /// The backend's socket the VMM connects to.
        vmm_socket: PathBuf,
        /// The backend's socket the host connects to (`CONNECT <port>`).
        uds: PathBuf,
        /// The guest's context id.
        cid: u32,
        /// The port the agent listens on.
        port: u32,
    },
}

impl AgentTransport {
    /// The agent's side of this transport, for the kernel command line.
    pub fn guest_channel(&self) -> cloister_protocol::Channel {
        match self {
            AgentTransport::Serial { .. } => cloister_protocol::Channel::Serial,
            AgentTransport::Vsock { port, .. } | AgentTransport::VhostUserVsock { port, .. } => {
                cloister_protocol::Channel::Vsock { port: *port }
            }
        }
    }
}

/// Everything a VM monitor needs to start one sandbox VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// A name for the VM (shown in process listings).
    pub name: String,
    /// Guest kernel (bzImage).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initramfs: PathBuf,
    /// The whole kernel command line.
    pub cmdline: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Accelerator.
    pub accel: Accel,
    /// File that receives the guest's serial console.
    pub console_log: PathBuf,
    /// File that receives the VMM's own stderr.
    pub vmm_log: PathBuf,
    /// The agent transport.
    pub agent: AgentTransport,
    /// A raw disk image attached read-only as the container rootfs.
    pub rootfs_image: Option<PathBuf>,
    /// A raw disk image attached read-write as the encrypted scratch disk
    /// ([`crate::scratch`]).
    pub scratch_image: Option<PathBuf>,
    /// Settings from the TEE backend.
    pub tee: QemuSettings,
    /// A file (0600, in the 0700 state dir) holding the per-sandbox secret
    /// the agent requires from every host connection; the VMM hands the
    /// guest the file, never its content on a command line (QEMU: the
    /// fw_cfg file [`AGENT_SECRET_FW_CFG`]).
    pub agent_secret: Option<PathBuf>,
    /// The NIC, if the sandbox has one ([`crate::net`]).
    pub net: Option<crate::net::NetSpec>,
}

/// The fw_cfg name under which the guest finds the agent secret.
pub const AGENT_SECRET_FW_CFG: &str = cloister_protocol::channel::AGENT_SECRET_FW_CFG;

/// A running VM.
pub trait VmHandle: Send {
    /// The VMM's process id.
    fn pid(&self) -> u32;
    /// The exit status if the VMM has exited, without blocking.
    fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>>;
    /// Blocks until the VMM exits.
    fn wait(&mut self) -> std::io::Result<ExitStatus>;
    /// Asks the VMM to quit, waits up to `grace`, then kills it. Returns once
    /// the process is gone.
    fn stop(&mut self, grace: Duration) -> std::io::Result<ExitStatus>;
    /// Where the agent is reached.
    fn agent(&self) -> &AgentTransport;
    /// The console log file.
    fn console_log(&self) -> &Path;
}

/// A VM monitor.
pub trait Hypervisor {
    /// Its VM handle.
    type Vm: VmHandle;
    /// Why a start failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// Starts a VM. The VMM must not outlive the calling thread.
    fn start(&self, spec: &VmSpec) -> Result<Self::Vm, Self::Error>;
}
