//! The scratch disk of `cloister run --scratch-disk SIZE`: a sparse raw file
//! the guest gets as a virtio-blk disk with serial `cloister-scratch`. The
//! agent encrypts it with a key made in the guest (dm-crypt) and pages the
//! image store out to it, so images larger than guest RAM run; the host
//! only ever holds ciphertext in it.
//!
//! The file lives on disk, not in the state dir (which is on tmpfs for
//! root): under `$CLOISTER_SCRATCH_DIR`, else `/var/lib/cloister/scratch`
//! for root and `$XDG_DATA_HOME/cloister/scratch` (or
//! `~/.local/share/cloister/scratch`) for other users. It is removed with
//! the sandbox, and `cloister ps` removes those of sandboxes whose owner
//! died.

use std::path::{Path, PathBuf};

/// The virtio serial the agent looks for.
pub const SERIAL: &str = cloister_protocol::channel::SCRATCH_DISK_SERIAL;

/// The smallest scratch disk (the swap header and some pages).
pub const MIN_BYTES: u64 = 16 << 20;

/// Why the scratch disk could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    /// No place for it.
    #[error("no directory for the scratch disk: set CLOISTER_SCRATCH_DIR (or HOME)")]
    NoDir,
    /// Creating it failed.
    #[error("cannot create the scratch disk {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Parses a `--scratch-disk` size: bytes, or a number with `K`, `M`, `G`
/// or `T` (powers of 1024; `MiB`-style suffixes too), at least 16 MiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("{s:?} is not a size: expected a number with an optional unit, e.g. 2G or 512M")
    })?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?}: expected K, M, G or T (powers of 1024)"
            ))
        }
    };
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes < MIN_BYTES {
        return Err(format!(
            "{s:?} is too small for a scratch disk: expected at least 16M"
        ));
    }
    Ok(bytes)
}

/// The directory scratch disks go in.
pub fn scratch_dir() -> Result<PathBuf, ScratchError> {
    scratch_dir_from(|k| std::env::var_os(k), crate::sys::euid())
}

fn scratch_dir_from(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
    euid: u32,
) -> Result<PathBuf, ScratchError> {
    crate::state::host_dir(
        get,
        euid,
        "CLOISTER_SCRATCH_DIR",
        "/var/lib/cloister/scratch",
        &[
            ("XDG_DATA_HOME", "cloister/scratch"),
            ("HOME", ".local/share/cloister/scratch"),
        ],
    )
    .ok_or(ScratchError::NoDir)
}

/// A sandbox's scratch disk file; removed on drop.
#[derive(Debug)]
pub struct ScratchDisk {
    path: PathBuf,
}

impl ScratchDisk {
    /// Creates `DIR/ID.img`, sparse, `bytes` long, 0600 (DIR 0700).
    pub fn create(dir: &Path, id: &str, bytes: u64) -> Result<ScratchDisk, ScratchError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ScratchError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        let path = dir.join(format!("{id}.img"));
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let disk = ScratchDisk { path };
        f.set_len(bytes).map_err(io(&disk.path))?;
        Ok(disk)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDisk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_size("16777216").unwrap(), 16 << 20);
        for (bad, says) in [
            ("", "not a size"),
            ("G", "not a size"),
            ("2X", "unknown unit"),
            ("1M", "too small"),
            ("99999999999T", "too large"),
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn directory() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            scratch_dir_from(env(&[("CLOISTER_SCRATCH_DIR", "/x")]), 0).unwrap(),
            PathBuf::from("/x")
        );
        assert_eq!(
            scratch_dir_from(env(&[]), 0).unwrap(),
            PathBuf::from("/var/lib/cloister/scratch")
        );
        assert_eq!(
            scratch_dir_from(env(&[("HOME", "/h")]), 1000).unwrap(),
            PathBuf::from("/h/.local/share/cloister/scratch")
        );
        assert!(scratch_dir_from(env(&[]), 1000).is_err());
    }

    #[test]
    fn file_is_sparse_private_and_removed_on_drop() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("s");
        let disk = ScratchDisk::create(&dir, "abc", 1 << 30).unwrap();
        let m = std::fs::metadata(disk.path()).unwrap();
        assert_eq!(m.len(), 1 << 30);
        assert!(m.blocks() < 64, "not sparse: {} blocks", m.blocks());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let dm = std::fs::metadata(&dir).unwrap();
        assert_eq!(dm.permissions().mode() & 0o777, 0o700);
        let p = disk.path().to_path_buf();
        assert!(ScratchDisk::create(&dir, "abc", 1 << 20).is_err(), "taken");
        drop(disk);
        assert!(!p.exists());
    }
}
