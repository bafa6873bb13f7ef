//! Fuzz the TDX quote parser, the dcap-qvl verification path behind it, the
//! CCEL parser/replay and the collateral JSON loader. Seeds: attestation/testdata/tdx.
#![no_main]

use std::sync::OnceLock;

use cloister_attestation::tdx::{self, ccel, Quote, QuoteCollateralV3, TdxConfig, TdxVerifier};
use libfuzzer_sys::fuzz_target;

const COLLATERAL: &[u8] = include_bytes!("../../testdata/tdx/dcap-qvl-tdx_quote_collateral.json");
/// 2025-06-19T10:33:27Z, inside the collateral window.
const NOW: u64 = 1_750_329_207;

fn collateral() -> &'static QuoteCollateralV3 {
    static C: OnceLock<QuoteCollateralV3> = OnceLock::new();
    C.get_or_init(|| tdx::collateral_from_json(COLLATERAL).expect("seed collateral parses"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = Quote::parse(data) {
        let claims = tdx::TdxClaims::from_quote(&q, "UpToDate".into(), vec![]);
        let _ = claims.to_json();
        let _ = tdx::check_claims(&claims, &TdxConfig::default());
        if let Ok(c) = TdxVerifier::new().verify_evidence(data, collateral(), NOW) {
            let _ = c.to_json();
        }
    }
    if let Ok(rtmrs) = ccel::replay(data) {
        let _ = rtmrs;
    }
    let _ = tdx::collateral_from_json(data);
});
