//! Signatures made by real peers: an image pushed to Debian's
//! docker-registry on 127.0.0.1 and signed by skopeo 1.9 `--sign-by` with a
//! GPG key made in the test (lookaside written through registries.d);
//! gpg-made signatures at faked times for key expiry; and cosign-format
//! sigstore signatures made with python3-cryptography (Debian's skopeo 1.9
//! is built with sigstore signing disabled: "Debian-local change: sigstore
//! disabled").

// Helpers outside #[test] fns fail the test by panicking.
#![allow(clippy::unwrap_used)]

mod common;
mod registry_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use cloister_image::signature::{FetchedSignature, Policy, SignatureError};
use common::{make_image, run, sh};
use registry_common::cosign_sign;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// A GNUPGHOME in `dir` and a key made with `gpg --batch --quick-gen-key`;
/// returns (GNUPGHOME, fingerprint, exported public key).
fn gpg_key(dir: &Path, name: &str, extra: &str) -> (PathBuf, String, Vec<u8>) {
    let home = dir.join(format!("gnupg-{name}"));
    fs::create_dir_all(&home).unwrap();
    sh(
        dir,
        &format!(
            "chmod 700 {h}; GNUPGHOME={h} gpg -q --batch --passphrase '' {extra} --quick-gen-key '{name} <{name}@example.com>' rsa2048 sign 1y",
            h = home.display()
        ),
    );
    let colons = run(Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--with-colons", "--list-keys"]));
    let fpr = String::from_utf8(colons)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("fpr:")
                .map(|r| r.trim_matches(':').to_string())
        })
        .expect("a fingerprint");
    let public = run(Command::new("gpg")
        .env("GNUPGHOME", &home)
        .args(["--export", &fpr]));
    (home, fpr, public)
}

fn signed_by_policy(keys: &[&[u8]], identity: &str) -> Policy {
    let key_data: Vec<u8> = keys.concat();
    Policy::parse(
        format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"":[{{"type":"signedBy","keyType":"GPGKeys","keyData":"{}"{identity}}}]}}}}}}"#,
            b64(&key_data)
        )
        .as_bytes(),
    )
    .unwrap()
}

#[test]
fn skopeo_sign_by_gpg_through_a_lookaside_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_image(d);
    let reg = registry_common::Registry::start();
    let (home, fpr, public) = gpg_key(d, "signer", "");
    let (_, _, stranger) = gpg_key(d, "stranger", "");
    let lookaside = d.join("lookaside");
    fs::create_dir_all(d.join("registries.d")).unwrap();
    fs::write(
        d.join("registries.d/local.yaml"),
        format!(
            "docker:\n  {}:\n    lookaside-staging: file://{}\n",
            reg.addr,
            lookaside.display()
        ),
    )
    .unwrap();
    let reference = format!("{}/ns/app:v1", reg.addr);
    run(Command::new("skopeo")
        .env("GNUPGHOME", &home)
        .current_dir(d)
        .args([
            "copy",
            "-q",
            "--dest-tls-verify=false",
            "--registries.d",
            "registries.d",
            "--sign-by",
            &fpr,
            "--digestfile",
            "digest",
            "oci:img:v1",
        ])
        .arg(format!("docker://{reference}")));
    let digest = fs::read_to_string(d.join("digest"))
        .unwrap()
        .trim()
        .to_string();
    let sig_path = lookaside.join(format!("ns/app@{}/signature-1", digest.replace(':', "=")));
    let sig = fs::read(&sig_path).unwrap_or_else(|e| panic!("{}: {e}", sig_path.display()));
    // The URL the puller fetches maps onto that file.
    assert_eq!(
        cloister_image::signature::lookaside_url(
            &format!("file://{}", lookaside.display()),
            "ns/app",
            &digest,
            0
        ),
        format!("file://{}", sig_path.display())
    );

    let policy = signed_by_policy(&[&public], "");
    let req = &policy.requirements(&reference)[0];
    let sigs = [FetchedSignature::SimpleSigning(sig.clone())];
    req.check(&reference, &digest, &sigs).unwrap();
    // By digest.
    let by_digest = format!("{}/ns/app@{digest}", reg.addr);
    req.check(&by_digest, &digest, &sigs).unwrap();
    // Another image in the same registry: identity refused.
    let other = format!("{}/ns/other:v1", reg.addr);
    let err = req.check(&other, &digest, &sigs).unwrap_err();
    assert!(
        matches!(err, SignatureError::IdentityMismatch { .. }),
        "{err}"
    );
    // Another manifest digest.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = req.check(&reference, &wrong, &sigs).unwrap_err();
    assert!(
        matches!(err, SignatureError::DigestMismatch { .. }),
        "{err}"
    );
    // Wrong key in the policy: unknown signer, naming the signer's key.
    let err = signed_by_policy(&[&stranger], "").requirements(&reference)[0]
        .check(&reference, &digest, &sigs)
        .unwrap_err();
    assert!(matches!(err, SignatureError::UnknownSigner { .. }), "{err}");
    assert!(
        err.to_string().contains(&fpr[24..]),
        "{err} should name {fpr}"
    );
    // Both keys in the keyring: accepted.
    signed_by_policy(&[&stranger, &public], "").requirements(&reference)[0]
        .check(&reference, &digest, &sigs)
        .unwrap();
    // Tampered signature bytes, anywhere past the header: refused.
    for at in [sig.len() / 3, sig.len() / 2, sig.len() - 5] {
        let mut t = sig.clone();
        t[at] ^= 0x20;
        let err = req
            .check(&reference, &digest, &[FetchedSignature::SimpleSigning(t)])
            .expect_err("tampered signature accepted");
        assert!(
            matches!(
                err,
                SignatureError::BadSignature(_) | SignatureError::UnknownSigner { .. }
            ),
            "{err}"
        );
    }
}

/// A simple-signing payload for `reference` and `digest`.
fn payload(kind: &str, reference: &str, digest: &str) -> String {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"{reference}"}},"image":{{"docker-manifest-digest":"{digest}"}},"type":"{kind}"}},"optional":null}}"#
    )
}

#[test]
fn gpg_key_expiry_is_judged_at_signature_time() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reference = "127.0.0.1:5000/ns/app:v1";
    let digest = format!("sha256:{}", "ab".repeat(32));
    fs::write(
        d.join("payload"),
        payload("atomic container signature", reference, &digest),
    )
    .unwrap();
    // Key made 2020-01-01, valid one day.
    let home = d.join("gnupg");
    fs::create_dir_all(&home).unwrap();
    let h = home.display();
    sh(
        d,
        &format!(
            "chmod 700 {h}; export GNUPGHOME={h}
             gpg -q --batch --passphrase '' --faked-system-time 20200101T000000 --quick-gen-key 'Exp <exp@example.com>' rsa2048 sign 1d
             FPR=$(gpg --with-colons --list-keys | awk -F: '/^fpr/{{print $10; exit}}')
             gpg --export $FPR > one-day.gpg
             gpg -q --batch --faked-system-time 20200101T120000 --local-user $FPR -o in-time.sig --sign payload
             gpg -q --batch --ignore-time-conflict --faked-system-time 20191231T000000 --local-user $FPR -o before.sig --sign payload
             gpg -q --batch --passphrase '' --pinentry-mode loopback --faked-system-time 20200103T000000 --quick-set-expire $FPR 0
             gpg --export $FPR > extended.gpg
             gpg -q --batch --faked-system-time 20200104T000000 --local-user $FPR -o late.sig --sign payload"
        ),
    );
    let one_day = fs::read(d.join("one-day.gpg")).unwrap();
    let extended = fs::read(d.join("extended.gpg")).unwrap();
    let sig = |f: &str| {
        vec![FetchedSignature::SimpleSigning(
            fs::read(d.join(f)).unwrap(),
        )]
    };
    let check = |key: &[u8], f: &str| {
        signed_by_policy(&[key], "").requirements(reference)[0].check(reference, &digest, &sig(f))
    };

    // Made while the key was valid; the key has long expired: accepted.
    check(&one_day, "in-time.sig").unwrap();
    // Made after the expiry the keyring states: refused.
    let err = check(&one_day, "late.sig").unwrap_err();
    assert!(matches!(err, SignatureError::KeyNotValid { .. }), "{err}");
    assert!(err.to_string().contains("the key expired at"), "{err}");
    // The keyring with the extended self-signature covers it.
    check(&extended, "late.sig").unwrap();
    // Made before the key existed: refused.
    let err = check(&extended, "before.sig").unwrap_err();
    assert!(err.to_string().contains("created later"), "{err}");
}

fn sigstore_policy(key_b64: &str, identity: &str) -> Policy {
    Policy::parse(
        format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"127.0.0.1:5000/ns":[{{"type":"sigstoreSigned","keyData":"{key_b64}"{identity}}}]}}}}}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

#[test]
fn sigstore_signatures_verify_with_the_inline_key() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let reference = "127.0.0.1:5000/ns/app:v1";
    let digest = format!("sha256:{}", "cd".repeat(32));
    let body = payload("cosign container image signature", reference, &digest);
    let (key, sig) = cosign_sign(d, "a", &body);
    let (other_key, _) = cosign_sign(d, "b", &body);
    let fetched = |p: &str, s: &str| {
        vec![FetchedSignature::Sigstore {
            payload: p.as_bytes().to_vec(),
            signature_b64: s.to_string(),
        }]
    };

    let policy = sigstore_policy(&key, "");
    let req = &policy.requirements(reference)[0];
    req.check(reference, &digest, &fetched(&body, &sig))
        .unwrap();
    // Tampered payload (another digest, same signature).
    let forged = payload(
        "cosign container image signature",
        reference,
        &format!("sha256:{}", "ef".repeat(32)),
    );
    let err = req
        .check(reference, &digest, &fetched(&forged, &sig))
        .unwrap_err();
    assert!(matches!(err, SignatureError::BadSignature(_)), "{err}");
    assert!(err.to_string().contains("does not verify"), "{err}");
    // Wrong key in the policy.
    let err = sigstore_policy(&other_key, "").requirements(reference)[0]
        .check(reference, &digest, &fetched(&body, &sig))
        .unwrap_err();
    assert!(matches!(err, SignatureError::BadSignature(_)), "{err}");
    // A valid signature for another digest.
    let other_digest = format!("sha256:{}", "12".repeat(32));
    let err = req
        .check(reference, &other_digest, &fetched(&body, &sig))
        .unwrap_err();
    assert!(
        matches!(err, SignatureError::DigestMismatch { .. }),
        "{err}"
    );
    // A GPG-style payload type signed with the right key: refused by type.
    let wrong_type = payload("atomic container signature", reference, &digest);
    let (_, s) = cosign_sign(d, "a", &wrong_type);
    let err = req
        .check(reference, &digest, &fetched(&wrong_type, &s))
        .unwrap_err();
    assert!(matches!(err, SignatureError::WrongType { .. }), "{err}");
    // cosign itself signs the repository without a tag: needs matchRepository.
    let repo_only = payload(
        "cosign container image signature",
        "127.0.0.1:5000/ns/app",
        &digest,
    );
    let (_, s) = cosign_sign(d, "a", &repo_only);
    let err = req
        .check(reference, &digest, &fetched(&repo_only, &s))
        .unwrap_err();
    assert!(
        matches!(err, SignatureError::IdentityMismatch { .. }),
        "{err}"
    );
    sigstore_policy(&key, r#","signedIdentity":{"type":"matchRepository"}"#)
        .requirements(reference)[0]
        .check(reference, &digest, &fetched(&repo_only, &s))
        .unwrap();
    // Unsigned under the policy.
    let err = req.check(reference, &digest, &[]).unwrap_err();
    assert!(matches!(err, SignatureError::NoSignatures { .. }), "{err}");
}
