//! How the host and the agent find each other: the kernel command line key
//! that picks the transport, the virtio-serial port name, and the 9p tag of
//! the container rootfs share. Both ends use these constants.

use std::fmt;
use std::str::FromStr;

/// Kernel command line key selecting the agent channel.
pub const CMDLINE_KEY: &str = "cloister.channel";

/// Name of the virtio-serial port the agent serves on
/// (QEMU: `-device virtserialport,chardev=..,name=cloister.agent`).
pub const SERIAL_PORT_NAME: &str = "cloister.agent";

/// mount_tag of the read-only 9p share holding a host-provided container
/// rootfs (QEMU: `-virtfs local,path=DIR,mount_tag=cloister-rootfs,...`).
pub const ROOTFS_9P_TAG: &str = "cloister-rootfs";

/// The fw_cfg file name under which the host hands the guest the
/// per-sandbox agent secret (`/sys/firmware/qemu_fw_cfg/by_name/<name>/raw`
/// in the guest).
pub const AGENT_SECRET_FW_CFG: &str = "opt/cloister/agent-secret";

/// The virtio serial of the encrypted scratch disk (`cloister run
/// --scratch-disk`): the runtime gives the disk this serial, the agent
/// finds it by it.
pub const SCRATCH_DISK_SERIAL: &str = "cloister-scratch";

/// The words the agent prints on its console once it listens on a channel,
/// followed by the channel (`serving on vsock:1024`). The host waits for them
/// before its first connection through a vhost-user vsock backend:
/// vhost-device-vsock 0.3.0 loses its worker thread, and with it the device
/// for the VM's life, when a host connection arrives after QEMU handed it the
/// guest memory but before the guest's driver made the queues ready. The line
/// only times the first connect; the host trusts nothing in it.
pub const SERVING_NOTICE: &str = "serving on ";

/// [`SERVING_NOTICE`] for `channel`, as the agent prints it.
pub fn serving_notice(channel: Channel) -> String {
    format!("{SERVING_NOTICE}{channel}")
}

/// Default vsock port when the host asks for vsock.
pub const DEFAULT_VSOCK_PORT: u32 = 1024;

/// The transport the agent serves its ttrpc API on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// The virtio-serial port named [`SERIAL_PORT_NAME`].
    Serial,
    /// AF_VSOCK, listening on this port (any CID).
    Vsock { port: u32 },
}

/// A malformed channel setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    #[error("bad {CMDLINE_KEY} value {0:?}: expected `serial` or `vsock:<port>`")]
    BadValue(String),
    #[error("bad vsock port {0:?} in {CMDLINE_KEY}: expected a number from 1 to 4294967294")]
    BadPort(String),
}

impl Channel {
    /// The channel named on a kernel command line (`/proc/cmdline`), or `None`
    /// when the key is absent. The last occurrence wins, as for kernel
    /// parameters.
    pub fn from_cmdline(cmdline: &str) -> Result<Option<Channel>, ChannelError> {
        let mut found = None;
        for word in cmdline.split_ascii_whitespace() {
            if let Some(value) = word
                .strip_prefix(CMDLINE_KEY)
                .and_then(|rest| rest.strip_prefix('='))
            {
                found = Some(value);
            }
        }
        found.map(str::parse).transpose()
    }

    /// The `key=value` word to put on the kernel command line.
    pub fn cmdline_arg(&self) -> String {
        format!("{CMDLINE_KEY}={self}")
    }
}

impl FromStr for Channel {
    type Err = ChannelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "serial" {
            return Ok(Channel::Serial);
        }
        match s.strip_prefix("vsock:") {
            Some(port) => match port.parse::<u32>() {
                // 0 is reserved and u32::MAX is VMADDR_PORT_ANY.
                Ok(p) if p != 0 && p != u32::MAX => Ok(Channel::Vsock { port: p }),
                _ => Err(ChannelError::BadPort(port.to_string())),
            },
            None => Err(ChannelError::BadValue(s.to_string())),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Channel::Serial => f.write_str("serial"),
            Channel::Vsock { port } => write!(f, "vsock:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_cases() {
        let cases: &[(&str, Result<Option<Channel>, ()>)] = &[
            ("console=ttyS0 panic=-1", Ok(None)),
            (
                "console=ttyS0 cloister.channel=serial",
                Ok(Some(Channel::Serial)),
            ),
            (
                "cloister.channel=vsock:1024 quiet",
                Ok(Some(Channel::Vsock { port: 1024 })),
            ),
            (
                "cloister.channel=serial cloister.channel=vsock:7",
                Ok(Some(Channel::Vsock { port: 7 })),
            ),
            ("cloister.channelx=serial", Ok(None)),
            ("cloister.channel=", Err(())),
            ("cloister.channel=tcp:1", Err(())),
            ("cloister.channel=vsock:", Err(())),
            ("cloister.channel=vsock:0", Err(())),
            ("cloister.channel=vsock:4294967295", Err(())),
            ("cloister.channel=vsock:-3", Err(())),
        ];
        for (cmdline, want) in cases {
            let got = Channel::from_cmdline(cmdline).map_err(|_| ());
            assert_eq!(&got, want, "{cmdline}");
        }
    }

    #[test]
    fn display_round_trips_and_errors_name_the_fix() {
        for c in [Channel::Serial, Channel::Vsock { port: 99 }] {
            assert_eq!(c.to_string().parse::<Channel>(), Ok(c));
            assert_eq!(Channel::from_cmdline(&c.cmdline_arg()), Ok(Some(c)));
        }
        let msg = "udp".parse::<Channel>().unwrap_err().to_string();
        assert!(
            msg.contains("serial") && msg.contains("vsock:<port>"),
            "{msg}"
        );
    }
}
