//! Agent policy end to end on sim-TEE guests (QEMU TCG here): the session
//! state refuses everything before CreateSandbox, one changed initdata byte
//! is refused, `confidential-default` denies exec and a bind mount of `/`
//! naming the rule, `allow-all` allows exec, and a policy's ops state carries
//! from one request to the next (after SetPolicy, which allow-all allows).
//!
//! The agent is driven over its ttrpc socket directly, one request at a time.

#![allow(clippy::unwrap_used)] // tests may unwrap

#[path = "../../agent/image/tests/registry_common/mod.rs"]
mod registry_common;

use std::time::Duration;

use cloister_e2e::boot_lock;
use cloister_protocol::agent as pb;
use cloister_protocol::agent_ttrpc::AgentServiceClient;
use cloister_protocol::ttrpc::{self, Code};

fn initdata(data: &str) -> Vec<u8> {
    format!("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n{data}").into_bytes()
}

/// Boots a sim guest launched with `doc`, runs `f` against its agent, shuts
/// it down.
fn with_guest<F, Fut>(doc: Vec<u8>, f: F)
where
    F: FnOnce(AgentServiceClient, Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let backend = cloister_e2e::sim_backend(&dir.path().join("config"));
    let config =
        cloister_e2e::sim_sandbox_config(&dir.path().join("run"), doc.clone(), "agent-policy-test");
    let _lock = boot_lock();
    let rt = cloister_e2e::runtime();
    rt.block_on(async {
        let (sb, client) = cloister_e2e::boot(config, backend.as_ref()).await;
        // Raw requests over the runtime's own (authenticated) connection.
        let agent = client.service().clone();
        f(agent, doc).await;
        sb.shutdown().await;
    });
}

fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_duration(Duration::from_secs(60))
}

/// The status code and message of a refused request.
fn refused<T: std::fmt::Debug>(r: Result<T, ttrpc::Error>) -> (Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message().to_owned()),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn exec_req() -> pb::ExecProcessRequest {
    pb::ExecProcessRequest {
        container_id: "c1".into(),
        exec_id: "e1".into(),
        process: br#"{"args":["/bin/sh","-c","id"],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec(),
        ..Default::default()
    }
}

fn create_req(mounts: &str) -> pb::CreateContainerRequest {
    let spec = format!(
        r#"{{"ociVersion":"1.0.2","process":{{"args":["/bin/true"],"cwd":"/","user":{{"uid":0,"gid":0}}}},
            "root":{{"path":"rootfs"}},"mounts":[{mounts}],
            "linux":{{"namespaces":[{{"type":"pid"}},{{"type":"ipc"}},{{"type":"uts"}},{{"type":"mount"}}]}}}}"#
    );
    pb::CreateContainerRequest {
        container_id: "c1".into(),
        oci_spec: spec.into_bytes(),
        rootfs: Some(pb::Rootfs {
            kind: pb::rootfs::Kind::GUEST_PATH.into(),
            source: "/".into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    }
}

fn create_sandbox(initdata: &[u8]) -> pb::CreateSandboxRequest {
    pb::CreateSandboxRequest {
        sandbox_id: "s".into(),
        initdata: initdata.to_vec(),
        ..Default::default()
    }
}

/// Before CreateSandbox a TEE guest refuses everything but GetGuestDetails;
/// a one-byte change of initdata is refused and leaves it so; with the
/// launched document, confidential-default denies exec and a bind mount of
/// `/`, naming the rule.
#[test]
fn confidential_default_in_a_sim_guest() {
    let doc = initdata("\"cloister.toml\" = \"agent_policy = 'confidential-default'\\n\"\n");
    with_guest(doc, |agent, doc| async move {
        let before = |what: &str, r: (Code, String)| {
            assert_eq!(r.0, Code::FAILED_PRECONDITION, "{what}: {}", r.1);
            assert!(r.1.contains("CreateSandbox"), "{what}: {}", r.1);
        };
        before(
            "exec",
            refused(agent.exec_process(ctx(), &exec_req()).await),
        );
        before(
            "create",
            refused(agent.create_container(ctx(), &create_req("")).await),
        );
        let ev = pb::GetEvidenceRequest {
            report_data: vec![0; 64],
            ..Default::default()
        };
        before("evidence", refused(agent.get_evidence(ctx(), &ev).await));
        agent
            .get_guest_details(ctx(), &pb::GetGuestDetailsRequest::default())
            .await
            .expect("GetGuestDetails is answered before CreateSandbox");

        // One changed byte: another digest than the RPV.
        let mut changed = doc.clone();
        let i = changed.iter().position(|&b| b == b'c').unwrap();
        changed[i] = b'C';
        let (code, msg) = refused(agent.create_sandbox(ctx(), &create_sandbox(&changed)).await);
        assert_eq!(code, Code::FAILED_PRECONDITION, "{msg}");
        assert!(
            msg.contains("initdata refused") && msg.contains("RPV"),
            "{msg}"
        );
        before(
            "exec after a refused create",
            refused(agent.exec_process(ctx(), &exec_req()).await),
        );

        agent
            .create_sandbox(ctx(), &create_sandbox(&doc))
            .await
            .expect("the launched initdata is accepted");
        let (code, msg) = refused(agent.exec_process(ctx(), &exec_req()).await);
        assert_eq!(code, Code::PERMISSION_DENIED, "{msg}");
        assert!(
            msg.contains("ExecProcess") && msg.contains("no_exec"),
            "{msg}"
        );
        let bind_root = r#"{"destination":"/host","type":"bind","source":"/","options":["rbind"]}"#;
        let (code, msg) = refused(agent.create_container(ctx(), &create_req(bind_root)).await);
        assert_eq!(code, Code::PERMISSION_DENIED, "{msg}");
        assert!(msg.contains("CreateContainer"), "{msg}");
        assert!(
            msg.contains("bind_mount_allow_list: bind mount of / at /host"),
            "{msg}"
        );
        let (code, msg) = refused(agent.get_evidence(ctx(), &ev).await);
        assert_eq!(code, Code::PERMISSION_DENIED, "{msg}");
    });
}

/// allow-all (named in initdata) lets exec through to the container table;
/// SetPolicy (which allow-all allows) installs a policy whose ops record
/// created containers, and StartContainer is allowed only for one recorded
/// by an earlier CreateContainer.
#[test]
fn allow_all_then_policy_state_carries_across_requests() {
    let doc = initdata("\"cloister.toml\" = \"agent_policy = 'allow-all'\\n\"\n");
    with_guest(doc, |agent, doc| async move {
        agent
            .create_sandbox(ctx(), &create_sandbox(&doc))
            .await
            .expect("CreateSandbox");
        // Allowed by the policy: the agent itself answers (no such container).
        let (code, msg) = refused(agent.exec_process(ctx(), &exec_req()).await);
        assert_eq!(code, Code::NOT_FOUND, "{msg}");

        let stateful = r#"package agent_policy

import rego.v1

default CreateContainerRequest := false
default StartContainerRequest := false
default RemoveContainerRequest := true

CreateContainerRequest := {"allowed": true, "ops": [{"op": "add", "path": sprintf("/pstate/%v", [input.container_id]), "value": "created"}]} if {
	not data.pstate[input.container_id]
}

StartContainerRequest if data.pstate[input.container_id] == "created"
"#;
        agent
            .set_policy(
                ctx(),
                &pb::SetPolicyRequest {
                    policy: stateful.into(),
                    ..Default::default()
                },
            )
            .await
            .expect("allow-all allows SetPolicy");
        let start = pb::StartContainerRequest {
            container_id: "c1".into(),
            ..Default::default()
        };
        let (code, msg) = refused(agent.start_container(ctx(), &start).await);
        assert_eq!(code, Code::PERMISSION_DENIED, "{msg}");
        assert!(msg.contains("StartContainerRequest"), "{msg}");
        // The create passes the policy (and records c1) whatever the agent
        // then makes of it.
        let created = agent.create_container(ctx(), &create_req("")).await;
        if let Err(ttrpc::Error::RpcStatus(s)) = &created {
            assert_ne!(s.code(), Code::PERMISSION_DENIED, "{}", s.message());
        }
        // Now the policy allows the start: any refusal comes from the agent.
        if let Err(ttrpc::Error::RpcStatus(s)) = agent.start_container(ctx(), &start).await {
            assert_ne!(s.code(), Code::PERMISSION_DENIED, "{}", s.message());
        }
        // A second create of c1 is denied by the recorded state; exec is
        // undefined in the new policy: denied.
        let (code, msg) = refused(agent.create_container(ctx(), &create_req("")).await);
        assert_eq!(code, Code::PERMISSION_DENIED, "{msg}");
        let (code, _) = refused(agent.exec_process(ctx(), &exec_req()).await);
        assert_eq!(code, Code::PERMISSION_DENIED);
    });
}

fn run_ok(cmd: &mut std::process::Command, what: &str) -> String {
    let mut c = std::process::Command::new(cmd.get_program());
    c.args(cmd.get_args());
    registry_common::run(c, what)
}

/// `cloister policy gen` resolves a tag against a real registry (Debian's
/// docker-registry on 127.0.0.1), pins its digest, writes the annotated
/// YAML whose cc_init_data decodes to initdata carrying the same policy, and
/// refuses an unknown kind with one clear error.
#[test]
fn policy_gen_resolves_tags_against_a_registry() {
    use std::process::Command;
    let reg = registry_common::Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
        "umoci init",
    );
    run_ok(
        Command::new("umoci")
            .args(["new", "--image"])
            .arg(format!("{}:web", layout.display())),
        "umoci new",
    );
    let image = format!("{}/shop/web:2.1", reg.addr);
    run_ok(
        Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:web", layout.display()))
            .arg(format!("docker://{image}")),
        "skopeo copy",
    );
    let inspect = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{image}")),
        "skopeo inspect",
    );
    let digest = inspect
        .split("\"Digest\": \"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("skopeo inspect prints the digest")
        .to_owned();
    assert!(digest.starts_with("sha256:"), "{digest}");

    let pod = dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: shop}}\nspec:\n  template:\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        command: [/usr/bin/web]\n"
        ),
    )
    .unwrap();
    let rego = dir.path().join("policy.rego");
    let yaml_out = dir.path().join("pod-cc.yaml");
    let out = Command::new(cloister_e2e::cloister_bin())
        .args(["policy", "gen"])
        .arg(&pod)
        .arg("-o")
        .arg(&rego)
        .arg("--yaml-out")
        .arg(&yaml_out)
        .arg("--plain-http")
        .output()
        .unwrap();
    cloister_e2e::stdout_of_success(&out, "policy gen");
    let policy = std::fs::read_to_string(&rego).unwrap();
    assert!(
        policy.contains(&format!("{}/shop/web@{digest}", reg.addr)),
        "the policy pins the registry's digest {digest}"
    );
    let annotated = std::fs::read_to_string(&yaml_out).unwrap();
    let value = annotated
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("io.katacontainers.config.hypervisor.cc_init_data:")
        })
        .expect("the annotation is written")
        .trim()
        .trim_matches('\'')
        .trim_matches('"')
        .to_owned();
    let initdata = cloister_tee::initdata::Initdata::from_annotation(&value).unwrap();
    assert_eq!(initdata.policy(), Some(policy.as_str()));

    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: Frobnicator\nspec: {}\n").unwrap();
    let out = Command::new(cloister_e2e::cloister_bin())
        .args(["policy", "gen"])
        .arg(&bad)
        .arg("-o")
        .arg(dir.path().join("x.rego"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Frobnicator") && stderr.contains("expected Pod"),
        "{stderr}"
    );
}
