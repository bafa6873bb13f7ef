//! Reference-measurement calculators as pure functions: CCA RIM/REM, SNP launch digest, TDX MRTD/RTMR.
