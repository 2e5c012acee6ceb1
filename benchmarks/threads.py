"""Training speed on an idle and on a busy machine, per thread count and OpenMP wait policy.

    python benchmarks/threads.py --isa avx2                 # the table in docs/benchmarks.md
    python benchmarks/threads.py --model "unet(refine_blocks=16)" --steps 10

A busy machine is one where another process keeps one core at 100% (a pure-Python loop here,
as a second training or a browser would). Each cell is a fresh process, because OpenMP reads
OMP_WAIT_POLICY once, when torch loads: "default" is torch's libgomp as it comes (idle threads
spin for a while before they sleep), "PASSIVE" makes them sleep at once, "srlib" is what `fit`
and the CLI do by default: as many threads as cores are idle when they start
(srlib.perf.pick_threads). The number is training samples/s of `fit`'s step (forward, loss,
backward, AdamW) on random tensors, the median over `--steps` steps after a warm-up, as in
speed.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, isa_argument, restrict_isa

POLICIES = ("default", "PASSIVE", "srlib")


def child(args: argparse.Namespace) -> None:
    """One measurement: print {"samples_per_s", "threads"} as JSON."""
    import torch

    from benchmarks.peers import build
    from benchmarks.speed import samples_per_s
    from srlib.losses import make_loss
    from srlib.perf import pick_threads

    torch.set_num_threads(pick_threads(args.threads or 0))  # None: srlib's own choice
    torch.manual_seed(0)
    model = build(args.model, 2)
    sps = samples_per_s(model, make_loss("l1"), args.batch, args.patch, 2, args.steps)
    print(json.dumps({"samples_per_s": sps, "threads": torch.get_num_threads()}))


def measure(args: argparse.Namespace, policy: str, threads: int | None) -> dict:
    """Run `child` in a fresh interpreter under one OpenMP wait policy and thread count."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy == "PASSIVE":
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    cmd = [sys.executable, __file__, "--_child", "--model", args.model, "--steps", str(args.steps)]
    cmd += ["--batch", str(args.batch), "--patch", str(args.patch)]
    cmd += ["--threads", str(threads)] if threads else []
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="unet", help="model spec (speed.py's), default unet")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3, help="runs per cell (the median is shown)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--patch", type=int, default=96)
    ap.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    isa_argument(ap)
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    restrict_isa(args.isa)  # before torch loads; the children inherit it
    if args._child:
        return child(args)

    import statistics

    from srlib.perf import machine_line

    cores = os.cpu_count()
    print(machine_line(cores), f"| model {args.model}, batch {args.batch}, gt {args.patch}px, "
          f"median of {args.repeat} runs per cell")  # fmt: skip
    cells = [
        (p, t)
        for p in POLICIES
        for t in {"default": (1, cores), "PASSIVE": (cores,)}.get(p, (None,))
    ]
    results: dict[tuple, list] = {}
    for busy in (False, True):
        load = None
        if busy:  # another program keeps one core busy, wherever the scheduler puts it
            load = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            time.sleep(1.0)
        try:
            for _ in range(args.repeat):  # rounds: a slow spell of the machine hits every cell
                for policy, threads in cells:
                    r = measure(args, policy, threads)
                    results.setdefault((busy, policy, threads), []).append(r)
                    print(f"  {'busy' if busy else 'idle'} {policy:8s} {r['threads']} thread(s): "
                          f"{r['samples_per_s']:.1f} samples/s", flush=True)  # fmt: skip
        finally:
            if load is not None:
                load.kill()
                load.wait()
    print("\n| machine | OpenMP wait | threads | samples/s | vs 1 thread, same machine state |")
    print("|---|---|---:|---:|---:|")
    median = {k: statistics.median(r["samples_per_s"] for r in v) for k, v in results.items()}
    for (busy, policy, threads), runs in results.items():
        picked = "/".join(sorted({str(r["threads"]) for r in runs}))
        one = median[(busy, "default", 1)]
        sps = median[(busy, policy, threads)]
        print(f"| {'one core busy' if busy else 'idle'} | {policy} | {picked} | {sps:.1f} | "
              f"{sps / one:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
