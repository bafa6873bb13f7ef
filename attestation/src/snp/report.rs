//! The SEV-SNP `ATTESTATION_REPORT` structure (SNP firmware ABI, table
//! "ATTESTATION_REPORT Structure"), versions 2 to 5. A fixed 0x4A0-byte layout:
//! this parser reads it field by field and rejects anything else.

use serde::Serialize;

/// Size of an attestation report in bytes.
pub const REPORT_LEN: usize = 0x4A0;
/// Bytes covered by the report signature (everything before it).
pub const SIGNED_LEN: usize = 0x2A0;

/// AMD EPYC processor generation (decides the TCB layout and the roots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
    /// EPYC 7003 (Zen 3).
    Milan,
    /// EPYC 9004 (Zen 4).
    Genoa,
    /// EPYC 9005 (Zen 5).
    Turin,
}

impl Generation {
    /// The name AMD uses in certificate subjects (`ARK-Milan`, `SEV-VLEK-Genoa`).
    pub fn name(self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
        }
    }

    /// From CPUID family and model as recorded in v3+ reports.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Generation::Milan),
            (0x19, 0x10..=0x1F) | (0x19, 0xA0..=0xAF) => Some(Generation::Genoa),
            (0x1A, 0x00..=0x11) => Some(Generation::Turin),
            _ => None,
        }
    }

    /// From a certificate common name suffix (`ARK-Turin`, `SEV-Genoa`).
    pub fn from_cn(cn: &str) -> Option<Self> {
        [Generation::Milan, Generation::Genoa, Generation::Turin]
            .into_iter()
            .find(|g| cn.ends_with(g.name()))
    }
}

/// A TCB version: security patch levels of the firmware components.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tcb {
    /// FMC SPL (Turin and later only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// CPU microcode SPL.
    pub microcode: u8,
}

impl Tcb {
    /// Decode the 64-bit TCB_VERSION for a processor generation.
    pub fn decode(raw: u64, generation: Generation) -> Self {
        let b = raw.to_le_bytes();
        match generation {
            Generation::Turin => Tcb {
                fmc: Some(b[0]),
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
            Generation::Milan | Generation::Genoa => Tcb {
                fmc: None,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
        }
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc={fmc} ")?;
        }
        write!(
            f,
            "bl={} tee={} snp={} ucode={}",
            self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// Which key signed the report (KEY_INFO.SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
}

/// Why a byte string is not an attestation report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// Wrong length.
    #[error("report is {found} bytes, expected {REPORT_LEN}")]
    Length {
        /// Bytes given.
        found: usize,
    },
    /// Unsupported version.
    #[error("report version {0} is not supported, expected 2 to 5")]
    Version(u32),
    /// Unsupported signature algorithm.
    #[error("signature algorithm {0} is not supported, expected 1 (ECDSA P-384 with SHA-384)")]
    SigAlgo(u32),
    /// The report is not signed by an endorsement key.
    #[error("KEY_INFO signing key {0} is not supported, expected 0 (VCEK) or 1 (VLEK)")]
    SigningKey(u32),
    /// Trustee-style JSON evidence is malformed.
    #[error("trustee SNP evidence JSON: {0}")]
    Json(String),
    /// Signature component out of range.
    #[error("signature {0} component has non-zero bytes beyond 48")]
    SignaturePadding(&'static str),
}

/// A parsed attestation report. Byte arrays are kept as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Report format version (2..=5).
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: u64,
    /// Family ID from the ID block.
    pub family_id: [u8; 16],
    /// Image ID from the ID block.
    pub image_id: [u8; 16],
    /// VMPL the report was requested from.
    pub vmpl: u32,
    /// Signature algorithm (1 = ECDSA P-384 SHA-384).
    pub sig_algo: u32,
    /// Current TCB, raw.
    pub current_tcb: u64,
    /// PLATFORM_INFO bits.
    pub platform_info: u64,
    /// KEY_INFO bits.
    pub key_info: u32,
    /// Guest-provided data.
    pub report_data: [u8; 64],
    /// Launch measurement.
    pub measurement: [u8; 48],
    /// Host-provided data (initdata digest).
    pub host_data: [u8; 32],
    /// ID key digest.
    pub id_key_digest: [u8; 48],
    /// Author key digest.
    pub author_key_digest: [u8; 48],
    /// Report ID.
    pub report_id: [u8; 32],
    /// Migration agent report ID.
    pub report_id_ma: [u8; 32],
    /// Reported TCB, raw (the TCB the signing key was derived for).
    pub reported_tcb: u64,
    /// CPUID family, model, stepping (v3+).
    pub cpuid: Option<(u8, u8, u8)>,
    /// Chip identifier (zero when masked).
    pub chip_id: [u8; 64],
    /// Committed TCB, raw.
    pub committed_tcb: u64,
    /// Current firmware version (major, minor, build).
    pub current_version: (u8, u8, u8),
    /// Committed firmware version (major, minor, build).
    pub committed_version: (u8, u8, u8),
    /// Launch TCB, raw.
    pub launch_tcb: u64,
    /// Launch and current mitigation vectors (v5).
    pub mit_vectors: Option<(u64, u64)>,
    /// Signature R, big-endian.
    pub sig_r: [u8; 48],
    /// Signature S, big-endian.
    pub sig_s: [u8; 48],
}

fn arr<const N: usize>(b: &[u8], off: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[off..off + N]);
    out
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(arr(b, off))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(arr(b, off))
}

/// A 72-byte little-endian signature component → 48-byte big-endian scalar.
fn scalar(b: &[u8], off: usize, name: &'static str) -> Result<[u8; 48], ReportError> {
    if b[off + 48..off + 72].iter().any(|&x| x != 0) {
        return Err(ReportError::SignaturePadding(name));
    }
    let mut out: [u8; 48] = arr(b, off);
    out.reverse();
    Ok(out)
}

impl Report {
    /// Parse a raw report. Exactly [`REPORT_LEN`] bytes.
    pub fn parse(b: &[u8]) -> Result<Self, ReportError> {
        if b.len() != REPORT_LEN {
            return Err(ReportError::Length { found: b.len() });
        }
        let version = u32_at(b, 0x00);
        if !(2..=5).contains(&version) {
            return Err(ReportError::Version(version));
        }
        let sig_algo = u32_at(b, 0x34);
        if sig_algo != 1 {
            return Err(ReportError::SigAlgo(sig_algo));
        }
        let key_info = u32_at(b, 0x48);
        let signing = (key_info >> 2) & 0x7;
        if signing > 1 {
            return Err(ReportError::SigningKey(signing));
        }
        Ok(Report {
            version,
            guest_svn: u32_at(b, 0x04),
            policy: u64_at(b, 0x08),
            family_id: arr(b, 0x10),
            image_id: arr(b, 0x20),
            vmpl: u32_at(b, 0x30),
            sig_algo,
            current_tcb: u64_at(b, 0x38),
            platform_info: u64_at(b, 0x40),
            key_info,
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            author_key_digest: arr(b, 0x110),
            report_id: arr(b, 0x140),
            report_id_ma: arr(b, 0x160),
            reported_tcb: u64_at(b, 0x180),
            cpuid: (version >= 3).then(|| (b[0x188], b[0x189], b[0x18A])),
            chip_id: arr(b, 0x1A0),
            committed_tcb: u64_at(b, 0x1E0),
            current_version: (b[0x1EA], b[0x1E9], b[0x1E8]),
            committed_version: (b[0x1EE], b[0x1ED], b[0x1EC]),
            launch_tcb: u64_at(b, 0x1F0),
            mit_vectors: (version >= 5).then(|| (u64_at(b, 0x1F8), u64_at(b, 0x200))),
            sig_r: scalar(b, 0x2A0, "R")?,
            sig_s: scalar(b, 0x2A0 + 72, "S")?,
        })
    }

    /// Which endorsement key signed this report.
    pub fn signing_key(&self) -> SigningKey {
        if (self.key_info >> 2) & 0x7 == 1 {
            SigningKey::Vlek
        } else {
            SigningKey::Vcek
        }
    }

    /// Processor generation from CPUID (v3+ reports only).
    pub fn generation(&self) -> Option<Generation> {
        self.cpuid
            .and_then(|(fam, model, _)| Generation::from_cpuid(fam, model))
    }

    /// Guest policy bit 19: debugging allowed.
    pub fn debug_allowed(&self) -> bool {
        self.policy & (1 << 19) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_length_version_and_algo() {
        assert_eq!(
            Report::parse(&[0u8; 10]),
            Err(ReportError::Length { found: 10 })
        );
        let mut b = vec![0u8; REPORT_LEN];
        b[0] = 6;
        assert_eq!(Report::parse(&b), Err(ReportError::Version(6)));
        b[0] = 2;
        assert_eq!(Report::parse(&b), Err(ReportError::SigAlgo(0)));
        b[0x34] = 1;
        b[0x48] = 7 << 2;
        assert_eq!(Report::parse(&b), Err(ReportError::SigningKey(7)));
        b[0x48] = 0;
        b[0x2A0 + 60] = 1;
        assert_eq!(Report::parse(&b), Err(ReportError::SignaturePadding("R")));
    }

    #[test]
    fn tcb_layouts() {
        let raw = u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 115]);
        let t = Tcb::decode(raw, Generation::Milan);
        assert_eq!(
            (t.bootloader, t.tee, t.snp, t.microcode, t.fmc),
            (3, 0, 8, 115, None)
        );
        let raw = u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 9]);
        let t = Tcb::decode(raw, Generation::Turin);
        assert_eq!(
            (t.fmc, t.bootloader, t.tee, t.snp, t.microcode),
            (Some(1), 2, 3, 4, 9)
        );
    }

    #[test]
    fn generations() {
        assert_eq!(Generation::from_cpuid(0x19, 0x01), Some(Generation::Milan));
        assert_eq!(Generation::from_cpuid(0x19, 0xA0), Some(Generation::Genoa));
        assert_eq!(Generation::from_cpuid(0x1A, 0x02), Some(Generation::Turin));
        assert_eq!(Generation::from_cpuid(0x17, 0x01), None);
        assert_eq!(
            Generation::from_cn("SEV-VLEK-Genoa"),
            Some(Generation::Genoa)
        );
    }
}
