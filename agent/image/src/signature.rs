//! Image signature policy (containers-policy.json) and signature checks.
