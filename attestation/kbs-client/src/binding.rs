//! The runtime-data binding between a KBS session and TEE evidence.
//!
//! Trustee hashes the RFC 8785 (JCS) canonical JSON of
//! `{"additional-evidence": <string>, "nonce": <challenge nonce>, "tee-pubkey": <JWK>}`
//! with SHA-384 and the verifier compares it, zero-padded to the TEE's field
//! size (64 bytes for CCA, SNP and TDX), with the evidence's report data.

use kbs_types::TeePubKey;
use serde_json::Value;
use sha2::{Digest, Sha384};

/// Failure to build the binding.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// A JSON number that RFC 8785 cannot represent (NaN/inf cannot occur in serde_json).
    #[error("cannot serialise value to canonical JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// RFC 8785 canonical JSON: object members sorted by the UTF-16 code units of
/// their names, no whitespace, strings escaped as ECMAScript's
/// `JSON.stringify` does (which is serde_json's escaping).
pub fn canonical_json(value: &Value) -> Result<String, BindingError> {
    let mut out = String::new();
    write_canonical(value, &mut out)?;
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut String) -> Result<(), BindingError> {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k)?);
                out.push(':');
                if let Some(v) = map.get(k) {
                    write_canonical(v, out)?;
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out)?;
            }
            out.push(']');
        }
        Value::Number(n) => {
            // Integers print identically in ES6 and serde_json; a float that is
            // integral prints without a fraction in ES6.
            match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => out.push_str(&i.to_string()),
                (_, Some(u), _) => out.push_str(&u.to_string()),
                (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e21 => {
                    out.push_str(&format!("{f:.0}"))
                }
                _ => out.push_str(&serde_json::to_string(n)?),
            }
        }
        other => out.push_str(&serde_json::to_string(other)?),
    }
    Ok(())
}

/// SHA-384 of the canonical runtime data (48 bytes).
pub fn runtime_data_digest(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    additional_evidence: &str,
) -> Result<[u8; 48], BindingError> {
    let value = serde_json::json!({
        "additional-evidence": additional_evidence,
        "nonce": nonce,
        "tee-pubkey": serde_json::to_value(tee_pubkey)?,
    });
    let text = canonical_json(&value)?;
    Ok(Sha384::digest(text.as_bytes()).into())
}

/// The 64-byte report_data a guest asks its TEE to sign: the runtime-data
/// digest zero-padded to 64 bytes.
pub fn report_data(
    nonce: &str,
    tee_pubkey: &TeePubKey,
    additional_evidence: &str,
) -> Result<[u8; 64], BindingError> {
    let digest = runtime_data_digest(nonce, tee_pubkey, additional_evidence)?;
    let mut out = [0u8; 64];
    out[..48].copy_from_slice(&digest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn jcs_known_answer_from_trustee() {
        // vectors/kbs/SOURCES.md: trustee attestation-service test
        // `parse_runtimedata_json_binding`.
        let v = json!({"b":1,"a":"test","c":{"d":"e"}});
        let text = canonical_json(&v).unwrap();
        assert_eq!(text, r#"{"a":"test","b":1,"c":{"d":"e"}}"#);
        assert_eq!(
            hex(&Sha384::digest(text.as_bytes())),
            "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
        );
    }

    #[test]
    fn jcs_sorts_by_utf16_and_escapes_like_es6() {
        // RFC 8785 §3.2.3 example keys: "\u20ac" (€) sorts before "\ud83d\ude00" in UTF-16
        // although its UTF-8 bytes sort after.
        let v = json!({"\u{1F600}": 1, "\u{20AC}": 2, "\n": "a\u{1}b\"c"});
        assert_eq!(
            canonical_json(&v).unwrap(),
            "{\"\\n\":\"a\\u0001b\\\"c\",\"\u{20AC}\":2,\"\u{1F600}\":1}"
        );
        assert_eq!(canonical_json(&json!([1.0, 2.5, -0])).unwrap(), "[1,2.5,0]");
    }

    #[test]
    fn report_data_is_padded_digest_of_all_three_fields() {
        let key = TeePubKey::EC {
            crv: "P-256".into(),
            alg: "ECDH-ES+A256KW".into(),
            x: "x".into(),
            y: "y".into(),
        };
        let rd = report_data("n", &key, "").unwrap();
        let expect = Sha384::digest(
            br#"{"additional-evidence":"","nonce":"n","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"x","y":"y"}}"#,
        );
        assert_eq!(rd[..48], expect[..]);
        assert_eq!(&rd[48..], &[0u8; 16]);
        assert_ne!(rd, report_data("n", &key, "{}").unwrap());
        assert_ne!(rd, report_data("m", &key, "").unwrap());
    }
}
