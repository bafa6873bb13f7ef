//! Reference values in the format `cloister verify` consumes (Cloister JSON,
//! see `cloister_attestation::refvals`): `{"cca": {"platform": [...],
//! "realm": [...]}, "named": {"<claim>": ["hex", ...]}}`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{json, Value as Json};

/// Why reference values could not be predicted.
#[derive(Debug, thiserror::Error)]
pub enum MeasureError {
    /// An input file could not be read.
    #[error("reading {what} {path}")]
    Read {
        /// Which input.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Initdata unusable.
    #[error(transparent)]
    Initdata(#[from] crate::initdata::InitdataError),
    /// The CCA calculator refused an input.
    #[error("CCA measurement")]
    Cca(#[from] cloister_measure::cca::CcaError),
    /// The realm layout could not be built.
    #[error("realm layout")]
    Layout(#[from] cloister_measure::cca::vmm::LayoutError),
    /// A required input is missing or wrong.
    #[error("{0}")]
    Input(String),
}

/// A CCA realm reference (ccatoken store `realm[]` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmRef {
    /// Realm Initial Measurement.
    pub rim: Vec<u8>,
    /// REMs, when they are predictable.
    pub rems: Option<[Vec<u8>; 4]>,
    /// Realm Personalization Value.
    pub rpv: Vec<u8>,
    /// RAK hash algorithm (`sha-256`, ...), when fixed.
    pub rak_hash_algorithm: Option<String>,
}

/// A CCA platform reference (ccatoken store `platform[]` entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformRef {
    /// Implementation id.
    pub implementation_id: Vec<u8>,
    /// Platform configuration.
    pub config: Option<Vec<u8>>,
    /// `(component type, measurement, signer id, version)`.
    pub sw_components: Vec<(String, Vec<u8>, Vec<u8>, String)>,
}

/// Predicted reference values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceValues {
    /// CCA platform references.
    pub cca_platform: Vec<PlatformRef>,
    /// CCA realm references.
    pub cca_realm: Vec<RealmRef>,
    /// Named claim values.
    pub named: BTreeMap<String, Vec<Vec<u8>>>,
    /// What was not predicted, or was predicted under an assumption, for
    /// the operator (not part of the JSON document the verifier reads).
    pub notes: Vec<String>,
}

impl ReferenceValues {
    /// The JSON document.
    pub fn to_json(&self) -> Json {
        let mut doc = serde_json::Map::new();
        if !self.cca_platform.is_empty() || !self.cca_realm.is_empty() {
            let platform: Vec<Json> = self
                .cca_platform
                .iter()
                .map(|p| {
                    let mut o = json!({
                        "implementation-id": hex::encode(&p.implementation_id),
                        "sw-components": p.sw_components.iter().map(|(t, m, s, v)| json!({
                            "component-type": t,
                            "measurement-value": hex::encode(m),
                            "signer-id": hex::encode(s),
                            "version": v,
                        })).collect::<Vec<_>>(),
                    });
                    if let Some(c) = &p.config {
                        o["platform-configuration"] = hex::encode(c).into();
                    }
                    o
                })
                .collect();
            let realm: Vec<Json> = self
                .cca_realm
                .iter()
                .map(|r| {
                    let mut o = json!({
                        "initial-measurement": hex::encode(&r.rim),
                        "personalization-value": hex::encode(&r.rpv),
                    });
                    if let Some(rems) = &r.rems {
                        o["extensible-measurements"] =
                            rems.iter().map(hex::encode).collect::<Vec<_>>().into();
                    }
                    if let Some(h) = &r.rak_hash_algorithm {
                        o["rak-hash-algorithm"] = h.clone().into();
                    }
                    o
                })
                .collect();
            let mut cca = serde_json::Map::new();
            if !platform.is_empty() {
                cca.insert("platform".into(), platform.into());
            }
            if !realm.is_empty() {
                cca.insert("realm".into(), realm.into());
            }
            doc.insert("cca".into(), cca.into());
        }
        if !self.named.is_empty() {
            let named: serde_json::Map<String, Json> = self
                .named
                .iter()
                .map(|(k, vs)| {
                    (
                        k.clone(),
                        vs.iter().map(hex::encode).collect::<Vec<_>>().into(),
                    )
                })
                .collect();
            doc.insert("named".into(), named.into());
        }
        doc.into()
    }

    /// Adds a named value.
    pub fn add_named(&mut self, name: &str, value: Vec<u8>) {
        self.named.entry(name.to_owned()).or_default().push(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_what_the_verifier_parses() {
        let mut rv = ReferenceValues::default();
        rv.cca_realm.push(RealmRef {
            rim: vec![1; 32],
            rems: None,
            rpv: vec![2; 64],
            rak_hash_algorithm: Some("sha-256".into()),
        });
        rv.cca_platform.push(PlatformRef {
            implementation_id: vec![3; 32],
            config: Some(vec![4; 4]),
            sw_components: vec![("RMM".into(), vec![5; 32], vec![6; 32], "1.0.0".into())],
        });
        rv.add_named("snp.host_data", vec![7; 32]);
        let text = rv.to_json().to_string();
        let parsed = cloister_attestation::refvals::ReferenceValues::parse(&text).unwrap();
        assert_eq!(parsed.cca_realm[0].rim, vec![1; 32]);
        assert_eq!(parsed.cca_realm[0].personalization_value, Some(vec![2; 64]));
        assert_eq!(
            parsed.cca_platform[0].sw_components[0].measurement,
            vec![5; 32]
        );
        assert_eq!(parsed.named["snp.host_data"], vec![vec![7; 32]]);
    }
}
