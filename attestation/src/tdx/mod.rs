//! Intel TDX evidence: DCAP quotes v4 and v5 (TD report bodies 1.0, 1.5 and
//! 1.5-extended), verified offline with `dcap-qvl` against collateral the
//! caller supplies (files or a cache directory) at a time the caller gives.
//!
//! [`TdxVerifier::verify_evidence`] parses the quote with our own parser (the
//! claims come from it), runs dcap-qvl's signature, certificate-chain, CRL,
//! QE-identity and TCB evaluation, and returns [`TdxClaims`] with the TCB
//! status. [`check_claims`] compares them with what the relying party expects
//! (report_data, MRCONFIGID, debug bit, accepted TCB statuses) and
//! [`check_event_log`] replays a CCEL against RTMR0..3. It never fetches
//! collateral from the network.

pub mod ccel;
mod quote;

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

pub use ccel::EventLogError;
pub use dcap_qvl::QuoteCollateralV3;
pub use quote::{BodyType, Quote, QuoteError, HEADER_LEN, MAX_QUOTE_LEN};

pub use crate::Failure;

fn failure(claim: &str, expected: impl ToString, found: impl ToString) -> Failure {
    Failure {
        claim: claim.to_string(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// Why TDX evidence was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TdxError {
    /// Not a supported quote.
    #[error("malformed TDX quote: {0}")]
    Quote(#[from] QuoteError),
    /// Collateral missing or malformed.
    #[error("collateral: {0}")]
    Collateral(String),
    /// A signature (quote, QE report, PCK chain, TCB info, QE identity) does not verify.
    #[error("signature does not verify: {0}")]
    Signature(String),
    /// dcap-qvl refused the quote for another reason (TCB, dates, attributes).
    #[error("quote verification failed: {0}")]
    Verification(String),
    /// Trustee's TDX evidence JSON is malformed.
    #[error("TDX evidence JSON: {0}")]
    EvidenceJson(String),
    /// The event log is malformed.
    #[error("CCEL: {0}")]
    EventLog(#[from] EventLogError),
    /// The caller's expectations are unusable.
    #[error("bad expectation: {0}")]
    Config(String),
    /// Claims that do not match.
    #[error("TDX claims do not match: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Claims(Vec<Failure>),
}

fn classify(e: &impl std::fmt::Display) -> TdxError {
    let msg = format!("{e:#}");
    let lower = msg.to_ascii_lowercase();
    if lower.contains("signature")
        || lower.contains("certificate chain")
        || lower.contains("hash mismatch")
    {
        TdxError::Signature(msg)
    } else {
        TdxError::Verification(msg)
    }
}

/// Collateral (PCK CRLs, TCB info, QE identity and their issuer chains) in
/// dcap-qvl's `QuoteCollateralV3` JSON form, byte fields as hex strings.
pub fn collateral_from_json(json: &[u8]) -> Result<QuoteCollateralV3, TdxError> {
    #[derive(serde::Deserialize)]
    struct Raw {
        pck_crl_issuer_chain: String,
        root_ca_crl: serde_json::Value,
        pck_crl: serde_json::Value,
        tcb_info_issuer_chain: String,
        tcb_info: String,
        tcb_info_signature: serde_json::Value,
        qe_identity_issuer_chain: String,
        qe_identity: String,
        qe_identity_signature: serde_json::Value,
        #[serde(default)]
        pck_certificate_chain: Option<String>,
    }
    fn bytes(v: &serde_json::Value, k: &str) -> Result<Vec<u8>, TdxError> {
        match v {
            serde_json::Value::String(s) => {
                hex::decode(s).map_err(|e| TdxError::Collateral(format!("{k}: not hex: {e}")))
            }
            serde_json::Value::Array(a) => a
                .iter()
                .map(|x| x.as_u64().and_then(|x| u8::try_from(x).ok()))
                .collect::<Option<Vec<u8>>>()
                .ok_or_else(|| TdxError::Collateral(format!("{k}: not a byte array"))),
            _ => Err(TdxError::Collateral(format!(
                "{k}: expected a hex string or byte array"
            ))),
        }
    }
    let r: Raw = serde_json::from_slice(json)
        .map_err(|e| TdxError::Collateral(format!("not QuoteCollateralV3 JSON: {e}")))?;
    Ok(QuoteCollateralV3 {
        pck_crl_issuer_chain: r.pck_crl_issuer_chain,
        root_ca_crl: bytes(&r.root_ca_crl, "root_ca_crl")?,
        pck_crl: bytes(&r.pck_crl, "pck_crl")?,
        tcb_info_issuer_chain: r.tcb_info_issuer_chain,
        tcb_info: r.tcb_info,
        tcb_info_signature: bytes(&r.tcb_info_signature, "tcb_info_signature")?,
        qe_identity_issuer_chain: r.qe_identity_issuer_chain,
        qe_identity: r.qe_identity,
        qe_identity_signature: bytes(&r.qe_identity_signature, "qe_identity_signature")?,
        pck_certificate_chain: r.pck_certificate_chain,
    })
}

fn tcb_info_fmspc(c: &QuoteCollateralV3) -> Result<String, TdxError> {
    let v: serde_json::Value = serde_json::from_str(&c.tcb_info)
        .map_err(|e| TdxError::Collateral(format!("tcb_info is not JSON: {e}")))?;
    v.get("fmspc")
        .and_then(serde_json::Value::as_str)
        .map(str::to_ascii_uppercase)
        .ok_or_else(|| TdxError::Collateral("tcb_info has no fmspc".into()))
}

/// Collateral for several platforms, keyed by FMSPC (from each TCB info).
#[derive(Debug, Clone, Default)]
pub struct CollateralStore {
    by_fmspc: HashMap<String, QuoteCollateralV3>,
    skipped: Vec<(std::path::PathBuf, String)>,
}

/// Fields every QuoteCollateralV3 JSON object has; a JSON file with none of
/// them is something else and is skipped by [`CollateralStore::from_dir`].
const COLLATERAL_FIELDS: [&str; 9] = [
    "pck_crl_issuer_chain",
    "root_ca_crl",
    "pck_crl",
    "tcb_info_issuer_chain",
    "tcb_info",
    "tcb_info_signature",
    "qe_identity_issuer_chain",
    "qe_identity",
    "qe_identity_signature",
];

impl CollateralStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one collateral set; replaces an earlier one for the same FMSPC.
    pub fn insert(&mut self, c: QuoteCollateralV3) -> Result<(), TdxError> {
        let fmspc = tcb_info_fmspc(&c)?;
        self.by_fmspc.insert(fmspc, c);
        Ok(())
    }

    /// Load the QuoteCollateralV3 JSON files in `dir`. A `*.json` file is
    /// taken as collateral when it is an object with at least one of the
    /// QuoteCollateralV3 fields; such a file that is incomplete or broken is
    /// an error naming it. Other files (other JSON such as reference values
    /// or claims, certificates, event logs) are skipped and listed in
    /// [`skipped`](Self::skipped).
    pub fn from_dir(dir: &Path) -> Result<Self, TdxError> {
        let mut s = Self::new();
        let rd = std::fs::read_dir(dir)
            .map_err(|e| TdxError::Collateral(format!("{}: {e}", dir.display())))?;
        let mut paths = Vec::new();
        for ent in rd {
            paths.push(
                ent.map_err(|e| TdxError::Collateral(format!("{}: {e}", dir.display())))?
                    .path(),
            );
        }
        paths.sort();
        for p in paths {
            if !p.is_file() {
                continue;
            }
            if p.extension().is_none_or(|x| x != "json") {
                s.skipped.push((p, "not a .json file".into()));
                continue;
            }
            let b = std::fs::read(&p)
                .map_err(|e| TdxError::Collateral(format!("{}: {e}", p.display())))?;
            let looks_like_collateral = serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| {
                    v.as_object()
                        .map(|o| COLLATERAL_FIELDS.iter().any(|f| o.contains_key(*f)))
                })
                .unwrap_or(false);
            if !looks_like_collateral {
                s.skipped.push((
                    p,
                    format!(
                        "not QuoteCollateralV3 JSON (no {} field)",
                        COLLATERAL_FIELDS.join("/")
                    ),
                ));
                continue;
            }
            let c = collateral_from_json(&b)
                .map_err(|e| TdxError::Collateral(format!("{}: {e}", p.display())))?;
            s.insert(c)
                .map_err(|e| TdxError::Collateral(format!("{}: {e}", p.display())))?;
        }
        Ok(s)
    }

    /// Files [`from_dir`](Self::from_dir) did not take, with the reason.
    pub fn skipped(&self) -> &[(std::path::PathBuf, String)] {
        &self.skipped
    }

    /// Number of platforms (FMSPCs) with collateral.
    pub fn len(&self) -> usize {
        self.by_fmspc.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fmspc.is_empty()
    }

    /// The collateral for a quote's platform (FMSPC from its PCK certificate).
    pub fn for_quote(&self, quote: &[u8]) -> Result<&QuoteCollateralV3, TdxError> {
        let q = dcap_qvl::quote::Quote::parse(quote)
            .map_err(|e| TdxError::Verification(format!("{e:#}")))?;
        let fmspc = dcap_qvl::intel::quote_fmspc(&q)
            .map_err(|e| TdxError::Collateral(format!("FMSPC of the quote's PCK: {e:#}")))?;
        let key = hex::encode_upper(fmspc);
        self.by_fmspc.get(&key).ok_or_else(|| {
            let mut have: Vec<_> = self.by_fmspc.keys().collect();
            have.sort();
            let skipped = if self.skipped.is_empty() {
                String::new()
            } else {
                format!(
                    " (skipped {} file(s) that are not collateral: {})",
                    self.skipped.len(),
                    self.skipped
                        .iter()
                        .filter_map(|(p, _)| p.file_name().map(|n| n.to_string_lossy()))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            TdxError::Collateral(format!(
                "no collateral for FMSPC {key}; have {have:?}{skipped}"
            ))
        })
    }
}

/// Decoded TD attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TdAttributes {
    /// Raw TDATTRIBUTES, hex (8 bytes as in the quote).
    pub raw: [u8; 8],
    /// Bit 0: off-TD debug.
    pub debug: bool,
    /// Bit 28: EPT violation #VE disabled.
    pub sept_ve_disable: bool,
    /// Bit 29: migratable.
    pub migratable: bool,
    /// Bit 30: PKS.
    pub pks: bool,
    /// Bit 31: key locker.
    pub kl: bool,
    /// Bit 63: perfmon.
    pub perfmon: bool,
}

impl TdAttributes {
    fn from_raw(raw: [u8; 8]) -> Self {
        let v = u64::from_le_bytes(raw);
        TdAttributes {
            raw,
            debug: v & 1 != 0,
            sept_ve_disable: v & (1 << 28) != 0,
            migratable: v & (1 << 29) != 0,
            pks: v & (1 << 30) != 0,
            kl: v & (1 << 31) != 0,
            perfmon: v & (1 << 63) != 0,
        }
    }
}

/// Claims from a verified quote. Byte strings are lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxClaims {
    /// Quote version (4 or 5).
    pub version: u16,
    /// TD report structure.
    pub body_type: BodyType,
    /// TCB status from the collateral (UpToDate, SWHardeningNeeded, OutOfDate, …).
    pub tcb_status: String,
    /// Intel security advisories that apply.
    pub advisory_ids: Vec<String>,
    /// MRTD.
    pub mr_td: String,
    /// RTMR0..3.
    pub rtmr0: String,
    /// RTMR1.
    pub rtmr1: String,
    /// RTMR2.
    pub rtmr2: String,
    /// RTMR3.
    pub rtmr3: String,
    /// MRCONFIGID (initdata digest).
    pub mr_config_id: String,
    /// MROWNER.
    pub mr_owner: String,
    /// MROWNERCONFIG.
    pub mr_owner_config: String,
    /// REPORTDATA.
    pub report_data: String,
    /// TD attributes.
    pub td_attributes: TdAttributes,
    /// XFAM.
    pub xfam: String,
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: String,
    /// MRSEAM.
    pub mr_seam: String,
    /// MRSIGNERSEAM.
    pub mr_signer_seam: String,
    /// SEAMATTRIBUTES.
    pub seam_attributes: String,
    /// TEE_TCB_SVN2 (TD 1.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tee_tcb_svn2: Option<String>,
    /// MRSERVICETD (TD 1.5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mr_servicetd: Option<String>,
}

impl TdxClaims {
    /// Claims from a parsed quote and a TCB status.
    pub fn from_quote(q: &Quote, tcb_status: String, advisory_ids: Vec<String>) -> Self {
        TdxClaims {
            version: q.version,
            body_type: q.body_type,
            tcb_status,
            advisory_ids,
            mr_td: hex::encode(q.mr_td),
            rtmr0: hex::encode(q.rtmr[0]),
            rtmr1: hex::encode(q.rtmr[1]),
            rtmr2: hex::encode(q.rtmr[2]),
            rtmr3: hex::encode(q.rtmr[3]),
            mr_config_id: hex::encode(q.mr_config_id),
            mr_owner: hex::encode(q.mr_owner),
            mr_owner_config: hex::encode(q.mr_owner_config),
            report_data: hex::encode(q.report_data),
            td_attributes: TdAttributes::from_raw(q.td_attributes),
            xfam: hex::encode(q.xfam),
            tee_tcb_svn: hex::encode(q.tee_tcb_svn),
            mr_seam: hex::encode(q.mr_seam),
            mr_signer_seam: hex::encode(q.mr_signer_seam),
            seam_attributes: hex::encode(q.seam_attributes),
            tee_tcb_svn2: q.tee_tcb_svn2.map(hex::encode),
            mr_servicetd: q.mr_servicetd.map(hex::encode),
        }
    }

    /// The claims as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// RTMR0..3, hex.
    pub fn rtmrs(&self) -> [&str; 4] {
        [&self.rtmr0, &self.rtmr1, &self.rtmr2, &self.rtmr3]
    }
}

/// What the relying party expects of the TD, beyond authenticity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxConfig {
    /// Expected REPORTDATA; zero-padded to 64 bytes.
    pub expected_report_data: Option<Vec<u8>>,
    /// Expected MRCONFIGID (initdata digest); zero-padded to 48 bytes.
    pub expected_mr_config_id: Option<Vec<u8>>,
    /// Accept a debuggable TD.
    pub allow_debug: bool,
    /// TCB statuses accepted (default: only `UpToDate`).
    pub accepted_tcb_status: Vec<String>,
}

impl Default for TdxConfig {
    fn default() -> Self {
        TdxConfig {
            expected_report_data: None,
            expected_mr_config_id: None,
            allow_debug: false,
            accepted_tcb_status: vec!["UpToDate".into()],
        }
    }
}

fn pad<const N: usize>(v: &[u8], field: &str) -> Result<[u8; N], TdxError> {
    if v.len() > N {
        return Err(TdxError::Config(format!(
            "{field} is {} bytes, expected at most {N}",
            v.len()
        )));
    }
    let mut out = [0u8; N];
    out[..v.len()].copy_from_slice(v);
    Ok(out)
}

/// Compare verified claims with expectations; every mismatch is returned.
pub fn check_claims(c: &TdxClaims, cfg: &TdxConfig) -> Result<Vec<Failure>, TdxError> {
    let mut out = Vec::new();
    if !cfg.accepted_tcb_status.contains(&c.tcb_status) {
        out.push(failure(
            "tcb_status",
            cfg.accepted_tcb_status.join(" or "),
            &c.tcb_status,
        ));
    }
    if c.td_attributes.debug && !cfg.allow_debug {
        out.push(failure("td_attributes.debug", false, true));
    }
    if let Some(want) = &cfg.expected_report_data {
        let want = hex::encode(pad::<64>(want, "expected report_data")?);
        if want != c.report_data {
            out.push(failure("report_data", want, &c.report_data));
        }
    }
    if let Some(want) = &cfg.expected_mr_config_id {
        let want = hex::encode(pad::<48>(want, "expected mr_config_id")?);
        if want != c.mr_config_id {
            out.push(failure("mr_config_id", want, &c.mr_config_id));
        }
    }
    Ok(out)
}

/// Replay a CCEL and compare RTMR0..3 with the quote's; every mismatch is returned.
pub fn check_event_log(c: &TdxClaims, ccel: &[u8]) -> Result<Vec<Failure>, TdxError> {
    let replayed = ccel::replay(ccel)?;
    Ok(c.rtmrs()
        .iter()
        .zip(replayed.iter())
        .enumerate()
        .filter_map(|(i, (found, want))| {
            let want = hex::encode(want);
            (want != **found).then(|| {
                failure(
                    &format!("rtmr{i}"),
                    format!("{want} (event log replay)"),
                    found,
                )
            })
        })
        .collect())
}

/// Verifies TDX quotes against Intel's SGX root CA (or a configured one).
#[derive(Debug, Clone)]
pub struct TdxVerifier {
    root_ca_der: Vec<u8>,
}

/// Intel SGX Root CA (DER), the anchor of PCK, TCB-signing and QE-identity chains.
pub const INTEL_SGX_ROOT_CA_DER: &[u8] = include_bytes!("intel-sgx-root-ca.der");

impl Default for TdxVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl TdxVerifier {
    /// A verifier trusting Intel's SGX Root CA.
    pub fn new() -> Self {
        TdxVerifier {
            root_ca_der: INTEL_SGX_ROOT_CA_DER.to_vec(),
        }
    }

    /// A verifier trusting another root CA (DER).
    pub fn with_root_ca(root_ca_der: Vec<u8>) -> Self {
        TdxVerifier { root_ca_der }
    }

    /// Verify signatures, chains, CRLs, QE identity and TCB level; return the
    /// claims with the TCB status. `now` is seconds since the Unix epoch and
    /// must lie inside the collateral's validity window.
    pub fn verify_evidence(
        &self,
        quote: &[u8],
        collateral: &QuoteCollateralV3,
        now: u64,
    ) -> Result<TdxClaims, TdxError> {
        let q = Quote::parse(quote)?;
        // Debug and other attribute policy is ours (check_claims), so dcap-qvl
        // is told to allow debug and only checks cryptography and TCB.
        let v = dcap_qvl::verify::QuoteVerifier::new(self.root_ca_der.clone()).allow_debug(true);
        let rep = v
            .verify(&quote[..q.len], collateral, now)
            .map_err(|e| classify(&e))?;
        Ok(TdxClaims::from_quote(&q, rep.status, rep.advisory_ids))
    }

    /// [`verify_evidence`](Self::verify_evidence) then [`check_claims`]; any
    /// mismatch is an error listing all of them.
    pub fn verify(
        &self,
        quote: &[u8],
        collateral: &QuoteCollateralV3,
        cfg: &TdxConfig,
        now: u64,
    ) -> Result<TdxClaims, TdxError> {
        let c = self.verify_evidence(quote, collateral, now)?;
        let f = check_claims(&c, cfg)?;
        if f.is_empty() {
            Ok(c)
        } else {
            Err(TdxError::Claims(f))
        }
    }
}

/// [`TdxVerifier::verify`] with Intel's root CA.
pub fn verify(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    cfg: &TdxConfig,
    now: u64,
) -> Result<TdxClaims, TdxError> {
    TdxVerifier::new().verify(quote, collateral, cfg, now)
}
