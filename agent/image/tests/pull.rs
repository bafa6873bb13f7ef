//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1):
//! umoci-built and hand-made images pushed with skopeo; platform
//! selection; digest, pin, auth and policy refusals; a registry killed
//! mid-pull. Every failure leaves nothing in the store.

#![allow(clippy::unwrap_used)]

#[path = "registry_common/mod.rs"]
mod common;

use std::sync::{Arc, Mutex};

use cloister_image::resources::{MapResources, ResourcePath};
use cloister_image::{ImageError, ImageStore, Platform, Progress, PullConfig};
use common::{push, tar, Layout, Registry};

fn config(reg: &Registry) -> PullConfig {
    PullConfig {
        insecure_registries: vec![reg.addr.clone()],
        require_policy_or_pin: false,
        platform: "linux/amd64".parse().unwrap(),
        ..PullConfig::new()
    }
}

struct Store {
    _dir: tempfile::TempDir,
    store: ImageStore,
}

fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::new(dir.path().join("images")).unwrap();
    Store { _dir: dir, store }
}

impl Store {
    fn assert_empty(&self) {
        assert!(
            self.store.layers().is_empty(),
            "layers left: {:?}",
            self.store.layers()
        );
        assert!(
            self.store.temp_entries().is_empty(),
            "temp files left: {:?}",
            self.store.temp_entries()
        );
    }
}

async fn pull(
    s: &Store,
    reference: &str,
    cfg: &PullConfig,
    res: &MapResources,
) -> Result<cloister_image::PulledImage, ImageError> {
    s.store.pull(reference, cfg, res, &mut |_| {}).await
}

/// A two-layer hand-made image pushed as `dest`; returns the layout and
/// the manifest blob.
fn two_layer_image(reg: &Registry, dest: &str, second: Vec<u8>) -> (Layout, common::Blob) {
    let l = Layout::new();
    let first = tar(|t| {
        t.dir("etc");
        t.file("etc/a", b"a");
        t.dir("var");
        t.file("var/x", b"x");
    });
    let m = l.image("amd64", &[first, second]);
    l.tag(&m, "t");
    push(l.path(), "t", &reg.addr, dest, false);
    (l, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umoci_image_pulls_unpacks_and_shares_layers() {
    let reg = Registry::start();
    let work = common::umoci_busybox_image("hello from the image\n", "v1");
    push(
        &work.path().join("layout"),
        "v1",
        &reg.addr,
        "app:v1",
        false,
    );
    let s = store();
    let res = MapResources::new();
    let events = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let ev = events.clone();
    let reference = format!("{}/app:v1", reg.addr);
    let img = s
        .store
        .pull(&reference, &config(&reg), &res, &mut move |p| {
            ev.lock().unwrap().push(p)
        })
        .await
        .unwrap();
    assert_eq!(img.reference, reference);
    assert!(img.manifest_digest.starts_with("sha256:"));
    assert_eq!(img.config.cmd, ["cat", "/marker"]);
    assert!(
        img.config.env.iter().any(|e| e == "GREETING=hi"),
        "{:?}",
        img.config.env
    );
    let top = img.layers.last().unwrap();
    assert_eq!(
        std::fs::read_to_string(top.join("marker")).unwrap(),
        "hello from the image\n"
    );
    assert!(img.layers.iter().any(|l| l.join("bin/busybox").is_file()));
    let events = events.lock().unwrap().clone();
    let last = events.last().unwrap();
    assert_eq!(last.done, last.total, "{events:?}");
    assert!(res.requested().is_empty());

    // Pulled again (a second container of the sandbox): no layer blob is
    // requested again.
    let mark = reg.mark();
    let again = pull(&s, &reference, &config(&reg), &res).await.unwrap();
    assert_eq!(again.layers, img.layers);
    for layer in reg.layer_digests("app:v1") {
        assert_eq!(
            reg.requests_after(mark, &layer),
            0,
            "{layer} was downloaded again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_stack_as_overlay_lowerdirs_with_whiteouts() {
    let reg = Registry::start();
    let second = tar(|t| {
        t.dir("etc");
        t.file("etc/.wh.a", b"");
        t.dir("var");
        t.file("var/.wh..wh..opq", b"");
        t.file("var/y", b"y");
    });
    let _image = two_layer_image(&reg, "wh:t", second);
    let s = store();
    let img = pull(
        &s,
        &format!("{}/wh:t", reg.addr),
        &config(&reg),
        &MapResources::new(),
    )
    .await
    .unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let lower: Vec<String> = img
        .layers
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let mut c = std::process::Command::new("mount");
    c.args(["-t", "overlay", "overlay", "-o"])
        .arg(format!("lowerdir={}", lower.join(":")))
        .arg(mnt.path());
    common::run(c, "mount overlay");
    let seen = (
        mnt.path().join("etc/a").exists(),
        mnt.path().join("var/x").exists(),
        std::fs::read(mnt.path().join("var/y")).ok(),
    );
    let mut c = std::process::Command::new("umount");
    c.arg(mnt.path());
    common::run(c, "umount");
    assert_eq!(seen, (false, false, Some(b"y".to_vec())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_selects_amd64_and_arm64_v8() {
    let reg = Registry::start();
    let l = Layout::new();
    let amd = l.image(
        "amd64",
        &[tar(|t| {
            t.file("marker", b"amd64");
        })],
    );
    let arm = l.image(
        "arm64",
        &[tar(|t| {
            t.file("marker", b"arm64");
        })],
    );
    let index = l.index(&[
        (&amd, "linux", "amd64", None),
        (&arm, "linux", "arm64", Some("v8")),
    ]);
    let _ = &index.digest;
    l.tag(&index, "multi");
    push(l.path(), "multi", &reg.addr, "multi:1", true);
    let reference = format!("{}/multi:1", reg.addr);
    for (platform, marker) in [("linux/amd64", "amd64"), ("linux/arm64/v8", "arm64")] {
        let s = store();
        let cfg = PullConfig {
            platform: platform.parse().unwrap(),
            ..config(&reg)
        };
        let img = pull(&s, &reference, &cfg, &MapResources::new())
            .await
            .unwrap();
        assert_eq!(
            img.manifest_digest,
            common::sha256(&reg.raw_manifest("multi:1")),
            "the index digest is the one resolved"
        );
        assert_eq!(
            std::fs::read(img.layers[0].join("marker")).unwrap(),
            marker.as_bytes()
        );
    }
    let s = store();
    let cfg = PullConfig {
        platform: Platform {
            os: "linux".into(),
            architecture: "s390x".into(),
            variant: None,
        },
        ..config(&reg)
    };
    let err = pull(&s, &reference, &cfg, &MapResources::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("linux/amd64, linux/arm64/v8"),
        "{err}"
    );
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_blob_is_refused_naming_both_digests_and_nothing_stays() {
    let reg = Registry::start();
    let second = tar(|t| {
        t.file("second", b"payload that will be tampered with");
    });
    let (l, _m) = two_layer_image(&reg, "tamper:t", second);
    let layer = reg.layer_digests("tamper:t")[1].clone();
    let path = reg.blob_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let found = common::sha256(&bytes);
    drop(l);
    let s = store();
    let err = pull(
        &s,
        &format!("{}/tamper:t", reg.addr),
        &config(&reg),
        &MapResources::new(),
    )
    .await
    .unwrap_err();
    let msg = err.chain();
    assert!(matches!(err, ImageError::Digest { .. }), "{msg}");
    assert!(msg.contains(&layer) && msg.contains(&found), "{msg}");
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_manifest_is_refused_naming_both_digests() {
    let reg = Registry::start();
    let (_l, _) = two_layer_image(
        &reg,
        "tm:t",
        tar(|t| {
            t.file("f", b"f");
        }),
    );
    let digest = common::sha256(&reg.raw_manifest("tm:t"));
    let path = reg.blob_path(&digest);
    let mut bytes = std::fs::read(&path).unwrap();
    // Still valid JSON, another digest: a space before the closing brace.
    let end = bytes.len() - 1;
    bytes.insert(end, b' ');
    std::fs::write(&path, &bytes).unwrap();
    let found = common::sha256(&bytes);
    let s = store();
    let mark = reg.mark();
    let err = pull(
        &s,
        &format!("{}/tm@{digest}", reg.addr),
        &config(&reg),
        &MapResources::new(),
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::Digest { .. }), "{msg}");
    assert!(msg.contains(&digest) && msg.contains(&found), "{msg}");
    assert_eq!(
        reg.requests_after(mark, "/blobs/"),
        0,
        "blobs fetched after a bad manifest"
    );
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_hold_and_unpinned_images_need_a_policy() {
    let reg = Registry::start();
    let (_l, _) = two_layer_image(
        &reg,
        "pinned:v1",
        tar(|t| {
            t.file("f", b"f");
        }),
    );
    let served = common::sha256(&reg.raw_manifest("pinned:v1"));
    let mark = reg.mark();
    let reference = format!("{}/pinned:v1", reg.addr);
    let other = common::sha256(b"another image");
    let s = store();
    let tee = PullConfig {
        require_policy_or_pin: true,
        ..config(&reg)
    };
    // No policy, no pin: refused before any request, saying what to do.
    let err = pull(&s, &reference, &tee, &MapResources::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::NoPolicyOrPin { .. }), "{err}");
    assert!(err.to_string().contains("--image-policy"), "{err}");
    assert_eq!(reg.requests_after(mark, "/v2/pinned"), 0);
    // Pinned to another digest: refused, naming both.
    let cfg = PullConfig {
        pinned: vec![format!("{reference}@{other}")],
        ..tee.clone()
    };
    let err = pull(&s, &reference, &cfg, &MapResources::new())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ImageError::Pin { .. }), "{msg}");
    assert!(msg.contains(&other) && msg.contains(&served), "{msg}");
    assert_eq!(reg.requests_after(mark, "/blobs/"), 0);
    s.assert_empty();
    // Pinned to its digest: pulled.
    let cfg = PullConfig {
        pinned: vec![format!("{reference}@{served}")],
        ..tee
    };
    let img = pull(&s, &reference, &cfg, &MapResources::new())
        .await
        .unwrap();
    assert_eq!(img.manifest_digest, served);
}

/// An image pushed in Docker's v2 schema 2 format (skopeo `--format
/// v2s2`) pulls and unpacks like an OCI one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_image_pulls_and_unpacks() {
    let reg = Registry::start();
    let work = common::umoci_busybox_image("docker format\n", "v1");
    let mut c = std::process::Command::new("skopeo");
    c.args([
        "--insecure-policy",
        "copy",
        "-q",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
    ])
    .arg(format!("oci:{}:v1", work.path().join("layout").display()))
    .arg(format!("docker://{}/docker:v1", reg.addr));
    common::run(c, "skopeo copy --format v2s2");
    let raw = reg.raw_manifest("docker:v1");
    let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    let s = store();
    let img = pull(
        &s,
        &format!("{}/docker:v1", reg.addr),
        &config(&reg),
        &MapResources::new(),
    )
    .await
    .unwrap();
    assert_eq!(img.manifest_digest, common::sha256(&raw));
    let top = img.layers.last().unwrap();
    assert_eq!(
        std::fs::read_to_string(top.join("marker")).unwrap(),
        "docker format\n"
    );
}

/// A registry the config does not list as insecure is spoken to over
/// HTTPS only: a plain-HTTP one is never sent a request. A name in
/// `resolve` reaches the address given there (as a guest reaches other
/// hosts through its forwards), with the URL's port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_only_where_listed_and_names_resolve_as_configured() {
    let reg = Registry::start();
    let (_l, _) = two_layer_image(
        &reg,
        "plain:v1",
        tar(|t| {
            t.file("f", b"f");
        }),
    );
    let s = store();
    let mark = reg.mark();
    let reference = format!("{}/plain:v1", reg.addr);
    let unlisted = PullConfig {
        insecure_registries: Vec::new(),
        ..config(&reg)
    };
    let err = pull(&s, &reference, &unlisted, &MapResources::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&reg.addr), "{err}");
    assert_eq!(reg.requests_after(mark, "/v2/"), 0, "{err}");
    s.assert_empty();

    // The same registry by a name nothing resolves but the config.
    let port = reg.addr.rsplit(':').next().unwrap();
    let named = format!("registry.invalid:{port}");
    let cfg = PullConfig {
        insecure_registries: vec![named.clone()],
        resolve: vec![("registry.invalid".into(), "127.0.0.1:0".parse().unwrap())],
        ..config(&reg)
    };
    let img = pull(&s, &format!("{named}/plain:v1"), &cfg, &MapResources::new())
        .await
        .unwrap();
    assert_eq!(img.layers.len(), 2);
    assert!(reg.requests_after(mark, "/v2/plain/manifests/") > 0);
}

/// A one-layer private image with file `f` = `content`, pushed to `reg`
/// as `private:t` with `tenant:s3cret`; returns its reference.
fn push_private(reg: &Registry, content: &[u8]) -> String {
    let l = Layout::new();
    let m = l.image(
        "amd64",
        &[tar(|t| {
            t.file("f", content);
        })],
    );
    l.tag(&m, "t");
    common::push_with_creds(l.path(), "t", &reg.addr, "private:t", "tenant:s3cret");
    format!("{}/private:t", reg.addr)
}

/// A containers auth.json giving `reg` the credentials `user:password`.
fn auth_json(reg: &Registry, user_password: &str) -> Vec<u8> {
    use base64::Engine as _;
    format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        reg.addr,
        base64::engine::general_purpose::STANDARD.encode(user_password)
    )
    .into_bytes()
}

/// Docker's token auth: the registry answers `Bearer realm=…`, the client
/// gets a token from the token server with the auth.json credentials the
/// KBS holds, and pulls with it. Without credentials the token server
/// refuses, and nothing is pulled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_registry_with_auth_json_from_the_kbs() {
    let reg = Registry::start_with_token_auth("tenant", "s3cret");
    let reference = push_private(&reg, b"token");
    let s = store();
    let err = pull(&s, &reference, &config(&reg), &MapResources::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Auth { .. }), "{err}");
    s.assert_empty();

    let auth_path: ResourcePath = "default/registry/auth".parse().unwrap();
    let mut res = MapResources::new();
    res.insert(auth_path.clone(), auth_json(&reg, "tenant:s3cret"));
    // The token realm is plain HTTP too: only once listed.
    let cfg = PullConfig {
        registry_auth: Some(auth_path.clone()),
        ..config(&reg)
    };
    let err = pull(&s, &reference, &cfg, &res).await.unwrap_err();
    assert!(err.to_string().contains("is plain HTTP"), "{err}");
    let mut cfg = cfg;
    cfg.insecure_registries
        .push(reg.token_addr.clone().unwrap());
    let img = pull(&s, &reference, &cfg, &res).await.unwrap();
    assert_eq!(std::fs::read(img.layers[0].join("f")).unwrap(), b"token");
    assert_eq!(res.requested(), [auth_path.clone(), auth_path]);
    let tokens = std::fs::read_to_string(reg.dir.path().join("token.log")).unwrap();
    assert!(
        tokens.contains("scope=repository%3Aprivate%3Apull")
            || tokens.contains("scope=repository:private:pull"),
        "the client asked the token server for pull access: {tokens}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_registry_with_auth_json_from_the_kbs() {
    let reg = Registry::start_with_basic_auth("tenant", "s3cret");
    let reference = push_private(&reg, b"f");
    let s = store();
    let err = pull(&s, &reference, &config(&reg), &MapResources::new())
        .await
        .unwrap_err();
    assert!(matches!(err, ImageError::Auth { .. }), "{err}");

    let auth_path: ResourcePath = "default/registry/auth".parse().unwrap();
    let mut wrong = MapResources::new();
    wrong.insert(auth_path.clone(), auth_json(&reg, "tenant:wrong"));
    let cfg = PullConfig {
        registry_auth: Some(auth_path.clone()),
        ..config(&reg)
    };
    let err = pull(&s, &reference, &cfg, &wrong).await.unwrap_err();
    assert!(err.to_string().contains("\"tenant\""), "{err}");
    s.assert_empty();

    let mut res = MapResources::new();
    res.insert(auth_path.clone(), auth_json(&reg, "tenant:s3cret"));
    let img = pull(&s, &reference, &cfg, &res).await.unwrap();
    assert_eq!(std::fs::read(img.layers[0].join("f")).unwrap(), b"f");
    assert_eq!(res.requested(), [auth_path]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_layer_entry_removes_every_layer_of_the_pull() {
    let reg = Registry::start();
    let second = tar(|t| {
        t.file("ok", b"ok");
        t.device("dev/kmsg");
    });
    let _image = two_layer_image(&reg, "dev:t", second);
    let s = store();
    let err = pull(
        &s,
        &format!("{}/dev:t", reg.addr),
        &config(&reg),
        &MapResources::new(),
    )
    .await
    .unwrap_err();
    assert!(err.chain().contains("allow_devices"), "{}", err.chain());
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_killed_mid_pull_fails_cleanly() {
    let reg = Registry::start();
    let mut big = vec![0u8; 48 << 20];
    // Incompressible-ish bytes, cheap to make.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let second = tar(|t| {
        t.file("big", &big);
    });
    drop(big);
    let _image = two_layer_image(&reg, "big:t", second);
    let s = store();
    let kill = reg.killer();
    let mut killed = false;
    let err = s
        .store
        .pull(
            &format!("{}/big:t", reg.addr),
            &config(&reg),
            &MapResources::new(),
            &mut move |p| {
                if p.total > (40 << 20) && !killed {
                    killed = true;
                    kill();
                }
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Registry { .. } | ImageError::Size { .. }),
        "{}",
        err.chain()
    );
    s.assert_empty();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_image_under_a_signing_policy_is_refused_before_any_layer_request() {
    use base64::Engine as _;
    let reg = Registry::start();
    let (_l, _m) = two_layer_image(
        &reg,
        "signed:t",
        tar(|t| {
            t.file("f", b"f");
        }),
    );
    let key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/pubkey.gpg"
    ))
    .unwrap();
    let policy = serde_json::json!({
        "default": [{"type": "reject"}],
        "transports": {"docker": {format!("{}/signed", reg.addr): [{
            "type": "signedBy",
            "keyType": "GPGKeys",
            "keyData": base64::engine::general_purpose::STANDARD.encode(key),
        }]}},
    });
    let policy_path: ResourcePath = "default/policy/images".parse().unwrap();
    let key_path: ResourcePath = "default/key/layers".parse().unwrap();
    let mut res = MapResources::new();
    res.insert(policy_path.clone(), serde_json::to_vec(&policy).unwrap());
    let cfg = PullConfig {
        signature_policy: Some(policy_path.clone()),
        lookaside: Some(format!("http://{}/lookaside", reg.addr)),
        decryption_keys: vec![key_path],
        require_policy_or_pin: true,
        ..config(&reg)
    };
    let s = store();
    let mark = reg.mark();
    let err = pull(&s, &format!("{}/signed:t", reg.addr), &cfg, &res)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ImageError::Signature { .. }),
        "{}",
        err.chain()
    );
    assert_eq!(
        reg.requests_after(mark, "/blobs/"),
        0,
        "a blob was requested before the policy check"
    );
    assert_eq!(
        res.requested(),
        [policy_path],
        "only the policy may be fetched"
    );
    s.assert_empty();
}

/// The agent runs pulls on a multi-threaded runtime: the future must be
/// `Send`.
#[test]
fn pull_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let store = ImageStore::new(dir.path().to_path_buf()).unwrap();
    let res = MapResources::new();
    let cfg = PullConfig::new();
    let mut progress = |_: Progress| {};
    let fut = store.pull("a", &cfg, &res, &mut progress);
    assert_send(&fut);
}
