//! Sim evidence: the guest asks the host's software RMM over the
//! virtio-serial port named `cloister.sim` (wire format in
//! [`crate::simproto`]).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{AttestError, Attester};
use crate::simproto::{self, SimRequest, SIM_PORT_NAME};
use crate::TeeKind;

/// Finds the device node of the sim port: `/dev/virtio-ports/cloister.sim`
/// if udev made it, else the `vportNpM` whose sysfs `name` matches.
pub(crate) fn find_port(virtio_ports: &Path, dev: &Path) -> io::Result<PathBuf> {
    let by_name = dev.join("virtio-ports").join(SIM_PORT_NAME);
    if by_name.exists() {
        return Ok(by_name);
    }
    for entry in std::fs::read_dir(virtio_ports)? {
        let entry = entry?;
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == SIM_PORT_NAME {
            let node = dev.join(entry.file_name());
            if node.exists() {
                return Ok(node);
            }
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("port found in sysfs but {} is missing", node.display()),
            ));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        "no such virtio-serial port",
    ))
}

/// A byte stream to the host's sim RMM.
pub trait SimChannel: Read + Write + Send + std::fmt::Debug {}
impl<T: Read + Write + Send + std::fmt::Debug> SimChannel for T {}

enum Conn {
    /// Opened on first use.
    Port(PathBuf),
    /// An open stream.
    Open(Box<dyn SimChannel>),
}

/// The sim attester.
pub struct SimAttester {
    conn: Mutex<Conn>,
}

impl std::fmt::Debug for SimAttester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimAttester")
    }
}

impl SimAttester {
    /// Uses the port device at `port`, opened on first use.
    pub fn open(port: PathBuf) -> Self {
        Self {
            conn: Mutex::new(Conn::Port(port)),
        }
    }

    /// Uses an already connected stream (tests, or a host-side client).
    pub fn with_channel(stream: Box<dyn SimChannel>) -> Self {
        Self {
            conn: Mutex::new(Conn::Open(stream)),
        }
    }

    fn call(&self, req: &SimRequest) -> Result<Vec<u8>, AttestError> {
        let mut guard = self.conn.lock().map_err(|_| AttestError::Unsupported {
            tee: TeeKind::Sim,
            what: "use the sim channel after a panic while it was held",
        })?;
        if let Conn::Port(path) = &*guard {
            let f = File::options()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|source| AttestError::Io {
                    what: format!("opening sim port {}", path.display()),
                    source,
                })?;
            *guard = Conn::Open(Box::new(f));
        }
        match &mut *guard {
            Conn::Open(stream) => Ok(simproto::call(stream, req)?),
            Conn::Port(_) => Err(AttestError::Unsupported {
                tee: TeeKind::Sim,
                what: "open the sim port",
            }),
        }
    }
}

impl Attester for SimAttester {
    fn tee(&self) -> TeeKind {
        TeeKind::Sim
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError> {
        self.call(&SimRequest::Token {
            challenge: *report_data,
        })
    }

    fn extend(&self, index: u32, data: &[u8]) -> Result<(), AttestError> {
        let index = u8::try_from(index).map_err(|_| AttestError::Unsupported {
            tee: TeeKind::Sim,
            what: "extend a REM index above 3",
        })?;
        self.call(&SimRequest::Extend {
            index,
            data: data.to_vec(),
        })
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn talks_to_a_host_over_a_stream() {
        let (guest, mut host) = UnixStream::pair().unwrap();
        let server = std::thread::spawn(move || {
            let req = SimRequest::decode(&simproto::read_frame(&mut host).unwrap()).unwrap();
            let SimRequest::Token { challenge } = req else {
                panic!("{req:?}")
            };
            simproto::write_frame(&mut host, &simproto::encode_response(Ok(&challenge[..4])))
                .unwrap();
            let req = SimRequest::decode(&simproto::read_frame(&mut host).unwrap()).unwrap();
            assert_eq!(
                req,
                SimRequest::Extend {
                    index: 9,
                    data: b"x".to_vec()
                }
            );
            simproto::write_frame(
                &mut host,
                &simproto::encode_response(Err("REM index 9 out of range")),
            )
            .unwrap();
        });
        let a = SimAttester::with_channel(Box::new(guest));
        assert_eq!(a.evidence(&[3; 64]).unwrap(), vec![3; 4]);
        let err = a.extend(9, b"x").unwrap_err();
        assert!(format!("{:?}", err).contains("out of range"), "{err:?}");
        server.join().unwrap();
    }
}
