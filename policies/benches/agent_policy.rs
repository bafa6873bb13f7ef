//! Agent policy evaluation latency per request type, and load time, for the
//! policy `cloister policy gen` makes from a three-container pod
//! (`policies/testdata/pod-3.yaml`).
//!
//! `cargo bench -p cloister-policy --features gen --bench agent_policy`
//!
//! After criterion's figures it prints p50/p99 per request: 20 000
//! evaluations in 5 rounds taken in turn across the requests, and the
//! median of the rounds (criterion reports means).

use std::collections::BTreeMap;
use std::time::Instant;

use cloister_policy::agent::{input, AgentPolicy, Request};
use cloister_policy::gen;
use criterion::{criterion_group, Criterion};
use serde_json::{json, Value};

const POD3: &str = include_str!("../testdata/pod-3.yaml");

fn policy_text() -> (String, String) {
    let workloads = gen::parse(POD3).expect("pod parses");
    let digests: BTreeMap<String, String> = gen::images(&workloads)
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
        .collect();
    let web = format!(
        "127.0.0.1:5000/shop/web@{}",
        digests["127.0.0.1:5000/shop/web:2.1"]
    );
    (gen::render(&workloads, &digests).expect("renders"), web)
}

fn requests(web: &str) -> Vec<(&'static str, Request, Value)> {
    // The web container's create that the policy allows (its OCI spec).
    let spec: Value = serde_json::from_str(include_str!("../testdata/pod-3-web-spec.json"))
        .expect("the spec parses");
    let create = json!({"container_id": "web", "exec_id": "web", "OCI": input::oci_spec(&spec),
                        "rootfs": {"kind": "IMAGE", "source": web}});
    let mut bad_spec = spec.clone();
    bad_spec["process"]["args"] = json!(["/bin/sh"]);
    let create_denied = json!({"container_id": "web", "exec_id": "web", "OCI": input::oci_spec(&bad_spec),
                               "rootfs": {"kind": "IMAGE", "source": web}});
    let exec = json!({"container_id": "web", "exec_id": "e",
                      "process": input::oci_process(&json!({"args": ["/bin/sh"]}))});
    let io = json!({"container_id": "web", "exec_id": "web", "len": 0});
    vec![
        (
            "CreateContainer (allowed)",
            Request::CreateContainer,
            create,
        ),
        (
            "CreateContainer (denied)",
            Request::CreateContainer,
            create_denied,
        ),
        ("ExecProcess (denied)", Request::ExecProcess, exec),
        (
            "StartContainer",
            Request::StartContainer,
            json!({"container_id": "web"}),
        ),
        ("WaitProcess", Request::WaitProcess, io.clone()),
        ("ReadStdout", Request::ReadStdout, io.clone()),
        (
            "WriteStdin",
            Request::WriteStdin,
            json!({"container_id": "web", "exec_id": "web", "data": "aGk="}),
        ),
        (
            "SignalProcess",
            Request::SignalProcess,
            json!({"container_id": "web", "exec_id": "", "signal": 15}),
        ),
        (
            "RemoveContainer",
            Request::RemoveContainer,
            json!({"container_id": "web", "timeout": 0}),
        ),
        ("GetGuestDetails", Request::GetGuestDetails, json!({})),
        (
            "CreateSandbox",
            Request::CreateSandbox,
            json!({"sandbox_id": "s", "hostname": "h"}),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let (rego, web) = policy_text();
    c.bench_function("agent_policy/load (3-container generated)", |b| {
        b.iter(|| AgentPolicy::new("gen", &rego, None).expect("loads"))
    });
    let mut p = AgentPolicy::new("gen", &rego, None).expect("loads");
    let mut g = c.benchmark_group("agent_policy/evaluate");
    for (name, req, input) in requests(&web) {
        g.bench_function(name, |b| {
            b.iter(|| p.evaluate(req, &input).expect("evaluates"))
        });
    }
    g.finish();
}

/// p50 and p99 in µs of `n` runs of `f`.
fn p50_p99(n: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut t: Vec<f64> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t[t.len() / 2], t[t.len() * 99 / 100])
}

/// Rounds of [`p50_p99`] per request, taken in turn, so that a noisy spell
/// of the machine falls on one round of every request rather than on all
/// the evaluations of one.
const ROUNDS: usize = 5;

/// The median over the rounds.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The peer, in the same run: the same policy and input on regorus's
/// tree-walking interpreter (`Engine::eval_rule`), as Cloister evaluated
/// it before the bytecode VM. Only the rule itself, no violations.
fn interpreter_peer(rego: &str, web: &str) {
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("gen".into(), rego.to_owned())
        .expect("compiles");
    engine
        .add_data(cloister_policy::to_regorus(&json!({"pstate": {}})))
        .expect("data");
    println!("peer: regorus interpreter, rule only");
    for (name, req, input) in requests(web)
        .into_iter()
        .filter(|(_, r, _)| *r == Request::CreateContainer)
    {
        let query = format!("data.agent_policy.{}", req.rule());
        let input = cloister_policy::to_regorus(&input);
        let (p50, p99) = p50_p99(5_000, || {
            engine.set_input(input.clone());
            let _ = engine.eval_rule(query.clone());
        });
        println!("{name:<28} {p50:>10.1} {p99:>10.1}");
    }
}

fn percentiles() {
    let (rego, web) = policy_text();
    println!("generated policy: {} bytes", rego.len());
    let mut p = AgentPolicy::new("gen", &rego, None).expect("loads");
    let reqs = requests(&web);
    let mut rounds: Vec<Vec<(f64, f64)>> = vec![Vec::new(); reqs.len()];
    for _ in 0..ROUNDS {
        for ((_, req, input), r) in reqs.iter().zip(rounds.iter_mut()) {
            r.push(p50_p99(20_000 / ROUNDS, || {
                let _ = p.evaluate(*req, input);
            }));
        }
    }
    println!(
        "{:<28} {:>10} {:>10}   (medians of {ROUNDS} rounds; p99 of each round: min..max)",
        "request", "p50 µs", "p99 µs"
    );
    for ((name, _, _), r) in reqs.iter().zip(rounds) {
        let p99s: Vec<f64> = r.iter().map(|x| x.1).collect();
        let (lo, hi) = p99s
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
        println!(
            "{name:<28} {:>10.1} {:>10.1}   {lo:.1}..{hi:.1}",
            median(r.iter().map(|x| x.0).collect()),
            median(p99s)
        );
    }
    interpreter_peer(&rego, &web);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}
