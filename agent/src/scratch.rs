//! The encrypted scratch disk (`cloister run --scratch-disk SIZE`): a
//! virtio-blk disk with serial [`SERIAL`] that the host gives the guest for
//! images larger than its RAM.
//!
//! The agent puts a dm-crypt mapping (AES-256-XTS, 4 KiB sectors) over it
//! with a key it draws from the kernel's RNG and never writes anywhere, and
//! makes the mapping swap space. The image store's tmpfs is then sized from
//! RAM plus that swap, so layers that do not fit in RAM page out, and the
//! host only ever sees ciphertext under a key that dies with the guest. The
//! agent's own memory is locked, so its keys and tokens never page out.
//!
//! Swap rather than a file system on the mapping: the kernel needs no
//! formatter (the guest has no mkfs), and the tmpfs keeps one code path for
//! both cases. XTS gives confidentiality, not integrity: a host that
//! rewrites the disk makes pages decrypt to garbage (a denial of service it
//! can cause anyway) or replays an older ciphertext of the same sector. See
//! docs/threat-model.md.
#![allow(unsafe_code)] // device-mapper ioctls, mlockall, swapon, wiping key copies

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The virtio serial the runtime gives the scratch disk.
pub const SERIAL: &str = cloister_protocol::channel::SCRATCH_DISK_SERIAL;
/// The device-mapper name of the mapping.
const DM_NAME: &str = "cloister-scratch";
/// The dm-crypt cipher.
const CIPHER: &str = "aes-xts-plain64";
/// Swap pages (and dm-crypt sectors) are this size.
const PAGE: u64 = 4096;

/// Why the scratch disk could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the encrypted scratch disk ({what}): {reason}")]
pub struct ScratchError {
    what: String,
    reason: String,
}

fn err(what: impl Into<String>, reason: impl std::fmt::Display) -> ScratchError {
    ScratchError {
        what: what.into(),
        reason: reason.to_string(),
    }
}

/// Finds the block device whose virtio serial is [`SERIAL`] under
/// `sys_block` (`/sys/block`): its name (`vdb`).
pub fn find(sys_block: &Path) -> Option<String> {
    let entries = std::fs::read_dir(sys_block).ok()?;
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            std::fs::read_to_string(sys_block.join(n).join("serial"))
                .is_ok_and(|s| s.trim() == SERIAL)
        })
        .collect();
    names.sort();
    names.into_iter().next()
}

/// The swap header of a device of `bytes` (the first page, as mkswap
/// writes it: version 1, the last usable page, no bad pages, the magic in
/// the page's last ten bytes).
pub fn swap_header(bytes: u64) -> Result<Vec<u8>, ScratchError> {
    let pages = bytes / PAGE;
    // The kernel needs the header page and at least one more.
    if pages < 2 {
        return Err(err(
            "swap header",
            format!(
                "{bytes} bytes is too small: expected at least {} bytes",
                2 * PAGE
            ),
        ));
    }
    let last_page = u32::try_from(pages - 1).map_err(|_| {
        err(
            "swap header",
            format!("{bytes} bytes is more than swap's 16 TiB limit"),
        )
    })?;
    let mut h = vec![0u8; PAGE as usize];
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes());
    h[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    let mut uuid = [0u8; 16];
    getrandom(&mut uuid)?;
    h[1036..1052].copy_from_slice(&uuid);
    h[PAGE as usize - 10..].copy_from_slice(b"SWAPSPACE2");
    Ok(h)
}

fn getrandom(buf: &mut [u8]) -> Result<(), ScratchError> {
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| err("a key from /dev/urandom", e))
}

// struct dm_ioctl (linux/dm-ioctl.h), 312 bytes.
const DM_IOCTL_SIZE: usize = 312;
const DM_NAME_OFF: usize = 48;
const DM_TARGET_SPEC_SIZE: usize = 40;
const DM_VERSION: [u32; 3] = [4, 0, 0];
// _IOWR(0xfd, nr, struct dm_ioctl)
const fn dm_ioctl_nr(nr: u32) -> u32 {
    (3 << 30) | ((DM_IOCTL_SIZE as u32) << 16) | (0xfd << 8) | nr
}
const DM_DEV_CREATE: u32 = dm_ioctl_nr(3);
const DM_DEV_REMOVE: u32 = dm_ioctl_nr(4);
const DM_DEV_SUSPEND: u32 = dm_ioctl_nr(6);
const DM_TABLE_LOAD: u32 = dm_ioctl_nr(9);
/// Tells the kernel to wipe the ioctl buffer (it holds the key).
const DM_SECURE_DATA_FLAG: u32 = 1 << 15;

/// One dm ioctl buffer: the header for `name`, then `payload`.
fn dm_buffer(name: &str, flags: u32, target_count: u32, payload: &[u8]) -> Vec<u8> {
    let size = (DM_IOCTL_SIZE + payload.len()).next_multiple_of(8);
    let mut b = vec![0u8; size];
    for (i, v) in DM_VERSION.iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&v.to_ne_bytes());
    }
    b[12..16].copy_from_slice(&(size as u32).to_ne_bytes());
    b[16..20].copy_from_slice(&(DM_IOCTL_SIZE as u32).to_ne_bytes());
    b[20..24].copy_from_slice(&target_count.to_ne_bytes());
    b[28..32].copy_from_slice(&flags.to_ne_bytes());
    let n = name.as_bytes();
    b[DM_NAME_OFF..DM_NAME_OFF + n.len()].copy_from_slice(n);
    b[DM_IOCTL_SIZE..DM_IOCTL_SIZE + payload.len()].copy_from_slice(payload);
    b
}

/// The payload of a one-target table load.
fn dm_target(sectors: u64, target: &str, params: &str) -> Vec<u8> {
    let mut t = vec![0u8; DM_TARGET_SPEC_SIZE];
    t[8..16].copy_from_slice(&sectors.to_ne_bytes());
    let next = (DM_TARGET_SPEC_SIZE + params.len() + 1).next_multiple_of(8);
    t[20..24].copy_from_slice(&(next as u32).to_ne_bytes());
    t[24..24 + target.len()].copy_from_slice(target.as_bytes());
    t.extend_from_slice(params.as_bytes());
    t.resize(next, 0);
    t
}

fn dm_ioctl(ctl: &File, what: &str, req: u32, buf: &mut [u8]) -> Result<(), ScratchError> {
    // SAFETY: `buf` is a dm_ioctl header (data_size = its length) followed
    // by its payload; the kernel reads and writes within data_size.
    let rc = unsafe { libc::ioctl(ctl.as_raw_fd(), req as libc::c_ulong, buf.as_mut_ptr()) };
    if rc < 0 {
        return Err(err(what, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Overwrites `b` (best effort against the optimiser).
fn wipe(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: a valid, aligned &mut u8.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
}

/// What [`setup`] made.
#[derive(Debug)]
pub struct Scratch {
    /// The host's disk (`/dev/vdb`).
    pub disk: PathBuf,
    /// The dm-crypt mapping now used as swap (`/dev/dm-0`).
    pub mapping: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Sets up the scratch disk `name` (under /sys/block and /dev): a fresh
/// in-guest key, the dm-crypt mapping, the swap header, swapon, and the
/// agent's memory locked.
pub fn setup(name: &str) -> Result<Scratch, ScratchError> {
    let sys = Path::new("/sys/block").join(name);
    let read = |f: &str| {
        std::fs::read_to_string(sys.join(f))
            .map(|s| s.trim().to_owned())
            .map_err(|e| err(format!("reading {}", sys.join(f).display()), e))
    };
    let sectors512: u64 = read("size")?
        .parse()
        .map_err(|e| err("its size in sysfs", e))?;
    let majmin = read("dev")?;
    // Whole 4 KiB sectors only.
    let bytes = sectors512 * 512 / PAGE * PAGE;
    let header = swap_header(bytes)?;

    // Lock the agent first: nothing of its memory may reach the swap.
    // SAFETY: mlockall has no memory-safety preconditions.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        return Err(err(
            "locking the agent's memory",
            std::io::Error::last_os_error(),
        ));
    }

    let ctl = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(|e| err("opening /dev/mapper/control (is dm_mod loaded?)", e))?;
    let mut create = dm_buffer(DM_NAME, 0, 0, &[]);
    dm_ioctl(&ctl, "creating the mapping", DM_DEV_CREATE, &mut create)?;

    let mut key = [0u8; 64];
    getrandom(&mut key)?;
    let mut hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    wipe(&mut key);
    let mut params = format!("{CIPHER} {hex} 0 {majmin} 0 1 sector_size:{PAGE}");
    // SAFETY: overwriting ASCII hex digits with ASCII zeros keeps it UTF-8.
    wipe(unsafe { hex.as_bytes_mut() });
    let mut target = dm_target(bytes / 512, "crypt", &params);
    // SAFETY: as above, for the table parameters that held the key.
    wipe(unsafe { params.as_bytes_mut() });
    let mut load = dm_buffer(DM_NAME, DM_SECURE_DATA_FLAG, 1, &target);
    wipe(&mut target);
    let loaded = dm_ioctl(&ctl, "loading the dm-crypt table", DM_TABLE_LOAD, &mut load);
    wipe(&mut load);
    let resumed = loaded.and_then(|()| {
        let mut resume = dm_buffer(DM_NAME, 0, 0, &[]);
        dm_ioctl(&ctl, "activating the mapping", DM_DEV_SUSPEND, &mut resume)
    });
    if let Err(e) = resumed {
        let mut remove = dm_buffer(DM_NAME, 0, 0, &[]);
        let _ = dm_ioctl(&ctl, "removing the mapping", DM_DEV_REMOVE, &mut remove);
        return Err(e);
    }

    let mapping = mapping_node(Path::new("/sys/block")).ok_or_else(|| {
        err(
            "finding the mapping",
            "no /sys/block/dm-*/dm/name is cloister-scratch",
        )
    })?;
    let mut dev = std::fs::OpenOptions::new()
        .write(true)
        .open(&mapping)
        .map_err(|e| err(format!("opening {}", mapping.display()), e))?;
    dev.write_all(&header)
        .and_then(|()| dev.sync_all())
        .map_err(|e| {
            err(
                format!("writing the swap header to {}", mapping.display()),
                e,
            )
        })?;
    drop(dev);
    let c = std::ffi::CString::new(mapping.as_os_str().as_encoded_bytes())
        .map_err(|e| err("the mapping's path", e))?;
    // SAFETY: `c` is a NUL-terminated path.
    if unsafe { libc::swapon(c.as_ptr(), 0) } != 0 {
        return Err(err(
            format!("swapon {}", mapping.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Scratch {
        disk: Path::new("/dev").join(name),
        mapping,
        bytes,
    })
}

/// The /dev node of the mapping named [`DM_NAME`].
fn mapping_node(sys_block: &Path) -> Option<PathBuf> {
    std::fs::read_dir(sys_block)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            n.starts_with("dm-")
                && std::fs::read_to_string(sys_block.join(n).join("dm/name"))
                    .is_ok_and(|s| s.trim() == DM_NAME)
        })
        .map(|n| Path::new("/dev").join(n))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_header() {
        // From linux/dm-ioctl.h on x86_64 (sizeof(struct dm_ioctl) = 312).
        assert_eq!(DM_DEV_CREATE, 0xc138_fd03);
        assert_eq!(DM_DEV_SUSPEND, 0xc138_fd06);
        assert_eq!(DM_TABLE_LOAD, 0xc138_fd09);
    }

    #[test]
    fn table_load_buffer_layout() {
        let t = dm_target(16, "crypt", "p");
        assert_eq!(t.len() % 8, 0);
        assert_eq!(&t[24..29], b"crypt");
        assert_eq!(
            u32::from_ne_bytes(t[20..24].try_into().unwrap()) as usize,
            t.len()
        );
        let b = dm_buffer("x", DM_SECURE_DATA_FLAG, 1, &t);
        assert_eq!(b.len(), DM_IOCTL_SIZE + t.len());
        assert_eq!(
            u32::from_ne_bytes(b[12..16].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[16..20].try_into().unwrap()), 312);
        assert_eq!(b[DM_NAME_OFF], b'x');
        assert_eq!(&b[DM_IOCTL_SIZE + 40..DM_IOCTL_SIZE + 41], b"p");
    }

    #[test]
    fn swap_header_is_what_mkswap_writes() {
        let h = swap_header(64 << 20).unwrap();
        assert_eq!(h.len(), 4096);
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert_eq!(u32::from_ne_bytes(h[1024..1028].try_into().unwrap()), 1);
        assert_eq!(
            u32::from_ne_bytes(h[1028..1032].try_into().unwrap()),
            (64 << 20) / 4096 - 1
        );
        assert_eq!(u32::from_ne_bytes(h[1032..1036].try_into().unwrap()), 0);
        let e = swap_header(4096).unwrap_err().to_string();
        assert!(e.contains("too small"), "{e}");
    }

    #[test]
    fn swap_header_matches_util_linux_mkswap() {
        // mkswap (util-linux, in every Debian) on a 64 MiB file: the same
        // bytes but for the UUID (1036..1052) it draws.
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("swap");
        std::fs::File::create(&f)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        let out = std::process::Command::new("mkswap")
            .arg(&f)
            .output()
            .expect("running mkswap (util-linux)");
        assert!(out.status.success(), "{out:?}");
        let theirs = &std::fs::read(&f).unwrap()[..4096];
        let ours = swap_header(64 << 20).unwrap();
        assert_eq!(ours[..1036], theirs[..1036]);
        assert_eq!(ours[1052..], theirs[1052..]);
    }

    #[test]
    fn finds_the_disk_by_its_serial() {
        let d = tempfile::tempdir().unwrap();
        for (n, s) in [("vda", "cloister-rootfs"), ("vdb", SERIAL), ("vdc", "")] {
            std::fs::create_dir(d.path().join(n)).unwrap();
            std::fs::write(d.path().join(n).join("serial"), format!("{s}\n")).unwrap();
        }
        assert_eq!(find(d.path()).as_deref(), Some("vdb"));
        std::fs::remove_dir_all(d.path().join("vdb")).unwrap();
        assert_eq!(find(d.path()), None);
    }
}
