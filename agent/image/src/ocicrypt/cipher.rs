//! The layer cipher `AES_256_CTR_HMAC_SHA256`: AES-256 in CTR mode with a
//! 16-byte initial counter block (`nonce`), and HMAC-SHA256 over the whole
//! ciphertext, both keyed with the one 32-byte layer key (ocicrypt's
//! `blockcipher` package). The option documents are JSON with Go `[]byte`
//! fields as standard base64.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek, SeekFrom, Write};

use aes::cipher::{KeyIvInit, StreamCipher};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::CryptError;

type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;
type HmacSha256 = Hmac<Sha256>;

/// The only cipher ocicrypt defines.
pub const AES_256_CTR_HMAC_SHA256: &str = "AES_256_CTR_HMAC_SHA256";

const CHUNK: usize = 256 * 1024;

fn new_ctr(key: &[u8; 32], nonce: &[u8; 16]) -> Aes256Ctr {
    // Both lengths are fixed by the array types.
    Aes256Ctr::new(&(*key).into(), &(*nonce).into())
}

/// Go `[]byte` in JSON: standard base64 with padding.
mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

mod b64map {
    use std::collections::BTreeMap;

    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        v: &BTreeMap<String, Vec<u8>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(v.len()))?;
        for (k, b) in v {
            m.serialize_entry(k, &base64::engine::general_purpose::STANDARD.encode(b))?;
        }
        m.end()
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let raw: Option<BTreeMap<String, String>> = Option::deserialize(d)?;
        raw.unwrap_or_default()
            .into_iter()
            .map(|(k, v)| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .map(|b| (k, b))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}

/// The public options (the `org.opencontainers.image.enc.pubopts`
/// annotation, base64 of this JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicOptions {
    /// Cipher name; only [`AES_256_CTR_HMAC_SHA256`] exists.
    pub cipher: String,
    /// HMAC-SHA256 of the whole ciphertext.
    #[serde(with = "b64")]
    pub hmac: Vec<u8>,
    /// Unused by this cipher.
    #[serde(default, with = "b64map")]
    pub cipheroptions: BTreeMap<String, Vec<u8>>,
}

/// The private options: what a key wrapper (JWE, key provider) wraps.
#[derive(Clone, Serialize, Deserialize)]
pub struct PrivateOptions {
    /// The 32-byte layer key.
    #[serde(with = "b64")]
    pub symkey: Vec<u8>,
    /// Digest of the plaintext layer (`sha256:…`), may be empty.
    #[serde(default)]
    pub digest: String,
    /// `nonce`: the 16-byte initial counter block.
    #[serde(default, with = "b64map")]
    pub cipheroptions: BTreeMap<String, Vec<u8>>,
}

impl Drop for PrivateOptions {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.symkey.zeroize();
    }
}

impl std::fmt::Debug for PrivateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateOptions")
            .field("symkey", &"<redacted>")
            .field("digest", &self.digest)
            .finish_non_exhaustive()
    }
}

impl PublicOptions {
    /// Parses the annotation value (base64 of the JSON).
    pub fn from_annotation(value: &str) -> Result<Self, CryptError> {
        let bad = |reason: String| CryptError::BadAnnotation {
            annotation: super::ANNOTATION_PUBOPTS,
            reason,
        };
        let json = base64::engine::general_purpose::STANDARD
            .decode(value.trim().as_bytes())
            .map_err(|e| bad(format!("not base64: {e}")))?;
        serde_json::from_slice(&json).map_err(|e| bad(format!("not the public options JSON: {e}")))
    }

    /// The annotation value.
    pub fn to_annotation(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }
}

/// Key material checked and ready: what [`super::LayerKey`] holds.
pub(super) struct Keys {
    pub key: Zeroizing<[u8; 32]>,
    pub nonce: [u8; 16],
    pub hmac: [u8; 32],
    pub digest: Option<String>,
}

impl Keys {
    pub fn new(public: &PublicOptions, private: &PrivateOptions) -> Result<Self, CryptError> {
        if public.cipher != AES_256_CTR_HMAC_SHA256 {
            return Err(CryptError::UnsupportedCipher(public.cipher.clone()));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        if private.symkey.len() != 32 {
            return Err(CryptError::BadOptions(format!(
                "layer key is {} bytes, expected 32",
                private.symkey.len()
            )));
        }
        key.copy_from_slice(&private.symkey);
        let nonce = private
            .cipheroptions
            .get("nonce")
            .ok_or_else(|| CryptError::BadOptions("no cipheroptions.nonce".into()))?;
        let nonce: [u8; 16] = nonce.as_slice().try_into().map_err(|_| {
            CryptError::BadOptions(format!("nonce is {} bytes, expected 16", nonce.len()))
        })?;
        let hmac: [u8; 32] =
            public
                .hmac
                .as_slice()
                .try_into()
                .map_err(|_| CryptError::BadAnnotation {
                    annotation: super::ANNOTATION_PUBOPTS,
                    reason: format!("hmac is {} bytes, expected 32", public.hmac.len()),
                })?;
        let digest = (!private.digest.is_empty()).then(|| private.digest.clone());
        if let Some(d) = &digest {
            if !d.starts_with("sha256:") {
                return Err(CryptError::BadOptions(format!(
                    "plaintext digest {d:?}: expected sha256:<hex>"
                )));
            }
        }
        Ok(Self {
            key,
            nonce,
            hmac,
            digest,
        })
    }

    fn mac(&self) -> Result<HmacSha256, CryptError> {
        <HmacSha256 as Mac>::new_from_slice(&self.key[..])
            .map_err(|_| CryptError::BadOptions("HMAC refused the layer key".into()))
    }
}

/// Reads `blob` to the end and checks its HMAC; on success, rewinds it.
pub(super) fn verify_hmac<R: Read + Seek>(blob: &mut R, keys: &Keys) -> Result<u64, CryptError> {
    let mut mac = keys.mac()?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = match blob.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CryptError::Io("reading the encrypted layer", e)),
        };
        mac.update(&buf[..n]);
        total += n as u64;
    }
    mac.verify_slice(&keys.hmac)
        .map_err(|_| CryptError::HmacMismatch { bytes: total })?;
    blob.seek(SeekFrom::Start(0))
        .map_err(|e| CryptError::Io("rewinding the encrypted layer", e))?;
    Ok(total)
}

/// Decrypts a stream whose HMAC was already verified; checks the plaintext
/// digest (if the private options carry one) at end of stream.
pub(super) struct Decryptor<R> {
    inner: R,
    ctr: Aes256Ctr,
    digest: Option<(String, Sha256)>,
    done: bool,
}

impl<R> std::fmt::Debug for Decryptor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decryptor").finish_non_exhaustive()
    }
}

impl<R: Read> Decryptor<R> {
    pub fn new(inner: R, keys: &Keys) -> Self {
        Self {
            inner,
            ctr: new_ctr(&keys.key, &keys.nonce),
            digest: keys.digest.clone().map(|d| (d, Sha256::new())),
            done: false,
        }
    }
}

impl<R: Read> Read for Decryptor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.done = true;
            if let Some((expected, h)) = self.digest.take() {
                let actual = format!("sha256:{}", hex::encode(h.finalize()));
                if actual != expected {
                    return Err(io::Error::other(CryptError::PlaintextDigest {
                        expected,
                        actual,
                    }));
                }
            }
            return Ok(0);
        }
        self.ctr.apply_keystream(&mut buf[..n]);
        if let Some((_, h)) = &mut self.digest {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// What [`encrypt`] produced.
#[derive(Debug)]
pub struct Encrypted {
    /// The public options (with the HMAC).
    pub public: PublicOptions,
    /// The private options (layer key, nonce, plaintext digest).
    pub private: PrivateOptions,
    /// `sha256:…` of the ciphertext (the new descriptor digest).
    pub digest: String,
    /// Ciphertext size in bytes.
    pub size: u64,
}

/// Encrypts `plain` into `out` with a fresh random layer key and nonce.
pub fn encrypt<R: Read, W: Write>(mut plain: R, mut out: W) -> io::Result<Encrypted> {
    use rand::RngCore;
    let mut key = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut key[..]);
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut ctr = new_ctr(&key, &nonce);
    let mut mac = <HmacSha256 as Mac>::new_from_slice(&key[..]).map_err(io::Error::other)?;
    let mut plain_digest = Sha256::new();
    let mut cipher_digest = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match plain.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        plain_digest.update(&buf[..n]);
        ctr.apply_keystream(&mut buf[..n]);
        mac.update(&buf[..n]);
        cipher_digest.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        size += n as u64;
    }
    out.flush()?;
    Ok(Encrypted {
        public: PublicOptions {
            cipher: AES_256_CTR_HMAC_SHA256.into(),
            hmac: mac.finalize().into_bytes().to_vec(),
            cipheroptions: BTreeMap::new(),
        },
        private: PrivateOptions {
            symkey: key.to_vec(),
            digest: format!("sha256:{}", hex::encode(plain_digest.finalize())),
            cipheroptions: BTreeMap::from([("nonce".to_string(), nonce.to_vec())]),
        },
        digest: format!("sha256:{}", hex::encode(cipher_digest.finalize())),
        size,
    })
}
