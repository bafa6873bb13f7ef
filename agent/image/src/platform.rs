//! Platforms (os, architecture, variant) and choosing one manifest from an
//! image index.

use std::fmt;
use std::str::FromStr;

/// An OCI platform. Values use the OCI/Go names: `linux`, `amd64`,
/// `arm64`, variant `v8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system (`linux`).
    pub os: String,
    /// CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// CPU variant (`v8` for arm64); `None` matches any variant.
    pub variant: Option<String>,
}

/// Why a platform string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8")]
pub struct BadPlatform(pub String);

impl Platform {
    /// The platform this binary was built for: `linux/amd64` or
    /// `linux/arm64/v8`.
    pub fn host() -> Self {
        let (architecture, variant) = if cfg!(target_arch = "aarch64") {
            ("arm64", Some("v8"))
        } else if cfg!(target_arch = "x86_64") {
            ("amd64", None)
        } else {
            (std::env::consts::ARCH, None)
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    /// Whether an index entry for `os`/`architecture`/`variant` runs here.
    /// arm64 without a variant is `v8` (as containerd normalizes it).
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        if self.os != os || self.architecture != architecture {
            return false;
        }
        let Some(want) = self.variant.as_deref() else {
            return true;
        };
        let have = match (architecture, variant) {
            ("arm64", None) => Some("v8"),
            (_, v) => v,
        };
        have == Some(want)
    }
}

impl FromStr for Platform {
    type Err = BadPlatform;
    fn from_str(s: &str) -> Result<Self, BadPlatform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok =
            |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(ok) {
            return Err(BadPlatform(s.to_string()));
        }
        Ok(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_matching_table() {
        let amd: Platform = "linux/amd64".parse().unwrap();
        let arm: Platform = "linux/arm64/v8".parse().unwrap();
        let cases = [
            (&amd, "linux", "amd64", None, true),
            (&amd, "linux", "amd64", Some("v3"), true),
            (&amd, "linux", "arm64", Some("v8"), false),
            (&amd, "windows", "amd64", None, false),
            (&arm, "linux", "arm64", Some("v8"), true),
            (&arm, "linux", "arm64", None, true),
            (&arm, "linux", "arm64", Some("v7"), false),
            (&arm, "linux", "arm", Some("v8"), false),
        ];
        for (p, os, arch, var, want) in cases {
            assert_eq!(p.matches(os, arch, var), want, "{p} vs {os}/{arch}/{var:?}");
        }
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v1/x".parse::<Platform>().is_err());
        let host = Platform::host();
        assert_eq!(host.os, "linux");
    }
}
