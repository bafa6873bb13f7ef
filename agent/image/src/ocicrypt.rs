//! ocicrypt layer decryption (and the encryption `cloister image encrypt`
//! uses): media types `…tar+gzip+encrypted` / `…tar+encrypted`, cipher
//! `AES_256_CTR_HMAC_SHA256`, layer keys wrapped either as JWE for the
//! sandbox's private keys (`org.opencontainers.image.enc.keys.jwe`, as
//! skopeo `--encryption-key jwe:` writes them) or under a KEK held by the
//! KBS (CoCo's `…keys.provider.attestation-agent` annotation).
//!
//! The order is the caller's guarantee: [`required_keys`] says which KBS
//! resources a layer needs without fetching anything (so a pull can refuse
//! before downloading a layer body), [`unwrap_layer_key`] fetches only
//! those, and [`open_layer`] checks the HMAC over the whole ciphertext
//! before it yields the first plaintext byte.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};

use zeroize::Zeroizing;

use crate::resources::{ResourceError, ResourcePath, ResourceProvider};

pub mod aa;
pub mod cipher;
pub mod jwe;
pub mod layout;

/// Annotation holding JWE-wrapped private layer options.
pub const ANNOTATION_JWE: &str = "org.opencontainers.image.enc.keys.jwe";
/// Annotation holding CoCo's attestation-agent key-provider packet.
pub const ANNOTATION_AA: &str = "org.opencontainers.image.enc.keys.provider.attestation-agent";
/// Annotation holding the public cipher options (cipher name and HMAC).
pub const ANNOTATION_PUBOPTS: &str = "org.opencontainers.image.enc.pubopts";
/// Prefix of every key-provider annotation.
const ANNOTATION_PROVIDER_PREFIX: &str = "org.opencontainers.image.enc.keys.provider.";
/// Prefix of every key annotation.
const ANNOTATION_KEYS_PREFIX: &str = "org.opencontainers.image.enc.keys.";

const ENCRYPTED_SUFFIX: &str = "+encrypted";

/// Why a layer could not be decrypted (or encrypted).
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// The layer carries no key annotation this crate can use.
    #[error("encrypted layer has no usable key annotation: expected {ANNOTATION_AA} or {ANNOTATION_JWE}{found}")]
    NoKeyAnnotation {
        /// `, found …` listing other key annotations, or empty.
        found: String,
    },
    /// A required annotation is absent.
    #[error("encrypted layer has no {0} annotation")]
    MissingAnnotation(&'static str),
    /// An annotation is malformed.
    #[error("annotation {annotation}: {reason}")]
    BadAnnotation {
        /// The annotation name.
        annotation: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A JWE-wrapped layer and no decryption key configured for the sandbox.
    #[error("layer key is JWE-wrapped ({ANNOTATION_JWE}) but the sandbox names no decryption key: add one to initdata (`cloister initdata new --decryption-key kbs:///REPO/TYPE/TAG`)")]
    NoDecryptionKey,
    /// The `kid` of the key-provider packet is not a KBS resource URI.
    #[error("kid {kid:?} is not a KBS resource URI kbs:///REPO/TYPE/TAG: {reason}")]
    BadKid {
        /// The kid as written in the annotation.
        kid: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The KBS did not release a key.
    #[error("fetching key {kid}")]
    Fetch {
        /// The key's URI.
        kid: String,
        /// The provider's error.
        #[source]
        source: ResourceError,
    },
    /// A fetched private key resource is not a usable key.
    #[error("decryption key {kid} is not usable: {reason}")]
    KeyFormat {
        /// The key's URI.
        kid: String,
        /// What was wrong.
        reason: String,
    },
    /// No configured decryption key opens any JWE recipient.
    #[error("no decryption key opens the layer's JWE ({ANNOTATION_JWE}); tried {tried}")]
    NoMatchingKey {
        /// Each key tried, with why it failed.
        tried: String,
    },
    /// Unwrapping with the KEK failed.
    #[error("unwrapping the layer key with KEK {kid}: {reason}")]
    Unwrap {
        /// The KEK's URI.
        kid: String,
        /// Why.
        reason: String,
    },
    /// An algorithm or wrap type this crate does not implement.
    #[error("unsupported {what} {name:?}: expected {expected}")]
    UnsupportedAlgorithm {
        /// Which field.
        what: &'static str,
        /// The value found.
        name: String,
        /// What is supported.
        expected: &'static str,
    },
    /// A cipher other than `AES_256_CTR_HMAC_SHA256`.
    #[error("unsupported layer cipher {0:?}: expected AES_256_CTR_HMAC_SHA256")]
    UnsupportedCipher(String),
    /// The unwrapped private options are malformed.
    #[error("layer key options: {0}")]
    BadOptions(String),
    /// The ciphertext's HMAC does not match: tampered, truncated, or a key
    /// for another layer.
    #[error("layer HMAC mismatch over {bytes} ciphertext bytes: the blob is tampered or truncated, or the key belongs to another layer")]
    HmacMismatch {
        /// Bytes read.
        bytes: u64,
    },
    /// The decrypted layer's digest differs from the one the key names.
    #[error("decrypted layer digest is {actual}, the layer key names {expected}")]
    PlaintextDigest {
        /// From the private options.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// I/O on the blob or layout.
    #[error("{0}")]
    Io(&'static str, #[source] std::io::Error),
}

/// Whether `media_type` is an ocicrypt-encrypted layer.
pub fn is_encrypted(media_type: &str) -> bool {
    media_type.ends_with(ENCRYPTED_SUFFIX)
}

/// The media type of the plaintext (strips "+encrypted"), None if not encrypted.
pub fn decrypted_media_type(media_type: &str) -> Option<&str> {
    media_type.strip_suffix(ENCRYPTED_SUFFIX)
}

/// A layer's decryption key: the layer key, nonce, expected HMAC and the
/// plaintext digest. `Debug` prints no key bytes; the key is zeroed on drop.
pub struct LayerKey {
    keys: cipher::Keys,
}

impl std::fmt::Debug for LayerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerKey")
            .field("cipher", &cipher::AES_256_CTR_HMAC_SHA256)
            .field("key", &"<redacted>")
            .field("plaintext_digest", &self.keys.digest)
            .finish()
    }
}

impl LayerKey {
    /// Builds the key from the layer's public options annotation and the
    /// unwrapped private options JSON.
    pub fn from_options(
        annotations: &BTreeMap<String, String>,
        private_json: &[u8],
    ) -> Result<Self, CryptError> {
        let public = annotations
            .get(ANNOTATION_PUBOPTS)
            .ok_or(CryptError::MissingAnnotation(ANNOTATION_PUBOPTS))?;
        let public = cipher::PublicOptions::from_annotation(public)?;
        let private: cipher::PrivateOptions = serde_json::from_slice(private_json)
            .map_err(|e| CryptError::BadOptions(format!("not the private options JSON: {e}")))?;
        Ok(Self {
            keys: cipher::Keys::new(&public, &private)?,
        })
    }

    /// Digest of the plaintext layer the key names (`sha256:…`), if any.
    pub fn plaintext_digest(&self) -> Option<&str> {
        self.keys.digest.as_deref()
    }
}

/// How a layer's key is wrapped.
enum Wrapping {
    Aa(Box<aa::AnnotationPacket>),
    Jwe(jwe::Jwes),
}

fn wrapping(annotations: &BTreeMap<String, String>) -> Result<Wrapping, CryptError> {
    if let Some(v) = annotations.get(ANNOTATION_AA) {
        return aa::AnnotationPacket::from_annotation(v).map(|p| Wrapping::Aa(Box::new(p)));
    }
    if let Some(v) = annotations.get(ANNOTATION_JWE) {
        return jwe::Jwes::from_annotation(v).map(Wrapping::Jwe);
    }
    let others: Vec<&str> = annotations
        .keys()
        .map(String::as_str)
        .filter(|k| {
            k.starts_with(ANNOTATION_KEYS_PREFIX) || k.starts_with(ANNOTATION_PROVIDER_PREFIX)
        })
        .collect();
    Err(CryptError::NoKeyAnnotation {
        found: if others.is_empty() {
            String::new()
        } else {
            format!(", found {}", others.join(", "))
        },
    })
}

/// The KBS resources this layer's key needs, without fetching anything
/// (the AA annotation's kid, or the sandbox's JWE decryption keys); an
/// error naming what is missing, e.g. a JWE layer with no key configured.
pub fn required_keys(
    annotations: &BTreeMap<String, String>,
    decryption_keys: &[ResourcePath],
) -> Result<Vec<ResourcePath>, CryptError> {
    if !annotations.contains_key(ANNOTATION_PUBOPTS) {
        return Err(CryptError::MissingAnnotation(ANNOTATION_PUBOPTS));
    }
    match wrapping(annotations)? {
        Wrapping::Aa(p) => Ok(vec![p.kid_path()?]),
        Wrapping::Jwe(_) if decryption_keys.is_empty() => Err(CryptError::NoDecryptionKey),
        Wrapping::Jwe(_) => Ok(decryption_keys.to_vec()),
    }
}

/// Unwraps the layer key (fetching only what required_keys named).
pub async fn unwrap_layer_key(
    annotations: &BTreeMap<String, String>,
    decryption_keys: &[ResourcePath],
    resources: &dyn ResourceProvider,
) -> Result<LayerKey, CryptError> {
    required_keys(annotations, decryption_keys)?;
    let private = match wrapping(annotations)? {
        Wrapping::Aa(packet) => {
            let path = packet.kid_path()?;
            let kek = Zeroizing::new(resources.resource(&path).await.map_err(|source| {
                CryptError::Fetch {
                    kid: path.to_kbs_uri(),
                    source,
                }
            })?);
            packet.unwrap(&kek)?
        }
        Wrapping::Jwe(jwes) => {
            let mut tried = Vec::new();
            let mut found = None;
            for path in decryption_keys {
                let kid = path.to_kbs_uri();
                let bytes = Zeroizing::new(resources.resource(path).await.map_err(|source| {
                    CryptError::Fetch {
                        kid: kid.clone(),
                        source,
                    }
                })?);
                let key =
                    jwe::PrivateKey::parse(&bytes).map_err(|reason| CryptError::KeyFormat {
                        kid: kid.clone(),
                        reason,
                    })?;
                match jwes.decrypt(&key) {
                    Ok(plain) => {
                        found = Some(plain);
                        break;
                    }
                    Err(why) => tried.push(format!("{kid} ({why})")),
                }
            }
            found.ok_or_else(|| CryptError::NoMatchingKey {
                tried: tried.join(", "),
            })?
        }
    };
    LayerKey::from_options(annotations, &private)
}

/// Verifies the HMAC over the whole ciphertext in `blob` first, then
/// returns a reader of the plaintext layer (still compressed). Never
/// yields a byte before the HMAC matched. Streams: never holds the layer in memory.
/// The reader fails at end of stream if the plaintext digest differs from
/// the one the key names.
pub fn open_layer(mut blob: std::fs::File, key: &LayerKey) -> Result<impl Read, CryptError> {
    use std::io::{Seek, SeekFrom};
    blob.seek(SeekFrom::Start(0))
        .map_err(|e| CryptError::Io("rewinding the encrypted layer", e))?;
    cipher::verify_hmac(&mut blob, &key.keys)?;
    Ok(cipher::Decryptor::new(
        BufReader::with_capacity(256 * 1024, blob),
        &key.keys,
    ))
}
