"""Every export format of srlib checkpoints, run in its runtime: max difference to PyTorch.

    python benchmarks/export_check.py [checkpoints/*.pt runs/compact/best.pt ...] \
        [--ort-python /tmp/ort117/bin/python] [--ncnn-python /tmp/ncnnold/bin/python]

For each checkpoint (default: the shipped ones): ONNX fp32 and fp16 in the installed
onnxruntime (and, with --ort-python, in another interpreter's onnxruntime, e.g. 1.17, chaiNNer's),
NCNN fp32 and fp16 weights in the installed ncnn (and, with --ncnn-python, another ncnn, e.g. an
old one like realesrgan-ncnn-vulkan's), safetensors in spandrel for Compact and SPAN. Each cell
is the max abs difference to PyTorch (float32, clamped) over the export's own odd-sized checks
plus 2 more sizes, or why it failed. Also the parameters and GFLOPs per LR megapixel of each
model (torch.utils.flop_counter, multiply-adds x 2, the eval form).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO
from srlib import export
from srlib.training import load_checkpoint, load_model

EXTRA_SHAPES = ((1, 3, 21, 30), (1, 3, 7, 45))

# Runs in another interpreter (onnxruntime or ncnn of another version): prints one max diff.
ORT_SNIPPET = """
import sys, numpy as np, onnxruntime as ort
s = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
d = np.load(sys.argv[2])
worst = 0.0
for i in range(len(d.files) // 2):
    lq, ref = d[f"lq{i}"], d[f"ref{i}"]
    half = s.get_inputs()[0].type == "tensor(float16)"
    (sr,) = s.run(None, {"input": lq.astype(np.float16 if half else np.float32)})
    worst = max(worst, float(np.abs(sr.astype(np.float32) - ref).max()))
print(ort.__version__, worst)
"""
NCNN_SNIPPET = """
import sys, numpy as np, ncnn
net = ncnn.Net()
if sys.argv[3] == "fp32":
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
assert net.load_param(sys.argv[1]) == 0 and net.load_model(sys.argv[1][:-6] + ".bin") == 0
d = np.load(sys.argv[2])
worst = 0.0
for i in range(len(d.files) // 2):
    lq, ref = d[f"lq{i}"], d[f"ref{i}"]
    ex = net.create_extractor()
    ex.input("data", ncnn.Mat(np.ascontiguousarray(lq[0])).clone())
    ret, out = ex.extract("output")
    sr = np.array(out)[None] if ret == 0 else np.full_like(ref, np.nan)
    worst = max(worst, float(np.abs(sr - ref).max()) if sr.shape == ref.shape else float("nan"))
print(ncnn.__version__ if hasattr(ncnn, "__version__") else "?", worst)
"""


def gflops_per_mp(model: torch.nn.Module) -> float:
    """GFLOPs (2 x multiply-adds) of one forward per LR megapixel, on a 64x64 input."""
    model.eval()  # first: SPAN folds its branches here, not inside the count
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, 64, 64))
    return counter.get_total_flops() / (64 * 64) * 1e6 / 1e9


def other_runtime(python: str, snippet: str, *args: str) -> str:
    """Run `snippet` in another interpreter; 'version: diff' or its error's last line."""
    done = subprocess.run([python, "-c", snippet, *args], capture_output=True, text=True)
    if done.returncode != 0:
        return "fails: " + (done.stderr.strip().splitlines() or ["?"])[-1][:80]
    version, diff = done.stdout.split()
    return f"{float(diff):.1e} ({version})"


def check(path: Path, args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    """One checkpoint's row: every format's max difference (or failure)."""
    model, ckpt = load_model(path)
    name = path.name if path.stem not in ("best", "last") else f"{path.parent.name}/{path.name}"
    row = {"checkpoint": name, "arch": ckpt["model_config"]["arch"],
           "params": f"{model.num_params():,}",
           "GFLOPs/MP": f"{gflops_per_mp(model):.1f}"}  # fmt: skip
    pairs = export._reference(model, export.NCNN_CHECK_SHAPES + EXTRA_SHAPES)
    data = tmp / f"{path.stem}.npz"
    np.savez(data, **{f"lq{i}": lq.numpy() for i, (lq, _) in enumerate(pairs)},
             **{f"ref{i}": ref for i, (_, ref) in enumerate(pairs)})  # fmt: skip
    for half in (False, True):
        tag = "fp16" if half else "fp32"
        onnx_path = tmp / f"{path.stem}_{tag}.onnx"
        try:
            diffs = export.export_onnx(model, onnx_path, fp16=half, tol=float("inf"))
            row[f"onnx {tag}"] = f"{max(diffs.values()):.1e}"
            if args.ort_python:
                row[f"onnx {tag}, other ort"] = other_runtime(
                    args.ort_python, ORT_SNIPPET, str(onnx_path), str(data)
                )
        except Exception as e:  # noqa: BLE001 - a table cell says why
            row[f"onnx {tag}"] = f"fails: {type(e).__name__}: {str(e)[:60]}"
        param = tmp / f"{path.stem}_{tag}.param"
        try:
            diffs = export.export_ncnn(model, param, fp16=half, tol=float("inf"))
            worst = max(diffs.values())
            for lq, ref in pairs[len(export.NCNN_CHECK_SHAPES) :]:
                sr = export.run_ncnn(param, param.with_suffix(".bin"), lq.numpy(), half)
                worst = max(worst, float(np.abs(sr - ref).max()))
            row[f"ncnn {tag}"] = f"{worst:.1e}"
            if args.ncnn_python:
                row[f"ncnn {tag}, other ncnn"] = other_runtime(
                    args.ncnn_python, NCNN_SNIPPET, str(param), str(data), tag
                )
        except Exception as e:  # noqa: BLE001
            row[f"ncnn {tag}"] = f"fails: {type(e).__name__}: {str(e)[:60]}"
    if row["arch"] in ("Compact", "SPAN"):
        import spandrel

        st = tmp / f"{path.stem}.safetensors"
        export.export_safetensors(load_checkpoint(path), st, half=False)
        desc = spandrel.ModelLoader().load_from_file(st)
        worst = 0.0
        for lq, ref in pairs:
            worst = max(worst, float(np.abs(desc(lq).numpy() - ref).max()))
        row["spandrel (safetensors fp32)"] = f"{worst:.1e} ({desc.architecture.id} x{desc.scale})"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("checkpoints", nargs="*", type=Path,
                    default=sorted((REPO / "checkpoints").glob("*.pt")))  # fmt: skip
    ap.add_argument("--ort-python", help="an interpreter with another onnxruntime (e.g. 1.17)")
    ap.add_argument("--ncnn-python", help="an interpreter with another ncnn (e.g. 20220420)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"command: python {' '.join(sys.argv)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="srlib_export_check_") as tmp:
        for path in args.checkpoints:
            rows.append(check(path, args, Path(tmp)))
            print(rows[-1], flush=True)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(r.get(c, "-") for c in columns) + " |")


if __name__ == "__main__":
    main()
