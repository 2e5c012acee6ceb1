"""Run the notebooks as a reader would and time them: the whole notebook and its slowest cells.

    python benchmarks/notebooks.py --isa avx2                        # each notebook, AVX2, timed
    python benchmarks/notebooks.py --isa avx2 --inplace upscale_unet.ipynb   # and keep outputs

Each notebook runs top to bottom in a fresh Jupyter kernel from the repository root (what
`jupyter execute` does), with the environment of this command: the preset (SRLIB_PRESET, default
"quick"), SRLIB_SAVE and the thread settings reach the kernel; `--isa avx2` limits torch there to
AVX2 (srlib.perf.AVX2_ENV). The time is the kernel's, start to end. `--inplace` writes the outputs
into the notebook files, as `jupyter execute --inplace` does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, isa_argument, restrict_isa

NOTEBOOKS = ["upscale_unet.ipynb", "upscale_resnet.ipynb", "upscale_realworld.ipynb"]


def run(path: Path, inplace: bool, timeout: int) -> tuple[float, list[tuple[float, str]]]:
    """Execute one notebook; (seconds, [(seconds, first line) per code cell])."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(REPO)}})  # fmt: skip
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("execution", {})
        start, end = meta.get("iopub.execute_input"), meta.get("shell.execute_reply")
        if start and end:
            dt = datetime.fromisoformat(end.rstrip("Z")) - datetime.fromisoformat(start.rstrip("Z"))
            first = next(
                (ln for ln in cell.source.splitlines() if ln and not ln.startswith("#")), ""
            )
            cells.append((dt.total_seconds(), first[:60]))
    if inplace:
        nbformat.write(nb, path)
    return seconds, cells


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("notebooks", nargs="*", default=NOTEBOOKS)
    isa_argument(ap)
    ap.add_argument("--inplace", action="store_true", help="write the outputs into the files")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = ap.parse_args()
    restrict_isa(args.isa)  # before torch loads here; the kernels inherit the limit
    from srlib.perf import machine_line

    print(machine_line(), "(this process; the kernels inherit the ISA limit and thread settings)")
    print(f"preset {os.environ.get('SRLIB_PRESET', 'default')}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")  # fmt: skip
    rows = []
    for name in args.notebooks:
        seconds, cells = run(REPO / name, args.inplace, args.timeout)
        rows.append((name, seconds))
        slow = sorted(cells, reverse=True)[:3]
        print(f"{name}: {seconds / 60:.1f} min; slowest cells: "
              + "; ".join(f"{s:.0f} s `{src}`" for s, src in slow), flush=True)  # fmt: skip
    print("\n| notebook | minutes |\n|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds / 60:.1f} |")


if __name__ == "__main__":
    main()
