//! `cloister kbs`: run the key broker (`serve`), administer one (`admin`),
//! and measure one under load (`bench`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine as _;
#[cfg(feature = "testing")]
use cloister_kbs::loadgen::{self, LoadConfig};
#[cfg(feature = "testing")]
use cloister_kbs::testing::TestCcaAttester;
use cloister_kbs::{admin, Config, Kbs};
use cloister_kbs_client::ResourcePath;

/// Arguments of `cloister kbs`.
#[derive(Debug, clap::Args)]
pub struct KbsArgs {
    #[command(subcommand)]
    command: KbsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KbsCommand {
    /// Run the KBS (HTTPS with the configured certificate, or HTTP with --insecure-http).
    Serve(ServeArgs),
    /// Administer a KBS: generate an admin key, write resources, policies,
    /// reference values and trust anchors.
    Admin(AdminArgs),
    /// Load-test an in-process KBS on loopback with full RCAR flows (builds
    /// with the `testing` feature only: it uses the test attester).
    #[cfg(feature = "testing")]
    Bench(BenchArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// TOML configuration file (every field optional).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address (overrides the config).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Data directory: store and token signing key (overrides the config).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve plain HTTP (for tests on 127.0.0.1 only).
    #[arg(long)]
    insecure_http: bool,
    /// Accept evidence from a simulated root of trust (sim backend, test
    /// attester): appraised at best "warning" and marked simulated; the
    /// default resource policy then releases to it. Off by default.
    #[arg(long, alias = "allow-sim")]
    allow_simulated: bool,
    /// Accept Trustee's insecure `tee: "sample"` evidence (never released
    /// by the default resource policy).
    #[arg(long)]
    insecure_sample: bool,
    /// SNP certificates and TDX QuoteCollateralV3 JSON for the verifiers
    /// (overrides the config's collateral_dir).
    #[arg(long, value_name = "DIR")]
    collateral_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// KBS base URL, e.g. https://kbs.example:8080.
    #[arg(long, value_name = "URL", global = true)]
    kbs: Option<String>,
    /// Admin private key (PEM) from `cloister kbs admin keygen`.
    #[arg(long, value_name = "FILE", global = true)]
    key: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for HTTPS.
    #[arg(long, value_name = "FILE", global = true)]
    cacert: Option<PathBuf>,
    /// The audience the admin token names: the KBS's `admin_audience`.
    #[arg(long, value_name = "NAME", global = true, default_value = admin::DEFAULT_AUDIENCE)]
    audience: String,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Generate an admin key pair: PREFIX.key.pem (private, 0600) and
    /// PREFIX.pub.pem (give it to the KBS: admin_public_keys, or
    /// DATA_DIR/admin.pub.pem).
    Keygen {
        /// Output prefix.
        #[arg(long, default_value = "kbs-admin")]
        out: PathBuf,
    },
    /// Store a resource (the file's bytes) at REPO/TYPE/TAG.
    SetResource {
        /// REPO/TYPE/TAG.
        path: ResourcePath,
        /// File holding the secret.
        file: PathBuf,
    },
    /// Delete the resource at REPO/TYPE/TAG.
    DeleteResource {
        /// REPO/TYPE/TAG.
        path: ResourcePath,
    },
    /// Set the attestation (appraisal) or resource policy from a Rego file.
    SetPolicy {
        /// Which policy.
        #[arg(value_enum)]
        which: PolicyKind,
        /// Rego file.
        file: PathBuf,
    },
    /// Set the reference values (file in the format `cloister verify` reads).
    SetReferenceValues {
        /// Reference values file.
        file: PathBuf,
    },
    /// Set the CCA trust anchors (trust-anchor store JSON, e.g. from `cloister sim trust-anchor`).
    SetTrustAnchors {
        /// Trust anchor store file.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum PolicyKind {
    Attestation,
    Resource,
}

#[cfg(feature = "testing")]
#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Concurrent client counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,64")]
    clients: Vec<usize>,
    /// Flows per client count.
    #[arg(long, default_value_t = 3000)]
    flows: usize,
    /// Flows of the memory run (8 clients); 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    memory_flows: usize,
    /// Upper bound on each throughput run's duration in seconds.
    #[arg(long, default_value_t = 120)]
    max_secs: u64,
    /// Upper bound on the memory run's duration in seconds.
    #[arg(long, default_value_t = 600)]
    memory_max_secs: u64,
    /// Unauthenticated /auth requests to flood the KBS with during a run of
    /// real flows (8 clients, --flows flows); 0 skips the flood run. No real
    /// flow may fail.
    #[arg(long, default_value_t = 0)]
    auth_flood: usize,
}

/// Runs `cloister kbs`.
pub fn run(args: KbsArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match args.command {
        KbsCommand::Serve(a) => rt.block_on(serve(a)),
        KbsCommand::Admin(a) => rt.block_on(admin_cmd(a)),
        #[cfg(feature = "testing")]
        KbsCommand::Bench(a) => rt.block_on(bench(a)),
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(l) = a.listen {
        cfg.listen = l;
    }
    if let Some(d) = a.data_dir {
        cfg.data_dir = d;
    }
    cfg.insecure_http |= a.insecure_http;
    cfg.allow_simulated |= a.allow_simulated;
    cfg.insecure_sample |= a.insecure_sample;
    if let Some(d) = a.collateral_dir {
        cfg.collateral_dir = Some(d);
    }
    let kbs = Kbs::open(cfg)?;
    kbs.serve().await?;
    Ok(())
}

fn http_client(cacert: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(p) = cacert {
        let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        b = b.add_root_certificate(
            reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", p.display()))?,
        );
    }
    Ok(b.build()?)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn read(p: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("reading {}", p.display()))
}

async fn admin_cmd(a: AdminArgs) -> anyhow::Result<()> {
    if let AdminCommand::Keygen { out } = &a.command {
        let (sk, pk) = admin::keygen()?;
        let key_path = PathBuf::from(format!("{}.key.pem", out.display()));
        let pub_path = PathBuf::from(format!("{}.pub.pem", out.display()));
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .with_context(|| format!("creating {} (exists already?)", key_path.display()))?;
            f.write_all(sk.as_bytes())?;
        }
        std::fs::write(&pub_path, pk).with_context(|| format!("writing {}", pub_path.display()))?;
        println!("admin private key: {}", key_path.display());
        println!("admin public key:  {}", pub_path.display());
        return Ok(());
    }
    let Some(url) = a.kbs.as_deref() else {
        bail!("--kbs URL is required for admin writes");
    };
    let Some(key) = a.key.as_deref() else {
        bail!("--key FILE (admin private key from `cloister kbs admin keygen`) is required");
    };
    let pem = std::fs::read_to_string(key).with_context(|| format!("reading {}", key.display()))?;
    let sk = admin::signing_key_from_pem(&pem)?;
    // Short-lived and single-use (random jti): one token per command.
    let token = admin::sign_token_for(&sk, now(), 120, &a.audience);
    let http = http_client(a.cacert.as_deref())?;
    let base = format!("{}/kbs/v0", url.trim_end_matches('/'));
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let (what, req) = match a.command {
        AdminCommand::Keygen { .. } => unreachable_keygen()?,
        AdminCommand::SetResource { path, file } => (
            format!("resource {path}"),
            http.post(format!("{base}/resource/{path}"))
                .body(read(&file)?),
        ),
        AdminCommand::DeleteResource { path } => (
            format!("deleted resource {path}"),
            http.delete(format!("{base}/resource/{path}")),
        ),
        AdminCommand::SetPolicy { which, file } => {
            let ep = match which {
                PolicyKind::Attestation => "attestation-policy",
                PolicyKind::Resource => "resource-policy",
            };
            (
                ep.to_string(),
                http.post(format!("{base}/{ep}"))
                    .json(&serde_json::json!({"type": "rego", "policy": b64(&read(&file)?)})),
            )
        }
        AdminCommand::SetReferenceValues { file } => (
            "reference values".into(),
            http.post(format!("{base}/reference-value"))
                .body(read(&file)?),
        ),
        AdminCommand::SetTrustAnchors { file } => (
            "trust anchors".into(),
            http.post(format!("{base}/trust-anchors"))
                .body(read(&file)?),
        ),
    };
    let resp = req
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("contacting {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("KBS refused ({status}): {detail}");
    }
    println!("ok: {what}");
    Ok(())
}

fn unreachable_keygen() -> anyhow::Result<(String, reqwest::RequestBuilder)> {
    bail!("keygen is handled before contacting a KBS")
}

#[cfg(feature = "testing")]
fn vm_hwm_kib() -> Option<u64> {
    proc_status_kib("VmHWM:")
}

#[cfg(feature = "testing")]
fn proc_status_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[cfg(feature = "testing")]
/// CPU seconds (user + system) this process has used, all threads.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 (1-based), in clock ticks of 1/100 s on Linux.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

#[cfg(feature = "testing")]
async fn bench(a: BenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("creating a temporary data dir")?;
    let server = loadgen::BenchServer::start(dir.path())
        .await
        .map_err(anyhow::Error::msg)?;
    let (url, kbs) = (&server.url, &server.kbs);
    let attester = TestCcaAttester::new()?;
    let resource: ResourcePath = loadgen::BENCH_RESOURCE.parse()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "KBS bench on {url} (in-process server, {} CPUs, loadavg before: {})",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load.trim()
    );
    println!("flow = POST /auth + POST /attest (CCA token: boot-time platform token + realm token ES384-signed per flow; server verifies, appraises, signs an EAR) + GET /resource (Bearer EAR verified, resource policy, JWE the client opens)");
    println!(
        "{:>8} {:>8} {:>7} {:>10} {:>9} {:>9} {:>12}",
        "clients", "flows", "errors", "flows/s", "p50 ms", "p99 ms", "CPU ms/flow"
    );
    let mut failed = false;
    for &clients in &a.clients {
        let cpu = cpu_secs();
        let r = loadgen::run(
            LoadConfig {
                url: url.clone(),
                clients,
                flows: a.flows,
                resource: resource.clone(),
                max_duration: Duration::from_secs(a.max_secs),
            },
            attester.clone(),
        )
        .await;
        let cpu_ms = (cpu_secs() - cpu) * 1000.0 / (r.ok + r.errors).max(1) as f64;
        println!(
            "{:>8} {:>8} {:>7} {:>10.0} {:>9.2} {:>9.2} {:>12.2}",
            r.clients, r.ok, r.errors, r.flows_per_sec, r.p50_ms, r.p99_ms, cpu_ms
        );
        if let Some(e) = &r.first_error {
            println!("  first error: {e}");
            failed = true;
        }
    }
    if a.memory_flows > 0 {
        let before = vm_hwm_kib().unwrap_or(0);
        let cpu = cpu_secs();
        let r = loadgen::run(
            LoadConfig {
                url: url.clone(),
                clients: 8,
                flows: a.memory_flows,
                resource: resource.clone(),
                max_duration: Duration::from_secs(a.memory_max_secs),
            },
            attester.clone(),
        )
        .await;
        let after = vm_hwm_kib().unwrap_or(0);
        let cpu_ms = (cpu_secs() - cpu) * 1000.0 / (r.ok + r.errors).max(1) as f64;
        println!(
            "memory run: {} flows ({} errors) at 8 clients, {:.0} flows/s, p50 {:.2} ms, p99 {:.2} ms, {:.2} CPU ms/flow",
            r.ok, r.errors, r.flows_per_sec, r.p50_ms, r.p99_ms, cpu_ms
        );
        println!(
            "peak RSS (VmHWM, server + load generator in one process): {} KiB before, {} KiB after; RSS now {} KiB; sessions held: {} (cap {})",
            before,
            after,
            proc_status_kib("VmRSS:").unwrap_or(0),
            kbs.session_count(),
            kbs.config().max_sessions
        );
        if r.ok + r.errors < a.memory_flows {
            println!(
                "  stopped by --memory-max-secs {} after {} of {} flows",
                a.memory_max_secs,
                r.ok + r.errors,
                a.memory_flows
            );
        }
        if let Some(e) = &r.first_error {
            println!("  first error: {e}");
            failed = true;
        }
    }
    if a.auth_flood > 0 {
        let flood = loadgen::auth_flood(url, a.auth_flood, 16, Duration::from_secs(a.max_secs));
        let flows = loadgen::run(
            LoadConfig {
                url: url.clone(),
                clients: 8,
                flows: a.flows,
                resource: resource.clone(),
                max_duration: Duration::from_secs(a.max_secs),
            },
            attester.clone(),
        );
        let (f, r) = tokio::join!(flood, flows);
        println!(
            "auth flood: {} /auth sent in {:.1} s ({} challenged, {} rate-limited, {} other) during {} real flows at 8 clients: {} ok, {} failed, p99 {:.2} ms; attested sessions held {}",
            f.sent,
            f.elapsed.as_secs_f64(),
            f.ok,
            f.limited,
            f.errors,
            r.ok + r.errors,
            r.ok,
            r.errors,
            r.p99_ms,
            kbs.session_count()
        );
        if r.errors > 0 || f.sent < a.auth_flood {
            if let Some(e) = &r.first_error {
                println!("  first error: {e}");
            }
            failed = true;
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("loadavg after: {}", load.trim());
    drop(server);
    if failed {
        bail!("some flows failed");
    }
    Ok(())
}
