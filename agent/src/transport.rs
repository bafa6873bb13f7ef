//! The two transports of the agent API: AF_VSOCK (a listening socket, native
//! to ttrpc) and the virtio-serial port named `cloister.agent` (one byte
//! stream that is already open: no accept). For the port, a [`Listener`]
//! yields one connection per host session: it waits until the host end is
//! connected (poll reports no POLLHUP), hands the port to ttrpc, and when
//! ttrpc drops the connection (EOF when the host disconnects) it waits for
//! the next session.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use cloister_protocol::channel::SERIAL_PORT_NAME;
use cloister_protocol::ttrpc::asynchronous::transport::Listener;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::task::ready;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};

/// Why the serial port could not be found.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("reading {dir}: {source}")]
    Sysfs { dir: PathBuf, source: io::Error },
    #[error(
        "no virtio-serial port named {SERIAL_PORT_NAME} under {dir}: the host must add \
         `-device virtserialport,name={SERIAL_PORT_NAME}` (and virtio_console must be loaded)"
    )]
    NotFound { dir: PathBuf },
    #[error("port {name} is {sysfs} in sysfs but {node} does not exist (is devtmpfs mounted?)")]
    NoNode {
        name: String,
        sysfs: String,
        node: PathBuf,
    },
}

/// Finds the device node of the port named `wanted`: the `vportNpM` entry of
/// `class_dir` (`/sys/class/virtio-ports`) whose `name` file matches, as
/// `dev_dir/vportNpM`.
pub fn find_port(class_dir: &Path, dev_dir: &Path, wanted: &str) -> Result<PathBuf, PortError> {
    let sysfs_err = |source| PortError::Sysfs {
        dir: class_dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<_> = std::fs::read_dir(class_dir)
        .map_err(sysfs_err)?
        .collect::<Result<_, _>>()
        .map_err(sysfs_err)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim_end_matches('\n') == wanted {
            let node = dev_dir.join(entry.file_name());
            if node.exists() {
                return Ok(node);
            }
            return Err(PortError::NoNode {
                name: wanted.to_string(),
                sysfs: entry.file_name().to_string_lossy().into_owned(),
                node,
            });
        }
    }
    Err(PortError::NotFound {
        dir: class_dir.to_path_buf(),
    })
}

/// Waits for the port in `/sys/class/virtio-ports` (the driver may still be
/// probing right after module load), up to `timeout`.
pub fn wait_for_port(timeout: Duration) -> Result<PathBuf, PortError> {
    let start = std::time::Instant::now();
    loop {
        match find_port(
            Path::new("/sys/class/virtio-ports"),
            Path::new("/dev"),
            SERIAL_PORT_NAME,
        ) {
            Ok(p) => return Ok(p),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Opens the port read-write, non-blocking.
pub fn open_port(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    Ok(f.into())
}

/// Whether the far end is connected: poll reports no POLLHUP. (A
/// virtio-serial port reports POLLHUP while the host chardev has no client;
/// a socket reports it once the peer has closed.)
fn peer_connected(fd: &OwnedFd) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).map_err(io::Error::from)?;
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    Ok(!revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

/// One host session on the port: reads and writes go to the port; dropping
/// it tells the listener the session ended.
///
/// The port is driven through [`AsyncFd`] and readiness is cleared only when
/// a read or write returns `EAGAIN`. tokio's pipe and socket types instead
/// treat a short read (or write) as proof that the descriptor is drained and
/// clear readiness; with edge-triggered epoll that is wrong for a
/// virtio-serial port, whose `read` returns at most what is left of ONE
/// queued virtio buffer (one page) even when more buffers are queued, and
/// whose `write` takes at most 32 KiB. A request frame spanning several
/// buffers that had all arrived before the agent read the first one then
/// waited for an edge that never came: the session stalled, the host's calls
/// timed out or its connection was torn down.
#[derive(Debug)]
pub struct PortSession {
    port: AsyncFd<std::fs::File>,
    ended: Option<oneshot::Sender<()>>,
}

impl PortSession {
    /// A session on `fd` (non-blocking). Must be called inside a tokio
    /// runtime.
    fn new(fd: OwnedFd, ended: oneshot::Sender<()>) -> io::Result<Self> {
        Ok(PortSession {
            port: crate::sys::async_file(std::fs::File::from(fd))?,
            ended: Some(ended),
        })
    }
}

impl Drop for PortSession {
    fn drop(&mut self) {
        if let Some(tx) = self.ended.take() {
            let _ = tx.send(());
        }
    }
}

impl AsyncRead for PortSession {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use std::io::Read;
        loop {
            let mut guard = ready!(self.port.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // try_io clears readiness only on WouldBlock.
            match guard.try_io(|f| f.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PortSession {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        use std::io::Write;
        loop {
            let mut guard = ready!(self.port.poll_write_ready(cx))?;
            match guard.try_io(|f| f.get_ref().write(buf)) {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the device.
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The port stays open for the next session: shutting down means
        // nothing here.
        Poll::Ready(Ok(()))
    }
}

/// A ttrpc listener over an already-open byte stream `port` (a
/// virtio-serial port, or in tests one end of a socket pair). Must be called
/// inside a tokio runtime.
pub fn port_listener(port: OwnedFd) -> io::Result<Listener> {
    // AsyncFd needs a non-blocking descriptor (the dups share it).
    let flags = fcntl(port.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(port.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    let (conn_tx, conn_rx) = mpsc::channel::<io::Result<PortSession>>(1);
    tokio::spawn(async move {
        loop {
            // Wait for the host end.
            loop {
                match peer_connected(&port) {
                    Ok(true) => break,
                    Ok(false) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => {
                        let _ = conn_tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            let session = (|| -> io::Result<(PortSession, oneshot::Receiver<()>)> {
                let (ended_tx, ended_rx) = oneshot::channel();
                Ok((PortSession::new(port.try_clone()?, ended_tx)?, ended_rx))
            })();
            match session {
                Ok((s, ended)) => {
                    if conn_tx.send(Ok(s)).await.is_err() {
                        return; // the server is gone
                    }
                    let _ = ended.await;
                    crate::log!("host session on the agent port ended; waiting for the next");
                }
                Err(e) => {
                    let _ = conn_tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Ok(Listener::new(tokio_stream(conn_rx)))
}

fn tokio_stream<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A ttrpc listener on AF_VSOCK `port`, any CID.
pub fn vsock_listener(port: u32) -> io::Result<Listener> {
    Listener::bind(format!("vsock://-1:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_port(root: &Path, vport: &str, name: &str, node: bool) {
        let d = root.join("sys").join(vport);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("name"), format!("{name}\n")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        if node {
            std::fs::write(root.join("dev").join(vport), b"").unwrap();
        }
    }

    #[test]
    fn finds_the_named_port_among_others() {
        let t = tempfile::tempdir().unwrap();
        fake_port(t.path(), "vport0p0", "org.qemu.guest_agent.0", true);
        fake_port(t.path(), "vport1p1", "cloister.sim", true);
        fake_port(t.path(), "vport1p2", SERIAL_PORT_NAME, true);
        let p = find_port(
            &t.path().join("sys"),
            &t.path().join("dev"),
            SERIAL_PORT_NAME,
        )
        .unwrap();
        assert_eq!(p, t.path().join("dev/vport1p2"));
    }

    #[test]
    fn missing_port_and_missing_node_say_what_to_fix() {
        let t = tempfile::tempdir().unwrap();
        fake_port(t.path(), "vport0p1", "other", true);
        let err = find_port(
            &t.path().join("sys"),
            &t.path().join("dev"),
            SERIAL_PORT_NAME,
        )
        .unwrap_err();
        assert!(matches!(err, PortError::NotFound { .. }));
        assert!(
            err.to_string()
                .contains("virtserialport,name=cloister.agent"),
            "{err}"
        );

        fake_port(t.path(), "vport0p2", SERIAL_PORT_NAME, false);
        let err = find_port(
            &t.path().join("sys"),
            &t.path().join("dev"),
            SERIAL_PORT_NAME,
        )
        .unwrap_err();
        assert!(matches!(err, PortError::NoNode { .. }), "{err}");

        let err = find_port(
            &t.path().join("nope"),
            &t.path().join("dev"),
            SERIAL_PORT_NAME,
        )
        .unwrap_err();
        assert!(matches!(err, PortError::Sysfs { .. }), "{err}");
    }

    /// A SOCK_SEQPACKET pair behaves like a virtio-serial port: one read
    /// returns at most one queued packet (buffer), however large the read
    /// buffer. Several packets queued before the first read must all be
    /// read without a further wakeup (tokio's pipe types stalled here).
    #[tokio::test(flavor = "current_thread")]
    async fn queued_buffers_are_read_without_a_new_wakeup() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (guest, host) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let host = std::fs::File::from(host);
        let mut sent = Vec::new();
        for i in 0..5u8 {
            let packet = vec![i; 4096];
            std::io::Write::write_all(&mut &host, &packet).unwrap();
            sent.extend(packet);
        }
        let (ended, _ended_rx) = oneshot::channel();
        let mut session = PortSession::new(guest, ended).unwrap();
        let mut got = vec![0u8; sent.len()];
        tokio::time::timeout(Duration::from_secs(5), session.read_exact(&mut got))
            .await
            .expect("the session stalled with buffers queued")
            .unwrap();
        assert_eq!(got, sent);
        // And the way back.
        session.write_all(b"reply").await.unwrap();
        let mut back = [0u8; 16];
        let n = std::io::Read::read(&mut &host, &mut back).unwrap();
        assert_eq!(&back[..n], b"reply");
    }

    #[test]
    fn a_prefix_of_the_name_is_not_a_match() {
        let t = tempfile::tempdir().unwrap();
        fake_port(t.path(), "vport0p1", "cloister.agent2", true);
        assert!(find_port(
            &t.path().join("sys"),
            &t.path().join("dev"),
            SERIAL_PORT_NAME
        )
        .is_err());
    }
}
