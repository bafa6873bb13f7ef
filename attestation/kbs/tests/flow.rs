//! The KBS on 127.0.0.1: the full RCAR flow and every refusal the issue
//! lists, each checked for status, reason and that nothing was released.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::Path;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use cloister_kbs::testing::TestCcaAttester;
use cloister_kbs::{admin, Config, Kbs};
use cloister_kbs_client::kbs_types::{
    Attestation, Challenge, CompositeEvidence, InitData, Response as Jwe, RuntimeData,
};
use cloister_kbs_client::{report_data, Attester, KbsClient, ResourcePath, TeeKey};
use serde_json::{json, Value};

struct Server {
    url: String,
    admin: p256::ecdsa::SigningKey,
    kbs: Arc<Kbs>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn write_admin_key(dir: &Path) -> p256::ecdsa::SigningKey {
    let (sk, pk) = admin::keygen().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("admin.pub.pem"), pk).unwrap();
    admin::signing_key_from_pem(&sk).unwrap()
}

async fn start_with(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Server {
    // The KBS refuses a data dir others can read (tempdir is 0755 here).
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let admin = if dir.join("admin.key.pem").exists() {
        admin::signing_key_from_pem(&std::fs::read_to_string(dir.join("admin.key.pem")).unwrap())
            .unwrap()
    } else {
        let k = write_admin_key(dir);
        use p256::pkcs8::EncodePrivateKey;
        std::fs::write(
            dir.join("admin.key.pem"),
            k.to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        k
    };
    let anchors = dir.join("anchors.json");
    std::fs::write(&anchors, TestCcaAttester::trust_anchors(true)).unwrap();
    let mut cfg = Config {
        data_dir: dir.to_owned(),
        insecure_http: true,
        allow_simulated: true,
        trust_anchors: Some(anchors),
        max_body_bytes: 64 * 1024,
        ..Config::default()
    };
    tweak(&mut cfg);
    let kbs = Kbs::open(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let k = kbs.clone();
    let task = tokio::spawn(async move {
        let _ = k.serve_http(listener).await;
    });
    Server {
        url,
        admin,
        kbs,
        task,
    }
}

async fn start(dir: &Path) -> Server {
    start_with(dir, |_| {}).await
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl Server {
    fn admin_token(&self) -> String {
        admin::sign_token(&self.admin, now(), 60)
    }

    async fn set_resource(&self, path: &str, value: &[u8]) {
        let r = reqwest::Client::new()
            .post(format!("{}/kbs/v0/resource/{path}", self.url))
            .bearer_auth(self.admin_token())
            .body(value.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    async fn set_resource_policy(&self, rego: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}/kbs/v0/resource-policy", self.url))
            .bearer_auth(self.admin_token())
            .json(&json!({"policy": URL_SAFE_NO_PAD.encode(rego)}))
            .send()
            .await
            .unwrap()
    }
}

/// A manual RCAR session for refusal tests.
struct Session {
    http: reqwest::Client,
    url: String,
    cookie: String,
    nonce: String,
    key: TeeKey,
}

async fn auth(url: &str) -> Session {
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{url}/kbs/v0/auth"))
        .json(&json!({"version": "0.4.0", "tee": "cca", "extra-params": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("kbs-session-id="));
    let raw = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["extra-params"], json!(""), "{raw}");
    let c: Challenge = serde_json::from_value(v).unwrap();
    Session {
        http,
        url: url.into(),
        cookie,
        nonce: c.nonce,
        key: TeeKey::generate(),
    }
}

impl Session {
    fn attestation(&self, nonce: &str, attester: &TestCcaAttester) -> Value {
        let pk = self.key.public_jwk();
        let rd = report_data(nonce, &pk, "").unwrap();
        let a = Attestation {
            init_data: None,
            runtime_data: RuntimeData {
                nonce: nonce.into(),
                tee_pubkey: pk,
            },
            tee_evidence: CompositeEvidence {
                primary_evidence: attester.evidence(&rd).unwrap(),
                additional_evidence: String::new(),
            },
        };
        serde_json::to_value(a).unwrap()
    }

    async fn post_attest(&self, cookie: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/kbs/v0/attest", self.url))
            .header("cookie", cookie)
            .json(body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, cookie: Option<&str>, token: Option<&str>) -> (u16, String) {
        let mut req = self
            .http
            .get(format!("{}/kbs/v0/resource/{path}", self.url));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }
}

fn assert_problem(status: u16, body: &Value, want_status: u16, kind: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["status"], json!(want_status), "{body}");
    assert_eq!(body["title"], json!(kind), "{body}");
    // The type is the protocol's where it has one, ours otherwise.
    let ty = body["type"].as_str().unwrap();
    assert!(
        ty.starts_with("https://github.com/confidential-containers/kbs/errors/")
            || ty == format!("tag:cloister,2026:kbs/errors/{kind}"),
        "{body}"
    );
    assert!(!body["detail"].as_str().unwrap().is_empty(), "{body}");
}

fn problem_of(status: u16, text: &str, want: u16, kind: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    assert_problem(status, &v, want, kind);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_flow_releases_resource_by_token_and_by_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"the secret").await;

    let mut client = KbsClient::new(&s.url, TestCcaAttester::new().unwrap()).unwrap();
    client.allow_http(true);
    let path: ResourcePath = "default/key/1".parse().unwrap();
    assert_eq!(client.get_resource(&path).await.unwrap(), b"the secret");

    // Token: EAR ES256 with the key in the jwk header, tee-pubkey where Trustee looks.
    let token = client.token().unwrap().to_string();
    let parts: Vec<&str> = token.split('.').collect();
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["jwk"], s.kbs.token_public_jwk());
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let tpk = claims
        .pointer("/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/tee-pubkey")
        .unwrap();
    assert_eq!(
        tpk,
        &serde_json::to_value(client.tee_key().public_jwk()).unwrap()
    );
    assert_eq!(
        claims["submods"]["cpu0"]["ear.cloister.simulated"],
        json!(true)
    );

    // Cookie authorisation of the attested session.
    let attester = TestCcaAttester::new().unwrap();
    let sess = auth(&s.url).await;
    let body = sess.attestation(&sess.nonce, &attester);
    let (st, v) = sess.post_attest(&sess.cookie, &body).await;
    assert_eq!(st, 200, "{v}");
    let (st, text) = sess.get("default/key/1", Some(&sess.cookie), None).await;
    assert_eq!(st, 200, "{text}");
    let jwe: Jwe = serde_json::from_str(&text).unwrap();
    assert_eq!(sess.key.decrypt(&jwe).unwrap(), b"the secret");

    // A missing resource is 404 with a reason.
    let (st, text) = sess.get("default/key/none", Some(&sess.cookie), None).await;
    problem_of(st, &text, 404, "ResourceNotFound");

    // Metrics and health.
    let m = reqwest::get(format!("{}/metrics", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("kbs_attestations_total{tee=\"cca\",outcome=\"ok\"} 2"),
        "{m}"
    );
    assert!(m.contains("kbs_request_duration_seconds_bucket"), "{m}");
    let h = reqwest::get(format!("{}/health", s.url)).await.unwrap();
    assert_eq!(h.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_nonce_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"x").await;
    let sess = auth(&s.url).await;
    let attester = TestCcaAttester::new().unwrap();
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let body = sess.attestation(&wrong, &attester);
    let (st, v) = sess.post_attest(&sess.cookie, &body).await;
    assert_problem(st, &v, 401, "NonceMismatch");
    assert!(v.get("token").is_none());
    let (st, text) = sess.get("default/key/1", Some(&sess.cookie), None).await;
    problem_of(st, &text, 401, "NotAttested");

    // Right nonce field but evidence bound to another nonce: appraisal fails.
    let sess = auth(&s.url).await;
    let mut body = sess.attestation(&wrong, &attester);
    body["runtime-data"]["nonce"] = json!(sess.nonce);
    let (st, v) = sess.post_attest(&sess.cookie, &body).await;
    assert_problem(st, &v, 401, "AttestationFailed");
    assert!(v["detail"].as_str().unwrap().contains("report_data"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_attestation_and_foreign_cookie_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"x").await;
    let attester = TestCcaAttester::new().unwrap();

    let a = auth(&s.url).await;
    let b = auth(&s.url).await;
    let body_a = a.attestation(&a.nonce, &attester);
    // A's evidence with B's cookie: the nonce is B's, not A's.
    let (st, v) = b.post_attest(&b.cookie, &body_a).await;
    assert_problem(st, &v, 401, "NonceMismatch");
    // A attests.
    let (st, v) = a.post_attest(&a.cookie, &body_a).await;
    assert_eq!(st, 200, "{v}");
    // Replay on the same session: nonce already used.
    let (st, v) = a.post_attest(&a.cookie, &body_a).await;
    assert_problem(st, &v, 401, "NonceReused");
    // Replay on a fresh session: nonce mismatch.
    let c = auth(&s.url).await;
    let (st, v) = c.post_attest(&c.cookie, &body_a).await;
    assert_problem(st, &v, 401, "NonceMismatch");
    // B's cookie (never attested) does not read A's resource; nor does a made-up one.
    let (st, text) = a.get("default/key/1", Some(&b.cookie), None).await;
    problem_of(st, &text, 401, "NotAttested");
    let (st, text) = a
        .get("default/key/1", Some("kbs-session-id=00"), None)
        .await;
    problem_of(st, &text, 401, "InvalidSession");
    let (st, text) = a.get("default/key/1", None, None).await;
    problem_of(st, &text, 401, "Unauthenticated");
    // Attest without a cookie.
    let (st, v) = a.post_attest("other=1", &body_a).await;
    assert_problem(st, &v, 401, "MissingCookie");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_from_another_kbs_is_refused() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let s1 = start(d1.path()).await;
    let s2 = start(d2.path()).await;
    s1.set_resource("default/key/1", b"x").await;
    let mut c = KbsClient::new(&s2.url, TestCcaAttester::new().unwrap()).unwrap();
    c.allow_http(true);
    let token = c.attest().await.unwrap();
    let sess = auth(&s1.url).await;
    let (st, text) = sess.get("default/key/1", None, Some(&token)).await;
    problem_of(st, &text, 401, "InvalidToken");
    assert!(text.contains("signature"), "{text}");
    // A token whose body was altered after signing.
    let mut c1 = KbsClient::new(&s1.url, TestCcaAttester::new().unwrap()).unwrap();
    c1.allow_http(true);
    let good = c1.attest().await.unwrap();
    let p: Vec<&str> = good.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p[1]).unwrap()).unwrap();
    claims["submods"]["cpu0"]["ear.status"] = json!("affirming");
    claims["submods"]["cpu0"]["ear.cloister.simulated"] = json!(false);
    let forged = format!(
        "{}.{}.{}",
        p[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        p[2]
    );
    let (st, text) = sess.get("default/key/1", None, Some(&forged)).await;
    problem_of(st, &text, 401, "InvalidToken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_jwe_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"the secret").await;
    let attester = TestCcaAttester::new().unwrap();
    let sess = auth(&s.url).await;
    let (st, _) = sess
        .post_attest(&sess.cookie, &sess.attestation(&sess.nonce, &attester))
        .await;
    assert_eq!(st, 200);
    let (_, text) = sess.get("default/key/1", Some(&sess.cookie), None).await;
    let wire: Value = serde_json::from_str(&text).unwrap();
    let open = |v: &Value| -> Result<Vec<u8>, String> {
        let j: Jwe = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        sess.key.decrypt(&j).map_err(|e| e.to_string())
    };
    assert_eq!(open(&wire).unwrap(), b"the secret");
    for field in ["ciphertext", "tag", "iv", "encrypted_key"] {
        let mut t = wire.clone();
        let mut raw = URL_SAFE_NO_PAD.decode(t[field].as_str().unwrap()).unwrap();
        raw[0] ^= 0x80;
        t[field] = json!(URL_SAFE_NO_PAD.encode(raw));
        assert!(open(&t).is_err(), "tampered {field} opened");
    }
    // Protected header changed (AAD no longer matches).
    let mut t = wire.clone();
    let mut ph: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(t["protected"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    ph["kid"] = json!("x");
    t["protected"] = json!(URL_SAFE_NO_PAD.encode(ph.to_string()));
    assert!(open(&t).is_err(), "tampered header opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_failing_appraisal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"x").await;
    let mut attester = TestCcaAttester::new().unwrap();
    attester.wrong_platform_key = true;
    let mut c = KbsClient::new(&s.url, attester).unwrap();
    c.allow_http(true);
    let err = c
        .get_resource(&"default/key/1".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(
        err.to_string().contains("evidence failed appraisal"),
        "{err}"
    );
    assert!(c.token().is_none());

    // Garbage evidence: 400 with the reason.
    let sess = auth(&s.url).await;
    let mut body = sess.attestation(&sess.nonce, &TestCcaAttester::new().unwrap());
    body["tee-evidence"]["primary_evidence"] = json!({"token": [1, 2, 3]});
    let (st, v) = sess.post_attest(&sess.cookie, &body).await;
    assert_problem(st, &v, 400, "EvidenceMalformed");

    // Initdata whose digest is not the RPV.
    let mut c = KbsClient::new(&s.url, TestCcaAttester::new().unwrap()).unwrap();
    c.allow_http(true);
    c.set_init_data("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n".into());
    let err = c.attest().await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("init_data"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matching_initdata_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"x").await;
    let body = "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n";
    let digest = cloister_kbs::server::init_data_digest(&InitData {
        format: "toml".into(),
        body: body.into(),
    })
    .unwrap();
    let mut attester = TestCcaAttester::new().unwrap();
    attester.set_init_data_digest(&digest);
    let mut c = KbsClient::new(&s.url, attester).unwrap();
    c.allow_http(true);
    c.set_init_data(body.into());
    assert_eq!(
        c.get_resource(&"default/key/1".parse().unwrap())
            .await
            .unwrap(),
        b"x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resource_denied_by_policy() {
    // Without allow_simulated (the default), sim evidence gets no token at
    // all: the appraisal is contraindicated and names the claim.
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), |c| c.allow_simulated = false).await;
    s.set_resource("default/key/1", b"x").await;
    let mut c = KbsClient::new(&s.url, TestCcaAttester::new().unwrap()).unwrap();
    c.allow_http(true);
    let err = c
        .get_resource(&"default/key/1".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(err.to_string().contains("simulated"), "{err}");
    assert!(c.token().is_none());

    // A custom policy restricting the repository.
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"x").await;
    s.set_resource("other/key/1", b"y").await;
    let r = s
        .set_resource_policy("package policy\nimport rego.v1\ndefault allow := false\nallow if startswith(data[\"resource-path\"], \"default/\")\n")
        .await;
    assert_eq!(r.status(), 200);
    let mut c = KbsClient::new(&s.url, TestCcaAttester::new().unwrap()).unwrap();
    c.allow_http(true);
    assert_eq!(
        c.get_resource(&"default/key/1".parse().unwrap())
            .await
            .unwrap(),
        b"x"
    );
    let err = c
        .get_resource(&"other/key/1".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // A policy that does not compile is refused and the old one stays.
    let r = s.set_resource_policy("package policy\nallow if {").await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        c.get_resource(&"default/key/1".parse().unwrap())
            .await
            .unwrap(),
        b"x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_tee_needs_insecure_flag_and_is_never_released() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/kbs/v0/auth", s.url))
        .json(&json!({"version": "0.4.0", "tee": "sample", "extra-params": ""}))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_problem(st, &r.json().await.unwrap(), 401, "SampleEvidenceDisabled");

    struct Sample;
    impl Attester for Sample {
        fn tee(&self) -> cloister_kbs_client::kbs_types::Tee {
            cloister_kbs_client::kbs_types::Tee::Sample
        }
        fn evidence(&self, rd: &[u8; 64]) -> Result<Value, cloister_kbs_client::AttesterError> {
            Ok(
                json!({"svn": "1", "report_data": base64::engine::general_purpose::STANDARD.encode(rd)}),
            )
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), |c| c.insecure_sample = true).await;
    s.set_resource("default/key/1", b"x").await;
    let mut c = KbsClient::new(&s.url, Sample).unwrap();
    c.allow_http(true);
    let token = c.attest().await.unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        claims.pointer(
            "/submods/cpu0/ear.veraison.annotated-evidence/runtime_data_claims/insecure-sample"
        ),
        Some(&json!(true))
    );
    let err = c
        .get_resource(&"default/key/1".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_writes_need_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/kbs/v0/resource/default/key/1", s.url);
    let r = http.post(&url).body("x").send().await.unwrap();
    let st = r.status().as_u16();
    assert_problem(st, &r.json().await.unwrap(), 401, "AdminUnauthorized");
    let (other, _) = admin::keygen().unwrap();
    let bad = admin::sign_token(&admin::signing_key_from_pem(&other).unwrap(), now(), 60);
    for token in [bad.as_str(), "not.a.jwt", "x"] {
        let r = http
            .post(&url)
            .bearer_auth(token)
            .body("x")
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        assert_problem(st, &r.json().await.unwrap(), 401, "AdminUnauthorized");
    }
    let expired = admin::sign_token(&s.admin, now() - 600, 60);
    let r = http
        .post(&url)
        .bearer_auth(expired)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    for ep in [
        "resource-policy",
        "attestation-policy",
        "reference-value",
        "trust-anchors",
    ] {
        let r = http
            .post(format!("{}/kbs/v0/{ep}", s.url))
            .bearer_auth(&bad)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{ep}");
    }
    let r = http.delete(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // Nothing was stored: an attested client finds no resource.
    let mut c = KbsClient::new(&s.url, TestCcaAttester::new().unwrap()).unwrap();
    c.allow_http(true);
    let err = c
        .get_resource(&"default/key/1".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
    // The admin token is not an attestation token: no secret reads with it.
    s.set_resource("default/key/1", b"x").await;
    let sess = auth(&s.url).await;
    let (st, text) = sess
        .get("default/key/1", None, Some(&s.admin_token()))
        .await;
    problem_of(st, &text, 401, "InvalidToken");
    // Delete works with the admin token.
    let r = http
        .delete(&url)
        .bearer_auth(s.admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let err = c
        .get_resource(&"default/key/1".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(404), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_bodies_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let http = reqwest::Client::new();
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("auth", b"{".to_vec(), 400, "MalformedRequest"),
        ("auth", b"[]".to_vec(), 400, "MalformedRequest"),
        (
            "auth",
            br#"{"version":"0.4.0","tee":"nope","extra-params":""}"#.to_vec(),
            400,
            "MalformedRequest",
        ),
        (
            "auth",
            br#"{"version":"9.0.0","tee":"cca","extra-params":""}"#.to_vec(),
            400,
            "ProtocolVersion",
        ),
        (
            "auth",
            br#"{"version":"0.4.0","tee":"sgx","extra-params":""}"#.to_vec(),
            400,
            "UnsupportedTee",
        ),
        ("auth", vec![b' '; 65 * 1024], 413, "BodyTooLarge"),
    ];
    for (ep, body, want, kind) in cases {
        let r = http
            .post(format!("{}/kbs/v0/{ep}", s.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        assert_problem(st, &v, want, kind);
    }
    // Attest: malformed JSON and oversized body on a valid session.
    let sess = auth(&s.url).await;
    let r = http
        .post(format!("{}/kbs/v0/attest", s.url))
        .header("cookie", &sess.cookie)
        .body("{\"runtime-data\": 5}")
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_problem(st, &r.json().await.unwrap(), 400, "MalformedRequest");
    let sess = auth(&s.url).await;
    let mut body = sess.attestation(&sess.nonce, &TestCcaAttester::new().unwrap());
    body["tee-evidence"]["additional_evidence"] = json!("a".repeat(70 * 1024));
    let (st, v) = sess.post_attest(&sess.cookie, &body).await;
    assert_problem(st, &v, 413, "BodyTooLarge");
    // Unsupported tee key.
    let sess = auth(&s.url).await;
    let mut body = sess.attestation(&sess.nonce, &TestCcaAttester::new().unwrap());
    body["runtime-data"]["tee-pubkey"]["crv"] = json!("P-521");
    let (st, v) = sess.post_attest(&sess.cookie, &body).await;
    assert_problem(st, &v, 400, "UnsupportedTeeKey");
    // Bad resource paths and unknown endpoints.
    let (st, text) = sess.get("a/../b", Some(&sess.cookie), None).await;
    assert!(st == 400 || st == 404, "{st} {text}");
    let r = http
        .get(format!("{}/kbs/v0/nothing", s.url))
        .send()
        .await
        .unwrap();
    let st = r.status().as_u16();
    assert_problem(st, &r.json().await.unwrap(), 404, "NotFound");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_resources_and_policies() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = start(dir.path()).await;
        s.set_resource("default/key/1", b"kept").await;
        s.set_resource("default/key/2", b"hidden").await;
        let r = s
            .set_resource_policy("package policy\nimport rego.v1\ndefault allow := false\nallow if data[\"resource-path\"] == \"default/key/1\"\n")
            .await;
        assert_eq!(r.status(), 200);
    }
    let s = start(dir.path()).await;
    let mut c = KbsClient::new(&s.url, TestCcaAttester::new().unwrap()).unwrap();
    c.allow_http(true);
    assert_eq!(
        c.get_resource(&"default/key/1".parse().unwrap())
            .await
            .unwrap(),
        b"kept"
    );
    let err = c
        .get_resource(&"default/key/2".parse().unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    // The token signing key persisted too: the old token still works.
    let token = c.token().unwrap().to_string();
    drop(s);
    let s = start(dir.path()).await;
    let sess = auth(&s.url).await;
    let (st, _) = sess.get("default/key/1", None, Some(&token)).await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reattests_on_401() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), |c| c.token_lifetime_secs = 1).await;
    s.set_resource("default/key/1", b"x").await;
    let mut c = KbsClient::new(&s.url, TestCcaAttester::new().unwrap()).unwrap();
    c.allow_http(true);
    let path: ResourcePath = "default/key/1".parse().unwrap();
    assert_eq!(c.get_resource(&path).await.unwrap(), b"x");
    let first = c.token().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    // The token expired: the KBS answers 401, the client attests again.
    let sess = auth(&s.url).await;
    let (st, text) = sess.get("default/key/1", None, Some(&first)).await;
    problem_of(st, &text, 401, "InvalidToken");
    assert_eq!(c.get_resource(&path).await.unwrap(), b"x");
    assert_ne!(c.token().unwrap(), first);
}

// ---- hardening (issue 12 §2, §3) -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_flood_never_evicts_an_attested_session() {
    let dir = tempfile::tempdir().unwrap();
    // A small table: the old one evicted the oldest session, attested or not.
    let s = start_with(dir.path(), |c| {
        c.max_sessions = 4;
        c.rate_limit_per_sec = 0;
    })
    .await;
    s.set_resource("default/key/1", b"kept").await;
    let attester = TestCcaAttester::new().unwrap();
    let a = auth(&s.url).await;
    let (st, v) = a
        .post_attest(&a.cookie, &a.attestation(&a.nonce, &attester))
        .await;
    assert_eq!(st, 200, "{v}");
    for _ in 0..500 {
        let r = a
            .http
            .post(format!("{}/kbs/v0/auth", s.url))
            .json(&json!({"version": "0.4.0", "tee": "cca", "extra-params": ""}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // /auth stored nothing; the attested session still reads.
    assert_eq!(s.kbs.session_count(), 1);
    let (st, text) = a.get("default/key/1", Some(&a.cookie), None).await;
    assert_eq!(st, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_iss_and_the_attest_response_follow_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"x").await;
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/kbs/v0/auth", s.url))
        .json(&json!({"version": "0.4.0", "tee": "cca", "extra-params": ""}))
        .send()
        .await
        .unwrap();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    // Plain HTTP here: no Secure (HTTPS adds it; unit test in server.rs).
    assert!(
        !set.contains("Secure;") && !set.ends_with("Secure"),
        "{set}"
    );

    let a = auth(&s.url).await;
    let attester = TestCcaAttester::new().unwrap();
    let r = a
        .http
        .post(format!("{}/kbs/v0/attest", s.url))
        .header("cookie", &a.cookie)
        .json(&a.attestation(&a.nonce, &attester))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // /attest re-sends the session cookie, and the re-sent cookie works.
    let resent = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(resent.starts_with("kbs-session-id="), "{resent}");
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["iss"], json!("cloister-kbs"), "{claims}");
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());
    // Sim evidence: never affirming, hardware not claimed genuine.
    let cpu0 = &claims["submods"]["cpu0"];
    assert_eq!(cpu0["ear.status"], json!("warning"), "{claims}");
    assert_eq!(
        cpu0["ear.trustworthiness-vector"]["hardware"],
        json!(32),
        "{claims}"
    );
    let (st, text) = a.get("default/key/1", Some(&resent), None).await;
    assert_eq!(st, 200, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_names_the_claim_but_not_the_expected_value() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let sess = auth(&s.url).await;
    let attester = TestCcaAttester::new().unwrap();
    let wrong = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut body = sess.attestation(&wrong, &attester);
    body["runtime-data"]["nonce"] = json!(sess.nonce);
    let (st, v) = sess.post_attest(&sess.cookie, &body).await;
    assert_problem(st, &v, 401, "AttestationFailed");
    assert_eq!(
        v["type"],
        json!("https://github.com/confidential-containers/kbs/errors/VerificationFailed")
    );
    let detail = v["detail"].as_str().unwrap();
    assert!(detail.contains("report_data"), "{detail}");
    // The expected report data is the binding of this session's nonce: not in the body.
    let expected = hex::encode(report_data(&sess.nonce, &sess.key.public_jwk(), "").unwrap());
    assert!(!detail.contains(&expected[..32]), "{detail}");
    assert!(!detail.contains("expected"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tokens_are_single_use_short_lived_and_audience_bound() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/kbs/v0/resource/default/key/1", s.url);
    let post = |token: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let r = http
                .post(&url)
                .bearer_auth(token)
                .body("x")
                .send()
                .await
                .unwrap();
            let st = r.status().as_u16();
            (st, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let t = s.admin_token();
    assert_eq!(post(t.clone()).await.0, 200);
    let (st, v) = post(t).await;
    assert_problem(st, &v, 401, "AdminUnauthorized");
    assert!(v["detail"].as_str().unwrap().contains("jti"), "{v}");
    let (st, v) = post(admin::sign_token_for(&s.admin, now(), 60, "another-kbs")).await;
    assert_problem(st, &v, 401, "AdminUnauthorized");
    assert!(v["detail"].as_str().unwrap().contains("aud"), "{v}");
    let (st, v) = post(admin::sign_token(&s.admin, now(), 3600)).await;
    assert_problem(st, &v, 401, "AdminUnauthorized");
    assert!(v["detail"].as_str().unwrap().contains("lifetime"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_admin_listener_takes_the_admin_api_off_the_main_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = start_with(dir.path(), |c| {
        c.admin_listen = Some("127.0.0.1:1".parse().unwrap());
    })
    .await;
    let http = reqwest::Client::new();
    // On the main listener the admin API is gone.
    let r = http
        .post(format!("{}/kbs/v0/resource/default/key/1", s.url))
        .bearer_auth(s.admin_token())
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = http
        .post(format!("{}/kbs/v0/resource-policy", s.url))
        .bearer_auth(s.admin_token())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // On the admin listener it works.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_url = format!("http://{}", listener.local_addr().unwrap());
    let k = s.kbs.clone();
    let task = tokio::spawn(async move {
        let _ = k.serve_admin_http(listener).await;
    });
    let r = http
        .post(format!("{admin_url}/kbs/v0/resource/default/key/1"))
        .bearer_auth(s.admin_token())
        .body("on-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // ... and the admin listener serves no RCAR.
    let r = http
        .post(format!("{admin_url}/kbs/v0/auth"))
        .json(&json!({"version": "0.4.0", "tee": "cca", "extra-params": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    task.abort();
    let mut c = KbsClient::new(&s.url, TestCcaAttester::new().unwrap()).unwrap();
    c.allow_http(true);
    assert_eq!(
        c.get_resource(&"default/key/1".parse().unwrap())
            .await
            .unwrap(),
        b"on-admin"
    );
}

#[test]
fn a_data_dir_others_can_read_is_refused_and_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = Kbs::open(Config {
        data_dir: data.clone(),
        ..Config::default()
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("0755") && err.contains("chmod 700"), "{err}");
    // A missing one is created 0700, the signing key 0600.
    let fresh = dir.path().join("fresh");
    let kbs = Kbs::open(Config {
        data_dir: fresh.clone(),
        ..Config::default()
    })
    .unwrap();
    drop(kbs);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("token-signing-key.pem")), 0o600);
    assert_eq!(mode(&fresh.join("store")), 0o700);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_resources_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path()).await;
    s.set_resource("default/key/1", b"x").await;
    let res_dir = std::fs::read_dir(dir.path().join("store"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_dir(p).unwrap().next().is_some())
        .unwrap();
    for f in std::fs::read_dir(&res_dir).unwrap() {
        let m = f.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o600);
    }
}
