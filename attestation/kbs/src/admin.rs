//! Admin credentials: a P-256 key pair; the admin signs short-lived ES256
//! bearer tokens with the private key and the KBS checks them against the
//! configured public keys.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

/// Admin key and token failures.
#[derive(Debug, thiserror::Error)]
pub enum AdminKeyError {
    /// PEM/PKCS#8 parsing.
    #[error("admin key is not a P-256 {what} PEM: {reason}")]
    Pem {
        /// Which half.
        what: &'static str,
        /// Parser reason.
        reason: String,
    },
    /// Token structure or signature.
    #[error("admin token rejected: {0}")]
    Token(String),
}

/// Generate a key pair: (private PKCS#8 PEM, public SPKI PEM).
pub fn keygen() -> Result<(String, String), AdminKeyError> {
    let sk = SigningKey::random(&mut rand::rngs::OsRng);
    let private = sk
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| AdminKeyError::Pem {
            what: "private",
            reason: e.to_string(),
        })?
        .to_string();
    let public = sk
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| AdminKeyError::Pem {
            what: "public",
            reason: e.to_string(),
        })?;
    Ok((private, public))
}

/// Parse a private key PEM.
pub fn signing_key_from_pem(pem: &str) -> Result<SigningKey, AdminKeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| AdminKeyError::Pem {
        what: "private",
        reason: e.to_string(),
    })
}

/// Parse a public key PEM.
pub fn verifying_key_from_pem(pem: &str) -> Result<VerifyingKey, AdminKeyError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| AdminKeyError::Pem {
        what: "public",
        reason: e.to_string(),
    })
}

/// Sign an admin bearer token valid for `lifetime_secs` from `now`.
pub fn sign_token(key: &SigningKey, now: i64, lifetime_secs: i64) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT"}"#);
    let claims = serde_json::json!({"iat": now, "exp": now + lifetime_secs, "sub": "kbs-admin"});
    let mut s = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig: Signature = key.sign(s.as_bytes());
    s.push('.');
    s.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    s
}

/// Check an admin token against any of `keys` at time `now`.
pub fn verify_token(token: &str, keys: &[VerifyingKey], now: i64) -> Result<(), AdminKeyError> {
    let bad = |m: &str| AdminKeyError::Token(m.to_string());
    let mut parts = token.split('.');
    let (Some(h), Some(b), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("expected a JWT with three parts"));
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|x| serde_json::from_slice(&x).ok())
        .ok_or_else(|| bad("header is not base64url JSON"))?;
    if header["alg"] != "ES256" {
        return Err(bad("alg must be ES256"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|x| Signature::from_slice(&x).ok())
        .ok_or_else(|| bad("signature is malformed"))?;
    let signed = &token.as_bytes()[..h.len() + 1 + b.len()];
    if !keys.iter().any(|k| k.verify(signed, &sig).is_ok()) {
        return Err(bad(
            "signature does not verify with any configured admin key",
        ));
    }
    let claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(b)
        .ok()
        .and_then(|x| serde_json::from_slice(&x).ok())
        .ok_or_else(|| bad("claims are not base64url JSON"))?;
    let exp = claims["exp"].as_i64().ok_or_else(|| bad("exp missing"))?;
    if now > exp {
        return Err(AdminKeyError::Token(format!("expired at {exp}, now {now}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_sign_verify() {
        let (sk, pk) = keygen().unwrap();
        let sk = signing_key_from_pem(&sk).unwrap();
        let pk = verifying_key_from_pem(&pk).unwrap();
        let t = sign_token(&sk, 1000, 60);
        verify_token(&t, &[pk], 1000).unwrap();
        assert!(verify_token(&t, &[pk], 2000).is_err());
        let other = *SigningKey::random(&mut rand::rngs::OsRng).verifying_key();
        assert!(verify_token(&t, &[other], 1000).is_err());
        assert!(verify_token("a.b", &[pk], 1000).is_err());
        let mut tampered = t.clone();
        tampered.insert(tampered.find('.').unwrap() + 2, 'x');
        assert!(verify_token(&tampered, &[pk], 1000).is_err());
    }
}
