//! Intel TDX DCAP quote layout (Intel TDX DCAP Quoting Library API, quote
//! format v4 and v5): our own bounds-checked parser for the claims. The
//! cryptographic verification is dcap-qvl's; this parser decides what the
//! claims are and rejects malformed or trailing input with a reason.

/// Header length (v4 and v5).
pub const HEADER_LEN: usize = 48;
/// TD report 1.0 body (v4, v5 type 2).
pub const TD10_LEN: usize = 584;
/// TD report 1.5 body (v5 type 3).
pub const TD15_LEN: usize = 648;
/// TD report 1.5 "extended" body (v5 type 4, dcap-qvl 0.7).
pub const TD15EX_LEN: usize = 885;
/// Largest quote we accept (a real one is about 5 KiB).
pub const MAX_QUOTE_LEN: usize = 64 * 1024;

const TEE_TYPE_TDX: u32 = 0x81;
const ATT_KEY_ECDSA_P256: u16 = 2;

/// Why bytes are not a TDX quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// Input ends before a field.
    #[error("quote truncated: {field} needs bytes {start}..{end}, only {len} given")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Field start.
        start: usize,
        /// Field end.
        end: usize,
        /// Input length.
        len: usize,
    },
    /// Input too large or with non-zero bytes after the quote.
    #[error("quote oversized: {0}")]
    Oversized(String),
    /// Unsupported version.
    #[error("quote version {0} is not supported, expected 4 or 5")]
    Version(u16),
    /// Not a TDX quote.
    #[error("TEE type {0:#x} is not TDX (0x81)")]
    TeeType(u32),
    /// Unsupported attestation key.
    #[error("attestation key type {0} is not supported, expected 2 (ECDSA P-256)")]
    KeyType(u16),
    /// Unsupported v5 body type.
    #[error(
        "body type {0} is not supported, expected 2 (TD 1.0), 3 (TD 1.5) or 4 (TD 1.5 extended)"
    )]
    BodyType(u16),
    /// v5 body size disagrees with its type.
    #[error("body size {found} does not match body type {body_type}, expected {expected}")]
    BodySize {
        /// Body type.
        body_type: u16,
        /// Size given.
        found: u32,
        /// Size the type has.
        expected: usize,
    },
    /// Malformed signature data.
    #[error("signature data: {0}")]
    AuthData(String),
}

/// Which TD report structure the quote carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyType {
    /// TDX 1.0 TD report.
    Td10,
    /// TDX 1.5 TD report (adds TEE_TCB_SVN2 and MRSERVICETD).
    Td15,
    /// TDX 1.5 extended report (dcap-qvl body type 4).
    Td15Ex,
}

/// A parsed TDX quote (fields borrowed as fixed arrays).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// 4 or 5.
    pub version: u16,
    /// Body structure.
    pub body_type: BodyType,
    /// QE vendor ID.
    pub qe_vendor_id: [u8; 16],
    /// TEE_TCB_SVN.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM.
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM.
    pub mr_signer_seam: [u8; 48],
    /// SEAMATTRIBUTES.
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES.
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// MRTD.
    pub mr_td: [u8; 48],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN2 (TD 1.5).
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// MRSERVICETD (TD 1.5).
    pub mr_servicetd: Option<[u8; 48]>,
    /// Length of the quote proper (header, body, signature data).
    pub len: usize,
    /// Certification data type inside the QE certification data (5 = PCK chain).
    pub pck_cert_type: u16,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], QuoteError> {
        let end = self.pos.saturating_add(n);
        let s = self.b.get(self.pos..end).ok_or(QuoteError::Truncated {
            field,
            start: self.pos,
            end,
            len: self.b.len(),
        })?;
        self.pos = end;
        Ok(s)
    }
    fn arr<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], QuoteError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }
    fn u16(&mut self, field: &'static str) -> Result<u16, QuoteError> {
        Ok(u16::from_le_bytes(self.arr(field)?))
    }
    fn u32(&mut self, field: &'static str) -> Result<u32, QuoteError> {
        Ok(u32::from_le_bytes(self.arr(field)?))
    }
}

impl Quote {
    /// Parse a TDX quote v4/v5. Trailing zero bytes (buffer padding, as
    /// configfs-tsm and several published quotes have) are allowed; any other
    /// trailing byte is an error.
    pub fn parse(b: &[u8]) -> Result<Self, QuoteError> {
        if b.len() > MAX_QUOTE_LEN {
            return Err(QuoteError::Oversized(format!(
                "{} bytes, at most {MAX_QUOTE_LEN} expected",
                b.len()
            )));
        }
        let mut c = Cursor { b, pos: 0 };
        let version = c.u16("header.version")?;
        let key_type = c.u16("header.att_key_type")?;
        let tee_type = c.u32("header.tee_type")?;
        c.take(4, "header.reserved")?;
        let qe_vendor_id = c.arr("header.qe_vendor_id")?;
        c.take(20, "header.user_data")?;
        if version != 4 && version != 5 {
            return Err(QuoteError::Version(version));
        }
        if tee_type != TEE_TYPE_TDX {
            return Err(QuoteError::TeeType(tee_type));
        }
        if key_type != ATT_KEY_ECDSA_P256 {
            return Err(QuoteError::KeyType(key_type));
        }
        let body_type = if version == 5 {
            let t = c.u16("body.type")?;
            let size = c.u32("body.size")?;
            let (bt, expected) = match t {
                2 => (BodyType::Td10, TD10_LEN),
                3 => (BodyType::Td15, TD15_LEN),
                4 => (BodyType::Td15Ex, TD15EX_LEN),
                other => return Err(QuoteError::BodyType(other)),
            };
            if size as usize != expected {
                return Err(QuoteError::BodySize {
                    body_type: t,
                    found: size,
                    expected,
                });
            }
            bt
        } else {
            BodyType::Td10
        };
        let tee_tcb_svn = c.arr("body.tee_tcb_svn")?;
        let mr_seam = c.arr("body.mr_seam")?;
        let mr_signer_seam = c.arr("body.mr_signer_seam")?;
        let seam_attributes = c.arr("body.seam_attributes")?;
        let td_attributes = c.arr("body.td_attributes")?;
        let xfam = c.arr("body.xfam")?;
        let mr_td = c.arr("body.mr_td")?;
        let mr_config_id = c.arr("body.mr_config_id")?;
        let mr_owner = c.arr("body.mr_owner")?;
        let mr_owner_config = c.arr("body.mr_owner_config")?;
        let rtmr = [
            c.arr("body.rtmr0")?,
            c.arr("body.rtmr1")?,
            c.arr("body.rtmr2")?,
            c.arr("body.rtmr3")?,
        ];
        let report_data = c.arr("body.report_data")?;
        let (tee_tcb_svn2, mr_servicetd) = if body_type == BodyType::Td10 {
            (None, None)
        } else {
            (
                Some(c.arr("body.tee_tcb_svn2")?),
                Some(c.arr("body.mr_servicetd")?),
            )
        };
        if body_type == BodyType::Td15Ex {
            c.take(TD15EX_LEN - TD15_LEN, "body.td15ex_fields")?;
        }

        // Signature data (v4 layout, also used by v5).
        let auth_len = c.u32("auth_data.size")? as usize;
        let auth = c.take(auth_len, "auth_data")?;
        let len = c.pos;
        let pck_cert_type = parse_auth_data(auth)?;
        if let Some(i) = b[len..].iter().position(|&x| x != 0) {
            return Err(QuoteError::Oversized(format!(
                "non-zero byte at offset {} after the {len}-byte quote",
                len + i
            )));
        }
        Ok(Quote {
            version,
            body_type,
            qe_vendor_id,
            tee_tcb_svn,
            mr_seam,
            mr_signer_seam,
            seam_attributes,
            td_attributes,
            xfam,
            mr_td,
            mr_config_id,
            mr_owner,
            mr_owner_config,
            rtmr,
            report_data,
            tee_tcb_svn2,
            mr_servicetd,
            len,
            pck_cert_type,
        })
    }

    /// TDATTRIBUTES as a little-endian integer.
    pub fn td_attributes_u64(&self) -> u64 {
        u64::from_le_bytes(self.td_attributes)
    }
}

/// ECDSA signature data: signature, attestation key, then certification data
/// of type 6 (QE report certification data) wrapping the PCK chain. Returns
/// the inner certification data type.
fn parse_auth_data(a: &[u8]) -> Result<u16, QuoteError> {
    let mut c = Cursor { b: a, pos: 0 };
    let bad = |e: QuoteError| QuoteError::AuthData(e.to_string());
    c.take(64, "ecdsa_signature").map_err(bad)?;
    c.take(64, "attestation_key").map_err(bad)?;
    let outer_type = c.u16("certification_data.type").map_err(bad)?;
    let outer_len = c.u32("certification_data.size").map_err(bad)? as usize;
    if outer_type != 6 {
        return Err(QuoteError::AuthData(format!(
            "certification data type {outer_type}, expected 6 (QE report certification data)"
        )));
    }
    let outer = c.take(outer_len, "certification_data").map_err(bad)?;
    if c.pos != a.len() {
        return Err(QuoteError::AuthData(format!(
            "{} bytes after the certification data",
            a.len() - c.pos
        )));
    }
    let mut q = Cursor { b: outer, pos: 0 };
    q.take(384, "qe_report").map_err(bad)?;
    q.take(64, "qe_report_signature").map_err(bad)?;
    let qe_auth_len = q.u16("qe_auth_data.size").map_err(bad)? as usize;
    q.take(qe_auth_len, "qe_auth_data").map_err(bad)?;
    let inner_type = q.u16("pck_cert_data.type").map_err(bad)?;
    let inner_len = q.u32("pck_cert_data.size").map_err(bad)? as usize;
    q.take(inner_len, "pck_cert_data").map_err(bad)?;
    if q.pos != outer.len() {
        return Err(QuoteError::AuthData(format!(
            "{} bytes after the PCK certification data",
            outer.len() - q.pos
        )));
    }
    Ok(inner_type)
}
