"""Paper-grade SR metrics (PSNR/SSIM on Y, RGB PSNR, detail ratio, LPIPS) and benchmark evaluation.

The protocol follows the SR literature (SRCNN, VDSR, EDSR, ...) so our numbers can sit next to
published tables:
- images are quantised to 8 bit (round(x * 255), clamped) before anything is measured;
- PSNR and SSIM are computed on the Y channel of ITU-R BT.601 as MATLAB's rgb2ycbcr gives it for
  8-bit images: Y = 16 + 65.481 R + 128.553 G + 24.966 B (RGB in [0, 1]), rounded to an integer
  in [16, 235]. Grayscale images are measured on their gray level (0..255) itself, because the
  published MATLAB scripts only call rgb2ycbcr on colour images (this is what makes Set14, whose
  img_003 is gray, match the published bicubic figures);
- `scale` pixels are cropped from every border (`crop_border`, default = scale);
- LR inputs are made with MATLAB's imresize (bicubic, antialiased, on uint8), re-implemented
  in srlib.resize; it re-creates the Set5/Set14 LR files bit for bit
  (benchmarks/bicubic_check.py). The baselines are labelled by implementation, e.g.
  "bicubic (MATLAB)", because torch's bicubic (the models' base upscale) is another kernel.
Besides: RGB PSNR (`psnr_rgb`, our own, not the paper convention), a weight-free detail ratio
(`detail_ratio`), LPIPS when its weights are already on disk, and deterministic degraded copies
of a benchmark (`degraded_benchmark`: its LR files JPEG-compressed or noisy, see CONDITIONS).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
import zlib
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from skimage.metrics import structural_similarity
from torch import Tensor, nn

from srlib.io import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS  # re-exported: one list, srlib.io
from srlib.io import (
    LostPrecisionWarning,
    atomic_write,
    find_images,
    is_gray,
    open_image,
    save_image,
    to_rgb_array,
    to_tensor,
)
from srlib.resize import BASELINES, matlab_bicubic, matlab_bilinear, round_half_up
from srlib.resize import imresize as imresize  # re-exported: metrics.imresize still works
from srlib.resize import make_lq as make_lq  # re-exported, used by evaluate
from srlib.resize import mod_crop as mod_crop  # re-exported, used by evaluate

METRIC_KEYS = ("psnr_y", "ssim_y", "psnr_rgb", "detail", "lpips")

# --------------------------------------------------------------------------------------------
# Baselines (the resize functions live in srlib.resize; these names stay importable from here)

bicubic = matlab_bicubic  # "bicubic (MATLAB)": the papers' baseline, not torch's bicubic
bilinear = matlab_bilinear  # "bilinear (MATLAB)"

# evaluate()'s baseline names before srlib.resize; as in the papers, they meant MATLAB's kernels.
_BASELINE_ALIASES = {"bicubic": "bicubic (MATLAB)", "bilinear": "bilinear (MATLAB)"}


# --------------------------------------------------------------------------------------------
# Pixel metrics


def quantize(img: Tensor) -> Tensor:
    """Round a [0, 1] image to 8-bit levels, returned as float in [0, 1] (as if saved to PNG)."""
    return round_half_up(img.clamp(0, 1) * 255) / 255


def rgb_to_y(img: Tensor) -> Tensor:
    """BT.601 luma as MATLAB rgb2ycbcr: (..., 3, H, W) in [0, 1] -> (..., H, W) in [16, 235].

    A 1-channel (gray) image is returned as its gray level 255 * v, in [0, 255], as the
    published evaluation scripts do (they skip rgb2ycbcr for gray images).
    """
    if img.ndim < 3 or img.shape[-3] not in (1, 3):
        raise ValueError(f"expected (..., 1 or 3, H, W), got shape {tuple(img.shape)}")
    if img.shape[-3] == 1:
        return 255.0 * img[..., 0, :, :]
    r, g, b = img.unbind(-3)
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def rgb_to_gray(img: Tensor) -> Tensor:
    """Full-range BT.601 luma (..., 3, H, W) -> (..., 1, H, W) in [0, 1]; R = G = B = v gives v."""
    return ((rgb_to_y(img) - 16.0) / 219.0).unsqueeze(-3)


def _prepare(sr: Tensor, gt: Tensor, scale: int, crop_border: int | None) -> tuple[Tensor, Tensor]:
    """Check shapes, quantise to 8 bit, crop the border: float64 (B, C, H', W') in [0, 1]."""
    if sr.shape != gt.shape:
        raise ValueError(f"sr and gt shapes differ: {tuple(sr.shape)} vs {tuple(gt.shape)}")
    if sr.ndim == 3:
        sr, gt = sr[None], gt[None]
    if sr.ndim != 4 or sr.shape[1] not in (1, 3):
        raise ValueError(f"expected (C, H, W) or (B, C, H, W) with C = 1 or 3, got {sr.shape}")
    c = scale if crop_border is None else crop_border
    if c < 0:
        raise ValueError(f"crop_border must be >= 0, got {c}")
    h, w = sr.shape[-2:]
    if h - 2 * c <= 0 or w - 2 * c <= 0:
        raise ValueError(f"image {h}x{w} is too small to crop {c} pixels from each border")
    sr = sr.detach()[..., c : h - c, c : w - c].to("cpu", torch.float64)
    gt = gt.detach()[..., c : h - c, c : w - c].to("cpu", torch.float64)
    return quantize(sr), quantize(gt)


def _y8(img: Tensor) -> Tensor:
    """Y (or gray level) of a quantised image rounded to integers, as rgb2ycbcr gives for uint8."""
    return round_half_up(rgb_to_y(img))


def _psnr_255(a: Tensor, b: Tensor) -> float:
    """PSNR in dB for data on a 0-255 scale; inf when identical."""
    mse = torch.mean((a - b) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _ssim_255(a: Tensor, b: Tensor) -> float:
    """SSIM of two (H, W) images on a 0-255 scale with the Wang et al. settings (skimage)."""
    if min(a.shape) < 11:
        raise ValueError(f"SSIM needs at least 11x11 pixels after cropping, got {tuple(a.shape)}")
    return structural_similarity(
        a.numpy(),
        b.numpy(),
        data_range=255,
        gaussian_weights=True,  # 11x11 Gaussian window: sigma 1.5, truncated at 3.5 sigma
        sigma=1.5,
        use_sample_covariance=False,
        K1=0.01,
        K2=0.03,
    )


def _band_energy(y: Tensor, cutoff: float) -> float:
    """Spectral energy of (H, W) above `cutoff` cycles/pixel (radial), Hann-windowed."""
    h, w = y.shape
    # The window stops the image's hard edges (FFT wrap-around) from posing as detail.
    win = torch.outer(
        torch.hann_window(h, periodic=False, dtype=torch.float64),
        torch.hann_window(w, periodic=False, dtype=torch.float64),
    )
    spec = torch.fft.rfft2((y - y.mean()) * win).abs() ** 2  # (H, W // 2 + 1)
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    # rfft2 holds the non-redundant half; the ratio does not care about the factor 2.
    return spec[(fx**2 + fy**2).sqrt() > cutoff].sum().item()


def _detail(a: Tensor, b: Tensor, cutoff: float) -> float:
    """Band energy of a over that of b; nan if b has none (1.0 if neither has)."""
    e_a, e_b = _band_energy(a, cutoff), _band_energy(b, cutoff)
    if e_b == 0:
        return 1.0 if e_a == 0 else math.nan
    return e_a / e_b


def _mean(values: list[float]) -> float:
    """Mean over the images of a batch."""
    return float(np.mean(values))


def psnr_y(sr: Tensor, gt: Tensor, scale: int, crop_border: int | None = None) -> float:
    """PSNR (dB) on the 8-bit BT.601 Y channel, border cropped; mean over a batch."""
    sr, gt = _prepare(sr, gt, scale, crop_border)
    return _mean([_psnr_255(_y8(s), _y8(g)) for s, g in zip(sr, gt, strict=True)])


def psnr_rgb(sr: Tensor, gt: Tensor, scale: int, crop_border: int | None = None) -> float:
    """PSNR (dB) over all RGB channels (not the paper convention), 8-bit, border cropped."""
    sr, gt = _prepare(sr, gt, scale, crop_border)
    return _mean([_psnr_255(s * 255, g * 255) for s, g in zip(sr, gt, strict=True)])


def ssim_y(sr: Tensor, gt: Tensor, scale: int, crop_border: int | None = None) -> float:
    """SSIM on the 8-bit Y channel (Wang et al. 2004), border cropped; mean over a batch.

    Computed by skimage.metrics.structural_similarity with the settings of the original MATLAB
    code: 11x11 Gaussian window with sigma 1.5 (gaussian_weights=True, sigma=1.5), K1 = 0.01,
    K2 = 0.03, population covariance (use_sample_covariance=False), data_range=255; the SSIM
    map is averaged over the valid region.
    """
    sr, gt = _prepare(sr, gt, scale, crop_border)
    return _mean([_ssim_255(_y8(s), _y8(g)) for s, g in zip(sr, gt, strict=True)])


def detail_ratio(
    sr: Tensor,
    gt: Tensor,
    scale: int,
    crop_border: int | None = None,
    cutoff: float | None = None,
) -> float:
    """High-frequency energy of sr over that of gt on Y (1 = as detailed as gt, < 1 = blurry).

    Energy is the power spectrum (Hann-windowed FFT of the mean-free 8-bit Y channel) above
    `cutoff` cycles/pixel, by default 0.5 / scale: the Nyquist frequency of the LR input,
    i.e. exactly the detail the model had to invent (for x2 that is half the HR Nyquist).
    Needs no network weights. > 1 means over-sharpening, ringing or noise; nan when gt has
    no energy in the band (a flat image). Mean over a batch.
    """
    cutoff = 0.5 / scale if cutoff is None else cutoff
    if not 0 < cutoff < 0.5 * math.sqrt(2):
        raise ValueError(f"cutoff must be in (0, 0.707) cycles/pixel, got {cutoff}")
    sr, gt = _prepare(sr, gt, scale, crop_border)
    return _mean([_detail(_y8(s), _y8(g), cutoff) for s, g in zip(sr, gt, strict=True)])


# --------------------------------------------------------------------------------------------
# LPIPS (optional: needs the `lpips` package and AlexNet ImageNet weights already on disk)

_LPIPS: dict[str, Any] = {}


def lpips_status() -> tuple[bool, str]:
    """Whether LPIPS can run here without downloading anything, and why not."""
    try:
        import lpips  # noqa: F401
        from torchvision.models import AlexNet_Weights
    except ImportError as e:
        return False, f"LPIPS unavailable: {e.name} is not installed (pip install lpips)"
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(AlexNet_Weights.IMAGENET1K_V1.url).name
    if not path.is_file():
        return False, f"LPIPS unavailable: AlexNet weights not cached at {path} (never downloaded)"
    return True, str(path)


def _lpips_model() -> nn.Module:
    """LPIPS(alex) with the backbone loaded from the local torch hub cache only."""
    ok, path = lpips_status()
    if not ok:
        raise RuntimeError(path)
    if path not in _LPIPS:
        import lpips

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecated `pretrained=` warnings
            # pnet_rand=True: build the backbone without weights so lpips cannot download them.
            model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
        state = torch.load(path, map_location="cpu", weights_only=True)
        # lpips splits alexnet.features into slices whose children keep their original index.
        backbone = {}
        for key in model.net.state_dict():
            _, index, param = key.split(".")
            backbone[key] = state[f"features.{index}.{param}"]
        model.net.load_state_dict(backbone)
        _LPIPS.clear()
        _LPIPS[path] = model.eval()
    return _LPIPS[path]


def lpips_distance(sr: Tensor, gt: Tensor) -> float:
    """LPIPS (AlexNet, v0.1) between (B, 3, H, W) images in [0, 1]; nan if not available."""
    if not lpips_status()[0]:
        return math.nan
    model = _lpips_model()
    sr, gt = sr.detach().float().cpu(), gt.detach().float().cpu()
    if sr.ndim == 3:
        sr, gt = sr[None], gt[None]
    with torch.no_grad():
        return model(sr * 2 - 1, gt * 2 - 1).mean().item()  # lpips expects [-1, 1]


# --------------------------------------------------------------------------------------------
# Image loading


def _read_image(path: Path) -> tuple[Tensor, bool]:
    """(3, H, W) float RGB in [0, 1] and whether the file itself is grayscale (see srlib.io)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LostPrecisionWarning)  # measured at 8 bits anyway
        im = open_image(path)  # ImageLoadError (a ValueError) naming the file if it cannot
    return to_tensor(im), is_gray(im)


def load_image(path: str | os.PathLike) -> Tensor:
    """Read an image file as RGB float (3, H, W) in [0, 1]; gray, 16-bit, RGBA, CMYK, EXIF ok."""
    return _read_image(Path(path))[0]


# --------------------------------------------------------------------------------------------
# Benchmark evaluation


def _find_images(folder: Path, scale: int) -> tuple[str, list[tuple[str, Path, Path | None]]]:
    """Return (layout, [(name, hr_path, lr_path or None)]) for a benchmark or plain HR folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    sub = folder / f"image_SRF_{scale}"
    bench = sub if sub.is_dir() else folder
    hrs = sorted(bench.glob(f"*_SRF_{scale}_HR.png"))
    if hrs:
        items = []
        for hr in hrs:
            lr = hr.with_name(hr.name.replace("_HR.png", "_LR.png"))
            if not lr.is_file():
                raise FileNotFoundError(f"benchmark HR image {hr} has no LR partner {lr.name}")
            items.append((hr.name.replace(f"_SRF_{scale}_HR.png", ""), hr, lr))
        return "benchmark", items
    if list(folder.glob("image_SRF_*")) or list(folder.glob("*_SRF_*_HR.png")):
        raise FileNotFoundError(f"{folder} is a benchmark folder without data for x{scale}")
    files = find_images(folder)  # the same files srlib.data would train on
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    names = [p.relative_to(folder).with_suffix("").as_posix() for p in files]  # sub/a.png: sub/a
    return "hr_folder", list(zip(names, files, [None] * len(files), strict=True))


def _as_upscaler(
    model_or_fn: nn.Module | Callable[[Tensor], Tensor] | str, scale: int
) -> tuple[Callable[[Tensor], Tensor], str]:
    """Wrap a model, a callable or a baseline name into fn(lq (1,3,h,w)) -> sr; plus its name."""
    if isinstance(model_or_fn, str):
        label = _BASELINE_ALIASES.get(model_or_fn, model_or_fn)
        if label not in BASELINES:
            raise ValueError(f"unknown baseline {model_or_fn!r}; use one of {sorted(BASELINES)}")
        base = BASELINES[label]
        return (lambda lq: base(lq, scale)), label  # the table shows whose kernel it is
    if isinstance(model_or_fn, nn.Module):
        model = model_or_fn
        model_scale = getattr(model, "scale", scale)
        if model_scale != scale:
            raise ValueError(f"model upscales x{model_scale} but evaluation asked for x{scale}")
        param = next(iter(model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

        def run(lq: Tensor) -> Tensor:
            return model(lq.to(device, dtype)).float().cpu()

        return run, type(model).__name__
    if callable(model_or_fn):
        return model_or_fn, getattr(model_or_fn, "__name__", type(model_or_fn).__name__)
    raise TypeError(f"expected an nn.Module, a callable or a baseline name, got {model_or_fn!r}")


def evaluate(
    model_or_fn: nn.Module | Callable[[Tensor], Tensor] | str,
    folder: str | os.PathLike,
    scale: int,
    crop_border: int | None = None,
    with_lpips: bool = True,
    max_images: int | None = None,
    own_lq: bool = False,
) -> dict[str, Any]:
    """Evaluate an upscaler on a benchmark folder (given LR) or a plain HR folder (own LR).

    `model_or_fn`: an nn.Module, a callable lq -> sr, or a key of srlib.resize.BASELINES
    ("bicubic (MATLAB)", "bicubic (torch)", ...; plain "bicubic"/"bilinear" mean MATLAB's),
    reported under that label. Layouts: (a) `folder/image_SRF_<s>/img_XXX_SRF_<s>_{HR,LR}.png`
    (or that subfolder itself),
    using the given LR, or with own_lq=True ignoring it; (b) any folder of HR images. Without
    a given LR the HR is mod-cropped to `scale` and the LR made with `make_lq`. Metrics per
    image: psnr_y, ssim_y, psnr_rgb, detail (see detail_ratio), lpips (nan if unavailable).
    Returns {"method", "dataset", "scale", "layout", "lq", "images": [per-image dicts],
    "mean": {metric: mean over images}, "notes": [...]}.
    """
    folder = Path(folder)
    layout, items = _find_images(folder, scale)
    items = items[:max_images] if max_images is not None else items
    if own_lq:
        items = [(name, hr, None) for name, hr, _ in items]
    upscale, method = _as_upscaler(model_or_fn, scale)
    use_lpips, lpips_note = lpips_status() if with_lpips else (False, "LPIPS not requested")
    notes = [] if use_lpips else [lpips_note]
    lq_source = "own" if own_lq or layout == "hr_folder" else "given"
    if lq_source == "own":
        notes.append(f"LR made from HR by make_lq: bicubic (MATLAB) imresize x1/{scale} on uint8")

    # nn.Modules run in eval mode under no_grad; their previous mode is restored afterwards.
    was_training = isinstance(model_or_fn, nn.Module) and model_or_fn.training
    if isinstance(model_or_fn, nn.Module):
        model_or_fn.eval()
    rows = []
    try:
        for name, hr_path, lr_path in items:
            gt, gray = _read_image(hr_path)  # (3, H, W)
            if lr_path is None:
                gt = mod_crop(gt, scale)
                if min(gt.shape[-2:]) < scale:
                    raise ValueError(f"{hr_path}: image smaller than the scale factor {scale}")
                lq = make_lq(gt, scale)
            else:
                lq = load_image(lr_path)
                h, w = lq.shape[-2:]
                if tuple(gt.shape[-2:]) != (h * scale, w * scale):
                    if tuple(s // scale for s in gt.shape[-2:]) != (h, w):
                        raise ValueError(
                            f"{hr_path}: HR {tuple(gt.shape[-2:])} does not match "
                            f"LR {(h, w)} at x{scale}"
                        )
                    gt = mod_crop(gt, scale)
            with torch.no_grad():
                sr = upscale(lq[None])  # (1, 3, H, W)
            if not isinstance(sr, Tensor) or tuple(sr.shape) != (1, *gt.shape):
                got = tuple(sr.shape) if isinstance(sr, Tensor) else type(sr).__name__
                raise ValueError(f"{name}: upscaler returned {got}, expected {(1, *gt.shape)}")
            if not torch.isfinite(sr).all():
                raise ValueError(f"{name}: upscaler returned non-finite values")
            sr = sr.detach().float().cpu().clamp(0, 1)  # (1, 3, H, W)
            try:
                # Quantise and crop once; the metrics are those of psnr_y, ssim_y, ... below.
                q_sr, q_gt = _prepare(sr, gt[None], scale, crop_border)  # (1, 3, H', W')
            except ValueError as e:
                raise ValueError(f"{hr_path}: {e}") from e
            if gray:
                # Gray originals: Y metrics on the gray level, as the published scripts do.
                notes.append(f"{name}: grayscale, Y metrics on its gray level")
                y_sr, y_gt = _y8(rgb_to_gray(q_sr)[0]), _y8(q_gt[0, :1])  # (H', W') 0..255
            else:
                y_sr, y_gt = _y8(q_sr[0]), _y8(q_gt[0])  # (H', W') in 16..235
            if min(y_sr.shape) < 11:
                raise ValueError(f"{hr_path}: too small for SSIM after cropping the border")
            row = {
                "name": name,
                "psnr_y": _psnr_255(y_sr, y_gt),
                "ssim_y": _ssim_255(y_sr, y_gt),
                "psnr_rgb": _psnr_255(q_sr * 255, q_gt * 255),
                "detail": _detail(y_sr, y_gt, 0.5 / scale),
                "lpips": lpips_distance(q_sr, q_gt) if use_lpips else math.nan,
            }
            rows.append(row)
    finally:
        if was_training:
            model_or_fn.train()
    mean = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_KEYS}
    dataset = _dataset_name(folder)
    return {
        "method": method,
        "dataset": dataset,
        "scale": scale,
        "layout": layout,
        "lq": lq_source,
        "images": rows,
        "mean": mean,
        "notes": notes,
    }


def summary_row(result: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """One table row (method, dataset, scale, mean metrics) from an `evaluate` result."""
    row = {"method": result["method"], "dataset": result["dataset"], "scale": result["scale"]}
    row.update(extra)
    row.update(result["mean"])
    return row


def _dataset_name(folder: Path) -> str:
    """The benchmark's name: Set5 for both Set5/ and Set5/image_SRF_2/."""
    return folder.parent.name if folder.name.startswith("image_SRF_") else folder.name


# --------------------------------------------------------------------------------------------
# Degraded benchmarks: the given LR files as users' inputs look (JPEG-compressed, noisy)

CONDITIONS = ("clean", "jpeg90", "jpeg75", "jpeg50", "jpeg30", "noise5", "noise15")
# Hidden, so neither _find_images nor find_images sees it; written last, it marks a variant
# folder as complete.
_MANIFEST = ".srlib_degraded.json"


def _condition(condition: str) -> tuple[str, int]:
    """("clean", 0), ("jpeg", quality) or ("noise", sigma) for a name in CONDITIONS."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; use one of {', '.join(CONDITIONS)}")
    kind = condition.rstrip("0123456789")
    return kind, int(condition[len(kind) :] or 0)


def degrade_image(im: Image.Image, condition: str, key: str) -> Image.Image:
    """`im` as an 8-bit L or RGB image degraded by `condition` (one of CONDITIONS).

    jpegQ: encoded by PIL as JPEG at quality Q with its defaults (4:2:0 chroma subsampling for
    RGB) and decoded. noiseS: Gaussian noise of sigma S (0..255 units) added, rounded and
    clipped, seeded by zlib.crc32(key) (the file name), not hash(): the same noise on every
    run and machine. Gray images stay one channel (one JPEG plane, one noise plane).
    """
    kind, amount = _condition(condition)
    if im.mode not in ("L", "RGB"):  # 16-bit, alpha, palette, ...: 8 bits, as evaluate reads it
        rgb = to_rgb_array(im)
        im = Image.fromarray(np.ascontiguousarray(rgb[..., 0]) if is_gray(im) else rgb)
    if kind == "jpeg":
        buf = BytesIO()
        im.save(buf, format="JPEG", quality=amount)
        buf.seek(0)
        with Image.open(buf) as jpg:
            return jpg.convert(im.mode)  # decodes; the mode is already L or RGB
    if kind == "noise":
        rng = np.random.default_rng(zlib.crc32(key.encode("utf-8")))
        arr = np.asarray(im, dtype=np.float64)
        noisy = np.round(arr + amount * rng.standard_normal(arr.shape))
        return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    return im.copy()


def _crc_file(path: Path) -> int:
    """CRC32 of a file's bytes (benchmark images are small)."""
    with open(path, "rb") as f:
        return zlib.crc32(f.read())


def degraded_benchmark(
    folder: str | os.PathLike, scale: int, condition: str, out_dir: str | os.PathLike
) -> Path:
    """A copy of benchmark `folder` (x`scale`) with its LR files degraded; pass it to evaluate.

    Writes out_dir/<condition>/<dataset>/image_SRF_<scale>/: the HR files copied byte for byte,
    each LR file replaced by degrade_image(LR, condition, LR file name) saved as PNG (lossless,
    so JPEG artefacts are exactly the encoder's). Returns out_dir/<condition>/<dataset>, which
    evaluate reports under the same dataset name; "clean" returns `folder` itself. Cached: a
    variant whose manifest (written last) names the same condition and source files (CRC32 of
    their bytes) is reused as is, anything else is rebuilt. Needs given LR files: a plain HR
    folder is a ValueError.
    """
    kind, _ = _condition(condition)
    folder = Path(folder)
    layout, items = _find_images(folder, scale)
    if layout != "benchmark":
        raise ValueError(f"{folder} has no given LR files (*_SRF_{scale}_LR.png) to degrade")
    if kind == "clean":
        return folder
    root = Path(out_dir) / condition / _dataset_name(folder)
    sub = root / f"image_SRF_{scale}"
    if sub.resolve() == items[0][1].parent.resolve():
        raise ValueError(f"out_dir {out_dir} would overwrite the source benchmark {folder}")
    sources = {p.name: p for _, hr, lr in items for p in (hr, lr)}
    manifest = {
        "condition": condition,
        "scale": scale,
        "sources": {name: _crc_file(p) for name, p in sources.items()},
    }
    done = sub / _MANIFEST
    try:
        cached = json.loads(done.read_text())
    except (OSError, ValueError):
        cached = None
    if cached == manifest and all((sub / name).is_file() for name in sources):
        return root
    done.unlink(missing_ok=True)  # a half-rebuilt variant must not look complete
    if sub.is_dir():  # pairs of an earlier, different source would be evaluated too
        for stale in sub.glob(f"*_SRF_{scale}_[HL]R.png"):
            if stale.name not in sources:
                stale.unlink()
    for _, hr, lr in items:
        with open(hr, "rb") as src, atomic_write(sub / hr.name) as dst:
            shutil.copyfileobj(src, dst)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", LostPrecisionWarning)  # degraded at 8 bits anyway
            im = open_image(lr)
        save_image(degrade_image(im, condition, lr.name), sub / lr.name)
    with atomic_write(done, "w") as f:
        json.dump(manifest, f, indent=1)
    return root


# --------------------------------------------------------------------------------------------
# Published results (PSNR dB / SSIM on Y, `scale` border cropped, MATLAB bicubic LR)

# Values as printed in the papers. Bicubic, SRCNN and VDSR: VDSR paper, Table 3 (Kim et al.,
# "Accurate Image Super-Resolution Using Very Deep Convolutional Networks", CVPR 2016).
# FSRCNN: its own paper (Dong et al., "Accelerating the Super-Resolution Convolutional Neural
# Network", ECCV 2016), PSNR only; later papers that re-evaluate it list slightly different
# values (e.g. 30.72 on Set5 x4).
_VDSR = "Kim et al., CVPR 2016 (VDSR), Table 3"
_FSRCNN = "Dong et al., ECCV 2016 (FSRCNN)"
PUBLISHED: tuple[dict[str, Any], ...] = tuple(
    {"method": m, "dataset": d, "scale": s, "psnr_y": p, "ssim_y": q, "source": src}
    for m, src, table in [
        (
            "Bicubic",
            _VDSR,
            {
                "Set5": [(33.66, 0.9299), (30.39, 0.8682), (28.42, 0.8104)],
                "Set14": [(30.24, 0.8688), (27.55, 0.7742), (26.00, 0.7027)],
            },
        ),
        (
            "SRCNN",
            _VDSR,
            {
                "Set5": [(36.66, 0.9542), (32.75, 0.9090), (30.48, 0.8628)],
                "Set14": [(32.42, 0.9063), (29.28, 0.8209), (27.49, 0.7503)],
            },
        ),
        (
            "FSRCNN",
            _FSRCNN,
            {
                "Set5": [(37.00, None), (33.16, None), (30.71, None)],
                "Set14": [(32.63, None), (29.43, None), (27.59, None)],
            },
        ),
        (
            "VDSR",
            _VDSR,
            {
                "Set5": [(37.53, 0.9587), (33.66, 0.9213), (31.35, 0.8838)],
                "Set14": [(33.03, 0.9124), (29.77, 0.8314), (28.01, 0.7674)],
            },
        ),
    ]
    for d, values in table.items()
    for s, (p, q) in zip((2, 3, 4), values, strict=True)
)


def published(
    dataset: str | None = None, scale: int | None = None, method: str | None = None
) -> list[dict[str, Any]]:
    """Rows of PUBLISHED (labelled "(published)") filtered by dataset, scale and method."""
    return [
        {**r, "method": f"{r['method']} (published)"}
        for r in PUBLISHED
        if (dataset is None or r["dataset"] == dataset)
        and (scale is None or r["scale"] == scale)
        and (method is None or r["method"] == method)
    ]


# --------------------------------------------------------------------------------------------
# Text tables


def _fmt(value: Any, key: str) -> str:
    """Format one cell: dB with 2 decimals, SSIM/ratios with 4, missing as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.2f}" if key.startswith("psnr") else f"{value:.4f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Markdown table of result rows (columns default to the keys of all rows, in order)."""
    if not rows:
        return "(no rows)"
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_fmt(r.get(c), c) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(columns), sep, *(line(row) for row in cells)])
