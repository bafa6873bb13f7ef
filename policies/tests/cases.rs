//! Policies tested as data: every `policies/cases/<Rule>/*.json` runs
//! against every shipped policy, and Kata's own policy and requests give
//! Kata's decisions here.

use std::path::{Path, PathBuf};

use cloister_policy::agent::{input, AgentPolicy, Decision, Request, Shipped};
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_case_for_every_shipped_policy() {
    let mut run = 0;
    let mut dirs: Vec<_> = std::fs::read_dir(root().join("cases"))
        .expect("policies/cases")
        .map(|e| e.expect("dir entry").path())
        .collect();
    dirs.sort();
    for dir in dirs {
        let rule = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let request = Request::ALL
            .into_iter()
            .find(|r| r.rule() == rule)
            .unwrap_or_else(|| panic!("cases/{rule}: not a request rule"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("case dir")
            .map(|e| e.expect("entry").path())
            .collect();
        files.sort();
        for file in files {
            let case = read_json(&file);
            let initdata = case.get("initdata").cloned().unwrap_or(json!({}));
            for shipped in Shipped::ALL {
                let want = case["expect"][shipped.name()].as_bool().unwrap_or_else(|| {
                    panic!("{}: no expectation for {}", file.display(), shipped.name())
                });
                let mut p = AgentPolicy::shipped(shipped, Some(json!({ "initdata": initdata })))
                    .expect("shipped policy compiles");
                let got = p.evaluate(request, &case["input"]).expect("evaluates");
                assert_eq!(
                    got.is_allowed(),
                    want,
                    "{} under {}: {got:?}",
                    file.display(),
                    shipped.name()
                );
                if let (Decision::Denied { reason }, Some(v)) = (&got, case["violation"].as_str()) {
                    assert!(reason.contains(v), "{}: {reason} lacks {v}", file.display());
                    assert!(reason.contains(request.rpc()), "{reason}");
                }
                run += 1;
            }
        }
    }
    assert!(run >= 40, "only {run} case runs");
}

#[test]
fn kata_policy_gives_katas_decisions() {
    let rego =
        std::fs::read_to_string(root().join("tests/kata/allow-all-except-exec-process.rego"))
            .expect("vendored Kata policy");
    let mut p = AgentPolicy::new("allow-all-except-exec-process.rego", &rego, None).unwrap();
    let execs = read_json(&root().join("tests/kata/execprocess-testcases.json"));
    let execs = execs.as_array().expect("array");
    assert_eq!(execs.len(), 5);
    for case in execs {
        let d = p.evaluate(Request::ExecProcess, &case["request"]).unwrap();
        assert!(!d.is_allowed(), "{}: {d:?}", case["description"]);
    }
    let create = read_json(&root().join("tests/kata/createcontainer-request.json"));
    assert_eq!(
        p.evaluate(Request::CreateContainer, &create).unwrap(),
        Decision::Allowed
    );
    // The requests our agent builds are decided the same way.
    let ours = json!({"container_id": "c", "exec_id": "e",
        "process": input::oci_process(&json!({"args": ["echo", "test"], "cwd": "/"}))});
    assert!(!p
        .evaluate(Request::ExecProcess, &ours)
        .unwrap()
        .is_allowed());
    for r in [
        Request::ReadStdout,
        Request::WriteStdin,
        Request::GetGuestDetails,
        Request::SetPolicy,
    ] {
        assert!(p.evaluate(r, &json!({})).unwrap().is_allowed(), "{r:?}");
    }
}

/// Our conversion of an OCI runtime-spec process gives Kata's field names
/// and values for the fields the two APIs share (Kata's exec case 1).
#[test]
fn our_process_input_has_katas_shape() {
    let execs = read_json(&root().join("tests/kata/execprocess-testcases.json"));
    let kata = &execs[0]["request"]["process"];
    let ours = input::oci_process(&json!({
        "terminal": false,
        "args": ["echo", "test"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=busybox-cc"],
        "cwd": "/",
        "noNewPrivileges": false,
        "oomScoreAdj": 0,
        "selinuxLabel": "",
        "apparmorProfile": ""
    }));
    for (k, v) in ours.as_object().expect("object") {
        assert_eq!(&kata[k], v, "field {k}");
    }
    assert_eq!(ours.as_object().map(|o| o.len()), Some(8));
}
