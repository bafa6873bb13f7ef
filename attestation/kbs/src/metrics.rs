//! Prometheus text metrics: requests by route and status, attestations by
//! TEE and outcome, and a request latency histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const BUCKETS_MS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0];

/// Counters and histogram.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    attestations: Mutex<BTreeMap<(String, &'static str), u64>>,
    buckets: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Metrics {
    /// Count one request.
    pub fn request(&self, route: &str, status: u16, elapsed: Duration) {
        {
            let mut m = self.requests.lock().unwrap_or_else(|e| e.into_inner());
            *m.entry((route.to_string(), status)).or_default() += 1;
        }
        let ms = elapsed.as_secs_f64() * 1000.0;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Count one attestation outcome (`ok`, `refused`, `malformed`).
    pub fn attestation(&self, tee: &str, outcome: &'static str) {
        let mut m = self.attestations.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((tee.to_string(), outcome)).or_default() += 1;
    }

    /// Render in Prometheus text exposition format.
    pub fn render(&self, sessions: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP kbs_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE kbs_requests_total counter");
        for ((route, status), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "kbs_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP kbs_attestations_total Attestations by TEE and outcome."
        );
        let _ = writeln!(out, "# TYPE kbs_attestations_total counter");
        for ((tee, outcome), n) in self
            .attestations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "kbs_attestations_total{{tee=\"{tee}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP kbs_request_duration_seconds Request latency.");
        let _ = writeln!(out, "# TYPE kbs_request_duration_seconds histogram");
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                out,
                "kbs_request_duration_seconds_bucket{{le=\"{}\"}} {}",
                b / 1000.0,
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "kbs_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        );
        let _ = writeln!(
            out,
            "kbs_request_duration_seconds_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "kbs_request_duration_seconds_count {count}");
        let _ = writeln!(out, "# HELP kbs_sessions Sessions currently held.");
        let _ = writeln!(out, "# TYPE kbs_sessions gauge");
        let _ = writeln!(out, "kbs_sessions {sessions}");
        out
    }
}
