//! The ttrpc services: Health and AgentService.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cloister_protocol::agent::{self as pb};
use cloister_protocol::agent_ttrpc::AgentService;
use cloister_protocol::health::{self, health_check_response::ServingStatus};
use cloister_protocol::health_ttrpc::Health;
use cloister_protocol::ttrpc::{self, r#async::TtrpcContext, Code};
use cloister_protocol::{API_VERSION, REPORT_DATA_LEN};
use cloister_tee::Attester;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::containers::{ContainerError, Containers, RootSource};
use crate::gate;
use crate::modules::Loader;
use crate::session::Session;
use cloister_policy::agent::Request;

/// Facts about the guest gathered at boot.
#[derive(Debug, Clone, Default)]
pub struct GuestFacts {
    pub channel: String,
    pub cgroup: String,
}

/// The agent's state shared by both services.
#[derive(Debug)]
pub struct Agent {
    pub containers: Containers,
    pub facts: GuestFacts,
    /// Kernel modules, loading in the background.
    pub modules: Loader,
    /// Sent once DestroySandbox has been answered.
    pub shutdown: mpsc::Sender<()>,
    /// Session state and the installed policy.
    pub session: Session,
    attester: OnceLock<Result<Arc<dyn Attester>, String>>,
    /// The measured initdata settings (issue 9).
    pub settings: crate::settings::Settings,
    /// Images pulled in the guest.
    pub images: crate::image::Images,
}

fn status(code: Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

impl From<ContainerError> for ttrpc::Error {
    fn from(e: ContainerError) -> Self {
        let code = match &e {
            ContainerError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ContainerError::NotFound(_) => Code::NOT_FOUND,
            ContainerError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ContainerError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ContainerError::Internal(_) => Code::INTERNAL,
        };
        status(code, e.to_string())
    }
}

impl Agent {
    pub fn new(
        containers: Containers,
        facts: GuestFacts,
        modules: Loader,
        shutdown: mpsc::Sender<()>,
    ) -> Self {
        Self {
            containers,
            facts,
            modules,
            shutdown,
            session: Session::new(),
            attester: OnceLock::new(),
            settings: Default::default(),
            images: Default::default(),
        }
    }

    /// Checks the sandbox's initdata against what the TEE reports before
    /// anything trusts it: the digest must equal the RPV / HOST_DATA /
    /// MRCONFIGID the host set at launch, and with no initdata that field
    /// must be zero (a host cannot launch with one document and hand over
    /// another, or withhold it). A guest without a TEE refuses initdata.
    async fn accept_initdata(
        &self,
        initdata: Option<&[u8]>,
    ) -> ttrpc::Result<Option<Arc<dyn Attester>>> {
        let attester = match (self.attester().await, initdata) {
            (Ok(a), _) => a,
            (Err(_), None) => return Ok(None),
            (Err(why), Some(_)) => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("initdata refused: nothing in this guest can confirm it ({why})"),
                ))
            }
        };
        let tee = attester.tee();
        let evidence = attester.evidence(&[0; REPORT_DATA_LEN]).map_err(|e| {
            status(
                Code::INTERNAL,
                format!("initdata check: {tee} evidence: {}", error_chain(&e)),
            )
        })?;
        cloister_tee::evidence::check_initdata(tee, &evidence, initdata)
            .map_err(|e| status(Code::FAILED_PRECONDITION, format!("initdata refused: {e}")))?;
        match initdata {
            Some(doc) => crate::log!(
                "initdata ({} bytes) matches the {tee} {}",
                doc.len(),
                cloister_tee::evidence::initdata_field_name(tee)
            ),
            None => crate::log!("no initdata; the {tee} field is zero as expected"),
        }
        Ok(Some(attester))
    }

    /// The attester, detected on first use (after the modules it may need,
    /// e.g. tsm and the TEE guest driver, have loaded).
    pub(crate) async fn attester(&self) -> Result<Arc<dyn Attester>, String> {
        self.modules.wait_done().await;
        self.attester
            .get_or_init(|| match cloister_tee::detect() {
                Ok(a) => Ok(Arc::from(a)),
                Err(e) => Err(format!(
                    "no attester for this guest (is it a TEE guest? --tee none has none): {e}"
                )),
            })
            .clone()
    }
}

/// Health service.
#[derive(Debug)]
pub struct HealthService;

#[async_trait::async_trait]
impl Health for HealthService {
    async fn check(
        &self,
        _: &TtrpcContext,
        _: health::CheckRequest,
    ) -> ttrpc::Result<health::HealthCheckResponse> {
        Ok(health::HealthCheckResponse {
            status: ServingStatus::SERVING.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _: &TtrpcContext,
        req: health::VersionRequest,
    ) -> ttrpc::Result<health::VersionResponse> {
        if req.client_api_major != API_VERSION.major {
            crate::log!(
                "host speaks API {}.{}, we speak {API_VERSION}: the host will refuse us",
                req.client_api_major,
                req.client_api_minor
            );
        }
        Ok(health::VersionResponse {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            api_major: API_VERSION.major,
            api_minor: API_VERSION.minor,
            ..Default::default()
        })
    }
}

/// Agent service.
#[derive(Debug, Clone)]
pub struct AgentApi(pub Arc<Agent>);

fn read_trim(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[async_trait::async_trait]
impl AgentService for AgentApi {
    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: pb::CreateSandboxRequest,
    ) -> ttrpc::Result<pb::Empty> {
        let initdata = if req.initdata.is_empty() {
            None
        } else {
            Some(
                cloister_tee::initdata::Initdata::parse(req.initdata.clone()).map_err(|e| {
                    status(Code::INVALID_ARGUMENT, format!("initdata refused: {e}"))
                })?,
            )
        };
        // 1. The document is the one the TEE measured.
        let attester = self
            .0
            .accept_initdata(initdata.as_ref().map(|d| d.raw()))
            .await?;
        let tee = attester.is_some();
        // 2. Its settings parse (strictly: an unknown key is refused).
        let config = self
            .0
            .settings
            .accept(initdata.as_ref().map(|d| d.raw()))
            .map_err(|e| status(Code::INVALID_ARGUMENT, format!("initdata refused: {e}")))?;
        // 3. Its policy allows this CreateSandbox.
        let prepared = self
            .0
            .session
            .prepare(
                tee,
                initdata.as_ref(),
                Some(&config),
                &gate::create_sandbox(&req),
            )
            .map_err(|r| gate::status(&r))?;
        if let Some(audit) = &prepared.audit {
            crate::log!("policy audit mode, allowed anyway: {audit}");
        }
        // 4. The network to the endpoints it names, and the guest's own
        // attestation to its KBS: a refusal shows before anything runs, and
        // leaves the sandbox uncreated.
        if let Some(a) = attester {
            crate::kbs::on_create_sandbox(&self.0.settings, a, &config, initdata.as_ref())
                .await
                .map_err(|e| status(Code::FAILED_PRECONDITION, e))?;
        }
        self.0
            .session
            .install(prepared)
            .map_err(|r| gate::status(&r))?;
        if !req.hostname.is_empty() {
            crate::init::set_hostname(&req.hostname);
        }
        crate::log!("sandbox {} created", req.sandbox_id);
        Ok(pb::Empty::new())
    }

    async fn destroy_sandbox(
        &self,
        _: &TtrpcContext,
        _: pb::DestroySandboxRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.0
            .gate(Request::DestroySandbox, || serde_json::json!({}))
            .await?;
        crate::log!("DestroySandbox: stopping containers, then powering off");
        self.0.containers.remove_all().await;
        let tx = self.0.shutdown.clone();
        // Power off after the reply has been written.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = tx.send(()).await;
        });
        Ok(pb::Empty::new())
    }

    async fn create_container(
        &self,
        _: &TtrpcContext,
        req: pb::CreateContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.0
            .gate(Request::CreateContainer, || gate::create_container(&req))
            .await?;
        let rootfs = req.rootfs.as_ref().ok_or_else(|| {
            status(
                Code::INVALID_ARGUMENT,
                "rootfs is missing: expected a Rootfs (kind, source)",
            )
        })?;
        // The block device and overlay drivers are modules.
        self.0.modules.wait_done().await;
        if rootfs.kind.enum_value() != Ok(pb::rootfs::Kind::IMAGE) {
            self.0.containers.create(
                &req.container_id,
                &req.exec_id,
                &req.oci_spec,
                RootSource::Request(rootfs),
            )?;
            return Ok(pb::Empty::new());
        }
        // Pulled here, as the measured initdata says, with keys from the KBS
        // this guest attested to.
        let config = self.0.settings.get().unwrap_or_default();
        let tee = self.0.attester().await.is_ok();
        let image = self
            .0
            .images
            .pull(&rootfs.source, &config, self.0.settings.kbs(), tee)
            .await
            .map_err(|e| status(Code::FAILED_PRECONDITION, e))?;
        let lowers = crate::image::lowerdirs(&image);
        self.0.containers.create(
            &req.container_id,
            &req.exec_id,
            &req.oci_spec,
            RootSource::Image {
                lowers: &lowers,
                config: &image.config,
            },
        )?;
        Ok(pb::Empty::new())
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        req: pb::StartContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.0
            .gate(
                Request::StartContainer,
                || serde_json::json!({ "container_id": req.container_id }),
            )
            .await?;
        self.0.containers.start(&req.container_id)?;
        Ok(pb::Empty::new())
    }

    async fn exec_process(
        &self,
        _: &TtrpcContext,
        req: pb::ExecProcessRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.0
            .gate(Request::ExecProcess, || gate::exec_process(&req))
            .await?;
        self.0
            .containers
            .exec(&req.container_id, &req.exec_id, &req.process)?;
        Ok(pb::Empty::new())
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        req: pb::WaitProcessRequest,
    ) -> ttrpc::Result<pb::WaitProcessResponse> {
        self.0
            .gate(Request::WaitProcess, || {
                gate::process_ref(&req.container_id, &req.exec_id)
            })
            .await?;
        let p = self.0.containers.proc(&req.container_id, &req.exec_id)?;
        let exit = p.wait().await;
        Ok(pb::WaitProcessResponse {
            status: exit.status(),
            signal: exit.signal(),
            ..Default::default()
        })
    }

    async fn signal_process(
        &self,
        _: &TtrpcContext,
        req: pb::SignalProcessRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.0
            .gate(Request::SignalProcess, || gate::signal_process(&req))
            .await?;
        self.0
            .containers
            .signal(&req.container_id, &req.exec_id, req.signal)?;
        Ok(pb::Empty::new())
    }

    async fn remove_container(
        &self,
        _: &TtrpcContext,
        req: pb::RemoveContainerRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.0
            .gate(Request::RemoveContainer, || gate::remove_container(&req))
            .await?;
        self.0
            .containers
            .remove(
                &req.container_id,
                Duration::from_secs(u64::from(req.timeout)),
            )
            .await?;
        Ok(pb::Empty::new())
    }

    async fn write_stdin(
        &self,
        _: &TtrpcContext,
        req: pb::WriteStreamRequest,
    ) -> ttrpc::Result<pb::WriteStreamResponse> {
        self.0
            .gate(Request::WriteStdin, || gate::write_stream(&req))
            .await?;
        let p = self.0.containers.proc(&req.container_id, &req.exec_id)?;
        let mut guard = p.stdin.lock().await;
        let w = guard.as_mut().ok_or_else(|| {
            status(
                Code::FAILED_PRECONDITION,
                "stdin is closed (CloseStdin was called or the process never started)",
            )
        })?;
        w.write_all(&req.data).await.map_err(|e| {
            status(
                Code::FAILED_PRECONDITION,
                format!("writing stdin: {e} (has the process exited?)"),
            )
        })?;
        Ok(pb::WriteStreamResponse {
            len: u32::try_from(req.data.len()).unwrap_or(u32::MAX),
            ..Default::default()
        })
    }

    async fn close_stdin(
        &self,
        _: &TtrpcContext,
        req: pb::CloseStdinRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.0
            .gate(Request::CloseStdin, || {
                gate::process_ref(&req.container_id, &req.exec_id)
            })
            .await?;
        let p = self.0.containers.proc(&req.container_id, &req.exec_id)?;
        p.stdin.lock().await.take();
        Ok(pb::Empty::new())
    }

    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        req: pb::ReadStreamRequest,
    ) -> ttrpc::Result<pb::ReadStreamResponse> {
        self.0
            .gate(Request::ReadStdout, || gate::read_stream(&req))
            .await?;
        let p = self.0.containers.proc(&req.container_id, &req.exec_id)?;
        let data = p.stdout.read(req.len as usize).await;
        Ok(pb::ReadStreamResponse {
            data,
            ..Default::default()
        })
    }

    async fn read_stderr(
        &self,
        _: &TtrpcContext,
        req: pb::ReadStreamRequest,
    ) -> ttrpc::Result<pb::ReadStreamResponse> {
        self.0
            .gate(Request::ReadStderr, || gate::read_stream(&req))
            .await?;
        let p = self.0.containers.proc(&req.container_id, &req.exec_id)?;
        let data = p.stderr.read(req.len as usize).await;
        Ok(pb::ReadStreamResponse {
            data,
            ..Default::default()
        })
    }

    async fn get_guest_details(
        &self,
        _: &TtrpcContext,
        _req: pb::GetGuestDetailsRequest,
    ) -> ttrpc::Result<pb::GuestDetailsResponse> {
        self.0
            .gate(Request::GetGuestDetails, || serde_json::json!({}))
            .await?;
        let facts = &self.0.facts;
        let tee = match self.0.attester().await {
            Ok(a) => a.tee().to_string(),
            Err(_) => "none".to_string(),
        };
        Ok(pb::GuestDetailsResponse {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: read_trim("/proc/sys/kernel/osrelease"),
            mem_total_kib: mem_total_kib(
                &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
            ),
            online_cpus: std::thread::available_parallelism()
                .map_or(0, |n| u32::try_from(n.get()).unwrap_or(0)),
            cgroup: facts.cgroup.clone(),
            channel: facts.channel.clone(),
            tee,
            modules_loaded: self.0.modules.wait_done().await,
            ..Default::default()
        })
    }

    async fn get_evidence(
        &self,
        _: &TtrpcContext,
        req: pb::GetEvidenceRequest,
    ) -> ttrpc::Result<pb::GetEvidenceResponse> {
        self.0
            .gate(Request::GetEvidence, || gate::get_evidence(&req))
            .await?;
        let rd: &[u8; REPORT_DATA_LEN] = req.report_data.as_slice().try_into().map_err(|_| {
            status(
                Code::INVALID_ARGUMENT,
                format!(
                    "report_data is {} bytes: expected exactly {REPORT_DATA_LEN}",
                    req.report_data.len()
                ),
            )
        })?;
        let a = self
            .0
            .attester()
            .await
            .map_err(|m| status(Code::UNIMPLEMENTED, m))?;
        // No host bytes get signed unless the measured initdata says so.
        self.0
            .settings
            .host_evidence(a.tee())
            .map_err(|e| status(Code::PERMISSION_DENIED, e.to_string()))?;
        let evidence = a.evidence(rd).map_err(|e| {
            status(
                Code::INTERNAL,
                format!("{} evidence: {}", a.tee(), error_chain(&e)),
            )
        })?;
        Ok(pb::GetEvidenceResponse {
            tee: a.tee().to_string(),
            evidence,
            ..Default::default()
        })
    }

    async fn extend_runtime_measurement(
        &self,
        _: &TtrpcContext,
        req: pb::ExtendRuntimeMeasurementRequest,
    ) -> ttrpc::Result<pb::Empty> {
        self.0
            .gate(Request::ExtendRuntimeMeasurement, || gate::extend(&req))
            .await?;
        let a = self
            .0
            .attester()
            .await
            .map_err(|m| status(Code::UNIMPLEMENTED, m))?;
        a.extend(req.index, &req.data).map_err(|e| {
            status(
                Code::FAILED_PRECONDITION,
                format!("extending measurement {}: {}", req.index, error_chain(&e)),
            )
        })?;
        Ok(pb::Empty::new())
    }

    async fn set_policy(
        &self,
        _: &TtrpcContext,
        req: pb::SetPolicyRequest,
    ) -> ttrpc::Result<pb::Empty> {
        if let Some(audit) = self
            .0
            .session
            .set_policy(&req.policy)
            .map_err(|r| gate::status(&r))?
        {
            crate::log!("policy audit mode, allowed anyway: {audit}");
        }
        crate::log!(
            "SetPolicy: new policy installed ({} bytes)",
            req.policy.len()
        );
        Ok(pb::Empty::new())
    }
}

/// An error and its sources, one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_parsing() {
        assert_eq!(
            mem_total_kib("MemTotal:         492300 kB\nMemFree: 1 kB\n"),
            492300
        );
        assert_eq!(mem_total_kib("MemFree: 1 kB\n"), 0);
    }
}
