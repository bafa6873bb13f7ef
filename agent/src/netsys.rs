//! Interface ioctls (address, netmask, flags) that the safe wrappers do not
//! cover. The guest has no DHCP client and no `ip`; the agent sets its one
//! NIC up itself.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is not 1-15 bytes"),
        ));
    }
    // SAFETY: ifreq is a plain C struct (name bytes and a union of plain
    // data); all-zero is a valid value of it.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn control_socket() -> io::Result<UdpSocket> {
    UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
}

fn ioctl(sock: &UdpSocket, req: libc::c_ulong, r: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `sock` is an open socket for the whole call and `r` is a valid,
    // exclusively borrowed ifreq that the SIOC[GS]IF* requests read or write
    // within its size.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req, r as *mut libc::ifreq) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn set_v4(name: &str, req: libc::c_ulong, addr: Ipv4Addr) -> io::Result<()> {
    let sock = control_socket()?;
    let mut r = ifreq(name)?;
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: the union member is a `sockaddr`, which is exactly as large as
    // `sockaddr_in` (16 bytes); both are plain data, and writing the union's
    // bytes cannot make it invalid.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (&sin as *const libc::sockaddr_in).cast::<u8>(),
            (&mut r.ifr_ifru.ifru_addr as *mut libc::sockaddr).cast::<u8>(),
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    ioctl(&sock, req, &mut r)
}

/// Sets `name`'s IPv4 address and netmask.
pub fn set_ipv4(name: &str, addr: Ipv4Addr, netmask: Ipv4Addr) -> io::Result<()> {
    set_v4(name, libc::SIOCSIFADDR, addr)?;
    set_v4(name, libc::SIOCSIFNETMASK, netmask)
}

/// Brings `name` up.
pub fn set_up(name: &str) -> io::Result<()> {
    let sock = control_socket()?;
    let mut r = ifreq(name)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS has just written the flags member of the union.
    let flags = unsafe { r.ifr_ifru.ifru_flags };
    r.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut r)
}
