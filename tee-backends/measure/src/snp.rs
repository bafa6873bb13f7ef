//! AMD SEV-SNP launch digest (the report's MEASUREMENT) of a QEMU guest
//! booted from OVMF, optionally with a measured direct kernel boot
//! (`kernel-hashes=on`).
//!
//! The PSP folds every page added by `SNP_LAUNCH_UPDATE` into a SHA-384
//! chain: `LD = SHA-384(PAGE_INFO)`, `PAGE_INFO` = {LD (48), contents (48),
//! length 0x70 (u16), page type (u8), IMI (u8), VMPL3/2/1 perms (u8 ×3),
//! reserved (u8), GPA (u64)}. QEMU adds, in order:
//!
//! 1. the whole OVMF image as normal pages at 4 GiB − size (contents =
//!    SHA-384 of each page);
//! 2. each OVMF SEV metadata section: SEC memory and SVSM CAA as zero pages,
//!    the secrets page, the CPUID page, and the kernel-hashes page — a normal
//!    page holding the SEV hashes table (SHA-256 of kernel, initrd and
//!    command line + NUL) when a kernel is given, else zero pages;
//! 3. one VMSA page per vCPU at GPA 0xFFFF_FFFF_F000 (contents = SHA-384 of
//!    the VMSA). The VMSA image comes from the `sev` crate.
//!
//! OVMF is parsed from bytes: footer GUID table (ends 32 bytes before the end
//! of the image), SEV metadata (`ASEV`, version 1), SEV-ES reset block and
//! the hashes-table GPA.

use sev::measurement::vcpu_types::CpuType;
use sev::measurement::vmsa::{GuestFeatures, VMMType, VMSA};
use sev::parser::ByteParser;
use sha2::{Digest as _, Sha256, Sha384};

use crate::digest::{Sha256Digest, Sha384Digest};
use crate::ovmf_footer::guid_bytes;

const PAGE: usize = 4096;
const FOUR_GIB: u64 = 1 << 32;
const VMSA_GPA: u64 = 0xFFFF_FFFF_F000;

// GUIDs in their on-disk (little-endian mixed) byte order.
const SEV_META_DATA_GUID: &str = "dc886566-984a-4798-a75e-5585a7bf67cc";
const SEV_HASH_TABLE_RV_GUID: &str = "7255371f-3a3b-4b04-927b-1da6efa8d454";
const SEV_ES_RESET_BLOCK_GUID: &str = "00f771de-1a7e-4fcb-890e-68c77e2fb44e";
const HASH_TABLE_HEADER_GUID: &str = "9438d606-4f22-4cc9-b479-a793d411fd21";
const KERNEL_ENTRY_GUID: &str = "4de79437-abd2-427f-b835-d5b172d2045b";
const INITRD_ENTRY_GUID: &str = "44baf731-3a2f-4bd7-9af1-41e29169781d";
const CMDLINE_ENTRY_GUID: &str = "97d02dd8-bd20-4c94-aa78-e7714d36ab2a";

/// Errors from the SNP calculator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpError {
    /// The firmware image is malformed.
    #[error("OVMF image: {0}")]
    Ovmf(String),
    /// A kernel was given but the firmware cannot measure it.
    #[error("kernel specified but the OVMF metadata has no SNP_KERNEL_HASHES section (build OVMF from OvmfPkg/AmdSev)")]
    NoKernelHashesSection,
    /// Unknown vCPU model.
    #[error("unknown vCPU type {0:?}: expected a QEMU EPYC model such as EPYC-v4, EPYC-Milan, EPYC-Genoa")]
    VcpuType(String),
    /// vCPU count out of range.
    #[error("vCPU count {0} out of range: expected 1..=512")]
    Vcpus(u32),
    /// Building the VMSA failed.
    #[error("VMSA: {0}")]
    Vmsa(String),
}

/// SNP page types (`SNP_LAUNCH_UPDATE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PageType {
    /// Normal page, contents measured.
    Normal = 1,
    /// VMSA page.
    Vmsa = 2,
    /// Zero page.
    Zero = 3,
    /// Unmeasured page.
    Unmeasured = 4,
    /// Secrets page.
    Secrets = 5,
    /// CPUID page.
    Cpuid = 6,
}

/// The running launch digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaunchDigest(Sha384Digest);

impl LaunchDigest {
    /// Start from a known digest (e.g. a precomputed OVMF digest).
    pub fn from_digest(d: Sha384Digest) -> Self {
        Self(d)
    }

    /// The digest.
    pub fn digest(&self) -> Sha384Digest {
        self.0
    }

    /// Fold one `PAGE_INFO` with the given `contents` field.
    pub fn update(&mut self, page_type: PageType, gpa: u64, contents: &[u8; 48]) {
        let mut info = [0u8; 0x70];
        info[..48].copy_from_slice(&self.0 .0);
        info[48..96].copy_from_slice(contents);
        info[96..98].copy_from_slice(&0x70u16.to_le_bytes());
        info[98] = page_type as u8;
        // 99: IMI page, 100..103: VMPL3/2/1 permissions, 103: reserved — all 0.
        info[104..112].copy_from_slice(&gpa.to_le_bytes());
        self.0 = crate::digest::Digest(Sha384::digest(info).into());
    }

    /// Add normal pages covering `data` (length a multiple of 4 KiB) at `gpa`.
    pub fn add_normal(&mut self, gpa: u64, data: &[u8]) -> Result<(), SnpError> {
        if !data.len().is_multiple_of(PAGE) {
            return Err(SnpError::Ovmf(format!(
                "{} bytes is not a whole number of pages",
                data.len()
            )));
        }
        for (i, page) in data.chunks_exact(PAGE).enumerate() {
            let h: [u8; 48] = Sha384::digest(page).into();
            self.update(PageType::Normal, gpa + (i * PAGE) as u64, &h);
        }
        Ok(())
    }

    /// Add `size` bytes of zero pages at `gpa`.
    pub fn add_zero(&mut self, gpa: u64, size: u64) {
        let mut off = 0;
        while off < size {
            self.update(PageType::Zero, gpa + off, &[0; 48]);
            off += PAGE as u64;
        }
    }
}

/// An OVMF SEV metadata section type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SectionKind {
    /// SNP_SEC_MEM (1): zero pages.
    SecMemory,
    /// SNP_SECRETS (2).
    Secrets,
    /// CPUID (3).
    Cpuid,
    /// SVSM_CAA (4): zero pages.
    SvsmCaa,
    /// SNP_KERNEL_HASHES (0x10).
    KernelHashes,
}

/// One OVMF SEV metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Guest physical address.
    pub gpa: u32,
    /// Size in bytes.
    pub size: u32,
    /// Kind.
    pub kind: SectionKind,
}

/// An OVMF image parsed for SNP measurement.
#[derive(Debug, Clone)]
pub struct Ovmf<'a> {
    data: &'a [u8],
    sections: Vec<Section>,
    reset_eip: u32,
    hashes_table_gpa: Option<u32>,
}

fn le_u32(b: &[u8], off: usize) -> Option<u32> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> Ovmf<'a> {
    /// Parse the firmware image.
    pub fn parse(data: &'a [u8]) -> Result<Self, SnpError> {
        let bad = |m: &str| SnpError::Ovmf(m.to_string());
        if data.is_empty() || !data.len().is_multiple_of(PAGE) || data.len() as u64 > FOUR_GIB {
            return Err(bad("size must be a non-zero multiple of 4 KiB below 4 GiB"));
        }
        let table = crate::ovmf_footer::footer_table(data).map_err(SnpError::Ovmf)?;
        let find = |g: &str| {
            table
                .iter()
                .find(|(id, _)| *id == guid_bytes(g))
                .map(|(_, d)| *d)
        };
        let reset_eip = find(SEV_ES_RESET_BLOCK_GUID)
            .and_then(|d| le_u32(d, 0))
            .ok_or_else(|| bad("no SEV-ES reset block (not an SEV-capable OVMF)"))?;
        let hashes_table_gpa = find(SEV_HASH_TABLE_RV_GUID)
            .and_then(|d| le_u32(d, 0))
            .filter(|g| *g != 0);
        let meta_off = find(SEV_META_DATA_GUID)
            .and_then(|d| le_u32(d, 0))
            .ok_or_else(|| bad("no SEV metadata entry in the footer table"))?
            as usize;
        let hdr = data
            .len()
            .checked_sub(meta_off)
            .filter(|h| h + 16 <= data.len())
            .ok_or_else(|| bad("SEV metadata offset outside the image"))?;
        if &data[hdr..hdr + 4] != b"ASEV" {
            return Err(bad("SEV metadata signature is not ASEV"));
        }
        let size = le_u32(data, hdr + 4).unwrap_or(0) as usize;
        if le_u32(data, hdr + 8) != Some(1) {
            return Err(bad("SEV metadata version is not 1"));
        }
        let n = le_u32(data, hdr + 12).unwrap_or(0) as usize;
        if size < 16 + 12 * n || hdr + size > data.len() {
            return Err(bad("SEV metadata size does not hold its sections"));
        }
        let mut sections = Vec::with_capacity(n);
        for i in 0..n {
            let o = hdr + 16 + 12 * i;
            let kind = match le_u32(data, o + 8).unwrap_or(0) {
                1 => SectionKind::SecMemory,
                2 => SectionKind::Secrets,
                3 => SectionKind::Cpuid,
                4 => SectionKind::SvsmCaa,
                0x10 => SectionKind::KernelHashes,
                t => {
                    return Err(SnpError::Ovmf(format!(
                        "unknown SEV metadata section type {t:#x}"
                    )))
                }
            };
            sections.push(Section {
                gpa: le_u32(data, o).unwrap_or(0),
                size: le_u32(data, o + 4).unwrap_or(0),
                kind,
            });
        }
        Ok(Self {
            data,
            sections,
            reset_eip,
            hashes_table_gpa,
        })
    }

    /// Load address (4 GiB − size).
    pub fn gpa(&self) -> u64 {
        FOUR_GIB - self.data.len() as u64
    }

    /// Metadata sections in order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }

    /// SEV-ES reset vector of the APs.
    pub fn reset_eip(&self) -> u32 {
        self.reset_eip
    }

    /// Whether this firmware can measure a direct kernel boot.
    pub fn supports_kernel_hashes(&self) -> bool {
        self.hashes_table_gpa.is_some()
            && self
                .sections
                .iter()
                .any(|s| s.kind == SectionKind::KernelHashes)
    }

    /// Launch digest after the firmware pages alone.
    pub fn digest(&self) -> Sha384Digest {
        let mut ld = LaunchDigest::default();
        // Length was checked in parse.
        let _ = ld.add_normal(self.gpa(), self.data);
        ld.digest()
    }
}

/// The SEV hashes table QEMU writes for `kernel-hashes=on`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelHashes {
    /// SHA-256 of the kernel.
    pub kernel: Sha256Digest,
    /// SHA-256 of the initrd (of empty input when there is none).
    pub initrd: Sha256Digest,
    /// SHA-256 of the command line followed by one NUL.
    pub cmdline: Sha256Digest,
}

impl KernelHashes {
    /// Hash the boot images. `cmdline` `None` is measured as the empty string.
    pub fn new(kernel: &[u8], initrd: Option<&[u8]>, cmdline: Option<&str>) -> Self {
        let d = |b: &[u8]| crate::digest::Digest(Sha256::digest(b).into());
        let mut c = Sha256::new();
        c.update(cmdline.unwrap_or("").as_bytes());
        c.update([0u8]);
        Self {
            kernel: d(kernel),
            initrd: d(initrd.unwrap_or(&[])),
            cmdline: crate::digest::Digest(c.finalize().into()),
        }
    }

    /// The table: header {GUID, u16 len = 168}, then {GUID, u16 len = 50,
    /// SHA-256} for cmdline, initrd, kernel; padded with zeros to 176 bytes.
    pub fn table(&self) -> [u8; 176] {
        let mut t = [0u8; 176];
        t[..16].copy_from_slice(&guid_bytes(HASH_TABLE_HEADER_GUID));
        t[16..18].copy_from_slice(&168u16.to_le_bytes());
        for (i, (g, h)) in [
            (CMDLINE_ENTRY_GUID, &self.cmdline),
            (INITRD_ENTRY_GUID, &self.initrd),
            (KERNEL_ENTRY_GUID, &self.kernel),
        ]
        .into_iter()
        .enumerate()
        {
            let o = 18 + 50 * i;
            t[o..o + 16].copy_from_slice(&guid_bytes(g));
            t[o + 16..o + 18].copy_from_slice(&50u16.to_le_bytes());
            t[o + 18..o + 50].copy_from_slice(h.as_bytes());
        }
        t
    }
}

/// Inputs of a QEMU SNP launch.
#[derive(Debug, Clone)]
pub struct SnpLaunch<'a> {
    /// The firmware.
    pub ovmf: &'a Ovmf<'a>,
    /// vCPU count (`-smp`).
    pub vcpus: u32,
    /// QEMU CPU model (`-cpu`), e.g. `EPYC-v4`; sets RDX in the VMSA.
    pub vcpu_type: &'a str,
    /// VMSA SEV_FEATURES (bit 0 SNPActive, bit 5 DebugSwap, …).
    pub guest_features: u64,
    /// Direct kernel boot hashes (`kernel-hashes=on`), if any.
    pub kernel_hashes: Option<KernelHashes>,
}

fn vmsa_pages(launch: &SnpLaunch<'_>) -> Result<Vec<Vec<u8>>, SnpError> {
    let cpu = CpuType::try_from(launch.vcpu_type)
        .map_err(|_| SnpError::VcpuType(launch.vcpu_type.to_string()))?;
    let gf = GuestFeatures::from_bytes_with(&launch.guest_features.to_le_bytes(), ())
        .map_err(|e| SnpError::Vmsa(e.to_string()))?;
    let vmsa = VMSA::new(
        launch.ovmf.reset_eip().into(),
        cpu,
        VMMType::QEMU,
        Some(launch.vcpus.into()),
        gf,
    );
    vmsa.pages(launch.vcpus as usize)
        .map_err(|e| SnpError::Vmsa(e.to_string()))
}

/// The SNP launch digest (MEASUREMENT) of a QEMU guest.
pub fn launch_digest(launch: &SnpLaunch<'_>) -> Result<Sha384Digest, SnpError> {
    launch_digest_from(LaunchDigest::from_digest(launch.ovmf.digest()), launch)
}

/// The launch digest continuing from a precomputed firmware digest
/// ([`Ovmf::digest`]), which is the costly part.
pub fn launch_digest_from(
    mut ld: LaunchDigest,
    launch: &SnpLaunch<'_>,
) -> Result<Sha384Digest, SnpError> {
    if !(1..=512).contains(&launch.vcpus) {
        return Err(SnpError::Vcpus(launch.vcpus));
    }
    let ovmf = launch.ovmf;
    if launch.kernel_hashes.is_some() && !ovmf.supports_kernel_hashes() {
        return Err(SnpError::NoKernelHashesSection);
    }
    for s in ovmf.sections() {
        let gpa = u64::from(s.gpa);
        match s.kind {
            SectionKind::SecMemory | SectionKind::SvsmCaa => ld.add_zero(gpa, s.size.into()),
            SectionKind::Secrets => ld.update(PageType::Secrets, gpa, &[0; 48]),
            SectionKind::Cpuid => ld.update(PageType::Cpuid, gpa, &[0; 48]),
            SectionKind::KernelHashes => match (&launch.kernel_hashes, ovmf.hashes_table_gpa) {
                (Some(h), Some(table_gpa)) => {
                    let off = (table_gpa & 0xfff) as usize;
                    let mut page = vec![0u8; s.size as usize];
                    if off + 176 > page.len() {
                        return Err(SnpError::Ovmf(
                            "hashes table does not fit its section".into(),
                        ));
                    }
                    page[off..off + 176].copy_from_slice(&h.table());
                    ld.add_normal(gpa, &page)?;
                }
                _ => ld.add_zero(gpa, s.size.into()),
            },
        }
    }
    for page in vmsa_pages(launch)? {
        let h: [u8; 48] = Sha384::digest(&page).into();
        ld.update(PageType::Vmsa, VMSA_GPA, &h);
    }
    Ok(ld.digest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_bytes_are_mixed_endian() {
        assert_eq!(
            hex::encode(guid_bytes("96b582de-1fb2-45f7-baea-a366c55a082d")),
            "de82b596b21ff745baeaa366c55a082d"
        );
    }

    #[test]
    fn rejects_garbage_firmware() {
        assert!(matches!(Ovmf::parse(&[0u8; 4096]), Err(SnpError::Ovmf(_))));
        assert!(matches!(Ovmf::parse(&[0u8; 100]), Err(SnpError::Ovmf(_))));
    }
}
