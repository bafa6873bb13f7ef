//! Per-client request rate limit: a token bucket per client IP address.
//!
//! Sync and clock-free (the caller passes the time), so it is tested
//! without a runtime. The table is bounded: when it is full, buckets that
//! have refilled completely (clients that went quiet) are dropped; if every
//! client is still active the table is cleared, which forgives the active
//! clients rather than refusing new ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// A token bucket per client address.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_clients: usize,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_sec` requests per second per client with bursts of `burst`;
    /// `per_sec == 0` disables the limit.
    pub fn new(per_sec: u32, burst: u32, max_clients: usize) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `ip` at `now`; false when the client is over its rate.
    pub fn allow(&self, ip: IpAddr, now: Instant) -> bool {
        if self.per_sec <= 0.0 {
            return true;
        }
        let mut g = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if g.len() >= self.max_clients && !g.contains_key(&ip) {
            let (per_sec, burst) = (self.per_sec, self.burst);
            g.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < burst
            });
            if g.len() >= self.max_clients {
                g.clear();
            }
        }
        let (tokens, at) = g.entry(ip).or_insert((self.burst, now));
        let refilled = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        *at = now;
        if refilled >= 1.0 {
            *tokens = refilled - 1.0;
            true
        } else {
            *tokens = refilled;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_refill_per_client() {
        let l = RateLimiter::new(10, 5, 100);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..5 {
            assert!(l.allow(a, t));
        }
        assert!(!l.allow(a, t), "the sixth request of the burst is refused");
        // Another client is not affected.
        assert!(l.allow(b, t));
        // 100 ms later one token has come back.
        assert!(l.allow(a, t + Duration::from_millis(100)));
        assert!(!l.allow(a, t + Duration::from_millis(100)));
    }

    #[test]
    fn zero_rate_disables_and_table_is_bounded() {
        let off = RateLimiter::new(0, 1, 1);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = Instant::now();
        for _ in 0..100 {
            assert!(off.allow(ip, t));
        }
        let l = RateLimiter::new(1, 1, 2);
        for i in 0..10u8 {
            assert!(l.allow(IpAddr::from([10, 0, 0, i]), t));
        }
        assert!(l.buckets.lock().unwrap().len() <= 2);
    }
}
