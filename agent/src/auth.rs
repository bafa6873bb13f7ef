//! Only the runtime that launched this guest may drive the agent: with
//! `cloister.auth=fw_cfg` on the kernel command line, every host connection
//! must start with the preamble of `cloister_protocol::auth`, carrying the
//! per-sandbox secret the host handed over as a fw_cfg file. A connection
//! without it is dropped before ttrpc reads a byte, and logged.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cloister_protocol::auth::{Secret, CMDLINE_FLAG, PREAMBLE_LEN};
use cloister_protocol::channel::AGENT_SECRET_FW_CFG;
use cloister_protocol::ttrpc::asynchronous::transport::Listener;
use futures::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Where the kernel's fw_cfg sysfs driver (`qemu_fw_cfg`) lists files.
pub const FW_CFG_BY_NAME: &str = "/sys/firmware/qemu_fw_cfg/by_name";
/// The kernel module that provides it.
pub const FW_CFG_MODULE: &str = "qemu_fw_cfg";
/// How long a host has to send the preamble after connecting.
pub const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the secret could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// Asked for, but not there.
    #[error("{CMDLINE_FLAG} is set but {} cannot be read (is the {FW_CFG_MODULE} module in the initramfs?)", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Malformed.
    #[error("the agent secret in {}: {source}", path.display())]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: cloister_protocol::auth::AuthError,
    },
}

/// Whether the command line asks for host authentication.
pub fn required(cmdline: &str) -> bool {
    cmdline.split_whitespace().any(|w| w == CMDLINE_FLAG)
}

/// Reads the secret from the fw_cfg tree under `by_name`.
pub fn load_secret(by_name: &Path) -> Result<Secret, AuthSetupError> {
    let path = by_name.join(AGENT_SECRET_FW_CFG).join("raw");
    let bytes = std::fs::read(&path).map_err(|source| AuthSetupError::Missing {
        path: path.clone(),
        source,
    })?;
    Secret::from_bytes(&bytes).map_err(|source| AuthSetupError::Bad { path, source })
}

/// A listener that yields only the connections of `inner` that start with
/// `secret`'s preamble (consumed). Must be called inside a tokio runtime.
pub fn guard(mut inner: Listener, secret: Secret) -> Listener {
    let (tx, mut rx) = mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(conn) = inner.next().await {
            match conn {
                Ok(mut sock) => {
                    let (tx, secret) = (tx.clone(), secret.clone());
                    tokio::spawn(async move {
                        let mut pre = [0u8; PREAMBLE_LEN];
                        let read =
                            tokio::time::timeout(PREAMBLE_TIMEOUT, sock.read_exact(&mut pre)).await;
                        let verdict = match read {
                            Ok(Ok(_)) => secret.check(&pre).map_err(|e| e.to_string()),
                            Ok(Err(e)) => Err(format!("reading the preamble: {e}")),
                            Err(_) => Err("no preamble within 10 s".to_owned()),
                        };
                        match verdict {
                            Ok(()) => {
                                let _ = tx.send(Ok(sock)).await;
                            }
                            Err(why) => crate::log!("refused a host connection: {why}"),
                        }
                    });
                }
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Listener::new(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloister_protocol::health_ttrpc::HealthClient;
    use cloister_protocol::ttrpc;
    use cloister_protocol::ttrpc::asynchronous::transport::Socket;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn the_flag_and_the_secret_file() {
        assert!(required("console=ttyS0 cloister.auth=fw_cfg quiet"));
        assert!(!required("console=ttyS0 cloister.auth=none"));
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_secret(t.path()),
            Err(AuthSetupError::Missing { .. })
        ));
        let d = t.path().join(AGENT_SECRET_FW_CFG);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("raw"), [3u8; 31]).unwrap();
        assert!(matches!(
            load_secret(t.path()),
            Err(AuthSetupError::Bad { .. })
        ));
        std::fs::write(d.join("raw"), [3u8; 32]).unwrap();
        assert_eq!(
            load_secret(t.path()).unwrap(),
            Secret::from_bytes(&[3; 32]).unwrap()
        );
    }

    /// A client with the secret is served; one without is dropped and
    /// gets no answer; the next good one is served again.
    #[tokio::test(flavor = "current_thread")]
    async fn only_connections_with_the_secret_reach_ttrpc() {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("unix://{}", dir.path().join("a.sock").display());
        let secret = Secret::from_bytes(&[9; 32]).unwrap();
        let (agent, _rx) = crate::tests::test_agent();
        let mut srv = crate::server(agent)
            .add_listener(guard(Listener::bind(&addr).unwrap(), secret.clone()));
        srv.start().await.unwrap();
        let ctx = || ttrpc::context::with_timeout(3_000_000_000);

        for (pre, served) in [
            (Some(secret.preamble()), true),
            (
                Some(Secret::from_bytes(&[1; 32]).unwrap().preamble()),
                false,
            ),
            (None, false),
            (Some(secret.preamble()), true),
        ] {
            let path = dir.path().join("a.sock");
            let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
            if let Some(p) = pre {
                s.write_all(&p).await.unwrap();
            }
            let health = HealthClient::new(ttrpc::asynchronous::Client::new(Socket::new(s)));
            let r = health.check(ctx(), &Default::default()).await;
            assert_eq!(r.is_ok(), served, "{pre:?}: {r:?}");
        }
    }
}
