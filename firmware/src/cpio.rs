//! A reproducible initramfs builder: the SVR4 "newc" cpio format (magic
//! `070701`) that the Linux kernel unpacks into its rootfs.
//!
//! Reproducible means the same entries give the same bytes, whatever the order
//! they were added in and whatever the host: entries are written sorted by
//! path (so a directory always precedes what it holds), every mtime is 0,
//! every owner is uid 0 / gid 0, inode numbers are assigned 1, 2, 3… in that
//! sorted order, and there are no hard links. Missing parent directories are
//! added with mode 0755. The archive is not compressed (the kernel also
//! accepts uncompressed archives, and no compressor's version can then change
//! the bytes).
//!
//! [`parse`] reads back archives in this format (for tests and for checking
//! what was built); it is not a general cpio reader.

use std::collections::BTreeMap;
use std::io::Write;

const MAGIC: &[u8; 6] = b"070701";
const HEADER_LEN: usize = 110;
const TRAILER: &str = "TRAILER!!!";

/// File type bits of `st_mode`.
const S_IFREG: u32 = 0o100_000;
const S_IFDIR: u32 = 0o040_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;
const S_IFMT: u32 = 0o170_000;

/// Why an entry could not be added, or an archive could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CpioError {
    /// The path is empty, has `.`/`..`/empty components, or contains NUL.
    #[error(
        "bad archive path {0:?}: expected a relative path like `etc/x` without `.`, `..` or NUL"
    )]
    BadPath(String),
    /// Permission bits outside 0o7777.
    #[error("bad mode {mode:#o} for {path:?}: expected permission bits only (at most 0o7777)")]
    BadMode {
        /// The path.
        path: String,
        /// The mode given.
        mode: u32,
    },
    /// The path was already added (with different contents or kind).
    #[error("{0:?} is already in the archive")]
    Duplicate(String),
    /// A parent of the path is not a directory.
    #[error("{path:?}: parent {parent:?} is not a directory")]
    ParentNotDir {
        /// The path.
        path: String,
        /// The parent that is a file, symlink or device.
        parent: String,
    },
    /// A file or target larger than newc's 32-bit size field.
    #[error("{0:?} is larger than 4 GiB, which newc cannot store")]
    TooLarge(String),
    /// The archive being parsed is malformed.
    #[error("malformed cpio archive at offset {offset}: {reason}")]
    Malformed {
        /// Byte offset of the bad header.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with its contents.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symbolic link with its target.
    Symlink(String),
    /// A character device (major, minor).
    CharDevice(u32, u32),
    /// A block device (major, minor).
    BlockDevice(u32, u32),
}

impl EntryKind {
    fn type_bits(&self) -> u32 {
        match self {
            EntryKind::File(_) => S_IFREG,
            EntryKind::Dir => S_IFDIR,
            EntryKind::Symlink(_) => S_IFLNK,
            EntryKind::CharDevice(..) => S_IFCHR,
            EntryKind::BlockDevice(..) => S_IFBLK,
        }
    }
}

/// One entry: permission bits and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Permission bits (≤ 0o7777).
    pub perm: u32,
    /// The kind and its payload.
    pub kind: EntryKind,
}

/// An initramfs under construction. Paths are relative (`"init"`,
/// `"dev/console"`); a leading `/` is accepted and dropped.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An empty archive.
    pub fn new() -> Initramfs {
        Initramfs::default()
    }

    /// Adds a regular file.
    pub fn add_file(
        &mut self,
        path: &str,
        perm: u32,
        data: impl Into<Vec<u8>>,
    ) -> Result<(), CpioError> {
        self.add(path, perm, EntryKind::File(data.into()))
    }

    /// Adds a directory. Adding an existing directory with the same mode is a no-op.
    pub fn add_dir(&mut self, path: &str, perm: u32) -> Result<(), CpioError> {
        self.add(path, perm, EntryKind::Dir)
    }

    /// Adds a symbolic link (mode 0777, as Linux reports symlinks).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<(), CpioError> {
        if target.is_empty() || target.contains('\0') {
            return Err(CpioError::BadPath(target.to_string()));
        }
        self.add(path, 0o777, EntryKind::Symlink(target.to_string()))
    }

    /// Adds a character device node, e.g. `dev/console` = (5, 1).
    pub fn add_char_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.add(path, perm, EntryKind::CharDevice(major, minor))
    }

    /// Adds a block device node.
    pub fn add_block_device(
        &mut self,
        path: &str,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> Result<(), CpioError> {
        self.add(path, perm, EntryKind::BlockDevice(major, minor))
    }

    /// Adds any entry, creating missing parent directories (mode 0755).
    pub fn add(&mut self, path: &str, perm: u32, kind: EntryKind) -> Result<(), CpioError> {
        let path = normalize(path)?;
        if perm > 0o7777 {
            return Err(CpioError::BadMode { path, mode: perm });
        }
        let size = match &kind {
            EntryKind::File(d) => d.len(),
            EntryKind::Symlink(t) => t.len(),
            _ => 0,
        };
        if u32::try_from(size).is_err() {
            return Err(CpioError::TooLarge(path));
        }
        // Parents first.
        let mut parent = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for comp in &comps[..comps.len() - 1] {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            match self.entries.get(&parent) {
                Some(Entry {
                    kind: EntryKind::Dir,
                    ..
                }) => {}
                Some(_) => {
                    return Err(CpioError::ParentNotDir {
                        path,
                        parent: parent.clone(),
                    })
                }
                None => {
                    self.entries.insert(
                        parent.clone(),
                        Entry {
                            perm: 0o755,
                            kind: EntryKind::Dir,
                        },
                    );
                }
            }
        }
        let entry = Entry { perm, kind };
        match self.entries.get(&path) {
            Some(old) if *old == entry && old.kind == EntryKind::Dir => Ok(()),
            Some(old) if old.kind == EntryKind::Dir && entry.kind == EntryKind::Dir => {
                // A directory created implicitly, now given an explicit mode.
                self.entries.insert(path, entry);
                Ok(())
            }
            Some(_) => Err(CpioError::Duplicate(path)),
            None => {
                self.entries.insert(path, entry);
                Ok(())
            }
        }
    }

    /// The entries, sorted by path.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// Number of entries (without the trailer).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads an archive written by this builder back into a builder, so that
    /// entries can be added or replaced ([`Initramfs::remove`]) and it can be
    /// written again. Inode numbers are reassigned on write.
    pub fn from_archive(bytes: &[u8]) -> Result<Initramfs, CpioError> {
        let mut fs = Initramfs::new();
        for e in parse(bytes)? {
            let perm = e.perm();
            let kind = match e.mode & S_IFMT {
                S_IFREG => EntryKind::File(e.data),
                S_IFDIR => EntryKind::Dir,
                S_IFLNK => EntryKind::Symlink(String::from_utf8(e.data).map_err(|_| {
                    CpioError::Malformed {
                        offset: 0,
                        reason: format!("symlink target of {:?} is not UTF-8", e.path),
                    }
                })?),
                S_IFCHR => EntryKind::CharDevice(e.rdev.0, e.rdev.1),
                S_IFBLK => EntryKind::BlockDevice(e.rdev.0, e.rdev.1),
                other => {
                    return Err(CpioError::Malformed {
                        offset: 0,
                        reason: format!("{:?} has unsupported file type {other:#o}", e.path),
                    })
                }
            };
            fs.add(&e.path, perm, kind)?;
        }
        Ok(fs)
    }

    /// Removes an entry (and, for a directory, everything below it).
    /// Returns whether anything was removed.
    pub fn remove(&mut self, path: &str) -> Result<bool, CpioError> {
        let path = normalize(path)?;
        let prefix = format!("{path}/");
        let before = self.entries.len();
        self.entries
            .retain(|p, _| p != &path && !p.starts_with(&prefix));
        Ok(self.entries.len() != before)
    }

    /// Writes the archive; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, w: &mut W) -> std::io::Result<u64> {
        let mut n = 0u64;
        for (i, (path, e)) in self.entries.iter().enumerate() {
            let ino = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let (nlink, data, rdev): (u32, &[u8], (u32, u32)) = match &e.kind {
                EntryKind::File(d) => (1, d, (0, 0)),
                EntryKind::Dir => (2, &[], (0, 0)),
                EntryKind::Symlink(t) => (1, t.as_bytes(), (0, 0)),
                EntryKind::CharDevice(ma, mi) | EntryKind::BlockDevice(ma, mi) => {
                    (1, &[], (*ma, *mi))
                }
            };
            n += write_entry(w, path, ino, e.kind.type_bits() | e.perm, nlink, rdev, data)?;
        }
        n += write_entry(w, TRAILER, 0, 0, 1, (0, 0), &[])?;
        Ok(n)
    }

    /// The archive as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing to a Vec cannot fail.
        let _ = self.write_to(&mut v);
        v
    }
}

fn normalize(path: &str) -> Result<String, CpioError> {
    let p = path.strip_prefix('/').unwrap_or(path);
    let bad = p.is_empty()
        || p.contains('\0')
        || p.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad || p == TRAILER {
        return Err(CpioError::BadPath(path.to_string()));
    }
    Ok(p.to_string())
}

fn pad4(w: &mut impl Write, len: usize) -> std::io::Result<u64> {
    let pad = (4 - len % 4) % 4;
    w.write_all(&[0u8; 3][..pad])?;
    Ok(pad as u64)
}

fn write_entry(
    w: &mut impl Write,
    name: &str,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    data: &[u8],
) -> std::io::Result<u64> {
    let namesize = name.len() + 1;
    let fields: [u32; 13] = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        namesize as u32,
        0, // check
    ];
    let mut header = Vec::with_capacity(HEADER_LEN + namesize);
    header.extend_from_slice(MAGIC);
    for f in fields {
        header.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    header.extend_from_slice(name.as_bytes());
    header.push(0);
    w.write_all(&header)?;
    let mut n = header.len() as u64 + pad4(w, header.len())?;
    w.write_all(data)?;
    n += data.len() as u64 + pad4(w, data.len())?;
    Ok(n)
}

/// An entry read back by [`parse`], with every header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedEntry {
    /// Path as stored.
    pub path: String,
    /// Inode number.
    pub ino: u32,
    /// Full `st_mode` (type and permission bits).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time.
    pub mtime: u32,
    /// Device number (rdev major, minor) for device nodes.
    pub rdev: (u32, u32),
    /// File contents or symlink target.
    pub data: Vec<u8>,
}

impl ParsedEntry {
    /// Permission bits.
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    /// True for a regular file.
    pub fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & S_IFMT == S_IFDIR
    }
    /// True for a symlink.
    pub fn is_symlink(&self) -> bool {
        self.mode & S_IFMT == S_IFLNK
    }
    /// True for a character device.
    pub fn is_char_device(&self) -> bool {
        self.mode & S_IFMT == S_IFCHR
    }
}

/// Parses a newc archive up to its trailer (entries only, trailer excluded).
pub fn parse(bytes: &[u8]) -> Result<Vec<ParsedEntry>, CpioError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    loop {
        let bad = |reason: String| CpioError::Malformed {
            offset: off,
            reason,
        };
        let header = bytes
            .get(off..off + HEADER_LEN)
            .ok_or_else(|| bad("truncated header (no TRAILER!!! entry?)".into()))?;
        if &header[..6] != MAGIC {
            return Err(bad(format!(
                "magic {:?}, expected \"070701\"",
                String::from_utf8_lossy(&header[..6])
            )));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = &header[6 + i * 8..14 + i * 8];
            let s = std::str::from_utf8(s).map_err(|_| bad("non-ASCII header field".into()))?;
            *v = u32::from_str_radix(s, 16)
                .map_err(|_| bad(format!("header field {i} {s:?} is not hex")))?;
        }
        let namesize = f[11] as usize;
        let filesize = f[6] as usize;
        let name_end = off + HEADER_LEN + namesize;
        let name = bytes
            .get(off + HEADER_LEN..name_end)
            .ok_or_else(|| bad("truncated name".into()))?;
        let name = match name.split_last() {
            Some((0, n)) => {
                String::from_utf8(n.to_vec()).map_err(|_| bad("name not UTF-8".into()))?
            }
            _ => return Err(bad("name not NUL-terminated".into())),
        };
        let data_start = name_end + (4 - name_end % 4) % 4;
        let data_end = data_start + filesize;
        let data = bytes
            .get(data_start..data_end)
            .ok_or_else(|| bad(format!("truncated data of {name:?}")))?;
        if name == TRAILER {
            return Ok(out);
        }
        out.push(ParsedEntry {
            path: name,
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            rdev: (f[9], f[10]),
            data: data.to_vec(),
        });
        off = data_end + (4 - data_end % 4) % 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(order_reversed: bool) -> Initramfs {
        type Add = Box<dyn Fn(&mut Initramfs)>;
        let mut adds: Vec<Add> = vec![
            Box::new(|a| a.add_file("/init", 0o755, b"#!agent".to_vec()).unwrap()),
            Box::new(|a| a.add_char_device("dev/console", 0o600, 5, 1).unwrap()),
            Box::new(|a| a.add_dir("proc", 0o555).unwrap()),
            Box::new(|a| a.add_symlink("bin/sh", "/init").unwrap()),
            Box::new(|a| {
                a.add_file("etc/cloister/modules.load", 0o644, "/a.ko\n")
                    .unwrap()
            }),
            Box::new(|a| {
                a.add_file("lib/modules/x/kernel/a.ko", 0o644, vec![1u8; 5])
                    .unwrap()
            }),
        ];
        if order_reversed {
            adds.reverse();
        }
        let mut a = Initramfs::new();
        for f in adds {
            f(&mut a);
        }
        a
    }

    #[test]
    fn same_entries_same_bytes_in_any_order() {
        let one = sample(false).to_bytes();
        let two = sample(true).to_bytes();
        assert_eq!(crate::sha256_hex(&one), crate::sha256_hex(&two));
        assert_eq!(one.len() % 4, 0);
    }

    #[test]
    fn parses_back_with_fixed_metadata() {
        let bytes = sample(false).to_bytes();
        let entries = parse(&bytes).unwrap();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "bin",
                "bin/sh",
                "dev",
                "dev/console",
                "etc",
                "etc/cloister",
                "etc/cloister/modules.load",
                "init",
                "lib",
                "lib/modules",
                "lib/modules/x",
                "lib/modules/x/kernel",
                "lib/modules/x/kernel/a.ko",
                "proc",
            ]
        );
        for (i, e) in entries.iter().enumerate() {
            assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 0), "{}", e.path);
            assert_eq!(e.ino as usize, i + 1);
        }
        let get = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
        let init = get("init");
        assert!(init.is_file());
        assert_eq!(init.perm(), 0o755);
        assert_eq!(init.data, b"#!agent");
        let console = get("dev/console");
        assert!(console.is_char_device());
        assert_eq!((console.perm(), console.rdev), (0o600, (5, 1)));
        assert!(get("proc").is_dir());
        assert_eq!(get("proc").perm(), 0o555);
        assert_eq!(get("etc").perm(), 0o755);
        assert!(get("bin/sh").is_symlink());
        assert_eq!(get("bin/sh").data, b"/init");
        assert_eq!(get("lib/modules/x/kernel/a.ko").data, vec![1u8; 5]);
    }

    /// Debian's cpio agrees on names, modes and contents.
    #[test]
    fn gnu_cpio_lists_the_archive() {
        let bytes = sample(false).to_bytes();
        let out = match std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            Ok(mut child) => {
                use std::io::Write as _;
                child.stdin.take().unwrap().write_all(&bytes).unwrap();
                child.wait_with_output().unwrap()
            }
            Err(e) => panic!("cpio not runnable ({e}): run scripts/install-deps.sh (package cpio)"),
        };
        assert!(out.status.success());
        let listing = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 14, "{listing}");
        let line = |p: &str| {
            *lines
                .iter()
                .find(|l| l.ends_with(&format!(" {p}")) || l.contains(&format!(" {p} -> ")))
                .unwrap_or_else(|| panic!("{p} not in {listing}"))
        };
        assert!(line("init").starts_with("-rwxr-xr-x"), "{}", line("init"));
        assert!(line("dev/console").starts_with("crw-------"));
        assert!(line("proc").starts_with("dr-xr-xr-x"));
        assert!(line("bin/sh").starts_with("lrwxrwxrwx"));
        assert!(line("bin/sh").ends_with("bin/sh -> /init"));
        assert!(line("init").contains(" root "), "{}", line("init"));
    }

    #[test]
    fn reads_back_and_edits_an_archive() {
        let orig = sample(false);
        let bytes = orig.to_bytes();
        let mut back = Initramfs::from_archive(&bytes).unwrap();
        assert_eq!(back.to_bytes(), bytes);
        assert!(back.remove("/init").unwrap());
        assert!(!back.remove("init").unwrap());
        back.add_file("init", 0o755, b"#!/bin/sh\n".to_vec())
            .unwrap();
        assert!(back.remove("lib").unwrap());
        let paths: Vec<&str> = back.entries().map(|(p, _)| p).collect();
        assert!(!paths.iter().any(|p| p.starts_with("lib")), "{paths:?}");
        assert_eq!(back.len(), orig.len() - 5);
    }

    #[test]
    fn rejects_bad_entries() {
        let mut a = Initramfs::new();
        for p in [
            "",
            "/",
            "a//b",
            "a/./b",
            "../x",
            "a/..",
            "x\0y",
            "TRAILER!!!",
        ] {
            assert_eq!(
                a.add_file(p, 0o644, vec![]),
                Err(CpioError::BadPath(p.into())),
                "{p:?}"
            );
        }
        assert!(matches!(
            a.add_file("f", 0o100644, vec![]),
            Err(CpioError::BadMode { .. })
        ));
        a.add_file("f", 0o644, vec![]).unwrap();
        assert_eq!(
            a.add_file("/f", 0o644, vec![1]),
            Err(CpioError::Duplicate("f".into()))
        );
        assert!(matches!(
            a.add_file("f/g", 0o644, vec![]),
            Err(CpioError::ParentNotDir { .. })
        ));
        // Implicit dirs can be given an explicit mode later.
        a.add_file("d/e", 0o644, vec![]).unwrap();
        a.add_dir("d", 0o700).unwrap();
        assert_eq!(a.entries().find(|(p, _)| *p == "d").unwrap().1.perm, 0o700);
    }

    #[test]
    fn parse_rejects_malformed_archives() {
        let good = sample(false).to_bytes();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "truncated header"),
            (good[..good.len() - 130].to_vec(), "truncated"),
            ([b"070707".as_slice(), &good[6..]].concat(), "magic"),
            ([b"070701zz".as_slice(), &good[8..]].concat(), "not hex"),
        ];
        for (bytes, want) in cases {
            let err = parse(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err}");
        }
    }
}
