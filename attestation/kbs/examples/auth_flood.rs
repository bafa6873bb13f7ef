//! Bench command: a flood of unauthenticated `/auth` requests during a run
//! of real RCAR flows, against an in-process KBS on 127.0.0.1 (bounded in
//! count and time). No real flow may fail. The same run as
//! `cloister kbs bench --auth-flood N`, without building the CLI:
//!
//!     cargo run -p cloister-kbs --features testing --example auth_flood -- 20000 2000
//!
//! Arguments: flood size (default 20000), real flows (default 2000).

use std::time::Duration;

use cloister_kbs::loadgen::{self, BenchServer, LoadConfig, BENCH_RESOURCE};
use cloister_kbs::testing::TestCcaAttester;

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
    let server = BenchServer::start(dir.path()).await?;
    let (url, kbs) = (&server.url, &server.kbs);
    let flood_run = loadgen::auth_flood(url, flood, 16, Duration::from_secs(600));
    let flow_run = loadgen::run(
        LoadConfig {
            url: url.clone(),
            clients: 8,
            flows,
            resource: BENCH_RESOURCE.parse()?,
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
    drop(server);
    if let Some(e) = r.first_error {
        return Err(format!("a real flow failed: {e}").into());
    }
    if f.sent < flood {
        return Err(format!("the flood stopped early: {} of {flood}", f.sent).into());
    }
    Ok(())
}
