//! Sessions without server state until a guest has attested.
//!
//! `/auth` stores nothing: the session cookie carries the session id, the
//! nonce, the TEE kind and an expiry, MAC'd (HMAC-SHA256) with a key that
//! lives only in this process. `/attest` checks the MAC and the expiry and
//! records the session id in a replay cache until the cookie expires, so a
//! nonce is used once. Only a successful attestation creates server state:
//! the attested table, holding the signed token for the cookie to
//! authorise resource reads. A flood of `/auth` requests therefore costs a
//! random number and a MAC each and can never evict an attested session.
//!
//! Both tables are bounded. The replay cache never drops an unexpired entry
//! (that would re-open a nonce): when full it refuses new attestations
//! ([`SessionError::Busy`]). The attested table, full of unexpired sessions,
//! drops the one expiring first; only guests that passed appraisal can fill
//! it.
//!
//! Every function takes the time (Unix seconds) from the caller, so the
//! decisions are tested without a clock or a runtime.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use kbs_types::Tee;
use ring::hmac;

const VERSION: u8 = 1;
const ID_LEN: usize = 16;
const NONCE_LEN: usize = 32;
/// version ‖ id ‖ nonce ‖ expiry (u64 BE) ‖ tee
const BODY_LEN: usize = 1 + ID_LEN + NONCE_LEN + 8 + 1;
const MAC_LEN: usize = 32;

/// Why a session cookie could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// Not a cookie this process issued (malformed, or the MAC fails).
    #[error("unknown session: the cookie was not issued by this KBS")]
    Unknown,
    /// The cookie's expiry has passed.
    #[error("the session expired at {expired}, now {now}")]
    Expired {
        /// The cookie's expiry (Unix seconds).
        expired: i64,
        /// The time of the check.
        now: i64,
    },
    /// The nonce was already used.
    #[error("the session's nonce was already used (replayed attestation)")]
    Spent,
    /// The session has not attested (or its attested state was dropped).
    #[error("the session has not attested")]
    NotAttested,
    /// The replay cache is full of unexpired entries.
    #[error("too many attestations in flight: retry after the session lifetime")]
    Busy,
}

/// What a verified `/auth` cookie says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Session id (hex).
    pub id: String,
    /// The nonce (standard base64, as sent to the client).
    pub nonce: String,
    /// TEE announced in the Request.
    pub tee: Tee,
    /// Expiry, Unix seconds.
    pub expires: i64,
}

fn tee_code(t: &Tee) -> u8 {
    match t {
        Tee::AzSnpVtpm => 1,
        Tee::AzTdxVtpm => 2,
        Tee::Cca => 3,
        Tee::Csv => 4,
        Tee::Sample => 5,
        Tee::SampleDevice => 6,
        Tee::Se => 7,
        Tee::Sgx => 8,
        Tee::Snp => 9,
        Tee::Tdx => 10,
        Tee::HygonDcu => 11,
        Tee::Nvidia => 12,
        Tee::Tpm => 13,
        Tee::NvidiaDpu => 14,
    }
}

fn tee_of(code: u8) -> Option<Tee> {
    Some(match code {
        1 => Tee::AzSnpVtpm,
        2 => Tee::AzTdxVtpm,
        3 => Tee::Cca,
        4 => Tee::Csv,
        5 => Tee::Sample,
        6 => Tee::SampleDevice,
        7 => Tee::Se,
        8 => Tee::Sgx,
        9 => Tee::Snp,
        10 => Tee::Tdx,
        11 => Tee::HygonDcu,
        12 => Tee::Nvidia,
        13 => Tee::Tpm,
        14 => Tee::NvidiaDpu,
        _ => return None,
    })
}

#[derive(Debug, Default)]
struct Attested {
    map: HashMap<String, (i64, Arc<str>)>,
}

/// Stateless challenges, a replay cache and the attested sessions.
#[derive(Debug)]
pub struct Sessions {
    key: hmac::Key,
    ttl: i64,
    max: usize,
    max_spent: usize,
    spent: Mutex<HashMap<String, i64>>,
    attested: Mutex<Attested>,
}

impl Sessions {
    /// Sessions living `ttl_secs`; at most `max` attested sessions and
    /// `2 * max` replay-cache entries (attempts, successful or not, within
    /// one session lifetime). The MAC key is random per process (a restart
    /// invalidates pending challenges, not tokens).
    pub fn new(ttl_secs: u64, max: usize) -> Self {
        let key: [u8; 32] = rand::random();
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            ttl: i64::try_from(ttl_secs).unwrap_or(i64::MAX / 2),
            max: max.max(1),
            max_spent: max.max(1).saturating_mul(2),
            spent: Mutex::new(HashMap::new()),
            attested: Mutex::new(Attested::default()),
        }
    }

    fn cookie(&self, id: &[u8; ID_LEN], nonce: &[u8; NONCE_LEN], expires: i64, tee: u8) -> String {
        let mut body = Vec::with_capacity(BODY_LEN + MAC_LEN);
        body.push(VERSION);
        body.extend_from_slice(id);
        body.extend_from_slice(nonce);
        body.extend_from_slice(&expires.to_be_bytes());
        body.push(tee);
        let tag = hmac::sign(&self.key, &body);
        body.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(body)
    }

    /// A new challenge: (cookie value, nonce). Stores nothing.
    pub fn open(&self, tee: Tee, now: i64) -> (String, String) {
        let id: [u8; ID_LEN] = rand::random();
        let nonce: [u8; NONCE_LEN] = rand::random();
        let cookie = self.cookie(&id, &nonce, now.saturating_add(self.ttl), tee_code(&tee));
        (cookie, STANDARD.encode(nonce))
    }

    /// Check a cookie's MAC and expiry and return what it says.
    pub fn verify(&self, cookie: &str, now: i64) -> Result<Challenge, SessionError> {
        let raw = URL_SAFE_NO_PAD
            .decode(cookie.trim())
            .map_err(|_| SessionError::Unknown)?;
        if raw.len() != BODY_LEN + MAC_LEN || raw[0] != VERSION {
            return Err(SessionError::Unknown);
        }
        let (body, tag) = raw.split_at(BODY_LEN);
        hmac::verify(&self.key, body, tag).map_err(|_| SessionError::Unknown)?;
        let id = hex::encode(&body[1..1 + ID_LEN]);
        let nonce = STANDARD.encode(&body[1 + ID_LEN..1 + ID_LEN + NONCE_LEN]);
        let mut exp = [0u8; 8];
        exp.copy_from_slice(&body[1 + ID_LEN + NONCE_LEN..BODY_LEN - 1]);
        let expires = i64::from_be_bytes(exp);
        let tee = tee_of(body[BODY_LEN - 1]).ok_or(SessionError::Unknown)?;
        if now >= expires {
            return Err(SessionError::Expired {
                expired: expires,
                now,
            });
        }
        Ok(Challenge {
            id,
            nonce,
            tee,
            expires,
        })
    }

    /// Use a challenge's nonce (once): verifies the cookie and records its
    /// id in the replay cache until the cookie expires.
    pub fn take_nonce(&self, cookie: &str, now: i64) -> Result<Challenge, SessionError> {
        let c = self.verify(cookie, now)?;
        let mut spent = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        if spent.contains_key(&c.id) {
            return Err(SessionError::Spent);
        }
        if spent.len() >= self.max_spent {
            spent.retain(|_, exp| *exp > now);
            if spent.len() >= self.max_spent {
                return Err(SessionError::Busy);
            }
        }
        spent.insert(c.id.clone(), c.expires);
        Ok(c)
    }

    /// Record a successful attestation of challenge `c`; returns the cookie
    /// to re-send (same session id, expiry renewed from `now`).
    pub fn set_attested(&self, c: &Challenge, token: Arc<str>, now: i64) -> String {
        let expires = now.saturating_add(self.ttl);
        let mut g = self.attested.lock().unwrap_or_else(|e| e.into_inner());
        if g.map.len() >= self.max && !g.map.contains_key(&c.id) {
            g.map.retain(|_, (exp, _)| *exp > now);
            if g.map.len() >= self.max {
                // Full of live sessions, all of them attested guests: drop
                // the one expiring first.
                let first = g
                    .map
                    .iter()
                    .min_by_key(|(_, (exp, _))| *exp)
                    .map(|(k, _)| k.clone());
                if let Some(k) = first {
                    g.map.remove(&k);
                }
            }
        }
        g.map.insert(c.id.clone(), (expires, token));
        drop(g);
        let mut id = [0u8; ID_LEN];
        // The id is hex of ID_LEN bytes by construction.
        if let Ok(b) = hex::decode(&c.id) {
            if b.len() == ID_LEN {
                id.copy_from_slice(&b);
            }
        }
        let mut nonce = [0u8; NONCE_LEN];
        if let Ok(b) = STANDARD.decode(&c.nonce) {
            if b.len() == NONCE_LEN {
                nonce.copy_from_slice(&b);
            }
        }
        self.cookie(&id, &nonce, expires, tee_code(&c.tee))
    }

    /// The token of the attested session a cookie names.
    pub fn token(&self, cookie: &str, now: i64) -> Result<Arc<str>, SessionError> {
        let c = self.verify(cookie, now)?;
        let g = self.attested.lock().unwrap_or_else(|e| e.into_inner());
        match g.map.get(&c.id) {
            Some((exp, t)) if *exp > now => Ok(t.clone()),
            Some((exp, _)) => Err(SessionError::Expired { expired: *exp, now }),
            None => Err(SessionError::NotAttested),
        }
    }

    /// Attested sessions held (including expired ones not yet swept).
    pub fn len(&self) -> usize {
        self.attested
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    /// True when no attested session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replay-cache entries held.
    pub fn pending_len(&self) -> usize {
        self.spent.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000_000;

    #[test]
    fn nonce_is_single_use_and_32_bytes() {
        let s = Sessions::new(60, 10);
        let (cookie, nonce) = s.open(Tee::Cca, T0);
        assert_eq!(nonce.len(), 44);
        assert_eq!(STANDARD.decode(&nonce).unwrap().len(), 32);
        let c = s.take_nonce(&cookie, T0 + 1).unwrap();
        assert_eq!(c.nonce, nonce);
        assert_eq!(c.tee, Tee::Cca);
        assert_eq!(s.take_nonce(&cookie, T0 + 2), Err(SessionError::Spent));
        assert_eq!(s.token(&cookie, T0 + 2), Err(SessionError::NotAttested));
        assert_eq!(s.take_nonce("nope", T0), Err(SessionError::Unknown));
    }

    #[test]
    fn auth_stores_nothing_and_a_flood_never_evicts_attested_sessions() {
        let s = Sessions::new(60, 3);
        let (cookie, _) = s.open(Tee::Snp, T0);
        let c = s.take_nonce(&cookie, T0).unwrap();
        let cookie = s.set_attested(&c, Arc::from("tok"), T0);
        for _ in 0..10_000 {
            let _ = s.open(Tee::Snp, T0);
        }
        assert_eq!(s.len(), 1);
        assert_eq!(s.pending_len(), 1);
        assert_eq!(&*s.token(&cookie, T0 + 1).unwrap(), "tok");
    }

    #[test]
    fn forged_tampered_and_expired_cookies_are_refused() {
        let s = Sessions::new(60, 10);
        let other = Sessions::new(60, 10);
        let (cookie, _) = other.open(Tee::Cca, T0);
        assert_eq!(s.take_nonce(&cookie, T0), Err(SessionError::Unknown));
        let (cookie, _) = s.open(Tee::Cca, T0);
        let mut raw = URL_SAFE_NO_PAD.decode(&cookie).unwrap();
        raw[20] ^= 1;
        let tampered = URL_SAFE_NO_PAD.encode(&raw);
        assert_eq!(s.take_nonce(&tampered, T0), Err(SessionError::Unknown));
        assert_eq!(
            s.take_nonce(&cookie, T0 + 60),
            Err(SessionError::Expired {
                expired: T0 + 60,
                now: T0 + 60
            })
        );
        assert_eq!(
            s.take_nonce(&cookie[..cookie.len() - 2], T0),
            Err(SessionError::Unknown)
        );
    }

    #[test]
    fn replay_cache_refuses_when_full_and_frees_expired_entries() {
        let s = Sessions::new(60, 2);
        let cookies: Vec<_> = (0..5).map(|_| s.open(Tee::Cca, T0).0).collect();
        for c in &cookies[..4] {
            s.take_nonce(c, T0).unwrap();
        }
        assert_eq!(s.take_nonce(&cookies[4], T0), Err(SessionError::Busy));
        // Once the first four expire, their entries go.
        let (late, _) = s.open(Tee::Cca, T0 + 61);
        assert!(s.take_nonce(&late, T0 + 61).is_ok());
    }

    #[test]
    fn attested_table_is_bounded_and_sessions_expire() {
        let s = Sessions::new(60, 2);
        let mut cookies = Vec::new();
        for i in 0..3 {
            let (cookie, _) = s.open(Tee::Cca, T0 + i);
            let c = s.take_nonce(&cookie, T0 + i).unwrap();
            cookies.push(s.set_attested(&c, Arc::from(format!("t{i}").as_str()), T0 + i));
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.token(&cookies[0], T0 + 3), Err(SessionError::NotAttested));
        assert_eq!(&*s.token(&cookies[2], T0 + 3).unwrap(), "t2");
        assert!(matches!(
            s.token(&cookies[2], T0 + 2 + 60),
            Err(SessionError::Expired { .. })
        ));
    }
}
