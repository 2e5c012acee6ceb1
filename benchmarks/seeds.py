"""Seed robustness: does every run learn? 5 seeds x {UNet, ResNet-UNet} x {L1, perceptual}.

    python benchmarks/seeds.py                    # the `quick` preset's steps, 2 runs at a time
    python benchmarks/seeds.py --steps 600        # shorter
    python benchmarks/seeds.py --seeds 0 1 --models resnet --losses l1
    python benchmarks/seeds.py --models unet --lr 1e-3   # another peak lr than the preset's
    python benchmarks/seeds.py --models "unet(refine_blocks=4)" --bench ../shared/datasets

Every run trains with the notebooks' `quick` settings on the embedded photos, split as in the
default notebook run (split seed 0, the moon photo held out); the run's seed changes the initial
weights, the crop order and the crops. Each model is then scored like the notebooks' table: the
held-out photos x2, LR made by bicubic (MATLAB), PSNR-Y with a 2-pixel border crop, and the
gain over bicubic (MATLAB) upscaling of the same LR; `--bench` also scores Set5 and Set14 x2
(the benchmarks' own LR files). A model is a name of srlib.models.MODELS, optionally with
constructor arguments: "unet(refine_blocks=4)". Runs go `--jobs` at a time, each on
`--threads` threads with OMP_WAIT_POLICY=PASSIVE, so that two runs share the 2-core machine
without slowing each other.

The photos: 4 held out for scoring (never trained on, never used to pick a checkpoint), 2 for
validation (each run keeps its best-validation checkpoint: early stopping, as the notebooks do),
11 for training. The floor (issue 9): every L1 run >= +0.5 dB over bicubic, every perceptual
run > 0 dB.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_all, run_json
from srlib.perf import format_flops, machine_line  # torch-free at import

FLOOR_DB = {"l1": 0.5, "perceptual": 0.0}  # gain over BASELINE: >= for L1, > for perceptual
BASELINE = "bicubic (MATLAB)"  # srlib.resize.BASELINES key: the metric tables' bicubic


def _passes(loss: str, gain: float) -> bool:
    return gain >= FLOOR_DB[loss] if loss == "l1" else gain > FLOOR_DB[loss]


def run_one(
    model_name: str,
    loss: str,
    seed: int,
    steps: int | None,
    out: Path,
    lr: float | None = None,
    bench: str | None = None,
) -> dict:
    """Train one model (a spec, see the docstring) with the quick preset and score it."""
    import torch

    from srlib import data, metrics
    from srlib.losses import make_loss
    from srlib.models import MODELS, parse_model_spec
    from srlib.perf import flops_per_pixel
    from srlib.training import fit, preset, restore_best, seed_everything

    overrides = {} if steps is None else {"steps": steps}
    overrides |= {} if lr is None else {"lr": lr}
    kind, kwargs = parse_model_spec(model_name)
    tag = re.sub(r"[^A-Za-z0-9]+", "_", model_name).strip("_")
    name = f"{tag}_{loss}_s{seed}" + ("" if lr is None else f"_lr{lr:g}")
    cfg = preset("quick", name=name, seed=seed, loss=loss, out_dir=str(out), **overrides)
    sources = data.embedded_photos()
    rest, test_src = data.split_by_image(sources, 0.25, seed=0, holdout=["moon"])
    train_src, val_src = data.split_by_image(rest, 0.15, seed=0)
    crop = dict(size=cfg.patch_size, scale=cfg.scale, min_crop=cfg.min_crop, seed=cfg.seed)
    crop["method"] = cfg.downscale
    train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop)
    val_set = data.SRDataset(val_src, crops_per_image=16, train=False, **crop)
    seed_everything(seed)  # the initial weights depend on the seed too
    model = MODELS[kind](scale=cfg.scale, **kwargs)
    loss_fn = make_loss(loss)
    # resume=True: rerunning with the same --out only re-scores runs that already finished.
    hist = fit(model, loss_fn, train_set, val_set, cfg, progress=False)
    best_step = restore_best(model, cfg)  # as the notebooks do: early stopping on validation
    heldout = data.save_sources(test_src, out / f"heldout_{tag}_{loss}_s{seed}")

    def score(upscaler, folder) -> float:
        return metrics.evaluate(upscaler, folder, cfg.scale, with_lpips=False)["mean"]["psnr_y"]

    psnr, bicubic = score(model, heldout), score(BASELINE, heldout)
    sets = {}
    for s in ["Set5", "Set14"] if bench else []:  # gains on the benchmarks' own LR files
        sets[s] = score(model, Path(bench) / s) - score(BASELINE, Path(bench) / s)
    return dict(
        model=model_name,
        loss=loss,
        seed=seed,
        steps=hist["step"][-1],
        lr=cfg.lr,
        best_step=best_step,
        seconds=round(hist["train_seconds"], 1),
        psnr_y=psnr,
        bicubic=bicubic,
        gain=psnr - bicubic,
        val_gain=max(hist["val"]["psnr"]) - hist["val"]["base_psnr"],
        alerts=len(hist["alerts"]),
        bench_gains=sets,
        config=model.config,
        flops_per_px=flops_per_pixel(model),
        imagenet=bool(getattr(loss_fn, "has_imagenet_weights", True))
        and bool(getattr(model, "has_imagenet_weights", True)),
        threads=torch.get_num_threads(),
    )


def _spawn(job: tuple, args: argparse.Namespace, out: Path) -> dict:
    """Run one job in a fresh process with its own thread count."""
    model_name, loss, seed = job
    argv = [__file__, "--one", model_name, loss, str(seed), "--out", str(out)]
    argv += ["--threads", str(args.threads)]
    argv += [] if args.steps is None else ["--steps", str(args.steps)]
    argv += [] if args.lr is None else ["--lr", repr(args.lr)]
    argv += [] if args.bench is None else ["--bench", args.bench]
    result = {"model": model_name, "loss": loss, "seed": seed, **run_json(argv, args.threads)}
    if "error" not in result:
        print(
            f"{model_name:6s} {loss:10s} seed {seed}: {result['gain']:+.2f} dB over {BASELINE} "
            f"({result['psnr_y']:.2f} vs {result['bicubic']:.2f}), kept step "
            f"{result['best_step']} of {result['steps']}, {result['seconds']:.0f} s"
            + "".join(f", {k} x2 {g:+.3f} dB" for k, g in result["bench_gains"].items())
            + f"{', ALERT' if result['alerts'] else ''}",
            flush=True,
        )
    return result


def summarize(results: list[dict]) -> str:
    """Markdown table: min / median / max gain per model and loss, the floor; Set5/14 medians."""
    sets = sorted({k for r in results for k in r.get("bench_gains", {})}, reverse=True)
    extra = "".join(f" {s} x2 median |" for s in sets)
    lines = [
        "| model | FLOPs/px | loss | runs | min | median | max | floor | holds |" + extra,
        "|---|---:|---|---:|---:|---:|---:|---|---|" + "---:|" * len(sets),
    ]
    keys = sorted({(r["model"], r["loss"]) for r in results}, key=lambda k: (k[0] != "unet", k))
    for model_name, loss in keys:
        runs = [r for r in results if (r["model"], r["loss"]) == (model_name, loss)]
        ok = [r for r in runs if "gain" in r]
        gains = [r["gain"] for r in ok]
        failed = len(runs) - len(gains)
        if not gains:
            lines.append(f"| {model_name} | - | {loss} | 0 | - | - | - | - | {failed} failed |")
            continue
        floor = f"{'>=' if loss == 'l1' else '>'} {FLOOR_DB[loss]:+.1f} dB"
        holds = all(_passes(loss, g) for g in gains) and not failed
        bench = "".join(
            f" {statistics.median(r['bench_gains'][s] for r in ok):+.3f} |" for s in sets
        )
        lines.append(
            f"| {model_name} | {format_flops(ok[0]['flops_per_px'])} | {loss} | {len(gains)} | "
            f"{min(gains):+.2f} | {statistics.median(gains):+.2f} | {max(gains):+.2f} | "
            f"{floor} | {'yes' if holds else 'NO'}{f' ({failed} failed)' if failed else ''} |"
            + bench
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--models", nargs="+", default=["unet", "resnet"])
    parser.add_argument("--losses", nargs="+", default=["l1", "perceptual"])
    parser.add_argument("--steps", type=int, default=None, help="default: the quick preset's")
    parser.add_argument("--lr", type=float, default=None, help="peak lr; default: the preset's")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write all results here")
    parser.add_argument("--bench", default=None, help="folder with Set5/ and Set14/: score x2 too")
    parser.add_argument("--one", nargs=3, metavar=("MODEL", "LOSS", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        import torch

        torch.set_num_threads(args.threads)
        model_name, loss, seed = args.one
        result = run_one(
            model_name, loss, int(seed), args.steps, Path(args.out), args.lr, args.bench
        )
        print(json.dumps(result))
        return

    jobs = [(m, lo, s) for s in args.seeds for m in args.models for lo in args.losses]
    t0 = time.perf_counter()
    print(machine_line(args.threads), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        print(
            f"{len(jobs)} runs, {args.jobs} at a time, {args.threads} thread(s) each, steps: "
            f"{args.steps or 'quick preset'}, lr {args.lr or 'quick preset'}; runs in {out}",
            flush=True,
        )
        results = run_all(lambda job: _spawn(job, args, out), jobs, args.jobs)
    for r in results:
        if "error" in r:
            print(f"FAILED {r['model']} {r['loss']} seed {r['seed']}: {r['error']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    ok = [r for r in results if "gain" in r]
    weights = "yes" if ok and all(r["imagenet"] for r in ok) else "NO (random ResNet18 parts)"
    steps, lrs = sorted({r["steps"] for r in ok}), sorted({r["lr"] for r in ok})
    print(
        f"\nHeld-out PSNR-Y gain over {BASELINE} (dB), x2; steps {steps}, lr {lrs}, "
        f"ImageNet weights: {weights}; {time.perf_counter() - t0:.0f} s in all\n"
    )
    print(summarize(results))


if __name__ == "__main__":
    main()
