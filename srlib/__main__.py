"""Command line: `python -m srlib upscale|info|export|train ...` (or `srlib ...` once installed).

python -m srlib upscale photos/ extra.jpg "scans/*.tif" -o out/ --scale 4
python -m srlib upscale photos/ -o out/ --outscale 3 --ext auto --precision bf16
python -m srlib info checkpoints/resnet_unet_x2.pt
python -m srlib export runs/unet/best.pt unet_small.pt
python -m srlib export --onnx checkpoints/unet_x2.pt unet_x2.onnx
python -m srlib train --preset quick --model unet --loss l1 --data photos/ --out runs/mine

Folders are read recursively (hidden files and folders left out) and their tree is mirrored in
the output folder: photos/a/p.jpg -> out/a/p_x2.png; a glob mirrors the tree below its first
wildcard, a file named directly goes to out/ itself. Files in the output folder whose name ends
like an output's (p_x2.png) are taken for outputs of an earlier run and skipped, so rerunning
with -o equal to the input folder upscales nothing twice. `ok:` lines and the summary go to
stdout; `error:`, `skip:` and `warning:` lines to stderr. Exit code: 0 when every file was
written or skipped, 1 when some file failed, 2 when nothing was tried (bad option, checkpoint,
device or output folder). `train` has its own exit codes (`python -m srlib train --help`).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import re
import sys
import time
import typing
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

    from srlib.train import TrainConfig

DEFAULT_CHECKPOINT = "checkpoints/unet_x2.pt"  # best and fastest shipped x2 (README)
REPO_ROOT = Path(__file__).resolve().parent.parent
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
    """A problem that stops a command before any file is tried: one stderr line, exit code 2."""


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
    """The checkpoint to use: `path`, else the shipped default (CWD first, then the checkout).

    A non-editable install (`pip install .`, a wheel) has no checkpoints/: there the default is
    looked for in the current folder only, and the error says where to put it.
    """
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return Path(path)
    # Run from a checkout (or an editable install) the repository's checkpoints/ is beside
    # srlib/; installed, srlib's parent is site-packages, whose checkpoints/ would be anybody's.
    checkout = (REPO_ROOT / "pyproject.toml").is_file()
    candidates = [Path(DEFAULT_CHECKPOINT)] + ([REPO_ROOT / DEFAULT_CHECKPOINT] if checkout else [])
    for c in candidates:
        if c.is_file():
            return c
    looked = " nor ".join(str(c.resolve()) for c in candidates)
    fix = (
        "; train one (see the notebooks) and pass --checkpoint PATH"
        if checkout
        else f": srlib installed with pip ships without checkpoints; copy {DEFAULT_CHECKPOINT} "
        "from the srlib repository there, or pass --checkpoint PATH"
    )
    raise FileNotFoundError(f"no --checkpoint given, and the default is not at {looked}{fix}")


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
        save_image,
        upscale_image,
    )
    from srlib.train import load_model, pick_device

    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"-o {out_dir} is a file; -o takes the output folder")
    try:
        ckpt_path = find_checkpoint(args.checkpoint)
    except FileNotFoundError as e:
        raise CliError(str(e)) from e
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = pick_device(args.device)
        torch.empty(1, device=device)  # "cuda" without a GPU, "cuda:7" on a 1-GPU machine
    except Exception as e:  # RuntimeError, AssertionError (torch not compiled with CUDA), ...
        raise CliError(f"--device {args.device}: {_one_line(e)}") from e
    try:
        _autocast(device, args.precision)
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
        f"scale x{factor:g}{resize}, device {device}, precision {args.precision}, "
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
            note = save_image(sr, dst, job.fmt)
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
    from srlib.models import build_model
    from srlib.train import load_checkpoint, nonfinite_tensors

    path = Path(args.checkpoint)
    if not path.is_file():
        raise CliError(f"checkpoint not found: {path}")
    try:
        ckpt = load_checkpoint(path)
        model = build_model(ckpt["model_config"])
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
    """Write a small fp16 inference checkpoint from a training one, or (--onnx) an ONNX model."""
    from srlib.infer import export_checkpoint

    src, dst = Path(args.src), Path(args.dst)
    if not src.is_file():
        raise CliError(f"checkpoint not found: {src}")
    if dst.exists() and _file_id(dst) == _file_id(src):
        raise CliError(f"{dst} is the source checkpoint; export to another file")
    if args.onnx:
        return _export_onnx(src, dst)
    try:
        size = export_checkpoint(src, dst, half=not args.fp32)
    except Exception as e:  # corrupt source, unwritable destination
        raise CliError(f"cannot export {src} to {dst}: {_one_line(e)}") from e
    print(f"wrote {dst} ({size / 1e6:.2f} MB)")
    return 0


def _export_onnx(src: Path, dst: Path) -> int:
    """`export --onnx`: write the model of `src` as ONNX once onnxruntime matches PyTorch."""
    import srlib.infer as infer
    from srlib.train import load_model

    try:
        model, _ = load_model(src)  # float32, whatever the checkpoint stores
    except Exception as e:  # corrupt file, not a checkpoint, NaN weights
        raise CliError(f"cannot load checkpoint {src}: {_one_line(e)}") from e
    try:
        diffs = infer.export_onnx(model, dst, tol=infer.ONNX_TOLERANCE)
    except ImportError as e:  # the onnx extra is not installed
        raise CliError(str(e)) from e
    except Exception as e:  # a difference above the tolerance (nothing written), unwritable dst
        raise CliError(f"cannot export {src} to ONNX: {_one_line(e)}") from e
    for shape, diff in diffs.items():
        size = "x".join(map(str, shape))
        print(f"check: input {size}: max abs difference onnxruntime vs PyTorch {diff:.1e}")
    print(f"max difference {max(diffs.values()):.1e} (tolerance {infer.ONNX_TOLERANCE:g})")
    s = model.scale
    print(
        f"wrote {dst} ({dst.stat().st_size / 1e6:.2f} MB, opset {infer.ONNX_OPSET}): "
        f"lq (B, 3, h, w) float32 RGB in [0, 1] -> sr (B, 3, {s}h, {s}w) clamped to [0, 1]"
    )
    return 0


# ----------------------------------------------------------------------------------------------
# Training

TRAIN_MODELS = {"unet": "UNetUpscaler", "resnet": "ResNetUNetUpscaler"}  # --model -> srlib.models
# TrainConfig text fields that take one of a few values (the others take any text).
TRAIN_CHOICES = {"loss": ("l1", "l2", "perceptual"), "downscale": ("bilinear", "bicubic")}
VAL_CROPS_PER_IMAGE = 16  # fixed validation crops per validation photo, as in the notebooks
EXIT_NOT_LEARNING, EXIT_INTERRUPTED = 3, 130
TRAIN_EPILOG = """\
examples:
  python -m srlib train --preset smoke --data photos/ --out runs/try
  python -m srlib train --model resnet --loss perceptual --data data/valued --out runs/resnet_p
  python -m srlib train --preset full --steps 40000 --batch-size 32 --out runs/long
  torchrun --nproc-per-node 4 -m srlib train --preset full --out runs/ddp    (several GPUs)

Running the same command again resumes from OUT/last.pt (a finished run just prints its
summary); a different config or model in the same OUT is refused. Ctrl-C stops after the
current step with a checkpoint written. OUT gets last.pt, best.pt (best validation PSNR),
history.json and, when tensorboard is installed, TensorBoard scalars (tensorboard --logdir runs).

exit codes: 0 done; 1 the loss became NaN/inf (lower --lr); 2 bad option or data, or OUT holds
a different run; 3 done, but the run is NOT LEARNING (validation PSNR not above its base upscale:
the alert in history.json); 130 interrupted (run the command again to resume). torchrun turns
any of them but 0 into 1; under torchrun rank 0 alone prints the summary and writes the files."""


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) one run on a folder of photos; returns the exit code (TRAIN_EPILOG)."""
    from srlib import data, models
    from srlib.losses import make_loss
    from srlib.train import distributed_setup, fit, seed_everything

    rank, world = distributed_setup()
    main_process = rank == 0
    cfg = train_config(args)
    run_dir = Path(cfg.out_dir) / cfg.name
    if run_dir.exists() and not run_dir.is_dir():
        raise CliError(f"--out {run_dir} is a file; it takes the run folder")
    if not 0 <= args.val_fraction < 1:
        raise CliError(f"--val-fraction must be >= 0 and < 1, got {args.val_fraction:g}")
    sources, about = train_sources(args.data)
    train_src, val_src = data.split_by_image(sources, args.val_fraction, seed=cfg.seed)
    crop_args = dict(
        size=cfg.patch_size,
        scale=cfg.scale,
        min_crop=cfg.min_crop,
        method=cfg.downscale,
        seed=cfg.seed,
    )
    try:
        train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop_args)
        val_set = None
        if val_src:
            val_set = data.SRDataset(
                val_src, crops_per_image=VAL_CROPS_PER_IMAGE, train=False, **crop_args
            )
        seed_everything(cfg.seed)  # the same initial weights for the same config
        model = getattr(models, TRAIN_MODELS[args.model])(scale=cfg.scale)
        loss_fn = make_loss(cfg.loss)
    except ValueError as e:  # patch size vs scale, no usable image, a scale the models lack
        raise CliError(_one_line(e)) from e
    check_resume(run_dir / "last.pt", dataclasses.asdict(cfg), model.config)

    if main_process:
        n_val = "no" if val_set is None else f"{len(val_src)} ({len(val_set)} fixed crops)"
        print(f"data: {about}")
        print(
            f"photos: {len(train_src)} to train on ({len(train_set)} crops per epoch), "
            f"{n_val} to validate on"
        )
        print(
            f"model: {type(model).__name__} x{cfg.scale}, {model.num_params():,} trainable "
            f"parameters; loss {cfg.loss}; preset {args.preset}: {cfg.steps} steps of "
            f"{cfg.batch_size} crops" + (f", split over {world} processes" if world > 1 else "")
        )
        print(f"run folder: {run_dir}")
    log = RunLog(run_dir) if main_process else None
    try:
        history = fit(
            model, loss_fn, train_set, val_set, cfg, progress=main_process, on_validation=log
        )
        if log is not None:
            log(history)  # the final history.json and scalars
    except ValueError as e:  # fewer training crops than one batch
        raise CliError(_one_line(e)) from e
    except FloatingPointError as e:  # a diverged run: last.pt keeps the last finite weights
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: fit stops at once, without a checkpoint
        print(
            f"\ninterrupted twice: stopped at once. Run the same command again to resume from "
            f"{run_dir / 'last.pt'} (written every {cfg.checkpoint_every} steps)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        if log is not None:
            log.close()
    if main_process:
        summary = train_summary(history, cfg, run_dir, model.base_label, val_set is not None)
        print("\n".join(summary))
    if history["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_NOT_LEARNING if history["alerts"] else 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the preset, then the TrainConfig flags given, then --out."""
    from srlib.train import TrainConfig, preset

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name)  # flags have no default (SUPPRESS): only those given are here
    }
    if args.out is not None:
        clash = [f"--{k.replace('_', '-')}" for k in ("name", "out_dir") if k in given]
        if clash:
            raise CliError(f"--out sets the run folder: pass it or {' and '.join(clash)}, not both")
        out = Path(args.out)
        if not out.name or out.name == "..":
            raise CliError(f"--out {args.out}: give the run folder itself, e.g. runs/mine")
        given.update(out_dir=str(out.parent), name=out.name)
    return preset(args.preset, **given)


def train_sources(folder: str | None) -> tuple[list, str]:
    """(sources, what they are) for --data: a Commons folder (images/, cache/) or any folder."""
    from srlib import data

    if folder is None:  # the downloaded Commons photos, else the embedded ones
        return data.default_sources("data/valued")
    root = Path(folder)
    if not root.is_dir():
        raise CliError(f"--data {folder}: no such folder")
    images = root / "images" if (root / "images").is_dir() else root
    if not data.find_images(images):
        raise CliError(
            f"--data {folder}: no images in {images} (looked for "
            f"{', '.join(data.IMAGE_EXTENSIONS)} files in it and its subfolders; a Commons "
            "folder's photos: python -m srlib.commons download LIST, see data/valued/README.md)"
        )
    if images != root:  # a Commons folder: its fast-crop cache too, where it is up to date
        return data.default_sources(root)
    sources = data.folder_sources(root, None)
    return sources, f"{len(sources)} images from {root}"


def check_resume(last: Path, config: dict, model_config: dict) -> None:
    """Refuse (CliError) a run folder whose last.pt has another training config or model.

    fit() refuses it too, with advice for Python callers; this names the differences.
    """
    if not last.is_file():
        return
    from srlib.train import load_checkpoint

    try:
        ckpt = load_checkpoint(last)
    except Exception as e:  # truncated, not a torch file
        raise CliError(f"cannot resume from {last}: {_one_line(e)}; delete it to start over") from e
    diffs = []
    for theirs, ours in ((ckpt.get("config"), config), (ckpt.get("model_config"), model_config)):
        theirs = theirs or {}
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            old, new = theirs.get(key, "(none)"), ours.get(key, "(none)")
            if old != new:
                diffs.append(f"{key} {old} there, {new} here")
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise CliError(
            f"{last} was written by a different run ({shown}): pass another --out, or delete "
            f"{last.parent} to start over"
        )


def train_summary(
    history: dict, cfg: TrainConfig, run_dir: Path, base_label: str, validating: bool
) -> list[str]:
    """The lines printed after training: steps, time, best validation PSNR, files, alerts."""
    steps = history["step"][-1] if history["step"] else 0
    seconds = history["train_seconds"]
    took = f"{seconds:.0f} s" if seconds < 100 else f"{seconds / 60:.1f} min"
    rate = history.get("samples_per_s")
    lines = [
        f"{'interrupted' if history['interrupted'] else 'done'}: {steps} of {cfg.steps} steps in "
        f"{took}" + (f" ({rate:.1f} samples/s)" if rate else "")
    ]
    val = history["val"]
    if val["psnr"]:
        i = max(range(len(val["psnr"])), key=val["psnr"].__getitem__)
        base = val["base_psnr"]
        gain = "" if base is None else f", {val['psnr'][i] - base:+.2f} dB over {base_label}"
        best = f"best validation PSNR: {val['psnr'][i]:.2f} dB at step {val['step'][i]}"
        lines.append(best + gain)
        lines.append(f"best weights: {run_dir / 'best.pt'}")
    elif validating:
        lines.append(f"no validation yet (the first is at step {cfg.val_every}): no best.pt")
    else:
        lines.append("no validation photos (--val-fraction 0, or a single photo): no best.pt")
    lines.append(f"last checkpoint: {run_dir / 'last.pt'}, history: {run_dir / 'history.json'}")
    lines += [f"ALERT: {a['message']}" for a in history["alerts"]]
    if history["interrupted"]:
        lines.append("to resume, run the same command again")
    return lines


class RunLog:
    """fit's on_validation: writes history.json (atomically) and, if installed, TensorBoard scalars.

    The first call of a session rewrites every scalar (a resumed run's earlier steps too) into a
    new event file that purges the older ones' (purge_step=0), so TensorBoard shows each step
    once however often the run was resumed.
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.writer = None
        self.train_done = self.val_done = 0  # scalars written by this session
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the tensorboard package is missing
            print("info: no TensorBoard scalars: tensorboard is not installed (pip install it)")
            SummaryWriter = None
        self.summary_writer = SummaryWriter

    def __call__(self, history: dict) -> None:
        from srlib.io import atomic_write

        with atomic_write(self.run_dir / "history.json", "w", encoding="utf-8") as f:
            json.dump(history, f)
        if self.summary_writer is None:
            return
        if self.writer is None:
            self.writer = self.summary_writer(str(self.run_dir), purge_step=0)
        w, steps, train, val = self.writer, history["step"], history["train"], history["val"]
        done = len(train.get("total", ()))  # loss parts are fetched from the device in batches
        for i in range(self.train_done, done):
            for part, values in train.items():
                w.add_scalar(f"train/{part}", values[i], steps[i])
            w.add_scalar("lr", history["lr"][i], steps[i])
        base = val["base_psnr"]
        for i in range(self.val_done, len(val["psnr"])):
            w.add_scalar("val/psnr", val["psnr"][i], val["step"][i])
            w.add_scalar("val/loss", val["loss"][i], val["step"][i])
            if base is not None:
                w.add_scalar("val/gain_db", val["psnr"][i] - base, val["step"][i])
        self.train_done, self.val_done = done, len(val["psnr"])
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """The `train` subcommand: its own flags, then one flag per TrainConfig field."""
    from srlib.train import PRESETS, TrainConfig

    train = sub.add_parser(
        "train",
        help="train an upscaler on a folder of photos (resumes automatically)",
        description="Train an upscaler on a folder of photos; a rerun resumes from OUT/last.pt.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a mistyped flag is an error, not a guess
    )
    train.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="quick",
        help="starting config (srlib.train.PRESETS): smoke seconds, quick a 2-core CPU in "
        "minutes, full a GPU; the flags below override it (default %(default)s)",
    )
    train.add_argument(
        "--model",
        choices=list(TRAIN_MODELS),
        default="unet",
        help="unet: UNetUpscaler; resnet: ResNetUNetUpscaler, frozen ImageNet ResNet18 encoder "
        "(default %(default)s)",
    )
    train.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="photos: any image folder (searched recursively), or a Commons folder like "
        "data/valued with images/ and maybe cache/ (default: data/valued, else the embedded "
        "photos)",
    )
    train.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="the run folder, e.g. runs/mine: sets --out-dir and --name (default runs/run)",
    )
    train.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="share of the photos (whole photos, at least one) kept to validate and pick "
        "best.pt; 0: none (default %(default)s)",
    )
    group = train.add_argument_group(
        "training config", "srlib.train.TrainConfig, one flag per field; a flag beats the preset"
    )
    for name, kwargs in config_flags(TrainConfig, PRESETS).items():
        group.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    train.set_defaults(func=cmd_train)


def config_flags(cls: type, presets: dict[str, dict]) -> dict[str, dict]:
    """{field: add_argument keywords} for every field of a config dataclass, from its types.

    bool -> --x/--no-x; int, float, str; `T | None` also takes "none". Flags have no default
    (SUPPRESS), so the parsed arguments hold only the flags given. Help: the field's comment,
    its default and the presets' values.
    """
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    flags = {}
    for f in dataclasses.fields(cls):
        kind, members = hints[f.name], typing.get_args(hints[f.name])
        optional = type(None) in members
        if optional:
            others = [m for m in members if m is not type(None)]
            kind = others[0] if len(others) == 1 else kind
        by_preset = [f"{p} {v[f.name]}" for p, v in presets.items() if f.name in v]
        default = f"default {_flag_value(f.default)}"
        if by_preset:
            default = f"{', '.join(by_preset)}" + (
                f"; else {_flag_value(f.default)}" if len(by_preset) < len(presets) else ""
            )
        text = "; ".join(t for t in (comments.get(f.name), default) if t).replace("%", "%%")
        kwargs: dict = {"default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float, str):
            kwargs["type"] = _or_none(kind) if optional else kind
            kwargs["metavar"] = kind.__name__.upper() + ("|none" if optional else "")
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line flag for type {kind}")
        if f.name in TRAIN_CHOICES:
            kwargs["choices"] = TRAIN_CHOICES[f.name]
            del kwargs["metavar"]
        flags[f.name] = kwargs
    return flags


def _flag_value(value: Any) -> str:
    """A default as it is typed on the command line: none, on/off for switches."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag's type for `T | None`: "none" -> None, anything else through `parse`."""

    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_or_none.__name__ = parse.__name__  # argparse names it in "invalid float value"
    return parse_or_none


def _field_comments(cls: type) -> dict[str, str]:
    """{field: its trailing `# comment`} read from a dataclass's source, for help texts."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (a frozen app): flags just lack the comment
        return {}
    return dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, re.M))


# ----------------------------------------------------------------------------------------------
# Parser


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for `python -m srlib`."""
    from srlib.infer import DEFAULT_MAX_PIXELS, DEFAULT_TILE, FORMATS, PRECISIONS

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
        help="auto (bf16 on CUDA, else fp32), fp32, bf16 or fp16 (where the device has it)",
    )
    up.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    up.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse inputs with more pixels (decompression-bomb guard; default %(default)s)",
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
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    up.set_defaults(func=cmd_upscale)

    info = sub.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint")
    info.set_defaults(func=cmd_info)

    export = sub.add_parser(
        "export", help="small fp16 inference checkpoint from a training one, or an ONNX model"
    )
    export.add_argument("src")
    export.add_argument("dst")
    kind = export.add_mutually_exclusive_group()
    kind.add_argument("--fp32", action="store_true", help="keep float32 weights")
    kind.add_argument(
        "--onnx",
        action="store_true",
        help="write dst as ONNX (float32, dynamic batch/height/width), checked against PyTorch "
        "in onnxruntime; needs pip install 'srlib[onnx]'",
    )
    export.set_defaults(func=cmd_export)

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
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
