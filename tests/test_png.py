"""srlib.png: a PNG compressed on several threads decodes to the same pixels and metadata."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from srlib import png
from srlib.io import save_image


def _image(mode: str, h: int = 1030, w: int = 1024) -> Image.Image:
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}[mode]
    rng = np.random.default_rng(0)
    a = np.cumsum(rng.integers(0, 7, (h, w, channels)), axis=1).astype(np.uint8)  # smooth-ish
    return Image.fromarray(a[..., 0] if channels == 1 else a, mode)


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk, checking each CRC."""
    out, i = [], 8
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        kind, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        assert struct.unpack(">I", data[i + 8 + n : i + 12 + n])[0] == zlib.crc32(kind + body)
        out.append((kind, body))
        i += 12 + n
    return out


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize("threads", [2, 3])
def test_parallel_png_decodes_to_the_same_pixels(mode, threads):
    img = _image(mode)
    buf = io.BytesIO()
    png.write_png(img, buf, 1, threads, [])
    data = buf.getvalue()
    with Image.open(io.BytesIO(data)) as back:
        assert back.mode == mode and np.array_equal(np.asarray(back), np.asarray(img))
    # One zlib stream over the IDAT chunks; zlib checks its Adler-32 at the end.
    chunks = _chunks(data)
    stream = b"".join(body for kind, body in chunks if kind == b"IDAT")
    rows = np.frombuffer(zlib.decompress(stream), np.uint8).reshape(img.height, -1)
    assert set(rows[:, 0]) <= {1, 2}  # the Sub or the Up filter on every row
    assert [k for k, _ in chunks][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    assert sum(k == b"IDAT" for k, _ in chunks) == threads * 4  # bands, written in order


def test_adler32_combine_matches_zlib():
    a, b = b"some bytes" * 97, bytes(range(256)) * 33
    combined = png._adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b))
    assert combined == zlib.adler32(a + b)


def test_save_image_keeps_metadata_and_size_with_threads(tmp_path):
    img = _image("RGB")
    icc = Image.new("RGB", (1, 1)).info.get("icc_profile") or b"\0" * 128 + b"RGB " * 4
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: written upright, orientation 1 (io._upright_exif)
    exif[0x010F] = "srlib test"
    img.info.update(dpi=(72, 72), exif=exif.tobytes())
    paths = {}
    for threads in (1, 2):  # PIL's own writer, then the parallel one
        paths[threads] = tmp_path / f"t{threads}.png"
        save_image(img, paths[threads], png_compression=1, threads=threads)
    with Image.open(paths[1]) as one, Image.open(paths[2]) as two:
        assert np.array_equal(np.asarray(one), np.asarray(two))
        assert one.info["dpi"] == two.info["dpi"]
        assert one.getexif()[0x010F] == two.getexif()[0x010F] == "srlib test"
        assert one.getexif()[0x0112] == two.getexif()[0x0112] == 1
    # Smooth along the rows: Sub is chosen, and the file is within 10% of PIL's (which filters
    # each row its own way); Up alone made it 2.2x larger.
    assert paths[2].stat().st_size < 1.1 * paths[1].stat().st_size
    del icc


def test_small_odd_or_keyed_images_use_pils_writer(tmp_path):
    small = _image("RGB", 64, 64)
    save_image(small, tmp_path / "s.png", threads=2)
    assert sum(k == b"IDAT" for k, _ in _chunks((tmp_path / "s.png").read_bytes())) == 1
    deep = Image.fromarray(np.full((1030, 1024), 40000, np.uint16))
    save_image(deep, tmp_path / "d.png", threads=2)  # 16-bit: PIL writes it
    with Image.open(tmp_path / "d.png") as back:
        assert np.array_equal(np.asarray(back).astype(np.uint16), np.asarray(deep))
    with pytest.raises(ValueError, match="takes L, RGB, LA, RGBA"):
        png.write_png(Image.new("CMYK", (4, 4)), io.BytesIO(), 1, 2, [])
