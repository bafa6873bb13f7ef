//! A test attester: CCA tokens (tag 907, built by `cloister_attestation::cca`)
//! carrying the requested report data, signed with the published Trustee test
//! CPAK and RAK (`testdata/`, copied from `vectors/cca`). The KBS accepts them
//! when the matching trust anchor is configured; registered with
//! `"simulated": true` it is treated as the sim backend's evidence.
//!
//! For tests, the load generator and `cloister attest --tee test`; the sim
//! backend's own attester replaces it for real sim guests.

use cloister_attestation::cca::{self, SigningKey, TokenSpec};
use cloister_kbs_client::client::cca_evidence_json;
use cloister_kbs_client::{Attester, AttesterError};
use kbs_types::Tee;
use serde_json::Value;

const CPAK: &str = include_str!("../testdata/trustee-cpak-priv.json");
const RAK: &str = include_str!("../testdata/trustee-rak-priv.json");
const TASTORE: &str = include_str!("../testdata/trustee-tastore.json");
const IMPLEMENTATION_ID: &str = "7f454c4602010100000000000000000003003e00010000005058000000000000";
const INSTANCE_ID: &str = "0107060504030201000f0e0d0c0b0a090817161514131211101f1e1d1c1b1a1918";

/// The RIM the test attester reports (SHA-256 size).
pub const TEST_RIM: [u8; 32] = [0x42; 32];

/// CCA test attester.
#[derive(Clone)]
pub struct TestCcaAttester {
    cpak: SigningKey,
    rak: SigningKey,
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

impl TestCcaAttester {
    /// With the published test keys.
    pub fn new() -> Result<Self, TestAttesterError> {
        let parse = |s: &str| -> Result<SigningKey, TestAttesterError> {
            let v: Value = serde_json::from_str(s).map_err(|e| TestAttesterError(e.to_string()))?;
            SigningKey::from_jwk(&v).map_err(TestAttesterError)
        };
        Ok(Self {
            cpak: parse(CPAK)?,
            rak: parse(RAK)?,
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

    /// A CCA token binding `report_data`.
    pub fn token(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TestAttesterError> {
        let rem = vec![0u8; 32];
        let mut spec = TokenSpec::new(
            *report_data,
            self.rpv,
            self.rim.clone(),
            [rem.clone(), rem.clone(), rem.clone(), rem],
        );
        spec.platform.implementation_id =
            hex::decode(IMPLEMENTATION_ID).map_err(|e| TestAttesterError(e.to_string()))?;
        spec.platform.instance_id =
            hex::decode(INSTANCE_ID).map_err(|e| TestAttesterError(e.to_string()))?;
        let cpak = if self.wrong_platform_key {
            SigningKey::generate(cca::SigAlg::Es384)
        } else {
            self.cpak.clone()
        };
        cca::build(&spec, &cpak, &self.rak).map_err(|e| TestAttesterError(e.to_string()))
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
