//! PE/COFF Authenticode image digest, as UEFI firmware measures an EFI
//! application (`EV_EFI_BOOT_SERVICES_APPLICATION`).
//!
//! The digest covers, in order (PE/COFF specification, Authenticode
//! appendix; the same steps as EDK II's `MeasurePeImageAndExtend`):
//! 1. the headers from offset 0 up to `SizeOfHeaders`, leaving out the
//!    4-byte `CheckSum` field and, when the optional header has a security
//!    data directory (`NumberOfRvaAndSizes > 4`), its 8-byte entry;
//! 2. the raw data of every section with a non-zero `SizeOfRawData`, in
//!    ascending `PointerToRawData` order (a stable sort: equal offsets keep
//!    table order);
//! 3. any bytes after the last hashed byte (`SizeOfHeaders` + Σ
//!    `SizeOfRawData`), minus the certificate table at the end of the file
//!    (its size is the security directory's `Size`).
//!
//! No padding is added to the file: firmware hashes the buffer it loaded.

use sha2::Digest as _;

use crate::digest::{Digest, Sha256Digest, Sha384Digest};

/// Why a file is not a PE/COFF image this module can hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeError {
    /// The DOS header is missing.
    #[error("not a PE/COFF image: expected the DOS signature \"MZ\" at offset 0, found {found}")]
    NoDosSignature {
        /// What the first bytes were.
        found: String,
    },
    /// `e_lfanew` does not point at a PE signature.
    #[error("not a PE/COFF image: expected \"PE\\0\\0\" at e_lfanew = {offset:#x}, found {found}")]
    NoPeSignature {
        /// `e_lfanew`.
        offset: usize,
        /// What was there.
        found: String,
    },
    /// Unknown optional-header magic.
    #[error("PE optional header magic {0:#06x}: expected 0x10b (PE32) or 0x20b (PE32+)")]
    Magic(u16),
    /// A header structure runs past the end of the file or of `SizeOfHeaders`.
    #[error(
        "PE image truncated: {what} needs bytes up to {needed:#x}, but {limit_name} is {limit:#x}"
    )]
    Truncated {
        /// The structure.
        what: String,
        /// End offset it needs.
        needed: usize,
        /// Which limit was exceeded.
        limit_name: &'static str,
        /// The limit.
        limit: usize,
    },
    /// The certificate table is larger than what is left after the sections.
    #[error(
        "PE certificate table of {cert_size} bytes does not fit after the {hashed} hashed bytes \
         of a {file_size}-byte file"
    )]
    CertTable {
        /// Security directory size.
        cert_size: usize,
        /// Headers + sections.
        hashed: usize,
        /// File size.
        file_size: usize,
    },
}

fn show(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "end of file".into()
    } else {
        format!("{:02x?}", bytes)
    }
}

fn u16_at(b: &[u8], o: usize, what: &str) -> Result<u16, PeError> {
    b.get(o..o + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| truncated(what, o + 2, "the file size", b.len()))
}

fn u32_at(b: &[u8], o: usize, what: &str) -> Result<u32, PeError> {
    b.get(o..o + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| truncated(what, o + 4, "the file size", b.len()))
}

fn truncated(what: &str, needed: usize, limit_name: &'static str, limit: usize) -> PeError {
    PeError::Truncated {
        what: what.to_string(),
        needed,
        limit_name,
        limit,
    }
}

/// One contiguous byte range of the file that goes into the digest.
type Range = std::ops::Range<usize>;

/// The byte ranges, in hashing order, that make up the Authenticode digest.
/// Exposed so tests and callers can see exactly what is covered.
pub fn authenticode_ranges(image: &[u8]) -> Result<Vec<Range>, PeError> {
    if image.get(..2) != Some(b"MZ".as_slice()) {
        return Err(PeError::NoDosSignature {
            found: show(&image[..image.len().min(2)]),
        });
    }
    let pe = u32_at(image, 0x3c, "DOS header e_lfanew")? as usize;
    if image.get(pe..pe.saturating_add(4)) != Some(b"PE\0\0".as_slice()) {
        let end = image.len().min(pe.saturating_add(4));
        return Err(PeError::NoPeSignature {
            offset: pe,
            found: show(image.get(pe..end).unwrap_or_default()),
        });
    }
    let coff = pe + 4;
    let nsections = usize::from(u16_at(image, coff + 2, "COFF header")?);
    let opt_size = usize::from(u16_at(image, coff + 16, "COFF header")?);
    let opt = coff + 20;
    let magic = u16_at(image, opt, "optional header magic")?;
    let (nrva_off, dirs_off) = match magic {
        0x10b => (opt + 92, opt + 96),
        0x20b => (opt + 108, opt + 112),
        m => return Err(PeError::Magic(m)),
    };
    let checksum = opt + 64;
    let size_of_headers = u32_at(image, opt + 60, "optional header SizeOfHeaders")? as usize;
    if size_of_headers > image.len() {
        return Err(truncated(
            "SizeOfHeaders",
            size_of_headers,
            "the file size",
            image.len(),
        ));
    }
    let nrva = u32_at(image, nrva_off, "optional header NumberOfRvaAndSizes")?;
    let security = dirs_off + 4 * 8;
    let has_security = nrva > 4;
    let hdr_need = if has_security {
        security + 8
    } else {
        nrva_off + 4
    };
    if hdr_need > size_of_headers {
        return Err(truncated(
            "the optional header",
            hdr_need,
            "SizeOfHeaders",
            size_of_headers,
        ));
    }
    let mut ranges: Vec<Range> = Vec::with_capacity(4 + nsections);
    ranges.push(0..checksum);
    let cert_size = if has_security {
        ranges.push(checksum + 4..security);
        ranges.push(security + 8..size_of_headers);
        u32_at(image, security + 4, "security directory")? as usize
    } else {
        ranges.push(checksum + 4..size_of_headers);
        0
    };
    let table = opt + opt_size;
    let table_end = table + 40 * nsections;
    if table_end > image.len() {
        return Err(truncated(
            &format!("the section table ({nsections} entries)"),
            table_end,
            "the file size",
            image.len(),
        ));
    }
    let mut sections: Vec<(usize, usize, String)> = (0..nsections)
        .map(|i| {
            let s = table + 40 * i;
            let name = String::from_utf8_lossy(&image[s..s + 8])
                .trim_end_matches('\0')
                .to_string();
            let size = u32_at(image, s + 16, "section header")? as usize;
            let ptr = u32_at(image, s + 20, "section header")? as usize;
            Ok((ptr, size, name))
        })
        .collect::<Result<_, PeError>>()?;
    sections.sort_by_key(|(ptr, _, _)| *ptr); // stable, like EDK II's insertion sort
    let mut hashed = size_of_headers;
    for (ptr, size, name) in sections {
        if size == 0 {
            continue;
        }
        let end = ptr.saturating_add(size);
        if end > image.len() {
            return Err(truncated(
                &format!("section {name:?} (PointerToRawData {ptr:#x}, SizeOfRawData {size:#x})"),
                end,
                "the file size",
                image.len(),
            ));
        }
        ranges.push(ptr..end);
        hashed += size;
    }
    if image.len() > hashed {
        match image.len().checked_sub(cert_size) {
            Some(end) if end > hashed => ranges.push(hashed..end),
            Some(end) if end == hashed => {}
            _ => {
                return Err(PeError::CertTable {
                    cert_size,
                    hashed,
                    file_size: image.len(),
                })
            }
        }
    }
    ranges.retain(|r| !r.is_empty());
    Ok(ranges)
}

fn hash_ranges<D: sha2::Digest>(image: &[u8], ranges: &[Range]) -> D {
    let mut h = D::new();
    for r in ranges {
        h.update(&image[r.clone()]);
    }
    h
}

/// Authenticode SHA-384 digest (what TDVF extends into RTMR1 for an EFI
/// application).
pub fn authenticode_sha384(image: &[u8]) -> Result<Sha384Digest, PeError> {
    let r = authenticode_ranges(image)?;
    Ok(Digest(
        hash_ranges::<sha2::Sha384>(image, &r).finalize().into(),
    ))
}

/// Authenticode SHA-256 digest (what `pesign -h` and `sbsign` print).
pub fn authenticode_sha256(image: &[u8]) -> Result<Sha256Digest, PeError> {
    let r = authenticode_ranges(image)?;
    Ok(Digest(
        hash_ranges::<sha2::Sha256>(image, &r).finalize().into(),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal PE32+ image: DOS header, PE header at 0x80, 16 data
    /// directories, `sections` as (PointerToRawData, SizeOfRawData) with
    /// their bytes filled with the section index + 1, then `tail`.
    pub(crate) fn build_pe(sections: &[(u32, u32)], file_len: usize, cert: (u32, u32)) -> Vec<u8> {
        let mut b = vec![0u8; file_len];
        b[0..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        b[coff + 2..coff + 4].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&240u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 60..opt + 64].copy_from_slice(&0x200u32.to_le_bytes()); // SizeOfHeaders
        b[opt + 64..opt + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // CheckSum
        b[opt + 108..opt + 112].copy_from_slice(&16u32.to_le_bytes());
        let sec = opt + 112 + 32;
        b[sec..sec + 4].copy_from_slice(&cert.0.to_le_bytes());
        b[sec + 4..sec + 8].copy_from_slice(&cert.1.to_le_bytes());
        let table = opt + 240;
        for (i, (ptr, size)) in sections.iter().enumerate() {
            let s = table + 40 * i;
            b[s..s + 8].copy_from_slice(format!(".s{i}\0\0\0\0\0").as_bytes().get(..8).unwrap());
            b[s + 16..s + 20].copy_from_slice(&size.to_le_bytes());
            b[s + 20..s + 24].copy_from_slice(&ptr.to_le_bytes());
            for x in &mut b[*ptr as usize..(*ptr + *size) as usize] {
                *x = i as u8 + 1;
            }
        }
        b
    }

    #[test]
    fn ranges_skip_checksum_and_security_entry_and_sort_sections() {
        // Sections listed out of file order; one empty section is skipped.
        let img = build_pe(&[(0x400, 0x100), (0x200, 0x200), (0x500, 0)], 0x600, (0, 0));
        let r = authenticode_ranges(&img).unwrap();
        let opt = 0x84 + 20;
        let sec = opt + 112 + 32;
        assert_eq!(
            r,
            vec![
                0..opt + 64,
                opt + 68..sec,
                sec + 8..0x200,
                0x200..0x400,
                0x400..0x500,
                0x500..0x600, // trailing data, no certificate table
            ]
        );
        // The checksum and the security entry do not change the digest.
        let mut other = img.clone();
        other[opt + 64] ^= 0xff;
        other[sec + 4] ^= 0x01; // cert size 1 -> the last byte is the "certificate"
        assert_ne!(authenticode_sha384(&img), authenticode_sha384(&other));
        other[sec + 4] ^= 0x01;
        assert_eq!(authenticode_sha384(&img), authenticode_sha384(&other));
        // Any hashed byte does.
        other[0x450] ^= 1;
        assert_ne!(authenticode_sha384(&img), authenticode_sha384(&other));
    }

    #[test]
    fn certificate_table_is_excluded_from_trailing_data() {
        let img = build_pe(&[(0x200, 0x200)], 0x500, (0x480, 0x80));
        let r = authenticode_ranges(&img).unwrap();
        assert_eq!(r.last(), Some(&(0x400..0x480)));
        let mut signed_differently = img.clone();
        signed_differently[0x4f0] ^= 0xff;
        assert_eq!(
            authenticode_sha256(&img),
            authenticode_sha256(&signed_differently)
        );
        // A certificate table larger than the tail is refused.
        let bad = build_pe(&[(0x200, 0x200)], 0x500, (0x480, 0x200));
        assert!(matches!(
            authenticode_ranges(&bad),
            Err(PeError::CertTable {
                cert_size: 0x200,
                ..
            })
        ));
    }

    #[test]
    fn digest_equals_hash_of_the_concatenated_ranges() {
        let img = build_pe(&[(0x200, 0x100)], 0x300, (0, 0));
        let mut cat = Vec::new();
        for r in authenticode_ranges(&img).unwrap() {
            cat.extend_from_slice(&img[r]);
        }
        let want: [u8; 48] = sha2::Sha384::digest(&cat).into();
        assert_eq!(authenticode_sha384(&img).unwrap().0, want);
    }

    #[test]
    fn non_pe_inputs_name_what_was_wrong() {
        let e = authenticode_sha384(b"\x1f\x8b\x08\x00gzip").unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a PE/COFF image: expected the DOS signature \"MZ\" at offset 0, found [1f, 8b]"
        );
        let mut img = build_pe(&[(0x200, 0x100)], 0x300, (0, 0));
        img[0x80] = b'X';
        let e = authenticode_sha384(&img).unwrap_err();
        assert!(
            e.to_string()
                .contains("expected \"PE\\0\\0\" at e_lfanew = 0x80"),
            "{e}"
        );
        let mut img = build_pe(&[(0x200, 0x100)], 0x300, (0, 0));
        img[0x84 + 20] = 0x07;
        assert_eq!(
            authenticode_sha384(&img).unwrap_err(),
            PeError::Magic(0x0207)
        );
        // A section past the end of the file.
        let mut img = build_pe(&[(0x200, 0x100)], 0x300, (0, 0));
        img.truncate(0x280);
        let e = authenticode_sha384(&img).unwrap_err();
        assert!(e.to_string().contains("section \".s0\""), "{e}");
        assert!(matches!(
            authenticode_sha384(b"MZ"),
            Err(PeError::Truncated { .. })
        ));
        assert!(matches!(
            authenticode_sha384(b""),
            Err(PeError::NoDosSignature { .. })
        ));
    }
}
