"""Moved to srlib.cli.train (issue 26); this module keeps the old names working for one release.

`cmd_train` is srlib.cli.train.run and `add_train_parser` srlib.cli.train.add_parser; the
--model names are srlib.registry.MODELS, the flags' choices TrainConfig's field metadata.
"""

import dataclasses

from srlib.cli.train import (
    EVENT_FILE,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_NOT_LEARNING,
    EXIT_WRITE_FAILED,
    RUN_FILES,
    RUN_LOCK,
    RUN_MANIFEST,
    STALE_TEMP,
    TRAIN_EPILOG,
    VAL_CROPS_PER_IMAGE,
    RunLog,
    check_device,
    check_resume,
    config_flags,
    data_record,
    read_manifest,
    train_config,
    train_sources,
    train_summary,
    write_manifest,
)
from srlib.cli.train import add_parser as add_train_parser
from srlib.cli.train import run as cmd_train
from srlib.registry import MODELS
from srlib.training.config import TrainConfig

# --model -> the class's name, as this module had it.
TRAIN_MODELS = {name: cls.__name__ for name, cls in MODELS.items()}
# TrainConfig text fields that take one of a few values.
_FIELDS = dataclasses.fields(TrainConfig)
TRAIN_CHOICES = {f.name: f.metadata["choices"] for f in _FIELDS if "choices" in f.metadata}

__all__ = [
    "EVENT_FILE",
    "EXIT_DIVERGED",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_LEARNING",
    "EXIT_WRITE_FAILED",
    "RUN_FILES",
    "RUN_LOCK",
    "RUN_MANIFEST",
    "STALE_TEMP",
    "TRAIN_CHOICES",
    "TRAIN_EPILOG",
    "TRAIN_MODELS",
    "VAL_CROPS_PER_IMAGE",
    "RunLog",
    "add_train_parser",
    "check_device",
    "check_resume",
    "cmd_train",
    "config_flags",
    "data_record",
    "read_manifest",
    "train_config",
    "train_sources",
    "train_summary",
    "write_manifest",
]
