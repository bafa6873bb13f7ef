//! AMD certificate handling: the ARK → ASK/ASVK → VCEK/VLEK chain, validity
//! at a given time, and the TCB / hwID extensions of endorsement keys.
//!
//! Built-in roots are AMD's published ARK, ASK and ASVK certificates for
//! Milan, Genoa and Turin (files in `roots/`, provenance in `roots/SOURCES.md`).
//! Certificates handed in with the evidence are never trusted as roots: an ASK
//! or ASVK from the evidence is used only if a trusted ARK signed it.

use sev::certs::snp::{Certificate as SevCert, Verifiable};
use x509_cert::der::{Decode, DecodePem};
use x509_cert::Certificate;

use super::report::Generation;
use super::SnpError;

const CN_OID: &str = "2.5.4.3";
/// VCEK/VLEK extension OIDs (AMD "Versioned Chip Endorsement Key" spec).
pub(crate) const OID_BL: &str = "1.3.6.1.4.1.3704.1.3.1";
pub(crate) const OID_TEE: &str = "1.3.6.1.4.1.3704.1.3.2";
pub(crate) const OID_SNP: &str = "1.3.6.1.4.1.3704.1.3.3";
pub(crate) const OID_UCODE: &str = "1.3.6.1.4.1.3704.1.3.8";
pub(crate) const OID_FMC: &str = "1.3.6.1.4.1.3704.1.3.9";
pub(crate) const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";

const BUILTIN: [&[u8]; 3] = [
    include_bytes!("roots/milan_ask_ark_asvk.pem"),
    include_bytes!("roots/genoa_ask_ark_asvk.pem"),
    include_bytes!("roots/turin_ask_ark_asvk.pem"),
];

/// One parsed certificate, with what we look at often.
#[derive(Debug, Clone)]
pub(crate) struct Cert {
    pub x509: Certificate,
    sev: SevCert,
    pub cn: String,
    subject_der: Vec<u8>,
    issuer_der: Vec<u8>,
    der: Vec<u8>,
}

fn der_of<T: x509_cert::der::Encode>(v: &T) -> Vec<u8> {
    v.to_der().unwrap_or_default()
}

fn common_name(name: &x509_cert::name::Name) -> String {
    for rdn in name.0.iter() {
        for atv in rdn.0.iter() {
            if atv.oid.to_string() == CN_OID {
                return String::from_utf8_lossy(atv.value.value()).into_owned();
            }
        }
    }
    String::new()
}

impl Cert {
    pub fn from_x509(x509: Certificate) -> Self {
        let cn = common_name(&x509.tbs_certificate.subject);
        let subject_der = der_of(&x509.tbs_certificate.subject);
        let issuer_der = der_of(&x509.tbs_certificate.issuer);
        let der = der_of(&x509);
        Cert {
            der,
            sev: SevCert::from(x509.clone()),
            x509,
            cn,
            subject_der,
            issuer_der,
        }
    }

    /// DER or PEM, one certificate.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, SnpError> {
        let parsed = if bytes.starts_with(b"-----BEGIN") {
            Certificate::from_pem(bytes)
        } else {
            Certificate::from_der(bytes)
        };
        parsed
            .map(Self::from_x509)
            .map_err(|e| SnpError::Certificate {
                what: what.to_string(),
                reason: e.to_string(),
            })
    }

    /// The certificate's DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    pub fn self_signed(&self) -> bool {
        self.subject_der == self.issuer_der
    }

    pub fn issued_by(&self, issuer: &Cert) -> bool {
        self.issuer_der == issuer.subject_der
    }

    /// Check that `issuer` signed this certificate (RSASSA-PSS SHA-384).
    pub fn verify_signed_by(&self, issuer: &Cert) -> Result<(), SnpError> {
        (&issuer.sev, &self.sev)
            .verify()
            .map_err(|e| SnpError::Signature {
                what: format!("{} certificate (signed by {})", self.cn, issuer.cn),
                reason: e.to_string(),
            })
    }

    pub fn check_validity(&self, now: u64) -> Result<(), SnpError> {
        let v = &self.x509.tbs_certificate.validity;
        let nb = v.not_before.to_unix_duration().as_secs();
        let na = v.not_after.to_unix_duration().as_secs();
        if now < nb || now > na {
            return Err(SnpError::Validity {
                cn: self.cn.clone(),
                now,
                not_before: nb,
                not_after: na,
            });
        }
        Ok(())
    }

    /// Raw extension value (contents of extnValue) by dotted OID.
    pub fn extension(&self, oid: &str) -> Option<&[u8]> {
        self.x509
            .tbs_certificate
            .extensions
            .as_ref()?
            .iter()
            .find(|e| e.extn_id.to_string() == oid)
            .map(|e| e.extn_value.as_bytes())
    }

    /// A TCB component extension: a DER INTEGER 0..=255.
    pub fn tcb_extension(&self, oid: &str, name: &str) -> Result<Option<u8>, SnpError> {
        let Some(v) = self.extension(oid) else {
            return Ok(None);
        };
        let bad = || SnpError::Certificate {
            what: self.cn.clone(),
            reason: format!("extension {name} ({oid}) is not a DER INTEGER 0..=255"),
        };
        if v.len() < 3 || v[0] != 0x02 || usize::from(v[1]) != v.len() - 2 {
            return Err(bad());
        }
        match &v[2..] {
            [x] if x & 0x80 == 0 => Ok(Some(*x)),
            [0, x] if x & 0x80 != 0 => Ok(Some(*x)),
            _ => Err(bad()),
        }
    }

    /// The hwID extension: raw bytes (legacy) or wrapped in an OCTET STRING.
    pub fn hwid(&self) -> Option<&[u8]> {
        let v = self.extension(OID_HWID)?;
        if v.len() >= 2 && v[0] == 0x04 {
            let len = usize::from(v[1]);
            if len < 0x80 && len == v.len() - 2 {
                return Some(&v[2..]);
            }
            if v[1] == 0x81 && v.len() >= 3 && usize::from(v[2]) == v.len() - 3 {
                return Some(&v[3..]);
            }
        }
        Some(v)
    }

    /// Verify an ECDSA P-384 / SHA-384 signature (`r`, `s` big-endian) by
    /// this certificate's key over `msg`, with aws-lc-rs (assembly P-384:
    /// several times faster than the pure-Rust `p384`).
    pub fn verify_p384(&self, msg: &[u8], r: &[u8; 48], s: &[u8; 48]) -> Result<bool, SnpError> {
        let raw = self
            .x509
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        if raw.len() != 97 || raw[0] != 0x04 {
            return Err(SnpError::Certificate {
                what: self.cn.clone(),
                reason: "public key is not an uncompressed ECDSA P-384 point".into(),
            });
        }
        let mut sig = [0u8; 96];
        sig[..48].copy_from_slice(r);
        sig[48..].copy_from_slice(s);
        let key = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
            raw,
        );
        Ok(key.verify(msg, &sig).is_ok())
    }

    pub fn generation(&self) -> Option<Generation> {
        Generation::from_cn(&self.cn)
    }
}

/// Parse a PEM bundle (one or more certificates) or a single DER certificate.
pub(crate) fn parse_bundle(bytes: &[u8], what: &str) -> Result<Vec<Cert>, SnpError> {
    if bytes.starts_with(b"-----BEGIN") || bytes.windows(10).any(|w| w == b"-----BEGIN") {
        Certificate::load_pem_chain(bytes)
            .map(|v| v.into_iter().map(Cert::from_x509).collect())
            .map_err(|e| SnpError::Certificate {
                what: what.to_string(),
                reason: e.to_string(),
            })
    } else {
        Ok(vec![Cert::parse(bytes, what)?])
    }
}

/// Trusted AMD keys: self-signed ARKs and the ASKs/ASVKs they signed.
#[derive(Debug, Clone)]
pub struct TrustStore {
    pub(crate) arks: Vec<Cert>,
    pub(crate) intermediates: Vec<Cert>,
}

impl TrustStore {
    /// AMD's Milan, Genoa and Turin ARK, ASK and ASVK.
    pub fn builtin() -> Result<Self, SnpError> {
        let mut store = TrustStore {
            arks: Vec::new(),
            intermediates: Vec::new(),
        };
        for pem in BUILTIN {
            store.add(pem)?;
        }
        Ok(store)
    }

    /// A store with no roots (only what `add` puts in).
    pub fn empty() -> Self {
        TrustStore {
            arks: Vec::new(),
            intermediates: Vec::new(),
        }
    }

    /// Add trusted certificates (PEM bundle or DER). Self-signed ones become
    /// roots after their self-signature verifies; others must be signed by a
    /// root already in the store (or in the same bundle).
    pub fn add(&mut self, bytes: &[u8]) -> Result<(), SnpError> {
        let certs = parse_bundle(bytes, "trusted AMD certificate")?;
        let (roots, others): (Vec<Cert>, Vec<Cert>) =
            certs.into_iter().partition(Cert::self_signed);
        for r in roots {
            r.verify_signed_by(&r)?;
            self.arks.push(r);
        }
        for c in others {
            let ark = self
                .arks
                .iter()
                .find(|a| c.issued_by(a))
                .ok_or_else(|| SnpError::UnknownRoot(c.cn.clone()))?;
            c.verify_signed_by(ark)?;
            self.intermediates.push(c);
        }
        Ok(())
    }
}
