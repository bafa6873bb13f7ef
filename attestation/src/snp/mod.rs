//! AMD SEV-SNP evidence: the attestation report (v2–v5) with its VCEK or VLEK
//! certificate chain to AMD's ARK.
//!
//! [`SnpVerifier::verify_evidence`] establishes authenticity: the report
//! parses, the endorsement key chains to a trusted ARK (via the ASK for a
//! VCEK, the ASVK for a VLEK), every certificate is valid at the given time,
//! the key's TCB extensions equal the report's `reported_tcb`, a VCEK's hwID
//! equals `chip_id`, and the ECDSA P-384 report signature verifies. It yields
//! [`SnpClaims`]. [`check_claims`] then compares the claims with what the
//! relying party expects (VMPL, debug policy bit, report_data, host_data) and
//! names every mismatch. Appraisal against reference measurements is not done
//! here.

pub(crate) mod certs;
mod report;

use std::sync::OnceLock;

use cloister_tee_types::snp_evidence;
use serde::Serialize;

pub use certs::TrustStore;
use certs::{Cert, OID_BL, OID_FMC, OID_SNP, OID_TEE, OID_UCODE};
pub use report::{Generation, Report, ReportError, SigningKey, Tcb, REPORT_LEN, SIGNED_LEN};

pub use crate::Failure;

fn failure(claim: &str, expected: impl ToString, found: impl ToString) -> Failure {
    Failure {
        claim: claim.to_string(),
        expected: expected.to_string(),
        found: found.to_string(),
    }
}

/// Why SNP evidence was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpError {
    /// The report bytes are not a supported attestation report.
    #[error("malformed SNP report: {0}")]
    Report(#[from] ReportError),
    /// A certificate could not be parsed or lacks what we need.
    #[error("certificate {what}: {reason}")]
    Certificate {
        /// Which certificate.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// No endorsement key certificate of the kind the report names.
    #[error("no {0} certificate given, but the report is signed by a {0}")]
    MissingKey(&'static str),
    /// The chain does not end in a trusted AMD root.
    #[error("unknown root: no trusted AMD key issued {0}")]
    UnknownRoot(String),
    /// A signature does not verify.
    #[error("{what} signature does not verify: {reason}")]
    Signature {
        /// Which signature (report or certificate).
        what: String,
        /// Detail.
        reason: String,
    },
    /// A certificate is not valid at the given time.
    #[error("certificate {cn} is not valid at {now}: valid from {not_before} to {not_after} (unix seconds)")]
    Validity {
        /// Subject common name.
        cn: String,
        /// Time of the check.
        now: u64,
        /// notBefore.
        not_before: u64,
        /// notAfter.
        not_after: u64,
    },
    /// The caller's expectations are unusable (e.g. a nonce longer than 64 bytes).
    #[error("bad expectation: {0}")]
    Config(String),
    /// Claims that do not match; each names the claim, expected and found.
    #[error("SNP claims do not match: {}", join(.0))]
    Claims(Vec<Failure>),
}

fn join(f: &[Failure]) -> String {
    f.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What the relying party expects of the guest, beyond authenticity.
/// The default expects VMPL 0, no debug, and checks no report/host data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnpConfig {
    /// Expected REPORT_DATA (e.g. the KBS runtime-data hash); zero-padded to 64 bytes.
    pub expected_report_data: Option<Vec<u8>>,
    /// Expected HOST_DATA (the initdata digest); zero-padded to 32 bytes.
    pub expected_host_data: Option<Vec<u8>>,
    /// Highest acceptable VMPL (0 = only the most privileged level).
    pub max_vmpl: u32,
    /// Accept a guest whose policy allows debugging.
    pub allow_debug: bool,
}

/// Decoded guest policy bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Raw 64-bit policy.
    pub raw: u64,
    /// Minimum ABI major.
    pub abi_major: u8,
    /// Minimum ABI minor.
    pub abi_minor: u8,
    /// SMT allowed.
    pub smt: bool,
    /// Migration agent allowed.
    pub migrate_ma: bool,
    /// Debugging allowed.
    pub debug: bool,
    /// Single socket only.
    pub single_socket: bool,
}

/// Claims from a verified report. Byte strings are lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpClaims {
    /// Report version.
    pub version: u32,
    /// Processor generation (from the chain's ARK).
    pub generation: Generation,
    /// Endorsement key kind.
    pub signing_key: SigningKey,
    /// Launch measurement (48 bytes).
    pub measurement: String,
    /// Guest policy.
    pub policy: Policy,
    /// VMPL of the request.
    pub vmpl: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// REPORT_DATA (64 bytes).
    pub report_data: String,
    /// HOST_DATA (32 bytes).
    pub host_data: String,
    /// ID block family ID.
    pub family_id: String,
    /// ID block image ID.
    pub image_id: String,
    /// ID key digest.
    pub id_key_digest: String,
    /// Author key digest.
    pub author_key_digest: String,
    /// Report ID.
    pub report_id: String,
    /// Migration agent report ID.
    pub report_id_ma: String,
    /// Chip ID (zero when masked).
    pub chip_id: String,
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// TCB the endorsement key was derived for (= its certificate's TCB).
    pub reported_tcb: Tcb,
    /// Current platform TCB.
    pub current_tcb: Tcb,
    /// Committed platform TCB.
    pub committed_tcb: Tcb,
    /// TCB at launch.
    pub launch_tcb: Tcb,
    /// Current firmware version "major.minor.build".
    pub firmware: String,
    /// CPUID family/model/stepping (v3+).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpuid: Option<[u8; 3]>,
}

impl SnpClaims {
    fn from_report(r: &Report, generation: Generation) -> Self {
        SnpClaims {
            version: r.version,
            generation,
            signing_key: r.signing_key(),
            measurement: hex::encode(r.measurement),
            policy: Policy {
                raw: r.policy,
                abi_minor: (r.policy & 0xFF) as u8,
                abi_major: ((r.policy >> 8) & 0xFF) as u8,
                smt: r.policy & (1 << 16) != 0,
                migrate_ma: r.policy & (1 << 18) != 0,
                debug: r.debug_allowed(),
                single_socket: r.policy & (1 << 20) != 0,
            },
            vmpl: r.vmpl,
            guest_svn: r.guest_svn,
            report_data: hex::encode(r.report_data),
            host_data: hex::encode(r.host_data),
            family_id: hex::encode(r.family_id),
            image_id: hex::encode(r.image_id),
            id_key_digest: hex::encode(r.id_key_digest),
            author_key_digest: hex::encode(r.author_key_digest),
            report_id: hex::encode(r.report_id),
            report_id_ma: hex::encode(r.report_id_ma),
            chip_id: hex::encode(r.chip_id),
            platform_info: r.platform_info,
            reported_tcb: Tcb::decode(r.reported_tcb, generation),
            current_tcb: Tcb::decode(r.current_tcb, generation),
            committed_tcb: Tcb::decode(r.committed_tcb, generation),
            launch_tcb: Tcb::decode(r.launch_tcb, generation),
            firmware: format!(
                "{}.{}.{}",
                r.current_version.0, r.current_version.1, r.current_version.2
            ),
            cpuid: r.cpuid.map(|(f, m, s)| [f, m, s]),
        }
    }

    /// The claims as a JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

/// Zero-pad `v` to `N` bytes; longer input is an error naming `field`.
pub fn pad<const N: usize>(v: &[u8], field: &str) -> Result<[u8; N], SnpError> {
    if v.len() > N {
        return Err(SnpError::Config(format!(
            "{field} is {} bytes, expected at most {N}",
            v.len()
        )));
    }
    let mut out = [0u8; N];
    out[..v.len()].copy_from_slice(v);
    Ok(out)
}

/// Compare verified claims with the relying party's expectations. Every
/// mismatch is returned; an empty list means all checks passed.
pub fn check_claims(c: &SnpClaims, cfg: &SnpConfig) -> Result<Vec<Failure>, SnpError> {
    let mut out = Vec::new();
    if c.vmpl > cfg.max_vmpl {
        out.push(failure("vmpl", format!("<= {}", cfg.max_vmpl), c.vmpl));
    }
    if c.policy.debug && !cfg.allow_debug {
        out.push(failure("policy.debug", false, true));
    }
    if let Some(want) = &cfg.expected_report_data {
        let want = hex::encode(pad::<64>(want, "expected report_data")?);
        if want != c.report_data {
            out.push(failure("report_data", want, &c.report_data));
        }
    }
    if let Some(want) = &cfg.expected_host_data {
        let want = hex::encode(pad::<32>(want, "expected host_data")?);
        if want != c.host_data {
            out.push(failure("host_data", want, &c.host_data));
        }
    }
    Ok(out)
}

/// Verifies SNP evidence against a [`TrustStore`]; construct once and reuse.
///
/// Endorsement-key certificates whose RSA signature has verified are
/// remembered (by SHA-256 of the certificate and its issuer), so a cached
/// VCEK costs one ECDSA verification per report; validity dates and all
/// report checks are still made every time.
#[derive(Debug, Clone)]
pub struct SnpVerifier {
    store: TrustStore,
    verified: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>>,
}

/// Bound on remembered endorsement keys (the cache is cleared when full).
const VERIFIED_CACHE_MAX: usize = 4096;

impl SnpVerifier {
    /// A verifier trusting AMD's built-in Milan, Genoa and Turin roots.
    pub fn builtin() -> Result<Self, SnpError> {
        Ok(Self::with_store(TrustStore::builtin()?))
    }

    /// A verifier over an explicit trust store (e.g. builtin plus extra roots).
    pub fn with_store(store: TrustStore) -> Self {
        SnpVerifier {
            store,
            verified: Default::default(),
        }
    }

    /// Check `vek` was signed by `inter`, remembering success.
    fn vek_signed_by(&self, vek: &Cert, inter: &Cert) -> Result<(), SnpError> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(vek.der());
        h.update(inter.der());
        let key: [u8; 32] = h.finalize().into();
        if let Ok(set) = self.verified.lock() {
            if set.contains(&key) {
                return Ok(());
            }
        }
        vek.verify_signed_by(inter)?;
        if let Ok(mut set) = self.verified.lock() {
            if set.len() >= VERIFIED_CACHE_MAX {
                set.clear();
            }
            set.insert(key);
        }
        Ok(())
    }

    /// Check authenticity and platform consistency; return the claims.
    ///
    /// `certs` holds the endorsement key (VCEK or VLEK) and optionally the
    /// ASK/ASVK, each DER or PEM; ARKs among them are ignored. `now` is in
    /// seconds since the Unix epoch.
    pub fn verify_evidence(
        &self,
        report: &[u8],
        certs: &[Vec<u8>],
        now: u64,
    ) -> Result<SnpClaims, SnpError> {
        let r = Report::parse(report)?;
        let key = r.signing_key();
        let (want_cn, key_name) = match key {
            SigningKey::Vcek => ("SEV-VCEK", "VCEK"),
            SigningKey::Vlek => ("SEV-VLEK", "VLEK"),
        };
        let mut given = Vec::with_capacity(certs.len());
        for (i, c) in certs.iter().enumerate() {
            given.extend(certs::parse_bundle(c, &format!("#{i} of the evidence"))?);
        }
        // Several endorsement keys may be offered (e.g. a cache directory):
        // prefer the one whose hwID and TCB extensions match this report.
        let candidates: Vec<&Cert> = given.iter().filter(|c| c.cn == want_cn).collect();
        let vek = candidates
            .iter()
            .copied()
            .find(|c| vek_matches(c, &r))
            .or_else(|| candidates.first().copied())
            .ok_or(SnpError::MissingKey(key_name))?;

        // Intermediate: a trusted one, or one from the evidence signed by a trusted ARK.
        let (inter, ark) = self.intermediate_for(vek, &given)?;
        let inter_is_vlek_ca = inter.cn.starts_with("SEV-VLEK-");
        if inter_is_vlek_ca != (key == SigningKey::Vlek) {
            return Err(SnpError::Certificate {
                what: vek.cn.clone(),
                reason: format!("a {key_name} must not be issued by {}", inter.cn),
            });
        }
        self.vek_signed_by(vek, inter)?;
        for c in [vek, inter, ark] {
            c.check_validity(now)?;
        }

        let generation = ark
            .generation()
            .or_else(|| inter.generation())
            .ok_or_else(|| SnpError::Certificate {
                what: ark.cn.clone(),
                reason:
                    "cannot tell the processor generation (expected ARK-Milan, -Genoa or -Turin)"
                        .into(),
            })?;

        // Report signature.
        if !vek.verify_p384(&report[..SIGNED_LEN], &r.sig_r, &r.sig_s)? {
            return Err(SnpError::Signature {
                what: "report".into(),
                reason: format!("not signed by the {key_name} given"),
            });
        }

        // Platform consistency: CPUID generation, TCB extensions, hwID.
        let mut fails = Vec::new();
        if let Some(g) = r.generation() {
            if g != generation {
                fails.push(failure("generation", generation.name(), g.name()));
            }
        }
        let tcb = Tcb::decode(r.reported_tcb, generation);
        let mut comps: Vec<(&str, &str, u8)> = vec![
            ("reported_tcb.bootloader", OID_BL, tcb.bootloader),
            ("reported_tcb.tee", OID_TEE, tcb.tee),
            ("reported_tcb.snp", OID_SNP, tcb.snp),
            ("reported_tcb.microcode", OID_UCODE, tcb.microcode),
        ];
        if let Some(fmc) = tcb.fmc {
            comps.push(("reported_tcb.fmc", OID_FMC, fmc));
        }
        for (claim, oid, found) in comps {
            let want = vek
                .tcb_extension(oid, claim)?
                .ok_or_else(|| SnpError::Certificate {
                    what: vek.cn.clone(),
                    reason: format!("missing TCB extension {oid} ({claim})"),
                })?;
            if want != found {
                fails.push(failure(claim, format!("{want} (from {key_name})"), found));
            }
        }
        if key == SigningKey::Vcek {
            let hwid = vek.hwid().ok_or_else(|| SnpError::Certificate {
                what: vek.cn.clone(),
                reason: "missing hwID extension".into(),
            })?;
            let want_len = if generation == Generation::Turin {
                8
            } else {
                64
            };
            if hwid.len() != want_len {
                return Err(SnpError::Certificate {
                    what: vek.cn.clone(),
                    reason: format!(
                        "hwID extension is {} bytes, expected {want_len} for {}",
                        hwid.len(),
                        generation.name()
                    ),
                });
            }
            if hwid != &r.chip_id[..want_len] {
                fails.push(failure(
                    "chip_id",
                    format!("{} (VCEK hwID)", hex::encode(hwid)),
                    hex::encode(&r.chip_id[..want_len]),
                ));
            }
        }
        if !fails.is_empty() {
            return Err(SnpError::Claims(fails));
        }
        Ok(SnpClaims::from_report(&r, generation))
    }

    fn intermediate_for<'a>(
        &'a self,
        vek: &Cert,
        given: &'a [Cert],
    ) -> Result<(&'a Cert, &'a Cert), SnpError> {
        if let Some(i) = self.store.intermediates.iter().find(|i| vek.issued_by(i)) {
            if let Some(ark) = self.store.arks.iter().find(|a| i.issued_by(a)) {
                return Ok((i, ark));
            }
        }
        if let Some(cand) = given.iter().find(|c| vek.issued_by(c) && !c.self_signed()) {
            let ark = self
                .store
                .arks
                .iter()
                .find(|a| cand.issued_by(a))
                .ok_or_else(|| SnpError::UnknownRoot(cand.cn.clone()))?;
            cand.verify_signed_by(ark)?;
            return Ok((cand, ark));
        }
        let issuer = certs_issuer_cn(vek);
        Err(SnpError::UnknownRoot(format!(
            "{} (issuer {issuer})",
            vek.cn
        )))
    }

    /// [`verify_evidence`](Self::verify_evidence) then [`check_claims`]; any
    /// mismatch is an error listing all of them.
    pub fn verify(
        &self,
        report: &[u8],
        certs: &[Vec<u8>],
        cfg: &SnpConfig,
        now: u64,
    ) -> Result<SnpClaims, SnpError> {
        let claims = self.verify_evidence(report, certs, now)?;
        let fails = check_claims(&claims, cfg)?;
        if fails.is_empty() {
            Ok(claims)
        } else {
            Err(SnpError::Claims(fails))
        }
    }
}

/// Whether an endorsement key's extensions fit a report (used only to choose
/// among several; the real checks follow in `verify_evidence`).
fn vek_matches(c: &Cert, r: &Report) -> bool {
    let generation = c
        .x509
        .tbs_certificate
        .issuer
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .filter(|a| a.oid.to_string() == "2.5.4.3")
        .find_map(|a| Generation::from_cn(&String::from_utf8_lossy(a.value.value())))
        .unwrap_or(Generation::Milan);
    let tcb = Tcb::decode(r.reported_tcb, generation);
    let tcb_ok = [
        (OID_BL, tcb.bootloader),
        (OID_TEE, tcb.tee),
        (OID_SNP, tcb.snp),
        (OID_UCODE, tcb.microcode),
    ]
    .iter()
    .all(|(oid, v)| matches!(c.tcb_extension(oid, oid), Ok(Some(x)) if x == *v));
    let hwid_ok = match (r.signing_key(), c.hwid()) {
        (SigningKey::Vcek, Some(h)) => r.chip_id.get(..h.len()) == Some(h),
        (SigningKey::Vcek, None) => false,
        (SigningKey::Vlek, _) => true,
    };
    tcb_ok && hwid_ok
}

fn certs_issuer_cn(c: &Cert) -> String {
    c.x509
        .tbs_certificate
        .issuer
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|a| a.oid.to_string() == "2.5.4.3")
        .map(|a| String::from_utf8_lossy(a.value.value()).into_owned())
        .unwrap_or_default()
}

/// [`SnpVerifier::verify`] with the built-in roots (parsed once per process).
pub fn verify(
    report: &[u8],
    certs: &[Vec<u8>],
    cfg: &SnpConfig,
    now: u64,
) -> Result<SnpClaims, SnpError> {
    static BUILTIN: OnceLock<Result<SnpVerifier, SnpError>> = OnceLock::new();
    match BUILTIN.get_or_init(SnpVerifier::builtin) {
        Ok(v) => v.verify(report, certs, cfg, now),
        Err(e) => Err(e.clone()),
    }
}

/// Parse the certificate table of an extended report (the configfs-tsm
/// `auxblob`): 24-byte entries `{GUID, offset u32, length u32}` ended by an
/// all-zero entry, offsets relative to the table start. Returns the VCEK,
/// VLEK, ASK and ARK certificates found (DER); unknown GUIDs are skipped.
/// (The parser is [`cloister_tee_types::snp_evidence::parse_cert_table`],
/// which the guest shares.)
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<Vec<u8>>, SnpError> {
    let entries = snp_evidence::parse_cert_table(table).map_err(|e| SnpError::Certificate {
        what: "table".into(),
        reason: match e {
            snp_evidence::SnpEvidenceError::CertTable(reason) => reason,
            other => other.to_string(),
        },
    })?;
    Ok(entries.into_iter().map(|c| c.data).collect())
}

/// Evidence as Trustee's SNP attester sends it:
/// `{"attestation_report": {…}, "cert_chain": [{"cert_type": "VCEK", "data": […]}]}`.
/// Decoded into typed fields (refusing out-of-range numbers and wrong
/// lengths by name) and laid out as the raw report per the ABI; returned
/// with the certificates. The shape and layout are
/// [`cloister_tee_types::snp_evidence`], which the guest builds its
/// evidence with.
pub fn from_trustee_json(json: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), SnpError> {
    let j = |reason: String| SnpError::Report(ReportError::Json(reason));
    let ev: snp_evidence::SnpEvidence =
        serde_json::from_slice(json).map_err(|e| j(e.to_string()))?;
    ev.to_raw().map_err(|e| j(e.to_string()))
}
