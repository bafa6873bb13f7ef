//! Decrypt + verify + unpack of one gzip layer (512 MiB of tar by default),
//! three ways in one run, printed side by side:
//!
//! - in-process: `ocicrypt::unwrap_layer_key` (JWE RSA-OAEP, key from a
//!   `MapResources`), `open_layer` (HMAC over the whole ciphertext, then
//!   AES-256-CTR), then the crate's unpacker (`unpack::unpack_layer`:
//!   gunzip with flate2/zlib-rs, the confined `openat2(RESOLVE_IN_ROOT)`
//!   unpack and the diff_id SHA-256 check) into a temp dir;
//! - `skopeo copy --decryption-key` to a new OCI layout, then
//!   `umoci unpack` of it (the host tools' path);
//! - the single-core limit: `gunzip -c LAYER | sha256sum` of the same
//!   plaintext gzip bytes.
//!
//! The image is made in a temp dir: pseudo-random but compressible file
//! contents, packed into an OCI layout and encrypted by skopeo 1.9 with
//! `--encryption-key jwe:` (an openssl RSA key). `CLOISTER_BENCH_LAYER_MIB`
//! sets the tar size, `CLOISTER_BENCH_RUNS` the runs of each (default 3).
//!
//! Run: `cargo bench -p cloister-image --bench decrypt_unpack`

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloister_image::manifest::Compression;
use cloister_image::ocicrypt;
use cloister_image::reference::Digest;
use cloister_image::resources::{MapResources, ResourcePath};
use cloister_image::unpack::{self, UnpackOptions};
use sha2::{Digest as _, Sha256};

fn sh(dir: &Path, script: &str) {
    let st = Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("sh");
    assert!(st.success(), "failed: {script}\n(install the tools with scripts/install-deps.sh: skopeo, umoci, openssl)");
}

/// Deterministic, compressible file bytes: words from a small vocabulary
/// chosen by xorshift, with some random runs (gzip ratio about 3:1).
fn fill(buf: &mut [u8], state: &mut u64) {
    const WORDS: [&[u8]; 16] = [
        b"alpha ",
        b"bravo ",
        b"charlie ",
        b"delta ",
        b"echo ",
        b"foxtrot ",
        b"golf ",
        b"hotel ",
        b"india ",
        b"juliet ",
        b"kilo ",
        b"lima ",
        b"mike ",
        b"november ",
        b"oscar ",
        b"papa\n",
    ];
    let mut i = 0;
    while i < buf.len() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let r = *state;
        let chunk: &[u8] = if r.is_multiple_of(7) {
            &r.to_le_bytes()
        } else {
            WORDS[(r >> 8) as usize % 16]
        };
        let n = chunk.len().min(buf.len() - i);
        buf[i..i + n].copy_from_slice(&chunk[..n]);
        i += n;
    }
}

struct Image {
    dir: tempfile::TempDir,
    tar_bytes: u64,
    gz_digest: String,
    enc_digest: String,
    diff_id: String,
    annotations: BTreeMap<String, String>,
}

fn digest_hex(d: &str) -> &str {
    d.strip_prefix("sha256:").expect("sha256")
}

fn build_image(mib: u64) -> Image {
    let dir = tempfile::Builder::new()
        .prefix("cloister-bench-layer")
        .tempdir()
        .expect("tempdir");
    let d = dir.path();
    let blobs = d.join("img/blobs/sha256");
    fs::create_dir_all(&blobs).expect("mkdir");
    // The layer: tar of 8 MiB files, gzip (flate2, default level).
    let gz_tmp = d.join("layer.tar.gz");
    struct HashingWriter<W: Write> {
        inner: W,
        hash: Sha256,
        bytes: u64,
    }
    impl<W: Write> Write for HashingWriter<W> {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = self.inner.write(b)?;
            self.hash.update(&b[..n]);
            self.bytes += n as u64;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }
    let gz = flate2::write::GzEncoder::new(
        BufWriter::new(fs::File::create(&gz_tmp).expect("create")),
        flate2::Compression::default(),
    );
    let mut hw = HashingWriter {
        inner: gz,
        hash: Sha256::new(),
        bytes: 0,
    };
    {
        let mut builder = tar::Builder::new(&mut hw);
        let file_mib = 8u64;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = vec![0u8; (file_mib << 20) as usize];
        for i in 0..mib.div_ceil(file_mib) {
            fill(&mut buf, &mut state);
            let mut h = tar::Header::new_gnu();
            h.set_size(buf.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            h.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut h, format!("data/{}/file-{i:04}", i % 8), &buf[..])
                .expect("tar append");
        }
        builder.finish().expect("tar finish");
    }
    let diff_id = format!("sha256:{}", hex::encode(hw.hash.clone().finalize()));
    let tar_bytes = hw.bytes;
    let mut gz = hw.inner.finish().expect("gzip finish");
    gz.flush().expect("flush");
    drop(gz);
    let gz_bytes = fs::read(&gz_tmp).expect("read");
    let gz_digest = format!("sha256:{}", hex::encode(Sha256::digest(&gz_bytes)));
    let gz_size = gz_bytes.len();
    drop(gz_bytes);
    fs::rename(&gz_tmp, blobs.join(digest_hex(&gz_digest))).expect("rename");
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id.clone()]},
    })
    .to_string();
    let config_digest = format!("sha256:{}", hex::encode(Sha256::digest(config.as_bytes())));
    fs::write(blobs.join(digest_hex(&config_digest)), &config).expect("config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": gz_digest, "size": gz_size}],
    })
    .to_string();
    let manifest_digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(manifest.as_bytes()))
    );
    fs::write(blobs.join(digest_hex(&manifest_digest)), &manifest).expect("manifest");
    fs::write(
        d.join("img/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("layout");
    fs::write(
        d.join("img/index.json"),
        serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
            "size": manifest.len(), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]})
        .to_string(),
    )
    .expect("index");
    sh(
        d,
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out key.pem 2>/dev/null
         openssl pkey -in key.pem -pubout -out key.pub
         skopeo copy -q --encryption-key jwe:key.pub oci:img:v1 oci:enc:v1",
    );
    // The encrypted layer descriptor.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("enc/index.json")).expect("index")).expect("json");
    let md = index["manifests"][0]["digest"]
        .as_str()
        .expect("digest")
        .to_string();
    let m: serde_json::Value = serde_json::from_slice(
        &fs::read(d.join("enc/blobs/sha256").join(digest_hex(&md))).expect("manifest"),
    )
    .expect("json");
    let layer = &m["layers"][0];
    let annotations = layer["annotations"]
        .as_object()
        .expect("annotations")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    Image {
        tar_bytes,
        gz_digest,
        enc_digest: layer["digest"].as_str().expect("digest").to_string(),
        diff_id,
        annotations,
        dir,
    }
}

fn in_process(img: &Image, out: &Path) -> Duration {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let key_path = ResourcePath::from_kbs_uri("kbs:///default/image-key/bench").expect("path");
    let mut res = MapResources::new();
    res.insert(
        key_path.clone(),
        fs::read(img.dir.path().join("key.pem")).expect("key"),
    );
    let start = Instant::now();
    let key = rt
        .block_on(ocicrypt::unwrap_layer_key(
            &img.annotations,
            &[key_path],
            &res,
        ))
        .expect("unwrap");
    let blob = fs::File::open(
        img.dir
            .path()
            .join("enc/blobs/sha256")
            .join(digest_hex(&img.enc_digest)),
    )
    .expect("blob");
    let plain = ocicrypt::open_layer(blob, &key).expect("open");
    // The crate's own unpacker: gunzip, confined unpack, diff_id check.
    let diff_id: Digest = img.diff_id.parse().expect("diff_id");
    unpack::unpack_layer(
        io::BufReader::with_capacity(1 << 20, plain),
        Compression::Gzip,
        &diff_id,
        out,
        UnpackOptions::default(),
    )
    .expect("unpack");
    start.elapsed()
}

fn skopeo_umoci(img: &Image, run: usize) -> Duration {
    let d = img.dir.path();
    let start = Instant::now();
    sh(
        d,
        &format!(
            "skopeo copy -q --decryption-key key.pem oci:enc:v1 oci:dec{run}:v1
             umoci unpack --rootless --image dec{run}:v1 bundle{run} >/dev/null"
        ),
    );
    let t = start.elapsed();
    let _ = fs::remove_dir_all(d.join(format!("dec{run}")));
    let _ = fs::remove_dir_all(d.join(format!("bundle{run}")));
    t
}

fn limit(img: &Image) -> Duration {
    let d = img.dir.path();
    let start = Instant::now();
    let out = Command::new("sh")
        .arg("-ec")
        .arg(format!(
            "gunzip -c img/blobs/sha256/{} | sha256sum",
            digest_hex(&img.gz_digest)
        ))
        .current_dir(d)
        .stderr(Stdio::inherit())
        .output()
        .expect("gunzip | sha256sum");
    assert!(out.status.success());
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mib: u64 = std::env::var("CLOISTER_BENCH_LAYER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let runs: usize = std::env::var("CLOISTER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    // `cargo bench` passes --bench; `cargo test --benches` does not: then run small.
    let (mib, runs) = if std::env::args().any(|a| a == "--bench") {
        (mib, runs)
    } else {
        (8, 1)
    };
    eprintln!("building a {mib} MiB tar layer, gzip, skopeo-encrypted (JWE RSA-OAEP)...");
    let t = Instant::now();
    let img = build_image(mib);
    let gz_size = fs::metadata(
        img.dir
            .path()
            .join("img/blobs/sha256")
            .join(digest_hex(&img.gz_digest)),
    )
    .map(|m| m.len())
    .unwrap_or(0);
    eprintln!(
        "image ready in {:.1} s: tar {} MiB, gzip {} MiB",
        t.elapsed().as_secs_f64(),
        img.tar_bytes >> 20,
        gz_size >> 20
    );
    let (mut ours, mut peer, mut lim) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..runs {
        let out: PathBuf = img.dir.path().join(format!("unpacked{run}"));
        fs::create_dir_all(&out).expect("mkdir");
        ours.push(in_process(&img, &out));
        let _ = fs::remove_dir_all(&out);
        peer.push(skopeo_umoci(&img, run));
        lim.push(limit(&img));
    }
    let (o, p, l) = (median(ours), median(peer), median(lim));
    let mbs = |t: Duration| (img.tar_bytes as f64 / (1 << 20) as f64) / t.as_secs_f64();
    println!(
        "decrypt + verify + unpack, {} MiB tar ({} MiB gzip), median of {runs}:",
        img.tar_bytes >> 20,
        gz_size >> 20
    );
    println!(
        "  {:<44} {:>8.2} s {:>8.0} MiB/s",
        "in-process (cloister-image)",
        o.as_secs_f64(),
        mbs(o)
    );
    println!(
        "  {:<44} {:>8.2} s {:>8.0} MiB/s",
        "skopeo copy --decryption-key + umoci unpack",
        p.as_secs_f64(),
        mbs(p)
    );
    println!(
        "  {:<44} {:>8.2} s {:>8.0} MiB/s",
        "limit: gunzip -c | sha256sum",
        l.as_secs_f64(),
        mbs(l)
    );
    println!(
        "  in-process vs skopeo+umoci: {:.2}x (target >= 2x); vs limit: {:.0}% (target >= 60%)",
        p.as_secs_f64() / o.as_secs_f64(),
        100.0 * l.as_secs_f64() / o.as_secs_f64()
    );
}
