//! Where arm64 VMMs put a realm's boot images, and the RMI sequence that
//! follows: a [`RealmLaunchPlan`] the RIM is computed from, and that a host
//! backend can execute step by step.
//!
//! Two layouts, both direct kernel boot (no firmware), as modelled by the
//! `cca-realm-measurements` 0.1.0 reference tool:
//!
//! * [`QemuVirt`]: RAM at 0x4000_0000; kernel at RAM + `text_offset`; initrd
//!   at the larger of RAM + min(RAM/2, 128 MiB) and the kernel's end
//!   (`text_offset + image_size`), 4 KiB aligned; DTB at the next 2 MiB
//!   boundary after the initrd (RAM base when there is no kernel); optional
//!   measurement log (64 KiB, unmeasured) 1 MiB after the DTB.
//! * [`Kvmtool`]: RAM at 0x8000_0000; DTB in the last 2 MiB-aligned slot
//!   below min(RAM end, RAM + 256 MiB) (minus a 64 KiB log when enabled),
//!   padded to 64 KiB; initrd right below the DTB (4-byte aligned, not page
//!   aligned); kernel at RAM + `text_offset`.
//!
//! The RMI order is: REALM_CREATE; INIT_RIPAS over all RAM; DATA_CREATE of
//! every image in ascending address order; REC_CREATE (PC = RAM base, X0 =
//! DTB); DATA_CREATE_UNKNOWN-style unmeasured granules for the log.

use super::{CcaError, RealmMeasurement, RealmParams, RecParams, Rim, RmmVersion, GRANULE_SIZE};

const MIB: u64 = 1 << 20;

/// Errors from laying out a realm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The kernel is not an arm64 `Image`.
    #[error("kernel is not an arm64 Image: {0}")]
    BadKernel(&'static str),
    /// RAM size unusable for this VMM.
    #[error("RAM size {size:#x} unusable: {expected}")]
    RamSize {
        /// Size given.
        size: u64,
        /// What is accepted.
        expected: &'static str,
    },
    /// Images do not fit in RAM.
    #[error("{what} at {addr:#x}..{end:#x} does not fit in RAM {ram_base:#x}..{ram_end:#x}")]
    DoesNotFit {
        /// Which image.
        what: &'static str,
        /// Start address.
        addr: u64,
        /// End address.
        end: u64,
        /// RAM start.
        ram_base: u64,
        /// RAM end.
        ram_end: u64,
    },
    /// The DTB is larger than the VMM's slot.
    #[error("DTB is {size} bytes, expected at most {max}")]
    DtbTooLarge {
        /// DTB size.
        size: usize,
        /// Slot size.
        max: usize,
    },
    /// An image length differs from the one the layout was computed for.
    #[error("{what} is {found} bytes but the layout was computed for {expected}")]
    SizeMismatch {
        /// Which image.
        what: &'static str,
        /// Length used by the layout.
        expected: u64,
        /// Length given now.
        found: u64,
    },
    /// The realm calculator refused a step.
    #[error(transparent)]
    Cca(#[from] CcaError),
}

/// The fields of the arm64 Linux `Image` header that decide its placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmImageHeader {
    /// Offset from a 2 MiB aligned base at which the image is loaded.
    pub text_offset: u64,
    /// Effective image size (including BSS) the kernel needs, 0 if unknown.
    pub image_size: u64,
    /// Header flags (endianness, page size, placement).
    pub flags: u64,
}

impl ArmImageHeader {
    /// Magic `ARM\x64` at offset 56.
    pub const MAGIC: u32 = 0x644d_5241;
    /// Header length.
    pub const LEN: usize = 64;

    /// Parse the 64-byte header at the start of `image`.
    pub fn parse(image: &[u8]) -> Result<Self, LayoutError> {
        if image.len() < Self::LEN {
            return Err(LayoutError::BadKernel("shorter than the 64-byte header"));
        }
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&image[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let mut m = [0u8; 4];
        m.copy_from_slice(&image[56..60]);
        if u32::from_le_bytes(m) != Self::MAGIC {
            return Err(LayoutError::BadKernel(
                "no ARM\\x64 magic at offset 56 (a compressed Image is not supported)",
            ));
        }
        Ok(Self {
            text_offset: u64_at(8),
            image_size: u64_at(16),
            flags: u64_at(24),
        })
    }

    /// Build a header (for tests and generated kernels).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut h = [0u8; Self::LEN];
        // `b #0x40`-like branch in code0 is irrelevant to placement.
        h[0..4].copy_from_slice(&0x1400_0010u32.to_le_bytes());
        h[8..16].copy_from_slice(&self.text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&self.image_size.to_le_bytes());
        h[24..32].copy_from_slice(&self.flags.to_le_bytes());
        h[56..60].copy_from_slice(&Self::MAGIC.to_le_bytes());
        h
    }
}

/// Guest addresses chosen for one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealmLayout {
    /// RAM base.
    pub ram_base: u64,
    /// RAM size.
    pub ram_size: u64,
    /// Kernel load address and file length.
    pub kernel: Option<(u64, u64)>,
    /// initrd load address and length (what goes in `/chosen`).
    pub initrd: Option<(u64, u64)>,
    /// DTB load address (X0 at entry).
    pub dtb: u64,
    /// Largest DTB the slot holds; a shorter DTB is zero-padded to this size
    /// when `dtb_padded` is set.
    pub dtb_max: u64,
    /// Whether the VMM copies a fixed-size DTB slot (kvmtool) rather than
    /// the DTB's own length (QEMU).
    pub dtb_padded: bool,
    /// Unmeasured measurement-log region.
    pub log: Option<(u64, u64)>,
    /// Boot vCPU entry state.
    pub rec: RecParams,
}

/// The images to load, matching a [`RealmLayout`].
#[derive(Debug, Clone, Copy)]
pub struct LaunchImages<'a> {
    /// Uncompressed arm64 `Image`.
    pub kernel: Option<&'a [u8]>,
    /// initrd / initramfs.
    pub initrd: Option<&'a [u8]>,
    /// Flattened device tree, generated for this layout.
    pub dtb: &'a [u8],
}

/// One host-side step of a realm launch, in execution order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanStep<'a> {
    /// Set RIPAS to RAM over `[base, top)`; the host splits it into RTT
    /// entries.
    InitRipas {
        /// Start (granule aligned).
        base: u64,
        /// End, exclusive (granule aligned).
        top: u64,
    },
    /// Copy `bytes` to `ipa` (any alignment) and measure every granule it
    /// touches (zero-filled around it).
    Populate {
        /// What this is (kernel, initrd, dtb).
        what: &'static str,
        /// Load address.
        ipa: u64,
        /// Content.
        bytes: std::borrow::Cow<'a, [u8]>,
    },
    /// Map `[ipa, ipa + size)` (granule-widened) without measuring content.
    PopulateUnmeasured {
        /// Start.
        ipa: u64,
        /// Length.
        size: u64,
    },
    /// Create the boot REC.
    CreateRec(RecParams),
}

/// The complete RMI sequence of a realm launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealmLaunchPlan<'a> {
    /// Realm parameters (REALM_CREATE).
    pub params: RealmParams,
    /// RMM rules used to compute the RIM.
    pub version: RmmVersion,
    /// Steps after REALM_CREATE.
    pub steps: Vec<PlanStep<'a>>,
}

impl RealmLaunchPlan<'_> {
    /// Replay the steps into a RIM calculator.
    pub fn replay(&self, rim: &mut Rim) -> Result<(), CcaError> {
        for step in &self.steps {
            match step {
                PlanStep::InitRipas { base, top } => rim.init_ripas_range(*base, *top)?,
                PlanStep::Populate { ipa, bytes, .. } => {
                    rim.populate(*ipa, bytes)?;
                }
                PlanStep::PopulateUnmeasured { ipa, size } => {
                    rim.populate_unmeasured(*ipa, *size)?
                }
                PlanStep::CreateRec(rec) => rim.rec_create(rec),
            }
        }
        Ok(())
    }

    /// The Realm Initial Measurement this plan produces.
    pub fn rim(&self) -> Result<RealmMeasurement, CcaError> {
        let mut rim = Rim::realm_create(&self.params, self.version)?;
        self.replay(&mut rim)?;
        Ok(rim.measurement())
    }
}

impl RealmLayout {
    /// Build the launch plan from the images this layout was computed for.
    pub fn plan<'a>(
        &self,
        params: RealmParams,
        version: RmmVersion,
        images: LaunchImages<'a>,
    ) -> Result<RealmLaunchPlan<'a>, LayoutError> {
        let check = |what, want: Option<(u64, u64)>, got: Option<&[u8]>| match (want, got) {
            (Some((_, n)), Some(b)) if n == b.len() as u64 => Ok(()),
            (None, None) => Ok(()),
            (w, g) => Err(LayoutError::SizeMismatch {
                what,
                expected: w.map_or(0, |(_, n)| n),
                found: g.map_or(0, |b| b.len() as u64),
            }),
        };
        check("kernel", self.kernel, images.kernel)?;
        check("initrd", self.initrd, images.initrd)?;
        if images.dtb.len() as u64 > self.dtb_max {
            return Err(LayoutError::DtbTooLarge {
                size: images.dtb.len(),
                max: self.dtb_max as usize,
            });
        }
        let dtb: std::borrow::Cow<'a, [u8]> = if self.dtb_padded {
            let mut v = images.dtb.to_vec();
            v.resize(self.dtb_max as usize, 0);
            v.into()
        } else {
            images.dtb.into()
        };

        let mut blobs: Vec<PlanStep<'a>> = Vec::new();
        if let (Some((ipa, _)), Some(k)) = (self.kernel, images.kernel) {
            blobs.push(PlanStep::Populate {
                what: "kernel",
                ipa,
                bytes: k.into(),
            });
        }
        if let (Some((ipa, _)), Some(i)) = (self.initrd, images.initrd) {
            blobs.push(PlanStep::Populate {
                what: "initrd",
                ipa,
                bytes: i.into(),
            });
        }
        blobs.push(PlanStep::Populate {
            what: "dtb",
            ipa: self.dtb,
            bytes: dtb,
        });
        blobs.sort_by_key(|s| match s {
            PlanStep::Populate { ipa, .. } => *ipa,
            _ => 0,
        });
        let ram_end = self.ram_base + self.ram_size;
        for b in &blobs {
            if let PlanStep::Populate { what, ipa, bytes } = b {
                let end = ipa + bytes.len() as u64;
                if *ipa < self.ram_base || end > ram_end {
                    return Err(LayoutError::DoesNotFit {
                        what,
                        addr: *ipa,
                        end,
                        ram_base: self.ram_base,
                        ram_end,
                    });
                }
            }
        }

        let mut steps = vec![PlanStep::InitRipas {
            base: self.ram_base,
            top: ram_end,
        }];
        steps.extend(blobs);
        steps.push(PlanStep::CreateRec(self.rec));
        if let Some((ipa, size)) = self.log {
            steps.push(PlanStep::PopulateUnmeasured { ipa, size });
        }
        Ok(RealmLaunchPlan {
            params,
            version,
            steps,
        })
    }
}

/// Kernel placement shared by both VMMs.
fn kernel_placement(
    ram_base: u64,
    kernel: Option<&[u8]>,
) -> Result<Option<(u64, u64, u64)>, LayoutError> {
    kernel
        .map(|k| {
            let h = ArmImageHeader::parse(k)?;
            Ok((ram_base + h.text_offset, k.len() as u64, h.image_size))
        })
        .transpose()
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// QEMU `virt` machine, direct kernel boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QemuVirt {
    /// `-m`: RAM size in bytes.
    pub ram_size: u64,
    /// `rme-guest,measurement-log=on`.
    pub measurement_log: bool,
}

impl QemuVirt {
    /// RAM base of the `virt` machine.
    pub const RAM_BASE: u64 = 0x4000_0000;
    /// Largest DTB QEMU reserves room for.
    pub const DTB_MAX: u64 = MIB;
    /// Measurement log size.
    pub const LOG_SIZE: u64 = 64 * 1024;
    /// Smallest IPA width that fits the `virt` memory map with high PCI
    /// regions (QEMU realms use this by default).
    pub const DEFAULT_S2SZ: u8 = 41;

    /// Lay out `kernel` (the bytes, for its header) and an initrd of
    /// `initrd_len` bytes.
    pub fn layout(
        &self,
        kernel: Option<&[u8]>,
        initrd_len: Option<u64>,
    ) -> Result<RealmLayout, LayoutError> {
        if self.ram_size == 0
            || !self.ram_size.is_multiple_of(GRANULE_SIZE)
            || self.ram_size > 255 << 30
        {
            return Err(LayoutError::RamSize {
                size: self.ram_size,
                expected: "a non-zero multiple of 4 KiB, at most 255 GiB",
            });
        }
        let base = Self::RAM_BASE;
        let k = kernel_placement(base, kernel)?;
        let mut initrd = None;
        let mut dtb = base;
        if let Some((kaddr, _, image_size)) = k {
            let start = (base + (self.ram_size / 2).min(128 * MIB)).max(kaddr + image_size);
            let start = align_up(start, GRANULE_SIZE);
            let len = initrd_len.unwrap_or(0);
            if initrd_len.is_some() {
                initrd = Some((start, len));
            }
            dtb = align_up(start + len, 2 * MIB);
        }
        let log = self
            .measurement_log
            .then_some((dtb + Self::DTB_MAX, Self::LOG_SIZE));
        Ok(RealmLayout {
            ram_base: base,
            ram_size: self.ram_size,
            kernel: k.map(|(a, n, _)| (a, n)),
            initrd,
            dtb,
            dtb_max: Self::DTB_MAX,
            dtb_padded: false,
            log,
            rec: RecParams::boot(base, dtb),
        })
    }
}

/// kvmtool (`lkvm run --realm`), direct kernel boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kvmtool {
    /// `-m`: RAM size in bytes (multiple of 2 MiB).
    pub ram_size: u64,
    /// `--measurement-log`.
    pub measurement_log: bool,
}

impl Kvmtool {
    /// RAM base.
    pub const RAM_BASE: u64 = 0x8000_0000;
    /// DTB slot size (the DTB is padded to it).
    pub const FDT_SIZE: u64 = 0x10000;
    /// DTB alignment.
    pub const FDT_ALIGN: u64 = 2 * MIB;
    /// DTB must sit below RAM + this.
    pub const FDT_LIMIT: u64 = 256 * MIB;
    /// Measurement log size.
    pub const LOG_SIZE: u64 = 64 * 1024;

    /// IPA width kvmtool asks for: enough bits for the top of RAM, at least 33.
    pub fn s2sz(&self) -> u8 {
        let last = Self::RAM_BASE + self.ram_size.max(1) - 1;
        (last.ilog2().max(32) + 1) as u8
    }

    /// Lay out `kernel` and an initrd of `initrd_len` bytes.
    pub fn layout(
        &self,
        kernel: Option<&[u8]>,
        initrd_len: Option<u64>,
    ) -> Result<RealmLayout, LayoutError> {
        if self.ram_size == 0 || !self.ram_size.is_multiple_of(2 * MIB) || self.ram_size < 4 * MIB {
            return Err(LayoutError::RamSize {
                size: self.ram_size,
                expected: "a multiple of 2 MiB, at least 4 MiB",
            });
        }
        let base = Self::RAM_BASE;
        let mut dtb = (base + self.ram_size).min(base + Self::FDT_LIMIT);
        let mut log = None;
        if self.measurement_log {
            dtb -= Self::LOG_SIZE;
            log = Some((dtb, Self::LOG_SIZE));
        }
        dtb = align_up(dtb - (Self::FDT_ALIGN + Self::FDT_SIZE), Self::FDT_ALIGN);
        let k = kernel_placement(base, kernel)?;
        let initrd = match initrd_len {
            Some(len) => {
                let start = dtb.checked_sub(len + 4).filter(|s| *s >= base).ok_or(
                    LayoutError::DoesNotFit {
                        what: "initrd",
                        addr: dtb.saturating_sub(len + 4),
                        end: dtb,
                        ram_base: base,
                        ram_end: base + self.ram_size,
                    },
                )?;
                Some((align_up(start, 4), len))
            }
            None => None,
        };
        Ok(RealmLayout {
            ram_base: base,
            ram_size: self.ram_size,
            kernel: k.map(|(a, n, _)| (a, n)),
            initrd,
            dtb,
            dtb_max: Self::FDT_SIZE,
            dtb_padded: true,
            log,
            rec: RecParams::boot(if k.is_some() { base } else { 0 }, dtb),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_rejects() {
        let h = ArmImageHeader {
            text_offset: 0,
            image_size: 0x2c8_0000,
            flags: 0xa,
        };
        assert_eq!(ArmImageHeader::parse(&h.to_bytes()).unwrap(), h);
        assert!(matches!(
            ArmImageHeader::parse(&[0; 10]),
            Err(LayoutError::BadKernel(_))
        ));
        assert!(matches!(
            ArmImageHeader::parse(&[0; 64]),
            Err(LayoutError::BadKernel(_))
        ));
    }

    #[test]
    fn qemu_places_initrd_and_dtb() {
        let k = ArmImageHeader {
            text_offset: 0,
            image_size: 0x200_0000,
            flags: 0,
        }
        .to_bytes();
        let l = QemuVirt {
            ram_size: 1 << 30,
            measurement_log: false,
        }
        .layout(Some(&k), Some(14))
        .unwrap();
        assert_eq!(l.initrd, Some((0x4800_0000, 14)));
        assert_eq!(l.dtb, 0x4820_0000);
        assert_eq!(l.rec.pc, 0x4000_0000);
        assert_eq!(l.rec.gprs[0], 0x4820_0000);
    }

    #[test]
    fn kvmtool_puts_dtb_below_limit() {
        let l = Kvmtool {
            ram_size: 512 * MIB,
            measurement_log: false,
        }
        .layout(None, Some(100))
        .unwrap();
        assert_eq!(l.dtb, 0x8000_0000 + 254 * MIB);
        assert_eq!(l.initrd, Some((l.dtb - 104, 100)));
        assert_eq!(
            Kvmtool {
                ram_size: 512 * MIB,
                measurement_log: false
            }
            .s2sz(),
            33
        );
    }
}
