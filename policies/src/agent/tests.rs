use super::*;
use serde_json::json;

const STATEFUL: &str = r#"
package agent_policy

import rego.v1

default CreateContainerRequest := false
default ExecProcessRequest := false

# Remember each created container; exec only into one created before.
CreateContainerRequest := {"allowed": true, "ops": ops} if {
	not data.pstate[input.container_id]
	ops := [{"op": "add", "path": sprintf("/pstate/%v", [input.container_id]), "value": "created"}]
}

ExecProcessRequest if data.pstate[input.container_id] == "created"
"#;

#[test]
fn undefined_rule_is_denied_naming_rule_and_request() {
    let mut p = AgentPolicy::new("p", "package agent_policy\n", None).unwrap();
    for r in Request::ALL {
        match p.evaluate(r, &json!({})).unwrap() {
            Decision::Denied { reason } => {
                assert!(reason.contains(r.rpc()), "{reason}");
                assert!(reason.contains(r.rule()), "{reason}");
                assert!(reason.contains("default deny"), "{reason}");
            }
            d => panic!("{r:?}: {d:?}"),
        }
    }
}

#[test]
fn only_true_or_allowed_object_allows() {
    let rego = r#"package agent_policy
CreateSandboxRequest := "yes"
DestroySandboxRequest := {"allowed": "true"}
StartContainerRequest := {"allowed": true}
WaitProcessRequest := true
"#;
    let mut p = AgentPolicy::new("p", rego, None).unwrap();
    let v = json!({});
    assert!(!p.evaluate(Request::CreateSandbox, &v).unwrap().is_allowed());
    assert!(!p
        .evaluate(Request::DestroySandbox, &v)
        .unwrap()
        .is_allowed());
    assert!(p
        .evaluate(Request::StartContainer, &v)
        .unwrap()
        .is_allowed());
    assert!(p.evaluate(Request::WaitProcess, &v).unwrap().is_allowed());
}

#[test]
fn ops_state_carries_to_later_requests() {
    let mut p = AgentPolicy::new("stateful", STATEFUL, None).unwrap();
    let c1 = json!({"container_id": "c1"});
    let c2 = json!({"container_id": "c2"});
    assert!(!p.evaluate(Request::ExecProcess, &c1).unwrap().is_allowed());
    assert_eq!(
        p.evaluate(Request::CreateContainer, &c1).unwrap(),
        Decision::Allowed
    );
    assert_eq!(p.state(), &json!({"c1": "created"}));
    assert!(p.evaluate(Request::ExecProcess, &c1).unwrap().is_allowed());
    assert!(!p.evaluate(Request::ExecProcess, &c2).unwrap().is_allowed());
    // A second create of c1 is refused (no rule body matches).
    assert!(!p
        .evaluate(Request::CreateContainer, &c1)
        .unwrap()
        .is_allowed());
    assert!(p
        .evaluate(Request::CreateContainer, &c2)
        .unwrap()
        .is_allowed());
    assert!(p.evaluate(Request::ExecProcess, &c2).unwrap().is_allowed());
}

#[test]
fn ops_outside_pstate_or_malformed_are_refused() {
    let rego = r#"package agent_policy
CreateSandboxRequest := {"allowed": true, "ops": [{"op": "add", "path": "/initdata/x", "value": 1}]}
StartContainerRequest := {"allowed": true, "ops": [{"op": "remove", "path": "/pstate/none"}]}
"#;
    let mut p = AgentPolicy::new("p", rego, None).unwrap();
    let err = p.evaluate(Request::CreateSandbox, &json!({})).unwrap_err();
    assert!(err.to_string().contains("outside /pstate"), "{err}");
    let err = p.evaluate(Request::StartContainer, &json!({})).unwrap_err();
    assert!(err.to_string().contains("/pstate/none"), "{err}");
    assert_eq!(p.state(), &json!({}));
}

#[test]
fn audit_mode_only_when_the_policy_enables_it() {
    let strict = AgentPolicy::new("p", "package agent_policy\n", None).unwrap();
    assert!(!strict.audit());
    let mut audit = AgentPolicy::new(
        "p",
        "package agent_policy\nAllowRequestsFailingPolicy := true\n",
        None,
    )
    .unwrap();
    assert!(audit.audit());
    match audit.evaluate(Request::ExecProcess, &json!({})).unwrap() {
        Decision::Audited { reason } => assert!(reason.contains("ExecProcess"), "{reason}"),
        d => panic!("{d:?}"),
    }
    // Anything but `true` is not audit mode.
    let p = AgentPolicy::new(
        "p",
        "package agent_policy\nAllowRequestsFailingPolicy := \"true\"\n",
        None,
    )
    .unwrap();
    assert!(!p.audit());
}

#[test]
fn wrong_package_and_bad_rego_are_refused() {
    let err = AgentPolicy::new("x.rego", "package other\nallow := true\n", None).unwrap_err();
    assert!(err.to_string().contains("agent_policy"), "{err}");
    let err = AgentPolicy::new("x.rego", "package agent_policy\nallow { ", None).unwrap_err();
    assert!(err.to_string().contains("x.rego"), "{err}");
}

#[test]
fn shipped_policies_compile_and_name_round_trips() {
    for s in Shipped::ALL {
        AgentPolicy::shipped(s, None).unwrap();
        assert_eq!(Shipped::from_name(s.name()).unwrap(), s);
    }
    assert!(Shipped::from_name("allow-most").is_err());
    for r in Request::ALL {
        assert_eq!(
            Request::from_rule(r.rule()).map(Request::rule),
            Some(r.rule())
        );
    }
}

#[test]
fn confidential_default_names_the_failed_rule() {
    let mut p = AgentPolicy::shipped(Shipped::ConfidentialDefault, None).unwrap();
    let input = json!({
        "container_id": "c", "exec_id": "c",
        "rootfs": {"kind": "BLOCK", "source": "/dev/vda", "fstype": "ext4"},
        "OCI": {"Mounts": [{"destination": "/host", "source": "/", "type_": "bind", "options": ["rbind"]}],
                "Linux": {"Namespaces": [{"Type": "pid"}, {"Type": "ipc"}, {"Type": "uts"}, {"Type": "mount"}]}}
    });
    match p.evaluate(Request::CreateContainer, &input).unwrap() {
        Decision::Denied { reason } => {
            assert!(
                reason.contains("bind_mount_allow_list: bind mount of / at /host"),
                "{reason}"
            );
            assert!(reason.contains("no_host_rootfs"), "{reason}");
        }
        d => panic!("{d:?}"),
    }
}

#[test]
fn a_rule_that_names_its_violations_is_used_without_the_violations_rule() {
    // `violations` would say something else: the rule's own list wins.
    let rego = r#"package agent_policy
import rego.v1
CreateContainerRequest := {"allowed": false, "violations": {"own_check: the image is not pinned"}}
StartContainerRequest := {"allowed": true, "violations": {"ignored when allowed"}}
violations := {"CreateContainerRequest": {"from_the_violations_rule"}}
"#;
    let mut p = AgentPolicy::new("p", rego, None).unwrap();
    match p.evaluate(Request::CreateContainer, &json!({})).unwrap() {
        Decision::Denied { reason } => {
            assert!(
                reason.contains("own_check: the image is not pinned"),
                "{reason}"
            );
            assert!(!reason.contains("from_the_violations_rule"), "{reason}");
        }
        d => panic!("{d:?}"),
    }
    assert!(p
        .evaluate(Request::StartContainer, &json!({}))
        .unwrap()
        .is_allowed());
}

/// regorus 0.14's bytecode VM answers an `else` chain's later branches
/// with undefined (and under `not` an undefined reads as false: a policy
/// could fail open), so a policy with `else` runs on the interpreter; these
/// decisions are OPA's.
#[test]
fn else_chains_and_other_constructs_decide_as_opa_does() {
    let rego = r#"package agent_policy
import rego.v1
status := s if { s := input.a } else := s if { s := input.b }
CreateSandboxRequest if status == "ok"
untrusted := s if { s := input.a } else := s if { s := input.b }
StartContainerRequest if not untrusted
x := input.sub
WaitProcessRequest if x["k.y"] == "ok"
"#;
    let mut p = AgentPolicy::new("p", rego, None).unwrap();
    let allowed = |p: &mut AgentPolicy, r, v| p.evaluate(r, &v).unwrap().is_allowed();
    assert!(allowed(&mut p, Request::CreateSandbox, json!({"a": "ok"})));
    assert!(allowed(&mut p, Request::CreateSandbox, json!({"b": "ok"})));
    assert!(!allowed(&mut p, Request::CreateSandbox, json!({"b": "no"})));
    assert!(allowed(
        &mut p,
        Request::StartContainer,
        json!({"a": false})
    ));
    // The VM allowed this one: `untrusted` came out undefined, not true.
    assert!(!allowed(
        &mut p,
        Request::StartContainer,
        json!({"b": true})
    ));
    assert!(allowed(
        &mut p,
        Request::WaitProcess,
        json!({"sub": {"k.y": "ok"}})
    ));
}

#[test]
fn only_policies_with_else_leave_the_vm() {
    assert!(uses_else("x := 1 if input.a\nelse := 2\n"));
    assert!(uses_else("f(x) := 1 if { x } else := 0"));
    // A `#` in a string must not hide the `else` after it.
    assert!(uses_else("x := \"#\" if { input.a } else := \"y\""));
    assert!(!uses_else("allow if input.elsewhere"));
    for s in Shipped::ALL {
        assert!(!uses_else(s.rego()), "{} would leave the VM", s.name());
    }
    let generated = include_str!("../../rego/agent/generated-template.rego");
    assert!(!uses_else(generated));
}
