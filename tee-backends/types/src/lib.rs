//! Definitions the guest, the runtime and the verifier share, each once.
//!
//! [`TeeKind`] is the one TEE enum: a sandbox runs in one; the same value
//! tells a verifier which evidence it judges and the runtime which backend
//! launches the guest. This is a leaf crate because both the guest-light
//! `cloister-tee` and the host-side `cloister-attestation` need these, and
//! the first already depends on the second.
//!
//! The KBS protocol's own `kbs_types::Tee` is a wire type with many more
//! kinds; the KBS and the agent convert to and from it exhaustively.
//!
//! [`snp_evidence`] is Trustee's SEV-SNP evidence JSON, which the guest
//! agent builds from its raw report and the verifier reads back.

pub mod snp_evidence;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The TEE a sandbox runs in, and the kind of evidence it produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum TeeKind {
    /// No TEE: a plain VM, for development and non-confidential workloads.
    /// It produces no evidence.
    None,
    /// The software TEE: real CCA formats, signed by a simulated platform on
    /// the host. Never appraised as hardware.
    Sim,
    /// Arm CCA Realm (CCA token, tag 399/907).
    Cca,
    /// AMD SEV-SNP (attestation report).
    Snp,
    /// Intel TDX (DCAP quote).
    Tdx,
}

impl TeeKind {
    /// Every kind, in the order the command line lists them.
    pub const ALL: [TeeKind; 5] = [
        TeeKind::None,
        TeeKind::Sim,
        TeeKind::Cca,
        TeeKind::Snp,
        TeeKind::Tdx,
    ];

    /// The kinds that produce evidence (all but `none`).
    pub const WITH_EVIDENCE: [TeeKind; 4] =
        [TeeKind::Cca, TeeKind::Snp, TeeKind::Tdx, TeeKind::Sim];

    /// The name used on the command line, in configuration and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TeeKind::None => "none",
            TeeKind::Sim => "sim",
            TeeKind::Cca => "cca",
            TeeKind::Snp => "snp",
            TeeKind::Tdx => "tdx",
        }
    }

    /// Whether a guest of this kind produces evidence (every kind but
    /// `none`).
    pub fn has_evidence(self) -> bool {
        self != TeeKind::None
    }

    /// This kind if it produces evidence; `none` is refused by name.
    pub fn with_evidence(self) -> Result<Self, NoEvidence> {
        if self.has_evidence() {
            Ok(self)
        } else {
            Err(NoEvidence)
        }
    }
}

/// A command-line value parser taking only the kinds with evidence
/// ([`TeeKind::WITH_EVIDENCE`]): for commands that judge evidence, where
/// `none` would mean nothing. A wrong value is refused listing those kinds.
#[cfg(feature = "clap")]
pub fn evidence_kind_parser() -> impl clap::builder::TypedValueParser<Value = TeeKind> {
    use clap::builder::TypedValueParser as _;
    use clap::ValueEnum as _;
    clap::builder::PossibleValuesParser::new(
        TeeKind::WITH_EVIDENCE
            .iter()
            .filter_map(TeeKind::to_possible_value),
    )
    .try_map(|s| s.parse::<TeeKind>())
}

impl fmt::Display for TeeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown TEE name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown TEE {0:?}: expected one of none, sim, cca, snp, tdx")]
pub struct UnknownTee(pub String);

/// Evidence was asked of `none`, which produces none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("TEE none produces no evidence: expected one of cca, snp, tdx, sim")]
pub struct NoEvidence;

impl FromStr for TeeKind {
    type Err = UnknownTee;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TeeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownTee(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for k in TeeKind::ALL {
            assert_eq!(k.as_str().parse::<TeeKind>().unwrap(), k);
            let j = serde_json::to_string(&k).unwrap();
            assert_eq!(j, format!("\"{k}\""));
            assert_eq!(serde_json::from_str::<TeeKind>(&j).unwrap(), k);
        }
    }

    #[test]
    fn unknown_names_are_refused_listing_the_known_ones() {
        let e = "sev".parse::<TeeKind>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown TEE \"sev\": expected one of none, sim, cca, snp, tdx"
        );
        assert!("CCA".parse::<TeeKind>().is_err(), "names are lowercase");
        assert!(serde_json::from_str::<TeeKind>("\"sev\"").is_err());
    }

    #[test]
    fn only_none_has_no_evidence() {
        assert_eq!(TeeKind::None.with_evidence(), Err(NoEvidence));
        for k in TeeKind::WITH_EVIDENCE {
            assert_eq!(k.with_evidence(), Ok(k));
        }
        assert_eq!(TeeKind::WITH_EVIDENCE.len() + 1, TeeKind::ALL.len());
    }
}
