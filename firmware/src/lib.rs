//! Guest assets for Cloister: the guest kernel (Debian's packaged 6.12 cloud
//! kernel, recorded in a manifest with exact version and sha256), the kernel
//! modules the agent needs, and a reproducible initramfs builder (newc cpio,
//! sorted entries, fixed owners and mtimes) whose `/init` is the static agent.
//! The host runtime finds the built files with [`Assets::locate`]; the
//! `cloister assets build` command drives [`build::build_assets`].
//!
//! This crate is not a kernel build system (the kernel comes from Debian's
//! signed archive, fetched with apt) and not a general cpio tool: it writes
//! only what a Linux initramfs needs, and reads back only what it writes.
//!
//! # Layout of the cache directory
//!
//! ```text
//! <cache dir>/assets/vmlinuz          the guest kernel (bzImage)
//! <cache dir>/assets/initramfs.cpio   uncompressed newc archive
//! <cache dir>/assets/manifest.json    what was built from what (see [`manifest::Manifest`])
//! <cache dir>/assets/stamp            hash of all inputs; equal stamp = nothing to do
//! <cache dir>/debs/*.deb              downloaded kernel packages, verified by sha256
//! ```
//!
//! The cache dir is `$CLOISTER_CACHE_DIR`, else `$XDG_CACHE_HOME/cloister`,
//! else `~/.cache/cloister` ([`default_cache_dir`]).
//!
//! # What is inside the initramfs (contract with the agent)
//!
//! * `/init`: the static agent (mode 0755).
//! * `/dev/console` (char 5:1), `/dev/null` (char 1:3), empty `/proc`, `/sys`,
//!   `/run`, `/tmp`, `/mnt`.
//! * Decompressed kernel modules at
//!   `/lib/modules/<kernel release>/kernel/...ko` (the Debian tree path without
//!   `.xz`), loadable with plain `finit_module(fd, "", 0)`.
//! * [`MODULES_LOAD_PATH`] (`/etc/cloister/modules.load`): the modules to
//!   load, dependencies first. Format: UTF-8 text, one absolute path per line;
//!   empty lines and lines starting with `#` are comments. Load them in file
//!   order; `EEXIST` means already loaded. The modules in
//!   [`modules::OPTIONAL_TEE_MODULES`] (`sev_guest`, `tdx_guest`) fail with
//!   `ENODEV` outside their TEE: the agent must log that and go on. Their lines
//!   are preceded by a `# tee-only` comment.
//! * `/etc/cloister/kernel-release`: the kernel release string (one line).

pub mod build;
pub mod cpio;
pub mod debver;
pub mod kernel;
pub mod manifest;
pub mod modules;

use std::path::{Path, PathBuf};

pub use cpio::Initramfs;
pub use manifest::Manifest;

/// Where the agent finds its dependency-ordered module list inside the initramfs.
pub const MODULES_LOAD_PATH: &str = "/etc/cloister/modules.load";
/// Where the kernel release string is written inside the initramfs.
pub const KERNEL_RELEASE_PATH: &str = "/etc/cloister/kernel-release";
/// Subdirectory of the cache dir holding the built assets.
pub const ASSETS_SUBDIR: &str = "assets";
/// File names inside [`ASSETS_SUBDIR`].
pub const KERNEL_FILE: &str = "vmlinuz";
/// File name of the initramfs inside [`ASSETS_SUBDIR`].
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
/// File name of the manifest inside [`ASSETS_SUBDIR`].
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of the input stamp inside [`ASSETS_SUBDIR`].
pub const STAMP_FILE: &str = "stamp";

/// Why built assets could not be located.
#[derive(Debug, thiserror::Error)]
pub enum AssetsError {
    /// No usable cache directory: none of the variables is set.
    #[error("no cache directory: set CLOISTER_CACHE_DIR, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// The assets were never built (or a file is missing).
    #[error("guest assets not found in {}: run `cloister assets build` ({missing} is missing)", dir.display())]
    NotFound {
        /// The assets directory that was searched.
        dir: PathBuf,
        /// The file that is missing.
        missing: &'static str,
    },
    /// The manifest exists but cannot be read or parsed.
    #[error("guest assets in {}: bad manifest: run `cloister assets build` to rebuild", dir.display())]
    BadManifest {
        /// The assets directory.
        dir: PathBuf,
        /// What was wrong.
        #[source]
        source: manifest::ManifestError,
    },
    /// A file's sha256 does not match the manifest (see [`Assets::verify`]).
    #[error("guest asset {} has sha256 {found}, manifest says {expected}: run `cloister assets build`", path.display())]
    Tampered {
        /// The file whose digest differs.
        path: PathBuf,
        /// Digest recorded in the manifest.
        expected: String,
        /// Digest of the file on disk.
        found: String,
    },
    /// Reading an asset failed.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// The built guest assets, as found in the cache directory.
#[derive(Debug, Clone)]
pub struct Assets {
    /// The assets directory (`<cache dir>/assets`).
    pub dir: PathBuf,
    /// The guest kernel image (bzImage), for QEMU's `-kernel`.
    pub kernel: PathBuf,
    /// The initramfs (uncompressed newc cpio), for QEMU's `-initrd`.
    pub initramfs: PathBuf,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// The parsed manifest.
    pub manifest: Manifest,
}

impl Assets {
    /// Locates the built assets in `cache_dir` (or [`default_cache_dir`] when
    /// `None`). Checks that the files exist and the manifest parses; it does
    /// not hash them (see [`Assets::verify`]).
    pub fn locate(cache_dir: Option<&Path>) -> Result<Assets, AssetsError> {
        let cache = match cache_dir {
            Some(d) => d.to_path_buf(),
            None => default_cache_dir().ok_or(AssetsError::NoCacheDir)?,
        };
        let dir = cache.join(ASSETS_SUBDIR);
        let kernel = dir.join(KERNEL_FILE);
        let initramfs = dir.join(INITRAMFS_FILE);
        let manifest_path = dir.join(MANIFEST_FILE);
        for (path, name) in [
            (&manifest_path, MANIFEST_FILE),
            (&kernel, KERNEL_FILE),
            (&initramfs, INITRAMFS_FILE),
        ] {
            if !path.is_file() {
                return Err(AssetsError::NotFound { dir, missing: name });
            }
        }
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| AssetsError::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let manifest = Manifest::parse(&text).map_err(|source| AssetsError::BadManifest {
            dir: dir.clone(),
            source,
        })?;
        Ok(Assets {
            dir,
            kernel,
            initramfs,
            manifest_path,
            manifest,
        })
    }

    /// The kernel release (`uname -r` in the guest), e.g. `6.12.117+deb12-cloud-amd64`.
    pub fn kernel_release(&self) -> &str {
        &self.manifest.kernel.release
    }

    /// The Debian package version the kernel came from, e.g. `6.12.117-1~deb12u1`.
    pub fn kernel_version(&self) -> &str {
        &self.manifest.kernel.version
    }

    /// Hashes the kernel and initramfs and compares them with the manifest.
    pub fn verify(&self) -> Result<(), AssetsError> {
        for (path, expected) in [
            (&self.kernel, &self.manifest.outputs.kernel.sha256),
            (&self.initramfs, &self.manifest.outputs.initramfs.sha256),
        ] {
            let found = sha256_file(path).map_err(|source| AssetsError::Io {
                path: path.clone(),
                source,
            })?;
            if &found != expected {
                return Err(AssetsError::Tampered {
                    path: path.clone(),
                    expected: expected.to_string(),
                    found,
                });
            }
        }
        Ok(())
    }
}

/// The cache directory: `$CLOISTER_CACHE_DIR`, else `$XDG_CACHE_HOME/cloister`,
/// else `$HOME/.cache/cloister`. Empty variables count as unset.
pub fn default_cache_dir() -> Option<PathBuf> {
    cache_dir_from(|k| std::env::var_os(k))
}

fn cache_dir_from(get: impl Fn(&str) -> Option<std::ffi::OsString>) -> Option<PathBuf> {
    let nonempty = |k: &str| get(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = nonempty("CLOISTER_CACHE_DIR") {
        return Some(d);
    }
    if let Some(d) = nonempty("XDG_CACHE_HOME") {
        return Some(d.join("cloister"));
    }
    nonempty("HOME").map(|h| h.join(".cache").join("cloister"))
}

/// Lower-case hex sha256 of a byte string.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// Lower-case hex sha256 of a file, streamed.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn cache_dir_precedence() {
        let all = [
            ("CLOISTER_CACHE_DIR", "/c"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(cache_dir_from(env(&all)), Some(PathBuf::from("/c")));
        assert_eq!(
            cache_dir_from(env(&all[1..])),
            Some(PathBuf::from("/x/cloister"))
        );
        assert_eq!(
            cache_dir_from(env(&[("XDG_CACHE_HOME", ""), ("HOME", "/h")])),
            Some(PathBuf::from("/h/.cache/cloister"))
        );
        assert_eq!(cache_dir_from(env(&[])), None);
    }

    #[test]
    fn locate_reports_missing_assets_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Assets::locate(Some(tmp.path())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("guest assets not found in"), "{msg}");
        assert!(msg.contains("run `cloister assets build`"), "{msg}");
        assert!(msg.contains(&tmp.path().join("assets").display().to_string()));
    }

    #[test]
    fn locate_rejects_a_bad_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(ASSETS_SUBDIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(MANIFEST_FILE), "{not json").unwrap();
        std::fs::write(dir.join(KERNEL_FILE), b"k").unwrap();
        std::fs::write(dir.join(INITRAMFS_FILE), b"i").unwrap();
        let err = Assets::locate(Some(tmp.path())).unwrap_err();
        assert!(matches!(err, AssetsError::BadManifest { .. }), "{err}");
    }

    #[test]
    fn locate_and_verify_a_built_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(ASSETS_SUBDIR);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(KERNEL_FILE), b"kernel").unwrap();
        std::fs::write(dir.join(INITRAMFS_FILE), b"initramfs").unwrap();
        let m = manifest::tests::sample_manifest(&sha256_hex(b"kernel"), &sha256_hex(b"initramfs"));
        std::fs::write(dir.join(MANIFEST_FILE), m.to_json()).unwrap();
        let a = Assets::locate(Some(tmp.path())).unwrap();
        assert_eq!(a.kernel_release(), "6.12.117+deb12-cloud-amd64");
        a.verify().unwrap();
        std::fs::write(dir.join(INITRAMFS_FILE), b"changed").unwrap();
        let err = a.verify().unwrap_err();
        assert!(matches!(err, AssetsError::Tampered { .. }), "{err}");
    }
}
