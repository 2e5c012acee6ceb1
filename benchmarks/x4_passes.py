"""Where x4 (two x2 passes) is won or lost: per pass and per image, for two kept quality.py runs.

    python benchmarks/x4_passes.py --run runs/quality600_deep --bench ../shared/datasets \
        [--models unet,rescnn] [--sets Set5,Set14]

`--run` is a `quality.py --keep` folder holding `<model>/last.pt` for both models. For each set:
1. x4 PSNR-Y with each pass from either model (A then A, A then B, B then A, B then B), through
   the same upscalers and evaluation as quality.py (fp32, `scale` border px cropped);
2. pass 1 alone, per image: the x2 of the x4 LR file against the x2 LR file (MATLAB's bicubic
   x1/2 of HR: what pass 1 should produce), PSNR-Y (8-bit, 2 border px cropped).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import quality
from srlib import metrics
from srlib.models import build_model
from srlib.training import load_checkpoint


def load_run_model(run: Path, key: str) -> nn.Module:
    """`run/key/last.pt`'s weights in the model quality.py trained under `key`."""
    ckpt = load_checkpoint(run / key / "last.pt")
    if key in quality.PEERS:  # srlib's build_model knows only srlib's architectures
        model = quality.MODELS[key][3](ckpt["config"]["scale"], "bicubic")
    else:
        model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def pass1_psnr(sr: torch.Tensor, ref: torch.Tensor) -> float:
    """metrics.psnr_y (8-bit Y, 2 border px cut) on the area sr and ref share."""
    h, w = min(sr.shape[-2], ref.shape[-2]), min(sr.shape[-1], ref.shape[-1])
    return metrics.psnr_y(sr[..., :h, :w], ref[..., :h, :w], 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--run", required=True, help="a quality.py --keep folder")
    ap.add_argument("--bench", required=True, help="folder holding Set5/ and Set14/")
    ap.add_argument("--models", default="unet,rescnn", help="two keys of the run: A,B")
    ap.add_argument("--sets", default="Set5,Set14")
    args = ap.parse_args()
    keys = args.models.split(",")
    if len(keys) != 2:
        ap.error("--models takes two keys, A,B")
    models = {k: load_run_model(Path(args.run), k) for k in keys}
    x2 = {k: quality.upscaler_at(m, 2, 2) for k, m in models.items()}  # one pass (plain forward)
    print(f"run {args.run}; A = {keys[0]}, B = {keys[1]}")
    for s in args.sets.split(","):
        folder = Path(args.bench) / s
        combos = []
        for first in keys:
            for second in keys:

                def two_passes(lq, first=first, second=second):
                    return x2[second](x2[first](lq).clamp(0, 1)).clamp(0, 1)

                psnr = metrics.evaluate(two_passes, folder, 4)["mean"]["psnr_y"]
                combos.append(f"{first} then {second} {psnr:.3f}")
        print(f"\n{s} x4, pass 1 then pass 2: " + " | ".join(combos))
        print(f"{s}, pass 1 alone (x4 LR -> x2 LR), PSNR-Y per image:")
        print(f"| image | {keys[0]} | {keys[1]} | {keys[0]} - {keys[1]} |\n|---|---:|---:|---:|")
        diffs = []
        for lr4 in sorted((folder / "image_SRF_4").glob("*_LR.png")):
            lr2 = folder / "image_SRF_2" / lr4.name.replace("_SRF_4_", "_SRF_2_")
            lq, ref = metrics.load_image(lr4), metrics.load_image(lr2)
            with torch.no_grad():
                p = [pass1_psnr(x2[k](lq[None])[0].clamp(0, 1), ref) for k in keys]
            diffs.append(p[0] - p[1])
            print(f"| {lr4.name.split('_SRF')[0]} | {p[0]:.2f} | {p[1]:.2f} | {p[0] - p[1]:+.2f} |")
        print(f"| mean | | | {np.mean(diffs):+.3f} |")


if __name__ == "__main__":
    main()
