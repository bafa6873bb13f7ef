//! `cloister initdata new`: writes an initdata document (Trustee/CoCo
//! initdata 0.1.0) from flags, so users need not hand-write TOML. The
//! document is what the guest agent reads (`cloister_guest_config`), and its
//! digest is what the launch binds (`cloister measure --initdata`).

use std::path::PathBuf;

use anyhow::Context;
use cloister_guest_config::{GuestConfig, HostPort, KbsConfig, PinnedImage, ResourcePath, Url};

/// Arguments of `cloister initdata`.
#[derive(Debug, clap::Args)]
pub struct InitdataArgs {
    #[command(subcommand)]
    command: InitdataCommand,
}

#[derive(Debug, clap::Subcommand)]
enum InitdataCommand {
    /// Write a new initdata document.
    New(NewArgs),
}

/// Arguments of `cloister initdata new`.
#[derive(Debug, clap::Args)]
struct NewArgs {
    /// Where to write the document.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// The KBS the guest attests to (https://..., or http://... with
    /// --insecure-http). Without one the guest attests nowhere, and may name
    /// no KBS resources.
    #[arg(long, value_name = "URL")]
    kbs: Option<Url>,
    /// CA certificate (PEM file) that signs the KBS's TLS certificate.
    #[arg(long, value_name = "PEM")]
    kbs_cert: Option<PathBuf>,
    /// Permit a plain-HTTP KBS (tests on 127.0.0.1).
    #[arg(long)]
    insecure_http: bool,
    /// A layer decryption key (JWE private key) held by the KBS (repeatable).
    #[arg(long = "decryption-key", value_name = "KBS_URI", value_parser = kbs_uri)]
    decryption_keys: Vec<ResourcePath>,
    /// The containers-policy.json the guest checks images against.
    #[arg(long, value_name = "KBS_URI", value_parser = kbs_uri)]
    image_policy: Option<ResourcePath>,
    /// The containers auth.json with registry credentials.
    #[arg(long, value_name = "KBS_URI", value_parser = kbs_uri)]
    registry_auth: Option<ResourcePath>,
    /// A registry the guest may reach over plain HTTP (repeatable).
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    insecure_registries: Vec<HostPort>,
    /// An image pinned by manifest digest (repeatable).
    #[arg(long = "pin", value_name = "REF@sha256:DIGEST")]
    pins: Vec<PinnedImage>,
    /// A signature lookaside for a scope, as SCOPE=URL (repeatable).
    #[arg(long = "lookaside", value_name = "SCOPE=URL", value_parser = lookaside)]
    lookasides: Vec<(String, Url)>,
    /// Let the host ask the guest for evidence over host-chosen report_data
    /// (`cloister evidence`; a diagnostic, off by default).
    #[arg(long)]
    allow_host_evidence: bool,
    /// Let the guest page memory out to a scratch disk the host gives it
    /// (`cloister run --scratch-disk`): encrypted in the guest, but not
    /// authenticated, so a TEE guest ignores the disk unless this is set.
    #[arg(long)]
    allow_scratch_disk: bool,
    /// Let image layers create device nodes in the guest (refused by
    /// default).
    #[arg(long)]
    allow_devices: bool,
    /// Let image layers keep setuid/setgid bits (stripped by default).
    #[arg(long)]
    allow_setuid: bool,
    /// The agent policy (Rego), embedded verbatim as `policy.rego`.
    #[arg(long, value_name = "FILE.rego", conflicts_with = "agent_policy")]
    policy: Option<PathBuf>,
    /// A shipped agent policy by name: allow-all or confidential-default
    /// (the default in a TEE guest).
    #[arg(long, value_name = "NAME", value_parser = shipped_policy)]
    agent_policy: Option<String>,
}

fn shipped_policy(s: &str) -> Result<String, String> {
    cloister_policy::agent::Shipped::from_name(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

fn kbs_uri(s: &str) -> Result<ResourcePath, String> {
    ResourcePath::from_kbs_uri(s).map_err(|e| e.to_string())
}

fn lookaside(s: &str) -> Result<(String, Url), String> {
    let (scope, url) = s
        .split_once('=')
        .ok_or("expected SCOPE=URL (e.g. 127.0.0.1:5000=http://127.0.0.1:8000/sigs)")?;
    Ok((scope.to_owned(), url.parse()?))
}

/// Runs `cloister initdata`.
pub fn run(a: InitdataArgs) -> anyhow::Result<()> {
    match a.command {
        InitdataCommand::New(n) => new(n),
    }
}

fn new(a: NewArgs) -> anyhow::Result<()> {
    let read = |p: &PathBuf| {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    };
    if a.kbs.is_none() && a.kbs_cert.is_some() {
        anyhow::bail!("--kbs-cert without --kbs: expected the KBS URL the certificate is for");
    }
    let cert = a.kbs_cert.as_ref().map(read).transpose()?;
    let mut c = GuestConfig {
        kbs: a.kbs.map(|url| KbsConfig { url, cert }),
        policy_rego: a.policy.as_ref().map(read).transpose()?,
        ..Default::default()
    };
    c.image.security_policy = a.image_policy;
    c.image.registry_auth = a.registry_auth;
    c.cloister.insecure_http = a.insecure_http;
    c.cloister.allow_host_evidence = a.allow_host_evidence;
    c.cloister.allow_scratch_disk = a.allow_scratch_disk;
    c.cloister.allow_devices = a.allow_devices;
    c.cloister.allow_setuid = a.allow_setuid;
    c.cloister.agent_policy = a.agent_policy;
    c.cloister.decryption_keys = a.decryption_keys;
    c.cloister.insecure_registries = a.insecure_registries;
    c.cloister.pinned_images = a.pins;
    c.cloister.lookaside = a.lookasides.into_iter().collect();
    let text = c.to_initdata()?;
    std::fs::write(&a.output, &text).with_context(|| format!("writing {}", a.output.display()))?;
    let digest = cloister_tee::initdata::InitdataDigest::of(text.as_bytes())?;
    eprintln!(
        "wrote {} ({} bytes, {} digest {})",
        a.output.display(),
        text.len(),
        digest.algo(),
        hex::encode(digest.as_bytes())
    );
    Ok(())
}
