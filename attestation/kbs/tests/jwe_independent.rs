//! The resource JWE opens with an independent implementation: Python
//! `jwcrypto` (Debian python3-jwcrypto, listed in scripts/install-deps.sh),
//! for both ECDH-ES+A256KW (P-256) and RSA-OAEP-256, including a JWE taken
//! from a real KBS response.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::Write;
use std::process::{Command, Stdio};

use cloister_kbs::testing::TestCcaAttester;
use cloister_kbs::{admin, jwe, Config, Kbs};
use cloister_kbs_client::kbs_types::TeePubKey;
use cloister_kbs_client::{KbsClient, ResourcePath, TeeKey};
use serde_json::{json, Value};

/// The first Python with jwcrypto and cryptography: `python3` on PATH, else
/// Debian's `/usr/bin/python3` (where python3-jwcrypto installs).
fn python_with_jwcrypto() -> String {
    let mut seen = Vec::new();
    for exe in ["python3", "/usr/bin/python3"] {
        match Command::new(exe)
            .args(["-c", "import jwcrypto, cryptography"])
            .output()
        {
            Ok(o) if o.status.success() => return exe.to_string(),
            Ok(o) => seen.push(format!(
                "{exe}: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => seen.push(format!("{exe}: {e}")),
        }
    }
    panic!(
        "no python3 with jwcrypto and cryptography ({}): run scripts/install-deps.sh \
         (apt-get install python3-jwcrypto python3-cryptography)",
        seen.join("; ")
    )
}

fn python(script: &str, stdin: &str) -> String {
    let exe = python_with_jwcrypto();
    let mut child = Command::new(&exe)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const DECRYPT: &str = r#"
import sys, json
from jwcrypto import jwk, jwe
inp = json.load(sys.stdin)
key = jwk.JWK(**inp["key"])
tok = jwe.JWE()
tok.deserialize(json.dumps(inp["jwe"]), key=key)
sys.stdout.write(tok.payload.decode())
"#;

fn ec_private_jwk(key: &p256::SecretKey) -> Value {
    serde_json::from_str(&key.to_jwk_string()).unwrap()
}

#[test]
fn ecdh_es_a256kw_opens_in_jwcrypto() {
    let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let tee = TeeKey::from_secret(sk.clone());
    let resp = jwe::encrypt(&tee.public_jwk(), b"hello from cloister").unwrap();
    let input = json!({"key": ec_private_jwk(&sk), "jwe": serde_json::to_value(&resp).unwrap()});
    assert_eq!(python(DECRYPT, &input.to_string()), "hello from cloister");
}

#[test]
fn rsa_oaep_256_opens_in_jwcrypto() {
    let gen = r#"
import json
from jwcrypto import jwk
k = jwk.JWK.generate(kty="RSA", size=2048)
print(json.dumps({"priv": json.loads(k.export_private()), "pub": json.loads(k.export_public())}))
"#;
    let keys: Value = serde_json::from_str(&python(gen, "")).unwrap();
    let tpk = TeePubKey::RSA {
        alg: "RSA-OAEP-256".into(),
        k_mod: keys["pub"]["n"].as_str().unwrap().into(),
        k_exp: keys["pub"]["e"].as_str().unwrap().into(),
    };
    let resp = jwe::encrypt(&tpk, b"rsa secret").unwrap();
    let input = json!({"key": keys["priv"], "jwe": serde_json::to_value(&resp).unwrap()});
    assert_eq!(python(DECRYPT, &input.to_string()), "rsa secret");
}

#[test]
fn kbs_response_opens_in_jwcrypto() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // The KBS refuses a data dir that others can read.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let (sk_pem, pk_pem) = admin::keygen().unwrap();
        std::fs::write(dir.path().join("admin.pub.pem"), pk_pem).unwrap();
        let admin_key = admin::signing_key_from_pem(&sk_pem).unwrap();
        let anchors = dir.path().join("anchors.json");
        std::fs::write(&anchors, TestCcaAttester::trust_anchors(true)).unwrap();
        let kbs = Kbs::open(Config {
            data_dir: dir.path().to_owned(),
            insecure_http: true,
            allow_simulated: true,
            trust_anchors: Some(anchors),
            ..Config::default()
        })
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = kbs.serve_http(listener).await;
        });
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let r = reqwest::Client::new()
            .post(format!("{url}/kbs/v0/resource/default/key/py"))
            .bearer_auth(admin::sign_token(&admin_key, now, 60))
            .body("opened by jwcrypto")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // Attest with the client library, then fetch the raw JWE with the token.
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let mut c = KbsClient::new(&url, TestCcaAttester::new().unwrap()).unwrap();
        c.allow_http(true);
        c.set_tee_key(TeeKey::from_secret(sk.clone()));
        let token = c.attest().await.unwrap();
        // The client library opens it too.
        let path: ResourcePath = "default/key/py".parse().unwrap();
        assert_eq!(c.get_resource(&path).await.unwrap(), b"opened by jwcrypto");
        let raw: Value = reqwest::Client::new()
            .get(format!("{url}/kbs/v0/resource/default/key/py"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        task.abort();
        let input = json!({"key": ec_private_jwk(&sk), "jwe": raw});
        assert_eq!(python(DECRYPT, &input.to_string()), "opened by jwcrypto");
    });
}
