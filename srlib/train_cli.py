"""`python -m srlib train`: train an upscaler on a folder of photos from the command line.

Its flags are made from srlib.train.TrainConfig (one per field, on top of a preset); a rerun
resumes from OUT/last.pt; exit codes in TRAIN_EPILOG. `python -m srlib` (srlib/__main__.py)
imports this module only to build its parser and to run the command.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlib.__main__ import CliError, _one_line

if TYPE_CHECKING:
    from srlib.train import TrainConfig


# --model -> the class's name in srlib.models, or in srlib.community (Compact, SPAN)
TRAIN_MODELS = {
    "unet": "UNetUpscaler",
    "resnet": "ResNetUNetUpscaler",
    "compact": "Compact",
    "span": "SPAN",
}
# TrainConfig text fields that take one of a few values (the others take any text).
TRAIN_CHOICES = {
    "loss": ("l1", "l2", "perceptual"),
    "downscale": ("bilinear", "bicubic"),
    "degradation": ("clean", "realistic", "realesrgan"),  # degrade.DEGRADATIONS (no torch import)
    "sharpness_kind": ("gradient", "fft"),  # srlib.losses.SharpnessLoss.KINDS
    "gan": ("none", "unet", "patch"),  # srlib.train.GAN_KINDS
}
VAL_CROPS_PER_IMAGE = 16  # fixed validation crops per validation photo, as in the notebooks
EXIT_NOT_LEARNING, EXIT_INTERRUPTED = 3, 130
TRAIN_EPILOG = """\
examples:
  python -m srlib train --preset smoke --data photos/ --out runs/try
  python -m srlib train --model resnet --loss perceptual --data data/valued --out runs/resnet_p
  python -m srlib train --preset full --steps 40000 --batch-size 32 --out runs/long
  torchrun --nproc-per-node 4 -m srlib train --preset full --out runs/ddp    (several GPUs)

Running the same command again resumes from OUT/last.pt (a finished run just prints its
summary); a different config or model in the same OUT is refused. Ctrl-C stops after the
current step with a checkpoint written. OUT gets last.pt, best.pt (best validation PSNR),
history.json and, when tensorboard is installed, TensorBoard scalars (tensorboard --logdir runs).

Under torchrun rank 0 alone reads and writes OUT: it sends last.pt to the other processes, so
OUT must be on a disk that rank 0 sees (the others need not see it). --device cpu trains on
CPUs over gloo, on a CUDA machine too.

exit codes: 0 done; 1 the loss became NaN/inf (lower --lr); 2 bad option or data, or OUT holds
a different run; 3 done, but the run is NOT LEARNING (validation PSNR not above its base upscale:
the alert in history.json); 130 interrupted (run the command again to resume). torchrun turns
any of them but 0 into 1; under torchrun rank 0 alone prints the summary."""


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) one run on a folder of photos; returns the exit code (TRAIN_EPILOG)."""
    import torch.distributed as dist

    from srlib.train import check_config, distributed_setup

    cfg = train_config(args)
    try:
        check_config(cfg)
    except ValueError as e:  # --batch-size 0, --steps -1, ...: nothing would train
        raise CliError(str(e)) from e
    check_device(cfg.device)
    if not 0 <= args.val_fraction < 1:
        raise CliError(f"--val-fraction must be >= 0 and < 1, got {args.val_fraction:g}")
    joined = dist.is_available() and dist.is_initialized()  # a caller's own group is kept
    # --device cpu under torchrun: gloo, also where CUDA would make NCCL the choice.
    rank, world = distributed_setup("gloo" if cfg.device == "cpu" else None)
    try:
        return _train(args, cfg, rank, world)
    finally:
        if not joined and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def check_device(name: str) -> None:
    """Refuse (CliError) a --device this machine lacks: cuda without CUDA, cuda:7, mps."""
    import torch

    from srlib.train import pick_device

    try:
        device = pick_device(name)  # a RuntimeError for a name torch does not know
        if device.type == "cuda":
            # No test allocation: under torchrun each process would make a context on GPU 0.
            if not torch.cuda.is_available():
                raise RuntimeError("torch finds no CUDA GPU on this machine")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise RuntimeError(f"this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        else:
            torch.empty(1, device=device)  # "mps" without MPS
    except Exception as e:  # RuntimeError, AssertionError (torch not compiled with CUDA), ...
        raise CliError(f"--device {name}: {_one_line(e)}") from e


def _train(args: argparse.Namespace, cfg: TrainConfig, rank: int, world: int) -> int:
    """cmd_train once the processes have joined: data, model, fit, summary; the exit code."""
    import torch.distributed as dist

    from srlib import community, data, models
    from srlib.train import fit, loss_for, seed_everything

    main_process = rank == 0
    run_dir = Path(cfg.out_dir) / cfg.name
    sources, about = train_sources(args.data)
    train_src, val_src = data.split_by_image(sources, args.val_fraction, seed=cfg.seed)
    crop_args = dict(
        size=cfg.patch_size,
        scale=cfg.scale,
        min_crop=cfg.min_crop,
        method=cfg.downscale,
        seed=cfg.seed,
        degradation=cfg.degradation,  # validation too: it scores the inputs the run is made for
    )
    try:
        train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop_args)
        val_set = None
        if val_src:
            val_set = data.SRDataset(
                val_src, crops_per_image=VAL_CROPS_PER_IMAGE, train=False, **crop_args
            )
        seed_everything(cfg.seed)  # the same initial weights for the same config
        name = TRAIN_MODELS[args.model]
        model = getattr(models, name, None) or getattr(community, name)
        model = model(scale=cfg.scale)
        loss_fn = loss_for(cfg)
    except ValueError as e:  # patch size vs scale, no usable image, a scale the models lack
        raise CliError(_one_line(e)) from e
    # Rank 0 alone reads and writes OUT (fit sends last.pt to the others), so it alone checks
    # it, and tells the others: every process exits 2, or none.
    problem = None
    if main_process:
        try:
            if run_dir.exists() and not run_dir.is_dir():
                raise CliError(f"--out {run_dir} is a file; it takes the run folder")
            check_resume(run_dir / "last.pt", dataclasses.asdict(cfg), model.config)
        except CliError as e:
            problem = str(e)
    if world > 1:
        box = [problem]
        dist.broadcast_object_list(box, src=0)
        problem = box[0]
    if problem:
        raise CliError(problem)

    if main_process:
        n_val = "no" if val_set is None else f"{len(val_src)} ({len(val_set)} fixed crops)"
        print(f"data: {about}")
        print(
            f"photos: {len(train_src)} to train on ({len(train_set)} crops per epoch), "
            f"{n_val} to validate on"
        )
        print(
            f"model: {type(model).__name__} x{cfg.scale}, {model.num_params():,} trainable "
            f"parameters; loss {cfg.loss}; preset {args.preset}: {cfg.steps} steps of "
            f"{cfg.batch_size} crops" + (f", split over {world} processes" if world > 1 else "")
        )
        print(f"run folder: {run_dir}")
    log = RunLog(run_dir) if main_process else None
    try:
        history = fit(
            model, loss_fn, train_set, val_set, cfg, progress=main_process, on_validation=log
        )
        if log is not None:
            log(history)  # the final history.json and scalars
    except ValueError as e:  # fewer training crops than one batch
        raise CliError(_one_line(e)) from e
    except FloatingPointError as e:  # a diverged run: last.pt keeps the last finite weights
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: fit stops at once, without a checkpoint
        print(
            f"\ninterrupted twice: stopped at once. Run the same command again to resume from "
            f"{run_dir / 'last.pt'} (written every {cfg.checkpoint_every} steps)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        if log is not None:
            log.close()
    if main_process:
        summary = train_summary(history, cfg, run_dir, model.base_label, val_set is not None)
        print("\n".join(summary))
    if history["interrupted"]:
        return EXIT_INTERRUPTED
    return EXIT_NOT_LEARNING if history["alerts"] else 0


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the preset, then the TrainConfig flags given, then --out."""
    from srlib.train import TrainConfig, preset

    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if hasattr(args, f.name)  # flags have no default (SUPPRESS): only those given are here
    }
    if args.out is not None:
        clash = [f"--{k.replace('_', '-')}" for k in ("name", "out_dir") if k in given]
        if clash:
            raise CliError(f"--out sets the run folder: pass it or {' and '.join(clash)}, not both")
        out = Path(args.out)
        if not out.name or out.name == "..":
            raise CliError(f"--out {args.out}: give the run folder itself, e.g. runs/mine")
        given.update(out_dir=str(out.parent), name=out.name)
    cfg = preset(args.preset, **given)
    if cfg.name in ("", ".", "..") or Path(cfg.name).name != cfg.name:  # "/abs", "../x", "a/b"
        raise CliError(
            f"--name {cfg.name!r}: give the run folder's own name, e.g. mine (--out-dir sets "
            "where it goes; --out runs/mine sets both)"
        )
    return cfg


def train_sources(folder: str | None) -> tuple[list, str]:
    """(sources, what they are) for --data: a Commons folder (images/, cache/) or any folder."""
    from srlib import data

    if folder is None:  # the downloaded Commons photos, else the embedded ones
        return data.default_sources("data/valued")
    root = Path(folder)
    if not root.is_dir():
        raise CliError(f"--data {folder}: no such folder")
    images = root / "images" if (root / "images").is_dir() else root
    if not data.find_images(images):
        raise CliError(
            f"--data {folder}: no images in {images} (looked for "
            f"{', '.join(data.IMAGE_EXTENSIONS)} files in it and its subfolders; a Commons "
            "folder's photos: python -m srlib.commons download LIST, see data/valued/README.md)"
        )
    if images != root:  # a Commons folder: its fast-crop cache too, where it is up to date
        return data.default_sources(root)
    sources = data.folder_sources(root, None)
    return sources, f"{len(sources)} images from {root}"


def check_resume(last: Path, config: dict, model_config: dict) -> None:
    """Refuse (CliError) a run folder whose last.pt has another training config or model.

    fit() refuses it too, with advice for Python callers; this names the differences.
    """
    if not last.is_file():
        return
    from srlib.models import upgrade_model_config
    from srlib.train import load_checkpoint, upgrade_config

    try:
        ckpt = load_checkpoint(last)
    except Exception as e:  # truncated, not a torch file
        raise CliError(f"cannot resume from {last}: {_one_line(e)}; delete it to start over") from e
    diffs = []
    saved = upgrade_config(ckpt.get("config") or {})  # fields added since then: "as before"
    theirs_model = upgrade_model_config(ckpt.get("model_config") or {})
    for theirs, ours in ((saved, config), (theirs_model, model_config)):
        theirs = theirs or {}
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            old, new = theirs.get(key, "(none)"), ours.get(key, "(none)")
            if old != new:
                diffs.append(f"{key} {old} there, {new} here")
    if diffs:
        shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
        raise CliError(
            f"{last} was written by a different run ({shown}): pass another --out, or delete "
            f"{last.parent} to start over"
        )


def train_summary(
    history: dict, cfg: TrainConfig, run_dir: Path, base_label: str, validating: bool
) -> list[str]:
    """The lines printed after training: steps, time, best validation PSNR, files, alerts."""
    steps = history["step"][-1] if history["step"] else 0
    seconds = history["train_seconds"]
    took = f"{seconds:.0f} s" if seconds < 100 else f"{seconds / 60:.1f} min"
    rate = history.get("samples_per_s")
    lines = [
        f"{'interrupted' if history['interrupted'] else 'done'}: {steps} of {cfg.steps} steps in "
        f"{took}" + (f" ({rate:.1f} samples/s)" if rate else "")
    ]
    val = history["val"]
    if val["psnr"]:
        i = max(range(len(val["psnr"])), key=val["psnr"].__getitem__)
        base = val["base_psnr"]
        gain = "" if base is None else f", {val['psnr'][i] - base:+.2f} dB over {base_label}"
        best = f"best validation PSNR: {val['psnr'][i]:.2f} dB at step {val['step'][i]}"
        lines.append(best + gain)
        lines.append(f"best weights: {run_dir / 'best.pt'}")
    elif validating:
        lines.append(f"no validation yet (the first is at step {cfg.val_every}): no best.pt")
    else:
        lines.append("no validation photos (--val-fraction 0, or a single photo): no best.pt")
    lines.append(f"last checkpoint: {run_dir / 'last.pt'}, history: {run_dir / 'history.json'}")
    lines += [f"ALERT: {a['message']}" for a in history["alerts"]]
    if history["interrupted"]:
        lines.append("to resume, run the same command again")
    return lines


class RunLog:
    """fit's on_validation: writes history.json (atomically) and, if installed, TensorBoard scalars.

    The first call of a session rewrites every scalar (a resumed run's earlier steps too) into a
    new event file and deletes the older event files of the folder, so TensorBoard shows each
    step once however often the run was resumed. (TensorBoard's own purge_step compares wall
    times, and two sessions within a clock tick kept both copies.)
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.writer = None
        self.train_done = self.val_done = 0  # scalars written by this session
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # torch raises it when the tensorboard package is missing
            print("info: no TensorBoard scalars: tensorboard is not installed (pip install it)")
            SummaryWriter = None
        self.summary_writer = SummaryWriter

    def __call__(self, history: dict) -> None:
        from srlib.io import atomic_write

        with atomic_write(self.run_dir / "history.json", "w", encoding="utf-8") as f:
            json.dump(history, f)
        if self.summary_writer is None:
            return
        if self.writer is None:
            for old in self.run_dir.glob("events.out.tfevents.*"):  # all rewritten below
                old.unlink()
            self.writer = self.summary_writer(str(self.run_dir), purge_step=0)
        w, steps, train, val = self.writer, history["step"], history["train"], history["val"]
        done = len(train.get("total", ()))  # loss parts are fetched from the device in batches
        for i in range(self.train_done, done):
            for part, values in train.items():
                w.add_scalar(f"train/{part}", values[i], steps[i])
            w.add_scalar("lr", history["lr"][i], steps[i])
        base = val["base_psnr"]
        for i in range(self.val_done, len(val["psnr"])):
            w.add_scalar("val/psnr", val["psnr"][i], val["step"][i])
            w.add_scalar("val/loss", val["loss"][i], val["step"][i])
            if base is not None:
                w.add_scalar("val/gain_db", val["psnr"][i] - base, val["step"][i])
        self.train_done, self.val_done = done, len(val["psnr"])
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    """The `train` subcommand: its own flags, then one flag per TrainConfig field."""
    from srlib.train import PRESETS, TrainConfig

    train = sub.add_parser(
        "train",
        help="train an upscaler on a folder of photos (resumes automatically)",
        description="Train an upscaler on a folder of photos; a rerun resumes from OUT/last.pt.",
        epilog=TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,  # a mistyped flag is an error, not a guess
    )
    train.add_argument(
        "--preset",
        choices=list(PRESETS),
        default="quick",
        help="starting config (srlib.train.PRESETS): smoke seconds, quick a 2-core CPU in "
        "minutes, full a GPU; the flags below override it (default %(default)s)",
    )
    train.add_argument(
        "--model",
        choices=list(TRAIN_MODELS),
        default="unet",
        help="unet: UNetUpscaler; resnet: ResNetUNetUpscaler, frozen ImageNet ResNet18 encoder; "
        "compact: SRVGGNetCompact (Real-ESRGAN's small model); span: SPAN; compact and span "
        "export to what chaiNNer, ComfyUI and upscayl open (see export) (default %(default)s)",
    )
    train.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help="photos: any image folder (searched recursively), or a Commons folder like "
        "data/valued with images/ and maybe cache/ (default: data/valued, else the embedded "
        "photos)",
    )
    train.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="the run folder, e.g. runs/mine: sets --out-dir and --name (default runs/run)",
    )
    train.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        metavar="F",
        help="share of the photos (whole photos, at least one) kept to validate and pick "
        "best.pt; 0: none (default %(default)s)",
    )
    group = train.add_argument_group(
        "training config", "srlib.train.TrainConfig, one flag per field; a flag beats the preset"
    )
    for name, kwargs in config_flags(TrainConfig, PRESETS).items():
        group.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    train.set_defaults(func=cmd_train)


def config_flags(cls: type, presets: dict[str, dict]) -> dict[str, dict]:
    """{field: add_argument keywords} for every field of a config dataclass, from its types.

    bool -> --x/--no-x; int, float, str; `T | None` also takes "none". Flags have no default
    (SUPPRESS), so the parsed arguments hold only the flags given. Help: the field's comment,
    its default and the presets' values.
    """
    hints = typing.get_type_hints(cls)
    comments = _field_comments(cls)
    flags = {}
    for f in dataclasses.fields(cls):
        kind, members = hints[f.name], typing.get_args(hints[f.name])
        optional = type(None) in members
        if optional:
            others = [m for m in members if m is not type(None)]
            kind = others[0] if len(others) == 1 else kind
        by_preset = [f"{p} {v[f.name]}" for p, v in presets.items() if f.name in v]
        default = f"default {_flag_value(f.default)}"
        if by_preset:
            default = f"{', '.join(by_preset)}" + (
                f"; else {_flag_value(f.default)}" if len(by_preset) < len(presets) else ""
            )
        text = "; ".join(t for t in (comments.get(f.name), default) if t).replace("%", "%%")
        kwargs: dict = {"default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float, str):
            kwargs["type"] = _or_none(kind) if optional else kind
            kwargs["metavar"] = kind.__name__.upper() + ("|none" if optional else "")
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line flag for type {kind}")
        if f.name in TRAIN_CHOICES:
            kwargs["choices"] = TRAIN_CHOICES[f.name]
            del kwargs["metavar"]
        flags[f.name] = kwargs
    return flags


def _flag_value(value: Any) -> str:
    """A default as it is typed on the command line: none, on/off for switches."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A flag's type for `T | None`: "none" -> None, anything else through `parse`."""

    def parse_or_none(text: str) -> Any:
        return None if text.strip().lower() == "none" else parse(text)

    parse_or_none.__name__ = parse.__name__  # argparse names it in "invalid float value"
    return parse_or_none


def _field_comments(cls: type) -> dict[str, str]:
    """{field: its trailing `# comment`} read from a dataclass's source, for help texts."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # no source (a frozen app): flags just lack the comment
        return {}
    return dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", source, re.M))
