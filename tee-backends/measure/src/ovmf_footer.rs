//! The OVMF footer GUID table shared by SNP and TDX firmware parsing: a
//! list of {data, u16 size, GUID} entries laid out backwards from 32 bytes
//! before the end of the image, introduced by the footer GUID.

const FOOTER_GUID: &str = "96b582de-1fb2-45f7-baea-a366c55a082d";

/// A GUID's on-disk bytes (first three fields little-endian).
pub fn guid_bytes(s: &str) -> [u8; 16] {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let mut b = [0u8; 16];
    for (i, byte) in b.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    // First three fields are little-endian on disk.
    b[0..4].reverse();
    b[4..6].reverse();
    b[6..8].reverse();
    b
}

/// One footer-table entry: on-disk GUID bytes and its data.
pub type FooterEntry<'a> = ([u8; 16], &'a [u8]);

/// Parse the OVMF footer GUID table: entries {data, u16 size, GUID} laid out
/// backwards from 32 bytes before the end of the image.
pub fn footer_table(data: &[u8]) -> Result<Vec<FooterEntry<'_>>, String> {
    const HDR: usize = 18;
    let end = data
        .len()
        .checked_sub(32)
        .filter(|e| *e >= HDR)
        .ok_or("image shorter than the footer")?;
    let footer = &data[end - HDR..end];
    if footer[2..18] != guid_bytes(FOOTER_GUID) {
        return Err("no OVMF footer table GUID 32 bytes before the end".into());
    }
    let size = usize::from(u16::from_le_bytes([footer[0], footer[1]]));
    let table_len = size
        .checked_sub(HDR)
        .ok_or("footer table size smaller than its header")?;
    let start = (end - HDR)
        .checked_sub(table_len)
        .ok_or("footer table runs past the start of the image")?;
    let table = &data[start..end - HDR];
    let mut out = Vec::new();
    let mut off = table.len();
    while off >= HDR {
        let e = &table[off - HDR..off];
        let esize = usize::from(u16::from_le_bytes([e[0], e[1]]));
        if esize < HDR || esize > off {
            return Err(format!("footer table entry size {esize} invalid"));
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&e[2..18]);
        out.push((guid, &table[off - esize..off - HDR]));
        off -= esize;
    }
    Ok(out)
}
