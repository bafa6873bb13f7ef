//! The agent's session state and policy gate: one place that decides whether
//! a request may run.
//!
//! States: started → sandbox created (initdata verified, policy installed)
//! → containers (tracked by [`crate::containers`]). In a guest with a TEE,
//! every request except Check (health service, not gated), GetGuestDetails
//! and CreateSandbox is refused until CreateSandbox has succeeded, and
//! CreateSandbox needs initdata. Once the sandbox exists every request is
//! evaluated by the installed policy ([`cloister_policy::agent`]).
//!
//! The policy comes from initdata: `[data] "policy.rego"` (Rego), or a
//! shipped policy named by `cloister.toml` `agent_policy`; with neither, a TEE guest
//! installs `confidential-default`. `allow-all` is installed in a TEE guest
//! only when initdata names it. A guest without a TEE (no initdata possible)
//! runs `allow-all`.
//!
//! Everything here is synchronous; the ttrpc handlers call it.

use std::sync::Mutex;

use cloister_guest_config::GuestConfig;
use cloister_policy::agent::{AgentPolicy, Decision, Request, Shipped};
use cloister_policy::PolicyError;
use cloister_tee::initdata::Initdata;
use serde_json::Value;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A TEE guest before CreateSandbox.
    #[error("{rpc} refused: CreateSandbox (with initdata) must succeed first in a TEE guest")]
    NoSandbox {
        /// The RPC refused.
        rpc: &'static str,
    },
    /// CreateSandbox twice.
    #[error("CreateSandbox refused: the sandbox already exists")]
    AlreadyCreated,
    /// A TEE guest got CreateSandbox without initdata.
    #[error("CreateSandbox refused: initdata is mandatory in a TEE guest (it carries the policy)")]
    InitdataRequired,
    /// The policy in initdata is unusable.
    #[error("CreateSandbox refused: the initdata policy: {0}")]
    BadPolicy(PolicyError),
    /// The policy denied the request.
    #[error("{0}")]
    Denied(String),
    /// The policy could not be evaluated (treated as a denial).
    #[error("{rpc} refused: policy evaluation failed: {source}")]
    Eval {
        /// The RPC refused.
        rpc: &'static str,
        /// Why.
        source: PolicyError,
    },
}

#[derive(Debug)]
enum State {
    Started,
    SandboxCreated { policy: Box<AgentPolicy> },
}

/// The session: state plus installed policy.
#[derive(Debug)]
pub struct Session {
    state: Mutex<State>,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

/// Which policy initdata selects. The policy sees the document's `[data]`
/// entries as `data.initdata`, plus `"image-digests"`: the digests of
/// `cloister.toml` `pinned_images`, one per line (what
/// `confidential-default` admits), and `"allow-host-evidence"`.
fn select_policy(
    tee: bool,
    initdata: Option<&Initdata>,
    config: Option<&GuestConfig>,
) -> Result<AgentPolicy, PolicyError> {
    let data = initdata.map(|d| {
        let mut entries: serde_json::Map<String, Value> = d
            .data()
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let pins: String = config
            .map(|c| c.cloister.pinned_images.iter())
            .into_iter()
            .flatten()
            .map(|p| format!("{}\n", p.digest))
            .collect();
        entries.insert(IMAGE_DIGESTS.into(), Value::String(pins));
        let host_evidence = config.is_some_and(|c| c.cloister.allow_host_evidence);
        entries.insert(ALLOW_HOST_EVIDENCE.into(), Value::Bool(host_evidence));
        serde_json::json!({ "initdata": entries })
    });
    if let Some(rego) = initdata.and_then(Initdata::policy) {
        return AgentPolicy::new(cloister_tee::initdata::POLICY_KEY, rego, data);
    }
    let named = config.and_then(|c| c.cloister.agent_policy.as_deref());
    let shipped = match named {
        Some(name) => Shipped::from_name(name)?,
        None if tee => Shipped::ConfidentialDefault,
        None => Shipped::AllowAll,
    };
    AgentPolicy::shipped(shipped, data)
}

/// The `data.initdata` key under which policies find the pinned digests.
pub const IMAGE_DIGESTS: &str = "image-digests";
/// The `data.initdata` key under which policies find `cloister.toml`
/// `allow_host_evidence` (a boolean).
pub const ALLOW_HOST_EVIDENCE: &str = "allow-host-evidence";

/// A policy selected and checked at CreateSandbox, not yet installed.
#[derive(Debug)]
pub struct Prepared {
    policy: Box<AgentPolicy>,
    /// The audit message, if the policy denied CreateSandbox in audit mode.
    pub audit: Option<String>,
}

impl Session {
    /// A new session in state "started".
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::Started),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-written
        // (every write is one assignment), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether CreateSandbox has succeeded.
    #[cfg(test)]
    pub fn sandbox_created(&self) -> bool {
        matches!(*self.lock(), State::SandboxCreated { .. })
    }

    /// CreateSandbox after its initdata was checked against the TEE and its
    /// settings parsed: selects the policy, which must itself allow
    /// CreateSandbox. Nothing is installed until [`Session::install`], so the
    /// caller can finish the rest of CreateSandbox (network, attestation)
    /// first and leave the session untouched if that fails.
    pub fn prepare(
        &self,
        tee: bool,
        initdata: Option<&Initdata>,
        config: Option<&GuestConfig>,
        input: &Value,
    ) -> Result<Prepared, Refusal> {
        if matches!(*self.lock(), State::SandboxCreated { .. }) {
            return Err(Refusal::AlreadyCreated);
        }
        if tee && initdata.is_none() {
            return Err(Refusal::InitdataRequired);
        }
        let mut policy = select_policy(tee, initdata, config).map_err(Refusal::BadPolicy)?;
        let audit = decide(&mut policy, Request::CreateSandbox, input)?;
        Ok(Prepared {
            policy: Box::new(policy),
            audit,
        })
    }

    /// Installs a prepared policy: the sandbox now exists.
    pub fn install(&self, prepared: Prepared) -> Result<(), Refusal> {
        let mut state = self.lock();
        if matches!(*state, State::SandboxCreated { .. }) {
            return Err(Refusal::AlreadyCreated);
        }
        *state = State::SandboxCreated {
            policy: prepared.policy,
        };
        Ok(())
    }

    /// [`Session::prepare`] then [`Session::install`].
    #[cfg(test)]
    pub fn create_sandbox(
        &self,
        tee: bool,
        initdata: Option<&Initdata>,
        input: &Value,
    ) -> Result<Option<String>, Refusal> {
        let config = initdata
            .map(|d| GuestConfig::from_initdata(&String::from_utf8_lossy(d.raw())))
            .transpose()
            .map_err(|e| Refusal::Denied(e.to_string()))?;
        let p = self.prepare(tee, initdata, config.as_ref(), input)?;
        let audit = p.audit.clone();
        self.install(p)?;
        Ok(audit)
    }

    /// Checks a request other than CreateSandbox. Returns the audit message
    /// when the policy denied it but runs in audit mode.
    pub fn check(
        &self,
        tee: bool,
        request: Request,
        input: impl FnOnce() -> Value,
    ) -> Result<Option<String>, Refusal> {
        let mut state = self.lock();
        match &mut *state {
            State::Started => {
                if !tee || request == Request::GetGuestDetails {
                    Ok(None)
                } else {
                    Err(Refusal::NoSandbox { rpc: request.rpc() })
                }
            }
            State::SandboxCreated { policy } => decide(policy, request, &input()),
        }
    }

    /// SetPolicy: only where the current policy allows it (input
    /// `{"policy": REGO}`); the new policy starts with empty state.
    pub fn set_policy(&self, rego: &str) -> Result<Option<String>, Refusal> {
        let mut state = self.lock();
        let State::SandboxCreated { policy } = &mut *state else {
            return Err(Refusal::NoSandbox {
                rpc: Request::SetPolicy.rpc(),
            });
        };
        let input = serde_json::json!({ "policy": rego });
        let audit = decide(policy, Request::SetPolicy, &input)?;
        let new = AgentPolicy::new("SetPolicy", rego, None).map_err(Refusal::BadPolicy)?;
        **policy = new;
        Ok(audit)
    }
}

fn decide(
    policy: &mut AgentPolicy,
    request: Request,
    input: &Value,
) -> Result<Option<String>, Refusal> {
    match policy.evaluate(request, input) {
        Ok(Decision::Allowed) => Ok(None),
        Ok(Decision::Audited { reason }) => Ok(Some(reason)),
        Ok(Decision::Denied { reason }) => Err(Refusal::Denied(reason)),
        Err(source) => Err(Refusal::Eval {
            rpc: request.rpc(),
            source,
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn initdata(data: &str) -> Initdata {
        Initdata::parse(format!(
            "version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n{data}"
        ))
        .unwrap()
    }

    #[test]
    fn tee_guest_refuses_everything_but_details_before_create_sandbox() {
        let s = Session::new();
        for r in Request::ALL {
            if matches!(r, Request::CreateSandbox) {
                continue;
            }
            let res = s.check(true, r, || json!({}));
            if r == Request::GetGuestDetails {
                assert!(res.is_ok());
            } else {
                let err = res.unwrap_err().to_string();
                assert!(
                    err.contains(r.rpc()) && err.contains("CreateSandbox"),
                    "{err}"
                );
            }
        }
        // Without a TEE the dev flow keeps working.
        assert!(s.check(false, Request::ExecProcess, || json!({})).is_ok());
    }

    #[test]
    fn initdata_is_mandatory_in_a_tee_and_create_happens_once() {
        let s = Session::new();
        let err = s.create_sandbox(true, None, &json!({})).unwrap_err();
        assert!(matches!(err, Refusal::InitdataRequired), "{err}");
        assert!(!s.sandbox_created());
        s.create_sandbox(true, Some(&initdata("")), &json!({}))
            .unwrap();
        assert!(s.sandbox_created());
        let err = s
            .create_sandbox(true, Some(&initdata("")), &json!({}))
            .unwrap_err();
        assert!(matches!(err, Refusal::AlreadyCreated), "{err}");
    }

    #[test]
    fn tee_default_is_confidential_and_allow_all_only_when_named() {
        let s = Session::new();
        s.create_sandbox(true, Some(&initdata("")), &json!({}))
            .unwrap();
        let err = s
            .check(true, Request::ExecProcess, || json!({}))
            .unwrap_err();
        assert!(err.to_string().contains("confidential-default"), "{err}");
        assert!(err.to_string().contains("no_exec"), "{err}");

        let s = Session::new();
        s.create_sandbox(
            true,
            Some(&initdata(
                "\"cloister.toml\" = \"agent_policy = 'allow-all'\"\n",
            )),
            &json!({}),
        )
        .unwrap();
        s.check(true, Request::ExecProcess, || json!({})).unwrap();

        let s = Session::new();
        s.create_sandbox(false, None, &json!({})).unwrap();
        s.check(false, Request::ExecProcess, || json!({})).unwrap();

        let s = Session::new();
        let err = s
            .create_sandbox(
                true,
                Some(&initdata(
                    "\"cloister.toml\" = \"agent_policy = 'allow-most'\"\n",
                )),
                &json!({}),
            )
            .unwrap_err();
        assert!(err.to_string().contains("allow-most"), "{err}");
        assert!(!s.sandbox_created());
    }

    #[test]
    fn policy_from_initdata_and_set_policy_only_where_allowed() {
        let rego = "package agent_policy\nCreateSandboxRequest := true\nSetPolicyRequest := true\n";
        let s = Session::new();
        s.create_sandbox(
            true,
            Some(&initdata(&format!("\"policy.rego\" = '''\n{rego}'''\n"))),
            &json!({}),
        )
        .unwrap();
        let err = s
            .check(true, Request::StartContainer, || json!({}))
            .unwrap_err();
        assert!(err.to_string().contains("StartContainerRequest"), "{err}");
        // The policy allows SetPolicy: replace it with one allowing Start
        // but not SetPolicy.
        s.set_policy("package agent_policy\nStartContainerRequest := true\n")
            .unwrap();
        s.check(true, Request::StartContainer, || json!({}))
            .unwrap();
        let err = s.set_policy(rego).unwrap_err();
        assert!(err.to_string().contains("SetPolicyRequest"), "{err}");
        // A policy denying CreateSandbox itself leaves the sandbox uncreated.
        let s = Session::new();
        let err = s
            .create_sandbox(
                true,
                Some(&initdata("\"policy.rego\" = \"package agent_policy\\n\"\n")),
                &json!({}),
            )
            .unwrap_err();
        assert!(err.to_string().contains("CreateSandboxRequest"), "{err}");
        assert!(!s.sandbox_created());
    }

    #[test]
    fn confidential_default_sees_initdata_pins() {
        let d = format!("sha256:{}", "ab".repeat(32));
        let s = Session::new();
        s.create_sandbox(
            true,
            Some(&initdata(&format!(
                "\"cloister.toml\" = \"pinned_images = ['r/a@{d}']\"\n"
            ))),
            &json!({}),
        )
        .unwrap();
        let input = json!({"OCI": {"Linux": {"Namespaces": [{"Type": "pid"}, {"Type": "ipc"}, {"Type": "uts"}, {"Type": "mount"}]}},
                           "rootfs": {"kind": "IMAGE", "source": format!("r/a@{d}")}});
        s.check(true, Request::CreateContainer, || input).unwrap();
    }
}
