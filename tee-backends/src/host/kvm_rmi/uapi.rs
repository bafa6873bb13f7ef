//! KVM's Arm CCA uAPI as proposed by the cca-host series (not upstream
//! yet): every number the host launch uses, in one place.
//!
//! Source: "arm64: Support for Arm CCA in KVM", [PATCH v12 06/46] "arm64:
//! RMI: Define the user ABI" and [PATCH v12 09/46] "KVM: arm64: Allow
//! passing machine type in KVM creation" (Steven Price, 2025-12-17, based
//! on v6.19-rc1; git: linux-cca `cca-host/v12`). v13 and v14 change
//! `KVM_ARM_RMI_POPULATE` to `_IOWR` and renumber `KVM_CAP_ARM_RMI` (249 in
//! v14): adjust here when moving series.

/// The series these numbers come from.
pub const SERIES: &str = "cca-host v12";

/// `KVMIO`.
pub const KVMIO: u64 = 0xAE;

/// `KVM_CAP_ARM_RMI` (v12: 247).
pub const KVM_CAP_ARM_RMI: u64 = 247;

/// `KVM_VM_TYPE_ARM_SHIFT`.
pub const KVM_VM_TYPE_ARM_SHIFT: u64 = 8;
/// `KVM_VM_TYPE_ARM_REALM` = `KVM_VM_TYPE_ARM(1)`.
pub const KVM_VM_TYPE_ARM_REALM: u64 = 1 << KVM_VM_TYPE_ARM_SHIFT;
/// `KVM_VM_TYPE_ARM_IPA_SIZE_MASK`.
pub const KVM_VM_TYPE_ARM_IPA_SIZE_MASK: u64 = 0xff;

/// `struct kvm_arm_rmi_populate`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvmArmRmiPopulate {
    /// IPA, page aligned.
    pub base: u64,
    /// Bytes, page aligned.
    pub size: u64,
    /// Source buffer in the VMM.
    pub source_uaddr: u64,
    /// `KVM_ARM_RMI_POPULATE_FLAGS_*`.
    pub flags: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// `KVM_ARM_RMI_POPULATE_FLAGS_MEASURE`: measure the content into the RIM.
pub const KVM_ARM_RMI_POPULATE_FLAGS_MEASURE: u32 = 1 << 0;

const fn ioc(dir: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (KVMIO << 8) | nr
}

/// `_IOW(KVMIO, 0xd7, struct kvm_arm_rmi_populate)` (v12; `_IOWR` from v13).
pub const KVM_ARM_RMI_POPULATE: u64 = ioc(1, 0xd7, std::mem::size_of::<KvmArmRmiPopulate>() as u64);

/// `KVM_CHECK_EXTENSION` = `_IO(KVMIO, 0x03)`.
pub const KVM_CHECK_EXTENSION: u64 = ioc(0, 0x03, 0);
/// `KVM_CREATE_VM` = `_IO(KVMIO, 0x01)`.
pub const KVM_CREATE_VM: u64 = ioc(0, 0x01, 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_series() {
        assert_eq!(std::mem::size_of::<KvmArmRmiPopulate>(), 32);
        assert_eq!(KVM_ARM_RMI_POPULATE, 0x4020_aed7);
        assert_eq!(KVM_CHECK_EXTENSION, 0xae03);
        assert_eq!(KVM_CREATE_VM, 0xae01);
        assert_eq!(KVM_VM_TYPE_ARM_REALM, 0x100);
    }
}
