//! Arm CCA attestation tokens: decoder, verifier and builder.
//!
//! A CCA token is a CBOR-tagged collection of two COSE_Sign1 messages: the
//! platform token (signed by the CPAK, a key the platform vendor endorses)
//! and the realm token (signed by the Realm Attestation Key, RAK). The
//! platform challenge is the hash of the RAK as encoded in the realm token,
//! which binds the two. Both collection forms are accepted:
//! tag 399 `{44234: bstr, 44241: bstr}` and tag 907
//! `{44234: [263, bstr], 44241: [263, bstr]}`.
//!
//! Decoding is strict ([`decode`]): unknown claims, missing mandatory claims
//! and wrong sizes are errors that name the claim. Cryptographic checks
//! ([`Token::verify`]) do not fail fast: they return [`Check`]s so that an
//! appraisal can say *which* signature or binding failed.
//!
//! The builder ([`build`]) makes real tokens from claims and keys; the sim
//! backend and test attesters use it.

pub mod cache;
pub mod claims;
pub mod crypto;
pub mod store;

use ciborium::value::{Integer, Value};
use coset::{CborSerializable, CoseSign1, CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};

pub use cache::PlatformCache;
pub use claims::{
    HashAlg, MecPolicy, PlatformClaims, PlatformProfile, RealmClaims, RealmProfile, SwComponent,
};
pub use crypto::{PreparedKey, PublicKey, SigAlg, SigningKey};
pub use store::{TrustAnchor, TrustAnchorStore};

use crate::{Category, Check};

/// CBOR tag of the RMM 1.0 / draft-ffm-00 collection.
pub const TAG_399: u64 = 399;
/// CBOR tag of the CMW-style collection (tf-m-tools since 2025).
pub const TAG_907: u64 = 907;
/// CMW content-format of a COSE_Sign1 entry in a tag-907 collection.
pub const CONTENT_FORMAT_263: u64 = 263;
/// Collection key of the platform token.
pub const KEY_PLATFORM: i64 = 44234;
/// Collection key of the realm token.
pub const KEY_REALM: i64 = 44241;
/// Largest token accepted (real tokens are 1-3 KiB).
pub const MAX_TOKEN_SIZE: usize = 64 * 1024;

/// A claim-level decoding error. Each names the claim and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("malformed CBOR: {0}")]
    Cbor(String),
    #[error("unknown claim {0}")]
    UnknownKey(String),
    #[error("missing mandatory claim {0}")]
    Missing(&'static str),
    #[error("{claim}: {reason}")]
    Invalid { claim: &'static str, reason: String },
    #[error("{claim}: expected {expected} bytes, found {found}")]
    Size {
        claim: &'static str,
        expected: String,
        found: usize,
    },
}

/// A token-level decoding error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is empty")]
    Empty,
    #[error("token is {0} bytes, larger than the {MAX_TOKEN_SIZE}-byte limit")]
    TooLarge(usize),
    #[error("token is not a CCA collection: {0}")]
    Collection(String),
    #[error("{which} token is not a COSE_Sign1: {reason}")]
    Cose { which: &'static str, reason: String },
    #[error("{which} token: {source}")]
    Claims {
        which: &'static str,
        #[source]
        source: ClaimError,
    },
}

/// Collection form of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collection {
    Tag399,
    Tag907,
}

/// A decoded, not yet verified, CCA token.
#[derive(Clone, Debug)]
pub struct Token {
    pub collection: Collection,
    pub platform: CoseSign1,
    pub platform_alg: SigAlg,
    pub platform_claims: PlatformClaims,
    pub realm: CoseSign1,
    pub realm_alg: SigAlg,
    pub realm_claims: RealmClaims,
}

/// Decode a CBOR item with the size limit applied.
pub(crate) fn cbor_decode(b: &[u8]) -> Result<Value, ClaimError> {
    if b.len() > MAX_TOKEN_SIZE {
        return Err(ClaimError::Cbor(format!(
            "{} bytes exceed the limit",
            b.len()
        )));
    }
    let mut rd = b;
    let v: Value =
        ciborium::de::from_reader(&mut rd).map_err(|e| ClaimError::Cbor(e.to_string()))?;
    if !rd.is_empty() {
        return Err(ClaimError::Cbor(format!(
            "{} trailing bytes after the item",
            rd.len()
        )));
    }
    Ok(v)
}

fn parse_sign1(which: &'static str, b: &[u8]) -> Result<(CoseSign1, SigAlg), TokenError> {
    let cose = |reason: String| TokenError::Cose { which, reason };
    // Accept tagged (18) and untagged COSE_Sign1.
    let s = CoseSign1::from_tagged_slice(b)
        .or_else(|_| CoseSign1::from_slice(b))
        .map_err(|e| cose(e.to_string()))?;
    let alg = s
        .protected
        .header
        .alg
        .as_ref()
        .ok_or_else(|| cose("protected header lacks alg".into()))?;
    let alg = SigAlg::from_cose(alg).ok_or_else(|| {
        cose(format!(
            "unsupported alg {alg:?}, expected ES256, ES384 or ES512"
        ))
    })?;
    if s.payload.is_none() {
        return Err(cose("payload is detached".into()));
    }
    Ok((s, alg))
}

/// Decode a CCA token (tag 399 or 907). Rejects malformed structure and
/// claims; does not check signatures.
pub fn decode(bytes: &[u8]) -> Result<Token, TokenError> {
    if bytes.is_empty() {
        return Err(TokenError::Empty);
    }
    if bytes.len() > MAX_TOKEN_SIZE {
        return Err(TokenError::TooLarge(bytes.len()));
    }
    let coll = |s: String| TokenError::Collection(s);
    let v = cbor_decode(bytes).map_err(|e| coll(e.to_string()))?;
    let (tag, inner) = match v {
        Value::Tag(t, inner) => (t, *inner),
        _ => return Err(coll("expected CBOR tag 399 or 907 at the top".into())),
    };
    let collection = match tag {
        TAG_399 => Collection::Tag399,
        TAG_907 => Collection::Tag907,
        t => return Err(coll(format!("expected CBOR tag 399 or 907, found tag {t}"))),
    };
    let map = match inner {
        Value::Map(m) => m,
        _ => return Err(coll("expected a map inside the tag".into())),
    };
    let (mut plat, mut realm) = (None, None);
    for (k, v) in map {
        let k = match k {
            Value::Integer(i) => i64::try_from(i).ok(),
            _ => None,
        };
        let bytes = match (collection, v) {
            (Collection::Tag399, Value::Bytes(b)) => b,
            (Collection::Tag907, Value::Array(a)) => match a.as_slice() {
                [Value::Integer(cf), Value::Bytes(b)]
                    if i128::from(*cf) == i128::from(CONTENT_FORMAT_263) =>
                {
                    b.clone()
                }
                _ => {
                    return Err(coll(
                        "expected [263, bstr] entries in a tag-907 collection".into(),
                    ))
                }
            },
            (Collection::Tag399, _) => {
                return Err(coll("expected bstr entries in a tag-399 collection".into()))
            }
            (Collection::Tag907, _) => {
                return Err(coll(
                    "expected [263, bstr] entries in a tag-907 collection".into(),
                ))
            }
        };
        match k {
            Some(KEY_PLATFORM) if plat.is_none() => plat = Some(bytes),
            Some(KEY_REALM) if realm.is_none() => realm = Some(bytes),
            Some(KEY_PLATFORM) | Some(KEY_REALM) => {
                return Err(coll("duplicate collection entry".into()))
            }
            other => {
                return Err(coll(format!(
                    "unknown collection key {other:?}, expected 44234 and 44241"
                )))
            }
        }
    }
    let plat = plat.ok_or_else(|| coll("missing platform token (44234)".into()))?;
    let realm = realm.ok_or_else(|| coll("missing realm token (44241)".into()))?;
    let (platform, platform_alg) = parse_sign1("platform", &plat)?;
    let (realm, realm_alg) = parse_sign1("realm", &realm)?;
    let platform_claims = PlatformClaims::from_cbor(
        platform.payload.as_deref().unwrap_or_default(),
    )
    .map_err(|source| TokenError::Claims {
        which: "platform",
        source,
    })?;
    let realm_claims = RealmClaims::from_cbor(realm.payload.as_deref().unwrap_or_default())
        .map_err(|source| TokenError::Claims {
            which: "realm",
            source,
        })?;
    Ok(Token {
        collection,
        platform,
        platform_alg,
        platform_claims,
        realm,
        realm_alg,
        realm_claims,
    })
}

/// Result of the cryptographic checks on a token.
#[derive(Clone, Debug)]
pub struct Verified {
    pub checks: Vec<Check>,
    /// The trust anchor that matched, if any.
    pub trust_anchor: Option<TrustAnchor>,
}

impl Verified {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// True when the matching trust anchor is marked simulated.
    pub fn simulated(&self) -> bool {
        self.trust_anchor.as_ref().is_some_and(|t| t.simulated)
    }
}

fn verify_sign1(s: &CoseSign1, alg: SigAlg, key: &PublicKey) -> Result<(), String> {
    s.verify_signature(b"", |sig, tbs| key.verify(alg, tbs, sig))
}

impl Token {
    /// Check the realm signature (with the embedded RAK), the RAK binding
    /// (platform challenge = hash(RAK) under claim 44240) and the platform
    /// signature against `store` (CPAK by implementation-id and instance-id).
    pub fn verify(&self, store: &TrustAnchorStore) -> Verified {
        self.verify_inner(store, None)
    }

    /// [`verify`](Self::verify), skipping the platform signature
    /// verification when `cache` holds this exact platform token as
    /// verified under the same store generation (and remembering it when it
    /// verifies). Every other check runs as usual.
    pub fn verify_with_cache(&self, store: &TrustAnchorStore, cache: &PlatformCache) -> Verified {
        self.verify_inner(store, Some(cache))
    }

    fn verify_platform(
        &self,
        store: &TrustAnchorStore,
        key: &PreparedKey,
        cache: Option<&PlatformCache>,
    ) -> Result<(), String> {
        let tbs = self.platform.tbs_data(b"");
        let sig = &self.platform.signature;
        let Some(cache) = cache.filter(|c| c.capacity() > 0) else {
            return key.verify(self.platform_alg, &tbs, sig);
        };
        let k = PlatformCache::key(store.generation(), &tbs, sig);
        if cache.contains(&k) {
            return Ok(());
        }
        key.verify(self.platform_alg, &tbs, sig)?;
        cache.insert(k);
        Ok(())
    }

    fn verify_inner(&self, store: &TrustAnchorStore, cache: Option<&PlatformCache>) -> Verified {
        let mut checks = Vec::new();
        let rc = &self.realm_claims;
        let pc = &self.platform_claims;
        // Realm signature.
        match PublicKey::from_rak(&rc.rak) {
            Ok(rak) => {
                let r = verify_sign1(&self.realm, self.realm_alg, &rak);
                checks.push(Check::new(
                    "realm signature",
                    Category::Signature,
                    r.is_ok(),
                    format!("valid {} signature by the RAK", self.realm_alg.name()),
                    r.err().unwrap_or_else(|| "valid".into()),
                ));
            }
            Err(e) => checks.push(Check::new(
                "realm signature",
                Category::Signature,
                false,
                "a usable RAK",
                e.to_string(),
            )),
        }
        // Binding.
        let want = rc.rak_hash_algo_id.digest(&rc.rak);
        checks.push(Check::new(
            "platform challenge (RAK binding)",
            Category::Binding,
            want == pc.challenge,
            format!(
                "{}(RAK) = {}",
                rc.rak_hash_algo_id.as_str(),
                hex::encode(&want)
            ),
            hex::encode(&pc.challenge),
        ));
        // Platform signature against the trust anchors.
        let ta = store.lookup_prepared(&pc.implementation_id, &pc.instance_id);
        match ta {
            None => checks.push(Check::new(
                "platform trust anchor",
                Category::TrustAnchor,
                false,
                "a CPAK for this implementation-id and instance-id",
                format!(
                    "none for implementation-id {} instance-id {}",
                    hex::encode(&pc.implementation_id),
                    hex::encode(&pc.instance_id)
                ),
            )),
            Some((ta, key)) => {
                checks.push(Check::new(
                    "platform trust anchor",
                    Category::TrustAnchor,
                    true,
                    "a CPAK for this implementation-id and instance-id",
                    ta.label(),
                ));
                let r = match key {
                    Ok(k) => self.verify_platform(store, k, cache),
                    Err(e) => Err(format!("trust anchor key unusable: {e}")),
                };
                checks.push(Check::new(
                    "platform signature",
                    Category::Signature,
                    r.is_ok(),
                    format!("valid {} signature by the CPAK", self.platform_alg.name()),
                    r.err().unwrap_or_else(|| "valid".into()),
                ));
            }
        }
        Verified {
            checks,
            trust_anchor: ta.map(|(t, _)| t.clone()),
        }
    }
}

// ------------------------------------------------------------------ builder

/// What a token is built from. The builder overwrites the platform
/// challenge with the RAK hash and the realm RAK with `rak`'s public key,
/// so the result is always correctly bound.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    pub platform: PlatformClaims,
    pub realm: RealmClaims,
    /// Encode the RAK as a COSE_Key (profiles 1.0.0/2.0.0) or, when false, as
    /// a raw 97-byte point (legacy).
    pub rak_as_cose_key: bool,
    pub collection: Collection,
}

/// Builder errors.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the RAK must be a P-384 key, found {0}")]
    RakCurve(&'static str),
    #[error("claims are not valid: {0}")]
    Claims(#[from] ClaimError),
    #[error("encoding failed: {0}")]
    Encode(String),
}

fn sign1(claims: &Value, key: &SigningKey) -> Result<Vec<u8>, BuildError> {
    let mut payload = Vec::new();
    ciborium::ser::into_writer(claims, &mut payload)
        .map_err(|e| BuildError::Encode(e.to_string()))?;
    let protected = HeaderBuilder::new().algorithm(key.alg().cose()).build();
    let s = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(b"", |tbs| key.sign(tbs))
        .build();
    s.to_tagged_vec()
        .map_err(|e| BuildError::Encode(e.to_string()))
}

/// Build and sign a CCA token: the realm token is signed with `rak`
/// (P-384, ES384), the platform token with `cpak` (ES256/384/512 by curve);
/// the platform challenge is set to hash(RAK bytes as encoded).
pub fn build(spec: &TokenSpec, cpak: &SigningKey, rak: &SigningKey) -> Result<Vec<u8>, BuildError> {
    let rak_pub = rak.public();
    if !matches!(rak_pub, PublicKey::P384(_)) {
        return Err(BuildError::RakCurve(rak_pub.curve()));
    }
    let mut realm = spec.realm.clone();
    realm.rak = if spec.rak_as_cose_key {
        crypto::rak_cose_key(&rak_pub).map_err(BuildError::Encode)?
    } else {
        rak_pub.to_sec1()
    };
    realm.validate()?;
    let mut platform = spec.platform.clone();
    platform.challenge = realm.rak_hash_algo_id.digest(&realm.rak);
    platform.validate()?;
    let realm_tok = sign1(&realm.to_value(), rak)?;
    let plat_tok = sign1(&platform.to_value(), cpak)?;
    let entry = |b: Vec<u8>| match spec.collection {
        Collection::Tag399 => Value::Bytes(b),
        Collection::Tag907 => Value::Array(vec![
            Value::Integer(Integer::from(CONTENT_FORMAT_263)),
            Value::Bytes(b),
        ]),
    };
    let tag = match spec.collection {
        Collection::Tag399 => TAG_399,
        Collection::Tag907 => TAG_907,
    };
    let v = Value::Tag(
        tag,
        Box::new(Value::Map(vec![
            (Value::Integer(Integer::from(KEY_PLATFORM)), entry(plat_tok)),
            (Value::Integer(Integer::from(KEY_REALM)), entry(realm_tok)),
        ])),
    );
    let mut out = Vec::new();
    ciborium::ser::into_writer(&v, &mut out).map_err(|e| BuildError::Encode(e.to_string()))?;
    Ok(out)
}

impl TokenSpec {
    /// A plausible default spec (profiles `cca_platform#1.0.0` and
    /// `realm#1.0.0`, COSE_Key RAK, tag 907, sha-256 everywhere, one
    /// sw-component) with the given realm challenge, RPV and measurements.
    /// Callers adjust fields as needed.
    pub fn new(
        challenge: [u8; 64],
        personalization_value: [u8; 64],
        rim: Vec<u8>,
        rems: [Vec<u8>; 4],
    ) -> Self {
        let mut instance_id = vec![0x01];
        instance_id.extend_from_slice(&[0x5a; 32]);
        Self {
            platform: PlatformClaims {
                profile: PlatformProfile::V1,
                challenge: vec![0; 32],
                implementation_id: vec![0xc1; 32],
                instance_id,
                config: vec![0xcf; 4],
                lifecycle: 0x3000,
                sw_components: vec![SwComponent {
                    component_type: Some("RMM".into()),
                    measurement: vec![0x11; 32],
                    version: Some("1.0.0".into()),
                    signer_id: vec![0x22; 32],
                    hash_alg: Some("sha-256".into()),
                }],
                verification_service: None,
                hash_algo_id: "sha-256".into(),
            },
            realm: RealmClaims {
                profile: Some(RealmProfile::V1),
                challenge,
                personalization_value,
                hash_algo_id: HashAlg::Sha256,
                rak: Vec::new(),
                rak_hash_algo_id: HashAlg::Sha256,
                rim,
                rems,
                instance_id: None,
                mec_policy: None,
            },
            rak_as_cose_key: true,
            collection: Collection::Tag907,
        }
    }
}
