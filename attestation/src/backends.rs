//! Adapters that plug the SEV-SNP and TDX verifiers (modules `snp` and
//! `tdx`, owned by the SNP/TDX work) into [`Verifier`](crate::Verifier) through the
//! [`EvidenceVerifier`] trait: authenticity failures become checks named
//! after the signature or root, claim mismatches become configuration
//! checks, and named reference values (`snp.measurement`, `tdx.mr_td`, ...)
//! are compared.

use std::path::Path;

use crate::appraisal::{EvidenceVerifier, VerifiedEvidence, VerifyContext};
use crate::{snp, tdx, Category, Check, Error, Tee};

/// SEV-SNP evidence: a raw attestation report (certificates from the
/// collateral directory) or Trustee's SNP evidence JSON.
#[derive(Clone, Debug)]
pub struct SnpBackend {
    pub verifier: snp::SnpVerifier,
    /// VCEK/VLEK/ASK/ARK certificates (DER or PEM) used with raw reports.
    pub certs: Vec<Vec<u8>>,
    /// Files of the collateral directory that were not taken, with the reason.
    pub skipped: Vec<(std::path::PathBuf, String)>,
}

impl SnpBackend {
    /// Built-in AMD roots, plus every `*.der`/`*.pem`/`*.crt`/`*.cert` file
    /// in `dir` that holds X.509 certificates, as endorsement certificates.
    /// Other files (JSON, keys, event logs) are skipped and listed in
    /// [`skipped`](Self::skipped).
    pub fn new(dir: Option<&Path>) -> Result<Self, Error> {
        let verifier = snp::SnpVerifier::builtin().map_err(|e| Error::Evidence {
            tee: Tee::Snp,
            source: Box::new(e),
        })?;
        let mut certs = Vec::new();
        let mut skipped = Vec::new();
        if let Some(dir) = dir {
            let rd = std::fs::read_dir(dir)
                .map_err(|e| Error::Input(format!("collateral dir {}: {e}", dir.display())))?;
            let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                if !p.is_file() {
                    continue;
                }
                let ext = p.extension().and_then(|x| x.to_str()).unwrap_or_default();
                if !["der", "pem", "crt", "cert"].contains(&ext) {
                    skipped.push((p, "not a .der/.pem/.crt/.cert file".into()));
                    continue;
                }
                let b =
                    std::fs::read(&p).map_err(|e| Error::Input(format!("{}: {e}", p.display())))?;
                match snp::certs::parse_bundle(&b, &p.display().to_string()) {
                    Ok(_) => certs.push(b),
                    Err(e) => skipped.push((p, format!("not an X.509 certificate: {e}"))),
                }
            }
        }
        Ok(Self {
            verifier,
            certs,
            skipped,
        })
    }
}

fn named_checks(prefix: &str, claims: &serde_json::Value, ctx: &VerifyContext<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, accepted) in &ctx.reference_values.named {
        let Some(field) = name.strip_prefix(prefix) else {
            continue;
        };
        let found = claims
            .get(field)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let ok = accepted
            .iter()
            .any(|a| hex::encode(a) == found.to_ascii_lowercase());
        out.push(Check::new(
            name.clone(),
            Category::Executables,
            ok,
            accepted
                .iter()
                .map(hex::encode)
                .collect::<Vec<_>>()
                .join(" or "),
            found,
        ));
    }
    out
}

impl EvidenceVerifier for SnpBackend {
    fn verify(&self, evidence: &[u8], ctx: &VerifyContext<'_>) -> Result<VerifiedEvidence, Error> {
        let unusable = |e: snp::SnpError| Error::Evidence {
            tee: Tee::Snp,
            source: Box::new(e),
        };
        let (report, certs) = if evidence.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            snp::from_trustee_json(evidence).map_err(unusable)?
        } else {
            (evidence.to_vec(), self.certs.clone())
        };
        let now = u64::try_from(ctx.now).unwrap_or(0);
        let claims = match self.verifier.verify_evidence(&report, &certs, now) {
            Ok(c) => c,
            Err(e @ snp::SnpError::UnknownRoot(_)) => {
                return Ok(failed(Check::new(
                    "snp endorsement chain",
                    Category::TrustAnchor,
                    false,
                    "a chain to a trusted AMD root",
                    e.to_string(),
                )))
            }
            Err(
                e @ (snp::SnpError::Signature { .. }
                | snp::SnpError::Certificate { .. }
                | snp::SnpError::Validity { .. }),
            ) => {
                return Ok(failed(Check::new(
                    "snp report signature",
                    Category::Signature,
                    false,
                    "a valid signature chain",
                    e.to_string(),
                )))
            }
            Err(e) => return Err(unusable(e)),
        };
        let checks = vec![
            Check::new(
                "snp endorsement chain",
                Category::TrustAnchor,
                true,
                "a chain to a trusted AMD root",
                "valid",
            ),
            Check::new(
                "snp report signature",
                Category::Signature,
                true,
                "valid ECDSA P-384 signature",
                "valid",
            ),
        ];
        // VMPL and debug policy (report_data and host_data are compared by the Verifier).
        let failures = snp::check_claims(&claims, &snp::SnpConfig::default()).map_err(unusable)?;
        Ok(finish(
            Tee::Snp,
            checks,
            failures,
            claims.to_json(),
            (&claims.report_data, &claims.host_data),
            ctx,
        ))
    }
}

/// The common tail of the SNP and TDX adapters: failed claim checks become
/// configuration checks, named reference values (`snp.*` / `tdx.*`) are
/// compared with the claims, and the report_data / initdata fields (hex in
/// the claims) are handed to the Verifier's common checks.
fn finish(
    tee: Tee,
    mut checks: Vec<Check>,
    failures: Vec<crate::Failure>,
    claims: serde_json::Value,
    (report_data, init_data): (&str, &str),
    ctx: &VerifyContext<'_>,
) -> VerifiedEvidence {
    for f in failures {
        checks.push(Check::new(
            f.claim,
            Category::Configuration,
            false,
            f.expected,
            f.found,
        ));
    }
    let prefix = format!("{}.", tee.as_str());
    checks.extend(named_checks(&prefix, &claims, ctx));
    VerifiedEvidence {
        tee,
        simulated: false,
        report_data: hex::decode(report_data).unwrap_or_default(),
        init_data: Some(hex::decode(init_data).unwrap_or_default()),
        claims,
        checks,
    }
}

fn failed(check: Check) -> VerifiedEvidence {
    failed_for(Tee::Snp, check)
}

fn failed_for(tee: Tee, check: Check) -> VerifiedEvidence {
    VerifiedEvidence {
        tee,
        simulated: false,
        claims: serde_json::json!({}),
        report_data: Vec::new(),
        init_data: None,
        checks: vec![check],
    }
}

/// TDX evidence: a raw DCAP quote (v4 or v5), verified against Intel's SGX
/// root CA with collateral (QuoteCollateralV3 JSON) picked by the quote's FMSPC.
#[derive(Clone, Debug, Default)]
pub struct TdxBackend {
    pub verifier: tdx::TdxVerifier,
    pub collateral: tdx::CollateralStore,
    /// A CCEL (TCG2 event log) to replay against the quote's RTMR0..3
    /// (`cloister verify --event-log`): each RTMR becomes a check naming the
    /// replayed and the quoted value; a log that cannot be replayed makes
    /// the evidence unusable.
    pub event_log: Option<Vec<u8>>,
}

impl TdxBackend {
    /// Intel's root CA, plus every `*.json` collateral file in `dir`.
    pub fn new(dir: Option<&Path>) -> Result<Self, Error> {
        let collateral = match dir {
            Some(d) => tdx::CollateralStore::from_dir(d).map_err(|e| Error::Evidence {
                tee: Tee::Tdx,
                source: Box::new(e),
            })?,
            None => tdx::CollateralStore::new(),
        };
        Ok(Self {
            verifier: tdx::TdxVerifier::new(),
            collateral,
            event_log: None,
        })
    }

    /// Replay `ccel` against the RTMRs of every quote verified.
    pub fn with_event_log(mut self, ccel: Vec<u8>) -> Self {
        self.event_log = Some(ccel);
        self
    }
}

/// A TDX quote (borrowed when raw, decoded from JSON otherwise) and the
/// event log the evidence carried, if any.
pub type TdxEvidence<'a> = (std::borrow::Cow<'a, [u8]>, Option<Vec<u8>>);

/// Accept a raw quote or Trustee's TDX evidence JSON
/// `{"quote": base64, "cc_eventlog": base64 | null}`; returns the quote and
/// the event log, if the JSON carries one.
pub fn unwrap_tdx_evidence(evidence: &[u8]) -> Result<TdxEvidence<'_>, tdx::TdxError> {
    use base64::Engine as _;
    if evidence.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Ok((std::borrow::Cow::Borrowed(evidence), None));
    }
    let bad = tdx::TdxError::EvidenceJson;
    let v: serde_json::Value = serde_json::from_slice(evidence).map_err(|e| bad(e.to_string()))?;
    let b64 = |k: &str, s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s.trim()))
            .map_err(|e| bad(format!("{k} is not base64: {e}")))
    };
    let quote = match v.get("quote") {
        Some(serde_json::Value::String(s)) => b64("quote", s)?,
        _ => return Err(bad("expected a base64 string \"quote\"".into())),
    };
    let log = match v.get("cc_eventlog") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(b64("cc_eventlog", s)?),
        Some(_) => return Err(bad("cc_eventlog must be a base64 string or null".into())),
    };
    Ok((std::borrow::Cow::Owned(quote), log))
}

impl EvidenceVerifier for TdxBackend {
    fn verify(&self, evidence: &[u8], ctx: &VerifyContext<'_>) -> Result<VerifiedEvidence, Error> {
        let unusable = |e: tdx::TdxError| Error::Evidence {
            tee: Tee::Tdx,
            source: Box::new(e),
        };
        let (quote, json_log) = unwrap_tdx_evidence(evidence).map_err(unusable)?;
        let evidence = quote.as_ref();
        let event_log = json_log.as_deref().or(self.event_log.as_deref());
        tdx::Quote::parse(evidence).map_err(|e| unusable(e.into()))?;
        let collateral = self.collateral.for_quote(evidence).map_err(|e| {
            unusable(match e {
                tdx::TdxError::Collateral(m) => tdx::TdxError::Collateral(format!(
                    "{m} (pass --collateral DIR with the platform's QuoteCollateralV3 JSON)"
                )),
                e => e,
            })
        })?;
        let now = u64::try_from(ctx.now).unwrap_or(0);
        let claims = match self.verifier.verify_evidence(evidence, collateral, now) {
            Ok(c) => c,
            Err(e @ tdx::TdxError::Signature(_)) => {
                return Ok(failed_for(
                    Tee::Tdx,
                    Check::new(
                        "tdx quote signature",
                        Category::Signature,
                        false,
                        "a valid quote, QE report and PCK chain to the Intel SGX root",
                        e.to_string(),
                    ),
                ))
            }
            Err(tdx::TdxError::Verification(m)) if m.contains("TCB") => {
                return Ok(failed_for(
                    Tee::Tdx,
                    Check::new("tcb_status", Category::Configuration, false, "UpToDate", m),
                ))
            }
            Err(e @ tdx::TdxError::Verification(_)) => {
                return Ok(failed_for(
                    Tee::Tdx,
                    Check::new(
                        "tdx collateral",
                        Category::TrustAnchor,
                        false,
                        "collateral valid at the evaluation time",
                        e.to_string(),
                    ),
                ))
            }
            Err(e) => return Err(unusable(e)),
        };
        let mut checks = vec![
            Check::new(
                "tdx pck chain",
                Category::TrustAnchor,
                true,
                "a chain to the Intel SGX root CA",
                "valid",
            ),
            Check::new(
                "tdx quote signature",
                Category::Signature,
                true,
                "valid ECDSA P-256 quote and QE report signatures",
                "valid",
            ),
        ];
        if let Some(log) = event_log {
            let replayed = tdx::ccel::replay(log).map_err(|e| unusable(e.into()))?;
            for (i, (want, found)) in replayed.iter().zip(claims.rtmrs()).enumerate() {
                let want = hex::encode(want);
                checks.push(Check::new(
                    format!("rtmr{i}"),
                    Category::Executables,
                    want == *found,
                    format!("{want} (event log replay)"),
                    found.to_string(),
                ));
            }
        }
        // TCB status and debug (report_data and MRCONFIGID are compared by the Verifier).
        let cfg = tdx::TdxConfig::default();
        let failures = tdx::check_claims(&claims, &cfg).map_err(unusable)?;
        if !failures.iter().any(|f| f.claim == "tcb_status") {
            checks.push(Check::new(
                "tcb_status",
                Category::Configuration,
                true,
                cfg.accepted_tcb_status.join(" or "),
                claims.tcb_status.clone(),
            ));
        }
        Ok(finish(
            Tee::Tdx,
            checks,
            failures,
            claims.to_json(),
            (&claims.report_data, &claims.mr_config_id),
            ctx,
        ))
    }
}
