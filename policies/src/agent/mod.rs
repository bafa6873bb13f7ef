//! The agent policy: Rego from initdata's `policy.rego`, evaluated on every
//! agent request as `data.agent_policy.<RequestName>` with the request as
//! JSON input (Kata's shape for the fields the two APIs share, see
//! [`input`]).
//!
//! - Default deny: an undefined rule, `false`, or anything but `true` or an
//!   object `{"allowed": true, ...}` denies.
//! - A rule may return `{"allowed": bool, "ops": [...]}`; the ops are JSON
//!   patches (RFC 6902) over the data document `{"pstate": STATE}` and are
//!   applied when the request is allowed, so later requests see the new
//!   `data.pstate`. Paths outside `/pstate` are refused.
//! - Audit mode: when the policy itself sets
//!   `AllowRequestsFailingPolicy := true` (Kata's name), a denied request is
//!   allowed and reported as audited.
//! - On denial the policy's optional `violations` set (strings naming the
//!   rule that failed) is evaluated for the message, unless the rule's
//!   object already names them as `{"allowed": false, "violations": [...]}`
//!   (one run instead of two; the generated policies do this).
//!
//! The policy is compiled once to regorus's bytecode (RVM), with one entry
//! point per request rule the policy defines; evaluation converts the input
//! value tree directly (no JSON text in between) and runs that program.

pub mod input;

use serde_json::Value;

use crate::{to_json, to_regorus, PolicyError};

/// `policies/rego/agent/allow-all.rego`: every request allowed. For
/// `--tee none` development; a TEE guest refuses it unless initdata names it
/// explicitly (see [`Shipped::from_initdata_entry`]).
pub const ALLOW_ALL: &str = include_str!("../../rego/agent/allow-all.rego");

/// `policies/rego/agent/confidential-default.rego`.
pub const CONFIDENTIAL_DEFAULT: &str = include_str!("../../rego/agent/confidential-default.rego");

/// The Rego package of agent policies.
pub const PACKAGE: &str = "agent_policy";

/// The rule that turns on audit mode (Kata's name).
pub const AUDIT_RULE: &str = "AllowRequestsFailingPolicy";

/// Where initdata names a shipped policy instead of carrying Rego: the
/// `cloister.toml` entry's key (`agent_policy = "allow-all"`).
pub const SHIPPED_POLICY_KEY: &str = "cloister.toml agent_policy";

/// A policy Cloister ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shipped {
    /// Everything allowed.
    AllowAll,
    /// The confidential default.
    ConfidentialDefault,
}

impl Shipped {
    /// All shipped policies.
    pub const ALL: [Shipped; 2] = [Shipped::AllowAll, Shipped::ConfidentialDefault];

    /// Its name (also the file stem under `policies/rego/agent/`).
    pub fn name(self) -> &'static str {
        match self {
            Shipped::AllowAll => "allow-all",
            Shipped::ConfidentialDefault => "confidential-default",
        }
    }

    /// Its Rego text.
    pub fn rego(self) -> &'static str {
        match self {
            Shipped::AllowAll => ALLOW_ALL,
            Shipped::ConfidentialDefault => CONFIDENTIAL_DEFAULT,
        }
    }

    /// Parses a shipped policy name (the value of initdata's `cloister.toml` `agent_policy`).
    pub fn from_name(name: &str) -> Result<Self, PolicyError> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name.trim())
            .ok_or_else(|| PolicyError::UnknownShipped(name.to_owned()))
    }
}

/// An agent request, as the policy names it. Closed set: every RPC of the
/// agent API has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    /// CreateSandbox.
    CreateSandbox,
    /// DestroySandbox.
    DestroySandbox,
    /// CreateContainer.
    CreateContainer,
    /// StartContainer.
    StartContainer,
    /// ExecProcess.
    ExecProcess,
    /// WaitProcess.
    WaitProcess,
    /// SignalProcess.
    SignalProcess,
    /// RemoveContainer.
    RemoveContainer,
    /// WriteStdin.
    WriteStdin,
    /// CloseStdin.
    CloseStdin,
    /// ReadStdout.
    ReadStdout,
    /// ReadStderr.
    ReadStderr,
    /// GetGuestDetails.
    GetGuestDetails,
    /// GetEvidence.
    GetEvidence,
    /// ExtendRuntimeMeasurement.
    ExtendRuntimeMeasurement,
    /// SetPolicy.
    SetPolicy,
    /// PullImage (an image pulled by the guest; input `{"image": REF}`).
    PullImage,
}

impl Request {
    /// Every request.
    pub const ALL: [Request; 17] = [
        Request::CreateSandbox,
        Request::DestroySandbox,
        Request::CreateContainer,
        Request::StartContainer,
        Request::ExecProcess,
        Request::WaitProcess,
        Request::SignalProcess,
        Request::RemoveContainer,
        Request::WriteStdin,
        Request::CloseStdin,
        Request::ReadStdout,
        Request::ReadStderr,
        Request::GetGuestDetails,
        Request::GetEvidence,
        Request::ExtendRuntimeMeasurement,
        Request::SetPolicy,
        Request::PullImage,
    ];

    /// The RPC name.
    pub fn rpc(self) -> &'static str {
        match self {
            Request::CreateSandbox => "CreateSandbox",
            Request::DestroySandbox => "DestroySandbox",
            Request::CreateContainer => "CreateContainer",
            Request::StartContainer => "StartContainer",
            Request::ExecProcess => "ExecProcess",
            Request::WaitProcess => "WaitProcess",
            Request::SignalProcess => "SignalProcess",
            Request::RemoveContainer => "RemoveContainer",
            Request::WriteStdin => "WriteStdin",
            Request::CloseStdin => "CloseStdin",
            Request::ReadStdout => "ReadStdout",
            Request::ReadStderr => "ReadStderr",
            Request::GetGuestDetails => "GetGuestDetails",
            Request::GetEvidence => "GetEvidence",
            Request::ExtendRuntimeMeasurement => "ExtendRuntimeMeasurement",
            Request::SetPolicy => "SetPolicy",
            Request::PullImage => "PullImage",
        }
    }

    /// The rule queried, `data.agent_policy.<rule>`: the request message's
    /// name, and Kata's where the RPCs are shared (stdin is a
    /// `WriteStreamRequest`, both outputs a `ReadStreamRequest`, guest
    /// details a `GuestDetailsRequest`), so Kata policies port.
    pub fn rule(self) -> &'static str {
        match self {
            Request::CreateSandbox => "CreateSandboxRequest",
            Request::DestroySandbox => "DestroySandboxRequest",
            Request::CreateContainer => "CreateContainerRequest",
            Request::StartContainer => "StartContainerRequest",
            Request::ExecProcess => "ExecProcessRequest",
            Request::WaitProcess => "WaitProcessRequest",
            Request::SignalProcess => "SignalProcessRequest",
            Request::RemoveContainer => "RemoveContainerRequest",
            Request::WriteStdin => "WriteStreamRequest",
            Request::CloseStdin => "CloseStdinRequest",
            Request::ReadStdout | Request::ReadStderr => "ReadStreamRequest",
            Request::GetGuestDetails => "GuestDetailsRequest",
            Request::GetEvidence => "GetEvidenceRequest",
            Request::ExtendRuntimeMeasurement => "ExtendRuntimeMeasurementRequest",
            Request::SetPolicy => "SetPolicyRequest",
            Request::PullImage => "PullImageRequest",
        }
    }

    /// Parses a rule name (as used in `policies/cases/<Rule>/`).
    pub fn from_rule(rule: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.rule() == rule)
    }
}

/// The outcome of one evaluation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by the policy.
    Allowed,
    /// Denied by the policy, but allowed because the policy enables audit
    /// mode; the caller logs `reason`.
    Audited {
        /// Why the policy denied it.
        reason: String,
    },
    /// Denied.
    Denied {
        /// Why (the rule and the policy's violations).
        reason: String,
    },
}

impl Decision {
    /// True unless denied.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Decision::Denied { .. })
    }
}

/// A prepared agent policy with its state.
pub struct AgentPolicy {
    name: String,
    /// Where evaluation runs.
    exec: Exec,
    /// The data document `{"pstate": ...}` the ops patch.
    data: Value,
    audit: bool,
    /// The request rules the policy defines (regorus refuses to evaluate a
    /// rule path that does not exist; an absent rule is a denial).
    defined: Vec<&'static str>,
    has_violations: bool,
}

/// The most bytecode instructions one request may run (regorus's default,
/// 25 000, is too few for a many-container generated policy; this bounds a
/// hostile policy's loop all the same).
const MAX_INSTRUCTIONS: usize = 5_000_000;

/// Where a policy is evaluated.
enum Exec {
    /// regorus's bytecode VM: the policy compiled once, with one entry
    /// point per defined request rule (and `violations`).
    Vm(Box<regorus::rvm::vm::RegoVM>),
    /// regorus's tree-walking interpreter, for policies the VM does not
    /// evaluate as OPA does ([`uses_else`]).
    Interpreter(Box<regorus::Engine>),
}

/// Whether the Rego text has the word `else` anywhere (in a comment or a
/// string too: that only costs the faster engine, while telling code from
/// comments here would need the lexer). regorus 0.14's VM answers the
/// later branches of an `else` chain whose bodies bind the value with
/// undefined, and under `not` an undefined reads as false, so such a policy
/// could fail open: it runs on the interpreter.
fn uses_else(rego: &str) -> bool {
    rego.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|w| w == "else")
}

/// Whether `rule` exists in the compiled policy: regorus answers an absent
/// rule path with this error rather than with undefined.
fn rule_exists(engine: &mut regorus::Engine, rule: &str) -> bool {
    match engine.eval_rule(format!("data.{PACKAGE}.{rule}")) {
        Ok(_) => true,
        Err(e) => !e.to_string().contains("not a valid rule path"),
    }
}

impl std::fmt::Debug for AgentPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPolicy")
            .field("name", &self.name)
            .field("audit", &self.audit)
            .field("data", &self.data)
            .finish()
    }
}

impl AgentPolicy {
    /// Compiles `rego` (package `agent_policy`) and prepares it. `data`
    /// entries (e.g. the initdata `[data]` table as `{"initdata": {...}}`)
    /// are merged into the data document beside `pstate`.
    pub fn new(name: &str, rego: &str, extra_data: Option<Value>) -> Result<Self, PolicyError> {
        let compile = |reason: String| PolicyError::Compile {
            name: name.to_owned(),
            reason,
        };
        let mut engine = regorus::Engine::new();
        let package = engine
            .add_policy(name.to_owned(), rego.to_owned())
            .map_err(|e| compile(e.to_string()))?;
        if package != format!("data.{PACKAGE}") {
            return Err(compile(format!(
                "its package is {package}: expected package {PACKAGE}"
            )));
        }
        let mut data = serde_json::json!({ "pstate": {} });
        if let Some(Value::Object(extra)) = extra_data {
            for (k, v) in extra {
                if k != "pstate" {
                    data[k] = v;
                }
            }
        }
        engine
            .add_data(to_regorus(&data))
            .map_err(|e| PolicyError::Input(e.to_string()))?;
        let defined: Vec<&'static str> = Request::ALL
            .iter()
            .map(|r| r.rule())
            .filter(|rule| rule_exists(&mut engine, rule))
            .collect();
        let has_violations = rule_exists(&mut engine, "violations");
        let audit = if rule_exists(&mut engine, AUDIT_RULE) {
            engine
                .eval_rule(format!("data.{PACKAGE}.{AUDIT_RULE}"))
                .map_err(|e| compile(e.to_string()))?
                == regorus::Value::Bool(true)
        } else {
            false
        };
        let mut entry_points: Vec<String> = defined
            .iter()
            .map(|rule| format!("data.{PACKAGE}.{rule}"))
            .collect();
        if has_violations {
            entry_points.push(format!("data.{PACKAGE}.violations"));
        }
        let exec = if uses_else(rego) {
            Exec::Interpreter(Box::new(engine))
        } else {
            let mut vm = regorus::rvm::vm::RegoVM::new();
            if let Some(first) = entry_points.first() {
                let first: regorus::Rc<str> = first.as_str().into();
                let compiled = engine
                    .compile_with_entrypoint(&first)
                    .map_err(|e| compile(e.to_string()))?;
                let refs: Vec<&str> = entry_points.iter().map(String::as_str).collect();
                let program = regorus::languages::rego::compiler::Compiler::compile_from_policy(
                    &compiled, &refs,
                )
                .map_err(|e| compile(e.to_string()))?;
                vm = regorus::rvm::vm::RegoVM::new_with_policy(compiled);
                vm.load_program(program);
                vm.set_max_instructions(MAX_INSTRUCTIONS);
            }
            Exec::Vm(Box::new(vm))
        };
        let mut policy = Self {
            name: name.to_owned(),
            exec,
            data,
            audit,
            defined,
            has_violations,
        };
        policy.load_data()?;
        Ok(policy)
    }

    /// A shipped policy.
    pub fn shipped(s: Shipped, extra_data: Option<Value>) -> Result<Self, PolicyError> {
        Self::new(s.name(), s.rego(), extra_data)
    }

    /// Name given at construction.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the policy enables audit mode.
    pub fn audit(&self) -> bool {
        self.audit
    }

    /// The current policy state (`data.pstate`).
    pub fn state(&self) -> &Value {
        &self.data["pstate"]
    }

    fn load_data(&mut self) -> Result<(), PolicyError> {
        let data = to_regorus(&self.data);
        let input = |e: String| PolicyError::Input(e);
        match &mut self.exec {
            Exec::Vm(vm) => vm.set_data(data).map_err(|e| input(e.to_string())),
            Exec::Interpreter(engine) => {
                engine.clear_data();
                engine.add_data(data).map_err(|e| input(e.to_string()))
            }
        }
    }

    fn run(&mut self, query: &str) -> Result<regorus::Value, PolicyError> {
        let r = match &mut self.exec {
            Exec::Vm(vm) => vm
                .execute_entry_point_by_name(query)
                .map_err(|e| e.to_string()),
            Exec::Interpreter(engine) => engine
                .eval_rule(query.to_owned())
                .map_err(|e| e.to_string()),
        };
        r.map_err(|reason| PolicyError::Eval {
            query: query.to_owned(),
            reason,
        })
    }

    /// Evaluates `request` with `input`, applying the rule's ops when it is
    /// allowed.
    pub fn evaluate(&mut self, request: Request, input: &Value) -> Result<Decision, PolicyError> {
        let rule = request.rule();
        let query = format!("data.{PACKAGE}.{rule}");
        match &mut self.exec {
            Exec::Vm(vm) => vm.set_input(to_regorus(input)),
            Exec::Interpreter(engine) => engine.set_input(to_regorus(input)),
        }
        let value = if self.defined.contains(&rule) {
            self.run(&query)?
        } else {
            regorus::Value::Undefined
        };
        let field = |name: &str| match &value {
            regorus::Value::Object(o) => o.get(&regorus::Value::from(name)),
            _ => None,
        };
        let allowed = match &value {
            regorus::Value::Bool(b) => *b,
            _ => field("allowed") == Some(&regorus::Value::Bool(true)),
        };
        if allowed {
            if let Some(ops) = field("ops").map(to_json) {
                self.apply_ops(rule, &ops)?;
            }
            return Ok(Decision::Allowed);
        }
        let why = if value == regorus::Value::Undefined {
            "is not defined (default deny)".to_owned()
        } else {
            "denied it".to_owned()
        };
        let mut reason = format!(
            "policy {} denied {} (rule data.{PACKAGE}.{rule} {why})",
            self.name,
            request.rpc()
        );
        // A rule that names its own violations spares a second run.
        let violations = match field("violations").map(to_json) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => self.violations(rule),
        };
        if !violations.is_empty() {
            reason.push_str(": ");
            reason.push_str(&violations.join("; "));
        }
        Ok(if self.audit {
            Decision::Audited { reason }
        } else {
            Decision::Denied { reason }
        })
    }

    /// The policy's `violations[rule]` (a set of strings) for the current
    /// input, if it defines them.
    fn violations(&mut self, rule: &str) -> Vec<String> {
        if !self.has_violations {
            return Vec::new();
        }
        let all = match self.run(&format!("data.{PACKAGE}.violations")) {
            Ok(v) => to_json(&v),
            Err(_) => return Vec::new(),
        };
        match all.get(rule) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn apply_ops(&mut self, rule: &str, ops: &Value) -> Result<(), PolicyError> {
        let bad = |reason: String| PolicyError::Ops {
            rule: rule.to_owned(),
            reason,
        };
        let list = ops
            .as_array()
            .ok_or_else(|| bad("`ops` is not an array".into()))?;
        if list.is_empty() {
            return Ok(());
        }
        for op in list {
            for key in ["path", "from"] {
                if let Some(p) = op.get(key).and_then(Value::as_str) {
                    if p != "/pstate" && !p.starts_with("/pstate/") {
                        return Err(bad(format!("op {key} {p:?} is outside /pstate")));
                    }
                }
            }
        }
        let mut data = self.data.clone();
        crate::patch::apply(&mut data, ops).map_err(|e| bad(e.to_string()))?;
        if !data["pstate"].is_object() {
            return Err(bad("ops left pstate not an object".into()));
        }
        self.data = data;
        self.load_data()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
