"""What a machine computes with and what a model costs: the CPU's ISA, FLOPs per output pixel.

A time is a property of one machine: the same step takes ~3x longer on an AVX2 CPU than on one
with AVX512-BF16. FLOPs per output pixel are a property of the model, so every time srlib
publishes names its ISA and thread count, with FLOPs beside it.

Most people's CPUs have AVX2 and no AVX-512. torch reads two variables when it loads that make
any newer CPU compute as an AVX2 one does: `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN: convolutions) and
`ATEN_CPU_CAPABILITY=avx2` (ATen's own kernels); `MKL_ENABLE_INSTRUCTIONS=AVX2` does it for MKL.
`restrict_isa("avx2")` sets them and restarts the program, since they only act at torch's load.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

# The variables that make torch compute as on an AVX2-only CPU (read once, when torch loads).
AVX2_ENV = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
}


def restrict_isa(isa: str | None) -> None:
    """Re-run this program with torch limited to `isa` ("avx2"); None or done already: return.

    Call it first thing in a script's main(), before torch is imported: the variables only act
    when torch loads, so the process replaces itself (`os.execv`) with the same command line.
    """
    if isa is None:
        return
    if isa.lower() != "avx2":
        raise ValueError(f"only 'avx2' can be emulated, got {isa!r}")
    if all(os.environ.get(k) == v for k, v in AVX2_ENV.items()):
        return
    if "torch" in sys.modules:
        raise RuntimeError("restrict_isa must run before torch is imported")
    os.environ.update(AVX2_ENV)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def idle_cores(seconds: float = 0.25) -> float | None:
    """How many of this process's CPUs were idle over the next `seconds` (None: unknown).

    Read from Linux's /proc/stat (time spent idle per CPU, before and after), for the CPUs this
    process may run on; None elsewhere.
    """
    import time

    def idle_and_total() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    ticks = [int(v) for v in fields[:8]]  # user nice system idle iowait ...
                    out[int(name[3:])] = (ticks[3] + ticks[4], sum(ticks))
        return out

    try:
        cpus = os.sched_getaffinity(0)
        before = idle_and_total()
        time.sleep(seconds)
        after = idle_and_total()
    except (OSError, AttributeError, ValueError):  # no /proc (macOS, Windows)
        return None
    idle = 0.0
    for cpu in cpus & before.keys() & after.keys():
        d_idle, d_total = (a - b for a, b in zip(after[cpu], before[cpu], strict=True))
        idle += d_idle / d_total if d_total > 0 else 1.0
    return idle


def pick_threads(requested: int = 0) -> int:
    """CPU threads for torch: `requested` if > 0; else (0) torch's count, capped at idle cores.

    On a machine where another program keeps cores busy, threads beyond the idle cores slow
    training down: each parallel step waits for its slowest thread, and a thread that shares
    its core gets half of it. With one of two cores busy, 2 threads trained at 0.53x-0.74x the
    speed of 1 (README, "A busy machine"). So by default as many threads as cores are idle
    now, at least 1, at most torch's own count (all cores, or OMP_NUM_THREADS).
    """
    import torch

    if requested > 0:
        return requested
    ceiling = torch.get_num_threads()
    idle = idle_cores()
    return ceiling if idle is None else max(1, min(ceiling, round(idle)))


@contextlib.contextmanager
def threads_for(requested: int = 0) -> Iterator[int]:
    """Run a block on `pick_threads(requested)` torch threads, then restore the count before."""
    import torch

    before = torch.get_num_threads()
    n = pick_threads(requested)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def hardware_isa() -> str:
    """The best vector ISA this CPU has, whatever torch is allowed to use: AMX, AVX512-BF16, ..."""
    import torch

    checks = [
        ("AMX", torch.cpu._is_amx_tile_supported),
        ("AVX512-BF16", torch.cpu._is_avx512_bf16_supported),
        ("AVX-512", torch.cpu._is_avx512_supported),
        ("AVX2", torch.cpu._is_avx2_supported),
    ]
    return next((name for name, has in checks if has()), "no AVX2")


def cpu_isa() -> str:
    """The vector ISA torch computes with, e.g. "AVX2 (limited by ...; the CPU has AVX512-BF16)".

    ATen's dispatch level (AVX2 or AVX512), refined by oneDNN's bf16 support (native bf16 means
    AVX512-BF16 or AMX; oneDNN honours ONEDNN_MAX_CPU_ISA), and the variables that limit it.
    """
    import torch

    aten = torch.backends.cpu.get_cpu_capability()  # "AVX2", "AVX512", "DEFAULT", ...
    isa = {"AVX512": "AVX-512"}.get(aten, aten)
    if isa == "AVX-512" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        isa = "AMX" if torch.cpu._is_amx_tile_supported() else "AVX512-BF16"
    limits = [f"{k}={os.environ[k]}" for k in AVX2_ENV if k in os.environ]
    if not limits:
        return isa
    return f"{isa} (limited by {' '.join(limits)}; the CPU has {hardware_isa()})"


def machine_line(threads: int | None = None) -> str:
    """One line for the head of a benchmark's output: CPU model, ISA, threads, torch."""
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    threads = torch.get_num_threads() if threads is None else threads
    return f"CPU {model}, ISA {cpu_isa()}, {threads} thread(s), torch {torch.__version__}"


def flops_per_pixel(
    model: nn.Module,
    train: bool = False,
    loss_fn: nn.Module | None = None,
    size: int = 64,
) -> float:
    """FLOPs per output pixel of a forward pass, or (`train`) of a training step's passes.

    Counted by torch.utils.flop_counter on a (1, 3, size, size) lq: convolutions and matrix
    products (what costs), not activations or resizes. `train` adds the backward pass (weight
    gradients of trainable parameters, and input gradients where they flow) and, with
    `loss_fn`, the loss's forward and backward (a perceptual loss's ResNet18). The optimiser's
    update is not counted (a few FLOPs per parameter). Runs on a CPU copy of the model.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(model).float().cpu()
    loss = copy.deepcopy(loss_fn).float().cpu() if loss_fn is not None else None
    lq = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as counter:
        if train:
            sr = net.train()(lq)  # (1, 3, H, W)
            total = loss(sr, torch.rand_like(sr))[0] if loss is not None else sr.square().mean()
            total.backward()
        else:
            with torch.no_grad():
                sr = net.eval()(lq)
    return counter.get_total_flops() / (sr.shape[-2] * sr.shape[-1])


def format_flops(flops: float) -> str:
    """A FLOP count for tables: "182.4 k", "3.1 M"."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if flops >= size:
            return f"{flops / size:.1f} {unit}"
    return f"{flops:.0f}"


# The footnote of every FLOPs column.
FLOPS_NOTE = (
    "FLOPs per output pixel: convolutions and matrix products counted by torch.utils.flop_counter "
    "(a multiply-add is 2 FLOPs); activations, resizes and the optimiser not counted"
)
