"""`srlib info`: what a checkpoint holds (architecture, scale, parameters, config, metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path

from srlib.cli.errors import CliError, one_line


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `info` subcommand."""
    info = sub.add_parser("info", help="describe a checkpoint")
    info.add_argument("checkpoint")
    info.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print what a checkpoint holds: architecture, scale, parameters, config, metrics."""
    from srlib.registry import build_model, check_model_config
    from srlib.training.checkpoint import load_checkpoint, nonfinite_tensors
    from srlib.training.history import History

    path = Path(args.checkpoint)
    if not path.is_file():
        raise CliError(f"checkpoint not found: {path}")
    try:
        ckpt = load_checkpoint(path)
        model = build_model(check_model_config(ckpt.get("model_config"), ckpt.get("model")))
        model.load_state_dict(ckpt["model"])
    except Exception as e:  # truncated, not a torch file, not an srlib checkpoint
        raise CliError(
            f"cannot read checkpoint {path} (corrupt, truncated or not an srlib checkpoint): "
            f"{one_line(e)}"
        ) from e
    bad = nonfinite_tensors(ckpt["model"])
    if bad:
        print(f"WARNING: {len(bad)} weight tensors hold NaN/inf (a diverged run): {bad[:3]}")
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in ckpt["model"].values()})
    cfg = ckpt["model_config"]
    print(f"checkpoint:   {path} ({path.stat().st_size / 1e6:.2f} MB, tensors {', '.join(dtypes)})")
    print(f"architecture: {cfg['arch']}")
    print(f"scale:        x{model.scale} (stride {model.stride})")
    print(f"base upscale: {model.base_label}")  # torch's kernel, not MATLAB's (srlib.resize)
    print(f"parameters:   {model.num_params(True):,} trainable, {model.num_params(False):,} total")
    print(f"model config: {_fmt(cfg)}")
    print(f"step:         {ckpt.get('step')}")
    if ckpt.get("config"):
        print(f"train config: {_fmt(ckpt['config'])}")
    history = History.from_dict(ckpt.get("history") or {})
    psnrs = history.val.psnr
    if psnrs:
        best = max(range(len(psnrs)), key=psnrs.__getitem__)
        print(
            f"validation:   best PSNR {psnrs[best]:.2f} dB at step {history.val.step[best]}, "
            f"last {psnrs[-1]:.2f} dB"
        )
    if history.train_seconds:
        print(f"train time:   {history.train_seconds:.0f} s")
    for k, v in (ckpt.get("metrics") or {}).items():
        print(f"metric:       {k} = {v}")
    if "optimizer" in ckpt:
        print("note:         training checkpoint (has optimizer state); `export` makes it small")
    return 0


def _fmt(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())
