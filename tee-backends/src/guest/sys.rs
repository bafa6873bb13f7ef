//! The one raw syscall the guest side needs: SNP_GET_REPORT on
//! `/dev/sev-guest` (linux/include/uapi/linux/sev-guest.h).
#![allow(unsafe_code)]

use std::os::fd::AsRawFd;

/// `struct snp_report_req`: user data, VMPL, reserved.
#[repr(C)]
pub(crate) struct SnpReportReq {
    pub user_data: [u8; 64],
    pub vmpl: u32,
    pub rsvd: [u8; 28],
}

/// `struct snp_report_resp`: the firmware's MSG_REPORT_RSP (status, size,
/// 24 reserved bytes, then the 1184-byte report) in a 4000-byte buffer.
#[repr(C)]
pub(crate) struct SnpReportResp {
    pub data: [u8; 4000],
}

/// `struct snp_guest_request_ioctl`.
#[repr(C)]
pub(crate) struct SnpGuestRequestIoctl {
    pub msg_version: u8,
    pub req_data: u64,
    pub resp_data: u64,
    pub exitinfo2: u64,
}

/// `_IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
pub(crate) const SNP_GET_REPORT: u64 =
    (3 << 30) | ((std::mem::size_of::<SnpGuestRequestIoctl>() as u64) << 16) | ((b'S' as u64) << 8);

/// Issues SNP_GET_REPORT. Returns the response buffer, or the OS error plus
/// the firmware/VMM error word.
pub(crate) fn snp_get_report(
    dev: &std::fs::File,
    req: &SnpReportReq,
    resp: &mut SnpReportResp,
) -> Result<(), (std::io::Error, u64)> {
    let mut arg = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: req as *const SnpReportReq as u64,
        resp_data: resp as *mut SnpReportResp as u64,
        exitinfo2: 0,
    };
    // SAFETY: `dev` is an open file; `arg` is a properly laid-out
    // `snp_guest_request_ioctl` whose req/resp pointers refer to live,
    // correctly sized `#[repr(C)]` buffers that outlive the call, and the
    // kernel writes only within `resp` and `arg`.
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            SNP_GET_REPORT as _,
            &mut arg as *mut SnpGuestRequestIoctl,
        )
    };
    if rc < 0 {
        return Err((std::io::Error::last_os_error(), arg.exitinfo2));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_number_and_layout_match_the_uapi_header() {
        assert_eq!(std::mem::size_of::<SnpGuestRequestIoctl>(), 32);
        assert_eq!(std::mem::size_of::<SnpReportReq>(), 96);
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
    }
}
