//! Containers and their processes in a running sandbox: create, start,
//! exec, stdio pumps, signal forwarding, wait and remove. This is the one
//! container API: `cloister run`, `cloister exec`/`kill`/`rm` and the
//! containerd shim all drive containers through it.
//!
//! The decision of what to send when a user signal arrives
//! ([`SignalForwarder`]) is synchronous and tested without a runtime; the
//! rest is thin async glue over [`AgentClient`].

use std::time::{Duration, Instant};

use cloister_protocol::agent as pb;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::agent::{AgentClient, AgentError, ExitStatus};

/// SIGKILL.
pub const SIGKILL: i32 = 9;
/// SIGTERM.
pub const SIGTERM: i32 = 15;

/// How long a process may take to exit after a forwarded signal before it
/// is killed.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// A container in a sandbox.
#[derive(Debug, Clone)]
pub struct Container {
    client: AgentClient,
    id: String,
}

impl Container {
    /// CreateContainer: `oci_spec` is an OCI runtime-spec config.json (see
    /// [`crate::agent::oci_spec`]), `rootfs` where its root comes from.
    pub async fn create(
        client: &AgentClient,
        id: &str,
        oci_spec: Vec<u8>,
        rootfs: pb::Rootfs,
    ) -> Result<Container, AgentError> {
        client.create_container(id, oci_spec, rootfs).await?;
        Ok(Container::attach(client, id))
    }

    /// A handle on a container that already exists in the guest (e.g. one
    /// created by an earlier run of the runtime).
    pub fn attach(client: &AgentClient, id: &str) -> Container {
        Container {
            client: client.clone(),
            id: id.to_owned(),
        }
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The container's init process (exec id `""`), started or not.
    pub fn init(&self) -> Process {
        Process {
            client: self.client.clone(),
            container_id: self.id.clone(),
            exec_id: String::new(),
        }
    }

    /// StartContainer: runs the init process.
    pub async fn start(&self) -> Result<Process, AgentError> {
        self.client.start_container(&self.id).await?;
        Ok(self.init())
    }

    /// ExecProcess: runs `process` (an OCI Process JSON, see
    /// [`crate::agent::process_json`]) as `exec_id` in the container.
    pub async fn exec(&self, exec_id: &str, process: Vec<u8>) -> Result<Process, AgentError> {
        if exec_id.is_empty() {
            return Err(AgentError::Rpc {
                what: "ExecProcess",
                message: "an exec id must not be empty (empty names the init process)".into(),
            });
        }
        self.client.exec(&self.id, exec_id, process).await?;
        Ok(Process {
            client: self.client.clone(),
            container_id: self.id.clone(),
            exec_id: exec_id.to_owned(),
        })
    }

    /// A handle on exec'd process `exec_id`.
    pub fn process(&self, exec_id: &str) -> Process {
        Process {
            client: self.client.clone(),
            container_id: self.id.clone(),
            exec_id: exec_id.to_owned(),
        }
    }

    /// RemoveContainer: SIGTERM, SIGKILL after `grace`, then the guest
    /// removes the container's state.
    pub async fn remove(&self, grace: Duration) -> Result<(), AgentError> {
        let secs = u32::try_from(grace.as_secs()).unwrap_or(u32::MAX);
        self.client.remove_container(&self.id, secs).await
    }
}

/// Which output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

/// A process in a container: the init process or an exec'd one.
#[derive(Debug, Clone)]
pub struct Process {
    client: AgentClient,
    container_id: String,
    exec_id: String,
}

impl Process {
    /// Its container's id.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }

    /// Its exec id (`""` for the init process).
    pub fn exec_id(&self) -> &str {
        &self.exec_id
    }

    /// Waits for it to exit (no deadline).
    pub async fn wait(&self) -> Result<ExitStatus, AgentError> {
        self.client.wait(&self.container_id, &self.exec_id).await
    }

    /// Sends it `signal`.
    pub async fn signal(&self, signal: i32) -> Result<(), AgentError> {
        let sig = u32::try_from(signal).map_err(|_| AgentError::Rpc {
            what: "SignalProcess",
            message: format!("signal {signal} is negative: expected 1-64"),
        })?;
        self.client
            .signal(&self.container_id, &self.exec_id, sig)
            .await
    }

    /// Closes its stdin.
    pub async fn close_stdin(&self) -> Result<(), AgentError> {
        self.client
            .close_stdin(&self.container_id, &self.exec_id)
            .await
    }

    /// Copies one output stream into `out` until the process's end of
    /// stream; `first` fires at the first byte (for timing).
    pub fn pump_output<W>(
        &self,
        stream: Stream,
        mut out: W,
        mut first: Option<tokio::sync::oneshot::Sender<Instant>>,
    ) -> JoinHandle<()>
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let p = self.clone();
        tokio::spawn(async move {
            loop {
                let chunk = p
                    .client
                    .read_output(&p.container_id, &p.exec_id, stream == Stream::Stderr)
                    .await;
                match chunk {
                    Ok(data) if data.is_empty() => break,
                    Ok(data) => {
                        if let Some(tx) = first.take() {
                            let _ = tx.send(Instant::now());
                        }
                        if out.write_all(&data).await.is_err() || out.flush().await.is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = out.shutdown().await;
        })
    }

    /// Copies `input` into the process's stdin in chunks of up to 64 KiB
    /// (well under ttrpc's 4 MiB frame limit), and closes its stdin at end
    /// of input.
    pub fn pump_input<R>(&self, mut input: R) -> JoinHandle<()>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let p = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = p.close_stdin().await;
                        return;
                    }
                    Ok(n) => {
                        let mut off = 0;
                        while off < n {
                            match p
                                .client
                                .write_stdin(&p.container_id, &p.exec_id, &buf[off..n])
                                .await
                            {
                                Ok(0) | Err(_) => return,
                                Ok(w) => off += w,
                            }
                        }
                    }
                }
            }
        })
    }

    /// Waits for the process to exit while forwarding each signal that
    /// arrives on `signals` (see [`SignalForwarder`]).
    pub async fn wait_forwarding(
        &self,
        signals: &mut mpsc::Receiver<i32>,
        grace: Duration,
    ) -> Result<ExitStatus, AgentError> {
        let mut fwd = SignalForwarder::new(grace);
        let mut signals_open = true;
        loop {
            let deadline = fwd.kill_at();
            let escalate = async {
                match deadline {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            let next = async {
                if signals_open {
                    signals.recv().await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                r = self.wait() => return r,
                s = next => match s {
                    Some(s) => {
                        let sig = fwd.on_signal(s, Instant::now());
                        let _ = self.signal(sig).await;
                    }
                    None => signals_open = false,
                },
                _ = escalate => {
                    let sig = fwd.on_deadline();
                    let _ = self.signal(sig).await;
                }
            }
        }
    }
}

/// What to send a process when the user signals the runtime: the first
/// signal is forwarded as it is and starts a grace period; a second signal,
/// or the end of the grace period, sends SIGKILL (a container init without
/// a handler ignores SIGTERM).
#[derive(Debug, Clone)]
pub struct SignalForwarder {
    grace: Duration,
    kill_at: Option<Instant>,
}

impl SignalForwarder {
    /// A forwarder with a grace period of `grace`.
    pub fn new(grace: Duration) -> SignalForwarder {
        SignalForwarder {
            grace,
            kill_at: None,
        }
    }

    /// The signal to send for user signal `sig` arriving at `now`.
    pub fn on_signal(&mut self, sig: i32, now: Instant) -> i32 {
        let send = if self.kill_at.is_some() { SIGKILL } else { sig };
        self.kill_at = Some(now + self.grace);
        send
    }

    /// When SIGKILL is due, if a signal was forwarded.
    pub fn kill_at(&self) -> Option<Instant> {
        self.kill_at
    }

    /// The signal to send when the grace period ended.
    pub fn on_deadline(&mut self) -> i32 {
        self.kill_at = None;
        SIGKILL
    }
}

/// The stdio pumps of one process.
#[derive(Debug)]
pub struct Pumps {
    out: Option<JoinHandle<()>>,
    err: Option<JoinHandle<()>>,
    input: Option<JoinHandle<()>>,
}

impl Pumps {
    /// Starts the pumps: stdout into `stdout`, stderr into `stderr`, and
    /// `stdin` (if any) into the process.
    pub fn start<O, E, I>(
        process: &Process,
        stdout: O,
        stderr: E,
        stdin: Option<I>,
        first_output: Option<tokio::sync::oneshot::Sender<Instant>>,
    ) -> Pumps
    where
        O: AsyncWrite + Unpin + Send + 'static,
        E: AsyncWrite + Unpin + Send + 'static,
        I: AsyncRead + Unpin + Send + 'static,
    {
        Pumps {
            out: Some(process.pump_output(Stream::Stdout, stdout, first_output)),
            err: Some(process.pump_output(Stream::Stderr, stderr, None)),
            input: stdin.map(|i| process.pump_input(i)),
        }
    }

    /// After the process exited: stops the input pump and waits up to
    /// `timeout` for the output pumps to drain what the process wrote.
    pub async fn drain(mut self, timeout: Duration) {
        if let Some(i) = self.input.take() {
            i.abort();
        }
        let until = tokio::time::Instant::now() + timeout;
        for pump in [self.out.take(), self.err.take()].into_iter().flatten() {
            let _ = tokio::time::timeout_at(until, pump).await;
        }
    }
}

impl Drop for Pumps {
    fn drop(&mut self) {
        for p in [self.out.take(), self.err.take(), self.input.take()]
            .into_iter()
            .flatten()
        {
            p.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_is_forwarded_then_sigkill() {
        let t0 = Instant::now();
        let mut f = SignalForwarder::new(Duration::from_secs(5));
        assert_eq!(f.kill_at(), None);
        assert_eq!(f.on_signal(SIGTERM, t0), SIGTERM);
        assert_eq!(f.kill_at(), Some(t0 + Duration::from_secs(5)));
        // A second signal kills at once, whatever it is.
        assert_eq!(f.on_signal(2, t0 + Duration::from_secs(1)), SIGKILL);
    }

    #[test]
    fn the_grace_period_ends_in_sigkill_and_resets() {
        let t0 = Instant::now();
        let mut f = SignalForwarder::new(Duration::from_millis(10));
        assert_eq!(f.on_signal(2, t0), 2);
        assert_eq!(f.on_deadline(), SIGKILL);
        assert_eq!(f.kill_at(), None);
        // The next signal starts over.
        assert_eq!(f.on_signal(SIGTERM, t0), SIGTERM);
    }
}
