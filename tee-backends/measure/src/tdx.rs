//! Intel TDX measurements: MRTD from the TDVF metadata of a firmware image,
//! RTMR extension and replay of a CC event log (CCEL), the td-shim payload
//! reference value, and RTMR1/RTMR2 of a QEMU + TDVF direct kernel boot
//! ([`predict_direct_boot`]; RTMR0 depends on the host and is not predicted).
//!
//! **MRTD.** The TDX module keeps one SHA-384 stream per TD. For every page
//! the host adds with `TDH.MEM.PAGE.ADD` it absorbs a 128-byte block
//! `"MEM.PAGE.ADD"` (zero-padded to 16) ‖ GPA (u64 LE) ‖ zeros; for every
//! 256-byte chunk extended with `TDH.MR.EXTEND`, a block `"MR.EXTEND"` ‖ GPA
//! ‖ zeros followed by the 256 chunk bytes. QEMU walks the TDVF sections in
//! metadata order and, per page, adds it (unless the section is `PAGE_AUG`)
//! and then extends its 16 chunks if the section has `MR_EXTEND`. Section
//! bytes come from the image at `data_offset` for `raw_size` bytes; the rest
//! of `mem_size` is zero.
//!
//! **RTMR.** `RTMR = SHA-384(RTMR ‖ digest)`, starting from 48 zero bytes.
//! The CCEL is a TCG2 crypto-agile log whose MR index 1..=4 selects
//! RTMR0..=3 (0 is MRTD).

use sha2::{Digest as _, Sha384};

use crate::digest::{Digest, Sha384Digest};
use crate::ovmf_footer::guid_bytes;

const PAGE: usize = 4096;
const CHUNK: usize = 256;
const TDX_METADATA_OFFSET_GUID: &str = "e47a6535-984a-4798-865e-4685a7bf8ec2";

/// Errors from the TDX calculators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TdxError {
    /// The firmware image has no usable TDVF metadata.
    #[error("TDVF metadata: {0}")]
    Tdvf(String),
    /// The event log is malformed.
    #[error("event log at offset {offset}: {reason}")]
    EventLog {
        /// Byte offset of the bad record.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// A payload is larger than the size it is padded to.
    #[error("payload is {len} bytes, larger than the padded size {pad_to}")]
    PayloadTooLarge {
        /// Payload size.
        len: usize,
        /// Padded size.
        pad_to: usize,
    },
    /// RTMR index outside 0..=3.
    #[error("RTMR index {0} out of range: expected 0..=3")]
    RtmrIndex(usize),
    /// The kernel is not a PE/COFF (EFI stub) image the firmware can load.
    #[error(
        "kernel: {0} (TDVF boots the kernel as an EFI application: expected an EFI-stub bzImage)"
    )]
    Kernel(#[from] crate::pe::PeError),
    /// QEMU would refuse (or this model cannot follow) the direct boot.
    #[error("direct boot: {0}")]
    QemuBoot(#[from] crate::qemu_x86::QemuBootError),
}

/// TDVF section types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TdvfSectionType {
    /// Boot firmware volume (code).
    Bfv,
    /// Configuration firmware volume (variables).
    Cfv,
    /// TD HOB.
    TdHob,
    /// Temporary memory.
    TempMem,
    /// Permanent memory (added with PAGE.AUG).
    PermMem,
    /// Payload (td-shim).
    Payload,
    /// Payload parameters (td-shim).
    PayloadParam,
}

/// One TDVF metadata section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TdvfSection {
    /// Offset of the section's bytes in the image.
    pub data_offset: u32,
    /// Bytes present in the image.
    pub raw_size: u32,
    /// Guest physical address.
    pub mem_addr: u64,
    /// Size in guest memory.
    pub mem_size: u64,
    /// Type.
    pub kind: TdvfSectionType,
    /// Attributes: bit 0 MR_EXTEND, bit 1 PAGE_AUG.
    pub attributes: u32,
}

impl TdvfSection {
    /// Content is extended into MRTD.
    pub fn mr_extend(&self) -> bool {
        self.attributes & 1 != 0
    }
    /// Pages are accepted later (PAGE.AUG), not added at build time.
    pub fn page_aug(&self) -> bool {
        self.attributes & 2 != 0
    }
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    b.get(o..o + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

/// Parse the TDVF metadata (located through the OVMF footer GUID table).
pub fn tdvf_sections(image: &[u8]) -> Result<Vec<TdvfSection>, TdxError> {
    let bad = |m: String| TdxError::Tdvf(m);
    let table = crate::ovmf_footer::footer_table(image).map_err(bad)?;
    let off = table
        .iter()
        .find(|(g, _)| *g == guid_bytes(TDX_METADATA_OFFSET_GUID))
        .and_then(|(_, d)| u32_at(d, 0))
        .ok_or_else(|| {
            bad("no TDX metadata offset GUID in the footer table (not a TDVF image)".into())
        })?;
    let hdr = image
        .len()
        .checked_sub(off as usize)
        .filter(|h| h + 16 <= image.len())
        .ok_or_else(|| {
            bad(format!(
                "descriptor offset {off:#x} from the end is outside the image"
            ))
        })?;
    if &image[hdr..hdr + 4] != b"TDVF" {
        return Err(bad("descriptor signature is not TDVF".into()));
    }
    let len = u32_at(image, hdr + 4).unwrap_or(0) as usize;
    let version = u32_at(image, hdr + 8).unwrap_or(0);
    if version != 1 {
        return Err(bad(format!("descriptor version {version}, expected 1")));
    }
    let n = u32_at(image, hdr + 12).unwrap_or(0) as usize;
    if len < 16 + 32 * n || hdr + len > image.len() {
        return Err(bad(format!(
            "descriptor length {len} does not hold {n} sections"
        )));
    }
    (0..n)
        .map(|i| {
            let o = hdr + 16 + 32 * i;
            let kind = match u32_at(image, o + 24).unwrap_or(u32::MAX) {
                0 => TdvfSectionType::Bfv,
                1 => TdvfSectionType::Cfv,
                2 => TdvfSectionType::TdHob,
                3 => TdvfSectionType::TempMem,
                4 => TdvfSectionType::PermMem,
                5 => TdvfSectionType::Payload,
                6 => TdvfSectionType::PayloadParam,
                t => return Err(bad(format!("section {i}: unknown type {t}"))),
            };
            let s = TdvfSection {
                data_offset: u32_at(image, o).unwrap_or(0),
                raw_size: u32_at(image, o + 4).unwrap_or(0),
                mem_addr: u64_at(image, o + 8).unwrap_or(0),
                mem_size: u64_at(image, o + 16).unwrap_or(0),
                kind,
                attributes: u32_at(image, o + 28).unwrap_or(0),
            };
            if !s.mem_addr.is_multiple_of(PAGE as u64) || !s.mem_size.is_multiple_of(PAGE as u64) {
                return Err(bad(format!("section {i}: address/size not 4 KiB aligned")));
            }
            if u64::from(s.raw_size) > s.mem_size
                || s.data_offset as usize + s.raw_size as usize > image.len()
            {
                return Err(bad(format!(
                    "section {i}: raw data outside the image or larger than memory size"
                )));
            }
            if s.mr_extend() && s.page_aug() {
                return Err(bad(format!("section {i}: both MR_EXTEND and PAGE_AUG")));
            }
            Ok(s)
        })
        .collect()
}

/// MRTD of a TD built from this TDVF image.
pub fn mrtd(image: &[u8]) -> Result<Sha384Digest, TdxError> {
    let sections = tdvf_sections(image)?;
    let mut h = Sha384::new();
    let block = |tag: &[u8], gpa: u64| {
        let mut b = [0u8; 128];
        b[..tag.len()].copy_from_slice(tag);
        b[16..24].copy_from_slice(&gpa.to_le_bytes());
        b
    };
    let mut page = [0u8; PAGE];
    for s in &sections {
        if s.page_aug() {
            continue;
        }
        let raw = &image[s.data_offset as usize..(s.data_offset + s.raw_size) as usize];
        for p in 0..(s.mem_size as usize / PAGE) {
            let gpa = s.mem_addr + (p * PAGE) as u64;
            h.update(block(b"MEM.PAGE.ADD", gpa));
            if s.mr_extend() {
                page.fill(0);
                let lo = (p * PAGE).min(raw.len());
                let hi = ((p + 1) * PAGE).min(raw.len());
                page[..hi - lo].copy_from_slice(&raw[lo..hi]);
                for (c, chunk) in page.chunks_exact(CHUNK).enumerate() {
                    h.update(block(b"MR.EXTEND", gpa + (c * CHUNK) as u64));
                    h.update(chunk);
                }
            }
        }
    }
    Ok(Digest(h.finalize().into()))
}

/// The four RTMRs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rtmrs(pub [Sha384Digest; 4]);

impl Rtmrs {
    /// Extend RTMR `index` with a 48-byte digest.
    pub fn extend(&mut self, index: usize, digest: &Sha384Digest) -> Result<(), TdxError> {
        let r = self.0.get_mut(index).ok_or(TdxError::RtmrIndex(index))?;
        let mut h = Sha384::new();
        h.update(r.0);
        h.update(digest.0);
        *r = Digest(h.finalize().into());
        Ok(())
    }

    /// Extend RTMR `index` with the SHA-384 of `data`.
    pub fn measure(&mut self, index: usize, data: &[u8]) -> Result<(), TdxError> {
        self.extend(index, &Digest(Sha384::digest(data).into()))
    }
}

/// One CCEL event that touches an RTMR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CcEvent {
    /// RTMR index (0..=3).
    pub rtmr: usize,
    /// TCG event type.
    pub event_type: u32,
    /// SHA-384 digest extended.
    pub digest: Sha384Digest,
    /// The event data as logged (what the digest covers depends on the type).
    pub event_data: Vec<u8>,
}

const EV_NO_ACTION: u32 = 3;
const TPM_ALG_SHA384: u16 = 0x000c;

/// Parse a CCEL (TCG2 crypto-agile log) into the events that extend RTMRs.
/// Trailing zero or 0xFF padding ends the log.
pub fn parse_ccel(log: &[u8]) -> Result<Vec<CcEvent>, TdxError> {
    let err = |offset, reason: &str| TdxError::EventLog {
        offset,
        reason: reason.to_string(),
    };
    // Header: TCG_PCR_EVENT (SHA-1 format) carrying the Spec ID event.
    let hsize = u32_at(log, 28).ok_or_else(|| err(0, "shorter than the header event"))? as usize;
    let spec = log
        .get(32..32 + hsize)
        .ok_or_else(|| err(0, "header event runs past the end"))?;
    if spec.get(..16) != Some(b"Spec ID Event03\0".as_slice()) {
        return Err(err(32, "header is not a crypto-agile Spec ID Event03"));
    }
    let nalg = u32_at(spec, 24).ok_or_else(|| err(32, "truncated Spec ID event"))? as usize;
    let mut sizes = Vec::with_capacity(nalg);
    for i in 0..nalg {
        let o = 28 + 4 * i;
        let id = spec
            .get(o..o + 2)
            .ok_or_else(|| err(32, "truncated algorithm list"))?;
        let sz = spec
            .get(o + 2..o + 4)
            .ok_or_else(|| err(32, "truncated algorithm list"))?;
        sizes.push((
            u16::from_le_bytes([id[0], id[1]]),
            usize::from(u16::from_le_bytes([sz[0], sz[1]])),
        ));
    }
    let mut off = 32 + hsize;
    let mut out = Vec::new();
    while off + 8 <= log.len() {
        let mr = u32_at(log, off).unwrap_or(0);
        let ty = u32_at(log, off + 4).unwrap_or(0);
        if (mr == 0 && ty == 0) || mr == u32::MAX {
            break;
        }
        let start = off;
        let count =
            u32_at(log, off + 8).ok_or_else(|| err(start, "truncated digest count"))? as usize;
        off += 12;
        let mut sha384 = None;
        for _ in 0..count {
            let id = log
                .get(off..off + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .ok_or_else(|| err(start, "truncated digest"))?;
            let size = sizes
                .iter()
                .find(|(a, _)| *a == id)
                .map(|(_, s)| *s)
                .ok_or_else(|| err(start, "digest algorithm not declared in the header"))?;
            let d = log
                .get(off + 2..off + 2 + size)
                .ok_or_else(|| err(start, "truncated digest"))?;
            if id == TPM_ALG_SHA384 {
                sha384 = Some(
                    Sha384Digest::from_slice(d)
                        .map_err(|_| err(start, "SHA-384 digest is not 48 bytes"))?,
                );
            }
            off += 2 + size;
        }
        let esize = u32_at(log, off).ok_or_else(|| err(start, "truncated event size"))? as usize;
        let data_at = off + 4;
        off = off
            .checked_add(4 + esize)
            .filter(|e| *e <= log.len())
            .ok_or_else(|| err(start, "event data runs past the end"))?;
        if ty == EV_NO_ACTION || mr == 0 {
            continue;
        }
        let rtmr = (mr as usize)
            .checked_sub(1)
            .filter(|r| *r < 4)
            .ok_or_else(|| err(start, "MR index outside 1..=4"))?;
        let digest = sha384.ok_or_else(|| err(start, "event has no SHA-384 digest"))?;
        out.push(CcEvent {
            rtmr,
            event_type: ty,
            digest,
            event_data: log[data_at..off].to_vec(),
        });
    }
    Ok(out)
}

/// Replay a CCEL into RTMR values.
pub fn replay_ccel(log: &[u8]) -> Result<Rtmrs, TdxError> {
    let mut r = Rtmrs::default();
    for e in parse_ccel(log)? {
        r.extend(e.rtmr, &e.digest)?;
    }
    Ok(r)
}

/// td-shim payload reference value: SHA-384 of `data` zero-padded to `pad_to`
/// bytes (the kernel slot size, or 0x1000 for the boot parameters).
pub fn td_payload_reference(data: &[u8], pad_to: usize) -> Result<Sha384Digest, TdxError> {
    if data.len() > pad_to {
        return Err(TdxError::PayloadTooLarge {
            len: data.len(),
            pad_to,
        });
    }
    let mut h = Sha384::new();
    h.update(data);
    let zeros = [0u8; 4096];
    let mut left = pad_to - data.len();
    while left > 0 {
        let n = left.min(zeros.len());
        h.update(&zeros[..n]);
        left -= n;
    }
    Ok(Digest(h.finalize().into()))
}

// ---------------------------------------------------------------------------
// RTMR1/RTMR2 of a QEMU + TDVF direct kernel boot (-kernel/-initrd/-append).
// ---------------------------------------------------------------------------

/// `EV_SEPARATOR`.
pub const EV_SEPARATOR: u32 = 0x4;
/// `EV_EVENT_TAG`.
pub const EV_EVENT_TAG: u32 = 0x6;
/// `EV_EFI_BOOT_SERVICES_APPLICATION`.
pub const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
/// `EV_EFI_ACTION`.
pub const EV_EFI_ACTION: u32 = 0x8000_0007;

/// Tagged-event id of the Linux EFI stub's initrd event.
pub const INITRD_EVENT_TAG_ID: u32 = 0x8F3B_22EC;
/// Tagged-event id of the Linux EFI stub's load-options event.
pub const LOAD_OPTIONS_EVENT_TAG_ID: u32 = 0x8F3B_22ED;

/// TDVF's `EV_EFI_ACTION` strings on the direct-boot path (measured as the
/// ASCII bytes without a NUL).
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";
/// Measured when the OS loader calls ExitBootServices.
pub const EXIT_BOOT_SERVICES_INVOCATION: &str = "Exit Boot Services Invocation";
/// Measured when ExitBootServices succeeds.
pub const EXIT_BOOT_SERVICES_SUCCEEDED: &str = "Exit Boot Services Returned with Success";

/// Where TDVF extends the ReadyToBoot `EV_SEPARATOR`.
///
/// EDK II commit efaf893 ("OvmfPkg/TdTcg2Dxe: Fix the SeparatorEvent issue
/// in RTMRs", first in edk2-stable202411) moved it from RTMR0 to RTMR1, so
/// RTMR1 of the same kernel differs between firmware generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeparatorLayout {
    /// edk2-stable202411 and later: the separator goes to RTMR1, after
    /// "Calling EFI Application from Boot Option".
    #[default]
    Edk2Stable202411,
    /// Earlier TDVF: the separator goes to RTMR0; RTMR1 has none.
    Legacy,
}

/// The three component digests a direct boot measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectBootDigests {
    /// Authenticode SHA-384 of the kernel image as the firmware loaded it.
    pub kernel: Sha384Digest,
    /// SHA-384 of the UTF-16LE `LoadOptions` (None: the image has none).
    pub load_options: Option<Sha384Digest>,
    /// SHA-384 of the initrd bytes (None: no initrd).
    pub initrd: Option<Sha384Digest>,
}

/// One event the prediction expects in the CCEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredictedEvent {
    /// RTMR index (0..=3).
    pub rtmr: usize,
    /// TCG event type.
    pub event_type: u32,
    /// Digest extended.
    pub digest: Sha384Digest,
    /// The event data TDVF / the EFI stub log with it.
    pub event_data: Vec<u8>,
    /// What it is.
    pub what: &'static str,
}

/// The Linux EFI stub's `EV_EVENT_TAG` event data: tagged event id (u32 LE),
/// description size (u32 LE), description with its NUL.
pub fn tagged_event_data(id: u32, description: &str) -> Vec<u8> {
    let mut d = Vec::with_capacity(9 + description.len());
    d.extend_from_slice(&id.to_le_bytes());
    d.extend_from_slice(&(description.len() as u32 + 1).to_le_bytes());
    d.extend_from_slice(description.as_bytes());
    d.push(0);
    d
}

/// The `LoadOptions` OVMF gives the kernel image for a direct boot: the
/// fw_cfg command line, plus `" initrd=initrd"` when an initrd is present,
/// widened byte by byte to UTF-16LE (OVMF prints it with `%a`) and
/// NUL-terminated. None when both are empty (OVMF then sets no options and
/// the stub measures nothing).
pub fn direct_boot_load_options(cmdline: &str, has_initrd: bool) -> Option<Vec<u8>> {
    let suffix = if has_initrd { " initrd=initrd" } else { "" };
    if cmdline.is_empty() && suffix.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(2 * (cmdline.len() + suffix.len() + 1));
    for b in cmdline.bytes().chain(suffix.bytes()).chain([0u8]) {
        out.extend_from_slice(&u16::from(b).to_le_bytes());
    }
    Some(out)
}

fn sha384(data: &[u8]) -> Sha384Digest {
    Digest(Sha384::digest(data).into())
}

/// The RTMR1 and RTMR2 events of a TDVF direct kernel boot, in log order,
/// from the component digests.
///
/// RTMR1 (PCR 2–6): the kernel image as `EV_EFI_BOOT_SERVICES_APPLICATION`
/// (measured when OVMF's `QemuLoadKernelImage` calls LoadImage), then at
/// ReadyToBoot `EV_EFI_ACTION` "Calling EFI Application from Boot Option"
/// and (edk2-stable202411+) `EV_SEPARATOR` over four zero bytes, then
/// at ExitBootServices "Exit Boot Services Invocation" and "Exit Boot
/// Services Returned with Success".
///
/// RTMR2 (PCR 8–15): the Linux EFI stub (Linux 6.8+ measures through
/// `EFI_CC_MEASUREMENT_PROTOCOL` when there is no TPM) extends
/// `EV_EVENT_TAG` "LOADED_IMAGE::LoadOptions" over the LoadOptions buffer,
/// then `EV_EVENT_TAG` "Linux initrd" over the initrd bytes.
pub fn direct_boot_events(d: &DirectBootDigests, layout: SeparatorLayout) -> Vec<PredictedEvent> {
    let action = |s: &'static str| PredictedEvent {
        rtmr: 1,
        event_type: EV_EFI_ACTION,
        digest: sha384(s.as_bytes()),
        event_data: s.as_bytes().to_vec(),
        what: s,
    };
    let mut ev = vec![
        PredictedEvent {
            rtmr: 1,
            event_type: EV_EFI_BOOT_SERVICES_APPLICATION,
            digest: d.kernel,
            // UEFI_IMAGE_LOAD_EVENT + device path: depends on load address.
            event_data: Vec::new(),
            what: "kernel (Authenticode SHA-384)",
        },
        action(CALLING_EFI_APPLICATION),
    ];
    if layout == SeparatorLayout::Edk2Stable202411 {
        ev.push(PredictedEvent {
            rtmr: 1,
            event_type: EV_SEPARATOR,
            digest: sha384(&[0; 4]),
            event_data: vec![0; 4],
            what: "separator",
        });
    }
    if let Some(digest) = d.load_options {
        ev.push(PredictedEvent {
            rtmr: 2,
            event_type: EV_EVENT_TAG,
            digest,
            event_data: tagged_event_data(LOAD_OPTIONS_EVENT_TAG_ID, "LOADED_IMAGE::LoadOptions"),
            what: "kernel command line (LoadOptions)",
        });
    }
    if let Some(digest) = d.initrd {
        ev.push(PredictedEvent {
            rtmr: 2,
            event_type: EV_EVENT_TAG,
            digest,
            event_data: tagged_event_data(INITRD_EVENT_TAG_ID, "Linux initrd"),
            what: "initrd",
        });
    }
    ev.push(action(EXIT_BOOT_SERVICES_INVOCATION));
    ev.push(action(EXIT_BOOT_SERVICES_SUCCEEDED));
    ev
}

/// A direct kernel boot to predict.
#[derive(Debug, Clone, Copy)]
pub struct DirectBoot<'a> {
    /// The bzImage given to `-kernel`.
    pub kernel: &'a [u8],
    /// The `-initrd` bytes, if any.
    pub initrd: Option<&'a [u8]>,
    /// The `-append` command line.
    pub cmdline: &'a str,
    /// Which kernel bytes QEMU hands the firmware.
    pub header: crate::qemu_x86::KernelHeader,
    /// TDVF generation.
    pub layout: SeparatorLayout,
}

/// Predicted RTMR1/RTMR2 of a direct boot, with the events behind them.
/// RTMR0 (TD HOB, ACPI tables, firmware configuration, boot variables) and
/// RTMR3 (runtime) are not predicted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectBootPrediction {
    /// Component digests.
    pub digests: DirectBootDigests,
    /// RTMR1/RTMR2 events in log order.
    pub events: Vec<PredictedEvent>,
    /// RTMR1.
    pub rtmr1: Sha384Digest,
    /// RTMR2.
    pub rtmr2: Sha384Digest,
}

/// The component digests of a direct boot.
pub fn direct_boot_digests(b: &DirectBoot<'_>) -> Result<DirectBootDigests, TdxError> {
    let initrd = b.initrd.filter(|i| !i.is_empty());
    let image = crate::qemu_x86::firmware_kernel_image(
        b.kernel,
        b.cmdline,
        b.initrd.map(|i| i.len() as u64),
        b.header,
    )?;
    Ok(DirectBootDigests {
        kernel: crate::pe::authenticode_sha384(&image)?,
        // An empty -initrd: QEMU still fills in the header, but OVMF sees
        // size 0, adds no " initrd=initrd" and serves no initrd to measure.
        load_options: direct_boot_load_options(b.cmdline, initrd.is_some()).map(|o| sha384(&o)),
        initrd: initrd.map(sha384),
    })
}

/// Fold events into RTMR values.
pub fn rtmrs_of(events: &[PredictedEvent]) -> Result<Rtmrs, TdxError> {
    let mut r = Rtmrs::default();
    for e in events {
        r.extend(e.rtmr, &e.digest)?;
    }
    Ok(r)
}

/// Predict RTMR1 and RTMR2 of a direct boot.
pub fn predict_direct_boot(b: &DirectBoot<'_>) -> Result<DirectBootPrediction, TdxError> {
    let digests = direct_boot_digests(b)?;
    let events = direct_boot_events(&digests, b.layout);
    let r = rtmrs_of(&events)?;
    Ok(DirectBootPrediction {
        digests,
        events,
        rtmr1: r.0[1],
        rtmr2: r.0[2],
    })
}

/// Compare the RTMR1/RTMR2 events of a recorded CCEL with a prediction.
/// Returns one line per difference (empty: they agree), naming the event.
pub fn compare_with_log(predicted: &[PredictedEvent], log: &[CcEvent]) -> Vec<String> {
    let mut out = Vec::new();
    for rtmr in [1usize, 2] {
        let want: Vec<&PredictedEvent> = predicted.iter().filter(|e| e.rtmr == rtmr).collect();
        let got: Vec<&CcEvent> = log.iter().filter(|e| e.rtmr == rtmr).collect();
        for i in 0..want.len().max(got.len()) {
            match (want.get(i), got.get(i)) {
                (Some(w), Some(g)) if w.event_type == g.event_type && w.digest == g.digest => {}
                (Some(w), Some(g)) => out.push(format!(
                    "RTMR{rtmr} event {i}: expected {} (type {:#x}, digest {}), log has type {:#x} digest {}",
                    w.what, w.event_type, w.digest, g.event_type, g.digest
                )),
                (Some(w), None) => out.push(format!(
                    "RTMR{rtmr} event {i}: expected {} (type {:#x}), the log ends",
                    w.what, w.event_type
                )),
                (None, Some(g)) => out.push(format!(
                    "RTMR{rtmr} event {i}: not predicted: type {:#x} digest {}",
                    g.event_type, g.digest
                )),
                (None, None) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_too_large_is_refused() {
        assert_eq!(
            td_payload_reference(&[1; 10], 4),
            Err(TdxError::PayloadTooLarge { len: 10, pad_to: 4 })
        );
    }

    #[test]
    fn empty_initrd_is_neither_in_load_options_nor_measured() {
        let mut k = crate::pe::tests::build_pe(&[(0x200, 0x1000)], 0x1200, (0, 0));
        k[0x1f1] = 0; // setup_sects 0 -> 4
        k[0x202..0x206].copy_from_slice(b"HdrS");
        k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        let boot = |initrd| DirectBoot {
            kernel: &k,
            initrd,
            cmdline: "quiet",
            header: crate::qemu_x86::KernelHeader::AsFile,
            layout: SeparatorLayout::Edk2Stable202411,
        };
        let empty = direct_boot_digests(&boot(Some(&[]))).unwrap();
        let none = direct_boot_digests(&boot(None)).unwrap();
        assert_eq!(empty, none);
        assert_eq!(empty.initrd, None);
        let some = direct_boot_digests(&boot(Some(b"x"))).unwrap();
        assert_ne!(some.load_options, none.load_options);
        assert!(some.initrd.is_some());
    }

    #[test]
    fn rtmr_index_checked() {
        let mut r = Rtmrs::default();
        assert_eq!(r.measure(4, b"x"), Err(TdxError::RtmrIndex(4)));
    }

    #[test]
    fn non_tdvf_image_is_refused() {
        assert!(matches!(mrtd(&[0u8; 8192]), Err(TdxError::Tdvf(_))));
    }
}
