//! The sandbox's settings from its measured initdata, kept for the
//! sandbox's life once CreateSandbox has checked the document's digest
//! against the TEE, and the decisions taken from them that are not the
//! policy engine's: whether the host may have evidence over its own bytes.

use std::sync::{Arc, OnceLock};

use cloister_guest_config::{ConfigError, GuestConfig};
use cloister_tee::TeeKind;

/// The measured settings, set once per sandbox.
#[derive(Debug, Default)]
pub struct Settings {
    config: OnceLock<Arc<GuestConfig>>,
    kbs: OnceLock<Arc<crate::kbs::GuestKbs>>,
}

/// Why the settings were not taken.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The document's `[data]` does not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// CreateSandbox came again with other settings.
    #[error(
        "the sandbox already has its initdata settings; a second CreateSandbox may not change them"
    )]
    AlreadySet,
}

/// Why GetEvidence over host bytes is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostEvidenceRefused {
    /// No initdata has been accepted (or the launch had none).
    #[error("GetEvidence over host-chosen report_data is refused in a {tee} guest: no measured initdata allows it (launch with initdata that sets cloister.toml allow_host_evidence = true, e.g. `cloister initdata new --allow-host-evidence`)")]
    NoInitdata {
        /// The guest's TEE.
        tee: TeeKind,
    },
    /// The initdata does not set the key.
    #[error("GetEvidence over host-chosen report_data is refused in a {tee} guest: the measured initdata does not set cloister.toml allow_host_evidence = true")]
    NotAllowed {
        /// The guest's TEE.
        tee: TeeKind,
    },
}

impl Settings {
    /// Takes the settings of an accepted (digest-checked) document; `None`
    /// (a launch without initdata) means the defaults.
    pub fn accept(&self, doc: Option<&[u8]>) -> Result<Arc<GuestConfig>, SettingsError> {
        let config = match doc {
            Some(d) => GuestConfig::from_initdata(&String::from_utf8_lossy(d))?,
            None => GuestConfig::default(),
        };
        let config = Arc::new(config);
        match self.config.set(config.clone()) {
            Ok(()) => Ok(config),
            Err(_) if self.config.get().is_some_and(|c| **c == *config) => Ok(config),
            Err(_) => Err(SettingsError::AlreadySet),
        }
    }

    /// The sandbox's attested KBS client, once CreateSandbox has attested.
    pub fn kbs(&self) -> Option<Arc<crate::kbs::GuestKbs>> {
        self.kbs.get().cloned()
    }

    /// Keeps the attested KBS client (first one wins).
    pub fn set_kbs(&self, kbs: Arc<crate::kbs::GuestKbs>) {
        let _ = self.kbs.set(kbs);
    }

    /// The accepted settings, if CreateSandbox has run.
    pub fn get(&self) -> Option<Arc<GuestConfig>> {
        self.config.get().cloned()
    }

    /// Whether the host may ask for evidence over its own report_data in a
    /// guest whose TEE is `tee`: only where the measured initdata says so.
    /// (A guest without a TEE has no evidence to give; that is not decided
    /// here.)
    pub fn host_evidence(&self, tee: TeeKind) -> Result<(), HostEvidenceRefused> {
        host_evidence(tee, self.config.get().map(|c| c.as_ref()))
    }
}

/// The rule behind [`Settings::host_evidence`].
pub fn host_evidence(
    tee: TeeKind,
    config: Option<&GuestConfig>,
) -> Result<(), HostEvidenceRefused> {
    match config {
        None => Err(HostEvidenceRefused::NoInitdata { tee }),
        Some(c) if c.cloister.allow_host_evidence => Ok(()),
        Some(_) => Err(HostEvidenceRefused::NotAllowed { tee }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use cloister_guest_config::ALLOW_HOST_EVIDENCE_KEY;

    const ALLOW: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cloister.toml\" = \"allow_host_evidence = true\\n\"\n";
    const PLAIN: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n";

    #[test]
    fn host_evidence_needs_the_initdata_key() {
        for tee in [TeeKind::Sim, TeeKind::Cca, TeeKind::Snp, TeeKind::Tdx] {
            // Before CreateSandbox, or launched without initdata: refused.
            let s = Settings::default();
            let e = s.host_evidence(tee).unwrap_err();
            assert_eq!(e, HostEvidenceRefused::NoInitdata { tee });
            assert!(e.to_string().contains(ALLOW_HOST_EVIDENCE_KEY), "{e}");
            s.accept(None).unwrap();
            assert!(s.host_evidence(tee).is_err());
            // Initdata without the key: refused, naming it.
            let s = Settings::default();
            s.accept(Some(PLAIN.as_bytes())).unwrap();
            let e = s.host_evidence(tee).unwrap_err();
            assert_eq!(e, HostEvidenceRefused::NotAllowed { tee });
            assert!(e.to_string().contains("allow_host_evidence"), "{e}");
            // With it: allowed.
            let s = Settings::default();
            s.accept(Some(ALLOW.as_bytes())).unwrap();
            s.host_evidence(tee).unwrap();
        }
    }

    #[test]
    fn settings_are_set_once() {
        let s = Settings::default();
        s.accept(Some(PLAIN.as_bytes())).unwrap();
        // The same again is fine (a retried CreateSandbox) ...
        s.accept(Some(PLAIN.as_bytes())).unwrap();
        // ... other settings are not.
        assert!(matches!(
            s.accept(Some(ALLOW.as_bytes())),
            Err(SettingsError::AlreadySet)
        ));
        assert!(!s.get().unwrap().cloister.allow_host_evidence);
    }

    #[test]
    fn unknown_entries_are_refused() {
        let doc = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nkey = \"value\"\n";
        let e = Settings::default()
            .accept(Some(doc.as_bytes()))
            .unwrap_err();
        assert!(e.to_string().contains("\"key\""), "{e}");
    }
}
