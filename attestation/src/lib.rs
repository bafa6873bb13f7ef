//! Evidence decoders and verifiers (Arm CCA, SEV-SNP, TDX, sim) and their
//! appraisal to an EAR (EAT Attestation Result) with AR4SI trust vectors.
//!
//! The crate answers one question for a relying party such as the KBS: is
//! this evidence genuine, is it fresh, and does it describe the guest we
//! expect? [`Verifier::appraise`] takes the TEE kind, evidence bytes, the
//! expected report_data/nonce, an optional initdata digest and the time,
//! and returns an [`Appraisal`]: status and trust vector (decided by a Rego
//! policy), the claims, whether the evidence was simulated, and every
//! failure naming the claim, the expected value and the value found.
//! [`ear::EarIssuer`] turns appraisals into a signed ES256 EAR JWT.
//!
//! It also builds CCA tokens ([`cca::build`]) for the sim backend and test
//! attesters. It is not an attester: it never talks to hardware, and it
//! does not fetch collateral from the network.

pub mod appraisal;
pub mod cca;
pub mod ear;
pub mod refvals;
pub mod snp;
pub mod tdx;
pub mod verifiers;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use appraisal::{
    Appraisal, EvidenceVerifier, Status, VerifiedEvidence, Verifier, VerifierConfig, VerifyContext,
};
#[cfg(feature = "clap")]
pub use cloister_tee_types::evidence_kind_parser;
pub use cloister_tee_types::TeeKind;
pub use refvals::ReferenceValues;

/// The 64-byte report_data / CCA realm challenge a verifier expects.
///
/// Shorter inputs (a 32-byte nonce, a 48-byte SHA-384 runtime-data hash)
/// are zero-padded to 64 bytes, as Trustee does.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReportData(pub [u8; 64]);

impl ReportData {
    /// Zero-pad `b` (at most 64 bytes) to 64 bytes.
    pub fn from_padded(b: &[u8]) -> Result<Self, Error> {
        if b.len() > 64 {
            return Err(Error::Input(format!(
                "report data is {} bytes, at most 64 expected",
                b.len()
            )));
        }
        let mut out = [0u8; 64];
        out[..b.len()].copy_from_slice(b);
        Ok(Self(out))
    }

    /// From hex (zero-padded).
    pub fn from_hex(s: &str) -> Result<Self, Error> {
        let b = hex::decode(s.trim())
            .map_err(|e| Error::Input(format!("report_data is not hex: {e}")))?;
        Self::from_padded(&b)
    }

    /// Trustee's binding of KBS runtime data: SHA-384 of the canonical
    /// (RFC 8785) JSON, zero-padded to 64 bytes. `runtime_data_jcs` must
    /// already be canonical.
    pub fn from_runtime_data_jcs(runtime_data_jcs: &[u8]) -> Self {
        use sha2::Digest;
        let h = sha2::Sha384::digest(runtime_data_jcs);
        let mut out = [0u8; 64];
        out[..48].copy_from_slice(&h);
        Self(out)
    }

    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for ReportData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportData({})", hex::encode(self.0))
    }
}

/// What a check is about; the appraisal policy maps categories to AR4SI
/// trust-vector claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    /// A signature over evidence or a certificate.
    Signature,
    /// The evidence's root of trust is known.
    TrustAnchor,
    /// Two parts of the evidence are bound (CCA: platform challenge = H(RAK)).
    Binding,
    /// Nonce / report_data.
    Freshness,
    /// Measurements of code (RIM, REMs, sw-components, MRTD, ...).
    Executables,
    /// Configuration (platform config, lifecycle, policy bits, TCB).
    Configuration,
    /// Hardware identity (implementation-id, chip id).
    Hardware,
    /// Initdata digest (CCA RPV, SNP HOST_DATA, TDX MRCONFIGID).
    InitData,
    /// A state that exposes the guest whatever its measurements say: SNP
    /// debug policy or VMPL > 0, the TDX debug attribute, a CCA lifecycle
    /// other than secured. A failure is contraindicated (configuration and
    /// runtime-opaque 96).
    UnsafeState,
    /// The platform TCB is revoked or below the configured minimum: the
    /// firmware has known vulnerabilities. A failure is contraindicated
    /// (hardware 96).
    TcbRevoked,
    /// The platform TCB is out of date (TDX `OutOfDate`,
    /// `SWHardeningNeeded`, `ConfigurationNeeded`): patched firmware exists.
    /// A failure is a warning (hardware 32); the advisory IDs are in the
    /// check's `found` and in the claims.
    TcbOutdated,
    /// Reference values that do not identify the launch (e.g. TDX MRTD
    /// without RTMR0..2): the software is unrecognized (executables 33).
    LaunchIdentity,
}

/// One check made during verification or appraisal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub claim: String,
    pub category: Category,
    pub ok: bool,
    pub expected: String,
    pub found: String,
}

impl Check {
    pub fn new(
        claim: impl Into<String>,
        category: Category,
        ok: bool,
        expected: impl Into<String>,
        found: impl Into<String>,
    ) -> Self {
        Self {
            claim: claim.into(),
            category,
            ok,
            expected: expected.into(),
            found: found.into(),
        }
    }
}

/// A negative result: the claim, the value expected and the value found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub claim: String,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, found {}",
            self.claim, self.expected, self.found
        )
    }
}

impl From<&Check> for Failure {
    fn from(c: &Check) -> Self {
        Self {
            claim: c.claim.clone(),
            expected: c.expected.clone(),
            found: c.found.clone(),
        }
    }
}

/// Errors: evidence or configuration that cannot be used at all. A token
/// that decodes but fails a signature or a reference value is not an error:
/// it is an [`Appraisal`] with failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unusable input: {0}")]
    Input(String),
    #[error("CCA token: {0}")]
    Cca(#[from] cca::TokenError),
    #[error("trust anchors: {0}")]
    TrustAnchors(#[from] cca::store::StoreError),
    #[error("reference values: {0}")]
    ReferenceValues(String),
    #[error("{tee} evidence: {source}")]
    Evidence {
        tee: TeeKind,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no verifier for {0} evidence is configured")]
    Unsupported(TeeKind),
    #[error("appraisal policy: {0}")]
    Policy(#[from] cloister_policy::PolicyError),
    #[error("EAR: {0}")]
    Ear(String),
}
