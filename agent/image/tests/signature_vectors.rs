//! Signature policy against the CoCo image-rs vectors (testdata/, see its
//! SOURCES.md): both policy files parse unchanged, scopes resolve as
//! containers/image resolves them, and the GPG simple-signing vectors
//! decide as SOURCES.md states.

use cloister_image::signature::{
    lookaside_url, FetchedSignature, Policy, Requirement, SignatureError, SignatureKind,
};

fn testdata(p: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{p}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const SIGNED_DIGEST: &str =
    "sha256:febcf61cd6e1ac9628f6ac14fa40836d16f3c6ddef3b303ff0321606e55ddd0b";
const OTHER_DIGEST: &str =
    "sha256:7250923ba3543110040462388756ef099331822c6172a050b12c7a38361ea46f";

fn sig(digest: &str) -> Vec<u8> {
    testdata(&format!(
        "simple-signing/signatures/kata-containers/confidential-containers@{}/signature-1",
        digest.replace(':', "=")
    ))
}

/// A signedBy policy for the vector key, inline.
fn gpg_policy(identity: &str) -> Policy {
    use base64::Engine;
    let key =
        base64::engine::general_purpose::STANDARD.encode(testdata("simple-signing/pubkey.gpg"));
    Policy::parse(
        format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{
              "quay.io/kata-containers":[{{"type":"signedBy","keyType":"GPGKeys","keyData":"{key}"{identity}}}]}}}}}}"#
        )
        .as_bytes(),
    )
    .expect("the inline vector policy parses")
}

#[test]
fn both_image_rs_policy_files_parse_unchanged() {
    for f in [
        "policies/image-rs-policy.json",
        "policies/image-rs-security_policy.json",
    ] {
        Policy::parse(&testdata(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

#[test]
fn scopes_resolve_like_containers_image() {
    let p = Policy::parse(&testdata("policies/image-rs-policy.json")).unwrap();
    let kind = |r: &str| -> Vec<String> {
        p.requirements(r)
            .iter()
            .map(|q| match q {
                Requirement::InsecureAcceptAnything => "accept".to_string(),
                Requirement::Reject => "reject".to_string(),
                Requirement::SignedBy {
                    signed_identity, ..
                } => format!("signedBy {signed_identity:?}"),
                Requirement::SigstoreSigned { .. } => "sigstore".to_string(),
            })
            .collect()
    };
    let cases: &[(&str, &str)] = &[
        ("example.com/playground/app:v1", "accept"),
        ("example.com/playground:v1", "accept"),
        ("example.com/hardened/x@sha256:7250923ba3543110040462388756ef099331822c6172a050b12c7a38361ea46f", "signedBy MatchRepoDigestOrExact"),
        ("registry.access.redhat.com/ubi8:latest", "signedBy MatchRepoDigestOrExact"),
        ("foo.access.redhat.com/ubi8:latest", "signedBy MatchRepoDigestOrExact"),
        ("registry.redhat.com/ubi8:latest", "signedBy MatchRepoDigestOrExact"),
        ("other.com/x:1", "signedBy MatchRepoDigestOrExact"),
        ("docker.io/library/busybox:latest", "reject"),
        ("127.0.0.1:5000/ns/app:v1", "reject"),
    ];
    for (reference, want) in cases {
        assert_eq!(kind(reference)[0], *want, "{reference}");
    }
    // The second requirement tells the scopes apart.
    assert!(kind("registry.access.redhat.com/ubi8:latest")[1].contains("MatchExact"));
    assert!(kind("foo.access.redhat.com/ubi8:latest")[1].contains("ExactReference"));
    assert!(kind("registry.redhat.com/ubi8:latest")[1].contains("ExactRepository"));
    assert!(kind("other.com/x:1")[1].contains("RemapIdentity"));

    let p = Policy::parse(&testdata("policies/image-rs-security_policy.json")).unwrap();
    let repo = "quay.io/kata-containers/confidential-containers";
    assert_eq!(
        p.requirements(&format!("{repo}:cosign-signed"))[0].needs(),
        SignatureKind::Sigstore
    );
    assert_eq!(
        p.requirements(&format!("{repo}:cosign-signed-key2"))[0].needs(),
        SignatureKind::Sigstore
    );
    assert_eq!(
        p.requirements(&format!("{repo}:signed"))[0].needs(),
        SignatureKind::SimpleSigning
    );
    assert_eq!(
        p.requirements(&format!("{repo}@{SIGNED_DIGEST}"))[0].needs(),
        SignatureKind::SimpleSigning
    );
    assert_eq!(
        p.requirements("docker.io/library/busybox:latest")[0].needs(),
        SignatureKind::None
    );
}

#[test]
fn key_paths_parse_but_are_refused_when_checked_naming_keypath() {
    let p = Policy::parse(&testdata("policies/image-rs-security_policy.json")).unwrap();
    let r = "quay.io/kata-containers/confidential-containers:signed";
    let err = p.requirements(r)[0]
        .check(
            r,
            SIGNED_DIGEST,
            &[FetchedSignature::SimpleSigning(sig(SIGNED_DIGEST))],
        )
        .unwrap_err();
    assert!(matches!(err, SignatureError::KeyPath(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("keyPath")
            && msg.contains("keyData")
            && msg.contains("/run/image-security/simple_signing/pubkey.gpg"),
        "{msg}"
    );
}

#[test]
fn gpg_vector_signed_is_accepted_for_its_reference_and_digest_only() {
    let p = gpg_policy("");
    let reference = "quay.io/kata-containers/confidential-containers:signed";
    let req = &p.requirements(reference)[0];
    assert_eq!(req.needs(), SignatureKind::SimpleSigning);
    let good = [FetchedSignature::SimpleSigning(sig(SIGNED_DIGEST))];
    // The key expired after this signature was made: still accepted.
    req.check(reference, SIGNED_DIGEST, &good).unwrap();
    // By digest (matchRepoDigestOrExact: same repository).
    let by_digest = format!("quay.io/kata-containers/confidential-containers@{SIGNED_DIGEST}");
    p.requirements(&by_digest)[0]
        .check(&by_digest, SIGNED_DIGEST, &good)
        .unwrap();

    // Any other manifest digest: refused, naming both.
    let err = req.check(reference, OTHER_DIGEST, &good).unwrap_err();
    assert!(
        matches!(err, SignatureError::DigestMismatch { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(SIGNED_DIGEST) && err.to_string().contains(OTHER_DIGEST));

    // Another tag of the same repository: identity refused.
    let other_tag = "quay.io/kata-containers/confidential-containers:latest";
    let err = req.check(other_tag, SIGNED_DIGEST, &good).unwrap_err();
    assert!(
        matches!(err, SignatureError::IdentityMismatch { .. }),
        "{err}"
    );

    // A reference outside the policy scope gets the default: reject.
    let outside = "quay.io/other/confidential-containers:signed";
    let err = p.requirements(outside)[0]
        .check(outside, SIGNED_DIGEST, &good)
        .unwrap_err();
    assert!(matches!(err, SignatureError::Rejected(_)), "{err}");

    // exactRepository lets another tag through; matchExact does not take a digest reference.
    let p = gpg_policy(r#","signedIdentity":{"type":"matchRepository"}"#);
    p.requirements(other_tag)[0]
        .check(other_tag, SIGNED_DIGEST, &good)
        .unwrap();
    let p = gpg_policy(r#","signedIdentity":{"type":"matchExact"}"#);
    assert!(p.requirements(&by_digest)[0]
        .check(&by_digest, SIGNED_DIGEST, &good)
        .is_err());
}

#[test]
fn gpg_vector_by_an_unknown_key_is_refused_as_unknown_signer() {
    let p = gpg_policy("");
    let reference = "quay.io/kata-containers/confidential-containers:other_signed";
    let err = p.requirements(reference)[0]
        .check(
            reference,
            OTHER_DIGEST,
            &[FetchedSignature::SimpleSigning(sig(OTHER_DIGEST))],
        )
        .unwrap_err();
    assert!(matches!(err, SignatureError::UnknownSigner { .. }), "{err}");
    assert!(err.to_string().contains("D8D28A0E43238696"), "{err}");
}

#[test]
fn unsigned_tampered_and_mixed_signature_sets() {
    let p = gpg_policy("");
    let reference = "quay.io/kata-containers/confidential-containers:signed";
    let req = &p.requirements(reference)[0];
    // No signatures.
    let err = req.check(reference, SIGNED_DIGEST, &[]).unwrap_err();
    assert!(matches!(err, SignatureError::NoSignatures { .. }), "{err}");
    // Sigstore signatures don't count for signedBy.
    let cosign = FetchedSignature::Sigstore {
        payload: b"{}".to_vec(),
        signature_b64: "AA==".into(),
    };
    let err = req
        .check(reference, SIGNED_DIGEST, std::slice::from_ref(&cosign))
        .unwrap_err();
    assert!(matches!(err, SignatureError::NoSignatures { .. }), "{err}");
    // Garbage bytes.
    let err = req
        .check(
            reference,
            SIGNED_DIGEST,
            &[FetchedSignature::SimpleSigning(b"junk".to_vec())],
        )
        .unwrap_err();
    assert!(matches!(err, SignatureError::BadSignature(_)), "{err}");
    // One bad, one good: accepted.
    req.check(
        reference,
        SIGNED_DIGEST,
        &[
            FetchedSignature::SimpleSigning(sig(OTHER_DIGEST)),
            FetchedSignature::SimpleSigning(sig(SIGNED_DIGEST)),
        ],
    )
    .unwrap();
    // Two bad: both reasons.
    let err = req
        .check(
            reference,
            SIGNED_DIGEST,
            &[
                FetchedSignature::SimpleSigning(sig(OTHER_DIGEST)),
                FetchedSignature::SimpleSigning(b"x".to_vec()),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(err, SignatureError::NoneAccepted(ref v) if v.len() == 2),
        "{err}"
    );
}

#[test]
fn placeholder_key_data_parses_and_fails_when_checked() {
    // image-rs-policy.json has keyData "bm9uc2Vuc2U=" ("nonsense").
    let p = Policy::parse(&testdata("policies/image-rs-policy.json")).unwrap();
    let r = "example.com/hardened/app:v1";
    // The first requirement there is a keyPath; the second the placeholder.
    let err = p.requirements(r)[1]
        .check(
            r,
            SIGNED_DIGEST,
            &[FetchedSignature::SimpleSigning(sig(SIGNED_DIGEST))],
        )
        .unwrap_err();
    assert!(matches!(err, SignatureError::BadKey(_)), "{err}");
}

#[test]
fn malformed_policies_are_refused_with_the_reason() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"default":[{"type":"maybe"}]}"#,
            "unknown requirement type",
        ),
        (r#"{"default":[]}"#, "empty requirement list"),
        (r#"{"default":[{"type":"reject","extra":1}]}"#, "extra"),
        (
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys"}]}"#,
            "exactly one of",
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyData":"QQ==","keyPath":"/k"}]}"#,
            "exactly one of",
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"PGP","keyData":"QQ=="}]}"#,
            "keyType",
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyData":"!!"}]}"#,
            "base64",
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyData":"QQ==","signedIdentity":{"type":"exactReference"}}]}"#,
            "dockerReference",
        ),
        (
            r#"{"default":[{"type":"reject"}],"transport":{}}"#,
            "transport",
        ),
        (r#"[1]"#, "containers-policy.json"),
    ];
    for (json, want) in cases {
        let err = Policy::parse(json.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(want), "{json}: {err}");
    }
}

#[test]
fn lookaside_urls_are_registries_d_style() {
    assert_eq!(
        lookaside_url("http://127.0.0.1:8000/sigs/", "kata-containers/confidential-containers", SIGNED_DIGEST, 0),
        format!("http://127.0.0.1:8000/sigs/kata-containers/confidential-containers@sha256={}/signature-1", &SIGNED_DIGEST[7..])
    );
}
