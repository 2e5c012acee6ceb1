"""Training: a typed config, presets, `fit()`, and safe checkpoints.

A checkpoint is a plain dict (model and optimizer state_dicts, the model's constructor config,
the training config, step, history) written atomically and read back with
`torch.load(weights_only=True)`, so loading one never executes pickled code.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from srlib.models import Upscaler, build_model


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in every checkpoint."""

    name: str = "run"  # checkpoints go to out_dir/name/
    scale: int = 2
    patch_size: int = 96  # gt crop side after rescaling; lq is patch_size // scale
    min_crop: int = 64  # smallest random crop side taken from a photo before rescaling
    crops_per_image: int = 64  # dataset length = images * crops_per_image ("one epoch")
    downscale: str = "bicubic"  # how lq is made from gt: "bilinear" (seed) or "bicubic"
    loss: str = "l1"  # "l1", "l2" or "perceptual"
    batch_size: int = 8  # at a fixed time budget 8 beat 4 and 16 (more steps; ablate.py)
    steps: int = 1000  # optimiser steps in total
    time_budget_s: float | None = None  # also stop (and anneal the LR) by wall-clock time
    lr: float = 2e-3  # peak; 1e-3 and 4e-3 were 0.1-0.6 dB worse (benchmarks/ablate.py, README)
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    val_every: int = 200  # validate every N steps and at the end
    checkpoint_every: int = 200
    workers: int = 0  # DataLoader worker processes
    seed: int = 0
    device: str = "auto"  # "auto" picks cuda, then mps, then cpu
    amp: bool = True  # bf16 autocast, used on CUDA only
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
    # CPU, 2 cores: each notebook (two trainings, evaluation, plots) in about 10 minutes.
    "quick": dict(
        patch_size=96,
        min_crop=48,
        crops_per_image=64,
        batch_size=8,
        steps=3000,  # an upper bound: the time budget ends (and anneals) the run
        warmup_steps=50,
        val_every=300,
        checkpoint_every=300,
        time_budget_s=200.0,
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


def preset(preset_name: str, /, **overrides) -> TrainConfig:
    """A TrainConfig from a named preset ('smoke', 'quick', 'full') plus explicit overrides."""
    if preset_name not in PRESETS:
        raise ValueError(f"unknown preset {preset_name!r}; choose from {sorted(PRESETS)}")
    return TrainConfig(**{**PRESETS[preset_name], **overrides})


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else is passed to torch."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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


def save_checkpoint(path: str | os.PathLike, **state) -> None:
    """torch.save a dict atomically: write a temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)  # a crash leaves the old checkpoint or the new one, never half
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> dict:
    """Read a checkpoint with `weights_only=True` (no arbitrary code runs)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[Upscaler, dict]:
    """Rebuild the model stored in a checkpoint; returns (model in eval mode, checkpoint)."""
    ckpt = load_checkpoint(path, map_location=device)
    model = build_model(ckpt["model_config"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


# ----------------------------------------------------------------------------------------------
# The loop


def _new_history() -> dict:
    return {
        "step": [],
        "lr": [],
        "train": {},
        "val": {"step": [], "epoch": [], "loss": [], "psnr": []},
        "samples_per_s": None,
        "train_seconds": 0.0,
    }


@torch.no_grad()
def validate(
    model: nn.Module, loss_fn: nn.Module, loader: DataLoader, device: torch.device
) -> tuple[float, float]:
    """Mean loss and mean RGB PSNR (dB) of `model` over a validation loader."""
    model.eval()
    losses, psnrs = [], []
    for lq, gt in loader:
        lq, gt = to_device(lq, device), to_device(gt, device)
        sr = model(lq)
        losses.append(loss_fn(sr, gt)[0].item() * len(lq))
        psnrs.append(psnr(sr, gt).sum().item())
    model.train()
    n = len(loader.dataset)
    return sum(losses) / n, sum(psnrs) / n


def fit(
    model: Upscaler,
    loss_fn: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: TrainConfig,
    resume: bool = True,
    progress: bool = True,
) -> dict:
    """Train `model` in place and return its history; resumes from out_dir/name/last.pt.

    History: per-step 'lr' and 'train' parts (incl. 'total'), per-validation 'val' loss and
    PSNR, samples/s. Checkpoints: 'last.pt' every `checkpoint_every` steps and at the end,
    'best.pt' at the best validation PSNR.
    """
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    # channels_last: oneDNN's fast convolution layout on CPU (2-6x here), also good on GPUs.
    model.to(device, memory_format=torch.channels_last).train()
    loss_fn.to(device, memory_format=torch.channels_last)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    run_dir = Path(cfg.out_dir) / cfg.name
    step, history, best = 0, _new_history(), -math.inf

    last = run_dir / "last.pt"
    if resume and last.exists():
        ckpt = load_checkpoint(last, map_location=str(device))
        if ckpt["config"] != dataclasses.asdict(cfg) or ckpt["model_config"] != model.config:
            raise ValueError(
                f"{last} was written by a different run (config or model differs). Resuming "
                "would mix two experiments: give this run another `name`, delete that folder, "
                "or pass resume=False to start over (the old checkpoint is then overwritten)."
            )
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, history = ckpt["step"], ckpt["history"]
        best = max(history["val"]["psnr"], default=-math.inf)
        torch.set_rng_state(ckpt["torch_rng"])
        print(f"resumed {cfg.name} from {last} at step {step}/{cfg.steps}")
    budget = cfg.time_budget_s
    if step >= cfg.steps or (budget is not None and history["train_seconds"] >= budget):
        return history  # already finished: the model now holds its final weights

    use_amp = cfg.amp and device.type == "cuda"
    val_loader = None
    if val_set is not None and len(val_set) > 0:
        val_loader = DataLoader(val_set, batch_size=cfg.batch_size, num_workers=cfg.workers)

    def checkpoint(path: Path) -> None:
        save_checkpoint(
            path,
            model=model.state_dict(),
            model_config=model.config,
            optimizer=opt.state_dict(),
            config=dataclasses.asdict(cfg),
            step=step,
            history=history,
            torch_rng=torch.get_rng_state(),
        )

    if len(train_set) < cfg.batch_size:
        raise ValueError(
            f"{len(train_set)} training samples are fewer than one batch "
            f"({cfg.batch_size}): add images or raise crops_per_image"
        )
    steps_per_epoch = len(train_set) // cfg.batch_size

    def run_validation() -> None:
        nonlocal best
        v_loss, v_psnr = validate(model, loss_fn, val_loader, device)
        for key, value in (
            ("step", step),
            ("epoch", step / steps_per_epoch),
            ("loss", v_loss),
            ("psnr", v_psnr),
        ):
            history["val"][key].append(value)
        bar.write(f"{cfg.name} step {step}: val loss {v_loss:.4f}, val PSNR {v_psnr:.2f} dB")
        if v_psnr > best:
            best = v_psnr
            checkpoint(run_dir / "best.pt")

    spent = history["train_seconds"]  # wall-clock seconds of earlier (resumed) sessions
    bar = tqdm(total=cfg.steps, initial=step, desc=cfg.name, disable=not progress)
    t0, samples, stop = time.perf_counter(), 0, False
    while not stop:
        # Each epoch's order comes from (seed, epoch), so a resumed run continues where it was.
        epoch, offset = divmod(step, steps_per_epoch)
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        order = torch.randperm(len(train_set), generator=gen)[offset * cfg.batch_size :]
        loader = DataLoader(
            Subset(train_set, order.tolist()),
            batch_size=cfg.batch_size,
            drop_last=True,
            num_workers=cfg.workers,
        )
        for lq, gt in loader:
            elapsed = spent + time.perf_counter() - t0
            progress_ = max(step / cfg.steps, elapsed / budget if budget else 0.0)
            for group in opt.param_groups:
                group["lr"] = lr_at(progress_, step, cfg)
            lq, gt = to_device(lq, device), to_device(gt, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                sr = model(lq)  # (B, 3, H, W)
            loss, parts = loss_fn(sr.float(), gt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            step += 1
            samples += len(lq)

            history["step"].append(step)
            history["lr"].append(opt.param_groups[0]["lr"])
            for k, v in {"total": loss.detach(), **parts}.items():
                history["train"].setdefault(k, []).append(float(v))
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")

            out_of_time = budget is not None and spent + time.perf_counter() - t0 >= budget
            stop = step >= cfg.steps or out_of_time
            if val_loader is not None and (step % cfg.val_every == 0 or stop):
                run_validation()
            if step % cfg.checkpoint_every == 0 or stop:
                history["train_seconds"] = spent + time.perf_counter() - t0
                checkpoint(last)
            if stop:
                break
    bar.close()
    elapsed = time.perf_counter() - t0
    history["train_seconds"] = spent + elapsed
    history["samples_per_s"] = samples / max(elapsed, 1e-9)
    checkpoint(last)
    return history
