"""Realistic training lq: blur, resize, noise and JPEG in one or two random passes.

A model trained on clean antialiased downscales (`srlib.resize.degrade`) has never seen noise
or compression, and does worse than bicubic on JPEG-compressed input. `realistic_lq` follows
Real-ESRGAN's "second-order" degradation (Wang et al., 2021, section 3.1): a pass blurs
(isotropic or rotated anisotropic Gaussian), resizes by a random factor with a random kernel,
adds Gaussian or Poisson noise (per channel or gray) and JPEG-compresses; a second, milder pass
follows on some samples; a final resize with a random kernel gives the lq size, with the last
JPEG before or after it. Every step is skipped on a share of samples, and some samples stay
clean, so a model trained on it still works on clean input. Unlike Real-ESRGAN: no sinc,
generalized or plateau kernels, antialiased resizes, and ranges scaled down for x2.

    lq = training_lq(gt, 2, "bicubic", "realistic", np.random.default_rng(0))
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from srlib.resize import degrade

# The names `training_lq` (and SRDataset, TrainConfig.degradation) accept; NAMED below.
DEGRADATIONS = ("clean", "realistic", "realesrgan")
RESIZE_MODES = ("area", "bilinear", "bicubic")  # F.interpolate modes a resize may draw


def _check_prob(name: str, p: float) -> None:
    if not 0 <= p <= 1:  # also refuses nan
        raise ValueError(f"{name} must be a probability in [0, 1], got {p}")


def _check_range(name: str, r: tuple, lo: float, hi: float) -> None:
    # Finite too: an inf sigma or resize factor would make a kernel or an image without end.
    if len(r) != 2 or not (lo <= r[0] <= r[1] <= hi and math.isfinite(r[0] + r[1])):
        raise ValueError(
            f"{name} must be (low, high), finite, with {lo} <= low <= high <= {hi}, got {r}"
        )


@dataclass
class Pass:
    """One pass's ranges: blur, resize, noise and JPEG, each done with its own probability."""

    blur_prob: float = 0.8  # chance of a blur
    kernel_size: tuple[int, int] = (7, 21)  # odd side, uniform among the odd sizes in the range
    iso_prob: float = 0.6  # isotropic Gaussian, else anisotropic (two sigmas, rotated)
    sigma: tuple[float, float] = (0.2, 2.0)  # in pixels of the pass's input (Real-ESRGAN x4: 3)
    resize_probs: tuple[float, float, float] = (0.2, 0.5, 0.3)  # up, down, keep; sum to 1
    resize_range: tuple[float, float] = (0.4, 1.5)  # size factor: down in [low, 1], up in [1, high]
    noise_prob: float = 0.6  # chance of noise
    gaussian_prob: float = 0.5  # Gaussian noise, else Poisson (shot) noise
    noise_sigma: tuple[float, float] = (1.0, 20.0)  # Gaussian sigma, in 0-255 units
    poisson_scale: tuple[float, float] = (0.05, 2.0)  # x the shot noise of 255 counts at white
    gray_noise_prob: float = 0.4  # the same noise in every channel (luminance only)
    jpeg_prob: float = 0.8  # chance of JPEG compression
    jpeg_quality: tuple[int, int] = (30, 95)  # PIL quality, an int drawn from this range

    def __post_init__(self) -> None:
        probs = ("blur_prob", "iso_prob", "noise_prob", "gaussian_prob", "gray_noise_prob")
        for name in (*probs, "jpeg_prob"):
            _check_prob(name, getattr(self, name))
        _check_range("kernel_size", self.kernel_size, 1, math.inf)
        if any(k % 2 == 0 for k in self.kernel_size):
            raise ValueError(f"kernel_size must be odd sizes, got {self.kernel_size}")
        _check_range("sigma", self.sigma, 1e-3, math.inf)  # 0 would divide by zero
        probs = self.resize_probs
        if len(probs) != 3 or min(probs) < 0 or not math.isclose(sum(probs), 1):
            raise ValueError(
                f"resize_probs (up, down, keep) must be >= 0 and sum to 1, got {probs}"
            )
        _check_range("resize_range", self.resize_range, 1e-3, math.inf)
        if not self.resize_range[0] <= 1 <= self.resize_range[1]:
            raise ValueError(f"resize_range must contain 1 (keep), got {self.resize_range}")
        _check_range("noise_sigma", self.noise_sigma, 0, 255)
        _check_range("poisson_scale", self.poisson_scale, 0, math.inf)
        _check_range("jpeg_quality", self.jpeg_quality, 1, 100)


def _milder() -> Pass:
    """The second pass's defaults (Real-ESRGAN x4: sigma 1.5, resize 0.3-1.2, noise 25)."""
    return Pass(
        sigma=(0.2, 1.0),
        resize_probs=(0.3, 0.4, 0.3),
        resize_range=(0.6, 1.2),
        noise_sigma=(1.0, 15.0),
        poisson_scale=(0.05, 1.5),
        jpeg_quality=(40, 95),
    )


@dataclass
class Realistic:
    """The ranges of `realistic_lq`; defaults tuned for x2 and crops of about 96 px."""

    clean_prob: float = 0.1  # samples given the clean lq: `degrade(gt, scale, "bicubic")`
    first: Pass = field(default_factory=Pass)  # on the gt; its resize factors are of the gt size
    second_prob: float = 0.5  # chance of the second pass
    second: Pass = field(default_factory=_milder)  # its resize factors are of the lq size
    resize_modes: tuple[str, ...] = RESIZE_MODES  # each resize draws one (the final one too)
    jpeg_last_prob: float = 0.5  # last JPEG after the final resize (8x8 blocks of the lq grid)

    def __post_init__(self) -> None:
        for name in ("clean_prob", "second_prob", "jpeg_last_prob"):
            _check_prob(name, getattr(self, name))
        if not self.resize_modes or not set(self.resize_modes) <= set(RESIZE_MODES):
            raise ValueError(
                f"resize_modes must be some of {RESIZE_MODES}, got {self.resize_modes}"
            )
        if not isinstance(self.first, Pass) or not isinstance(self.second, Pass):
            raise TypeError("first and second must be srlib.degrade.Pass instances")


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float = 0.0) -> Tensor:
    """(size, size) Gaussian summing to 1, sigma_x along the x axis rotated by theta (radians)."""
    c, s = math.cos(theta), math.sin(theta)
    rot = np.array([[c, -s], [s, c]])
    inv_cov = rot @ np.diag([sigma_x**-2, sigma_y**-2]) @ rot.T
    ax = np.arange(size) - size // 2
    xy = np.stack(np.meshgrid(ax, ax, indexing="xy"), axis=-1)  # (row, col) -> (x, y)
    k = np.exp(-0.5 * np.einsum("...i,ij,...j->...", xy, inv_cov, xy))
    return torch.from_numpy(k / k.sum()).float()


def random_kernel(p: Pass, rng: np.random.Generator, max_size: int | None = None) -> Tensor:
    """A blur kernel drawn from p's ranges, its side at most max_size (odd).

    Taps beyond 3 sigma (under 1.2% of the peak) are dropped: a side of 21 for a sigma of 1
    would be mostly zeros, and the convolution's time grows with the side squared.
    """
    sizes = range(p.kernel_size[0], p.kernel_size[1] + 1, 2)
    size = sizes[int(rng.integers(len(sizes)))]
    if rng.random() < p.iso_prob:
        sigma_x = sigma_y = rng.uniform(*p.sigma)
        theta = 0.0
    else:
        sigma_x, sigma_y = rng.uniform(*p.sigma), rng.uniform(*p.sigma)
        theta = rng.uniform(-math.pi, math.pi)
    size = min(size, max_size or size, 2 * math.ceil(3 * max(sigma_x, sigma_y)) + 1)
    return gaussian_kernel(size, sigma_x, sigma_y, theta)


def jpeg(x: Tensor, quality: int) -> Tensor:
    """PIL JPEG round trip of x (1, 3, H, W) in [0, 1] at quality (an int): 8-bit levels out."""
    rgb = x[0].clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        out = np.asarray(im.convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1)[None].float() / 255


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8-bit levels, as a saved image is; float32.

    Rounds with torch.round (halves to even); srlib.metrics.quantize rounds halves up, as
    MATLAB does for the published benchmarks. They differ only exactly halfway between levels.
    """
    return x.float().clamp(0, 1).mul(255).round().div(255)


quantise = quantize  # the spelling before issue 26


def _resize(x: Tensor, size: tuple[int, int], mode: str) -> Tensor:
    """x (1, 3, h, w) -> (1, 3, *size); bilinear/bicubic antialiased (as PIL and editors)."""
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "area":  # a box average down, nearest-like up
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, antialias=True).clamp(0, 1)


def _blur(x: Tensor, p: Pass, rng: np.random.Generator) -> Tensor:
    """Maybe convolve with a random kernel (reflect padding keeps the edges' brightness)."""
    if rng.random() >= p.blur_prob:
        return x
    side = min(x.shape[-2:])
    kernel = random_kernel(p, rng, max_size=2 * side - 1)  # reflect needs padding < side
    pad = kernel.shape[-1] // 2
    weight = kernel.expand(x.shape[1], 1, *kernel.shape)  # one kernel per channel
    return F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), weight, groups=x.shape[1])


def _random_size(p: Pass, ref: tuple[int, int], rng: np.random.Generator) -> tuple[int, int]:
    """ref (h, w) times a factor drawn from p: up, down or kept."""
    up, down, _ = p.resize_probs
    u = rng.random()
    if u < up:
        factor = rng.uniform(1, p.resize_range[1])
    elif u < up + down:
        factor = rng.uniform(p.resize_range[0], 1)
    else:
        factor = 1.0
    return max(1, round(ref[0] * factor)), max(1, round(ref[1] * factor))


def _noise(x: Tensor, p: Pass, rng: np.random.Generator) -> Tensor:
    """Maybe add Gaussian or Poisson noise, per channel or the same in all (gray)."""
    if rng.random() >= p.noise_prob:
        return x
    gray = rng.random() < p.gray_noise_prob
    img = x[0]  # (3, h, w)
    if gray:
        img = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]  # BT.601 luma
    if rng.random() < p.gaussian_prob:
        sigma = rng.uniform(*p.noise_sigma) / 255
        noise = torch.from_numpy(rng.standard_normal(img.shape, dtype=np.float32)) * sigma
    else:  # shot noise: photon counts of a sensor that collects 255 at white
        scale = rng.uniform(*p.poisson_scale)
        counts = rng.poisson(img.double().numpy() * 255)
        noise = (torch.from_numpy(counts / 255).float() - img) * scale
    return (x + noise).clamp(0, 1)  # (1, 3, h, w) + (1 or 3, h, w)


def _maybe_jpeg(x: Tensor, p: Pass, rng: np.random.Generator) -> Tensor:
    if rng.random() >= p.jpeg_prob:
        return x
    return jpeg(x, int(rng.integers(p.jpeg_quality[0], p.jpeg_quality[1] + 1)))


def realistic_lq(gt: Tensor, scale: int, cfg: Realistic, rng: np.random.Generator) -> Tensor:
    """gt (3, S, S) in [0, 1] -> lq (3, S/scale, S/scale), float32 8-bit levels; rng decides all."""
    if gt.ndim != 3 or gt.shape[0] != 3 or not gt.is_floating_point():
        raise ValueError(f"gt must be a float (3, H, W) image, got {gt.dtype} {tuple(gt.shape)}")
    h, w = gt.shape[-2:]
    if scale < 1 or h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by scale {scale!r}")
    lq_size = (h // scale, w // scale)
    if rng.random() < cfg.clean_prob:
        return quantize(degrade(gt, scale, "bicubic"))

    def mode() -> str:
        return cfg.resize_modes[int(rng.integers(len(cfg.resize_modes)))]

    passes = [(cfg.first, (h, w))]
    if rng.random() < cfg.second_prob:
        passes.append((cfg.second, lq_size))  # Real-ESRGAN: the second resize is of the lq size
    x = gt[None].float()
    for i, (p, ref) in enumerate(passes):
        x = _blur(x, p, rng)
        x = _resize(x, _random_size(p, ref, rng), mode())
        x = _noise(x, p, rng)
        if i < len(passes) - 1:  # the last pass's JPEG goes with the final resize
            x = _maybe_jpeg(x, p, rng)
    last, final = passes[-1][0], mode()
    if rng.random() < cfg.jpeg_last_prob:  # a JPEG-compressed lq, as users' photos are
        x = _maybe_jpeg(_resize(x, lq_size, final), last, rng)
    else:
        x = _resize(_maybe_jpeg(x, last, rng), lq_size, final)
    return quantize(x[0])


# "realistic": photos from phones and the web. Bicubic downscale, JPEG at quality 30-95 on 80%
# of the samples, light noise on 20% (Gaussian or Poisson, colour or grey); no blur, no extra
# resize, no second pass. In 600 s on T91 today's UNet gained +2.02 / +1.08 / +0.90 dB over
# bicubic on Set5+Set14 x2 clean / JPEG q50 / q30 input (issue 13's first-round UNet: +1.50 /
# +0.92 / +0.68). With that older UNet, adding 10% blur, 10% resizes, a 10% second pass and 1/3
# non-bicubic resizes lost 0.3 dB on clean input; the full Real-ESRGAN-like ranges
# ("realesrgan", the dataclass defaults) lost most of it (README, "Real photos").
NAMED = {
    "realistic": Realistic(
        clean_prob=0.0,
        first=Pass(
            blur_prob=0.0,
            resize_probs=(0.0, 0.0, 1.0),
            noise_prob=0.2,
            noise_sigma=(1.0, 8.0),
            poisson_scale=(0.05, 0.5),
            jpeg_prob=0.8,
            jpeg_quality=(30, 95),
        ),
        second_prob=0.0,
        resize_modes=("bicubic",),
        jpeg_last_prob=1.0,
    ),
    # Real-ESRGAN's second-order recipe, scaled down for x2: for blurry, resized, noisy input.
    "realesrgan": Realistic(),
}


def check_degradation(degradation: str | Realistic) -> None:
    """Raise ValueError unless degradation is one of DEGRADATIONS or a Realistic."""
    if not isinstance(degradation, Realistic) and degradation not in DEGRADATIONS:
        raise ValueError(
            f"degradation must be one of {DEGRADATIONS} or a srlib.degrade.Realistic, "
            f"got {degradation!r}"
        )


def training_lq(
    gt: Tensor, scale: int, method: str, degradation: str | Realistic, rng: np.random.Generator
) -> Tensor:
    """The training lq of gt (3, S, S) by degradation: one of DEGRADATIONS, or a Realistic.

    "clean" is `degrade(gt, scale, method)` (rng unused); "realistic" and "realesrgan" are
    `realistic_lq` with NAMED's ranges (method unused); a Realistic gives its own ranges.
    """
    check_degradation(degradation)
    if degradation == "clean":
        return degrade(gt, scale, method)
    cfg = degradation if isinstance(degradation, Realistic) else NAMED[degradation]
    return realistic_lq(gt, scale, cfg, rng)
