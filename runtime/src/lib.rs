//! Host side of Cloister: the hypervisor seam and its QEMU driver, the
//! accelerator probe (KVM or TCG, and why), per-sandbox state under the
//! runtime dir, the container rootfs image, the ttrpc client of the guest
//! agent, the sandbox lifecycle that ties them together, and the container
//! API (create, start, exec, stdio, signals, wait, remove) that the CLI and
//! the containerd shim both use. A fake VMM ([`fake`]) stands behind the
//! hypervisor seam in tests.
//!
//! It is not the CLI (`cloister`, in runtime/cli) and not a TEE backend
//! (`cloister-tee`): TEE settings arrive through `cloister_tee::HostBackend`.

pub mod accel;
pub mod agent;
pub mod console;
pub mod container;
pub mod control;
pub mod fake;
pub mod hypervisor;
pub mod initdata;
pub mod net;
pub mod qemu;
pub mod rootfs;
pub mod sandbox;
pub mod scratch;
pub mod state;
mod sys;
pub mod tee;
pub mod vhost_user;

pub use accel::{Accel, AccelProbe};
pub use agent::{AgentClient, AgentError, ExitStatus};
pub use container::{Container, Process, Pumps, SignalForwarder, Stream};
pub use hypervisor::{AgentTransport, Hypervisor, VmHandle, VmSpec};
pub use qemu::{Qemu, QemuDriver, QemuError};
pub use sandbox::{ChannelChoice, Sandbox, SandboxConfig, SandboxError};

/// Whether a process is alive (for tests and `cloister ps`).
pub fn process_alive(pid: u32) -> bool {
    sys::process_alive(pid)
}
