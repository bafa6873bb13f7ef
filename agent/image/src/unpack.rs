//! Unpacking one layer (tar, plain or gzip or zstd, streamed) into its own
//! directory in overlayfs format, confined to that directory by the kernel.
//!
//! **Format: one directory per layer, overlayfs-style.** A whiteout
//! (`.wh.NAME`) becomes a character device 0:0 named `NAME`; an opaque
//! marker (`.wh..wh..opq`) becomes the `trusted.overlay.opaque=y` xattr on
//! its directory. The layers are then stacked as overlay lowerdirs. This
//! keeps layers content-addressed and shared: a layer used by two
//! containers is unpacked once, which flattening into one tree per
//! container would not allow.
//!
//! **Confinement.** Every path in the archive is resolved with `openat2`
//! and `RESOLVE_IN_ROOT` against the layer directory: the kernel treats
//! that directory as `/` for absolute paths, `..` and symlinks met along
//! the way, so an entry can't name anything outside it. Only the last
//! component of a path is acted on, always relative to its (confined)
//! parent and never followed (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`,
//! `linkat` without `AT_SYMLINK_FOLLOW`). Hardlink targets are resolved
//! the same way, so a hardlink to `/etc/shadow` links the layer's own
//! `etc/shadow` or fails.
//!
//! Device nodes are refused unless [`UnpackOptions::allow_devices`];
//! setuid and setgid bits are cleared unless
//! [`UnpackOptions::allow_setuid`]. Extended attributes in the archive are
//! not applied (in particular no archive may set `trusted.overlay.*`).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timestamps, Uid};
use sha2::{Digest as _, Sha256};

use crate::manifest::Compression;
use crate::reference::Digest;

/// What an unpack may create.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Create character and block device nodes (whiteouts are always
    /// created).
    pub allow_devices: bool,
    /// Keep setuid and setgid bits.
    pub allow_setuid: bool,
}

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The stream is not a valid (compressed) tar archive.
    #[error("reading the layer archive")]
    Archive(#[source] io::Error),
    /// An entry is of a kind or name that is refused.
    #[error("entry {path:?}: {reason}")]
    Refused {
        /// The entry's path in the archive.
        path: String,
        /// Why.
        reason: String,
    },
    /// Creating an entry failed.
    #[error("entry {path:?}: {op}")]
    Io {
        /// The entry's path in the archive.
        path: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The uncompressed layer does not match the config's diff_id.
    #[error("uncompressed layer (diff_id): expected {expected}, found {found}")]
    DiffId {
        /// From the image config.
        expected: Digest,
        /// Of what was unpacked.
        found: Digest,
    },
}

/// Reads and hashes everything that passes through.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Decompresses `blob` (already decrypted), unpacks it into the empty
/// directory `dest`, and checks the uncompressed stream against
/// `diff_id`. On error `dest` is left partly written: the caller removes
/// it.
pub fn unpack_layer(
    blob: impl Read,
    compression: Compression,
    diff_id: &Digest,
    dest: &Path,
    opts: UnpackOptions,
) -> Result<(), UnpackError> {
    let tar: Box<dyn Read> = match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(blob))),
        Compression::Zstd => Box::new(
            ruzstd::decoding::StreamingDecoder::new(io::BufReader::new(blob))
                .map_err(|e| UnpackError::Archive(io::Error::new(io::ErrorKind::InvalidData, e)))?,
        ),
    };
    let mut hashing = Hashing {
        inner: tar,
        hasher: Sha256::new(),
    };
    unpack_tar(&mut hashing, dest, opts)?;
    // The diff_id covers the whole uncompressed stream, padding included.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Archive)?;
    let found = Digest::from_sha256(hashing.hasher.finalize().into());
    if &found != diff_id {
        return Err(UnpackError::DiffId {
            expected: diff_id.clone(),
            found,
        });
    }
    Ok(())
}

/// Unpacks a plain tar stream into `dest` (see the module docs).
pub fn unpack_tar(tar: impl Read, dest: &Path, opts: UnpackOptions) -> Result<(), UnpackError> {
    let root = rustix::fs::open(
        dest,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Io {
        path: dest.display().to_string(),
        op: "opening the layer directory",
        source: e.into(),
    })?;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let entry = entry.map_err(UnpackError::Archive)?;
        unpack_entry(&root, entry, opts)?;
    }
    Ok(())
}

/// An archive path split into its parent components and final name.
struct Split<'a> {
    parent: Vec<&'a [u8]>,
    name: Option<&'a [u8]>,
}

/// Splits a path, dropping empty and `.` components; `..` stays (the
/// kernel confines it). `name` is `None` for the root itself.
fn split(path: &[u8]) -> Result<Split<'_>, String> {
    if path.contains(&0) {
        return Err("a NUL byte in the path".into());
    }
    let mut comps: Vec<&[u8]> = path
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    let name = comps.pop();
    if name == Some(b"..".as_slice()) {
        return Err("the path ends in \"..\"".into());
    }
    Ok(Split {
        parent: comps,
        name,
    })
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, c) in comps.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Opens directory `path` (relative, resolved in `root`).
fn open_dir_in(root: &OwnedFd, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        OsStr::from_bytes(path),
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )
}

/// Opens the directory `comps` in `root`, creating missing directories
/// (mode 0755, owned by root) as tar extractors do.
fn open_parent(root: &OwnedFd, comps: &[&[u8]]) -> io::Result<OwnedFd> {
    match open_dir_in(root, &join(comps)) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    let mut cur = open_dir_in(root, b".")?;
    for i in 0..comps.len() {
        match open_dir_in(root, &join(&comps[..=i])) {
            Ok(fd) => cur = fd,
            Err(rustix::io::Errno::NOENT) if comps[i] != b".." => {
                match rustix::fs::mkdirat(
                    &cur,
                    OsStr::from_bytes(comps[i]),
                    Mode::from_raw_mode(0o755),
                ) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                cur = open_dir_in(root, &join(&comps[..=i]))?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(cur)
}

/// Removes whatever is at `name` in `dir` (a directory with its contents),
/// unless it is a directory and `keep_dir`. Returns whether a directory was
/// kept.
fn remove_existing(dir: &OwnedFd, name: &OsStr, keep_dir: bool) -> io::Result<bool> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        if keep_dir {
            return Ok(true);
        }
        remove_tree_at(dir, name)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(false)
}

/// Removes directory `name` in `dir` and everything under it, never
/// following symlinks.
fn remove_tree_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for ent in rustix::fs::Dir::read_from(&fd)? {
        let ent = ent?;
        let n = ent.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        let n = OsStr::from_bytes(&n);
        let st = rustix::fs::statat(&fd, n, AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            remove_tree_at(&fd, n)?;
        } else {
            rustix::fs::unlinkat(&fd, n, AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

fn owner(header: &tar::Header) -> io::Result<(Uid, Gid)> {
    let uid = u32::try_from(header.uid()?).map_err(|_| io::Error::other("uid out of range"))?;
    let gid = u32::try_from(header.gid()?).map_err(|_| io::Error::other("gid out of range"))?;
    Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
}

fn mtime(header: &tar::Header) -> Timestamps {
    let secs = header
        .mtime()
        .ok()
        .and_then(|t| i64::try_from(t).ok())
        .unwrap_or(0);
    let t = rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

fn unpack_entry<R: Read>(
    root: &OwnedFd,
    mut entry: tar::Entry<'_, R>,
    opts: UnpackOptions,
) -> Result<(), UnpackError> {
    let raw_path = entry.path_bytes().into_owned();
    let shown = String::from_utf8_lossy(&raw_path).into_owned();
    let refused = |reason: &str| UnpackError::Refused {
        path: shown.clone(),
        reason: reason.to_string(),
    };
    let io_err = |op: &'static str| {
        let path = shown.clone();
        move |source: io::Error| UnpackError::Io {
            path: path.clone(),
            op,
            source,
        }
    };
    let kind = entry.header().entry_type();
    if matches!(kind, tar::EntryType::XGlobalHeader) {
        return Ok(());
    }
    let parts = split(&raw_path).map_err(|r| refused(&r))?;
    let Some(name) = parts.name else {
        // The root directory itself ("./"): keep the layer dir as made.
        return if kind.is_dir() {
            Ok(())
        } else {
            Err(refused("a non-directory entry for the root"))
        };
    };
    let parent =
        open_parent(root, &parts.parent).map_err(io_err("opening its parent directory"))?;

    // Whiteouts, in overlayfs format.
    if name == OPAQUE {
        return rustix::fs::fsetxattr(
            &parent,
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(|e| io_err("marking the directory opaque")(e.into()));
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT) {
        if hidden.is_empty() || hidden == b"." || hidden == b".." || hidden.starts_with(WHITEOUT) {
            return Err(refused("a malformed whiteout name"));
        }
        let hidden = OsStr::from_bytes(hidden);
        remove_existing(&parent, hidden, false)
            .map_err(io_err("removing what the whiteout hides"))?;
        return rustix::fs::mknodat(
            &parent,
            hidden,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| io_err("creating the whiteout")(e.into()));
    }

    let name = OsStr::from_bytes(name);
    let header = entry.header().clone();
    let (uid, gid) = owner(&header).map_err(io_err("reading its owner"))?;
    let mut mode = header.mode().map_err(io_err("reading its mode"))? & 0o7777;
    if !opts.allow_setuid {
        mode &= !0o6000;
    }
    let mode = Mode::from_raw_mode(mode);
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            remove_existing(&parent, name, false).map_err(io_err("replacing what was there"))?;
            let fd = rustix::fs::openat(
                &parent,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| io_err("creating the file")(e.into()))?;
            let mut file = File::from(fd);
            io::copy(&mut entry, &mut file).map_err(UnpackError::Archive)?;
            rustix::fs::fchown(file.as_fd(), Some(uid), Some(gid))
                .map_err(|e| io_err("setting its owner")(e.into()))?;
            rustix::fs::fchmod(file.as_fd(), mode)
                .map_err(|e| io_err("setting its mode")(e.into()))?;
            rustix::fs::futimens(file.as_fd(), &mtime(&header))
                .map_err(|e| io_err("setting its mtime")(e.into()))?;
        }
        tar::EntryType::Directory => {
            let kept =
                remove_existing(&parent, name, true).map_err(io_err("replacing what was there"))?;
            if !kept {
                rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                    .map_err(|e| io_err("creating the directory")(e.into()))?;
            }
            let fd = rustix::fs::openat(
                &parent,
                name,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_err("opening the directory")(e.into()))?;
            rustix::fs::fchown(&fd, Some(uid), Some(gid))
                .map_err(|e| io_err("setting its owner")(e.into()))?;
            rustix::fs::fchmod(&fd, mode).map_err(|e| io_err("setting its mode")(e.into()))?;
        }
        tar::EntryType::Symlink => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| refused("a symlink without a target"))?
                .into_owned();
            if target.is_empty() || target.contains(&0) {
                return Err(refused("an empty or NUL-containing symlink target"));
            }
            remove_existing(&parent, name, false).map_err(io_err("replacing what was there"))?;
            // The target is stored as written: it is only ever resolved
            // inside this root (here) or the container's root (later).
            rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name)
                .map_err(|e| io_err("creating the symlink")(e.into()))?;
            rustix::fs::chownat(
                &parent,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err("setting its owner")(e.into()))?;
            rustix::fs::utimensat(&parent, name, &mtime(&header), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("setting its mtime")(e.into()))?;
        }
        tar::EntryType::Link => {
            let target = entry
                .link_name_bytes()
                .ok_or_else(|| refused("a hardlink without a target"))?
                .into_owned();
            let t = split(&target).map_err(|r| refused(&format!("hardlink target: {r}")))?;
            let t_name = t.name.ok_or_else(|| refused("a hardlink to the root"))?;
            let t_parent = open_dir_in(root, &join(&t.parent))
                .map_err(|e| io_err("opening the hardlink target's directory")(e.into()))?;
            remove_existing(&parent, name, false).map_err(io_err("replacing what was there"))?;
            rustix::fs::linkat(
                &t_parent,
                OsStr::from_bytes(t_name),
                &parent,
                name,
                AtFlags::empty(),
            )
            .map_err(|e| io_err("creating the hardlink")(e.into()))?;
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let file_type = match kind {
                tar::EntryType::Char => FileType::CharacterDevice,
                tar::EntryType::Block => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            let dev = if file_type == FileType::Fifo {
                0
            } else {
                if !opts.allow_devices {
                    return Err(refused(
                        "a device node (the measured initdata does not set cloister.toml allow_devices)",
                    ));
                }
                let major = header
                    .device_major()
                    .map_err(io_err("reading its device number"))?;
                let minor = header
                    .device_minor()
                    .map_err(io_err("reading its device number"))?;
                rustix::fs::makedev(major.unwrap_or(0), minor.unwrap_or(0))
            };
            remove_existing(&parent, name, false).map_err(io_err("replacing what was there"))?;
            rustix::fs::mknodat(&parent, name, file_type, mode, dev)
                .map_err(|e| io_err("creating the node")(e.into()))?;
            rustix::fs::chownat(
                &parent,
                name,
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_err("setting its owner")(e.into()))?;
        }
        other => {
            return Err(refused(&format!("unsupported tar entry type {other:?}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_dotdot_for_the_kernel_and_refuses_a_trailing_one() {
        let s = split(b"/a/./b/../c").unwrap();
        assert_eq!(s.parent, [b"a".as_slice(), b"b", b".."]);
        assert_eq!(s.name, Some(b"c".as_slice()));
        assert!(split(b"./").unwrap().name.is_none());
        assert!(split(b"a/..").is_err());
        assert!(split(b"a\0b").is_err());
        assert_eq!(join(&[]), b".");
    }
}
