"""Tiled x2 inference on a synthetic 12 MP photo: seconds, output MP/s, peak RSS, vs PIL bicubic.

    python benchmarks/infer.py                      # 4000x3000 -> 8000x6000, shipped checkpoints
    python benchmarks/infer.py --size 1000x750      # quick trial
    python benchmarks/infer.py --sweep --size 1536x1152 --tiles 128,256,512,768
    python benchmarks/infer.py --profile            # where the time goes, per layer group
    python benchmarks/infer.py --isa avx2 --cli     # the whole CLI command, PNG in and out,
                                                    # as on a CPU without AVX-512

The photo is skimage's astronaut upscaled with PIL bicubic to the target size, plus sensor-like
noise (speed does not depend on the content, but it should not be a flat image). Every row runs
in a fresh subprocess so its peak RSS (VmHWM: interpreter, torch, model, image buffers and
the tiles) is its own. Missing checkpoints fall back to freshly built untrained models of
default width, which run at the same speed; the table says so. `--cli` times the whole
command a user runs instead, `python -m srlib upscale photo.png -o out/ --checkpoint ...` (PNG in
and out, model loading and the receptive-field probe included), from the process start to its
end. `--isa avx2` limits torch to AVX2 (srlib.perf.restrict_isa; the children inherit it). The
header names CPU, ISA and threads; the FLOPs column is per output pixel of one untiled pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, isa_argument, print_table, restrict_isa

DEFAULT_CHECKPOINTS = ["checkpoints/unet_x2.pt", "checkpoints/resnet_unet_x2.pt"]


def synthetic_photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(height, width, 3) uint8: astronaut, bicubic-upscaled and cropped to 4:3-ish, + noise."""
    from PIL import Image
    from skimage import data

    src = Image.fromarray(data.astronaut())  # 512 x 512
    side = max(width, height)
    big = src.resize((side, side), Image.BICUBIC)
    left, top = (side - width) // 2, (side - height) // 2
    img = np.asarray(big.crop((left, top, left + width, top + height))).copy()
    rng = np.random.default_rng(seed)
    for y in range(0, height, 256):  # row chunks: no full-size float temporaries
        rows = img[y : y + 256].astype(np.int16)
        rows += rng.normal(0, 4, rows.shape).astype(np.int16)  # sensor noise, sigma 4/255
        img[y : y + 256] = np.clip(rows, 0, 255).astype(np.uint8)
    return img


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------
# Child: one measurement in a fresh process


def build(target: str):
    """'bicubic' -> None; 'untrained:unet|resnet' -> a default-width model; else a checkpoint."""
    from srlib.models import ResNetUNetUpscaler, UNetUpscaler
    from srlib.training import load_model

    if target == "bicubic":
        return None
    if target == "untrained:unet":
        return UNetUpscaler().eval()
    if target == "untrained:resnet":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ResNetUNetUpscaler(pretrained=False).eval()
    return load_model(target)[0]


def child(args: argparse.Namespace) -> None:
    """Time one upscale of the saved photo and print a JSON line with the numbers."""
    import torch
    from PIL import Image

    from srlib.infer import auto_overlap, resolve_precision, upscale_image, upscale_tensor

    if args.threads:
        torch.set_num_threads(args.threads)
    model = build(args._child)
    img = Image.fromarray(np.load(args._image))
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()  # includes measuring the receptive field, as in the CLI
    if model is None:
        out = img.resize((img.width * 2, img.height * 2), Image.BICUBIC)
    else:
        out = upscale_image(
            model, img, tile=args.tile, overlap=args.overlap, precision=args.precision
        )
    seconds = time.perf_counter() - t0
    overlap, tiling_error = None, None
    if model is not None:
        overlap = auto_overlap(model) if args.overlap is None else args.overlap
        # Seamless? A 640x480 corner in tiles of 128 against one whole-crop tile, same precision.
        crop = torch.from_numpy(np.asarray(img)[:480, :640]).permute(2, 0, 1).float() / 255
        run = partial(upscale_tensor, model, crop, overlap=args.overlap, precision=args.precision)
        tiling_error = float((run(tile=128) - run(tile=10**6)).abs().max())
    from srlib.perf import flops_per_pixel

    result = dict(
        flops=None if model is None else flops_per_pixel(model),
        seconds=seconds,
        out_mp=out.width * out.height / 1e6,
        peak_rss_mb=peak_rss_mb(),
        rss_before_mb=rss_before,
        threads=torch.get_num_threads(),
        overlap=overlap,
        tiling_error=tiling_error,
        precision=resolve_precision(torch.device("cpu"), args.precision),
    )
    print(json.dumps(result))


def run_child(target: str, image: Path, args: argparse.Namespace, tile: int) -> dict:
    """Run `child` in a fresh interpreter and parse its JSON line."""
    cmd = [sys.executable, __file__, "--_child", target, "--_image", str(image)]
    cmd += ["--tile", str(tile), "--precision", args.precision]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.overlap is not None:
        cmd += ["--overlap", str(args.overlap)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if res.returncode != 0:
        raise RuntimeError(f"{target} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_cli(target: str, png: Path, args: argparse.Namespace, tile: int) -> dict:
    """Time `python -m srlib upscale PNG -o OUT` end to end in a fresh process: seconds, RSS."""
    cmd = [sys.executable, "-m", "srlib", "upscale", str(png), "-q", "--overwrite"]
    cmd += ["--checkpoint", target, "--tile", str(tile), "--precision", args.precision]
    cmd += ["--png-compression", str(args.png_compression)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.overlap is not None:
        cmd += ["--overlap", str(args.overlap)]
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        # GNU time's %M would need /usr/bin/time; the child's peak RSS comes from wait4 instead.
        proc = subprocess.Popen([*cmd, "-o", out], cwd=REPO, stdout=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        text = proc.stdout.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{target}: the CLI failed:\n{text[-2000:]}")
        sizes = [p.stat().st_size for p in Path(out).iterdir()]
    precision = re.search(r"precision (\w+)", text)
    return dict(
        seconds=seconds,
        peak_rss_mb=usage.ru_maxrss / 1024,
        out_mb=sum(sizes) / 1e6,
        precision=precision.group(1) if precision else "?",
    )


def flops_of(target: str) -> float | None:
    """FLOPs per output pixel of a checkpoint's model (None for bicubic)."""
    from srlib.perf import flops_per_pixel

    model = build(target)
    return None if model is None else flops_per_pixel(model)


# ----------------------------------------------------------------------------------------------
# Parent


def targets(checkpoints: list[str]) -> list[tuple[str, str]]:
    """(label, target) per checkpoint; untrained default-width stand-ins for missing ones."""
    out = []
    for ckpt in checkpoints:
        path = REPO / ckpt if not Path(ckpt).is_absolute() else Path(ckpt)
        if path.is_file():
            out.append((ckpt, str(path)))
            continue
        arch = "resnet" if "resnet" in Path(ckpt).name else "unet"
        print(f"note: {ckpt} not found; using an untrained default-width {arch} model instead")
        out.append((f"untrained {arch} (for {ckpt})", f"untrained:{arch}"))
    return out


class GroupTimer:
    """Wall-clock seconds spent inside each of a few named modules (CPU runs synchronously)."""

    def __init__(self, groups: dict):
        self.times = dict.fromkeys(groups, 0.0)
        self.starts: dict[str, float] = {}
        for name, mod in groups.items():
            mod.register_forward_pre_hook(lambda m, i, n=name: self._start(n))
            mod.register_forward_hook(lambda m, i, o, n=name: self._stop(n))

    def _start(self, name: str) -> None:
        self.starts[name] = time.perf_counter()

    def _stop(self, name: str) -> None:
        self.times[name] += time.perf_counter() - self.starts[name]


def profile(args: argparse.Namespace) -> None:
    """Per-layer-group time of one tile window (tile + 2*overlap) for each model."""
    import torch

    from srlib.infer import auto_overlap

    if args.threads:
        torch.set_num_threads(args.threads)
    for label, target in targets(args.checkpoint):
        model = build(target)
        side = args.tile + 2 * auto_overlap(model)
        x = torch.rand(1, 3, side, side).contiguous(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)  # as in srlib.infer
        groups = {
            **{f"encoder.stages.{i}": s for i, s in enumerate(model.encoder.stages)},
            **{f"decoder.blocks.{i}": b for i, b in enumerate(model.decoder.blocks)},
            "head.up (conv at LR + shuffle)": model.head.up,
        }
        if model.head.channels:  # the optional head that also works at HR resolution
            groups |= {f"head.{n} (HR)": getattr(model.head, n) for n in ("fuse", "res", "out")}
        with torch.no_grad():
            model(x)  # warm-up
            timer = GroupTimer(groups)
            t0 = time.perf_counter()
            model(x)
            total = time.perf_counter() - t0
        rest = total - sum(timer.times.values())
        print(f"\n{label}: one {side}x{side} LR window, {total:.2f} s")
        rows = [*timer.times.items(), ("rest (base upsample, cat, interp., ReLU)", rest)]
        print_table(
            ["layer group", "s", "share"], [[n, f"{t:.3f}", f"{t / total:.1%}"] for n, t in rows]
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--checkpoint", action="append", help="repeatable; default: shipped ones")
    ap.add_argument("--size", default="4000x3000", help="LR input WxH (default %(default)s)")
    ap.add_argument("--tile", type=int, default=None, help="LR tile side (default: srlib's)")
    ap.add_argument("--overlap", type=int, default=None, help="default: receptive field")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                    help="as the CLI's: auto = bf16 on native-bf16 CPUs, else fp32")  # fmt: skip
    ap.add_argument("--sweep", action="store_true", help="time every --tiles size instead")
    ap.add_argument("--tiles", default="128,256,512,768", help="tile sizes for --sweep")
    ap.add_argument("--profile", action="store_true", help="per-layer-group times of one tile")
    ap.add_argument("--cli", action="store_true",
                    help="time the whole CLI command instead (PNG in and out)")  # fmt: skip
    isa_argument(ap)
    ap.add_argument("--png-compression", type=int, default=1, help="with --cli (default 1)")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    ap.add_argument("--_image", help=argparse.SUPPRESS)
    args = ap.parse_args()
    restrict_isa(args.isa)  # before torch loads; the children inherit the limit
    from srlib.infer import DEFAULT_TILE

    args.tile = args.tile or DEFAULT_TILE
    if args._child:
        return child(args)
    args.checkpoint = args.checkpoint or DEFAULT_CHECKPOINTS
    if args.profile:
        return profile(args)

    from srlib.perf import FLOPS_NOTE, format_flops, machine_line

    w, h = (int(v) for v in args.size.lower().split("x"))
    models = targets(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "photo.npy"
        photo = synthetic_photo(w, h)
        np.save(image, photo)
        print(machine_line(args.threads) if args.threads else machine_line())
        print(f"input {w}x{h} ({w * h / 1e6:.1f} MP) -> x2 {2 * w}x{2 * h}, {sys.platform}")
        if args.cli:
            return cli_table(photo, Path(tmp), models, args)
        base = run_child("bicubic", image, args, args.tile)
        tiles = [int(t) for t in args.tiles.split(",")] if args.sweep else [args.tile]
        rows = []
        for label, target in [("PIL bicubic", "bicubic"), *models]:
            for tile in [None] if target == "bicubic" else tiles:
                r = base if target == "bicubic" else run_child(target, image, args, tile)
                rows.append(
                    [
                        label,
                        "-" if r["flops"] is None else format_flops(r["flops"]),
                        "-" if target == "bicubic" else r["precision"],
                        tile or "-",
                        r["overlap"] or "-",
                        f"{r['seconds']:.2f}",
                        f"{r['out_mp'] / r['seconds']:.2f}",
                        f"{r['rss_before_mb']:.0f}",
                        f"{r['peak_rss_mb']:.0f}",
                        f"{r['seconds'] / base['seconds']:.0f}",
                        "-" if r["tiling_error"] is None else f"{r['tiling_error']:.1e}",
                    ]
                )
                print(f"  measured {label} tile {tile or '-'}: {r['seconds']:.1f} s", flush=True)
        header = ["model", "FLOPs/px", "precision", "tile", "overlap", "s", "out MP/s"]
        header += ["RSS before MB", "peak RSS MB", "time / bicubic", "tiled - untiled"]
        print_table(header, rows)
        print(
            f"--precision {args.precision}; tiled - untiled: max |difference| on a 640x480 corner, "
            f"tiles of 128 vs one tile. {FLOPS_NOTE}."
        )


def cli_table(photo: np.ndarray, tmp: Path, models: list, args: argparse.Namespace) -> None:
    """--cli: each checkpoint through `python -m srlib upscale`, PNG in and out, in a table."""
    from PIL import Image

    from srlib.perf import FLOPS_NOTE, format_flops

    png = tmp / "photo.png"
    Image.fromarray(photo).save(png)
    rows = []
    for label, target in models:
        if target.startswith("untrained:"):
            raise SystemExit(f"--cli needs checkpoint files; {label} is not one")
        r = run_cli(target, png, args, args.tile)
        flops = flops_of(target)
        rows.append([label, format_flops(flops), r["precision"], args.tile, f"{r['seconds']:.1f}",
                     f"{r['peak_rss_mb']:.0f}", f"{r['out_mb']:.0f}"])  # fmt: skip
        print(f"  measured {label}: {r['seconds']:.1f} s", flush=True)
    header = ["checkpoint", "FLOPs/px", "precision", "tile", "s (whole command)", "peak RSS MB"]
    print_table([*header, "output MB"], rows)
    print(
        f"python -m srlib upscale {png.name} ({png.stat().st_size / 1e6:.0f} MB PNG) -o OUT "
        f"--precision {args.precision} --png-compression {args.png_compression}: process start "
        "to end, PNG decode and encode included. "
        f"{FLOPS_NOTE}."
    )


if __name__ == "__main__":
    main()
