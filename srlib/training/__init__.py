"""Training: a typed config, presets, `fit()`, and safe checkpoints.

config (TrainConfig, presets), runtime (device, seeds, LR schedule), distributed (torchrun's
processes), checkpoint (safe checkpoints, resuming), history (History, the NOT LEARNING
verdict), gan and ema (adversarial training, an average of the weights) and loop (`fit`).

Several GPUs: `torchrun --nproc_per_node N -m srlib train ...` runs one process per GPU;
`distributed_setup()` joins them and `fit` trains with DistributedDataParallel (see `fit`).

The names below load lazily (PEP 562), so that a module importing one part (srlib.export
imports `history`, srlib.infer `checkpoint`) does not import the loop and everything it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module of srlib.training that defines it.
_LAZY = {
    "TrainConfig": "config",
    "PRESETS": "config",
    "preset": "config",
    "default_preset": "config",
    "model_args": "config",
    "loss_for": "config",
    "check_config": "config",
    "fit": "loop",
    "validate": "loop",
    "load_model": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "restore_best": "checkpoint",
    "run_or_shipped": "checkpoint",
    "seed_everything": "runtime",
    "pick_device": "runtime",
    "History": "history",
    "NotLearningWarning": "history",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
