"""Export: an srlib checkpoint in the formats the SR ecosystem reads, each checked in its runtime.

| format      | file(s)                  | opened by                                 | checked in |
|-------------|--------------------------|-------------------------------------------|------------|
| pt          | .pt (srlib checkpoint)   | srlib; spandrel (Compact, SPAN)           | srlib      |
| safetensors | .safetensors + metadata  | srlib; spandrel: chaiNNer, ComfyUI, ditto | srlib      |
| onnx        | .onnx, opset 17, IR 8    | onnxruntime 1.17 (chaiNNer's) and newer   | onnxrt     |
| ncnn        | .param + .bin (via pnnx) | ncnn: upscayl, realesrgan-ncnn-vulkan     | ncnn       |

ONNX and NCNN graphs map an RGB image in [0, 1], (B, 3, h, w) float (NCNN: one image), to the
model's output clamped to [0, 1], any size; tensors `input`/`output` (ONNX, as chaiNNer's own
exporter names them) and blobs `data`/`output` (NCNN, as realesrgan-ncnn-vulkan feeds them).
Random inputs of several odd sizes run through the runtime and PyTorch; a difference above the
tolerance raises ValueError and nothing is written. `export` (the CLI) also writes a model card
(`model_card`) and puts the scale in the file name (`output_path`).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import importlib.util
import json
import os
import re
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import srlib
from srlib.io import atomic_write

FORMATS = ("pt", "safetensors", "onnx", "ncnn")
SUFFIXES = {".pt": "pt", ".pth": "pt", ".safetensors": "safetensors", ".onnx": "onnx",
            ".param": "ncnn", ".bin": "ncnn"}  # fmt: skip
DEFAULT_SUFFIX = {"pt": ".pt", "safetensors": ".safetensors", "onnx": ".onnx", "ncnn": ".param"}
# Weights' precision when neither --fp16 nor --fp32 is given: half size where the ecosystem's
# own files are half (Real-ESRGAN's .pth, realesrgan-ncnn-vulkan's .bin); float32 for ONNX,
# whose fp16 graphs take fp16 input, which not every runtime/provider runs on a CPU.
DEFAULT_HALF = {"pt": True, "safetensors": True, "onnx": False, "ncnn": True}

# Odd, non-square sizes unlike the export's example: a size baked into a graph shows.
ONNX_CHECK_SHAPES = ((1, 3, 32, 48), (1, 3, 57, 31), (2, 3, 64, 64))
NCNN_CHECK_SHAPES = ((1, 3, 32, 48), (1, 3, 57, 31), (1, 3, 9, 70))  # NCNN runs one image
TOLERANCE = 1e-4  # max abs difference to PyTorch (float32), on outputs in [0, 1]
FP16_TOLERANCE = 1e-2  # with fp16 weights/arithmetic: under 3 levels of an 8-bit image
# torch.onnx's exporter writes opset 18 (IR 10): converted down to opset 17 and IR version 8
# (onnx 1.12's), which onnxruntime 1.17 (chaiNNer's; IR <= 9, opset <= 20) reads.
ONNX_OPSET = 17
ONNX_IR_VERSION = 8


class Clamped(nn.Module):
    """model(lq).clamp(0, 1): what `upscale_tensor` returns, so exported graphs end in a Clip."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.model(lq).clamp(0, 1)  # (B, 3, h*s, w*s)


def _need(modules: tuple[str, ...], extra: str, what: str) -> None:
    """ImportError naming the missing modules and the extra that installs them."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"{what} needs {', '.join(missing)}: pip install 'srlib[{extra}]'")


def _reference(model: nn.Module, shapes: tuple[tuple[int, ...], ...]) -> list[tuple]:
    """[(lq, PyTorch's clamped float32 sr)] for seeded random inputs of `shapes`."""
    net = Clamped(copy.deepcopy(model).float().cpu()).eval()
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for shape in shapes:
        lq = torch.rand(shape, generator=gen)
        with torch.no_grad():
            pairs.append((lq, net(lq).numpy()))
    return pairs


def _check(diffs: dict[tuple[int, ...], float], tol: float, runtime: str) -> None:
    """ValueError naming every shape's difference when any is above `tol` (or NaN)."""
    if any(not d <= tol for d in diffs.values()):  # `not <=` also catches NaN
        shown = ", ".join(f"{'x'.join(map(str, s))}: {d:.2e}" for s, d in diffs.items())
        raise ValueError(
            f"{runtime} differs from PyTorch by more than {tol:g} ({shown}); nothing written"
        )


# ----------------------------------------------------------------------------------------------
# safetensors


def export_safetensors(
    ckpt: dict, path: str | os.PathLike, half: bool = True, metrics: dict | None = None
) -> int:
    """Write a checkpoint's weights as .safetensors, srlib's metadata beside; returns bytes.

    Metadata (JSON strings): srlib_model_config, srlib_scale, srlib_train_config (training
    data, degradation, ...), srlib_step, srlib_history (validation curve), srlib_metrics.
    Parameters in fp16 when `half` (buffers such as BatchNorm statistics stay fp32).
    `load_model` reads it back without pickle; spandrel reads Compact and SPAN ones.
    """
    _need(("safetensors",), "export", "safetensors export")
    from safetensors.torch import save

    from srlib.registry import build_model
    from srlib.training.history import summarize as summarize_history

    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])  # checks the weights fit; SPAN refolds eval_conv
    params = {name for name, _ in model.named_parameters()}
    state = {
        k: (v.half() if half and k in params and v.is_floating_point() else v).contiguous()
        for k, v in model.state_dict().items()
    }
    meta = {
        "format": "pt",  # safetensors' convention for torch tensors
        "srlib_version": srlib.__version__,
        "srlib_model_config": json.dumps(ckpt["model_config"]),
        "srlib_scale": str(model.scale),
        "srlib_train_config": json.dumps(ckpt.get("config")),
        "srlib_step": json.dumps(ckpt.get("step")),
        "srlib_history": json.dumps(summarize_history(ckpt.get("history") or {})),
        "srlib_metrics": json.dumps({**(ckpt.get("metrics") or {}), **(metrics or {})}),
    }
    data = save(state, metadata=meta)
    with atomic_write(path) as f:
        f.write(data)
    return len(data)


def read_safetensors(path: str | os.PathLike) -> dict | None:
    """An srlib .safetensors export as a checkpoint dict (no pickle); None if not srlib's."""
    _need(("safetensors",), "export", "reading .safetensors")
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "srlib_model_config" not in meta:
        return None  # someone else's file: spandrel may know it
    ckpt = {"model": load_file(str(path))}
    for key in ("model_config", "train_config", "step", "history", "metrics"):
        value = json.loads(meta.get(f"srlib_{key}", "null"))
        ckpt["config" if key == "train_config" else key] = value
    return ckpt


# ----------------------------------------------------------------------------------------------
# ONNX


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    fp16: bool = False,
    opset: int = ONNX_OPSET,
    names: tuple[str, str] = ("input", "output"),
    check_shapes: tuple[tuple[int, ...], ...] = ONNX_CHECK_SHAPES,
    tol: float | None = None,
) -> dict[tuple[int, ...], float]:
    """Write `model` as ONNX once onnxruntime matches PyTorch; returns max abs diff per shape.

    The graph maps `names[0]` (B, 3, h, w) RGB in [0, 1], any B, h, w, to `names[1]`
    (B, 3, h*scale, w*scale) clamped to [0, 1], in one untiled pass; float32, or float16
    weights, input and output with `fp16` (checked against PyTorch's float32 within
    FP16_TOLERANCE). Exported with torch.onnx's torch.export-based exporter at opset 18, then
    converted to `opset` (17 by default) and IR version 8, which onnxruntime 1.17 opens.
    """
    needed = ("onnx", "onnxscript") + (("onnxruntime",) if check_shapes else ())
    _need(needed, "onnx", "ONNX export")
    import onnx
    from onnx import version_converter
    from torch.export import Dim

    tol = (FP16_TOLERANCE if fp16 else TOLERANCE) if tol is None else tol
    dtype = torch.float16 if fp16 else torch.float32
    net = Clamped(copy.deepcopy(model).to("cpu", dtype)).eval()
    dims = {0: Dim("batch"), 2: Dim("height"), 3: Dim("width")}
    # Example sizes distinct and > 1, so that no dimension is specialised.
    program = torch.onnx.export(
        net,
        (torch.rand(2, 3, 40, 56, dtype=dtype),),
        input_names=[names[0]],
        output_names=[names[1]],
        opset_version=max(opset, 18),  # the oldest this exporter writes
        dynamo=True,
        dynamic_shapes={"lq": dims},
        external_data=False,  # one self-contained file: the weights are a few MB
        verbose=False,
    )
    proto = program.model_proto
    if opset < 18:
        proto = version_converter.convert_version(proto, opset)
        proto.ir_version = ONNX_IR_VERSION  # what opset 17's onnx release (1.12) wrote
    onnx.checker.check_model(proto)
    scale = getattr(model, "scale", None)
    arch = getattr(model, "config", {}).get("arch", type(model).__name__)
    proto.doc_string = (
        f"srlib {arch} x{scale}: {names[0]} (B, 3, h, w) {'float16' if fp16 else 'float32'} RGB "
        f"in [0, 1] -> {names[1]} (B, 3, {scale}h, {scale}w) in [0, 1]"
    )
    onnx.helper.set_model_props(proto, {"scale": str(scale), "srlib_arch": arch})
    data = proto.SerializeToString()
    diffs = {}
    if check_shapes:
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        for lq, ref in _reference(model, check_shapes):
            feed = lq.numpy().astype(np.float16 if fp16 else np.float32)
            (sr,) = session.run(None, {names[0]: feed})
            if sr.shape != ref.shape:
                raise ValueError(f"ONNX output shape {sr.shape} != PyTorch's {ref.shape}")
            diffs[tuple(lq.shape)] = float(np.abs(sr.astype(np.float32) - ref).max())
    _check(diffs, tol, "onnxruntime")
    with atomic_write(path) as f:
        f.write(data)
    return diffs


# ----------------------------------------------------------------------------------------------
# NCNN


NCNN_INPUT, NCNN_OUTPUT = "data", "output"  # the blob names realesrgan-ncnn-vulkan uses


def export_ncnn(
    model: nn.Module,
    path: str | os.PathLike,
    fp16: bool = True,
    check_shapes: tuple[tuple[int, ...], ...] = NCNN_CHECK_SHAPES,
    tol: float | None = None,
) -> dict[tuple[int, ...], float]:
    """Write `model` as NCNN (`path` .param and its .bin) once ncnn matches PyTorch.

    Traced with torch.jit.trace at two sizes and converted by pnnx (dynamic height and
    width), then its blobs renamed to `data` / `output`. With `fp16` the .bin holds fp16
    weights (as realesrgan-ncnn-vulkan's models) and ncnn runs with its default options (fp16
    storage where the CPU has it); else fp32 weights, fp32 arithmetic, checked within TOLERANCE.
    Returns the max abs difference to PyTorch per input shape.
    """
    _need(("pnnx", "ncnn"), "export", "NCNN export")  # both, before the conversion's work
    import pnnx

    tol = (FP16_TOLERANCE if fp16 else TOLERANCE) if tol is None else tol
    path = Path(path)
    net = Clamped(copy.deepcopy(model).float().cpu()).eval()
    with tempfile.TemporaryDirectory(prefix="srlib_ncnn_") as tmp:
        tmp = Path(tmp)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation: pnnx reads nothing else
            traced = torch.jit.trace(net, torch.rand(1, 3, 40, 56), check_trace=False)
        traced.save(str(tmp / "model.pt"))
        # Two input sizes: pnnx then keeps height and width dynamic (and Interp sizes relative).
        cmd = [pnnx.EXEC_PATH, str(tmp / "model.pt"), "inputshape=[1,3,40,56]f32",
               "inputshape2=[1,3,33,27]f32", f"fp16={int(fp16)}", "device=cpu",
               f"ncnnparam={tmp / 'model.param'}", f"ncnnbin={tmp / 'model.bin'}"]  # fmt: skip
        run = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if run.returncode != 0 or not (tmp / "model.param").is_file():
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"pnnx could not convert the model: {tail[0]}")
        names = {"in0": NCNN_INPUT, "out0": NCNN_OUTPUT}  # pnnx's names -> the ecosystem's
        param = _rename_blobs((tmp / "model.param").read_text(), names)
        unsupported = _unsupported_layers(param)
        if unsupported:
            raise ValueError(f"pnnx left layers NCNN cannot run: {', '.join(unsupported)}")
        (tmp / "model.param").write_text(param)
        weights = (tmp / "model.bin").read_bytes()
        diffs = {}
        for lq, ref in _reference(model, check_shapes):
            sr = run_ncnn(tmp / "model.param", tmp / "model.bin", lq.numpy(), fp16)
            if sr.shape != ref.shape:
                raise ValueError(f"NCNN output shape {sr.shape} != PyTorch's {ref.shape}")
            diffs[tuple(lq.shape)] = float(np.abs(sr - ref).max())
    _check(diffs, tol, "ncnn")
    with atomic_write(path.with_suffix(".bin")) as f:
        f.write(weights)
    with atomic_write(path, "w", encoding="utf-8") as f:  # last: a .param always has its .bin
        f.write(param)
    return diffs


def run_ncnn(param: Path, weights: Path, lq: np.ndarray, fp16: bool = True) -> np.ndarray:
    """One NCNN forward: lq (1, 3, h, w) float32 -> sr (1, 3, H, W) float32, blobs data/output."""
    import ncnn

    net = ncnn.Net()
    if not fp16:  # else ncnn's defaults: fp16 storage/arithmetic where this CPU has them
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
        raise ValueError(f"ncnn cannot load {param}")
    ex = net.create_extractor()
    # Mat(array, batch_index=0) copies one (3, h, w) image into ncnn's channel-aligned layout.
    ex.input(NCNN_INPUT, ncnn.Mat(np.ascontiguousarray(lq), batch_index=0).clone())
    ret, out = ex.extract(NCNN_OUTPUT)
    if ret != 0:
        raise ValueError(f"ncnn failed to run {param} (error {ret})")
    return out.numpy(batch_index=0).copy()  # (1, 3, H, W)


def _rename_blobs(param: str, names: dict[str, str]) -> str:
    """An NCNN .param text with blobs (and the Input layer) renamed by `names`."""
    lines = param.splitlines()
    out = lines[:2]  # magic number; layer and blob counts
    for line in lines[2:]:
        t = line.split()
        if len(t) < 4:
            out.append(line)
            continue
        n = 4 + int(t[2]) + int(t[3])  # type, name, #inputs, #outputs, inputs..., outputs...
        t[1] = names.get(t[1], t[1]) if t[0] == "Input" else t[1]
        t[4:n] = [names.get(b, b) for b in t[4:n]]
        out.append(" ".join(t))
    return "\n".join(out) + "\n"


def _unsupported_layers(param: str) -> list[str]:
    """Layer types in a .param that pnnx could not lower to NCNN (left as torch/pnnx ops)."""
    types = {line.split()[0] for line in param.splitlines()[2:] if line.split()}
    return sorted(t for t in types if t.startswith(("pnnx.", "torch.", "F.", "nn.", "Tensor.")))


# ----------------------------------------------------------------------------------------------
# File names and the model card

SCALE_TOKEN = re.compile(r"(?<![a-z0-9])(?:x(\d)|(\d)x)(?![a-z0-9])", re.I)


def pick_format(fmt: str | None, dst: str | os.PathLike) -> str:
    """The format to write: `fmt` if given, else the destination's suffix, else pt."""
    suffix_fmt = SUFFIXES.get(Path(dst).suffix.lower())
    if fmt is None:
        return suffix_fmt or "pt"
    if suffix_fmt is not None and suffix_fmt != fmt:
        raise ValueError(f"{dst} has the suffix of a {suffix_fmt} file, not of --format {fmt}")
    return fmt


def output_path(dst: str | os.PathLike, src: str | os.PathLike, scale: int, fmt: str) -> Path:
    """Where `export` writes: the scale always in the name, as upscayl reads it from there.

    A folder (existing, or given with a trailing /) gets `<name>_x<scale><suffix>`, name the
    source's stem (a run's best.pt/last.pt: `<run folder>_<stem>`). A file name without a scale
    token (`x2` or `2x`, apart from letters and digits) gets `_x<scale>` before its suffix;
    the format's suffix is added when missing. A name that says another scale is an error.
    """
    folder_given = str(dst).endswith(("/", os.sep))  # before Path() drops the slash
    dst, src = Path(dst), Path(src)
    suffix = DEFAULT_SUFFIX[fmt]
    if dst.is_dir() or folder_given:
        stem = src.stem if src.stem not in ("best", "last") else f"{src.parent.name}_{src.stem}"
        folder = dst
    else:
        stem = dst.stem if SUFFIXES.get(dst.suffix.lower()) else dst.name
        suffix = dst.suffix.lower() if SUFFIXES.get(dst.suffix.lower()) == fmt else suffix
        suffix = ".param" if suffix == ".bin" else suffix
        folder = dst.parent
    said = {int(a or b) for a, b in SCALE_TOKEN.findall(stem)}
    if said - {scale}:
        raise ValueError(
            f"{stem} names scale x{max(said - {scale})}, but the model upscales x{scale}: "
            "tools that read the scale from the name would use the wrong one"
        )
    if not said:
        stem = f"{stem}_x{scale}"
    return folder / f"{stem}{suffix}"


def written_files(path: Path, fmt: str) -> list[Path]:
    """The files an export to `path` writes: the model (NCNN: .param and .bin), then its card."""
    model = [path, path.with_suffix(".bin")] if fmt == "ncnn" else [path]
    return [*model, *card_paths(path)]


def card_paths(path: Path) -> tuple[Path, Path]:
    """The model card beside a model file: `<file>.README.md` and `<file>.json` (OpenModelDB's
    shape), named after the whole file name so that several exports share a folder."""
    return path.with_name(f"{path.name}.README.md"), path.with_name(f"{path.name}.json")


# OpenModelDB's architecture ids (its data/architectures); srlib's own are not among them.
OPENMODELDB_ARCH = {"Compact": "compact", "SPAN": "span"}
PLATFORMS = {"pt": ("pytorch", "pth"), "safetensors": ("pytorch", "safetensors"),
             "onnx": ("onnx", "onnx"), "ncnn": ("ncnn", "ncnn")}  # fmt: skip
RUNTIME_NOTES = {
    "pt": "srlib (`load_model`, `upscale --checkpoint`); spandrel (chaiNNer, ComfyUI) reads "
    "Compact and SPAN from it",
    "safetensors": "srlib (`load_model`, without pickle); spandrel (chaiNNer, ComfyUI) for "
    "Compact and SPAN",
    "onnx": "onnxruntime 1.17 (chaiNNer's) and newer; input `input` (B, 3, h, w) RGB "
    "in [0, 1], output `output` clamped to [0, 1]",
    "ncnn": "ncnn (upscayl, realesrgan-ncnn-vulkan): blob `data` in, `output` out, RGB in [0, 1]",
}


def _num_params(model: nn.Module) -> int:
    """The model's trained parameters (SPAN's fused eval convs are derived from them)."""
    if hasattr(model, "num_params"):
        return model.num_params()
    return sum(p.numel() for p in model.parameters())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_card(
    ckpt: dict,
    model: nn.Module,
    files: list[Path],
    fmt: str,
    checks: dict[tuple[int, ...], float] | None = None,
    half: bool = False,
    author: str | None = None,
    license: str | None = None,
    dataset: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """(README.md text, OpenModelDB-shaped dict) for exported `files` of a checkpoint's model.

    From the checkpoint: architecture and its arguments, scale, parameters, training
    iterations/batch/HR patch/degradation/loss, validation PSNR and `metrics`; from the
    caller: author, licence (SPDX id) and dataset, which a checkpoint does not record; and the
    files' sizes and sha256. srlib's extras sit under the key "srlib".
    """
    cfg = ckpt.get("config") or {}
    arch = ckpt["model_config"]["arch"]
    history = ckpt.get("history") or {}
    val = history.get("val") or {}
    best = max(val.get("psnr") or [], default=None)
    metrics = {**(ckpt.get("metrics") or {})}
    if best is not None:
        metrics.setdefault("best validation PSNR (RGB, dB)", round(best, 3))
    platform, kind = PLATFORMS[fmt]
    degraded = cfg.get("degradation", "clean") != "clean"
    size = [f"{k}={v}" for k, v in ckpt["model_config"].items() if k not in ("arch", "scale")]
    name = files[0].stem
    card = {
        "name": name,
        "author": author or "",
        "license": license,
        "tags": ["general-upscaler"] + (["restoration"] if degraded else []),
        "description": f"srlib {arch} x{model.scale}, trained with srlib "
        f"(loss {cfg.get('loss', '?')}, {cfg.get('degradation', '?')} degradation).",
        "date": datetime.date.today().isoformat(),
        "architecture": OPENMODELDB_ARCH.get(arch, f"srlib-{arch}"),
        "size": size,
        "scale": model.scale,
        "inputChannels": 3,
        "outputChannels": 3,
        "resources": [
            {
                "platform": platform,
                "type": kind,
                "size": f.stat().st_size,
                "sha256": _sha256(f),
                "urls": [],
                "file": f.name,
            }  # fmt: skip
            for f in files
        ],
        "trainingIterations": ckpt.get("step"),
        "trainingBatchSize": cfg.get("batch_size"),
        "trainingHRSize": cfg.get("patch_size"),
        "trainingOTF": degraded,
        "dataset": dataset or "",
        "images": [],
        "srlib": {
            "version": srlib.__version__,
            "model_config": ckpt["model_config"],
            "parameters": _num_params(model),
            "train_config": cfg,
            "metrics": metrics,
            "export": {
                "format": fmt,
                "weights": "fp16" if half else "fp32",
                "max_abs_diff_to_pytorch": {
                    "x".join(map(str, s)): d for s, d in (checks or {}).items()
                },
            },
        },  # fmt: skip
    }
    if cfg.get("init_from"):
        card["pretrainedModelG"] = cfg["init_from"]
    lines = [
        f"# {name}",
        "",
        f"{card['description']} Exported by srlib {srlib.__version__} as {fmt} "
        f"({'fp16' if half else 'fp32'} weights).",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {arch} (`{card['architecture']}`), {', '.join(size) or 'defaults'} |",
        f"| scale | x{model.scale} |",
        f"| parameters | {card['srlib']['parameters']:,} |",
        f"| training | {ckpt.get('step')} iterations, batch {cfg.get('batch_size')}, HR patch "
        f"{cfg.get('patch_size')} px, lq by {cfg.get('downscale', '?')} downscale, "
        f"{cfg.get('degradation', '?')} degradation, loss {cfg.get('loss', '?')}"
        + (f", GAN ({cfg['gan']})" if cfg.get("gan", "none") != "none" else "")
        + " |",
        f"| dataset | {dataset or 'not recorded in the checkpoint (export --dataset)'} |",
        f"| author | {author or 'not given (export --author)'} |",
        f"| licence | {license or 'not given (export --license, an SPDX id)'} |",
        f"| runs in | {RUNTIME_NOTES[fmt]} |",
    ]
    lines += [f"| {k} | {v} |" for k, v in metrics.items()]
    if checks:
        worst = max(checks.values())
        lines.append(f"| checked | max abs difference to PyTorch {worst:.1e} on "
                     f"{', '.join('x'.join(map(str, s)) for s in checks)} |")  # fmt: skip
    lines += ["", "| file | bytes | sha256 |", "|---|---|---|"]
    lines += [f"| {r['file']} | {r['size']} | `{r['sha256']}` |" for r in card["resources"]]
    return "\n".join(lines) + "\n", card


def write_card(path: Path, text: str, card: dict) -> list[Path]:
    """Write the card's README and JSON beside the model at `path`; returns their paths."""
    readme, meta = card_paths(path)
    with atomic_write(readme, "w", encoding="utf-8") as f:
        f.write(text)
    with atomic_write(meta, "w", encoding="utf-8") as f:
        json.dump(card, f, indent=2)
        f.write("\n")
    return [readme, meta]
