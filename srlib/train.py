"""Moved to srlib.training (issue 26); this module keeps the old names working for one release.

TrainConfig, presets and checks: srlib.training.config; devices, seeds, the LR schedule:
.runtime; torchrun's processes: .distributed; checkpoints: .checkpoint; the history and the
NOT LEARNING verdict: .history; `fit`, `validate`, `base_psnr`: .loop.
"""

from srlib.training.checkpoint import (
    RunWriteError,
    check_writable,
    data_change,
    load_checkpoint,
    load_model,
    nonfinite_tensors,
    restore_best,
    run_or_shipped,
    save_checkpoint,
)
from srlib.training.config import (
    ADDED_FIELDS,
    DEEP_UNET,
    GAN_KINDS,
    LOCATION_FIELDS,
    PRESET_MODEL_ARGS,
    PRESETS,
    RUNTIME_FIELDS,
    TrainConfig,
    check_config,
    default_preset,
    loss_for,
    model_args,
    preset,
    run_definition,
    upgrade_config,
)
from srlib.training.distributed import distributed_setup, is_main_process
from srlib.training.history import (
    MIN_GAIN_DB,
    STUCK_AFTER_VALIDATIONS,
    NotLearningWarning,
    learning_problem,
    phase_validations,
)
from srlib.training.loop import STOP_SIGNALS, base_psnr, fit, validate
from srlib.training.runtime import (
    cpu_has_bf16,
    lr_at,
    pick_device,
    psnr,
    seed_everything,
    to_device,
    use_autocast,
)

__all__ = [
    "ADDED_FIELDS",
    "DEEP_UNET",
    "GAN_KINDS",
    "LOCATION_FIELDS",
    "MIN_GAIN_DB",
    "PRESETS",
    "PRESET_MODEL_ARGS",
    "RUNTIME_FIELDS",
    "STOP_SIGNALS",
    "STUCK_AFTER_VALIDATIONS",
    "NotLearningWarning",
    "RunWriteError",
    "TrainConfig",
    "base_psnr",
    "check_config",
    "check_writable",
    "cpu_has_bf16",
    "data_change",
    "default_preset",
    "distributed_setup",
    "fit",
    "is_main_process",
    "learning_problem",
    "load_checkpoint",
    "load_model",
    "loss_for",
    "lr_at",
    "model_args",
    "nonfinite_tensors",
    "phase_validations",
    "pick_device",
    "preset",
    "psnr",
    "restore_best",
    "run_definition",
    "run_or_shipped",
    "save_checkpoint",
    "seed_everything",
    "to_device",
    "upgrade_config",
    "use_autocast",
    "validate",
]
