//! The few system calls the runtime needs that std does not wrap:
//! `PR_SET_PDEATHSIG` for the hypervisor child, the `KVM_GET_API_VERSION`
//! ioctl for the accelerator probe, and owning received descriptors.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// `KVM_GET_API_VERSION` = `_IO(KVMIO, 0x00)` with `KVMIO` = 0xAE.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// Arranges for `cmd`'s child to get SIGKILL when the thread that spawns it
/// exits (the kernel ties the parent-death signal to the forking thread), to
/// exit at once if the runtime already died between fork and prctl, and to
/// create its files and sockets owner-only, 0600 (umask 177; it creates no
/// directories).
pub fn kill_child_with_parent(cmd: &mut Command) {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (umask, prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(0o177);
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The runtime is already gone: do not start an orphan.
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// The KVM API version `/dev/kvm` reports (12 on every Linux since 2.6.22).
pub fn kvm_api_version(dev: &File) -> io::Result<i32> {
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int;
    // the fd is valid for the duration of the call because we borrow `dev`.
    let r = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Whether a process with this pid exists (signal 0).
pub fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks existence.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends `sig` to `pid`; errors (e.g. the process is gone) are returned.
pub fn send_signal(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Takes ownership of a descriptor the kernel just installed in this
/// process for us (received as SCM_RIGHTS), so it is closed when dropped.
pub fn own_fd(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the caller passes a descriptor that recvmsg just created in
    // this process and that nothing else owns or closes.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
