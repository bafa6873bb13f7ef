//! Image signature policy (containers-policy.json) and signature checks.
//!
//! A [`Policy`] is parsed from the policy document the sandbox's initdata
//! names (a KBS resource). [`Policy::requirements`] finds the requirements
//! for an image as containers/image does for the `docker` transport;
//! [`Requirement::needs`] says which signatures to fetch and
//! [`Requirement::check`] decides on them. Keys live inline in the policy
//! (`keyData`): a guest has no file to read a `keyPath` from, so such a
//! requirement parses but refuses every image, saying to use `keyData`.
//!
//! Supported: `insecureAcceptAnything`, `reject`, `signedBy` with
//! `keyType: GPGKeys` (simple signing, OpenPGP), and `sigstoreSigned` with a
//! public key (cosign ECDSA P-256 signatures; no Fulcio, no Rekor).
//!
//! Key expiry (OpenPGP): a signature is judged at its creation time. It is
//! accepted if the signing key (or signing subkey) existed and had not
//! expired when the signature was made, even if the key has expired
//! since; a signature made before the key's creation or after its expiry
//! is refused. Revocation certificates are not consulted: remove a
//! compromised key from the policy.

use std::collections::BTreeMap;

use serde::Deserialize;

mod cosign;
mod gpg;
use crate::reference::Reference;

/// Why a policy document was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Not a containers-policy.json document.
    #[error("policy is not a containers-policy.json document: {0}")]
    Json(String),
    /// A requirement is malformed.
    #[error("policy {scope}: {reason}")]
    BadRequirement {
        /// `default` or `transports.T."scope"`.
        scope: String,
        /// What was wrong.
        reason: String,
    },
}

/// Which signatures a requirement needs fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    /// None: the requirement decides without signatures.
    None,
    /// Simple-signing (GPG) signatures from the lookaside.
    SimpleSigning,
    /// Sigstore (cosign) signatures from the `sha256-<digest>.sig` tag.
    Sigstore,
}

/// A signature fetched for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchedSignature {
    /// The OpenPGP message bytes of a simple signature.
    SimpleSigning(Vec<u8>),
    /// A cosign signature: the layer blob (payload JSON) and the
    /// `dev.cosignproject.cosign/signature` annotation (base64 DER ECDSA).
    Sigstore {
        /// The signed payload.
        payload: Vec<u8>,
        /// base64 of the signature.
        signature_b64: String,
    },
}

/// How the identity in a signature must relate to the image reference
/// (containers-policy.json `signedIdentity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIdentity {
    /// The signed reference equals the image reference (tag or digest).
    MatchExact,
    /// Digest references: same repository; tag references: exact.
    MatchRepoDigestOrExact,
    /// Same repository, any tag or digest.
    MatchRepository,
    /// The signed reference equals this one.
    ExactReference(String),
    /// The signed repository equals this one.
    ExactRepository(String),
    /// Replace `prefix` by `signed_prefix` in the image reference, then
    /// match as [`Self::MatchRepoDigestOrExact`].
    RemapIdentity {
        /// Prefix of the image reference.
        prefix: String,
        /// What the signature names instead.
        signed_prefix: String,
    },
}

/// Where a requirement's public keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Inline key material (decoded `keyData` / `keyDatas`).
    Data(Vec<Vec<u8>>),
    /// A file path (`keyPath` / `keyPaths`): refused when checked.
    Paths(Vec<String>),
    /// Something this verifier does not implement (`fulcio`, `pki`,
    /// X.509 key types), named.
    Unsupported(String),
}

/// One requirement of a policy scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// Accept without signatures.
    InsecureAcceptAnything,
    /// Refuse.
    Reject,
    /// GPG simple signing.
    SignedBy {
        /// The keyring.
        keys: KeySource,
        /// Identity rule.
        signed_identity: SignedIdentity,
    },
    /// Sigstore (cosign) with a public key.
    SigstoreSigned {
        /// The public key(s).
        keys: KeySource,
        /// Identity rule.
        signed_identity: SignedIdentity,
    },
}

/// Why an image's signatures were refused.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The policy says `reject`.
    #[error("policy rejects {0}")]
    Rejected(String),
    /// No signature of the required kind.
    #[error("{reference} has no {kind} signature; the policy requires one")]
    NoSignatures {
        /// The image.
        reference: String,
        /// `simple-signing (signedBy)` or `sigstore (sigstoreSigned)`.
        kind: &'static str,
    },
    /// A `keyPath` in a guest policy.
    #[error("keyPath {0:?} can't be read in the guest: put the key inline in the policy as keyData (base64)")]
    KeyPath(String),
    /// A key source this verifier does not implement.
    #[error("unsupported key source {0}: expected keyData")]
    UnsupportedKeySource(String),
    /// keyData is not a usable key.
    #[error("policy key: {0}")]
    BadKey(String),
    /// The signature does not parse or does not verify.
    #[error("invalid signature: {0}")]
    BadSignature(String),
    /// No key in the policy made this signature.
    #[error("signature made by key {issuer}, which is not in the policy's keyData")]
    UnknownSigner {
        /// Issuer key ID / fingerprint(s), hex.
        issuer: String,
    },
    /// The signing key was not valid when the signature was made.
    #[error(
        "signature by key {key} made at {signed_at} (unix), outside the key's validity: {reason}"
    )]
    KeyNotValid {
        /// The key fingerprint, hex.
        key: String,
        /// Signature creation time.
        signed_at: u64,
        /// Created later / expired.
        reason: String,
    },
    /// The signed payload is malformed.
    #[error("signed payload: {0}")]
    BadPayload(String),
    /// The payload's type is not the one expected.
    #[error("signed payload type is {found:?}, expected {expected:?}")]
    WrongType {
        /// Found.
        found: String,
        /// Expected.
        expected: &'static str,
    },
    /// The signature is for another manifest.
    #[error("signature is for manifest {signed}, the image's manifest is {expected}")]
    DigestMismatch {
        /// `docker-manifest-digest` in the payload.
        signed: String,
        /// The image's.
        expected: String,
    },
    /// The signature is for another image identity.
    #[error("signature names {signed}, which does not match {image} under {rule}")]
    IdentityMismatch {
        /// `docker-reference` in the payload.
        signed: String,
        /// The image reference.
        image: String,
        /// The signedIdentity rule.
        rule: String,
    },
    /// The image reference does not parse.
    #[error("image reference {reference:?}: {reason}")]
    BadReference {
        /// As given.
        reference: String,
        /// Why.
        reason: String,
    },
    /// Several signatures, none accepted.
    #[error("none of {} signatures is accepted: {}", .0.len(), join_errors(.0))]
    NoneAccepted(Vec<SignatureError>),
}

fn join_errors(errs: &[SignatureError]) -> String {
    errs.iter()
        .enumerate()
        .map(|(i, e)| format!("[{}] {e}", i + 1))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A parsed containers-policy.json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    default: Vec<Requirement>,
    /// transport → scope → requirements.
    transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Vec<serde_json::Value>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<serde_json::Value>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSignedBy {
    #[serde(rename = "type")]
    _type: String,
    key_type: String,
    key_path: Option<String>,
    key_paths: Option<Vec<String>>,
    key_data: Option<String>,
    signed_identity: Option<RawIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSigstore {
    #[serde(rename = "type")]
    _type: String,
    key_path: Option<String>,
    key_paths: Option<Vec<String>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
    fulcio: Option<serde_json::Value>,
    pki: Option<serde_json::Value>,
    rekor_public_key_path: Option<String>,
    rekor_public_key_paths: Option<Vec<String>>,
    rekor_public_key_data: Option<String>,
    rekor_public_key_datas: Option<Vec<String>>,
    signed_identity: Option<RawIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIdentity {
    #[serde(rename = "type")]
    kind: String,
    docker_reference: Option<String>,
    docker_repository: Option<String>,
    prefix: Option<String>,
    signed_prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlain {
    #[serde(rename = "type")]
    _type: String,
}

fn b64_key(s: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim().as_bytes())
        .map_err(|e| format!("keyData is not base64: {e}"))
}

fn parse_identity(raw: Option<RawIdentity>) -> Result<SignedIdentity, String> {
    let Some(r) = raw else {
        return Ok(SignedIdentity::MatchRepoDigestOrExact);
    };
    let need = |v: Option<String>, field: &str| {
        v.ok_or_else(|| format!("signedIdentity {} needs {field}", r.kind))
    };
    let no_extra = |fields: &[bool]| {
        if fields.iter().any(|f| *f) {
            Err(format!("signedIdentity {}: unexpected field", r.kind))
        } else {
            Ok(())
        }
    };
    let (dr, drepo, p, sp) = (
        r.docker_reference.is_some(),
        r.docker_repository.is_some(),
        r.prefix.is_some(),
        r.signed_prefix.is_some(),
    );
    Ok(match r.kind.as_str() {
        "matchExact" => {
            no_extra(&[dr, drepo, p, sp])?;
            SignedIdentity::MatchExact
        }
        "matchRepoDigestOrExact" => {
            no_extra(&[dr, drepo, p, sp])?;
            SignedIdentity::MatchRepoDigestOrExact
        }
        "matchRepository" => {
            no_extra(&[dr, drepo, p, sp])?;
            SignedIdentity::MatchRepository
        }
        "exactReference" => {
            no_extra(&[drepo, p, sp])?;
            let v = need(r.docker_reference.clone(), "dockerReference")?;
            let parsed = parse_ref(&v).map_err(|e| format!("dockerReference: {e}"))?;
            if parsed.is_name_only() {
                return Err(format!("dockerReference {v:?} needs a tag or digest"));
            }
            SignedIdentity::ExactReference(v)
        }
        "exactRepository" => {
            no_extra(&[dr, p, sp])?;
            let v = need(r.docker_repository.clone(), "dockerRepository")?;
            parse_ref(&v).map_err(|e| format!("dockerRepository: {e}"))?;
            SignedIdentity::ExactRepository(v)
        }
        "remapIdentity" => {
            no_extra(&[dr, drepo])?;
            SignedIdentity::RemapIdentity {
                prefix: need(r.prefix.clone(), "prefix")?,
                signed_prefix: need(r.signed_prefix.clone(), "signedPrefix")?,
            }
        }
        other => return Err(format!(
            "unknown signedIdentity type {other:?}: expected matchExact, matchRepoDigestOrExact, matchRepository, exactReference, exactRepository or remapIdentity"
        )),
    })
}

fn one_source(
    paths: Vec<String>,
    datas: Vec<String>,
    others: Vec<String>,
) -> Result<KeySource, String> {
    let kinds = usize::from(!paths.is_empty()) + usize::from(!datas.is_empty()) + others.len();
    if kinds != 1 {
        return Err(
            "exactly one of keyPath, keyPaths, keyData (keyDatas, fulcio, pki) must be set".into(),
        );
    }
    if !paths.is_empty() {
        return Ok(KeySource::Paths(paths));
    }
    if let Some(o) = others.into_iter().next() {
        return Ok(KeySource::Unsupported(o));
    }
    // Decoding is checked here; the key itself only when checked, so a
    // policy with a placeholder key still parses.
    datas
        .iter()
        .map(|d| b64_key(d))
        .collect::<Result<_, _>>()
        .map(KeySource::Data)
}

fn parse_requirement(v: serde_json::Value) -> Result<Requirement, String> {
    let kind = v
        .get("type")
        .and_then(serde_json::Value::as_str)
        .ok_or("requirement without \"type\"")?
        .to_string();
    let de = |e: serde_json::Error| format!("{kind}: {e}");
    match kind.as_str() {
        "insecureAcceptAnything" => {
            serde_json::from_value::<RawPlain>(v).map_err(de)?;
            Ok(Requirement::InsecureAcceptAnything)
        }
        "reject" => {
            serde_json::from_value::<RawPlain>(v).map_err(de)?;
            Ok(Requirement::Reject)
        }
        "signedBy" => {
            let r: RawSignedBy = serde_json::from_value(v).map_err(de)?;
            let others = match r.key_type.as_str() {
                "GPGKeys" => vec![],
                "X509Certificates" | "signedByGPGKeys" | "signedByX509CAs" => {
                    vec![format!("keyType {}", r.key_type)]
                }
                other => return Err(format!("signedBy: unknown keyType {other:?}: expected GPGKeys")),
            };
            let paths: Vec<String> = r.key_path.into_iter().chain(r.key_paths.unwrap_or_default()).collect();
            let datas: Vec<String> = r.key_data.into_iter().collect();
            let keys = if others.is_empty() {
                one_source(paths, datas, vec![])?
            } else {
                one_source(paths, datas, vec![])?;
                KeySource::Unsupported(others.join(""))
            };
            Ok(Requirement::SignedBy {
                keys,
                signed_identity: parse_identity(r.signed_identity)?,
            })
        }
        "sigstoreSigned" => {
            let r: RawSigstore = serde_json::from_value(v).map_err(de)?;
            let paths: Vec<String> = r.key_path.into_iter().chain(r.key_paths.unwrap_or_default()).collect();
            let datas: Vec<String> = r.key_data.into_iter().chain(r.key_datas.unwrap_or_default()).collect();
            let mut others = Vec::new();
            if r.fulcio.is_some() {
                others.push("fulcio".to_string());
            }
            if r.pki.is_some() {
                others.push("pki".to_string());
            }
            let keys = one_source(paths, datas, others)?;
            let rekor = r.rekor_public_key_path.is_some()
                || r.rekor_public_key_paths.is_some()
                || r.rekor_public_key_data.is_some()
                || r.rekor_public_key_datas.is_some();
            let keys = if rekor {
                KeySource::Unsupported("rekorPublicKey (Rekor bundles)".into())
            } else {
                keys
            };
            Ok(Requirement::SigstoreSigned {
                keys,
                signed_identity: parse_identity(r.signed_identity)?,
            })
        }
        other => Err(format!(
            "unknown requirement type {other:?}: expected insecureAcceptAnything, reject, signedBy or sigstoreSigned"
        )),
    }
}

fn parse_list(scope: &str, list: Vec<serde_json::Value>) -> Result<Vec<Requirement>, PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::BadRequirement {
            scope: scope.to_string(),
            reason:
                "empty requirement list (containers/image refuses it; use [{\"type\":\"reject\"}])"
                    .into(),
        });
    }
    list.into_iter()
        .map(|v| {
            parse_requirement(v).map_err(|reason| PolicyError::BadRequirement {
                scope: scope.to_string(),
                reason,
            })
        })
        .collect()
}

impl Policy {
    /// Parses a containers-policy.json document.
    pub fn parse(json: &[u8]) -> Result<Policy, PolicyError> {
        let raw: RawPolicy =
            serde_json::from_slice(json).map_err(|e| PolicyError::Json(e.to_string()))?;
        let default = parse_list("default", raw.default)?;
        let mut transports = BTreeMap::new();
        for (t, scopes) in raw.transports {
            let mut parsed = BTreeMap::new();
            for (scope, list) in scopes {
                let reqs = parse_list(&format!("transports.{t}.{scope:?}"), list)?;
                parsed.insert(scope, reqs);
            }
            transports.insert(t, parsed);
        }
        Ok(Policy {
            default,
            transports,
        })
    }

    /// containers/image scope lookup for the docker transport: exact
    /// reference, repository, namespaces, registry, wildcards, default.
    pub fn requirements(&self, docker_reference: &str) -> &[Requirement] {
        if let Some(scopes) = self.transports.get("docker") {
            if let Ok(r) = parse_ref(docker_reference) {
                for scope in r.policy_scopes() {
                    if let Some(reqs) = scopes.get(&scope) {
                        return reqs;
                    }
                }
            }
            if let Some(reqs) = scopes.get("") {
                return reqs;
            }
        }
        &self.default
    }
}

/// The simple-signing payload both GPG and cosign signatures carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Payload {
    pub docker_reference: String,
    pub manifest_digest: String,
}

impl Payload {
    /// Parses the JSON, checking `critical.type`.
    pub(crate) fn parse(json: &[u8], expected_type: &'static str) -> Result<Self, SignatureError> {
        let v: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| SignatureError::BadPayload(format!("not JSON: {e}")))?;
        let critical = v
            .get("critical")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| SignatureError::BadPayload("no \"critical\" object".into()))?;
        for k in critical.keys() {
            if !["type", "image", "identity"].contains(&k.as_str()) {
                return Err(SignatureError::BadPayload(format!(
                    "unknown critical field {k:?}"
                )));
            }
        }
        let field = |ptr: &str| {
            v.pointer(ptr)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| SignatureError::BadPayload(format!("no string at {ptr}")))
        };
        let ty = field("/critical/type")?;
        if ty != expected_type {
            return Err(SignatureError::WrongType {
                found: ty,
                expected: expected_type,
            });
        }
        Ok(Self {
            docker_reference: field("/critical/identity/docker-reference")?,
            manifest_digest: field("/critical/image/docker-manifest-digest")?,
        })
    }
}

fn rule_name(i: &SignedIdentity) -> String {
    match i {
        SignedIdentity::MatchExact => "matchExact".into(),
        SignedIdentity::MatchRepoDigestOrExact => "matchRepoDigestOrExact".into(),
        SignedIdentity::MatchRepository => "matchRepository".into(),
        SignedIdentity::ExactReference(r) => format!("exactReference {r}"),
        SignedIdentity::ExactRepository(r) => format!("exactRepository {r}"),
        SignedIdentity::RemapIdentity {
            prefix,
            signed_prefix,
        } => format!("remapIdentity {prefix} -> {signed_prefix}"),
    }
}

impl SignedIdentity {
    /// Whether a signature naming `signed` may stand for `image`.
    pub fn matches(&self, image: &Reference, signed: &Reference) -> bool {
        match self {
            Self::MatchExact => !image.is_name_only() && image.to_string() == signed.to_string(),
            Self::MatchRepoDigestOrExact => repo_digest_or_exact(image, signed),
            Self::MatchRepository => image.name() == signed.name(),
            Self::ExactReference(r) => {
                parse_ref(r).is_ok_and(|r| r.to_string() == signed.to_string())
            }
            Self::ExactRepository(r) => parse_ref(r).is_ok_and(|r| r.name() == signed.name()),
            Self::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                let full = image.to_string();
                // The prefix must end at a path boundary (or be the whole name).
                let remapped = full.strip_prefix(prefix.as_str()).and_then(|rest| {
                    (rest.is_empty() || rest.starts_with(['/', ':', '@']))
                        .then(|| format!("{signed_prefix}{rest}"))
                });
                match remapped {
                    Some(r) => parse_ref(&r).is_ok_and(|r| repo_digest_or_exact(&r, signed)),
                    None => repo_digest_or_exact(image, signed),
                }
            }
        }
    }
}

fn repo_digest_or_exact(image: &Reference, signed: &Reference) -> bool {
    if image.digest.is_some() {
        image.name() == signed.name()
    } else if image.tag.is_some() {
        image.to_string() == signed.to_string()
    } else {
        false
    }
}

/// Checks a payload against the image: digest, then identity.
pub(crate) fn check_payload(
    payload: &Payload,
    image: &Reference,
    manifest_digest: &str,
    identity: &SignedIdentity,
) -> Result<(), SignatureError> {
    if payload.manifest_digest != manifest_digest {
        return Err(SignatureError::DigestMismatch {
            signed: payload.manifest_digest.clone(),
            expected: manifest_digest.to_string(),
        });
    }
    let signed = parse_ref(&payload.docker_reference).map_err(|reason| {
        SignatureError::BadPayload(format!(
            "docker-reference {:?}: {reason}",
            payload.docker_reference
        ))
    })?;
    if identity.matches(image, &signed) {
        Ok(())
    } else {
        Err(SignatureError::IdentityMismatch {
            signed: payload.docker_reference.clone(),
            image: image.to_string(),
            rule: rule_name(identity),
        })
    }
}

fn key_data(keys: &KeySource) -> Result<&[Vec<u8>], SignatureError> {
    match keys {
        KeySource::Data(d) => Ok(d),
        KeySource::Paths(p) => Err(SignatureError::KeyPath(p.join(", "))),
        KeySource::Unsupported(what) => Err(SignatureError::UnsupportedKeySource(what.clone())),
    }
}

impl Requirement {
    /// Which signatures must be fetched for this requirement.
    pub fn needs(&self) -> SignatureKind {
        match self {
            Self::InsecureAcceptAnything | Self::Reject => SignatureKind::None,
            Self::SignedBy { .. } => SignatureKind::SimpleSigning,
            Self::SigstoreSigned { .. } => SignatureKind::Sigstore,
        }
    }

    /// Checks fetched signatures for this image: the manifest digest and
    /// the identity (signedIdentity rules, default matchRepoDigestOrExact).
    /// One accepted signature of the right kind satisfies the requirement.
    pub fn check(
        &self,
        docker_reference: &str,
        manifest_digest: &str,
        sigs: &[FetchedSignature],
    ) -> Result<(), SignatureError> {
        let (keys, identity, kind) = match self {
            Self::InsecureAcceptAnything => return Ok(()),
            Self::Reject => return Err(SignatureError::Rejected(docker_reference.to_string())),
            Self::SignedBy {
                keys,
                signed_identity,
            } => (keys, signed_identity, "simple-signing (signedBy)"),
            Self::SigstoreSigned {
                keys,
                signed_identity,
            } => (keys, signed_identity, "sigstore (sigstoreSigned)"),
        };
        let keys = key_data(keys)?;
        let image = parse_ref(docker_reference).map_err(|reason| SignatureError::BadReference {
            reference: docker_reference.to_string(),
            reason,
        })?;
        let mut errors = Vec::new();
        let mut seen = 0usize;
        match self {
            Self::SignedBy { .. } => {
                let keyring = gpg::Keyring::parse(keys)?;
                for sig in sigs {
                    let FetchedSignature::SimpleSigning(bytes) = sig else {
                        continue;
                    };
                    seen += 1;
                    match keyring
                        .verify(bytes)
                        .and_then(|p| Payload::parse(&p, gpg::PAYLOAD_TYPE))
                        .and_then(|p| check_payload(&p, &image, manifest_digest, identity))
                    {
                        Ok(()) => return Ok(()),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Self::SigstoreSigned { .. } => {
                let verifier = cosign::Keys::parse(keys)?;
                for sig in sigs {
                    let FetchedSignature::Sigstore {
                        payload,
                        signature_b64,
                    } = sig
                    else {
                        continue;
                    };
                    seen += 1;
                    match verifier
                        .verify(payload, signature_b64)
                        .and_then(|()| Payload::parse(payload, cosign::PAYLOAD_TYPE))
                        .and_then(|p| check_payload(&p, &image, manifest_digest, identity))
                    {
                        Ok(()) => return Ok(()),
                        Err(e) => errors.push(e),
                    }
                }
            }
            Self::InsecureAcceptAnything | Self::Reject => {}
        }
        match (seen, errors.len()) {
            (0, _) => Err(SignatureError::NoSignatures {
                reference: docker_reference.to_string(),
                kind,
            }),
            (_, 1) => Err(errors.remove(0)),
            _ => Err(SignatureError::NoneAccepted(errors)),
        }
    }
}

/// Lookaside URL of simple signature N for a repository (registries.d style).
/// `index` counts from 0 as containers/image does; the file of index 0 is
/// `signature-1`. Fetch increasing indexes until the first 404.
pub fn lookaside_url(
    base: &str,
    repository_path: &str,
    manifest_digest: &str,
    index: usize,
) -> String {
    format!(
        "{}/{}@{}/signature-{}",
        base.trim_end_matches('/'),
        repository_path.trim_matches('/'),
        manifest_digest.replacen(':', "=", 1),
        index + 1
    )
}

/// A reference as a signature or policy names it (name-only kept), with the
/// reason as text.
fn parse_ref(s: &str) -> Result<Reference, String> {
    Reference::parse_as_written(s).map_err(|e| e.reason.to_owned())
}
