"""Test image builders shared by several test files."""

import struct
import zlib

import numpy as np


def png16(a: np.ndarray) -> bytes:
    """A 16-bit PNG (gray (H, W) or RGB (H, W, 3)) written by hand: PIL cannot write 16-bit RGB."""
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    color_type = 2 if a.ndim == 3 else 0
    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
