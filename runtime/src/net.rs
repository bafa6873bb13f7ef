//! The sandbox's network, as a typed part of the VM spec.
//!
//! A confidential guest reaches exactly the endpoints its measured initdata
//! names (the KBS, registries, signature lookasides) and nothing else. The
//! backend here is QEMU user networking with `restrict=on` (no route out of
//! the guest) plus one `guestfwd` per endpoint, as
//! [`GuestConfig::forwards`] plans them: a guest connection to the
//! forward's address and port makes QEMU spawn `<relay> net-relay
//! HOST:PORT` with the connection on its stdin/stdout, and the relay
//! connects to that endpoint (one process per connection, so clients may
//! open many). Services on the host's `127.0.0.1` share one guest address,
//! and the agent relays guest `127.0.0.1:PORT` to it, so URLs stay as
//! written; every other host gets a guest address of its own, to which the
//! agent resolves its name, so TLS names stay as written too.
//!
//! Pod networking (the shim) can add another [`NetBackend`].

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;

use cloister_guest_config::{ConfigError, Forward, GuestConfig};

/// The relay subcommand of the relay program.
pub const RELAY_SUBCOMMAND: &str = "net-relay";
/// Overrides the relay program (default: the running executable).
pub const RELAY_ENV: &str = "CLOISTER_NET_RELAY";

/// A sandbox NIC and what is behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// The backend.
    pub backend: NetBackend,
}

/// How the NIC reaches the endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// QEMU user networking with `restrict=on`: the guest reaches only the
    /// endpoints listed, each through a relay process on the host.
    Forwards {
        /// The program QEMU runs per connection (`PROGRAM net-relay HOST:PORT`).
        relay: PathBuf,
        /// The endpoints, as the initdata settings plan them.
        forwards: Vec<Forward>,
    },
}

/// Why the network could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The initdata settings do not parse, or name endpoints that cannot be
    /// forwarded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The relay program is unknown.
    #[error(
        "cannot find the network relay program (set CLOISTER_NET_RELAY to the cloister binary)"
    )]
    Relay(#[source] std::io::Error),
}

impl NetSpec {
    /// The network for a sandbox launched with `initdata`: forwards to the
    /// endpoints it names, or `None` (no NIC at all) when it names none.
    pub fn for_initdata(initdata: Option<&[u8]>) -> Result<Option<NetSpec>, NetError> {
        let Some(doc) = initdata else { return Ok(None) };
        let config = GuestConfig::from_initdata(&String::from_utf8_lossy(doc))?;
        let forwards = config.forwards()?;
        if forwards.is_empty() {
            return Ok(None);
        }
        let relay = match std::env::var_os(RELAY_ENV) {
            Some(p) => PathBuf::from(p),
            None => std::env::current_exe().map_err(NetError::Relay)?,
        };
        Ok(Some(NetSpec {
            backend: NetBackend::Forwards { relay, forwards },
        }))
    }

    /// QEMU arguments for this NIC.
    pub fn qemu_args(&self) -> Vec<String> {
        match &self.backend {
            NetBackend::Forwards { relay, forwards } => {
                // QEMU option values double their commas.
                let prog = relay.display().to_string().replace(',', ",,");
                let mut netdev = "user,id=net0,restrict=on,ipv6=off".to_owned();
                for f in forwards {
                    netdev.push_str(&format!(
                        ",guestfwd=tcp:{}:{}-cmd:{prog} {RELAY_SUBCOMMAND} {}:{}",
                        f.guest_addr, f.port, f.host, f.port
                    ));
                }
                vec![
                    "-netdev".into(),
                    netdev,
                    "-device".into(),
                    // No option ROM: the guest boots a kernel directly.
                    "virtio-net-pci,netdev=net0,romfile=".into(),
                ]
            }
        }
    }
}

/// The relay end QEMU spawns: connects to `target` (`HOST:PORT`, the host
/// resolving the name), copies stdin to it and its answers to stdout until
/// either side closes. Writes nothing else to stdout or stderr (both are
/// the guest's connection).
pub fn relay_stdio(target: &str) -> std::io::Result<()> {
    let up = TcpStream::connect(target)?;
    let down = up.try_clone()?;
    let _to_host = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut up = up;
        let _ = copy(&mut stdin, &mut up);
        let _ = up.shutdown(Shutdown::Write);
    });
    let mut down = down;
    let mut stdout = std::io::stdout().lock();
    let r = copy(&mut down, &mut stdout);
    let _ = stdout.flush();
    // The host closed: the guest's side ends with this process (the
    // stdin thread is not waited for).
    r.map(|_| ())
}

fn copy(r: &mut impl Read, w: &mut impl Write) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        let k = match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..k])?;
        w.flush()?;
        n += k as u64;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DOC: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cloister.toml\" = '''\ninsecure_http = true\ninsecure_registries = [\"127.0.0.1:5000\", \"registry.example:443\"]\n'''\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"http://127.0.0.1:8080\"\n'''\n";

    #[test]
    fn forwards_exactly_the_endpoints_initdata_names() {
        std::env::set_var(RELAY_ENV, "/opt/x,y/cloister");
        let net = NetSpec::for_initdata(Some(DOC.as_bytes()))
            .unwrap()
            .unwrap();
        let args = net.qemu_args();
        assert_eq!(args[0], "-netdev");
        assert_eq!(
            args[1],
            "user,id=net0,restrict=on,ipv6=off,\
             guestfwd=tcp:10.0.2.100:5000-cmd:/opt/x,,y/cloister net-relay 127.0.0.1:5000,\
             guestfwd=tcp:10.0.2.100:8080-cmd:/opt/x,,y/cloister net-relay 127.0.0.1:8080,\
             guestfwd=tcp:10.0.2.101:443-cmd:/opt/x,,y/cloister net-relay registry.example:443"
        );
        assert_eq!(args[3], "virtio-net-pci,netdev=net0,romfile=");
        // No endpoint named, or no initdata: no NIC at all.
        let none = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n";
        assert_eq!(NetSpec::for_initdata(Some(none.as_bytes())).unwrap(), None);
        assert_eq!(NetSpec::for_initdata(None).unwrap(), None);
        // Bad settings are refused before a VM starts.
        let bad = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\nx = \"y\"\n";
        assert!(NetSpec::for_initdata(Some(bad.as_bytes())).is_err());
    }
}
