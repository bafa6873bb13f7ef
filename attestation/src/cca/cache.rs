//! A bounded cache of platform tokens whose signature has verified.
//!
//! A CCA platform hands out the same platform token for every realm token
//! until it reboots (its challenge is the hash of the RAK, not a nonce), so
//! a verifier that sees many realms of one platform re-verifies the same
//! CPAK signature over and over. The cache remembers, for a trust-anchor
//! store generation, the SHA-256 of each (to-be-signed bytes, signature)
//! pair that verified; a hit skips the ECDSA verification and nothing else
//! (claims, binding, freshness and appraisal still run per token). Only
//! successes are remembered; a different store generation never hits.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// Default number of remembered platform tokens.
pub const DEFAULT_CAPACITY: usize = 1024;

/// Cache of verified platform-token signatures (FIFO eviction).
#[derive(Debug)]
pub struct PlatformCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl Default for PlatformCache {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl PlatformCache {
    /// A cache of at most `capacity` entries; 0 disables it.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of remembered tokens.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.set.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn key(generation: u64, tbs: &[u8], sig: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(generation.to_le_bytes());
        h.update((tbs.len() as u64).to_le_bytes());
        h.update(tbs);
        h.update(sig);
        h.finalize().into()
    }

    pub(crate) fn contains(&self, key: &[u8; 32]) -> bool {
        self.capacity > 0 && self.inner.lock().is_ok_and(|i| i.set.contains(key))
    }

    pub(crate) fn insert(&self, key: [u8; 32]) {
        if self.capacity == 0 {
            return;
        }
        // A poisoned lock only means another thread panicked mid-insert;
        // the set is still consistent enough to skip caching.
        let Ok(mut i) = self.inner.lock() else {
            return;
        };
        if !i.set.insert(key) {
            return;
        }
        i.order.push_back(key);
        while i.order.len() > self.capacity {
            if let Some(old) = i.order.pop_front() {
                i.set.remove(&old);
            }
        }
    }
}
