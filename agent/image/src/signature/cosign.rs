//! Sigstore (cosign) signatures with a public key: ECDSA P-256 with SHA-256
//! over the payload bytes, the signature base64 of its ASN.1 DER form.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

use super::SignatureError;

/// `critical.type` of a cosign payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";

/// The policy's public keys.
pub struct Keys(Vec<VerifyingKey>);

impl Keys {
    /// Each key is PEM (`PUBLIC KEY`, SubjectPublicKeyInfo) or DER.
    pub fn parse(datas: &[Vec<u8>]) -> Result<Self, SignatureError> {
        let mut keys = Vec::new();
        for d in datas {
            let key = match std::str::from_utf8(d) {
                Ok(text) if text.contains("-----BEGIN") => VerifyingKey::from_public_key_pem(text.trim()),
                _ => VerifyingKey::from_public_key_der(d),
            }
            .map_err(|e| {
                SignatureError::BadKey(format!(
                    "sigstoreSigned keyData is not a P-256 public key (PEM or DER SubjectPublicKeyInfo): {e}"
                ))
            })?;
            keys.push(key);
        }
        Ok(Self(keys))
    }

    /// Verifies `signature_b64` over `payload` with any key.
    pub fn verify(&self, payload: &[u8], signature_b64: &str) -> Result<(), SignatureError> {
        let der = base64::engine::general_purpose::STANDARD
            .decode(signature_b64.trim().as_bytes())
            .map_err(|e| {
                SignatureError::BadSignature(format!("cosign signature is not base64: {e}"))
            })?;
        let sig = Signature::from_der(&der)
            .or_else(|_| Signature::from_slice(&der))
            .map_err(|_| {
                SignatureError::BadSignature(
                    "cosign signature is not an ECDSA P-256 signature".into(),
                )
            })?;
        if self.0.iter().any(|k| k.verify(payload, &sig).is_ok()) {
            Ok(())
        } else {
            Err(SignatureError::BadSignature(
                "cosign ECDSA signature does not verify with the policy's key (wrong key or tampered payload)".into(),
            ))
        }
    }
}
