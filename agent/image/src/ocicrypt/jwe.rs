//! JWE-wrapped layer keys (`org.opencontainers.image.enc.keys.jwe`), as
//! ocicrypt's JWE key wrapper (go-jose) writes them: a comma-separated list
//! of base64 JWE JSON serializations (general or flattened), content
//! encryption A256GCM, one recipient per public key with `RSA-OAEP`,
//! `RSA-OAEP-256` or `ECDH-ES+A128KW/A192KW/A256KW` (and direct `ECDH-ES`).
//! The plaintext is the private layer options JSON.
//!
//! Private keys (KBS resources) are PEM or DER: PKCS#8, PKCS#1 (RSA) or
//! SEC1 (EC, P-256 and P-384).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{CryptError, ANNOTATION_JWE};

/// A private key that can unwrap JWE recipients.
pub enum PrivateKey {
    /// RSA (`RSA-OAEP`, `RSA-OAEP-256`).
    Rsa(Box<rsa::RsaPrivateKey>),
    /// NIST P-256 (`ECDH-ES…`).
    P256(p256::SecretKey),
    /// NIST P-384 (`ECDH-ES…`).
    P384(p384::SecretKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Rsa(_) => "PrivateKey::Rsa(<redacted>)",
            Self::P256(_) => "PrivateKey::P256(<redacted>)",
            Self::P384(_) => "PrivateKey::P384(<redacted>)",
        })
    }
}

/// One PEM block: label and DER bytes.
/// One recipient: its per-recipient header and its encrypted key.
type RecipientRef<'a> = (Option<&'a Map<String, Value>>, Option<&'a String>);

fn pem_blocks(text: &str) -> Vec<(String, Zeroizing<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("-----BEGIN ") {
        let after = &rest[start + 11..];
        let Some(end_label) = after.find("-----") else {
            break;
        };
        let label = after[..end_label].to_string();
        let body_start = &after[end_label + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body_start.find(&end_marker) else {
            break;
        };
        let body: String = body_start[..end]
            .lines()
            .filter(|l| !l.contains(':'))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body.as_bytes()) {
            out.push((label, Zeroizing::new(der)));
        }
        rest = &body_start[end + end_marker.len()..];
    }
    out
}

impl PrivateKey {
    /// Parses a key resource: PEM (first private-key block) or DER.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if let Ok(text) = std::str::from_utf8(bytes) {
            if text.contains("-----BEGIN ") {
                for (label, der) in pem_blocks(text) {
                    let parsed = match label.as_str() {
                        "PRIVATE KEY" => Self::from_pkcs8(&der),
                        "RSA PRIVATE KEY" => Self::from_pkcs1(&der),
                        "EC PRIVATE KEY" => Self::from_sec1(&der),
                        "ENCRYPTED PRIVATE KEY" => {
                            return Err("the key is password-protected (ENCRYPTED PRIVATE KEY); store it unencrypted in the KBS".into())
                        }
                        _ => continue,
                    };
                    return parsed.ok_or_else(|| {
                        format!("PEM block {label:?} is not an RSA, P-256 or P-384 private key")
                    });
                }
                return Err("no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY PEM block".into());
            }
        }
        Self::from_pkcs8(bytes)
            .or_else(|| Self::from_pkcs1(bytes))
            .or_else(|| Self::from_sec1(bytes))
            .ok_or_else(|| {
                "not a PEM or DER (PKCS#8, PKCS#1, SEC1) RSA, P-256 or P-384 private key".into()
            })
    }

    fn from_pkcs8(der: &[u8]) -> Option<Self> {
        use pkcs8::DecodePrivateKey;
        if let Ok(k) = rsa::RsaPrivateKey::from_pkcs8_der(der) {
            return Some(Self::Rsa(Box::new(k)));
        }
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Some(Self::P256(k));
        }
        p384::SecretKey::from_pkcs8_der(der).ok().map(Self::P384)
    }

    fn from_pkcs1(der: &[u8]) -> Option<Self> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        rsa::RsaPrivateKey::from_pkcs1_der(der)
            .ok()
            .map(|k| Self::Rsa(Box::new(k)))
    }

    fn from_sec1(der: &[u8]) -> Option<Self> {
        if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
            return Some(Self::P256(k));
        }
        p384::SecretKey::from_sec1_der(der).ok().map(Self::P384)
    }
}

#[derive(Debug, Deserialize)]
struct JweJson {
    protected: Option<String>,
    unprotected: Option<Map<String, Value>>,
    header: Option<Map<String, Value>>,
    encrypted_key: Option<String>,
    recipients: Option<Vec<Recipient>>,
    aad: Option<String>,
    iv: String,
    ciphertext: String,
    tag: String,
}

#[derive(Debug, Deserialize)]
struct Recipient {
    header: Option<Map<String, Value>>,
    encrypted_key: Option<String>,
}

fn b64url(what: &str, s: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('=').as_bytes())
        .map_err(|e| format!("{what} is not base64url: {e}"))
}

/// Parsed JWE objects of one annotation.
#[derive(Debug)]
pub struct Jwes(Vec<JweJson>);

impl Jwes {
    /// Parses the annotation value.
    pub fn from_annotation(value: &str) -> Result<Self, CryptError> {
        let bad = |reason: String| CryptError::BadAnnotation {
            annotation: ANNOTATION_JWE,
            reason,
        };
        let mut out = Vec::new();
        for (i, part) in value
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .enumerate()
        {
            let json = base64::engine::general_purpose::STANDARD
                .decode(part.as_bytes())
                .map_err(|e| bad(format!("entry {i} is not base64: {e}")))?;
            let jwe: JweJson = serde_json::from_slice(&json)
                .map_err(|e| bad(format!("entry {i} is not a JWE JSON serialization: {e}")))?;
            out.push(jwe);
        }
        if out.is_empty() {
            return Err(bad("empty".into()));
        }
        Ok(Self(out))
    }

    /// Tries `key` on every recipient; the plaintext of the first that opens.
    /// `Err` carries why the last recipient failed.
    pub fn decrypt(&self, key: &PrivateKey) -> Result<Zeroizing<Vec<u8>>, String> {
        let mut last = "no recipients".to_string();
        for jwe in &self.0 {
            let protected_b64 = jwe.protected.clone().unwrap_or_default();
            let mut common = Map::new();
            if !protected_b64.is_empty() {
                let p = b64url("protected header", &protected_b64)?;
                let m: Map<String, Value> = serde_json::from_slice(&p)
                    .map_err(|e| format!("protected header is not JSON: {e}"))?;
                common.extend(m);
            }
            if let Some(u) = &jwe.unprotected {
                common.extend(u.clone());
            }
            let recipients: Vec<RecipientRef<'_>> = match &jwe.recipients {
                Some(r) => r
                    .iter()
                    .map(|r| (r.header.as_ref(), r.encrypted_key.as_ref()))
                    .collect(),
                None => vec![(jwe.header.as_ref(), jwe.encrypted_key.as_ref())],
            };
            for (header, ek) in recipients {
                let mut h = common.clone();
                if let Some(rh) = header {
                    h.extend(rh.clone());
                }
                match unwrap_cek(&h, ek.map(String::as_str), key)
                    .and_then(|cek| content_decrypt(jwe, &h, &protected_b64, &cek))
                {
                    Ok(plain) => return Ok(plain),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }
}

fn header_str<'a>(h: &'a Map<String, Value>, name: &str) -> Result<&'a str, String> {
    h.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("JWE header has no {name:?}"))
}

fn unwrap_cek(
    h: &Map<String, Value>,
    encrypted_key: Option<&str>,
    key: &PrivateKey,
) -> Result<Zeroizing<Vec<u8>>, String> {
    let alg = header_str(h, "alg")?;
    let ek = || -> Result<Vec<u8>, String> {
        b64url(
            "encrypted_key",
            encrypted_key.ok_or("recipient has no encrypted_key")?,
        )
    };
    match (alg, key) {
        ("RSA-OAEP", PrivateKey::Rsa(k)) => k
            .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &ek()?)
            .map(Zeroizing::new)
            .map_err(|e| format!("RSA-OAEP: {e}")),
        ("RSA-OAEP-256", PrivateKey::Rsa(k)) => k
            .decrypt(rsa::Oaep::new::<Sha256>(), &ek()?)
            .map(Zeroizing::new)
            .map_err(|e| format!("RSA-OAEP-256: {e}")),
        ("ECDH-ES" | "ECDH-ES+A128KW" | "ECDH-ES+A192KW" | "ECDH-ES+A256KW", PrivateKey::P256(_) | PrivateKey::P384(_)) => {
            let enc = header_str(h, "enc")?;
            let (kdf_alg, len) = match alg {
                "ECDH-ES" => (enc, enc_key_len(enc)?),
                "ECDH-ES+A128KW" => (alg, 16),
                "ECDH-ES+A192KW" => (alg, 24),
                _ => (alg, 32),
            };
            let epk = h.get("epk").and_then(Value::as_object).ok_or("ECDH-ES header has no epk")?;
            let z = ecdh(key, epk)?;
            let apu = h.get("apu").and_then(Value::as_str).map(|s| b64url("apu", s)).transpose()?.unwrap_or_default();
            let apv = h.get("apv").and_then(Value::as_str).map(|s| b64url("apv", s)).transpose()?.unwrap_or_default();
            let derived = concat_kdf(&z, kdf_alg, &apu, &apv, len);
            if alg == "ECDH-ES" {
                return Ok(derived);
            }
            aes_key_unwrap(&derived, &ek()?)
        }
        ("RSA-OAEP" | "RSA-OAEP-256", _) => Err(format!("recipient {alg} needs an RSA key")),
        ("ECDH-ES" | "ECDH-ES+A128KW" | "ECDH-ES+A192KW" | "ECDH-ES+A256KW", _) => {
            Err(format!("recipient {alg} needs an EC key"))
        }
        (other, _) => Err(format!(
            "unsupported JWE alg {other:?}: expected RSA-OAEP, RSA-OAEP-256 or ECDH-ES[+A128KW|+A192KW|+A256KW]"
        )),
    }
}

fn enc_key_len(enc: &str) -> Result<usize, String> {
    match enc {
        "A128GCM" => Ok(16),
        "A192GCM" => Ok(24),
        "A256GCM" => Ok(32),
        other => Err(format!("unsupported JWE enc {other:?}: expected A256GCM")),
    }
}

fn aes_key_unwrap(kek: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
    let out = match kek.len() {
        16 => aes_kw::KekAes128::new(kek.into()).unwrap_vec(wrapped),
        24 => aes_kw::KekAes192::new(kek.into()).unwrap_vec(wrapped),
        _ => aes_kw::KekAes256::new(kek.into()).unwrap_vec(wrapped),
    };
    out.map(Zeroizing::new)
        .map_err(|_| "AES key unwrap failed (integrity check): wrong key".to_string())
}

fn ecdh(key: &PrivateKey, epk: &Map<String, Value>) -> Result<Zeroizing<Vec<u8>>, String> {
    let crv = epk.get("crv").and_then(Value::as_str).unwrap_or_default();
    let coord = |n: &str| -> Result<Vec<u8>, String> {
        b64url(
            n,
            epk.get(n)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("epk has no {n}"))?,
        )
    };
    let (x, y) = (coord("x")?, coord("y")?);
    let mut sec1 = vec![4u8];
    sec1.extend_from_slice(&x);
    sec1.extend_from_slice(&y);
    match (key, crv) {
        (PrivateKey::P256(sk), "P-256") => {
            let pk =
                p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| "epk is not a P-256 point")?;
            let shared = p256::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
        }
        (PrivateKey::P384(sk), "P-384") => {
            let pk =
                p384::PublicKey::from_sec1_bytes(&sec1).map_err(|_| "epk is not a P-384 point")?;
            let shared = p384::ecdh::diffie_hellman(sk.to_nonzero_scalar(), pk.as_affine());
            Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
        }
        (_, crv) => Err(format!("recipient curve {crv:?} does not match the key")),
    }
}

/// RFC 7518 §4.6.2: Concat KDF with SHA-256.
fn concat_kdf(z: &[u8], alg: &str, apu: &[u8], apv: &[u8], len: usize) -> Zeroizing<Vec<u8>> {
    let mut other = Vec::new();
    for part in [alg.as_bytes(), apu, apv] {
        other.extend_from_slice(&(part.len() as u32).to_be_bytes());
        other.extend_from_slice(part);
    }
    other.extend_from_slice(&((len * 8) as u32).to_be_bytes());
    let mut out = Zeroizing::new(Vec::with_capacity(len + 32));
    let mut counter = 1u32;
    while out.len() < len {
        let mut h = Sha256::new();
        h.update(counter.to_be_bytes());
        h.update(z);
        h.update(&other);
        out.extend_from_slice(&h.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn content_decrypt(
    jwe: &JweJson,
    h: &Map<String, Value>,
    protected_b64: &str,
    cek: &[u8],
) -> Result<Zeroizing<Vec<u8>>, String> {
    let enc = header_str(h, "enc")?;
    if enc != "A256GCM" {
        return Err(format!("unsupported JWE enc {enc:?}: expected A256GCM"));
    }
    if h.contains_key("zip") {
        return Err("compressed JWE payloads (zip) are not supported".into());
    }
    let cipher = Aes256Gcm::new_from_slice(cek).map_err(|_| "content key is not 32 bytes")?;
    let iv = b64url("iv", &jwe.iv)?;
    let iv: [u8; 12] = iv
        .as_slice()
        .try_into()
        .map_err(|_| format!("JWE iv is {} bytes, expected 12", iv.len()))?;
    let mut ct = b64url("ciphertext", &jwe.ciphertext)?;
    ct.extend_from_slice(&b64url("tag", &jwe.tag)?);
    let aad = match &jwe.aad {
        Some(a) => format!("{protected_b64}.{a}"),
        None => protected_b64.to_string(),
    };
    cipher
        .decrypt(
            &Nonce::from(iv),
            Payload {
                msg: &ct,
                aad: aad.as_bytes(),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| "A256GCM content decryption failed (tag mismatch)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_kdf_matches_rfc7518_appendix_c() {
        // RFC 7518 Appendix C: ECDH-ES direct, A128GCM, apu "Alice", apv "Bob".
        let z = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let k = concat_kdf(&z, "A128GCM", b"Alice", b"Bob", 16);
        assert_eq!(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&*k),
            "VqqN6vgjbSBcIijNcacQGg"
        );
    }

    #[test]
    fn pem_blocks_skip_parameters_and_find_the_key() {
        let text = "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        let blocks = pem_blocks(text);
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[1].0, "EC PRIVATE KEY");
        assert!(PrivateKey::parse(text.as_bytes())
            .unwrap_err()
            .contains("EC PRIVATE KEY"));
    }
}
