//! The sim platform: a per-host P-384 platform key (CPAK), created once and
//! kept in `<config dir>/sim/platform-key.json` with mode 0600, and the
//! fixed platform claims of the software RMM.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use cloister_attestation::cca::store::{TrustAnchor, TrustAnchorStore};
use cloister_attestation::cca::{SigAlg, SigningKey};
use sha2::Digest as _;

/// The sim platform's implementation id: SHA-256 of this label.
pub const IMPLEMENTATION_LABEL: &[u8] = b"cloister sim RMM implementation 1";
/// The sim RMM's software component label (measurement = SHA-256 of it).
pub const RMM_COMPONENT_LABEL: &[u8] = b"cloister sim RMM 1.0.0";
/// The signer id of the sim RMM component: SHA-256 of this label.
pub const SIGNER_LABEL: &[u8] = b"cloister sim signer";
/// Platform configuration claim.
pub const CONFIG: [u8; 4] = *b"SIM1";
/// Lifecycle: secured.
pub const LIFECYCLE: u16 = 0x3000;

/// Errors around the platform key.
#[derive(Debug, thiserror::Error)]
pub enum PlatformKeyError {
    /// I/O on the key file.
    #[error("sim platform key {path}")]
    Io {
        /// Key file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not ours.
    #[error("sim platform key {path} is unusable: {reason}; delete it to create a new one")]
    Corrupt {
        /// Key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The key file is readable by others.
    #[error("sim platform key {path} has mode {mode:o}: expected 600 (chmod 600 it)")]
    Permissions {
        /// Key file.
        path: PathBuf,
        /// Mode found.
        mode: u32,
    },
}

/// The sim platform identity.
#[derive(Debug, Clone)]
pub struct SimPlatform {
    /// The CPAK.
    pub key: SigningKey,
    /// 32-byte implementation id.
    pub implementation_id: Vec<u8>,
    /// 33-byte instance id: 0x01 ‖ SHA-256(CPAK SEC1 point).
    pub instance_id: Vec<u8>,
}

/// `(component type, measurement, signer id, version)` of the sim RMM.
pub fn rmm_component() -> (String, Vec<u8>, Vec<u8>, String) {
    (
        "RMM".into(),
        sha2::Sha256::digest(RMM_COMPONENT_LABEL).to_vec(),
        sha2::Sha256::digest(SIGNER_LABEL).to_vec(),
        "1.0.0".into(),
    )
}

impl SimPlatform {
    /// The platform for `key`.
    pub fn from_key(key: SigningKey) -> Self {
        let mut instance_id = vec![0x01];
        instance_id.extend_from_slice(&sha2::Sha256::digest(key.public().to_sec1()));
        Self {
            key,
            implementation_id: sha2::Sha256::digest(IMPLEMENTATION_LABEL).to_vec(),
            instance_id,
        }
    }

    /// The key file under `config_dir`.
    pub fn key_path(config_dir: &Path) -> PathBuf {
        config_dir.join("sim").join("platform-key.json")
    }

    /// Loads the host's platform key, creating it (mode 0600) on first use.
    pub fn load_or_create(config_dir: &Path) -> Result<Self, PlatformKeyError> {
        let path = Self::key_path(config_dir);
        let io = |source| PlatformKeyError::Io {
            path: path.clone(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let mode = std::fs::metadata(&path).map_err(io)?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(PlatformKeyError::Permissions { path, mode });
                }
                let corrupt = |reason: String| PlatformKeyError::Corrupt {
                    path: path.clone(),
                    reason,
                };
                let v: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
                let d = v
                    .get("p384-private-scalar")
                    .and_then(|d| d.as_str())
                    .ok_or_else(|| corrupt("no p384-private-scalar".into()))?;
                let d = hex::decode(d).map_err(|e| corrupt(e.to_string()))?;
                let key = SigningKey::from_scalar(SigAlg::Es384, &d).map_err(corrupt)?;
                Ok(Self::from_key(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = path.parent().unwrap_or(config_dir);
                std::fs::create_dir_all(dir).map_err(io)?;
                let key = SigningKey::generate(SigAlg::Es384);
                let doc = serde_json::json!({
                    "comment": "Cloister sim platform key (CPAK). Simulated: trust only for development.",
                    "p384-private-scalar": hex::encode(key.to_scalar()),
                });
                let tmp = path.with_extension("json.tmp");
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(io)?;
                f.write_all(doc.to_string().as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                // A concurrent creator may have won: keep theirs.
                match std::fs::hard_link(&tmp, &path) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&tmp);
                        Ok(Self::from_key(key))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let _ = std::fs::remove_file(&tmp);
                        Self::load_or_create(config_dir)
                    }
                    Err(e) => Err(io(e)),
                }
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The trust anchor a verifier needs for this platform, marked simulated.
    pub fn trust_anchor(&self) -> TrustAnchor {
        TrustAnchor {
            implementation_id: Some(self.implementation_id.clone()),
            instance_id: Some(self.instance_id.clone()),
            key: Ok(self.key.public()),
            simulated: true,
        }
    }

    /// The trust-anchor store JSON (`cloister sim trust-anchor`).
    pub fn trust_anchor_json(&self) -> Result<serde_json::Value, String> {
        TrustAnchorStore::new(vec![self.trust_anchor()]).to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_0600_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let a = SimPlatform::load_or_create(d.path()).unwrap();
        let path = SimPlatform::key_path(d.path());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = SimPlatform::load_or_create(d.path()).unwrap();
        assert_eq!(a.key.public().to_sec1(), b.key.public().to_sec1());
        assert_eq!(a.instance_id, b.instance_id);
        assert_eq!(a.instance_id.len(), 33);
        let ta = a.trust_anchor_json().unwrap().to_string();
        assert!(ta.contains("\"simulated\":true"), "{ta}");
        // Parses as a store the verifier uses.
        let store = TrustAnchorStore::parse(&ta).unwrap();
        assert!(store.anchors()[0].simulated);
    }

    #[test]
    fn loose_permissions_and_garbage_are_refused() {
        let d = tempfile::tempdir().unwrap();
        SimPlatform::load_or_create(d.path()).unwrap();
        let path = SimPlatform::key_path(d.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SimPlatform::load_or_create(d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("644") && e.contains("chmod"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, b"{}").unwrap();
        let e = SimPlatform::load_or_create(d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("delete it"), "{e}");
    }
}
