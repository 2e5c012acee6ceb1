"""Command line: `python -m srlib upscale ...` and `python -m srlib info CKPT`.

python -m srlib upscale photos/ extra.jpg "scans/*.tif" -o out/ --scale 4
python -m srlib info checkpoints/resnet_unet_x2.pt
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

DEFAULT_CHECKPOINT = "checkpoints/unet_x2.pt"  # best and fastest shipped x2 (README)
REPO_ROOT = Path(__file__).resolve().parent.parent


def find_checkpoint(path: str | None) -> Path:
    """The checkpoint to use: `path`, else the shipped default (CWD first, then the repo root)."""
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return Path(path)
    candidates = [Path(DEFAULT_CHECKPOINT), REPO_ROOT / DEFAULT_CHECKPOINT]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"no --checkpoint given and the default {DEFAULT_CHECKPOINT} does not exist "
        f"(looked in {', '.join(str(c.parent.resolve()) for c in candidates)}); "
        "train one (see the notebooks) and pass --checkpoint PATH"
    )


def expand_inputs(inputs: Sequence[str]) -> tuple[list[Path], list[str]]:
    """Files, folders (their files, not recursive) and globs -> (unique files, errors)."""
    files, errors, seen = [], [], set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file())
        elif p.is_file():
            found = [p]
        elif glob.has_magic(item):
            found = sorted(Path(q) for q in glob.glob(item, recursive=True) if Path(q).is_file())
            if not found:
                errors.append(f"{item}: no file matches this pattern")
        else:
            errors.append(f"{item}: no such file or folder")
            found = []
        for q in found:
            key = q.resolve()
            if key not in seen:
                seen.add(key)
                files.append(q)
    return files, errors


def cmd_upscale(args: argparse.Namespace) -> int:
    """Upscale every input image; returns the exit code (1 if any file failed)."""
    import torch

    from srlib.data import ImageLoadError
    from srlib.infer import NotAnImageError, num_passes, open_image, save_image, upscale_image
    from srlib.train import load_model, pick_device

    try:
        ckpt_path = find_checkpoint(args.checkpoint)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    try:
        model, _ = load_model(ckpt_path, device=str(device))
    except Exception as e:  # corrupt file, not a checkpoint, unknown architecture
        print(
            f"error: cannot load checkpoint {ckpt_path}: {type(e).__name__}: {e}", file=sys.stderr
        )
        return 2
    scale = args.scale or model.scale
    try:
        num_passes(model, scale)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    files, errors = expand_inputs(args.inputs)
    for e in errors:
        print(f"error: {e}", file=sys.stderr)
    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = {f.resolve() for f in files}
    written, skipped, failed, planned = 0, 0, len(errors), {}
    print(
        f"{len(files)} input file(s), model {model.config['arch']} x{model.scale}, "
        f"scale x{scale}, device {device}, checkpoint {ckpt_path}"
    )
    for f in files:
        dst = out_dir / f"{f.stem}_x{scale}.{args.format}"
        key = dst.resolve()
        if key in inputs or (dst.exists() and any(_same(dst, i) for i in inputs)):
            print(f"error: {f}: output {dst} would overwrite an input; choose another -o")
            failed += 1
            continue
        if key in planned:
            print(f"error: {f}: output {dst} is also the output of {planned[key]}; rename one")
            failed += 1
            continue
        planned[key] = f
        if dst.exists() and not args.overwrite:
            print(f"skip: {f}: {dst} exists (pass --overwrite to replace it)")
            skipped += 1
            continue
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                img = open_image(f, max_pixels=args.max_pixels)
            for w in caught:
                print(f"warning: {w.message}")
            sr = upscale_image(model, img, scale, args.tile, args.overlap, progress=not args.quiet)
            note = save_image(sr, dst, args.format)
        except NotAnImageError:
            print(f"skip: {f}: not an image")
            skipped += 1
            continue
        except (
            ImageLoadError,
            ValueError,
            OSError,
            RuntimeError,
            MemoryError,
            FloatingPointError,
        ) as e:
            print(f"error: {f}: {e}")
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


def _same(a: Path, b: Path) -> bool:
    """True when two existing paths are the same file (hard links, case-insensitive FS)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def cmd_info(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds: architecture, scale, parameters, config, metrics."""
    from srlib.models import build_model
    from srlib.train import load_checkpoint, nonfinite_tensors

    path = Path(args.checkpoint)
    if not path.is_file():
        print(f"error: checkpoint not found: {path}", file=sys.stderr)
        return 2
    ckpt = load_checkpoint(path)
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    bad = nonfinite_tensors(ckpt["model"])
    if bad:
        print(f"WARNING: {len(bad)} weight tensors hold NaN/inf (a diverged run): {bad[:3]}")
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in ckpt["model"].values()})
    cfg = ckpt["model_config"]
    print(f"checkpoint:   {path} ({path.stat().st_size / 1e6:.2f} MB, tensors {', '.join(dtypes)})")
    print(f"architecture: {cfg['arch']}")
    print(f"scale:        x{model.scale} (stride {model.stride})")
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
    """Write a small fp16 inference checkpoint from a training checkpoint."""
    from srlib.infer import export_checkpoint

    size = export_checkpoint(args.src, args.dst, half=not args.fp32)
    print(f"wrote {args.dst} ({size / 1e6:.2f} MB)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for `python -m srlib`."""
    from srlib.infer import DEFAULT_MAX_PIXELS, DEFAULT_TILE, FORMATS

    parser = argparse.ArgumentParser(prog="python -m srlib", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="upscale images (files, folders, globs)")
    up.add_argument("inputs", nargs="+", metavar="IN", help="image files, folders or globs")
    up.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder")
    up.add_argument(
        "--checkpoint", default=None, help=f"model checkpoint (default {DEFAULT_CHECKPOINT})"
    )
    up.add_argument("--scale", type=int, default=None, help="2, 4, ... (default: the model's)")
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
    up.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    up.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse inputs with more pixels (decompression-bomb guard; default %(default)s)",
    )
    up.add_argument("--format", choices=sorted(FORMATS), default="png", help="output format")
    up.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    up.set_defaults(func=cmd_upscale)

    info = sub.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint")
    info.set_defaults(func=cmd_info)

    export = sub.add_parser("export", help="small fp16 inference checkpoint from a training one")
    export.add_argument("src")
    export.add_argument("dst")
    export.add_argument("--fp32", action="store_true", help="keep float32 weights")
    export.set_defaults(func=cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
