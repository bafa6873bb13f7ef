//! Cloister's key broker service: a Trustee-compatible KBS (protocol 0.4.0)
//! that releases secrets only to guests whose evidence it has appraised.
//!
//! It speaks RCAR over HTTP(S) (`/kbs/v0/auth`, `/attest`, `/resource/...`),
//! appraises evidence with `cloister-attestation`'s [`Verifier`], issues EAR
//! tokens (ES256, key in the `jwk` header, `tee-pubkey` in the runtime-data
//! claims), decides releases with a Rego resource policy, and returns
//! resources as flattened JWE to the guest's key. An admin API (bearer tokens
//! signed by a configured admin key) writes resources, policies, reference
//! values and trust anchors; nothing reads secrets back through it. State
//! lives in a [`store::Store`] (by default files written atomically in the
//! data dir).
//!
//! It is not a verifier itself (it calls one), not an attester and not a
//! client; the guest side is `cloister-kbs-client`.
//!
//! [`Verifier`]: cloister_attestation::Verifier

pub mod admin;
pub mod config;
pub mod jwe;
pub mod limit;
#[cfg(feature = "testing")]
pub mod loadgen;
pub mod metrics;
pub mod problem;
pub mod server;
pub mod session;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod token;

pub use config::Config;
pub use problem::Problem;
pub use server::{Kbs, KbsError};

/// The default resource policy (`policies/kbs/resource-policy.rego`).
pub const DEFAULT_RESOURCE_POLICY: &str =
    include_str!("../../../policies/kbs/resource-policy.rego");
/// Query evaluated on the resource policy.
pub const RESOURCE_POLICY_QUERY: &str = "data.policy.allow";
