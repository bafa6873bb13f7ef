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

/// The OCI spec of the web container's create that the generated policy
/// allows, as the runtime sends it (the benchmark's input too).
fn web_spec() -> serde_json::Value {
    serde_json::from_str(include_str!("../../testdata/pod-3-web-spec.json")).unwrap()
}

/// Every check of the generated policy, each with a request that passes it
/// and one that fails it: the decision and the rule a denial names.
#[test]
fn generated_policy_case_table() {
    let d = digests();
    let rego = render(&parse(POD3).unwrap(), &d).unwrap();
    let mut p = AgentPolicy::new("gen", &rego, None).unwrap();
    let web = format!(
        "127.0.0.1:5000/shop/web@{}",
        d["127.0.0.1:5000/shop/web:2.1"]
    );
    type Edit = fn(&mut serde_json::Value);
    fn env(s: &mut serde_json::Value, e: &str) {
        s["process"]["env"].as_array_mut().unwrap().push(json!(e));
    }
    fn mount(s: &mut serde_json::Value, m: serde_json::Value) {
        s["mounts"].as_array_mut().unwrap().push(m);
    }
    fn cap(s: &mut serde_json::Value, c: &str) {
        s["process"]["capabilities"]["bounding"]
            .as_array_mut()
            .unwrap()
            .push(json!(c));
    }
    // (case, edit of the spec, None = allowed / Some(rule named))
    let cases: &[(&str, Edit, Option<&str>)] = &[
        ("as pinned", |_| {}, None),
        (
            "another command",
            |s| s["process"]["args"] = json!(["/bin/sh"]),
            Some("pinned_command"),
        ),
        (
            "an extra argument",
            |s| s["process"]["args"] = json!(["/usr/bin/web", "--port", "8080", "-x"]),
            Some("pinned_command"),
        ),
        (
            "a variable the pod lacks",
            |s| env(s, "EVIL=1"),
            Some("pinned_env"),
        ),
        (
            "a pinned variable with another value",
            |s| env(s, "MODE=debug"),
            Some("pinned_env"),
        ),
        (
            "a secret-backed variable with any value",
            |s| env(s, "TOKEN=other"),
            None,
        ),
        ("a runtime variable", |s| env(s, "TERM=xterm"), None),
        (
            "a service host variable",
            |s| env(s, "DB_SERVICE_HOST=10.0.0.9"),
            None,
        ),
        (
            "a service port address variable",
            |s| env(s, "DB_PORT_5432_TCP_ADDR=10.0.0.9"),
            None,
        ),
        (
            "a lower-case service-looking variable",
            |s| env(s, "db_service_host=x"),
            Some("pinned_env"),
        ),
        ("no env at all", |s| s["process"]["env"] = json!(null), None),
        (
            "a bind of / ",
            |s| {
                mount(
                    s,
                    json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind"]}),
                )
            },
            Some("pinned_mounts"),
        ),
        (
            "a kernel fs",
            |s| {
                mount(
                    s,
                    json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm"}),
                )
            },
            None,
        ),
        (
            "a kernel fs type with bind options",
            |s| {
                mount(
                    s,
                    json!({"destination": "/x", "type": "tmpfs", "source": "/", "options": ["bind"]}),
                )
            },
            Some("pinned_mounts"),
        ),
        (
            "a read-only volume mounted writable",
            |s| s["mounts"][4]["options"] = json!(["rbind"]),
            Some("pinned_mounts"),
        ),
        (
            "a writable volume mounted read-only",
            |s| s["mounts"][3]["options"] = json!(["rbind", "ro"]),
            None,
        ),
        (
            "a mount with null options",
            |s| {
                mount(
                    s,
                    json!({"destination": "/proc2", "type": "proc", "source": "proc", "options": null}),
                )
            },
            None,
        ),
        (
            "CAP_SYS_ADMIN",
            |s| cap(s, "CAP_SYS_ADMIN"),
            Some("pinned_security_context"),
        ),
        (
            "a default capability the pod drops",
            |s| cap(s, "CAP_CHOWN"),
            Some("pinned_security_context"),
        ),
        (
            "no capabilities",
            |s| s["process"]["capabilities"] = json!(null),
            None,
        ),
        (
            "UID 0",
            |s| s["process"]["user"]["uid"] = json!(0),
            Some("pinned_security_context"),
        ),
        (
            "a writable root",
            |s| s["root"]["readonly"] = json!(false),
            Some("pinned_security_context"),
        ),
        (
            "new privileges",
            |s| s["process"]["noNewPrivileges"] = json!(false),
            Some("pinned_security_context"),
        ),
        (
            "no pid namespace",
            |s| {
                s["linux"]["namespaces"] =
                    json!([{"type": "ipc"}, {"type": "uts"}, {"type": "mount"}])
            },
            Some("required_namespaces"),
        ),
        (
            "a prestart hook",
            |s| s["hooks"] = json!({"prestart": [{"path": "/bin/sh"}]}),
            Some("no_host_hooks"),
        ),
        (
            "empty hooks",
            |s| s["hooks"] = json!({"prestart": []}),
            None,
        ),
    ];
    for (name, edit, want) in cases {
        let mut spec = web_spec();
        edit(&mut spec);
        let req = json!({"container_id": "web", "exec_id": "web", "OCI": input::oci_spec(&spec),
                         "rootfs": {"kind": "IMAGE", "source": web}});
        let got = p.evaluate(Request::CreateContainer, &req).unwrap();
        match (want, &got) {
            (None, Decision::Allowed) => {}
            (Some(rule), Decision::Denied { reason }) if reason.contains(rule) => {}
            _ => panic!("{name}: expected {want:?}, got {got:?}"),
        }
    }
    // The rootfs: the image must be one the pod pins, by digest, as an image.
    for (rootfs, want) in [
        (json!({"kind": "IMAGE", "source": web}), None),
        (
            json!({"kind": "IMAGE", "source": "127.0.0.1:5000/shop/web:2.1"}),
            Some("pinned_image_digest"),
        ),
        (
            json!({"kind": "IMAGE", "source": format!("127.0.0.1:5000/shop/web@sha256:{}", "e".repeat(64))}),
            Some("pinned_image_digest"),
        ),
        (
            json!({"kind": "BLOCK", "source": "/dev/vda"}),
            Some("pinned_image_digest"),
        ),
        // The sidecar's image with the web container's command.
        (
            json!({"kind": "IMAGE", "source": format!("127.0.0.1:5000/shop/sidecar@sha256:{}", "1".repeat(64))}),
            Some("pinned_command"),
        ),
    ] {
        let req = json!({"container_id": "web", "exec_id": "web", "OCI": input::oci_spec(&web_spec()),
                         "rootfs": rootfs});
        let got = p.evaluate(Request::CreateContainer, &req).unwrap();
        match (want, &got) {
            (None, Decision::Allowed) => {}
            (Some(rule), Decision::Denied { reason }) if reason.contains(rule) => {}
            _ => panic!("rootfs {rootfs}: expected {want:?}, got {got:?}"),
        }
    }
}
