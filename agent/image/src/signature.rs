//! Image signature policy (containers-policy.json) and signature checks.

// STAND-IN until branch `crypt` lands (it owns this file): the announced
// API with placeholder bodies, so branch `pull` compiles and its tests run.
// On merge, take crypt's version of this file whole.
#[derive(Debug, thiserror::Error)]
#[error("policy: {0}")]
pub struct PolicyError(pub String);
#[derive(Debug, thiserror::Error)]
#[error("signature: {0}")]
pub struct SignatureError(pub String);
#[derive(Debug)]
pub struct Policy(Vec<Requirement>);
#[derive(Debug)]
pub struct Requirement(SignatureKind);
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    None,
    SimpleSigning,
    Sigstore,
}
#[derive(Debug, Clone)]
pub enum FetchedSignature {
    SimpleSigning(Vec<u8>),
    Sigstore {
        payload: Vec<u8>,
        signature_b64: String,
    },
}
impl Policy {
    pub fn parse(b: &[u8]) -> Result<Policy, PolicyError> {
        let s = String::from_utf8_lossy(b);
        Ok(Policy(vec![Requirement(if s.contains("signedBy") {
            SignatureKind::SimpleSigning
        } else {
            SignatureKind::None
        })]))
    }
    pub fn requirements(&self, _r: &str) -> &[Requirement] {
        &self.0
    }
}
impl Requirement {
    pub fn needs(&self) -> SignatureKind {
        self.0
    }
    pub fn check(&self, _r: &str, _d: &str, s: &[FetchedSignature]) -> Result<(), SignatureError> {
        if self.0 == SignatureKind::None || !s.is_empty() {
            Ok(())
        } else {
            Err(SignatureError("no signature".into()))
        }
    }
}
pub fn lookaside_url(base: &str, repo: &str, digest: &str, index: usize) -> String {
    format!(
        "{base}/{repo}@{}/signature-{}",
        digest.replace(':', "="),
        index + 1
    )
}
