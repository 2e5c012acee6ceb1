"""Quality on degraded input: bicubic and trained checkpoints on JPEG-compressed or noisy LR.

    python benchmarks/realworld.py --bench ../shared/datasets \
        --checkpoints checkpoints/unet_x2.pt [more.pt ...] [--sets Set5,Set14] [--scale 2] \
        [--conditions clean,jpeg90,...] [--cache DIR] [--out results.md]

Users upscale JPEGs from phones and the web, not the clean MATLAB-bicubic LR files of the
papers. For each condition of srlib.metrics.CONDITIONS (clean; the benchmark's LR re-encoded by
PIL as JPEG at quality 90/75/50/30; Gaussian noise of sigma 5/15 in 0..255 units, seeded by the
file name) the LR files are degraded by `srlib.metrics.degraded_benchmark` (HR untouched) and
bicubic (MATLAB) and every checkpoint are evaluated on them by `srlib.metrics.evaluate`:
PSNR/SSIM on Y with `scale` border px cropped, the detail ratio, LPIPS where its weights are on
disk, and the PSNR gain over bicubic under the same condition. "Set5+Set14" is the mean over
all images of the sets. Degraded folders are cached in --cache (default: a temporary folder).
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import command_line
from srlib import infer, metrics
from srlib.io import atomic_write
from srlib.training import load_model

BASELINE = "bicubic (MATLAB)"  # the papers' bicubic: the reference of the gain column
GAIN = "PSNR gain vs bicubic"
KEYS = ("psnr_y", "ssim_y", "detail", "lpips")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bench", required=True, help="folder holding Set5/ and Set14/")
    ap.add_argument("--sets", default="Set5,Set14")
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--conditions", default=",".join(metrics.CONDITIONS),
                    help=f"subset of {','.join(metrics.CONDITIONS)}")  # fmt: skip
    ap.add_argument("--checkpoints", nargs="+", required=True, help="srlib checkpoints (.pt)")
    ap.add_argument("--cache", default=None, help="keep the degraded folders here (reused)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="where the checkpoints run (cpu, cuda, ...)")
    ap.add_argument("--out", default=None, help="also write the tables to this markdown file")
    args = ap.parse_args(argv)
    args.sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    for s in args.sets:
        if not (Path(args.bench) / s).is_dir():
            ap.error(f"benchmark set {Path(args.bench) / s} not found")
    args.conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in args.conditions if c not in metrics.CONDITIONS]
    if unknown or not args.conditions:
        ap.error(f"unknown conditions {unknown}; choose from {','.join(metrics.CONDITIONS)}")
    for path in args.checkpoints:
        if not Path(path).is_file():
            ap.error(f"checkpoint {path} not found")
    args.parser = ap
    return args


def checkpoint_upscaler(
    path: str, scale: int, device: str
) -> Callable[[torch.Tensor], torch.Tensor]:
    """lq -> sr through srlib.infer.upscale_tensor (x4 from an x2 model = two passes)."""
    model, _ = load_model(path, device)
    infer.num_passes(model, scale)  # ValueError now, not after the first condition
    # Measured here: evaluate() runs us under no_grad, where the receptive-field probe (a
    # backward pass) would fail.
    overlap = infer.auto_overlap(model)
    # fp32: a table's numbers must not depend on whether this CPU has native bf16 ("auto").
    return lambda lq: infer.upscale_tensor(
        model, lq, scale=scale, overlap=overlap, precision="fp32"
    )


def mean_row(images: list[dict[str, Any]]) -> dict[str, float]:
    """Mean of each metric over per-image rows (of one set, or of several: the union)."""
    return {k: float(np.mean([r[k] for r in images])) for k in KEYS}


def table_rows(
    results: dict[tuple[str, str, str], list[dict]],
    conditions: list[str],
    groups: dict[str, list[str]],
    methods: list[str],
) -> list[dict[str, Any]]:
    """Per condition and group of sets: bicubic, then each checkpoint with its gain."""
    rows = []
    for cond in conditions:
        for group, sets in groups.items():
            means = {m: mean_row([r for s in sets for r in results[cond, s, m]]) for m in methods}
            for m in methods:
                gain = means[m]["psnr_y"] - means[BASELINE]["psnr_y"]
                rows.append({
                    "condition": cond, "set": group, "method": m, **means[m],
                    GAIN: "-" if m == BASELINE else f"{gain:+.2f}",
                })  # fmt: skip
    return rows


def summary_rows(rows: list[dict[str, Any]], group: str, methods: list[str]) -> list[dict]:
    """One row per condition for `group`: PSNR-Y of each method and each checkpoint's gain."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["set"] == group:
            row = out.setdefault(r["condition"], {"condition": r["condition"]})
            row[f"psnr_y {r['method']}"] = r["psnr_y"]
            if r["method"] != BASELINE:
                row[f"gain {r['method']}"] = r[GAIN]
    return [out[c] for c in out]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    shown = command_line() if argv is None else f"python {shlex.join([__file__, *argv])}"
    header = [
        f"command: {shown}",
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"x{args.scale}, conditions {','.join(args.conditions)}",
    ]
    print("\n".join(header), flush=True)
    try:
        upscalers = {p: checkpoint_upscaler(p, args.scale, args.device) for p in args.checkpoints}
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        args.parser.error(f"cannot use checkpoint: {type(e).__name__}: {e}")
    methods: dict[str, str | Callable] = {BASELINE: BASELINE, **upscalers}

    results: dict[tuple[str, str, str], list[dict]] = {}
    with contextlib.ExitStack() as stack:
        cache = args.cache or stack.enter_context(tempfile.TemporaryDirectory(prefix="srlib_rw_"))
        for cond in args.conditions:
            for s in args.sets:
                folder = metrics.degraded_benchmark(Path(args.bench) / s, args.scale, cond, cache)
                for label, fn in methods.items():
                    t = time.perf_counter()
                    res = metrics.evaluate(fn, folder, args.scale)
                    results[cond, s, label] = res["images"]
                    print(
                        f"  {cond} {s} {label}: PSNR-Y {res['mean']['psnr_y']:.2f} dB "
                        f"({time.perf_counter() - t:.1f} s)",
                        flush=True,
                    )

    groups = {s: [s] for s in args.sets}
    if len(args.sets) > 1:
        groups["+".join(args.sets)] = args.sets  # mean over all images, as the floors
    lpips = ["lpips"] if metrics.lpips_status()[0] else []
    rows = table_rows(results, args.conditions, groups, list(methods))
    columns = ["condition", "set", "method", "psnr_y", "ssim_y", "detail", *lpips, GAIN]
    table = metrics.format_table(rows, columns)
    union = list(groups)[-1]
    summary = metrics.format_table(summary_rows(rows, union, list(methods)))
    notes = (
        f"PSNR/SSIM on Y (BT.601) with {args.scale} border px cropped; bicubic = {BASELINE} on "
        "the same degraded LR. Conditions: jpegQ = the benchmark's LR file re-encoded by PIL as "
        "JPEG at quality Q (4:2:0), noiseS = Gaussian noise of sigma S (0..255) added, seeded "
        "by file name; HR untouched. detail = high-frequency energy of sr / gt above the LR "
        "Nyquist (1 = as detailed as gt, < 1 = blurrier, > 1 = noise or artefacts too)."
        + ("" if lpips else f" {metrics.lpips_status()[1]}.")
    )
    text = (
        "\n".join(header)
        + f"\n\nPSNR-Y (dB) on {union}, by condition:\n\n{summary}\n\n{table}\n\n{notes}\n"
    )
    print("\n" + text.split("\n\n", 1)[1])
    if args.out:
        with atomic_write(args.out, "w") as f:
            f.write(text)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
