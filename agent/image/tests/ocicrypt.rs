//! ocicrypt against real peers: images encrypted by skopeo 1.9
//! (`--encryption-key jwe:`) with keys made by openssl, decrypted here and
//! compared with skopeo's own `--decryption-key` output; the CoCo
//! annotation written by `encrypt_layout` and read back; and each failure.

// Helpers outside #[test] fns fail the test by panicking.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use cloister_image::ocicrypt::{
    self, aa::AnnotationPacket, layout::encrypt_layout, CryptError, ANNOTATION_AA, ANNOTATION_JWE,
    ANNOTATION_PUBOPTS,
};
use cloister_image::resources::{MapResources, ResourcePath};
use common::{blob, layers, make_image, run, sh};

fn kid(s: &str) -> ResourcePath {
    ResourcePath::from_kbs_uri(s).unwrap()
}

fn decrypt_all(blob: &Path, key: &ocicrypt::LayerKey) -> Result<Vec<u8>, CryptError> {
    let mut r = ocicrypt::open_layer(fs::File::open(blob).unwrap(), key)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .map_err(|e| CryptError::Io("reading the plaintext", e))?;
    Ok(out)
}

/// openssl keys of every supported form, a two-recipient-per-kind image
/// encrypted by skopeo, and skopeo's decryption of it.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        make_image(dir.path());
        sh(
            dir.path(),
            "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa-pkcs8.pem 2>/dev/null
             openssl pkey -in rsa-pkcs8.pem -pubout -out rsa.pub
             openssl rsa -in rsa-pkcs8.pem -traditional -out rsa-pkcs1.pem 2>/dev/null
             openssl pkey -in rsa-pkcs8.pem -outform DER -out rsa-pkcs8.der
             openssl ecparam -name prime256v1 -genkey -out ec-sec1.pem
             openssl pkey -in ec-sec1.pem -pubout -out ec.pub
             openssl pkey -in ec-sec1.pem -out ec-pkcs8.pem
             openssl ec -in ec-sec1.pem -outform DER -out ec-sec1.der 2>/dev/null
             openssl ecparam -name secp384r1 -genkey -noout -out ec384.pem
             openssl pkey -in ec384.pem -pubout -out ec384.pub
             openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out other.pem 2>/dev/null
             skopeo copy -q --encryption-key jwe:rsa.pub --encryption-key jwe:ec.pub --encryption-key jwe:ec384.pub oci:img:v1 oci:enc:v1
             skopeo copy -q --decryption-key rsa-pkcs8.pem oci:enc:v1 oci:dec:v1",
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn resources(&self, files: &[&str]) -> (MapResources, Vec<ResourcePath>) {
        let mut m = MapResources::new();
        let mut paths = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let p = kid(&format!("kbs:///default/image-key/k{i}"));
            m.insert(p.clone(), fs::read(self.path().join(f)).unwrap());
            paths.push(p);
        }
        (m, paths)
    }
}

#[tokio::test(flavor = "current_thread")]
async fn skopeo_jwe_layers_decrypt_with_every_key_form_and_match_skopeo() {
    let fx = Fixture::new();
    let (_, plain) = layers(&fx.path().join("img"), "v1");
    let (_, enc) = layers(&fx.path().join("enc"), "v1");
    let (_, dec) = layers(&fx.path().join("dec"), "v1");
    assert_eq!(enc.len(), 2);
    for key in [
        "rsa-pkcs8.pem",
        "rsa-pkcs1.pem",
        "rsa-pkcs8.der",
        "ec-sec1.pem",
        "ec-pkcs8.pem",
        "ec-sec1.der",
        "ec384.pem",
    ] {
        // A wrong key first: it is tried, refused, and the next one opens.
        let (res, paths) = fx.resources(&["other.pem", key]);
        for ((e, p), d) in enc.iter().zip(&plain).zip(&dec) {
            assert_eq!(
                e.media_type,
                "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
            );
            assert!(ocicrypt::is_encrypted(&e.media_type));
            assert_eq!(
                ocicrypt::decrypted_media_type(&e.media_type),
                Some(p.media_type.as_str())
            );
            assert_eq!(
                ocicrypt::required_keys(&e.annotations, &paths).unwrap(),
                paths
            );
            let k = ocicrypt::unwrap_layer_key(&e.annotations, &paths, &res)
                .await
                .unwrap_or_else(|err| panic!("{key}: {err}"));
            assert_eq!(k.plaintext_digest(), Some(p.digest.as_str()));
            assert!(!format!("{k:?}").contains("symkey"), "{k:?}");
            let ours = decrypt_all(&blob(&fx.path().join("enc"), &e.digest), &k).unwrap();
            let skopeos = fs::read(blob(&fx.path().join("dec"), &d.digest)).unwrap();
            assert_eq!(ours, skopeos, "{key}: differs from skopeo's decryption");
            assert_eq!(
                ours,
                fs::read(blob(&fx.path().join("img"), &p.digest)).unwrap()
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn rsa_oaep_256_recipient_written_by_python_cryptography_decrypts() {
    // skopeo 1.9 writes RSA-OAEP (SHA-1) for RSA keys even for a JWK that
    // asks for RSA-OAEP-256, so the RSA-OAEP-256 JWE is built with
    // python3-cryptography: it opens skopeo's JWE and re-wraps the same
    // private options for an RSA-OAEP-256 recipient.
    let fx = Fixture::new();
    let (_, enc) = layers(&fx.path().join("enc"), "v1");
    let layer = &enc[0];
    fs::write(
        fx.path().join("jwe.txt"),
        &layer.annotations[ANNOTATION_JWE],
    )
    .unwrap();
    let script = r#"
import base64, json, os, sys
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
u = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
e = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
key = serialization.load_pem_private_key(open("rsa-pkcs8.pem", "rb").read(), None)
jwe = json.loads(base64.b64decode(open("jwe.txt").read().split(",")[0]))
rec = [r for r in jwe["recipients"] if r["header"]["alg"] == "RSA-OAEP"][0]
cek = key.decrypt(u(rec["encrypted_key"]), padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
opts = AESGCM(cek).decrypt(u(jwe["iv"]), u(jwe["ciphertext"]) + u(jwe["tag"]), jwe["protected"].encode())
cek2, iv = os.urandom(32), os.urandom(12)
prot = e(json.dumps({"alg": "RSA-OAEP-256", "enc": "A256GCM"}).encode())
ct = AESGCM(cek2).encrypt(iv, opts, prot.encode())
ek = key.public_key().encrypt(cek2, padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None))
out = {"protected": prot, "encrypted_key": e(ek), "iv": e(iv), "ciphertext": e(ct[:-16]), "tag": e(ct[-16:])}
sys.stdout.write(base64.b64encode(json.dumps(out).encode()).decode())
"#;
    let annotation = run(std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(fx.path()));
    let mut ann = layer.annotations.clone();
    ann.insert(
        ANNOTATION_JWE.into(),
        String::from_utf8(annotation).unwrap(),
    );
    let (res, paths) = fx.resources(&["rsa-pkcs1.pem"]);
    let k = ocicrypt::unwrap_layer_key(&ann, &paths, &res)
        .await
        .unwrap();
    let (_, plain) = layers(&fx.path().join("img"), "v1");
    let ours = decrypt_all(&blob(&fx.path().join("enc"), &layer.digest), &k).unwrap();
    assert_eq!(
        ours,
        fs::read(blob(&fx.path().join("img"), &plain[0].digest)).unwrap()
    );
    // The EC key can't open an RSA-OAEP-256 recipient: named in the error.
    let (res, paths) = fx.resources(&["ec-sec1.pem"]);
    let err = ocicrypt::unwrap_layer_key(&ann, &paths, &res)
        .await
        .unwrap_err();
    assert!(matches!(err, CryptError::NoMatchingKey { .. }), "{err}");
    assert!(
        err.to_string().contains("RSA-OAEP-256 needs an RSA key"),
        "{err}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn jwe_failures_are_named_and_fetch_nothing_they_need_not() {
    let fx = Fixture::new();
    let (_, enc) = layers(&fx.path().join("enc"), "v1");
    let layer = &enc[0];
    let encrypted = blob(&fx.path().join("enc"), &layer.digest);

    // No key configured: refused before any fetch.
    let res = MapResources::new();
    let err = ocicrypt::required_keys(&layer.annotations, &[]).unwrap_err();
    assert!(matches!(err, CryptError::NoDecryptionKey), "{err}");
    assert!(err.to_string().contains("--decryption-key"), "{err}");
    let err = ocicrypt::unwrap_layer_key(&layer.annotations, &[], &res)
        .await
        .unwrap_err();
    assert!(matches!(err, CryptError::NoDecryptionKey), "{err}");
    assert!(res.requested().is_empty());

    // Wrong key only.
    let (res, paths) = fx.resources(&["other.pem"]);
    let err = ocicrypt::unwrap_layer_key(&layer.annotations, &paths, &res)
        .await
        .unwrap_err();
    assert!(matches!(err, CryptError::NoMatchingKey { .. }), "{err}");
    assert!(
        err.to_string().contains("kbs:///default/image-key/k0"),
        "{err}"
    );

    // A key the KBS does not release: the error names it.
    let err = ocicrypt::unwrap_layer_key(
        &layer.annotations,
        &[kid("kbs:///default/image-key/absent")],
        &MapResources::new(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("kbs:///default/image-key/absent"),
        "{err}"
    );

    // A resource that is not a key.
    let mut res = MapResources::new();
    res.insert(kid("kbs:///default/image-key/junk"), b"not a key".to_vec());
    let err = ocicrypt::unwrap_layer_key(
        &layer.annotations,
        &[kid("kbs:///default/image-key/junk")],
        &res,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, CryptError::KeyFormat { .. }), "{err}");

    let (res, paths) = fx.resources(&["rsa-pkcs8.pem"]);
    let good = ocicrypt::unwrap_layer_key(&layer.annotations, &paths, &res)
        .await
        .unwrap();

    // Tampered ciphertext: one flipped bit in the middle; nothing is yielded.
    let mut bytes = fs::read(&encrypted).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let tampered = fx.path().join("tampered");
    fs::write(&tampered, &bytes).unwrap();
    let err = ocicrypt::open_layer(fs::File::open(&tampered).unwrap(), &good)
        .err()
        .expect("tampered blob must not open");
    assert!(matches!(err, CryptError::HmacMismatch { .. }), "{err}");

    // Truncated blob.
    let bytes = fs::read(&encrypted).unwrap();
    fs::write(&tampered, &bytes[..bytes.len() - 1]).unwrap();
    let err = ocicrypt::open_layer(fs::File::open(&tampered).unwrap(), &good)
        .err()
        .expect("truncated blob must not open");
    assert!(err.to_string().contains("tampered or truncated"), "{err}");

    // The key of another layer: the HMAC fails too.
    let other = ocicrypt::unwrap_layer_key(&enc[1].annotations, &paths, &res)
        .await
        .unwrap();
    let err = ocicrypt::open_layer(fs::File::open(&encrypted).unwrap(), &other)
        .err()
        .expect("another layer's key must not open");
    assert!(matches!(err, CryptError::HmacMismatch { .. }), "{err}");

    // Unknown cipher in the public options.
    let mut ann = layer.annotations.clone();
    let mut pubopts: serde_json::Value =
        serde_json::from_slice(&base64_decode(&ann[ANNOTATION_PUBOPTS])).unwrap();
    pubopts["cipher"] = "AES_128_GCM".into();
    ann.insert(
        ANNOTATION_PUBOPTS.into(),
        base64_encode(pubopts.to_string().as_bytes()),
    );
    let err = ocicrypt::unwrap_layer_key(&ann, &paths, &res)
        .await
        .unwrap_err();
    assert!(
        matches!(err, CryptError::UnsupportedCipher(ref c) if c == "AES_128_GCM"),
        "{err}"
    );

    // Missing annotations.
    let mut ann = layer.annotations.clone();
    ann.remove(ANNOTATION_PUBOPTS);
    let err = ocicrypt::required_keys(&ann, &paths).unwrap_err();
    assert!(err.to_string().contains(ANNOTATION_PUBOPTS), "{err}");
    let mut ann = layer.annotations.clone();
    ann.remove(ANNOTATION_JWE);
    ann.insert("org.opencontainers.image.enc.keys.pgp".into(), "x".into());
    let err = ocicrypt::required_keys(&ann, &paths).unwrap_err();
    assert!(matches!(err, CryptError::NoKeyAnnotation { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("found org.opencontainers.image.enc.keys.pgp"),
        "{err}"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test(flavor = "current_thread")]
async fn aa_annotation_layout_round_trips_and_skopeo_copies_it() {
    let dir = tempfile::tempdir().unwrap();
    let img = make_image(dir.path());
    let kek = [7u8; 32];
    let kid_uri = "kbs:///default/image-kek/app";
    let out = dir.path().join("aa");
    let done = encrypt_layout(&img, "v1", &out, "enc", kid_uri, &kek).unwrap();
    let (_, plain) = layers(&img, "v1");
    let (manifest, enc) = layers(&out, "enc");
    assert_eq!(manifest, done.manifest_digest);
    assert_eq!(enc.len(), plain.len());

    let mut res = MapResources::new();
    res.insert(kid(kid_uri), kek.to_vec());
    for (e, p) in enc.iter().zip(&plain) {
        assert_eq!(e.media_type, format!("{}+encrypted", p.media_type));
        // The key needed is the kid, and naming it fetches nothing.
        assert_eq!(
            ocicrypt::required_keys(&e.annotations, &[]).unwrap(),
            vec![kid(kid_uri)]
        );
        let k = ocicrypt::unwrap_layer_key(&e.annotations, &[], &res)
            .await
            .unwrap();
        let ours = decrypt_all(&blob(&out, &e.digest), &k).unwrap();
        assert_eq!(ours, fs::read(blob(&img, &p.digest)).unwrap());
    }
    assert_eq!(res.requested(), vec![kid(kid_uri); enc.len()]);

    // Wrong KEK: names the kid.
    let mut wrong = MapResources::new();
    wrong.insert(kid(kid_uri), vec![8u8; 32]);
    let err = ocicrypt::unwrap_layer_key(&enc[0].annotations, &[], &wrong)
        .await
        .unwrap_err();
    assert!(matches!(err, CryptError::Unwrap { .. }), "{err}");
    assert!(err.to_string().contains(kid_uri), "{err}");
    // KEK not released.
    let err = ocicrypt::unwrap_layer_key(&enc[0].annotations, &[], &MapResources::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, CryptError::Fetch { .. }) && err.to_string().contains(kid_uri),
        "{err}"
    );

    // A valid OCI layout: skopeo copies it (without decrypting).
    sh(dir.path(), "skopeo copy -q oci:aa:enc oci:copy:enc");
    let (_, copied) = layers(&dir.path().join("copy"), "enc");
    assert_eq!(
        copied.iter().map(|l| &l.digest).collect::<Vec<_>>(),
        enc.iter().map(|l| &l.digest).collect::<Vec<_>>()
    );
    assert_eq!(
        copied[0].annotations[ANNOTATION_AA],
        enc[0].annotations[ANNOTATION_AA]
    );
}

#[test]
fn coco_annotation_packet_vector_parses_and_its_doubled_kid_is_refused_by_name() {
    let json = fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/coco-annotation-packet-v1.json"
    ))
    .unwrap();
    let packet = AnnotationPacket::from_json(&json).unwrap();
    assert_eq!(packet.kid, "kbs:///kbs:///default/key/1");
    assert_eq!(packet.wrap_type, "A256GCM");
    assert_eq!(base64_decode(&packet.iv).len(), 12);
    assert!(base64_decode(&packet.wrapped_data).len() > 16);
    let mut ann = BTreeMap::new();
    ann.insert(ANNOTATION_AA.to_string(), packet.to_annotation());
    ann.insert(ANNOTATION_PUBOPTS.to_string(), "e30=".to_string());
    let err = ocicrypt::required_keys(&ann, &[]).unwrap_err();
    assert!(matches!(err, CryptError::BadKid { .. }), "{err}");
    assert!(
        err.to_string().contains("kbs:///kbs:///default/key/1"),
        "{err}"
    );

    let mut other = serde_json::from_slice::<serde_json::Value>(&json).unwrap();
    other["wrap_type"] = "A128KW".into();
    let err = AnnotationPacket::from_json(other.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("A128KW"), "{err}");
}
