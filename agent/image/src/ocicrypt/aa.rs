//! CoCo's key-provider annotation
//! (`org.opencontainers.image.enc.keys.provider.attestation-agent`): base64
//! of a JSON "annotation packet" naming the KEK by its KBS resource URI
//! (`kid`) and carrying the private layer options encrypted with that KEK
//! (AES-256-GCM, 12-byte IV, tag appended).

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{CryptError, ANNOTATION_AA};
use crate::resources::ResourcePath;

/// The only wrap type CoCo defines.
pub const WRAP_A256GCM: &str = "A256GCM";

/// The decoded annotation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationPacket {
    /// The KEK's KBS resource URI, `kbs:///repo/type/tag`.
    pub kid: String,
    /// base64: the private layer options, AES-256-GCM-encrypted (tag appended).
    pub wrapped_data: String,
    /// base64: the 12-byte GCM IV.
    pub iv: String,
    /// `A256GCM`.
    pub wrap_type: String,
    /// Newer CoCo packets may carry these; they are not used here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_settings: Option<serde_json::Value>,
    /// Newer CoCo packets may carry these; they are not used here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

fn bad(reason: String) -> CryptError {
    CryptError::BadAnnotation {
        annotation: ANNOTATION_AA,
        reason,
    }
}

impl AnnotationPacket {
    /// Parses the packet JSON (not base64).
    pub fn from_json(json: &[u8]) -> Result<Self, CryptError> {
        let p: Self = serde_json::from_slice(json)
            .map_err(|e| bad(format!("not an annotation packet: {e}")))?;
        if p.wrap_type != WRAP_A256GCM {
            return Err(CryptError::UnsupportedAlgorithm {
                what: "wrap_type",
                name: p.wrap_type,
                expected: WRAP_A256GCM,
            });
        }
        Ok(p)
    }

    /// Parses the annotation value (base64 of the packet JSON).
    pub fn from_annotation(value: &str) -> Result<Self, CryptError> {
        let json = base64::engine::general_purpose::STANDARD
            .decode(value.trim().as_bytes())
            .map_err(|e| bad(format!("not base64: {e}")))?;
        Self::from_json(&json)
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// The KEK's resource path.
    pub fn kid_path(&self) -> Result<ResourcePath, CryptError> {
        ResourcePath::from_kbs_uri(&self.kid).map_err(|e| CryptError::BadKid {
            kid: self.kid.clone(),
            reason: e.to_string(),
        })
    }

    /// Decrypts `wrapped_data` with the KEK (32 raw bytes).
    pub fn unwrap(&self, kek: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptError> {
        let wrong = |reason: String| CryptError::Unwrap {
            kid: self.kid.clone(),
            reason,
        };
        let cipher = Aes256Gcm::new_from_slice(kek)
            .map_err(|_| wrong(format!("KEK is {} bytes, expected 32", kek.len())))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let iv = b64
            .decode(self.iv.as_bytes())
            .map_err(|e| bad(format!("iv is not base64: {e}")))?;
        let iv: [u8; 12] = iv
            .as_slice()
            .try_into()
            .map_err(|_| bad(format!("iv is {} bytes, expected 12", iv.len())))?;
        let data = b64
            .decode(self.wrapped_data.as_bytes())
            .map_err(|e| bad(format!("wrapped_data is not base64: {e}")))?;
        cipher
            .decrypt(&Nonce::from(iv), data.as_slice())
            .map(Zeroizing::new)
            .map_err(|_| {
                wrong("AES-256-GCM tag mismatch: wrong KEK or tampered wrapped_data".into())
            })
    }

    /// Wraps `secret` (the private options JSON) under `kek` for `kid`.
    pub fn wrap(kid: &str, kek: &[u8; 32], secret: &[u8]) -> Result<Self, CryptError> {
        use rand::RngCore;
        let mut iv = [0u8; 12];
        rand::rngs::OsRng.fill_bytes(&mut iv);
        let cipher = Aes256Gcm::new(&(*kek).into());
        let data = cipher
            .encrypt(&Nonce::from(iv), secret)
            .map_err(|_| CryptError::BadOptions("AES-256-GCM encryption failed".into()))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        Ok(Self {
            kid: kid.to_string(),
            wrapped_data: b64.encode(data),
            iv: b64.encode(iv),
            wrap_type: WRAP_A256GCM.into(),
            provider_settings: None,
            annotations: None,
        })
    }
}
