//! Reading the TEE-reported initdata binding out of raw evidence, so the
//! guest can confirm `digest(initdata)` before it trusts the document.
//!
//! This is deliberately small (guest side): it locates one field, it does not
//! verify signatures. Full decoding and verification is the job of
//! `cloister-attestation` on the relying party's side.
//!
//! - SNP: the attestation report's HOST_DATA, 32 bytes at 0xC0 (SEV-SNP ABI,
//!   ATTESTATION_REPORT). A `/dev/sev-guest` response carries the report after
//!   a 32-byte header; configfs-tsm gives the bare report.
//! - TDX: MRCONFIGID, 48 bytes at offset 184 of the TD report body; the body
//!   starts at 48 in a v4 quote and at 54 (after body type and size) in v5.
//! - CCA and sim: realm claim 44235 (personalization value) of the realm
//!   token, in either collection form (tag 399 or tag 907 with `[263, bstr]`).

use ciborium::value::Value;

use crate::initdata::{hex, InitdataDigest};
use crate::TeeKind;

/// SNP report field offsets, from the one layout table
/// (`cloister_tee_types::snp_evidence`, SEV-SNP ABI "ATTESTATION_REPORT").
pub mod snp_layout {
    use cloister_tee_types::snp_evidence::field;

    /// Size of an attestation report.
    pub const REPORT_LEN: usize = cloister_tee_types::snp_evidence::REPORT_LEN;
    /// REPORT_DATA, 64 bytes.
    pub const REPORT_DATA: usize = field::REPORT_DATA.offset;
    /// MEASUREMENT, 48 bytes.
    pub const MEASUREMENT: usize = field::MEASUREMENT.offset;
    /// HOST_DATA, 32 bytes.
    pub const HOST_DATA: usize = field::HOST_DATA.offset;
}

/// TDX quote offsets (Intel TDX DCAP Quote Generation Library, quote v4/v5).
pub mod tdx_layout {
    /// Quote header size.
    pub const HEADER_LEN: usize = 48;
    /// MRCONFIGID offset inside the TD report body.
    pub const BODY_MRCONFIGID: usize = 184;
    /// REPORTDATA offset inside the TD report body (TD report 1.0/1.5).
    pub const BODY_REPORT_DATA: usize = 520;
    /// TEE type of a TDX quote.
    pub const TEE_TYPE_TDX: u32 = 0x81;
}

/// Realm claim keys (RMM spec A.7.2).
pub mod cca_claims {
    /// Collection: platform token.
    pub const PLATFORM_TOKEN: i128 = 44234;
    /// Collection: realm token.
    pub const REALM_TOKEN: i128 = 44241;
    /// Realm challenge (64 B).
    pub const CHALLENGE: i128 = 10;
    /// Realm personalization value (64 B).
    pub const RPV: i128 = 44235;
    /// Realm initial measurement.
    pub const RIM: i128 = 44238;
    /// Realm extensible measurements.
    pub const REM: i128 = 44239;
}

/// Why a field could not be read from evidence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// The evidence is shorter than the field's position.
    #[error("{tee} evidence is {len} bytes: too short to hold {field}")]
    Truncated {
        /// TEE.
        tee: TeeKind,
        /// Length found.
        len: usize,
        /// The field looked for.
        field: &'static str,
    },
    /// The evidence is not of the expected shape.
    #[error("{tee} evidence is malformed: {reason}")]
    Malformed {
        /// TEE.
        tee: TeeKind,
        /// What was wrong.
        reason: String,
    },
    /// The TEE has no initdata field.
    #[error("TEE {0} carries no initdata binding")]
    NoField(TeeKind),
}

/// The initdata binding the TEE reports: SNP HOST_DATA, TDX MRCONFIGID, or
/// the CCA/sim realm personalization value.
pub fn reported_initdata_field(tee: TeeKind, evidence: &[u8]) -> Result<Vec<u8>, EvidenceError> {
    match tee {
        TeeKind::None => Err(EvidenceError::NoField(tee)),
        TeeKind::Snp => {
            let report = snp_report(evidence);
            field(tee, report, snp_layout::HOST_DATA, 32, "HOST_DATA")
        }
        TeeKind::Tdx => {
            let body = tdx_body_offset(evidence)?;
            field(
                tee,
                evidence,
                body + tdx_layout::BODY_MRCONFIGID,
                48,
                "MRCONFIGID",
            )
        }
        TeeKind::Cca | TeeKind::Sim => realm_claim_bytes(tee, evidence, cca_claims::RPV),
    }
}

/// The SNP report inside evidence: a bare report, or a `/dev/sev-guest`
/// response (32-byte header, then the report).
fn snp_report(evidence: &[u8]) -> &[u8] {
    if evidence.len() == snp_layout::REPORT_LEN + 32 {
        &evidence[32..]
    } else {
        evidence
    }
}

fn tdx_body_offset(quote: &[u8]) -> Result<usize, EvidenceError> {
    let tee = TeeKind::Tdx;
    if quote.len() < tdx_layout::HEADER_LEN {
        return Err(EvidenceError::Truncated {
            tee,
            len: quote.len(),
            field: "the quote header",
        });
    }
    let version = u16::from_le_bytes([quote[0], quote[1]]);
    let tee_type = u32::from_le_bytes([quote[4], quote[5], quote[6], quote[7]]);
    if tee_type != tdx_layout::TEE_TYPE_TDX {
        return Err(EvidenceError::Malformed {
            tee,
            reason: format!("quote TEE type is {tee_type:#x}, expected 0x81 (TDX)"),
        });
    }
    match version {
        4 => Ok(tdx_layout::HEADER_LEN),
        5 => Ok(tdx_layout::HEADER_LEN + 6),
        v => Err(EvidenceError::Malformed {
            tee,
            reason: format!("quote version {v}, expected 4 or 5"),
        }),
    }
}

fn field(
    tee: TeeKind,
    data: &[u8],
    at: usize,
    len: usize,
    name: &'static str,
) -> Result<Vec<u8>, EvidenceError> {
    data.get(at..at + len)
        .map(<[u8]>::to_vec)
        .ok_or(EvidenceError::Truncated {
            tee,
            len: data.len(),
            field: name,
        })
}

/// Reads one byte-string claim of the realm token in a CCA token.
pub fn realm_claim_bytes(tee: TeeKind, token: &[u8], key: i128) -> Result<Vec<u8>, EvidenceError> {
    let bad = |reason: String| EvidenceError::Malformed { tee, reason };
    let top: Value = ciborium::de::from_reader(token).map_err(|e| bad(format!("not CBOR: {e}")))?;
    let (tag, inner) = match top {
        Value::Tag(tag, inner) => (tag, *inner),
        _ => return Err(bad("expected CBOR tag 399 or 907 around the token".into())),
    };
    if tag != 399 && tag != 907 {
        return Err(bad(format!("CBOR tag {tag}, expected 399 or 907")));
    }
    let Value::Map(entries) = inner else {
        return Err(bad("the token collection is not a map".into()));
    };
    let realm = map_get(&entries, cca_claims::REALM_TOKEN)
        .ok_or_else(|| bad("no realm token (key 44241)".into()))?;
    let realm_bytes = match realm {
        Value::Bytes(b) => b.as_slice(),
        // Tag 907: [263, bstr].
        Value::Array(items) if items.len() == 2 => match &items[1] {
            Value::Bytes(b) => b.as_slice(),
            _ => return Err(bad("realm entry [263, x]: x is not a byte string".into())),
        },
        _ => {
            return Err(bad(
                "realm token entry is neither bstr nor [263, bstr]".into()
            ))
        }
    };
    let sign1: Value =
        ciborium::de::from_reader(realm_bytes).map_err(|e| bad(format!("realm token: {e}")))?;
    let sign1 = match sign1 {
        Value::Tag(18, inner) => *inner,
        other => other,
    };
    let Value::Array(parts) = sign1 else {
        return Err(bad("realm token is not a COSE_Sign1 array".into()));
    };
    let Some(Value::Bytes(payload)) = parts.get(2) else {
        return Err(bad("realm COSE_Sign1 has no payload".into()));
    };
    let claims: Value = ciborium::de::from_reader(payload.as_slice())
        .map_err(|e| bad(format!("realm claims: {e}")))?;
    let Value::Map(claims) = claims else {
        return Err(bad("realm claims are not a map".into()));
    };
    match map_get(&claims, key) {
        Some(Value::Bytes(b)) => Ok(b.clone()),
        Some(_) => Err(bad(format!("realm claim {key} is not a byte string"))),
        None => Err(bad(format!("realm claim {key} is missing"))),
    }
}

fn map_get(entries: &[(Value, Value)], key: i128) -> Option<&Value> {
    entries.iter().find_map(|(k, v)| match k {
        Value::Integer(i) if i128::from(*i) == key => Some(v),
        _ => None,
    })
}

/// Initdata does not match what the TEE reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitdataCheckError {
    /// The document itself is unusable.
    #[error(transparent)]
    Initdata(#[from] crate::initdata::InitdataError),
    /// The field could not be read from evidence.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The field does not equal the document's digest.
    #[error("initdata digest mismatch: the TEE reports {field} = {found}, expected {expected}")]
    Mismatch {
        /// Which field.
        field: &'static str,
        /// Hex of digest(initdata), fitted.
        expected: String,
        /// Hex of the TEE-reported value.
        found: String,
    },
}

/// The name of the field initdata is bound into.
pub fn initdata_field_name(tee: TeeKind) -> &'static str {
    match tee {
        TeeKind::Snp => "HOST_DATA",
        TeeKind::Tdx => "MRCONFIGID",
        TeeKind::Cca | TeeKind::Sim => "RPV",
        TeeKind::None => "(none)",
    }
}

/// Confirms that `digest(initdata)`, fitted to the TEE field, equals what the
/// TEE reports in `evidence`. With no initdata the field must be all zeros.
pub fn check_initdata(
    tee: TeeKind,
    evidence: &[u8],
    initdata: Option<&[u8]>,
) -> Result<(), InitdataCheckError> {
    let found = reported_initdata_field(tee, evidence)?;
    let expected = match initdata {
        Some(doc) => InitdataDigest::of(doc)?.fitted(found.len()),
        None => vec![0; found.len()],
    };
    if found == expected {
        Ok(())
    } else {
        Err(InitdataCheckError::Mismatch {
            field: initdata_field_name(tee),
            expected: hex(&expected),
            found: hex(&found),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = b"algorithm = \"sha256\"\nversion = \"0.1.0\"\n[data]\n";

    fn snp_report_with(host_data: &[u8]) -> Vec<u8> {
        let mut r = vec![0u8; snp_layout::REPORT_LEN];
        r[0] = 2;
        r[snp_layout::HOST_DATA..snp_layout::HOST_DATA + 32].copy_from_slice(host_data);
        r
    }

    fn tdx_quote_with(version: u16, mrconfigid: &[u8]) -> Vec<u8> {
        let mut q = vec![0u8; 1200];
        q[0..2].copy_from_slice(&version.to_le_bytes());
        q[4..8].copy_from_slice(&0x81u32.to_le_bytes());
        let body = if version == 5 { 54 } else { 48 };
        let at = body + tdx_layout::BODY_MRCONFIGID;
        q[at..at + 48].copy_from_slice(mrconfigid);
        q
    }

    #[test]
    fn snp_host_data_checked_both_forms() {
        let d = InitdataDigest::of(DOC).unwrap().fitted(32);
        let report = snp_report_with(&d);
        check_initdata(TeeKind::Snp, &report, Some(DOC)).unwrap();
        let mut resp = vec![0u8; 32];
        resp.extend_from_slice(&report);
        check_initdata(TeeKind::Snp, &resp, Some(DOC)).unwrap();
        let err = check_initdata(TeeKind::Snp, &snp_report_with(&[7; 32]), Some(DOC)).unwrap_err();
        assert!(err.to_string().contains("HOST_DATA"), "{err}");
        // No initdata: field must be zero.
        check_initdata(TeeKind::Snp, &snp_report_with(&[0; 32]), None).unwrap();
        assert!(check_initdata(TeeKind::Snp, &report, None).is_err());
        assert!(matches!(
            check_initdata(TeeKind::Snp, &report[..100], Some(DOC)),
            Err(InitdataCheckError::Evidence(
                EvidenceError::Truncated { .. }
            ))
        ));
    }

    #[test]
    fn tdx_mrconfigid_v4_and_v5() {
        let d = InitdataDigest::of(DOC).unwrap().fitted(48);
        for v in [4, 5] {
            check_initdata(TeeKind::Tdx, &tdx_quote_with(v, &d), Some(DOC)).unwrap();
            let err =
                check_initdata(TeeKind::Tdx, &tdx_quote_with(v, &[1; 48]), Some(DOC)).unwrap_err();
            assert!(err.to_string().contains("MRCONFIGID"));
        }
        let err = check_initdata(TeeKind::Tdx, &tdx_quote_with(3, &d), Some(DOC)).unwrap_err();
        assert!(err.to_string().contains("version 3"), "{err}");
    }

    #[test]
    fn cca_rpv_from_published_tokens() {
        let v = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");
        // Tag 399, RPV is ASCII "The quick brown fox jumps over 13 lazy dogs.The quick brown fox ".
        let t399 = std::fs::read(format!("{v}/ccatoken-cca-token-01.cbor")).unwrap();
        let rpv = reported_initdata_field(TeeKind::Cca, &t399).unwrap();
        assert_eq!(
            &rpv,
            b"The quick brown fox jumps over 13 lazy dogs.The quick brown fox "
        );
        // Tag 907 with [263, bstr] entries.
        let t907 = std::fs::read(format!("{v}/cca_token.cbor")).unwrap();
        let rpv = reported_initdata_field(TeeKind::Cca, &t907).unwrap();
        assert_eq!(rpv.len(), 64);
        let challenge = realm_claim_bytes(TeeKind::Cca, &t907, cca_claims::CHALLENGE).unwrap();
        assert_eq!(challenge, vec![0xAB; 64]);
        let err = check_initdata(TeeKind::Cca, &t907, Some(DOC)).unwrap_err();
        assert!(err.to_string().contains("RPV"));
    }

    #[test]
    fn cca_garbage_is_rejected_with_reason() {
        for (input, needle) in [
            (&b"\xff\xff"[..], "CBOR"),
            (&b"\xa0"[..], "tag"),
            (&b"\xd9\x01\x8f\xa0"[..], "realm token"),
        ] {
            let err = reported_initdata_field(TeeKind::Cca, input)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{err}");
        }
    }
}
