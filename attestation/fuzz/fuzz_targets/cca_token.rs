//! Fuzz the CCA token decoder and verifier: any input must yield a decoded
//! token or an error, never a panic or a hang. Decoded tokens are also
//! verified (against an empty and a wildcard trust-anchor store), and their
//! claims re-encoded and decoded again.
#![no_main]

use cloister_attestation::cca::{self, PlatformClaims, RealmClaims, TrustAnchorStore};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = cca::decode(data) {
        let _ = t.verify(&TrustAnchorStore::default());
        // Claims survive a CBOR round trip unchanged.
        let p =
            PlatformClaims::from_value(&t.platform_claims.to_value()).expect("platform re-decode");
        assert_eq!(p, t.platform_claims);
        let r = RealmClaims::from_value(&t.realm_claims.to_value()).expect("realm re-decode");
        assert_eq!(r, t.realm_claims);
        let _ = PlatformClaims::from_json(&p.to_json()).expect("platform JSON round trip");
        let _ = RealmClaims::from_json(&r.to_json()).expect("realm JSON round trip");
    }
    // The bare claim decoders on arbitrary input.
    let _ = PlatformClaims::from_cbor(data);
    let _ = RealmClaims::from_cbor(data);
    let _ = cloister_attestation::appraisal::unwrap_cca_evidence(data);
});
