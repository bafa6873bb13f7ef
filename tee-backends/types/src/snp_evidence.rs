//! Trustee's SEV-SNP evidence, as its SNP attester sends it to a KBS and as
//! its verifier reads it:
//!
//! ```json
//! {"attestation_report": {"version": 3, "guest_svn": 0, "policy": 196608,
//!    "family_id": [0, …], …, "current_tcb": {"fmc": null, "bootloader": 10,
//!    "tee": 0, "snp": 23, "microcode": 25}, …, "current": {"major": 1,
//!    "minor": 55, "build": 40}, …, "signature": {"r": […72], "s": […72]}},
//!  "cert_chain": [{"cert_type": "VCEK", "data": [DER bytes]}] | null}
//! ```
//!
//! That is the `sev` crate's serde form of the report: byte strings as
//! arrays of numbers, TCB versions split into their security patch levels,
//! firmware versions as `{major, minor, build}`. [`SnpEvidence`] is that
//! shape, both ways: the guest builds it from the raw 0x4A0-byte report
//! ([`SnpEvidence::from_raw`]), the verifier lays it out again
//! ([`SnpEvidence::to_raw`]) to check the signature over the exact bytes.
//! Both directions use one table, [`LAYOUT`], of where each field lives in
//! the report (SNP firmware ABI, table "ATTESTATION_REPORT Structure").
//!
//! Nothing is truncated, zero-filled or dropped silently: a field of the
//! wrong length, a number out of range (serde refuses it) or a non-zero
//! byte the JSON cannot carry is refused, naming the field.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Size of an attestation report in bytes.
pub const REPORT_LEN: usize = 0x4A0;

/// Where one field of the JSON lives in the raw report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// The name in Trustee's JSON (`signature.r` for a nested one).
    pub name: &'static str,
    /// Byte offset in the report.
    pub offset: usize,
    /// Length in bytes.
    pub len: usize,
    /// The first report version that has the field (0: every version).
    pub since: u32,
}

impl Field {
    const fn new(name: &'static str, offset: usize, len: usize, since: u32) -> Self {
        Field {
            name,
            offset,
            len,
            since,
        }
    }

    /// The field's bytes in the report.
    pub fn range(self) -> Range<usize> {
        self.offset..self.offset + self.len
    }

    /// Whether a report of `version` has this field.
    pub fn in_version(self, version: u32) -> bool {
        version >= self.since
    }
}

/// The fields of the report, one constant each (offsets from the SNP
/// firmware ABI). Little-endian numbers; TCB versions are 8 bytes whose
/// layout depends on the processor generation; firmware versions are 3
/// bytes `build, minor, major`; signature components are 72 bytes,
/// little-endian, as the report holds them.
pub mod field {
    use super::Field;

    /// VERSION (u32).
    pub const VERSION: Field = Field::new("version", 0x00, 4, 0);
    /// GUEST_SVN (u32).
    pub const GUEST_SVN: Field = Field::new("guest_svn", 0x04, 4, 0);
    /// POLICY (u64).
    pub const POLICY: Field = Field::new("policy", 0x08, 8, 0);
    /// FAMILY_ID.
    pub const FAMILY_ID: Field = Field::new("family_id", 0x10, 16, 0);
    /// IMAGE_ID.
    pub const IMAGE_ID: Field = Field::new("image_id", 0x20, 16, 0);
    /// VMPL (u32).
    pub const VMPL: Field = Field::new("vmpl", 0x30, 4, 0);
    /// SIGNATURE_ALGO (u32).
    pub const SIG_ALGO: Field = Field::new("sig_algo", 0x34, 4, 0);
    /// CURRENT_TCB.
    pub const CURRENT_TCB: Field = Field::new("current_tcb", 0x38, 8, 0);
    /// PLATFORM_INFO (u64).
    pub const PLAT_INFO: Field = Field::new("plat_info", 0x40, 8, 0);
    /// KEY_INFO (u32; the ABI's AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY).
    pub const KEY_INFO: Field = Field::new("key_info", 0x48, 4, 0);
    /// REPORT_DATA.
    pub const REPORT_DATA: Field = Field::new("report_data", 0x50, 64, 0);
    /// MEASUREMENT.
    pub const MEASUREMENT: Field = Field::new("measurement", 0x90, 48, 0);
    /// HOST_DATA.
    pub const HOST_DATA: Field = Field::new("host_data", 0xC0, 32, 0);
    /// ID_KEY_DIGEST.
    pub const ID_KEY_DIGEST: Field = Field::new("id_key_digest", 0xE0, 48, 0);
    /// AUTHOR_KEY_DIGEST.
    pub const AUTHOR_KEY_DIGEST: Field = Field::new("author_key_digest", 0x110, 48, 0);
    /// REPORT_ID.
    pub const REPORT_ID: Field = Field::new("report_id", 0x140, 32, 0);
    /// REPORT_ID_MA.
    pub const REPORT_ID_MA: Field = Field::new("report_id_ma", 0x160, 32, 0);
    /// REPORTED_TCB.
    pub const REPORTED_TCB: Field = Field::new("reported_tcb", 0x180, 8, 0);
    /// CPUID_FAM_ID (version 3 and later).
    pub const CPUID_FAM_ID: Field = Field::new("cpuid_fam_id", 0x188, 1, 3);
    /// CPUID_MOD_ID (version 3 and later).
    pub const CPUID_MOD_ID: Field = Field::new("cpuid_mod_id", 0x189, 1, 3);
    /// CPUID_STEP (version 3 and later).
    pub const CPUID_STEP: Field = Field::new("cpuid_step", 0x18A, 1, 3);
    /// CHIP_ID.
    pub const CHIP_ID: Field = Field::new("chip_id", 0x1A0, 64, 0);
    /// COMMITTED_TCB.
    pub const COMMITTED_TCB: Field = Field::new("committed_tcb", 0x1E0, 8, 0);
    /// CURRENT_BUILD, CURRENT_MINOR, CURRENT_MAJOR.
    pub const CURRENT: Field = Field::new("current", 0x1E8, 3, 0);
    /// COMMITTED_BUILD, COMMITTED_MINOR, COMMITTED_MAJOR.
    pub const COMMITTED: Field = Field::new("committed", 0x1EC, 3, 0);
    /// LAUNCH_TCB.
    pub const LAUNCH_TCB: Field = Field::new("launch_tcb", 0x1F0, 8, 0);
    /// LAUNCH_MIT_VECTOR (u64, version 5 and later).
    pub const LAUNCH_MIT_VECTOR: Field = Field::new("launch_mit_vector", 0x1F8, 8, 5);
    /// CURRENT_MIT_VECTOR (u64, version 5 and later).
    pub const CURRENT_MIT_VECTOR: Field = Field::new("current_mit_vector", 0x200, 8, 5);
    /// SIGNATURE R component.
    pub const SIGNATURE_R: Field = Field::new("signature.r", 0x2A0, 72, 0);
    /// SIGNATURE S component.
    pub const SIGNATURE_S: Field = Field::new("signature.s", 0x2E8, 72, 0);
}

/// Every field, in report order. Bytes outside these (of the report's
/// version) are reserved: zero in a report, absent from the JSON.
pub const LAYOUT: [Field; 30] = [
    field::VERSION,
    field::GUEST_SVN,
    field::POLICY,
    field::FAMILY_ID,
    field::IMAGE_ID,
    field::VMPL,
    field::SIG_ALGO,
    field::CURRENT_TCB,
    field::PLAT_INFO,
    field::KEY_INFO,
    field::REPORT_DATA,
    field::MEASUREMENT,
    field::HOST_DATA,
    field::ID_KEY_DIGEST,
    field::AUTHOR_KEY_DIGEST,
    field::REPORT_ID,
    field::REPORT_ID_MA,
    field::REPORTED_TCB,
    field::CPUID_FAM_ID,
    field::CPUID_MOD_ID,
    field::CPUID_STEP,
    field::CHIP_ID,
    field::COMMITTED_TCB,
    field::CURRENT,
    field::COMMITTED,
    field::LAUNCH_TCB,
    field::LAUNCH_MIT_VECTOR,
    field::CURRENT_MIT_VECTOR,
    field::SIGNATURE_R,
    field::SIGNATURE_S,
];

/// The report versions whose layout [`LAYOUT`] describes.
pub const VERSIONS: std::ops::RangeInclusive<u32> = 2..=5;

/// Why evidence cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnpEvidenceError {
    /// The raw report is not [`REPORT_LEN`] bytes.
    #[error("SNP report is {found} bytes, expected {REPORT_LEN}")]
    ReportLength {
        /// Bytes given.
        found: usize,
    },
    /// A report version whose layout is not known.
    #[error("version: SNP report version {0} is not one whose layout is known (2 to 5)")]
    Version(u32),
    /// A byte string of the wrong length.
    #[error("{field}: {found} bytes, expected {expected}")]
    FieldLength {
        /// The field.
        field: &'static str,
        /// Bytes given.
        found: usize,
        /// Bytes the report holds.
        expected: usize,
    },
    /// A field given for a report version that does not have it.
    #[error(
        "{field}: given for a version {version} report, but only version {since} and later have it"
    )]
    NotInVersion {
        /// The field.
        field: &'static str,
        /// The report's version.
        version: u32,
        /// The first version with the field.
        since: u32,
    },
    /// Reserved bytes are not zero: the JSON cannot carry them, so the
    /// verifier could not rebuild the signed report.
    #[error("{what} (bytes {start:#x}..{end:#x}) are not zero: Trustee's SNP evidence JSON cannot carry them")]
    Reserved {
        /// Which bytes (e.g. `reserved bytes after cpuid_step`).
        what: String,
        /// First offset of the reserved range.
        start: usize,
        /// End of the reserved range (exclusive).
        end: usize,
    },
    /// The CPUID family names no generation whose TCB layout is known.
    #[error("cpuid_fam_id: family {0:#x} has no known TCB layout (expected 0x19 Milan/Genoa or 0x1a Turin/Venice)")]
    Family(u8),
    /// The certificate table (configfs-tsm `auxblob`) is malformed.
    #[error("certificate table: {0}")]
    CertTable(String),
}

/// A TCB_VERSION: the security patch levels (`fmc` only on Turin and
/// later, `null` before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcbVersion {
    /// FMC SPL (Turin and later).
    #[serde(default)]
    pub fmc: Option<u8>,
    /// Boot loader SPL.
    pub bootloader: u8,
    /// PSP OS (TEE) SPL.
    pub tee: u8,
    /// SNP firmware SPL.
    pub snp: u8,
    /// Microcode SPL.
    pub microcode: u8,
}

/// Which TCB_VERSION layout a report uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcbLayout {
    /// Milan and Genoa: `bootloader, tee, 0, 0, 0, 0, snp, microcode`.
    Legacy,
    /// Turin and later: `fmc, bootloader, tee, snp, 0, 0, 0, microcode`.
    Turin,
}

impl TcbVersion {
    /// The 8 raw bytes: the Turin layout when `fmc` is present.
    pub fn to_raw(self) -> [u8; 8] {
        match self.fmc {
            Some(fmc) => [
                fmc,
                self.bootloader,
                self.tee,
                self.snp,
                0,
                0,
                0,
                self.microcode,
            ],
            None => [
                self.bootloader,
                self.tee,
                0,
                0,
                0,
                0,
                self.snp,
                self.microcode,
            ],
        }
    }

    fn from_raw(b: &[u8], layout: TcbLayout, f: Field) -> Result<Self, SnpEvidenceError> {
        let (tcb, reserved) = match layout {
            TcbLayout::Legacy => (
                TcbVersion {
                    fmc: None,
                    bootloader: b[0],
                    tee: b[1],
                    snp: b[6],
                    microcode: b[7],
                },
                2..6,
            ),
            TcbLayout::Turin => (
                TcbVersion {
                    fmc: Some(b[0]),
                    bootloader: b[1],
                    tee: b[2],
                    snp: b[3],
                    microcode: b[7],
                },
                4..7,
            ),
        };
        if b[reserved.clone()].iter().any(|&x| x != 0) {
            return Err(SnpEvidenceError::Reserved {
                what: format!("{} reserved bytes", f.name),
                start: f.offset + reserved.start,
                end: f.offset + reserved.end,
            });
        }
        Ok(tcb)
    }
}

/// A firmware version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build.
    pub build: u8,
}

/// The report signature: R and S, 72 bytes each, little-endian as in the
/// report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// R.
    pub r: Vec<u8>,
    /// S.
    pub s: Vec<u8>,
}

/// `attestation_report`: the report's fields, typed. Deserializing refuses
/// a number out of range or a missing field by name; [`to_raw`](Self::to_raw)
/// refuses byte strings of the wrong length by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationReport {
    /// Report format version.
    pub version: u32,
    /// Guest SVN.
    pub guest_svn: u32,
    /// Guest policy.
    pub policy: u64,
    /// Family ID (16 bytes).
    pub family_id: Vec<u8>,
    /// Image ID (16 bytes).
    pub image_id: Vec<u8>,
    /// VMPL of the request.
    pub vmpl: u32,
    /// Signature algorithm.
    pub sig_algo: u32,
    /// Current TCB.
    pub current_tcb: TcbVersion,
    /// PLATFORM_INFO.
    pub plat_info: u64,
    /// KEY_INFO.
    pub key_info: u32,
    /// REPORT_DATA (64 bytes).
    pub report_data: Vec<u8>,
    /// Launch measurement (48 bytes).
    pub measurement: Vec<u8>,
    /// HOST_DATA (32 bytes).
    pub host_data: Vec<u8>,
    /// ID key digest (48 bytes).
    pub id_key_digest: Vec<u8>,
    /// Author key digest (48 bytes).
    pub author_key_digest: Vec<u8>,
    /// Report ID (32 bytes).
    pub report_id: Vec<u8>,
    /// Migration agent report ID (32 bytes).
    pub report_id_ma: Vec<u8>,
    /// Reported TCB (the endorsement key's).
    pub reported_tcb: TcbVersion,
    /// CPUID family (version 3 and later).
    #[serde(default)]
    pub cpuid_fam_id: Option<u8>,
    /// CPUID model (version 3 and later).
    #[serde(default)]
    pub cpuid_mod_id: Option<u8>,
    /// CPUID stepping (version 3 and later).
    #[serde(default)]
    pub cpuid_step: Option<u8>,
    /// Chip ID (64 bytes, zero when masked).
    pub chip_id: Vec<u8>,
    /// Committed TCB.
    pub committed_tcb: TcbVersion,
    /// Current firmware version (zero when absent).
    #[serde(default)]
    pub current: Option<FirmwareVersion>,
    /// Committed firmware version (zero when absent).
    #[serde(default)]
    pub committed: Option<FirmwareVersion>,
    /// TCB at launch.
    pub launch_tcb: TcbVersion,
    /// Launch mitigation vector (version 5 and later).
    #[serde(default)]
    pub launch_mit_vector: Option<u64>,
    /// Current mitigation vector (version 5 and later).
    #[serde(default)]
    pub current_mit_vector: Option<u64>,
    /// The signature.
    pub signature: Signature,
}

fn le<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(b);
    out
}

/// Refuses the first reserved range (bytes outside the fields a report of
/// `version` has) that is not all zero.
fn check_reserved(raw: &[u8], version: u32) -> Result<(), SnpEvidenceError> {
    let mut pos = 0;
    let mut after = "version";
    let fields = LAYOUT.iter().filter(|f| f.in_version(version));
    let ends = fields
        .map(|f| (f.offset, f.offset + f.len, f.name))
        .chain(std::iter::once((REPORT_LEN, REPORT_LEN, "")));
    for (start, end, name) in ends {
        if raw[pos..start].iter().any(|&x| x != 0) {
            return Err(SnpEvidenceError::Reserved {
                what: format!("reserved bytes after {after}"),
                start: pos,
                end: start,
            });
        }
        pos = end;
        after = name;
    }
    Ok(())
}

/// The TCB layout of a report: by CPUID family from version 3; a version 2
/// report has no CPUID, and, as the `sev` crate does, it is taken as Turin
/// when only the first 8 bytes of its chip ID are non-zero (Turin's hwID
/// is 8 bytes).
fn tcb_layout(raw: &[u8], version: u32) -> Result<TcbLayout, SnpEvidenceError> {
    if field::CPUID_FAM_ID.in_version(version) {
        match raw[field::CPUID_FAM_ID.offset] {
            0x19 => Ok(TcbLayout::Legacy),
            0x1A => Ok(TcbLayout::Turin),
            f => Err(SnpEvidenceError::Family(f)),
        }
    } else {
        let chip = &raw[field::CHIP_ID.range()];
        let turin = chip[..8].iter().any(|&x| x != 0) && chip[8..].iter().all(|&x| x == 0);
        Ok(if turin {
            TcbLayout::Turin
        } else {
            TcbLayout::Legacy
        })
    }
}

impl AttestationReport {
    /// The fields of a raw report. Refused: a length other than
    /// [`REPORT_LEN`], a version outside [`VERSIONS`], a CPUID family
    /// without a known TCB layout, and non-zero reserved bytes (the JSON
    /// could not carry them).
    pub fn from_raw(raw: &[u8]) -> Result<Self, SnpEvidenceError> {
        use field as f;
        if raw.len() != REPORT_LEN {
            return Err(SnpEvidenceError::ReportLength { found: raw.len() });
        }
        let get = |fd: Field| &raw[fd.range()];
        let u32_of = |fd: Field| u32::from_le_bytes(le(get(fd)));
        let u64_of = |fd: Field| u64::from_le_bytes(le(get(fd)));
        let version = u32_of(f::VERSION);
        if !VERSIONS.contains(&version) {
            return Err(SnpEvidenceError::Version(version));
        }
        check_reserved(raw, version)?;
        let layout = tcb_layout(raw, version)?;
        let tcb = |fd: Field| TcbVersion::from_raw(get(fd), layout, fd);
        let byte_since = |fd: Field| fd.in_version(version).then(|| get(fd)[0]);
        let u64_since = |fd: Field| fd.in_version(version).then(|| u64_of(fd));
        let fw = |fd: Field| {
            let b = get(fd);
            FirmwareVersion {
                major: b[2],
                minor: b[1],
                build: b[0],
            }
        };
        Ok(AttestationReport {
            version,
            guest_svn: u32_of(f::GUEST_SVN),
            policy: u64_of(f::POLICY),
            family_id: get(f::FAMILY_ID).to_vec(),
            image_id: get(f::IMAGE_ID).to_vec(),
            vmpl: u32_of(f::VMPL),
            sig_algo: u32_of(f::SIG_ALGO),
            current_tcb: tcb(f::CURRENT_TCB)?,
            plat_info: u64_of(f::PLAT_INFO),
            key_info: u32_of(f::KEY_INFO),
            report_data: get(f::REPORT_DATA).to_vec(),
            measurement: get(f::MEASUREMENT).to_vec(),
            host_data: get(f::HOST_DATA).to_vec(),
            id_key_digest: get(f::ID_KEY_DIGEST).to_vec(),
            author_key_digest: get(f::AUTHOR_KEY_DIGEST).to_vec(),
            report_id: get(f::REPORT_ID).to_vec(),
            report_id_ma: get(f::REPORT_ID_MA).to_vec(),
            reported_tcb: tcb(f::REPORTED_TCB)?,
            cpuid_fam_id: byte_since(f::CPUID_FAM_ID),
            cpuid_mod_id: byte_since(f::CPUID_MOD_ID),
            cpuid_step: byte_since(f::CPUID_STEP),
            chip_id: get(f::CHIP_ID).to_vec(),
            committed_tcb: tcb(f::COMMITTED_TCB)?,
            current: Some(fw(f::CURRENT)),
            committed: Some(fw(f::COMMITTED)),
            launch_tcb: tcb(f::LAUNCH_TCB)?,
            launch_mit_vector: u64_since(f::LAUNCH_MIT_VECTOR),
            current_mit_vector: u64_since(f::CURRENT_MIT_VECTOR),
            signature: Signature {
                r: get(f::SIGNATURE_R).to_vec(),
                s: get(f::SIGNATURE_S).to_vec(),
            },
        })
    }

    /// The raw report these fields describe, laid out per [`LAYOUT`];
    /// reserved bytes are zero. Refused, naming the field: a byte string of
    /// the wrong length, and a field given for a report version that does
    /// not have it (CPUID before 3, mitigation vectors before 5). The
    /// version itself is not judged here (the report parser does).
    pub fn to_raw(&self) -> Result<Vec<u8>, SnpEvidenceError> {
        use field as f;
        let version = self.version;
        let mut b = vec![0u8; REPORT_LEN];
        let mut put = |fd: Field, src: &[u8]| -> Result<(), SnpEvidenceError> {
            if src.len() != fd.len {
                return Err(SnpEvidenceError::FieldLength {
                    field: fd.name,
                    found: src.len(),
                    expected: fd.len,
                });
            }
            b[fd.range()].copy_from_slice(src);
            Ok(())
        };
        let since = |fd: Field, given: bool| -> Result<(), SnpEvidenceError> {
            if given && !fd.in_version(version) {
                return Err(SnpEvidenceError::NotInVersion {
                    field: fd.name,
                    version,
                    since: fd.since,
                });
            }
            Ok(())
        };
        put(f::VERSION, &version.to_le_bytes())?;
        put(f::GUEST_SVN, &self.guest_svn.to_le_bytes())?;
        put(f::POLICY, &self.policy.to_le_bytes())?;
        put(f::FAMILY_ID, &self.family_id)?;
        put(f::IMAGE_ID, &self.image_id)?;
        put(f::VMPL, &self.vmpl.to_le_bytes())?;
        put(f::SIG_ALGO, &self.sig_algo.to_le_bytes())?;
        put(f::CURRENT_TCB, &self.current_tcb.to_raw())?;
        put(f::PLAT_INFO, &self.plat_info.to_le_bytes())?;
        put(f::KEY_INFO, &self.key_info.to_le_bytes())?;
        put(f::REPORT_DATA, &self.report_data)?;
        put(f::MEASUREMENT, &self.measurement)?;
        put(f::HOST_DATA, &self.host_data)?;
        put(f::ID_KEY_DIGEST, &self.id_key_digest)?;
        put(f::AUTHOR_KEY_DIGEST, &self.author_key_digest)?;
        put(f::REPORT_ID, &self.report_id)?;
        put(f::REPORT_ID_MA, &self.report_id_ma)?;
        put(f::REPORTED_TCB, &self.reported_tcb.to_raw())?;
        for (fd, v) in [
            (f::CPUID_FAM_ID, self.cpuid_fam_id),
            (f::CPUID_MOD_ID, self.cpuid_mod_id),
            (f::CPUID_STEP, self.cpuid_step),
        ] {
            since(fd, v.is_some())?;
            put(fd, &[v.unwrap_or(0)])?;
        }
        put(f::CHIP_ID, &self.chip_id)?;
        put(f::COMMITTED_TCB, &self.committed_tcb.to_raw())?;
        for (fd, v) in [(f::CURRENT, self.current), (f::COMMITTED, self.committed)] {
            let v = v.map_or([0; 3], |v| [v.build, v.minor, v.major]);
            put(fd, &v)?;
        }
        put(f::LAUNCH_TCB, &self.launch_tcb.to_raw())?;
        for (fd, v) in [
            (f::LAUNCH_MIT_VECTOR, self.launch_mit_vector),
            (f::CURRENT_MIT_VECTOR, self.current_mit_vector),
        ] {
            since(fd, v.is_some())?;
            put(fd, &v.unwrap_or(0).to_le_bytes())?;
        }
        put(f::SIGNATURE_R, &self.signature.r)?;
        put(f::SIGNATURE_S, &self.signature.s)?;
        Ok(b)
    }
}

/// The kind of a certificate, as the `sev` crate names it in JSON
/// (`"VCEK"`, …; an unknown GUID as `{"OTHER": "<guid>"}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertType {
    /// An empty (closing) entry.
    Empty,
    /// AMD Root Key.
    #[serde(rename = "ARK")]
    Ark,
    /// AMD SEV Key (the VCEK's issuer).
    #[serde(rename = "ASK")]
    Ask,
    /// Versioned Chip Endorsement Key.
    #[serde(rename = "VCEK")]
    Vcek,
    /// Versioned Loaded Endorsement Key.
    #[serde(rename = "VLEK")]
    Vlek,
    /// Certificate revocation list.
    #[serde(rename = "CRL")]
    Crl,
    /// Another GUID.
    #[serde(rename = "OTHER")]
    Other(String),
}

impl CertType {
    /// The GUID of a certificate table entry of this kind (GHCB spec,
    /// "SNP Extended Guest Request": certificate table GUIDs).
    pub fn guid(&self) -> &str {
        match self {
            CertType::Empty => "00000000-0000-0000-0000-000000000000",
            CertType::Ark => GUID_ARK,
            CertType::Ask => GUID_ASK,
            CertType::Vcek => GUID_VCEK,
            CertType::Vlek => GUID_VLEK,
            CertType::Crl => GUID_CRL,
            CertType::Other(g) => g,
        }
    }
}

const GUID_VCEK: &str = "63da758d-e664-4564-adc5-f4b93be8accd";
const GUID_VLEK: &str = "a8074bc2-a25a-483e-aae6-39c045a0b8a1";
const GUID_ASK: &str = "4ab7b379-bbac-4fe4-a02f-05aef327c782";
const GUID_ARK: &str = "c0b406a4-a803-4952-9743-3fb6014cd0ae";
const GUID_CRL: &str = "92f81bc3-5811-4d3d-97ff-d19f88dc67ea";

/// One certificate of `cert_chain`: its kind and DER bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertTableEntry {
    /// The kind.
    pub cert_type: CertType,
    /// DER bytes.
    pub data: Vec<u8>,
}

/// A GUID as text; the first three fields are stored little-endian.
fn guid_string(b: &[u8]) -> String {
    let hex = |r: &[u8]| r.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}-{}",
        b[3],
        b[2],
        b[1],
        b[0],
        b[5],
        b[4],
        b[7],
        b[6],
        hex(&b[8..10]),
        hex(&b[10..16])
    )
}

/// Parses the certificate table of an extended report (the configfs-tsm
/// `auxblob`): 24-byte entries `{GUID, offset u32, length u32}` ended by an
/// all-zero entry, offsets relative to the table start. Returns the
/// endorsement certificates found (VCEK, VLEK, ASK, ARK), in table order;
/// entries of other GUIDs (CRLs, vendor data) are skipped.
pub fn parse_cert_table(table: &[u8]) -> Result<Vec<CertTableEntry>, SnpEvidenceError> {
    let bad = SnpEvidenceError::CertTable;
    let mut out = Vec::new();
    let mut pos = 0usize;
    loop {
        let e = table.get(pos..pos + 24).ok_or_else(|| {
            bad(format!(
                "entry at {pos} is truncated (no all-zero terminator)"
            ))
        })?;
        if e.iter().all(|&b| b == 0) {
            break;
        }
        let guid = guid_string(&e[..16]);
        let off = u32::from_le_bytes(le(&e[16..20])) as usize;
        let len = u32::from_le_bytes(le(&e[20..24])) as usize;
        let data = off
            .checked_add(len)
            .and_then(|end| table.get(off..end))
            .ok_or_else(|| {
                bad(format!(
                    "entry {guid} at {off}+{len} is outside the {}-byte table",
                    table.len()
                ))
            })?;
        let cert_type = match guid.as_str() {
            GUID_VCEK => Some(CertType::Vcek),
            GUID_VLEK => Some(CertType::Vlek),
            GUID_ASK => Some(CertType::Ask),
            GUID_ARK => Some(CertType::Ark),
            _ => None,
        };
        if let Some(cert_type) = cert_type {
            out.push(CertTableEntry {
                cert_type,
                data: data.to_vec(),
            });
        }
        pos += 24;
    }
    Ok(out)
}

/// Trustee's SNP evidence: the report's fields and, when the guest has
/// them, the endorsement certificates (`null` otherwise: the verifier then
/// needs the VCEK from elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnpEvidence {
    /// The report.
    pub attestation_report: AttestationReport,
    /// The certificates, or `null`.
    #[serde(default)]
    pub cert_chain: Option<Vec<CertTableEntry>>,
}

impl SnpEvidence {
    /// The evidence for a raw report (see [`AttestationReport::from_raw`])
    /// and the certificates the guest has, if any.
    pub fn from_raw(
        report: &[u8],
        cert_chain: Option<Vec<CertTableEntry>>,
    ) -> Result<Self, SnpEvidenceError> {
        Ok(SnpEvidence {
            attestation_report: AttestationReport::from_raw(report)?,
            cert_chain,
        })
    }

    /// The raw report (see [`AttestationReport::to_raw`]) and the DER
    /// bytes of every certificate given (none for `null`).
    pub fn to_raw(&self) -> Result<(Vec<u8>, Vec<Vec<u8>>), SnpEvidenceError> {
        let report = self.attestation_report.to_raw()?;
        let certs = self
            .cert_chain
            .iter()
            .flatten()
            .map(|c| c.data.clone())
            .collect();
        Ok((report, certs))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A vector of attestation/testdata/snp (provenance in its SOURCES.md).
    fn vector(name: &str) -> Vec<u8> {
        let p = format!(
            "{}/../../attestation/testdata/snp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// The raw reports among the vectors: v2 Milan (VCEK), v3 Milan (VLEK),
    /// v2 Milan (virtee).
    const RAW_REPORTS: [&str; 3] = [
        "trustee-test-report.bin",
        "trustee-test-vlek-report.bin",
        "virtee-sev-report_milan.bin",
    ];

    fn trustee_json() -> serde_json::Value {
        serde_json::from_slice(&vector("trustee-as-e2e-snp-evidence.json")).unwrap()
    }

    fn refused(v: serde_json::Value) -> SnpEvidenceError {
        serde_json::from_value::<SnpEvidence>(v)
            .unwrap()
            .to_raw()
            .unwrap_err()
    }

    #[test]
    fn layout_is_ordered_disjoint_and_inside_the_report() {
        let mut end = 0;
        for f in LAYOUT {
            assert!(f.offset >= end, "{} overlaps the field before it", f.name);
            end = f.offset + f.len;
        }
        assert!(end <= REPORT_LEN);
        // The signed part ends where the signature starts (SNP ABI).
        assert_eq!(field::SIGNATURE_R.offset, 0x2A0);
        assert_eq!(field::SIGNATURE_S.offset, 0x2A0 + 72);
    }

    #[test]
    fn real_reports_round_trip_byte_identical_through_json() {
        for name in RAW_REPORTS {
            let raw = vector(name);
            let ev = SnpEvidence::from_raw(&raw, None).unwrap();
            let json = serde_json::to_vec(&ev).unwrap();
            let back: SnpEvidence = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, ev, "{name}");
            let (report, certs) = back.to_raw().unwrap();
            assert!(report == raw, "{name}: the rebuilt report differs");
            assert!(certs.is_empty());
        }
        // Spot values (SOURCES.md): the v2 report has no CPUID, the v3 one does.
        let v2 = AttestationReport::from_raw(&vector("trustee-test-report.bin")).unwrap();
        assert_eq!((v2.version, v2.guest_svn, v2.policy), (2, 4, 0x3001f));
        assert_eq!(v2.cpuid_fam_id, None);
        let t = v2.reported_tcb;
        assert_eq!(
            (t.fmc, t.bootloader, t.tee, t.snp, t.microcode),
            (None, 3, 0, 8, 115)
        );
        let v3 = AttestationReport::from_raw(&vector("trustee-test-vlek-report.bin")).unwrap();
        assert_eq!(
            (v3.version, v3.vmpl, v3.cpuid_fam_id, v3.cpuid_mod_id),
            (3, 1, Some(0x19), Some(0x01))
        );
        assert_eq!(v3.launch_mit_vector, None);
    }

    #[test]
    fn trustee_evidence_json_rebuilds_and_reserializes_identically() {
        let text = trustee_json();
        let ev: SnpEvidence = serde_json::from_value(text.clone()).unwrap();
        let (report, certs) = ev.to_raw().unwrap();
        assert_eq!(report.len(), REPORT_LEN);
        assert_eq!(certs.len(), 1);
        assert_eq!(
            &report[field::MEASUREMENT.range()][..4],
            &[0x6a, 0x65, 0x19, 0xd7]
        );
        // Back to JSON: the same document Trustee's attester wrote, field
        // for field (the `sev` crate's serde shape), and the same bytes again.
        // The vector predates the v5 mitigation vectors; a v3 report has
        // none, which the current `sev` crate writes as null.
        let again = SnpEvidence::from_raw(&report, ev.cert_chain.clone()).unwrap();
        assert_eq!(again, ev);
        let mut json = serde_json::to_value(&again).unwrap();
        for k in ["launch_mit_vector", "current_mit_vector"] {
            let r = json["attestation_report"].as_object_mut().unwrap();
            assert_eq!(r.remove(k), Some(serde_json::Value::Null), "{k}");
        }
        assert!(json == text, "the JSON differs from the vector");
        assert!(again.to_raw().unwrap().0 == report);
    }

    #[test]
    fn a_wrong_length_field_is_refused_naming_it() {
        let mut v = trustee_json();
        v["attestation_report"]["measurement"] = serde_json::json!([1, 2, 3]);
        let e = refused(v);
        assert_eq!(
            e,
            SnpEvidenceError::FieldLength {
                field: "measurement",
                found: 3,
                expected: 48
            }
        );
        assert_eq!(e.to_string(), "measurement: 3 bytes, expected 48");
        let mut v = trustee_json();
        v["attestation_report"]["signature"]["s"] = serde_json::json!(vec![0u8; 48]);
        assert!(refused(v).to_string().starts_with("signature.s: 48 bytes"));
        let mut v = trustee_json();
        v["attestation_report"]["chip_id"] = serde_json::json!(vec![0u8; 65]);
        assert!(refused(v).to_string().starts_with("chip_id: 65 bytes"));
        // Raw reports of the wrong length are refused too.
        let raw = vector("trustee-test-report.bin");
        assert_eq!(
            AttestationReport::from_raw(&raw[..REPORT_LEN - 1]),
            Err(SnpEvidenceError::ReportLength {
                found: REPORT_LEN - 1
            })
        );
    }

    #[test]
    fn out_of_range_numbers_and_missing_fields_are_refused_by_serde() {
        let mut v = trustee_json();
        v["attestation_report"]["reported_tcb"]["snp"] = serde_json::json!(256);
        let e = serde_json::from_value::<SnpEvidence>(v).unwrap_err();
        assert!(e.to_string().contains("256"), "{e}");
        let mut v = trustee_json();
        v["attestation_report"]["launch_tcb"]
            .as_object_mut()
            .unwrap()
            .remove("microcode");
        let e = serde_json::from_value::<SnpEvidence>(v).unwrap_err();
        assert!(e.to_string().contains("microcode"), "{e}");
    }

    #[test]
    fn fields_a_version_lacks_are_refused() {
        let mut v = trustee_json();
        v["attestation_report"]["version"] = serde_json::json!(2);
        assert_eq!(
            refused(v).to_string(),
            "cpuid_fam_id: given for a version 2 report, but only version 3 and later have it"
        );
        let mut v = trustee_json();
        v["attestation_report"]["current_mit_vector"] = serde_json::json!(1);
        assert!(refused(v).to_string().starts_with("current_mit_vector:"));
    }

    #[test]
    fn bytes_the_json_cannot_carry_are_refused() {
        let raw = vector("trustee-test-vlek-report.bin");
        let edit = |at: usize, x: u8| {
            let mut r = raw.clone();
            r[at] = x;
            AttestationReport::from_raw(&r).unwrap_err().to_string()
        };
        // Reserved after the CPUID bytes (v3), inside a TCB, after the signature.
        let e = edit(0x18B, 1);
        assert!(
            e.starts_with("reserved bytes after cpuid_step (bytes 0x18b..0x1a0)"),
            "{e}"
        );
        let e = edit(0x180 + 3, 1);
        assert!(
            e.starts_with("reported_tcb reserved bytes (bytes 0x182..0x186)"),
            "{e}"
        );
        let e = edit(0x400, 1);
        assert!(e.starts_with("reserved bytes after signature.s"), "{e}");
        // A v2 report has no CPUID: those bytes are reserved there.
        let mut v2 = vector("trustee-test-report.bin");
        v2[0x188] = 0x19;
        let e = AttestationReport::from_raw(&v2).unwrap_err().to_string();
        assert!(e.starts_with("reserved bytes after reported_tcb"), "{e}");
        // Unknown versions and families have no known layout.
        assert_eq!(
            edit(0, 6),
            "version: SNP report version 6 is not one whose layout is known (2 to 5)"
        );
        assert!(edit(0x188, 0x17).starts_with("cpuid_fam_id: family 0x17"));
    }

    #[test]
    fn turin_reports_use_the_turin_tcb_layout() {
        let mut v = trustee_json();
        let r = &mut v["attestation_report"];
        r["cpuid_fam_id"] = serde_json::json!(0x1A);
        r["cpuid_mod_id"] = serde_json::json!(0x02);
        for (i, k) in ["current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"]
            .into_iter()
            .enumerate()
        {
            r[k] =
                serde_json::json!({"fmc": i, "bootloader": 2, "tee": 3, "snp": 4, "microcode": 9});
        }
        let ev: SnpEvidence = serde_json::from_value(v).unwrap();
        let (raw, _) = ev.to_raw().unwrap();
        assert_eq!(&raw[field::REPORTED_TCB.range()], &[1, 2, 3, 4, 0, 0, 0, 9]);
        assert_eq!(
            SnpEvidence::from_raw(&raw, ev.cert_chain.clone()).unwrap(),
            ev
        );
        // A Milan/Genoa report reads the same bytes in the legacy layout.
        let mut genoa = raw.clone();
        genoa[field::CPUID_FAM_ID.offset] = 0x19;
        let e = AttestationReport::from_raw(&genoa).unwrap_err().to_string();
        assert!(e.starts_with("current_tcb reserved bytes"), "{e}");
    }

    #[test]
    fn cert_table_entries_get_their_trustee_names() {
        let vcek = vector("trustee-test-vcek.der");
        let ask = b"ask DER".to_vec();
        let crl = b"crl".to_vec();
        // GUIDs as stored (first three fields little-endian).
        let guid = |s: &str| {
            let s = s.replace('-', "");
            let h: Vec<u8> = (0..16)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            let mut g = [h[3], h[2], h[1], h[0], h[5], h[4], h[7], h[6]].to_vec();
            g.extend_from_slice(&h[8..16]);
            g
        };
        let entries = [(GUID_VCEK, &vcek), (GUID_CRL, &crl), (GUID_ASK, &ask)];
        let mut table = Vec::new();
        let mut off = 24 * (entries.len() + 1);
        for (g, data) in entries {
            table.extend(guid(g));
            table.extend((off as u32).to_le_bytes());
            table.extend((data.len() as u32).to_le_bytes());
            off += data.len();
        }
        table.extend([0u8; 24]);
        for (_, data) in entries {
            table.extend_from_slice(data);
        }
        let got = parse_cert_table(&table).unwrap();
        assert_eq!(
            got,
            [
                CertTableEntry {
                    cert_type: CertType::Vcek,
                    data: vcek.clone()
                },
                CertTableEntry {
                    cert_type: CertType::Ask,
                    data: ask
                }
            ]
        );
        assert_eq!(
            serde_json::to_value(&got[0]).unwrap()["cert_type"],
            serde_json::json!("VCEK")
        );
        assert_eq!(got[1].cert_type.guid(), GUID_ASK);
        // Truncated, or pointing outside the table.
        let mut cut = table[..30].to_vec();
        cut[16..24].copy_from_slice(&[0, 0, 0, 0, 24, 0, 0, 0]);
        let e = parse_cert_table(&cut).unwrap_err().to_string();
        assert_eq!(
            e,
            "certificate table: entry at 24 is truncated (no all-zero terminator)"
        );
        let mut bad = table.clone();
        bad[20..24].copy_from_slice(&100_000u32.to_le_bytes());
        let e = parse_cert_table(&bad).unwrap_err().to_string();
        assert!(
            e.contains(&format!("entry {GUID_VCEK} at 96+100000")),
            "{e}"
        );
    }

    #[test]
    fn cert_chain_null_and_other_guids_in_json() {
        let ev = SnpEvidence::from_raw(&vector("trustee-test-report.bin"), None).unwrap();
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["cert_chain"], serde_json::Value::Null);
        let mut v = trustee_json();
        v.as_object_mut().unwrap().remove("cert_chain");
        let ev: SnpEvidence = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(ev.cert_chain, None);
        // The sev crate's form of an unknown GUID.
        v["cert_chain"] = serde_json::json!([{"cert_type": {"OTHER": "01234567-0000-0000-0000-000000000000"}, "data": [1]}]);
        let ev: SnpEvidence = serde_json::from_value(v).unwrap();
        let chain = ev.cert_chain.unwrap();
        assert_eq!(
            chain[0].cert_type,
            CertType::Other("01234567-0000-0000-0000-000000000000".into())
        );
    }
}
