"""The extension loads into any process: it asks for no static TLS, which a process
that imported other extensions first may have used up (glibc then refuses to load it
with "cannot allocate memory in static TLS block")."""

from __future__ import annotations

import struct

from rem_db import _rem_db

PT_DYNAMIC = 2
DT_NULL, DT_FLAGS = 0, 30
DF_STATIC_TLS = 0x10


def dynamic_flags(path: str) -> int:
    """DT_FLAGS of a 64-bit little-endian ELF shared object (0 when absent)."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "64-bit LE ELF"
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type != PT_DYNAMIC:
            continue
        for at in range(p_offset, p_offset + p_filesz, 16):
            tag, value = struct.unpack_from("<qQ", data, at)
            if tag == DT_NULL:
                break
            if tag == DT_FLAGS:
                return int(value)
    return 0


def test_the_extension_needs_no_static_tls() -> None:
    path = _rem_db.__file__
    assert path is not None
    assert dynamic_flags(path) & DF_STATIC_TLS == 0, (
        f"{path} uses the initial-exec TLS model (mimalloc needs local_dynamic_tls)")
