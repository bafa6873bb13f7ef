//! The session table: one entry per `/auth`, bounded in size, each entry
//! expiring after a fixed lifetime. A session's nonce can be consumed once;
//! after a successful attestation the session holds the signed token so its
//! cookie can authorise resource reads until it expires.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// State of one session.
#[derive(Debug, Clone)]
pub enum SessionState {
    /// Challenge issued, nonce not used yet.
    Pending {
        /// The nonce (base64 as sent).
        nonce: String,
        /// TEE announced in the Request.
        tee: kbs_types::Tee,
    },
    /// The nonce was consumed by an attestation attempt that failed.
    Spent,
    /// Attested: the EAR token issued to it.
    Attested(Arc<str>),
}

#[derive(Debug)]
struct Entry {
    created: Instant,
    state: SessionState,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, Entry>,
    order: VecDeque<(Instant, String)>,
}

/// Bounded, expiring session table.
#[derive(Debug)]
pub struct Sessions {
    inner: Mutex<Inner>,
    ttl: Duration,
    max: usize,
}

/// Why a session could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such session (never existed, expired or evicted).
    #[error("unknown or expired session")]
    Unknown,
    /// The nonce was already used.
    #[error("the session's nonce was already used (replayed attestation)")]
    Spent,
    /// The session has not attested.
    #[error("the session has not attested")]
    NotAttested,
}

impl Sessions {
    /// A table keeping at most `max` sessions for `ttl` each.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            ttl,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means another thread panicked mid-update of
        // plain data; the table stays usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn expired(&self, created: Instant, now: Instant) -> bool {
        now.duration_since(created) >= self.ttl
    }

    /// Open a session; returns (id, nonce). Expired sessions are dropped
    /// and, if the table is full, the oldest ones are evicted.
    pub fn open(&self, tee: kbs_types::Tee) -> (String, String) {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let nonce = STANDARD.encode(rand::random::<[u8; 32]>());
        let now = Instant::now();
        let mut g = self.lock();
        let inner = &mut *g;
        while let Some((created, front)) = inner.order.front() {
            let stale = inner.map.get(front).is_none_or(|e| e.created != *created);
            if stale || self.expired(*created, now) || inner.map.len() >= self.max {
                if let Some((created, key)) = inner.order.pop_front() {
                    if inner.map.get(&key).is_some_and(|e| e.created == created) {
                        inner.map.remove(&key);
                    }
                }
            } else {
                break;
            }
        }
        inner.map.insert(
            id.clone(),
            Entry {
                created: now,
                state: SessionState::Pending {
                    nonce: nonce.clone(),
                    tee,
                },
            },
        );
        inner.order.push_back((now, id.clone()));
        (id, nonce)
    }

    /// Consume the nonce of a pending session (single use): returns its
    /// nonce and TEE and marks the session spent.
    pub fn take_nonce(&self, id: &str) -> Result<(String, kbs_types::Tee), SessionError> {
        let now = Instant::now();
        let mut g = self.lock();
        let e = g.map.get_mut(id).ok_or(SessionError::Unknown)?;
        if self.expired(e.created, now) {
            return Err(SessionError::Unknown);
        }
        match std::mem::replace(&mut e.state, SessionState::Spent) {
            SessionState::Pending { nonce, tee } => Ok((nonce, tee)),
            other => {
                e.state = other;
                Err(SessionError::Spent)
            }
        }
    }

    /// Record a successful attestation.
    pub fn set_attested(&self, id: &str, token: Arc<str>) {
        let mut g = self.lock();
        if let Some(e) = g.map.get_mut(id) {
            e.state = SessionState::Attested(token);
        }
    }

    /// The token of an attested, unexpired session.
    pub fn token(&self, id: &str) -> Result<Arc<str>, SessionError> {
        let now = Instant::now();
        let g = self.lock();
        let e = g.map.get(id).ok_or(SessionError::Unknown)?;
        if self.expired(e.created, now) {
            return Err(SessionError::Unknown);
        }
        match &e.state {
            SessionState::Attested(c) => Ok(c.clone()),
            _ => Err(SessionError::NotAttested),
        }
    }

    /// Number of sessions held (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// True when no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kbs_types::Tee;

    #[test]
    fn nonce_is_single_use_and_32_bytes() {
        let s = Sessions::new(Duration::from_secs(60), 10);
        let (id, nonce) = s.open(Tee::Cca);
        assert_eq!(nonce.len(), 44);
        assert_eq!(STANDARD.decode(&nonce).unwrap().len(), 32);
        assert_eq!(s.take_nonce(&id).unwrap().0, nonce);
        assert_eq!(s.take_nonce(&id), Err(SessionError::Spent));
        assert_eq!(s.token(&id), Err(SessionError::NotAttested));
        assert_eq!(s.take_nonce("nope"), Err(SessionError::Unknown));
    }

    #[test]
    fn table_is_bounded_and_sessions_expire() {
        let s = Sessions::new(Duration::from_secs(60), 3);
        let ids: Vec<_> = (0..10).map(|_| s.open(Tee::Cca).0).collect();
        assert_eq!(s.len(), 3);
        assert_eq!(s.take_nonce(&ids[0]), Err(SessionError::Unknown));
        assert!(s.take_nonce(&ids[9]).is_ok());

        let s = Sessions::new(Duration::from_millis(0), 3);
        let (id, _) = s.open(Tee::Cca);
        assert_eq!(s.take_nonce(&id), Err(SessionError::Unknown));
    }
}
