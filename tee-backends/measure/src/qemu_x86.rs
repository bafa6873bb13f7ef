//! The kernel bytes QEMU's x86 direct Linux boot (`-kernel`) hands to the
//! firmware over fw_cfg, for a q35 machine.
//!
//! QEMU reads the bzImage, acts as the boot loader and fills in the fields
//! of the Linux boot-protocol setup header a boot loader owns, then serves
//! the setup part (`(setup_sects + 1) * 512` bytes, header included) and the
//! rest as two fw_cfg blobs. OVMF's `QemuKernelLoaderFsDxe` concatenates the
//! two into the `kernel` file it loads and measures, so a firmware
//! measurement of the kernel covers the *patched* header:
//!
//! | offset | field | value |
//! |---|---|---|
//! | 0x1fa | `vid_mode` | only if the command line has `vga=` |
//! | 0x210 | `type_of_loader` | 0xb0 (QEMU) if protocol ≥ 2.00 |
//! | 0x211 | `loadflags` | `CAN_USE_HEAP` (0x80) set, if protocol ≥ 2.01 |
//! | 0x218 | `ramdisk_image` | initrd load address, if an initrd is given |
//! | 0x21c | `ramdisk_size` | initrd size, if an initrd is given |
//! | 0x224 | `heap_end_ptr` (u16) | `cmdline_addr - real_addr - 0x200`, if ≥ 2.01 |
//! | 0x228 | `cmd_line_ptr` | `cmdline_addr`, if protocol ≥ 2.02 |
//!
//! The initrd address is `(initrd_max - initrd_size) & !0xfff`, where
//! `initrd_max` is the kernel's limit (`u32::MAX` with
//! `XLF_CAN_BE_LOADED_ABOVE_4G`, else `initrd_addr_max`) clamped below
//! `below_4g_mem_size - acpi_data_size` (q35: RAM below 4 GiB is all of it
//! under 2.75 GiB, else 2 GiB; `acpi_data_size` = 0x28000). So the
//! measurement depends on the guest memory size and the initrd size.
//!
//! QEMU up to 10.1 patches the header for every guest except SEV; QEMU
//! commit a7542a38f399 ("x86/loader: Don't update kernel header for CoCo
//! VMs", first released in 10.2.0) stops patching it for any confidential
//! guest, TDX included. Independently, QEMU 10.0 added an fw_cfg file
//! `etc/boot/kernel` with the unpatched kernel, and OVMF's
//! QemuKernelLoaderFsDxe gained "named blobs" (EDK II, early 2025) and then
//! serves that file as `kernel` instead of the patched setup + kernel
//! blobs. [`KernelHeader`] selects which bytes a prediction follows.

/// `acpi_data_size` of QEMU's pc/q35 machines (128 KiB ACPI + 32 KiB).
pub const Q35_ACPI_DATA_SIZE: u32 = 0x28000;

/// Which kernel bytes the firmware receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelHeader {
    /// QEMU ≤ 10.1: setup header patched as above, for a q35 guest with
    /// this much RAM (the `-m` size, bytes).
    QemuPatched {
        /// Guest RAM in bytes.
        memory_bytes: u64,
    },
    /// QEMU ≥ 10.2 with a confidential guest: the file as given.
    AsFile,
}

impl KernelHeader {
    /// QEMU's side only: what QEMU `major.minor` hands a firmware that does
    /// not read `etc/boot/kernel`, for a TDX guest with `memory_bytes` of RAM.
    pub fn for_qemu(major: u32, minor: u32, memory_bytes: u64) -> Self {
        if (major, minor) >= (10, 2) {
            KernelHeader::AsFile
        } else {
            KernelHeader::QemuPatched { memory_bytes }
        }
    }
}

/// Why QEMU would refuse the kernel (or this model cannot follow it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QemuBootError {
    /// Not a bzImage with a boot-protocol header.
    #[error(
        "kernel is not a Linux bzImage: expected the setup header magic \"HdrS\" at 0x202, \
         found {0}"
    )]
    NotBzImage(String),
    /// The setup part is larger than the file.
    #[error("kernel setup header says {setup} setup bytes, but the file has only {len} bytes")]
    SetupSize {
        /// `(setup_sects + 1) * 512`.
        setup: usize,
        /// File size.
        len: usize,
    },
    /// Protocol too old for an initrd.
    #[error("kernel boot protocol {0:#x} is too old to load an initrd (needs 0x200 or later)")]
    ProtocolTooOld(u16),
    /// The initrd does not fit below the limit.
    #[error("initrd of {size} bytes does not fit below {max:#x}: QEMU refuses it")]
    InitrdTooLarge {
        /// Initrd size.
        size: u64,
        /// Highest address.
        max: u32,
    },
    /// Guest memory too small for QEMU's ACPI reservation.
    #[error("guest memory of {0} bytes is smaller than the ACPI data area QEMU reserves")]
    MemoryTooSmall(u64),
    /// An unparsable `vga=` (QEMU exits on it).
    #[error("invalid vga= kernel parameter {0:?}: expected normal, ext, ask or a number")]
    Vga(String),
}

/// q35's RAM below 4 GiB for a guest with `memory_bytes` of RAM (default
/// `max-ram-below-4g`).
pub fn q35_below_4g(memory_bytes: u64) -> u64 {
    let lowmem: u64 = if memory_bytes >= 0xb000_0000 {
        0x8000_0000
    } else {
        0xb000_0000
    };
    memory_bytes.min(lowmem)
}

fn parse_c_uint(s: &str) -> Option<(u32, &str)> {
    // strtoul with base 0: 0x.. hex, 0.. octal, else decimal.
    let (digits_start, radix) = if s.starts_with("0x") || s.starts_with("0X") {
        (2, 16)
    } else if s.starts_with('0') {
        (0, 8)
    } else {
        (0, 10)
    };
    let body = &s[digits_start..];
    let n = body.chars().take_while(|c| c.is_digit(radix)).count();
    if n == 0 {
        return None;
    }
    let v = u32::from_str_radix(&body[..n], radix).ok()?;
    Some((v, &body[n..]))
}

fn vga_mode(cmdline: &str) -> Result<Option<u16>, QemuBootError> {
    let Some(pos) = cmdline.find("vga=") else {
        return Ok(None);
    };
    let v = &cmdline[pos + 4..];
    let mode = if v.starts_with("normal") {
        0xffff
    } else if v.starts_with("ext") {
        0xfffe
    } else if v.starts_with("ask") {
        0xfffd
    } else {
        let bad = || QemuBootError::Vga(v.split(' ').next().unwrap_or_default().to_string());
        let (n, rest) = parse_c_uint(v).ok_or_else(bad)?;
        if !(rest.is_empty() || rest.starts_with(' ')) {
            return Err(bad());
        }
        n
    };
    Ok(Some(mode as u16))
}

/// The kernel release a bzImage names in its setup header (`kernel_version`
/// at 0x20e points at a NUL-terminated string 0x200 bytes further), e.g.
/// `"6.12.117+deb12-cloud-amd64"`, and its (major, minor). None when the
/// header has no version string.
pub fn kernel_release(kernel: &[u8]) -> Option<(String, (u32, u32))> {
    if kernel.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        return None;
    }
    let off = usize::from(u16::from_le_bytes([
        *kernel.get(0x20e)?,
        *kernel.get(0x20f)?,
    ]));
    if off == 0 {
        return None;
    }
    let rest = kernel.get(off + 0x200..)?;
    let end = rest.iter().take(256).position(|b| *b == 0 || *b == b' ')?;
    let release = std::str::from_utf8(&rest[..end]).ok()?.to_string();
    let mut nums = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|n| n.parse::<u32>().ok());
    let major = nums.next()??;
    let minor = nums.next()??;
    Some((release, (major, minor)))
}

/// The `kernel` file OVMF assembles from QEMU's fw_cfg blobs for a direct
/// boot of `kernel` with `cmdline` and an initrd of `initrd_size` bytes (None:
/// no `-initrd`).
pub fn firmware_kernel_image(
    kernel: &[u8],
    cmdline: &str,
    initrd_size: Option<u64>,
    header: KernelHeader,
) -> Result<Vec<u8>, QemuBootError> {
    if kernel.get(0x202..0x206) != Some(b"HdrS".as_slice()) {
        let found = kernel
            .get(0x202..0x206)
            .map(|b| format!("{b:02x?}"))
            .unwrap_or_else(|| format!("a {}-byte file", kernel.len()));
        return Err(QemuBootError::NotBzImage(found));
    }
    let setup_sects = match kernel[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let setup_size = (setup_sects + 1) * 512;
    if setup_size > kernel.len() {
        return Err(QemuBootError::SetupSize {
            setup: setup_size,
            len: kernel.len(),
        });
    }
    let KernelHeader::QemuPatched { memory_bytes } = header else {
        return Ok(kernel.to_vec());
    };
    let mut k = kernel.to_vec();
    let rd16 = |k: &[u8], o: usize| u16::from_le_bytes([k[o], k[o + 1]]);
    let rd32 = |k: &[u8], o: usize| u32::from_le_bytes([k[o], k[o + 1], k[o + 2], k[o + 3]]);
    let protocol = rd16(&k, 0x206);
    let cmdline_size = ((cmdline.len() + 16) & !15) as u32;
    // Low kernels (no LOADED_HIGH) and protocols before 2.02 get the
    // command line just below 0x9a000; recent kernels a fixed layout.
    let (real_addr, cmdline_addr): (u32, u32) = if protocol < 0x202 || k[0x211] & 0x01 == 0 {
        (0x90000, 0x9a000 - cmdline_size)
    } else {
        (0x10000, 0x20000)
    };
    let mut initrd_max: u32 = if protocol >= 0x20c && rd16(&k, 0x236) & 0x40 != 0 {
        u32::MAX
    } else if protocol >= 0x203 {
        rd32(&k, 0x22c)
    } else {
        0x37ff_ffff
    };
    let below_4g = q35_below_4g(memory_bytes);
    let limit = below_4g
        .checked_sub(u64::from(Q35_ACPI_DATA_SIZE))
        .filter(|l| *l > 0)
        .ok_or(QemuBootError::MemoryTooSmall(memory_bytes))?;
    if u64::from(initrd_max) >= limit {
        initrd_max = (limit - 1) as u32;
    }
    if protocol >= 0x202 {
        k[0x228..0x22c].copy_from_slice(&cmdline_addr.to_le_bytes());
    } else {
        k[0x20..0x22].copy_from_slice(&0xa33fu16.to_le_bytes());
        k[0x22..0x24].copy_from_slice(&((cmdline_addr - real_addr) as u16).to_le_bytes());
    }
    if let Some(mode) = vga_mode(cmdline)? {
        k[0x1fa..0x1fc].copy_from_slice(&mode.to_le_bytes());
    }
    if protocol >= 0x200 {
        k[0x210] = 0xb0;
    }
    if protocol >= 0x201 {
        k[0x211] |= 0x80;
        let heap = (cmdline_addr - real_addr - 0x200) as u16;
        k[0x224..0x226].copy_from_slice(&heap.to_le_bytes());
    }
    if let Some(size) = initrd_size {
        if protocol < 0x200 {
            return Err(QemuBootError::ProtocolTooOld(protocol));
        }
        if size >= u64::from(initrd_max) {
            return Err(QemuBootError::InitrdTooLarge {
                size,
                max: initrd_max,
            });
        }
        let addr = (initrd_max - size as u32) & !4095;
        k[0x218..0x21c].copy_from_slice(&addr.to_le_bytes());
        k[0x21c..0x220].copy_from_slice(&(size as u32).to_le_bytes());
    }
    // QEMU copies at most the first 8 KiB of its patched header copy back.
    let patched = setup_size.min(8192);
    k[patched..].copy_from_slice(&kernel[patched..]);
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bzimage(protocol: u16, xlf: u16, initrd_addr_max: u32) -> Vec<u8> {
        let mut k = vec![0u8; 0x4000];
        k[0x1f1] = 3; // setup_sects
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        k[0x211] = 0x01; // LOADED_HIGH
        k[0x22c..0x230].copy_from_slice(&initrd_addr_max.to_le_bytes());
        k[0x236..0x238].copy_from_slice(&xlf.to_le_bytes());
        k
    }

    #[test]
    fn patches_the_fields_qemu_owns() {
        let k = bzimage(0x20f, 0x7f, 0x7fff_ffff);
        let mib = 1 << 20;
        let out = firmware_kernel_image(
            &k,
            "console=ttyS0",
            Some(12_146_224),
            KernelHeader::QemuPatched {
                memory_bytes: 512 * mib,
            },
        )
        .unwrap();
        let diff: Vec<usize> = (0..k.len()).filter(|&i| k[i] != out[i]).collect();
        assert!(
            diff.iter().all(|&i| (0x210..0x230).contains(&i)),
            "{diff:x?}"
        );
        assert_eq!(out[0x210], 0xb0);
        assert_eq!(out[0x211], 0x81);
        assert_eq!(&out[0x224..0x226], &0xfe00u16.to_le_bytes());
        assert_eq!(&out[0x228..0x22c], &0x20000u32.to_le_bytes());
        // XLF_CAN_BE_LOADED_ABOVE_4G: limit = 512 MiB - 0x28000 - 1.
        let max = 512 * mib as u32 - 0x28000 - 1;
        let addr = (max - 12_146_224) & !4095;
        assert_eq!(&out[0x218..0x21c], &addr.to_le_bytes());
        assert_eq!(&out[0x21c..0x220], &12_146_224u32.to_le_bytes());
        // The address depends on memory size, so the image does too.
        let out2 = firmware_kernel_image(
            &k,
            "console=ttyS0",
            Some(12_146_224),
            KernelHeader::QemuPatched {
                memory_bytes: 1024 * mib,
            },
        )
        .unwrap();
        assert_ne!(out[0x218..0x21c], out2[0x218..0x21c]);
    }

    #[test]
    fn kernel_release_from_the_setup_header() {
        let mut k = bzimage(0x20f, 0x7f, 0x7fff_ffff);
        assert_eq!(kernel_release(&k), None); // kernel_version = 0
        k[0x20e..0x210].copy_from_slice(&0x1000u16.to_le_bytes());
        k[0x1200..0x1200 + 32].copy_from_slice(b"6.12.117+deb12-cloud-amd64 (x)\0\0");
        assert_eq!(
            kernel_release(&k),
            Some(("6.12.117+deb12-cloud-amd64".to_string(), (6, 12)))
        );
        assert_eq!(kernel_release(b"not a kernel"), None);
    }

    #[test]
    fn large_memory_uses_the_q35_split() {
        assert_eq!(q35_below_4g(512 << 20), 512 << 20);
        assert_eq!(q35_below_4g(0xb000_0000 - 1), 0xb000_0000 - 1);
        assert_eq!(q35_below_4g(0xb000_0000), 0x8000_0000);
        assert_eq!(q35_below_4g(16 << 30), 0x8000_0000);
    }

    #[test]
    fn as_file_and_no_initrd() {
        let k = bzimage(0x20f, 0x7f, 0x7fff_ffff);
        assert_eq!(
            firmware_kernel_image(&k, "x", Some(10), KernelHeader::AsFile).unwrap(),
            k
        );
        let out = firmware_kernel_image(
            &k,
            "x",
            None,
            KernelHeader::QemuPatched {
                memory_bytes: 256 << 20,
            },
        )
        .unwrap();
        assert_eq!(&out[0x218..0x220], &[0; 8]);
    }

    #[test]
    fn old_protocol_uses_initrd_addr_max_and_vga() {
        let k = bzimage(0x20a, 0, 0x37ff_ffff);
        let out = firmware_kernel_image(
            &k,
            "vga=0x317 quiet",
            Some(4096),
            KernelHeader::QemuPatched {
                memory_bytes: 4 << 30,
            },
        )
        .unwrap();
        assert_eq!(
            &out[0x218..0x21c],
            &((0x37ff_ffffu32 - 4096) & !4095).to_le_bytes()
        );
        assert_eq!(&out[0x1fa..0x1fc], &0x317u16.to_le_bytes());
        assert_eq!(vga_mode("vga=ask").unwrap(), Some(0xfffd));
        assert_eq!(vga_mode("a vga=791").unwrap(), Some(791));
        assert!(matches!(vga_mode("vga=12x"), Err(QemuBootError::Vga(_))));
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = firmware_kernel_image(b"\x7fELF", "", None, KernelHeader::AsFile).unwrap_err();
        assert!(e.to_string().contains("not a Linux bzImage"), "{e}");
        let k = bzimage(0x20f, 0x7f, 0x7fff_ffff);
        let e = firmware_kernel_image(
            &k,
            "",
            Some(600 << 20),
            KernelHeader::QemuPatched {
                memory_bytes: 512 << 20,
            },
        )
        .unwrap_err();
        assert!(matches!(e, QemuBootError::InitrdTooLarge { .. }), "{e}");
        let mut short = k.clone();
        short[0x1f1] = 200;
        assert!(matches!(
            firmware_kernel_image(&short, "", None, KernelHeader::AsFile),
            Err(QemuBootError::SetupSize { .. })
        ));
        assert_eq!(KernelHeader::for_qemu(10, 2, 1), KernelHeader::AsFile);
        assert_eq!(
            KernelHeader::for_qemu(10, 0, 1),
            KernelHeader::QemuPatched { memory_bytes: 1 }
        );
    }
}
