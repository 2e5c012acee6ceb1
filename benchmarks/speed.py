"""Training throughput and cost of srlib's models and the peers, in one process.

    python benchmarks/speed.py [--patch 96] [--batch 8] [--steps 6] [--threads 2] [--bf16]
    python benchmarks/speed.py --isa avx2 --threads 2          # as on a CPU without AVX-512
    python benchmarks/speed.py --models unet "unet(refine_blocks=4)" rescnn --losses l1

Each row times full optimiser steps (forward, loss, backward, AdamW) on random tensors after
one warm-up step, with the model in channels_last as `srlib.training.fit` has it, and gives the
model's FLOPs per output pixel (forward, and a whole training step with its loss; FLOPs do not
depend on the machine, times do). The ratio column is against the first model, measured in the
same run. `--isa avx2` limits oneDNN, ATen and MKL to AVX2 (srlib.perf.restrict_isa), as most
laptops and cloud CPUs are; the header names the ISA and threads. `--bf16` also times each L1
row under bf16 autocast (TrainConfig.cpu_bf16 on a CPU) and gives that speed-up.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import isa_argument, restrict_isa

DEFAULT_MODELS = ["seed", "espcn", "rescnn", "unet", "resnet"]


def samples_per_s(
    model, loss_fn, batch: int, patch: int, scale: int, steps: int, bf16: bool = False
) -> float:
    """Median samples/s over `steps` training steps (after one warm-up step)."""
    import torch

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
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS,
                    help="model specs: srlib names or peers, e.g. unet \"unet(refine_blocks=4)\" "
                    "rescnn espcn seed resnet (default: %(default)s)")  # fmt: skip
    ap.add_argument("--losses", nargs="+", default=["l1", "perceptual"])
    ap.add_argument("--patch", type=int, default=96, help="gt patch side (lq = patch / scale)")
    ap.add_argument("--batch", type=int, default=8, help="TrainConfig's default batch")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    isa_argument(ap)
    ap.add_argument("--bf16", action="store_true", help="also time the L1 rows in bf16 autocast")
    args = ap.parse_args()
    restrict_isa(args.isa)  # before torch loads: may restart this script

    import torch

    from benchmarks.peers import build
    from srlib.losses import make_loss
    from srlib.perf import FLOPS_NOTE, flops_per_pixel, format_flops, machine_line
    from srlib.training.runtime import cpu_has_bf16

    if args.bf16 and not cpu_has_bf16():
        ap.error("--bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); it would be emulated")
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="ImageNet ResNet18 weights")  # speed only
    s = args.scale
    print(machine_line())
    print(f"batch {args.batch}, gt {args.patch}px, x{s}, median of {args.steps} steps\n")
    bf16 = " bf16 samples/s | bf16 speed-up |" if args.bf16 else ""
    print(
        "| model | trainable params | fwd FLOPs/px | loss | step FLOPs/px | samples/s | ms/step "
        f"| vs first |{bf16}"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|" + ("---:|---:|" if args.bf16 else ""))
    base = {}
    for loss_name in args.losses:
        loss_fn = make_loss(loss_name, pretrained=False)
        for spec in args.models:
            torch.manual_seed(0)
            model = build(spec, s)
            n = sum(p.numel() for p in model.parameters() if p.requires_grad)
            fwd = format_flops(flops_per_pixel(model))
            step = format_flops(flops_per_pixel(model, train=True, loss_fn=loss_fn))
            sps = samples_per_s(model, loss_fn, args.batch, args.patch, s, args.steps)
            base.setdefault(loss_name, sps)
            ms = 1000 * args.batch / sps
            row = (
                f"| {spec} | {n:,} | {fwd} | {loss_name} | {step} | {sps:.1f} | {ms:.0f} | "
                f"{sps / base[loss_name]:.2f}x |"
            )
            if args.bf16:
                fast = "-", "-"  # the perceptual loss's ResNet18 stays float32: not timed
                if loss_name == "l1":
                    b = samples_per_s(model, loss_fn, args.batch, args.patch, s, args.steps, True)
                    fast = f"{b:.1f}", f"{b / sps:.2f}x"
                row += f" {fast[0]} | {fast[1]} |"
            print(row, flush=True)
    print(f"\n{FLOPS_NOTE}; step = forward + backward of model and loss.")


if __name__ == "__main__":
    main()
