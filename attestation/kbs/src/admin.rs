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

/// The audience admin tokens name unless the KBS is configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "cloister-kbs";
/// Longest admin-token lifetime the KBS accepts (`exp - iat`), seconds.
pub const MAX_LIFETIME_SECS: i64 = 300;
/// Tolerated clock skew for `iat` in the future, seconds.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// Sign an admin bearer token for `audience`, valid for `lifetime_secs`
/// from `now`, with a random `jti` (the KBS accepts each token once).
pub fn sign_token_for(key: &SigningKey, now: i64, lifetime_secs: i64, audience: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iat": now,
        "exp": now + lifetime_secs,
        "sub": "kbs-admin",
        "aud": audience,
        "jti": hex::encode(rand::random::<[u8; 16]>()),
    });
    let mut s = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let sig: Signature = key.sign(s.as_bytes());
    s.push('.');
    s.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    s
}

/// [`sign_token_for`] the [`DEFAULT_AUDIENCE`].
pub fn sign_token(key: &SigningKey, now: i64, lifetime_secs: i64) -> String {
    sign_token_for(key, now, lifetime_secs, DEFAULT_AUDIENCE)
}

/// The claims of an admin token that passed [`verify_token`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminClaims {
    /// Token id (for the KBS's replay cache).
    pub jti: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
}

/// Check an admin token against any of `keys` at time `now`: signature,
/// `exp` (required, not passed), `iat` (required, not in the future beyond
/// [`CLOCK_SKEW_SECS`]), a lifetime of at most [`MAX_LIFETIME_SECS`],
/// `aud` naming `audience`, and a `jti`. The caller keeps the replay cache.
pub fn verify_token(
    token: &str,
    keys: &[VerifyingKey],
    now: i64,
    audience: &str,
) -> Result<AdminClaims, AdminKeyError> {
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
    let exp = claims["exp"]
        .as_i64()
        .ok_or_else(|| bad("exp missing: admin tokens must expire"))?;
    let iat = claims["iat"].as_i64().ok_or_else(|| bad("iat missing"))?;
    if now > exp {
        return Err(AdminKeyError::Token(format!("expired at {exp}, now {now}")));
    }
    if iat > now + CLOCK_SKEW_SECS {
        return Err(AdminKeyError::Token(format!(
            "iat {iat} is in the future (now {now})"
        )));
    }
    if exp - iat > MAX_LIFETIME_SECS {
        return Err(AdminKeyError::Token(format!(
            "lifetime {} s exceeds the maximum of {MAX_LIFETIME_SECS} s",
            exp - iat
        )));
    }
    let aud_ok = match &claims["aud"] {
        serde_json::Value::String(a) => a == audience,
        serde_json::Value::Array(list) => list.iter().any(|a| a == audience),
        _ => return Err(bad("aud missing: the token must name this KBS")),
    };
    if !aud_ok {
        return Err(bad("aud does not name this KBS"));
    }
    let jti = claims["jti"]
        .as_str()
        .filter(|j| !j.is_empty() && j.len() <= 128)
        .ok_or_else(|| bad("jti missing"))?
        .to_string();
    Ok(AdminClaims { jti, exp })
}

/// Admin token ids seen, until their tokens expire: each token is accepted
/// once. Bounded; when full of unexpired ids it refuses (never forgets one
/// early, which would re-open a replay).
#[derive(Debug)]
pub struct JtiCache {
    seen: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    max: usize,
}

/// Why an admin token id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JtiError {
    /// Seen before.
    #[error("admin token was already used (jti replay)")]
    Replayed,
    /// The cache is full of live ids.
    #[error("too many admin tokens in flight")]
    Full,
}

impl JtiCache {
    /// A cache of at most `max` ids.
    pub fn new(max: usize) -> Self {
        Self {
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            max: max.max(1),
        }
    }

    /// Record `c.jti`; refuses one seen before.
    pub fn check(&self, c: &AdminClaims, now: i64) -> Result<(), JtiError> {
        let mut g = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if g.contains_key(&c.jti) {
            return Err(JtiError::Replayed);
        }
        if g.len() >= self.max {
            g.retain(|_, exp| *exp >= now);
            if g.len() >= self.max {
                return Err(JtiError::Full);
            }
        }
        g.insert(c.jti.clone(), c.exp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUD: &str = DEFAULT_AUDIENCE;

    fn sign_claims(sk: &SigningKey, claims: serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":"JWT"}"#);
        let mut s = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig: Signature = sk.sign(s.as_bytes());
        s.push('.');
        s.push_str(&URL_SAFE_NO_PAD.encode(sig.to_bytes()));
        s
    }

    #[test]
    fn keygen_sign_verify() {
        let (sk, pk) = keygen().unwrap();
        let sk = signing_key_from_pem(&sk).unwrap();
        let pk = verifying_key_from_pem(&pk).unwrap();
        let t = sign_token(&sk, 1000, 60);
        verify_token(&t, &[pk], 1000, AUD).unwrap();
        assert!(verify_token(&t, &[pk], 2000, AUD).is_err());
        let other = *SigningKey::random(&mut rand::rngs::OsRng).verifying_key();
        assert!(verify_token(&t, &[other], 1000, AUD).is_err());
        assert!(verify_token("a.b", &[pk], 1000, AUD).is_err());
        let mut tampered = t.clone();
        tampered.insert(tampered.find('.').unwrap() + 2, 'x');
        assert!(verify_token(&tampered, &[pk], 1000, AUD).is_err());
    }

    #[test]
    fn refusals_name_the_claim() {
        let sk = SigningKey::random(&mut rand::rngs::OsRng);
        let pk = *sk.verifying_key();
        let refused = |claims: serde_json::Value| -> String {
            verify_token(&sign_claims(&sk, claims), &[pk], 1000, AUD)
                .unwrap_err()
                .to_string()
        };
        let ok = serde_json::json!({"iat": 1000, "exp": 1060, "aud": AUD, "jti": "a"});
        assert!(verify_token(&sign_claims(&sk, ok.clone()), &[pk], 1000, AUD).is_ok());
        let without = |k: &str| {
            let mut c = ok.clone();
            c.as_object_mut().unwrap().remove(k);
            c
        };
        assert!(refused(without("exp")).contains("exp missing"));
        assert!(refused(without("iat")).contains("iat missing"));
        assert!(refused(without("aud")).contains("aud missing"));
        assert!(refused(without("jti")).contains("jti missing"));
        let mut long = ok.clone();
        long["exp"] = serde_json::json!(1000 + 301);
        assert!(refused(long).contains("lifetime 301 s"));
        let mut future = ok.clone();
        future["iat"] = serde_json::json!(1000 + 120);
        future["exp"] = serde_json::json!(1000 + 180);
        assert!(refused(future).contains("in the future"));
        let mut other = ok.clone();
        other["aud"] = serde_json::json!("another-kbs");
        assert!(refused(other).contains("aud does not name"));
        let mut list = ok.clone();
        list["aud"] = serde_json::json!(["x", AUD]);
        assert!(verify_token(&sign_claims(&sk, list), &[pk], 1000, AUD).is_ok());
    }

    #[test]
    fn jti_cache_refuses_replays_and_bounds_itself() {
        let c = JtiCache::new(2);
        let a = AdminClaims {
            jti: "a".into(),
            exp: 100,
        };
        let b = AdminClaims {
            jti: "b".into(),
            exp: 100,
        };
        let d = AdminClaims {
            jti: "d".into(),
            exp: 300,
        };
        c.check(&a, 50).unwrap();
        assert_eq!(c.check(&a, 50), Err(JtiError::Replayed));
        c.check(&b, 50).unwrap();
        assert_eq!(c.check(&d, 50), Err(JtiError::Full));
        // After a and b expire, room again.
        c.check(&d, 101).unwrap();
    }
}
