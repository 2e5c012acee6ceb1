"""Tests for srlib.io: one decoder for data, metrics and inference; odd, broken and huge files;
metadata through an upscale; atomic writes."""

import io
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms

from srlib import data, infer, metrics
from srlib.cli import main
from srlib.io import (
    IMAGE_EXTENSIONS,
    ExtraFramesWarning,
    ImageLoadError,
    LostPrecisionWarning,
    NotAnImageError,
    find_images,
    is_gray,
    open_image,
    pixel_limit,
    save_image,
    to_rgb_array,
    to_tensor,
)
from srlib.models import UNetUpscaler
from srlib.training import save_checkpoint

try:
    from tests._images import png16
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from _images import png16


def _noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w) if c == 1 else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _with_chunk(png: bytes, tag: bytes, body: bytes) -> bytes:
    """`png` with one more chunk right after IHDR (8-byte signature + 25-byte IHDR)."""
    crc = zlib.crc32(tag + body) & 0xFFFFFFFF
    chunk = struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)
    return png[:33] + chunk + png[33:]


def _png_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kwargs)
    return buf.getvalue()


def _all_loaders(path: Path) -> tuple[np.ndarray, torch.Tensor]:
    """What data and metrics make of one file, checked to agree to the 8-bit level."""
    arr = data.load_image(path)  # (H, W, 3) uint8
    ten = metrics.load_image(path)  # (3, H, W) float32
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
    assert ten.dtype == torch.float32 and ten.shape == (3, *arr.shape[:2])
    as8 = (ten * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(arr, as8), "data and metrics decode this file differently"
    return arr, ten


@pytest.fixture(scope="module")
def unet() -> UNetUpscaler:
    torch.manual_seed(0)
    m = UNetUpscaler(2, (8, 16, 16), (16, 8), 0, head_channels=0)
    return m.eval()


# Tiny tensors: one torch thread in every test here (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def ckpt(tmp_path: Path, unet: UNetUpscaler) -> Path:
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, model=unet.state_dict(), model_config=unet.config, step=1, history={})
    return path


# ----------------------------------------------------------------------------- modes


def test_grayscale_is_one_channel_in_pil_three_in_arrays(tmp_path: Path) -> None:
    gray = _noise(6, 9, c=1)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    im = open_image(tmp_path / "g.png")
    assert im.mode == "L" and is_gray(im)
    arr, ten = _all_loaders(tmp_path / "g.png")
    assert all(np.array_equal(arr[..., i], gray) for i in range(3))
    assert torch.equal(ten[0], ten[2])


def test_rgba_on_white_in_arrays_and_kept_by_infer(tmp_path: Path, unet) -> None:
    rgba = np.dstack([_noise(8, 10), np.full((8, 10), 255, np.uint8)])
    rgba[:, :5, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    arr, _ = _all_loaders(tmp_path / "a.png")
    assert (arr[:, :5] == 255).all() and np.array_equal(arr[:, 5:], rgba[:, 5:, :3])
    assert infer.upscale_image(unet, open_image(tmp_path / "a.png")).mode == "RGBA"


def test_palette_with_transparency_becomes_rgba(tmp_path: Path) -> None:
    pal = Image.fromarray(np.tile(np.arange(8, dtype=np.uint8) % 2, (4, 1)), "P")
    pal.putpalette([0, 0, 0, 255, 0, 0])
    pal.save(tmp_path / "p.png", transparency=0)
    im = open_image(tmp_path / "p.png")
    assert im.mode == "RGBA" and (np.asarray(im)[:, 0::2, 3] == 0).all()
    arr, _ = _all_loaders(tmp_path / "p.png")
    assert (arr[:, 0::2] == 255).all() and (arr[:, 1::2] == (255, 0, 0)).all()


@pytest.mark.parametrize("mode", ["rgb16", "gray16", "int32"])
def test_deep_data_is_scaled_by_65535_everywhere(tmp_path: Path, mode: str) -> None:
    # A dark image (max 1000 of 65535) must stay dark: scaled by the bit depth, not its max.
    ramp = np.linspace(0, 1000, 4 * 64).reshape(4, 64).round().astype(np.uint16)
    path = tmp_path / f"{mode}.png"
    if mode == "rgb16":
        path.write_bytes(png16(np.dstack([ramp] * 3)))
        with pytest.warns(LostPrecisionWarning, match="16-bit RGB"):
            assert open_image(path).mode == "RGB"  # Pillow reads it at 8 bits
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # both measure at 8 bits anyway: no warning there
            data.load_image(path), metrics.load_image(path)
    elif mode == "gray16":
        path.write_bytes(png16(ramp))
    else:  # 32-bit ints (TIFF "I"): values over 65535 are clipped, not rescaled
        path = tmp_path / "int32.tif"
        Image.fromarray(np.concatenate([ramp, [[70000] * 64]]).astype(np.int32), "I").save(path)
    arr, ten = _all_loaders(path)
    expected = np.round(ramp / 257)
    assert np.abs(arr[:4, :, 0].astype(int) - expected).max() <= 1 and arr[:4].max() <= 4
    if mode != "rgb16":  # gray keeps 16-bit precision in the float tensor
        assert torch.allclose(ten[0, :4], torch.from_numpy(ramp / 65535).float(), atol=1e-7)
    if mode == "int32":
        assert (arr[4] == 255).all()


def test_float_tiff_normalised_clipped_else_clear_error(tmp_path: Path, unet) -> None:
    ramp = np.linspace(-0.05, 1.05, 6 * 8, dtype=np.float32).reshape(6, 8)  # filter overshoot
    Image.fromarray(ramp, "F").save(tmp_path / "f.tif")
    im = open_image(tmp_path / "f.tif")
    assert im.mode == "F" and is_gray(im)
    assert np.array_equal(np.asarray(im), np.clip(ramp, 0, 1))
    arr, ten = _all_loaders(tmp_path / "f.tif")
    assert torch.allclose(ten[0], torch.from_numpy(np.clip(ramp, 0, 1)))
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    sr = infer.upscale_image(unet, im)  # float in, float out
    assert sr.mode == "F" and sr.size == (16, 12)
    save_image(sr, tmp_path / "sr.tif", "tiff")
    assert Image.open(tmp_path / "sr.tif").mode == "F"
    assert "16-bit" in save_image(sr, tmp_path / "sr.png")
    assert Image.open(tmp_path / "sr.png").mode == "I;16"

    for name, bad in [("255.tif", ramp * 255), ("nan.tif", np.full((4, 4), np.nan, np.float32))]:
        Image.fromarray(bad.astype(np.float32), "F").save(tmp_path / name)
        for load in (open_image, data.load_image, metrics.load_image):
            with pytest.raises(ImageLoadError, match=rf"{name}.*normalised \[0, 1\]"):
                load(tmp_path / name)


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    assert open_image(tmp_path / "cmyk.jpg").mode == "CMYK"  # infer converts it itself
    arr, _ = _all_loaders(tmp_path / "cmyk.jpg")
    assert arr[..., 0].mean() > 245 and arr[..., 1:].mean() < 10  # red


def test_exif_rotated_upright_everywhere(tmp_path: Path) -> None:
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255  # white left half; orientation 6 shows it on top
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    assert open_image(tmp_path / "rot.jpg").size == (20, 40)
    arr, _ = _all_loaders(tmp_path / "rot.jpg")
    assert arr.shape == (40, 20, 3) and arr[:15].mean() > 240 and arr[-15:].mean() < 15


# ----------------------------------------------------------------------------- bad files


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    png = _png_bytes(Image.fromarray(_noise(64, 64)))
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    for name, reason in [("cut.png", "truncated"), ("junk.png", "corrupt")]:
        for load in (open_image, data.load_image, metrics.load_image):
            with pytest.raises(ImageLoadError, match=rf"{name}.*{reason}") as info:
                load(tmp_path / name)
            assert not isinstance(info.value, NotAnImageError)  # an image extension: an error
    with pytest.raises(ImageLoadError, match="FileNotFoundError"):
        open_image(tmp_path / "missing.png")


def test_not_an_image_and_error_aliases(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a picture")
    (tmp_path / "fake.jpg").write_text("not a picture either")
    with pytest.raises(NotAnImageError, match="notes.txt: not an image"):
        open_image(tmp_path / "notes.txt")
    with pytest.raises(ImageLoadError, match="fake.jpg: corrupt or unsupported") as info:
        open_image(tmp_path / "fake.jpg")
    assert not isinstance(info.value, NotAnImageError)  # the CLI reports it as an error
    # One error type: the old names are the same classes, and it crosses process boundaries.
    assert data.ImageLoadError is infer.ImageLoadError is ImageLoadError
    assert infer.NotAnImageError is NotAnImageError and issubclass(NotAnImageError, ValueError)
    copy = pickle.loads(pickle.dumps(info.value))
    assert str(copy) == str(info.value) and copy.reason == info.value.reason


def test_decompression_bomb_guard_stays_on(tmp_path: Path, monkeypatch) -> None:
    # A 50000 x 50000 header (2.5 gigapixels) with almost no data: refused before decoding.
    header = Image.new("L", (1, 1))
    bomb = bytearray(_png_bytes(header))
    bomb[16:24] = struct.pack(">II", 50_000, 50_000)
    bomb[29:33] = struct.pack(">I", zlib.crc32(bytes(bomb[12:29])) & 0xFFFFFFFF)
    (tmp_path / "bomb.png").write_bytes(bytes(bomb))
    limit = Image.MAX_IMAGE_PIXELS
    for load in (open_image, data.load_image, metrics.load_image):
        with pytest.raises(ImageLoadError, match="pixel limit.*--max-pixels.*MAX_IMAGE_PIXELS"):
            load(tmp_path / "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == limit

    # max_pixels moves the limit for one call only, up or down, and restores PIL's.
    Image.fromarray(_noise(64, 64)).save(tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="pixel limit of 1000"):
        data.load_image(tmp_path / "ok.png")  # the default is PIL's current limit
    assert open_image(tmp_path / "ok.png", max_pixels=64 * 64).size == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 1000
    with pytest.raises(ImageLoadError, match="pixel limit of 4095"):
        open_image(tmp_path / "ok.png", max_pixels=64 * 64 - 1)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_pixel_limit_is_public_and_restores_pils_limit(monkeypatch) -> None:
    import srlib.io

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(RuntimeError, match="inside"), pixel_limit(5000):
        assert Image.MAX_IMAGE_PIXELS == 5000
        with pixel_limit(None):  # None: PIL's guard off inside this block only
            assert Image.MAX_IMAGE_PIXELS is None
        assert Image.MAX_IMAGE_PIXELS == 5000
        raise RuntimeError("inside")
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored, also after an error
    assert srlib.io._pixel_limit is pixel_limit  # the old name works for one release


def test_data_and_metrics_list_the_same_files(tmp_path: Path) -> None:
    d = tmp_path / "hr"
    (d / "sub").mkdir(parents=True)
    (d / ".hidden").mkdir()
    for i, name in enumerate(["a.png", "b.JPG", "c.gif", "d.ppm", "e.webp", "sub/f.bmp"]):
        Image.fromarray(_noise(24, 24, seed=i)).save(d / name)
    Image.fromarray(_noise(24, 24)).save(d / ".hidden" / "g.png")
    Image.fromarray(_noise(24, 24)).save(d / ".h.png")
    (d / "readme.txt").write_text("not listed")
    listed = data.find_images(d)
    assert listed == find_images(d) and len(listed) == 6
    assert {p.suffix.lower() for p in listed} <= set(IMAGE_EXTENSIONS)
    layout, items = metrics._find_images(d, 2)
    assert layout == "hr_folder" and [hr for _, hr, _ in items] == listed
    assert [name for name, _, _ in items] == ["a", "b", "c", "d", "e", "sub/f"]
    assert data.IMAGE_EXTENSIONS is metrics.IMAGE_EXTENSIONS is IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------- bugs


@pytest.mark.parametrize("exif", [b"MM\x00*", b"garbage!"])  # struct.error, SyntaxError
def test_bug_a_malformed_png_exif_does_not_abort_a_cli_batch(tmp_path: Path, ckpt, exif, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    png = _png_bytes(Image.fromarray(_noise(8, 12)))
    (src / "a_bad.png").write_bytes(_with_chunk(png, b"eXIf", exif))
    (src / "b_good.png").write_bytes(png)
    assert main(["upscale", str(src), "-o", str(out), "--checkpoint", str(ckpt), "-q"]) == 0
    assert sorted(p.name for p in out.rglob("*.png")) == ["a_bad_x2.png", "b_good_x2.png"]
    streams = capsys.readouterr()
    assert "unreadable EXIF" in streams.out + streams.err
    assert Image.open(out / "a_bad_x2.png").size == (24, 16)  # decoded as stored
    assert "exif" not in Image.open(out / "a_bad_x2.png").info  # the bad EXIF is not copied


def test_bug_b_rgb_transparent_colour_keeps_alpha(tmp_path: Path, unet) -> None:
    rgb = _noise(8, 10)
    rgb[:, :5] = (0, 0, 0)  # the key colour: transparent
    rgb[:, 5:] |= 1  # nothing else is pure black
    Image.fromarray(rgb).save(tmp_path / "key.png", transparency=(0, 0, 0))
    img = infer.open_image(tmp_path / "key.png")
    assert img.mode == "RGBA"
    save_image(infer.upscale_image(unet, img), tmp_path / "sr.png")
    sr = np.asarray(Image.open(tmp_path / "sr.png"))
    assert sr.shape == (16, 20, 4) and (sr[:, :9, 3] == 0).all() and (sr[:, 11:, 3] == 255).all()
    arr, _ = _all_loaders(tmp_path / "key.png")
    assert (arr[:, :5] == 255).all()  # on white, as any transparency


def _gray_icc() -> bytes:
    """A minimal ICC header for a gray profile (Pillow embeds profiles without checking)."""
    head = bytearray(128)
    head[0:4] = struct.pack(">I", 128)
    head[12:20], head[36:40] = b"mntrGRAY", b"acsp"
    return bytes(head)


def test_bug_c_icc_profile_survives_format_conversions(tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgba = Image.fromarray(_noise(8, 8, c=4), "RGBA")
    rgba.info["icc_profile"] = srgb
    assert "alpha" in infer.save_image(rgba, tmp_path / "a.jpg", "jpg")
    assert Image.open(tmp_path / "a.jpg").info.get("icc_profile") == srgb
    g16 = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    g16.info["icc_profile"] = _gray_icc()
    assert "8-bit" in infer.save_image(g16, tmp_path / "g.jpg", "jpg")
    assert Image.open(tmp_path / "g.jpg").info.get("icc_profile") == _gray_icc()
    gray = Image.fromarray(_noise(8, 8, c=1), "L")
    gray.info["icc_profile"] = _gray_icc()
    save_image(gray, tmp_path / "g.webp", "webp")  # WebP has no gray: a gray profile would lie
    assert "icc_profile" not in Image.open(tmp_path / "g.webp").info


@pytest.mark.parametrize("fmt", ["png", "jpg", "tiff"])
def test_bug_d_exif_and_dpi_survive_an_upscale(tmp_path: Path, unet, fmt: str) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated on display
    exif[0x010F] = "srlib camera"  # Make
    exif.get_ifd(0x8769)[0x9003] = "2024:05:06 07:08:09"  # DateTimeOriginal, in the Exif IFD
    Image.fromarray(_noise(8, 12)).save(tmp_path / "in.jpg", exif=exif, dpi=(300, 300))
    img = infer.open_image(tmp_path / "in.jpg")
    sr = infer.upscale_image(unet, img)
    infer.save_image(sr, tmp_path / f"out.{fmt}", fmt)
    out = Image.open(tmp_path / f"out.{fmt}")
    assert out.size == (16, 24)  # upright: the stored 12 x 8 turned by 90 degrees, then x2
    got = out.getexif()
    assert got[0x010F] == "srlib camera" and got.get(0x0112) == 1  # pixels are upright
    assert got.get_ifd(0x8769)[0x9003] == "2024:05:06 07:08:09"
    assert np.allclose(out.info["dpi"], (300, 300), atol=0.01)  # same value, not scaled


# ----------------------------------------------------------------------------- writing


def test_writes_are_atomic(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.png"
    save_image(Image.fromarray(_noise(4, 4)), path)
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"half an image")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(Image.fromarray(_noise(4, 4, seed=1)), path)
    assert path.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))
    monkeypatch.undo()

    def broken_npy(f, arr):
        f.write(b"\x93NUMPY half")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", broken_npy)
    with pytest.raises(OSError, match="disk full"):
        data._cache_one(path, tmp_path / "cache" / "a.png.npy", 64)
    assert not list((tmp_path / "cache").iterdir())  # neither a half file nor a temp file


def test_conversions_of_in_memory_images() -> None:
    """to_rgb_array/to_tensor also take PIL images that did not come from open_image."""
    key = Image.fromarray(np.zeros((2, 2, 3), np.uint8))
    key.info["transparency"] = (0, 0, 0)
    assert (to_rgb_array(key) == 255).all()
    la = Image.fromarray(np.dstack([np.full((2, 2), 10, np.uint8), np.full((2, 2), 255, np.uint8)]))
    assert la.mode == "LA" and is_gray(la) and (to_tensor(la) * 255).round().eq(10).all()


def test_png_compression_levels_are_lossless_and_trade_size(tmp_path):
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (16, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    img = Image.fromarray(
        np.clip(smooth + rng.integers(0, 3, smooth.shape), 0, 255).astype(np.uint8)
    )
    sizes = {}
    for level in (0, 1, 9, None):
        path = tmp_path / f"l{level}.png"
        save_image(img, path, png_compression=level)
        with Image.open(path) as back:
            assert np.array_equal(np.asarray(back), np.asarray(img))  # lossless at every level
        sizes[level] = path.stat().st_size
    assert sizes[0] > sizes[1] > sizes[9] and sizes[None] <= sizes[1]
    with pytest.raises(ValueError, match="0-9"):
        save_image(img, tmp_path / "bad.png", png_compression=10)
    save_image(img, tmp_path / "a.jpg", "jpg", png_compression=1)  # ignored for other formats


def _frames(path: Path, n: int, **save) -> Path:
    """An n-frame file (animated GIF/PNG/WebP, multi-page TIFF): frame i is grey level 60 i."""
    frames = [Image.new("RGB", (12, 8), (60 * i,) * 3) for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], **save)
    return path


@pytest.mark.parametrize("name", ["anim.gif", "anim.png", "anim.webp", "pages.tif"])
def test_animated_and_multipage_files_warn_that_one_frame_is_upscaled(
    tmp_path: Path, ckpt, capsys, name: str
) -> None:
    path = _frames(tmp_path / "in" / name, 3)
    with pytest.warns(ExtraFramesWarning, match="of 3 frames; only the first frame is read"):
        im = open_image(path)
    assert np.asarray(im.convert("L")).max() == 0  # the first frame, fully decoded
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # training crops take the first frame silently
        assert data.load_image(path).shape == (8, 12, 3)
    out = tmp_path / "out"
    assert main(["upscale", str(path), "-o", str(out), "--checkpoint", str(ckpt), "-q"]) == 0
    streams = capsys.readouterr()
    assert f"warning: {path}: an animated or multi-page" in streams.err
    assert f"ok: {path}" in streams.out
    # One frame: no warning.
    single = _frames(tmp_path / "in" / f"single_{name}", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_image(single)
