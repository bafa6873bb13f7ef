//! Reference values: what a verifier expects a guest to measure.
//!
//! Accepted inputs (see docs/attestation/reference-values.md):
//! - Cloister JSON: `{"cca": {"platform": [...], "realm": [...]},
//!   "named": {"<claim name>": ["hex", ...]}}`; the CCA entries use the
//!   ccatoken store format.
//! - the ccatoken store (`rv.json`): `{"platform": [...], "realm": [...]}`;
//! - Trustee RVPS "sample" provenance: `{"version": "0.1.0", "type":
//!   "sample", "payload": "<base64 of {name: [values]}>"}` or the bare
//!   `{name: [values]}` map; values are hex (or base64) strings.
//!
//! Named values (`named`) map a claim name such as
//! `cca-realm-initial-measurement`, `snp.measurement` or `tdx.mr_td` to the
//! set of accepted values.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::Value as Json;

/// A platform reference (ccatoken `platform[]` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformRef {
    pub implementation_id: Vec<u8>,
    pub config: Option<Vec<u8>>,
    pub sw_components: Vec<SwRef>,
}

/// A platform software component reference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwRef {
    pub component_type: Option<String>,
    pub measurement: Vec<u8>,
    pub signer_id: Option<Vec<u8>>,
    pub version: Option<String>,
}

/// A realm reference (ccatoken `realm[]` entry).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RealmRef {
    pub rim: Vec<u8>,
    pub rems: Option<[Vec<u8>; 4]>,
    pub personalization_value: Option<Vec<u8>>,
    pub rak_hash_algorithm: Option<String>,
}

/// All reference values known to a verifier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceValues {
    pub cca_platform: Vec<PlatformRef>,
    pub cca_realm: Vec<RealmRef>,
    /// Claim name → accepted values.
    pub named: BTreeMap<String, Vec<Vec<u8>>>,
}

fn err(s: impl Into<String>) -> crate::Error {
    crate::Error::ReferenceValues(s.into())
}

fn hexval(what: &str, v: &Json) -> Result<Vec<u8>, crate::Error> {
    let s = v
        .as_str()
        .ok_or_else(|| err(format!("{what}: expected a hex string")))?;
    hex::decode(s).map_err(|e| err(format!("{what}: {e}")))
}

/// hex, or failing that standard/url-safe base64.
fn loose_bytes(what: &str, s: &str) -> Result<Vec<u8>, crate::Error> {
    if let Ok(b) = hex::decode(s) {
        return Ok(b);
    }
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .map_err(|_| err(format!("{what}: {s:?} is neither hex nor base64")))
}

fn check_keys(
    what: &str,
    o: &serde_json::Map<String, Json>,
    allowed: &[&str],
) -> Result<(), crate::Error> {
    for k in o.keys() {
        if !allowed.contains(&k.as_str()) {
            return Err(err(format!("{what}: unknown field {k:?}")));
        }
    }
    Ok(())
}

impl ReferenceValues {
    /// Parse any accepted format (detected from its shape).
    pub fn parse(text: &str) -> Result<Self, crate::Error> {
        let v: Json = serde_json::from_str(text).map_err(|e| err(format!("not JSON: {e}")))?;
        let o = v.as_object().ok_or_else(|| err("expected a JSON object"))?;
        let mut rv = ReferenceValues::default();
        if o.contains_key("cca") || o.contains_key("named") {
            check_keys("reference values", o, &["cca", "named"])?;
            if let Some(c) = o.get("cca") {
                rv.parse_ccatoken(c)?;
            }
            if let Some(n) = o.get("named") {
                rv.parse_named(n)?;
            }
        } else if o.contains_key("platform") || o.contains_key("realm") {
            rv.parse_ccatoken(&v)?;
        } else if o.get("type").and_then(|t| t.as_str()).is_some() {
            let ty = o.get("type").and_then(|t| t.as_str()).unwrap_or_default();
            if ty != "sample" {
                return Err(err(format!(
                    "RVPS provenance type {ty:?} is not supported, expected \"sample\""
                )));
            }
            let payload = o
                .get("payload")
                .and_then(|p| p.as_str())
                .ok_or_else(|| err("RVPS sample provenance lacks a payload string"))?;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload))
                .map_err(|e| err(format!("RVPS payload is not base64: {e}")))?;
            let inner: Json = serde_json::from_slice(&raw)
                .map_err(|e| err(format!("RVPS payload is not JSON: {e}")))?;
            rv.parse_named(&inner)?;
        } else {
            rv.parse_named(&v)?;
        }
        Ok(rv)
    }

    fn parse_named(&mut self, v: &Json) -> Result<(), crate::Error> {
        let o = v
            .as_object()
            .ok_or_else(|| err("named reference values: expected an object"))?;
        for (name, vals) in o {
            let list = vals
                .as_array()
                .ok_or_else(|| err(format!("{name}: expected an array of values")))?;
            let mut out = Vec::new();
            for x in list {
                let s = x
                    .as_str()
                    .ok_or_else(|| err(format!("{name}: values must be strings")))?;
                out.push(loose_bytes(name, s)?);
            }
            self.named.entry(name.clone()).or_default().extend(out);
        }
        Ok(())
    }

    fn parse_ccatoken(&mut self, v: &Json) -> Result<(), crate::Error> {
        let o = v
            .as_object()
            .ok_or_else(|| err("CCA reference values: expected an object"))?;
        check_keys("CCA reference values", o, &["platform", "realm"])?;
        for (i, p) in o
            .get("platform")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let what = format!("platform[{i}]");
            let po = p
                .as_object()
                .ok_or_else(|| err(format!("{what}: expected an object")))?;
            check_keys(
                &what,
                po,
                &[
                    "implementation-id",
                    "platform-configuration",
                    "sw-components",
                ],
            )?;
            let mut r = PlatformRef {
                implementation_id: hexval(
                    &format!("{what}.implementation-id"),
                    po.get("implementation-id").unwrap_or(&Json::Null),
                )?,
                config: po
                    .get("platform-configuration")
                    .map(|c| hexval(&format!("{what}.platform-configuration"), c))
                    .transpose()?,
                sw_components: Vec::new(),
            };
            for (j, s) in po
                .get("sw-components")
                .and_then(|s| s.as_array())
                .into_iter()
                .flatten()
                .enumerate()
            {
                let w = format!("{what}.sw-components[{j}]");
                let so = s
                    .as_object()
                    .ok_or_else(|| err(format!("{w}: expected an object")))?;
                check_keys(
                    &w,
                    so,
                    &[
                        "component-type",
                        "measurement-value",
                        "signer-id",
                        "version",
                    ],
                )?;
                r.sw_components.push(SwRef {
                    component_type: so
                        .get("component-type")
                        .and_then(|x| x.as_str())
                        .map(String::from),
                    measurement: hexval(
                        &format!("{w}.measurement-value"),
                        so.get("measurement-value").unwrap_or(&Json::Null),
                    )?,
                    signer_id: so
                        .get("signer-id")
                        .map(|x| hexval(&format!("{w}.signer-id"), x))
                        .transpose()?,
                    version: so.get("version").and_then(|x| x.as_str()).map(String::from),
                });
            }
            self.cca_platform.push(r);
        }
        for (i, r) in o
            .get("realm")
            .and_then(|p| p.as_array())
            .into_iter()
            .flatten()
            .enumerate()
        {
            let what = format!("realm[{i}]");
            let ro = r
                .as_object()
                .ok_or_else(|| err(format!("{what}: expected an object")))?;
            check_keys(
                &what,
                ro,
                &[
                    "initial-measurement",
                    "extensible-measurements",
                    "personalization-value",
                    "rak-hash-algorithm",
                ],
            )?;
            let rems = match ro.get("extensible-measurements") {
                None => None,
                Some(Json::Array(a)) => {
                    let list = a
                        .iter()
                        .map(|x| hexval(&format!("{what}.extensible-measurements"), x))
                        .collect::<Result<Vec<_>, _>>()?;
                    let n = list.len();
                    Some(<[Vec<u8>; 4]>::try_from(list).map_err(|_| {
                        err(format!(
                            "{what}.extensible-measurements: expected 4 entries, found {n}"
                        ))
                    })?)
                }
                Some(_) => {
                    return Err(err(format!(
                        "{what}.extensible-measurements: expected an array"
                    )))
                }
            };
            self.cca_realm.push(RealmRef {
                rim: hexval(
                    &format!("{what}.initial-measurement"),
                    ro.get("initial-measurement").unwrap_or(&Json::Null),
                )?,
                rems,
                personalization_value: ro
                    .get("personalization-value")
                    .map(|x| hexval(&format!("{what}.personalization-value"), x))
                    .transpose()?,
                rak_hash_algorithm: ro
                    .get("rak-hash-algorithm")
                    .and_then(|x| x.as_str())
                    .map(String::from),
            });
        }
        Ok(())
    }

    /// Merge another set.
    pub fn extend(&mut self, other: ReferenceValues) {
        self.cca_platform.extend(other.cca_platform);
        self.cca_realm.extend(other.cca_realm);
        for (k, v) in other.named {
            self.named.entry(k).or_default().extend(v);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cca_platform.is_empty() && self.cca_realm.is_empty() && self.named.is_empty()
    }
}
