//! [`ImageError`]: why a pull failed, in one line that names the cause.

use crate::reference::BadReference;
use crate::resources::ResourceError;
use crate::unpack::UnpackError;

/// Why a pull failed. Each message names the image or layer and the value
/// that was expected. Variants that wrap another error keep it as their
/// [`std::error::Error::source`] and do not repeat it: print the chain
/// (anyhow's `{:#}`, or [`ImageError::chain`]) for the one-line cause.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The reference does not parse.
    #[error(transparent)]
    Reference(#[from] BadReference),
    /// A pin in the pull config does not parse.
    #[error("bad pin {pin:?} in the pull config: expected REF@sha256:DIGEST")]
    BadPin {
        /// The pin as given.
        pin: String,
    },
    /// The registry could not be reached or answered with an error.
    #[error("registry {registry}: {reason}")]
    Registry {
        /// `HOST[:PORT]`.
        registry: String,
        /// What went wrong (transport error, HTTP status, oversized reply).
        reason: String,
    },
    /// The registry refused our credentials, or had none to go on.
    #[error("registry {registry}: authentication failed: {reason}")]
    Auth {
        /// `HOST[:PORT]`.
        registry: String,
        /// Why.
        reason: String,
    },
    /// The registry credentials resource is not a containers auth.json.
    #[error("registry credentials {resource}: {reason}")]
    AuthFile {
        /// The KBS resource.
        resource: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Content did not hash to the digest it was asked for by.
    #[error("{what}: digest mismatch: expected {expected}, found {found}")]
    Digest {
        /// What was checked (`manifest of REF`, `layer sha256:…`).
        what: String,
        /// The digest that names the content.
        expected: String,
        /// The digest of what arrived.
        found: String,
    },
    /// Content was not the size its descriptor says.
    #[error("{what}: size mismatch: expected {expected} bytes, got {found}")]
    Size {
        /// What was checked.
        what: String,
        /// From the descriptor.
        expected: u64,
        /// What arrived (at least).
        found: u64,
    },
    /// A manifest, index or config is malformed or of a kind we do not
    /// take.
    #[error("{what}: {reason}")]
    Manifest {
        /// Which document.
        what: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The index has no manifest for our platform.
    #[error("{reference}: no manifest for platform {wanted} (index offers: {offered})")]
    Platform {
        /// The image.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// What the index lists.
        offered: String,
    },
    /// The reference resolved to a digest other than the one initdata pins.
    #[error("{reference} is pinned to {pinned} but resolved to {found}")]
    Pin {
        /// The image.
        reference: String,
        /// The pinned digest.
        pinned: String,
        /// What the registry served.
        found: String,
    },
    /// A TEE guest with no signature policy refuses unpinned images.
    #[error(
        "{reference}: no image signature policy is named and the image is not pinned; name a \
         policy in initdata (`cloister initdata new --image-policy kbs:///REPO/TYPE/TAG`) or pin \
         the image (`--pin REF@sha256:DIGEST`)"
    )]
    NoPolicyOrPin {
        /// The image.
        reference: String,
    },
    /// Simple-signing signatures could not be fetched from the lookaside.
    #[error("{reference}: signature lookaside: {reason}")]
    Lookaside {
        /// The image.
        reference: String,
        /// Why.
        reason: String,
    },
    /// A secret (policy, credentials, key) was not released.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// The signature policy does not parse.
    #[error("image signature policy {resource} is malformed")]
    Policy {
        /// The KBS resource it came from.
        resource: String,
        /// Why it was refused.
        #[source]
        source: crate::signature::PolicyError,
    },
    /// The signature policy refused the image.
    #[error("{reference}: refused by the image signature policy")]
    Signature {
        /// The image (as policy sees it).
        reference: String,
        /// Why.
        #[source]
        source: crate::signature::SignatureError,
    },
    /// A layer could not be decrypted (no key, wrong key, bad HMAC).
    #[error("layer {layer}: cannot decrypt")]
    Crypt {
        /// The layer's digest.
        layer: String,
        /// Why; names the key (`kid`).
        #[source]
        source: crate::ocicrypt::CryptError,
    },
    /// A layer could not be unpacked (escape, refused entry, bad archive).
    #[error("layer {layer}: cannot unpack")]
    Unpack {
        /// The layer's digest.
        layer: String,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// The image store could not be written.
    #[error("image store {path}")]
    Store {
        /// The file or directory.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// This error and its sources joined with `: ` into one line, e.g.
    /// `layer sha256:…: cannot decrypt: no key for kid kbs:///a/b/c`.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}
