//! A bounded load generator for the KBS: N concurrent clients each running
//! full RCAR flows (auth + attest with CCA evidence from the test attester +
//! one resource) until a total flow count is reached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloister_kbs_client::{KbsClient, ResourcePath};

use crate::testing::TestCcaAttester;
use crate::{admin, Config, Kbs};

/// An in-process KBS on 127.0.0.1 for the benches, ready for flows: the
/// sim test anchors, simulated evidence allowed, no per-client rate limit
/// (load and flood share 127.0.0.1), and the resource [`BENCH_RESOURCE`].
#[derive(Debug)]
pub struct BenchServer {
    /// Its base URL.
    pub url: String,
    /// The server.
    pub kbs: std::sync::Arc<Kbs>,
    task: tokio::task::JoinHandle<()>,
}

/// The resource every bench flow fetches.
pub const BENCH_RESOURCE: &str = "default/key/bench";

impl Drop for BenchServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BenchServer {
    /// Starts it with its store in `data_dir` (made private here).
    pub async fn start(data_dir: &std::path::Path) -> Result<Self, String> {
        let err = |what: &str, e: &dyn std::fmt::Display| format!("bench KBS: {what}: {e}");
        // The KBS refuses a data dir that others can read.
        std::fs::set_permissions(
            data_dir,
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .map_err(|e| err("data dir", &e))?;
        let (sk, pk) = admin::keygen().map_err(|e| err("admin key", &e))?;
        std::fs::write(data_dir.join("admin.pub.pem"), pk).map_err(|e| err("admin key", &e))?;
        let admin_key = admin::signing_key_from_pem(&sk).map_err(|e| err("admin key", &e))?;
        let anchors = data_dir.join("anchors.json");
        std::fs::write(&anchors, TestCcaAttester::trust_anchors(true))
            .map_err(|e| err("trust anchors", &e))?;
        let kbs = Kbs::open(Config {
            data_dir: data_dir.to_owned(),
            insecure_http: true,
            allow_simulated: true,
            trust_anchors: Some(anchors),
            rate_limit_per_sec: 0,
            ..Config::default()
        })
        .map_err(|e| err("open", &e))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| err("bind", &e))?;
        let url = format!(
            "http://{}",
            listener.local_addr().map_err(|e| err("bind", &e))?
        );
        let server = kbs.clone();
        let task = tokio::spawn(async move {
            let _ = server.serve_http(listener).await;
        });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let resp = reqwest::Client::new()
            .post(format!("{url}/kbs/v0/resource/{BENCH_RESOURCE}"))
            .bearer_auth(admin::sign_token(&admin_key, now, 60))
            .body(vec![0x5a; 32])
            .send()
            .await
            .map_err(|e| err("provisioning the bench resource", &e))?;
        if !resp.status().is_success() {
            return Err(format!(
                "bench KBS: provisioning the bench resource: {}",
                resp.status()
            ));
        }
        Ok(BenchServer { url, kbs, task })
    }
}

/// One load run's parameters.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// KBS base URL.
    pub url: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Total flows.
    pub flows: usize,
    /// Resource each flow fetches.
    pub resource: ResourcePath,
    /// Stop after this long even if flows remain.
    pub max_duration: Duration,
}

/// Results.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Flows completed successfully.
    pub ok: usize,
    /// Flows that failed.
    pub errors: usize,
    /// First error seen.
    pub first_error: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
    /// Successful flows per second.
    pub flows_per_sec: f64,
    /// Median flow latency (ms).
    pub p50_ms: f64,
    /// 99th percentile flow latency (ms).
    pub p99_ms: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Run the load.
pub async fn run(cfg: LoadConfig, attester: TestCcaAttester) -> LoadReport {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.clients.max(1))
        .build()
        .unwrap_or_default();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + cfg.max_duration;
    let mut tasks = Vec::new();
    for _ in 0..cfg.clients.max(1) {
        let http = http.clone();
        let next = next.clone();
        let cfg = cfg.clone();
        let attester = attester.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            let mut first_error = None;
            while next.fetch_add(1, Ordering::Relaxed) < cfg.flows && Instant::now() < deadline {
                let t = Instant::now();
                let mut c = KbsClient::with_http(http.clone(), &cfg.url, attester.clone());
                c.allow_http(true);
                match c.get_resource(&cfg.resource).await {
                    Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1000.0),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            (lat, errors, first_error)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok((l, e, f)) => {
                lat.extend(l);
                errors += e;
                if first_error.is_none() {
                    first_error = f;
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let elapsed = start.elapsed();
    lat.sort_by(|a, b| a.total_cmp(b));
    LoadReport {
        clients: cfg.clients,
        ok: lat.len(),
        errors,
        first_error,
        elapsed,
        flows_per_sec: lat.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
    }
}

/// What an `/auth` flood got.
#[derive(Debug, Clone, Default)]
pub struct FloodReport {
    /// Requests sent.
    pub sent: usize,
    /// Answered 200 (a challenge).
    pub ok: usize,
    /// Answered 429 (rate limited).
    pub limited: usize,
    /// Any other answer or a transport error.
    pub errors: usize,
    /// Wall time.
    pub elapsed: Duration,
}

/// Send `count` unauthenticated `/auth` requests from `concurrency` tasks
/// (never attesting), stopping after `max_duration`: the hostile client of
/// the session-flooding finding. Bounded in count and time.
pub async fn auth_flood(
    url: &str,
    count: usize,
    concurrency: usize,
    max_duration: Duration,
) -> FloodReport {
    let http = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let http = http.clone();
        let next = next.clone();
        let endpoint = format!("{}/kbs/v0/auth", url.trim_end_matches('/'));
        tasks.push(tokio::spawn(async move {
            let mut r = FloodReport::default();
            while next.fetch_add(1, Ordering::Relaxed) < count && start.elapsed() < max_duration {
                r.sent += 1;
                let resp = http
                    .post(&endpoint)
                    .json(
                        &serde_json::json!({"version": "0.4.0", "tee": "snp", "extra-params": ""}),
                    )
                    .send()
                    .await;
                match resp.map(|x| x.status().as_u16()) {
                    Ok(200) => r.ok += 1,
                    Ok(429) => r.limited += 1,
                    _ => r.errors += 1,
                }
            }
            r
        }));
    }
    let mut total = FloodReport::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.sent += r.sent;
            total.ok += r.ok;
            total.limited += r.limited;
            total.errors += r.errors;
        }
    }
    total.elapsed = start.elapsed();
    total
}
