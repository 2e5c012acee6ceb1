"""`srlib upscale`: upscale image files, folders and globs into an output folder.

Folders are read recursively (hidden files and folders left out) and their tree is mirrored in
the output folder: photos/a/p.jpg -> out/a/p_x2.png; a glob mirrors the tree below its first
wildcard, a file named directly goes to out/ itself. Files in the output folder whose name ends
like an output's (p_x2.png) are taken for outputs of an earlier run and skipped, so rerunning
with -o equal to the input folder upscales nothing twice. `ok:` lines and the summary go to
stdout; `error:`, `skip:` and `warning:` lines to stderr. Exit code: 0 when every file was
written or skipped, 1 when some file failed, 2 when nothing was tried (bad option, checkpoint,
device or output folder).
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
from typing import TYPE_CHECKING, Any

from srlib.cli.errors import CliError, one_line

if TYPE_CHECKING:
    import torch
    from PIL import Image

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
        key = file_id(src)
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
        dst_id = file_id(dst)  # None: dst does not exist
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


def file_id(path: Path) -> tuple[int, int] | None:
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
# The command


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `upscale` subcommand and its flags."""
    from srlib.infer import (
        DEFAULT_MAX_OUTPUT_PIXELS,
        DEFAULT_MAX_PIXELS,
        DEFAULT_TILE,
        FORMATS,
        PRECISIONS,
    )

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
    up.set_defaults(func=run)


@dataclass
class Setup:
    """What every file of a run shares: the model, where it runs, and the scale to reach."""

    out_dir: Path
    checkpoint: Path
    device: torch.device
    precision: str
    model: Any
    factor: float  # the final scale (--scale or --outscale)
    model_factor: int  # the model's passes together: model.scale ** passes


def run(args: argparse.Namespace) -> int:
    """Upscale every input image; returns the exit code (1 if any file failed)."""
    import torch

    from srlib.infer import NotAnImageError

    s = setup(args)
    items, input_errors = expand_inputs(args.inputs)
    for e in input_errors:
        print(f"error: {e}", file=sys.stderr)
    try:
        s.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CliError(f"cannot create output folder {s.out_dir}: {one_line(e)}") from e
    jobs, skips, errors = plan_outputs(items, s.out_dir, s.factor, args.ext, args.overwrite)
    resize = f", x{s.model_factor} then resized" if s.model_factor != s.factor else ""
    print(
        f"{len(items)} input file(s), model {s.model.config['arch']} x{s.model.scale}, "
        f"scale x{s.factor:g}{resize}, device {s.device}"
        + (f" ({torch.get_num_threads()} threads)" if s.device.type == "cpu" else "")
        + f", precision {s.precision}{' (auto)' if args.precision == 'auto' else ''}, "
        f"checkpoint {s.checkpoint}"
    )
    for line in skips:
        print(f"skip: {line}", file=sys.stderr)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    written, skipped, failed = 0, len(skips), len(input_errors) + len(errors)
    for job in jobs:
        t0 = time.perf_counter()
        try:
            img, sr, note = upscale_file(job, args, s)
        except NotAnImageError:
            print(f"skip: {job.src}: not an image", file=sys.stderr)
            skipped += 1
            continue
        except (ValueError, OSError, RuntimeError, MemoryError, FloatingPointError) as e:
            print(f"error: {job.src}: {e}", file=sys.stderr)  # ImageLoadError is a ValueError
            failed += 1
            continue
        extra = f" ({note})" if note else ""
        print(
            f"ok: {job.src} {img.width}x{img.height} {img.mode} -> {job.dst} {sr.width}x"
            f"{sr.height} {sr.mode} in {time.perf_counter() - t0:.1f}s{extra}"
        )
        written += 1
    print(f"done: {written} written, {skipped} skipped, {failed} failed")
    return 1 if failed else 0


def setup(args: argparse.Namespace) -> Setup:
    """Check the options, load the model where it runs, choose the passes; CliError if not."""
    import torch

    from srlib.infer import num_passes, precision_autocast, resolve_precision
    from srlib.perf import pick_threads
    from srlib.training.checkpoint import load_model
    from srlib.training.runtime import pick_device

    check_upscale_args(args)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise CliError(f"-o {out_dir} is a file; -o takes the output folder")
    try:
        ckpt_path = find_checkpoint(args.checkpoint)
    except FileNotFoundError as e:
        raise CliError(str(e)) from e
    # Default: as many threads as cores are idle now (more would be slower on a busy machine).
    torch.set_num_threads(pick_threads(args.threads or 0))
    try:
        device = pick_device(args.device)
        torch.empty(1, device=device)  # "cuda" without a GPU, "cuda:7" on a 1-GPU machine
    except Exception as e:  # RuntimeError, AssertionError (torch not compiled with CUDA), ...
        raise CliError(f"--device {args.device}: {one_line(e)}") from e
    try:
        precision = resolve_precision(device, args.precision)
        precision_autocast(device, precision)  # a ValueError where torch cannot do it here
    except ValueError as e:
        raise CliError(f"--precision {args.precision}: {e}") from e
    try:
        model, _ = load_model(ckpt_path, device=str(device))
    except Exception as e:  # corrupt file, not a checkpoint, unknown architecture
        raise CliError(f"cannot load checkpoint {ckpt_path}: {one_line(e)}") from e
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
    return Setup(out_dir, ckpt_path, device, precision, model, factor, model.scale**passes)


def upscale_file(
    job: Job, args: argparse.Namespace, s: Setup
) -> tuple[Image.Image, Image.Image, str | None]:
    """Upscale one file and save it; (input, output, a note on the saved file)."""
    import torch

    from srlib.infer import open_image, save_image, upscale_image
    from srlib.io import image_size

    model_factor, factor = s.model_factor, s.factor
    # The largest image made is the last model pass's output: bound it before any work.
    w, h = image_size(job.src, max_pixels=args.max_pixels)  # the header only
    if w * h * model_factor**2 > args.max_output_pixels:
        raise ValueError(
            f"x{model_factor} of {w}x{h} would make {w * model_factor}x"
            f"{h * model_factor} = {w * h * model_factor**2:,} pixels, over "
            f"--max-output-pixels {args.max_output_pixels:,}; choose a smaller scale "
            "(or raise the limit if you have the memory)"
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        img = open_image(job.src, max_pixels=args.max_pixels)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    sr = upscale_image(
        s.model,
        img,
        model_factor,
        args.tile,
        args.overlap,
        progress=not args.quiet,
        precision=args.precision,
    )
    if model_factor != factor:
        sr = _resize(sr, (round(img.width * factor), round(img.height * factor)))
    job.dst.parent.mkdir(parents=True, exist_ok=True)  # a mirrored subfolder
    # Big PNGs deflate on as many threads as torch was given (setup: the idle cores).
    note = save_image(
        sr, job.dst, job.fmt, png_compression=args.png_compression, threads=torch.get_num_threads()
    )
    return img, sr, note


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
