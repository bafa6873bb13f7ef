//! Intel TDX measurements: MRTD from the TDVF metadata of a firmware image,
//! RTMR extension and replay of a CC event log (CCEL), and the td-shim
//! payload reference value.
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
    fn rtmr_index_checked() {
        let mut r = Rtmrs::default();
        assert_eq!(r.measure(4, b"x"), Err(TdxError::RtmrIndex(4)));
    }

    #[test]
    fn non_tdvf_image_is_refused() {
        assert!(matches!(mrtd(&[0u8; 8192]), Err(TdxError::Tdvf(_))));
    }
}
