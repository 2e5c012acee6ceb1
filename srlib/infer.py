"""Inference: seamless tiled upscaling of images of any size, mode-preserving image I/O, export.

Tiling. The image is cut into `tile` x `tile` LR cores; each core is fed to the model with
`overlap` extra LR pixels of context on every side (fewer at the image border), and only the
core's part of the output is kept. Two facts make the result equal to one untiled forward
pass (up to float rounding, ~1e-6):
  * tile origins (core origin - overlap) are multiples of `model.stride`, so every stride-2
    layer samples the same grid as in the full image;
  * `overlap` >= the model's receptive-field radius at LR resolution, so no output pixel that
    is kept ever sees the tile's zero padding.
The default overlap is measured per architecture (`receptive_field`): the farthest input
row/column with a non-zero gradient for one output row, on a randomly initialised copy,
rounded up to a multiple of the stride. Default models (x2): UNetUpscaler (stride 4) has a
radius of 28 LR px -> overlap 28 (56 with the 16 refine blocks of the GPU presets),
ResNetUNetUpscaler (stride 8) 78 px -> overlap 80.
Memory is set by the tile, not the image: one tile at a time goes through the model and
is written into a preallocated uint8/uint16 array (float32 only for `upscale_tensor` and
for the intermediate image of a multi-pass x4).

Image modes: RGB as is; L/1, 16-bit (I;16) and float (F) grayscale are replicated to 3
identical channels, upscaled, and averaged back to one channel (no tint); alpha (RGBA/LA/PA,
and a transparent colour key of P/RGB/L) is upscaled separately with PIL bicubic and
reattached; P/CMYK/YCbCr/... are converted to RGB(A). 16-bit data stays 16-bit and float
stays float (float inside, never quantised to 8 bit). Files are read and written by srlib.io.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import warnings
import weakref
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

# Image files are read and written by srlib.io; re-exported here for existing callers.
from srlib.io import FORMATS as FORMATS
from srlib.io import ImageLoadError as ImageLoadError
from srlib.io import NotAnImageError as NotAnImageError
from srlib.io import open_image as open_image
from srlib.io import save_image as save_image
from srlib.models import Upscaler
from srlib.registry import build_model, check_model_config
from srlib.training.checkpoint import load_checkpoint, save_checkpoint
from srlib.training.history import summarize as summarize_history  # infer.summarize_history
from srlib.training.runtime import cpu_has_bf16

# LR core side. With the default models (all convolutions at LR resolution) 512 runs a 12 MP
# x2 in ~41-46 s at ~1.6 GB peak RSS on 2 CPU cores; 384 is ~15% slower (more overlap), 768
# ~5% faster for ~0.3 GB more. See benchmarks/infer.py --sweep and README.
DEFAULT_TILE = 512
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS  # PIL's own bomb limit (~89.5 MP) unless raised
# The largest image one upscale may make: x4 of the largest input PIL allows by default
# (~1.4 G pixels, 4.3 GB as 8-bit RGB), so `--outscale 9999` on a thumbnail is refused up front.
DEFAULT_MAX_OUTPUT_PIXELS = 16 * DEFAULT_MAX_PIXELS


# ----------------------------------------------------------------------------------------------
# Receptive field and tile geometry

_RF_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def receptive_field(model: Upscaler, max_size: int = 2048) -> int:
    """Receptive-field radius of `model` in LR pixels (exact support, not the 'effective' one).

    Back-propagates from single output rows (one per sub-stride phase) to a tall input strip
    and reports the farthest input row with a non-zero gradient; then the same for columns.
    Measured on a randomly initialised copy, so no path that happens to be dead in trained
    weights hides a dependency; gradients are sums of path products, so tiny far-away
    dependencies stay non-zero in float32 (an output difference would round them away).
    Cached per model; takes ~1 s for the default models.
    """
    if model in _RF_CACHE:
        return _RF_CACHE[model]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only add sync cost (10x on busy CPUs)
    try:
        # Gradients are the probe, so this works inside a caller's torch.no_grad() too.
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(0)
            config = getattr(model, "config", None)
            try:
                probe = build_model(config) if config else None
            except ValueError:  # an architecture srlib does not build (a community model)
                probe = None
            probe = copy.deepcopy(model).cpu() if probe is None else probe
            # Fresh random weights everywhere: a zero-initialised layer (the head's last conv)
            # would block the gradients this probe follows and hide the whole network.
            for m in probe.modules():
                if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
                    m.reset_parameters()
            probe = probe.float().eval().requires_grad_(False)  # input gradients only
            s, stride = model.scale, model.stride
            radius, n = 0, 32 * stride
            for transpose in (False, True):
                while True:
                    r, touched = _strip_radius(probe, s, stride, n, transpose)
                    if not touched:
                        break
                    if n >= max_size:
                        raise RuntimeError(f"receptive field exceeds {max_size} px; pass overlap")
                    n *= 2
                radius = max(radius, r)
    finally:
        torch.set_num_threads(threads)
    _RF_CACHE[model] = radius
    return radius


def _strip_radius(
    probe: torch.nn.Module, s: int, stride: int, n: int, transpose: bool
) -> tuple[int, bool]:
    """(radius, touched_border) over all s*stride output-row phases of an n x stride strip."""
    c = (n // 2) // stride * stride  # aligned centre row at LR resolution
    radius = 0
    for phase in range(s * stride):  # one at a time: autograd memory stays small
        x = torch.rand(1, 3, n, stride)  # (1, 3, n, stride): narrow, columns don't matter
        x = x.transpose(2, 3).contiguous() if transpose else x
        x.requires_grad_(True)
        sr = probe(x)  # (1, 3, n*s, stride*s), or transposed
        sr = sr.transpose(2, 3) if transpose else sr
        sr[0, :, c * s + phase, :].sum().backward()  # one HR output row
        grad = x.grad.transpose(2, 3) if transpose else x.grad
        support = torch.nonzero(grad.abs().sum(dim=(0, 1, 3)) > 0).flatten()  # input rows
        radius = max(radius, int((support - (c + phase // s)).abs().max()))
        if support[0] == 0 or support[-1] == n - 1:
            return radius, True
    return radius, False


def auto_overlap(model: Upscaler) -> int:
    """Default overlap: the receptive-field radius rounded up to a multiple of model.stride.

    A model with an `overlap` attribute that is not None (a community model too large to
    probe, `srlib.community.SpandrelModel`) gets that instead.
    """
    known = getattr(model, "overlap", None)
    return _round_up(receptive_field(model) if known is None else known, model.stride)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _spans(n: int, tile: int, stride: int) -> list[tuple[int, int]]:
    """Split [0, n) into about equal cores of at most `tile`, each starting at a stride multiple."""
    count = math.ceil(n / tile)
    core = _round_up(math.ceil(n / count), stride)
    return [(a, min(n, a + core)) for a in range(0, n, core)]


def num_passes(model: Upscaler, scale: int | None) -> int:
    """How many model passes give `scale` (a power of model.scale); clear error otherwise."""
    if scale is None or scale == model.scale:
        return 1
    k, total = 0, 1
    while total < scale:
        total *= model.scale
        k += 1
    if total != scale or k == 0:
        powers = ", ".join(str(model.scale**i) for i in range(1, 4))
        raise ValueError(
            f"scale {scale} is not a power of this model's scale {model.scale} "
            f"(possible: {powers}, ...)"
        )
    return k


# ----------------------------------------------------------------------------------------------
# The tiled forward pass


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """The precision (fp32, bf16 or fp16) that `precision` (one of PRECISIONS) means on `device`.

    auto: CUDA bf16 (fp16 where bf16 is unsupported); a CPU with native bf16 (AVX512-BF16 or
    AMX) bf16, 2.9x faster for the default UNet at -0.003 dB (README); other CPUs (emulated
    bf16 is slower than float32) and MPS (autocast support varies by torch version) fp32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def precision_autocast(
    device: torch.device, precision: str = "auto"
) -> contextlib.AbstractContextManager:
    """The forward pass's autocast for `precision` (see `resolve_precision`) on `device`.

    bf16/fp16 where torch cannot do them: ValueError.
    """
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ValueError("this GPU does not support bf16; use --precision fp16 or fp32")
    # Unsupported device/dtype pairs only warn and silently run in float32: make that an error.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ctx = torch.autocast(device.type, dtype=dtype)
        except RuntimeError as e:
            raise ValueError(f"{precision} is not supported on {device.type}: {e}") from e
    if any("autocast" in str(w.message).lower() for w in caught):
        raise ValueError(
            f"{precision} is not supported on {device.type} by torch {torch.__version__}"
        )
    return ctx


def _peak(dtype: torch.dtype) -> float:
    """Value of 1.0 for an image dtype: 255 for uint8, 65535 for uint16, 1 for floats."""
    return {torch.uint8: 255.0, torch.uint16: 65535.0}.get(dtype, 1.0)


@torch.no_grad()
def _tiled_pass(
    model: Upscaler,
    src: torch.Tensor,
    out: torch.Tensor,
    tile: int,
    overlap: int,
    device: torch.device,
    tick: Callable[[], None],
    precision: str = "auto",
) -> None:
    """One model pass: src (C, h, w) -> out (C, h*s, w*s), C in {1, 3}, any image dtypes.

    C == 1 (grayscale) is fed as 3 identical channels and written back as their mean.
    """
    c, h, w = src.shape
    s, stride = model.scale, model.stride
    src_peak, out_peak = _peak(src.dtype), _peak(out.dtype)
    for y0, y1 in _spans(h, tile, stride):
        for x0, x1 in _spans(w, tile, stride):
            # Context window: aligned to the stride because y0, x0 and overlap all are.
            iy0, iy1 = max(0, y0 - overlap), min(h, y1 + overlap)
            ix0, ix1 = max(0, x0 - overlap), min(w, x1 + overlap)
            lq = src[:, iy0:iy1, ix0:ix1].to(device=device, dtype=torch.float32) / src_peak
            lq = lq.expand(3, -1, -1) if c == 1 else lq  # (3, th, tw)
            lq = lq[None].contiguous(memory_format=torch.channels_last)  # (1, 3, th, tw)
            with precision_autocast(device, precision):
                sr = model(lq)[0]  # (3, th*s, tw*s)
            sr = sr[:, (y0 - iy0) * s : (y1 - iy0) * s, (x0 - ix0) * s : (x1 - ix0) * s]
            if not torch.isfinite(sr).all():  # clamp would turn NaN into a black image
                raise FloatingPointError(
                    f"the model produced NaN/inf for the tile at LR ({x0}, {y0}): its weights "
                    "or this input are broken; nothing was written"
                )
            sr = sr.float().clamp_(0, 1)
            if c == 1:
                sr = sr.mean(0, keepdim=True)
            if out_peak != 1.0:
                sr = sr.mul_(out_peak).round_()
            out[:, y0 * s : y1 * s, x0 * s : x1 * s] = sr.to("cpu", out.dtype)
            tick()


def _upscale_planes(
    model: Upscaler,
    src: torch.Tensor,
    out_dtype: torch.dtype,
    scale: int | None,
    tile: int,
    overlap: int | None,
    progress: bool,
    device: str | torch.device | None,
    hwc: bool = False,
    precision: str = "auto",
) -> torch.Tensor:
    """src (C, h, w) of uint8/uint16/float in [0, 1] -> (C, H, W) of out_dtype, C in {1, 3}.

    With `hwc` the result is a (C, H, W) view of (H, W, C) memory, so that numpy and PIL
    can take it without another full-size copy.
    """
    passes = num_passes(model, scale)
    if src.ndim != 3 or src.shape[0] not in (1, 3):
        raise ValueError(f"expected (1 or 3, h, w) planes, got shape {tuple(src.shape)}")
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    overlap = auto_overlap(model) if overlap is None else _round_up(overlap, model.stride)
    tile = _round_up(max(1, tile), model.stride)
    total, (c, h, w) = 0, src.shape
    for i in range(passes):
        f = model.scale**i
        total += len(_spans(h * f, tile, model.stride)) * len(_spans(w * f, tile, model.stride))
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="tiles", unit="tile", disable=not progress, leave=False)
    was_training = model.training
    # channels_last: same numbers, ~1.3-1.8x faster oneDNN convolutions on CPU (and on GPUs).
    model.eval().to(memory_format=torch.channels_last)
    try:
        for i in range(passes):
            _, h, w = src.shape
            # Intermediate images stay float32 so x4 == model(model(x)) without 8-bit rounding.
            last = i == passes - 1
            dtype = out_dtype if last else torch.float32
            H, W = h * model.scale, w * model.scale
            if last and hwc:
                out = torch.empty(H, W, c, dtype=dtype).permute(2, 0, 1)  # (C, H, W) view
            else:
                out = torch.empty(c, H, W, dtype=dtype)
            _tiled_pass(model, src, out, tile, overlap, dev, bar.update, precision)
            src = out
    finally:
        model.train(was_training).to(memory_format=torch.contiguous_format)
        bar.close()
    return src


def upscale_tensor(
    model: Upscaler,
    lq: torch.Tensor,
    scale: int | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> torch.Tensor:
    """Tiled upscale of float `lq` (3, h, w) or (B, 3, h, w) in [0, 1]; float32 on CPU, clamped.

    `scale` (default model.scale) must be a power of model.scale: x4 with an x2 model runs two
    passes, clamping to [0, 1] in between. `overlap` (LR px, default auto) must cover the
    receptive field for the result to equal `model(lq)`; `device` moves the model there.
    `precision`: auto (bf16 on CUDA and on native-bf16 CPUs, else fp32), fp32, bf16 or fp16
    autocast (see `resolve_precision`).
    """
    if lq.ndim == 3:
        return upscale_tensor(
            model, lq[None], scale, tile, overlap, progress, device, precision=precision
        )[0]
    if lq.ndim != 4 or lq.shape[1] != 3:
        raise ValueError(f"expected (3, h, w) or (B, 3, h, w), got shape {tuple(lq.shape)}")
    lq = lq.detach().cpu()
    outs = [
        _upscale_planes(
            model, x, torch.float32, scale, tile, overlap, progress, device, precision=precision
        )
        for x in lq
    ]
    return torch.stack(outs)


def upscale_array(
    model: Upscaler,
    image: np.ndarray,
    scale: int | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> np.ndarray:
    """Tiled upscale of an (h, w), (h, w, 3) or (h, w, 4) array; same layout and dtype out.

    uint8 and uint16 keep their bit depth; floats are taken as [0, 1] and come back float32.
    A 4th channel is alpha, upscaled with PIL bicubic and not seen by the model.
    """
    if image.ndim == 3 and image.shape[2] in (2, 4):
        color, alpha = image[..., :-1], image[..., -1]
    elif image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3)):
        color, alpha = image, None
    else:
        raise ValueError(f"expected (h, w) or (h, w, 1-4) image array, got {image.shape}")
    if image.dtype not in (np.uint8, np.uint16) and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"image dtype must be uint8, uint16 or float, got {image.dtype}")
    color = color.astype(np.float32) if np.issubdtype(color.dtype, np.floating) else color
    with warnings.catch_warnings():  # PIL arrays are read-only; we never write into them
        warnings.simplefilter("ignore", UserWarning)
        planes = torch.from_numpy(np.ascontiguousarray(color))
    planes = planes[None] if planes.ndim == 2 else planes.permute(2, 0, 1)  # (C, h, w) view
    out_dtype = planes.dtype
    sr = _upscale_planes(
        model, planes, out_dtype, scale, tile, overlap, progress, device, True, precision
    )
    sr = sr.permute(1, 2, 0).numpy()  # (H, W, C), contiguous
    sr = sr[..., 0] if color.ndim == 2 else sr
    if alpha is None:
        return sr
    a = _resize_bicubic(alpha, (sr.shape[1], sr.shape[0]))
    return np.concatenate([sr.reshape(*sr.shape[:2], -1), a[..., None]], axis=2)


def _resize_bicubic(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """PIL bicubic resize of one (h, w) plane of any dtype to size (W, H), same dtype."""
    if plane.dtype == np.uint8:  # PIL's own 8-bit path, exactly what `Image.resize` gives
        return np.asarray(Image.fromarray(plane).resize(size, Image.BICUBIC))
    big = np.asarray(Image.fromarray(plane.astype(np.float32)).resize(size, Image.BICUBIC))
    if np.issubdtype(plane.dtype, np.integer):
        big = np.clip(np.round(big), 0, np.iinfo(plane.dtype).max)
    elif np.issubdtype(plane.dtype, np.floating):
        big = np.clip(big, 0, 1)
    return big.astype(plane.dtype if plane.dtype != np.float64 else np.float32)


# ----------------------------------------------------------------------------------------------
# PIL images: modes in, same family of mode out

_TO_RGB = ("CMYK", "YCbCr", "LAB", "HSV", "RGBX")


def upscale_image(
    model: Upscaler,
    image: Image.Image,
    scale: int | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> Image.Image:
    """Tiled upscale of a PIL image: RGB(A) -> RGB(A), L/LA/1 -> L/LA, I;16 -> I;16, F -> F.

    P becomes RGB, a colour key ("transparency": P, RGB, L) becomes alpha (RGBA/LA), as in
    `open_image`; CMYK/YCbCr/... become RGB. F (float) is taken as [0, 1]. EXIF and DPI are
    kept, the ICC profile when the colour space is unchanged. EXIF orientation is the
    caller's job (`open_image` applies it).
    """
    mode, info = image.mode, image.info
    icc, key = info.get("icc_profile"), "transparency" in info
    if (mode in ("P", "RGB") and key) or mode in ("PA", "RGBa"):
        image = image.convert("RGBA")
    elif mode == "P":
        image = image.convert("RGB")
    elif mode == "La" or (mode in ("1", "L") and key):
        image = image.convert("LA")
    elif mode == "1":
        image = image.convert("L")
    elif mode in _TO_RGB:
        image, icc = image.convert("RGB"), None  # a CMYK profile does not describe RGB
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        arr = np.asarray(image)
    elif image.mode.startswith("I;16"):
        arr = np.asarray(image).astype(np.uint16)  # native byte order
    elif image.mode == "I":  # 32-bit ints; PNG/TIFF 16-bit data decoded by older Pillow
        arr = np.clip(np.asarray(image), 0, 65535).astype(np.uint16)
    elif image.mode == "F":  # float TIFF; open_image made sure it holds [0, 1] data
        arr = np.asarray(image)
    else:
        raise ValueError(f"unsupported image mode {mode!r}")
    sr = upscale_array(model, arr, scale, tile, overlap, progress, device, precision)
    out = Image.fromarray(sr)  # uint16 (H, W) -> I;16, (H, W, 2) uint8 -> LA, float32 -> F
    out.info.update({k: info[k] for k in ("exif", "dpi") if k in info})  # see save_image
    if icc:
        out.info["icc_profile"] = icc
    return out


def upscale(
    model: Upscaler,
    image: Image.Image | np.ndarray | torch.Tensor,
    scale: int | None = None,
    tile: int = DEFAULT_TILE,
    overlap: int | None = None,
    progress: bool = False,
    device: str | torch.device | None = None,
    precision: str = "auto",
) -> Image.Image | np.ndarray | torch.Tensor:
    """Tiled upscale of a PIL image, numpy array or tensor; returns the same kind of object."""
    if isinstance(image, Image.Image):
        fn = upscale_image
    elif isinstance(image, np.ndarray):
        fn = upscale_array
    elif isinstance(image, torch.Tensor):
        fn = upscale_tensor
    else:
        raise TypeError(f"expected a PIL image, numpy array or tensor, got {type(image)}")
    return fn(model, image, scale, tile, overlap, progress, device, precision=precision)


# ----------------------------------------------------------------------------------------------
# Checkpoints


def export_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    metrics: dict | None = None,
    half: bool = True,
) -> int:
    """Write a small inference checkpoint from a training one; returns its size in bytes.

    Keeps model (parameters in fp16 when `half`; buffers such as BatchNorm statistics stay
    fp32), model_config, config, step, a history summary and `metrics`; drops the optimizer
    and RNG state. `srlib.training.load_model` reads it (load_state_dict casts back to fp32).
    """
    return write_inference_checkpoint(load_checkpoint(src), dst, metrics, half)


def write_inference_checkpoint(
    ckpt: dict, dst: str | os.PathLike, metrics: dict | None = None, half: bool = True
) -> int:
    """`export_checkpoint` of a checkpoint dict already read (e.g. from .safetensors)."""
    config = check_model_config(ckpt.get("model_config"), ckpt.get("model"))
    with torch.device("meta"):  # only the parameters' names are needed
        params = {name for name, _ in build_model(config).named_parameters()}
    state = {
        k: v.half() if half and k in params and v.is_floating_point() else v
        for k, v in ckpt["model"].items()
    }
    save_checkpoint(
        dst,
        model=state,
        model_config=ckpt["model_config"],
        config=ckpt.get("config"),
        step=ckpt.get("step"),
        history=summarize_history(ckpt.get("history") or {}),
        metrics=dict(metrics or ckpt.get("metrics") or {}),
    )
    return os.path.getsize(dst)


# ----------------------------------------------------------------------------------------------
# ONNX: srlib.export does it (and safetensors, NCNN); these names keep older callers working.

ONNX_OPSET = 17  # srlib.export.ONNX_OPSET: onnxruntime 1.17 opens it (IR version 8)
ONNX_CHECK_SHAPES = ((1, 3, 32, 48), (1, 3, 57, 31), (2, 3, 64, 64))
ONNX_TOLERANCE = 1e-4  # max abs difference to PyTorch, on outputs in [0, 1]


def export_onnx(
    model: Upscaler,
    path: str | os.PathLike,
    opset: int = ONNX_OPSET,
    check_shapes: tuple[tuple[int, ...], ...] = ONNX_CHECK_SHAPES,
    tol: float = ONNX_TOLERANCE,
) -> dict[tuple[int, ...], float]:
    """`srlib.export.export_onnx` with tensors named `lq` / `sr`, as this function always had.

    Writes `model` (float32) once onnxruntime matches PyTorch within `tol` on `check_shapes`;
    returns the max abs difference per shape. `python -m srlib export --format onnx` names the
    tensors `input` / `output` instead, as chaiNNer's exporter does.
    """
    from srlib.export import export_onnx as _export_onnx

    return _export_onnx(
        model, path, opset=opset, names=("lq", "sr"), check_shapes=check_shapes, tol=tol
    )
