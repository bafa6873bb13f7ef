//! `cloister verify`: verify and appraise one piece of evidence, print the
//! EAR claims as JSON. Exit status: 0 affirming, 1 warning or worse, 2
//! unusable input.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use cloister_attestation::cca::TrustAnchorStore;
use cloister_attestation::ear::{EarIssuer, Submod};
use cloister_attestation::verifiers::{SnpEvidenceVerifier, TdxEvidenceVerifier};
use cloister_attestation::{
    ReferenceValues, ReportData, Status, TeeKind, Verifier, VerifierConfig,
};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Kind of evidence: cca, snp, tdx or sim.
    #[arg(long, value_parser = cloister_attestation::evidence_kind_parser())]
    tee: TeeKind,
    /// Evidence file (CCA token CBOR or Trustee JSON, SNP report or JSON, TDX quote or JSON).
    #[arg(long)]
    evidence: PathBuf,
    /// Expected report_data (the nonce the evidence binds) in hex,
    /// zero-padded to 64 bytes: what `cloister evidence --report-data` was given.
    #[arg(long = "report-data", alias = "nonce", value_name = "HEX")]
    nonce: Option<String>,
    /// Expected initdata digest in hex (CCA RPV, SNP HOST_DATA, TDX MRCONFIGID).
    #[arg(long)]
    init_data_digest: Option<String>,
    /// Trust anchors: CCA/sim CPAK store (ccatoken ta.json format, JWK or PEM).
    #[arg(long)]
    trust_anchors: Option<PathBuf>,
    /// Reference values (Cloister JSON, ccatoken rv.json, or RVPS sample provenance).
    #[arg(long)]
    reference_values: Option<PathBuf>,
    /// Collateral directory (SNP certificates, TDX collateral). Files that
    /// are not collateral are skipped (and listed on stderr).
    #[arg(long = "collateral-dir", alias = "collateral", value_name = "DIR")]
    collateral: Option<PathBuf>,
    /// TDX only: CCEL event log (TCG2 crypto-agile, as the ACPI CCEL table
    /// holds it) to replay against the quote's RTMR0..3.
    #[arg(long)]
    event_log: Option<PathBuf>,
    /// Evaluation time (RFC 3339); default: now.
    #[arg(long)]
    now: Option<String>,
    /// Accept simulated evidence: appraise it on its checks (the EAR still marks it simulated).
    #[arg(long)]
    allow_simulated: bool,
}

enum Outcome {
    Appraised(Status),
    Unusable(anyhow::Error),
}

pub fn run(a: VerifyArgs) -> anyhow::Result<()> {
    let code = match verify(&a) {
        Outcome::Appraised(Status::Affirming) => 0,
        Outcome::Appraised(_) => 1,
        Outcome::Unusable(e) => {
            eprintln!("error: {}", chain(&e));
            2
        }
    };
    std::process::exit(code)
}

/// The error and its causes, each message once (library errors often
/// include their source's text in their own message).
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let m = cause.to_string();
        if out.contains(&m) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&m);
    }
    out
}

fn read(p: &PathBuf, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()))
}

fn verify(a: &VerifyArgs) -> Outcome {
    match prepare_and_appraise(a) {
        Ok(s) => Outcome::Appraised(s),
        Err(e) => Outcome::Unusable(e),
    }
}

fn prepare_and_appraise(a: &VerifyArgs) -> anyhow::Result<Status> {
    let now = match &a.now {
        Some(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("--now {s:?} is not RFC 3339"))?
            .unix_timestamp(),
        None => time::OffsetDateTime::now_utc().unix_timestamp(),
    };
    let nonce = a.nonce.as_deref().map(ReportData::from_hex).transpose()?;
    let init = a
        .init_data_digest
        .as_deref()
        .map(|s| hex::decode(s.trim()).context("--init-data-digest is not hex"))
        .transpose()?;
    let mut cfg = VerifierConfig {
        allow_simulated: a.allow_simulated,
        collateral_dir: a.collateral.clone(),
        ..Default::default()
    };
    if let Some(p) = &a.trust_anchors {
        let text =
            String::from_utf8(read(p, "trust anchors")?).context("trust anchors are not UTF-8")?;
        cfg.cca_trust_anchors = TrustAnchorStore::parse(&text)?;
    }
    if let Some(p) = &a.reference_values {
        let text = String::from_utf8(read(p, "reference values")?)
            .context("reference values are not UTF-8")?;
        cfg.reference_values = ReferenceValues::parse(&text)?;
    }
    let mut verifier = Verifier::new(cfg)?;
    if a.tee == TeeKind::Snp {
        let backend = SnpEvidenceVerifier::new(a.collateral.as_deref())?;
        for (p, why) in &backend.skipped {
            eprintln!("note: collateral: skipped {}: {why}", p.display());
        }
        verifier = verifier.with_verifier(TeeKind::Snp, Arc::new(backend));
    }
    if a.event_log.is_some() && a.tee != TeeKind::Tdx {
        anyhow::bail!("--event-log applies to --tee tdx only");
    }
    if a.tee == TeeKind::Tdx {
        let mut backend = TdxEvidenceVerifier::new(a.collateral.as_deref())?;
        for (p, why) in backend.collateral.skipped() {
            eprintln!("note: collateral: skipped {}: {why}", p.display());
        }
        if let Some(p) = &a.event_log {
            backend = backend.with_event_log(read(p, "event log")?);
        }
        verifier = verifier.with_verifier(TeeKind::Tdx, Arc::new(backend));
    }
    let evidence = read(&a.evidence, "evidence")?;
    let appraisal = verifier.appraise(a.tee, &evidence, nonce, init.as_deref(), now)?;
    for f in &appraisal.failures {
        eprintln!("{}: {f}", appraisal.status.as_str());
    }
    let issuer = EarIssuer::generate();
    let claims = issuer.claims_json(
        &[Submod {
            name: "cpu0".into(),
            appraisal: &appraisal,
            runtime_data_claims: None,
            init_data_claims: None,
        }],
        now,
    )?;
    println!("{}", serde_json::to_string_pretty(&claims)?);
    Ok(appraisal.status)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn td(p: &str) -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../attestation/testdata/cca/"
        ))
        .join(p)
    }

    fn args(evidence: &str, ta: &str) -> VerifyArgs {
        VerifyArgs {
            tee: TeeKind::Cca,
            evidence: td(evidence),
            nonce: None,
            init_data_digest: None,
            trust_anchors: Some(td(ta)),
            reference_values: None,
            collateral: None,
            event_log: None,
            now: Some("2026-11-28T12:00:00Z".into()),
            allow_simulated: false,
        }
    }

    fn code(a: &VerifyArgs) -> i32 {
        match verify(a) {
            Outcome::Appraised(Status::Affirming) => 0,
            Outcome::Appraised(_) => 1,
            Outcome::Unusable(_) => 2,
        }
    }

    #[test]
    fn exit_codes() {
        let mut a = args("ccatoken-cca-token-01.cbor", "ccatoken-ta-tfa.json");
        a.reference_values = Some(td("ccatoken-rv.json"));
        a.nonce = Some("ab".repeat(64));
        assert_eq!(code(&a), 0);
        a.nonce = Some("ab".repeat(32)); // padded with zeros: no longer the challenge
        assert_eq!(code(&a), 1);
        // No reference values: executables unrecognised, a warning.
        assert_eq!(
            code(&args("ccatoken-cca-token-01.cbor", "ccatoken-ta-tfa.json")),
            1
        );
        assert_eq!(
            code(&args("ccatoken-bug-33-repro.cbor", "ccatoken-ta-tfa.json")),
            1
        );
        assert_eq!(code(&args("ccatoken-rv.json", "ccatoken-ta-tfa.json")), 2);
        assert_eq!(code(&args("no-such-file", "ccatoken-ta-tfa.json")), 2);
        let mut a = args("ccatoken-cca-token-01.cbor", "ccatoken-ta-tfa.json");
        a.now = Some("yesterday".into());
        assert_eq!(code(&a), 2);
        let mut a = args("ccatoken-cca-token-01.cbor", "ccatoken-ta-tfa.json");
        a.nonce = Some("zz".into());
        assert_eq!(code(&a), 2);
        let mut a = args("ccatoken-cca-token-01.cbor", "ccatoken-ta-tfa.json");
        a.tee = TeeKind::Tdx;
        assert_eq!(code(&a), 2);
    }

    #[test]
    fn tdx_exit_codes() {
        let tdx = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../attestation/testdata/tdx/"
        ));
        let dir = std::env::temp_dir().join(format!("cloister-verify-tdx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for n in [
            "dcap-qvl-tdx_quote_collateral.json",
            "dcap-qvl-tdx_quote_outdated_collateral.json",
        ] {
            std::fs::copy(tdx.join(n), dir.join(n)).unwrap();
        }
        let rv = dir.join("rv.txt");
        let mut a = tdx_vector_args(&tdx, &rv, &dir);
        assert_eq!(code(&a), 0);
        a.nonce = Some("11".repeat(64));
        assert_eq!(code(&a), 1);
        a.nonce = None;
        a.now = Some("2025-07-19T10:15:00Z".into()); // collateral expired
        assert_eq!(code(&a), 1);
        a.evidence = tdx.join("dcap-qvl-tdx_quote_outdated");
        a.now = Some("2026-02-18T10:59:51Z".into());
        assert_eq!(code(&a), 1);
        a.evidence = tdx.join("dcap-qvl-tdx_quote_collateral.json"); // not a quote
        assert_eq!(code(&a), 2);
        a.evidence = tdx.join("dcap-qvl-tdx_quote");
        a.collateral = None;
        assert_eq!(code(&a), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `cloister verify --tee tdx` of the dcap-qvl vector quote with its
    /// MRTD as reference value (written to `rv`) and `collateral` as the
    /// collateral dir, at a time its collateral is valid.
    fn tdx_vector_args(
        tdx: &std::path::Path,
        rv: &std::path::Path,
        collateral: &std::path::Path,
    ) -> VerifyArgs {
        // Reference values that identify the launch: MRTD and the quote's
        // RTMR0..2 (MRTD alone is firmware only, so not affirming).
        let q = cloister_attestation::tdx::Quote::parse(
            &std::fs::read(tdx.join("dcap-qvl-tdx_quote")).unwrap(),
        )
        .unwrap();
        let c = cloister_attestation::tdx::TdxClaims::from_quote(&q, "UpToDate".into(), Vec::new());
        std::fs::write(
            rv,
            format!(
                r#"{{"named": {{"tdx.mr_td": ["91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7"], "tdx.rtmr0": ["{}"], "tdx.rtmr1": ["{}"], "tdx.rtmr2": ["{}"]}}}}"#,
                c.rtmr0, c.rtmr1, c.rtmr2
            ),
        )
        .unwrap();
        VerifyArgs {
            tee: TeeKind::Tdx,
            evidence: tdx.join("dcap-qvl-tdx_quote"),
            nonce: None,
            init_data_digest: Some(String::new()),
            trust_anchors: None,
            reference_values: Some(rv.to_path_buf()),
            collateral: Some(collateral.to_path_buf()),
            event_log: None,
            now: Some("2025-06-19T10:33:27Z".into()),
            allow_simulated: false,
        }
    }

    #[test]
    fn tdx_event_log_and_unrelated_collateral_files() {
        let tdx = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../attestation/testdata/tdx/"
        ));
        let dir = std::env::temp_dir().join(format!("cloister-verify-ccel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            tdx.join("dcap-qvl-tdx_quote_collateral.json"),
            dir.join("collateral.json"),
        )
        .unwrap();
        // Unrelated files in the collateral dir are skipped, not fatal.
        std::fs::copy(td("ccatoken-rv.json"), dir.join("rv.json")).unwrap();
        std::fs::copy(td("trustee-cca-claims.json"), dir.join("claims.json")).unwrap();
        std::fs::write(dir.join("README.txt"), "notes").unwrap();
        let rv = dir.join("tdx-rv.json");
        let mut a = tdx_vector_args(&tdx, &rv, &dir);
        assert_eq!(code(&a), 0);
        // The OVMF CCEL does not replay to this quote's RTMRs: a verdict (1).
        a.event_log = Some(tdx.join("trustee-CCEL_data_ovmf"));
        assert_eq!(code(&a), 1);
        // Not an event log / missing file: unusable (2), the reason said once.
        a.event_log = Some(dir.join("rv.json"));
        assert_eq!(code(&a), 2);
        let Outcome::Unusable(e) = verify(&a) else {
            panic!("a JSON file is not an event log")
        };
        let msg = chain(&e);
        assert!(msg.contains("CCEL: event log header"), "{msg}");
        assert_eq!(msg.matches("event log header").count(), 1, "{msg}");
        a.event_log = Some(dir.join("no-such-log"));
        assert_eq!(code(&a), 2);
        // --event-log with another TEE: unusable (2).
        let mut c = args("ccatoken-cca-token-01.cbor", "ccatoken-ta-tfa.json");
        c.event_log = Some(tdx.join("trustee-CCEL_data_ovmf"));
        assert_eq!(code(&c), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
