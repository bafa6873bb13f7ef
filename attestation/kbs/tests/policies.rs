//! Every shipped resource policy (policies/kbs/*.rego) evaluated against a
//! table of EAR claim sets: who gets a secret and who does not.

#![allow(clippy::unwrap_used)] // tests may unwrap

use cloister_kbs::RESOURCE_POLICY_QUERY;
use cloister_policy::{Policy, PolicyError};
use serde_json::{json, Value};

/// An EAR claim set as the KBS builds it (Trustee's claim names).
#[derive(Clone, Copy)]
struct Ear {
    status: &'static str,
    simulated: bool,
    failures: usize,
    sample: bool,
    sets: &'static [&'static str],
}

const HW_OK: Ear = Ear {
    status: "affirming",
    simulated: false,
    failures: 0,
    sample: false,
    sets: &[],
};
const SIM_OK: Ear = Ear {
    status: "warning",
    simulated: true,
    ..HW_OK
};

impl Ear {
    fn claims(self) -> Value {
        let mut evidence = json!({
            "failures": (0..self.failures)
                .map(|i| json!({"claim": format!("c{i}"), "expected": "x", "found": "y"}))
                .collect::<Vec<_>>(),
            "runtime_data_claims": {"nonce": "n", "tee-pubkey": {}},
        });
        if self.sample {
            evidence["runtime_data_claims"]["insecure-sample"] = json!(true);
        }
        if !self.sets.is_empty() {
            evidence["reference_value_sets"] = json!(self.sets);
        }
        json!({
            "submods": {"cpu0": {
                "ear.status": self.status,
                "ear.cloister.simulated": self.simulated,
                "ear.veraison.annotated-evidence": evidence,
            }}
        })
    }
}

fn allows(policy: &Policy, ear: Ear, path: &str, allow_sim: bool) -> bool {
    let data = json!({"resource-path": path, "allow-sim": allow_sim, "plugin": "resource"});
    match policy.eval(RESOURCE_POLICY_QUERY, &ear.claims(), Some(&data)) {
        Ok(Value::Bool(b)) => b,
        Ok(other) => panic!("policy returned {other}"),
        Err(PolicyError::Undefined(_)) => false,
        Err(e) => panic!("policy failed: {e}"),
    }
}

fn shipped(file: &str) -> Policy {
    let path = format!("{}/../../policies/kbs/{file}", env!("CARGO_MANIFEST_DIR"));
    Policy::new(file, &std::fs::read_to_string(&path).unwrap()).unwrap()
}

type Case = (&'static str, Ear, &'static str, bool, bool);

fn run_table(file: &str, cases: &[Case]) {
    let p = shipped(file);
    for (what, ear, path, allow_sim, want) in cases {
        assert_eq!(
            allows(&p, *ear, path, *allow_sim),
            *want,
            "{file}: {what} (path {path}, allow-sim {allow_sim})"
        );
    }
}

#[test]
fn default_resource_policy_table() {
    // The file is the one the KBS embeds.
    assert_eq!(
        std::fs::read_to_string(format!(
            "{}/../../policies/kbs/resource-policy.rego",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
        cloister_kbs::DEFAULT_RESOURCE_POLICY
    );
    run_table(
        "resource-policy.rego",
        &[
            ("affirming hardware", HW_OK, "a/b/c", false, true),
            (
                "warning hardware",
                Ear {
                    status: "warning",
                    ..HW_OK
                },
                "a/b/c",
                false,
                false,
            ),
            (
                "contraindicated hardware",
                Ear {
                    status: "contraindicated",
                    ..HW_OK
                },
                "a/b/c",
                true,
                false,
            ),
            ("sim without allow-sim", SIM_OK, "a/b/c", false, false),
            ("sim with allow-sim", SIM_OK, "a/b/c", true, true),
            (
                "sim with a failure",
                Ear {
                    failures: 1,
                    ..SIM_OK
                },
                "a/b/c",
                true,
                false,
            ),
            (
                "sim contraindicated",
                Ear {
                    status: "contraindicated",
                    ..SIM_OK
                },
                "a/b/c",
                true,
                false,
            ),
            (
                "insecure sample",
                Ear {
                    sample: true,
                    ..SIM_OK
                },
                "a/b/c",
                true,
                false,
            ),
            (
                "insecure sample claiming affirming hardware",
                Ear {
                    sample: true,
                    ..HW_OK
                },
                "a/b/c",
                true,
                false,
            ),
        ],
    );
}

#[test]
fn allow_sim_policy_table_requires_simulated_evidence() {
    run_table(
        "allow-sim-resource-policy.rego",
        &[
            ("sim, no failures", SIM_OK, "a/b/c", false, true),
            (
                "affirming hardware (no reference values checked)",
                HW_OK,
                "a/b/c",
                false,
                false,
            ),
            (
                "warning hardware",
                Ear {
                    status: "warning",
                    ..HW_OK
                },
                "a/b/c",
                true,
                false,
            ),
            (
                "sim with a failure",
                Ear {
                    failures: 2,
                    ..SIM_OK
                },
                "a/b/c",
                true,
                false,
            ),
            (
                "insecure sample",
                Ear {
                    sample: true,
                    ..SIM_OK
                },
                "a/b/c",
                true,
                false,
            ),
        ],
    );
}

#[test]
fn repo_scoped_policy_table() {
    run_table(
        "repo-scoped-resource-policy.rego",
        &[
            (
                "affirming hardware, default repo",
                HW_OK,
                "default/key/1",
                false,
                true,
            ),
            ("admin tag", HW_OK, "default/key/admin", false, false),
            ("other repo", HW_OK, "other/key/1", false, false),
            ("sim", SIM_OK, "default/key/1", true, false),
            (
                "warning hardware",
                Ear {
                    status: "warning",
                    ..HW_OK
                },
                "default/key/1",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn workload_set_policy_table() {
    let web = Ear {
        sets: &["web"],
        ..HW_OK
    };
    run_table(
        "workload-set-resource-policy.rego",
        &[
            (
                "matched set names the repository",
                web,
                "web/key/1",
                false,
                true,
            ),
            (
                "another workload's repository",
                web,
                "db/key/1",
                false,
                false,
            ),
            ("no set matched", HW_OK, "web/key/1", false, false),
            (
                "sim that matched",
                Ear {
                    sets: &["web"],
                    ..SIM_OK
                },
                "web/key/1",
                true,
                false,
            ),
            (
                "warning that matched",
                Ear {
                    status: "warning",
                    ..web
                },
                "web/key/1",
                false,
                false,
            ),
        ],
    );
}

#[test]
fn every_shipped_policy_has_a_table() {
    let dir = format!("{}/../../policies/kbs", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".rego"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "allow-sim-resource-policy.rego",
            "repo-scoped-resource-policy.rego",
            "resource-policy.rego",
            "workload-set-resource-policy.rego",
        ],
        "a new shipped policy needs a case table here"
    );
}

// ---- Trustee's resource-policy input shapes ----------------------------
//
// Trustee's sample policies (kbs/sample_policies and its default policies)
// read: every submod's `ear.status` ("affirming" sample), `data.plugin` and
// the absence of `sample` annotated evidence (its earlier default),
// `input.trust_context.attestation_summary.verification_result` (its
// current default), and `split(data["resource-path"], "/")` with three
// segments (its path-scoped test policies). The policies below make the
// same checks in our own words; each runs on the input the KBS builds
// (`policy_input`) and must release to affirming hardware evidence and not
// to simulated or sample evidence, except where noted.

const TRUSTEE_AFFIRMING: &str = r#"
package policy
import rego.v1
default allow := false
allow if {
	count(input.submods) > 0
	not some_not_affirming
}
some_not_affirming if {
	some _, m in input.submods
	m["ear.status"] != "affirming"
}
"#;

const TRUSTEE_TRUST_CONTEXT: &str = r#"
package policy
import rego.v1
default allow := false
allow if {
	data.plugin == "resource"
	input.trust_context.attestation_summary.verification_result == true
}
"#;

const TRUSTEE_NOT_SAMPLE: &str = r#"
package policy
import rego.v1
default allow := false
allow if {
	data.plugin == "resource"
	not input.submods.cpu0["ear.veraison.annotated-evidence"].sample
}
"#;

const TRUSTEE_PATH: &str = r#"
package policy
import rego.v1
default allow := false
segments := split(data["resource-path"], "/")
allow if {
	count(segments) == 3
	segments[0] == "default"
	input.submods.cpu0["ear.status"] == "affirming"
}
"#;

/// EAR claims as the KBS signs them (after `trustee_names`).
fn ear_claims(tee: &str, status: &str, simulated: bool, sample: bool) -> Value {
    let mut evidence = json!({
        tee: {"measurement": "00"},
        "report_data": "00",
        "failures": [],
        "runtime_data_claims": {"nonce": "n", "tee-pubkey": {}},
    });
    if sample {
        evidence["runtime_data_claims"]["insecure-sample"] = json!(true);
        evidence["sample"] = json!({"productId": "0", "svn": "1"});
    }
    json!({
        "iss": "cloister-kbs",
        "iat": 1, "exp": 2,
        "ear.verifier-id": {"developer": "cloister", "build": "x"},
        "submods": {"cpu0": {
            "ear.status": status,
            "ear.trustworthiness-vector": {"hardware": if simulated { 32 } else { 2 }},
            "ear.appraisal-policy-id": "appraisal-policy",
            "ear.cloister.simulated": simulated,
            "ear.veraison.annotated-evidence": evidence,
        }}
    })
}

fn trustee_allows(rego: &str, claims: Value, path: &str) -> bool {
    let p = Policy::new("trustee.rego", rego).unwrap();
    let cfg = cloister_kbs::Config::default();
    let key: cloister_kbs_client::kbs_types::TeePubKey = serde_json::from_value(json!({
        "kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "AA"
    }))
    .unwrap();
    let (input, data) =
        cloister_kbs::server::policy_input(&cfg, claims, &key, &path.parse().unwrap());
    match p.eval(RESOURCE_POLICY_QUERY, &input, Some(&data)) {
        Ok(Value::Bool(b)) => b,
        Ok(other) => panic!("policy returned {other}"),
        Err(PolicyError::Undefined(_)) => false,
        Err(e) => panic!("policy failed: {e}"),
    }
}

#[test]
fn trustee_style_policies_run_unchanged() {
    let hw = || ear_claims("snp", "affirming", false, false);
    let hw_warning = || ear_claims("tdx", "warning", false, false);
    let sim = || ear_claims("sim", "warning", true, false);
    let sample = || ear_claims("sim", "warning", true, true);
    // (policy, claims, path, released)
    let cases: Vec<(&str, &str, Value, &str, bool)> = vec![
        ("affirming", TRUSTEE_AFFIRMING, hw(), "a/b/c", true),
        ("affirming", TRUSTEE_AFFIRMING, hw_warning(), "a/b/c", false),
        ("affirming", TRUSTEE_AFFIRMING, sim(), "a/b/c", false),
        ("affirming", TRUSTEE_AFFIRMING, sample(), "a/b/c", false),
        ("trust_context", TRUSTEE_TRUST_CONTEXT, hw(), "a/b/c", true),
        (
            "trust_context",
            TRUSTEE_TRUST_CONTEXT,
            hw_warning(),
            "a/b/c",
            false,
        ),
        (
            "trust_context",
            TRUSTEE_TRUST_CONTEXT,
            sim(),
            "a/b/c",
            false,
        ),
        (
            "trust_context",
            TRUSTEE_TRUST_CONTEXT,
            sample(),
            "a/b/c",
            false,
        ),
        ("not-sample", TRUSTEE_NOT_SAMPLE, hw(), "a/b/c", true),
        ("not-sample", TRUSTEE_NOT_SAMPLE, sample(), "a/b/c", false),
        // Trustee's earlier default only excludes sample evidence: sim
        // evidence passes it (served only by a KBS run with
        // --allow-simulated; docs/kbs.md says so).
        ("not-sample", TRUSTEE_NOT_SAMPLE, sim(), "a/b/c", true),
        ("path", TRUSTEE_PATH, hw(), "default/key/1", true),
        ("path", TRUSTEE_PATH, hw(), "other/key/1", false),
        ("path", TRUSTEE_PATH, sim(), "default/key/1", false),
    ];
    for (name, rego, claims, path, want) in cases {
        assert_eq!(
            trustee_allows(rego, claims.clone(), path),
            want,
            "{name} on {path}: {claims}"
        );
    }
}
