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

use crate::TeeKind;
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

/// A minimum SEV-SNP TCB: each SPL of the reported, committed and launch
/// TCB must be at least the floor's (FMC only on Turin and later). Set in
/// the reference values as `"snp_min_tcb": {"bootloader": 4, "tee": 0,
/// "snp": 24, "microcode": 217}`; without one, [`SnpTcbFloor::default_for`]
/// applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SnpTcbFloor {
    /// Boot loader SPL.
    #[serde(default)]
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    #[serde(default)]
    pub tee: u8,
    /// SNP firmware SPL.
    #[serde(default)]
    pub snp: u8,
    /// Microcode SPL.
    #[serde(default)]
    pub microcode: u8,
    /// FMC SPL (Turin and later; ignored for earlier generations).
    #[serde(default)]
    pub fmc: u8,
}

impl SnpTcbFloor {
    /// The documented default floor per processor generation (see
    /// docs/attestation.md, "SNP minimum TCB"): the TCB of the oldest
    /// production reports in `attestation/testdata/snp` (Milan: Trustee's
    /// test report, bootloader 3 / TEE 0 / SNP 8 / microcode 115; Genoa: the
    /// virtee report, 10 / 0 / 23 / 25). It refuses firmware older than
    /// that; it does not track AMD's security bulletins, so deployments set
    /// `snp_min_tcb` to the TCB their bulletin names. Turin has no default.
    pub fn default_for(generation: crate::snp::Generation) -> Self {
        use crate::snp::Generation;
        match generation {
            Generation::Milan => Self {
                bootloader: 3,
                tee: 0,
                snp: 8,
                microcode: 115,
                fmc: 0,
            },
            Generation::Genoa => Self {
                bootloader: 10,
                tee: 0,
                snp: 23,
                microcode: 25,
                fmc: 0,
            },
            Generation::Turin => Self::default(),
        }
    }

    /// The SPLs of `tcb` below this floor, as `(name, found, minimum)`.
    pub fn shortfalls(&self, tcb: &crate::snp::Tcb) -> Vec<(&'static str, u8, u8)> {
        let mut out: Vec<(&'static str, u8, u8)> = [
            ("bootloader", tcb.bootloader, self.bootloader),
            ("tee", tcb.tee, self.tee),
            ("snp", tcb.snp, self.snp),
            ("microcode", tcb.microcode, self.microcode),
        ]
        .into_iter()
        .filter(|(_, found, min)| found < min)
        .collect();
        if let Some(fmc) = tcb.fmc {
            if fmc < self.fmc {
                out.push(("fmc", fmc, self.fmc));
            }
        }
        out
    }
}

/// All reference values known to a verifier.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReferenceValues {
    pub cca_platform: Vec<PlatformRef>,
    pub cca_realm: Vec<RealmRef>,
    /// Claim name → accepted values.
    pub named: BTreeMap<String, Vec<Vec<u8>>>,
    /// Minimum SEV-SNP TCB (None: the generation's default floor).
    pub snp_min_tcb: Option<SnpTcbFloor>,
    /// Named sets (one per workload): each is a complete set of reference
    /// values of its own. The appraisal reports which sets the evidence
    /// matches, and a resource policy can require one by name.
    pub sets: BTreeMap<String, ReferenceValues>,
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
        if ["cca", "named", "snp_min_tcb", "sets"]
            .iter()
            .any(|k| o.contains_key(*k))
        {
            check_keys(
                "reference values",
                o,
                &["cca", "named", "snp_min_tcb", "sets"],
            )?;
            if let Some(c) = o.get("cca") {
                rv.parse_ccatoken(c)?;
            }
            if let Some(n) = o.get("named") {
                rv.parse_named(n)?;
            }
            if let Some(f) = o.get("snp_min_tcb") {
                rv.snp_min_tcb = Some(
                    serde_json::from_value(f.clone())
                        .map_err(|e| err(format!("snp_min_tcb: {e}")))?,
                );
            }
            if let Some(sets) = o.get("sets") {
                let sets = sets
                    .as_object()
                    .ok_or_else(|| err("sets: expected an object of named sets"))?;
                for (name, set) in sets {
                    if set.get("sets").is_some() {
                        return Err(err(format!("set {name:?}: sets do not nest")));
                    }
                    let inner = Self::parse(&set.to_string())
                        .map_err(|e| err(format!("set {name:?}: {e}")))?;
                    rv.sets.insert(name.clone(), inner);
                }
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
        if other.snp_min_tcb.is_some() {
            self.snp_min_tcb = other.snp_min_tcb;
        }
        self.sets.extend(other.sets);
    }

    /// No values at all (the named sets aside).
    pub fn is_empty(&self) -> bool {
        self.cca_platform.is_empty()
            && self.cca_realm.is_empty()
            && self.named.is_empty()
            && self.snp_min_tcb.is_none()
    }

    /// True when the values mention this TEE at all (named `tee.*` values,
    /// or CCA platform/realm entries and `cca-*` names).
    pub fn mentions(&self, tee: TeeKind) -> bool {
        match tee {
            TeeKind::Cca | TeeKind::Sim => {
                !self.cca_platform.is_empty()
                    || !self.cca_realm.is_empty()
                    || self.named.keys().any(|k| k.starts_with("cca-"))
            }
            TeeKind::Snp => self.named.keys().any(|k| k.starts_with("snp.")),
            TeeKind::Tdx => self.named.keys().any(|k| k.starts_with("tdx.")),
            TeeKind::None => false,
        }
    }

    /// The values that identify a launch of `tee`, which must all be present
    /// before the software counts as recognized: the launch measurement for
    /// SNP, MRTD and RTMR0..2 for TDX, the realm initial measurement for CCA.
    /// Returns the names missing from these values.
    pub fn missing_launch_identity(&self, tee: TeeKind) -> Vec<&'static str> {
        let required: &[&'static str] = match tee {
            TeeKind::Snp => &["snp.measurement"],
            TeeKind::Tdx => &["tdx.mr_td", "tdx.rtmr0", "tdx.rtmr1", "tdx.rtmr2"],
            TeeKind::Cca | TeeKind::Sim => {
                if !self.cca_realm.is_empty() {
                    return Vec::new();
                }
                &["cca-realm-initial-measurement"]
            }
            TeeKind::None => &[],
        };
        required
            .iter()
            .copied()
            .filter(|n| !self.named.contains_key(*n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snp::{Generation, Tcb};

    fn tcb(bl: u8, tee: u8, snp: u8, ucode: u8, fmc: Option<u8>) -> Tcb {
        Tcb {
            fmc,
            bootloader: bl,
            tee,
            snp,
            microcode: ucode,
        }
    }

    #[test]
    fn snp_tcb_floor_names_every_spl_below_it() {
        let floor = SnpTcbFloor {
            bootloader: 4,
            tee: 0,
            snp: 24,
            microcode: 217,
            fmc: 1,
        };
        assert!(floor.shortfalls(&tcb(4, 0, 24, 217, None)).is_empty());
        assert!(floor.shortfalls(&tcb(9, 9, 99, 255, Some(1))).is_empty());
        assert_eq!(
            floor.shortfalls(&tcb(3, 0, 8, 115, None)),
            [
                ("bootloader", 3, 4),
                ("snp", 8, 24),
                ("microcode", 115, 217)
            ]
        );
        // FMC only counts where the generation has one.
        assert_eq!(
            floor.shortfalls(&tcb(4, 0, 24, 217, Some(0))),
            [("fmc", 0, 1)]
        );
        // The documented defaults: the oldest production vectors pass, older fails.
        let milan = SnpTcbFloor::default_for(Generation::Milan);
        assert!(milan.shortfalls(&tcb(3, 0, 8, 115, None)).is_empty());
        assert_eq!(milan.shortfalls(&tcb(2, 0, 8, 115, None)).len(), 1);
        let genoa = SnpTcbFloor::default_for(Generation::Genoa);
        assert!(genoa.shortfalls(&tcb(10, 0, 23, 25, None)).is_empty());
        assert!(!genoa.shortfalls(&tcb(9, 0, 23, 25, None)).is_empty());
    }

    #[test]
    fn snp_min_tcb_and_sets_parse_and_refuse_bad_input() {
        let rv = ReferenceValues::parse(
            r#"{"snp_min_tcb": {"bootloader": 4, "snp": 24, "microcode": 217},
                "named": {"snp.measurement": ["00"]}}"#,
        )
        .unwrap();
        assert_eq!(
            rv.snp_min_tcb,
            Some(SnpTcbFloor {
                bootloader: 4,
                tee: 0,
                snp: 24,
                microcode: 217,
                fmc: 0
            })
        );
        let e = ReferenceValues::parse(r#"{"snp_min_tcb": {"bootloadr": 4}}"#).unwrap_err();
        assert!(e.to_string().contains("bootloadr"), "{e}");
        let e = ReferenceValues::parse(r#"{"snp_min_tcb": {"snp": 300}}"#).unwrap_err();
        assert!(e.to_string().contains("snp_min_tcb"), "{e}");
    }

    #[test]
    fn the_launch_identity_set_per_tee() {
        let rv = |t: &str| ReferenceValues::parse(t).unwrap();
        let only_mrtd = rv(r#"{"named": {"tdx.mr_td": ["00"]}}"#);
        assert!(only_mrtd.mentions(TeeKind::Tdx));
        assert_eq!(
            only_mrtd.missing_launch_identity(TeeKind::Tdx),
            ["tdx.rtmr0", "tdx.rtmr1", "tdx.rtmr2"]
        );
        let full = rv(
            r#"{"named": {"tdx.mr_td": ["00"], "tdx.rtmr0": ["00"], "tdx.rtmr1": ["00"], "tdx.rtmr2": ["00"]}}"#,
        );
        assert!(full.missing_launch_identity(TeeKind::Tdx).is_empty());
        let host_data = rv(r#"{"named": {"snp.host_data": ["00"]}}"#);
        assert_eq!(
            host_data.missing_launch_identity(TeeKind::Snp),
            ["snp.measurement"]
        );
        assert!(!host_data.mentions(TeeKind::Tdx));
        let cca = rv(r#"{"cca": {"realm": [{"initial-measurement": "00"}]}}"#);
        assert!(cca.missing_launch_identity(TeeKind::Cca).is_empty());
    }
}
