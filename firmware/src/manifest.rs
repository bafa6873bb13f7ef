//! The asset manifest (`<cache dir>/assets/manifest.json`) and the kernel pin
//! committed at `firmware/kernel-manifest.json`.
//!
//! The manifest says exactly what was built from what: the kernel package
//! (name, Debian version, suite, sha256 of the .deb as downloaded and as the
//! archive's signed index lists it), the sha256 of the extracted kernel and of
//! every module put into the initramfs, the agent's sha256, and the outputs.
//! Measurements (issue 5) are reproduced from these records.

use serde::{Deserialize, Serialize};

/// The manifest format this crate writes and accepts.
pub const MANIFEST_FORMAT: u32 = 1;

/// A lower-case hex sha256 digest (64 characters).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(String);

impl Sha256 {
    /// Parses a digest; accepts exactly 64 lower-case hex characters.
    pub fn parse(s: &str) -> Result<Sha256, ManifestError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Sha256(s.to_string()))
        } else {
            Err(ManifestError::BadDigest {
                value: s.chars().take(80).collect(),
            })
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Sha256 {
        Sha256(crate::sha256_hex(data))
    }

    /// The hex string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256 {
    type Error = ManifestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Sha256::parse(&s)
    }
}

impl From<Sha256> for String {
    fn from(d: Sha256) -> String {
        d.0
    }
}

impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<String> for Sha256 {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Sha256> for String {
    fn eq(&self, other: &Sha256) -> bool {
        self == &other.0
    }
}

/// Why a manifest or pin could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON, or a field missing, unknown or of the wrong type.
    #[error("invalid manifest JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Written by another version of the builder.
    #[error("manifest format {found} is not supported (expected {expected})")]
    Format {
        /// Format number found.
        found: u32,
        /// Format number this crate reads.
        expected: u32,
    },
    /// A digest field is not 64 lower-case hex characters.
    #[error("bad sha256 {value:?}: expected 64 lower-case hex characters")]
    BadDigest {
        /// The offending value (truncated).
        value: String,
    },
}

/// Where the kernel package came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelOrigin {
    /// Resolved and downloaded with apt from the configured, signed archive.
    Apt,
    /// A saved package given with `--kernel-deb`.
    File,
}

/// The kernel package and what was extracted from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelRecord {
    /// Debian package name, e.g. `linux-image-6.12.117+deb12-cloud-amd64-unsigned`.
    pub package: String,
    /// Debian package version, e.g. `6.12.117-1~deb12u1`.
    pub version: String,
    /// Kernel release (`uname -r`), e.g. `6.12.117+deb12-cloud-amd64`.
    pub release: String,
    /// How the package was obtained.
    pub origin: KernelOrigin,
    /// The archive suite apt served it from (e.g. `bookworm-backports`), when known.
    pub suite: Option<String>,
    /// sha256 of the .deb file.
    pub deb_sha256: Sha256,
    /// Size of the .deb file in bytes.
    pub deb_size: u64,
    /// sha256 the archive's signed index lists for this package and version,
    /// when apt still knows it. Equal to `deb_sha256` when present.
    pub index_sha256: Option<Sha256>,
    /// sha256 of `/boot/vmlinuz-<release>` inside the package.
    pub vmlinuz_sha256: Sha256,
    /// sha256 of `/boot/config-<release>` inside the package.
    pub config_sha256: Sha256,
}

/// A file's digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRecord {
    /// sha256 of the file.
    pub sha256: Sha256,
    /// Size in bytes.
    pub size: u64,
}

/// One kernel module placed in the initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleRecord {
    /// Module name (as `lsmod` shows it), e.g. `vmw_vsock_virtio_transport`.
    pub name: String,
    /// Absolute path inside the initramfs (decompressed `.ko`).
    pub path: String,
    /// sha256 of the decompressed module.
    pub sha256: Sha256,
    /// True for modules the agent may fail to load outside their TEE (`ENODEV`).
    pub tee_only: bool,
}

/// The kernel modules: what is loaded, what is built in, what this kernel lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModulesRecord {
    /// Path of the load list inside the initramfs.
    pub load_file: String,
    /// Modules in load order (dependencies first).
    pub load: Vec<ModuleRecord>,
    /// Requested modules that this kernel has built in (nothing to load).
    pub builtin: Vec<String>,
    /// Optional modules this kernel does not have at all.
    pub absent: Vec<String>,
}

/// One built output file in the assets directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputRecord {
    /// File name inside the assets directory.
    pub file: String,
    /// sha256 of the file.
    pub sha256: Sha256,
    /// Size in bytes.
    pub size: u64,
}

/// The built outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputsRecord {
    /// The kernel image.
    pub kernel: OutputRecord,
    /// The initramfs.
    pub initramfs: OutputRecord,
}

/// The asset manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The kernel package.
    pub kernel: KernelRecord,
    /// The agent binary placed at `/init`.
    pub agent: FileRecord,
    /// The kernel modules.
    pub modules: ModulesRecord,
    /// The built files.
    pub outputs: OutputsRecord,
    /// The input stamp (sha256 over all inputs and the builder version).
    pub stamp: Sha256,
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_str(text)?;
        if m.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format {
                found: m.format,
                expected: MANIFEST_FORMAT,
            });
        }
        Ok(m)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// The kernel pin committed in the source tree (`firmware/kernel-manifest.json`):
/// what `cloister assets build` resolved when it was last refreshed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelPin {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Free text: how the file is refreshed.
    pub comment: String,
    /// The resolved kernel.
    pub kernel: KernelRecord,
    /// The modules resolved for it (names only, in load order).
    pub modules: Vec<String>,
}

/// The pin as committed when this crate was built.
pub const RECORDED_PIN_JSON: &str = include_str!("../kernel-manifest.json");

impl KernelPin {
    /// Parses and checks a pin file.
    pub fn parse(text: &str) -> Result<KernelPin, ManifestError> {
        let p: KernelPin = serde_json::from_str(text)?;
        if p.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format {
                found: p.format,
                expected: MANIFEST_FORMAT,
            });
        }
        Ok(p)
    }

    /// The pin committed with this source tree.
    pub fn recorded() -> Result<KernelPin, ManifestError> {
        KernelPin::parse(RECORDED_PIN_JSON)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Text of the `comment` field of a written pin.
pub const PIN_COMMENT: &str =
    "Written by `cloister assets build --record-pin firmware/kernel-manifest.json`: \
the newest 6.12 cloud kernel apt served when last refreshed. Debian serves only the newest build, \
so rebuild with `--kernel-deb` from a saved package to reproduce an older one.";

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_manifest(kernel_sha: &str, initramfs_sha: &str) -> Manifest {
        let d = |c: char| Sha256::parse(&c.to_string().repeat(64)).unwrap();
        Manifest {
            format: MANIFEST_FORMAT,
            kernel: KernelRecord {
                package: "linux-image-6.12.117+deb12-cloud-amd64-unsigned".into(),
                version: "6.12.117-1~deb12u1".into(),
                release: "6.12.117+deb12-cloud-amd64".into(),
                origin: KernelOrigin::Apt,
                suite: Some("bookworm-security".into()),
                deb_sha256: d('a'),
                deb_size: 1,
                index_sha256: Some(d('a')),
                vmlinuz_sha256: Sha256::parse(kernel_sha).unwrap(),
                config_sha256: d('c'),
            },
            agent: FileRecord {
                sha256: d('d'),
                size: 2,
            },
            modules: ModulesRecord {
                load_file: crate::MODULES_LOAD_PATH.into(),
                load: vec![ModuleRecord {
                    name: "vsock".into(),
                    path: "/lib/modules/x/kernel/net/vmw_vsock/vsock.ko".into(),
                    sha256: d('e'),
                    tee_only: false,
                }],
                builtin: vec!["virtio_console".into()],
                absent: vec!["9p".into()],
            },
            outputs: OutputsRecord {
                kernel: OutputRecord {
                    file: crate::KERNEL_FILE.into(),
                    sha256: Sha256::parse(kernel_sha).unwrap(),
                    size: 6,
                },
                initramfs: OutputRecord {
                    file: crate::INITRAMFS_FILE.into(),
                    sha256: Sha256::parse(initramfs_sha).unwrap(),
                    size: 9,
                },
            },
            stamp: d('f'),
        }
    }

    #[test]
    fn round_trip() {
        let m = sample_manifest(&"1".repeat(64), &"2".repeat(64));
        let back = Manifest::parse(&m.to_json()).unwrap();
        assert_eq!(m, back);
    }

    #[test]
    fn rejects_bad_input_with_reasons() {
        let good = sample_manifest(&"1".repeat(64), &"2".repeat(64)).to_json();
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "invalid manifest JSON"),
            ("[]".into(), "invalid manifest JSON"),
            (
                good.replace("\"format\": 1", "\"format\": 7"),
                "format 7 is not supported (expected 1)",
            ),
            (
                good.replace(&"1".repeat(64), &"1".repeat(63)),
                "expected 64 lower-case hex",
            ),
            (
                good.replace(&"2".repeat(64), &"A".repeat(64)),
                "expected 64 lower-case hex",
            ),
            (
                good.replace("\"origin\": \"apt\"", "\"origin\": \"ftp\""),
                "unknown variant",
            ),
            (
                good.replacen("\"stamp\"", "\"extra\": 1, \"stamp\"", 1),
                "unknown field",
            ),
            (
                good.replace("\"deb_size\": 1,", ""),
                "missing field `deb_size`",
            ),
        ];
        for (text, want) in cases {
            let err = Manifest::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
    }

    #[test]
    fn recorded_pin_parses() {
        let pin = KernelPin::recorded().unwrap();
        assert!(pin.kernel.package.starts_with("linux-image-6.12."));
        assert!(pin.kernel.package.ends_with("-cloud-amd64-unsigned"));
        assert!(pin
            .modules
            .iter()
            .any(|m| m == "vmw_vsock_virtio_transport"));
    }
}
