//! Container images inside the guest: the agent pulls an image from an OCI
//! registry, checks it against the sandbox's signature policy and pinned
//! digests, decrypts encrypted layers (ocicrypt) with keys released by the
//! KBS, and unpacks the layers into guest memory, confined to their root.
//!
//! It is not a registry, not a KBS client (secrets arrive through
//! [`resources::ResourceProvider`]) and not a container runtime: it hands
//! the agent unpacked layers and the image config.
//!
//! Modules:
//! - [`resources`]: where secrets (keys, policies, credentials) come from;
//! - [`ocicrypt`]: layer decryption and encryption (ocicrypt's
//!   `AES_256_CTR_HMAC_SHA256`, JWE and CoCo key-provider annotations);
//! - [`signature`]: containers-policy.json, GPG simple signing and sigstore
//!   signature checks.

pub mod ocicrypt;
pub mod resources;
pub mod signature;
