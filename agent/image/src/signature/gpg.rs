//! Simple signing (containers "atomic container signature"): an OpenPGP
//! signed message whose literal data is the payload JSON, verified with
//! rpgp against the keyring inline in the policy. Key validity is judged at
//! the signature's creation time (see the module docs of `signature`).

use pgp::composed::{Message, PublicOrSecret, SignedPublicKey};
use pgp::packet::Signature;
use pgp::types::{KeyDetails, VerifyingKey};

use super::SignatureError;

/// `critical.type` of a simple-signing payload.
pub const PAYLOAD_TYPE: &str = "atomic container signature";

/// The policy's OpenPGP public keys.
pub struct Keyring(Vec<SignedPublicKey>);

fn bad_key(e: impl std::fmt::Display) -> SignatureError {
    SignatureError::BadKey(format!(
        "signedBy keyData is not an OpenPGP public keyring: {e}"
    ))
}

/// Key lifetime (seconds after key creation) set by the newest of the
/// self-signatures `sigs`; `None`: does not expire.
fn expiration(sigs: &[Signature]) -> Option<u64> {
    sigs.iter()
        .filter_map(|s| Some((s.created()?.as_secs(), s)))
        .max_by_key(|(created, _)| *created)
        .and_then(|(_, s)| s.key_expiration_time())
        .map(|d| u64::from(d.as_secs()))
        .filter(|d| *d != 0)
}

/// When a key (component) was valid: `[created, created + lifetime)`.
struct Validity {
    created: u64,
    lifetime: Option<u64>,
}

impl Validity {
    /// Why a signature made at `at` falls outside, if it does.
    fn refuses(&self, at: u64) -> Option<String> {
        if at < self.created {
            return Some(format!("the key was created later, at {}", self.created));
        }
        let end = self.created + self.lifetime?;
        (at >= end).then(|| format!("the key expired at {end}"))
    }
}

impl Keyring {
    /// Parses binary or ASCII-armored keyrings (one or more keys each).
    pub fn parse(datas: &[Vec<u8>]) -> Result<Self, SignatureError> {
        let mut keys = Vec::new();
        for d in datas {
            let armored = d.windows(10).any(|w| w == b"-----BEGIN");
            let iter = if armored {
                PublicOrSecret::from_armor_many(std::io::Cursor::new(d.clone()))
                    .map(|(i, _)| i)
                    .map_err(bad_key)?
            } else {
                PublicOrSecret::from_bytes_many(std::io::Cursor::new(d.clone())).map_err(bad_key)?
            };
            for k in iter {
                match k.map_err(bad_key)? {
                    PublicOrSecret::Public(k) => {
                        k.verify_bindings().map_err(|e| {
                            SignatureError::BadKey(format!(
                                "key {:X}: self-signatures do not verify: {e}",
                                k.fingerprint()
                            ))
                        })?;
                        keys.push(k);
                    }
                    PublicOrSecret::Secret(_) => {
                        return Err(SignatureError::BadKey(
                            "signedBy keyData holds a secret key; put only the public key in the policy".into(),
                        ))
                    }
                }
            }
        }
        if keys.is_empty() {
            return Err(bad_key("no public keys"));
        }
        Ok(Self(keys))
    }

    /// Verifies the signed message; returns its literal data (the payload).
    pub fn verify(&self, bytes: &[u8]) -> Result<Vec<u8>, SignatureError> {
        let bad = |e: pgp::errors::Error| {
            SignatureError::BadSignature(format!("not an OpenPGP signed message: {e}"))
        };
        let msg = Message::from_bytes(bytes).map_err(bad)?;
        let mut msg = msg.decompress().map_err(bad)?;
        let data = msg.as_data_vec().map_err(|e| {
            SignatureError::BadSignature(format!("reading the signed message: {e}"))
        })?;
        let Message::Signed { reader, .. } = &msg else {
            return Err(SignatureError::BadSignature(
                "the message is not signed".into(),
            ));
        };
        let sig = reader
            .signature(0)
            .ok_or_else(|| SignatureError::BadSignature("no signature packet".into()))?
            .clone();
        let signed_at = sig.created().map(|t| u64::from(t.as_secs()));
        // Candidates: every primary key and subkey; a subkey is also bound
        // by its primary key's validity.
        for key in &self.0 {
            let primary = Validity {
                created: u64::from(key.created_at().as_secs()),
                lifetime: expiration(
                    &key.details
                        .users
                        .iter()
                        .flat_map(|u| u.signatures.iter().cloned())
                        .chain(key.details.direct_signatures.iter().cloned())
                        .collect::<Vec<_>>(),
                ),
            };
            let mut candidates: Vec<(&dyn VerifyingKey, String, Option<Validity>)> = vec![(
                key as &dyn VerifyingKey,
                format!("{:X}", key.fingerprint()),
                None,
            )];
            for sub in &key.public_subkeys {
                candidates.push((
                    sub as &dyn VerifyingKey,
                    format!("{:X}", sub.fingerprint()),
                    Some(Validity {
                        created: u64::from(sub.created_at().as_secs()),
                        lifetime: expiration(&sub.signatures),
                    }),
                ));
            }
            for (k, fp, own) in candidates {
                if msg.verify(k).is_err() {
                    continue;
                }
                let signed_at = signed_at.ok_or_else(|| {
                    SignatureError::BadSignature("signature has no creation time".into())
                })?;
                let refusal = own
                    .as_ref()
                    .and_then(|v| v.refuses(signed_at))
                    .or_else(|| primary.refuses(signed_at));
                if let Some(reason) = refusal {
                    return Err(SignatureError::KeyNotValid {
                        key: fp,
                        signed_at,
                        reason,
                    });
                }
                return Ok(data);
            }
        }
        let issuers: Vec<String> = sig
            .issuer_fingerprint()
            .iter()
            .map(|f| format!("{f:X}"))
            .chain(
                sig.issuer_key_id()
                    .iter()
                    .map(|k| hex::encode_upper::<&[u8]>(k.as_ref())),
            )
            .collect();
        let known = self.0.iter().any(|k| {
            std::iter::once(format!("{:X}", k.fingerprint()))
                .chain(
                    k.public_subkeys
                        .iter()
                        .map(|s| format!("{:X}", s.fingerprint())),
                )
                .any(|fp| issuers.iter().any(|i| fp.ends_with(i.as_str())))
        });
        if known {
            Err(SignatureError::BadSignature(
                "OpenPGP signature does not verify with the policy's key: the signed data was altered".into(),
            ))
        } else {
            Err(SignatureError::UnknownSigner {
                issuer: if issuers.is_empty() {
                    "(no issuer)".into()
                } else {
                    issuers.join("/")
                },
            })
        }
    }
}
