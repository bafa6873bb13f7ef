//! Trust anchors for CCA platform tokens: CPAKs keyed by implementation-id
//! and instance-id.
//!
//! File format (the ccatoken `ta*.json` format, which we adopt): a JSON array
//! of `{"implementation-id": hex, "instance-id": hex, "pkey": JWK}`. We add
//! an optional `"simulated": true` that marks the sim backend's platform
//! key. A PEM SubjectPublicKeyInfo file is also accepted: a bare key that
//! matches any platform.

use std::sync::atomic::{AtomicU64, Ordering};

use super::crypto::{PreparedKey, PublicKey};

/// Errors reading a trust-anchor store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("trust anchors are not JSON or PEM: {0}")]
    Format(String),
    #[error("trust anchor {index}: {reason}")]
    Entry { index: usize, reason: String },
}

/// One trust anchor.
#[derive(Clone, Debug)]
pub struct TrustAnchor {
    /// `None` matches any implementation-id.
    pub implementation_id: Option<Vec<u8>>,
    /// `None` matches any instance-id.
    pub instance_id: Option<Vec<u8>>,
    /// The CPAK; an unusable key (e.g. point not on the curve) is kept so
    /// that verification reports a crypto failure for that platform.
    pub key: Result<PublicKey, String>,
    /// Marks the software RMM of the sim backend.
    pub simulated: bool,
}

impl TrustAnchor {
    /// Short description for check output.
    pub fn label(&self) -> String {
        let id = |o: &Option<Vec<u8>>| o.as_ref().map(hex::encode).unwrap_or_else(|| "*".into());
        format!(
            "CPAK for implementation-id {} instance-id {}{}",
            id(&self.implementation_id),
            id(&self.instance_id),
            if self.simulated { " (simulated)" } else { "" }
        )
    }

    /// JSON entry in the store format.
    pub fn to_json(&self) -> Result<serde_json::Value, String> {
        let key = self.key.as_ref().map_err(|e| e.clone())?;
        let mut v = serde_json::json!({ "pkey": super::crypto::public_jwk(key) });
        if let Some(i) = &self.implementation_id {
            v["implementation-id"] = hex::encode(i).into();
        }
        if let Some(i) = &self.instance_id {
            v["instance-id"] = hex::encode(i).into();
        }
        if self.simulated {
            v["simulated"] = true.into();
        }
        Ok(v)
    }
}

/// A set of trust anchors, parsed once and reused. Each usable key is also
/// kept parsed for verification ([`PreparedKey`]), and the store carries a
/// generation number, fresh on every change, that caches of verified
/// platform tokens are keyed by.
#[derive(Clone, Debug, Default)]
pub struct TrustAnchorStore {
    anchors: Vec<TrustAnchor>,
    prepared: Vec<Result<PreparedKey, String>>,
    generation: u64,
}

fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn prepare(ta: &TrustAnchor) -> Result<PreparedKey, String> {
    match &ta.key {
        Ok(k) => k.prepare(),
        Err(e) => Err(e.clone()),
    }
}

impl TrustAnchorStore {
    pub fn new(anchors: Vec<TrustAnchor>) -> Self {
        let prepared = anchors.iter().map(prepare).collect();
        Self {
            anchors,
            prepared,
            generation: next_generation(),
        }
    }

    pub fn anchors(&self) -> &[TrustAnchor] {
        &self.anchors
    }

    pub fn push(&mut self, ta: TrustAnchor) {
        self.prepared.push(prepare(&ta));
        self.anchors.push(ta);
        self.generation = next_generation();
    }

    /// Merge another store into this one.
    pub fn extend(&mut self, other: TrustAnchorStore) {
        self.anchors.extend(other.anchors);
        self.prepared.extend(other.prepared);
        self.generation = next_generation();
    }

    /// Identifies this store's contents: two stores with the same
    /// generation hold the same anchors (clones share it; any change makes
    /// a new one).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Parse a store from file contents (JSON array or PEM).
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let t = text.trim_start();
        if t.starts_with("-----BEGIN") {
            let key = PublicKey::from_pem(t).map_err(StoreError::Format)?;
            return Ok(Self::new(vec![TrustAnchor {
                implementation_id: None,
                instance_id: None,
                key: Ok(key),
                simulated: false,
            }]));
        }
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|e| StoreError::Format(e.to_string()))?;
        let list = match v {
            serde_json::Value::Array(a) => a,
            // a bare JWK
            serde_json::Value::Object(ref o) if o.contains_key("kty") => {
                return Ok(Self::new(vec![TrustAnchor {
                    implementation_id: None,
                    instance_id: None,
                    key: PublicKey::from_jwk(&v),
                    simulated: false,
                }]))
            }
            _ => {
                return Err(StoreError::Format(
                    "expected a JSON array of trust anchors".into(),
                ))
            }
        };
        let mut anchors = Vec::new();
        for (index, e) in list.iter().enumerate() {
            let err = |reason: String| StoreError::Entry { index, reason };
            let obj = e
                .as_object()
                .ok_or_else(|| err("expected an object".into()))?;
            for k in obj.keys() {
                if !["implementation-id", "instance-id", "pkey", "simulated"].contains(&k.as_str())
                {
                    return Err(err(format!("unknown field {k:?}")));
                }
            }
            let hexfield = |k: &str, len: usize| -> Result<Option<Vec<u8>>, StoreError> {
                match obj.get(k) {
                    None => Ok(None),
                    Some(v) => {
                        let s = v
                            .as_str()
                            .ok_or_else(|| err(format!("{k} must be a hex string")))?;
                        let b = hex::decode(s).map_err(|e| err(format!("{k}: {e}")))?;
                        if b.len() != len {
                            return Err(err(format!(
                                "{k}: expected {len} bytes, found {}",
                                b.len()
                            )));
                        }
                        Ok(Some(b))
                    }
                }
            };
            let pkey = obj.get("pkey").ok_or_else(|| err("missing pkey".into()))?;
            let key = match pkey {
                serde_json::Value::String(pem) => PublicKey::from_pem(pem),
                j => PublicKey::from_jwk(j),
            };
            anchors.push(TrustAnchor {
                implementation_id: hexfield("implementation-id", 32)?,
                instance_id: hexfield("instance-id", 33)?,
                key,
                simulated: obj
                    .get("simulated")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            });
        }
        Ok(Self::new(anchors))
    }

    /// Serialise in the store format.
    pub fn to_json(&self) -> Result<serde_json::Value, String> {
        Ok(serde_json::Value::Array(
            self.anchors
                .iter()
                .map(|a| a.to_json())
                .collect::<Result<Vec<_>, _>>()?,
        ))
    }

    /// The most specific anchor for a platform: exact ids first, then
    /// wildcards.
    pub fn lookup(&self, implementation_id: &[u8], instance_id: &[u8]) -> Option<&TrustAnchor> {
        self.lookup_index(implementation_id, instance_id)
            .map(|i| &self.anchors[i])
    }

    /// [`lookup`](Self::lookup), with the anchor's key parsed for
    /// verification (or why it is unusable).
    pub fn lookup_prepared(
        &self,
        implementation_id: &[u8],
        instance_id: &[u8],
    ) -> Option<(&TrustAnchor, Result<&PreparedKey, &str>)> {
        let i = self.lookup_index(implementation_id, instance_id)?;
        let key = match self.prepared.get(i) {
            Some(Ok(k)) => Ok(k),
            Some(Err(e)) => Err(e.as_str()),
            None => Err("trust anchor key not prepared"),
        };
        Some((&self.anchors[i], key))
    }

    fn lookup_index(&self, implementation_id: &[u8], instance_id: &[u8]) -> Option<usize> {
        let matches = |o: &Option<Vec<u8>>, v: &[u8]| o.as_ref().is_none_or(|x| x == v);
        let mut best: Option<(usize, usize)> = None;
        for (i, a) in self.anchors.iter().enumerate() {
            if matches(&a.implementation_id, implementation_id)
                && matches(&a.instance_id, instance_id)
            {
                let score =
                    a.implementation_id.is_some() as usize + a.instance_id.is_some() as usize;
                if best.is_none_or(|(_, s)| score > s) {
                    best = Some((i, score));
                }
            }
        }
        best.map(|(i, _)| i)
    }
}
