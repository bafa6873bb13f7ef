//! `cloister policy gen POD.yaml -o POLICY.rego [--yaml-out FILE]`: the agent
//! policy for a Kubernetes workload (see `cloister_policy::gen`), with image
//! tags resolved to manifest digests against their registries.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context};
use cloister_policy::gen;
use cloister_tee::initdata::{HashAlgo, Initdata, CC_INIT_DATA_ANNOTATION, POLICY_KEY};

/// Arguments of `cloister policy`.
#[derive(Debug, clap::Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    cmd: PolicyCmd,
}

#[derive(Debug, clap::Subcommand)]
enum PolicyCmd {
    /// Generate an agent policy from Kubernetes YAML (Pod, Deployment,
    /// StatefulSet, DaemonSet, ReplicaSet, Job, CronJob).
    Gen(GenArgs),
}

#[derive(Debug, clap::Args)]
struct GenArgs {
    /// The Kubernetes YAML (one or more documents).
    yaml: PathBuf,
    /// Where to write the policy (Rego).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Also write the YAML with the cc_init_data annotation (initdata holding
    /// the policy) added to every pod template.
    #[arg(long)]
    yaml_out: Option<PathBuf>,
    /// Initdata digest algorithm for --yaml-out.
    #[arg(long, default_value = "sha384")]
    algorithm: String,
    /// Talk HTTP, not HTTPS, to registries (a local test registry).
    #[arg(long)]
    plain_http: bool,
}

/// Runs `cloister policy`.
pub fn run(args: PolicyArgs) -> anyhow::Result<()> {
    match args.cmd {
        PolicyCmd::Gen(a) => generate(a),
    }
}

fn generate(a: GenArgs) -> anyhow::Result<()> {
    let yaml = std::fs::read_to_string(&a.yaml)
        .with_context(|| format!("reading {}", a.yaml.display()))?;
    let workloads = gen::parse(&yaml).with_context(|| format!("{}", a.yaml.display()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let mut digests = BTreeMap::new();
    for image in gen::images(&workloads) {
        let d = rt
            .block_on(resolve(&client, &image, a.plain_http))
            .with_context(|| format!("resolving {image}"))?;
        digests.insert(image, d);
    }
    let rego = gen::render(&workloads, &digests)?;
    std::fs::write(&a.output, &rego).with_context(|| format!("writing {}", a.output.display()))?;
    eprintln!(
        "cloister policy gen: {} ({} bytes, {} containers)",
        a.output.display(),
        rego.len(),
        workloads.iter().map(|w| w.containers.len()).sum::<usize>()
    );
    if let Some(out) = a.yaml_out {
        let algo: HashAlgo = a.algorithm.parse()?;
        let initdata = Initdata::build(algo, &BTreeMap::from([(POLICY_KEY.to_owned(), rego)]))?;
        let value = initdata.to_annotation();
        let annotated = gen::annotate(&yaml, CC_INIT_DATA_ANNOTATION, &value)?;
        std::fs::write(&out, annotated).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "cloister policy gen: {} (annotation {} bytes; Kubernetes allows 256 KiB)",
            out.display(),
            value.len()
        );
    }
    Ok(())
}

/// A parsed image reference: registry host, repository, tag or digest.
#[derive(Debug, PartialEq, Eq)]
struct Reference {
    registry: String,
    repository: String,
    tag: String,
    digest: Option<String>,
}

fn parse_reference(image: &str) -> anyhow::Result<Reference> {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d.to_owned())),
        None => (image, None),
    };
    let (registry, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_owned(), rest.to_owned())
        }
        _ => ("registry-1.docker.io".to_owned(), name.to_owned()),
    };
    let (repository, tag) = match rest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_owned(), t.to_owned()),
        _ => (rest.clone(), "latest".to_owned()),
    };
    let repository = if registry == "registry-1.docker.io" && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    if repository.is_empty() {
        bail!("image {image:?} has no repository");
    }
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// The manifest digest of `image`: its own digest if it has one, else the
/// registry's answer for the tag (`Docker-Content-Digest` of a HEAD, or the
/// sha256 of the manifest a GET returns).
async fn resolve(
    client: &reqwest::Client,
    image: &str,
    plain_http: bool,
) -> anyhow::Result<String> {
    let r = parse_reference(image)?;
    if let Some(d) = r.digest {
        if !d.starts_with("sha256:") || d.len() != 71 {
            bail!("digest {d:?} is not sha256:<64 hex>");
        }
        return Ok(d);
    }
    let scheme = if plain_http { "http" } else { "https" };
    let url = format!(
        "{scheme}://{}/v2/{}/manifests/{}",
        r.registry, r.repository, r.tag
    );
    let head = client
        .head(&url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .send()
        .await
        .with_context(|| format!("HEAD {url}"))?;
    if head.status() == reqwest::StatusCode::UNAUTHORIZED {
        bail!("{url}: the registry asks for credentials; pin the image by digest instead");
    }
    if !head.status().is_success() {
        bail!("HEAD {url}: {}", head.status());
    }
    if let Some(d) = head
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
    {
        return Ok(d.to_owned());
    }
    let body = client
        .get(&url)
        .header(reqwest::header::ACCEPT, ACCEPT)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    use sha2::Digest as _;
    Ok(format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&body))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_like_docker() {
        let r = parse_reference("127.0.0.1:5000/a/b:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("127.0.0.1:5000", "a/b", "1.0")
        );
        let r = parse_reference("busybox").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("registry-1.docker.io", "library/busybox", "latest")
        );
        let r = parse_reference("localhost/x@sha256:ab").unwrap();
        assert_eq!(r.digest.as_deref(), Some("sha256:ab"));
    }
}
