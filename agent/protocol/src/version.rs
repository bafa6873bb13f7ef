//! The agent API version and the host's compatibility rule.
//!
//! The major version changes when a request or field changes meaning or
//! disappears; the minor version when something is added. The host refuses an
//! agent with a different major version, and accepts any minor version (it
//! must not call requests newer than the agent's minor).

use std::fmt;

/// A `major.minor` API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

/// The API version this crate describes.
pub const API_VERSION: ApiVersion = ApiVersion { major: 1, minor: 3 };

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why a peer's API version is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "agent API version {peer} is incompatible with ours ({ours}): major versions differ; \
         rebuild the guest assets with the same Cloister release (`cloister assets build`)"
    )]
    MajorMismatch { ours: ApiVersion, peer: ApiVersion },
}

/// Checks that a peer speaking `peer` can be used by a side speaking `ours`.
pub fn check_compatible(ours: ApiVersion, peer: ApiVersion) -> Result<(), VersionError> {
    if ours.major == peer.major {
        Ok(())
    } else {
        Err(VersionError::MajorMismatch { ours, peer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_major_any_minor_is_compatible() {
        let ours = ApiVersion { major: 1, minor: 3 };
        for minor in [0, 3, 9] {
            assert_eq!(
                check_compatible(ours, ApiVersion { major: 1, minor }),
                Ok(())
            );
        }
    }

    #[test]
    fn different_major_is_refused_with_both_versions_named() {
        let ours = ApiVersion { major: 1, minor: 0 };
        let peer = ApiVersion { major: 2, minor: 0 };
        let err = check_compatible(ours, peer).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("2.0") && msg.contains("1.0"), "{msg}");
        assert!(check_compatible(ours, ApiVersion { major: 0, minor: 9 }).is_err());
    }
}
