//! Getting the guest kernel: resolve the newest Debian 6.12 cloud kernel build
//! that apt serves, download it with apt (which checks it against the
//! archive's signed index), check its sha256 against that index ourselves, and
//! extract it with `dpkg-deb`.
//!
//! Only apt's local package lists are read to resolve; the network is used
//! only to download a package not already in the cache.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::manifest::Sha256;

/// Package names this resolver accepts: `linux-image-6.12.<patch>+deb12<…>-cloud-amd64-unsigned`.
pub const PACKAGE_PREFIX: &str = "linux-image-6.12.";
/// See [`PACKAGE_PREFIX`].
pub const PACKAGE_SUFFIX: &str = "-cloud-amd64-unsigned";

/// Why the kernel could not be resolved, fetched or extracted.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A tool (apt-cache, apt-get, dpkg-deb) could not run or failed.
    #[error("`{cmd}` failed: {detail}")]
    Tool {
        /// The command line.
        cmd: String,
        /// Exit status and last stderr line, or the spawn error.
        detail: String,
    },
    /// apt knows no matching package.
    #[error("apt serves no {PACKAGE_PREFIX}*{PACKAGE_SUFFIX} package{}: run scripts/install-deps.sh (enables bookworm-backports) and `apt-get update`, or pass --kernel-deb FILE",
        suite.as_ref().map(|s| format!(" in suite {s}")).unwrap_or_default())]
    NoCandidate {
        /// The suite the search was limited to.
        suite: Option<String>,
    },
    /// A downloaded or cached package does not match the signed index.
    #[error("{} has sha256 {found}, the archive index says {expected}", path.display())]
    HashMismatch {
        /// The package file.
        path: PathBuf,
        /// sha256 from the index.
        expected: Sha256,
        /// sha256 of the file.
        found: Sha256,
    },
    /// The package is not a 6.12 cloud kernel image or lacks an expected file.
    #[error("{}: {reason}", path.display())]
    BadPackage {
        /// The package file or extracted tree.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// File system error.
    #[error("cannot access {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KernelError {
    let path = path.to_path_buf();
    move |source| KernelError::Io { path, source }
}

/// A kernel package build apt can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Package name.
    pub package: String,
    /// Debian version.
    pub version: String,
    /// Suite it is served from, e.g. `bookworm-backports`.
    pub suite: String,
}

/// True for names of 6.12 cloud amd64 unsigned kernel images.
pub fn is_cloud_kernel_package(name: &str) -> bool {
    name.strip_prefix(PACKAGE_PREFIX)
        .and_then(|r| r.strip_suffix(PACKAGE_SUFFIX))
        .is_some_and(|mid| {
            // "<patch>+deb12[.N]"
            let (patch, rest) = mid.split_once('+').unwrap_or((mid, ""));
            !patch.is_empty()
                && patch.bytes().all(|b| b.is_ascii_digit())
                && rest.starts_with("deb")
                && !rest.contains('-')
        })
}

/// Parses `apt-cache madison` output (`pkg | version | <source> <suite>/<component> <arch> Packages`).
pub fn parse_madison(text: &str) -> Vec<Candidate> {
    let mut out = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split('|').map(str::trim).collect();
        if cols.len() != 3 || !cols[2].ends_with("Packages") {
            continue;
        }
        let Some(suite) = cols[2]
            .split_whitespace()
            .filter(|w| !w.contains(':'))
            .find_map(|w| w.split_once('/').map(|(s, _)| s))
        else {
            continue;
        };
        out.push(Candidate {
            package: cols[0].to_string(),
            version: cols[1].to_string(),
            suite: suite.to_string(),
        });
    }
    out
}

/// The newest candidate (by Debian version), optionally limited to one suite.
pub fn newest(cands: &[Candidate], suite: Option<&str>) -> Option<Candidate> {
    cands
        .iter()
        .filter(|c| is_cloud_kernel_package(&c.package))
        .filter(|c| suite.is_none_or(|s| c.suite == s))
        .max_by(|a, b| {
            crate::debver::compare(&a.version, &b.version).then_with(|| a.suite.cmp(&b.suite))
        })
        .cloned()
}

fn run(cmd: &mut Command) -> Result<String, KernelError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| KernelError::Tool {
        cmd: shown.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty() && !l.starts_with("W:"))
            .unwrap_or("");
        return Err(KernelError::Tool {
            cmd: shown,
            detail: format!("{}: {last}", out.status),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Resolves the newest served build from apt's local (signed) package lists.
pub fn resolve_with_apt(suite: Option<&str>) -> Result<Candidate, KernelError> {
    let names = run(Command::new("apt-cache").args(["pkgnames", PACKAGE_PREFIX]))?;
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|n| is_cloud_kernel_package(n))
        .collect();
    if names.is_empty() {
        return Err(KernelError::NoCandidate {
            suite: suite.map(String::from),
        });
    }
    let madison = run(Command::new("apt-cache").arg("madison").args(&names))?;
    newest(&parse_madison(&madison), suite).ok_or_else(|| KernelError::NoCandidate {
        suite: suite.map(String::from),
    })
}

/// The sha256 apt's signed index lists for `package=version`, if apt knows it.
pub fn index_sha256(package: &str, version: &str) -> Result<Option<Sha256>, KernelError> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", &format!("{package}={version}")])
        .output()
        .map_err(|e| KernelError::Tool {
            cmd: "apt-cache show".into(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(
        parse_control_field(&String::from_utf8_lossy(&out.stdout), "SHA256")
            .and_then(|v| Sha256::parse(&v).ok()),
    )
}

/// The first value of `field` in Debian control-file text.
pub fn parse_control_field(text: &str, field: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| *k == field)
            .map(|(_, v)| v.trim().to_string())
    })
}

/// The file name apt gives a downloaded package.
pub fn deb_file_name(package: &str, version: &str) -> String {
    format!("{package}_{}_amd64.deb", version.replace(':', "%3a"))
}

/// Downloads `cand` into `debs_dir` unless a copy matching the index is there.
/// Returns the path and the index sha256 it was checked against.
pub fn fetch(cand: &Candidate, debs_dir: &Path) -> Result<(PathBuf, Sha256), KernelError> {
    let expected =
        index_sha256(&cand.package, &cand.version)?.ok_or_else(|| KernelError::Tool {
            cmd: format!("apt-cache show {}={}", cand.package, cand.version),
            detail: "no SHA256 in the index".into(),
        })?;
    std::fs::create_dir_all(debs_dir).map_err(io(debs_dir))?;
    let dest = debs_dir.join(deb_file_name(&cand.package, &cand.version));
    if dest.is_file() {
        let found = Sha256::parse(&crate::sha256_file(&dest).map_err(io(&dest))?).map_err(|e| {
            KernelError::BadPackage {
                path: dest.clone(),
                reason: e.to_string(),
            }
        })?;
        if found == expected {
            return Ok((dest, expected));
        }
        std::fs::remove_file(&dest).map_err(io(&dest))?;
    }
    let tmp = debs_dir.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = (|| {
        run(Command::new("apt-get")
            .args([
                "download",
                "-q",
                &format!("{}={}", cand.package, cand.version),
            ])
            .current_dir(&tmp))?;
        let got = tmp.join(deb_file_name(&cand.package, &cand.version));
        let found = Sha256::parse(&crate::sha256_file(&got).map_err(io(&got))?).map_err(|e| {
            KernelError::BadPackage {
                path: got.clone(),
                reason: e.to_string(),
            }
        })?;
        if found != expected {
            return Err(KernelError::HashMismatch {
                path: got,
                expected: expected.clone(),
                found,
            });
        }
        std::fs::rename(&got, &dest).map_err(io(&dest))?;
        Ok((dest.clone(), expected.clone()))
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// `Package` and `Version` of a .deb file.
pub fn deb_identity(deb: &Path) -> Result<(String, String), KernelError> {
    let out = run(Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .args(["Package", "Version"]))?;
    let package = parse_control_field(&out, "Package");
    let version = parse_control_field(&out, "Version");
    match (package, version) {
        (Some(p), Some(v)) if is_cloud_kernel_package(&p) => Ok((p, v)),
        (Some(p), Some(_)) => Err(KernelError::BadPackage {
            path: deb.to_path_buf(),
            reason: format!(
                "package {p:?} is not a {PACKAGE_PREFIX}*{PACKAGE_SUFFIX} kernel image"
            ),
        }),
        _ => Err(KernelError::BadPackage {
            path: deb.to_path_buf(),
            reason: "no Package/Version in its control file".into(),
        }),
    }
}

/// The parts of an extracted kernel package the build uses.
#[derive(Debug, Clone)]
pub struct ExtractedKernel {
    /// Kernel release, e.g. `6.12.117+deb12-cloud-amd64`.
    pub release: String,
    /// `boot/vmlinuz-<release>`.
    pub vmlinuz: PathBuf,
    /// `boot/config-<release>`.
    pub config: PathBuf,
    /// `lib/modules/<release>` (or `usr/lib/modules/<release>`).
    pub modules: PathBuf,
}

/// Extracts `deb` into `dest` with `dpkg-deb -x` and finds the kernel in it.
pub fn extract(deb: &Path, dest: &Path) -> Result<ExtractedKernel, KernelError> {
    let _ = std::fs::remove_dir_all(dest);
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest))?;
    find_kernel(dest)
}

/// Finds `boot/vmlinuz-*` and its modules in an extracted package tree.
pub fn find_kernel(root: &Path) -> Result<ExtractedKernel, KernelError> {
    let boot = root.join("boot");
    let bad = |reason: String| KernelError::BadPackage {
        path: root.to_path_buf(),
        reason,
    };
    let mut releases: Vec<String> = std::fs::read_dir(&boot)
        .map_err(io(&boot))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(String::from)
        })
        .collect();
    releases.sort();
    let release = match releases.as_slice() {
        [one] => one.clone(),
        [] => return Err(bad("no boot/vmlinuz-* in the package".into())),
        many => return Err(bad(format!("several kernels in the package: {many:?}"))),
    };
    let config = boot.join(format!("config-{release}"));
    if !config.is_file() {
        return Err(bad(format!("no boot/config-{release}")));
    }
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|p| p.is_dir())
        .ok_or_else(|| bad(format!("no lib/modules/{release}")))?;
    Ok(ExtractedKernel {
        vmlinuz: boot.join(format!("vmlinuz-{release}")),
        config,
        modules,
        release,
    })
}

/// Config options the guest needs built in (`=y`), checked in the package's config.
pub const REQUIRED_CONFIG: &[&str] = &[
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_DEVTMPFS",
    "CONFIG_SERIAL_8250_CONSOLE",
    "CONFIG_VIRTIO_PCI",
    "CONFIG_EXT4_FS",
    "CONFIG_MODULES",
];

/// Checks [`REQUIRED_CONFIG`]; returns the options that are not `=y`.
pub fn missing_config(config_text: &str) -> Vec<&'static str> {
    REQUIRED_CONFIG
        .iter()
        .copied()
        .filter(|opt| {
            !config_text
                .lines()
                .any(|l| l.strip_prefix(opt).is_some_and(|r| r == "=y"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        for good in [
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.90+deb12.1-cloud-amd64-unsigned",
            "linux-image-6.12.95+deb12-cloud-amd64-unsigned",
        ] {
            assert!(is_cloud_kernel_package(good), "{good}");
        }
        for bad in [
            "linux-image-6.12.117+deb12-cloud-amd64",
            "linux-image-6.12.117+deb12-cloud-amd64-dbg",
            "linux-image-6.12-cloud-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "linux-image-6.1.0-28-cloud-amd64-unsigned",
            "linux-image-6.12.x+deb12-cloud-amd64-unsigned",
        ] {
            assert!(!is_cloud_kernel_package(bad), "{bad}");
        }
    }

    const MADISON: &str = "\
linux-image-6.12.95+deb12-cloud-amd64-unsigned | 6.12.95-1~bpo12+1 | http://archive.invalid/debian bookworm-backports/main amd64 Packages
linux-image-6.12.117+deb12-cloud-amd64-unsigned | 6.12.117-1~deb12u1 | http://archive.invalid/debian-security bookworm-security/main amd64 Packages
linux-image-6.12.115+deb12-cloud-amd64-unsigned | 6.12.115-2~deb12u1 | http://archive.invalid/debian-security bookworm-security/main amd64 Packages
linux-image-6.12.115+deb12-cloud-amd64-unsigned | 6.12.115-2~deb12u1 | http://archive.invalid/debian-security bookworm-security/main Sources
garbage line
";

    #[test]
    fn picks_the_newest_build() {
        let c = parse_madison(MADISON);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].suite, "bookworm-backports");
        let n = newest(&c, None).unwrap();
        assert_eq!(n.version, "6.12.117-1~deb12u1");
        assert_eq!(n.suite, "bookworm-security");
        let b = newest(&c, Some("bookworm-backports")).unwrap();
        assert_eq!(b.package, "linux-image-6.12.95+deb12-cloud-amd64-unsigned");
        assert!(newest(&c, Some("sid")).is_none());
    }

    #[test]
    fn control_fields_and_file_names() {
        let text = "Package: p\nVersion: 1:2.0-1\nSHA256: abc\nSHA256sum: x\n";
        assert_eq!(parse_control_field(text, "SHA256").as_deref(), Some("abc"));
        assert_eq!(parse_control_field(text, "Size"), None);
        assert_eq!(deb_file_name("p", "1:2.0-1"), "p_1%3a2.0-1_amd64.deb");
    }

    #[test]
    fn finds_the_kernel_in_a_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let r = tmp.path();
        let err = find_kernel(r).unwrap_err();
        assert!(matches!(err, KernelError::Io { .. }), "{err}");
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::create_dir_all(r.join("lib/modules/6.12.1+deb12-cloud-amd64")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.12.1+deb12-cloud-amd64"), b"k").unwrap();
        let err = find_kernel(r).unwrap_err().to_string();
        assert!(
            err.contains("no boot/config-6.12.1+deb12-cloud-amd64"),
            "{err}"
        );
        std::fs::write(r.join("boot/config-6.12.1+deb12-cloud-amd64"), b"c").unwrap();
        let k = find_kernel(r).unwrap();
        assert_eq!(k.release, "6.12.1+deb12-cloud-amd64");
        std::fs::write(r.join("boot/vmlinuz-6.12.2"), b"k").unwrap();
        assert!(find_kernel(r)
            .unwrap_err()
            .to_string()
            .contains("several kernels"));
    }

    /// A .deb that is not a kernel image is refused with its name.
    #[test]
    fn refuses_a_package_that_is_not_a_cloud_kernel() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pkg");
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        std::fs::write(
            root.join("DEBIAN/control"),
            "Package: hello-cloister\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@t.invalid>\nDescription: test\n",
        )
        .unwrap();
        let deb = tmp.path().join("hello.deb");
        let st = Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&deb)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("dpkg-deb not runnable: install dpkg (Debian's package tool)");
        assert!(st.success());
        let err = deb_identity(&deb).unwrap_err().to_string();
        assert!(err.contains("package \"hello-cloister\" is not a linux-image-6.12.*-cloud-amd64-unsigned kernel image"), "{err}");
        let err = deb_identity(&tmp.path().join("missing.deb"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("dpkg-deb"), "{err}");
    }

    #[test]
    fn config_check() {
        let full: String = REQUIRED_CONFIG.iter().map(|o| format!("{o}=y\n")).collect();
        assert!(missing_config(&full).is_empty());
        let partial = full.replace("CONFIG_DEVTMPFS=y", "# CONFIG_DEVTMPFS is not set");
        assert_eq!(missing_config(&partial), ["CONFIG_DEVTMPFS"]);
        let module = full.replace("CONFIG_VIRTIO_PCI=y", "CONFIG_VIRTIO_PCI=m");
        assert_eq!(missing_config(&module), ["CONFIG_VIRTIO_PCI"]);
    }
}
