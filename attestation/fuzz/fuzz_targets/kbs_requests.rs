//! Fuzz the KBS request bodies through the real router, in process: the
//! first byte picks the endpoint — `/auth`, `/attest` (with a fresh session
//! cookie, so the body reaches the parser and the verifier), or an admin
//! write (with a fresh valid admin token, so the body reaches the policy,
//! reference-value or trust-anchor parser) — and the rest is the body.
//! Every answer must be a response below 500 (no panic, no internal error).
//! Seeds: `corpus/kbs_requests` (docs/fuzzing.md).
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cloister_kbs::{admin, Config, Kbs};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

struct Fixture {
    rt: tokio::runtime::Runtime,
    kbs: Arc<Kbs>,
    admin: p256::ecdsa::SigningKey,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        // The KBS refuses a data dir that others can read.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod 700");
        let (sk, pk) = admin::keygen().expect("admin keygen");
        std::fs::write(dir.path().join("admin.pub.pem"), pk).expect("admin key");
        let kbs = Kbs::open(Config {
            data_dir: dir.path().to_owned(),
            insecure_http: true,
            rate_limit_per_sec: 0,
            ..Config::default()
        })
        .expect("KBS opens");
        Fixture {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            kbs,
            admin: admin::signing_key_from_pem(&sk).expect("admin key parses"),
            _dir: dir,
        }
    })
}

const ADMIN_ENDPOINTS: [&str; 4] = [
    "/kbs/v0/resource-policy",
    "/kbs/v0/attestation-policy",
    "/kbs/v0/reference-value",
    "/kbs/v0/trust-anchors",
];

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn send(kbs: &Arc<Kbs>, mut req: Request<Body>) -> (StatusCode, axum::http::HeaderMap) {
    // A loopback client, as the plain-HTTP admin API requires.
    let peer: std::net::SocketAddr = ([127, 0, 0, 1], 40000).into();
    req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
    let resp = kbs.router().oneshot(req).await.expect("infallible");
    (resp.status(), resp.headers().clone())
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    f.rt.block_on(async {
        let post = |path: &str| Request::post(path).header("content-type", "application/json");
        let status = match sel % 3 {
            0 => send(&f.kbs, post("/kbs/v0/auth").body(Body::from(body.to_vec())).unwrap()).await.0,
            1 => {
                let tee = ["cca", "snp", "tdx"][usize::from(sel / 3) % 3];
                let auth = format!(r#"{{"version":"0.4.0","tee":"{tee}","extra-params":""}}"#);
                let (_, h) = send(&f.kbs, post("/kbs/v0/auth").body(Body::from(auth)).unwrap()).await;
                let cookie = h
                    .get("set-cookie")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .unwrap_or_default()
                    .to_string();
                let req = post("/kbs/v0/attest")
                    .header("cookie", cookie)
                    .body(Body::from(body.to_vec()))
                    .unwrap();
                send(&f.kbs, req).await.0
            }
            _ => {
                let ep = ADMIN_ENDPOINTS[usize::from(sel / 3) % ADMIN_ENDPOINTS.len()];
                let token = admin::sign_token(&f.admin, now(), 60);
                let req = post(ep)
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::from(body.to_vec()))
                    .unwrap();
                send(&f.kbs, req).await.0
            }
        };
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "status {status}"
        );
    });
});
