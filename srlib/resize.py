"""Every resize srlib uses, in one place, each under a name that says whose kernel it is.

"Bicubic" means three different things in SR code, and they differ by a tenth of a dB or more
(x2 upscale of skimage's chelsea: 35.22 vs 35.37 dB PSNR-Y), so a figure and a table can
disagree under the same word. srlib keeps them apart:

- "bicubic (MATLAB)": `imresize` / `matlab_bicubic`. MATLAB's imresize re-implemented: Keys
  cubic with a = -0.5, widened by 1/scale when downscaling (antialiased), out-of-range taps
  clamped. `make_lq` makes the benchmarks' LR with it (bit for bit, on uint8), and it is the
  baseline row of the metric tables (`metrics.evaluate`), as in the papers.
- "bicubic (torch)": `upsample(..., "bicubic")` / `torch_bicubic`. F.interpolate's bicubic:
  Keys cubic with a = -0.75 (OpenCV's), sharper than MATLAB's; the base upscale the models
  add their residual to, so it is what the models' figures show.
- "bicubic (torch, antialiased)": `degrade(..., "bicubic")`. F.interpolate with
  antialias=True, which switches to a = -0.5 widened by 1/scale like MATLAB but drops (instead
  of clamping) taps outside the image and does not round to 8 bit: the training lq.

Bilinear is a triangle everywhere; MATLAB's and torch's bilinear *upscales* agree to float
rounding, but they keep their own labels so that every row says what made it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

KERNELS = ("bicubic", "bilinear")  # the `mode` / `method` names the functions below accept

# --------------------------------------------------------------------------------------------
# MATLAB-compatible imresize


def _cubic(x: Tensor) -> Tensor:
    """Keys cubic kernel with a = -0.5, as MATLAB's imresize 'bicubic'."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _triangle(x: Tensor) -> Tensor:
    """Linear kernel, as MATLAB's imresize 'bilinear'."""
    return (1 - x.abs()).clamp(min=0)


_KERNELS = {"bicubic": (_cubic, 4.0), "bilinear": (_triangle, 2.0)}


def _resize_matrix(
    in_len: int, out_len: int, scale: float, method: str, antialias: bool, boundary: str
) -> Tensor:
    """(out_len, in_len) float64 W with out = W @ in along one axis (MATLAB's contributions)."""
    kernel, width = _KERNELS[method]
    if scale < 1 and antialias:
        # Downscaling: stretch the kernel by 1/scale so it low-passes before sampling.
        def h(x: Tensor) -> Tensor:
            return scale * kernel(scale * x)

        width = width / scale
    else:
        h = kernel
    x = torch.arange(1, out_len + 1, dtype=torch.float64)  # 1-based output coords, as MATLAB
    u = x / scale + 0.5 * (1 - 1 / scale)  # matching input coordinate
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]  # (out, taps)
    weights = h(u[:, None] - idx)
    weights = weights / weights.sum(dim=1, keepdim=True)
    idx = idx.long() - 1  # 0-based
    if boundary == "replicate":
        # MATLAB's imresize.m clamps out-of-range taps ("replicating end-points").
        idx = idx.clamp(0, in_len - 1)
    else:
        # Half-sample mirror, as the common Python ports of imresize (e.g. BasicSR) do.
        aux = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
        idx = aux[idx % (2 * in_len)]
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, idx, weights)
    return mat


def round_half_up(x: Tensor) -> Tensor:
    """Round halves up, as MATLAB's round does for x >= 0 (torch.round rounds half to even)."""
    return torch.floor(x + 0.5)


def imresize(
    img: Tensor | np.ndarray,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    method: str = "bicubic",
    antialias: bool = True,
    uint8: bool = False,
    boundary: str = "replicate",
) -> Tensor | np.ndarray:
    """MATLAB-compatible imresize of a channels-first float image (..., H, W); give scale or size.

    Same kernels (Keys cubic a = -0.5, or linear), the kernel widened by 1/scale when
    downscaling (antialias), the same pixel-centre mapping, separable passes in MATLAB's
    order. boundary="replicate" is what MATLAB's imresize.m does (it clamps out-of-range
    taps); "symmetric" mirrors them like the usual Python ports (BasicSR) and differs from
    MATLAB in the outermost pixels only. uint8=True reproduces MATLAB on a uint8 image: the
    input is taken as 8-bit levels and rounded and clamped to 8 bit after each 1-D pass
    (MATLAB keeps the uint8 class in between). With both defaults plus uint8=True this
    re-creates the Set5/Set14 benchmark LR files bit for bit. Values are floats in [0, 1].
    """
    if method not in _KERNELS:
        raise ValueError(f"method must be one of {sorted(_KERNELS)}, got {method!r}")
    if boundary not in ("replicate", "symmetric"):
        raise ValueError(f"boundary must be 'replicate' or 'symmetric', got {boundary!r}")
    is_numpy = isinstance(img, np.ndarray)
    x = torch.from_numpy(img) if is_numpy else img
    if x.ndim < 2:
        raise ValueError(f"expected an image (..., H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"imresize works on float images in [0, 1], got dtype {x.dtype}")
    in_h, in_w = x.shape[-2:]
    if in_h == 0 or in_w == 0:
        raise ValueError(f"cannot resize an empty image of shape {tuple(x.shape)}")
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        # MATLAB: output size is ceil(in * scale) and the exact scale is used for the mapping.
        # round() guards against float fuzz: 30 * 0.1 is 3.0000000000000004, not 3.
        out_h = math.ceil(round(in_h * scale, 8))
        out_w = math.ceil(round(in_w * scale, 8))
        scale_h = scale_w = float(scale)
    else:
        out_h, out_w = size
        if out_h <= 0 or out_w <= 0:
            raise ValueError(f"size must be positive, got {size}")
        scale_h, scale_w = out_h / in_h, out_w / in_w
    mat_h = _resize_matrix(in_h, out_h, scale_h, method, antialias, boundary).to(x.device)
    mat_w = _resize_matrix(in_w, out_w, scale_w, method, antialias, boundary).to(x.device)
    out = x.to(torch.float64)  # float64 so that results are not limited by float32 rounding
    if uint8:
        out = round_half_up(out.clamp(0, 1) * 255)  # (..., H, W) 8-bit levels
    # MATLAB resizes the dimension with the smaller scale first (rows on a tie).
    passes = ["h", "w"] if scale_h <= scale_w else ["w", "h"]
    for axis in passes:
        if axis == "h":
            out = torch.einsum("ih,...hw->...iw", mat_h, out)
        else:
            out = torch.einsum("...hw,jw->...hj", out, mat_w)
        if uint8:
            out = round_half_up(out.clamp(0, 255))  # clamped first: its input >= 0
    out = (out / 255 if uint8 else out).to(x.dtype)
    return out.numpy() if is_numpy else out


def mod_crop(img: Tensor, scale: int) -> Tensor:
    """Crop (..., H, W) at the bottom/right to a multiple of `scale` (MATLAB modcrop)."""
    h, w = img.shape[-2:]
    return img[..., : h - h % scale, : w - w % scale]


def make_lq(gt: Tensor, scale: int) -> Tensor:
    """LR input from an HR image as the benchmarks made theirs: MATLAB uint8 bicubic imresize."""
    return imresize(gt, scale=1 / scale, method="bicubic", uint8=True)


# --------------------------------------------------------------------------------------------
# torch's F.interpolate: the models' base upscale and the training lq


def _check_kernel(name: str, what: str) -> None:
    """Raise a clear error for a kernel name other than 'bicubic' or 'bilinear'."""
    if name not in KERNELS:
        raise ValueError(f"{what} must be 'bicubic' or 'bilinear', got {name!r}")


def upsample(lq: Tensor, scale: int, mode: str = "bicubic") -> Tensor:
    """Classic upscale that the models refine: (B, C, h, w) -> (B, C, h*scale, w*scale).

    torch's kernels: "bicubic" is Keys a = -0.75, not MATLAB's -0.5 (see the module docstring);
    no clamping, so bicubic may overshoot [0, 1] at edges. Shown as `upsample_label(mode)`.
    """
    return F.interpolate(lq, scale_factor=scale, mode=mode, align_corners=False)


def upsample_label(mode: str) -> str:
    """How to show `upsample(..., mode)` in a figure or a table, e.g. "bicubic (torch)"."""
    _check_kernel(mode, "mode")
    return f"{mode} (torch)"


def degrade(gt: Tensor, scale: int, method: str = "bicubic") -> Tensor:
    """Antialiased downscale by scale: (3, H, W) or (B, 3, H, W) -> (..., H/scale, W/scale).

    torch's antialiased kernels (bicubic: Keys a = -0.5 widened by `scale`; taps outside the
    image dropped), float, clamped to [0, 1]; close to, but not, `make_lq`. Shown as
    `degrade_label(method)`.
    """
    _check_kernel(method, "method")
    h, w = gt.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by scale {scale}")
    x = gt if gt.dim() == 4 else gt[None]  # (B, 3, H, W)
    lq = F.interpolate(x, size=(h // scale, w // scale), mode=method, antialias=True)
    lq = lq.clamp_(0, 1)  # bicubic overshoots at edges
    return lq if gt.dim() == 4 else lq[0]


def degrade_label(method: str) -> str:
    """How to show `degrade(..., method)`, e.g. "bicubic (torch, antialiased)"."""
    _check_kernel(method, "method")
    return f"{method} (torch, antialiased)"


# --------------------------------------------------------------------------------------------
# Named baseline upscalers: fn(lq (B, C, h, w), scale) -> sr clamped to [0, 1]


def matlab_bicubic(lq: Tensor, scale: int) -> Tensor:
    """MATLAB imresize bicubic (Keys a = -0.5), no antialiasing as it upscales; clamped."""
    return imresize(lq, scale=scale, method="bicubic").clamp(0, 1)


def matlab_bilinear(lq: Tensor, scale: int) -> Tensor:
    """MATLAB imresize bilinear (triangle), no antialiasing as it upscales; clamped."""
    return imresize(lq, scale=scale, method="bilinear").clamp(0, 1)


def torch_bicubic(lq: Tensor, scale: int) -> Tensor:
    """torch F.interpolate bicubic (Keys a = -0.75), no antialiasing; the models' base, clamped."""
    return upsample(lq, scale, "bicubic").clamp(0, 1)


def torch_bilinear(lq: Tensor, scale: int) -> Tensor:
    """torch F.interpolate bilinear (triangle), no antialiasing; clamped."""
    return upsample(lq, scale, "bilinear").clamp(0, 1)


# Label -> upscaler. Labels name the implementation because the kernels differ (module docstring).
BASELINES: dict[str, Callable[[Tensor, int], Tensor]] = {
    "bicubic (MATLAB)": matlab_bicubic,
    "bilinear (MATLAB)": matlab_bilinear,
    "bicubic (torch)": torch_bicubic,  # = upsample_label("bicubic")
    "bilinear (torch)": torch_bilinear,
}
