//! The policy generator behind `cloister policy gen`: Kubernetes YAML in,
//! an agent policy (Rego) out, pinning per container the image by digest,
//! the command and args, the env, the volume mounts and the security
//! context. Like Kata's genpolicy, but unknown kinds are one clear error and
//! the output is small: one fixed rule set
//! (`policies/rego/agent/generated-template.rego`) plus the pinned values as
//! `policy_data`.
//!
//! Resolving tags to digests needs the registry; that is the caller's job
//! (the CLI): [`images`] lists the references, [`render`] takes the digests.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

/// The fixed rules of a generated policy.
pub const TEMPLATE: &str = include_str!("../rego/agent/generated-template.rego");

/// Why a generation failed.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// Not YAML.
    #[error("document {index} is not YAML: {reason}")]
    Yaml {
        /// 0-based document number.
        index: usize,
        /// The parser's message.
        reason: String,
    },
    /// A kind the generator does not know.
    #[error("document {index} has kind {kind:?}: expected Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job or CronJob")]
    UnknownKind {
        /// 0-based document number.
        index: usize,
        /// The kind found ("" when missing).
        kind: String,
    },
    /// A field is missing or has the wrong type.
    #[error("document {index} ({kind}): {field} is missing or malformed")]
    Field {
        /// 0-based document number.
        index: usize,
        /// Its kind.
        kind: String,
        /// The field path.
        field: String,
    },
    /// No digest was given for an image.
    #[error("no digest for image {0}: resolve it against its registry first")]
    NoDigest(String),
    /// No workload in the input.
    #[error("the input holds no workload (Pod, Deployment, ...)")]
    Empty,
}

/// A workload kind the generator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Pod: `spec`.
    Pod,
    /// Deployment: `spec.template.spec`.
    Deployment,
    /// StatefulSet.
    StatefulSet,
    /// DaemonSet.
    DaemonSet,
    /// ReplicaSet.
    ReplicaSet,
    /// Job.
    Job,
    /// CronJob: `spec.jobTemplate.spec.template.spec`.
    CronJob,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Pod" => Kind::Pod,
            "Deployment" => Kind::Deployment,
            "StatefulSet" => Kind::StatefulSet,
            "DaemonSet" => Kind::DaemonSet,
            "ReplicaSet" => Kind::ReplicaSet,
            "Job" => Kind::Job,
            "CronJob" => Kind::CronJob,
            _ => return None,
        })
    }

    /// Path from the document to the pod template's `metadata`'s parent.
    fn template_path(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &[],
            Kind::Deployment
            | Kind::StatefulSet
            | Kind::DaemonSet
            | Kind::ReplicaSet
            | Kind::Job => &["spec", "template"],
            Kind::CronJob => &["spec", "jobTemplate", "spec", "template"],
        }
    }
}

/// Kinds that are not workloads and are passed over (they carry no
/// container).
const PASSIVE_KINDS: &[&str] = &["ConfigMap", "Secret", "Service", "ServiceAccount"];

/// One container as the policy pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// The image reference as written.
    pub image: String,
    /// `command` (replaces the image entrypoint), if given.
    pub command: Option<Vec<String>>,
    /// `args`.
    pub args: Vec<String>,
    /// `NAME=value` for literal env entries.
    pub env: Vec<String>,
    /// Names whose value comes from elsewhere (valueFrom): any value.
    pub env_any: Vec<String>,
    /// (mountPath, readOnly).
    pub mounts: Vec<(String, bool)>,
    /// securityContext.runAsUser (container, else pod).
    pub run_as_user: Option<i64>,
    /// securityContext.readOnlyRootFilesystem.
    pub read_only_root: bool,
    /// allowPrivilegeEscalation: false.
    pub no_new_privileges: bool,
    /// capabilities.add (with the CAP_ prefix).
    pub caps_add: Vec<String>,
    /// capabilities.drop (with the CAP_ prefix; ALL drops every default).
    pub caps_drop: Vec<String>,
}

/// A parsed workload document.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Its kind.
    pub kind: Kind,
    /// metadata.name.
    pub name: String,
    /// Its containers (init containers first).
    pub containers: Vec<Container>,
}

fn docs(yaml: &str) -> Result<Vec<Value>, GenError> {
    use serde::Deserialize as _;
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| GenError::Yaml {
            index,
            reason: e.to_string(),
        })?;
        out.push(v);
    }
    Ok(out)
}

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn cap_name(c: &str) -> String {
    if c == "ALL" || c.starts_with("CAP_") {
        c.to_owned()
    } else {
        format!("CAP_{c}")
    }
}

/// Parses every document; workloads come back in order.
pub fn parse(yaml: &str) -> Result<Vec<Workload>, GenError> {
    let mut out = Vec::new();
    for (index, doc) in docs(yaml)?.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let kind_s = doc.get("kind").and_then(Value::as_str).unwrap_or_default();
        if PASSIVE_KINDS.contains(&kind_s) {
            continue;
        }
        let kind = Kind::parse(kind_s).ok_or_else(|| GenError::UnknownKind {
            index,
            kind: kind_s.to_owned(),
        })?;
        let field = |f: &str| GenError::Field {
            index,
            kind: kind_s.to_owned(),
            field: f.to_owned(),
        };
        let mut path: Vec<&str> = kind.template_path().to_vec();
        path.push("spec");
        let spec = at(&doc, &path).ok_or_else(|| field(&path.join(".")))?;
        let pod_user = at(spec, &["securityContext", "runAsUser"]).and_then(Value::as_i64);
        let mut containers = Vec::new();
        for list in ["initContainers", "containers"] {
            let Some(items) = spec.get(list) else {
                continue;
            };
            let items = items.as_array().ok_or_else(|| field(list))?;
            for (i, c) in items.iter().enumerate() {
                let f = |name: &str| field(&format!("{list}[{i}].{name}"));
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| f("name"))?;
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .ok_or_else(|| f("image"))?;
                let mut env = Vec::new();
                let mut env_any = Vec::new();
                for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                    let n = e
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| f("env.name"))?;
                    match e.get("value") {
                        Some(v) => env.push(format!("{n}={}", v.as_str().unwrap_or_default())),
                        None => env_any.push(n.to_owned()),
                    }
                }
                let mut mounts = Vec::new();
                for m in c
                    .get("volumeMounts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let p = m
                        .get("mountPath")
                        .and_then(Value::as_str)
                        .ok_or_else(|| f("volumeMounts.mountPath"))?;
                    let ro = m.get("readOnly").and_then(Value::as_bool).unwrap_or(false);
                    mounts.push((p.to_owned(), ro));
                }
                let sc = c.get("securityContext");
                let sc_get = |p: &[&str]| sc.and_then(|s| at(s, p));
                containers.push(Container {
                    name: name.to_owned(),
                    image: image.to_owned(),
                    command: strings(c.get("command")),
                    args: strings(c.get("args")).unwrap_or_default(),
                    env,
                    env_any,
                    mounts,
                    run_as_user: sc_get(&["runAsUser"]).and_then(Value::as_i64).or(pod_user),
                    read_only_root: sc_get(&["readOnlyRootFilesystem"])
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    no_new_privileges: sc_get(&["allowPrivilegeEscalation"])
                        .and_then(Value::as_bool)
                        == Some(false),
                    caps_add: strings(sc_get(&["capabilities", "add"]))
                        .unwrap_or_default()
                        .iter()
                        .map(|c| cap_name(c))
                        .collect(),
                    caps_drop: strings(sc_get(&["capabilities", "drop"]))
                        .unwrap_or_default()
                        .iter()
                        .map(|c| cap_name(c))
                        .collect(),
                });
            }
        }
        if containers.is_empty() {
            return Err(field(&format!("{}.containers", path.join("."))));
        }
        out.push(Workload {
            kind,
            name: at(&doc, &["metadata", "name"])
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            containers,
        });
    }
    if out.is_empty() {
        return Err(GenError::Empty);
    }
    Ok(out)
}

/// Every image reference the workloads name.
pub fn images(workloads: &[Workload]) -> BTreeSet<String> {
    workloads
        .iter()
        .flat_map(|w| w.containers.iter().map(|c| c.image.clone()))
        .collect()
}

/// The repository part of an image reference (without tag or digest).
pub fn repository(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// The policy for `workloads`, with `digests` mapping each image reference
/// to its manifest digest (`sha256:…`).
pub fn render(
    workloads: &[Workload],
    digests: &BTreeMap<String, String>,
) -> Result<String, GenError> {
    let mut containers = Vec::new();
    for c in workloads.iter().flat_map(|w| &w.containers) {
        let digest = digests
            .get(&c.image)
            .ok_or_else(|| GenError::NoDigest(c.image.clone()))?;
        // The capabilities it may hold: the default set less its drops
        // (`ALL` drops the whole default set), plus its adds.
        let drops_all = c.caps_drop.iter().any(|d| d == "ALL");
        let capabilities: BTreeSet<&str> = DEFAULT_CAPS
            .iter()
            .copied()
            .filter(|cap| !drops_all && !c.caps_drop.iter().any(|d| d == cap))
            .chain(c.caps_add.iter().map(String::as_str))
            .collect();
        let args: Vec<String> = c
            .command
            .iter()
            .flatten()
            .chain(c.args.iter())
            .cloned()
            .collect();
        let volumes: serde_json::Map<String, Value> = c
            .mounts
            .iter()
            .map(|(path, ro)| (path.clone(), Value::Bool(*ro)))
            .collect();
        containers.push(json!({
            "name": c.name,
            "image": format!("{}@{digest}", repository(&c.image)),
            "digest": digest,
            "pin_command": c.command.is_some(),
            "args": args,
            "env": c.env,
            "env_any": c.env_any,
            "volumes": volumes,
            "run_as_user": c.run_as_user,
            "read_only_root": c.read_only_root,
            "no_new_privileges": c.no_new_privileges,
            "capabilities": capabilities,
        }));
    }
    // Pretty: regorus refuses lines over 1024 columns.
    let data =
        serde_json::to_string_pretty(&json!({ "containers": containers })).unwrap_or_default();
    Ok(format!("{TEMPLATE}\npolicy_data := {data}\n"))
}

/// The default capability set a container gets (containerd's); `drop: [ALL]`
/// removes all of it.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The input YAML with `annotation = value` added to every workload's pod
/// template metadata (passive documents unchanged). The YAML is
/// re-serialised: same content, comments dropped.
pub fn annotate(yaml: &str, annotation: &str, value: &str) -> Result<String, GenError> {
    let mut out = String::new();
    for (index, mut doc) in docs(yaml)?.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        let kind_s = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if let Some(kind) = Kind::parse(&kind_s) {
            let mut t = &mut doc;
            for k in kind.template_path() {
                t = t.get_mut(*k).ok_or_else(|| GenError::Field {
                    index,
                    kind: kind_s.clone(),
                    field: (*k).to_owned(),
                })?;
            }
            let meta = t
                .as_object_mut()
                .ok_or_else(|| GenError::Field {
                    index,
                    kind: kind_s.clone(),
                    field: "template".into(),
                })?
                .entry("metadata")
                .or_insert_with(|| json!({}));
            let ann = meta
                .as_object_mut()
                .ok_or_else(|| GenError::Field {
                    index,
                    kind: kind_s.clone(),
                    field: "metadata".into(),
                })?
                .entry("annotations")
                .or_insert_with(|| json!({}));
            if let Some(a) = ann.as_object_mut() {
                a.insert(annotation.to_owned(), Value::String(value.to_owned()));
            }
        }
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc).map_err(|e| GenError::Yaml {
            index,
            reason: e.to_string(),
        })?);
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
