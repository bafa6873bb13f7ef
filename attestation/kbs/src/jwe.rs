//! Resource encryption: a flattened JWE (`A256GCM`) to the TEE key from the
//! attestation, keyed by `ECDH-ES+A256KW` (P-256, Concat KDF) or
//! `RSA-OAEP-256`. The protected header is serialised by `kbs-types`
//! (`alg`, `enc`, then the other fields), exactly as a Trustee client
//! re-serializes it to recompute the AAD.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cloister_kbs_client::jwe::{
    concat_kdf_256, jwe_aad, p256_from_xy, ALG_ECDH_ES_A256KW, ALG_RSA_OAEP_256, ENC_A256GCM,
};
use kbs_types::{ProtectedHeader, Response, TeePubKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use ring::agreement;
use serde_json::{json, Map};

/// Why a resource could not be encrypted to a key.
#[derive(Debug, thiserror::Error)]
pub enum EncryptError {
    /// The key type/curve/alg is not supported.
    #[error("unsupported TEE key: {0}")]
    Unsupported(String),
    /// The key is malformed.
    #[error("malformed TEE key: {0}")]
    BadKey(String),
    /// A cryptographic primitive failed.
    #[error("encryption failed: {0}")]
    Crypto(String),
}

/// base64url x and y of an uncompressed SEC1 P-256 point.
fn sec1_xy(p: &[u8]) -> Result<(String, String), EncryptError> {
    if p.len() != 65 || p[0] != 4 {
        return Err(EncryptError::Crypto(
            "ephemeral public key is not an uncompressed P-256 point".into(),
        ));
    }
    Ok((
        URL_SAFE_NO_PAD.encode(&p[1..33]),
        URL_SAFE_NO_PAD.encode(&p[33..]),
    ))
}

/// Encrypt `payload` to `key`.
pub fn encrypt(key: &TeePubKey, payload: &[u8]) -> Result<Response, EncryptError> {
    let cek: [u8; 32] = rand::random();
    let (protected, encrypted_key) = match key {
        TeePubKey::EC { crv, alg, x, y } => {
            if crv != "P-256" {
                return Err(EncryptError::Unsupported(format!(
                    "EC curve {crv}, expected P-256"
                )));
            }
            if alg != ALG_ECDH_ES_A256KW {
                return Err(EncryptError::Unsupported(format!(
                    "EC alg {alg}, expected {ALG_ECDH_ES_A256KW}"
                )));
            }
            // Validates the point (on the curve, not identity).
            let recipient = p256_from_xy(x, y).map_err(|e| EncryptError::BadKey(e.to_string()))?;
            let recipient = recipient.to_encoded_point(false);
            // ECDH with ring: ephemeral key generation and the shared
            // secret are its constant-time P-256, several times faster
            // than the portable arithmetic.
            let rng = ring::rand::SystemRandom::new();
            let eph = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
                .map_err(|_| EncryptError::Crypto("ephemeral P-256 key generation".into()))?;
            let eph_pub = eph
                .compute_public_key()
                .map_err(|_| EncryptError::Crypto("ephemeral P-256 public key".into()))?;
            let kek = agreement::agree_ephemeral(
                eph,
                &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, recipient.as_bytes()),
                |z| concat_kdf_256(z, ALG_ECDH_ES_A256KW, b"", b""),
            )
            .map_err(|_| EncryptError::BadKey("ECDH with the TEE key failed".into()))?;
            let wrapped = aes_kw::KekAes256::from(kek)
                .wrap_vec(&cek)
                .map_err(|e| EncryptError::Crypto(e.to_string()))?;
            let (ex, ey) = sec1_xy(eph_pub.as_ref())?;
            let mut other = Map::new();
            other.insert(
                "epk".into(),
                json!({"crv": "P-256", "kty": "EC", "x": ex, "y": ey}),
            );
            (
                ProtectedHeader {
                    alg: ALG_ECDH_ES_A256KW.into(),
                    enc: ENC_A256GCM.into(),
                    other_fields: other,
                },
                wrapped,
            )
        }
        TeePubKey::RSA { alg, k_mod, k_exp } => {
            if alg != ALG_RSA_OAEP_256 {
                return Err(EncryptError::Unsupported(format!(
                    "RSA alg {alg}, expected {ALG_RSA_OAEP_256}"
                )));
            }
            let n = URL_SAFE_NO_PAD
                .decode(k_mod)
                .map_err(|_| EncryptError::BadKey("RSA n is not base64url".into()))?;
            let e = URL_SAFE_NO_PAD
                .decode(k_exp)
                .map_err(|_| EncryptError::BadKey("RSA e is not base64url".into()))?;
            if n.len() < 256 || n.len() > 1024 {
                return Err(EncryptError::BadKey(format!(
                    "RSA modulus of {} bits, expected 2048..8192",
                    n.len() * 8
                )));
            }
            let pk = rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(&n),
                rsa::BigUint::from_bytes_be(&e),
            )
            .map_err(|e| EncryptError::BadKey(e.to_string()))?;
            let wrapped = pk
                .encrypt(
                    &mut rand::rngs::OsRng,
                    rsa::Oaep::new::<sha2::Sha256>(),
                    &cek,
                )
                .map_err(|e| EncryptError::Crypto(e.to_string()))?;
            (
                ProtectedHeader {
                    alg: ALG_RSA_OAEP_256.into(),
                    enc: ENC_A256GCM.into(),
                    other_fields: Map::new(),
                },
                wrapped,
            )
        }
        TeePubKey::AKP { alg, .. } => {
            return Err(EncryptError::Unsupported(format!("AKP key ({alg})")))
        }
    };
    let aad = jwe_aad(&protected, None).map_err(|e| EncryptError::Crypto(e.to_string()))?;
    let iv: [u8; 12] = rand::random();
    let cipher =
        Aes256Gcm::new_from_slice(&cek).map_err(|e| EncryptError::Crypto(e.to_string()))?;
    let mut sealed = cipher
        .encrypt(
            &Nonce::from(iv),
            Payload {
                msg: payload,
                aad: &aad,
            },
        )
        .map_err(|e| EncryptError::Crypto(e.to_string()))?;
    let tag = sealed.split_off(sealed.len().saturating_sub(16));
    Ok(Response {
        protected,
        encrypted_key,
        aad: None,
        iv: iv.to_vec(),
        ciphertext: sealed,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_kbs_client::TeeKey;

    #[test]
    fn round_trip_with_client_key_and_tamper_detection() {
        let key = TeeKey::generate();
        let resp = encrypt(&key.public_jwk(), b"secret").unwrap();
        assert_eq!(key.decrypt(&resp).unwrap(), b"secret");
        // The wire form re-parses to the same header (AAD) and still opens.
        let wire = serde_json::to_string(&resp).unwrap();
        let back: Response = serde_json::from_str(&wire).unwrap();
        assert_eq!(key.decrypt(&back).unwrap(), b"secret");
        let v: serde_json::Value = serde_json::from_str(&wire).unwrap();
        let ph = URL_SAFE_NO_PAD
            .decode(v["protected"].as_str().unwrap())
            .unwrap();
        assert!(String::from_utf8(ph).unwrap().starts_with(
            r#"{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC","x":""#
        ));

        let mut t = resp.clone();
        t.ciphertext[0] ^= 1;
        assert!(key.decrypt(&t).is_err());
        let mut t = resp.clone();
        t.tag[0] ^= 1;
        assert!(key.decrypt(&t).is_err());
        let mut t = resp.clone();
        t.protected.other_fields.insert("kid".into(), json!("x"));
        assert!(key.decrypt(&t).is_err());
        let other = TeeKey::generate();
        assert!(other.decrypt(&resp).is_err());
    }

    #[test]
    fn rejects_unsupported_keys() {
        let k = TeePubKey::EC {
            crv: "P-384".into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x: "AA".into(),
            y: "AA".into(),
        };
        assert!(matches!(
            encrypt(&k, b"x"),
            Err(EncryptError::Unsupported(_))
        ));
        let k = TeePubKey::RSA {
            alg: ALG_RSA_OAEP_256.into(),
            k_mod: "AQAB".into(),
            k_exp: "AQAB".into(),
        };
        assert!(matches!(encrypt(&k, b"x"), Err(EncryptError::BadKey(_))));
    }
}
