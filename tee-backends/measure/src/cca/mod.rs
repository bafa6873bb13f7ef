//! Arm CCA Realm Initial Measurement (RIM) and Realm Extensible Measurements
//! (REM), computed the way the Realm Management Monitor does.
//!
//! The RMM (DEN0137, 1.0-rel0) folds every measured RMI command into the RIM:
//!
//! * `RMI_REALM_CREATE`: `RIM = H(RmiRealmParams)` over the 4 KiB structure
//!   with every unmeasured field zeroed (flags, s2sz, sve_vl, num_bps,
//!   num_wps, pmu_num_ctrs, hash_algo are measured; RPV, VMID, RTT base …
//!   are not).
//! * `RMI_DATA_CREATE`: `RIM = H(RmmMeasurementDescriptorData)` — a 0x100
//!   byte descriptor {desc_type 0, len 0x100, RIM, IPA, flags, H(granule) or
//!   zero when the content is not measured}.
//! * `RMI_RTT_INIT_RIPAS`, once per RTT entry: `RIM =
//!   H(RmmMeasurementDescriptorRipas)` {desc_type 2, len, RIM, base, top}.
//!   RMM 2.0 no longer measures this command ([`RmmVersion::V2`]).
//! * `RMI_REC_CREATE` of a runnable REC: `RIM =
//!   H(RmmMeasurementDescriptorRec)` {desc_type 1, len, RIM, H(RmiRecParams
//!   with mpidr and aux zeroed)}. A REC created not runnable is not measured.
//!
//! `RSI_MEASUREMENT_EXTEND` updates a REM as `H(REM[0..hash_len] ‖ data)`.
//!
//! Registers are 64 bytes wide; SHA-256 results fill the first 32 bytes.
//! All integers are little-endian. The VMM-level layouts (where QEMU and
//! kvmtool put the kernel, initrd and DTB) live in [`vmm`].

pub mod vmm;

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// Size of a granule (the unit the RMM maps and measures).
pub const GRANULE_SIZE: u64 = 4096;
/// Width of a RIM/REM register in bytes.
pub const MEASUREMENT_WIDTH: usize = 64;
/// Size of the RMI parameter structures (`RmiRealmParams`, `RmiRecParams`).
const RMI_PARAMS_SIZE: usize = 4096;
/// Size of a measurement descriptor.
const DESCRIPTOR_SIZE: usize = 0x100;

/// Errors from the CCA calculators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CcaError {
    /// An address that must be granule-aligned is not.
    #[error("IPA {0:#x} is not aligned to the 4 KiB granule")]
    Unaligned(u64),
    /// A range is empty, inverted or overflows.
    #[error("invalid IPA range {base:#x}..{top:#x}: expected base < top, both granule-aligned")]
    Range {
        /// Range start.
        base: u64,
        /// Range end (exclusive).
        top: u64,
    },
    /// A granule passed to `data_create` is not exactly 4096 bytes.
    #[error("granule content is {0} bytes, expected 4096")]
    GranuleSize(usize),
    /// A realm parameter is outside what the RMM accepts.
    #[error("invalid realm parameter {name} = {value}: {expected}")]
    Param {
        /// Field name.
        name: &'static str,
        /// Value given.
        value: u64,
        /// What would be accepted.
        expected: &'static str,
    },
    /// The hash algorithm is not available in this RMM version.
    #[error("hash algorithm {algo} is not supported by RMM {version}")]
    AlgoVersion {
        /// Algorithm requested.
        algo: HashAlgo,
        /// RMM version targeted.
        version: RmmVersion,
    },
    /// A REM index outside 0..=3.
    #[error("REM index {0} out of range: expected 0..=3")]
    RemIndex(usize),
    /// RSI_MEASUREMENT_EXTEND data longer than 64 bytes.
    #[error("REM extension data is {0} bytes, expected at most 64")]
    RemDataSize(usize),
    /// Unknown hash algorithm name.
    #[error("unknown hash algorithm {0:?}: expected sha-256, sha-512 or sha-384")]
    UnknownAlgo(String),
    /// A measurement of the wrong width for its algorithm.
    #[error("measurement is {found} bytes, expected {expected} for {algo}")]
    MeasurementLength {
        /// Algorithm of the register.
        algo: HashAlgo,
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// A measurement is not hexadecimal.
    #[error("measurement is not hexadecimal: {0}")]
    NotHex(String),
}

/// The Realm hash algorithm (`RmiHashAlgorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgo {
    /// `RMI_HASH_SHA_256` (0).
    Sha256,
    /// `RMI_HASH_SHA_512` (1).
    Sha512,
    /// `RMI_HASH_SHA_384` (2), RMM 2.0 only.
    Sha384,
}

impl HashAlgo {
    /// The `RmiHashAlgorithm` encoding measured in `RmiRealmParams`.
    pub fn rmi_encoding(self) -> u8 {
        match self {
            HashAlgo::Sha256 => 0,
            HashAlgo::Sha512 => 1,
            HashAlgo::Sha384 => 2,
        }
    }

    /// Decode `RmiHashAlgorithm`.
    pub fn from_rmi_encoding(v: u8) -> Option<Self> {
        match v {
            0 => Some(HashAlgo::Sha256),
            1 => Some(HashAlgo::Sha512),
            2 => Some(HashAlgo::Sha384),
            _ => None,
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha384 => 48,
            HashAlgo::Sha512 => 64,
        }
    }

    /// Name as used in CCA tokens and CoRIM (`sha-256`, …).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Sha256 => "sha-256",
            HashAlgo::Sha384 => "sha-384",
            HashAlgo::Sha512 => "sha-512",
        }
    }

    /// Hash `data` into a 64-byte register (zero-padded for shorter digests).
    pub fn hash(self, data: &[u8]) -> [u8; MEASUREMENT_WIDTH] {
        self.hash_parts(&[data])
    }

    /// Hash the concatenation of `parts` into a 64-byte register.
    pub fn hash_parts(self, parts: &[&[u8]]) -> [u8; MEASUREMENT_WIDTH] {
        let mut out = [0u8; MEASUREMENT_WIDTH];
        match self {
            HashAlgo::Sha256 => {
                let mut h = sha2::Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                out[..32].copy_from_slice(&h.finalize());
            }
            HashAlgo::Sha384 => {
                let mut h = sha2::Sha384::new();
                parts.iter().for_each(|p| h.update(p));
                out[..48].copy_from_slice(&h.finalize());
            }
            HashAlgo::Sha512 => {
                let mut h = sha2::Sha512::new();
                parts.iter().for_each(|p| h.update(p));
                out.copy_from_slice(&h.finalize());
            }
        }
        out
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlgo {
    type Err = CcaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Ok(HashAlgo::Sha256),
            "sha512" | "sha-512" => Ok(HashAlgo::Sha512),
            "sha384" | "sha-384" => Ok(HashAlgo::Sha384),
            _ => Err(CcaError::UnknownAlgo(s.to_string())),
        }
    }
}

/// Which RMM measurement rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RmmVersion {
    /// RMM 1.0 (and 1.1): `RMI_RTT_INIT_RIPAS` is measured.
    #[default]
    V1,
    /// RMM 2.0: `RMI_RTT_INIT_RIPAS` is no longer measured; SHA-384 allowed.
    V2,
}

impl fmt::Display for RmmVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RmmVersion::V1 => "1.0",
            RmmVersion::V2 => "2.0",
        })
    }
}

/// A granule-aligned intermediate physical address (guest physical address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipa(u64);

impl Ipa {
    /// An aligned IPA, or [`CcaError::Unaligned`].
    pub fn new(addr: u64) -> Result<Self, CcaError> {
        if addr.is_multiple_of(GRANULE_SIZE) {
            Ok(Self(addr))
        } else {
            Err(CcaError::Unaligned(addr))
        }
    }

    /// The address.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Ipa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A RIM or REM value together with its algorithm.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealmMeasurement {
    algo: HashAlgo,
    register: [u8; MEASUREMENT_WIDTH],
}

impl RealmMeasurement {
    /// All-zero register (initial REM).
    pub fn zero(algo: HashAlgo) -> Self {
        Self {
            algo,
            register: [0; MEASUREMENT_WIDTH],
        }
    }

    /// From the digest bytes: exactly `algo.digest_len()` bytes, or a full 64-byte
    /// register whose bytes beyond the digest are zero (never truncated).
    pub fn from_bytes(algo: HashAlgo, bytes: &[u8]) -> Result<Self, CcaError> {
        let n = algo.digest_len();
        let ok = bytes.len() == n
            || (bytes.len() == MEASUREMENT_WIDTH && bytes[n..].iter().all(|b| *b == 0));
        if !ok {
            return Err(CcaError::MeasurementLength {
                algo,
                expected: n,
                found: bytes.len(),
            });
        }
        let mut register = [0; MEASUREMENT_WIDTH];
        register[..n].copy_from_slice(&bytes[..n]);
        Ok(Self { algo, register })
    }

    /// From hex text of the digest.
    pub fn from_hex(algo: HashAlgo, s: &str) -> Result<Self, CcaError> {
        let bytes = hex::decode(s.trim()).map_err(|e| CcaError::NotHex(e.to_string()))?;
        Self::from_bytes(algo, &bytes)
    }

    /// The algorithm.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The digest (32, 48 or 64 bytes) as it appears in a realm token.
    pub fn as_bytes(&self) -> &[u8] {
        &self.register[..self.algo.digest_len()]
    }

    /// The full 64-byte register (what goes into a descriptor).
    pub fn register(&self) -> &[u8; MEASUREMENT_WIDTH] {
        &self.register
    }

    /// Lower-case hex of the digest.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }
}

impl fmt::Display for RealmMeasurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for RealmMeasurement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RealmMeasurement({}:{})", self.algo, self.to_hex())
    }
}

/// `RmiRealmFlags` bits that are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RealmFlags {
    /// Bit 0: LPA2 (52-bit IPA with 4 KiB granules).
    pub lpa2: bool,
    /// Bit 1: SVE enabled.
    pub sve: bool,
    /// Bit 2: PMU enabled.
    pub pmu: bool,
}

impl RealmFlags {
    /// The encoded flags word.
    pub fn bits(self) -> u64 {
        u64::from(self.lpa2) | u64::from(self.sve) << 1 | u64::from(self.pmu) << 2
    }
}

/// The measured fields of `RmiRealmParams`, in their RMI encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealmParams {
    /// Feature flags.
    pub flags: RealmFlags,
    /// IPA width in bits (`s2sz`).
    pub s2sz: u8,
    /// SVE vector length, encoded as VQ − 1 (vector length / 128 − 1).
    pub sve_vl: u8,
    /// Breakpoints, encoded as count − 1.
    pub num_bps: u8,
    /// Watchpoints, encoded as count − 1.
    pub num_wps: u8,
    /// PMU counters.
    pub pmu_num_ctrs: u8,
    /// Measurement algorithm.
    pub hash_algo: HashAlgo,
}

impl RealmParams {
    /// Check the fields against the ranges the RMM accepts.
    pub fn validate(&self) -> Result<(), CcaError> {
        let check = |name, value: u8, ok: bool, expected| {
            if ok {
                Ok(())
            } else {
                Err(CcaError::Param {
                    name,
                    value: value.into(),
                    expected,
                })
            }
        };
        check(
            "s2sz",
            self.s2sz,
            (32..=52).contains(&self.s2sz) && (self.s2sz <= 48 || self.flags.lpa2),
            "32..=48, or up to 52 with LPA2",
        )?;
        check("sve_vl", self.sve_vl, self.sve_vl <= 15, "0..=15 (VQ-1)")?;
        check(
            "num_bps",
            self.num_bps,
            self.num_bps <= 15,
            "0..=15 (count-1)",
        )?;
        check(
            "num_wps",
            self.num_wps,
            self.num_wps <= 15,
            "0..=15 (count-1)",
        )?;
        check(
            "pmu_num_ctrs",
            self.pmu_num_ctrs,
            self.pmu_num_ctrs <= 31,
            "0..=31",
        )?;
        check(
            "sve_vl",
            self.sve_vl,
            self.flags.sve || self.sve_vl == 0,
            "0 unless the SVE flag is set",
        )?;
        check(
            "pmu_num_ctrs",
            self.pmu_num_ctrs,
            self.flags.pmu || self.pmu_num_ctrs == 0,
            "0 unless the PMU flag is set",
        )?;
        Ok(())
    }

    /// The 4 KiB `RmiRealmParams` image the RMM hashes (unmeasured fields zero).
    pub fn measured_image(&self) -> Vec<u8> {
        let mut b = vec![0u8; RMI_PARAMS_SIZE];
        put_u64(&mut b, 0x00, self.flags.bits());
        b[0x08] = self.s2sz;
        b[0x10] = self.sve_vl;
        b[0x18] = self.num_bps;
        b[0x20] = self.num_wps;
        b[0x28] = self.pmu_num_ctrs;
        b[0x30] = self.hash_algo.rmi_encoding();
        b
    }
}

/// Realm features as a VMM user states them (counts and bit lengths),
/// turned into the RMI encoding of [`RealmParams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RealmFeatures {
    /// IPA width in bits.
    pub ipa_bits: u8,
    /// Request LPA2.
    pub lpa2: bool,
    /// SVE vector length in bits (128..=2048, power of two), 0 = no SVE.
    pub sve_vl_bits: u16,
    /// Number of breakpoints (2..=16).
    pub num_bps: u8,
    /// Number of watchpoints (2..=16).
    pub num_wps: u8,
    /// PMU with this many counters, or no PMU.
    pub pmu_counters: Option<u8>,
    /// Measurement algorithm.
    pub hash_algo: HashAlgo,
}

impl RealmFeatures {
    /// The `RmiRealmParams` encoding (counts minus one, VQ minus one, flags).
    pub fn to_params(&self) -> Result<RealmParams, CcaError> {
        let bad = |name, value: u64, expected| CcaError::Param {
            name,
            value,
            expected,
        };
        let sve = self.sve_vl_bits != 0;
        if sve && !(self.sve_vl_bits.is_power_of_two() && (128..=2048).contains(&self.sve_vl_bits))
        {
            return Err(bad(
                "sve_vl_bits",
                self.sve_vl_bits.into(),
                "0, or a power of two in 128..=2048",
            ));
        }
        if !(2..=16).contains(&self.num_bps) {
            return Err(bad("num_bps", self.num_bps.into(), "2..=16"));
        }
        if !(2..=16).contains(&self.num_wps) {
            return Err(bad("num_wps", self.num_wps.into(), "2..=16"));
        }
        let p = RealmParams {
            flags: RealmFlags {
                lpa2: self.lpa2,
                sve,
                pmu: self.pmu_counters.is_some(),
            },
            s2sz: self.ipa_bits,
            sve_vl: if sve {
                (self.sve_vl_bits / 128 - 1) as u8
            } else {
                0
            },
            num_bps: self.num_bps - 1,
            num_wps: self.num_wps - 1,
            pmu_num_ctrs: self.pmu_counters.unwrap_or(0),
            hash_algo: self.hash_algo,
        };
        p.validate()?;
        Ok(p)
    }
}

/// The measured REC entry state (`RmiRecParams`: flags, PC, X0–X7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecParams {
    /// `RMI_RUNNABLE` flag (bit 0): the boot vCPU starts runnable.
    pub runnable: bool,
    /// Entry point.
    pub pc: u64,
    /// X0..X7 at entry (X0 is the DTB address for a Linux direct boot).
    pub gprs: [u64; 8],
}

impl RecParams {
    /// A runnable boot REC entering at `pc` with `x0`.
    pub fn boot(pc: u64, x0: u64) -> Self {
        Self {
            runnable: true,
            pc,
            gprs: [x0, 0, 0, 0, 0, 0, 0, 0],
        }
    }

    /// The 4 KiB `RmiRecParams` image the RMM hashes (MPIDR and aux zero).
    pub fn measured_image(&self) -> Vec<u8> {
        let mut b = vec![0u8; RMI_PARAMS_SIZE];
        put_u64(&mut b, 0x000, u64::from(self.runnable));
        put_u64(&mut b, 0x200, self.pc);
        for (i, r) in self.gprs.iter().enumerate() {
            put_u64(&mut b, 0x300 + 8 * i, *r);
        }
        b
    }
}

fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Descriptor types.
const DESC_DATA: u8 = 0;
const DESC_REC: u8 = 1;
const DESC_RIPAS: u8 = 2;

fn descriptor(kind: u8, rim: &[u8; MEASUREMENT_WIDTH]) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = [0u8; DESCRIPTOR_SIZE];
    d[0] = kind;
    put_u64(&mut d, 0x08, DESCRIPTOR_SIZE as u64);
    d[0x10..0x50].copy_from_slice(rim);
    d
}

/// The `RmmMeasurementDescriptorData` for one granule (`content_hash` is
/// `None` for `RMI_NO_MEASURE_CONTENT`).
pub fn data_descriptor(
    rim: &RealmMeasurement,
    ipa: Ipa,
    content_hash: Option<&[u8; MEASUREMENT_WIDTH]>,
) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = descriptor(DESC_DATA, rim.register());
    put_u64(&mut d, 0x50, ipa.get());
    if let Some(h) = content_hash {
        put_u64(&mut d, 0x58, 1);
        d[0x60..0xa0].copy_from_slice(h);
    }
    d
}

/// The `RmmMeasurementDescriptorRipas` for one RTT entry.
pub fn ripas_descriptor(rim: &RealmMeasurement, base: Ipa, top: Ipa) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = descriptor(DESC_RIPAS, rim.register());
    put_u64(&mut d, 0x50, base.get());
    put_u64(&mut d, 0x58, top.get());
    d
}

/// The `RmmMeasurementDescriptorRec`.
pub fn rec_descriptor(
    rim: &RealmMeasurement,
    rec_hash: &[u8; MEASUREMENT_WIDTH],
) -> [u8; DESCRIPTOR_SIZE] {
    let mut d = descriptor(DESC_REC, rim.register());
    d[0x50..0x90].copy_from_slice(rec_hash);
    d
}

/// Block sizes (bit mask of sizes) the host can use for one RTT entry at an
/// IPA width of `s2sz` bits, with 4 KiB granules, assuming (like KVM) that
/// the initial lookup level is concatenated whenever it would hold 16 or
/// fewer entries.
pub fn rtt_block_sizes(s2sz: u8) -> u64 {
    const PAGE_SHIFT: u32 = 12;
    const LEVEL_BITS: u32 = 9;
    let table_bits = u32::from(s2sz).saturating_sub(PAGE_SHIFT).max(1);
    let mut levels = table_bits.div_ceil(LEVEL_BITS);
    if table_bits - LEVEL_BITS * (levels - 1) <= 4 && levels > 1 {
        levels -= 1;
    }
    let levels = levels.min(4);
    (4 - levels..4).fold(0u64, |m, l| m | GRANULE_SIZE << (LEVEL_BITS * (3 - l)))
}

/// Largest block in `sizes` that starts at `start` (aligned) and fits below `top`.
fn largest_block(start: u64, top: u64, sizes: u64) -> u64 {
    let mut best = GRANULE_SIZE;
    let mut s = sizes;
    while s != 0 {
        let bit = s & s.wrapping_neg();
        s &= s - 1;
        if start.is_multiple_of(bit) && top - start >= bit && bit > best {
            best = bit;
        }
    }
    best
}

/// A Realm Initial Measurement under construction: the RMM's view of one
/// realm between `RMI_REALM_CREATE` and `RMI_REALM_ACTIVATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rim {
    rim: RealmMeasurement,
    version: RmmVersion,
    block_sizes: u64,
}

impl Rim {
    /// `RMI_REALM_CREATE`: start a RIM from the realm parameters.
    pub fn realm_create(params: &RealmParams, version: RmmVersion) -> Result<Self, CcaError> {
        params.validate()?;
        if params.hash_algo == HashAlgo::Sha384 && version == RmmVersion::V1 {
            return Err(CcaError::AlgoVersion {
                algo: params.hash_algo,
                version,
            });
        }
        let algo = params.hash_algo;
        Ok(Self {
            rim: RealmMeasurement {
                algo,
                register: algo.hash(&params.measured_image()),
            },
            version,
            block_sizes: rtt_block_sizes(params.s2sz),
        })
    }

    /// Continue from a known intermediate RIM (e.g. a test vector or a
    /// recorded log); `s2sz` sets the RTT block sizes for range splitting.
    pub fn resume(rim: RealmMeasurement, version: RmmVersion, s2sz: u8) -> Self {
        Self {
            rim,
            version,
            block_sizes: rtt_block_sizes(s2sz),
        }
    }

    /// The current RIM.
    pub fn measurement(&self) -> RealmMeasurement {
        self.rim
    }

    /// The RMM rules in force.
    pub fn version(&self) -> RmmVersion {
        self.version
    }

    fn fold(&mut self, desc: &[u8; DESCRIPTOR_SIZE]) {
        self.rim.register = self.rim.algo.hash(desc);
    }

    /// `RMI_DATA_CREATE` with `RMI_MEASURE_CONTENT`: one 4 KiB granule.
    pub fn data_create(&mut self, ipa: Ipa, granule: &[u8]) -> Result<(), CcaError> {
        if granule.len() as u64 != GRANULE_SIZE {
            return Err(CcaError::GranuleSize(granule.len()));
        }
        let h = self.rim.algo.hash(granule);
        let d = data_descriptor(&self.rim, ipa, Some(&h));
        self.fold(&d);
        Ok(())
    }

    /// `RMI_DATA_CREATE` with `RMI_NO_MEASURE_CONTENT`: the IPA is measured,
    /// the content is not.
    pub fn data_create_unmeasured(&mut self, ipa: Ipa) {
        let d = data_descriptor(&self.rim, ipa, None);
        self.fold(&d);
    }

    /// `RMI_RTT_INIT_RIPAS` for one RTT entry `[base, top)`. A no-op under
    /// RMM 2.0.
    pub fn rtt_init_ripas(&mut self, base: Ipa, top: Ipa) -> Result<(), CcaError> {
        if base >= top {
            return Err(CcaError::Range {
                base: base.get(),
                top: top.get(),
            });
        }
        if self.version == RmmVersion::V1 {
            let d = ripas_descriptor(&self.rim, base, top);
            self.fold(&d);
        }
        Ok(())
    }

    /// `RMI_REC_CREATE`. Only a runnable REC is measured: the RMM skips
    /// the measurement of a REC created with `flags.runnable = 0` (a
    /// secondary vCPU that PSCI `CPU_ON` starts later; TF-RMM `rec.c`), so
    /// such a REC leaves the RIM unchanged.
    pub fn rec_create(&mut self, rec: &RecParams) {
        if !rec.runnable {
            return;
        }
        let h = self.rim.algo.hash(&rec.measured_image());
        let d = rec_descriptor(&self.rim, &h);
        self.fold(&d);
    }

    /// A host's `INIT_RIPAS` over `[base, top)`: split into the RTT entries
    /// the host maps (largest block that is aligned and fits, as KVM does),
    /// each measured under RMM 1.x.
    pub fn init_ripas_range(&mut self, base: u64, top: u64) -> Result<(), CcaError> {
        if base >= top || !base.is_multiple_of(GRANULE_SIZE) || !top.is_multiple_of(GRANULE_SIZE) {
            return Err(CcaError::Range { base, top });
        }
        let mut cur = base;
        while cur < top {
            let size = largest_block(cur, top, self.block_sizes);
            self.rtt_init_ripas(Ipa(cur), Ipa(cur + size))?;
            cur += size;
        }
        Ok(())
    }

    /// Populate measured memory with `bytes` loaded at `addr` (need not be
    /// aligned): the range is widened to whole granules, zero-filled, and
    /// every granule measured. Returns the number of bytes measured.
    pub fn populate(&mut self, addr: u64, bytes: &[u8]) -> Result<u64, CcaError> {
        let base = addr - addr % GRANULE_SIZE;
        let lead = (addr - base) as usize;
        let total = (lead + bytes.len()).div_ceil(GRANULE_SIZE as usize) * GRANULE_SIZE as usize;
        base.checked_add(total as u64).ok_or(CcaError::Range {
            base,
            top: u64::MAX,
        })?;
        let g = GRANULE_SIZE as usize;
        let mut page = [0u8; GRANULE_SIZE as usize];
        for i in 0..total / g {
            let lo = i * g;
            // Bytes of `bytes` that fall into granule i.
            let src_lo = lo.saturating_sub(lead);
            let src_hi = (lo + g).saturating_sub(lead).min(bytes.len());
            let dst_lo = lead.saturating_sub(lo).min(g);
            let granule: &[u8] = if dst_lo == 0 && src_hi - src_lo == g {
                &bytes[src_lo..src_hi]
            } else {
                page.fill(0);
                if src_hi > src_lo {
                    page[dst_lo..dst_lo + (src_hi - src_lo)]
                        .copy_from_slice(&bytes[src_lo..src_hi]);
                }
                &page
            };
            self.data_create(Ipa(base + lo as u64), granule)?;
        }
        Ok(total as u64)
    }

    /// Populate `[addr, addr + size)` (widened to granules) without
    /// measuring content.
    pub fn populate_unmeasured(&mut self, addr: u64, size: u64) -> Result<(), CcaError> {
        let base = addr - addr % GRANULE_SIZE;
        let end = addr
            .checked_add(size)
            .and_then(|e| e.checked_next_multiple_of(GRANULE_SIZE))
            .ok_or(CcaError::Range {
                base,
                top: u64::MAX,
            })?;
        let mut cur = base;
        while cur < end {
            self.data_create_unmeasured(Ipa(cur));
            cur += GRANULE_SIZE;
        }
        Ok(())
    }
}

/// A Realm Extensible Measurement register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rem(RealmMeasurement);

impl Rem {
    /// A zeroed REM.
    pub fn new(algo: HashAlgo) -> Self {
        Self(RealmMeasurement::zero(algo))
    }

    /// Continue from a known value.
    pub fn from_measurement(m: RealmMeasurement) -> Self {
        Self(m)
    }

    /// `RSI_MEASUREMENT_EXTEND`: `REM = H(REM ‖ data)`, `data` ≤ 64 bytes.
    pub fn extend(&mut self, data: &[u8]) -> Result<(), CcaError> {
        if data.len() > MEASUREMENT_WIDTH {
            return Err(CcaError::RemDataSize(data.len()));
        }
        let algo = self.0.algo;
        self.0.register = algo.hash_parts(&[self.0.as_bytes(), data]);
        Ok(())
    }

    /// The current value.
    pub fn measurement(&self) -> RealmMeasurement {
        self.0
    }
}

/// The four REMs of a realm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rems(pub [Rem; 4]);

impl Rems {
    /// Four zeroed REMs.
    pub fn new(algo: HashAlgo) -> Self {
        Self([Rem::new(algo); 4])
    }

    /// Extend REM `index` (0..=3).
    pub fn extend(&mut self, index: usize, data: &[u8]) -> Result<(), CcaError> {
        self.0
            .get_mut(index)
            .ok_or(CcaError::RemIndex(index))?
            .extend(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_follow_kvm_concatenation() {
        assert_eq!(rtt_block_sizes(52), 0x80_4020_1000);
        assert_eq!(rtt_block_sizes(48), 0x80_4020_1000);
        assert_eq!(rtt_block_sizes(44), 0x80_4020_1000);
        assert_eq!(rtt_block_sizes(43), 0x4020_1000);
        assert_eq!(rtt_block_sizes(41), 0x4020_1000);
        assert_eq!(rtt_block_sizes(35), 0x4020_1000);
        assert_eq!(rtt_block_sizes(34), 0x20_1000);
        assert_eq!(rtt_block_sizes(30), 0x20_1000);
        assert_eq!(rtt_block_sizes(25), 0x1000);
    }

    #[test]
    fn largest_block_respects_alignment_and_top() {
        let s = 0x4020_1000;
        assert_eq!(largest_block(0x4000_0000, 0x8000_0000, s), 0x4000_0000);
        assert_eq!(largest_block(0x4000_0000, 0x4800_0000, s), 0x20_0000);
        assert_eq!(largest_block(0x8000_1000, 0x8020_0000, s), 0x1000);
        assert_eq!(largest_block(0x40_0000, 0x50_0000, s), 0x1000);
    }

    #[test]
    fn ipa_rejects_unaligned() {
        assert_eq!(Ipa::new(0x1001), Err(CcaError::Unaligned(0x1001)));
        assert!(Ipa::new(0x2000).is_ok());
    }

    #[test]
    fn sha384_needs_rmm2() {
        let p = RealmParams {
            flags: RealmFlags::default(),
            s2sz: 40,
            sve_vl: 0,
            num_bps: 1,
            num_wps: 1,
            pmu_num_ctrs: 0,
            hash_algo: HashAlgo::Sha384,
        };
        assert!(matches!(
            Rim::realm_create(&p, RmmVersion::V1),
            Err(CcaError::AlgoVersion { .. })
        ));
        assert_eq!(
            Rim::realm_create(&p, RmmVersion::V2)
                .unwrap()
                .measurement()
                .as_bytes()
                .len(),
            48
        );
    }

    #[test]
    fn rmm2_does_not_measure_ripas() {
        let p = RealmParams {
            flags: RealmFlags::default(),
            s2sz: 41,
            sve_vl: 0,
            num_bps: 5,
            num_wps: 5,
            pmu_num_ctrs: 0,
            hash_algo: HashAlgo::Sha256,
        };
        let mut v1 = Rim::realm_create(&p, RmmVersion::V1).unwrap();
        let mut v2 = Rim::realm_create(&p, RmmVersion::V2).unwrap();
        let before = v2.measurement();
        v1.init_ripas_range(0x4000_0000, 0x4800_0000).unwrap();
        v2.init_ripas_range(0x4000_0000, 0x4800_0000).unwrap();
        assert_eq!(v2.measurement(), before);
        assert_ne!(v1.measurement(), before);
    }

    #[test]
    fn populate_unaligned_equals_manual_granules() {
        let p = RealmParams {
            flags: RealmFlags::default(),
            s2sz: 41,
            sve_vl: 0,
            num_bps: 1,
            num_wps: 1,
            pmu_num_ctrs: 0,
            hash_algo: HashAlgo::Sha256,
        };
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut a = Rim::realm_create(&p, RmmVersion::V1).unwrap();
        assert_eq!(a.populate(0x8000_0010, &data).unwrap(), 0x2000);
        let mut b = Rim::realm_create(&p, RmmVersion::V1).unwrap();
        let mut img = vec![0u8; 0x2000];
        img[0x10..0x10 + 5000].copy_from_slice(&data);
        b.data_create(Ipa(0x8000_0000), &img[..0x1000]).unwrap();
        b.data_create(Ipa(0x8000_1000), &img[0x1000..]).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rem_rejects_bad_index_and_size() {
        let mut r = Rems::new(HashAlgo::Sha256);
        assert_eq!(r.extend(4, b"x"), Err(CcaError::RemIndex(4)));
        assert_eq!(r.extend(0, &[0; 65]), Err(CcaError::RemDataSize(65)));
    }
}
