//! CCA platform and realm claim sets: decoding from CBOR (with strict
//! checks: unknown keys, missing mandatory claims, sizes), encoding back to
//! CBOR (used by the builder), and the JSON form used by ccatoken/Veraison
//! (`cca-platform-*` / `cca-realm-*` keys, standard base64 bytes).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ciborium::value::{Integer, Value};
use serde_json::{json, Map, Value as Json};

use super::ClaimError;

/// Claim keys (RMM spec A.7, draft-ffm-rats-cca-token).
pub mod key {
    pub const PROFILE: i64 = 265;
    pub const CHALLENGE: i64 = 10;
    pub const INSTANCE_ID: i64 = 256;
    pub const PLAT_LIFECYCLE: i64 = 2395;
    pub const PLAT_IMPLEMENTATION_ID: i64 = 2396;
    pub const PLAT_SW_COMPONENTS: i64 = 2399;
    pub const PLAT_VERIFICATION_SERVICE: i64 = 2400;
    pub const PLAT_CONFIG: i64 = 2401;
    pub const PLAT_HASH_ALGO_ID: i64 = 2402;
    pub const REALM_PERSONALIZATION_VALUE: i64 = 44235;
    pub const REALM_HASH_ALGO_ID: i64 = 44236;
    pub const REALM_PUB_KEY: i64 = 44237;
    pub const REALM_RIM: i64 = 44238;
    pub const REALM_REM: i64 = 44239;
    pub const REALM_PUB_KEY_HASH_ALGO_ID: i64 = 44240;
    pub const REALM_MEC_POLICY: i64 = 44243;
    pub const SW_TYPE: i64 = 1;
    pub const SW_MEASUREMENT: i64 = 2;
    pub const SW_VERSION: i64 = 4;
    pub const SW_SIGNER_ID: i64 = 5;
    pub const SW_HASH_ALG: i64 = 6;
}

/// Platform token profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlatformProfile {
    /// `http://arm.com/CCA-SSD/1.0.0` (RMM 1.0 era).
    Legacy,
    /// `tag:arm.com,2023:cca_platform#1.0.0` (draft-ffm-rats-cca-token).
    V1,
}

impl PlatformProfile {
    pub const LEGACY_URI: &'static str = "http://arm.com/CCA-SSD/1.0.0";
    pub const V1_URI: &'static str = "tag:arm.com,2023:cca_platform#1.0.0";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Legacy => Self::LEGACY_URI,
            Self::V1 => Self::V1_URI,
        }
    }

    fn parse(s: &str) -> Result<Self, ClaimError> {
        match s {
            Self::LEGACY_URI => Ok(Self::Legacy),
            Self::V1_URI => Ok(Self::V1),
            other => Err(ClaimError::Invalid {
                claim: "platform profile",
                reason: format!(
                    "expected {} or {}, found {other:?}",
                    Self::V1_URI,
                    Self::LEGACY_URI
                ),
            }),
        }
    }
}

/// Realm token profile; `None` in [`RealmClaims::profile`] is the legacy
/// form without a profile claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RealmProfile {
    /// `tag:arm.com,2023:realm#1.0.0`
    V1,
    /// `tag:arm.com,2024:realm#2.0.0` (adds realm instance-id, MEC policy int)
    V2,
}

impl RealmProfile {
    pub const V1_URI: &'static str = "tag:arm.com,2023:realm#1.0.0";
    pub const V2_URI: &'static str = "tag:arm.com,2024:realm#2.0.0";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => Self::V1_URI,
            Self::V2 => Self::V2_URI,
        }
    }

    fn parse(s: &str) -> Result<Self, ClaimError> {
        match s {
            Self::V1_URI => Ok(Self::V1),
            Self::V2_URI => Ok(Self::V2),
            other => Err(ClaimError::Invalid {
                claim: "realm profile",
                reason: format!(
                    "expected {} or {}, found {other:?}",
                    Self::V1_URI,
                    Self::V2_URI
                ),
            }),
        }
    }
}

/// Hash algorithm named by an IANA Named Information string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashAlg {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha-256",
            Self::Sha384 => "sha-384",
            Self::Sha512 => "sha-512",
        }
    }

    pub fn parse(claim: &'static str, s: &str) -> Result<Self, ClaimError> {
        match s {
            "sha-256" => Ok(Self::Sha256),
            "sha-384" => Ok(Self::Sha384),
            "sha-512" => Ok(Self::Sha512),
            other => Err(ClaimError::Invalid {
                claim,
                reason: format!("expected sha-256, sha-384 or sha-512, found {other:?}"),
            }),
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// One platform software component (claim 2399 entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwComponent {
    pub component_type: Option<String>,
    pub measurement: Vec<u8>,
    pub version: Option<String>,
    pub signer_id: Vec<u8>,
    pub hash_alg: Option<String>,
}

/// MEC policy claim (44243): a text in the 1.0.0-profile era, an int in 2.0.0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MecPolicy {
    Text(String),
    Int(i64),
}

/// Decoded and validated platform claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformClaims {
    pub profile: PlatformProfile,
    /// 32, 48 or 64 bytes; must equal hash(RAK) for the binding.
    pub challenge: Vec<u8>,
    /// 32 bytes.
    pub implementation_id: Vec<u8>,
    /// 33 bytes, first byte 0x01 (UEID type RAND).
    pub instance_id: Vec<u8>,
    pub config: Vec<u8>,
    pub lifecycle: u16,
    pub sw_components: Vec<SwComponent>,
    pub verification_service: Option<String>,
    pub hash_algo_id: String,
}

/// Decoded and validated realm claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealmClaims {
    /// `None`: legacy token without a profile claim.
    pub profile: Option<RealmProfile>,
    /// 64 bytes.
    pub challenge: [u8; 64],
    /// 64 bytes (Realm Personalization Value).
    pub personalization_value: [u8; 64],
    pub hash_algo_id: HashAlg,
    /// The RAK bytes exactly as encoded in claim 44237 (97-byte SEC1 point
    /// or CBOR COSE_Key); the binding hashes these bytes.
    pub rak: Vec<u8>,
    pub rak_hash_algo_id: HashAlg,
    /// Realm Initial Measurement (32, 48 or 64 bytes).
    pub rim: Vec<u8>,
    /// Realm Extensible Measurements 0..3.
    pub rems: [Vec<u8>; 4],
    /// Realm instance-id (claim 256, profile 2.0.0).
    pub instance_id: Option<Vec<u8>>,
    pub mec_policy: Option<MecPolicy>,
}

// ---------------------------------------------------------------- decoding

fn int_key(k: &Value) -> Result<i64, ClaimError> {
    match k {
        Value::Integer(i) => {
            i64::try_from(*i).map_err(|_| ClaimError::UnknownKey(format!("{:?}", i128::from(*i))))
        }
        Value::Text(t) => Err(ClaimError::UnknownKey(format!("{t:?}"))),
        other => Err(ClaimError::UnknownKey(format!("{other:?}"))),
    }
}

fn as_map<'a>(what: &'static str, v: &'a Value) -> Result<&'a Vec<(Value, Value)>, ClaimError> {
    v.as_map().ok_or(ClaimError::Invalid {
        claim: what,
        reason: "expected a CBOR map".into(),
    })
}

fn bytes(claim: &'static str, v: &Value) -> Result<Vec<u8>, ClaimError> {
    match v {
        Value::Bytes(b) => Ok(b.clone()),
        _ => Err(ClaimError::Invalid {
            claim,
            reason: format!("expected a byte string, found {}", kind(v)),
        }),
    }
}

fn text(claim: &'static str, v: &Value) -> Result<String, ClaimError> {
    match v {
        Value::Text(t) => Ok(t.clone()),
        _ => Err(ClaimError::Invalid {
            claim,
            reason: format!("expected a text string, found {}", kind(v)),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "a text string",
        Value::Bool(_) => "a bool",
        Value::Null => "null",
        Value::Tag(_, _) => "a tagged value",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unknown CBOR item",
    }
}

fn size(claim: &'static str, b: &[u8], allowed: &[usize]) -> Result<(), ClaimError> {
    if allowed.contains(&b.len()) {
        Ok(())
    } else {
        Err(ClaimError::Size {
            claim,
            expected: allowed
                .iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(" or "),
            found: b.len(),
        })
    }
}

fn mandatory<T>(claim: &'static str, v: Option<T>) -> Result<T, ClaimError> {
    v.ok_or(ClaimError::Missing(claim))
}

fn set_once<T>(claim: &'static str, slot: &mut Option<T>, v: T) -> Result<(), ClaimError> {
    if slot.is_some() {
        return Err(ClaimError::Invalid {
            claim,
            reason: "claim appears twice".into(),
        });
    }
    *slot = Some(v);
    Ok(())
}

/// Valid PSA/CCA lifecycle: major state 0x0..0x6 with any minor byte.
pub fn lifecycle_valid(v: u16) -> bool {
    (v >> 8) <= 0x60 && (v >> 8) & 0x0f == 0 && (v >> 12) <= 6
}

impl PlatformClaims {
    /// Decode the CBOR claims map (the COSE payload).
    pub fn from_cbor(payload: &[u8]) -> Result<Self, ClaimError> {
        let v: Value = super::cbor_decode(payload)?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Self, ClaimError> {
        let map = as_map("platform claims", v)?;
        let mut profile = None;
        let mut challenge = None;
        let mut impl_id = None;
        let mut inst_id = None;
        let mut config = None;
        let mut lifecycle = None;
        let mut sw = None;
        let mut vsi = None;
        let mut hash = None;
        for (k, v) in map {
            match int_key(k)? {
                key::PROFILE => set_once(
                    "platform profile",
                    &mut profile,
                    text("platform profile", v)?,
                )?,
                key::CHALLENGE => set_once(
                    "platform challenge",
                    &mut challenge,
                    bytes("platform challenge", v)?,
                )?,
                key::PLAT_IMPLEMENTATION_ID => set_once(
                    "platform implementation-id",
                    &mut impl_id,
                    bytes("platform implementation-id", v)?,
                )?,
                key::INSTANCE_ID => set_once(
                    "platform instance-id",
                    &mut inst_id,
                    bytes("platform instance-id", v)?,
                )?,
                key::PLAT_CONFIG => {
                    set_once("platform config", &mut config, bytes("platform config", v)?)?
                }
                key::PLAT_LIFECYCLE => {
                    let i = match v {
                        Value::Integer(i) => u16::try_from(*i).ok(),
                        _ => None,
                    };
                    let i = i.ok_or_else(|| ClaimError::Invalid {
                        claim: "platform lifecycle",
                        reason: format!("expected an unsigned 16-bit integer, found {}", kind(v)),
                    })?;
                    set_once("platform lifecycle", &mut lifecycle, i)?
                }
                key::PLAT_SW_COMPONENTS => {
                    let arr = v.as_array().ok_or(ClaimError::Invalid {
                        claim: "platform sw-components",
                        reason: format!("expected an array, found {}", kind(v)),
                    })?;
                    let comps = arr
                        .iter()
                        .map(SwComponent::from_value)
                        .collect::<Result<Vec<_>, _>>()?;
                    set_once("platform sw-components", &mut sw, comps)?
                }
                key::PLAT_VERIFICATION_SERVICE => set_once(
                    "platform verification-service",
                    &mut vsi,
                    text("platform verification-service", v)?,
                )?,
                key::PLAT_HASH_ALGO_ID => set_once(
                    "platform hash-algo-id",
                    &mut hash,
                    text("platform hash-algo-id", v)?,
                )?,
                other => {
                    return Err(ClaimError::UnknownKey(format!(
                        "{other} in platform claims"
                    )))
                }
            }
        }
        let c = PlatformClaims {
            profile: PlatformProfile::parse(&mandatory("platform profile", profile)?)?,
            challenge: mandatory("platform challenge", challenge)?,
            implementation_id: mandatory("platform implementation-id", impl_id)?,
            instance_id: mandatory("platform instance-id", inst_id)?,
            config: mandatory("platform config", config)?,
            lifecycle: mandatory("platform lifecycle", lifecycle)?,
            sw_components: mandatory("platform sw-components", sw)?,
            verification_service: vsi,
            hash_algo_id: mandatory("platform hash-algo-id", hash)?,
        };
        c.validate()?;
        Ok(c)
    }

    /// Check sizes and value ranges (shared by CBOR and JSON decoding and
    /// by the builder).
    pub fn validate(&self) -> Result<(), ClaimError> {
        size("platform challenge", &self.challenge, &[32, 48, 64])?;
        size("platform implementation-id", &self.implementation_id, &[32])?;
        size("platform instance-id", &self.instance_id, &[33])?;
        if self.instance_id[0] != 0x01 {
            return Err(ClaimError::Invalid {
                claim: "platform instance-id",
                reason: format!(
                    "expected first byte 0x01 (UEID RAND), found {:#04x}",
                    self.instance_id[0]
                ),
            });
        }
        if !lifecycle_valid(self.lifecycle) {
            return Err(ClaimError::Invalid {
                claim: "platform lifecycle",
                reason: format!(
                    "expected a PSA lifecycle state 0x0000..0x60ff, found {:#06x}",
                    self.lifecycle
                ),
            });
        }
        if self.sw_components.is_empty() {
            return Err(ClaimError::Invalid {
                claim: "platform sw-components",
                reason: "expected at least one component, found none".into(),
            });
        }
        for c in &self.sw_components {
            size(
                "platform sw-component measurement-value",
                &c.measurement,
                &[32, 48, 64],
            )?;
            size(
                "platform sw-component signer-id",
                &c.signer_id,
                &[32, 48, 64],
            )?;
        }
        if let Some(v) = &self.verification_service {
            if v.is_empty() {
                return Err(ClaimError::Invalid {
                    claim: "platform verification-service",
                    reason: "expected a non-empty URI, found an empty string".into(),
                });
            }
        }
        HashAlg::parse("platform hash-algo-id", &self.hash_algo_id)?;
        Ok(())
    }

    pub fn to_value(&self) -> Value {
        let mut m: Vec<(Value, Value)> = vec![
            (ik(key::PROFILE), Value::Text(self.profile.as_str().into())),
            (ik(key::CHALLENGE), Value::Bytes(self.challenge.clone())),
            (
                ik(key::PLAT_IMPLEMENTATION_ID),
                Value::Bytes(self.implementation_id.clone()),
            ),
            (ik(key::INSTANCE_ID), Value::Bytes(self.instance_id.clone())),
            (ik(key::PLAT_CONFIG), Value::Bytes(self.config.clone())),
            (
                ik(key::PLAT_LIFECYCLE),
                Value::Integer(Integer::from(self.lifecycle)),
            ),
            (
                ik(key::PLAT_SW_COMPONENTS),
                Value::Array(
                    self.sw_components
                        .iter()
                        .map(SwComponent::to_value)
                        .collect(),
                ),
            ),
        ];
        if let Some(v) = &self.verification_service {
            m.push((ik(key::PLAT_VERIFICATION_SERVICE), Value::Text(v.clone())));
        }
        m.push((
            ik(key::PLAT_HASH_ALGO_ID),
            Value::Text(self.hash_algo_id.clone()),
        ));
        Value::Map(m)
    }

    /// JSON in the ccatoken/Veraison encoding.
    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        m.insert("cca-platform-profile".into(), json!(self.profile.as_str()));
        m.insert(
            "cca-platform-challenge".into(),
            json!(B64.encode(&self.challenge)),
        );
        m.insert(
            "cca-platform-implementation-id".into(),
            json!(B64.encode(&self.implementation_id)),
        );
        m.insert(
            "cca-platform-instance-id".into(),
            json!(B64.encode(&self.instance_id)),
        );
        m.insert(
            "cca-platform-config".into(),
            json!(B64.encode(&self.config)),
        );
        m.insert("cca-platform-lifecycle".into(), json!(self.lifecycle));
        m.insert(
            "cca-platform-sw-components".into(),
            Json::Array(
                self.sw_components
                    .iter()
                    .map(SwComponent::to_json)
                    .collect(),
            ),
        );
        if let Some(v) = &self.verification_service {
            m.insert("cca-platform-service-indicator".into(), json!(v));
        }
        m.insert("cca-platform-hash-algo-id".into(), json!(self.hash_algo_id));
        Json::Object(m)
    }

    /// Parse the ccatoken JSON encoding (strict: unknown keys rejected).
    pub fn from_json(j: &Json) -> Result<Self, ClaimError> {
        let m = j.as_object().ok_or(ClaimError::Invalid {
            claim: "platform claims",
            reason: "expected a JSON object".into(),
        })?;
        for k in m.keys() {
            if ![
                "cca-platform-profile",
                "cca-platform-challenge",
                "cca-platform-implementation-id",
                "cca-platform-instance-id",
                "cca-platform-config",
                "cca-platform-lifecycle",
                "cca-platform-sw-components",
                "cca-platform-service-indicator",
                "cca-platform-hash-algo-id",
            ]
            .contains(&k.as_str())
            {
                return Err(ClaimError::UnknownKey(format!("{k:?} in platform claims")));
            }
        }
        let sw = match m.get("cca-platform-sw-components") {
            None => return Err(ClaimError::Missing("platform sw-components")),
            Some(Json::Array(a)) => a
                .iter()
                .map(SwComponent::from_json)
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(ClaimError::Invalid {
                    claim: "platform sw-components",
                    reason: "expected an array".into(),
                })
            }
        };
        let lifecycle = match m.get("cca-platform-lifecycle") {
            None => return Err(ClaimError::Missing("platform lifecycle")),
            Some(v) => {
                v.as_u64()
                    .and_then(|v| u16::try_from(v).ok())
                    .ok_or(ClaimError::Invalid {
                        claim: "platform lifecycle",
                        reason: format!("expected an unsigned 16-bit integer, found {v}"),
                    })?
            }
        };
        let c = PlatformClaims {
            profile: PlatformProfile::parse(&jtext(
                m,
                "cca-platform-profile",
                "platform profile",
            )?)?,
            challenge: jbytes(m, "cca-platform-challenge", "platform challenge")?,
            implementation_id: jbytes(
                m,
                "cca-platform-implementation-id",
                "platform implementation-id",
            )?,
            instance_id: jbytes(m, "cca-platform-instance-id", "platform instance-id")?,
            config: jbytes(m, "cca-platform-config", "platform config")?,
            lifecycle,
            sw_components: sw,
            verification_service: match m.get("cca-platform-service-indicator") {
                None => None,
                Some(_) => Some(jtext(
                    m,
                    "cca-platform-service-indicator",
                    "platform verification-service",
                )?),
            },
            hash_algo_id: jtext(m, "cca-platform-hash-algo-id", "platform hash-algo-id")?,
        };
        c.validate()?;
        Ok(c)
    }
}

fn jtext(m: &Map<String, Json>, k: &str, claim: &'static str) -> Result<String, ClaimError> {
    match m.get(k) {
        None => Err(ClaimError::Missing(claim)),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(_) => Err(ClaimError::Invalid {
            claim,
            reason: "expected a string".into(),
        }),
    }
}

fn jbytes(m: &Map<String, Json>, k: &str, claim: &'static str) -> Result<Vec<u8>, ClaimError> {
    let s = jtext(m, k, claim)?;
    B64.decode(s.as_bytes()).map_err(|e| ClaimError::Invalid {
        claim,
        reason: format!("expected standard base64, {e}"),
    })
}

fn ik(k: i64) -> Value {
    Value::Integer(Integer::from(k))
}

impl SwComponent {
    fn from_value(v: &Value) -> Result<Self, ClaimError> {
        let map = as_map("platform sw-component", v)?;
        let (mut t, mut m, mut ver, mut s, mut h) = (None, None, None, None, None);
        for (k, v) in map {
            match int_key(k)? {
                key::SW_TYPE => {
                    set_once("sw-component type", &mut t, text("sw-component type", v)?)?
                }
                key::SW_MEASUREMENT => set_once(
                    "sw-component measurement-value",
                    &mut m,
                    bytes("sw-component measurement-value", v)?,
                )?,
                key::SW_VERSION => set_once(
                    "sw-component version",
                    &mut ver,
                    text("sw-component version", v)?,
                )?,
                key::SW_SIGNER_ID => set_once(
                    "sw-component signer-id",
                    &mut s,
                    bytes("sw-component signer-id", v)?,
                )?,
                key::SW_HASH_ALG => set_once(
                    "sw-component hash-alg",
                    &mut h,
                    text("sw-component hash-alg", v)?,
                )?,
                other => return Err(ClaimError::UnknownKey(format!("{other} in sw-component"))),
            }
        }
        Ok(SwComponent {
            component_type: t,
            measurement: mandatory("platform sw-component measurement-value", m)?,
            version: ver,
            signer_id: mandatory("platform sw-component signer-id", s)?,
            hash_alg: h,
        })
    }

    fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(t) = &self.component_type {
            m.push((ik(key::SW_TYPE), Value::Text(t.clone())));
        }
        m.push((
            ik(key::SW_MEASUREMENT),
            Value::Bytes(self.measurement.clone()),
        ));
        if let Some(v) = &self.version {
            m.push((ik(key::SW_VERSION), Value::Text(v.clone())));
        }
        m.push((ik(key::SW_SIGNER_ID), Value::Bytes(self.signer_id.clone())));
        if let Some(h) = &self.hash_alg {
            m.push((ik(key::SW_HASH_ALG), Value::Text(h.clone())));
        }
        Value::Map(m)
    }

    fn to_json(&self) -> Json {
        let mut m = Map::new();
        if let Some(t) = &self.component_type {
            m.insert("measurement-type".into(), json!(t));
        }
        m.insert(
            "measurement-value".into(),
            json!(B64.encode(&self.measurement)),
        );
        if let Some(v) = &self.version {
            m.insert("version".into(), json!(v));
        }
        m.insert("signer-id".into(), json!(B64.encode(&self.signer_id)));
        if let Some(h) = &self.hash_alg {
            m.insert("measurement-desc".into(), json!(h));
        }
        Json::Object(m)
    }

    fn from_json(j: &Json) -> Result<Self, ClaimError> {
        let m = j.as_object().ok_or(ClaimError::Invalid {
            claim: "platform sw-component",
            reason: "expected a JSON object".into(),
        })?;
        for k in m.keys() {
            if ![
                "measurement-type",
                "measurement-value",
                "version",
                "signer-id",
                "measurement-desc",
            ]
            .contains(&k.as_str())
            {
                return Err(ClaimError::UnknownKey(format!("{k:?} in sw-component")));
            }
        }
        let opt = |k: &str, claim: &'static str| -> Result<Option<String>, ClaimError> {
            match m.get(k) {
                None => Ok(None),
                Some(_) => jtext(m, k, claim).map(Some),
            }
        };
        Ok(SwComponent {
            component_type: opt("measurement-type", "sw-component type")?,
            measurement: jbytes(
                m,
                "measurement-value",
                "platform sw-component measurement-value",
            )?,
            version: opt("version", "sw-component version")?,
            signer_id: jbytes(m, "signer-id", "platform sw-component signer-id")?,
            hash_alg: opt("measurement-desc", "sw-component hash-alg")?,
        })
    }
}

impl RealmClaims {
    pub fn from_cbor(payload: &[u8]) -> Result<Self, ClaimError> {
        let v: Value = super::cbor_decode(payload)?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Self, ClaimError> {
        let map = as_map("realm claims", v)?;
        let mut profile = None;
        let mut challenge = None;
        let mut rpv = None;
        let mut hash = None;
        let mut rak = None;
        let mut rak_hash = None;
        let mut rim = None;
        let mut rems = None;
        let mut inst = None;
        let mut mec = None;
        for (k, v) in map {
            match int_key(k)? {
                key::PROFILE => set_once("realm profile", &mut profile, text("realm profile", v)?)?,
                key::CHALLENGE => set_once(
                    "realm challenge",
                    &mut challenge,
                    bytes("realm challenge", v)?,
                )?,
                key::REALM_PERSONALIZATION_VALUE => set_once(
                    "realm personalization-value",
                    &mut rpv,
                    bytes("realm personalization-value", v)?,
                )?,
                key::REALM_HASH_ALGO_ID => set_once(
                    "realm hash-algo-id",
                    &mut hash,
                    text("realm hash-algo-id", v)?,
                )?,
                key::REALM_PUB_KEY => {
                    set_once("realm public-key", &mut rak, bytes("realm public-key", v)?)?
                }
                key::REALM_PUB_KEY_HASH_ALGO_ID => set_once(
                    "realm public-key-hash-algo-id",
                    &mut rak_hash,
                    text("realm public-key-hash-algo-id", v)?,
                )?,
                key::REALM_RIM => set_once(
                    "realm initial-measurement",
                    &mut rim,
                    bytes("realm initial-measurement", v)?,
                )?,
                key::REALM_REM => {
                    let arr = v.as_array().ok_or(ClaimError::Invalid {
                        claim: "realm extensible-measurements",
                        reason: format!("expected an array, found {}", kind(v)),
                    })?;
                    let list = arr
                        .iter()
                        .map(|x| bytes("realm extensible-measurements", x))
                        .collect::<Result<Vec<_>, _>>()?;
                    set_once("realm extensible-measurements", &mut rems, list)?
                }
                key::INSTANCE_ID => set_once(
                    "realm instance-id",
                    &mut inst,
                    bytes("realm instance-id", v)?,
                )?,
                key::REALM_MEC_POLICY => {
                    let p = match v {
                        Value::Text(t) => MecPolicy::Text(t.clone()),
                        Value::Integer(i) => {
                            MecPolicy::Int(i64::try_from(*i).map_err(|_| ClaimError::Invalid {
                                claim: "realm mec-policy",
                                reason: "integer out of range".into(),
                            })?)
                        }
                        other => {
                            return Err(ClaimError::Invalid {
                                claim: "realm mec-policy",
                                reason: format!(
                                    "expected an integer or text, found {}",
                                    kind(other)
                                ),
                            })
                        }
                    };
                    set_once("realm mec-policy", &mut mec, p)?
                }
                other => return Err(ClaimError::UnknownKey(format!("{other} in realm claims"))),
            }
        }
        let rems = mandatory("realm extensible-measurements", rems)?;
        let c = RealmClaims {
            profile: profile.as_deref().map(RealmProfile::parse).transpose()?,
            challenge: fixed64("realm challenge", mandatory("realm challenge", challenge)?)?,
            personalization_value: fixed64(
                "realm personalization-value",
                mandatory("realm personalization-value", rpv)?,
            )?,
            hash_algo_id: HashAlg::parse(
                "realm hash-algo-id",
                &mandatory("realm hash-algo-id", hash)?,
            )?,
            rak: mandatory("realm public-key", rak)?,
            rak_hash_algo_id: HashAlg::parse(
                "realm public-key-hash-algo-id",
                &mandatory("realm public-key-hash-algo-id", rak_hash)?,
            )?,
            rim: mandatory("realm initial-measurement", rim)?,
            rems: four_rems(rems)?,
            instance_id: inst,
            mec_policy: mec,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ClaimError> {
        size("realm initial-measurement", &self.rim, &[32, 48, 64])?;
        for r in &self.rems {
            size("realm extensible-measurements", r, &[32, 48, 64])?;
        }
        // The RAK is a raw 97-byte point (its curve is checked when the
        // realm signature is verified) or a COSE_Key, parsed here.
        if self.rak.len() != 97 {
            super::crypto::PublicKey::from_rak(&self.rak)?;
        }
        if let Some(id) = &self.instance_id {
            size("realm instance-id", id, &[33])?;
            if id[0] != 0x01 {
                return Err(ClaimError::Invalid {
                    claim: "realm instance-id",
                    reason: format!("expected first byte 0x01 (UEID RAND), found {:#04x}", id[0]),
                });
            }
        }
        Ok(())
    }

    pub fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(p) = self.profile {
            m.push((ik(key::PROFILE), Value::Text(p.as_str().into())));
        }
        m.push((ik(key::CHALLENGE), Value::Bytes(self.challenge.to_vec())));
        if let Some(id) = &self.instance_id {
            m.push((ik(key::INSTANCE_ID), Value::Bytes(id.clone())));
        }
        m.push((
            ik(key::REALM_PERSONALIZATION_VALUE),
            Value::Bytes(self.personalization_value.to_vec()),
        ));
        m.push((ik(key::REALM_RIM), Value::Bytes(self.rim.clone())));
        m.push((
            ik(key::REALM_REM),
            Value::Array(self.rems.iter().map(|r| Value::Bytes(r.clone())).collect()),
        ));
        m.push((
            ik(key::REALM_HASH_ALGO_ID),
            Value::Text(self.hash_algo_id.as_str().into()),
        ));
        m.push((ik(key::REALM_PUB_KEY), Value::Bytes(self.rak.clone())));
        m.push((
            ik(key::REALM_PUB_KEY_HASH_ALGO_ID),
            Value::Text(self.rak_hash_algo_id.as_str().into()),
        ));
        if let Some(p) = &self.mec_policy {
            m.push((
                ik(key::REALM_MEC_POLICY),
                match p {
                    MecPolicy::Text(t) => Value::Text(t.clone()),
                    MecPolicy::Int(i) => Value::Integer(Integer::from(*i)),
                },
            ));
        }
        Value::Map(m)
    }

    pub fn to_json(&self) -> Json {
        let mut m = Map::new();
        if let Some(p) = self.profile {
            m.insert("cca-realm-profile".into(), json!(p.as_str()));
        }
        m.insert(
            "cca-realm-challenge".into(),
            json!(B64.encode(self.challenge)),
        );
        if let Some(id) = &self.instance_id {
            m.insert("cca-realm-instance-id".into(), json!(B64.encode(id)));
        }
        m.insert(
            "cca-realm-personalization-value".into(),
            json!(B64.encode(self.personalization_value)),
        );
        m.insert(
            "cca-realm-initial-measurement".into(),
            json!(B64.encode(&self.rim)),
        );
        m.insert(
            "cca-realm-extensible-measurements".into(),
            Json::Array(self.rems.iter().map(|r| json!(B64.encode(r))).collect()),
        );
        m.insert(
            "cca-realm-hash-algo-id".into(),
            json!(self.hash_algo_id.as_str()),
        );
        m.insert("cca-realm-public-key".into(), json!(B64.encode(&self.rak)));
        m.insert(
            "cca-realm-public-key-hash-algo-id".into(),
            json!(self.rak_hash_algo_id.as_str()),
        );
        if let Some(p) = &self.mec_policy {
            m.insert(
                "cca-realm-mec-policy".into(),
                match p {
                    MecPolicy::Text(t) => json!(t),
                    MecPolicy::Int(i) => json!(i),
                },
            );
        }
        Json::Object(m)
    }

    pub fn from_json(j: &Json) -> Result<Self, ClaimError> {
        let m = j.as_object().ok_or(ClaimError::Invalid {
            claim: "realm claims",
            reason: "expected a JSON object".into(),
        })?;
        for k in m.keys() {
            if ![
                "cca-realm-profile",
                "cca-realm-challenge",
                "cca-realm-instance-id",
                "cca-realm-personalization-value",
                "cca-realm-initial-measurement",
                "cca-realm-extensible-measurements",
                "cca-realm-hash-algo-id",
                "cca-realm-public-key",
                "cca-realm-public-key-hash-algo-id",
                "cca-realm-mec-policy",
            ]
            .contains(&k.as_str())
            {
                return Err(ClaimError::UnknownKey(format!("{k:?} in realm claims")));
            }
        }
        let rems = match m.get("cca-realm-extensible-measurements") {
            None => return Err(ClaimError::Missing("realm extensible-measurements")),
            Some(Json::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .and_then(|s| B64.decode(s).ok())
                        .ok_or(ClaimError::Invalid {
                            claim: "realm extensible-measurements",
                            reason: "expected standard base64 strings".into(),
                        })
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => {
                return Err(ClaimError::Invalid {
                    claim: "realm extensible-measurements",
                    reason: "expected an array".into(),
                })
            }
        };
        let c = RealmClaims {
            profile: match m.get("cca-realm-profile") {
                None => None,
                Some(_) => Some(RealmProfile::parse(&jtext(
                    m,
                    "cca-realm-profile",
                    "realm profile",
                )?)?),
            },
            challenge: fixed64(
                "realm challenge",
                jbytes(m, "cca-realm-challenge", "realm challenge")?,
            )?,
            personalization_value: fixed64(
                "realm personalization-value",
                jbytes(
                    m,
                    "cca-realm-personalization-value",
                    "realm personalization-value",
                )?,
            )?,
            hash_algo_id: HashAlg::parse(
                "realm hash-algo-id",
                &jtext(m, "cca-realm-hash-algo-id", "realm hash-algo-id")?,
            )?,
            rak: jbytes(m, "cca-realm-public-key", "realm public-key")?,
            rak_hash_algo_id: HashAlg::parse(
                "realm public-key-hash-algo-id",
                &jtext(
                    m,
                    "cca-realm-public-key-hash-algo-id",
                    "realm public-key-hash-algo-id",
                )?,
            )?,
            rim: jbytes(
                m,
                "cca-realm-initial-measurement",
                "realm initial-measurement",
            )?,
            rems: four_rems(rems)?,
            instance_id: match m.get("cca-realm-instance-id") {
                None => None,
                Some(_) => Some(jbytes(m, "cca-realm-instance-id", "realm instance-id")?),
            },
            mec_policy: match m.get("cca-realm-mec-policy") {
                None => None,
                Some(Json::String(s)) => Some(MecPolicy::Text(s.clone())),
                Some(v) => Some(MecPolicy::Int(v.as_i64().ok_or(ClaimError::Invalid {
                    claim: "realm mec-policy",
                    reason: "expected an integer or a string".into(),
                })?)),
            },
        };
        c.validate()?;
        Ok(c)
    }
}

fn fixed64(claim: &'static str, b: Vec<u8>) -> Result<[u8; 64], ClaimError> {
    size(claim, &b, &[64])?;
    let mut out = [0u8; 64];
    out.copy_from_slice(&b);
    Ok(out)
}

fn four_rems(list: Vec<Vec<u8>>) -> Result<[Vec<u8>; 4], ClaimError> {
    let n = list.len();
    <[Vec<u8>; 4]>::try_from(list).map_err(|_| ClaimError::Invalid {
        claim: "realm extensible-measurements",
        reason: format!("expected 4 entries, found {n}"),
    })
}
