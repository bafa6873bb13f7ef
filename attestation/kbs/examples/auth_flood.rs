//! Bench command: a flood of unauthenticated `/auth` requests during a run
//! of real RCAR flows, against an in-process KBS on 127.0.0.1 (bounded in
//! count and time). No real flow may fail. The same run as
//! `cloister kbs bench --auth-flood N`, without building the CLI:
//!
//!     cargo run -p cloister-kbs --features testing --example auth_flood -- 20000 2000
//!
//! Arguments: flood size (default 20000), real flows (default 2000).

use std::time::Duration;

use cloister_kbs::loadgen::{self, LoadConfig};
use cloister_kbs::testing::TestCcaAttester;
use cloister_kbs::{admin, Config, Kbs};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let flood: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let flows: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2_000);
    let dir = tempfile::tempdir()?;
    // The KBS refuses a data dir that others can read.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let (sk, pk) = admin::keygen()?;
    std::fs::write(dir.path().join("admin.pub.pem"), pk)?;
    let admin_key = admin::signing_key_from_pem(&sk)?;
    let anchors = dir.path().join("anchors.json");
    std::fs::write(&anchors, TestCcaAttester::trust_anchors(true))?;
    let kbs = Kbs::open(Config {
        data_dir: dir.path().to_owned(),
        insecure_http: true,
        allow_simulated: true,
        trust_anchors: Some(anchors),
        // Flood and flows share 127.0.0.1; the per-client limit would
        // throttle both, so it is off (it has its own tests).
        rate_limit_per_sec: 0,
        ..Config::default()
    })?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = kbs.clone();
    let task = tokio::spawn(async move {
        let _ = server.serve_http(listener).await;
    });
    let resp = reqwest::Client::new()
        .post(format!("{url}/kbs/v0/resource/default/key/bench"))
        .bearer_auth(admin::sign_token(&admin_key, now(), 60))
        .body(vec![0x5a; 32])
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(format!("provisioning the bench resource: {}", resp.status()).into());
    }
    let flood_run = loadgen::auth_flood(&url, flood, 16, Duration::from_secs(600));
    let flow_run = loadgen::run(
        LoadConfig {
            url: url.clone(),
            clients: 8,
            flows,
            resource: "default/key/bench".parse()?,
            max_duration: Duration::from_secs(600),
        },
        TestCcaAttester::new()?,
    );
    let (f, r) = tokio::join!(flood_run, flow_run);
    println!(
        "auth flood: {} /auth sent in {:.1} s ({} challenged, {} rate-limited, {} other); \
         during it {} real flows at 8 clients: {} ok, {} failed, {:.0} flows/s, p99 {:.2} ms; \
         attested sessions held {}",
        f.sent,
        f.elapsed.as_secs_f64(),
        f.ok,
        f.limited,
        f.errors,
        r.ok + r.errors,
        r.ok,
        r.errors,
        r.flows_per_sec,
        r.p99_ms,
        kbs.session_count()
    );
    task.abort();
    if let Some(e) = r.first_error {
        return Err(format!("a real flow failed: {e}").into());
    }
    if f.sent < flood {
        return Err(format!("the flood stopped early: {} of {flood}", f.sent).into());
    }
    Ok(())
}
