"""Does the sharpness loss part buy detail, and at what PSNR cost? L1 against L1 + sharpness.

    python benchmarks/sharpness.py                     # the quick preset's steps, 2 runs at once
    python benchmarks/sharpness.py --steps 300 --weight 0.5 --kind fft

Two runs of the notebooks' UNet with the `quick` preset and the same seed, steps and crops: one
with the plain L1 loss, one with L1 + weight * SharpnessLoss(kind) (srlib.losses.WithSharpness,
TrainConfig.sharpness). Data and scoring as in benchmarks/seeds.py: the embedded photos split
with seed 0 (the moon held out; 4 photos scored, 2 validate, 11 train), each run keeps its
best-validation checkpoint (as the notebooks do), and the held-out photos are scored x2 with LR
made by bicubic (MATLAB): PSNR-Y, SSIM-Y, and the detail ratio (srlib.metrics.detail_ratio:
the energy above the LR's Nyquist frequency over gt's; 1 = as detailed as gt, < 1 = blurry,
> 1 = over-sharpened or noisy). Bicubic (MATLAB) is scored alongside for scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import run_all, run_json

BASELINE = "bicubic (MATLAB)"  # srlib.resize.BASELINES key: the metric tables' bicubic
COLUMNS = ["method", "steps", "best step", "seconds", "psnr_y", "ssim_y", "detail"]


def split(seed: int = 0) -> tuple[list, list, list]:
    """(train, val, held-out) embedded photos: the split of benchmarks/seeds.py."""
    from srlib import data

    rest, heldout = data.split_by_image(data.embedded_photos(), 0.25, seed=seed, holdout=["moon"])
    train_src, val_src = data.split_by_image(rest, 0.15, seed=seed)
    return train_src, val_src, heldout


def run_one(weight: float, kind: str, seed: int, steps: int | None, out: Path) -> dict:
    """Train the UNet with L1 (+ weight * sharpness) and score it on the held-out photos."""
    import torch

    from srlib import data, metrics
    from srlib.losses import make_loss
    from srlib.models import UNetUpscaler
    from srlib.training import fit, preset, restore_best, seed_everything

    name = f"unet_l1_s{seed}" + (f"_sharp{weight:g}{kind}" if weight else "")
    overrides = {} if steps is None else {"steps": steps}
    overrides.update(sharpness=weight, sharpness_kind=kind)
    cfg = preset("quick", name=name, seed=seed, out_dir=str(out), **overrides)
    train_src, val_src, heldout = split()
    crop = dict(size=cfg.patch_size, scale=cfg.scale, min_crop=cfg.min_crop, seed=cfg.seed)
    crop["method"] = cfg.downscale
    train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop)
    val_set = data.SRDataset(val_src, crops_per_image=16, train=False, **crop)
    seed_everything(seed)  # both runs start from the same weights
    model = UNetUpscaler(cfg.scale)
    loss_fn = make_loss(cfg.loss, sharpness=cfg.sharpness, sharpness_kind=cfg.sharpness_kind)
    # resume=True: rerunning with the same --out only re-scores runs that already finished.
    hist = fit(model, loss_fn, train_set, val_set, cfg, progress=False)
    best_step = restore_best(model, cfg)
    folder = data.save_sources(heldout, out / f"heldout_{name}")  # one folder per process
    scores = metrics.evaluate(model, folder, cfg.scale, with_lpips=False)["mean"]
    label = "UNet, L1" + (f" + {weight:g} x sharpness ({kind})" if weight else "")
    return {
        "method": label,
        "steps": hist["step"][-1],
        "best step": best_step,
        "seconds": round(hist["train_seconds"]),
        **{k: scores[k] for k in ("psnr_y", "ssim_y", "detail")},
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="default: the quick preset's")
    parser.add_argument("--weight", type=float, default=1.0, help="of the sharpness part")
    parser.add_argument("--kind", default="gradient", choices=("gradient", "fft"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (1 or 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--one", type=float, metavar="WEIGHT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.weight > 0:
        parser.error(
            f"--weight must be > 0 (the run without the part is always made): {args.weight}"
        )

    if args.one is not None:
        import torch

        torch.set_num_threads(args.threads)
        row = run_one(args.one, args.kind, args.seed, args.steps, Path(args.out))
        print(json.dumps(row))
        return

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)

        def spawn(weight: float) -> dict:
            argv = [__file__, "--one", str(weight), "--kind", args.kind, "--seed", str(args.seed)]
            argv += ["--out", str(out), "--threads", str(args.threads)]
            argv += [] if args.steps is None else ["--steps", str(args.steps)]
            return run_json(argv, args.threads)

        print(
            f"2 runs, {args.jobs} at a time, {args.threads} thread(s) each, steps: "
            f"{args.steps or 'quick preset'}; runs in {out}",
            flush=True,
        )
        rows = run_all(spawn, [0.0, args.weight], args.jobs)
        from srlib import data, metrics

        heldout = split()[2]
        folder = data.save_sources(heldout, out / "heldout_bicubic")
        bicubic = metrics.evaluate(BASELINE, folder, 2, with_lpips=False)["mean"]
        rows.append({"method": BASELINE, **bicubic})
    failed = [r["error"] for r in rows if "error" in r]
    for error in failed:
        print(f"FAILED: {error}")
    if args.json:
        from srlib.io import atomic_write

        with atomic_write(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)
    print(
        f"\nHeld-out embedded photos ({len(heldout)}), x2, seed {args.seed}, best-validation "
        f"checkpoints; "
        f"{time.perf_counter() - t0:.0f} s in all\n"
    )
    print(metrics.format_table([r for r in rows if "error" not in r], COLUMNS))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
