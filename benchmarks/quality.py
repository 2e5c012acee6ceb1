"""Quality at equal training time: srlib's models vs three peers on Set5/Set14.

    python benchmarks/quality.py --train ../shared/datasets/T91 --bench ../shared/datasets \
        --budget 600 [--models unet,resnet_l1,resnet_perceptual,espcn,rescnn,seed,compact,span] \
        [--threads 1 --jobs 2] [--out results.md]
    python benchmarks/quality.py ... --steps 3000 --models "unet,unet(refine_blocks=4),rescnn" \
        --plot flops.png --csv results.csv        # quality vs FLOPs at equal steps

Every model trains with `srlib.training.fit` for the same wall-clock budget (seconds per model),
or with `--steps N` for the same number of steps (a comparison that does not depend on the
machine: the table then sets quality against FLOPs per output pixel, and `--plot` draws it), on
the same images, crops (a fresh, identically seeded SRDataset each) and batch order, then
is evaluated by `srlib.metrics.evaluate` on the benchmark's own LR files: PSNR/SSIM on Y with
`scale` border pixels cropped, as in the papers. x4 is two x2 passes. The table also gives
measured bicubic (MATLAB) and published rows per set, and the PSNR/SSIM difference of each row
to bicubic (MATLAB) and to the best trained peer (ESPCN, residual CNN, seed design, or the
community's Compact and SPAN, srlib.community).
Each model trains at its own peak learning rate (the `lr` in MODELS, from its own lr search;
`--lr 1e-3` sets one for all, `--lr rescnn=5e-4` one model's). `--train` takes several folders
(e.g. T91 and BSD200), never one holding the benchmark's images. A model that gains less than
half of what the best trained model gains over bicubic is flagged loudly (a collapsed run, most
often an lr too high for it), in the output and the table's notes. `--jobs N` trains N models
at a time in separate processes of `--threads` threads each (on a 2-core CPU: `--threads 1
--jobs 2`, with OMP_WAIT_POLICY=PASSIVE set for the children, so two runs do not slow each
other down more than their share).
A model is a key of MODELS, optionally with constructor arguments: "unet(refine_blocks=4)" (its
label, loss and lr are the key's). `--csv` appends one row per model, set and scale (commit, date,
command, machine and ISA, seed, psnr_y, ssim_y, steps, FLOPs) to a results file.
`--base` and `--downscale` name torch kernels: the models' base upscale ("bicubic (torch)")
and the training lq ("bicubic (torch, antialiased)"); see srlib.resize.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line
from benchmarks.peers import ESPCN, ResidualCNN, SeedUpscaler
from srlib import infer, metrics
from srlib.community import SPAN, Compact
from srlib.data import SRDataset, find_images, split_by_image
from srlib.degrade import DEGRADATIONS
from srlib.io import atomic_write
from srlib.losses import make_loss
from srlib.models import (
    ResNetUNetUpscaler,
    UNetUpscaler,
    Upscaler,
    parse_model_spec,
)
from srlib.perf import FLOPS_NOTE, flops_per_pixel, format_flops, machine_line
from srlib.resize import degrade_label, upsample_label
from srlib.training import TrainConfig, fit

PEERS = ("espcn", "rescnn", "seed", "compact", "span")
BASELINE = "bicubic (MATLAB)"  # the papers' bicubic: the reference row and the Δ column
# name -> (label, loss, peak lr, constructor(scale, base)). The lr is each model's own best:
# rescnn's from its search (benchmarks/results/peer_rescnn_600s.md: 2e-3 collapsed one seed;
# on T91 + BSD200, with its small-tail start, 1e-3 beat 5e-4 and 1.4e-3: docs/experiments.md);
# unet's from 1e-3 / 2e-3 / 3e-3 (docs/experiments.md, "Learning rate and the Barbara failure":
# as good as 2e-3 on average, and no run at 1e-3 broke Barbara's x4, which half the runs at 2e-3
# did); the ResNet-UNets use TrainConfig's default; ESPCN and the seed design were not searched.
# compact and span (srlib.community: the community's small architectures, as peers of the UNet)
# were not searched either: SPAN's published training starts at 5e-4 (Adam, L1; Wan et al. 2024);
# Real-ESRGAN trains at 2e-4, but for 10^6 steps on a GPU, and srlib's short CPU budgets favour
# higher lrs (the plain residual CNN, the nearest in kind to Compact, searched best at 1e-3), so
# compact starts at 5e-4 too.
MODELS: dict[str, tuple[str, str, float, Callable[[int, str], nn.Module]]] = {
    "unet": ("UNet (L1)", "l1", 1e-3, lambda s, b, **kw: UNetUpscaler(s, base=b, **kw)),
    "resnet_l1": (
        "ResNet-UNet (L1)",
        "l1",
        2e-3,
        lambda s, b, **kw: ResNetUNetUpscaler(s, base=b, **kw),
    ),
    "resnet_perceptual": (
        "ResNet-UNet (perceptual)",
        "perceptual",
        2e-3,
        lambda s, b, **kw: ResNetUNetUpscaler(s, base=b, **kw),
    ),
    "espcn": ("ESPCN (L1, peer)", "l1", 2e-3, lambda s, b, **kw: ESPCN(s, **kw)),
    "rescnn": ("residual CNN (L1, peer)", "l1", 1e-3, lambda s, b, **kw: ResidualCNN(s, **kw)),
    "seed": (
        "seed design (L1, peer)",
        "l1",
        2e-3,
        lambda s, b, **kw: SeedUpscaler(s, pretrained=True, **kw),
    ),
    "compact": ("Compact (L1, peer)", "l1", 5e-4, lambda s, b, **kw: Compact(s, **kw)),
    "span": ("SPAN (L1, peer)", "l1", 5e-4, lambda s, b, **kw: SPAN(s, **kw)),
}
# The class behind each key: what a model spec's arguments are checked against.
CLASSES: dict[str, type[nn.Module]] = {
    "unet": UNetUpscaler,
    "resnet_l1": ResNetUNetUpscaler,
    "resnet_perceptual": ResNetUNetUpscaler,
    "espcn": ESPCN,
    "rescnn": ResidualCNN,
    "seed": SeedUpscaler,
    "compact": Compact,
    "span": SPAN,
}


def split_specs(text: str) -> list[str]:
    """'unet,unet(refine_blocks=4, base="bicubic"),rescnn' -> the specs (commas in () kept)."""
    specs, depth, current = [], 0, ""
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            specs.append(current.strip())
            current = ""
        else:
            current += ch
    specs.append(current.strip())
    return [sp for sp in specs if sp]


def spec_parts(spec: str) -> tuple[str, dict[str, Any]]:
    """A model spec -> (MODELS key, constructor arguments); ValueError for a bad one."""
    key = spec.split("(", 1)[0].strip()
    if key not in MODELS:
        raise ValueError(f"unknown model {key!r} in {spec!r}; choose from {', '.join(MODELS)}")
    if "(" not in spec:
        return key, {}
    if key not in CLASSES:
        raise ValueError(f"{spec!r}: {key} takes no arguments here")
    return parse_model_spec(spec, {key: CLASSES[key]})


def imagenet_status(model: nn.Module, loss_fn: nn.Module) -> str:
    """Did the run's frozen ResNet18s (encoder, loss) get ImageNet weights: yes, NO, or - (none)."""
    found = [
        m.has_imagenet_weights
        for m in (*model.modules(), loss_fn)
        if hasattr(m, "has_imagenet_weights") and not isinstance(m, Upscaler)
    ]
    return "-" if not found else ("yes" if all(found) else "NO (random)")


def upscaler_at(model: nn.Module, train_scale: int, scale: int) -> nn.Module | Callable:
    """The model itself at its own scale; else repeated passes (x4 = two x2 passes)."""
    if scale == train_scale:
        return model
    if isinstance(model, Upscaler):
        # Measure the overlap here: evaluate() runs us under no_grad, where infer's
        # receptive-field probe (a backward pass) would fail.
        overlap = infer.auto_overlap(model)
        # fp32, as the x2 rows (a plain forward): not bf16 where "auto" would pick it.
        return lambda lq: infer.upscale_tensor(
            model, lq, scale=scale, overlap=overlap, precision="fp32"
        )
    # infer's automatic overlap rebuilds the model from `config` with srlib's build_model,
    # which only knows srlib's architectures, so peers get plain untiled passes (same maths:
    # clamp to [0, 1] between passes, as upscale_tensor does).
    passes = infer.num_passes(model, scale)
    device = next(model.parameters()).device

    def run(lq: torch.Tensor) -> torch.Tensor:
        model.eval()
        x = lq.to(device)
        for _ in range(passes):
            x = model(x).clamp(0, 1)
        return x.cpu()

    return run


def diff(row: dict[str, Any], ref: dict[str, Any] | None) -> str:
    """'+0.52 / +0.0123' (PSNR dB / SSIM) of row minus ref; '-' without a reference."""
    if ref is None or row.get("psnr_y") is None:
        return "-"
    ssim = "-" if ref.get("ssim_y") is None else f"{row['ssim_y'] - ref['ssim_y']:+.4f}"
    return f"{row['psnr_y'] - ref['psnr_y']:+.2f} / {ssim}"


def parse_args() -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--train", required=True, nargs="+",
                    help="folder(s) of training images (e.g. T91, or T91 and BSD200)")  # fmt: skip
    ap.add_argument("--bench", required=True, help="folder holding Set5/ and Set14/")
    ap.add_argument("--sets", default="Set5,Set14")
    ap.add_argument("--budget", type=float, default=600.0, help="training seconds per model")
    ap.add_argument("--steps", type=int, default=None,
                    help="train each model this many steps instead of --budget s")  # fmt: skip
    ap.add_argument("--plot", default=None, help="with --steps: PSNR vs FLOPs/px figure (PNG)")
    ap.add_argument("--csv", default=None, help="append the results to this CSV file")
    ap.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    ap.add_argument("--scale", type=int, default=2, help="training scale (x2 also gives x4)")
    ap.add_argument("--patch", type=int, default=96, help="gt crop side (lq = patch / scale)")
    ap.add_argument("--min-crop", type=int, default=None, help="default: patch (gt never upscaled)")
    ap.add_argument("--max-crop", type=int, default=None, help="default: image short side")
    ap.add_argument("--crops-per-image", type=int, default=64)
    ap.add_argument("--rotate", action="store_true", help="also random 90-degree rotations")
    ap.add_argument("--cpu-bf16", action="store_true",
                    help="bf16 autocast where the CPU has native bf16 (cpu_bf16)")  # fmt: skip
    ap.add_argument("--ema", type=float, default=0.0,
                    help="evaluate an EMA of the weights with this decay (0: off)")  # fmt: skip
    ap.add_argument("--grad-clip", type=float, default=TrainConfig.grad_clip, help="0: off")
    ap.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--lr", default=None,
                    help="peak LR for all models (1e-3), or per model (rescnn=5e-4,unet=1e-3); "
                    "default: each its own, see MODELS")  # fmt: skip
    ap.add_argument("--base", choices=("bilinear", "bicubic"), default="bicubic",
                    help="torch kernel of the models' base upscale")  # fmt: skip
    ap.add_argument("--downscale", choices=("bilinear", "bicubic"), default="bicubic",
                    help="torch antialiased kernel that makes the training lq")  # fmt: skip
    ap.add_argument("--degradation", choices=DEGRADATIONS, default="clean",
                    help="training lq: clean, or srlib.degrade's realistic chain")  # fmt: skip
    ap.add_argument("--keep", default=None,
                    help="keep each model's run in KEEP/<model> (default: a temp dir)")  # fmt: skip
    ap.add_argument("--val-fraction", type=float, default=0.0, help="held-out training images")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--jobs", type=int, default=1, help="models trained at a time (processes)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = ap.parse_args()
    args.models = split_specs(args.models)
    for spec in args.models:
        try:
            spec_parts(spec)
        except ValueError as e:
            ap.error(str(e))
    if args.steps is not None and args.steps < 1:
        ap.error("--steps must be >= 1")
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in args.sets:
        if not (Path(args.bench) / s).is_dir():
            ap.error(f"benchmark set {Path(args.bench) / s} not found")
    try:
        args.lr = parse_lr(args.lr, args.models)
    except ValueError as e:
        ap.error(str(e))
    args.min_crop = args.min_crop or args.patch
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    return args


def parse_lr(text: str | None, models: list[str]) -> dict[str, float]:
    """--lr as {model: peak lr}: '1e-3' for every model, 'rescnn=5e-4,unet=1e-3' per model."""
    if text is None:
        return {}
    if "=" not in text:
        return dict.fromkeys(models, float(text))
    lrs = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        if name.strip() not in {*models, *(spec_parts(m)[0] for m in models)}:
            raise ValueError(f"--lr names {name.strip()!r}, which is not in --models")
        lrs[name.strip()] = float(value)
    return lrs


def lr_label(args: argparse.Namespace) -> str:
    """The header's lr: 'per model', one value for all, or the overrides."""
    if not args.lr:
        return "per model"
    values = set(args.lr.values())
    if set(args.lr) == set(args.models) and len(values) == 1:
        return f"{values.pop():g}"
    return "per model, " + ", ".join(f"{k} {v:g}" for k, v in args.lr.items())


def training_images(folders: list[str], bench: str, sets: list[str]) -> list[Path]:
    """The images of every training folder; refuses any that is one of the benchmark's."""
    images = sorted({p.resolve() for folder in folders for p in find_images(folder)})
    for s in sets:
        root = (Path(bench) / s).resolve()
        leaked = [p for p in images if p.is_relative_to(root)]
        if leaked:
            raise SystemExit(
                f"{len(leaked)} training images lie in the benchmark set {root} "
                f"(e.g. {leaked[0]}): train on folders that do not hold Set5/Set14"
            )
    return images


def little_learners(
    results: dict[tuple[str, int], list[dict]], bicubic: dict[tuple[str, int], float]
) -> list[str]:
    """Warnings for trained models whose gain over bicubic is under half the best model's.

    A run that collapses (most often an lr too high for it) ends near its bicubic base: its row
    would otherwise read as a weak peer, not as a failed run.
    """
    warnings_ = []
    for (s, k), rows in results.items():
        gains = {r["model"]: r["psnr_y"] - bicubic[(s, k)] for r in rows}
        best_name, best = max(gains.items(), key=lambda kv: kv[1], default=(None, 0.0))
        for name, gain in gains.items():
            if best > 0 and gain < best / 2:
                warnings_.append(
                    f"{name} LEARNED LITTLE on {s} x{k}: {gain:+.2f} dB over bicubic, where "
                    f"{best_name} gains {best:+.2f} dB. A collapsed run, not a weak model? "
                    f"Retrain it with a lower lr (--lr <model>=...)."
                )
    return warnings_


def run_name(name: str, args: argparse.Namespace) -> str:
    """The run folder of a model: its spec, plus the degradation when it is not clean."""
    name = re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_")  # "unet(refine_blocks=4)" -> a name
    return name if args.degradation == "clean" else f"{name}_{args.degradation}"


def dataset(sources: list, args: argparse.Namespace, is_train: bool) -> SRDataset:
    """The crops every model trains (or validates) on, from the command line's options."""
    # Crops are keyed on (seed, epoch, index): every model sees the same crops.
    crops = args.crops_per_image if is_train else 4
    return SRDataset(
        sources, args.patch, args.scale, crops, is_train, args.min_crop, args.max_crop,
        rotate=args.rotate, method=args.downscale, seed=args.seed, degradation=args.degradation,
    )  # fmt: skip


def train(
    name: str, args: argparse.Namespace, train_src: list, val_src: list, out_dir: str
) -> tuple[nn.Module, dict[str, Any]]:
    """Build and train one model (a spec) for args.budget s or args.steps; (model, table info)."""
    key, kwargs = spec_parts(name)
    label, loss_name, own_lr, make = MODELS[key]
    if kwargs:
        label += " " + name[len(key) :]  # "UNet (L1) (refine_blocks=4)"
    lr = args.lr.get(name, args.lr.get(key, own_lr))
    torch.manual_seed(args.seed)  # the same initial weights for a model on every run
    model = make(args.scale, args.base, **kwargs) if kwargs else make(args.scale, args.base)
    loss_fn = make_loss(loss_name)

    cfg = TrainConfig(
        name=run_name(name, args), scale=args.scale, patch_size=args.patch, min_crop=args.min_crop,
        crops_per_image=args.crops_per_image, downscale=args.downscale, loss=loss_name,
        degradation=args.degradation,
        batch_size=args.batch, lr=lr,
        steps=args.steps or 10**9, time_budget_s=None if args.steps else args.budget,
        grad_clip=args.grad_clip, cpu_bf16=args.cpu_bf16, ema=args.ema, threads=args.threads,
        seed=args.seed, device=args.device, out_dir=out_dir,
    )  # fmt: skip
    val_set = dataset(val_src, args, False) if val_src else None
    train_set = dataset(train_src, args, True)
    hist = fit(model, loss_fn, train_set, val_set, cfg, resume=False, progress=False)
    flops = flops_per_pixel(model)  # one x2 pass; x4 is two passes: 1.25x this per pixel
    info = {
        "model": label,
        "key": key,
        "spec": name,
        "flops": flops,
        "FLOPs/px": format_flops(flops),
        "params": f"{sum(p.numel() for p in model.parameters() if p.requires_grad):,}",
        "lr": f"{lr:g}",
        "samples/s": f"{hist['samples_per_s']:.1f}",
        "steps": str(len(hist["step"])),
        "ImageNet": imagenet_status(model, loss_fn),
    }
    val = hist["val"]["psnr"]
    print(
        f"trained {label}: {info['steps']} steps in {hist['train_seconds']:.0f} s, "
        f"{info['samples/s']} samples/s, final loss {hist['train']['total'][-1]:.4f}"
        + (f", val PSNR (RGB) {val[-1]:.2f} dB" if val else "")
        + f", ImageNet weights: {info['ImageNet']}",
        flush=True,
    )
    return model.eval(), info


def train_and_evaluate(
    name: str,
    args: argparse.Namespace,
    train_src: list,
    val_src: list,
    out_dir: str,
    keys: list[tuple[str, int]],
) -> dict[tuple[str, int], dict[str, Any]]:
    """Train one model and evaluate it on each (set, scale); runs in a --jobs worker too."""
    torch.set_num_threads(args.threads)  # a spawned worker starts with torch's default
    warnings.filterwarnings("ignore", message="ImageNet ResNet18 weights are NOT available")
    model, info = train(name, args, train_src, val_src, out_dir)
    rows = {}
    for s, k in keys:
        t = time.perf_counter()
        fn = upscaler_at(model, args.scale, k)
        mean = metrics.evaluate(fn, Path(args.bench) / s, k)["mean"]
        # x4 = two x2 passes: (4 + 16) / 16 = 1.25 times a pass's FLOPs per output pixel.
        passes = infer.num_passes(model, k)
        flops = info["flops"] * sum(args.scale ** (2 * i) for i in range(1, passes + 1)) / k**2
        rows[(s, k)] = {**info, **mean, "flops": flops, "FLOPs/px": format_flops(flops)}
        dt = time.perf_counter() - t
        print(f"  {info['model']}, {s} x{k}: PSNR {mean['psnr_y']:.2f} dB ({dt:.1f} s)", flush=True)
    return rows


def table_rows(
    results: dict[tuple[str, int], list[dict]], bicubic_means: dict[tuple[str, int], dict]
) -> list[dict[str, Any]]:
    """Per (set, scale): published rows, measured bicubic (MATLAB), peers, ours; two deltas."""
    rows = []
    for (s, k), trained in results.items():
        bicubic = {"model": f"{BASELINE}, measured", **bicubic_means[(s, k)]}
        peers = [r for r in trained if r["key"] in PEERS]
        ours = [r for r in trained if r["key"] not in PEERS]
        best_peer = max(peers, key=lambda r: r["psnr_y"], default=None)
        papers = [{**r, "model": r["method"]} for r in metrics.published(s, k)]
        for r in [*papers, bicubic, *peers, *ours]:
            measured = "key" in r  # a model trained here
            rows.append({
                **r, "set": s, "scale": f"x{k}",
                f"Δ {BASELINE}": diff(r, bicubic) if measured else "-",
                "Δ best peer": diff(r, best_peer) if measured else "-",
            })  # fmt: skip
    return rows


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    # The "ImageNet" column says whether weights were found; no repeated warnings.
    warnings.filterwarnings("ignore", message="ImageNet ResNet18 weights are NOT available")
    scales = [args.scale, args.scale**2] if args.scale == 2 else [args.scale]
    header = [
        f"command: {command_line()}",
        f"{machine_line()}, device {args.device}, "
        + (f"{args.steps} steps per model" if args.steps else f"budget {args.budget:g} s per model")
        + f", batch {args.batch}, gt patch {args.patch}px, "
        f"lr {lr_label(args)}, grad clip {args.grad_clip:g}, "
        f"base {upsample_label(args.base)}, lq by {degrade_label(args.downscale)} downscale, "
        f"{args.degradation} degradation, seed {args.seed}"
        + (", rotations" if args.rotate else "")
        + (", bf16 autocast" if args.cpu_bf16 else "")
        + (f", EMA {args.ema:g}" if args.ema else ""),
    ]
    print("\n".join(header), flush=True)
    images = training_images(args.train, args.bench, args.sets)
    train_src, val_src = split_by_image(images, args.val_fraction, args.seed)
    where = ", ".join(args.train)
    print(f"training images: {len(train_src)} train, {len(val_src)} validation ({where})")

    results: dict[tuple[str, int], list[dict]] = {(s, k): [] for s in args.sets for k in scales}
    with contextlib.ExitStack() as stack:
        out_dir = args.keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="srlib_q_"))
        jobs = [(name, args, train_src, val_src, out_dir, list(results)) for name in args.models]
        if args.jobs == 1:
            done = [train_and_evaluate(*job) for job in jobs]
        else:
            # Set before the children start: OpenMP reads it when torch loads in each of them.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            ctx = multiprocessing.get_context("spawn")  # no forked OpenMP/torch state
            with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
                done = list(pool.map(train_and_evaluate, *zip(*jobs, strict=True)))
    for rows in done:  # in --models order, whichever finished first
        for key, row in rows.items():
            results[key].append(row)

    lpips = ["lpips"] if metrics.lpips_status()[0] else []
    columns = ["set", "scale", "model", "params", "FLOPs/px", "lr", "samples/s", "steps",
               "ImageNet", "psnr_y", "ssim_y", "detail", *lpips, f"Δ {BASELINE}",
               "Δ best peer"]  # fmt: skip
    bicubic = {
        (s, k): metrics.evaluate(BASELINE, Path(args.bench) / s, k)["mean"] for s, k in results
    }
    table = metrics.format_table(table_rows(results, bicubic), columns)
    alerts = little_learners(results, {key: m["psnr_y"] for key, m in bicubic.items()})
    notes = (
        "PSNR/SSIM on Y (BT.601) with `scale` border px cropped, on the benchmark's LR files; x4 = "
        "two x2 passes. Δ = PSNR dB / SSIM difference (best peer: whichever peer in the table "
        "(ESPCN, residual CNN, seed design, Compact, SPAN) has the higher PSNR on that set). "
        "detail = high-frequency energy of "
        "sr / gt above the LR Nyquist (1 = as detailed as gt, < 1 = blurrier). ImageNet: whether "
        "the frozen ResNet18s a model uses (encoder, perceptual loss) had ImageNet weights. "
        f"{FLOPS_NOTE}; x4 rows: both passes per x4 output pixel (1.25x a pass)."
    )
    if alerts:
        notes += "\n\n" + "\n".join(f"**WARNING: {a}**" for a in alerts)
    text = "\n".join(header) + "\n\n" + table + "\n\n" + notes + "\n"
    print("\n" + table + "\n\n" + notes)
    for a in alerts:  # again at the very end, where a reader of the console looks
        print("\n".join(["!" * 80, "WARNING: " + a, "!" * 80]), file=sys.stderr)
    if args.out:
        with atomic_write(args.out, "w") as f:  # a killed run never leaves half a table
            f.write(text)
        print(f"wrote {args.out}")
    if args.csv:
        append_csv(args.csv, results, args)
        print(f"appended to {args.csv}")
    if args.plot:
        plot_flops(results, bicubic, args.plot, header[1])
        print(f"wrote {args.plot}")


# The columns of a results CSV (benchmarks/results/*.csv): one row per model, set and scale.
CSV_FIELDS = ["date", "commit", "command", "machine", "seed", "model", "params", "flops_per_px",
              "set", "scale", "steps", "psnr_y", "ssim_y"]  # fmt: skip


def append_csv(path: str, results: dict[tuple[str, int], list[dict]], args) -> None:
    """Append one row per model, set and scale to a results CSV (header written when new)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=Path(__file__).parent).stdout.strip()  # fmt: skip
    except OSError:
        commit = ""
    common = {
        "date": datetime.date.today().isoformat(),
        "commit": commit or "-",
        "command": command_line(),
        "machine": machine_line(),
        "seed": args.seed,
    }
    new = not Path(path).exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        if new:
            writer.writeheader()
        for (s, k), rows in results.items():
            for r in rows:
                params = r["params"].replace(",", "")
                writer.writerow({**common, "model": r["spec"], "params": params,
                                 "flops_per_px": round(r["flops"]), "set": s, "scale": k,
                                 "steps": r["steps"], "psnr_y": f"{r['psnr_y']:.3f}",
                                 "ssim_y": f"{r['ssim_y']:.4f}"})  # fmt: skip


def plot_flops(
    results: dict[tuple[str, int], list[dict]], bicubic: dict, path: str, title: str
) -> None:
    """PSNR-Y against FLOPs per output pixel (log axis), one panel per set and scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False)
    for ax, (s, k) in zip(axes[0], keys, strict=True):
        for r in results[(s, k)]:
            peer = r["key"] in PEERS
            ax.scatter(r["flops"], r["psnr_y"], marker="s" if peer else "o",
                       color="tab:gray" if peer else "tab:blue")  # fmt: skip
            ax.annotate(r["spec"], (r["flops"], r["psnr_y"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.axhline(bicubic[(s, k)]["psnr_y"], color="k", ls=":", lw=0.8, label=BASELINE)
        ax.set_xscale("log")
        ax.set(title=f"{s} x{k}", xlabel="FLOPs per output pixel", ylabel="PSNR-Y (dB)")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"quality vs cost at equal steps (circles: srlib, squares: peers)\n{title}",
                 fontsize=8)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
