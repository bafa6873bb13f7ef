//! ECDSA keys for CCA tokens: P-256/P-384/P-521 public keys from a raw SEC1
//! point, a COSE_Key, a JWK or PEM; raw `r‖s` COSE signatures.

use coset::{iana, CborSerializable, CoseKey, KeyType, Label};
use p256::ecdsa::signature::Signer as _;

use super::ClaimError;

/// A public verification key.
#[derive(Clone)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PublicKey({}, {})",
            self.curve(),
            hex::encode(self.to_sec1())
        )
    }
}

/// COSE signature algorithms supported for CCA tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigAlg {
    Es256,
    Es384,
    Es512,
}

impl SigAlg {
    pub fn from_cose(a: &coset::Algorithm) -> Option<Self> {
        match a {
            coset::Algorithm::Assigned(iana::Algorithm::ES256) => Some(Self::Es256),
            coset::Algorithm::Assigned(iana::Algorithm::ES384) => Some(Self::Es384),
            coset::Algorithm::Assigned(iana::Algorithm::ES512) => Some(Self::Es512),
            _ => None,
        }
    }

    pub fn cose(self) -> iana::Algorithm {
        match self {
            Self::Es256 => iana::Algorithm::ES256,
            Self::Es384 => iana::Algorithm::ES384,
            Self::Es512 => iana::Algorithm::ES512,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }
}

fn bad(reason: impl Into<String>) -> ClaimError {
    ClaimError::Invalid {
        claim: "realm public-key",
        reason: reason.into(),
    }
}

impl PublicKey {
    /// The RAK as encoded in realm claim 44237: a raw uncompressed P-384
    /// point (97 bytes) or a CBOR COSE_Key (EC2, P-384).
    pub fn from_rak(b: &[u8]) -> Result<Self, ClaimError> {
        if b.len() == 97 && b[0] == 0x04 {
            return p384::ecdsa::VerifyingKey::from_sec1_bytes(b)
                .map(Self::P384)
                .map_err(|_| bad("raw RAK is not a P-384 point on the curve"));
        }
        let k = CoseKey::from_slice(b).map_err(|_| {
            bad(format!(
                "expected a 97-byte SEC1 P-384 point or a COSE_Key, found {} bytes of neither",
                b.len()
            ))
        })?;
        Self::from_cose_key(&k).map_err(bad)
    }

    fn from_cose_key(k: &CoseKey) -> Result<Self, String> {
        if k.kty != KeyType::Assigned(iana::KeyType::EC2) {
            return Err(format!("expected COSE_Key kty EC2, found {:?}", k.kty));
        }
        let (mut crv, mut x, mut y) = (None, None, None);
        for (l, v) in &k.params {
            match l {
                Label::Int(-1) => crv = v.as_integer().and_then(|i| i64::try_from(i).ok()),
                Label::Int(-2) => x = v.as_bytes().cloned(),
                Label::Int(-3) => y = v.as_bytes().cloned(),
                _ => {}
            }
        }
        let (x, y) = match (x, y) {
            (Some(x), Some(y)) => (x, y),
            _ => return Err("COSE_Key lacks x or y".into()),
        };
        let mut sec1 = vec![0x04];
        sec1.extend_from_slice(&x);
        sec1.extend_from_slice(&y);
        match crv {
            Some(1) => Self::from_sec1("P-256", &sec1),
            Some(2) => Self::from_sec1("P-384", &sec1),
            Some(3) => Self::from_sec1("P-521", &sec1),
            other => Err(format!(
                "expected COSE curve P-256/P-384/P-521, found {other:?}"
            )),
        }
    }

    /// From an uncompressed SEC1 point on the named curve.
    pub fn from_sec1(crv: &str, sec1: &[u8]) -> Result<Self, String> {
        let err = |_| {
            format!(
                "{crv} point is not on the curve or has the wrong size ({} bytes)",
                sec1.len()
            )
        };
        match crv {
            "P-256" => p256::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .map(Self::P256)
                .map_err(err),
            "P-384" => p384::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .map(Self::P384)
                .map_err(err),
            "P-521" => p521::ecdsa::VerifyingKey::from_sec1_bytes(sec1)
                .map(Self::P521)
                .map_err(err),
            other => Err(format!("unsupported curve {other:?}")),
        }
    }

    /// From a JWK object (`kty` EC, `crv`, `x`, `y` base64url).
    pub fn from_jwk(j: &serde_json::Value) -> Result<Self, String> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let s = |k: &str| {
            j.get(k)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("JWK lacks {k:?}"))
        };
        if s("kty")? != "EC" {
            return Err(format!("expected JWK kty EC, found {:?}", s("kty")?));
        }
        let dec = |k: &str| -> Result<Vec<u8>, String> {
            URL_SAFE_NO_PAD
                .decode(s(k)?.trim_end_matches('='))
                .map_err(|e| format!("JWK {k}: {e}"))
        };
        let mut sec1 = vec![0x04];
        sec1.extend(dec("x")?);
        sec1.extend(dec("y")?);
        Self::from_sec1(s("crv")?, &sec1)
    }

    /// From a PEM SubjectPublicKeyInfo.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        use p256::pkcs8::DecodePublicKey;
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::P384(k));
        }
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(pem) {
            return Ok(Self::P256(k));
        }
        Err("PEM is not a P-256 or P-384 SubjectPublicKeyInfo".into())
    }

    /// Uncompressed SEC1 encoding of the point.
    pub fn to_sec1(&self) -> Vec<u8> {
        match self {
            Self::P256(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            Self::P384(k) => k.to_encoded_point(false).as_bytes().to_vec(),
            Self::P521(k) => k.to_encoded_point(false).as_bytes().to_vec(),
        }
    }

    /// Curve name as in JWK.
    pub fn curve(&self) -> &'static str {
        match self {
            Self::P256(_) => "P-256",
            Self::P384(_) => "P-384",
            Self::P521(_) => "P-521",
        }
    }

    /// Verify a raw `r‖s` signature over `msg` with `alg`; the algorithm must
    /// match the key's curve. Parses the point for this one call; keys used
    /// again (trust anchors) should be [`prepare`](Self::prepare)d once.
    pub fn verify(&self, alg: SigAlg, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        let a = self.aws_alg(alg)?;
        check_sig_len(alg, sig)?;
        aws_lc_rs::signature::UnparsedPublicKey::new(a, self.to_sec1())
            .verify(msg, sig)
            .map_err(|_| "signature does not verify".to_string())
    }

    /// The aws-lc-rs algorithm for `alg` on this key's curve.
    fn aws_alg(
        &self,
        alg: SigAlg,
    ) -> Result<&'static aws_lc_rs::signature::EcdsaVerificationAlgorithm, String> {
        use aws_lc_rs::signature as s;
        match (self, alg) {
            (Self::P256(_), SigAlg::Es256) => Ok(&s::ECDSA_P256_SHA256_FIXED),
            (Self::P384(_), SigAlg::Es384) => Ok(&s::ECDSA_P384_SHA384_FIXED),
            (Self::P521(_), SigAlg::Es512) => Ok(&s::ECDSA_P521_SHA512_FIXED),
            (k, a) => Err(format!(
                "algorithm {} does not fit a {} key",
                a.name(),
                k.curve()
            )),
        }
    }

    /// Parse the point once for repeated verification with the key's own
    /// algorithm (ES256 for P-256, ES384 for P-384, ES512 for P-521).
    pub fn prepare(&self) -> Result<PreparedKey, String> {
        let alg = match self {
            Self::P256(_) => SigAlg::Es256,
            Self::P384(_) => SigAlg::Es384,
            Self::P521(_) => SigAlg::Es512,
        };
        let parsed = aws_lc_rs::signature::ParsedPublicKey::new(self.aws_alg(alg)?, self.to_sec1())
            .map_err(|e| format!("{} point rejected by aws-lc: {e}", self.curve()))?;
        Ok(PreparedKey {
            alg,
            curve: self.curve(),
            parsed: std::sync::Arc::new(parsed),
        })
    }
}

fn check_sig_len(alg: SigAlg, sig: &[u8]) -> Result<(), String> {
    let n = match alg {
        SigAlg::Es256 => 64,
        SigAlg::Es384 => 96,
        SigAlg::Es512 => 132,
    };
    if sig.len() != n {
        return Err(format!(
            "malformed {} signature: {} bytes, expected {n}",
            alg.name(),
            sig.len()
        ));
    }
    Ok(())
}

/// A public key parsed once for ECDSA verification (aws-lc-rs, whose P-256,
/// P-384 and P-521 arithmetic is assembly-optimised: several times faster
/// than the pure-Rust curves here). Cheap to clone.
#[derive(Clone)]
pub struct PreparedKey {
    alg: SigAlg,
    curve: &'static str,
    parsed: std::sync::Arc<aws_lc_rs::signature::ParsedPublicKey>,
}

impl std::fmt::Debug for PreparedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PreparedKey({}, {})", self.curve, self.alg.name())
    }
}

impl PreparedKey {
    /// Verify a raw `r‖s` signature over `msg`; `alg` must be the key's.
    pub fn verify(&self, alg: SigAlg, msg: &[u8], sig: &[u8]) -> Result<(), String> {
        if alg != self.alg {
            return Err(format!(
                "algorithm {} does not fit a {} key",
                alg.name(),
                self.curve
            ));
        }
        check_sig_len(alg, sig)?;
        self.parsed
            .verify_sig(msg, sig)
            .map_err(|_| "signature does not verify".to_string())
    }
}

/// A private signing key (builder side: sim backend, test attesters).
#[derive(Clone)]
pub enum SigningKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
    P521(p521::ecdsa::SigningKey),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.alg().name())
    }
}

impl SigningKey {
    /// A fresh random key for `alg`.
    pub fn generate(alg: SigAlg) -> Self {
        let mut rng = rand::rngs::OsRng;
        match alg {
            SigAlg::Es256 => Self::P256(p256::ecdsa::SigningKey::random(&mut rng)),
            SigAlg::Es384 => Self::P384(p384::ecdsa::SigningKey::random(&mut rng)),
            SigAlg::Es512 => Self::P521(p521::ecdsa::SigningKey::random(&mut rng)),
        }
    }

    /// From the big-endian scalar bytes for `alg`'s curve.
    pub fn from_scalar(alg: SigAlg, d: &[u8]) -> Result<Self, String> {
        let err = |_| format!("not a valid {} private scalar", alg.name());
        match alg {
            SigAlg::Es256 => p256::ecdsa::SigningKey::from_slice(d)
                .map(Self::P256)
                .map_err(err),
            SigAlg::Es384 => p384::ecdsa::SigningKey::from_slice(d)
                .map(Self::P384)
                .map_err(err),
            SigAlg::Es512 => p521::ecdsa::SigningKey::from_slice(d)
                .map(Self::P521)
                .map_err(err),
        }
    }

    /// From a private JWK (`crv`, `d`).
    pub fn from_jwk(j: &serde_json::Value) -> Result<Self, String> {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        let crv = j
            .get("crv")
            .and_then(|v| v.as_str())
            .ok_or("JWK lacks crv")?;
        let d = j.get("d").and_then(|v| v.as_str()).ok_or("JWK lacks d")?;
        let d = URL_SAFE_NO_PAD
            .decode(d.trim_end_matches('='))
            .map_err(|e| format!("JWK d: {e}"))?;
        let alg = match crv {
            "P-256" => SigAlg::Es256,
            "P-384" => SigAlg::Es384,
            "P-521" => SigAlg::Es512,
            other => return Err(format!("unsupported curve {other:?}")),
        };
        Self::from_scalar(alg, &d)
    }

    /// The big-endian private scalar (for persisting a key).
    pub fn to_scalar(&self) -> Vec<u8> {
        match self {
            Self::P256(k) => k.to_bytes().to_vec(),
            Self::P384(k) => k.to_bytes().to_vec(),
            Self::P521(k) => k.to_bytes().to_vec(),
        }
    }

    pub fn alg(&self) -> SigAlg {
        match self {
            Self::P256(_) => SigAlg::Es256,
            Self::P384(_) => SigAlg::Es384,
            Self::P521(_) => SigAlg::Es512,
        }
    }

    pub fn public(&self) -> PublicKey {
        match self {
            Self::P256(k) => PublicKey::P256(*k.verifying_key()),
            Self::P384(k) => PublicKey::P384(*k.verifying_key()),
            Self::P521(k) => PublicKey::P521(p521::ecdsa::VerifyingKey::from(k)),
        }
    }

    /// Raw `r‖s` signature over `msg`.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            Self::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                s.to_bytes().to_vec()
            }
            Self::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(msg);
                s.to_bytes().to_vec()
            }
            Self::P521(k) => {
                let s: p521::ecdsa::Signature = k.sign(msg);
                s.to_bytes().to_vec()
            }
        }
    }

    /// Public key as a JWK (for trust-anchor files).
    pub fn public_jwk(&self) -> serde_json::Value {
        public_jwk(&self.public())
    }
}

/// JWK of a public key.
pub fn public_jwk(k: &PublicKey) -> serde_json::Value {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let sec1 = k.to_sec1();
    let n = (sec1.len() - 1) / 2;
    serde_json::json!({
        "kty": "EC",
        "crv": k.curve(),
        "x": URL_SAFE_NO_PAD.encode(&sec1[1..1 + n]),
        "y": URL_SAFE_NO_PAD.encode(&sec1[1 + n..]),
    })
}

/// Encode a P-384 public key as the COSE_Key bytes used in realm claim 44237.
pub fn rak_cose_key(k: &PublicKey) -> Result<Vec<u8>, String> {
    let sec1 = k.to_sec1();
    let n = (sec1.len() - 1) / 2;
    let crv = match k {
        PublicKey::P256(_) => iana::EllipticCurve::P_256,
        PublicKey::P384(_) => iana::EllipticCurve::P_384,
        PublicKey::P521(_) => iana::EllipticCurve::P_521,
    };
    coset::CoseKeyBuilder::new_ec2_pub_key(crv, sec1[1..1 + n].to_vec(), sec1[1 + n..].to_vec())
        .build()
        .to_vec()
        .map_err(|e| format!("COSE_Key encoding: {e}"))
}
