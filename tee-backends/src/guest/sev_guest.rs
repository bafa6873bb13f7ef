//! SNP evidence through `/dev/sev-guest` (kernels or guests without
//! configfs-tsm). The evidence is the bare 1184-byte attestation report.

use std::path::{Path, PathBuf};

use super::{sys, AttestError, Attester};
use crate::evidence::snp_layout;
use crate::TeeKind;

/// SNP attester over the `sev-guest` character device.
#[derive(Debug, Clone)]
pub struct SevGuestAttester {
    dev: PathBuf,
}

impl SevGuestAttester {
    /// An attester using the device at `dev` (normally `/dev/sev-guest`).
    pub fn new(dev: &Path) -> Self {
        Self {
            dev: dev.to_path_buf(),
        }
    }
}

/// Extracts the report from an MSG_REPORT_RSP buffer.
pub(crate) fn parse_report_resp(data: &[u8]) -> Result<Vec<u8>, AttestError> {
    let word = |at: usize| {
        data.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(u32::MAX)
    };
    let status = word(0);
    if status != 0 {
        return Err(AttestError::Firmware {
            tee: TeeKind::Snp,
            detail: format!("MSG_REPORT_RSP status {status:#x}"),
        });
    }
    let size = word(4) as usize;
    if size != snp_layout::REPORT_LEN || data.len() < 32 + size {
        return Err(AttestError::Firmware {
            tee: TeeKind::Snp,
            detail: format!("report size {size}, expected {}", snp_layout::REPORT_LEN),
        });
    }
    Ok(data[32..32 + size].to_vec())
}

impl Attester for SevGuestAttester {
    fn tee(&self) -> TeeKind {
        TeeKind::Snp
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, AttestError> {
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.dev)
            .map_err(|source| AttestError::Io {
                what: format!("opening {}", self.dev.display()),
                source,
            })?;
        let req = sys::SnpReportReq {
            user_data: *report_data,
            vmpl: 0,
            rsvd: [0; 28],
        };
        let mut resp = Box::new(sys::SnpReportResp { data: [0; 4000] });
        sys::snp_get_report(&dev, &req, &mut resp).map_err(|(source, exitinfo2)| {
            AttestError::Io {
                what: format!(
                    "SNP_GET_REPORT on {} (firmware/VMM error {exitinfo2:#x})",
                    self.dev.display()
                ),
                source,
            }
        })?;
        parse_report_resp(&resp.data)
    }

    fn extend(&self, _index: u32, _data: &[u8]) -> Result<(), AttestError> {
        Err(AttestError::Unsupported {
            tee: TeeKind::Snp,
            what: "extend runtime measurements (SNP has no guest-extendable register)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_parsing() {
        let mut data = vec![0u8; 4000];
        data[4..8].copy_from_slice(&(snp_layout::REPORT_LEN as u32).to_le_bytes());
        data[32] = 5;
        let r = parse_report_resp(&data).unwrap();
        assert_eq!(r.len(), snp_layout::REPORT_LEN);
        assert_eq!(r[0], 5);
        data[0] = 0x16;
        assert!(parse_report_resp(&data)
            .unwrap_err()
            .to_string()
            .contains("0x16"));
        data[0] = 0;
        data[4] = 1;
        assert!(parse_report_resp(&data)
            .unwrap_err()
            .to_string()
            .contains("report size"));
    }

    #[test]
    #[ignore = "needs SEV-SNP hardware"]
    fn real_sev_guest_report_binds_report_data() {
        let a = SevGuestAttester::new(Path::new("/dev/sev-guest"));
        let r = a.evidence(&[0x5a; 64]).unwrap();
        assert_eq!(
            &r[snp_layout::REPORT_DATA..snp_layout::REPORT_DATA + 64],
            &[0x5a; 64]
        );
    }
}
