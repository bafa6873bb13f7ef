//! Reference-measurement calculators for confidential guests, as pure
//! functions of their inputs: the Arm CCA Realm Initial Measurement (RIM)
//! and Realm Extensible Measurements (REM), the AMD SEV-SNP launch digest
//! and the Intel TDX MRTD/RTMR values.
//!
//! Every calculator takes bytes and parameters and returns a digest newtype;
//! nothing here opens files, talks to a hypervisor or reads the clock. Callers
//! (the `cloister measure` command, the sim backend's software RMM, the CCA
//! KVM launch planner) read the assets and hand the bytes in. This crate is
//! not a verifier: it predicts what a correct guest measures, and leaves the
//! comparison with evidence to `cloister-attestation`.

#![forbid(unsafe_code)]

pub mod cca;
pub mod digest;
pub mod ovmf_footer;
pub mod pe;
pub mod qemu_x86;
#[cfg(feature = "snp")]
pub mod snp;
pub mod tdx;
