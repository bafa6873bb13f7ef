//! The guest's network path to the endpoints its measured initdata names.
//!
//! The runtime gives the guest one virtio-net NIC on QEMU user networking
//! with `restrict=on`: the guest reaches nothing but the forwards QEMU was
//! told about, each `GUEST_FORWARD_ADDR:PORT` → the host's `127.0.0.1:PORT`
//! (docs/runtime.md, "Network"). The agent configures `eth0` itself (no
//! DHCP client here) and relays guest `127.0.0.1:PORT` to
//! `GUEST_FORWARD_ADDR:PORT`, so URLs and TLS names in initdata stay as
//! written. Which ports: exactly [`GuestConfig::loopback_ports`], the same
//! rule the host uses to choose its forwards.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use cloister_guest_config::GuestConfig;
use tokio::net::{TcpListener, TcpStream};

/// The guest's address on QEMU's user network.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// Its netmask.
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
/// Where QEMU listens for the guest's forwarded connections
/// (`guestfwd=tcp:10.0.2.100:PORT-…`); must match the runtime's.
pub const GUEST_FORWARD_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// The NIC.
pub const NIC: &str = "eth0";

/// Why the network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Initdata names host endpoints, but the VM has no NIC.
    #[error("initdata names host ports {ports:?} but this VM has no network interface eth0 (the runtime adds one only for those ports; is virtio_net loaded?)")]
    NoNic {
        /// The ports.
        ports: Vec<u16>,
    },
    /// An interface ioctl failed.
    #[error("configuring {what}")]
    Interface {
        /// What was being set.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The relay could not listen.
    #[error("listening on guest 127.0.0.1:{port}")]
    Listen {
        /// The port.
        port: u16,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn iface(what: &str) -> impl FnOnce(std::io::Error) -> NetError + '_ {
    move |source| NetError::Interface {
        what: what.to_owned(),
        source,
    }
}

/// Sets up `lo`, `eth0` and one relay per port that `config` names.
/// Returns the ports relayed. Without named ports nothing is done (and a
/// NIC, if any, stays down).
pub async fn setup(config: &GuestConfig) -> Result<Vec<u16>, NetError> {
    let ports = config.loopback_ports();
    if ports.is_empty() {
        return Ok(ports);
    }
    crate::netsys::set_up("lo").map_err(iface("lo up"))?;
    if !Path::new("/sys/class/net").join(NIC).exists() {
        return Err(NetError::NoNic { ports });
    }
    crate::netsys::set_ipv4(NIC, GUEST_ADDR, NETMASK).map_err(iface("eth0 address"))?;
    crate::netsys::set_up(NIC).map_err(iface("eth0 up"))?;
    for &port in &ports {
        relay(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            SocketAddrV4::new(GUEST_FORWARD_ADDR, port),
        )
        .await?;
    }
    crate::log!(
        "network: {NIC} {GUEST_ADDR}/24; host ports {ports:?} relayed from guest 127.0.0.1"
    );
    Ok(ports)
}

/// Listens on `from` and copies every connection to a new one to `to`,
/// both ways, until either side closes. Runs for the agent's life.
pub async fn relay(from: SocketAddrV4, to: SocketAddrV4) -> Result<(), NetError> {
    let listener = TcpListener::bind(from)
        .await
        .map_err(|source| NetError::Listen {
            port: from.port(),
            source,
        })?;
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                match TcpStream::connect(to).await {
                    Ok(mut outbound) => {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    Err(e) => crate::log!("relay {from} -> {to}: {e}"),
                }
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The relay carries bytes both ways, for several connections at once.
    #[tokio::test(flavor = "current_thread")]
    async fn relay_copies_both_ways_for_each_connection() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = match upstream.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        tokio::spawn(async move {
            loop {
                let (mut s, _) = upstream.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 5];
                    s.read_exact(&mut b).await.unwrap();
                    b.reverse();
                    s.write_all(&b).await.unwrap();
                });
            }
        });
        // Find a free port for the relay's listener.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let from = match free.local_addr().unwrap() {
            std::net::SocketAddr::V4(a) => a,
            other => panic!("{other}"),
        };
        drop(free);
        relay(from, up).await.unwrap();
        let mut a = TcpStream::connect(from).await.unwrap();
        let mut b = TcpStream::connect(from).await.unwrap();
        a.write_all(b"hello").await.unwrap();
        b.write_all(b"world").await.unwrap();
        let mut got = [0u8; 5];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"dlrow");
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"olleh");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn nothing_named_means_nothing_set_up() {
        assert!(setup(&GuestConfig::default()).await.unwrap().is_empty());
    }
}
