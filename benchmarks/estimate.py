"""How long each notebook's training takes under a preset, from FLOPs (and, here, a measurement).

    python benchmarks/estimate.py --preset gpu --tflops 2.5        # a T4-class GPU, float32
    python benchmarks/estimate.py --preset quick --measure --isa avx2 --threads 2

Every training run a notebook makes (model, loss, steps, batch and crop size of the preset) is
costed in FLOPs per step: the model's forward and backward and its loss's (srlib.perf), and a
GAN step's discriminator. `--tflops` turns FLOPs into time at an assumed achieved rate (a T4
peaks at 8.1 TFLOP/s in float32; small convolutions reach a fraction of that, so 2.5 is an
assumption, not a measurement). `--measure` times a few real steps of each run here and prints
the rate this machine achieves, which checks the FLOPs model on a machine we have. Evaluation,
plots and start-up are not included (tens of seconds on a CPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import isa_argument, restrict_isa

# What each notebook trains: (run, model, loss, GAN discriminator or None, steps: None = preset).
NOTEBOOK_RUNS = {
    "upscale_unet": [
        ("L1", "unet", "l1", None, None),
        ("perceptual", "unet", "perceptual", None, None),
    ],
    "upscale_resnet": [
        ("L1", "resnet", "l1", None, None),
        ("perceptual", "resnet", "perceptual", None, None),
    ],
    "upscale_realworld": [
        ("realistic L1", "unet", "l1", None, None),
        ("GAN", "unet", "l1", "patch", "gan"),
    ],
}
GAN_STEPS = {"smoke": 2, "quick": 400, "gpu": 1000, "full": 2000}  # as upscale_realworld's


def step_flops(model, loss_fn, gan: str | None, batch: int, patch: int) -> float:
    """FLOPs of one training step on a batch of `patch` crops (the optimiser not counted)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from srlib.models import PatchDiscriminator, UNetDiscriminator
    from srlib.perf import flops_per_pixel

    total = flops_per_pixel(model, train=True, loss_fn=loss_fn) * patch * patch * batch
    if gan:  # the generator's adversarial term and the discriminator's own step
        net = {"patch": PatchDiscriminator, "unet": UNetDiscriminator}[gan]()
        x = torch.rand(1, 3, 64, 64, requires_grad=True)
        with FlopCounterMode(display=False) as c:
            net(x).mean().backward()  # on sr: forward, input and weight gradients
        per_image = c.get_total_flops() / 64**2 * patch * patch
        total += per_image * batch * 3  # sr through D for G, then sr and gt for D's step
    return total


def measured_step(model, loss_fn, batch: int, patch: int, scale: int, steps: int) -> float:
    """Seconds per training step here (median), as speed.py times them."""
    from benchmarks.speed import samples_per_s

    return batch / samples_per_s(model, loss_fn, batch, patch, scale, steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="gpu")
    ap.add_argument("--tflops", type=float, default=2.5, help="assumed achieved TFLOP/s")
    ap.add_argument("--measure", action="store_true", help="also time real steps here")
    ap.add_argument("--steps", type=int, default=4, help="steps timed per run with --measure")
    ap.add_argument("--threads", type=int, default=None)
    isa_argument(ap)
    args = ap.parse_args()
    restrict_isa(args.isa)
    import warnings

    import torch

    from srlib.losses import make_loss
    from srlib.models import MODELS
    from srlib.perf import machine_line
    from srlib.training import model_args, preset

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="ImageNet ResNet18 weights")
    cfg = preset(args.preset)
    b, p = cfg.batch_size, cfg.patch_size
    print(machine_line() if args.measure else "")
    print(f"preset {args.preset}: batch {b}, crops {p}px, {cfg.steps} steps per run; "
          f"{args.tflops:g} TFLOP/s assumed")  # fmt: skip
    head = "| notebook | run | model args | steps | GFLOP/step | TFLOP | min at assumed rate |"
    print("\n" + head + (" s/step here | min here | GFLOP/s here |" if args.measure else ""))
    print("|---|---|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if args.measure else ""))
    for notebook, runs in NOTEBOOK_RUNS.items():
        sums = [0.0, 0.0]
        for run, name, loss, gan, steps in runs:
            steps = GAN_STEPS[args.preset] if steps == "gan" else cfg.steps
            kwargs = model_args(args.preset, name)
            torch.manual_seed(0)
            model = MODELS[name](
                scale=cfg.scale, **kwargs, **({"pretrained": False} if name == "resnet" else {})
            )
            loss_fn = make_loss(loss, pretrained=False)
            flops = step_flops(model, loss_fn, gan, b, p)
            minutes = flops * steps / (args.tflops * 1e12) / 60
            sums[0] += minutes
            row = (f"| {notebook} | {run} | {kwargs or 'defaults'} | {steps} | {flops / 1e9:.0f} "
                   f"| {flops * steps / 1e12:.1f} | {minutes:.1f} |")  # fmt: skip
            if args.measure:
                if gan:  # not timed: the discriminator's step is not in speed.py's loop
                    row += " - | - | - |"
                else:
                    sec = measured_step(model, loss_fn, b, p, cfg.scale, args.steps)
                    sums[1] += sec * steps / 60
                    row += f" {sec:.3f} | {sec * steps / 60:.1f} | {flops / sec / 1e9:.0f} |"
            print(row, flush=True)
        total = f"| {notebook} | **training in all** | | | | | **{sums[0]:.1f}** |"
        print(total + (f" | **{sums[1]:.1f}** (GAN run not timed) | |" if args.measure else ""))


if __name__ == "__main__":
    main()
