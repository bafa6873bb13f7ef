//! Where an image pull gets its secrets: decryption keys, the signature
//! policy and registry credentials are KBS resources that the sandbox's
//! measured initdata names. In the guest the agent's KBS client provides
//! them; tests use [`MapResources`], which also records what was asked for
//! (so a test can show that no key was requested).

use std::collections::HashMap;
use std::sync::Mutex;

pub use cloister_kbs_client::ResourcePath;

/// Why a resource could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("KBS resource {path}: {reason}")]
pub struct ResourceError {
    /// The resource, as `kbs:///repository/type/tag`.
    pub path: String,
    /// Why it was not released (the KBS's refusal, a transport error...).
    pub reason: String,
}

/// Fetches KBS resources for the sandbox.
#[async_trait::async_trait]
pub trait ResourceProvider: Send + Sync {
    /// The plaintext bytes of the resource at `path`.
    async fn resource(&self, path: &ResourcePath) -> Result<Vec<u8>, ResourceError>;
}

/// A fixed set of resources (tests, and hosts that hold keys themselves).
/// Unknown paths are refused like a KBS would (404-style reason). Every
/// request is recorded.
#[derive(Debug, Default)]
pub struct MapResources {
    items: HashMap<ResourcePath, Vec<u8>>,
    asked: Mutex<Vec<ResourcePath>>,
}

impl MapResources {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a resource.
    pub fn insert(&mut self, path: ResourcePath, bytes: Vec<u8>) {
        self.items.insert(path, bytes);
    }

    /// Every path requested so far, in order.
    pub fn requested(&self) -> Vec<ResourcePath> {
        self.asked.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl ResourceProvider for MapResources {
    async fn resource(&self, path: &ResourcePath) -> Result<Vec<u8>, ResourceError> {
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(path.clone());
        }
        self.items.get(path).cloned().ok_or_else(|| ResourceError {
            path: path.to_kbs_uri(),
            reason: "no such resource (404)".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn map_resources_release_known_paths_and_record_requests() {
        let key: ResourcePath = "default/key/1".parse().unwrap();
        let other: ResourcePath = "default/key/2".parse().unwrap();
        let mut m = MapResources::new();
        m.insert(key.clone(), b"k".to_vec());
        assert_eq!(m.resource(&key).await.unwrap(), b"k");
        let err = m.resource(&other).await.unwrap_err();
        assert!(err.to_string().contains("kbs:///default/key/2"), "{err}");
        assert_eq!(m.requested(), vec![key, other]);
    }
}
