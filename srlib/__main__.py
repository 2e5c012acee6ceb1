"""Command line: `python -m srlib upscale|info|export|train ...` (or `srlib ...` once installed).

python -m srlib upscale photos/ extra.jpg "scans/*.tif" -o out/ --scale 4
python -m srlib upscale photos/ -o out/ --outscale 3 --ext auto --precision bf16
python -m srlib info checkpoints/resnet_unet_x2.pt
python -m srlib export runs/unet/best.pt unet_small.pt        (writes unet_small_x2.pt)
python -m srlib export --format ncnn runs/compact/best.pt models/    (models/compact_best_x2.*)
python -m srlib train --preset quick --model unet --loss l1 --data photos/ --out runs/mine

Folders are read recursively (hidden files and folders left out) and their tree is mirrored in
the output folder: photos/a/p.jpg -> out/a/p_x2.png; a glob mirrors the tree below its first
wildcard, a file named directly goes to out/ itself. Files in the output folder whose name ends
like an output's (p_x2.png) are taken for outputs of an earlier run and skipped, so rerunning
with -o equal to the input folder upscales nothing twice. `ok:` lines and the summary go to
stdout; `error:`, `skip:` and `warning:` lines to stderr. Exit code: 0 when every file was
written or skipped, 1 when some file failed, 2 when nothing was tried (bad option, checkpoint,
device or output folder). `train` (srlib/train_cli.py) has its own exit codes
(`python -m srlib train --help`).
"""

from __future__ import annotations

import argparse
import glob
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

if __name__ == "__main__":
    # `python -m srlib` runs this file as __main__: srlib.train_cli, which imports CliError
    # from srlib.__main__, must get this module, not a second copy with another CliError.
    sys.modules.setdefault("srlib.__main__", sys.modules[__name__])

DEFAULT_CHECKPOINT = "checkpoints/unet_x2.pt"  # best and fastest shipped x2 (README)
# The names this CLI writes: photo_x2.png, photo_x4.jpg, photo_x1.5.png (--outscale 1.5).
OUTPUT_STEM = re.compile(r"_x\d+(\.\d+)?$")
# --ext auto: an input's suffix -> the format it is saved in (anything else is saved as PNG).
SUFFIX_FORMATS = {
    ".png": "png",
    ".jpg": "jpg",
    ".jpeg": "jpg",
    ".webp": "webp",
    ".tif": "tiff",
    ".tiff": "tiff",
}


class CliError(Exception):
    """A problem that stops a command before any file is tried: one stderr line, exit code 2.

    `quiet`: exit 2 without the line (under torchrun rank 0 alone says it).
    """

    quiet = False


def _one_line(e: BaseException) -> str:
    """`Type: first line of the message`, for errors from torch/pickle with long messages."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def version() -> str:
    """srlib's version: the installed distribution's, else srlib.__version__ (a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("srlib")
    except PackageNotFoundError:
        import srlib

        return srlib.__version__


def find_checkpoint(path: str | None) -> Path:
    """The checkpoint to use: `path`, else the shipped default (CWD, the checkout, the cache).

    Without a checkout (`pip install .`, a wheel, Colab) the default is looked for in the
    current folder, then fetched once from the repository into torch.hub's cache (srlib.hub).
    """
    from srlib import hub

    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return Path(path)
    if Path(DEFAULT_CHECKPOINT).is_file():
        return Path(DEFAULT_CHECKPOINT)
    try:
        return hub.shipped_checkpoint(Path(DEFAULT_CHECKPOINT).name)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"no --checkpoint given, and the default {DEFAULT_CHECKPOINT} is not in "
            f"{Path.cwd()}: {e}; pass --checkpoint PATH"
        ) from e


# ----------------------------------------------------------------------------------------------
# Inputs and where their outputs go


def expand_inputs(inputs: Sequence[str]) -> tuple[list[tuple[Path, Path]], list[str]]:
    """Files, folders and globs -> ([(file, its path below the output folder)], errors).

    Folders are walked recursively (image files only, no hidden paths) and keep their tree,
    below a folder named after each when several inputs are given; a glob keeps the tree below
    its first wildcard; a file named directly keeps only its name. Each file is listed once.
    """
    from srlib.io import find_images

    items, errors, seen = [], [], set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            # Several folders: each keeps its own name, so a/photo.jpg and b/photo.jpg differ.
            top = Path(p.resolve().name) if len(inputs) > 1 else Path()
            found = [(q, top / q.relative_to(p)) for q in find_images(p)]
        elif p.is_file():
            found = [(p, Path(p.name))]
        elif glob.has_magic(item):
            root = Path(*_until_magic(p.parts))
            hits = sorted(Path(q) for q in glob.glob(item, recursive=True))
            found = [(q, _below(q, root)) for q in hits if q.is_file() and _is_image_name(q)]
            if not found:
                errors.append(f"{item}: no file matches this pattern")
        else:
            errors.append(f"{item}: no such file or folder")
            found = []
        for q, rel in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                items.append((q, rel))
    return items, errors


def _is_image_name(path: Path) -> bool:
    """Folders and globs yield image files only (srlib.io's list): sidecars such as .xmp or a
    raw .CR2 next to a photo would otherwise claim the photo's output name."""
    from srlib.io import IMAGE_EXTENSIONS

    return path.suffix.lower() in IMAGE_EXTENSIONS


def _until_magic(parts: Sequence[str]) -> list[str]:
    out = []
    for part in parts:
        if glob.has_magic(part):
            break
        out.append(part)
    return out


def _below(path: Path, root: Path) -> Path:
    try:
        return path.relative_to(root)
    except ValueError:
        return Path(path.name)


def output_path(rel: Path, out_dir: Path, tag: str, ext: str) -> tuple[Path, str]:
    """(output file, format) for an input at `rel` below its root: out_dir/rel/stem_x{tag}.ext.

    `ext` auto keeps the input's suffix and format (png/jpg/webp/tiff; anything else -> png).
    """
    if ext == "auto":
        fmt = SUFFIX_FORMATS.get(rel.suffix.lower())
        suffix = rel.suffix if fmt else ".png"
        fmt = fmt or "png"
    else:
        fmt, suffix = ext, f".{ext}"
    return out_dir / rel.parent / f"{rel.stem}_x{tag}{suffix}", fmt


@dataclass
class Job:
    """One image to upscale: input, output file and output format."""

    src: Path
    dst: Path
    fmt: str


def plan_outputs(
    items: Sequence[tuple[Path, Path]], out_dir: Path, factor: float, ext: str, overwrite: bool
) -> tuple[list[Job], list[str], list[str]]:
    """Decide what to do with each input; returns (jobs, skip messages, error messages).

    Linear in the number of inputs: every input and every output path is stat-ed once and
    looked up by file identity (device, inode), which also catches hard links and
    case-insensitive file systems (a pairwise os.path.samefile was 3.6 s for 1,000 files).
    """
    tag = f"{factor:g}"
    out_root = out_dir.resolve()
    identity = {}  # (st_dev, st_ino) -> input
    for src, _ in items:
        key = _file_id(src)
        if key is not None:
            identity[key] = src
    # Files in the output folder named like outputs: most likely written by an earlier run.
    earlier = {
        src
        for src, _ in items
        if OUTPUT_STEM.search(src.stem) and src.resolve().is_relative_to(out_root)
    }
    jobs, skips, errors, planned = [], [], [], {}
    for src, rel in items:
        if src in earlier:
            suffix = OUTPUT_STEM.search(src.stem).group()
            skips.append(
                f"{src}: an earlier run's output (in the output folder, name ends in {suffix}); "
                "not upscaled again"
            )
            continue
        dst, fmt = output_path(rel, out_dir, tag, ext)
        dst_id = _file_id(dst)  # None: dst does not exist
        hit = identity.get(dst_id) if dst_id is not None else None
        # An input at dst is only fair game if it is this very input's earlier output.
        if hit is not None and not (hit in earlier and _is_output_of(dst, src, factor)):
            errors.append(f"{src}: output {dst} would overwrite an input; choose another -o")
            continue
        key = out_root / dst.relative_to(out_dir)
        if key in planned:
            errors.append(f"{src}: output {dst} is also the output of {planned[key]}; rename one")
            continue
        planned[key] = src
        if dst_id is not None and not overwrite:
            skips.append(f"{src}: {dst} exists (pass --overwrite to replace it)")
            continue
        jobs.append(Job(src, dst, fmt))
    return jobs, skips, errors


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, None if there is none (what samefile compares)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_output_of(candidate: Path, src: Path, factor: float) -> bool:
    """True when `candidate` has the size of `src` upscaled by `factor` (either orientation).

    Reads image headers only. Tells an earlier run's output (fine to replace with --overwrite)
    from a user's own file that merely has an output's name (never touched).
    """
    from PIL import Image

    from srlib.io import ImageLoadError, image_size

    try:
        w, h = (round(side * factor) for side in image_size(src))
        limit = Image.MAX_IMAGE_PIXELS  # raised for the output's header only, never disabled
        size = image_size(candidate, max_pixels=None if limit is None else max(limit, w * h))
    except ImageLoadError:
        return False  # unreadable: treat it as a user's file
    return size in ((w, h), (h, w))  # (h, w): EXIF-rotated input


# ----------------------------------------------------------------------------------------------
# Commands


def cmd_upscale(args: argparse.Namespace) -> int:
    """Upscale every input image; returns the exit code (1 if any file failed)."""
    import torch

    from srlib.infer import (
        NotAnImageError,
        _autocast,
        num_passes,
        open_image,
        resolve_precision,
        save_image,
        upscale_image,
    )
    from srlib.io import image_size
    from srlib.train import load_model, pick_device

    check_upscale_args(args)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"-o {out_dir} is a file; -o takes the output folder")
    try:
        ckpt_path = find_checkpoint(args.checkpoint)
    except FileNotFoundError as e:
        raise CliError(str(e)) from e
    from srlib.perf import pick_threads

    # Default: as many threads as cores are idle now (more would be slower on a busy machine).
    threads = pick_threads(args.threads or 0)
    torch.set_num_threads(threads)
    try:
        device = pick_device(args.device)
        torch.empty(1, device=device)  # "cuda" without a GPU, "cuda:7" on a 1-GPU machine
    except Exception as e:  # RuntimeError, AssertionError (torch not compiled with CUDA), ...
        raise CliError(f"--device {args.device}: {_one_line(e)}") from e
    try:
        precision = resolve_precision(device, args.precision)
        _autocast(device, precision)  # a ValueError where torch cannot do it on this device
    except ValueError as e:
        raise CliError(f"--precision {args.precision}: {e}") from e
    try:
        model, _ = load_model(ckpt_path, device=str(device))
    except Exception as e:  # corrupt file, not a checkpoint, unknown architecture
        raise CliError(f"cannot load checkpoint {ckpt_path}: {_one_line(e)}") from e
    if args.outscale is not None:
        if not 1 < args.outscale < 1e4:  # also refuses nan and inf
            raise CliError(f"--outscale must be > 1 and < 10000, got {args.outscale:g}")
        factor = args.outscale
        passes = 1
        while model.scale**passes < factor - 1e-9:
            passes += 1
        factor = int(factor) if factor == int(factor) else factor
    else:
        factor = args.scale or model.scale
        try:
            passes = num_passes(model, factor)
        except ValueError as e:
            raise CliError(f"{e}; --outscale {factor} resizes to any size") from e
    model_factor = model.scale**passes

    items, input_errors = expand_inputs(args.inputs)
    for e in input_errors:
        print(f"error: {e}", file=sys.stderr)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create output folder {out_dir}: {_one_line(e)}") from e
    jobs, skips, errors = plan_outputs(items, out_dir, factor, args.ext, args.overwrite)
    resize = f", x{model_factor} then resized" if model_factor != factor else ""
    print(
        f"{len(items)} input file(s), model {model.config['arch']} x{model.scale}, "
        f"scale x{factor:g}{resize}, device {device}"
        + (f" ({torch.get_num_threads()} threads)" if device.type == "cpu" else "")
        + f", precision {precision}{' (auto)' if args.precision == 'auto' else ''}, "
        f"checkpoint {ckpt_path}"
    )
    for line in skips:
        print(f"skip: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    written, skipped, failed = 0, len(skips), len(input_errors) + len(errors)
    for job in jobs:
        f, dst = job.src, job.dst
        t0 = time.perf_counter()
        try:
            # The largest image made is the last model pass's output: bound it before any work.
            w, h = image_size(f, max_pixels=args.max_pixels)  # the header only
            if w * h * model_factor**2 > args.max_output_pixels:
                raise ValueError(
                    f"x{model_factor} of {w}x{h} would make {w * model_factor}x"
                    f"{h * model_factor} = {w * h * model_factor**2:,} pixels, over "
                    f"--max-output-pixels {args.max_output_pixels:,}; choose a smaller scale "
                    "(or raise the limit if you have the memory)"
                )
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                img = open_image(f, max_pixels=args.max_pixels)
            for w in caught:
                print(f"warning: {w.message}", file=sys.stderr)
            sr = upscale_image(
                model,
                img,
                model_factor,
                args.tile,
                args.overlap,
                progress=not args.quiet,
                precision=args.precision,
            )
            if model_factor != factor:
                sr = _resize(sr, (round(img.width * factor), round(img.height * factor)))
            dst.parent.mkdir(parents=True, exist_ok=True)  # a mirrored subfolder
            note = save_image(
                sr, dst, job.fmt, png_compression=args.png_compression, threads=threads
            )
        except NotAnImageError:
            print(f"skip: {f}: not an image", file=sys.stderr)
            skipped += 1
            continue
        except (ValueError, OSError, RuntimeError, MemoryError, FloatingPointError) as e:
            print(f"error: {f}: {e}", file=sys.stderr)  # ImageLoadError is a ValueError
            failed += 1
            continue
        extra = f" ({note})" if note else ""
        print(
            f"ok: {f} {img.width}x{img.height} {img.mode} -> {dst} {sr.width}x{sr.height} "
            f"{sr.mode} in {time.perf_counter() - t0:.1f}s{extra}"
        )
        written += 1
    print(f"done: {written} written, {skipped} skipped, {failed} failed")
    return 1 if failed else 0


def check_upscale_args(args: argparse.Namespace) -> None:
    """Refuse (CliError) upscale numbers that cannot work, before anything is loaded."""
    problems = [
        f"{flag} must be at least {low}, got {value}"
        for flag, value, low in (
            ("--threads", args.threads, 1),
            ("--tile", args.tile, 1),
            ("--overlap", args.overlap, 0),
            ("--scale", args.scale, 2),
            ("--max-pixels", args.max_pixels, 1),
            ("--max-output-pixels", args.max_output_pixels, 1),
        )
        if value is not None and value < low
    ]
    if problems:
        raise CliError("; ".join(problems))


def _resize(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Lanczos resize (PIL image) to the --outscale size, keeping 16 bits and the metadata."""
    import numpy as np
    from PIL import Image

    try:
        out = img.resize(size, Image.LANCZOS)
    except ValueError:  # older Pillow cannot resample I;16: go through 32-bit float
        big = np.asarray(Image.fromarray(np.asarray(img, np.float32)).resize(size, Image.LANCZOS))
        out = Image.fromarray(np.clip(np.round(big), 0, 65535).astype(np.uint16))
    out.info.update(img.info)  # ICC, EXIF, DPI (resize keeps them, fromarray does not)
    return out


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds: architecture, scale, parameters, config, metrics."""
    from srlib.models import build_model, check_model_config
    from srlib.train import load_checkpoint, nonfinite_tensors

    path = Path(args.checkpoint)
    if not path.is_file():
        raise CliError(f"checkpoint not found: {path}")
    try:
        ckpt = load_checkpoint(path)
        model = build_model(check_model_config(ckpt.get("model_config"), ckpt.get("model")))
        model.load_state_dict(ckpt["model"])
    except Exception as e:  # truncated, not a torch file, not an srlib checkpoint
        raise CliError(
            f"cannot read checkpoint {path} (corrupt, truncated or not an srlib checkpoint): "
            f"{_one_line(e)}"
        ) from e
    bad = nonfinite_tensors(ckpt["model"])
    if bad:
        print(f"WARNING: {len(bad)} weight tensors hold NaN/inf (a diverged run): {bad[:3]}")
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in ckpt["model"].values()})
    cfg = ckpt["model_config"]
    print(f"checkpoint:   {path} ({path.stat().st_size / 1e6:.2f} MB, tensors {', '.join(dtypes)})")
    print(f"architecture: {cfg['arch']}")
    print(f"scale:        x{model.scale} (stride {model.stride})")
    print(f"base upscale: {model.base_label}")  # torch's kernel, not MATLAB's (srlib.resize)
    print(f"parameters:   {model.num_params(True):,} trainable, {model.num_params(False):,} total")
    print(f"model config: {_fmt(cfg)}")
    print(f"step:         {ckpt.get('step')}")
    if ckpt.get("config"):
        print(f"train config: {_fmt(ckpt['config'])}")
    history = ckpt.get("history") or {}
    val = history.get("val") or {}
    if val.get("psnr"):
        best = max(range(len(val["psnr"])), key=val["psnr"].__getitem__)
        print(
            f"validation:   best PSNR {val['psnr'][best]:.2f} dB at step {val['step'][best]}, "
            f"last {val['psnr'][-1]:.2f} dB"
        )
    if history.get("train_seconds"):
        print(f"train time:   {history['train_seconds']:.0f} s")
    for k, v in (ckpt.get("metrics") or {}).items():
        print(f"metric:       {k} = {v}")
    if "optimizer" in ckpt:
        print("note:         training checkpoint (has optimizer state); `export` makes it small")
    return 0


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def cmd_export(args: argparse.Namespace) -> int:
    """Export a checkpoint (--format pt|safetensors|onnx|ncnn), checked, with its model card."""
    from srlib import export

    src = Path(args.src)
    if not src.is_file():
        raise CliError(f"checkpoint not found: {src}")
    if Path(args.dst).exists() and _file_id(Path(args.dst)) == _file_id(src):
        raise CliError(f"{args.dst} is the source checkpoint; export to another file")
    try:
        fmt = export.pick_format("onnx" if args.onnx else args.format, args.dst)
    except ValueError as e:
        raise CliError(str(e)) from e
    half = export.DEFAULT_HALF[fmt] if args.precision is None else args.precision == "fp16"
    try:
        model, ckpt = _export_source(src)
        dst = export.output_path(args.dst, src, model.scale, fmt)
    except ValueError as e:
        raise CliError(str(e)) from e
    files = export.written_files(dst, fmt)
    if any(_file_id(f) == _file_id(src) for f in files if f.exists()):
        raise CliError(f"{dst} is the source checkpoint; export to another file")
    existing = [f for f in files if f.exists()]
    if existing and not args.overwrite:  # an earlier export, or a model someone shipped
        raise CliError(f"{existing[0]} exists; pass --overwrite to replace it")
    try:
        checks, runtime = _export_to(fmt, src, dst, model, ckpt, half)
    except ImportError as e:  # the onnx or export extra is not installed
        raise CliError(str(e)) from e
    except Exception as e:  # a difference above the tolerance (nothing written), unwritable dst
        what = "ONNX" if fmt == "onnx" else fmt
        raise CliError(f"cannot export {src} to {what}: {_one_line(e)}") from e
    for shape, diff in checks.items():
        size = "x".join(map(str, shape))
        print(f"check: input {size}: max abs difference {runtime} vs PyTorch {diff:.1e}")
    if checks:
        tol = export.FP16_TOLERANCE if half else export.TOLERANCE
        print(f"max difference {max(checks.values()):.1e} (tolerance {tol:g})")
    model_files = files[:-2]
    text, card = export.model_card(
        ckpt, model, model_files, fmt, checks, half, args.author, args.license, args.dataset
    )
    export.write_card(dst, text, card)
    size = sum(f.stat().st_size for f in model_files) / 1e6
    s, weights = model.scale, "fp16" if half else "fp32"
    if fmt == "onnx":
        print(
            f"wrote {dst} ({size:.2f} MB, opset {export.ONNX_OPSET}, IR "
            f"{export.ONNX_IR_VERSION}, {weights}): input (B, 3, h, w) RGB in [0, 1] -> output "
            f"(B, 3, {s}h, {s}w) clamped to [0, 1]"
        )
    elif fmt == "ncnn":
        print(
            f"wrote {dst} + {dst.with_suffix('.bin').name} ({size:.2f} MB, {weights} weights): "
            f"blob {export.NCNN_INPUT} (3, h, w) RGB in [0, 1] -> {export.NCNN_OUTPUT} "
            f"(3, {s}h, {s}w) clamped to [0, 1]"
        )
    else:
        print(f"wrote {dst} ({size:.2f} MB, {weights} weights)")
    print(f"model card: {' and '.join(map(str, export.card_paths(dst)))}")
    return 0


def _export_source(src: Path) -> tuple:
    """(model in float32, checkpoint) of an srlib checkpoint; ValueError for anything else."""
    from srlib.train import load_model

    try:
        model, ckpt = load_model(src)  # float32, whatever the checkpoint stores
    except Exception as e:  # corrupt file, not a checkpoint, NaN weights
        raise ValueError(f"cannot load checkpoint {src}: {_one_line(e)}") from e
    if "model" not in ckpt:  # a community model spandrel loaded: its own files are the export
        raise ValueError(f"{src} is not an srlib checkpoint ({model.config['arch']}); export "
                         "takes srlib's own checkpoints")  # fmt: skip
    return model, ckpt


def _export_to(
    fmt: str, src: Path, dst: Path, model, ckpt: dict, half: bool
) -> tuple[dict[tuple[int, ...], float], str]:
    """Write one format; returns (max abs difference per checked shape, runtime checked in)."""
    from srlib import export
    from srlib.infer import write_inference_checkpoint

    if fmt == "pt":
        write_inference_checkpoint(ckpt, dst, half=half)
        return {}, ""
    if fmt == "safetensors":
        export.export_safetensors(ckpt, dst, half=half)
        return {}, ""
    if fmt == "onnx":
        return export.export_onnx(model, dst, fp16=half), "onnxruntime"
    return export.export_ncnn(model, dst, fp16=half), "ncnn"


# ----------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for `python -m srlib`."""
    from srlib.infer import (
        DEFAULT_MAX_OUTPUT_PIXELS,
        DEFAULT_MAX_PIXELS,
        DEFAULT_TILE,
        FORMATS,
        PRECISIONS,
    )

    # `srlib` when run as the installed console script, else `python -m srlib`.
    prog = "srlib" if Path(sys.argv[0]).name == "srlib" else "python -m srlib"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"srlib {version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="upscale images (files, folders, globs)")
    up.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders or globs")
    up.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder")
    up.add_argument(
        "--checkpoint", default=None, help=f"model checkpoint (default {DEFAULT_CHECKPOINT})"
    )
    size = up.add_mutually_exclusive_group()
    size.add_argument("--scale", type=int, default=None, help="2, 4, ... (default: the model's)")
    size.add_argument(
        "--outscale",
        type=float,
        default=None,
        metavar="F",
        help="any final scale, e.g. 3 or 1.5: enough model passes to reach it, then a Lanczos "
        "downscale",
    )
    up.add_argument(
        "--tile", type=int, default=DEFAULT_TILE, help="LR tile side (default %(default)s)"
    )
    up.add_argument(
        "--overlap",
        type=int,
        default=None,
        help="LR context pixels around each tile (default: the model's receptive field)",
    )
    up.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    up.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto (bf16 on CUDA and on CPUs with native bf16, else fp32), fp32, bf16 or fp16",
    )
    up.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: as many as cores are idle when it starts)",
    )
    up.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse inputs with more pixels (decompression-bomb guard; default %(default)s)",
    )
    up.add_argument(
        "--max-output-pixels",
        type=int,
        default=DEFAULT_MAX_OUTPUT_PIXELS,
        help="refuse a file whose upscale (before an --outscale downscale) would have more "
        "pixels, before any work (default %(default)s: x4 of the largest default input)",
    )
    up.add_argument(
        "--ext",
        "--format",
        dest="ext",
        choices=["auto", *sorted(FORMATS)],
        default="png",
        help="output format; auto keeps each input's (png/jpg/webp/tiff, else png); "
        "default %(default)s",
    )
    up.add_argument(
        "--png-compression",
        type=int,
        choices=range(10),
        default=1,
        metavar="0-9",
        help="zlib level of PNG outputs, all lossless: 1 (default) writes a 48 MP upscale ~6x "
        "faster than 6 (PIL's own default) for a ~16%% larger file; 9 is the smallest",
    )
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    up.set_defaults(func=cmd_upscale)

    info = sub.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint")
    info.set_defaults(func=cmd_info)

    export = sub.add_parser(
        "export",
        help="a checkpoint for srlib, chaiNNer/ComfyUI, onnxruntime or upscayl/ncnn",
        description="Export a checkpoint as pt (srlib's small inference checkpoint), "
        "safetensors (weights + srlib's metadata; chaiNNer and ComfyUI open Compact and SPAN), "
        "onnx or ncnn (checked against PyTorch in onnxruntime / ncnn: above the tolerance "
        "nothing is written), with a model card (FILE.README.md, FILE.json). DST is a file or a "
        "folder; the scale is put in the name when it is not there (unet.onnx -> "
        "unet_x2.onnx; a folder: <checkpoint name>_x2.onnx).",
    )
    export.add_argument("src", help="an srlib checkpoint (a run's best.pt, or an export)")
    export.add_argument("dst", help="output file or folder")
    export.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    kind = export.add_mutually_exclusive_group()
    kind.add_argument(
        "--format",
        choices=["pt", "safetensors", "onnx", "ncnn"],
        default=None,
        help="default: from dst's suffix (.pt/.pth, .safetensors, .onnx, .param/.bin), else pt",
    )
    kind.add_argument(
        "--onnx", action="store_true", help="the same as --format onnx (needs srlib[onnx])"
    )
    precision = export.add_mutually_exclusive_group()
    precision.add_argument(
        "--fp32",
        dest="precision",
        action="store_const",
        const="fp32",
        default=None,
        help="float32 weights (the default for onnx)",
    )
    precision.add_argument(
        "--fp16",
        dest="precision",
        action="store_const",
        const="fp16",
        help="float16 weights (the default for pt, safetensors and ncnn); onnx: an fp16 graph, "
        "fp16 input and output",
    )
    card = export.add_argument_group("model card", "what a checkpoint does not record")
    card.add_argument("--author", default=None, help="who trained it")
    card.add_argument("--license", default=None, help="its licence, an SPDX id (e.g. CC-BY-4.0)")
    card.add_argument("--dataset", default=None, help="what it was trained on")
    export.set_defaults(func=cmd_export)

    from srlib.train_cli import add_train_parser  # `train`: its own module

    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (argparse's too: 0 for --help, 2 for usage)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse has printed them
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 2
    try:
        return args.func(args)
    except CliError as e:
        if not e.quiet:
            sys.stderr.write(f"error: {e}\n")  # one write: processes sharing a terminal
            sys.stderr.flush()  # (torchrun) then never run two lines into one
        return 2


if __name__ == "__main__":
    sys.exit(main())
