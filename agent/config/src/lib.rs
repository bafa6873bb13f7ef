//! The guest's settings as the sandbox's measured initdata carries them: where
//! the KBS is and which CA signs its certificate, which KBS resources hold the
//! image signature policy, registry credentials and decryption keys, which
//! registries may be plain HTTP, which images are pinned by digest, and
//! whether the host may ask for evidence over its own bytes.
//!
//! The keys follow the Trustee/CoCo initdata 0.1.0 layout where CoCo has
//! them (`aa.toml` `[token_configs.kbs]`, `cdh.toml` `[kbc]` and `[image]`);
//! Cloister's own keys live in a `cloister.toml` entry of `[data]`. The agent
//! parses the document with [`GuestConfig::from_initdata`] and `cloister
//! initdata new` writes it with [`GuestConfig::to_initdata`]: one definition
//! for both sides. Unknown entries and keys are refused with a reason.
//!
//! It is not the initdata digest (that is `cloister_tee::initdata`) and not
//! the agent policy engine: `policy.rego` is carried verbatim.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

pub use cloister_kbs_client::ResourcePath;
use serde::{Deserialize, Serialize};

/// The `[data]` entry CoCo's attestation agent reads.
pub const AA_TOML: &str = "aa.toml";
/// The `[data]` entry CoCo's confidential data hub reads.
pub const CDH_TOML: &str = "cdh.toml";
/// The `[data]` entry with Cloister's own keys.
pub const CLOISTER_TOML: &str = "cloister.toml";
/// The `[data]` entry with the agent policy (Rego, verbatim).
pub const POLICY_REGO: &str = "policy.rego";
/// The only KBC CoCo names that speaks the KBS protocol we speak.
pub const CC_KBC: &str = "cc_kbc";
/// The initdata version written.
pub const INITDATA_VERSION: &str = "0.1.0";
/// The digest algorithm `cloister initdata new` writes.
pub const DEFAULT_ALGORITHM: &str = "sha384";
/// The host name that means the host's own loopback services.
pub const LOOPBACK_HOST: &str = "127.0.0.1";
/// The guest address where QEMU forwards to the host's loopback ports
/// (`guestfwd=tcp:10.0.2.100:PORT-…`). Inside the guest the agent relays
/// `127.0.0.1:PORT` to it, so URLs stay as written.
pub const LOOPBACK_FORWARD_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The first guest address for endpoints on other hosts, one address per
/// host name; the agent resolves each name to its address.
pub const REMOTE_FORWARD_BASE: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 101);

/// One endpoint the guest reaches, and the guest address QEMU forwards to
/// it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The host as the settings name it ([`LOOPBACK_HOST`] for the host's
    /// own loopback, otherwise a DNS name the host resolves).
    pub host: String,
    /// The port.
    pub port: u16,
    /// Where the guest connects for it.
    pub guest_addr: Ipv4Addr,
}

impl Forward {
    /// Whether this is a service on the host's own loopback.
    pub fn is_loopback(&self) -> bool {
        self.host == LOOPBACK_HOST
    }
}

/// Why initdata settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The document is not TOML with a `[data]` table of strings.
    #[error("initdata is not TOML with a [data] table of strings: {0}")]
    Document(String),
    /// A `[data]` entry Cloister does not read.
    #[error("initdata [data] entry {0:?} is not one Cloister reads: expected aa.toml, cdh.toml, cloister.toml or policy.rego (see docs/initdata.md)")]
    UnknownEntry(String),
    /// An entry is not valid TOML of the expected shape (unknown keys too).
    #[error("initdata [data] {entry}: {reason}")]
    Entry {
        /// The entry (`aa.toml`, `cdh.toml`, `cloister.toml`).
        entry: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// A key holds a value that does not parse.
    #[error("initdata {key} = {value:?}: {reason}")]
    Value {
        /// The key, as `entry [table] key`.
        key: &'static str,
        /// The value.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// Two keys that must agree do not.
    #[error("initdata {a} and {b} disagree ({va:?} vs {vb:?}): give one, or the same in both")]
    Disagree {
        /// First key.
        a: &'static str,
        /// Its value.
        va: String,
        /// Second key.
        b: &'static str,
        /// Its value.
        vb: String,
    },
    /// A plain-HTTP KBS without the opt-in.
    #[error("initdata names a plain-HTTP KBS ({0}) but cloister.toml insecure_http is not true: use https, or set insecure_http = true (tests on 127.0.0.1 only)")]
    PlainHttpKbs(String),
    /// KBS resources named with no KBS to fetch them from.
    #[error("initdata names KBS resource {0} but no KBS url (aa.toml [token_configs.kbs] url or cdh.toml [kbc] url)")]
    NoKbs(String),
    /// An endpoint on another host named by IP address.
    #[error("initdata names endpoint host {0}: name a host other than 127.0.0.1 by its DNS name, which the guest resolves to the runtime's forward")]
    RemoteAddress(String),
    /// More endpoint hosts than forward addresses.
    #[error("initdata names {hosts} endpoint hosts; at most {max} can be forwarded")]
    TooManyHosts {
        /// Hosts named.
        hosts: usize,
        /// The most there are addresses for.
        max: usize,
    },
}

fn value_err(key: &'static str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        key,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

/// `http` or `https`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP (only with an explicit opt-in).
    Http,
    /// HTTPS.
    Https,
}

impl Scheme {
    /// The scheme's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

/// A `host[:port]` network endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// Host name or IPv4 address.
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
}

impl HostPort {
    /// The port, or `default`.
    pub fn port_or(&self, default: u16) -> u16 {
        self.port.unwrap_or(default)
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .map_err(|_| format!("port {p:?} is not a number 1-65535"))?;
                if port == 0 {
                    return Err("port 0 is not a port".into());
                }
                (h, Some(port))
            }
            None => (s, None),
        };
        let ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok {
            return Err(
                "expected HOST or HOST:PORT (host: letters, digits, '.', '-'; no IPv6)".into(),
            );
        }
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// An `http(s)://host[:port][/path]` URL, kept as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Scheme.
    pub scheme: Scheme,
    /// Host and optional port.
    pub authority: HostPort,
    /// Path (`""` or starting with `/`).
    pub path: String,
    text: String,
}

impl Url {
    /// The port (explicit or the scheme's default).
    pub fn port(&self) -> u16 {
        self.authority.port_or(self.scheme.default_port())
    }

    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Url {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (scheme, rest) = if let Some(r) = s.strip_prefix("https://") {
            (Scheme::Https, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (Scheme::Http, r)
        } else {
            return Err("expected an http:// or https:// URL".into());
        };
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b == b'?' || b == b'#')
        {
            return Err("the path may not hold spaces, a query or a fragment".into());
        }
        Ok(Url {
            scheme,
            authority: auth.parse()?,
            path: path.to_owned(),
            text: s.to_owned(),
        })
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// An image reference pinned to a manifest digest: `NAME@sha256:HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// The reference without the digest (`registry/repo[:tag]`).
    pub name: String,
    /// `sha256:` and 64 lowercase hex digits.
    pub digest: String,
}

impl PinnedImage {
    /// The registry host of the reference (its first component when that
    /// holds a '.' or ':' or is `localhost`, as container tools decide).
    pub fn registry(&self) -> Option<HostPort> {
        let first = self.name.split('/').next()?;
        let is_host = self.name.contains('/')
            && (first.contains('.') || first.contains(':') || first == "localhost");
        is_host.then(|| first.parse().ok()).flatten()
    }
}

impl FromStr for PinnedImage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, digest) = s
            .rsplit_once('@')
            .ok_or("expected REF@sha256:DIGEST (an image pinned by its manifest digest)")?;
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or("the digest must be sha256:<64 hex digits>")?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("the digest must be sha256:<64 lowercase hex digits>".into());
        }
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err("the image name is empty or holds spaces".into());
        }
        Ok(PinnedImage {
            name: name.to_owned(),
            digest: digest.to_owned(),
        })
    }
}

impl fmt::Display for PinnedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.digest)
    }
}

/// Where the agent attests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KbsConfig {
    /// The KBS base URL.
    pub url: Url,
    /// The CA certificate (PEM) that signs the KBS's TLS certificate.
    pub cert: Option<String>,
}

/// CoCo's image settings (`cdh.toml` `[image]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageSettings {
    /// The containers-policy.json resource (`image_security_policy_uri`).
    pub security_policy: Option<ResourcePath>,
    /// The containers auth.json resource
    /// (`authenticated_registry_credentials_uri`).
    pub registry_auth: Option<ResourcePath>,
}

/// Cloister's own keys (`cloister.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloisterSettings {
    /// A plain-HTTP KBS URL is allowed.
    pub insecure_http: bool,
    /// The host may ask GetEvidence over its own report_data.
    pub allow_host_evidence: bool,
    /// The guest may page memory out to a host-given scratch disk
    /// (encrypted, not authenticated: see [`ALLOW_SCRATCH_DISK_KEY`]).
    pub allow_scratch_disk: bool,
    /// Image layers may create device nodes ([`ALLOW_DEVICES_KEY`]).
    pub allow_devices: bool,
    /// Image layers keep setuid/setgid bits ([`ALLOW_SETUID_KEY`]).
    pub allow_setuid: bool,
    /// A shipped agent policy by name (`allow-all`, `confidential-default`),
    /// used when there is no `policy.rego`.
    pub agent_policy: Option<String>,
    /// Layer decryption keys (JWE private keys) as KBS resources.
    pub decryption_keys: Vec<ResourcePath>,
    /// Registries that may be reached over plain HTTP.
    pub insecure_registries: Vec<HostPort>,
    /// Images pinned by manifest digest.
    pub pinned_images: Vec<PinnedImage>,
    /// Signature lookaside URLs by scope (registry, or registry/repository),
    /// as registries.d's `lookaside`.
    pub lookaside: BTreeMap<String, Url>,
}

/// Everything the guest reads from initdata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestConfig {
    /// The KBS, if any.
    pub kbs: Option<KbsConfig>,
    /// CoCo image settings.
    pub image: ImageSettings,
    /// Cloister's own settings.
    pub cloister: CloisterSettings,
    /// The agent policy, verbatim.
    pub policy_rego: Option<String>,
}

// The wire shapes. `deny_unknown_fields` turns a key Cloister does not read
// into an error naming it and the keys it expected.

#[derive(Debug, Deserialize)]
struct Outer {
    data: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
struct OuterOut<'a> {
    version: &'a str,
    algorithm: &'a str,
    data: BTreeMap<&'static str, String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AaToml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_configs: Option<TokenConfigs>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenConfigs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kbs: Option<KbsToken>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KbsToken {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CdhToml {
    /// CDH's own socket; meaningless here, accepted so CoCo documents parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    socket: Option<String>,
    /// CDH credentials to fetch at boot; Cloister supports none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credentials: Option<Vec<toml::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kbc: Option<Kbc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image: Option<CdhImage>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kbc {
    name: String,
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kbs_cert: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CdhImage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    image_security_policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    authenticated_registry_credentials_uri: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CloisterToml {
    #[serde(default, skip_serializing_if = "is_false")]
    insecure_http: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    allow_host_evidence: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    allow_scratch_disk: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    allow_devices: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    allow_setuid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    decryption_keys: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    insecure_registries: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pinned_images: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    lookaside: BTreeMap<String, String>,
}

fn entry<T: for<'de> Deserialize<'de>>(name: &'static str, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Entry {
        entry: name,
        reason: e.message().to_owned(),
    })
}

fn resource(key: &'static str, uri: &str) -> Result<ResourcePath, ConfigError> {
    ResourcePath::from_kbs_uri(uri).map_err(|_| {
        value_err(
            key,
            uri,
            "expected a KBS resource URI kbs:///REPOSITORY/TYPE/TAG",
        )
    })
}

fn pem_cert(key: &'static str, pem: &str) -> Result<String, ConfigError> {
    if pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("-----END CERTIFICATE-----") {
        Ok(pem.to_owned())
    } else {
        Err(value_err(
            key,
            pem.lines().next().unwrap_or(""),
            "expected a PEM certificate (-----BEGIN CERTIFICATE-----)",
        ))
    }
}

/// Two optional settings that must agree when both are given.
fn agree<T: PartialEq + fmt::Debug>(
    a: (&'static str, Option<T>),
    b: (&'static str, Option<T>),
) -> Result<Option<T>, ConfigError> {
    match (a.1, b.1) {
        (Some(x), Some(y)) if x != y => Err(ConfigError::Disagree {
            a: a.0,
            va: format!("{x:?}"),
            b: b.0,
            vb: format!("{y:?}"),
        }),
        (Some(x), _) => Ok(Some(x)),
        (None, y) => Ok(y),
    }
}

const AA_URL: &str = "aa.toml [token_configs.kbs] url";
const AA_CERT: &str = "aa.toml [token_configs.kbs] cert";
const CDH_URL: &str = "cdh.toml [kbc] url";
const CDH_CERT: &str = "cdh.toml [kbc] kbs_cert";
const CDH_NAME: &str = "cdh.toml [kbc] name";
const CDH_CREDS: &str = "cdh.toml credentials";
const CDH_POLICY: &str = "cdh.toml [image] image_security_policy_uri";
const CDH_AUTH: &str = "cdh.toml [image] authenticated_registry_credentials_uri";
const CL_KEYS: &str = "cloister.toml decryption_keys";
const CL_INSECURE: &str = "cloister.toml insecure_registries";
const CL_PINNED: &str = "cloister.toml pinned_images";
const CL_LOOKASIDE: &str = "cloister.toml lookaside";

/// The initdata key that lets the host ask for evidence over its own bytes.
pub const ALLOW_HOST_EVIDENCE_KEY: &str = "cloister.toml allow_host_evidence";

/// The initdata key that lets a TEE guest use a scratch disk the host gives
/// it. Without it the disk is ignored: its pages would be the host's to
/// rewrite or replay (dm-crypt with XTS hides them but does not
/// authenticate them), so a host must not be able to impose it.
pub const ALLOW_SCRATCH_DISK_KEY: &str = "cloister.toml allow_scratch_disk";

/// The initdata key that lets image layers create device nodes in the
/// guest (refused by default: a device node in a container's root is a
/// way into guest memory or disks).
pub const ALLOW_DEVICES_KEY: &str = "cloister.toml allow_devices";

/// The initdata key that lets image layers keep setuid/setgid bits
/// (stripped by default).
pub const ALLOW_SETUID_KEY: &str = "cloister.toml allow_setuid";

impl GuestConfig {
    /// Reads the settings from a whole initdata document (its `version` and
    /// `algorithm` are the digest's business; this reads `[data]`).
    pub fn from_initdata(doc: &str) -> Result<Self, ConfigError> {
        let outer: Outer =
            toml::from_str(doc).map_err(|e| ConfigError::Document(e.message().to_owned()))?;
        let mut aa = AaToml::default();
        let mut cdh = CdhToml::default();
        let mut cl = CloisterToml::default();
        let mut cfg = GuestConfig::default();
        for (name, text) in &outer.data {
            match name.as_str() {
                AA_TOML => aa = entry(AA_TOML, text)?,
                CDH_TOML => cdh = entry(CDH_TOML, text)?,
                CLOISTER_TOML => cl = entry(CLOISTER_TOML, text)?,
                POLICY_REGO => cfg.policy_rego = Some(text.clone()),
                other => return Err(ConfigError::UnknownEntry(other.to_owned())),
            }
        }
        if let Some(kbc) = &cdh.kbc {
            if kbc.name != CC_KBC {
                return Err(value_err(
                    CDH_NAME,
                    &kbc.name,
                    "expected cc_kbc (the KBS protocol Cloister speaks)",
                ));
            }
        }
        if let Some(c) = cdh.credentials.as_ref().filter(|c| !c.is_empty()) {
            return Err(value_err(
                CDH_CREDS,
                &format!("{} items", c.len()),
                "Cloister fetches no CDH credentials at boot: leave it empty",
            ));
        }
        let aa_kbs = aa.token_configs.and_then(|t| t.kbs);
        let url = agree(
            (AA_URL, aa_kbs.as_ref().map(|k| k.url.clone())),
            (CDH_URL, cdh.kbc.as_ref().map(|k| k.url.clone())),
        )?;
        let cert = agree(
            (AA_CERT, aa_kbs.as_ref().and_then(|k| k.cert.clone())),
            (CDH_CERT, cdh.kbc.as_ref().and_then(|k| k.kbs_cert.clone())),
        )?;
        cfg.cloister.insecure_http = cl.insecure_http;
        cfg.cloister.allow_host_evidence = cl.allow_host_evidence;
        cfg.cloister.allow_scratch_disk = cl.allow_scratch_disk;
        cfg.cloister.allow_devices = cl.allow_devices;
        cfg.cloister.allow_setuid = cl.allow_setuid;
        cfg.cloister.agent_policy = cl.agent_policy;
        if let Some(url) = url {
            let key = if aa_kbs.is_some() { AA_URL } else { CDH_URL };
            let parsed: Url = url.parse().map_err(|r| value_err(key, &url, r))?;
            if parsed.scheme == Scheme::Http && !cl.insecure_http {
                return Err(ConfigError::PlainHttpKbs(url));
            }
            let cert = cert
                .map(|c| pem_cert(if aa_kbs.is_some() { AA_CERT } else { CDH_CERT }, &c))
                .transpose()?;
            cfg.kbs = Some(KbsConfig { url: parsed, cert });
        } else if cert.is_some() {
            return Err(value_err(
                AA_CERT,
                "(a certificate)",
                "a KBS certificate without a KBS url",
            ));
        }
        let image = cdh.image.unwrap_or_default();
        cfg.image.security_policy = image
            .image_security_policy_uri
            .map(|u| resource(CDH_POLICY, &u))
            .transpose()?;
        cfg.image.registry_auth = image
            .authenticated_registry_credentials_uri
            .map(|u| resource(CDH_AUTH, &u))
            .transpose()?;
        cfg.cloister.decryption_keys = cl
            .decryption_keys
            .iter()
            .map(|u| resource(CL_KEYS, u))
            .collect::<Result<_, _>>()?;
        cfg.cloister.insecure_registries = cl
            .insecure_registries
            .iter()
            .map(|h| h.parse().map_err(|r| value_err(CL_INSECURE, h, r)))
            .collect::<Result<_, _>>()?;
        cfg.cloister.pinned_images = cl
            .pinned_images
            .iter()
            .map(|p| p.parse().map_err(|r| value_err(CL_PINNED, p, r)))
            .collect::<Result<_, _>>()?;
        for (scope, url) in &cl.lookaside {
            let u: Url = url.parse().map_err(|r| value_err(CL_LOOKASIDE, url, r))?;
            cfg.cloister.lookaside.insert(scope.clone(), u);
        }
        if cfg.kbs.is_none() {
            if let Some(r) = cfg.resources().first() {
                return Err(ConfigError::NoKbs(r.to_kbs_uri()));
            }
        }
        Ok(cfg)
    }

    /// Every KBS resource the settings name.
    pub fn resources(&self) -> Vec<ResourcePath> {
        let mut v: Vec<ResourcePath> = self.image.security_policy.iter().cloned().collect();
        v.extend(self.image.registry_auth.iter().cloned());
        v.extend(self.cloister.decryption_keys.iter().cloned());
        v
    }

    /// Every network endpoint the settings name, with its port: the KBS,
    /// insecure registries, registries of pinned images and lookaside
    /// servers. Sorted, without repeats.
    pub fn endpoints(&self) -> Vec<(String, u16)> {
        let mut v: Vec<(String, u16)> = Vec::new();
        let url = |u: &Url| (u.authority.host.clone(), u.port());
        let registry = |h: &HostPort| (h.host.clone(), h.port_or(443));
        v.extend(self.kbs.iter().map(|k| url(&k.url)));
        v.extend(self.cloister.insecure_registries.iter().map(registry));
        v.extend(
            self.cloister
                .pinned_images
                .iter()
                .filter_map(|p| p.registry().map(|h| registry(&h))),
        );
        v.extend(self.cloister.lookaside.values().map(url));
        v.sort_unstable();
        v.dedup();
        v
    }

    /// How the guest reaches each endpoint the settings name, one
    /// [`Forward`] per endpoint: the host's loopback (`127.0.0.1:PORT`) at
    /// [`LOOPBACK_FORWARD_ADDR`], and every other host at an address of
    /// its own from [`REMOTE_FORWARD_BASE`] on, in name order. The runtime
    /// forwards exactly these and the agent resolves the names to them:
    /// one rule for both sides.
    pub fn forwards(&self) -> Result<Vec<Forward>, ConfigError> {
        let endpoints = self.endpoints();
        let mut remote: Vec<&str> = endpoints
            .iter()
            .map(|(h, _)| h.as_str())
            .filter(|h| *h != LOOPBACK_HOST)
            .collect();
        remote.dedup();
        if let Some(ip) = remote.iter().find(|h| h.parse::<Ipv4Addr>().is_ok()) {
            return Err(ConfigError::RemoteAddress((*ip).to_owned()));
        }
        let room = usize::from(u8::MAX - REMOTE_FORWARD_BASE.octets()[3]);
        if remote.len() > room {
            return Err(ConfigError::TooManyHosts {
                hosts: remote.len(),
                max: room,
            });
        }
        Ok(endpoints
            .iter()
            .map(|(host, port)| {
                let guest_addr = match remote.iter().position(|h| h == host) {
                    None => LOOPBACK_FORWARD_ADDR,
                    Some(i) => {
                        let [a, b, c, d] = REMOTE_FORWARD_BASE.octets();
                        // In range: `remote.len() <= room` above.
                        Ipv4Addr::new(a, b, c, d.saturating_add(i as u8))
                    }
                };
                Forward {
                    host: host.clone(),
                    port: *port,
                    guest_addr,
                }
            })
            .collect())
    }

    /// The host names the guest resolves to their forwards (every endpoint
    /// host but the host's loopback), for the guest's HTTP clients: TLS
    /// still checks the name as written.
    pub fn guest_hosts(&self) -> Result<Vec<(String, SocketAddr)>, ConfigError> {
        let mut v: Vec<(String, SocketAddr)> = self
            .forwards()?
            .into_iter()
            .filter(|f| !f.is_loopback())
            // Port 0: the URL's port (or its scheme's) is used.
            .map(|f| (f.host, SocketAddr::from((f.guest_addr, 0))))
            .collect();
        v.dedup();
        Ok(v)
    }

    /// Writes the settings as an initdata 0.1.0 document (digest algorithm
    /// [`DEFAULT_ALGORITHM`]). The KBS goes into both `aa.toml` and
    /// `cdh.toml`, as CoCo's own tooling writes it.
    pub fn to_initdata(&self) -> Result<String, ConfigError> {
        let ser = |entry: &'static str, r: Result<String, toml::ser::Error>| {
            r.map_err(|e| ConfigError::Entry {
                entry,
                reason: e.to_string(),
            })
        };
        let mut data = BTreeMap::new();
        if let Some(k) = &self.kbs {
            let aa = AaToml {
                token_configs: Some(TokenConfigs {
                    kbs: Some(KbsToken {
                        url: k.url.to_string(),
                        cert: k.cert.clone(),
                    }),
                }),
            };
            data.insert(AA_TOML, ser(AA_TOML, toml::to_string(&aa))?);
        }
        let image = CdhImage {
            image_security_policy_uri: self.image.security_policy.as_ref().map(|r| r.to_kbs_uri()),
            authenticated_registry_credentials_uri: self
                .image
                .registry_auth
                .as_ref()
                .map(|r| r.to_kbs_uri()),
        };
        let has_image = image.image_security_policy_uri.is_some()
            || image.authenticated_registry_credentials_uri.is_some();
        let cdh = CdhToml {
            socket: None,
            credentials: None,
            kbc: self.kbs.as_ref().map(|k| Kbc {
                name: CC_KBC.into(),
                url: k.url.to_string(),
                kbs_cert: k.cert.clone(),
            }),
            image: has_image.then_some(image),
        };
        if cdh.kbc.is_some() || cdh.image.is_some() {
            data.insert(CDH_TOML, ser(CDH_TOML, toml::to_string(&cdh))?);
        }
        let c = &self.cloister;
        let cl = CloisterToml {
            insecure_http: c.insecure_http,
            allow_host_evidence: c.allow_host_evidence,
            allow_scratch_disk: c.allow_scratch_disk,
            allow_devices: c.allow_devices,
            allow_setuid: c.allow_setuid,
            agent_policy: c.agent_policy.clone(),
            decryption_keys: c.decryption_keys.iter().map(|r| r.to_kbs_uri()).collect(),
            insecure_registries: c
                .insecure_registries
                .iter()
                .map(|h| h.to_string())
                .collect(),
            pinned_images: c.pinned_images.iter().map(|p| p.to_string()).collect(),
            lookaside: c
                .lookaside
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
        };
        let cl_text = ser(CLOISTER_TOML, toml::to_string(&cl))?;
        if !cl_text.trim().is_empty() {
            data.insert(CLOISTER_TOML, cl_text);
        }
        if let Some(p) = &self.policy_rego {
            data.insert(POLICY_REGO, p.clone());
        }
        let outer = OuterOut {
            version: INITDATA_VERSION,
            algorithm: DEFAULT_ALGORITHM,
            data,
        };
        let text = ser("the document", toml::to_string(&outer))?;
        // What we write, we must read back the same.
        let back = Self::from_initdata(&text)?;
        debug_assert_eq!(&back, self);
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn doc(entries: &[(&str, &str)]) -> String {
        let mut s = String::from("version = \"0.1.0\"\nalgorithm = \"sha384\"\n\n[data]\n");
        for (k, v) in entries {
            s.push_str(&format!("{k:?} = '''\n{v}'''\n"));
        }
        s
    }

    fn full() -> GuestConfig {
        let mut c = GuestConfig {
            kbs: Some(KbsConfig {
                url: "https://127.0.0.1:8443".parse().unwrap(),
                cert: Some(CERT.into()),
            }),
            ..Default::default()
        };
        c.image.security_policy = Some("default/security-policy/test".parse().unwrap());
        c.image.registry_auth = Some("default/credential/auth".parse().unwrap());
        c.cloister.decryption_keys = vec!["default/key/1".parse().unwrap()];
        c.cloister.insecure_registries = vec!["127.0.0.1:5000".parse().unwrap()];
        c.cloister.pinned_images = vec![format!("127.0.0.1:5001/app:1@sha256:{}", "a".repeat(64))
            .parse()
            .unwrap()];
        c.cloister.lookaside.insert(
            "127.0.0.1:5000".into(),
            "http://127.0.0.1:8000/sigs".parse().unwrap(),
        );
        c.cloister.allow_host_evidence = true;
        c.cloister.allow_scratch_disk = true;
        c.cloister.allow_devices = true;
        c.cloister.allow_setuid = true;
        c.policy_rego =
            Some("package agent_policy\n\ndefault CreateContainerRequest := true\n".into());
        c
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let c = full();
        let text = c.to_initdata().unwrap();
        assert_eq!(GuestConfig::from_initdata(&text).unwrap(), c);
        // The policy is embedded verbatim.
        let outer: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(
            outer["data"]["policy.rego"].as_str(),
            c.policy_rego.as_deref()
        );
        assert_eq!(outer["version"].as_str(), Some("0.1.0"));
        let loopback: Vec<u16> = c
            .forwards()
            .unwrap()
            .iter()
            .filter(|f| f.is_loopback())
            .map(|f| f.port)
            .collect();
        assert_eq!(loopback, vec![5000, 5001, 8000, 8443]);
    }

    #[test]
    fn reads_a_coco_style_document() {
        let text = doc(&[
            (
                "aa.toml",
                &format!("[token_configs]\n[token_configs.kbs]\nurl = \"https://kbs.example:8080\"\ncert = \"\"\"\n{CERT}\"\"\"\n"),
            ),
            (
                "cdh.toml",
                "socket = 'unix:///run/confidential-containers/cdh.sock'\ncredentials = []\n\n[kbc]\nname = \"cc_kbc\"\nurl = \"https://kbs.example:8080\"\n\n[image]\nimage_security_policy_uri = \"kbs:///default/security-policy/test\"\n",
            ),
        ]);
        let c = GuestConfig::from_initdata(&text).unwrap();
        let kbs = c.kbs.unwrap();
        assert_eq!(kbs.url.as_str(), "https://kbs.example:8080");
        assert_eq!(kbs.url.port(), 8080);
        assert!(kbs.cert.unwrap().contains("BEGIN CERTIFICATE"));
        assert_eq!(
            c.image.security_policy.unwrap().to_string(),
            "default/security-policy/test"
        );
        assert!(!c.cloister.allow_host_evidence);
        assert!(
            !c.cloister.allow_scratch_disk,
            "off unless initdata says so"
        );
        assert!(!c.cloister.allow_devices && !c.cloister.allow_setuid);
    }

    #[test]
    fn no_data_entries_means_defaults() {
        let c = GuestConfig::from_initdata(&doc(&[])).unwrap();
        assert_eq!(c, GuestConfig::default());
        assert!(c.forwards().unwrap().is_empty());
    }

    /// Each refusal names the key (or entry) at fault.
    #[test]
    fn refusals_name_what_was_wrong() {
        let kbs_http = "[token_configs.kbs]\nurl = \"http://127.0.0.1:8080\"\n";
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("other.toml", "")],
                "\"other.toml\" is not one Cloister reads",
            ),
            (
                &[("aa.toml", "[token_configs.coco_as]\nurl = \"https://a\"\n")],
                "coco_as",
            ),
            (
                &[("cloister.toml", "insecure_htp = true\n")],
                "insecure_htp",
            ),
            (
                &[("cdh.toml", "[image]\nimage_pull_proxy = \"x\"\n")],
                "image_pull_proxy",
            ),
            (&[("aa.toml", kbs_http)], "insecure_http is not true"),
            (
                &[("aa.toml", "[token_configs.kbs]\nurl = \"ftp://x\"\n")],
                "aa.toml [token_configs.kbs] url",
            ),
            (
                &[
                    ("aa.toml", "[token_configs.kbs]\nurl = \"https://a:1\"\n"),
                    (
                        "cdh.toml",
                        "[kbc]\nname = \"cc_kbc\"\nurl = \"https://b:1\"\n",
                    ),
                ],
                "disagree",
            ),
            (
                &[(
                    "cdh.toml",
                    "[kbc]\nname = \"offline_fs_kbc\"\nurl = \"https://a\"\n",
                )],
                "cdh.toml [kbc] name",
            ),
            (
                &[(
                    "cdh.toml",
                    "credentials = [{ path = \"/x\", resource_uri = \"kbs:///a/b/c\" }]\n",
                )],
                "cdh.toml credentials",
            ),
            (
                &[("cloister.toml", "decryption_keys = [\"kbs:///a/b\"]\n")],
                "cloister.toml decryption_keys",
            ),
            (
                &[("cloister.toml", "decryption_keys = [\"kbs:///a/b/c\"]\n")],
                "no KBS url",
            ),
            (
                &[("cloister.toml", "pinned_images = [\"busybox:latest\"]\n")],
                "cloister.toml pinned_images",
            ),
            (
                &[(
                    "cloister.toml",
                    "pinned_images = [\"busybox@sha256:abc\"]\n",
                )],
                "64 lowercase hex",
            ),
            (
                &[("cloister.toml", "insecure_registries = [\"127.0.0.1:x\"]\n")],
                "cloister.toml insecure_registries",
            ),
            (
                &[(
                    "aa.toml",
                    "[token_configs.kbs]\nurl = \"https://a\"\ncert = \"not a pem\"\n",
                )],
                "PEM certificate",
            ),
            (
                &[("cloister.toml", "allow_host_evidence = \"yes\"\n")],
                "cloister.toml",
            ),
        ];
        for (entries, want) in cases {
            let err = GuestConfig::from_initdata(&doc(entries))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(want),
                "{entries:?}: {err} should mention {want}"
            );
        }
        let err = GuestConfig::from_initdata("version = 1\n[data]\nx = 1\n").unwrap_err();
        assert!(matches!(err, ConfigError::Document(_)), "{err}");
    }

    #[test]
    fn plain_http_kbs_with_the_opt_in() {
        let c = GuestConfig::from_initdata(&doc(&[
            (
                "aa.toml",
                "[token_configs.kbs]\nurl = \"http://127.0.0.1:8080\"\n",
            ),
            ("cloister.toml", "insecure_http = true\n"),
        ]))
        .unwrap();
        assert_eq!(c.kbs.unwrap().url.scheme, Scheme::Http);
    }

    /// Loopback endpoints share the loopback forward; each other host gets
    /// an address of its own, in name order, for all its ports. A host named
    /// by IP address is refused, naming it.
    #[test]
    fn forwards_give_each_remote_host_its_own_address() {
        let mut c = GuestConfig {
            kbs: Some(KbsConfig {
                url: "https://kbs.example:8443".parse().unwrap(),
                cert: None,
            }),
            ..Default::default()
        };
        c.cloister.insecure_registries = vec!["127.0.0.1:5000".parse().unwrap()];
        c.cloister.pinned_images = vec![
            format!("registry.example/app:1@sha256:{}", "a".repeat(64))
                .parse()
                .unwrap(),
            format!("kbs.example:5000/app@sha256:{}", "b".repeat(64))
                .parse()
                .unwrap(),
        ];
        c.cloister.lookaside.insert(
            "registry.example".into(),
            "http://127.0.0.1:8000/sigs".parse().unwrap(),
        );
        let got: Vec<(String, u16, String)> = c
            .forwards()
            .unwrap()
            .into_iter()
            .map(|f| (f.host, f.port, f.guest_addr.to_string()))
            .collect();
        let want = [
            ("127.0.0.1", 5000, "10.0.2.100"),
            ("127.0.0.1", 8000, "10.0.2.100"),
            ("kbs.example", 5000, "10.0.2.101"),
            ("kbs.example", 8443, "10.0.2.101"),
            ("registry.example", 443, "10.0.2.102"),
        ]
        .map(|(h, p, a)| (h.to_owned(), p, a.to_owned()));
        assert_eq!(got, want);
        let names: Vec<String> = c
            .guest_hosts()
            .unwrap()
            .iter()
            .map(|(h, a)| format!("{h}={a}"))
            .collect();
        assert_eq!(
            names,
            ["kbs.example=10.0.2.101:0", "registry.example=10.0.2.102:0"]
        );

        c.cloister.insecure_registries = vec!["10.1.2.3:5000".parse().unwrap()];
        let e = c.forwards().unwrap_err();
        assert_eq!(e, ConfigError::RemoteAddress("10.1.2.3".into()));
        assert!(e.to_string().contains("by its DNS name"), "{e}");
    }

    #[test]
    fn pinned_image_registries() {
        let p: PinnedImage = format!("127.0.0.1:5000/a/b@sha256:{}", "0".repeat(64))
            .parse()
            .unwrap();
        assert_eq!(p.registry().unwrap().port_or(443), 5000);
        let p: PinnedImage = format!("library/busybox@sha256:{}", "0".repeat(64))
            .parse()
            .unwrap();
        assert_eq!(p.registry(), None);
    }
}
