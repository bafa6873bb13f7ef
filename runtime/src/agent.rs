//! The host's ttrpc client of the guest agent, over the virtio-serial socket
//! or vsock, with deadlines on everything that waits for the guest.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cloister_protocol::agent as pb;
use cloister_protocol::agent_ttrpc::AgentServiceClient;
use cloister_protocol::health;
use cloister_protocol::health_ttrpc::HealthClient;
use cloister_protocol::ttrpc;

use crate::hypervisor::AgentTransport;

/// Why talking to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The host end of the channel could not be opened in time.
    #[error("cannot connect to the agent at {}", path.display())]
    Connect {
        /// Socket path or vsock address.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent did not answer in time.
    #[error("the agent did not answer {what} within {}s", after.as_secs_f32())]
    Timeout {
        /// The request.
        what: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The agent answered with an error.
    #[error("agent {what} failed: {message}")]
    Rpc {
        /// The request.
        what: &'static str,
        /// What the agent (or the transport) said.
        message: String,
    },
    /// The agent reports it is not serving.
    #[error("the agent reports status {0:?}, expected SERVING")]
    NotServing(String),
    /// Incompatible API.
    #[error(transparent)]
    Version(#[from] cloister_protocol::VersionError),
    /// The connection broke and the guest console shows a panic (of the
    /// kernel or of the agent): the guest is gone.
    #[error("agent {what} failed: the guest panicked ({line})")]
    GuestPanicked {
        /// The request.
        what: &'static str,
        /// The panic line from the console.
        line: String,
    },
    /// The agent's API minor predates a field the host must send.
    #[error("the agent speaks API {agent}, which predates {field} (API {since}): rebuild the guest assets (`cloister assets build`)")]
    TooOld {
        /// The field.
        field: &'static str,
        /// The first API version with it.
        since: cloister_protocol::ApiVersion,
        /// The agent's version.
        agent: cloister_protocol::ApiVersion,
    },
}

/// The first API version whose CreateSandbox carries initdata.
pub const INITDATA_SINCE: cloister_protocol::ApiVersion =
    cloister_protocol::ApiVersion { major: 1, minor: 1 };

/// The first API version that pulls images itself (Rootfs kind IMAGE).
pub const IMAGE_SINCE: cloister_protocol::ApiVersion =
    cloister_protocol::ApiVersion { major: 1, minor: 3 };

/// How long a CreateContainer that pulls an image may take.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(1800);

/// Checks that an agent speaking `agent` reads `field`, added in `since`:
/// an older agent would drop the unknown field silently (and run without
/// the measured policy initdata carries), so the host refuses to send it.
pub fn check_field_supported(
    agent: cloister_protocol::ApiVersion,
    field: &'static str,
    since: cloister_protocol::ApiVersion,
) -> Result<(), AgentError> {
    if agent.major == since.major && agent.minor >= since.minor {
        Ok(())
    } else {
        Err(AgentError::TooOld {
            field,
            since,
            agent,
        })
    }
}

fn rpc_err(what: &'static str, e: ttrpc::Error) -> AgentError {
    let message = match e {
        ttrpc::Error::RpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    AgentError::Rpc { what, message }
}

/// A connected agent. Every host request to the agent goes through this
/// one client: it checks the API version on [`AgentClient::wait_ready`],
/// and when a request fails for a reason other than the agent's own answer
/// it reads the guest console (if it knows it) and reports a guest panic as
/// [`AgentError::GuestPanicked`].
#[derive(Clone)]
pub struct AgentClient {
    health: HealthClient,
    agent: AgentServiceClient,
    console: Option<std::sync::Arc<PathBuf>>,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentClient")
    }
}

/// The exit status of a container process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Shell convention: exit code, 128+signal, 127 not found.
    pub code: i32,
    /// The signal that killed it, 0 if it exited.
    pub signal: u32,
}

fn ctx(timeout: Option<Duration>) -> ttrpc::context::Context {
    match timeout {
        Some(d) => ttrpc::context::with_duration(d),
        None => ttrpc::context::Context::default(),
    }
}

/// Default deadline for requests that do not wait for a process.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl AgentClient {
    /// Opens the transport, retrying until `deadline` (the VMM creates the
    /// socket shortly after it starts; a vsock agent listens only once booted).
    pub async fn connect(
        transport: &AgentTransport,
        deadline: Instant,
    ) -> Result<Self, AgentError> {
        Self::connect_authenticated(transport, deadline, None).await
    }

    /// [`AgentClient::connect`], then sends the sandbox secret's preamble
    /// (`cloister_protocol::auth`) first on the connection, as an agent
    /// launched with `cloister.auth=fw_cfg` requires.
    pub async fn connect_authenticated(
        transport: &AgentTransport,
        deadline: Instant,
        secret: Option<&cloister_protocol::auth::Secret>,
    ) -> Result<Self, AgentError> {
        let (addr, shown) = match transport {
            AgentTransport::Serial { socket } => {
                (format!("unix://{}", socket.display()), socket.clone())
            }
            AgentTransport::Vsock { cid, port } => {
                let a = format!("vsock://{cid}:{port}");
                (a.clone(), PathBuf::from(a))
            }
            AgentTransport::VhostUserVsock { uds, .. } => (String::new(), uds.clone()),
        };
        loop {
            let attempt = match transport {
                // A request the guest never answers (its driver is not up
                // yet) must not hold the loop: retry after a while.
                AgentTransport::VhostUserVsock { uds, port, .. } => match tokio::time::timeout(
                    Duration::from_secs(2),
                    crate::vhost_user::connect(uds, *port),
                )
                .await
                {
                    Ok(r) => r.map(Into::into),
                    Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
                },
                _ => ttrpc::r#async::transport::Socket::connect(&addr).await,
            };
            let attempt = match (attempt, secret) {
                (Ok(mut sock), Some(secret)) => {
                    use tokio::io::AsyncWriteExt;
                    sock.write_all(&secret.preamble()).await.map(|()| sock)
                }
                (other, _) => other,
            };
            match attempt {
                Ok(sock) => {
                    let client = ttrpc::r#async::Client::new(sock);
                    return Ok(AgentClient {
                        health: HealthClient::new(client.clone()),
                        agent: AgentServiceClient::new(client),
                        console: None,
                    });
                }
                Err(source) if Instant::now() >= deadline => {
                    return Err(AgentError::Connect {
                        path: shown,
                        source,
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// The guest console log this client reads when a request fails.
    pub fn console(&self) -> Option<&std::path::Path> {
        self.console.as_deref().map(PathBuf::as_path)
    }

    /// The generated ttrpc client, for requests this type does not wrap
    /// (tests that send raw or hostile requests).
    pub fn service(&self) -> &AgentServiceClient {
        &self.agent
    }

    /// The same client, reading `console` (the guest console log) to tell
    /// a panicked guest from a broken connection.
    pub fn with_console(mut self, console: PathBuf) -> Self {
        self.console = Some(std::sync::Arc::new(console));
        self
    }

    /// The error for a failed request: the agent's answer as it is; a
    /// transport failure as [`AgentError::GuestPanicked`] if the console
    /// shows a panic.
    fn fail(&self, what: &'static str, e: ttrpc::Error) -> AgentError {
        if !matches!(e, ttrpc::Error::RpcStatus(_)) {
            if let Some(path) = &self.console {
                if let Some(line) = crate::console::find_any_panic(&crate::console::read(path)) {
                    return AgentError::GuestPanicked { what, line };
                }
            }
        }
        rpc_err(what, e)
    }

    /// GetEvidence: the guest's attestation evidence bound to `report_data`.
    /// Returns the TEE name and the evidence bytes.
    pub async fn get_evidence(
        &self,
        report_data: [u8; cloister_protocol::REPORT_DATA_LEN],
        timeout: Duration,
    ) -> Result<(String, Vec<u8>), AgentError> {
        let req = pb::GetEvidenceRequest {
            report_data: report_data.to_vec(),
            ..Default::default()
        };
        let r = self
            .agent
            .get_evidence(ctx(Some(timeout)), &req)
            .await
            .map_err(|e| self.fail("GetEvidence", e))?;
        Ok((r.tee, r.evidence))
    }

    /// Waits until the agent answers Check as SERVING, then checks its API
    /// version. Returns the agent's version response.
    pub async fn wait_ready(
        &self,
        deadline: Instant,
    ) -> Result<health::VersionResponse, AgentError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let req = health::CheckRequest::default();
        let resp = tokio::time::timeout(left, self.health.check(ctx(Some(left)), &req))
            .await
            .map_err(|_| AgentError::Timeout {
                what: "Check",
                after: left,
            })?
            .map_err(|e| {
                // ttrpc reports its own deadline as an error of its own words;
                // what matters is that ours has passed.
                if Instant::now() + Duration::from_millis(100) >= deadline {
                    AgentError::Timeout {
                        what: "Check",
                        after: left,
                    }
                } else {
                    self.fail("Check", e)
                }
            })?;
        let status = resp.status.enum_value_or_default();
        if status != health::health_check_response::ServingStatus::SERVING {
            return Err(AgentError::NotServing(format!("{status:?}")));
        }
        let ours = cloister_protocol::API_VERSION;
        let v = self.version().await?;
        cloister_protocol::check_compatible(
            ours,
            cloister_protocol::ApiVersion {
                major: v.api_major,
                minor: v.api_minor,
            },
        )?;
        Ok(v)
    }

    /// Version, telling the agent our API version.
    async fn version(&self) -> Result<health::VersionResponse, AgentError> {
        self.health
            .version(
                ctx(Some(REQUEST_TIMEOUT)),
                &health::VersionRequest {
                    client_api_major: cloister_protocol::API_VERSION.major,
                    client_api_minor: cloister_protocol::API_VERSION.minor,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.fail("Version", e))
    }

    /// The agent's API version.
    async fn api_version(&self) -> Result<cloister_protocol::ApiVersion, AgentError> {
        let v = self.version().await?;
        Ok(cloister_protocol::ApiVersion {
            major: v.api_major,
            minor: v.api_minor,
        })
    }

    /// CreateSandbox, handing the guest its initdata document (if any); a
    /// TEE guest refuses it unless it matches what the TEE reports.
    pub async fn create_sandbox(
        &self,
        id: &str,
        initdata: Option<&[u8]>,
    ) -> Result<(), AgentError> {
        if initdata.is_some() {
            let agent = self.api_version().await?;
            check_field_supported(agent, "CreateSandbox.initdata", INITDATA_SINCE)?;
        }
        let req = pb::CreateSandboxRequest {
            sandbox_id: id.to_owned(),
            initdata: initdata.map(<[u8]>::to_vec).unwrap_or_default(),
            ..Default::default()
        };
        self.agent
            .create_sandbox(ctx(Some(REQUEST_TIMEOUT)), &req)
            .await
            .map_err(|e| self.fail("CreateSandbox", e))?;
        Ok(())
    }

    /// DestroySandbox: the agent answers, then powers the guest off.
    pub async fn destroy_sandbox(&self, timeout: Duration) -> Result<(), AgentError> {
        self.agent
            .destroy_sandbox(ctx(Some(timeout)), &pb::DestroySandboxRequest::default())
            .await
            .map_err(|e| self.fail("DestroySandbox", e))?;
        Ok(())
    }

    /// CreateContainer with an OCI spec and a rootfs ([`block_rootfs`], or
    /// [`image_rootfs`]: the agent pulls the image, so the request may take
    /// as long as the pull).
    pub async fn create_container(
        &self,
        container_id: &str,
        oci_spec: Vec<u8>,
        rootfs: pb::Rootfs,
    ) -> Result<(), AgentError> {
        let image = rootfs.kind.enum_value() == Ok(pb::rootfs::Kind::IMAGE);
        if image {
            let agent = self.api_version().await?;
            check_field_supported(agent, "Rootfs.kind IMAGE", IMAGE_SINCE)?;
        }
        let timeout = if image { PULL_TIMEOUT } else { REQUEST_TIMEOUT };
        let req = pb::CreateContainerRequest {
            container_id: container_id.to_owned(),
            oci_spec,
            rootfs: protobuf::MessageField::some(rootfs),
            ..Default::default()
        };
        self.agent
            .create_container(ctx(Some(timeout)), &req)
            .await
            .map_err(|e| self.fail("CreateContainer", e))?;
        Ok(())
    }

    /// StartContainer.
    pub async fn start_container(&self, container_id: &str) -> Result<(), AgentError> {
        let req = pb::StartContainerRequest {
            container_id: container_id.to_owned(),
            ..Default::default()
        };
        self.agent
            .start_container(ctx(Some(REQUEST_TIMEOUT)), &req)
            .await
            .map_err(|e| self.fail("StartContainer", e))?;
        Ok(())
    }

    /// ExecProcess with an OCI Process JSON.
    pub async fn exec(
        &self,
        container_id: &str,
        exec_id: &str,
        process: Vec<u8>,
    ) -> Result<(), AgentError> {
        let req = pb::ExecProcessRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            process,
            ..Default::default()
        };
        self.agent
            .exec_process(ctx(Some(REQUEST_TIMEOUT)), &req)
            .await
            .map_err(|e| self.fail("ExecProcess", e))?;
        Ok(())
    }

    /// WaitProcess (no deadline: a process may run for ever).
    pub async fn wait(&self, container_id: &str, exec_id: &str) -> Result<ExitStatus, AgentError> {
        let req = pb::WaitProcessRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        let r = self
            .agent
            .wait_process(ctx(None), &req)
            .await
            .map_err(|e| self.fail("WaitProcess", e))?;
        Ok(ExitStatus {
            code: r.status,
            signal: r.signal,
        })
    }

    /// SignalProcess.
    pub async fn signal(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), AgentError> {
        let req = pb::SignalProcessRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            signal,
            ..Default::default()
        };
        self.agent
            .signal_process(ctx(Some(REQUEST_TIMEOUT)), &req)
            .await
            .map_err(|e| self.fail("SignalProcess", e))?;
        Ok(())
    }

    /// WriteStdin; returns how much was taken.
    pub async fn write_stdin(
        &self,
        container_id: &str,
        exec_id: &str,
        data: &[u8],
    ) -> Result<usize, AgentError> {
        let req = pb::WriteStreamRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            data: data.to_vec(),
            ..Default::default()
        };
        let r = self
            .agent
            .write_stdin(ctx(Some(REQUEST_TIMEOUT)), &req)
            .await
            .map_err(|e| self.fail("WriteStdin", e))?;
        Ok(r.len as usize)
    }

    /// CloseStdin.
    pub async fn close_stdin(&self, container_id: &str, exec_id: &str) -> Result<(), AgentError> {
        let req = pb::CloseStdinRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        self.agent
            .close_stdin(ctx(Some(REQUEST_TIMEOUT)), &req)
            .await
            .map_err(|e| self.fail("CloseStdin", e))?;
        Ok(())
    }

    /// The next chunk of stdout (`err` false) or stderr (`err` true); empty
    /// at end of stream.
    pub async fn read_output(
        &self,
        container_id: &str,
        exec_id: &str,
        err: bool,
    ) -> Result<Vec<u8>, AgentError> {
        let req = pb::ReadStreamRequest {
            container_id: container_id.to_owned(),
            exec_id: exec_id.to_owned(),
            ..Default::default()
        };
        let r = if err {
            self.agent
                .read_stderr(ctx(None), &req)
                .await
                .map_err(|e| self.fail("ReadStderr", e))?
        } else {
            self.agent
                .read_stdout(ctx(None), &req)
                .await
                .map_err(|e| self.fail("ReadStdout", e))?
        };
        Ok(r.data)
    }

    /// RemoveContainer (SIGTERM, then SIGKILL after `grace_secs`).
    pub async fn remove_container(
        &self,
        container_id: &str,
        grace_secs: u32,
    ) -> Result<(), AgentError> {
        let req = pb::RemoveContainerRequest {
            container_id: container_id.to_owned(),
            timeout: grace_secs,
            ..Default::default()
        };
        self.agent
            .remove_container(
                ctx(Some(
                    REQUEST_TIMEOUT + Duration::from_secs(u64::from(grace_secs)),
                )),
                &req,
            )
            .await
            .map_err(|e| self.fail("RemoveContainer", e))?;
        Ok(())
    }

    /// GetGuestDetails.
    pub async fn guest_details(&self) -> Result<pb::GuestDetailsResponse, AgentError> {
        self.agent
            .get_guest_details(
                ctx(Some(REQUEST_TIMEOUT)),
                &pb::GetGuestDetailsRequest::default(),
            )
            .await
            .map_err(|e| self.fail("GetGuestDetails", e))
    }
}

/// The rootfs message for the read-only disk built by [`crate::rootfs`].
pub fn block_rootfs() -> pb::Rootfs {
    pb::Rootfs {
        kind: pb::rootfs::Kind::BLOCK.into(),
        source: crate::rootfs::GUEST_DEVICE.to_owned(),
        fstype: crate::rootfs::FSTYPE.to_owned(),
        writable_overlay: true,
        ..Default::default()
    }
}

/// The rootfs message for an image the agent pulls itself (`reference`,
/// e.g. `127.0.0.1:5000/app@sha256:…`), following the sandbox's initdata.
pub fn image_rootfs(reference: &str) -> pb::Rootfs {
    pb::Rootfs {
        kind: pb::rootfs::Kind::IMAGE.into(),
        source: reference.to_owned(),
        writable_overlay: true,
        ..Default::default()
    }
}

/// A minimal OCI runtime-spec config.json running `args` as root in `/`.
pub fn oci_spec(args: &[String], hostname: &str) -> Vec<u8> {
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": process_value(args),
        "root": { "path": "rootfs", "readonly": false },
        "hostname": hostname,
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "nodev", "mode=1777"] }
        ],
        "linux": {
            "namespaces": [
                { "type": "pid" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ]
        }
    });
    spec.to_string().into_bytes()
}

/// An OCI Process JSON for ExecProcess.
pub fn process_json(args: &[String]) -> Vec<u8> {
    process_value(args).to_string().into_bytes()
}

fn process_value(args: &[String]) -> serde_json::Value {
    serde_json::json!({
        "terminal": false,
        "user": { "uid": 0, "gid": 0 },
        "args": args,
        "env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
        ],
        "cwd": "/",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_carries_the_command() {
        let args = vec!["echo".to_owned(), "a b".to_owned()];
        let v: serde_json::Value = serde_json::from_slice(&oci_spec(&args, "h")).unwrap();
        assert_eq!(v["process"]["args"][1], "a b");
        assert_eq!(v["hostname"], "h");
        let p: serde_json::Value = serde_json::from_slice(&process_json(&args)).unwrap();
        assert_eq!(p["args"][0], "echo");
        assert_eq!(block_rootfs().source, "/dev/vda");
    }

    #[test]
    fn initdata_only_to_agents_that_read_it() {
        use cloister_protocol::ApiVersion;
        let f = |major, minor| {
            check_field_supported(
                ApiVersion { major, minor },
                "CreateSandbox.initdata",
                INITDATA_SINCE,
            )
        };
        assert!(f(1, 1).is_ok());
        assert!(f(1, 2).is_ok());
        let err = f(1, 0).unwrap_err().to_string();
        assert!(
            err.contains("1.0") && err.contains("initdata") && err.contains("1.1"),
            "{err}"
        );
        assert!(f(2, 5).is_err());
    }
}
