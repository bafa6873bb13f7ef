//! The Cloister guest agent: PID 1 inside the sandbox VM. It mounts the
//! basic file systems, loads the kernel modules the initramfs lists, reaps
//! orphans, and serves the ttrpc API of `cloister-protocol` to the host
//! runtime over virtio-serial or vsock (`cloister.channel=` on the kernel
//! command line). It runs container processes with youki's libcontainer and
//! powers the guest off on DestroySandbox, on a fatal error, or on a panic.
//!
//! It is not a general init system: no services, no udev, no login.

mod auth;
mod cinit;
mod containers;
mod gate;
mod image;
mod init;
mod kbs;
mod log;
mod modules;
mod net;
mod netsys;
mod reaper;
mod scratch;
mod service;
mod session;
mod settings;
mod stdio;
mod sys;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use cloister_protocol::agent_ttrpc::create_agent_service;
use cloister_protocol::health_ttrpc::create_health;
use cloister_protocol::ttrpc::asynchronous::Server;
use cloister_protocol::{Channel, API_VERSION};
use tokio::sync::mpsc;

use crate::containers::Containers;
use crate::modules::Loader;
use crate::reaper::Reaper;
use crate::service::{Agent, AgentApi, GuestFacts, HealthService};

/// How long to wait for the agent's virtio-serial port to appear.
const PORT_TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if let Some(cmd) = cinit::command_of(&argv) {
        std::process::exit(cinit::run(cmd));
    }
    let pid1 = init::is_pid1();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log!("panic: {info}");
        if pid1 {
            log!("powering off after the panic");
            init::power_off();
        }
        default_hook(info);
    }));
    if let Err(e) = run(pid1) {
        log!("fatal: {e:#}");
        if pid1 {
            init::power_off();
        }
        std::process::exit(1);
    }
    if pid1 {
        log!("powering off");
        init::power_off();
    }
}

fn run(pid1: bool) -> anyhow::Result<()> {
    log!(
        "starting, version {} (API {API_VERSION}), pid {}",
        env!("CARGO_PKG_VERSION"),
        std::process::id()
    );
    let (cgroup, modules) = if pid1 {
        let cgroup = init::mount_basics();
        init::set_hostname("cloister");
        let modules = modules::Loader::spawn(modules::MODULES_LOAD_PATH.into());
        (cgroup.to_string(), modules)
    } else {
        ("unknown".to_string(), modules::Loader::done())
    };
    let cmdline = std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?;
    let channel = match Channel::from_cmdline(&cmdline)? {
        Some(c) => c,
        None => {
            log!(
                "no {} on the kernel command line; using serial",
                cloister_protocol::channel::CMDLINE_KEY
            );
            Channel::Serial
        }
    };
    let facts = GuestFacts {
        channel: channel.to_string(),
        cgroup,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let auth = auth::required(&cmdline);
    rt.block_on(serve(channel, facts, modules, auth))
}

/// The module that provides guest vsock over virtio.
const VSOCK_TRANSPORT_MODULE: &str = "vmw_vsock_virtio_transport";

/// Builds the ttrpc server with both services.
fn server(agent: Arc<Agent>) -> Server {
    Server::new()
        .register_service(create_health(Arc::new(HealthService)))
        .register_service(create_agent_service(Arc::new(AgentApi(agent))))
}

async fn serve(
    channel: Channel,
    facts: GuestFacts,
    modules: Loader,
    auth: bool,
) -> anyhow::Result<()> {
    let reaper = Reaper::default();
    reaper.spawn().context("installing the SIGCHLD handler")?;
    let (shutdown_tx, mut shutdown_rx) = mpsc::channel(1);
    let agent = Arc::new(Agent::new(
        Containers::new(reaper),
        facts,
        modules.clone(),
        shutdown_tx,
    ));
    let listener = match channel {
        Channel::Serial => {
            let path = transport::wait_for_port(PORT_TIMEOUT)?;
            let fd = transport::open_port(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            log!("agent port is {}", path.display());
            transport::port_listener(fd).context("setting up the agent port")?
        }
        Channel::Vsock { port } => {
            // The listener needs the vsock transport module first.
            modules.wait_for(VSOCK_TRANSPORT_MODULE).await;
            transport::vsock_listener(port)
                .with_context(|| format!("listening on vsock port {port}"))?
        }
    };
    let listener = if auth {
        modules.wait_for(auth::FW_CFG_MODULE).await;
        let secret = auth::load_secret(std::path::Path::new(auth::FW_CFG_BY_NAME))?;
        log!("host connections must carry the sandbox secret");
        auth::guard(listener, secret)
    } else {
        listener
    };
    let mut srv = server(agent.clone()).add_listener(listener);
    srv.start().await.context("starting the ttrpc server")?;
    log!(
        "{} (API {API_VERSION})",
        cloister_protocol::channel::serving_notice(channel)
    );
    shutdown_rx.recv().await;
    let _ = srv.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_protocol::agent as pb;
    use cloister_protocol::agent_ttrpc::AgentServiceClient;
    use cloister_protocol::health_ttrpc::HealthClient;
    use cloister_protocol::ttrpc;
    use cloister_protocol::ttrpc::asynchronous::transport::{Listener, Socket};
    use std::os::fd::OwnedFd;

    fn ctx() -> ttrpc::context::Context {
        ttrpc::context::with_timeout(10_000_000_000)
    }

    fn code(e: ttrpc::Error) -> ttrpc::Code {
        match e {
            ttrpc::Error::RpcStatus(s) => s.code(),
            other => panic!("not a status: {other:?}"),
        }
    }

    async fn exercise(client: ttrpc::asynchronous::Client) {
        let health = HealthClient::new(client.clone());
        let agent = AgentServiceClient::new(client);
        let v = health.version(ctx(), &Default::default()).await.unwrap();
        assert_eq!(
            (v.api_major, v.api_minor),
            (API_VERSION.major, API_VERSION.minor)
        );
        let c = health.check(ctx(), &Default::default()).await.unwrap();
        assert_eq!(
            c.status.enum_value(),
            Ok(cloister_protocol::health::health_check_response::ServingStatus::SERVING)
        );

        let bad = pb::GetEvidenceRequest {
            report_data: vec![0; 32],
            ..Default::default()
        };
        assert_eq!(
            code(agent.get_evidence(ctx(), &bad).await.unwrap_err()),
            ttrpc::Code::INVALID_ARGUMENT
        );
        let w = pb::WaitProcessRequest {
            container_id: "nope".into(),
            ..Default::default()
        };
        assert_eq!(
            code(agent.wait_process(ctx(), &w).await.unwrap_err()),
            ttrpc::Code::NOT_FOUND
        );
        let cc = pb::CreateContainerRequest {
            container_id: "../x".into(),
            ..Default::default()
        };
        assert_eq!(
            code(agent.create_container(ctx(), &cc).await.unwrap_err()),
            ttrpc::Code::INVALID_ARGUMENT
        );
        let cc = pb::CreateContainerRequest {
            container_id: "c".into(),
            oci_spec: b"{}".to_vec(),
            ..Default::default()
        };
        assert_eq!(
            code(agent.create_container(ctx(), &cc).await.unwrap_err()),
            ttrpc::Code::INVALID_ARGUMENT
        );
    }

    pub(crate) fn test_agent() -> (Arc<Agent>, mpsc::Receiver<()>) {
        let (tx, rx) = mpsc::channel(1);
        (
            Arc::new(Agent::new(
                Containers::new(Reaper::default()),
                GuestFacts::default(),
                Loader::done(),
                tx,
            )),
            rx,
        )
    }

    /// The serial transport: the agent serves an already-open byte stream
    /// (here one end of a socket pair standing in for the virtio-serial port).
    #[tokio::test(flavor = "current_thread")]
    async fn serial_transport_serves_the_api_over_an_open_stream() {
        let (guest, host) = std::os::unix::net::UnixStream::pair().unwrap();
        let guest: OwnedFd = guest.into();
        let (agent, _rx) = test_agent();
        let mut srv = server(agent).add_listener(transport::port_listener(guest).unwrap());
        srv.start().await.unwrap();
        host.set_nonblocking(true).unwrap();
        let host = tokio::net::UnixStream::from_std(host).unwrap();
        exercise(ttrpc::asynchronous::Client::new(Socket::new(host))).await;
    }

    /// The listening transport path (vsock in the guest): the same server
    /// behind an accepting listener, here a unix socket because this host
    /// has no vsock.
    #[tokio::test(flavor = "current_thread")]
    async fn listening_transport_serves_the_api_to_successive_clients() {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix://{}", dir.path().join("a.sock").display());
        let (agent, _rx) = test_agent();
        let mut srv = server(agent).add_listener(Listener::bind(&addr).unwrap());
        srv.start().await.unwrap();
        for _ in 0..2 {
            let s = Socket::connect(&addr).await.unwrap();
            exercise(ttrpc::asynchronous::Client::new(s)).await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn destroy_sandbox_replies_then_signals_shutdown() {
        let (guest, host) = std::os::unix::net::UnixStream::pair().unwrap();
        let (agent, mut rx) = test_agent();
        let mut srv = server(agent).add_listener(transport::port_listener(guest.into()).unwrap());
        srv.start().await.unwrap();
        host.set_nonblocking(true).unwrap();
        let client = ttrpc::asynchronous::Client::new(Socket::new(
            tokio::net::UnixStream::from_std(host).unwrap(),
        ));
        AgentServiceClient::new(client)
            .destroy_sandbox(ctx(), &Default::default())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
    }
}
