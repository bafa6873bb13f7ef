//! Host side of Cloister: the hypervisor seam and its QEMU driver, the
//! accelerator probe (KVM or TCG, and why), per-sandbox state under the
//! runtime dir, the container rootfs image, the ttrpc client of the guest
//! agent, and the sandbox lifecycle that ties them together.
//!
//! It is not the CLI (`cloister`, in runtime/cli) and not a TEE backend
//! (`cloister-tee`): TEE settings arrive through `cloister_tee::HostBackend`.

pub mod accel;
pub mod agent;
pub mod console;
pub mod hypervisor;
pub mod qemu;
pub mod rootfs;
pub mod sandbox;
pub mod state;
mod sys;
pub mod tee;
pub mod vhost_user;

pub use accel::{Accel, AccelProbe};
pub use agent::{AgentClient, AgentError};
pub use hypervisor::{AgentTransport, Hypervisor, VmHandle, VmSpec};
pub use qemu::{Qemu, QemuDriver, QemuError};
pub use sandbox::{ChannelChoice, Sandbox, SandboxConfig, SandboxError};

/// Whether a process is alive (for tests and `cloister ps`).
pub fn process_alive(pid: u32) -> bool {
    sys::process_alive(pid)
}
