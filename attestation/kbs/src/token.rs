//! The KBS's attestation-token key: signs EAR JWTs and verifies the ones
//! clients present as `Authorization: Bearer`.
//!
//! The claims come from [`EarIssuer::claims_json`]; this module only does
//! the compact-JWS part, with the same header `EarIssuer::issue` writes
//! (`{"alg":"ES256","typ":"JWT","jwk":…}`) and the same checks
//! `ear::verify_jwt` makes (alg ES256, signature, `exp`), but with `ring`'s
//! P-256, whose fixed-base and double-scalar multiplications are several
//! times faster than the portable implementation. The key is parsed once.
//!
//! [`EarIssuer::claims_json`]: cloister_attestation::ear::EarIssuer::claims_json

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Value};

/// Why a token could not be signed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The key could not be loaded into `ring`.
    #[error("token signing key: {0}")]
    Key(String),
    /// Signing failed.
    #[error("signing the token failed")]
    Sign,
    /// The token is not a well-formed compact JWS of ours.
    #[error("{0}")]
    Malformed(String),
    /// The signature does not verify with this KBS's key.
    #[error("JWT signature does not verify with this KBS's token key")]
    Signature,
    /// `exp` has passed.
    #[error("token expired at {exp}, now {now}")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The time of the check.
        now: i64,
    },
}

/// ES256 signing and verification with one P-256 key.
pub struct TokenKey {
    pair: EcdsaKeyPair,
    public_sec1: Vec<u8>,
    /// base64url of the JWS header, computed once.
    header_b64: String,
    rng: SystemRandom,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKey").finish_non_exhaustive()
    }
}

impl TokenKey {
    /// From the KBS signing key; `public_jwk` goes into the `jwk` header.
    pub fn new(key: &p256::ecdsa::SigningKey, public_jwk: &Value) -> Result<Self, TokenError> {
        let rng = SystemRandom::new();
        let public_sec1 = key
            .verifying_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.to_bytes(),
            &public_sec1,
            &rng,
        )
        .map_err(|e| TokenError::Key(e.to_string()))?;
        let header = json!({"alg": "ES256", "typ": "JWT", "jwk": public_jwk});
        Ok(Self {
            pair,
            public_sec1,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            rng,
        })
    }

    /// Sign `claims` as a compact ES256 JWT.
    pub fn sign(&self, claims: &Value) -> Result<String, TokenError> {
        let body = serde_json::to_vec(claims).map_err(|e| TokenError::Malformed(e.to_string()))?;
        let mut s = String::with_capacity(self.header_b64.len() + body.len() * 4 / 3 + 100);
        s.push_str(&self.header_b64);
        s.push('.');
        URL_SAFE_NO_PAD.encode_string(&body, &mut s);
        let sig = self
            .pair
            .sign(&self.rng, s.as_bytes())
            .map_err(|_| TokenError::Sign)?;
        s.push('.');
        URL_SAFE_NO_PAD.encode_string(sig.as_ref(), &mut s);
        Ok(s)
    }

    /// Verify a token signed with this key and return its claims; refuses
    /// other algorithms, bad signatures and expired tokens.
    pub fn verify(&self, token: &str, now: i64) -> Result<Value, TokenError> {
        let malformed = |m: &str| TokenError::Malformed(m.to_string());
        let mut parts = token.splitn(4, '.');
        let (Some(h), Some(b), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("JWT must have three parts"));
        };
        let header: Value = URL_SAFE_NO_PAD
            .decode(h)
            .ok()
            .and_then(|x| serde_json::from_slice(&x).ok())
            .ok_or_else(|| malformed("JWT header is not base64url JSON"))?;
        if header["alg"] != "ES256" {
            return Err(TokenError::Malformed(format!(
                "JWT alg: expected ES256, found {}",
                header["alg"]
            )));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| malformed("JWT signature is not base64url"))?;
        if sig.len() != 64 {
            return Err(malformed("JWT signature must be 64 bytes (r‖s)"));
        }
        let signed = &token.as_bytes()[..h.len() + 1 + b.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.public_sec1)
            .verify(signed, &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Value = URL_SAFE_NO_PAD
            .decode(b)
            .ok()
            .and_then(|x| serde_json::from_slice(&x).ok())
            .ok_or_else(|| malformed("JWT body is not base64url JSON"))?;
        let exp = claims["exp"]
            .as_i64()
            .ok_or_else(|| malformed("JWT has no exp: tokens without an expiry are refused"))?;
        if now > exp {
            return Err(TokenError::Expired { exp, now });
        }
        Ok(claims)
    }
}

/// The claims of a token this KBS issued and kept in its own session table
/// (no signature check: it never left the server).
pub fn claims_of_own_token(token: &str) -> Result<Value, TokenError> {
    token
        .split('.')
        .nth(1)
        .and_then(|b| URL_SAFE_NO_PAD.decode(b).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| TokenError::Malformed("JWT body is not base64url JSON".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_attestation::ear::{verify_jwt, EarIssuer};

    #[test]
    fn signs_what_the_library_verifies_and_verifies_what_the_library_signs() {
        let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let issuer = EarIssuer::new(sk.clone());
        let key = TokenKey::new(&sk, &issuer.public_jwk()).unwrap();
        let claims = json!({"iat": 100, "exp": 200, "submods": {"cpu0": {"x": 1}}});
        let t = key.sign(&claims).unwrap();
        assert_eq!(
            verify_jwt(&t, &issuer.verifying_key(), 150).unwrap(),
            claims
        );
        assert_eq!(key.verify(&t, 150).unwrap(), claims);
        assert_eq!(claims_of_own_token(&t).unwrap(), claims);
        // The header is the one EarIssuer writes (jwk of the same key).
        let h: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(t.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(h["alg"], "ES256");
        assert_eq!(h["jwk"], issuer.public_jwk());

        assert!(matches!(
            key.verify(&t, 201),
            Err(TokenError::Expired { exp: 200, now: 201 })
        ));
        // Another key's token, a tampered body, a truncated token.
        let other_sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        let other = TokenKey::new(&other_sk, &json!({})).unwrap();
        let t2 = other.sign(&claims).unwrap();
        assert_eq!(key.verify(&t2, 150), Err(TokenError::Signature));
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(br#"{"exp":999}"#);
        assert_eq!(
            key.verify(&parts.join("."), 150),
            Err(TokenError::Signature)
        );
        assert!(matches!(
            key.verify("a.b", 150),
            Err(TokenError::Malformed(_))
        ));
        // A token without exp, even correctly signed, is refused.
        let forever = key.sign(&json!({"iat": 100, "submods": {}})).unwrap();
        assert!(matches!(
            key.verify(&forever, 150),
            Err(TokenError::Malformed(m)) if m.contains("no exp")
        ));
        assert!(matches!(
            key.verify(&format!("{t}.x"), 150),
            Err(TokenError::Malformed(_))
        ));
    }
}
