//! ocicrypt layer decryption and encryption.

// STAND-IN until branch `crypt` lands (it owns this file): the announced
// API with placeholder bodies, so branch `pull` compiles and its tests run.
// On merge, take crypt's version of this file whole.
use crate::resources::{ResourcePath, ResourceProvider};
use std::collections::BTreeMap;
#[derive(Debug, thiserror::Error)]
#[error("crypt: {0}")]
pub struct CryptError(pub String);
#[derive(Debug)]
pub struct LayerKey;
pub fn is_encrypted(mt: &str) -> bool {
    mt.ends_with("+encrypted")
}
pub fn decrypted_media_type(mt: &str) -> Option<&str> {
    mt.strip_suffix("+encrypted")
}
pub fn required_keys(
    _a: &BTreeMap<String, String>,
    _k: &[ResourcePath],
) -> Result<Vec<ResourcePath>, CryptError> {
    Err(CryptError("stub".into()))
}
pub async fn unwrap_layer_key(
    _a: &BTreeMap<String, String>,
    _k: &[ResourcePath],
    _r: &dyn ResourceProvider,
) -> Result<LayerKey, CryptError> {
    Err(CryptError("stub".into()))
}
pub fn open_layer(f: std::fs::File, _k: &LayerKey) -> Result<impl std::io::Read, CryptError> {
    Ok(f)
}
