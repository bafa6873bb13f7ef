//! virtio-vsock without `/dev/vhost-vsock`: a vhost-user backend process
//! (rust-vmm's `vhost-device-vsock`) serves the guest's vsock device through
//! shared guest memory, and the host reaches a guest port through the
//! backend's unix socket with a `CONNECT <port>` handshake (the Firecracker
//! hybrid-vsock convention).
//!
//! The guest side is the very same virtio-vsock driver and agent listener as
//! with vhost-vsock; only the host plumbing differs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Environment variable naming the `vhost-device-vsock` binary.
pub const BINARY_ENV: &str = "CLOISTER_VHOST_USER_VSOCK";
/// The binary looked up in `$PATH` when [`BINARY_ENV`] is unset.
pub const BINARY_NAME: &str = "vhost-device-vsock";
/// How to install the backend.
pub const INSTALL_HINT: &str = "install it with `cargo install --locked vhost-device-vsock --version 0.3.0` \
     (scripts/test.sh does this into $CLOISTER_CACHE_DIR/tools) and put it on PATH or name it in $CLOISTER_VHOST_USER_VSOCK";

/// Why the vhost-user vsock backend could not be used.
#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    /// No backend binary.
    #[error("{BINARY_NAME} not found ({why}): {INSTALL_HINT}")]
    NotFound {
        /// What was looked at.
        why: String,
    },
    /// Spawning it failed.
    #[error("cannot start {}", path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It exited or never created its socket.
    #[error("{} did not come up ({why}); its log: {}", path.display(), log.display())]
    NotReady {
        /// The binary.
        path: PathBuf,
        /// What happened.
        why: String,
        /// Its stderr log.
        log: PathBuf,
    },
}

/// Finds the backend binary: `$CLOISTER_VHOST_USER_VSOCK`, else `$PATH`.
pub fn locate() -> Result<PathBuf, VhostUserError> {
    if let Some(p) = std::env::var_os(BINARY_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(VhostUserError::NotFound {
                why: format!("${BINARY_ENV} is {}, which is not a file", p.display()),
            })
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(BINARY_NAME))
        .find(|p| p.is_file())
        .ok_or_else(|| VhostUserError::NotFound {
            why: format!("${BINARY_ENV} is unset or empty and it is not on PATH"),
        })
}

/// A running backend. Dropping it kills the process.
#[derive(Debug)]
pub struct VsockBackend {
    child: Child,
}

impl VsockBackend {
    /// Starts the backend for guest `cid`: it listens for the VMM on
    /// `vmm_socket` and for host connections on `uds`. Returns once
    /// `vmm_socket` exists, or fails within `timeout`. The process gets
    /// SIGKILL if the calling thread dies, as the VMM does.
    pub fn spawn(
        binary: &Path,
        cid: u32,
        vmm_socket: &Path,
        uds: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<VsockBackend, VhostUserError> {
        let log_file = std::fs::File::create(log).map_err(|source| VhostUserError::Spawn {
            path: log.to_path_buf(),
            source,
        })?;
        let mut cmd = Command::new(binary);
        cmd.arg("--guest-cid")
            .arg(cid.to_string())
            .arg("--socket")
            .arg(vmm_socket)
            .arg("--uds-path")
            .arg(uds)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        if std::env::var_os("RUST_LOG").is_none() {
            // Its warnings go to the log a timeout shows; it logs nothing
            // without this.
            cmd.env("RUST_LOG", "warn");
        }
        crate::sys::kill_child_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| VhostUserError::Spawn {
            path: binary.to_path_buf(),
            source,
        })?;
        let mut backend = VsockBackend { child };
        let not_ready = |why: String| VhostUserError::NotReady {
            path: binary.to_path_buf(),
            why,
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if vmm_socket.exists() {
                return Ok(backend);
            }
            match backend.child.try_wait() {
                Ok(Some(status)) => return Err(not_ready(format!("it exited: {status}"))),
                Ok(None) => {}
                Err(e) => return Err(not_ready(format!("waiting for it: {e}"))),
            }
            if Instant::now() >= deadline {
                return Err(not_ready(format!(
                    "no socket at {} after {}s",
                    vmm_socket.display(),
                    timeout.as_secs_f32()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The backend's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for VsockBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The longest handshake answer we accept (`OK <u32>\n` is at most 14 bytes).
const MAX_ANSWER: usize = 32;

/// Connects to guest `port` through the backend's host socket `uds`:
/// sends `CONNECT <port>\n` and expects `OK <host port>\n`. The returned
/// stream then carries the guest connection's bytes.
pub async fn connect(uds: &Path, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds).await?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    // Read byte by byte so that nothing after the answer line is consumed.
    let mut answer = Vec::with_capacity(16);
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            break;
        }
        answer.push(b);
        if answer.len() > MAX_ANSWER {
            return Err(bad_answer(&answer));
        }
    }
    if answer.starts_with(b"OK ") {
        Ok(s)
    } else {
        Err(bad_answer(&answer))
    }
}

fn bad_answer(answer: &[u8]) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!(
            "vhost-user vsock handshake: expected `OK <port>`, got {:?}",
            String::from_utf8_lossy(answer)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;

    /// A fake backend host socket that answers the handshake with `answer`
    /// and then echoes one line.
    async fn fake_backend(path: &Path, answer: &'static str) -> tokio::task::JoinHandle<String> {
        let listener = tokio::net::UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let mut r = tokio::io::BufReader::new(s);
            let mut first = String::new();
            r.read_line(&mut first).await.unwrap();
            r.get_mut().write_all(answer.as_bytes()).await.unwrap();
            let mut rest = String::new();
            r.read_line(&mut rest).await.unwrap();
            r.get_mut().write_all(rest.as_bytes()).await.unwrap();
            first
        })
    }

    #[tokio::test]
    async fn handshake_then_bytes_flow() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.sock");
        let server = fake_backend(&p, "OK 1073741824\nhello\n").await;
        let mut s = connect(&p, 1024).await.unwrap();
        // The byte right after the answer line belongs to the stream.
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello\n");
        s.write_all(b"ping\n").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping\n");
        assert_eq!(server.await.unwrap(), "CONNECT 1024\n");
    }

    #[tokio::test]
    async fn refused_handshake_is_an_error_naming_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.sock");
        let _server = fake_backend(&p, "NO such port\n").await;
        let e = connect(&p, 1024).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("NO such port"), "{e}");
    }

    #[test]
    fn missing_binary_names_the_fix() {
        let e = VsockBackend::spawn(
            Path::new("/nonexistent/vhost-device-vsock"),
            3,
            Path::new("/nonexistent/a"),
            Path::new("/nonexistent/b"),
            Path::new("/nonexistent/log"),
            Duration::from_millis(10),
        )
        .unwrap_err();
        assert!(matches!(e, VhostUserError::Spawn { .. }), "{e}");
    }

    #[test]
    fn backend_that_exits_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let e = VsockBackend::spawn(
            Path::new("/bin/false"),
            3,
            &dir.path().join("vmm.sock"),
            &dir.path().join("host.sock"),
            &dir.path().join("log"),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.to_string().contains("it exited"), "{e}");
    }
}
