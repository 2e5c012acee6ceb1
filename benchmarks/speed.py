"""Training throughput (samples/s) of srlib's models and the peers, in one process.

    python benchmarks/speed.py [--patch 96] [--batch 8] [--steps 6] [--threads 2] [--bf16]

Each row times full optimiser steps (forward, loss, backward, AdamW) on random tensors after
one warm-up step, with the model in channels_last as `srlib.train.fit` has it; the ratio
column is against the seed's design measured in the same run. `--bf16` also times each L1 row
under bf16 autocast (TrainConfig.cpu_bf16 on a CPU, amp on CUDA) and gives that speed-up.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import ESPCN, ResidualCNN, SeedUpscaler  # noqa: E402

from srlib.losses import make_loss  # noqa: E402
from srlib.models import ResNetUNetUpscaler, UNetUpscaler  # noqa: E402
from srlib.train import TrainConfig, cpu_has_bf16  # noqa: E402


def samples_per_s(
    model, loss_fn, batch: int, patch: int, scale: int, steps: int, bf16: bool = False
) -> float:
    """Median samples/s over `steps` training steps (after one warm-up step)."""
    model.to(memory_format=torch.channels_last)  # as fit() lays it out
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    lq, gt = (
        torch.rand(batch, 3, patch // scale, patch // scale),
        torch.rand(batch, 3, patch, patch),
    )
    model.train()
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            sr = model(lq)  # (B, 3, H, W)
        loss, _ = loss_fn(sr.float(), gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    return batch / sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--patch", type=int, default=96, help="gt patch side (lq = patch / scale)")
    ap.add_argument("--batch", type=int, default=TrainConfig.batch_size)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--bf16", action="store_true", help="also time the L1 rows in bf16 autocast")
    args = ap.parse_args()
    if args.bf16 and not cpu_has_bf16():
        ap.error("--bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); it would be emulated")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="ImageNet ResNet18 weights")  # speed only
    s = args.scale
    models = {
        "seed design (128 ch at HR)": lambda: SeedUpscaler(s),
        "ESPCN": lambda: ESPCN(s),
        "residual CNN (peer)": lambda: ResidualCNN(s),
        "UNetUpscaler": lambda: UNetUpscaler(s),
        "ResNetUNetUpscaler": lambda: ResNetUNetUpscaler(s, pretrained=False, download=False),
    }
    print(
        f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
        f"gt {args.patch}px, x{s}, median of {args.steps} steps\n"
    )
    bf16 = " bf16 samples/s | bf16 speed-up |" if args.bf16 else ""
    print(f"| model | trainable params | loss | samples/s | vs seed design |{bf16}")
    print("|---|---:|---|---:|---:|" + ("---:|---:|" if args.bf16 else ""))
    base = {}
    for loss_name in ("l1", "perceptual"):
        loss_fn = make_loss(loss_name, pretrained=False)
        for name, make in models.items():
            torch.manual_seed(0)
            model = make()
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            sps = samples_per_s(model, loss_fn, args.batch, args.patch, s, args.steps)
            base.setdefault(loss_name, sps)
            row = f"| {name} | {n:,} | {loss_name} | {sps:.1f} | {sps / base[loss_name]:.1f}x |"
            if args.bf16:
                fast = "-", "-"  # the perceptual loss's ResNet18 stays float32: not timed
                if loss_name == "l1":
                    b = samples_per_s(model, loss_fn, args.batch, args.patch, s, args.steps, True)
                    fast = f"{b:.1f}", f"{b / sps:.2f}x"
                row += f" {fast[0]} | {fast[1]} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
