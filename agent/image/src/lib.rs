//! Container images inside the guest: the agent pulls an image from an OCI
//! registry, checks it against the sandbox's signature policy and pinned
//! digests, decrypts encrypted layers (ocicrypt) with keys released by the
//! KBS, and unpacks the layers into guest memory, confined to their root.
//!
//! It is not a registry, not a KBS client (secrets arrive through
//! [`resources::ResourceProvider`]) and not a container runtime: it hands
//! the agent unpacked layers (overlayfs lowerdirs) and the image config.
//!
//! The entry point is [`ImageStore::pull`] with a [`PullConfig`].
//!
//! Modules:
//! - [`pull`]: the order of a pull and its configuration;
//! - [`store`]: the content-addressed layer store;
//! - [`reference`], [`platform`], [`manifest`]: what is pulled;
//! - [`registry`]: the OCI distribution client (rustls);
//! - [`unpack`]: tar layers into overlayfs-format directories, confined
//!   with `openat2(RESOLVE_IN_ROOT)`;
//! - [`resources`]: where secrets (keys, policies, credentials) come from;
//! - [`ocicrypt`]: layer decryption and encryption (ocicrypt's
//!   `AES_256_CTR_HMAC_SHA256`, JWE and CoCo key-provider annotations);
//! - [`signature`]: containers-policy.json, GPG simple signing and sigstore
//!   signature checks.

pub mod error;
pub mod manifest;
pub mod ocicrypt;
pub mod platform;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod resources;
pub mod signature;
pub mod store;
pub mod unpack;

pub use error::ImageError;
pub use manifest::ImageConfig;
pub use platform::Platform;
pub use pull::{Progress, PullConfig, PulledImage};
pub use store::ImageStore;
