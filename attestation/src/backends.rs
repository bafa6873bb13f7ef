//! Adapters that plug the SEV-SNP verifier (module `snp`, owned by the
//! SNP/TDX work) into [`Verifier`](crate::Verifier) through the
//! [`EvidenceVerifier`] trait: authenticity failures become checks named
//! after the signature or root, claim mismatches become configuration
//! checks, and named reference values (`snp.measurement`, ...) are compared.

use std::path::Path;

use crate::appraisal::{EvidenceVerifier, VerifiedEvidence, VerifyContext};
use crate::{snp, Category, Check, Error, Tee};

/// SEV-SNP evidence: a raw attestation report (certificates from the
/// collateral directory) or Trustee's SNP evidence JSON.
#[derive(Clone, Debug)]
pub struct SnpBackend {
    pub verifier: snp::SnpVerifier,
    /// VCEK/VLEK/ASK/ARK certificates (DER or PEM) used with raw reports.
    pub certs: Vec<Vec<u8>>,
}

impl SnpBackend {
    /// Built-in AMD roots, plus every `*.der`/`*.pem`/`*.crt` file in `dir`
    /// as endorsement certificates.
    pub fn new(dir: Option<&Path>) -> Result<Self, Error> {
        let verifier = snp::SnpVerifier::builtin().map_err(|e| Error::Evidence {
            tee: Tee::Snp,
            source: Box::new(e),
        })?;
        let mut certs = Vec::new();
        if let Some(dir) = dir {
            let rd = std::fs::read_dir(dir)
                .map_err(|e| Error::Input(format!("collateral dir {}: {e}", dir.display())))?;
            let mut paths: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
            paths.sort();
            for p in paths {
                let ext = p.extension().and_then(|x| x.to_str()).unwrap_or_default();
                if ["der", "pem", "crt", "cert"].contains(&ext) {
                    certs.push(
                        std::fs::read(&p)
                            .map_err(|e| Error::Input(format!("{}: {e}", p.display())))?,
                    );
                }
            }
        }
        Ok(Self { verifier, certs })
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
        // VMPL and debug policy (report_data and host_data are compared by the Verifier).
        let cfg = snp::SnpConfig::default();
        for f in snp::check_claims(&claims, &cfg).map_err(unusable)? {
            checks.push(Check::new(
                f.claim,
                Category::Configuration,
                false,
                f.expected,
                f.found,
            ));
        }
        let json = claims.to_json();
        checks.extend(named_checks("snp.", &json, ctx));
        Ok(VerifiedEvidence {
            tee: Tee::Snp,
            simulated: false,
            report_data: hex::decode(&claims.report_data).unwrap_or_default(),
            init_data: Some(hex::decode(&claims.host_data).unwrap_or_default()),
            claims: json,
            checks,
        })
    }
}

fn failed(check: Check) -> VerifiedEvidence {
    VerifiedEvidence {
        tee: Tee::Snp,
        simulated: false,
        claims: serde_json::json!({}),
        report_data: Vec::new(),
        init_data: None,
        checks: vec![check],
    }
}
