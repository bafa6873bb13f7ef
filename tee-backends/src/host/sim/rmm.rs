//! The software RMM of one sim realm: its RIM (fixed at launch), RPV, REMs
//! (extended on the guest's request), a fresh RAK, and token signing.

use cloister_attestation::cca::{
    self, HashAlg, PlatformClaims, PlatformProfile, RealmClaims, RealmProfile, SigAlg, SigningKey,
    SwComponent, TokenSpec,
};
use cloister_measure::cca::{HashAlgo, RealmMeasurement, Rems};

use super::platform::{self, SimPlatform};

/// Errors from the sim RMM.
#[derive(Debug, thiserror::Error)]
pub enum RmmError {
    /// REM extension refused.
    #[error("REM extension: {0}")]
    Extend(#[from] cloister_measure::cca::CcaError),
    /// Building the token failed.
    #[error("building the CCA token: {0}")]
    Token(#[from] cca::BuildError),
}

/// One realm's RMM state.
#[derive(Debug)]
pub struct SimRmm {
    platform: SimPlatform,
    rak: SigningKey,
    rim: RealmMeasurement,
    rpv: [u8; 64],
    rems: Rems,
}

fn hash_alg(a: HashAlgo) -> HashAlg {
    match a {
        HashAlgo::Sha256 => HashAlg::Sha256,
        HashAlgo::Sha384 => HashAlg::Sha384,
        HashAlgo::Sha512 => HashAlg::Sha512,
    }
}

impl SimRmm {
    /// A realm with this RIM and RPV; a fresh RAK.
    pub fn new(platform: SimPlatform, rim: RealmMeasurement, rpv: [u8; 64]) -> Self {
        Self {
            platform,
            rak: SigningKey::generate(SigAlg::Es384),
            rim,
            rpv,
            rems: Rems::new(rim.algo()),
        }
    }

    /// `RSI_MEASUREMENT_EXTEND`.
    pub fn extend(&mut self, index: u8, data: &[u8]) -> Result<(), RmmError> {
        Ok(self.rems.extend(usize::from(index), data)?)
    }

    /// The platform claims of the sim platform (challenge set by the builder).
    pub fn platform_claims(&self) -> PlatformClaims {
        let (ty, m, signer, version) = platform::rmm_component();
        PlatformClaims {
            profile: PlatformProfile::V1,
            challenge: vec![0; 32],
            implementation_id: self.platform.implementation_id.clone(),
            instance_id: self.platform.instance_id.clone(),
            config: platform::CONFIG.to_vec(),
            lifecycle: platform::LIFECYCLE,
            sw_components: vec![SwComponent {
                component_type: Some(ty),
                measurement: m,
                version: Some(version),
                signer_id: signer,
                hash_alg: Some("sha-256".into()),
            }],
            verification_service: None,
            hash_algo_id: "sha-256".into(),
        }
    }

    /// A CCA token (tag 907, realm profile 1.0.0) for `challenge`, the
    /// realm signed by this realm's RAK and the platform by the CPAK, the
    /// platform challenge bound to the RAK.
    pub fn token(&self, challenge: [u8; 64]) -> Result<Vec<u8>, RmmError> {
        let rems = self.rems.0.map(|r| r.measurement().as_bytes().to_vec());
        let spec = TokenSpec {
            platform: self.platform_claims(),
            realm: RealmClaims {
                profile: Some(RealmProfile::V1),
                challenge,
                personalization_value: self.rpv,
                hash_algo_id: hash_alg(self.rim.algo()),
                rak: Vec::new(),
                rak_hash_algo_id: HashAlg::Sha256,
                rim: self.rim.as_bytes().to_vec(),
                rems,
                instance_id: None,
                mec_policy: None,
            },
            rak_as_cose_key: true,
            collection: cca::Collection::Tag907,
        };
        Ok(cca::build(&spec, &self.platform.key, &self.rak)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_attestation::cca::store::TrustAnchorStore;
    use cloister_measure::cca::Rem;

    #[test]
    fn token_verifies_against_the_sim_trust_anchor_and_carries_state() {
        let d = tempfile::tempdir().unwrap();
        let p = SimPlatform::load_or_create(d.path()).unwrap();
        let store = TrustAnchorStore::new(vec![p.trust_anchor()]);
        let rim = RealmMeasurement::from_bytes(HashAlgo::Sha256, &[7; 32]).unwrap();
        let mut rmm = SimRmm::new(p, rim, [9; 64]);
        rmm.extend(1, b"hello").unwrap();
        assert!(rmm.extend(4, b"x").is_err());
        assert!(rmm.extend(0, &[0; 65]).is_err());
        let tok = rmm.token([5; 64]).unwrap();
        let t = cca::decode(&tok).unwrap();
        assert_eq!(t.collection, cca::Collection::Tag907);
        assert_eq!(t.realm_claims.challenge, [5; 64]);
        assert_eq!(t.realm_claims.personalization_value, [9; 64]);
        assert_eq!(t.realm_claims.rim, vec![7; 32]);
        let mut rem = Rem::new(HashAlgo::Sha256);
        rem.extend(b"hello").unwrap();
        assert_eq!(t.realm_claims.rems[1], rem.measurement().as_bytes());
        assert_eq!(t.realm_claims.profile, Some(RealmProfile::V1));
        let v = t.verify(&store);
        assert!(v.ok(), "{v:?}");
        assert!(v.simulated());
        // The guest-side RPV reader agrees with the full decoder.
        let rpv = crate::evidence::reported_initdata_field(crate::TeeKind::Sim, &tok).unwrap();
        assert_eq!(rpv, vec![9; 64]);
    }

    #[test]
    fn each_realm_gets_a_fresh_rak() {
        let d = tempfile::tempdir().unwrap();
        let p = SimPlatform::load_or_create(d.path()).unwrap();
        let rim = RealmMeasurement::from_bytes(HashAlgo::Sha256, &[7; 32]).unwrap();
        let a = cca::decode(&SimRmm::new(p.clone(), rim, [0; 64]).token([1; 64]).unwrap()).unwrap();
        let b = cca::decode(&SimRmm::new(p, rim, [0; 64]).token([1; 64]).unwrap()).unwrap();
        assert_ne!(a.realm_claims.rak, b.realm_claims.rak);
        assert_ne!(a.platform_claims.challenge, b.platform_claims.challenge);
    }
}
