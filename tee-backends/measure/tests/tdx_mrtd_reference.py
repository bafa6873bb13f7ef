#!/usr/bin/env python3
"""Independent MRTD reference for tests/tdx_vectors.rs (python3 + hashlib only).

Usage: tdx_mrtd_reference.py FIRMWARE.fd  -> prints the MRTD hex.

Follows the TDX module ABI as QEMU drives it: for each TDVF section in
metadata order, for each 4 KiB page: TDH.MEM.PAGE.ADD (unless PAGE_AUG),
then, with MR_EXTEND, TDH.MR.EXTEND of the page's sixteen 256-byte chunks.
"""
import hashlib
import struct
import sys
import uuid

FOOTER = uuid.UUID("96b582de-1fb2-45f7-baea-a366c55a082d").bytes_le
TDX_META = uuid.UUID("e47a6535-984a-4798-865e-4685a7bf8ec2").bytes_le


def footer_entries(img):
    end = len(img) - 32
    size, guid = struct.unpack_from("<H16s", img, end - 18)
    assert guid == FOOTER, "no footer table"
    table = img[end - size:end - 18]
    entries = {}
    pos = len(table)
    while pos >= 18:
        esize, g = struct.unpack_from("<H16s", table, pos - 18)
        entries[g] = table[pos - esize:pos - 18]
        pos -= esize
    return entries


def mrtd(img):
    (off,) = struct.unpack_from("<I", footer_entries(img)[TDX_META], 0)
    base = len(img) - off
    sig, _length, version, count = struct.unpack_from("<4sIII", img, base)
    assert sig == b"TDVF" and version == 1
    h = hashlib.sha384()
    for i in range(count):
        doff, raw, addr, msize, _typ, attr = struct.unpack_from("<IIQQII", img, base + 16 + 32 * i)
        if attr & 2:
            continue
        data = img[doff:doff + raw] + bytes(msize - raw)
        for page in range(0, msize, 4096):
            gpa = addr + page
            h.update(b"MEM.PAGE.ADD".ljust(16, b"\0") + struct.pack("<Q", gpa) + bytes(104))
            if attr & 1:
                for c in range(0, 4096, 256):
                    h.update(b"MR.EXTEND".ljust(16, b"\0") + struct.pack("<Q", gpa + c) + bytes(104))
                    h.update(data[page + c:page + c + 256])
    return h.hexdigest()


if __name__ == "__main__":
    with open(sys.argv[1], "rb") as f:
        print(mrtd(f.read()))
