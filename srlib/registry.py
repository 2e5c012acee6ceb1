"""The model registry: every architecture srlib builds, trains and loads, in one mapping.

`MODELS` maps the short names (the CLI's `--model`, benchmarks' model specs, preset model
arguments) to the classes; a checkpoint's `model_config` names its class ("arch"), and
`build_model` rebuilds it from there. srlib.models and srlib.community define the classes and
do not import this module.
"""

from __future__ import annotations

import ast
import inspect
import reprlib
from typing import Any

import torch
from torch import nn

from srlib.community import SPAN, Compact
from srlib.models import ResNetUNetUpscaler, UNetUpscaler, Upscaler, upgrade_model_config

# Short name -> class. UNetUpscaler and ResNetUNetUpscaler are srlib's own; Compact
# (Real-ESRGAN's SRVGGNetCompact) and SPAN are the community's, in srlib's interface.
MODELS: dict[str, type[nn.Module]] = {
    "unet": UNetUpscaler,
    "resnet": ResNetUNetUpscaler,
    "compact": Compact,
    "span": SPAN,
}
# A stored model_config's "arch" (the class name) -> class.
ARCHS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in MODELS.values()}
# Arguments build_model adds: a checkpoint's weights come from its state dict, so the ResNet
# encoder is built without ImageNet weights (no download).
BUILD_ARGS: dict[str, dict[str, Any]] = {"ResNetUNetUpscaler": {"pretrained": False}}


def build_model(config: dict) -> Upscaler:
    """Rebuild a model from its `config` dict (as stored in checkpoints), without downloads.

    Also Compact and SPAN (srlib.community): not Upscalers, but with the same interface.
    """
    kwargs = upgrade_model_config(config)
    arch = kwargs.pop("arch")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}")
    return ARCHS[arch](**kwargs, **BUILD_ARGS.get(arch, {}))


def check_model_config(config: dict, state: dict[str, torch.Tensor]) -> dict:
    """Refuse (ValueError) a stored model config its weights do not fit; the config, upgraded.

    A checkpoint's `model_config` decides how big a model `build_model` makes, whatever the
    file's size: refine_blocks=20000 in a 1.4 kB file took 16 s and 2.2 GB to refuse. So,
    before anything real is built: every tensor must hold the bytes its shape claims, no count
    or width in the config may exceed what the weights could describe (the number of tensors,
    their largest dimension), and the model built on the meta device (no memory, no compute)
    must have exactly the weights' names and shapes.
    """
    if not isinstance(config, dict) or not isinstance(state, dict) or not state:
        raise ValueError("not an srlib checkpoint: model_config and model must be dicts")
    for name, t in state.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"weight {name!r} is a {type(t).__name__}, not a tensor")
        # A stride-0 view saves one element and claims any shape: not a real weight.
        if t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise ValueError(
                f"weight {name} claims shape {tuple(t.shape)} but the file holds only "
                f"{t.untyped_storage().nbytes()} bytes for it"
            )
    config = upgrade_model_config(config)
    widest = max(d for t in state.values() for d in (*t.shape, 0))
    limit = max(len(state), widest)  # channels show up as dimensions, blocks as tensors
    for key, value in config.items():
        values = value if isinstance(value, list | tuple) else [value]
        sizes = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if len(values) > limit or any(v > limit for v in sizes):
            raise ValueError(
                f"model_config {key}={reprlib.repr(value)} is more than its {len(state)} weight "
                f"tensors (largest dimension {widest}) can hold: a corrupt or crafted checkpoint"
            )
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build_model(config).state_dict().items()}
    except TypeError as e:  # an argument the architecture does not take
        raise ValueError(f"model_config {config} does not build a model: {e}") from e
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    if missing or unexpected or reshaped:
        problems = [
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(reshaped)} of another shape (e.g. {reshaped[0]}: "
            f"{expected[reshaped[0]]} by the config, {tuple(state[reshaped[0]].shape)} stored)"
            if reshaped
            else "",
        ]
        raise ValueError(
            "model_config does not match the weights: " + ", ".join(p for p in problems if p)
        )
    return config


def parse_model_spec(
    spec: str, models: dict[str, type[nn.Module]] | None = None
) -> tuple[str, dict[str, Any]]:
    """'unet' or 'unet(refine_blocks=4, encoder_channels=(24, 32, 64))' -> (name, arguments).

    The arguments are Python literals, read with `ast.literal_eval` (no code runs); the name
    must be a key of `models` (default MODELS). For benchmarks: a model variant in one word.
    """
    models = MODELS if models is None else models
    try:
        node = ast.parse(spec.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"model spec {spec!r}: not NAME or NAME(arg=value, ...)") from e
    call = node if isinstance(node, ast.Call) else None
    name_node = call.func if call else node
    if not isinstance(name_node, ast.Name) or (call and call.args):
        raise ValueError(f"model spec {spec!r}: not NAME or NAME(arg=value, ...)")
    name = name_node.id
    if name not in models:
        raise ValueError(f"model spec {spec!r}: unknown model {name!r}; known: {', '.join(models)}")
    keywords = call.keywords if call else []
    try:
        kwargs = {str(kw.arg): ast.literal_eval(kw.value) for kw in keywords}
    except ValueError as e:
        raise ValueError(f"model spec {spec!r}: arguments must be literals") from e
    unknown = set(kwargs) - set(inspect.signature(models[name].__init__).parameters)
    if unknown:
        raise ValueError(f"model spec {spec!r}: {models[name].__name__} has no {sorted(unknown)}")
    return name, kwargs
