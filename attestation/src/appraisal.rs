//! The verifier: dispatch evidence by TEE, run the cryptographic checks,
//! compare with reference values, and let the Rego appraisal policy map the
//! checks to an AR4SI trust vector.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value as Json};

use crate::cca::{self, TrustAnchorStore};
use crate::refvals::ReferenceValues;
use crate::{Category, Check, Error, Failure, ReportData, TeeKind};

/// What the relying party expects, passed to every evidence verifier.
#[derive(Clone, Debug)]
pub struct VerifyContext<'a> {
    /// Expected report_data / CCA realm challenge (None: not checked).
    pub expected_report_data: Option<ReportData>,
    /// Expected initdata digest (CCA RPV, SNP HOST_DATA, TDX MRCONFIGID),
    /// zero-padded to the field size when compared.
    pub init_data_digest: Option<&'a [u8]>,
    /// Unix seconds; certificate and collateral validity is judged at this time.
    pub now: i64,
    /// Reference values to appraise against.
    pub reference_values: &'a ReferenceValues,
}

/// Output of an evidence verifier: claims plus the checks made.
#[derive(Clone, Debug, Serialize)]
pub struct VerifiedEvidence {
    pub tee: TeeKind,
    /// True when the root of trust is a simulated one (sim backend).
    pub simulated: bool,
    /// TEE-specific claims (JSON, for the EAR's annotated evidence).
    pub claims: Json,
    /// The field the nonce is bound to (CCA realm challenge, SNP/TDX report_data).
    pub report_data: Vec<u8>,
    /// The initdata field (CCA RPV, SNP HOST_DATA, TDX MRCONFIGID), if the TEE has one.
    pub init_data: Option<Vec<u8>>,
    /// Every check made (signatures, chains, bindings, measurements).
    pub checks: Vec<Check>,
}

/// A verifier for one kind of evidence. CCA/sim are built in; SNP and TDX
/// plug in here (see `snp::` and `tdx::`).
pub trait EvidenceVerifier: Send + Sync + fmt::Debug {
    /// Verify `evidence` and compare it with `ctx.reference_values`.
    /// Return `Err` only for unusable input (cannot decode); cryptographic
    /// or reference-value failures are `Check`s with `ok == false`.
    fn verify(&self, evidence: &[u8], ctx: &VerifyContext<'_>) -> Result<VerifiedEvidence, Error>;
}

/// Overall status (AR4SI tier).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    None,
    Affirming,
    Warning,
    Contraindicated,
}

impl Status {
    fn parse(s: &str) -> Self {
        match s {
            "affirming" => Status::Affirming,
            "warning" => Status::Warning,
            "contraindicated" => Status::Contraindicated,
            _ => Status::None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::None => "none",
            Status::Affirming => "affirming",
            Status::Warning => "warning",
            Status::Contraindicated => "contraindicated",
        }
    }
}

/// The appraisal of one piece of evidence.
#[derive(Clone, Debug, Serialize)]
pub struct Appraisal {
    pub tee: TeeKind,
    pub status: Status,
    /// AR4SI trust vector (claim name → value).
    pub trust_vector: BTreeMap<String, i8>,
    pub simulated: bool,
    pub claims: Json,
    /// Hex of the report_data / challenge field.
    pub report_data: String,
    /// Hex of the initdata field, if any.
    pub init_data: Option<String>,
    pub failures: Vec<Failure>,
    pub checks: Vec<Check>,
    pub policy_id: String,
    /// The named reference-value sets (see [`ReferenceValues::sets`]) the
    /// evidence matches: every check of the set passed and the set
    /// identifies the launch.
    pub reference_value_sets: Vec<String>,
}

impl Appraisal {
    pub fn affirming(&self) -> bool {
        self.status == Status::Affirming
    }
}

/// Configuration of a [`Verifier`].
#[derive(Clone, Debug, Default)]
pub struct VerifierConfig {
    /// CCA (and sim) platform trust anchors.
    pub cca_trust_anchors: TrustAnchorStore,
    pub reference_values: ReferenceValues,
    /// Accept evidence from a simulated trust anchor: it is then appraised on
    /// its checks like any CCA platform (and still marked simulated) instead
    /// of being "contraindicated".
    pub allow_simulated: bool,
    /// Collateral directory for TDX/SNP verifiers that read files.
    pub collateral_dir: Option<PathBuf>,
    /// Rego appraisal policy text; None = the shipped policy.
    pub policy: Option<String>,
}

/// The verifier the KBS and the CLI call. Cheap to share (`Arc` inside);
/// trust anchors, reference values and the policy are parsed once.
#[derive(Clone, Debug)]
pub struct Verifier {
    reference_values: Arc<ReferenceValues>,
    allow_simulated: bool,
    policy: cloister_policy::Policy,
    backends: BTreeMap<TeeKind, Arc<dyn EvidenceVerifier>>,
    cca_store: TrustAnchorStore,
}

impl Verifier {
    /// A verifier with the CCA and sim backends built in.
    pub fn new(cfg: VerifierConfig) -> Result<Self, Error> {
        let policy = match &cfg.policy {
            Some(text) => cloister_policy::Policy::new("appraisal-policy.rego", text)?,
            None => cloister_policy::Policy::appraisal()?,
        };
        let mut v = Self {
            reference_values: Arc::new(cfg.reference_values),
            allow_simulated: cfg.allow_simulated,
            policy,
            backends: BTreeMap::new(),
            cca_store: cfg.cca_trust_anchors,
        };
        v = v.with_platform_cache(cca::cache::DEFAULT_CAPACITY);
        Ok(v)
    }

    /// Replace the CCA and sim verifiers with ones sharing a fresh cache of
    /// verified platform tokens holding at most `capacity` entries (0: no
    /// cache, every platform signature is verified). The default is
    /// [`cca::cache::DEFAULT_CAPACITY`].
    pub fn with_platform_cache(mut self, capacity: usize) -> Self {
        let cache = Arc::new(cca::PlatformCache::new(capacity));
        for tee in [TeeKind::Cca, TeeKind::Sim] {
            let v: Arc<dyn EvidenceVerifier> = Arc::new(CcaVerifier {
                store: self.cca_store.clone(),
                tee,
                cache: cache.clone(),
            });
            self.backends.insert(tee, v);
        }
        self
    }

    /// Register (or replace) the verifier for a TEE kind.
    pub fn with_verifier(mut self, tee: TeeKind, v: Arc<dyn EvidenceVerifier>) -> Self {
        self.backends.insert(tee, v);
        self
    }

    pub fn reference_values(&self) -> &ReferenceValues {
        &self.reference_values
    }

    /// Verify and appraise one piece of evidence.
    ///
    /// `Err` means the input is unusable (undecodable evidence, no verifier
    /// for `tee`); everything else is an [`Appraisal`], whose `failures`
    /// name each claim that did not meet expectations.
    pub fn appraise(
        &self,
        tee: TeeKind,
        evidence: &[u8],
        expected_report_data: Option<ReportData>,
        init_data_digest: Option<&[u8]>,
        now: i64,
    ) -> Result<Appraisal, Error> {
        let backend = self.backends.get(&tee).ok_or(Error::Unsupported(tee))?;
        let rv = &self.reference_values;
        let ctx = VerifyContext {
            expected_report_data,
            init_data_digest,
            now,
            reference_values: rv,
        };
        let mut ev = backend.verify(evidence, &ctx)?;
        ev.checks.extend(launch_identity_check(tee, rv));
        // Named sets: each is appraised on its own; the matching ones are
        // reported, and with no global values the first match grades the
        // evidence.
        let mut matched = Vec::new();
        let mut set_failures = Vec::new();
        let mut matched_checks = None;
        for (name, set) in &rv.sets {
            let set_ctx = VerifyContext {
                reference_values: set,
                ..ctx.clone()
            };
            let mut set_ev = backend.verify(evidence, &set_ctx)?;
            set_ev.checks.extend(launch_identity_check(tee, set));
            let first_failure = set_ev
                .checks
                .iter()
                .find(|c| !c.ok)
                .map(|c| c.claim.clone());
            match first_failure {
                None if set.mentions(tee) => {
                    matched.push(name.clone());
                    if matched_checks.is_none() {
                        matched_checks = Some(set_ev.checks);
                    }
                }
                None => set_failures.push(format!("{name}: no values for {tee}")),
                Some(claim) => set_failures.push(format!("{name}: {claim}")),
            }
        }
        if !rv.sets.is_empty() && !rv.mentions(tee) {
            match matched_checks {
                Some(checks) => ev.checks = checks,
                None => ev.checks.push(Check::new(
                    "reference-value sets",
                    Category::Executables,
                    false,
                    format!(
                        "a match with one of the sets {}",
                        rv.sets.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                    format!("no set matched ({})", set_failures.join("; ")),
                )),
            }
        }
        // Common checks: freshness and initdata.
        if let Some(want) = expected_report_data {
            let mut found = ev.report_data.clone();
            found.resize(64, 0);
            ev.checks.push(Check::new(
                "report_data",
                Category::Freshness,
                found == want.0,
                hex::encode(want.0),
                hex::encode(&ev.report_data),
            ));
        }
        if let Some(digest) = init_data_digest {
            match &ev.init_data {
                Some(field) => {
                    let mut want = digest.to_vec();
                    want.resize(field.len().max(digest.len()), 0);
                    ev.checks.push(Check::new(
                        "init_data",
                        Category::InitData,
                        &want == field,
                        hex::encode(&want),
                        hex::encode(field),
                    ));
                }
                None => ev.checks.push(Check::new(
                    "init_data",
                    Category::InitData,
                    false,
                    hex::encode(digest),
                    "no initdata field in this evidence",
                )),
            }
        }
        let input = json!({
            "tee": tee,
            "checks": ev.checks,
            "simulated": ev.simulated,
            "allow_simulated": self.allow_simulated,
        });
        let out = self
            .policy
            .eval(cloister_policy::APPRAISAL_QUERY, &input, None)?;
        let status = Status::parse(out["status"].as_str().unwrap_or("none"));
        let mut trust_vector = BTreeMap::new();
        if let Some(tv) = out["trust_vector"].as_object() {
            for (k, v) in tv {
                let v = v
                    .as_i64()
                    .and_then(|v| i8::try_from(v).ok())
                    .ok_or_else(|| {
                        Error::Ear(format!("policy returned a non-AR4SI value for {k}: {v}"))
                    })?;
                trust_vector.insert(k.clone(), v);
            }
        }
        let mut failures: Vec<Failure> = ev
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(Failure::from)
            .collect();
        if ev.simulated && !self.allow_simulated {
            failures.push(Failure {
                claim: "simulated".into(),
                expected: "evidence from a hardware root of trust".into(),
                found: "evidence signed by a simulated platform key".into(),
            });
        }
        Ok(Appraisal {
            tee,
            status,
            trust_vector,
            simulated: ev.simulated,
            claims: ev.claims,
            report_data: hex::encode(&ev.report_data),
            init_data: ev.init_data.as_ref().map(hex::encode),
            failures,
            checks: ev.checks,
            policy_id: self.policy.name().to_string(),
            reference_value_sets: matched,
        })
    }
}

/// A failed launch-identity check when `rv` mentions `tee` but lacks part
/// of the set that identifies its launch (see
/// [`ReferenceValues::missing_launch_identity`]).
fn launch_identity_check(tee: TeeKind, rv: &ReferenceValues) -> Option<Check> {
    if !rv.mentions(tee) {
        return None;
    }
    let missing = rv.missing_launch_identity(tee);
    (!missing.is_empty()).then(|| {
        Check::new(
            "reference values identify the launch",
            Category::LaunchIdentity,
            false,
            format!("reference values for {}", missing.join(", ")),
            format!("none for {}", missing.join(", ")),
        )
    })
}

/// The built-in CCA (and sim) evidence verifier.
#[derive(Clone, Debug)]
pub struct CcaVerifier {
    pub store: TrustAnchorStore,
    /// `TeeKind::Cca` or `TeeKind::Sim`.
    pub tee: TeeKind,
    /// Platform tokens whose signature verified (see [`cca::cache`]).
    pub cache: Arc<cca::PlatformCache>,
}

/// Accept a raw CBOR token or Trustee's CCA evidence JSON
/// `{"token": [bytes as numbers]}` (or a base64 string).
pub fn unwrap_cca_evidence(evidence: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, Error> {
    let first = evidence.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Ok(std::borrow::Cow::Borrowed(evidence));
    }
    let v: Json = serde_json::from_slice(evidence)
        .map_err(|e| Error::Input(format!("CCA evidence JSON: {e}")))?;
    match v.get("token") {
        Some(Json::Array(a)) => a
            .iter()
            .map(|x| x.as_u64().and_then(|n| u8::try_from(n).ok()))
            .collect::<Option<Vec<u8>>>()
            .map(std::borrow::Cow::Owned)
            .ok_or_else(|| {
                Error::Input("CCA evidence JSON: token must be an array of bytes".into())
            }),
        Some(Json::String(s)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
                .map(std::borrow::Cow::Owned)
                .map_err(|e| Error::Input(format!("CCA evidence JSON: token is not base64: {e}")))
        }
        _ => Err(Error::Input("CCA evidence JSON lacks \"token\"".into())),
    }
}

impl EvidenceVerifier for CcaVerifier {
    fn verify(&self, evidence: &[u8], ctx: &VerifyContext<'_>) -> Result<VerifiedEvidence, Error> {
        let raw = unwrap_cca_evidence(evidence)?;
        let token = cca::decode(&raw)?;
        let verified = token.verify_with_cache(&self.store, &self.cache);
        let mut checks = verified.checks.clone();
        let simulated = verified.simulated();
        if self.tee == TeeKind::Sim && !simulated && verified.trust_anchor.is_some() {
            checks.push(Check::new(
                "platform trust anchor",
                Category::TrustAnchor,
                false,
                "a trust anchor marked simulated for sim evidence",
                "a hardware trust anchor",
            ));
        }
        checks.extend(appraise_cca(&token, ctx.reference_values));
        let claims = json!({
            "platform": token.platform_claims.to_json(),
            "realm": token.realm_claims.to_json(),
        });
        Ok(VerifiedEvidence {
            tee: self.tee,
            simulated,
            claims,
            report_data: token.realm_claims.challenge.to_vec(),
            init_data: Some(token.realm_claims.personalization_value.to_vec()),
            checks,
        })
    }
}

fn hexs(list: &[&Vec<u8>]) -> String {
    match list {
        [] => "(none)".into(),
        [one] => hex::encode(one),
        many => format!(
            "one of [{}]",
            many.iter().map(hex::encode).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Compare a decoded CCA token with reference values. Only what the
/// reference values mention is checked; a missing set yields no check
/// (the policy then reports "executables: unrecognized").
pub fn appraise_cca(token: &cca::Token, rv: &ReferenceValues) -> Vec<Check> {
    let mut out = Vec::new();
    let pc = &token.platform_claims;
    let rc = &token.realm_claims;
    out.push(Check::new(
        "platform lifecycle",
        Category::UnsafeState,
        (0x3000..=0x30ff).contains(&pc.lifecycle),
        "secured (0x3000..0x30ff)",
        format!("{:#06x}", pc.lifecycle),
    ));
    // ---- realm
    if !rv.cca_realm.is_empty() {
        let matching: Vec<_> = rv.cca_realm.iter().filter(|r| r.rim == rc.rim).collect();
        let all: Vec<&Vec<u8>> = rv.cca_realm.iter().map(|r| &r.rim).collect();
        out.push(Check::new(
            "realm initial-measurement",
            Category::Executables,
            !matching.is_empty(),
            hexs(&all),
            hex::encode(&rc.rim),
        ));
        if let Some(r) = matching.first() {
            if let Some(rems) = &r.rems {
                for (i, (want, got)) in rems.iter().zip(rc.rems.iter()).enumerate() {
                    out.push(Check::new(
                        format!("realm extensible-measurements[{i}]"),
                        Category::Executables,
                        want == got,
                        hex::encode(want),
                        hex::encode(got),
                    ));
                }
            }
            if let Some(p) = &r.personalization_value {
                out.push(Check::new(
                    "realm personalization-value",
                    Category::InitData,
                    p.as_slice() == rc.personalization_value.as_slice(),
                    hex::encode(p),
                    hex::encode(rc.personalization_value),
                ));
            }
            if let Some(h) = &r.rak_hash_algorithm {
                out.push(Check::new(
                    "realm public-key-hash-algo-id",
                    Category::Configuration,
                    h == rc.rak_hash_algo_id.as_str(),
                    h.clone(),
                    rc.rak_hash_algo_id.as_str(),
                ));
            }
        }
    }
    // ---- platform
    if !rv.cca_platform.is_empty() {
        let entry = rv
            .cca_platform
            .iter()
            .find(|p| p.implementation_id == pc.implementation_id);
        let all: Vec<&Vec<u8>> = rv
            .cca_platform
            .iter()
            .map(|p| &p.implementation_id)
            .collect();
        out.push(Check::new(
            "platform implementation-id",
            Category::Hardware,
            entry.is_some(),
            hexs(&all),
            hex::encode(&pc.implementation_id),
        ));
        if let Some(p) = entry {
            if let Some(cfg) = &p.config {
                out.push(Check::new(
                    "platform config",
                    Category::Configuration,
                    cfg == &pc.config,
                    hex::encode(cfg),
                    hex::encode(&pc.config),
                ));
            }
            for (i, c) in pc.sw_components.iter().enumerate() {
                let name = format!(
                    "platform sw-components[{i}]{}",
                    c.component_type
                        .as_deref()
                        .map(|t| format!(" ({t})"))
                        .unwrap_or_default()
                );
                let ok = p.sw_components.iter().any(|r| {
                    r.measurement == c.measurement
                        && r.signer_id.as_ref().is_none_or(|s| s == &c.signer_id)
                });
                let candidates: Vec<&Vec<u8>> = p
                    .sw_components
                    .iter()
                    .filter(|r| r.component_type.is_none() || r.component_type == c.component_type)
                    .map(|r| &r.measurement)
                    .collect();
                // Platform firmware: graded as hardware, not as the guest's software.
                out.push(Check::new(
                    name,
                    Category::Hardware,
                    ok,
                    format!("measurement {}", hexs(&candidates)),
                    format!("measurement {}", hex::encode(&c.measurement)),
                ));
            }
        }
    }
    // ---- named values (RVPS sample provenance)
    let named: [(&str, Category, &[u8]); 8] = [
        (
            "cca-realm-initial-measurement",
            Category::Executables,
            &rc.rim,
        ),
        (
            "cca-realm-extensible-measurements-0",
            Category::Executables,
            &rc.rems[0],
        ),
        (
            "cca-realm-extensible-measurements-1",
            Category::Executables,
            &rc.rems[1],
        ),
        (
            "cca-realm-extensible-measurements-2",
            Category::Executables,
            &rc.rems[2],
        ),
        (
            "cca-realm-extensible-measurements-3",
            Category::Executables,
            &rc.rems[3],
        ),
        (
            "cca-realm-personalization-value",
            Category::InitData,
            &rc.personalization_value,
        ),
        (
            "cca-platform-implementation-id",
            Category::Hardware,
            &pc.implementation_id,
        ),
        ("cca-platform-config", Category::Configuration, &pc.config),
    ];
    for (name, cat, value) in named {
        if let Some(accepted) = rv.named.get(name) {
            let refs: Vec<&Vec<u8>> = accepted.iter().collect();
            out.push(Check::new(
                name,
                cat,
                accepted.iter().any(|a| a.as_slice() == value),
                hexs(&refs),
                hex::encode(value),
            ));
        }
    }
    if let Some(accepted) = rv.named.get("cca-platform-sw-component-measurement") {
        let refs: Vec<&Vec<u8>> = accepted.iter().collect();
        for (i, c) in pc.sw_components.iter().enumerate() {
            out.push(Check::new(
                format!("cca-platform-sw-component-measurement[{i}]"),
                Category::Hardware,
                accepted.contains(&c.measurement),
                hexs(&refs),
                hex::encode(&c.measurement),
            ));
        }
    }
    out
}
