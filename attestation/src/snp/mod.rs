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

const GUID_VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
const GUID_VLEK: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
const GUID_ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
const GUID_ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";

fn guid_string(b: &[u8]) -> String {
    // GUIDs are stored little-endian in the first three fields.
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}-{}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        hex::encode(&b[8..10]),
        hex::encode(&b[10..16])
    )
}

/// Parse the certificate table of an extended report (the configfs-tsm
/// `auxblob`): 24-byte entries `{GUID, offset u32, length u32}` ended by an
/// all-zero entry, offsets relative to the table start. Returns the VCEK,
/// VLEK, ASK and ARK certificates found (DER); unknown GUIDs are skipped.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<Vec<u8>>, SnpError> {
    let bad = |reason: String| SnpError::Certificate {
        what: "table".into(),
        reason,
    };
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let e = table.get(pos..pos + 24).ok_or_else(|| {
            bad(format!(
                "entry at {pos} is truncated (no all-zero terminator)"
            ))
        })?;
        if e.iter().all(|&b| b == 0) {
            break;
        }
        let guid = guid_string(&e[..16]);
        let off = u32::from_le_bytes([e[16], e[17], e[18], e[19]]) as usize;
        let len = u32::from_le_bytes([e[20], e[21], e[22], e[23]]) as usize;
        let data = off
            .checked_add(len)
            .and_then(|end| table.get(off..end))
            .ok_or_else(|| {
                bad(format!(
                    "entry {guid} at {off}+{len} is outside the {}-byte table",
                    table.len()
                ))
            })?;
        if [GUID_VCEK, GUID_VLEK, GUID_ASK, GUID_ARK].contains(&guid.as_str()) {
            out.push(data.to_vec());
        }
        pos += 24;
    }
    Ok(out)
}

/// A TCB_VERSION as Trustee's SNP attester writes it (`fmc` null or absent
/// before Turin).
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct TrusteeTcb {
    #[serde(default)]
    fmc: Option<u8>,
    bootloader: u8,
    tee: u8,
    snp: u8,
    microcode: u8,
}

impl TrusteeTcb {
    /// The 64-bit TCB_VERSION: Turin layout when `fmc` is present.
    fn raw(self) -> u64 {
        u64::from_le_bytes(match self.fmc {
            Some(fmc) => [
                fmc,
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ],
            None => [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ],
        })
    }
}

/// A firmware version `{major, minor, build}`.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct TrusteeVersion {
    major: u8,
    minor: u8,
    build: u8,
}

#[derive(Debug, serde::Deserialize)]
struct TrusteeSignature {
    r: Vec<u8>,
    s: Vec<u8>,
}

/// `attestation_report` as Trustee's SNP attester serialises the report
/// (byte strings as arrays of numbers). Fields are typed: a number out of
/// range, a missing field or a wrong length is refused with the field name,
/// never truncated or zero-filled.
#[derive(Debug, serde::Deserialize)]
struct TrusteeReport {
    version: u32,
    guest_svn: u32,
    policy: u64,
    family_id: Vec<u8>,
    image_id: Vec<u8>,
    vmpl: u32,
    sig_algo: u32,
    current_tcb: TrusteeTcb,
    plat_info: u64,
    key_info: u32,
    report_data: Vec<u8>,
    measurement: Vec<u8>,
    host_data: Vec<u8>,
    id_key_digest: Vec<u8>,
    author_key_digest: Vec<u8>,
    report_id: Vec<u8>,
    report_id_ma: Vec<u8>,
    reported_tcb: TrusteeTcb,
    #[serde(default)]
    cpuid_fam_id: Option<u8>,
    #[serde(default)]
    cpuid_mod_id: Option<u8>,
    #[serde(default)]
    cpuid_step: Option<u8>,
    chip_id: Vec<u8>,
    committed_tcb: TrusteeTcb,
    #[serde(default)]
    current: Option<TrusteeVersion>,
    #[serde(default)]
    committed: Option<TrusteeVersion>,
    launch_tcb: TrusteeTcb,
    #[serde(default)]
    launch_mit_vector: Option<u64>,
    #[serde(default)]
    current_mit_vector: Option<u64>,
    signature: TrusteeSignature,
}

#[derive(Debug, serde::Deserialize)]
struct TrusteeCert {
    data: Vec<u8>,
}

#[derive(Debug, serde::Deserialize)]
struct TrusteeEvidence {
    attestation_report: TrusteeReport,
    #[serde(default)]
    cert_chain: Option<Vec<TrusteeCert>>,
}

/// Evidence as Trustee's SNP attester sends it:
/// `{"attestation_report": {…}, "cert_chain": [{"cert_type": "VCEK", "data": […]}]}`.
/// Decoded into typed fields (refusing out-of-range numbers and wrong
/// lengths by name) and laid out as the raw report per the ABI; returned
/// with the certificates.
pub fn from_trustee_json(json: &[u8]) -> Result<(Vec<u8>, Vec<Vec<u8>>), SnpError> {
    let j = |reason: String| SnpError::Report(ReportError::Json(reason));
    let ev: TrusteeEvidence = serde_json::from_slice(json).map_err(|e| j(e.to_string()))?;
    let r = &ev.attestation_report;
    let mut b = vec![0u8; REPORT_LEN];
    let mut put = |off: usize, k: &str, src: &[u8], n: usize| -> Result<(), SnpError> {
        if src.len() != n {
            return Err(j(format!("{k}: {} bytes, expected {n}", src.len())));
        }
        b[off..off + n].copy_from_slice(src);
        Ok(())
    };
    put(0x00, "version", &r.version.to_le_bytes(), 4)?;
    put(0x04, "guest_svn", &r.guest_svn.to_le_bytes(), 4)?;
    put(0x08, "policy", &r.policy.to_le_bytes(), 8)?;
    put(0x10, "family_id", &r.family_id, 16)?;
    put(0x20, "image_id", &r.image_id, 16)?;
    put(0x30, "vmpl", &r.vmpl.to_le_bytes(), 4)?;
    put(0x34, "sig_algo", &r.sig_algo.to_le_bytes(), 4)?;
    put(0x38, "current_tcb", &r.current_tcb.raw().to_le_bytes(), 8)?;
    put(0x40, "plat_info", &r.plat_info.to_le_bytes(), 8)?;
    put(0x48, "key_info", &r.key_info.to_le_bytes(), 4)?;
    put(0x50, "report_data", &r.report_data, 64)?;
    put(0x90, "measurement", &r.measurement, 48)?;
    put(0xC0, "host_data", &r.host_data, 32)?;
    put(0xE0, "id_key_digest", &r.id_key_digest, 48)?;
    put(0x110, "author_key_digest", &r.author_key_digest, 48)?;
    put(0x140, "report_id", &r.report_id, 32)?;
    put(0x160, "report_id_ma", &r.report_id_ma, 32)?;
    put(
        0x180,
        "reported_tcb",
        &r.reported_tcb.raw().to_le_bytes(),
        8,
    )?;
    for (k, off, v) in [
        ("cpuid_fam_id", 0x188, r.cpuid_fam_id),
        ("cpuid_mod_id", 0x189, r.cpuid_mod_id),
        ("cpuid_step", 0x18A, r.cpuid_step),
    ] {
        if let Some(x) = v {
            put(off, k, &[x], 1)?;
        }
    }
    put(0x1A0, "chip_id", &r.chip_id, 64)?;
    put(
        0x1E0,
        "committed_tcb",
        &r.committed_tcb.raw().to_le_bytes(),
        8,
    )?;
    for (k, off, v) in [
        ("current", 0x1E8, r.current),
        ("committed", 0x1EC, r.committed),
    ] {
        if let Some(v) = v {
            put(off, k, &[v.build, v.minor, v.major], 3)?;
        }
    }
    put(0x1F0, "launch_tcb", &r.launch_tcb.raw().to_le_bytes(), 8)?;
    for (k, off, v) in [
        ("launch_mit_vector", 0x1F8, r.launch_mit_vector),
        ("current_mit_vector", 0x200, r.current_mit_vector),
    ] {
        if let Some(x) = v {
            put(off, k, &x.to_le_bytes(), 8)?;
        }
    }
    put(0x2A0, "signature.r", &r.signature.r, 72)?;
    put(0x2A0 + 72, "signature.s", &r.signature.s, 72)?;
    let certs = ev
        .cert_chain
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.data)
        .collect();
    Ok((b, certs))
}
