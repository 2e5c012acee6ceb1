"""A PNG writer that compresses on several threads, for big 8-bit outputs.

PNG keeps its pixels in one zlib stream, and PIL fills it on one thread: for the CLI's 48 MP
upscale that was several seconds at level 1 while the other cores waited. Deflate can be cut
into pieces that are compressed independently and joined (each but the last ends on a
byte-aligned sync flush, as pigz does), so each thread compresses a band of rows and the bands
are written in order. A band is filtered "Up" or "Sub" (numpy, one pass), whichever suits it;
PIL picks a filter per row, so its files are a few % smaller at the same level
(`benchmarks/infer.py --cli` gives sizes and times). Decoders see an ordinary PNG: one zlib
stream over several IDAT chunks.
"""

from __future__ import annotations

import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import numpy as np
from PIL import Image

COLOR_TYPES = {"L": 0, "RGB": 2, "LA": 4, "RGBA": 6}  # the 8-bit modes this writer takes


def _chunk(f: IO[bytes], kind: bytes, data: bytes) -> None:
    """One PNG chunk: length, type, data, CRC of type and data."""
    f.write(struct.pack(">I", len(data)) + kind + data)
    f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))


def _band(pixels: np.ndarray, bpp: int, top: int, bottom: int, level: int, last: bool) -> tuple:
    """Rows [top, bottom) filtered and deflated; (bytes, adler32 of the raw rows, length).

    The band's filter is "Up" (the row above) or "Sub" (the pixel to the left), whichever
    deflates 32 of its rows smaller: Up suits photos, Sub horizontal gradients.
    """
    rows = pixels[top:bottom]  # (h, W*C) uint8; bpp = C bytes per pixel
    above = pixels[top - 1 : bottom - 1] if top else np.vstack([np.zeros_like(rows[:1]), rows[:-1]])

    def up(r: np.ndarray, a: np.ndarray) -> np.ndarray:
        return r - a  # uint8 arithmetic wraps modulo 256, as PNG wants

    def sub(r: np.ndarray, a: np.ndarray) -> np.ndarray:
        out = r.copy()
        out[:, bpp:] -= r[:, :-bpp]
        return out

    def cost(diffs: np.ndarray) -> int:
        return len(zlib.compress(diffs.tobytes(), level))

    sample = slice(len(rows) // 2, len(rows) // 2 + 32)  # 32 rows from the band's middle
    kind, fn = min((2, up), (1, sub), key=lambda kf: cost(kf[1](rows[sample], above[sample])))
    raw = np.empty((len(rows), rows.shape[1] + 1), np.uint8)
    raw[:, 0] = kind  # the PNG filter type of each row
    raw[:, 1:] = fn(rows, above)
    data = raw.tobytes()
    deflate = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: no header, no adler
    body = deflate.compress(data) + deflate.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)
    return body, zlib.adler32(data), len(data)


def _adler32_combine(a: int, b: int, len_b: int) -> int:
    """The Adler-32 of two byte strings joined, from theirs (zlib's adler32_combine)."""
    mod = 65521
    a1, b1, a2, b2 = a & 0xFFFF, a >> 16, b & 0xFFFF, b >> 16
    s1 = (a1 + a2 - 1) % mod
    s2 = (b1 + b2 + (len_b % mod) * (a1 - 1)) % mod  # b2 already counts its own lead-in of 1
    return (s2 << 16) | s1


def write_png(
    img: Image.Image, f: IO[bytes], level: int, threads: int, chunks: list[tuple[bytes, bytes]]
) -> None:
    """Write an L/LA/RGB/RGBA image as PNG to `f`, deflated in `threads` bands at `level`.

    `chunks` are extra (type, data) chunks written before the pixels (pHYs, iCCP, eXIf).
    """
    if img.mode not in COLOR_TYPES:
        raise ValueError(f"write_png takes {', '.join(COLOR_TYPES)} images, not {img.mode}")
    pixels = np.asarray(img).reshape(img.height, -1)  # (H, W*C) uint8
    bpp = len(img.mode)  # bytes per pixel: L 1, LA 2, RGB 3, RGBA 4
    cuts = np.linspace(0, img.height, min(threads, img.height) * 4 + 1).astype(int)
    bands = [(int(t), int(b)) for t, b in zip(cuts[:-1], cuts[1:], strict=True) if b > t]
    with ThreadPoolExecutor(threads) as pool:  # zlib releases the GIL while it compresses
        parts = list(pool.map(lambda tb: _band(pixels, bpp, *tb, level, tb == bands[-1]), bands))
    f.write(b"\x89PNG\r\n\x1a\n")
    header = struct.pack(">IIBBBBB", img.width, img.height, 8, COLOR_TYPES[img.mode], 0, 0, 0)
    _chunk(f, b"IHDR", header)
    for kind, data in chunks:
        _chunk(f, kind, data)
    adler = 1
    for i, (body, band_adler, length) in enumerate(parts):
        lead = b"\x78\x01" if i == 0 else b""  # zlib header: deflate, 32 KB window
        adler = _adler32_combine(adler, band_adler, length)
        tail = struct.pack(">I", adler) if i == len(parts) - 1 else b""
        _chunk(f, b"IDAT", lead + body + tail)
    _chunk(f, b"IEND", b"")


def metadata_chunks(icc: bytes | None, exif: bytes | None, dpi: tuple | None) -> list:
    """The chunks PIL writes for an ICC profile, EXIF and DPI, in the same form."""
    chunks = []
    if icc:
        chunks.append((b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)))
    if dpi:
        ppm = [int(round(d / 0.0254)) for d in dpi]  # dots per inch -> per metre
        chunks.append((b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        chunks.append((b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif))
    return chunks
