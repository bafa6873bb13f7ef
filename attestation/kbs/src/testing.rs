//! A test attester: CCA tokens (tag 907, built by `cloister_attestation::cca`)
//! carrying the requested report data, signed with the published Trustee test
//! CPAK and RAK (`testdata/`, copied from `vectors/cca`). The KBS accepts them
//! when the matching trust anchor is configured; registered with
//! `"simulated": true` it is treated as the sim backend's evidence.
//!
//! Like a real CCA platform, it signs the platform token once: its claims
//! (challenge = hash of the RAK, measurements, lifecycle) are fixed for a
//! boot, so the RMM hands out the same signed platform token with every
//! realm token. Only the realm token (carrying the report data) is built
//! and signed (ES384 with `aws-lc-rs`, whose assembly P-384 signs about
//! three times faster than `ring`'s) per call.
//!
//! For tests, the load generator and `cloister attest --attester test`; the sim
//! backend's own attester replaces it for real sim guests.

use std::sync::Arc;

use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use ciborium::value::{Integer, Value as Cbor};
use cloister_attestation::cca::{self, RealmClaims, SigningKey, TokenSpec};
use cloister_kbs_client::client::cca_evidence_json;
use cloister_kbs_client::{Attester, AttesterError};
use coset::{CoseSign1Builder, HeaderBuilder, TaggedCborSerializable};
use kbs_types::Tee;
use serde_json::Value;

const CPAK: &str = include_str!("../testdata/trustee-cpak-priv.json");
const RAK: &str = include_str!("../testdata/trustee-rak-priv.json");
const TASTORE: &str = include_str!("../testdata/trustee-tastore.json");
const IMPLEMENTATION_ID: &str = "7f454c4602010100000000000000000003003e00010000005058000000000000";
const INSTANCE_ID: &str = "0107060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918";

/// The RIM the test attester reports (SHA-256 size).
pub const TEST_RIM: [u8; 32] = [0x42; 32];

/// What is fixed for the attester's "boot": the signed platform token and
/// the realm claims template with the RAK in place.
struct Boot {
    /// The platform COSE_Sign1 (tagged), signed once with the CPAK.
    platform_token: Vec<u8>,
    /// Realm claims with the RAK set; challenge, RPV and RIM are filled per token.
    realm: RealmClaims,
    /// The RAK as an `aws-lc-rs` key pair (ES384, fixed-size `r‖s`).
    rak: EcdsaKeyPair,
}

/// CCA test attester.
#[derive(Clone)]
pub struct TestCcaAttester {
    rak: SigningKey,
    boot: Arc<Boot>,
    /// Realm personalization value (initdata digest, zero-padded).
    pub rpv: [u8; 64],
    /// Realm initial measurement.
    pub rim: Vec<u8>,
    /// Sign the platform token with a random key instead of the CPAK the
    /// trust anchor names (evidence that fails appraisal).
    pub wrong_platform_key: bool,
}

impl std::fmt::Debug for TestCcaAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCcaAttester").finish_non_exhaustive()
    }
}

/// Test attester setup failures.
#[derive(Debug, thiserror::Error)]
#[error("test attester: {0}")]
pub struct TestAttesterError(pub String);

fn err(e: impl std::fmt::Display) -> TestAttesterError {
    TestAttesterError(e.to_string())
}

fn spec(
    report_data: [u8; 64],
    rpv: [u8; 64],
    rim: Vec<u8>,
) -> Result<TokenSpec, TestAttesterError> {
    let rem = vec![0u8; 32];
    let mut spec = TokenSpec::new(
        report_data,
        rpv,
        rim,
        [rem.clone(), rem.clone(), rem.clone(), rem],
    );
    spec.platform.implementation_id = hex::decode(IMPLEMENTATION_ID).map_err(err)?;
    spec.platform.instance_id = hex::decode(INSTANCE_ID).map_err(err)?;
    Ok(spec)
}

/// The two entries of a tag-907 collection: (platform, realm) COSE_Sign1 bytes.
fn split_collection(token: &[u8]) -> Result<(Vec<u8>, Vec<u8>), TestAttesterError> {
    let v: Cbor = ciborium::de::from_reader(token).map_err(err)?;
    let Cbor::Tag(cca::TAG_907, inner) = v else {
        return Err(TestAttesterError(
            "builder did not produce a tag-907 token".into(),
        ));
    };
    let Cbor::Map(entries) = *inner else {
        return Err(TestAttesterError("tag-907 content is not a map".into()));
    };
    let (mut plat, mut realm) = (None, None);
    for (k, v) in entries {
        let bytes = match v {
            Cbor::Array(mut a) if a.len() == 2 => match a.pop() {
                Some(Cbor::Bytes(b)) => b,
                _ => continue,
            },
            _ => continue,
        };
        match k.as_integer().and_then(|i| i64::try_from(i).ok()) {
            Some(cca::KEY_PLATFORM) => plat = Some(bytes),
            Some(cca::KEY_REALM) => realm = Some(bytes),
            _ => {}
        }
    }
    match (plat, realm) {
        (Some(p), Some(r)) => Ok((p, r)),
        _ => Err(TestAttesterError(
            "token lacks a platform or realm entry".into(),
        )),
    }
}

fn collection_907(platform: Vec<u8>, realm: Vec<u8>) -> Result<Vec<u8>, TestAttesterError> {
    let entry = |b: Vec<u8>| {
        Cbor::Array(vec![
            Cbor::Integer(Integer::from(cca::CONTENT_FORMAT_263)),
            Cbor::Bytes(b),
        ])
    };
    let v = Cbor::Tag(
        cca::TAG_907,
        Box::new(Cbor::Map(vec![
            (
                Cbor::Integer(Integer::from(cca::KEY_PLATFORM)),
                entry(platform),
            ),
            (Cbor::Integer(Integer::from(cca::KEY_REALM)), entry(realm)),
        ])),
    );
    let mut out = Vec::with_capacity(2048);
    ciborium::ser::into_writer(&v, &mut out).map_err(err)?;
    Ok(out)
}

impl TestCcaAttester {
    /// With the published test keys.
    pub fn new() -> Result<Self, TestAttesterError> {
        let parse = |s: &str| -> Result<SigningKey, TestAttesterError> {
            let v: Value = serde_json::from_str(s).map_err(err)?;
            SigningKey::from_jwk(&v).map_err(TestAttesterError)
        };
        let cpak = parse(CPAK)?;
        let rak = parse(RAK)?;
        // "Boot": build one full token with the library builder and keep its
        // platform token (whose challenge is the RAK hash) and realm claims.
        let full =
            cca::build(&spec([0; 64], [0; 64], TEST_RIM.to_vec())?, &cpak, &rak).map_err(err)?;
        let decoded = cca::decode(&full).map_err(err)?;
        let (platform_token, _) = split_collection(&full)?;
        let rak_pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            &rak.to_scalar(),
            &rak.public().to_sec1(),
        )
        .map_err(|e| TestAttesterError(format!("RAK for aws-lc-rs: {e}")))?;
        Ok(Self {
            rak,
            boot: Arc::new(Boot {
                platform_token,
                realm: decoded.realm_claims,
                rak: rak_pair,
            }),
            rpv: [0; 64],
            rim: TEST_RIM.to_vec(),
            wrong_platform_key: false,
        })
    }

    /// Trust-anchor store JSON for this attester's platform; `simulated`
    /// marks it as a sim platform.
    pub fn trust_anchors(simulated: bool) -> String {
        if !simulated {
            return TASTORE.to_string();
        }
        match serde_json::from_str::<Value>(TASTORE) {
            Ok(Value::Array(mut list)) => {
                for e in &mut list {
                    e["simulated"] = Value::Bool(true);
                }
                Value::Array(list).to_string()
            }
            _ => TASTORE.to_string(),
        }
    }

    /// Set the RPV to an initdata digest (zero-padded to 64 bytes).
    pub fn set_init_data_digest(&mut self, digest: &[u8]) {
        self.rpv = [0; 64];
        let n = digest.len().min(64);
        self.rpv[..n].copy_from_slice(&digest[..n]);
    }

    /// A CCA token binding `report_data`: the boot's platform token plus a
    /// freshly signed realm token.
    pub fn token(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TestAttesterError> {
        if self.wrong_platform_key {
            let s = spec(*report_data, self.rpv, self.rim.clone())?;
            let cpak = SigningKey::generate(cca::SigAlg::Es384);
            return cca::build(&s, &cpak, &self.rak).map_err(err);
        }
        let mut realm = self.boot.realm.clone();
        realm.challenge = *report_data;
        realm.personalization_value = self.rpv;
        realm.rim = self.rim.clone();
        realm.validate().map_err(err)?;
        let mut payload = Vec::with_capacity(1024);
        ciborium::ser::into_writer(&realm.to_value(), &mut payload).map_err(err)?;
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let realm_token = CoseSign1Builder::new()
            .protected(
                HeaderBuilder::new()
                    .algorithm(coset::iana::Algorithm::ES384)
                    .build(),
            )
            .payload(payload)
            .try_create_signature(b"", |tbs| {
                self.boot
                    .rak
                    .sign(&rng, tbs)
                    .map(|s| s.as_ref().to_vec())
                    .map_err(|e| TestAttesterError(format!("signing the realm token: {e}")))
            })?
            .build()
            .to_tagged_vec()
            .map_err(err)?;
        collection_907(self.boot.platform_token.clone(), realm_token)
    }
}

impl Attester for TestCcaAttester {
    fn tee(&self) -> Tee {
        Tee::Cca
    }
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Value, AttesterError> {
        let token = self
            .token(report_data)
            .map_err(|e| AttesterError(e.to_string()))?;
        Ok(cca_evidence_json(&token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_attestation::cca::TrustAnchorStore;

    #[test]
    fn tokens_share_the_boot_platform_token_and_verify() {
        let a = TestCcaAttester::new().unwrap();
        let store = TrustAnchorStore::parse(&TestCcaAttester::trust_anchors(false)).unwrap();
        let t1 = a.token(&[1; 64]).unwrap();
        let t2 = a.token(&[2; 64]).unwrap();
        let (p1, r1) = split_collection(&t1).unwrap();
        let (p2, r2) = split_collection(&t2).unwrap();
        assert_eq!(p1, p2, "platform token is fixed per boot");
        assert_ne!(r1, r2);
        for (t, rd) in [(&t1, [1u8; 64]), (&t2, [2u8; 64])] {
            let tok = cca::decode(t).unwrap();
            assert_eq!(tok.realm_claims.challenge, rd);
            let v = tok.verify(&store);
            assert!(v.ok(), "{:?}", v.checks);
        }
        // A platform token signed by another key does not verify.
        let mut bad = a.clone();
        bad.wrong_platform_key = true;
        let tok = cca::decode(&bad.token(&[3; 64]).unwrap()).unwrap();
        assert!(!tok.verify(&store).ok());
    }
}
