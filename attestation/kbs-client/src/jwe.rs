//! The TEE key and the JWE a KBS wraps resources in.
//!
//! Resources come as a flattened JWE with `enc = A256GCM` and
//! `alg = ECDH-ES+A256KW` (P-256, Concat KDF of RFC 7518 §4.6.2). The AAD is
//! the base64url of the protected header re-serialized the way `kbs-types`
//! does it (`alg`, `enc`, then the other fields), which is also what the
//! server sent.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kbs_types::{ProtectedHeader, Response, TeePubKey};
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::{EncodedPoint, PublicKey, SecretKey};
use sha2::{Digest, Sha256};

/// The JWE key-management algorithm this client asks for.
pub const ALG_ECDH_ES_A256KW: &str = "ECDH-ES+A256KW";
/// The RSA key-management algorithm (server side only; this client uses EC).
pub const ALG_RSA_OAEP_256: &str = "RSA-OAEP-256";
/// The content encryption.
pub const ENC_A256GCM: &str = "A256GCM";

/// Why a JWE could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum JweError {
    /// `alg` or `enc` is not one this key handles.
    #[error("unsupported JWE algorithm {alg}/{enc}: expected {ALG_ECDH_ES_A256KW}/{ENC_A256GCM}")]
    Unsupported {
        /// The `alg` found.
        alg: String,
        /// The `enc` found.
        enc: String,
    },
    /// The `epk` header is missing or not a P-256 point.
    #[error("bad epk in protected header: {0}")]
    Epk(&'static str),
    /// A field is not valid base64url.
    #[error("header field {0} is not base64url")]
    Base64(&'static str),
    /// The IV is not 12 bytes.
    #[error("iv must be 12 bytes, found {0}")]
    Iv(usize),
    /// AES key unwrap failed (wrong key or tampered encrypted_key).
    #[error("AES key unwrap failed: wrong recipient key or tampered encrypted_key")]
    Unwrap,
    /// AES-GCM authentication failed (tampered ciphertext, tag, iv or header).
    #[error("AES-GCM authentication failed: ciphertext, tag, iv or protected header tampered")]
    Decrypt,
    /// The header could not be serialised.
    #[error("protected header: {0}")]
    Header(String),
}

/// Concat KDF (NIST SP 800-56A, as profiled by RFC 7518 §4.6.2) with SHA-256,
/// for a 256-bit key.
pub fn concat_kdf_256(z: &[u8], alg: &str, apu: &[u8], apv: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(1u32.to_be_bytes());
    h.update(z);
    for part in [alg.as_bytes(), apu, apv] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part);
    }
    h.update(256u32.to_be_bytes());
    h.finalize().into()
}

/// The AAD of a flattened JWE: ASCII(base64url(protected)) and, if the JWE
/// carries an `aad` member, `.` and that member as sent.
pub fn jwe_aad(protected: &ProtectedHeader, aad: Option<&[u8]>) -> Result<Vec<u8>, JweError> {
    let mut out = protected
        .generate_aad()
        .map_err(|e| JweError::Header(e.to_string()))?;
    if let Some(extra) = aad {
        out.push(b'.');
        out.extend_from_slice(extra);
    }
    Ok(out)
}

/// Open AES-256-GCM content given the CEK.
pub fn open_a256gcm(cek: &[u8], response: &Response) -> Result<Vec<u8>, JweError> {
    let iv: [u8; 12] = response
        .iv
        .as_slice()
        .try_into()
        .map_err(|_| JweError::Iv(response.iv.len()))?;
    let cipher = Aes256Gcm::new_from_slice(cek).map_err(|_| JweError::Unwrap)?;
    let aad = jwe_aad(&response.protected, response.aad.as_deref())?;
    let mut msg = response.ciphertext.clone();
    msg.extend_from_slice(&response.tag);
    cipher
        .decrypt(
            &Nonce::from(iv),
            Payload {
                msg: &msg,
                aad: &aad,
            },
        )
        .map_err(|_| JweError::Decrypt)
}

/// Parse a P-256 public key from JWK coordinates (base64url x, y).
pub fn p256_from_xy(x: &str, y: &str) -> Result<PublicKey, JweError> {
    let x = URL_SAFE_NO_PAD
        .decode(x)
        .map_err(|_| JweError::Epk("x is not base64url"))?;
    let y = URL_SAFE_NO_PAD
        .decode(y)
        .map_err(|_| JweError::Epk("y is not base64url"))?;
    if x.len() != 32 || y.len() != 32 {
        return Err(JweError::Epk("P-256 coordinates must be 32 bytes"));
    }
    let point =
        EncodedPoint::from_affine_coordinates(x.as_slice().into(), y.as_slice().into(), false);
    Option::from(PublicKey::from_encoded_point(&point)).ok_or(JweError::Epk("not a point on P-256"))
}

/// base64url x and y of a P-256 public key.
pub fn p256_xy(key: &PublicKey) -> (String, String) {
    let point = key.to_encoded_point(false);
    let x = point
        .x()
        .map(|x| URL_SAFE_NO_PAD.encode(x))
        .unwrap_or_default();
    let y = point
        .y()
        .map(|y| URL_SAFE_NO_PAD.encode(y))
        .unwrap_or_default();
    (x, y)
}

/// The ephemeral key a guest binds into its evidence and receives secrets under.
///
/// The public JWK is computed once. With the `aws-lc` feature (host-side
/// users: the CLI and the KBS load generator) key generation and ECDH use
/// `aws-lc-rs`'s assembly P-256; without it (the default, light enough for a
/// static guest agent) the portable `p256` arithmetic.
#[derive(Clone)]
pub struct TeeKey {
    secret: SecretKey,
    public: TeePubKey,
    /// The same key for aws-lc-rs ECDH (None: use the portable path).
    #[cfg(feature = "aws-lc")]
    fast: Option<std::sync::Arc<aws_lc_rs::agreement::PrivateKey>>,
}

/// The tee-pubkey JWK of an uncompressed SEC1 P-256 point.
#[cfg(feature = "aws-lc")]
fn jwk_of_sec1(p: &[u8]) -> Option<TeePubKey> {
    if p.len() != 65 || p[0] != 4 {
        return None;
    }
    Some(TeePubKey::EC {
        crv: "P-256".into(),
        alg: ALG_ECDH_ES_A256KW.into(),
        x: URL_SAFE_NO_PAD.encode(&p[1..33]),
        y: URL_SAFE_NO_PAD.encode(&p[33..]),
    })
}

impl std::fmt::Debug for TeeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeKey")
            .field("public", &self.public_jwk())
            .finish()
    }
}

impl Default for TeeKey {
    fn default() -> Self {
        Self::generate()
    }
}

impl TeeKey {
    /// A fresh random P-256 key.
    pub fn generate() -> Self {
        #[cfg(feature = "aws-lc")]
        if let Some(k) = Self::generate_aws_lc() {
            return k;
        }
        Self::from_secret(SecretKey::random(&mut rand::rngs::OsRng))
    }

    /// Generation with aws-lc-rs: no portable scalar multiplication at all
    /// (the public point comes from aws-lc, the scalar is copied out).
    #[cfg(feature = "aws-lc")]
    fn generate_aws_lc() -> Option<Self> {
        use aws_lc_rs::agreement::{PrivateKey, ECDH_P256};
        use aws_lc_rs::encoding::{AsBigEndian, EcPrivateKeyBin};
        let fast = PrivateKey::generate(&ECDH_P256).ok()?;
        let scalar: EcPrivateKeyBin<'static> = fast.as_be_bytes().ok()?;
        let secret = SecretKey::from_slice(scalar.as_ref()).ok()?;
        let public = jwk_of_sec1(fast.compute_public_key().ok()?.as_ref())?;
        Some(Self {
            secret,
            public,
            fast: Some(std::sync::Arc::new(fast)),
        })
    }

    /// Wrap an existing secret key.
    pub fn from_secret(secret: SecretKey) -> Self {
        let (x, y) = p256_xy(&secret.public_key());
        let public = TeePubKey::EC {
            crv: "P-256".into(),
            alg: ALG_ECDH_ES_A256KW.into(),
            x,
            y,
        };
        Self {
            #[cfg(feature = "aws-lc")]
            fast: aws_lc_rs::agreement::PrivateKey::from_private_key(
                &aws_lc_rs::agreement::ECDH_P256,
                &secret.to_bytes(),
            )
            .ok()
            .map(std::sync::Arc::new),
            secret,
            public,
        }
    }

    /// The public half as the JWK sent in `runtime-data.tee-pubkey`.
    pub fn public_jwk(&self) -> TeePubKey {
        self.public.clone()
    }

    /// Open a resource JWE addressed to this key.
    pub fn decrypt(&self, response: &Response) -> Result<Vec<u8>, JweError> {
        let ph = &response.protected;
        if ph.alg != ALG_ECDH_ES_A256KW || ph.enc != ENC_A256GCM {
            return Err(JweError::Unsupported {
                alg: ph.alg.clone(),
                enc: ph.enc.clone(),
            });
        }
        let epk = ph.other_fields.get("epk").ok_or(JweError::Epk("missing"))?;
        if epk.get("crv").and_then(|v| v.as_str()) != Some("P-256") {
            return Err(JweError::Epk("crv must be P-256"));
        }
        let field = |name: &'static str| -> Result<&str, JweError> {
            epk.get(name)
                .and_then(|v| v.as_str())
                .ok_or(JweError::Epk("missing x or y"))
        };
        let epk = p256_from_xy(field("x")?, field("y")?)?;
        let header_bytes = |name: &'static str| -> Result<Vec<u8>, JweError> {
            match ph.other_fields.get(name).and_then(|v| v.as_str()) {
                Some(s) => URL_SAFE_NO_PAD
                    .decode(s)
                    .map_err(|_| JweError::Base64(name)),
                None => Ok(Vec::new()),
            }
        };
        let apu = header_bytes("apu")?;
        let apv = header_bytes("apv")?;
        let kek = self.shared_kek(&epk, &apu, &apv)?;
        let kek = aes_kw::KekAes256::from(kek);
        let cek = kek
            .unwrap_vec(&response.encrypted_key)
            .map_err(|_| JweError::Unwrap)?;
        open_a256gcm(&cek, response)
    }

    /// ECDH with the sender's ephemeral key, then the Concat KDF.
    fn shared_kek(&self, epk: &PublicKey, apu: &[u8], apv: &[u8]) -> Result<[u8; 32], JweError> {
        #[cfg(feature = "aws-lc")]
        if let Some(fast) = &self.fast {
            use aws_lc_rs::agreement::{agree, UnparsedPublicKey, ECDH_P256};
            let point = epk.to_encoded_point(false);
            return agree(
                fast.as_ref(),
                UnparsedPublicKey::new(&ECDH_P256, point.as_bytes()),
                JweError::Epk("ECDH with the epk failed"),
                |z| Ok(concat_kdf_256(z, ALG_ECDH_ES_A256KW, apu, apv)),
            );
        }
        let shared = p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), epk.as_affine());
        Ok(concat_kdf_256(
            shared.raw_secret_bytes(),
            ALG_ECDH_ES_A256KW,
            apu,
            apv,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_known_answer_from_kbs_types() {
        let ph = ProtectedHeader {
            alg: "fakealg".into(),
            enc: "fakeenc".into(),
            other_fields: Default::default(),
        };
        assert_eq!(
            jwe_aad(&ph, None).unwrap(),
            b"eyJhbGciOiJmYWtlYWxnIiwiZW5jIjoiZmFrZWVuYyJ9".to_vec()
        );
    }

    #[test]
    fn concat_kdf_rfc7518_appendix_c() {
        // RFC 7518 Appendix C: ECDH-ES direct, A128GCM, apu "Alice", apv "Bob".
        // Z and the derived key from the RFC; we check our KDF framing with a
        // 128-bit variant computed the same way.
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let mut h = Sha256::new();
        h.update(1u32.to_be_bytes());
        h.update(z);
        for part in [b"A128GCM".as_slice(), b"Alice", b"Bob"] {
            h.update((part.len() as u32).to_be_bytes());
            h.update(part);
        }
        h.update(128u32.to_be_bytes());
        let out = h.finalize();
        assert_eq!(
            &out[..16],
            &[86, 170, 141, 234, 248, 35, 109, 32, 92, 34, 40, 205, 113, 167, 16, 26]
        );
        // Same framing as concat_kdf_256 apart from the key length.
        let k = concat_kdf_256(&z, "A128GCM", b"Alice", b"Bob");
        assert_ne!(&k[..16], &out[..16]);
    }

    #[test]
    fn generated_public_key_is_the_scalars_and_both_ecdh_paths_agree() {
        let k = TeeKey::generate();
        let again = TeeKey::from_secret(k.secret.clone());
        assert_eq!(
            serde_json::to_value(k.public_jwk()).unwrap(),
            serde_json::to_value(again.public_jwk()).unwrap()
        );
        let eph = SecretKey::random(&mut rand::rngs::OsRng);
        let kek = k.shared_kek(&eph.public_key(), b"", b"").unwrap();
        let portable = TeeKey {
            #[cfg(feature = "aws-lc")]
            fast: None,
            ..k.clone()
        };
        assert_eq!(
            portable.shared_kek(&eph.public_key(), b"", b"").unwrap(),
            kek
        );
        // The sender's side of the same agreement.
        let TeePubKey::EC { x, y, .. } = k.public_jwk() else {
            panic!("not an EC key")
        };
        let recipient = p256_from_xy(&x, &y).unwrap();
        let z = p256::ecdh::diffie_hellman(eph.to_nonzero_scalar(), recipient.as_affine());
        assert_eq!(
            concat_kdf_256(z.raw_secret_bytes(), ALG_ECDH_ES_A256KW, b"", b""),
            kek
        );
    }

    #[test]
    fn rejects_unsupported_alg() {
        let key = TeeKey::generate();
        let resp = Response {
            protected: ProtectedHeader {
                alg: "dir".into(),
                enc: ENC_A256GCM.into(),
                other_fields: Default::default(),
            },
            encrypted_key: vec![],
            aad: None,
            iv: vec![0; 12],
            ciphertext: vec![],
            tag: vec![0; 16],
        };
        assert!(matches!(
            key.decrypt(&resp),
            Err(JweError::Unsupported { .. })
        ));
    }
}
