"""srlib: small, readable single-image super-resolution in PyTorch.

The names below are the library's front door, e.g. `srlib.fit` or `from srlib import
UNetUpscaler`. They load lazily (PEP 562): `import srlib` itself imports neither torch nor any
srlib module, so the command line starts fast; the first use of a name imports its module.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the srlib module that defines it.
_LAZY = {
    # models: the registry names every architecture (srlib.registry)
    "UNetUpscaler": "models",
    "ResNetUNetUpscaler": "models",
    "Compact": "community",
    "SPAN": "community",
    "MODELS": "registry",
    "build_model": "registry",
    # data and losses
    "SRDataset": "data",
    "make_loader": "data",
    "embedded_photos": "data",
    "make_loss": "losses",
    # training
    "TrainConfig": "training",
    "preset": "training",
    "fit": "training",
    "load_model": "training",
    "History": "training",
    # inference, images, evaluation
    "upscale": "infer",
    "open_image": "io",
    "save_image": "io",
    "evaluate": "metrics",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"srlib.{_LAZY[name]}"), name)
        globals()[name] = value  # once: later lookups are plain attribute reads
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
