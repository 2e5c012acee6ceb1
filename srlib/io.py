"""Image I/O in one place: the decoder, folder scan, extensions, error type, atomic writer.

Every image file srlib reads goes through `open_image`, and every image or array it writes
through `atomic_write`, so data, metrics, inference and the CLI agree on what a file holds:
  * EXIF orientation is applied (pixels come out upright); unreadable EXIF data is dropped
    with a warning and the image decoded as stored, rather than failing the file;
  * a transparent colour key (tRNS in RGB/gray PNGs, GIF/palette transparency) becomes a
    real alpha channel (RGBA/LA), so it survives an upscale;
  * 16-bit (and 32-bit int) data is scaled by 65535, never by the image's own maximum, so a
    dark 16-bit photo stays dark; Pillow reads 16-bit *RGB* PNGs as 8 bit (we warn);
  * float images (mode F: float TIFF) must hold normalised data: values within
    FLOAT_TOLERANCE of [0, 1] are clipped to it, anything else (0..255 or 0..65535 data,
    HDR, NaN/inf) is an ImageLoadError, because any rescaling would be a guess;
  * grayscale stays one channel in the PIL image; the conversions repeat it to 3 channels;
  * an animated or multi-page file (GIF, APNG, WebP, TIFF) gives its first frame, with a
    warning (ExtraFramesWarning).
PIL's decompression-bomb guard stays on: `max_pixels` raises or lowers it for one call only.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from srlib import png

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".tif", ".tiff", ".webp")
FORMATS = {"png": "PNG", "jpg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}  # what save_image writes
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
FLOAT_TOLERANCE = 0.1  # float pixels in [-0.1, 1.1] are normalised data with filter overshoot
ORIENTATION = 0x0112  # EXIF tag

if TYPE_CHECKING:
    import torch


class ImageLoadError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"cannot load image {path}: {reason}")
        self.path, self.reason = Path(path), reason

    def __reduce__(self):  # picklable, so it can cross DataLoader/process-pool workers
        return type(self), (self.path, self.reason)


class LostPrecisionWarning(UserWarning):
    """The file holds more bits than Pillow decodes (16-bit RGB PNGs come out 8-bit)."""


class ExtraFramesWarning(UserWarning):
    """An animated (GIF, APNG, WebP) or multi-page (TIFF) file: only its first frame is read."""


class NotAnImageError(ImageLoadError):
    """A file that is no image at all: PIL cannot identify it and its extension is not an
    image one (a .jpg that PIL cannot identify is a broken image: ImageLoadError). The CLI
    skips these."""


# ----------------------------------------------------------------------------- reading


def find_images(folder: str | os.PathLike) -> list[Path]:
    """All image files below folder (recursive, by extension, no hidden paths), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"image folder not found: {folder}")
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        and p.is_file()
    )


@contextlib.contextmanager
def pixel_limit(limit: int | None) -> Iterator[None]:
    """PIL's bomb limit set to `limit` inside this block only, then restored.

    The limit is a process-wide global: fine for srlib (data workers are processes), but do
    not open images in threads while another thread raised it.
    """
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = limit
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


_pixel_limit = pixel_limit  # the old private name, kept for one release


@contextlib.contextmanager
def _load_errors(path: str | os.PathLike, limit: int | None) -> Iterator[None]:
    """Turn whatever opening or decoding `path` raises into ImageLoadError/NotAnImageError."""
    try:
        yield
    except (ImageLoadError, MemoryError):
        raise
    except UnidentifiedImageError as e:
        if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
            reason = "corrupt or unsupported image file (PIL cannot identify it)"
            raise ImageLoadError(path, reason) from e
        raise NotAnImageError(path, "not an image file (PIL cannot identify it)") from e
    except Image.DecompressionBombError as e:
        raise ImageLoadError(
            path,
            f"image is over the pixel limit of {limit} ({e}); if you trust this file, raise "
            "the limit explicitly: --max-pixels N on the command line, "
            "open_image(..., max_pixels=N), or PIL.Image.MAX_IMAGE_PIXELS = N (never None)",
        ) from e
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        raise ImageLoadError(path, f"{type(e).__name__}: {e.strerror or e}") from e
    except OSError as e:
        raise ImageLoadError(path, f"truncated or corrupt image file ({e})") from e
    except Exception as e:  # PIL decoders also raise SyntaxError, ValueError, EOFError, ...
        raise ImageLoadError(path, f"corrupt image file ({type(e).__name__}: {e})") from e


def open_image(
    path: str | os.PathLike, max_pixels: int | None = None, draft_side: int | None = None
) -> Image.Image:
    """Decode an image file fully, upright, in its own mode (plus alpha for a colour key).

    Refuses images over `max_pixels` (default: PIL's Image.MAX_IMAGE_PIXELS, ~89.5 MP; a
    larger value raises PIL's guard for this call only). With `draft_side`, JPEGs decode at
    1/2, 1/4 or 1/8 size as long as the longest side stays >= draft_side (much faster for big
    photos; other formats ignore it). Raises NotAnImageError for files that are no image,
    ImageLoadError for missing, truncated, corrupt or too large ones and bad float data.
    See the module docstring for what is normalised.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with _load_errors(path, limit), open(path, "rb") as f, pixel_limit(limit):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below
            im = Image.open(f)
        if limit is not None and im.width * im.height > limit:
            raise Image.DecompressionBombError(
                f"{im.width}x{im.height} = {im.width * im.height} pixels"
            )
        if im.width == 0 or im.height == 0:
            raise ValueError(f"empty image ({im.width}x{im.height})")
        frames = getattr(im, "n_frames", 1)  # before load(): counting seeks through the file
        if frames > 1 and im.format in ("GIF", "PNG", "TIFF", "WEBP"):  # not MPO's previews
            warnings.warn(
                f"{path}: an animated or multi-page {im.format} of {frames} frames; only the "
                "first frame is read",
                ExtraFramesWarning,
                stacklevel=2,
            )
        if draft_side and max(im.size) > draft_side:
            im.draft("RGB", fit_size(im.size, draft_side))  # JPEG only; a no-op elsewhere
        im.load()  # decode now, so a truncated file fails here and not later
        if im.format == "PNG" and _png_is_16bit_rgb(f):
            warnings.warn(
                f"{path}: 16-bit RGB PNG is decoded at 8 bits by Pillow; output is 8-bit",
                LostPrecisionWarning,
                stacklevel=2,
            )
    # Loaded from our own file object: closing it leaves the pixels in memory (no copy).
    try:
        ImageOps.exif_transpose(im, in_place=True)  # in place: no copy of a 24 MP photo
    except Exception as e:  # malformed EXIF (struct.error, SyntaxError, ...): one bad tag
        im.info.pop("exif", None)  # never written back by save_image
        warnings.warn(
            f"{path}: unreadable EXIF data ({type(e).__name__}: {e}); decoded without rotation",
            stacklevel=2,
        )
    if "transparency" in im.info and im.mode in ("1", "L", "P", "RGB"):
        im = im.convert("LA" if im.mode in ("1", "L") else "RGBA")  # keeps info (ICC, EXIF)
    if im.mode == "F":
        im = _normalised_float(im, path)
    return im


def _png_is_16bit_rgb(f: IO[bytes]) -> bool:
    """True for PNGs whose IHDR says 16-bit RGB(A), which Pillow reduces to 8 bit."""
    f.seek(0)
    head = f.read(26)
    return len(head) == 26 and head[24] == 16 and head[25] in (2, 6)


def _normalised_float(im: Image.Image, path: str | os.PathLike) -> Image.Image:
    """A mode-F image clipped to [0, 1], or ImageLoadError if it does not hold [0, 1] data."""
    a = np.asarray(im)
    lo, hi = (float(a.min()), float(a.max())) if np.isfinite(a).all() else (np.nan, np.nan)
    if not (-FLOAT_TOLERANCE <= lo and hi <= 1 + FLOAT_TOLERANCE):  # also catches NaN
        raise ImageLoadError(
            path,
            f"float image with values in [{lo:.4g}, {hi:.4g}]; only normalised [0, 1] data is "
            "supported (convert it to 8 or 16 bit first)",
        )
    if lo >= 0 and hi <= 1:
        return im
    out = Image.fromarray(np.clip(a, 0, 1).astype(np.float32), "F")
    out.info = dict(im.info)
    return out


def image_size(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) as stored, from the header only: cheap, catches non-images.

    `max_pixels` raises PIL's bomb limit for this call only (e.g. to size a large output).
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    with pixel_limit(limit), _load_errors(path, limit), open(path, "rb") as f:
        with Image.open(f) as im:
            return im.size


def fit_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longest side is exactly max_side (never upscaled)."""
    w, h = size
    f = min(1.0, max_side / max(w, h))
    return max(1, round(w * f)), max(1, round(h * f))


# ----------------------------------------------------------------------------- conversions


def is_gray(im: Image.Image) -> bool:
    """Whether an image is grayscale by its mode (1, L, LA, 16/32-bit int, float)."""
    return im.mode in GRAY_MODES


def _deep_gray(im: Image.Image) -> np.ndarray | None:
    """(H, W) float32 in [0, 1] of a 16/32-bit int (over 65535) or float image, else None."""
    if im.mode == "F":
        return np.clip(np.asarray(im, dtype=np.float32), 0, 1)
    if im.mode.startswith("I"):
        return np.clip(np.asarray(im, dtype=np.float32) / 65535, 0, 1)
    return None


def to_rgb_array(im: Image.Image) -> np.ndarray:
    """Any mode -> (H, W, 3) uint8 RGB (maybe read-only); transparency composited on white.

    White, so that a logo on a transparent background stays readable.
    """
    deep = _deep_gray(im)
    if deep is not None:
        gray = np.round(deep * 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode in ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")  # P/L/RGB with a colour key become RGBA too
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))  # L, 1, P, CMYK, ...


def to_tensor(im: Image.Image) -> torch.Tensor:
    """Any mode -> (3, H, W) float32 RGB in [0, 1]; 16-bit and float keep their precision."""
    import torch  # here: the downloader (srlib.datasets) uses this module without torch

    deep = _deep_gray(im)
    if deep is not None:
        return torch.from_numpy(deep)[None].expand(3, -1, -1).contiguous()
    rgb = np.array(to_rgb_array(im))  # writable copy: torch warns about read-only arrays
    return torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255).contiguous()


# ----------------------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temp file beside `path`; on success flush, fsync and rename it over `path`.

    A crash or an exception leaves the old file (or none), never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_image(
    img: Image.Image,
    path: str | os.PathLike,
    fmt: str = "png",
    quality: int = 95,
    png_compression: int | None = None,
    threads: int = 1,
) -> str | None:
    """Write `img` atomically as png/jpg/webp/tiff; returns a note if the format lost data.

    Keeps the ICC profile (where it fits the saved colour space), EXIF with its orientation
    set to 1 (the pixels are upright already, see open_image) and the DPI. `png_compression`
    is zlib's level 0-9 (None: PIL's 6); PNG is lossless at every level, and level 1 wrote a
    48 MP upscale ~6x faster than 6 for a 16% larger file (docs/benchmarks.md). With
    `threads` > 1, 8-bit PNGs of a megapixel or more are compressed on that many threads
    (srlib.png; ~5% larger than PIL's at the same level).
    """
    if fmt.lower() not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    fmt = FORMATS[fmt.lower()]
    info = img.info  # read before _for_format: its converted images have no metadata
    img, note = _for_format(img, fmt)
    kwargs: dict = {}
    icc = info.get("icc_profile")
    if icc and _icc_fits(icc, img.mode):
        kwargs["icc_profile"] = icc
    exif = _upright_exif(info.get("exif"))
    if exif:
        kwargs["exif"] = exif
    if "dpi" in info:
        # The same value, not scaled: resampling in image editors (GIMP, ImageMagick -resize)
        # keeps it too, so the print size grows with the pixels; scaling it would claim the
        # upscale holds finer real detail than the original.
        kwargs["dpi"] = info["dpi"]
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt == "PNG" and png_compression is not None:
        if not 0 <= png_compression <= 9:
            raise ValueError(f"png_compression must be 0-9, got {png_compression}")
        kwargs["compress_level"] = png_compression
    parallel = fmt == "PNG" and threads > 1 and img.mode in png.COLOR_TYPES
    parallel = parallel and img.width * img.height >= 2**20 and "transparency" not in img.info
    with atomic_write(path) as f:  # a killed run leaves no half-written output
        if parallel:
            level = 6 if png_compression is None else png_compression
            chunks = png.metadata_chunks(kwargs.get("icc_profile"), exif, kwargs.get("dpi"))
            png.write_png(img, f, level, threads, chunks)
        else:
            img.save(f, format=fmt, **kwargs)
    return note


def _for_format(img: Image.Image, fmt: str) -> tuple[Image.Image, str | None]:
    """Convert `img` to a mode `fmt` can store; returns (image, note about what was lost)."""
    notes = []
    if img.mode == "F" and fmt != "TIFF":  # only TIFF stores floats; 16 bits keep most of it
        a = np.clip(np.asarray(img), 0, 1)
        img = Image.fromarray(np.round(a * 65535).astype(np.uint16))
        notes.append(f"float reduced to 16-bit for {fmt}")
    if fmt in ("JPEG", "WEBP") and (img.mode.startswith("I;16") or img.mode == "I"):
        arr = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)
        img = Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8))
        notes.append(f"16-bit reduced to 8-bit for {fmt}")
    alpha = img.mode in ALPHA_MODES or "transparency" in img.info
    if fmt == "JPEG" and img.mode not in ("L", "RGB", "CMYK"):
        if alpha:
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            flat = Image.alpha_composite(white, img.convert("RGBA"))
            img = flat.convert("L" if img.mode in ("LA", "La") else "RGB")
            notes.append("alpha composited on white for JPEG")
        else:
            img = img.convert("RGB")
    if fmt == "WEBP" and img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if alpha else "RGB")
    return img, "; ".join(notes) or None


def _icc_fits(icc: bytes, mode: str) -> bool:
    """Whether an ICC profile's colour space (header bytes 16-19) can describe `mode`."""
    space = icc[16:20]
    if space == b"GRAY":
        return mode in GRAY_MODES
    if space == b"RGB ":
        return mode in ("RGB", "RGBA", "RGBX", "RGBa", "P", "PA")
    if space == b"CMYK":
        return mode == "CMYK"
    return True  # other spaces (Lab, ...) or an odd header: kept, as Pillow would


def _upright_exif(raw: bytes | None) -> bytes | None:
    """EXIF bytes with orientation 1, or None if there are none or they cannot be parsed."""
    if not raw:
        return None
    try:
        exif = Image.Exif()
        exif.load(raw)
        exif[ORIENTATION] = 1
        return exif.tobytes()
    except Exception:  # malformed EXIF is dropped rather than failing the save
        return None
