//! The raw ioctls of the CCA host launch (`/dev/kvm`, VM fds).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::uapi;

/// `KVM_CHECK_EXTENSION(KVM_CAP_ARM_RMI)` on `/dev/kvm`.
pub fn check_rmi_cap() -> io::Result<bool> {
    let kvm = File::options().read(true).write(true).open("/dev/kvm")?;
    // SAFETY: KVM_CHECK_EXTENSION takes an integer argument and touches no
    // memory of ours; `kvm` is an open fd.
    let r = unsafe {
        libc::ioctl(
            kvm.as_raw_fd(),
            uapi::KVM_CHECK_EXTENSION as _,
            uapi::KVM_CAP_ARM_RMI as libc::c_ulong,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r > 0)
}

/// `KVM_CREATE_VM` with the realm machine type and `ipa_bits`.
pub fn create_realm_vm(ipa_bits: u8) -> io::Result<OwnedFd> {
    let kvm = File::options().read(true).write(true).open("/dev/kvm")?;
    let ty =
        uapi::KVM_VM_TYPE_ARM_REALM | (u64::from(ipa_bits) & uapi::KVM_VM_TYPE_ARM_IPA_SIZE_MASK);
    // SAFETY: KVM_CREATE_VM takes an integer machine type and returns a new
    // fd; no memory of ours is passed.
    let fd = unsafe {
        libc::ioctl(
            kvm.as_raw_fd(),
            uapi::KVM_CREATE_VM as _,
            ty as libc::c_ulong,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned `fd` as a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One `KVM_ARM_RMI_POPULATE` call. The kernel may populate less than asked
/// and updates `args` (base, size, source) to the remainder.
pub fn rmi_populate(vm: &OwnedFd, args: &mut uapi::KvmArmRmiPopulate) -> io::Result<()> {
    // SAFETY: `args` is a live, correctly laid-out `kvm_arm_rmi_populate`;
    // its `source_uaddr` points into a buffer the caller keeps alive for the
    // call and whose length covers `size`; `vm` is an open VM fd.
    let r = unsafe {
        libc::ioctl(
            vm.as_raw_fd(),
            uapi::KVM_ARM_RMI_POPULATE as _,
            args as *mut uapi::KvmArmRmiPopulate,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
