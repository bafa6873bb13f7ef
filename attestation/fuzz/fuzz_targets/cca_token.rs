//! Fuzz the CCA token decoder and verifier: any input must yield a decoded
//! token or an error, never a panic or a hang. Decoded tokens are also
//! verified (against an empty and a wildcard trust-anchor store), and their
//! claims re-encoded and decoded again.
#![no_main]

use std::sync::OnceLock;

use cloister_attestation::cca::{
    self, PlatformCache, PlatformClaims, RealmClaims, SigAlg, SigningKey, TrustAnchor,
    TrustAnchorStore,
};
use libfuzzer_sys::fuzz_target;

/// A wildcard P-384 anchor (matches every platform) and a small cache, so
/// decoded tokens also reach the platform signature path and the cache.
fn wildcard() -> &'static (TrustAnchorStore, PlatformCache) {
    static W: OnceLock<(TrustAnchorStore, PlatformCache)> = OnceLock::new();
    W.get_or_init(|| {
        let key = SigningKey::from_scalar(SigAlg::Es384, &[0x42; 48]).expect("fixed scalar");
        let store = TrustAnchorStore::new(vec![TrustAnchor {
            implementation_id: None,
            instance_id: None,
            key: Ok(key.public()),
            simulated: false,
        }]);
        (store, PlatformCache::new(8))
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = cca::decode(data) {
        let _ = t.verify(&TrustAnchorStore::default());
        let (store, cache) = wildcard();
        let _ = t.verify_with_cache(store, cache);
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
