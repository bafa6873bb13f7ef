//! EAR (EAT Attestation Result) issuance: one submod per appraised piece of
//! evidence, signed as an ES256 JWT by the verifier's key.
//!
//! Claims use the `ear` crate's data model (draft-ietf-rats-ear); each
//! appraisal carries the extension `ear.veraison.annotated-evidence` with
//! the TEE claims, `report_data`, `init_data`, optional
//! `runtime_data_claims` (the KBS puts `tee-pubkey` there) and the list of
//! failures, plus `ear.cloister.simulated`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ear::{RawValue, RawValueKind, TrustTier};
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use serde_json::{json, Value as Json};

use crate::appraisal::{Appraisal, Status};
use crate::Error;

/// EAT profile of our EARs (Trustee's, so CoCo tooling recognises them).
pub const EAR_PROFILE: &str = "tag:github.com,2024:confidential-containers/Trustee";
/// Appraisal extension carrying the evidence claims.
pub const ANNOTATED_EVIDENCE: &str = "ear.veraison.annotated-evidence";
/// Appraisal extension flagging simulated evidence.
pub const SIMULATED: &str = "ear.cloister.simulated";

fn profile() -> Result<(), Error> {
    static REG: OnceLock<Result<(), String>> = OnceLock::new();
    REG.get_or_init(|| {
        let mut p = ear::Profile::new(EAR_PROFILE);
        p.register_appraisal_extension(ANNOTATED_EVIDENCE, -70001, RawValueKind::Map)
            .and_then(|_| p.register_appraisal_extension(SIMULATED, -70100, RawValueKind::Bool))
            .map_err(|e| e.to_string())?;
        match ear::register_profile(&p) {
            Ok(()) => Ok(()),
            // Someone registered it already (same process, other issuer).
            Err(_) if ear::get_profile(EAR_PROFILE).is_some() => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .clone()
    .map_err(Error::Ear)
}

/// One submod: a name (e.g. `cpu0`), its appraisal, and extra runtime-data
/// claims to annotate (the KBS's `{"tee-pubkey": JWK, "nonce": ...}`).
#[derive(Clone, Debug)]
pub struct Submod<'a> {
    pub name: String,
    pub appraisal: &'a Appraisal,
    pub runtime_data_claims: Option<Json>,
    pub init_data_claims: Option<Json>,
}

/// Signs EARs with an ES256 (P-256) key.
#[derive(Clone)]
pub struct EarIssuer {
    key: p256::ecdsa::SigningKey,
    developer: String,
    build: String,
    /// Validity of issued EARs in seconds.
    pub lifetime_secs: i64,
    /// The `iss` claim of issued EARs (the KBS protocol requires one).
    pub issuer: Option<String>,
}

impl std::fmt::Debug for EarIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EarIssuer")
            .field("developer", &self.developer)
            .finish()
    }
}

fn tier(s: Status) -> TrustTier {
    match s {
        Status::None => TrustTier::None,
        Status::Affirming => TrustTier::Affirming,
        Status::Warning => TrustTier::Warning,
        Status::Contraindicated => TrustTier::Contraindicated,
    }
}

impl EarIssuer {
    pub fn new(key: p256::ecdsa::SigningKey) -> Self {
        Self {
            key,
            developer: "cloister".into(),
            build: concat!("cloister-attestation ", env!("CARGO_PKG_VERSION")).into(),
            lifetime_secs: 300,
            issuer: None,
        }
    }

    /// A fresh random key (tests, CLI without a configured key).
    pub fn generate() -> Self {
        Self::new(p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng))
    }

    /// The public key as a JWK (to publish for relying parties).
    pub fn public_jwk(&self) -> Json {
        crate::cca::crypto::public_jwk(&crate::cca::PublicKey::P256(*self.key.verifying_key()))
    }

    pub fn verifying_key(&self) -> p256::ecdsa::VerifyingKey {
        *self.key.verifying_key()
    }

    /// Build the EAR claims set (`ear::Ear`, without `exp`; see
    /// [`claims_json`](Self::claims_json)).
    pub fn ear(&self, submods: &[Submod<'_>], now: i64) -> Result<ear::Ear, Error> {
        profile()?;
        if submods.is_empty() {
            return Err(Error::Ear("an EAR needs at least one submod".into()));
        }
        let mut e =
            ear::Ear::new_with_profile(EAR_PROFILE).map_err(|e| Error::Ear(e.to_string()))?;
        e.iat = now;
        // `exp` is added by `claims_json`: the ear crate checks it against
        // the system clock when serialising, and `now` is the caller's.
        e.exp = None;
        e.vid.developer = self.developer.clone();
        e.vid.build = self.build.clone();
        let mut worst = Status::None;
        for s in submods {
            let a = s.appraisal;
            let mut ap = ear::Appraisal::new_with_profile(EAR_PROFILE)
                .map_err(|e| Error::Ear(e.to_string()))?;
            ap.status = tier(a.status);
            for (k, v) in &a.trust_vector {
                if *v != 0 {
                    ap.trust_vector
                        .mut_by_name(k)
                        .map_err(|e| Error::Ear(format!("{k}: {e}")))?
                        .set(*v);
                }
            }
            ap.policy_ids = vec![a.policy_id.clone()];
            let mut annotated = json!({
                a.tee.as_str(): a.claims,
                "report_data": a.report_data,
                "failures": a.failures,
            });
            if let Some(i) = &a.init_data {
                annotated["init_data"] = json!(i);
            }
            if !a.reference_value_sets.is_empty() {
                annotated["reference_value_sets"] = json!(a.reference_value_sets);
            }
            if let Some(r) = &s.runtime_data_claims {
                annotated["runtime_data_claims"] = r.clone();
            }
            if let Some(i) = &s.init_data_claims {
                annotated["init_data_claims"] = i.clone();
            }
            let raw: RawValue =
                serde_json::from_value(annotated).map_err(|e| Error::Ear(e.to_string()))?;
            ap.extensions
                .set_by_name(ANNOTATED_EVIDENCE, raw)
                .map_err(|e| Error::Ear(e.to_string()))?;
            ap.extensions
                .set_by_name(SIMULATED, RawValue::Bool(a.simulated))
                .map_err(|e| Error::Ear(e.to_string()))?;
            worst = worst.max(a.status);
            e.submods.insert(s.name.clone(), ap);
        }
        e.status = Some(tier(worst));
        // `ear::Ear::validate` judges `exp` by the system clock; we issue
        // for the caller's `now` (which may be a fixed time in tests and
        // replays), so the structure is built valid by construction instead.
        Ok(e)
    }

    /// EAR claims as JSON (what the JWT body holds), with Trustee's claim
    /// names (see [`trustee_names`]).
    pub fn claims_json(&self, submods: &[Submod<'_>], now: i64) -> Result<Json, Error> {
        let mut v =
            serde_json::to_value(self.ear(submods, now)?).map_err(|e| Error::Ear(e.to_string()))?;
        v["exp"] = json!(now + self.lifetime_secs);
        if let Some(iss) = &self.issuer {
            v["iss"] = json!(iss);
        }
        Ok(trustee_names(v))
    }

    /// Sign the EAR as a compact ES256 JWT.
    pub fn issue(&self, submods: &[Submod<'_>], now: i64) -> Result<String, Error> {
        let claims = self.claims_json(submods, now)?;
        let header = json!({"alg": "ES256", "typ": "JWT", "jwk": self.public_jwk()});
        let mut s = URL_SAFE_NO_PAD.encode(header.to_string());
        s.push('.');
        s.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig: p256::ecdsa::Signature = self.key.sign(s.as_bytes());
        s.push('.');
        s.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        Ok(s)
    }
}

/// Rename the JSON claims the `ear` crate 0.6 writes (draft-ietf-rats-ear-04
/// spelling: `ear_status`, `ear_trustworthiness_vector`, `ear_verifier_id`,
/// `ear_appraisal_policy_ids` [list], a per-submod `eat_profile`) to the
/// names Trustee and its clients use (the `ear` crate 0.3–0.5, the
/// draft-fv-rats-ear spelling): `ear.status`, `ear.trustworthiness-vector`,
/// `ear.verifier-id`, `ear.appraisal-policy-id` (one string). Our EARs carry
/// Trustee's EAT profile, so they use its names; `eat_profile`, `iat`,
/// `exp`, `submods` and the registered extensions
/// (`ear.veraison.annotated-evidence`, `ear.cloister.simulated`) are the
/// same in both.
pub fn trustee_names(v: Json) -> Json {
    fn rename(m: &mut serde_json::Map<String, Json>, from: &str, to: &str) {
        if let Some(x) = m.remove(from) {
            m.insert(to.to_string(), x);
        }
    }
    let Json::Object(mut top) = v else {
        return v;
    };
    rename(&mut top, "ear_verifier_id", "ear.verifier-id");
    rename(&mut top, "ear_status", "ear.status");
    rename(&mut top, "ear_raw_evidence", "ear.raw-evidence");
    if let Some(Json::Object(subs)) = top.get_mut("submods") {
        for sub in subs.values_mut() {
            let Json::Object(m) = sub else { continue };
            m.remove("eat_profile");
            rename(m, "ear_status", "ear.status");
            rename(
                m,
                "ear_trustworthiness_vector",
                "ear.trustworthiness-vector",
            );
            rename(
                m,
                "ear_veraison_key_attestation",
                "ear.veraison.key-attestation",
            );
            if let Some(ids) = m.remove("ear_appraisal_policy_ids") {
                let first = ids.as_array().and_then(|a| a.first()).cloned();
                if let Some(id) = first {
                    m.insert("ear.appraisal-policy-id".into(), id);
                }
            }
        }
    }
    Json::Object(top)
}

/// Verify an ES256 EAR JWT with `key` and return its claims. Checks `exp`
/// against `now`.
pub fn verify_jwt(token: &str, key: &p256::ecdsa::VerifyingKey, now: i64) -> Result<Json, Error> {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, b, sig] = parts.as_slice() else {
        return Err(Error::Ear("JWT must have three parts".into()));
    };
    let header: Json = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|x| serde_json::from_slice(&x).ok())
        .ok_or_else(|| Error::Ear("JWT header is not base64url JSON".into()))?;
    if header["alg"] != "ES256" {
        return Err(Error::Ear(format!(
            "JWT alg: expected ES256, found {}",
            header["alg"]
        )));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|s| p256::ecdsa::Signature::from_slice(&s).ok())
        .ok_or_else(|| Error::Ear("JWT signature is malformed".into()))?;
    let signed_len = h.len() + 1 + b.len();
    key.verify(&token.as_bytes()[..signed_len], &sig)
        .map_err(|_| Error::Ear("JWT signature does not verify".into()))?;
    let claims: Json = URL_SAFE_NO_PAD
        .decode(b)
        .ok()
        .and_then(|x| serde_json::from_slice(&x).ok())
        .ok_or_else(|| Error::Ear("JWT body is not base64url JSON".into()))?;
    if let Some(exp) = claims["exp"].as_i64() {
        if now > exp {
            return Err(Error::Ear(format!("EAR expired at {exp}, now {now}")));
        }
    }
    Ok(claims)
}

/// Trust-vector map of an appraisal, for callers that want the raw values.
pub fn trust_vector_map(a: &Appraisal) -> BTreeMap<String, i8> {
    a.trust_vector.clone()
}
