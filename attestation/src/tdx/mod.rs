//! Intel TDX evidence: DCAP quotes v4/v5 (work in progress).
