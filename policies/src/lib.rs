//! Rego policy engine for Cloister, on `regorus`: a wrapper that loads a
//! policy once and evaluates one rule against JSON input ([`Policy`], used
//! for the attestation appraisal policy), the agent policy engine with its
//! state, ops and audit mode ([`agent`]), the shipped agent policies, the
//! Kubernetes-to-Rego policy generator ([`gen`]) and JSON Patch ([`patch`]).
//!
//! It holds decisions only: it does not speak ttrpc or read files; the agent
//! and the CLI call it.

pub mod agent;
#[cfg(feature = "gen")]
pub mod gen;
pub mod patch;

use std::fmt;

/// The attestation appraisal policy shipped with Cloister
/// (`policies/rego/appraisal.rego`): maps verifier checks to an AR4SI
/// trust vector. Package `cloister.appraisal`, rule `result`.
pub const APPRAISAL_POLICY: &str = include_str!("../rego/appraisal.rego");

/// Query that yields the appraisal result of [`APPRAISAL_POLICY`].
pub const APPRAISAL_QUERY: &str = "data.cloister.appraisal.result";

/// Errors of the policy engine.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The Rego text did not parse or compile.
    #[error("policy {name} does not compile: {reason}")]
    Compile { name: String, reason: String },
    /// Input or data was not valid JSON for the engine.
    #[error("policy input is not usable: {0}")]
    Input(String),
    /// Evaluation failed (runtime error in a rule).
    #[error("evaluating {query} failed: {reason}")]
    Eval { query: String, reason: String },
    /// The rule is undefined for this input.
    #[error("{0} is undefined for this input")]
    Undefined(String),
    /// A name that is not a shipped policy.
    #[error("no shipped policy is named {0:?}: expected allow-all or confidential-default")]
    UnknownShipped(String),
    /// A rule's `ops` could not be applied to the policy state.
    #[error("the ops of rule {rule} do not apply: {reason}")]
    Ops { rule: String, reason: String },
}

/// Converts a JSON value to the engine's value without going through text.
pub fn to_regorus(v: &serde_json::Value) -> regorus::Value {
    use serde_json::Value as J;
    match v {
        J::Null => regorus::Value::Null,
        J::Bool(b) => regorus::Value::Bool(*b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                regorus::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                regorus::Value::from(u)
            } else {
                regorus::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        J::String(s) => regorus::Value::from(s.as_str()),
        J::Array(a) => regorus::Value::from(a.iter().map(to_regorus).collect::<Vec<_>>()),
        J::Object(o) => regorus::Value::from(
            o.iter()
                .map(|(k, v)| (regorus::Value::from(k.as_str()), to_regorus(v)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        ),
    }
}

/// Converts an engine value to JSON without going through text (sets become
/// arrays, non-string object keys their JSON text; undefined becomes null).
pub fn to_json(v: &regorus::Value) -> serde_json::Value {
    use regorus::Value as R;
    use serde_json::Value as J;
    match v {
        R::Null | R::Undefined => J::Null,
        R::Bool(b) => J::Bool(*b),
        R::Number(_) => {
            if let Ok(i) = v.as_i64() {
                J::from(i)
            } else if let Ok(u) = v.as_u64() {
                J::from(u)
            } else {
                v.as_f64().map(J::from).unwrap_or(J::Null)
            }
        }
        R::String(s) => J::String(s.to_string()),
        R::Array(a) => J::Array(a.iter().map(to_json).collect()),
        R::Set(s) => J::Array(s.iter().map(to_json).collect()),
        R::Object(o) => J::Object(
            o.iter()
                .map(|(k, v)| {
                    let key = match k {
                        R::String(s) => s.to_string(),
                        other => to_json(other).to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
    }
}

/// A compiled policy ready for evaluation. Cloning is cheap; every
/// evaluation works on its own clone so the policy stays reusable.
#[derive(Clone)]
pub struct Policy {
    engine: regorus::Engine,
    name: String,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy").field("name", &self.name).finish()
    }
}

impl Policy {
    /// Compile a policy from Rego text. `name` is used in error messages.
    pub fn new(name: &str, rego: &str) -> Result<Self, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine
            .add_policy(name.to_string(), rego.to_string())
            .map_err(|e| PolicyError::Compile {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        // regorus analyses and schedules the modules lazily on the first
        // evaluation and keeps the result; do it once here so that the
        // clone made per `eval` starts prepared instead of redoing it.
        engine
            .eval_query("true".to_string(), false)
            .map_err(|e| PolicyError::Compile {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            engine,
            name: name.to_string(),
        })
    }

    /// The shipped attestation appraisal policy.
    pub fn appraisal() -> Result<Self, PolicyError> {
        Self::new("appraisal.rego", APPRAISAL_POLICY)
    }

    /// Name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Evaluate `query` (e.g. `data.pkg.rule`) with `input` and optional
    /// extra `data`, returning the value as JSON.
    pub fn eval(
        &self,
        query: &str,
        input: &serde_json::Value,
        data: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, PolicyError> {
        let mut engine = self.engine.clone();
        engine.set_input(to_regorus(input));
        if let Some(data) = data {
            engine
                .add_data(to_regorus(data))
                .map_err(|e| PolicyError::Input(e.to_string()))?;
        }
        let value = engine
            .eval_rule(query.to_string())
            .map_err(|e| PolicyError::Eval {
                query: query.to_string(),
                reason: e.to_string(),
            })?;
        if value == regorus::Value::Undefined {
            return Err(PolicyError::Undefined(query.to_string()));
        }
        Ok(to_json(&value))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn compile_error_is_reported_with_name() {
        let err = Policy::new("bad.rego", "package x\nallow { ").unwrap_err();
        assert!(err.to_string().contains("bad.rego"), "{err}");
    }

    #[test]
    fn value_conversion_round_trips() {
        let v = json!({"a": [1, -2, 3.5, "x", null, true], "b": {"c": {}}, "u": u64::MAX});
        assert_eq!(to_json(&to_regorus(&v)), v);
    }

    #[test]
    fn undefined_rule_is_an_error() {
        let p = Policy::new("p.rego", "package x\nallow if input.a == 1\n").unwrap();
        let err = p.eval("data.x.allow", &json!({"a": 2}), None).unwrap_err();
        assert!(matches!(err, PolicyError::Undefined(_)), "{err}");
        assert_eq!(
            p.eval("data.x.allow", &json!({"a": 1}), None).unwrap(),
            json!(true)
        );
    }

    fn check(category: &str, ok: bool) -> serde_json::Value {
        json!({"claim": "c", "category": category, "ok": ok, "expected": "e", "found": "f"})
    }

    fn all_ok() -> Vec<serde_json::Value> {
        [
            "signature",
            "trust-anchor",
            "binding",
            "freshness",
            "executables",
            "configuration",
            "hardware",
            "init-data",
        ]
        .iter()
        .map(|c| check(c, true))
        .collect()
    }

    #[test]
    fn appraisal_table() {
        let p = Policy::appraisal().unwrap();
        // (checks mutation, simulated, allow_simulated, expected status)
        let cases: Vec<(Option<&str>, bool, bool, &str)> = vec![
            (None, false, false, "affirming"),
            (None, true, false, "contraindicated"),
            // Allowed sim evidence is never rated as hardware: warning at best.
            (None, true, true, "warning"),
            (Some("signature"), false, false, "contraindicated"),
            (Some("trust-anchor"), false, false, "contraindicated"),
            (Some("binding"), false, false, "contraindicated"),
            (Some("freshness"), false, false, "contraindicated"),
            (Some("executables"), false, false, "warning"),
            (Some("configuration"), false, false, "warning"),
            (Some("hardware"), false, false, "contraindicated"),
            (Some("init-data"), false, false, "contraindicated"),
            (Some("unsafe-state"), false, false, "contraindicated"),
            (Some("unsafe-state"), true, true, "contraindicated"),
            (Some("tcb-revoked"), false, false, "contraindicated"),
            (Some("tcb-outdated"), false, false, "warning"),
            (Some("launch-identity"), false, false, "warning"),
        ];
        for (fail, sim, allow, want) in cases {
            let mut checks = all_ok();
            if let Some(f) = fail {
                checks.push(check(f, false));
            }
            let input = json!({"checks": checks, "simulated": sim, "allow_simulated": allow});
            let out = p.eval(APPRAISAL_QUERY, &input, None).unwrap();
            assert_eq!(out["status"], json!(want), "fail={fail:?} sim={sim}: {out}");
            // The claim each unsafe state lands in (AR4SI values).
            let tv = &out["trust_vector"];
            match (fail, sim) {
                (Some("unsafe-state"), _) => {
                    assert_eq!(tv["configuration"], json!(96), "{out}");
                    assert_eq!(tv["runtime-opaque"], json!(96), "{out}");
                }
                (Some("tcb-revoked"), _) => assert_eq!(tv["hardware"], json!(96), "{out}"),
                (Some("tcb-outdated"), _) => assert_eq!(tv["hardware"], json!(32), "{out}"),
                (Some("launch-identity"), _) => assert_eq!(tv["executables"], json!(33), "{out}"),
                (None, true) if allow => {
                    assert_eq!(tv["hardware"], json!(32), "{out}");
                    assert_eq!(tv["runtime-opaque"], json!(32), "{out}");
                }
                _ => {}
            }
        }
    }

    #[test]
    fn no_reference_values_gives_warning_on_executables() {
        let p = Policy::appraisal().unwrap();
        let checks: Vec<_> = ["signature", "trust-anchor", "binding", "freshness"]
            .iter()
            .map(|c| check(c, true))
            .collect();
        let input = json!({"checks": checks, "simulated": false, "allow_simulated": false});
        let out = p.eval(APPRAISAL_QUERY, &input, None).unwrap();
        assert_eq!(out["trust_vector"]["executables"], json!(33), "{out}");
        assert_eq!(out["status"], json!("warning"), "{out}");
    }
}
