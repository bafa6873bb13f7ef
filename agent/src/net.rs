//! The guest's network path to the endpoints its measured initdata names.
//!
//! The runtime gives the guest one virtio-net NIC on QEMU user networking
//! with `restrict=on`: the guest reaches nothing but the forwards QEMU was
//! told about, exactly [`GuestConfig::forwards`] (docs/runtime.md,
//! "Network"), the same rule the host uses. The agent configures `eth0`
//! itself (no DHCP client here) and relays guest `127.0.0.1:PORT` to
//! [`LOOPBACK_FORWARD_ADDR`]`:PORT` for the host's loopback services, so
//! URLs stay as written; other hosts' names resolve to their forwards in
//! the agent's HTTP clients ([`GuestConfig::guest_hosts`]), so TLS names
//! stay as written too.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use cloister_guest_config::{GuestConfig, LOOPBACK_FORWARD_ADDR};
use tokio::net::{TcpListener, TcpStream};

/// The guest's address on QEMU's user network.
pub const GUEST_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
/// Its netmask.
pub const NETMASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
/// The NIC.
pub const NIC: &str = "eth0";

/// Why the network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Initdata names endpoints that cannot be forwarded.
    #[error(transparent)]
    Config(#[from] cloister_guest_config::ConfigError),
    /// Initdata names endpoints, but the VM has no NIC.
    #[error("initdata names endpoints {endpoints:?} but this VM has no network interface eth0 (the runtime adds one only for those; is virtio_net loaded?)")]
    NoNic {
        /// The endpoints, `HOST:PORT`.
        endpoints: Vec<String>,
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

/// Sets up `lo`, `eth0` and one relay per host-loopback port that `config`
/// names. Returns the endpoints reached, `HOST:PORT`. Without named
/// endpoints nothing is done (and a NIC, if any, stays down).
pub async fn setup(config: &GuestConfig) -> Result<Vec<String>, NetError> {
    let forwards = config.forwards()?;
    let endpoints: Vec<String> = forwards
        .iter()
        .map(|f| format!("{}:{}", f.host, f.port))
        .collect();
    if forwards.is_empty() {
        return Ok(endpoints);
    }
    crate::netsys::set_up("lo").map_err(iface("lo up"))?;
    if !Path::new("/sys/class/net").join(NIC).exists() {
        return Err(NetError::NoNic { endpoints });
    }
    crate::netsys::set_ipv4(NIC, GUEST_ADDR, NETMASK).map_err(iface("eth0 address"))?;
    crate::netsys::set_up(NIC).map_err(iface("eth0 up"))?;
    for f in forwards.iter().filter(|f| f.is_loopback()) {
        relay(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, f.port),
            SocketAddrV4::new(LOOPBACK_FORWARD_ADDR, f.port),
        )
        .await?;
    }
    crate::log!("network: {NIC} {GUEST_ADDR}/24; endpoints {endpoints:?}");
    Ok(endpoints)
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
