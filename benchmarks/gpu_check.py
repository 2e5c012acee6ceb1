"""GPU readiness: train both models briefly with the `full` preset; speed, memory and PSNR-Y.

    benchmarks/gpu_check.sh                          # one GPU, under 8 minutes (3 x 100 s runs)
    benchmarks/gpu_check.sh --budget 60 --bench ../shared/datasets
    benchmarks/gpu_check.sh --tiny                   # any machine, CPU included: seconds
    benchmarks/gpu_check.sh --preset gpu             # the notebooks' Colab preset (T4 sizing)
    GPU_CHECK_TINY=1 benchmarks/gpu_check.sh         # the same

Three runs, each `srlib.training.fit` with the `full` preset (batch 50, 192 px gt crops, 6 loader
workers) stopped by a wall-clock budget (`--budget` seconds of training, the LR annealed to 0
over it) or by `--steps`, whichever comes first: UNet with AMP (bf16 autocast), ResNet-UNet
with AMP, and one of them (`--fp32-model`) with AMP off. Data: the downloaded photos in
data/valued if any, else the embedded photos, or `--train DIR`; 25% of the photos (chelsea and
moon among them when present) are held out. Each trained model is then scored at x2 by
`srlib.metrics.evaluate`: PSNR-Y (BT.601, 2-pixel border crop, the benchmark's own LR files) on
Set5 and Set14 from `--bench`, or, when those are missing, on the held-out photos (LR made by
MATLAB-style bicubic), as the table's header then says. A bicubic (MATLAB) row gives the floor.

Printed: the device, torch/CUDA versions, a markdown table (model, AMP, steps, samples/s, peak
GPU memory of the training, i.e. torch.cuda.max_memory_allocated reset per run, PSNR-Y), the
total wall time. The table also goes to `--out FILE` and, when the OUT environment variable is
set (the GPU runner collects that folder), to $OUT/gpu_check.md.

`--tiny` shrinks every run to a few steps on small crops, with 0 loader workers, and scores on
at most 2 images per set: the same table in seconds, on CPU too (peak memory then shows "-").
ImageNet weights for the ResNet encoder are used when cached (TORCH_HOME) and never downloaded
unless `--download` is given: the header says which.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO
from srlib import data, metrics
from srlib.io import atomic_write
from srlib.models import ResNetUNetUpscaler, UNetUpscaler, Upscaler
from srlib.training import fit, loss_for, model_args, pick_device, preset, seed_everything

BENCH_SETS = ("Set5", "Set14")
# Beside the checkout on a development machine; inside it where only the checkout travels.
BENCH_DEFAULTS = (REPO / "shared" / "datasets", REPO.parent / "shared" / "datasets")
BASELINE = "bicubic (MATLAB)"  # the published tables' bicubic: the floor row
HELD_OUT = ("chelsea", "moon")  # as in the notebooks: always held out when present
MODELS = {"unet": "UNet", "resnet": "ResNet-UNet"}
SCALE = 2
# --tiny: a few steps on small crops, so the whole script runs in seconds on a CPU.
TINY = dict(
    patch_size=32,
    min_crop=24,
    crops_per_image=4,
    batch_size=4,
    steps=3,
    warmup_steps=1,
    val_every=1000,
    checkpoint_every=1000,
    workers=0,
)
TINY_MAX_IMAGES = 2  # images scored per set in --tiny mode


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    add = ap.add_argument
    add(
        "--bench",
        default=str(next((p for p in BENCH_DEFAULTS if p.is_dir()), BENCH_DEFAULTS[-1])),
        help="folder holding Set5/ and Set14/ (default: shared/datasets, else ../shared/datasets)",
    )
    add("--train", default=None, help="training images (default: data/valued, else embedded)")
    add(
        "--budget",
        type=float,
        default=None,
        help="training seconds per run (default 100; --tiny: none)",
    )
    add(
        "--steps",
        type=int,
        default=None,
        help="optimiser steps per run at most (default: the preset's; --tiny: 3)",
    )
    add(
        "--fp32-model",
        choices=sorted(MODELS),
        default="unet",
        help="the model that also trains with AMP off",
    )
    add("--workers", type=int, default=None, help="loader workers (default: the preset's)")
    add("--preset", choices=("full", "gpu"), default="full",
        help="full (default), or gpu: the notebooks' Colab preset; the estimate column is "
        "then one notebook run's training")  # fmt: skip
    add("--device", default="auto", help="auto, cuda, cpu, ...")
    add("--seed", type=int, default=0)
    add(
        "--tiny",
        action="store_true",
        default=os.environ.get("GPU_CHECK_TINY") == "1",
        help="a few steps on small crops (seconds, CPU too); or GPU_CHECK_TINY=1",
    )
    add("--download", action="store_true", help="allow downloading the ImageNet ResNet18 weights")
    add("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args(argv)
    if args.budget is None and not args.tiny:
        args.budget = 100.0
    for name in ("budget", "steps", "workers"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "workers" else 1e-9):
            ap.error(f"--{name} must be {'>= 0' if name == 'workers' else 'positive'}, got {value}")
    if args.train is not None and not Path(args.train).is_dir():
        ap.error(f"--train {args.train} is not a folder")
    return args


def environment(device: torch.device) -> list[str]:
    """Lines naming the machine: device, torch, CUDA/cuDNN versions."""
    lines = [f"python {platform.python_version()}, torch {torch.__version__}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(
            f"device: cuda, {torch.cuda.get_device_name(device)} "
            f"({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}), "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"TF32 convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}"
        )
    else:
        cpu = platform.processor() or platform.machine()
        threads = torch.get_num_threads()
        lines.append(f"device: {device.type} ({cpu}, {threads} threads); no peak GPU memory")
    return lines


def eval_folders(args: argparse.Namespace, test_src: list, tmp: Path) -> tuple[dict, str]:
    """{column: folder} to score on, and a line for the header saying what they are."""
    bench = Path(args.bench)
    found = {s: bench / s for s in BENCH_SETS if (bench / s / f"image_SRF_{SCALE}").is_dir()}
    if len(found) == len(BENCH_SETS):
        return {f"{s} PSNR-Y": p for s, p in found.items()}, (
            f"scored on {', '.join(BENCH_SETS)} x{SCALE} from {bench} (their own LR files)"
        )
    if not test_src:
        raise SystemExit(f"no {'/'.join(BENCH_SETS)} in {bench} and no held-out photos to score")
    names = [data.source_name(s) for s in test_src]
    missing = ", ".join(s for s in BENCH_SETS if s not in found)
    return {"held-out PSNR-Y": data.save_sources(test_src, tmp / "heldout")}, (
        f"{missing} x{SCALE} NOT FOUND in {bench}: scored on the {len(names)} held-out photos "
        f"instead ({', '.join(names)}; LR by MATLAB-style bicubic)"
    )


def _duration(seconds: float) -> str:
    """'42 min' or, from 2 hours on, '7.5 h'."""
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def train_one(
    key: str, amp: bool, args: argparse.Namespace, train_set: data.SRDataset, out_dir: str
) -> tuple[Upscaler, dict[str, Any]]:
    """Train one model with the `full` preset (or --tiny) for the budget; model and table info."""
    overrides: dict[str, Any] = dict(TINY) if args.tiny else {}
    for name in ("steps", "workers"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    cfg = preset(
        args.preset, **overrides, name=f"{key}_amp{int(amp)}", scale=SCALE, amp=amp,
        time_budget_s=args.budget, device=args.device, seed=args.seed, out_dir=out_dir,
    )  # fmt: skip
    device = pick_device(cfg.device)
    seed_everything(cfg.seed)  # the same initial weights for a model with and without AMP
    if key == "unet":  # the preset's UNet: the deep one for full and gpu
        model: Upscaler = UNetUpscaler(SCALE, **model_args(args.preset, "unet"))
    else:
        model = ResNetUNetUpscaler(SCALE, download=args.download)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    hist = fit(model, loss_for(cfg), train_set, None, cfg, resume=False, progress=False)
    peak = "-"
    if device.type == "cuda":
        peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    steps = hist["step"][-1] if hist["step"] else 0
    sps = hist["samples_per_s"] or 0.0
    full_steps = preset(args.preset).steps  # how long a whole run would take at this speed
    estimate = "-" if args.tiny or not sps else _duration(full_steps * cfg.batch_size / sps)
    info = {
        "model": MODELS[key],
        "device": device.type,
        "AMP": ("bf16" if device.type == "cuda" else "bf16: cuda only") if amp else "off",
        "steps": str(steps),
        "train s": f"{hist['train_seconds']:.0f}",
        "samples/s": f"{sps:.1f}",
        "peak memory": peak,
        f"{full_steps} steps (est.)": estimate,
        "ImageNet": "-" if key == "unet" else ("yes" if model.has_imagenet_weights else "NO"),
    }
    loss = hist["train"]["total"][-1] if hist["train"].get("total") else float("nan")
    print(
        f"trained {info['model']} (AMP {info['AMP']}): {steps} steps in "
        f"{hist['train_seconds']:.1f} s, {info['samples/s']} samples/s, peak {peak}, "
        f"final loss {loss:.4f}",
        flush=True,
    )
    return model.eval(), info


def score(model_or_name: Upscaler | str, folders: dict, max_images: int | None) -> dict[str, str]:
    """PSNR-Y (dB) per eval folder, as table cells."""
    cells = {}
    for column, folder in folders.items():
        result = metrics.evaluate(
            model_or_name, folder, SCALE, with_lpips=False, max_images=max_images
        )
        cells[column] = f"{result['mean']['psnr_y']:.2f}"
    return cells


def main(argv: list[str] | None = None) -> None:
    """Train the three runs, score them, print (and write) the table."""
    t_start = time.perf_counter()
    args = parse_args(argv)
    # The ImageNet column says whether the weights were found; no repeated warnings.
    warnings.filterwarnings("ignore", message="ImageNet ResNet18 weights are NOT available")
    device = pick_device(args.device)
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        device = torch.device("cuda", index)
        # Start the CUDA context now, so the first run's samples/s does not pay for it.
        torch.ones(1, device=device).sum().item()
    header = [f"command: {shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}"]
    header += environment(device)
    print("\n".join(header), flush=True)

    if args.train:
        sources, about = data.find_images(args.train), f"{args.train}"
    else:
        sources, about = data.default_sources(REPO / "data" / "valued")
    train_src, test_src = data.split_by_image(sources, 0.25, seed=args.seed, holdout=HELD_OUT)
    if not train_src:
        raise SystemExit(f"no training photos in {about}")
    max_images = TINY_MAX_IMAGES if args.tiny else None
    runs = [("unet", True), ("resnet", True), (args.fp32_model, False)]
    base = preset(args.preset, **(TINY if args.tiny else {}))
    workers = base.workers if args.workers is None else args.workers
    stop = [f"{args.budget:g} s of training"] if args.budget else []
    stop.append(f"{args.steps or base.steps} steps")
    header += [
        f"data: {about}; {len(train_src)} photos for training, {len(test_src)} held out",
        f"preset {args.preset}{' + --tiny' if args.tiny else ''}: batch {base.batch_size}, "
        f"gt crops {base.patch_size} px, lr {base.lr:g}, {workers} loader workers, "
        f"loss {base.loss}; each run stops after {' or '.join(stop)}",
    ]

    with tempfile.TemporaryDirectory(prefix="srlib_gpu_check_") as tmp:
        folders, scored_on = eval_folders(args, test_src, Path(tmp))
        header.append(scored_on + (f", at most {max_images} images per set" if max_images else ""))
        print("\n".join(header[-3:]), flush=True)
        crop = dict(
            size=base.patch_size,
            scale=SCALE,
            min_crop=base.min_crop,
            method=base.downscale,
            seed=args.seed,
        )
        train_set = data.SRDataset(train_src, crops_per_image=base.crops_per_image, **crop)
        rows = [{"model": BASELINE, **score(BASELINE, folders, max_images)}]
        for key, amp in runs:
            model, info = train_one(key, amp, args, train_set, tmp)
            t = time.perf_counter()
            info |= score(model, folders, max_images)
            scores = ", ".join(f"{c} {info[c]}" for c in folders)
            print(f"  scored in {time.perf_counter() - t:.1f} s: {scores}", flush=True)
            rows.append(info)
            del model  # free its memory before the next run
    columns = list(dict.fromkeys(k for r in rows[1:] for k in r))
    columns = [c for c in columns if c not in folders] + list(folders)
    table = metrics.format_table(rows, columns)
    total = f"total wall time: {time.perf_counter() - t_start:.0f} s"
    notes = (
        f"PSNR-Y: dB on Y (BT.601), {SCALE}-pixel border cropped, x{SCALE}. samples/s: training "
        "samples per second of the run's wall time (data loading, first-step warm-up and "
        "checkpoints included). peak memory: torch.cuda.max_memory_allocated during training, "
        "reset per run. AMP: bf16 autocast (TrainConfig.amp); off: float32 (convolutions may use "
        "TF32, see the device line). ImageNet: whether the ResNet encoder had ImageNet weights "
        "(NO: random)."
    )
    text = "\n".join(header) + "\n\n" + table + "\n\n" + notes + "\n\n" + total + "\n"
    print("\n" + table + "\n\n" + notes + "\n\n" + total, flush=True)
    targets = [Path(args.out)] if args.out else []
    if os.environ.get("OUT"):
        targets.append(Path(os.environ["OUT"]) / "gpu_check.md")
    for path in targets:
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
