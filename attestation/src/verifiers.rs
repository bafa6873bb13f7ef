//! Adapters that plug the SEV-SNP and TDX verifiers (modules `snp` and
//! `tdx`, owned by the SNP/TDX work) into [`Verifier`](crate::Verifier) through the
//! [`EvidenceVerifier`] trait: authenticity failures become checks named
//! after the signature or root, claim mismatches become configuration
//! checks, and named reference values (`snp.measurement`, `tdx.mr_td`, ...)
//! are compared.

use std::path::Path;

use crate::appraisal::{EvidenceVerifier, VerifiedEvidence, VerifyContext};
use crate::{snp, tdx, Category, Check, Error, TeeKind};

/// SEV-SNP evidence: a raw attestation report (certificates from the
/// collateral directory) or Trustee's SNP evidence JSON (certificates from
/// its `cert_chain`, or from the collateral directory when it has none).
#[derive(Clone, Debug)]
pub struct SnpEvidenceVerifier {
    pub verifier: snp::SnpVerifier,
    /// VCEK/VLEK/ASK/ARK certificates (DER or PEM) used with raw reports
    /// and with JSON evidence that carries none (`cert_chain` null or empty).
    pub certs: Vec<Vec<u8>>,
    /// Files of the collateral directory that were not taken, with the reason.
    pub skipped: Vec<(std::path::PathBuf, String)>,
}

impl SnpEvidenceVerifier {
    /// Built-in AMD roots, plus every `*.der`/`*.pem`/`*.crt`/`*.cert` file
    /// in `dir` that holds X.509 certificates, as endorsement certificates.
    /// Other files (JSON, keys, event logs) are skipped and listed in
    /// [`skipped`](Self::skipped).
    pub fn new(dir: Option<&Path>) -> Result<Self, Error> {
        let verifier = snp::SnpVerifier::builtin().map_err(|e| Error::Evidence {
            tee: TeeKind::Snp,
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

/// The trust-vector category of a named reference value: the launch
/// measurement and guest software are executables, the initdata fields are
/// init-data, firmware and platform identity are hardware, the rest is
/// configuration. (A firmware-only value such as `tdx.mr_td` therefore never
/// makes the executables claim affirming on its own.)
fn named_category(name: &str) -> Category {
    match name {
        "snp.measurement" | "snp.family_id" | "snp.image_id" | "snp.guest_svn" => {
            Category::Executables
        }
        "tdx.rtmr0" | "tdx.rtmr1" | "tdx.rtmr2" | "tdx.rtmr3" => Category::Executables,
        "snp.host_data" | "tdx.mr_config_id" => Category::InitData,
        "snp.chip_id" | "snp.firmware" | "tdx.mr_td" | "tdx.mr_seam" | "tdx.mr_signer_seam"
        | "tdx.tee_tcb_svn" | "tdx.tee_tcb_svn2" => Category::Hardware,
        _ => Category::Configuration,
    }
}

/// Compare the named reference values `prefix*` with the claims. A claim
/// that is missing or not a byte string fails with the reason instead of
/// comparing as empty.
fn named_checks(prefix: &str, claims: &serde_json::Value, ctx: &VerifyContext<'_>) -> Vec<Check> {
    let mut out = Vec::new();
    for (name, accepted) in &ctx.reference_values.named {
        let Some(field) = name.strip_prefix(prefix) else {
            continue;
        };
        let expected = accepted
            .iter()
            .map(hex::encode)
            .collect::<Vec<_>>()
            .join(" or ");
        let (ok, found) = match claims.get(field) {
            Some(serde_json::Value::String(s)) => match hex::decode(s) {
                Ok(b) => (accepted.contains(&b), s.to_ascii_lowercase()),
                Err(e) => (false, format!("claim {field} is not hex: {e}")),
            },
            Some(other) => (
                false,
                format!("claim {field} is {other}, not a byte string: name its fields instead"),
            ),
            None => (false, format!("the evidence has no claim {field}")),
        };
        out.push(Check::new(
            name.clone(),
            named_category(name),
            ok,
            expected,
            found,
        ));
    }
    out
}

/// The SNP TCB floor checks: reported, committed and launch TCB each at or
/// above the floor (the reference values' `snp_min_tcb`, or the
/// generation's default).
fn snp_tcb_checks(claims: &snp::SnpClaims, ctx: &VerifyContext<'_>) -> Vec<Check> {
    let floor = ctx
        .reference_values
        .snp_min_tcb
        .unwrap_or_else(|| crate::refvals::SnpTcbFloor::default_for(claims.generation));
    [
        ("reported_tcb", &claims.reported_tcb),
        ("committed_tcb", &claims.committed_tcb),
        ("launch_tcb", &claims.launch_tcb),
    ]
    .into_iter()
    .map(|(name, tcb)| {
        let short = floor.shortfalls(tcb);
        let found = if short.is_empty() {
            format!(
                "bootloader {} tee {} snp {} microcode {}",
                tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode
            )
        } else {
            short
                .iter()
                .map(|(f, got, min)| format!("{f} {got} < {min}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        Check::new(
            format!("snp {name}"),
            Category::TcbRevoked,
            short.is_empty(),
            format!(
                "at least bootloader {} tee {} snp {} microcode {}{}",
                floor.bootloader,
                floor.tee,
                floor.snp,
                floor.microcode,
                if tcb.fmc.is_some() {
                    format!(" fmc {}", floor.fmc)
                } else {
                    String::new()
                }
            ),
            found,
        )
    })
    .collect()
}

/// The category of a failed SNP/TDX claim check: states that expose the
/// guest (debug, VMPL > 0) are unsafe states, the TDX TCB status is an
/// out-of-date platform, anything else is configuration.
fn claim_category(claim: &str) -> Category {
    match claim {
        "vmpl" | "policy.debug" | "td_attributes.debug" => Category::UnsafeState,
        "tcb_status" => Category::TcbOutdated,
        _ => Category::Configuration,
    }
}

impl EvidenceVerifier for SnpEvidenceVerifier {
    fn verify(&self, evidence: &[u8], ctx: &VerifyContext<'_>) -> Result<VerifiedEvidence, Error> {
        let unusable = |e: snp::SnpError| Error::Evidence {
            tee: TeeKind::Snp,
            source: Box::new(e),
        };
        let (report, certs) = if evidence.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
            // A guest without the host's certificates sends `cert_chain:
            // null`: its VCEK then comes from the collateral directory.
            match snp::from_trustee_json(evidence).map_err(unusable)? {
                (report, certs) if certs.is_empty() => (report, self.certs.clone()),
                given => given,
            }
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
        let mut checks = vec![
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
        checks.extend(snp_tcb_checks(&claims, ctx));
        // VMPL and debug policy (report_data and host_data are compared by the Verifier).
        let failures = snp::check_claims(&claims, &snp::SnpConfig::default()).map_err(unusable)?;
        let fields = (
            hex_claim(TeeKind::Snp, "report_data", &claims.report_data)?,
            hex_claim(TeeKind::Snp, "host_data", &claims.host_data)?,
        );
        Ok(finish(
            TeeKind::Snp,
            checks,
            failures,
            claims.to_json(),
            fields,
            ctx,
        ))
    }
}

/// [`tdx::check_claims`], with an out-of-date TCB naming the advisories
/// that apply to it (a `tcb-outdated` warning, not a refusal).
fn tdx_claim_failures(
    claims: &tdx::TdxClaims,
    cfg: &tdx::TdxConfig,
) -> Result<Vec<crate::Failure>, tdx::TdxError> {
    let mut failures = tdx::check_claims(claims, cfg)?;
    for f in failures.iter_mut().filter(|f| f.claim == "tcb_status") {
        if !claims.advisory_ids.is_empty() {
            f.found = format!(
                "{} (advisories {})",
                f.found,
                claims.advisory_ids.join(", ")
            );
        }
    }
    Ok(failures)
}

/// A hex claim the SNP/TDX verifier produced, as bytes; a claim that is not
/// hex is a verifier bug, reported as unusable evidence rather than hidden.
fn hex_claim(tee: TeeKind, name: &str, value: &str) -> Result<Vec<u8>, Error> {
    hex::decode(value).map_err(|e| {
        Error::Input(format!(
            "{tee} claim {name} is not hex ({e}); expected hex bytes"
        ))
    })
}

/// The common tail of the SNP and TDX adapters: failed claim checks get
/// their category (unsafe state, out-of-date TCB, configuration), named
/// reference values (`snp.*` / `tdx.*`) are compared with the claims, and
/// the report_data / initdata fields are handed to the Verifier's common
/// checks.
fn finish(
    tee: TeeKind,
    mut checks: Vec<Check>,
    failures: Vec<crate::Failure>,
    claims: serde_json::Value,
    (report_data, init_data): (Vec<u8>, Vec<u8>),
    ctx: &VerifyContext<'_>,
) -> VerifiedEvidence {
    for f in failures {
        checks.push(Check::new(
            f.claim.clone(),
            claim_category(&f.claim),
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
        report_data,
        init_data: Some(init_data),
        claims,
        checks,
    }
}

fn failed(check: Check) -> VerifiedEvidence {
    failed_for(TeeKind::Snp, check)
}

fn failed_for(tee: TeeKind, check: Check) -> VerifiedEvidence {
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
pub struct TdxEvidenceVerifier {
    pub verifier: tdx::TdxVerifier,
    pub collateral: tdx::CollateralStore,
    /// A CCEL (TCG2 event log) to replay against the quote's RTMR0..3
    /// (`cloister verify --event-log`): each RTMR becomes a check naming the
    /// replayed and the quoted value; a log that cannot be replayed makes
    /// the evidence unusable.
    pub event_log: Option<Vec<u8>>,
}

impl TdxEvidenceVerifier {
    /// Intel's root CA, plus every `*.json` collateral file in `dir`.
    pub fn new(dir: Option<&Path>) -> Result<Self, Error> {
        let collateral = match dir {
            Some(d) => tdx::CollateralStore::from_dir(d).map_err(|e| Error::Evidence {
                tee: TeeKind::Tdx,
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

impl EvidenceVerifier for TdxEvidenceVerifier {
    fn verify(&self, evidence: &[u8], ctx: &VerifyContext<'_>) -> Result<VerifiedEvidence, Error> {
        let unusable = |e: tdx::TdxError| Error::Evidence {
            tee: TeeKind::Tdx,
            source: Box::new(e),
        };
        let (quote, json_log) = unwrap_tdx_evidence(evidence).map_err(unusable)?;
        let evidence = quote.as_ref();
        let event_log = json_log.as_deref().or(self.event_log.as_deref());
        tdx::Quote::parse(evidence).map_err(|e| unusable(e.into()))?;
        let collateral = self.collateral.for_quote(evidence).map_err(|e| {
            unusable(match e {
                tdx::TdxError::Collateral(m) => tdx::TdxError::Collateral(format!(
                    "{m} (pass --collateral-dir DIR with the platform's QuoteCollateralV3 JSON)"
                )),
                e => e,
            })
        })?;
        let now = u64::try_from(ctx.now).unwrap_or(0);
        let claims = match self.verifier.verify_evidence(evidence, collateral, now) {
            Ok(c) => c,
            Err(e @ tdx::TdxError::Signature(_)) => {
                return Ok(failed_for(
                    TeeKind::Tdx,
                    Check::new(
                        "tdx quote signature",
                        Category::Signature,
                        false,
                        "a valid quote, QE report and PCK chain to the Intel SGX root",
                        e.to_string(),
                    ),
                ))
            }
            // dcap-qvl refuses a Revoked TCB outright: contraindicated.
            Err(tdx::TdxError::Verification(m)) if m.contains("TCB") => {
                return Ok(failed_for(
                    TeeKind::Tdx,
                    Check::new("tcb_status", Category::TcbRevoked, false, "not Revoked", m),
                ))
            }
            Err(e @ tdx::TdxError::Verification(_)) => {
                return Ok(failed_for(
                    TeeKind::Tdx,
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
        let failures = tdx_claim_failures(&claims, &cfg).map_err(unusable)?;
        if !failures.iter().any(|f| f.claim == "tcb_status") {
            checks.push(Check::new(
                "tcb_status",
                Category::TcbOutdated,
                true,
                cfg.accepted_tcb_status.join(" or "),
                claims.tcb_status.clone(),
            ));
        }
        let fields = (
            hex_claim(TeeKind::Tdx, "report_data", &claims.report_data)?,
            hex_claim(TeeKind::Tdx, "mr_config_id", &claims.mr_config_id)?,
        );
        Ok(finish(
            TeeKind::Tdx,
            checks,
            failures,
            claims.to_json(),
            fields,
            ctx,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refvals::ReferenceValues;

    fn ctx(rv: &ReferenceValues) -> VerifyContext<'_> {
        VerifyContext {
            expected_report_data: None,
            init_data_digest: None,
            now: 0,
            reference_values: rv,
        }
    }

    #[test]
    fn named_values_are_graded_in_their_own_category() {
        let rv = ReferenceValues::parse(
            r#"{"named": {"tdx.mr_td": ["aa"], "tdx.rtmr1": ["bb"], "tdx.mr_config_id": ["cc"],
                          "tdx.xfam": ["dd"]}}"#,
        )
        .unwrap();
        let claims =
            serde_json::json!({"mr_td": "AA", "rtmr1": "bb", "mr_config_id": "cc", "xfam": "00"});
        let checks = named_checks("tdx.", &claims, &ctx(&rv));
        let by = |n: &str| checks.iter().find(|c| c.claim == n).unwrap().clone();
        assert_eq!(by("tdx.mr_td").category, Category::Hardware);
        assert!(
            by("tdx.mr_td").ok,
            "hex compares case-insensitively as bytes"
        );
        assert_eq!(by("tdx.rtmr1").category, Category::Executables);
        assert_eq!(by("tdx.mr_config_id").category, Category::InitData);
        assert_eq!(by("tdx.xfam").category, Category::Configuration);
        assert!(!by("tdx.xfam").ok);
    }

    #[test]
    fn a_named_value_for_a_missing_or_structured_claim_fails_with_the_reason() {
        let rv = ReferenceValues::parse(
            r#"{"named": {"snp.reported_tcb": ["00"], "snp.nonexistent": ["00"], "snp.measurement": ["!!"]}}"#,
        );
        // "!!" is neither hex nor base64: refused at parse.
        assert!(rv.is_err());
        let rv = ReferenceValues::parse(
            r#"{"named": {"snp.reported_tcb": ["00"], "snp.nonexistent": ["00"]}}"#,
        )
        .unwrap();
        let claims = serde_json::json!({"reported_tcb": {"snp": 8}, "measurement": "00"});
        let checks = named_checks("snp.", &claims, &ctx(&rv));
        assert!(checks.iter().all(|c| !c.ok));
        let tcb = checks
            .iter()
            .find(|c| c.claim == "snp.reported_tcb")
            .unwrap();
        assert!(tcb.found.contains("not a byte string"), "{tcb:?}");
        let none = checks
            .iter()
            .find(|c| c.claim == "snp.nonexistent")
            .unwrap();
        assert!(none.found.contains("no claim nonexistent"), "{none:?}");
    }

    #[test]
    fn an_out_of_date_tdx_tcb_is_a_warning_naming_its_advisories() {
        let q = tdx::Quote::parse(include_bytes!("../testdata/tdx/dcap-qvl-tdx_quote")).unwrap();
        let c = tdx::TdxClaims::from_quote(&q, "OutOfDate".into(), vec!["INTEL-SA-00837".into()]);
        let f = tdx_claim_failures(&c, &tdx::TdxConfig::default()).unwrap();
        let tcb = f.iter().find(|f| f.claim == "tcb_status").unwrap();
        assert_eq!(tcb.found, "OutOfDate (advisories INTEL-SA-00837)");
        assert_eq!(claim_category(&tcb.claim), Category::TcbOutdated);
    }

    #[test]
    fn unsafe_states_and_tcb_status_get_their_categories() {
        assert_eq!(claim_category("vmpl"), Category::UnsafeState);
        assert_eq!(claim_category("policy.debug"), Category::UnsafeState);
        assert_eq!(claim_category("td_attributes.debug"), Category::UnsafeState);
        assert_eq!(claim_category("tcb_status"), Category::TcbOutdated);
        assert_eq!(claim_category("other"), Category::Configuration);
    }
}
