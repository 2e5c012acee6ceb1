"""Check srlib.metrics against the published bicubic (MATLAB) baselines on Set5 and Set14.

Usage: python benchmarks/bicubic_check.py --bench ../shared/datasets

For each set and scale it runs the MATLAB-style bicubic upscaler twice: on the benchmark's own
LR files ("given") and on LR that srlib makes from the HR images ("own"), and prints PSNR/SSIM
on Y next to the published figures (VDSR paper, Table 3). It also reports how many LR pixels
srlib's imresize reproduces exactly. Exit status 1 if a Set5 target is missed:
given LR within +-0.02 dB of 33.66 / 30.39 / 28.42, own LR within +-0.05 dB.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srlib.metrics import evaluate, format_table, load_image, published
from srlib.resize import make_lq

BASELINE = "bicubic (MATLAB)"  # the kernel the papers' bicubic rows were made with
TOLERANCE_DB = {"given": 0.02, "own": 0.05}
CHECKED = {"Set5"}  # Set14 figures are printed as a reference, not enforced


def lr_match(folder: Path, scale: int) -> float:
    """Fraction of LR pixel values that make_lq reproduces exactly from the HR files."""
    same = total = 0
    for hr_path in sorted((folder / f"image_SRF_{scale}").glob("*_HR.png")):
        gt = load_image(hr_path)  # (3, H, W), already mod-cropped in the benchmark
        given = load_image(hr_path.with_name(hr_path.name.replace("_HR", "_LR")))
        own = make_lq(gt, scale)
        same += torch.sum(torch.round(own * 255) == torch.round(given * 255)).item()
        total += given.numel()
    return same / total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="folder holding Set5/, Set14/")
    parser.add_argument("--sets", nargs="+", default=["Set5", "Set14"])
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 3, 4])
    args = parser.parse_args()

    rows, failed = [], []
    start = time.perf_counter()
    for dataset in args.sets:
        folder = args.bench / dataset
        for scale in args.scales:
            ref = published(dataset, scale, "Bicubic")
            ref_psnr = ref[0]["psnr_y"] if ref else None
            ref_ssim = ref[0]["ssim_y"] if ref else None
            match = lr_match(folder, scale)
            for lq in ("given", "own"):
                res = evaluate(BASELINE, folder, scale, with_lpips=False, own_lq=lq == "own")
                mean = res["mean"]
                diff = None if ref_psnr is None else mean["psnr_y"] - ref_psnr
                if dataset in CHECKED and diff is not None:
                    ok = abs(diff) <= TOLERANCE_DB[lq]
                    status = "ok" if ok else "FAIL"
                    if not ok:
                        failed.append(f"{dataset} x{scale} {lq} LR: {diff:+.3f} dB")
                else:
                    status = "ref"
                rows.append(
                    {
                        "set": dataset,
                        "scale": f"x{scale}",
                        "LR": lq,
                        "n": len(res["images"]),
                        "PSNR-Y": f"{mean['psnr_y']:.3f}",
                        "published": "-" if ref_psnr is None else f"{ref_psnr:.2f}",
                        "diff": "-" if diff is None else f"{diff:+.3f}",
                        "check": status,
                        "SSIM-Y": f"{mean['ssim_y']:.4f}",
                        "pub. SSIM": "-" if ref_ssim is None else f"{ref_ssim:.4f}",
                        "PSNR-RGB": f"{mean['psnr_rgb']:.3f}",
                        "detail": f"{mean['detail']:.4f}",
                        "own LR = given": f"{match:.2%}",
                    }
                )
    print(
        f"{BASELINE} upscaling (srlib.resize.imresize) on the standard benchmarks: PSNR/SSIM"
        " on 8-bit BT.601 Y,\nscale pixels cropped from each border. 'published' = Bicubic in"
        f" the VDSR paper (Table 3); Set5 tolerance given +-{TOLERANCE_DB['given']} dB, own +-"
        f"{TOLERANCE_DB['own']} dB.\n"
    )
    print(format_table(rows))
    print(f"\n{time.perf_counter() - start:.1f} s")
    if failed:
        print("FAILED: " + "; ".join(failed))
        return 1
    print("All Set5 targets met.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
