//! The container rootfs in non-confidential mode: a host directory copied
//! into a raw ext4 image (`mke2fs -d`) that the guest gets as a read-only
//! virtio-blk disk. (The guest kernel has no 9p, so there is no share.)

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The device the rootfs disk appears as in the guest (the only virtio-blk disk).
pub const GUEST_DEVICE: &str = "/dev/vda";
/// Its file system.
pub const FSTYPE: &str = "ext4";

/// Why the rootfs image could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The directory does not exist.
    #[error("rootfs directory {} does not exist: pass --rootfs DIR with an unpacked container root (e.g. one with bin/sh)", .0.display())]
    Missing(PathBuf),
    /// It is not a directory.
    #[error("rootfs {} is not a directory: pass --rootfs DIR with an unpacked container root", .0.display())]
    NotADirectory(PathBuf),
    /// No mke2fs.
    #[error("mke2fs not found: run scripts/install-deps.sh (installs e2fsprogs)")]
    NoMke2fs,
    /// Walking the directory failed.
    #[error("cannot read rootfs {}", path.display())]
    Walk {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// mke2fs failed.
    #[error("mke2fs could not build {} from {}: {stderr}", image.display(), dir.display())]
    Mke2fs {
        /// The image.
        image: PathBuf,
        /// The directory.
        dir: PathBuf,
        /// What it said.
        stderr: String,
    },
}

/// Checks that `dir` is a directory.
pub fn check_dir(dir: &Path) -> Result<(), RootfsError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(RootfsError::NotADirectory(dir.to_path_buf())),
        Err(_) => Err(RootfsError::Missing(dir.to_path_buf())),
    }
}

/// Finds mke2fs in PATH or the sbin directories.
pub fn find_mke2fs() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].into_iter().map(PathBuf::from))
        .map(|d| d.join("mke2fs"))
        .find(|p| p.is_file())
}

/// Bytes and inodes under `dir` (not following symlinks).
fn usage(dir: &Path) -> Result<(u64, u64), RootfsError> {
    let mut bytes = 0u64;
    let mut inodes = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| RootfsError::Walk {
            path: d.clone(),
            source,
        })?;
        for e in rd {
            let e = e.map_err(|source| RootfsError::Walk {
                path: d.clone(),
                source,
            })?;
            let md = e.metadata().map_err(|source| RootfsError::Walk {
                path: e.path(),
                source,
            })?;
            inodes += 1;
            // Round each file up to a 4 KiB block.
            bytes += md.len().div_ceil(4096) * 4096;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok((bytes, inodes))
}

/// Builds `image` from `dir`.
pub fn build_image(dir: &Path, image: &Path) -> Result<(), RootfsError> {
    check_dir(dir)?;
    let mke2fs = find_mke2fs().ok_or(RootfsError::NoMke2fs)?;
    let (bytes, inodes) = usage(dir)?;
    // Room for metadata: 256 B per inode, 10% slack, and 8 MiB.
    let size = (bytes + inodes * 256) / 10 * 11 + (8 << 20);
    let size_kib = size.div_ceil(1024);
    let out = Command::new(mke2fs)
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-O",
            "^has_journal",
            "-L",
            "cloister-rootfs",
        ])
        .args(["-N", &(inodes + 64).to_string()])
        .arg("-E")
        .arg("root_owner=0:0")
        .arg("-d")
        .arg(dir)
        .arg(image)
        .arg(format!("{size_kib}k"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|source| RootfsError::Walk {
            path: dir.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        let _ = std::fs::remove_file(image);
        return Err(RootfsError::Mke2fs {
            image: image.to_path_buf(),
            dir: dir.to_path_buf(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_non_directories_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = check_dir(&tmp.path().join("nope")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let f = tmp.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let err = check_dir(&f).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn builds_an_ext4_image() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::write(root.join("bin/hello"), b"#!/bin/sh\necho hi\n").unwrap();
        let img = tmp.path().join("rootfs.img");
        build_image(&root, &img).unwrap();
        let data = std::fs::read(&img).unwrap();
        // ext4 superblock magic 0xEF53 at offset 1024 + 0x38.
        assert_eq!(&data[1024 + 0x38..1024 + 0x3a], &[0x53, 0xef]);
    }
}
