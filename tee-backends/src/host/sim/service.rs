//! The host end of the sim channel: a unix socket in the sandbox's state
//! directory that QEMU connects to (the guest's `cloister.sim` port), served
//! on one thread until the guard is dropped.

use std::io::{self, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::rmm::SimRmm;
use crate::simproto::{self, SimRequest, MAX_FRAME};

const POLL: Duration = Duration::from_millis(50);

/// Keeps the sim RMM service running; dropping it stops the thread and
/// removes the socket.
#[derive(Debug)]
pub struct SimService {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    socket: PathBuf,
    rmm: Arc<Mutex<SimRmm>>,
}

impl SimService {
    /// Binds `socket` and serves `rmm` on it.
    pub fn start(socket: &Path, rmm: SimRmm) -> io::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let rmm = Arc::new(Mutex::new(rmm));
        let thread = {
            let stop = stop.clone();
            let rmm = rmm.clone();
            std::thread::Builder::new()
                .name("cloister-sim-rmm".into())
                .spawn(move || serve(&listener, &stop, &rmm))?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            socket: socket.to_path_buf(),
            rmm,
        })
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The realm's RMM (e.g. to read REMs in tests).
    pub fn rmm(&self) -> Arc<Mutex<SimRmm>> {
        self.rmm.clone()
    }
}

impl Drop for SimService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn serve(listener: &UnixListener, stop: &AtomicBool, rmm: &Mutex<SimRmm>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                // Errors end this connection only; QEMU may reconnect.
                let _ = handle(stream, stop, rmm);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

/// Reads exactly `buf.len()` bytes, polling `stop` between timeouts.
/// `Ok(false)` means the peer closed cleanly before the first byte.
fn read_full(s: &mut UnixStream, buf: &mut [u8], stop: &AtomicBool) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "service stopping",
            ));
        }
        match s.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn handle(mut s: UnixStream, stop: &AtomicBool, rmm: &Mutex<SimRmm>) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(POLL * 4))?;
    loop {
        let mut len = [0u8; 4];
        if !read_full(&mut s, &mut len, stop)? {
            return Ok(());
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            let msg = format!("frame of {len} bytes exceeds {MAX_FRAME}");
            simproto::write_frame(&mut s, &simproto::encode_response(Err(&msg))).map_err(to_io)?;
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        let mut body = vec![0u8; len];
        if !read_full(&mut s, &mut body, stop)? && len > 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let reply = answer(&body, rmm);
        let resp = match &reply {
            Ok(payload) => simproto::encode_response(Ok(payload)),
            Err(msg) => simproto::encode_response(Err(msg)),
        };
        simproto::write_frame(&mut s, &resp).map_err(to_io)?;
        s.flush()?;
    }
}

fn to_io(e: simproto::ProtoError) -> io::Error {
    match e {
        simproto::ProtoError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

fn answer(body: &[u8], rmm: &Mutex<SimRmm>) -> Result<Vec<u8>, String> {
    let req = SimRequest::decode(body).map_err(|e| e.to_string())?;
    let mut rmm = rmm
        .lock()
        .map_err(|_| "sim RMM state poisoned".to_string())?;
    match req {
        SimRequest::Token { challenge } => rmm.token(challenge).map_err(|e| e.to_string()),
        SimRequest::Extend { index, data } => rmm
            .extend(index, &data)
            .map(|()| Vec::new())
            .map_err(|e| e.to_string()),
    }
}
