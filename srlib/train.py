"""Training: a typed config, presets, `fit()`, and safe checkpoints.

A checkpoint is a plain dict (model and optimizer state_dicts, the model's constructor config,
the training config, step, history) written atomically and read back with
`torch.load(weights_only=True)`, so loading one never executes pickled code.

Several GPUs: `torchrun --nproc_per_node N -m srlib train ...` runs one process per GPU;
`distributed_setup()` joins them and `fit` trains with DistributedDataParallel (see `fit`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import math
import os
import random
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from srlib import perf
from srlib.data import make_loader, some
from srlib.degrade import DEGRADATIONS
from srlib.io import atomic_write
from srlib.losses import SharpnessLoss, make_loss
from srlib.models import (
    PatchDiscriminator,
    UNetDiscriminator,
    Upscaler,
    build_model,
    check_model_config,
    upgrade_model_config,
)


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint."""

    name: str = "run"  # checkpoints go to out_dir/name/
    scale: int = 2
    patch_size: int = 96  # gt crop side after rescaling; lq is patch_size // scale
    min_crop: int = 64  # smallest random crop side taken from a photo before rescaling
    crops_per_image: int = 64  # dataset length = images * crops_per_image ("one epoch")
    downscale: str = "bicubic"  # how lq is made from gt: "bilinear" (seed) or "bicubic"
    degradation: str = "clean"  # "clean", "realistic" (web photos) or "realesrgan" (degrade.NAMED)
    loss: str = "l1"  # "l1", "l2" or "perceptual"
    sharpness: float = 0.0  # weight of the sharpness loss part (losses.SharpnessLoss), 0 = off
    sharpness_kind: str = "gradient"  # that part: "gradient" or "fft" (losses.SharpnessLoss)
    gan: str = "none"  # adversarial training: "none", or the discriminator, "unet" or "patch"
    gan_weight: float = 0.1  # weight of the adversarial part, g_adv, in the generator's loss
    gan_lr: float = 1e-4  # the discriminator's Adam lr, constant (the generator's is `lr`)
    ema: float = 0.0  # decay of an EMA of the weights (e.g. 0.999): validated, saved; 0 = off
    init_from: str = ""  # a checkpoint (same model) whose weights a new run starts from; "": none
    batch_size: int = 8  # at a fixed time budget 8 beat 4 and 16 (more steps; ablate.py)
    steps: int = 1000  # optimiser steps in total
    time_budget_s: float | None = None  # also stop (and anneal the LR) by wall-clock time
    lr: float = 2e-3  # peak; 1e-3 and 4e-3 were 0.1-0.6 dB worse (benchmarks/ablate.py, README)
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    val_every: int = 200  # validate every N steps and at the end
    log_every: int = 25  # fetch the loss parts from the device every N steps (one sync)
    checkpoint_every: int = 200
    workers: int = 0  # DataLoader worker processes
    seed: int = 0
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    amp: bool = True  # bf16 autocast, used on CUDA (and on the CPU with cpu_bf16)
    cpu_bf16: bool = False  # bf16 autocast on CPUs with native bf16 (AVX512-BF16, AMX) too
    threads: int = 0  # CPU threads; 0: as many as cores are idle when training starts
    out_dir: str = "runs"


PRESETS: dict[str, dict] = {
    # Seconds: for tests and for checking a notebook end to end.
    "smoke": dict(
        patch_size=32,
        min_crop=24,
        crops_per_image=2,
        batch_size=4,
        steps=4,
        warmup_steps=1,
        val_every=2,
        checkpoint_every=2,
    ),
    # CPU, 2 cores: each notebook (two trainings, evaluation, plots) in at most 10 minutes on
    # an AVX2 CPU in float32 (README, "How long things take"). Ends by step count, not by time:
    # the same machine and thread count give the same numbers.
    "quick": dict(
        patch_size=96,
        min_crop=48,
        crops_per_image=64,
        batch_size=8,
        steps=1500,
        warmup_steps=50,
        val_every=250,
        checkpoint_every=250,
    ),
    # One GPU, e.g. Colab's T4: each notebook in about 15 minutes, with the deep UNet
    # (PRESET_MODEL_ARGS). default_preset() picks it when CUDA is available.
    "gpu": dict(
        patch_size=128,
        min_crop=64,
        crops_per_image=128,
        batch_size=32,
        steps=2000,
        warmup_steps=100,
        val_every=250,
        checkpoint_every=250,
        workers=2,
    ),
    # GPU, the seed's scale: large batches, thousands of steps, bigger crops.
    "full": dict(
        patch_size=192,
        min_crop=96,
        crops_per_image=500,
        batch_size=50,
        steps=20000,
        warmup_steps=500,
        val_every=1000,
        checkpoint_every=1000,
        workers=6,
    ),
}


# TrainConfig fields added after checkpoints were first written, with the value that means
# "as before": an older checkpoint lacks them and still resumes (and loads) as the same run.
ADDED_FIELDS: dict[str, object] = {
    "degradation": "clean",
    "sharpness": 0.0,
    "sharpness_kind": "gradient",
    "gan": "none",
    "gan_weight": 0.1,
    "gan_lr": 1e-4,
    "ema": 0.0,
    "init_from": "",
    "cpu_bf16": False,
    "threads": 0,
}


def upgrade_config(saved: dict) -> dict:
    """A checkpoint's training config with the fields added since it was written filled in."""
    return {**ADDED_FIELDS, **saved}


# Model constructor arguments per preset, over the classes' defaults (srlib.models.MODELS keys).
# UNetUpscaler's defaults are the CPU's small UNet; on a GPU the deep one (32 channels, 16
# ResBlocks at LR resolution: 5x the FLOPs) costs little time and gains quality (README,
# "Quality per FLOP").
DEEP_UNET = dict(encoder_channels=(32, 32, 64), decoder_channels=(32, 32), refine_blocks=16)
PRESET_MODEL_ARGS: dict[str, dict[str, dict]] = {
    "gpu": {"unet": DEEP_UNET},
    "full": {"unet": DEEP_UNET},
}


def model_args(preset_name: str, model: str | type) -> dict:
    """Constructor arguments of `model` (a MODELS key or class) under a preset; {}: defaults."""
    from srlib.models import MODELS

    if isinstance(model, type):
        model = next((k for k, cls in MODELS.items() if cls is model), "")
    return dict(PRESET_MODEL_ARGS.get(preset_name, {}).get(model, {}))


def default_preset() -> str:
    """The preset for this machine: "gpu" where CUDA is available, else "quick" (a CPU)."""
    return "gpu" if torch.cuda.is_available() else "quick"


# Where a run lives and what it is called: not part of what it is, so a run folder that was
# moved, renamed or named another way (--out /abs/runs/x vs runs/x) is still the same run.
LOCATION_FIELDS = ("name", "out_dir")
# How a run is computed, not what it is: a resume may change it (a busy machine, fewer threads).
RUNTIME_FIELDS = ("threads",)


def run_definition(config: dict) -> dict:
    """What defines a run in a (saved) training config: all of it but its location."""
    skip = (*LOCATION_FIELDS, *RUNTIME_FIELDS)
    return {k: v for k, v in upgrade_config(config).items() if k not in skip}


def preset(preset_name: str, /, **overrides) -> TrainConfig:
    """A TrainConfig from a named preset ('smoke', 'quick', 'full') plus explicit overrides."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset_name], **overrides})


def loss_for(cfg: TrainConfig, pretrained: bool = True) -> nn.Module:
    """The loss a config asks for: `cfg.loss`, plus the sharpness part when `cfg.sharpness` > 0."""
    return make_loss(cfg.loss, pretrained, cfg.sharpness, cfg.sharpness_kind)


# TrainConfig.gan: no adversarial loss, or the discriminator to train against (srlib.models).
GAN_KINDS = ("none", "unet", "patch")


def check_config(cfg: TrainConfig) -> None:
    """Raise ValueError naming every TrainConfig value that cannot make a run."""
    at_least_1 = [
        "scale",
        "patch_size",
        "min_crop",
        "crops_per_image",
        "batch_size",
        "steps",
        "val_every",
        "log_every",
        "checkpoint_every",
    ]
    problems = []
    for k in at_least_1:
        if not getattr(cfg, k) >= 1:
            problems.append(f"{k} must be at least 1, got {getattr(cfg, k)}")
    for k in ("lr", "weight_decay", "grad_clip", "warmup_steps", "workers", "threads"):
        value = getattr(cfg, k)
        if not 0 <= value < math.inf:  # also refuses nan
            problems.append(f"{k} must be a finite number >= 0, got {value}")
    budget = cfg.time_budget_s
    if budget is not None and not 0 < budget < math.inf:
        problems.append(f"time_budget_s must be > 0 seconds (or None: no budget), got {budget}")
    if not 0 <= cfg.sharpness < math.inf:
        problems.append(f"sharpness must be a finite number >= 0, got {cfg.sharpness}")
    if cfg.sharpness_kind not in SharpnessLoss.KINDS:
        kinds = " or ".join(map(repr, SharpnessLoss.KINDS))
        problems.append(f"sharpness_kind must be {kinds}, got {cfg.sharpness_kind!r}")
    if cfg.degradation not in DEGRADATIONS:
        problems.append(f"degradation must be one of {DEGRADATIONS}, got {cfg.degradation!r}")
    if cfg.gan not in GAN_KINDS:
        problems.append(f"gan must be one of {GAN_KINDS}, got {cfg.gan!r}")
    for k in ("gan_weight", "gan_lr"):
        if not 0 <= getattr(cfg, k) < math.inf:
            problems.append(f"{k} must be a finite number >= 0, got {getattr(cfg, k)}")
    if not 0 <= cfg.ema < 1:
        problems.append(f"ema must be >= 0 and < 1 (a decay; 0: no EMA), got {cfg.ema}")
    if not isinstance(cfg.init_from, str):  # a Path would not load back (weights_only)
        problems.append(f"init_from must be a str path ('': none), got {cfg.init_from!r}")
    if problems:
        raise ValueError(f"training config {cfg.name!r}: " + "; ".join(problems))


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else is passed to torch."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN: AVX512-BF16 or AMX), not emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def use_autocast(cfg: TrainConfig, device: torch.device) -> bool:
    """bf16 autocast for the training forward: on CUDA with `amp`; on a CPU with `cpu_bf16`.

    Only where bf16 is native: on GPUs from Ampere on (a T4 or V100 would emulate it, slower
    than float32) and on CPUs with AVX512-BF16 or AMX. Elsewhere training runs in float32; a
    CPU asked for bf16 says so (a warning), rather than training silently slowly.
    """
    if not cfg.amp:
        return False
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    if device.type != "cpu" or not cfg.cpu_bf16:
        return False
    if not cpu_has_bf16():
        warnings.warn(
            "cpu_bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); training in float32",
            stacklevel=3,
        )
        return False
    return True


def distributed_setup(backend: str | None = None) -> tuple[int, int]:
    """Join torchrun's process group if launched by torchrun; returns (rank, world_size).

    torchrun sets RANK, WORLD_SIZE and LOCAL_RANK: the group is initialised once, with
    `backend` ("nccl", "gloo"; None: NCCL when CUDA is available, else gloo), and under NCCL
    each process takes GPU LOCAL_RANK. Pass "gloo" to train on the CPU of a CUDA machine.
    Calling it again, or after the caller made the group itself, just reports it. Without
    torchrun: (0, 1).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if not dist.is_available() or not {"RANK", "WORLD_SIZE", "LOCAL_RANK"} <= set(os.environ):
        return 0, 1
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _rank_and_world() -> tuple[int, int]:
    """(rank, world_size) of an initialised process group, else (0, 1); initialises nothing."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True in a single process and on rank 0: the one process that writes files and prints."""
    return _rank_and_world()[0] == 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def lr_at(progress: float, step: int, cfg: TrainConfig) -> float:
    """Linear warmup for `warmup_steps`, then cosine decay to 0 as `progress` goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a (B, C, H, W) batch to `device` in channels_last layout."""
    return x.to(device, memory_format=torch.channels_last, non_blocking=True)


def psnr(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Quick RGB PSNR in dB per image on [0, 1] tensors, for validation curves only."""
    mse = ((sr.clamp(0, 1) - gt) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


# ----------------------------------------------------------------------------------------------
# Checkpoints


class RunWriteError(OSError):
    """A file of a run folder could not be written (disk full, read-only, ...): path and cause."""


def save_checkpoint(path: str | os.PathLike, **state) -> None:
    """torch.save a dict atomically: a crash leaves the old checkpoint or the new one."""
    # Into memory first: torch's own writer reports a full disk as "enforce fail at
    # inline_container.cc", where a plain write raises OSError with the cause (ENOSPC, EROFS).
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_write(path) as f:
        f.write(buffer.getbuffer())


def check_writable(folder: str | os.PathLike) -> None:
    """Make `folder` and write a byte to a file in it (then delete it); RunWriteError if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".srlib-write-test.", suffix=".tmp")
        try:
            os.write(fd, b"\0")
            os.fsync(fd)  # a full disk may only say so here
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise RunWriteError(f"cannot write to the run folder {folder}: {e.strerror or e}") from e


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """Read a checkpoint with `weights_only=True` (no arbitrary code runs)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors in a state dict that hold NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[Upscaler, dict]:
    """Rebuild the model stored in a checkpoint; returns (model in eval mode, checkpoint).

    `path`: an srlib checkpoint, an srlib .safetensors export (read without pickle), or any
    other model file spandrel recognises (Real-ESRGAN, Compact, SPAN, ...: `srlib.community.
    SpandrelModel`, its "checkpoint" then just {"model_config": ...}). A checkpoint whose
    weights hold NaN or inf (a diverged run) is refused with ValueError: it would only ever
    produce black or garbage images. So is one whose model_config does not fit its weights
    (`check_model_config`), before any model is built from it.
    """
    ckpt, error = None, None
    if Path(path).suffix.lower() == ".safetensors":
        from srlib.export import read_safetensors

        ckpt = read_safetensors(path)  # None: not written by srlib
    else:
        try:
            ckpt = load_checkpoint(path, map_location=device)
        except Exception as e:  # truncated, not a torch file, or a pickle weights_only refuses
            error = e
    if not (isinstance(ckpt, dict) and "model_config" in ckpt):
        from srlib.community import load_spandrel

        try:
            model = load_spandrel(path)
        except (ImportError, ValueError):
            if error is not None:
                raise error from None  # neither reads it: the checkpoint's own error
            raise
        return model.to(device).eval(), {"model_config": model.config}
    config = check_model_config(ckpt.get("model_config"), ckpt.get("model"))
    bad = nonfinite_tensors(ckpt["model"])
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise ValueError(f"{path} holds NaN/inf weights ({shown}): it is from a diverged run")
    model = build_model(config)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def run_or_shipped(
    run_dir: str | os.PathLike, shipped: str | os.PathLike, expect: dict | None = None
) -> tuple[Path, str]:
    """The best checkpoint of a finished run in `run_dir`, else `shipped`; and a provenance line.

    For comparisons across notebooks: the other notebook's latest run if it finished (its
    `best.pt`), otherwise the checkpoint the repository ships. `expect` (e.g. {"scale": 2}) are
    training-config values a checkpoint must have: a run that differs is passed over, a shipped
    checkpoint that differs is a ValueError. FileNotFoundError if neither exists.
    """
    run_dir, shipped, expect = Path(run_dir), Path(shipped), expect or {}

    def mismatch(config: dict | None) -> str:
        config = upgrade_config(config or {})
        return ", ".join(f"{k}={config.get(k)!r}" for k, v in expect.items() if config.get(k) != v)

    last, best = run_dir / "last.pt", run_dir / "best.pt"
    if last.exists() and best.exists():
        ckpt = load_checkpoint(last)
        cfg, hist = ckpt.get("config") or {}, ckpt.get("history") or {}
        # Runs from before the 'finished' flag: finished when all steps were done.
        finished = hist.get("finished", ckpt["step"] >= cfg.get("steps", math.inf))
        if finished and not hist.get("interrupted") and not mismatch(cfg):
            b = load_checkpoint(best)
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(best.stat().st_mtime))
            return best, (
                f"{best}: this machine's latest finished run ({b['step']} of {ckpt['step']} "
                f"steps, written {when})"
            )
    if shipped.exists():
        ckpt = load_checkpoint(shipped)
        if mismatch(ckpt.get("config")):
            raise ValueError(f"{shipped} was trained with {mismatch(ckpt.get('config'))}")
        steps = (ckpt.get("config") or {}).get("steps")
        return shipped, f"{shipped}: the shipped checkpoint (step {ckpt.get('step')} of {steps})"
    raise FileNotFoundError(f"neither a finished run in {run_dir} nor {shipped} exists")


def restore_best(model: nn.Module, cfg: TrainConfig) -> int:
    """Load the run's best-validation weights (out_dir/name/best.pt) into `model`; their step.

    Early stopping after the fact: a run whose validation PSNR peaks before its last step (the
    ResNet-UNet with the perceptual loss did, on some training sets: README) is judged by its
    best validation checkpoint. Validate on photos other than the ones you report on, or the
    choice leaks into the result. Needs a run that validated (a `val_set` in `fit`).
    """
    ckpt = load_checkpoint(Path(cfg.out_dir) / cfg.name / "best.pt")
    model.load_state_dict(ckpt["model"])
    return ckpt["step"]


# ----------------------------------------------------------------------------------------------
# The loop


# A run "learns nothing" when, after this many validations, its best validation PSNR is still
# less than MIN_GAIN_DB above the PSNR of its own base (bicubic) upscale of the same crops.
STUCK_AFTER_VALIDATIONS = 3
MIN_GAIN_DB = 0.05


class NotLearningWarning(RuntimeWarning):
    """A run whose validation PSNR does not rise above its own base upscale."""


def _new_history() -> dict:
    return {
        "step": [],
        "lr": [],
        "train": {},
        "val": {"step": [], "epoch": [], "loss": [], "psnr": [], "base_psnr": None},
        "alerts": [],  # {"step", "message"}: loud warnings that hold as the run stands
        "cleared_alerts": [],  # earlier alerts the run has since put right, with "cleared": step
        "phases": [],  # {"step", "change", "base_psnr"}: where the data changed (new_phase)
        "samples_per_s": None,
        "threads": None,  # CPU threads of the last session (perf.pick_threads); None on a GPU
        "train_seconds": 0.0,
        "interrupted": False,  # the last session was stopped by Ctrl-C / a kernel interrupt
        "finished": False,  # all steps done (or the time budget spent)
    }


# What stops a run cleanly after the current step: Ctrl-C (and Jupyter's interrupt button), and
# SIGTERM, which `kill`, batch schedulers and torchrun send to end a process.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def _stop_on_interrupt() -> Iterator[list[bool]]:
    """Turn the first SIGINT or SIGTERM into a flag; a second one aborts (KeyboardInterrupt).

    Training then stops at the end of the current step, with a checkpoint and its history,
    instead of a KeyboardInterrupt that loses the run's history mid-step, or a SIGTERM that
    kills it mid-write (leaving a full-size temp file beside last.pt).
    """
    flag = [False]

    def handler(signum, frame) -> None:
        if flag[0]:
            raise KeyboardInterrupt  # a second interrupt: the user really wants out
        flag[0] = True

    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals cannot be caught here
        yield flag
        return
    try:
        yield flag
    finally:  # None: a handler installed outside Python, which cannot be put back
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


def phase_validations(history: dict) -> tuple[list[int], list[float]]:
    """(steps, PSNRs) of the validations since the data last changed (`fit`'s new_phase).

    Only these are comparable with each other and with the current base_psnr: earlier ones
    were measured on other validation photos.
    """
    val, phases = history["val"], history.get("phases") or []
    start = phases[-1]["step"] if phases else 0
    kept = [(s, p) for s, p in zip(val["step"], val["psnr"], strict=True) if s > start]
    return [s for s, _ in kept], [p for _, p in kept]


def learning_problem(history: dict) -> str | None:
    """Why a run has not learned (best val PSNR not MIN_GAIN_DB above its base), or None.

    The run as it stands: its best validation (best.pt) of the current data phase.
    """
    base = history["val"].get("base_psnr")
    steps, psnrs = phase_validations(history)
    if base is None or not psnrs:
        return None
    best = max(psnrs)
    if best - base >= MIN_GAIN_DB:
        return None
    return (
        f"its best validation PSNR after {len(psnrs)} validations (step {steps[-1]}) "
        f"is {best:.2f} dB, not above the {base:.2f} dB of its own base upscale "
        f"(gain {best - base:+.2f} dB)"
    )


def data_change(old: dict, new: dict) -> str | None:
    """What differs between two `data` records of `fit` (photos, the split), or None.

    A record: {"train": {photo: fingerprint}, "val": {photo: fingerprint}, "val_fraction": f,
    ...}; other keys (where the photos were) are for people and not compared.
    """
    before = {**old.get("train", {}), **old.get("val", {})}
    after = {**new.get("train", {}), **new.get("val", {})}
    added = sorted(after.keys() - before.keys())
    removed = sorted(before.keys() - after.keys())
    changed = sorted(k for k in before.keys() & after.keys() if list(before[k]) != list(after[k]))
    moved = sorted(
        k
        for k in before.keys() & after.keys()
        if (k in old.get("val", {})) != (k in new.get("val", {}))
    )
    parts = [
        f"{len(names)} photo(s) {what} ({some(names, 3)})"
        for what, names in (("added", added), ("removed", removed), ("changed", changed))
        if names
    ]
    if old.get("val_fraction") != new.get("val_fraction"):
        parts.append(f"val_fraction {old.get('val_fraction')} then, {new.get('val_fraction')} now")
    if moved:
        parts.append(f"{len(moved)} photo(s) moved between training and validation")
    return "; ".join(parts) or None


def _means(sums: list[torch.Tensor], n: int, across_ranks: bool) -> list[float]:
    """sums / n, with sums and n first added over the processes of a DDP job if asked."""
    total = torch.stack([*sums, torch.tensor(float(n), device=sums[0].device)])
    if across_ranks:
        dist.all_reduce(total)
    *sums_, n_ = total.tolist()  # one device sync
    return [s / n_ for s in sums_]


@torch.no_grad()
def validate(
    model: nn.Module,
    loss_fn: nn.Module,
    loader: DataLoader,
    device: torch.device,
    across_ranks: bool = False,
) -> tuple[float, float]:
    """Mean loss and mean RGB PSNR (dB) of `model` over a validation loader.

    across_ranks: under DDP, each process passes its share of the validation set and gets the
    means over all of it; every process must then call this.
    """
    was_training = model.training
    model.eval()
    loss_sum, psnr_sum, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
    for lq, gt in loader:
        lq, gt = to_device(lq, device), to_device(gt, device)
        sr = model(lq)
        loss_sum += loss_fn(sr, gt)[0] * len(lq)  # summed on the device: one sync at the end
        psnr_sum += psnr(sr, gt).sum()
        n += len(lq)
    model.train(was_training)
    loss, psnr_ = _means([loss_sum, psnr_sum], n, across_ranks)
    return loss, psnr_


@torch.no_grad()
def base_psnr(
    model: nn.Module, loader: DataLoader, device: torch.device, across_ranks: bool = False
) -> float | None:
    """Mean RGB PSNR of the model's own classic upscale (its `base_upscale`), or None.

    across_ranks: as in `validate`.
    """
    if not hasattr(model, "base_upscale"):
        return None
    total, n = torch.zeros((), device=device), 0
    for lq, gt in loader:
        lq, gt = to_device(lq, device), to_device(gt, device)
        total += psnr(model.base_upscale(lq), gt).sum()
        n += len(lq)
    return _means([total], n, across_ranks)[0]


def _process_device(device: torch.device) -> torch.device:
    """This DDP process's device: GPU LOCAL_RANK on CUDA, else the CPU (gloo has no MPS)."""
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", torch.cuda.current_device()))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    if dist.get_backend() == "nccl":
        raise ValueError(
            f"device {device} cannot train under NCCL, which reduces CUDA tensors only: "
            "use device 'auto' or 'cuda', or a gloo process group for the CPU"
        )
    return torch.device("cpu")


# (the default process group, the gloo group `_control_group` made for it), made once.
_control: tuple[object, object] | None = None


def _control_group() -> dist.ProcessGroup | None:
    """fit's group for small CPU messages (stop flags, clocks, the checkpoint); None: default.

    Under NCCL a gloo group, made once per default process group: reading an NCCL result every
    step would make the CPU wait for the GPU every step. As for any new group, every process
    must first ask for it at the same point.
    """
    global _control
    if dist.get_backend() == "gloo":
        return None
    if _control is None or _control[0] is not dist.group.WORLD:
        _control = (dist.group.WORLD, dist.new_group(backend="gloo"))
    return _control[1]


def _resume(last: Path, resume: bool, rank: int, world: int) -> dict | None:
    """The checkpoint to resume from (None: start afresh); under DDP rank 0's, sent to all.

    Rank 0 alone writes checkpoints, so only its out_dir need hold last.pt (no shared disk is
    needed): every process resumes from the same step and state, or none does.
    """
    # On the CPU: load_state_dict copies to the model's device, and the RNG state must stay a
    # CPU tensor (torch.set_rng_state rejects a CUDA copy).
    if world == 1:
        return load_checkpoint(last, map_location="cpu") if resume and last.exists() else None
    box: list = [None]
    if rank == 0 and resume and last.exists():
        try:
            box[0] = load_checkpoint(last, map_location="cpu")
        except Exception as e:  # the others wait for it: tell them, then raise here
            box[0] = f"rank 0 cannot read {last}: {type(e).__name__}: {e}"
            dist.broadcast_object_list(box, src=0, group=_control_group())
            raise
    # Pickled between the job's own processes; rank 0 read it with weights_only=True.
    dist.broadcast_object_list(box, src=0, group=_control_group())
    if isinstance(box[0], str):
        raise RuntimeError(box[0])
    return box[0]


def _check_run_folder(run_dir: Path, rank: int, world: int) -> None:
    """check_writable on rank 0 (the one that writes), and RunWriteError in every process."""
    box = [None]
    if rank == 0:
        try:
            check_writable(run_dir)
        except RunWriteError as e:
            box[0] = str(e)
    if world > 1:  # the others would wait for rank 0 in the next collective forever
        dist.broadcast_object_list(box, src=0, group=_control_group())
    if box[0]:
        raise RunWriteError(box[0])


def _restore(
    ckpt: dict,
    model: Upscaler,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    last: Path,
    gan: _GanTrainer | None = None,
    ema: _Ema | None = None,
    data: dict | None = None,
    new_phase: bool = False,
) -> tuple[int, dict, str | None]:
    """Load a checkpoint's weights, optimizer, RNG (GAN, EMA) state; (step, history, change).

    `change`: how the data differs from the checkpoint's (see `fit`'s new_phase), or None.
    """
    theirs, ours = run_definition(ckpt.get("config") or {}), run_definition(dataclasses.asdict(cfg))
    if theirs != ours or upgrade_model_config(ckpt.get("model_config") or {}) != model.config:
        raise ValueError(
            f"{last} was written by a different run (config or model differs). Resuming "
            "would mix two experiments: give this run another `name`, delete that folder, "
            "or pass resume=False to start over (the old checkpoint is then overwritten)."
        )
    needed = ["model", "optimizer", "step", "history", "torch_rng"]
    needed += (["raw_model"] if ema is not None else []) + (["gan"] if gan is not None else [])
    missing = [k for k in needed if k not in ckpt]
    if missing:
        raise ValueError(
            f"{last} cannot be resumed: it has no {', '.join(missing)} (an exported or "
            "inference checkpoint?). Give this run another `name`, or pass resume=False to "
            "start over (the checkpoint is then overwritten)."
        )
    # Checkpoints from before the data was recorded resume as they always did.
    change = data_change(ckpt["data"], data) if data and ckpt.get("data") else None
    if change and not new_phase:
        raise ValueError(
            f"{last} was trained on other data ({change}). Resuming would score it on photos "
            "it may have trained on: pass new_phase=True to continue on this data as a new "
            "phase (its validation baseline measured again), or resume=False to start over."
        )
    # With an EMA, "model" holds the averaged weights (`_save_run`), "raw_model" the trained ones.
    model.load_state_dict(ckpt["model"] if ema is None else ckpt["raw_model"])
    if ema is not None:
        ema.model.load_state_dict(ckpt["model"])
    if gan is not None:
        gan.load_state_dict(ckpt["gan"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    history = {**_new_history(), **ckpt["history"]}
    if change:  # a new phase: validation scores from here on are on other photos
        history["phases"].append(
            {"step": ckpt["step"], "change": change, "base_psnr": history["val"]["base_psnr"]}
        )
        history["val"]["base_psnr"] = None  # measured again on this data's validation photos
        for alert in history["alerts"]:  # they judged the old data
            alert["cleared"] = ckpt["step"]
        history["cleared_alerts"] += history["alerts"]
        history["alerts"] = []
    return ckpt["step"], history, change


def _save_run(
    path: Path,
    model: Upscaler,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    history: dict,
    gan: _GanTrainer | None = None,
    ema: _Ema | None = None,
    data: dict | None = None,
) -> None:
    """Write a checkpoint `fit` can resume from; with an EMA, its "model" is the averaged one."""
    extra = {} if data is None else {"data": data}  # what it trained and validated on
    if ema is not None:  # readers (load_model, restore_best, export) get the averaged weights
        extra["raw_model"] = model.state_dict()  # and training continues from these
        model = ema.model
    if gan is not None:
        extra["gan"] = gan.state_dict()  # the discriminator and its optimizer
    save_checkpoint(
        path,
        model=model.state_dict(),  # the plain model's: no DDP "module." prefix
        model_config=model.config,
        optimizer=opt.state_dict(),
        config=dataclasses.asdict(cfg),
        step=step,
        history=history,
        torch_rng=torch.get_rng_state(),
        **extra,
    )


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """The model as DistributedDataParallel: what each training step calls under DDP."""
    # DDP copies rank 0's weights and buffers to all processes here and averages the gradients
    # of the trainable parameters only: a frozen encoder takes no part (and its BatchNorm stays
    # in eval mode, see ResNetEncoder).
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _agree(stop_asked: bool, seconds: float, world: int) -> tuple[bool, float]:
    """Any process's stop request and the slowest clock, the same in every process."""
    if world == 1:
        return stop_asked, seconds
    both = torch.tensor([float(stop_asked), seconds], dtype=torch.float64)
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=_control_group())
    return bool(both[0]), float(both[1])


def _gather_losses(pending: list[torch.Tensor], world: int) -> list[list[float]]:
    """Steps' loss parts, (n_steps, 1 + n_parts), as floats; under DDP averaged over processes."""
    rows = torch.stack(pending)
    if world > 1:
        dist.all_reduce(rows)  # each process's mean over its equal share of the batch...
        rows /= world  # ...averaged: the global batch's mean, the same in every process
    return rows.tolist()  # one device sync


def _record_losses(
    history: dict, names: list[str], rows: list[list[float]], step: int, name: str, kept: str
) -> None:
    """Append the loss parts of the steps up to `step` to history; a non-finite one raises.

    `kept`: where the last finite weights are, for the message.
    """
    first = step - len(rows) + 1
    for i, row in enumerate(rows):
        if not all(math.isfinite(v) for v in row):
            raise FloatingPointError(
                f"{name}: the loss became {row[0]} at step {first + i} (lr "
                f"{history['lr'][first + i - 1]:.2e}). Training stopped; {kept}. "
                "Lower the lr or check the data."
            )
        for part, value in zip(names, row, strict=True):
            history["train"].setdefault(part, []).append(value)


def _record_validation(
    history: dict, step: int, epoch: float, v_loss: float, v_psnr: float, name: str, kept: str
) -> str:
    """Append a validation's results to history (a non-finite one raises); the line to print."""
    if not (math.isfinite(v_loss) and math.isfinite(v_psnr)):
        raise FloatingPointError(
            f"{name}: validation at step {step} gave loss {v_loss}, PSNR {v_psnr}; "
            f"training stopped, {kept}"
        )
    for key, value in (("step", step), ("epoch", epoch), ("loss", v_loss), ("psnr", v_psnr)):
        history["val"][key].append(value)
    base = history["val"]["base_psnr"]
    gain = "" if base is None else f" ({v_psnr - base:+.2f} dB over its base upscale)"
    return f"{name} step {step}: val loss {v_loss:.4f}, val PSNR {v_psnr:.2f} dB{gain}"


def _clear_alerts(history: dict, step: int, name: str, bar: tqdm | None) -> None:
    """Move alerts that no longer hold (the run learned after all) to 'cleared_alerts'."""
    for alert in history["alerts"]:
        alert["cleared"] = step
        if bar is not None:
            bar.write(
                f"{name} step {step}: learning now; the alert of step {alert['step']} is cleared"
            )
    history["cleared_alerts"] += history["alerts"]
    history["alerts"] = []


def _alert(history: dict, step: int, name: str, message: str, bar: tqdm | None) -> None:
    """Record that a run learns nothing; with a `bar` (rank 0), also say it loudly."""
    text = f"run {name!r} is NOT LEARNING: {message}."
    history["alerts"].append({"step": step, "message": text})
    if bar is not None:
        bar.write("\n".join(["!" * 80, "WARNING: " + text, "!" * 80]))
        warnings.warn(text, NotLearningWarning, stacklevel=3)  # at fit's line


class _GanTrainer:
    """The adversarial half of a GAN run (TrainConfig.gan): a discriminator, its Adam, its losses.

    Non-saturating losses, as in Real-ESRGAN: the generator adds `gan_weight` * BCE(D(sr), real)
    (part "g_adv") to its loss; the discriminator minimises BCE(D(gt), real) + BCE(D(sr), fake)
    (parts "d_real", "d_fake"; ln 2 = 0.69 each when it cannot tell them apart). The
    discriminator is frozen (no gradients, eval mode) outside `discriminator_step`, so in the
    generator's step only sr gets gradients, and spectral norm's power iteration (a train-mode
    update of its state) runs once per discriminator step. It trains at a constant lr, in fp32.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device):
        kinds = {"unet": UNetDiscriminator, "patch": PatchDiscriminator}
        with torch.random.fork_rng(devices=[]):  # seeded, and the run's RNG stream untouched
            torch.manual_seed(cfg.seed)
            self.net = kinds[cfg.gan]()
        self.net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.gan_lr, betas=(0.9, 0.99))
        self.weight = cfg.gan_weight

    def generator_loss(
        self, sr: torch.Tensor, loss: torch.Tensor, parts: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`loss` and its `parts` with the adversarial part on sr (B, 3, H, W) added."""
        logits = self.net(sr.float())
        g_adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return loss + self.weight * g_adv, {**parts, "g_adv": g_adv.detach()}

    def discriminator_step(self, sr: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step of the discriminator, gt real and sr fake; its loss parts."""
        self.net.train().requires_grad_(True)
        # Both in one batch: one forward, and one power iteration per step.
        real, fake = self.net(torch.cat([gt, sr.detach().float()])).chunk(2)
        d_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        d_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        self.opt.zero_grad(set_to_none=True)
        (d_real + d_fake).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)  # no gradients left lying outside its step
        self.net.eval().requires_grad_(False)
        return {"d_real": d_real.detach(), "d_fake": d_fake.detach()}

    def state_dict(self) -> dict:
        """The discriminator's weights (spectral norm's state too) and its optimizer's state."""
        return {"discriminator": self.net.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.net.load_state_dict(state["discriminator"])
        self.opt.load_state_dict(state["optimizer"])


class _Ema:
    """An exponential moving average of a model's weights (TrainConfig.ema), buffers copied.

    After every optimiser step: avg = decay * avg + (1 - decay) * w. It smooths out the last
    steps' noise, which a GAN's moving target makes larger.
    """

    def __init__(self, model: Upscaler, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: Upscaler) -> None:
        """Move the average towards `model`'s current weights."""
        for avg, w in zip(self.model.parameters(), model.parameters(), strict=True):
            if w.requires_grad:  # a frozen weight (the ResNet encoder's) stays exactly equal
                avg.mul_(self.decay).add_(w, alpha=1 - self.decay)
        for avg, b in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(b)

    def copy_to(self, model: Upscaler) -> None:
        """Load the averaged weights into `model`."""
        model.load_state_dict(self.model.state_dict())


def _warm_start(model: Upscaler, path: str) -> None:
    """Load checkpoint `path`'s weights into `model` (TrainConfig.init_from): same model only."""
    if not Path(path).is_file():
        raise ValueError(f"init_from {path!r}: no such checkpoint file")
    try:
        ckpt = load_checkpoint(path)
        weights, config = ckpt["model"], ckpt["model_config"]
    except Exception as e:  # truncated, not a torch file, not an srlib checkpoint
        raise ValueError(f"init_from {path}: not a readable srlib checkpoint ({e})") from e
    try:
        config = check_model_config(config, weights)
    except ValueError as e:
        raise ValueError(f"init_from {path}: {e}") from e
    if config != model.config:
        raise ValueError(
            f"init_from {path} holds another model ({config}) than this run's ({model.config}): "
            "a warm start needs the same architecture and arguments"
        )
    bad = nonfinite_tensors(weights)
    if bad:
        raise ValueError(f"init_from {path} holds NaN/inf weights ({bad[0]}, ...): a diverged run")
    model.load_state_dict(weights)


def fit(
    model: Upscaler,
    loss_fn: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: TrainConfig,
    resume: bool = True,
    progress: bool = True,
    on_validation: Callable[[dict], None] | None = None,
    data: dict | None = None,
    new_phase: bool = False,
) -> dict:
    """Train `model` in place and return its history; resumes from out_dir/name/last.pt.

    History: per-step 'lr' and 'train' parts (incl. 'total'); per-validation 'val' loss and
    PSNR, with 'base_psnr' (the model's own base upscale on the same crops); 'alerts' (a run
    that learns nothing is reported loudly there, on screen and as a NotLearningWarning);
    samples/s. An alert that no longer holds (the run learned after all) moves to
    'cleared_alerts': 'alerts' is the verdict on the run as it stands. Checkpoints: 'last.pt'
    every `checkpoint_every` steps and at the end, 'best.pt' at the best validation PSNR. A
    non-finite loss stops the run with FloatingPointError before any checkpoint holds the
    broken weights; a checkpoint that cannot be written (disk full, read-only) raises
    RunWriteError. An interrupt (Ctrl-C, the kernel's stop button, SIGTERM) ends the run
    cleanly after the current step: checkpoint written, history returned with 'interrupted'
    True; calling fit again resumes. `on_validation(history)` is called after each
    validation, e.g. to redraw live loss curves.

    `data`: what the run trains and validates on (e.g. {"train": {photo: [bytes, hash]},
    "val": {...}, "val_fraction": f}, see `data_change`), stored in the checkpoints. Resuming a
    checkpoint that recorded other data is refused (ValueError), unless `new_phase`: then the
    run continues on this data as a new phase, recorded in history['phases'], with its
    validation baseline measured again and best.pt, alerts and the verdict judged on this
    phase's validations only.

    Under torchrun (a process group of several processes, see `distributed_setup`) the model
    trains as DistributedDataParallel, one GPU per process (LOCAL_RANK), or on the CPU with
    gloo. `cfg.batch_size` is the global batch: each process takes batch_size // world_size
    of it (`make_loader`) and the gradients are averaged, so with the same global batch and
    steps the LR schedule and, up to float rounding, the run are those of one process, and
    'last.pt' resumes with any number of processes. Each process validates its share of the
    validation set. Rank 0 alone prints, calls `on_validation`, writes checkpoints (of the
    plain model) and reads last.pt, which it sends to the others: only rank 0 needs to see
    out_dir. All processes stop at the same step, on any one's interrupt; all raise on a
    non-finite loss; all return the same history (timings aside).

    `cfg.gan` "unet" or "patch": each step also trains that discriminator (`_GanTrainer`) and
    adds `gan_weight` times its adversarial loss to the generator's; 'train' gets the parts
    'g_adv', 'd_real' and 'd_fake'. `cfg.ema` > 0: validation, best.pt, last.pt's 'model' and
    the returned model are an EMA of the weights (last.pt also keeps the trained ones as
    'raw_model', to resume). `cfg.init_from`: a new run starts from that checkpoint's weights.
    GAN and EMA runs take one process for now.

    On a CPU it trains on `cfg.threads` torch threads, by default (0) as many as cores are
    idle when it starts (srlib.perf.pick_threads: on a busy machine more threads train slower
    than fewer); torch's thread count is restored when it returns. History 'threads' says how
    many (None on a GPU).
    """
    on_cpu = pick_device(cfg.device).type == "cpu"
    with perf.threads_for(cfg.threads) if on_cpu else contextlib.nullcontext():
        return _fit(model, loss_fn, train_set, val_set, cfg, resume, progress, on_validation,
                    data, new_phase)  # fmt: skip


def _fit(
    model: Upscaler,
    loss_fn: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: TrainConfig,
    resume: bool,
    progress: bool,
    on_validation: Callable[[dict], None] | None,
    data: dict | None,
    new_phase: bool,
) -> dict:
    """`fit` on the threads it chose."""
    check_config(cfg)
    rank, world = _rank_and_world()
    main = rank == 0
    if world > 1 and (cfg.gan != "none" or cfg.ema):
        what = [f"GAN training (gan {cfg.gan!r})"] if cfg.gan != "none" else []
        what += [f"an EMA of the weights (ema {cfg.ema})"] if cfg.ema else []
        raise ValueError(
            f"{' and '.join(what)} runs in one process for now, not torchrun's {world}"
        )
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    if world > 1:
        device = _process_device(device)
    if cfg.batch_size % world:
        raise ValueError(
            f"batch_size {cfg.batch_size} is the global batch and must split evenly over "
            f"{world} processes: choose a multiple of {world}"
        )
    # channels_last: oneDNN's fast convolution layout on CPU (2-6x here), also good on GPUs.
    model.to(device, memory_format=torch.channels_last).train()
    loss_fn.to(device, memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    run_dir = Path(cfg.out_dir) / cfg.name
    step, history, best = 0, _new_history(), -math.inf

    last = run_dir / "last.pt"
    ckpt = _resume(last, resume, rank, world)
    saved_step = None  # the step of the newest checkpoint of this run: its last finite weights
    if ckpt is None and cfg.init_from:
        _warm_start(model, cfg.init_from)  # every process reads it; before the EMA copies it
        if main:
            print(f"{cfg.name} starts from the weights of {cfg.init_from}")
    gan = _GanTrainer(cfg, device) if cfg.gan != "none" else None
    ema = _Ema(model, cfg.ema) if cfg.ema else None
    scored = model if ema is None else ema.model  # what validation, best.pt and the caller get
    if ckpt is not None:
        step, history, change = _restore(ckpt, model, opt, cfg, last, gan, ema, data, new_phase)
        best = max(phase_validations(history)[1], default=-math.inf)
        saved_step, data = step, data if data is not None else ckpt.get("data")
        if main:
            print(f"resumed {cfg.name} from {last} at step {step}/{cfg.steps}")
            if change:
                print(
                    f"{cfg.name}: new phase from step {step} on changed data ({change}); its "
                    "validation baseline is measured again"
                )
    budget = cfg.time_budget_s
    if step >= cfg.steps or (budget is not None and history["train_seconds"] >= budget):
        if ema is not None:
            ema.copy_to(model)
        return history  # already finished: the model now holds its final weights

    _check_run_folder(run_dir, rank, world)  # before the first step, not at a checkpoint
    if len(train_set) < cfg.batch_size:
        raise ValueError(
            f"{len(train_set)} training samples are fewer than one batch "
            f"({cfg.batch_size}): add images or raise crops_per_image"
        )
    steps_per_epoch = len(train_set) // cfg.batch_size
    use_amp = use_autocast(cfg, device)
    net = _wrap_ddp(model, device) if world > 1 else model  # what the training step calls

    val_loader = None
    if val_set is not None and len(val_set) > 0:
        val_loader = make_loader(
            val_set,
            cfg.batch_size,
            shuffle=False,
            workers=cfg.workers,
            rank=rank,
            world_size=world,
        )
        if history["val"]["base_psnr"] is None:
            history["val"]["base_psnr"] = base_psnr(
                model, val_loader, device, across_ranks=world > 1
            )

    def checkpoint(path: Path) -> None:
        nonlocal saved_step
        if main:
            try:
                _save_run(path, model, opt, cfg, step, history, gan, ema, data)
            except OSError as e:  # disk full, folder made read-only: say which and why
                raise RunWriteError(f"cannot write {path}: {e.strerror or e}") from e
        saved_step = step if path == last else saved_step

    def kept() -> str:
        """Where the last finite weights are, for a message after a non-finite loss."""
        if saved_step is None:
            first = cfg.checkpoint_every
            return f"no checkpoint of this run was written yet (the first is at step {first})"
        return f"{last} keeps the last finite weights (step {saved_step})"

    # Loss parts stay on the device and are fetched every `log_every` steps: one sync per
    # batch of steps instead of one per step (a GPU would otherwise wait on every .item()).
    pending: list[torch.Tensor] = []
    part_names: list[str] = []

    def flush() -> None:
        if not pending:
            return
        rows = _gather_losses(pending, world)
        pending.clear()
        _record_losses(history, part_names, rows, step, cfg.name, kept())
        bar.set_postfix(loss=f"{rows[-1][0]:.4f}")

    def run_validation() -> None:
        nonlocal best
        # The plain model, not the DDP wrapper: its forward is for training steps.
        v_loss, v_psnr = validate(scored, loss_fn, val_loader, device, across_ranks=world > 1)
        epoch = step / steps_per_epoch
        line = _record_validation(history, step, epoch, v_loss, v_psnr, cfg.name, kept())
        if main:
            bar.write(line)
        if v_psnr > best:
            best = v_psnr
            checkpoint(run_dir / "best.pt")
        # The verdict is on the run as it stands: an alert stays only while it holds.
        problem = learning_problem(history)
        if problem is None and history["alerts"]:
            _clear_alerts(history, step, cfg.name, bar if main else None)
        elif problem and not history["alerts"]:
            if len(phase_validations(history)[1]) >= STUCK_AFTER_VALIDATIONS or finished:
                _alert(history, step, cfg.name, problem, bar if main else None)
        if on_validation is not None and main:
            on_validation(history)

    spent = history["train_seconds"]  # wall-clock seconds of earlier (resumed) sessions
    history["interrupted"] = False
    bar = tqdm(total=cfg.steps, initial=step, desc=cfg.name, disable=not (progress and main))
    t0, samples, stop, finished, elapsed = time.perf_counter(), 0, False, False, spent
    # The bar closed first, whatever stops the run: an error line then starts a line of its own.
    with _stop_on_interrupt() as interrupted, closing(bar):
        while not stop:
            # Order from (seed, epoch), crops from (seed, epoch, index): a resumed run continues
            # with exactly the batches an uninterrupted one would have seen, with any number
            # of processes (`start` counts global samples).
            epoch, offset = divmod(step, steps_per_epoch)
            loader = make_loader(
                train_set,
                cfg.batch_size,
                shuffle=True,
                workers=cfg.workers,
                seed=cfg.seed,
                drop_last=True,
                epoch=epoch,
                start=offset * cfg.batch_size,
                rank=rank,
                world_size=world,
            )
            for lq, gt in loader:
                # The LR's time progress: the clock once this step's batch is loaded; under DDP
                # the slowest clock the processes agreed on after the last step (below), so
                # that all take the same LR without waiting for each other once more.
                if world == 1:
                    elapsed = spent + time.perf_counter() - t0
                progress_ = max(step / cfg.steps, elapsed / budget if budget else 0.0)
                for group in opt.param_groups:
                    group["lr"] = lr_at(progress_, step, cfg)
                lq, gt = to_device(lq, device), to_device(gt, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    sr = net(lq)  # (B, 3, H, W)
                loss, parts = loss_fn(sr.float(), gt)
                if gan is not None:
                    loss, parts = gan.generator_loss(sr, loss, parts)
                opt.zero_grad(set_to_none=True)
                loss.backward()  # under DDP this also averages the gradients over processes
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                if gan is not None:  # on this step's sr, as the generator made it
                    parts = {**parts, **gan.discriminator_step(sr, gt)}
                if ema is not None:
                    ema.update(model)
                step += 1
                samples += len(lq) * world

                history["step"].append(step)
                history["lr"].append(opt.param_groups[0]["lr"])
                part_names = part_names or ["total", *parts]
                pending.append(torch.stack([loss.detach(), *parts.values()]))
                bar.update(1)

                # Every process must stop at the same step (the others would wait forever for
                # its gradients): one interrupt stops all, and all go by the slowest clock.
                now = spent + time.perf_counter() - t0
                stop_asked, elapsed = _agree(interrupted[0], now, world)
                finished = step >= cfg.steps or (budget is not None and elapsed >= budget)
                stop = finished or stop_asked
                validating = val_loader is not None and (step % cfg.val_every == 0 or finished)
                checkpointing = step % cfg.checkpoint_every == 0 and not stop  # stop: below
                if len(pending) >= cfg.log_every or validating or checkpointing or stop:
                    flush()  # before any checkpoint: a non-finite loss never reaches one
                if validating:
                    run_validation()
                if checkpointing:
                    history["train_seconds"] = spent + time.perf_counter() - t0
                    checkpoint(last)
                if stop:
                    break
    seconds = time.perf_counter() - t0
    history["train_seconds"] = spent + seconds
    history["samples_per_s"] = samples / max(seconds, 1e-9)
    history["threads"] = torch.get_num_threads() if device.type == "cpu" else None
    history["interrupted"] = not finished
    history["finished"] = finished
    checkpoint(last)
    if world > 1:
        dist.barrier(group=_control_group())  # fit returns everywhere once last.pt is written
    if ema is not None:
        ema.copy_to(model)  # the caller gets the averaged weights, as validation and best.pt
    if not finished and main:
        print(
            f"{cfg.name}: interrupted at step {step}/{cfg.steps}; checkpoint {last} written, "
            "history kept. Run fit again to resume."
        )
    return history
