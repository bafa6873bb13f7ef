//! The policy gate of the ttrpc handlers: builds each request's policy
//! input (Kata's shape, [`cloister_policy::agent::input`]) and asks the
//! [`crate::session::Session`], mapping refusals to ttrpc statuses
//! (PERMISSION_DENIED for a policy denial, FAILED_PRECONDITION for the
//! wrong state).

use cloister_policy::agent::{input, Request};
use cloister_protocol::agent as pb;
use cloister_protocol::ttrpc::{self, Code};
use serde_json::{json, Value};

use crate::service::Agent;
use crate::session::Refusal;

fn hex(b: &[u8]) -> String {
    use std::fmt::Write as _;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// The ttrpc status of a refusal.
pub fn status(r: &Refusal) -> ttrpc::Error {
    let code = match r {
        Refusal::Denied(_) | Refusal::Eval { .. } => Code::PERMISSION_DENIED,
        Refusal::NoSandbox { .. } | Refusal::AlreadyCreated | Refusal::InitdataRequired => {
            Code::FAILED_PRECONDITION
        }
        Refusal::BadPolicy(_) => Code::INVALID_ARGUMENT,
    };
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, r.to_string()))
}

impl Agent {
    /// Checks `request` against the session and its policy.
    pub(crate) async fn gate(
        &self,
        request: Request,
        input: impl FnOnce() -> Value,
    ) -> ttrpc::Result<()> {
        let tee = self.attester().await.is_ok();
        match self.session.check(tee, request, input) {
            Ok(None) => Ok(()),
            Ok(Some(audit)) => {
                crate::log!("policy audit mode, allowed anyway: {audit}");
                Ok(())
            }
            Err(r) => {
                crate::log!("refused: {r}");
                Err(status(&r))
            }
        }
    }
}

fn json_or_null(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

/// CreateSandboxRequest.
pub fn create_sandbox(r: &pb::CreateSandboxRequest) -> Value {
    json!({ "sandbox_id": r.sandbox_id, "hostname": r.hostname })
}

/// CreateContainerRequest: `OCI` in Kata's shape, `rootfs` ours (`kind` is
/// the enum name, e.g. "BLOCK").
pub fn create_container(r: &pb::CreateContainerRequest) -> Value {
    let rootfs = r.rootfs.as_ref().map_or(Value::Null, |f| {
        let kind = match f.kind.enum_value() {
            Ok(k) => format!("{k:?}"),
            Err(n) => format!("UNKNOWN({n})"),
        };
        json!({ "kind": kind, "source": f.source, "fstype": f.fstype,
                "writable_overlay": f.writable_overlay })
    });
    json!({
        "container_id": r.container_id,
        "exec_id": r.exec_id,
        "OCI": input::oci_spec(&json_or_null(&r.oci_spec)),
        "rootfs": rootfs,
    })
}

/// ExecProcessRequest: `process` in Kata's shape.
pub fn exec_process(r: &pb::ExecProcessRequest) -> Value {
    json!({
        "container_id": r.container_id,
        "exec_id": r.exec_id,
        "process": input::oci_process(&json_or_null(&r.process)),
    })
}

/// Requests naming a container and a process.
pub fn process_ref(container_id: &str, exec_id: &str) -> Value {
    json!({ "container_id": container_id, "exec_id": exec_id })
}

/// SignalProcessRequest.
pub fn signal_process(r: &pb::SignalProcessRequest) -> Value {
    json!({ "container_id": r.container_id, "exec_id": r.exec_id, "signal": r.signal })
}

/// RemoveContainerRequest.
pub fn remove_container(r: &pb::RemoveContainerRequest) -> Value {
    json!({ "container_id": r.container_id, "timeout": r.timeout })
}

/// WriteStreamRequest (the data's length, not the data).
pub fn write_stream(r: &pb::WriteStreamRequest) -> Value {
    json!({ "container_id": r.container_id, "exec_id": r.exec_id, "len": r.data.len() })
}

/// ReadStreamRequest.
pub fn read_stream(r: &pb::ReadStreamRequest) -> Value {
    json!({ "container_id": r.container_id, "exec_id": r.exec_id, "len": r.len })
}

/// GetEvidenceRequest.
pub fn get_evidence(r: &pb::GetEvidenceRequest) -> Value {
    json!({ "report_data": hex(&r.report_data) })
}

/// ExtendRuntimeMeasurementRequest.
pub fn extend(r: &pb::ExtendRuntimeMeasurementRequest) -> Value {
    json!({ "index": r.index, "data": hex(&r.data) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn create_container_input_has_katas_oci_and_our_rootfs() {
        let r = pb::CreateContainerRequest {
            container_id: "c".into(),
            oci_spec: br#"{"process":{"args":["sh"]},"mounts":[{"destination":"/x","type":"bind","source":"/"}]}"#.to_vec(),
            rootfs: Some(pb::Rootfs {
                kind: pb::rootfs::Kind::BLOCK.into(),
                source: "/dev/vda".into(),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let v = create_container(&r);
        assert_eq!(v["OCI"]["Process"]["Args"], json!(["sh"]));
        assert_eq!(v["OCI"]["Mounts"][0]["type_"], json!("bind"));
        assert_eq!(v["rootfs"]["kind"], json!("BLOCK"));
        let bad = pb::CreateContainerRequest {
            oci_spec: b"not json".to_vec(),
            ..Default::default()
        };
        assert_eq!(create_container(&bad)["OCI"], Value::Null);
    }

    #[test]
    fn refusals_map_to_codes() {
        let code = |r: Refusal| match status(&r) {
            ttrpc::Error::RpcStatus(s) => s.code(),
            _ => Code::UNKNOWN,
        };
        assert_eq!(code(Refusal::Denied("x".into())), Code::PERMISSION_DENIED);
        assert_eq!(
            code(Refusal::NoSandbox { rpc: "ExecProcess" }),
            Code::FAILED_PRECONDITION
        );
    }
}
