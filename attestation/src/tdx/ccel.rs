//! CCEL: the TCG2 crypto-agile event log a TDX guest's firmware writes
//! (ACPI CCEL table). Replaying its SHA-384 digests reproduces RTMR0..3.
//!
//! Layout: one legacy `TCG_PCR_EVENT` header (SHA-1 format) carrying the
//! `Spec ID Event03` with the digest sizes, then `TCG_PCR_EVENT2` records
//! `{mr_index u32, event_type u32, count u32, count × {alg u16, digest},
//! size u32, data}`. MR index 1..4 = RTMR0..3 (0 = MRTD). `EV_NO_ACTION`
//! events are not extended. The log ends at the first all-0x00 or all-0xFF
//! header (the table area is padded).

use sha2::{Digest, Sha384};

const EV_NO_ACTION: u32 = 3;
const ALG_SHA384: u16 = 0x000C;

/// Why an event log cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    /// Input ends inside an event.
    #[error("event log truncated in event {index} at byte {offset}")]
    Truncated {
        /// Event number (0 = the spec ID header).
        index: usize,
        /// Byte offset.
        offset: usize,
    },
    /// The first event is not a TCG2 spec ID event.
    #[error("event log header: {0}")]
    Header(String),
    /// An event is malformed.
    #[error("event {index}: {reason}")]
    Event {
        /// Event number.
        index: usize,
        /// What is wrong.
        reason: String,
    },
}

/// One event with its SHA-384 digest.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    /// CC MR index (1..4 = RTMR0..3).
    pub mr_index: u32,
    /// TCG event type.
    pub event_type: u32,
    /// SHA-384 digest, hex.
    pub digest: String,
    /// SHA-384 digest.
    #[serde(skip)]
    pub sha384: [u8; 48],
    /// Event data length.
    pub data_len: usize,
}

struct Rd<'a> {
    b: &'a [u8],
    pos: usize,
    index: usize,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EventLogError> {
        let end = self.pos.checked_add(n);
        let s = end
            .and_then(|e| self.b.get(self.pos..e))
            .ok_or(EventLogError::Truncated {
                index: self.index,
                offset: self.pos,
            })?;
        self.pos += n;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, EventLogError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, EventLogError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}

/// Parse the log into its measured events (EV_NO_ACTION included, flagged by type).
pub fn parse(log: &[u8]) -> Result<Vec<Event>, EventLogError> {
    let mut r = Rd {
        b: log,
        pos: 0,
        index: 0,
    };
    // Legacy header event.
    let _pcr = r.u32()?;
    let ev_type = r.u32()?;
    if ev_type != EV_NO_ACTION {
        return Err(EventLogError::Header(format!(
            "first event type {ev_type}, expected 3 (EV_NO_ACTION spec ID event)"
        )));
    }
    r.take(20)?;
    let size = r.u32()? as usize;
    let spec = r.take(size)?;
    if spec.len() < 28 || &spec[..16] != b"Spec ID Event03\0" {
        return Err(EventLogError::Header(
            "no \"Spec ID Event03\" signature (not a crypto-agile log)".into(),
        ));
    }
    // platformClass u32, versions 3×u8, uintnSize u8, numberOfAlgorithms u32.
    let n_algs = u32::from_le_bytes([spec[24], spec[25], spec[26], spec[27]]) as usize;
    let mut sizes = Vec::with_capacity(n_algs.min(16));
    let mut s = Rd {
        b: spec,
        pos: 28,
        index: 0,
    };
    for _ in 0..n_algs {
        let alg = s.u16()?;
        let len = s.u16()?;
        sizes.push((alg, usize::from(len)));
    }
    if !sizes.iter().any(|&(a, l)| a == ALG_SHA384 && l == 48) {
        return Err(EventLogError::Header(
            "the log records no SHA-384 digests".into(),
        ));
    }

    let mut events = Vec::new();
    loop {
        r.index += 1;
        if log.len() - r.pos < 8 {
            break;
        }
        let head = &log[r.pos..r.pos + 8];
        if head.iter().all(|&x| x == 0) || head.iter().all(|&x| x == 0xFF) {
            break;
        }
        let mr_index = r.u32()?;
        let event_type = r.u32()?;
        let count = r.u32()? as usize;
        if count == 0 || count > sizes.len() {
            return Err(EventLogError::Event {
                index: r.index,
                reason: format!("{count} digests, expected 1..={}", sizes.len()),
            });
        }
        let mut digest = None;
        for _ in 0..count {
            let alg = r.u16()?;
            let len = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|&(_, l)| l)
                .ok_or_else(|| EventLogError::Event {
                    index: r.index,
                    reason: format!("digest algorithm {alg:#06x} not declared in the header"),
                })?;
            let d = r.take(len)?;
            if alg == ALG_SHA384 {
                digest = Some(d);
            }
        }
        let data_len = r.u32()? as usize;
        r.take(data_len)?;
        let digest = digest.ok_or_else(|| EventLogError::Event {
            index: r.index,
            reason: "no SHA-384 digest".into(),
        })?;
        let mut sha384 = [0u8; 48];
        sha384.copy_from_slice(digest);
        events.push(Event {
            mr_index,
            event_type,
            digest: hex::encode(digest),
            sha384,
            data_len,
        });
    }
    Ok(events)
}

/// Replay the log: RTMR0..3 as the TDX module would hold them.
pub fn replay(log: &[u8]) -> Result<[[u8; 48]; 4], EventLogError> {
    let mut rtmr = [[0u8; 48]; 4];
    for (i, e) in parse(log)?.iter().enumerate() {
        if e.event_type == EV_NO_ACTION || e.mr_index == 0 {
            continue;
        }
        let slot = match e.mr_index {
            1..=4 => (e.mr_index - 1) as usize,
            other => {
                return Err(EventLogError::Event {
                    index: i + 1,
                    reason: format!("MR index {other}, expected 0..=4"),
                })
            }
        };
        let mut h = Sha384::new();
        h.update(rtmr[slot]);
        h.update(e.sha384);
        rtmr[slot].copy_from_slice(&h.finalize());
    }
    Ok(rtmr)
}
