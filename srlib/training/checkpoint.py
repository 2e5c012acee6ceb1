"""Checkpoints: written atomically, read without pickle, and how `fit` resumes from them.

A checkpoint is a plain dict (model and optimizer state_dicts, the model's constructor config,
the training config, step, history) written atomically and read back with
`torch.load(weights_only=True)`, so loading one never executes pickled code.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from srlib.data import some
from srlib.io import atomic_write
from srlib.models import Upscaler, upgrade_model_config
from srlib.registry import build_model, check_model_config
from srlib.training.config import TrainConfig, run_definition, upgrade_config
from srlib.training.distributed import broadcast
from srlib.training.history import History

if TYPE_CHECKING:
    from srlib.training.ema import Ema
    from srlib.training.gan import GanTrainer


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


def checkpoint_to_resume(last: Path, resume: bool, rank: int, world: int) -> dict | None:
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
            broadcast(box)
            raise
    # Pickled between the job's own processes; rank 0 read it with weights_only=True.
    broadcast(box)
    if isinstance(box[0], str):
        raise RuntimeError(box[0])
    return box[0]


def check_run_folder(run_dir: Path, rank: int, world: int) -> None:
    """check_writable on rank 0 (the one that writes), and RunWriteError in every process."""
    box = [None]
    if rank == 0:
        try:
            check_writable(run_dir)
        except RunWriteError as e:
            box[0] = str(e)
    if world > 1:  # the others would wait for rank 0 in the next collective forever
        broadcast(box)
    if box[0]:
        raise RunWriteError(box[0])


def restore_run(
    ckpt: dict,
    model: Upscaler,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    last: Path,
    gan: GanTrainer | None = None,
    ema: Ema | None = None,
    data: dict | None = None,
    new_phase: bool = False,
) -> tuple[int, History, str | None]:
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
    # With an EMA, "model" holds the averaged weights (`save_run`), "raw_model" the trained ones.
    model.load_state_dict(ckpt["model"] if ema is None else ckpt["raw_model"])
    if ema is not None:
        ema.model.load_state_dict(ckpt["model"])
    if gan is not None:
        gan.load_state_dict(ckpt["gan"])
    opt.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["torch_rng"])
    history = History.from_dict(ckpt["history"])
    if change:  # a new phase: validation scores from here on are on other photos
        history.new_phase(ckpt["step"], change)
    return ckpt["step"], history, change


def save_run(
    path: Path,
    model: Upscaler,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    history: History,
    gan: GanTrainer | None = None,
    ema: Ema | None = None,
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
        history=history.to_dict(),
        torch_rng=torch.get_rng_state(),
        **extra,
    )


def warm_start(model: Upscaler, path: str) -> None:
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
