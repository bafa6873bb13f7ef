//! The control socket of a detached sandbox (`cloister run --detach`).
//!
//! The process that owns a detached sandbox (and, through the parent-death
//! signal, its VMM) serves `ctl.sock` (0600, in the 0700 state dir). `cloister
//! exec`, `kill` and `rm` are its clients, so every request still goes
//! through the owner's one [`AgentClient`] connection and the container API
//! of [`crate::container`].
//!
//! Wire format: one JSON [`Request`] per line, one JSON [`Reply`] per line.
//! An `exec` request carries the caller's stdin, stdout and stderr as
//! `SCM_RIGHTS` on its first byte, so the owner pumps the process's stdio
//! straight into the caller's terminal or pipes; while it runs, the caller
//! may send `signal` lines on the same connection.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::agent::{self, AgentClient};
use crate::container::{Container, Pumps, KILL_GRACE};

/// The control socket's name in the state dir.
pub const CONTROL_SOCK: &str = "ctl.sock";

/// A request to the owner of a detached sandbox.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Run `args` in the container; stdio arrives as SCM_RIGHTS.
    Exec {
        /// The command.
        args: Vec<String>,
    },
    /// Forward a signal to the process of this exec connection.
    Signal {
        /// The signal number.
        signal: i32,
    },
    /// Signal a process of the container (`exec_id` empty: its init).
    Kill {
        /// The exec id.
        exec_id: String,
        /// The signal number.
        signal: i32,
    },
    /// Remove the container and stop the sandbox.
    Remove,
}

/// The owner's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "reply", rename_all = "lowercase")]
pub enum Reply {
    /// Done.
    Ok,
    /// An exec'd process exited with this code (shell convention).
    Exit {
        /// The code.
        code: i32,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// Why a control request failed on the client side.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The owner could not be reached.
    #[error("cannot reach sandbox {id}: {source} (is it running? `cloister ps` lists sandboxes)")]
    Connect {
        /// The sandbox id.
        id: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The conversation broke.
    #[error("talking to sandbox {id}")]
    Io {
        /// The sandbox id.
        id: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The owner answered something unreadable.
    #[error("sandbox {id} answered {line:?}: expected a JSON reply")]
    BadReply {
        /// The sandbox id.
        id: String,
        /// What it said.
        line: String,
    },
    /// The owner refused.
    #[error("sandbox {id}: {message}")]
    Refused {
        /// The sandbox id.
        id: String,
        /// Its message.
        message: String,
    },
}

fn encode(v: &impl serde::Serialize) -> Vec<u8> {
    let mut line = serde_json::to_vec(v).unwrap_or_default();
    line.push(b'\n');
    line
}

/// A client of one sandbox's control socket.
#[derive(Debug)]
pub struct ControlClient {
    id: String,
    stream: BufReader<UnixStream>,
}

impl ControlClient {
    /// Connects to sandbox `id` under `runtime_dir`.
    pub async fn connect(runtime_dir: &Path, id: &str) -> Result<ControlClient, ControlError> {
        let path = runtime_dir.join(id).join(CONTROL_SOCK);
        let stream = UnixStream::connect(&path)
            .await
            .map_err(|source| ControlError::Connect {
                id: id.to_owned(),
                source,
            })?;
        Ok(ControlClient {
            id: id.to_owned(),
            stream: BufReader::new(stream),
        })
    }

    fn io(&self, source: std::io::Error) -> ControlError {
        ControlError::Io {
            id: self.id.clone(),
            source,
        }
    }

    async fn send(&mut self, req: &Request) -> Result<(), ControlError> {
        let line = encode(req);
        let r = self.stream.get_mut().write_all(&line).await;
        r.map_err(|e| self.io(e))
    }

    async fn reply(&mut self) -> Result<Reply, ControlError> {
        let mut line = String::new();
        let n = self
            .stream
            .read_line(&mut line)
            .await
            .map_err(|e| self.io(e))?;
        if n == 0 {
            return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        match serde_json::from_str(&line) {
            Ok(Reply::Error { message }) => Err(ControlError::Refused {
                id: self.id.clone(),
                message,
            }),
            Ok(r) => Ok(r),
            Err(_) => Err(ControlError::BadReply {
                id: self.id.clone(),
                line: line.trim_end().to_owned(),
            }),
        }
    }

    /// Signals a process of the container.
    pub async fn kill(&mut self, exec_id: &str, signal: i32) -> Result<(), ControlError> {
        self.send(&Request::Kill {
            exec_id: exec_id.to_owned(),
            signal,
        })
        .await?;
        self.reply().await.map(|_| ())
    }

    /// Removes the container and stops the sandbox.
    pub async fn remove(&mut self) -> Result<(), ControlError> {
        self.send(&Request::Remove).await?;
        self.reply().await.map(|_| ())
    }

    /// Runs `args` in the container with `stdio` (stdin, stdout, stderr) as
    /// its stdio; forwards the signals arriving on `signals`; returns the
    /// exit code.
    pub async fn exec(
        mut self,
        args: &[String],
        stdio: [RawFd; 3],
        signals: &mut mpsc::Receiver<i32>,
    ) -> Result<i32, ControlError> {
        let line = encode(&Request::Exec {
            args: args.to_vec(),
        });
        let fd = self.stream.get_ref().as_raw_fd();
        // The request and the fds go in one message (fds ride on its first byte).
        loop {
            self.stream
                .get_ref()
                .writable()
                .await
                .map_err(|e| self.io(e))?;
            let sent = self
                .stream
                .get_ref()
                .try_io(tokio::io::Interest::WRITABLE, || {
                    sendmsg::<()>(
                        fd,
                        &[IoSlice::new(&line)],
                        &[ControlMessage::ScmRights(&stdio)],
                        MsgFlags::empty(),
                        None,
                    )
                    .map_err(std::io::Error::from)
                });
            match sent {
                Ok(n) if n == line.len() => break,
                Ok(n) => {
                    let rest = line[n..].to_vec();
                    let r = self.stream.get_mut().write_all(&rest).await;
                    r.map_err(|e| self.io(e))?;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(self.io(e)),
            }
        }
        loop {
            tokio::select! {
                r = self.reply() => return match r? {
                    Reply::Exit { code } => Ok(code),
                    other => Err(ControlError::BadReply { id: self.id.clone(), line: format!("{other:?}") }),
                },
                Some(signal) = signals.recv() => {
                    let line = encode(&Request::Signal { signal });
                    let r = self.stream.get_mut().write_all(&line).await;
                    r.map_err(|e| self.io(e))?;
                }
            }
        }
    }
}

/// Reads the first request line of a connection and the fds that came with
/// it.
async fn first_request(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let fd = stream.as_raw_fd();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    let mut fds = Vec::new();
    loop {
        stream.readable().await?;
        let r = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut cmsg = nix::cmsg_space!([RawFd; 3]);
            let mut iov = [IoSliceMut::new(&mut buf[got..])];
            let msg = recvmsg::<()>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_CMSG_CLOEXEC)
                .map_err(std::io::Error::from)?;
            let mut new = Vec::new();
            for c in msg.cmsgs().map_err(std::io::Error::from)? {
                if let ControlMessageOwned::ScmRights(rs) = c {
                    new.extend(rs);
                }
            }
            Ok((msg.bytes, new))
        });
        match r {
            Ok((0, _)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok((n, new)) => {
                fds.extend(new.into_iter().map(crate::sys::own_fd));
                got += n;
                if buf[..got].contains(&b'\n') {
                    buf.truncate(got);
                    return Ok((buf, fds));
                }
                if got == buf.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "request line longer than 64 KiB",
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What the owner's control loop tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// A client asked for removal: shut the sandbox down.
    Remove,
}

/// The bound control socket of a detached sandbox. Bind it before telling
/// anyone the sandbox is up, so that a `cloister exec` issued right after
/// `run --detach` returns finds the socket.
#[derive(Debug)]
pub struct ControlSocket {
    path: std::path::PathBuf,
    listener: UnixListener,
}

impl ControlSocket {
    /// Creates the socket at `path`, 0600 (a stale one is replaced).
    pub fn bind(path: &Path) -> std::io::Result<ControlSocket> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        crate::state::restrict(path, 0o600)?;
        Ok(ControlSocket {
            path: path.to_path_buf(),
            listener,
        })
    }

    /// Serves requests for `container` until a client asks for removal.
    /// Exec'd processes get ids `exec-N`.
    pub async fn serve(
        self,
        client: &AgentClient,
        container: &Container,
    ) -> std::io::Result<Served> {
        let (done_tx, mut done_rx) = mpsc::channel::<Served>(1);
        let mut next = 0u64;
        loop {
            let (stream, _) = tokio::select! {
                a = self.listener.accept() => a?,
                Some(s) = done_rx.recv() => {
                    let _ = std::fs::remove_file(&self.path);
                    return Ok(s);
                }
            };
            next += 1;
            let exec_id = format!("exec-{next}");
            let (client, container, done) = (client.clone(), container.clone(), done_tx.clone());
            tokio::spawn(async move {
                let _ = handle(stream, &client, &container, &exec_id, &done).await;
            });
        }
    }
}

async fn handle(
    stream: UnixStream,
    _client: &AgentClient,
    container: &Container,
    exec_id: &str,
    done: &mpsc::Sender<Served>,
) -> std::io::Result<()> {
    let (line, mut fds) = first_request(&stream).await?;
    let mut reader = BufReader::new(stream);
    let nl = line.iter().position(|b| *b == b'\n').unwrap_or(line.len());
    let req: Result<Request, _> = serde_json::from_slice(&line[..nl]);
    let reply = match req {
        Ok(Request::Exec { args }) if fds.len() == 3 => {
            let stderr = tokio::fs::File::from_std(std::fs::File::from(fds.remove(2)));
            let stdout = tokio::fs::File::from_std(std::fs::File::from(fds.remove(1)));
            let stdin = tokio::fs::File::from_std(std::fs::File::from(fds.remove(0)));
            match container.exec(exec_id, agent::process_json(&args)).await {
                Ok(p) => {
                    let pumps = Pumps::start(&p, stdout, stderr, Some(stdin), None);
                    let (sig_tx, mut sig_rx) = mpsc::channel(4);
                    let waiting = p.wait_forwarding(&mut sig_rx, KILL_GRACE);
                    tokio::pin!(waiting);
                    let mut line = String::new();
                    let status = loop {
                        tokio::select! {
                            st = &mut waiting => break st,
                            n = reader.read_line(&mut line) => {
                                match n {
                                    Ok(0) | Err(_) => {
                                        // The caller went away: kill the process.
                                        let _ = p.signal(crate::container::SIGKILL).await;
                                    }
                                    Ok(_) => {
                                        if let Ok(Request::Signal { signal }) = serde_json::from_str(&line) {
                                            let _ = sig_tx.send(signal).await;
                                        }
                                    }
                                }
                                line.clear();
                            }
                        }
                    };
                    pumps.drain(Duration::from_secs(5)).await;
                    match status {
                        Ok(st) => Reply::Exit { code: st.code },
                        Err(e) => Reply::Error {
                            message: e.to_string(),
                        },
                    }
                }
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            }
        }
        Ok(Request::Exec { .. }) => Reply::Error {
            message: format!(
                "exec needs stdin, stdout and stderr as SCM_RIGHTS, got {} fds",
                fds.len()
            ),
        },
        Ok(Request::Kill { exec_id, signal }) => {
            let p = if exec_id.is_empty() {
                container.init()
            } else {
                container.process(&exec_id)
            };
            match p.signal(signal).await {
                Ok(()) => Reply::Ok,
                Err(e) => Reply::Error {
                    message: e.to_string(),
                },
            }
        }
        Ok(Request::Remove) => {
            let _ = container.remove(Duration::from_secs(2)).await;
            let r = encode(&Reply::Ok);
            reader.get_mut().write_all(&r).await?;
            let _ = done.send(Served::Remove).await;
            return Ok(());
        }
        Ok(Request::Signal { .. }) => Reply::Error {
            message: "signal is only valid during an exec".into(),
        },
        Err(e) => Reply::Error {
            message: format!("bad request: {e}"),
        },
    };
    reader.get_mut().write_all(&encode(&reply)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_have_a_stable_wire_form() {
        let r = Request::Kill {
            exec_id: String::new(),
            signal: 15,
        };
        let line = String::from_utf8(encode(&r)).unwrap();
        assert_eq!(line, "{\"op\":\"kill\",\"exec_id\":\"\",\"signal\":15}\n");
        assert_eq!(serde_json::from_str::<Request>(line.trim()).unwrap(), r);
        let e: Reply = serde_json::from_str("{\"reply\":\"exit\",\"code\":3}").unwrap();
        assert_eq!(e, Reply::Exit { code: 3 });
        assert!(serde_json::from_str::<Request>("{\"op\":\"format-disk\"}").is_err());
    }
}
