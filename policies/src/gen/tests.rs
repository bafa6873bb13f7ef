use super::*;
use crate::agent::{input, AgentPolicy, Decision, Request};

pub(crate) const POD3: &str = include_str!("../../testdata/pod-3.yaml");

pub(crate) fn digests() -> BTreeMap<String, String> {
    images(&parse(POD3).unwrap())
        .into_iter()
        .enumerate()
        .map(|(i, img)| {
            let d = img
                .split('@')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("sha256:{}", format!("{i}").repeat(64)));
            (img, d)
        })
        .collect()
}

fn create(image: &str, args: &[&str], uid: u32) -> serde_json::Value {
    let spec = json!({
        "ociVersion": "1.1.0",
        "process": {"args": args, "env": ["PATH=/bin", "MODE=production", "TOKEN=abc"], "cwd": "/",
                    "user": {"uid": uid, "gid": 0}, "noNewPrivileges": true,
                    "capabilities": {"bounding": ["CAP_NET_BIND_SERVICE"]}},
        "root": {"path": "rootfs", "readonly": true},
        "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                   {"destination": "/etc/shop", "type": "bind", "source": "/run/x", "options": ["rbind", "ro"]}],
        "linux": {"namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]}
    });
    json!({"container_id": "c", "exec_id": "c", "OCI": input::oci_spec(&spec),
           "rootfs": {"kind": "IMAGE", "source": image}})
}

#[test]
fn pinned_command_is_allowed_and_another_is_refused_naming_the_rule() {
    let d = digests();
    let rego = render(&parse(POD3).unwrap(), &d).unwrap();
    let mut p = AgentPolicy::new("gen", &rego, None).unwrap();
    let web = format!(
        "127.0.0.1:5000/shop/web@{}",
        d["127.0.0.1:5000/shop/web:2.1"]
    );
    let ok = create(&web, &["/usr/bin/web", "--port", "8080"], 1000);
    assert_eq!(
        p.evaluate(Request::CreateContainer, &ok).unwrap(),
        Decision::Allowed
    );
    let other = create(&web, &["/bin/sh", "-c", "cat /etc/shop/*"], 1000);
    match p.evaluate(Request::CreateContainer, &other).unwrap() {
        Decision::Denied { reason } => assert!(reason.contains("pinned_command"), "{reason}"),
        d => panic!("{d:?}"),
    }
    // Another UID, an unpinned image, or a tag instead of the digest.
    let root = create(&web, &["/usr/bin/web", "--port", "8080"], 0);
    assert!(!p
        .evaluate(Request::CreateContainer, &root)
        .unwrap()
        .is_allowed());
    let tag = create(
        "127.0.0.1:5000/shop/web:2.1",
        &["/usr/bin/web", "--port", "8080"],
        1000,
    );
    match p.evaluate(Request::CreateContainer, &tag).unwrap() {
        Decision::Denied { reason } => assert!(reason.contains("pinned_image_digest"), "{reason}"),
        d => panic!("{d:?}"),
    }
    assert!(!p
        .evaluate(Request::ExecProcess, &json!({}))
        .unwrap()
        .is_allowed());
}

#[test]
fn every_workload_kind_is_read_and_unknown_kinds_are_one_error() {
    let pod_spec = "containers: [{name: a, image: 'r/a:1', command: [x]}]";
    for (kind, wrap) in [
        ("Pod", format!("spec: {{{pod_spec}}}")),
        (
            "Deployment",
            format!("spec: {{template: {{spec: {{{pod_spec}}}}}}}"),
        ),
        (
            "StatefulSet",
            format!("spec: {{template: {{spec: {{{pod_spec}}}}}}}"),
        ),
        (
            "DaemonSet",
            format!("spec: {{template: {{spec: {{{pod_spec}}}}}}}"),
        ),
        (
            "ReplicaSet",
            format!("spec: {{template: {{spec: {{{pod_spec}}}}}}}"),
        ),
        (
            "Job",
            format!("spec: {{template: {{spec: {{{pod_spec}}}}}}}"),
        ),
        (
            "CronJob",
            format!("spec: {{jobTemplate: {{spec: {{template: {{spec: {{{pod_spec}}}}}}}}}}}"),
        ),
    ] {
        let yaml = format!("kind: {kind}\nmetadata: {{name: n}}\n{wrap}\n---\nkind: ConfigMap\n");
        let w = parse(&yaml).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(w[0].containers[0].image, "r/a:1", "{kind}");
        let out = annotate(&yaml, "k", "v").unwrap();
        let again = docs(&out).unwrap();
        let mut t = &again[0];
        for k in w[0].kind.template_path() {
            t = &t[*k];
        }
        assert_eq!(
            t["metadata"]["annotations"]["k"],
            json!("v"),
            "{kind}: {out}"
        );
    }
    let err = parse("kind: Pod\nspec: {containers: []}\n---\nkind: Frobnicator\n").unwrap_err();
    assert!(err.to_string().contains("containers"), "{err}");
    let err = parse("kind: Frobnicator\nspec: {}\n").unwrap_err();
    assert!(
        matches!(err, GenError::UnknownKind { index: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("Frobnicator"), "{err}");
    assert!(matches!(parse("kind: ConfigMap\n"), Err(GenError::Empty)));
}

#[test]
fn repository_strips_tag_and_digest_but_not_port() {
    assert_eq!(repository("127.0.0.1:5000/a/b:1.0"), "127.0.0.1:5000/a/b");
    assert_eq!(repository("127.0.0.1:5000/a/b"), "127.0.0.1:5000/a/b");
    assert_eq!(repository("busybox@sha256:ab"), "busybox");
}

#[test]
fn generated_policy_is_small() {
    let rego = render(&parse(POD3).unwrap(), &digests()).unwrap();
    assert!(rego.len() < 12 * 1024, "{} bytes", rego.len());
}
