//! Evidence decoders and verifiers (Arm CCA, SEV-SNP, TDX, sim), appraisal to EAR.

pub mod snp;
pub mod tdx;
