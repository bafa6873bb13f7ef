//! TEE backends (Arm CCA, SEV-SNP, TDX, sim) behind one trait, and guest attesters.
