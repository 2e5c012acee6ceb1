"""Output distillation at equal student time: train on a fixed pool of crops, teacher-blended.

    python benchmarks/distill.py pool --teacher runs/teacher_ref24/unet_ref24/last.pt \
        --train ../shared/datasets/T91 ../shared/datasets/BSD200 --bench ../shared/datasets \
        --n 36000 --seed 0 --out /tmp/pool_s0.pt
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE taskset -c 0 python benchmarks/distill.py train \
        --pool /tmp/pool_s0.pt --bench ../shared/datasets --model unet --alpha 0.5 --seed 0

`pool` draws the training crops `quality.py` draws (the same SRDataset: random-size crops
rescaled to the patch, rotations, bicubic lq; the loader's order for the seed) and stores `n`
of them in fp16 with the teacher's x2 of each lq (bf16 autocast). The teacher is a `quality.py
--keep` run's `<key>/last.pt`, e.g. a bigger UNet trained for longer. `train` trains one of
`quality.py`'s models on the pool for `--budget` seconds with quality.py's settings (its own lr,
batch 8, bf16 autocast, clip 1), on targets alpha * teacher + (1 - alpha) * gt (alpha 0: the
plain crops, the control), and prints 3-decimal PSNR-Y on Set5/Set14 x2 and x4 (two passes).
The pool costs no time inside the budget, so the student makes more steps than in quality.py:
compare an alpha against alpha 0 on the same pool, and a model against another on the same pool.
The teacher's training and the pool are extra compute, outside the student's budget.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality, x4_passes
from srlib import metrics
from srlib.data import make_loader
from srlib.io import atomic_write
from srlib.losses import make_loss
from srlib.training import TrainConfig, fit

SCALE = 2
CHUNK = 1000  # samples blended at a time: a float32 copy of a whole 36k pool would be ~8 GB


class Pool(Dataset):
    """A pool file's (lq, target) pairs, target = alpha * teacher + (1 - alpha) * gt, in fp16."""

    def __init__(self, path: str | Path, alpha: float):
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha {alpha} is not in [0, 1]")
        d = torch.load(path, weights_only=True)
        self.lq, self.target = d["lq"], d["gt"]  # (N, 3, p/2, p/2), (N, 3, p, p) fp16
        if alpha:
            teacher = d["teacher"]
            for j in range(0, len(self.target), CHUNK):  # in place, chunk by chunk
                gt, t = self.target[j : j + CHUNK].float(), teacher[j : j + CHUNK].float()
                self.target[j : j + CHUNK] = (alpha * t + (1 - alpha) * gt).half()

    def __len__(self) -> int:
        return len(self.lq)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.lq[i].float(), self.target[i].float()


def make_pool(args: argparse.Namespace) -> None:
    """Draw args.n training crops, run the teacher on their lq, save all three in fp16."""
    teacher_path = Path(args.teacher)
    if teacher_path.name != "last.pt" or not teacher_path.is_file():
        raise SystemExit(f"--teacher {teacher_path}: not a quality.py --keep run's <key>/last.pt")
    teacher = x4_passes.load_run_model(teacher_path.parent.parent, teacher_path.parent.name)
    if getattr(teacher, "scale", SCALE) != SCALE:
        raise SystemExit(f"{teacher_path}: a x{teacher.scale} model; the pool is x{SCALE}")
    images = quality.training_images(args.train, args.bench, args.sets.split(","))
    # quality.py's crops for the seed, with its defaults and the sixth round's --rotate.
    crops = argparse.Namespace(
        patch=args.patch, scale=SCALE, crops_per_image=args.crops_per_image, min_crop=args.patch,
        max_crop=None, rotate=True, downscale="bicubic", seed=args.seed, degradation="clean",
    )  # fmt: skip
    ds = quality.dataset(images, crops, True)
    n, p, q = args.n, args.patch, args.patch // SCALE
    # Preallocated: growing lists and concatenating them at the end would double the peak.
    pool = {
        "lq": torch.empty(n, 3, q, q, dtype=torch.half),
        "gt": torch.empty(n, 3, p, p, dtype=torch.half),
        "teacher": torch.empty(n, 3, p, p, dtype=torch.half),
    }
    i, epoch, t0 = 0, 0, time.perf_counter()
    while i < n:  # epoch by epoch, in the order and with the crops quality.py's fit sees
        loader = make_loader(ds, 64, shuffle=True, seed=args.seed, epoch=epoch)
        for lq, gt in loader:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                t = teacher(lq.contiguous(memory_format=torch.channels_last)).float().clamp(0, 1)
            k = min(len(lq), n - i)
            pool["lq"][i : i + k], pool["gt"][i : i + k] = lq[:k], gt[:k]
            pool["teacher"][i : i + k] = t[:k]
            i += k
            if i >= n:
                break
        epoch += 1
    sample = slice(0, min(n, 2000))
    err = (pool["teacher"][sample].float() - pool["gt"][sample].float()).abs().mean().item()
    with atomic_write(args.out) as f:  # a killed run leaves no half-written pool
        torch.save(pool, f)
    print(
        f"pool {n} samples over {epoch} epoch(s) of {len(ds)} crops, "
        f"{time.perf_counter() - t0:.0f} s; mean |teacher - gt| {err:.5f} (first {sample.stop})"
    )


def train(args: argparse.Namespace) -> None:
    """Train one quality.py model on the pool for args.budget s; print its PSNR-Y."""
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="ImageNet ResNet18 weights are NOT available")
    torch.manual_seed(args.seed)  # the same initial weights as quality.py's run of the seed
    _, loss_name, lr, make = quality.MODELS[args.model]
    model = make(SCALE, "bicubic")
    pool = Pool(args.pool, args.alpha)
    with tempfile.TemporaryDirectory(prefix="srlib_distill_") as tmp:
        cfg = TrainConfig(
            name=f"{args.model}_alpha{args.alpha:g}", scale=SCALE, patch_size=pool.target.shape[-1],
            loss=loss_name, batch_size=8, steps=10**9, time_budget_s=args.budget, lr=lr,
            grad_clip=1.0, cpu_bf16=True, seed=args.seed, device="cpu", out_dir=tmp,
        )  # fmt: skip
        hist = fit(model, make_loss(loss_name), pool, None, cfg, resume=False, progress=False)
    model.eval()
    lines = [
        f"{args.model} alpha {args.alpha:g} seed {args.seed}: {len(hist['step'])} steps in "
        f"{hist['train_seconds']:.0f} s, lr {lr:g}, pool {args.pool} ({len(pool)} samples)"
    ]
    for s in args.sets.split(","):
        for k in (SCALE, SCALE**2):
            fn = quality.upscaler_at(model, SCALE, k)
            mean = metrics.evaluate(fn, Path(args.bench) / s, k)["mean"]
            lines.append(f"  {s} x{k}: PSNR-Y {mean['psnr_y']:.3f}")
    print("\n".join(lines), flush=True)


def parse_args() -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("command", choices=("pool", "train"))
    ap.add_argument("--bench", required=True, help="folder holding Set5/ and Set14/")
    ap.add_argument("--sets", default="Set5,Set14", help="benchmark sets (pool: never trained on)")
    ap.add_argument("--seed", type=int, default=0)
    pool = ap.add_argument_group("pool")
    pool.add_argument("--teacher", help="a quality.py --keep run's <key>/last.pt (x2)")
    pool.add_argument("--train", nargs="+", help="training folder(s), as quality.py's")
    pool.add_argument("--n", type=int, default=36000, help="samples in the pool")
    pool.add_argument("--patch", type=int, default=96, help="gt crop side")
    pool.add_argument("--crops-per-image", type=int, default=64)
    pool.add_argument("--out", help="the pool file to write")
    tr = ap.add_argument_group("train")
    tr.add_argument("--pool", help="a pool file")
    tr.add_argument("--model", default="unet", choices=sorted(quality.MODELS))
    tr.add_argument("--alpha", type=float, default=0.0, help="teacher weight in the target")
    tr.add_argument("--budget", type=float, default=600.0, help="training seconds")
    tr.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    need = ("teacher", "train", "out") if args.command == "pool" else ("pool",)
    missing = [f"--{k}" for k in need if getattr(args, k) is None]
    if missing:
        ap.error(f"{args.command} needs {', '.join(missing)}")
    if args.command == "pool" and (args.n < 1 or args.patch % SCALE):
        ap.error(f"--n must be >= 1 and --patch a multiple of {SCALE}")
    return args


if __name__ == "__main__":
    args = parse_args()
    make_pool(args) if args.command == "pool" else train(args)
