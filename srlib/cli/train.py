"""`srlib train`: train an upscaler on a folder of photos from the command line.

Its flags are made from srlib.training.TrainConfig (one per field, its help from the field's
metadata, on top of a preset); a rerun resumes from OUT/last.pt; exit codes in TRAIN_EPILOG.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srlib.cli.errors import CliError, one_line, under_torchrun

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, so one training per folder is up to the user
    fcntl = None

if TYPE_CHECKING:
    from srlib.training.config import TrainConfig
    from srlib.training.history import History

VAL_CROPS_PER_IMAGE = 16  # fixed validation crops per validation photo, as in the notebooks
EXIT_DIVERGED, EXIT_NOT_LEARNING, EXIT_WRITE_FAILED, EXIT_INTERRUPTED = 1, 3, 4, 130
# A run folder's bookkeeping: what defines the run and the TensorBoard files it wrote (RunLog),
# and the lock that keeps a second training out (the OS drops it when the process dies).
RUN_MANIFEST, RUN_LOCK = ".srlib-run.json", ".srlib-run.lock"
RUN_FILES = ("last.pt", "best.pt", "history.json", RUN_MANIFEST)  # written with atomic_write
# Temp files of those writes (tempfile.mkstemp: 8 of [a-z0-9_]) and of the writability probe,
# left by a process killed mid-write: ours to remove, and nothing else is.
_OURS = "|".join(re.escape(name) for name in (*RUN_FILES, "srlib-write-test"))
STALE_TEMP = re.compile(rf"\.({_OURS})\.[a-z0-9_]{{8}}\.tmp")
EVENT_FILE = re.compile(r"events\.out\.tfevents\.[^/\\]+")  # a TensorBoard file, a bare name
TRAIN_EPILOG = """\
examples:
  python -m srlib train --preset smoke --data photos/ --out runs/try
  python -m srlib train --model resnet --loss perceptual --data data/valued --out runs/resnet_p
  python -m srlib train --preset full --steps 40000 --batch-size 32 --out runs/long
  torchrun --nproc-per-node 4 -m srlib train --preset full --out runs/ddp    (several GPUs)

Running the same command again resumes from OUT/last.pt (a finished run just prints its
summary); OUT holding another run (config, model or photos), or files that are not this run's,
is refused: --overwrite starts afresh there, --new-phase continues on changed photos. One
training per OUT at a time (a lock). Ctrl-C or SIGTERM stops after the current step with a
checkpoint written. OUT gets last.pt, best.pt (best validation PSNR), history.json, when
tensorboard is installed TensorBoard scalars (tensorboard --logdir runs), and .srlib-run.json
(what defines the run, which event files are its own: only those are ever replaced).

Under torchrun rank 0 alone reads and writes OUT: it sends last.pt to the other processes, so
OUT must be on a disk that rank 0 sees (the others need not see it). --device cpu trains on
CPUs over gloo, on a CUDA machine too.

exit codes: 0 done; 1 the loss became NaN/inf (lower --lr); 2 bad option or data, OUT not
writable, holding another run or others' files, or in use by another training; 3 done, but the
run is NOT LEARNING (its best validation PSNR, as it ends, not above its base upscale: the alert
in history.json); 4 a write to OUT failed while training (disk full, read-only: the line names
the file and cause; rerun to resume); 130 interrupted (run the command again to resume). Under
torchrun rank 0 alone prints and returns these codes, the other ranks 0 unless they fail
themselves; torchrun reports a non-zero rank 0 as its own failure (exit 1)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The `train` subcommand: its own flags, then one flag per TrainConfig field."""
    from srlib.registry import MODELS
    from srlib.training.config import PRESETS, TrainConfig

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
        default=None,
        help="starting config (srlib.training.PRESETS): smoke seconds, quick a 2-core CPU in "
        "minutes, gpu one GPU in minutes (the deep UNet), full a GPU at the original project's "
        "scale; the flags below override it (default: gpu where CUDA is available, else quick)",
    )
    train.add_argument(
        "--model",
        choices=list(MODELS),
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
        "--overwrite",
        action="store_true",
        help="start afresh in OUT even if it holds another run or files that are not this "
        "run's (replacing last.pt, best.pt, history.json and the run's own TensorBoard files; "
        "other files are left alone)",
    )
    train.add_argument(
        "--new-phase",
        action="store_true",
        help="resume a run whose photos changed (added, removed, edited, another split), as a "
        "new phase: its validation baseline measured again, best.pt and the verdict judged on "
        "the new validation photos",
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
        "training config", "srlib.training.TrainConfig, one flag per field; a flag beats the preset"
    )
    for name, kwargs in config_flags(TrainConfig, PRESETS).items():
        group.add_argument(f"--{name.replace('_', '-')}", **kwargs)
    train.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) one run on a folder of photos; returns the exit code (TRAIN_EPILOG)."""
    try:
        return _run(args)
    except CliError as e:
        # Under torchrun every process finds the same problem: rank 0 alone says it, or the
        # processes' lines run together on one line of the shared terminal.
        e.quiet = under_torchrun() and os.environ["RANK"] != "0"
        raise


def _run(args: argparse.Namespace) -> int:
    """run's work: checks, the process group, `_train`."""
    import torch.distributed as dist

    from srlib.training.config import check_config
    from srlib.training.distributed import distributed_setup

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

    from srlib.training.runtime import pick_device

    try:
        device = pick_device(name)  # a RuntimeError for a name torch does not know
        if device.type == "cuda":
            # No test allocation: under torchrun each process would make a context on GPU 0.
            if not torch.cuda.is_available():
                raise RuntimeError("torch finds no CUDA GPU on this machine")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise RuntimeError(f"this machine has {torch.cuda.device_count()} CUDA GPU(s)")
        else:  # "mps" without MPS; "meta", whose tensors hold no numbers to train with
            torch.ones(1, device=device).add(1).cpu()
    except Exception as e:  # RuntimeError, AssertionError (torch not compiled with CUDA), ...
        raise CliError(f"--device {name}: cannot train there ({one_line(e)})") from e


def _train(args: argparse.Namespace, cfg: TrainConfig, rank: int, world: int) -> int:
    """run once the processes have joined: data, model, fit, summary; the exit code."""
    from srlib.training.checkpoint import RunWriteError
    from srlib.training.history import History
    from srlib.training.loop import fit

    main_process = rank == 0
    run_dir = Path(cfg.out_dir) / cfg.name
    try:
        parts = _data_and_model(args, cfg, main_process)
    except KeyboardInterrupt:  # Ctrl-C while the photos are read: nothing was written yet
        if main_process:
            print("\ninterrupted while reading the photos: nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    train_src, val_src, train_set, val_set, model, loss_fn, record = parts
    with contextlib.ExitStack() as held:
        resume, record = _claim_run_folder(
            held, run_dir, cfg, model.config, record, args, rank, world
        )
        if main_process:
            n_val = "no" if val_set is None else f"{len(val_src)} ({len(val_set)} fixed crops)"
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
        if log is not None:
            held.callback(log.close)  # before the lock goes
        try:
            history = fit(
                model,
                loss_fn,
                train_set,
                val_set,
                cfg,
                resume=resume,
                progress=main_process,
                on_validation=log,
                data=record,
                new_phase=args.new_phase,
            )
            if log is not None:
                log(history)  # the final history.json and scalars
        except ValueError as e:  # fewer training crops than one batch, another run's data
            raise CliError(one_line(e)) from e
        except FloatingPointError as e:  # a diverged run
            if main_process:
                print(f"error: {e}", file=sys.stderr)
            return EXIT_DIVERGED
        except RunWriteError as e:  # disk full, the folder made read-only meanwhile
            if main_process:
                print(
                    f"error: {e}; training stopped. Free space (or make {run_dir} writable) and "
                    "run the same command again to resume from the last checkpoint written",
                    file=sys.stderr,
                )
            return EXIT_WRITE_FAILED
        except KeyboardInterrupt:  # a second Ctrl-C: fit stops at once, without a checkpoint
            if main_process:
                print(
                    f"\ninterrupted twice: stopped at once. Run the same command again to resume "
                    f"from {run_dir / 'last.pt'} (written every {cfg.checkpoint_every} steps)",
                    file=sys.stderr,
                )
            return EXIT_INTERRUPTED
    if not main_process:
        return 0  # torchrun ends all processes when one exits non-zero: rank 0 has the verdict
    summary = train_summary(history, cfg, run_dir, model.base_label, val_set is not None)
    print("\n".join(summary))
    verdict = History.from_dict(history)
    if verdict.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_NOT_LEARNING if verdict.alerts else 0  # alerts that hold as the run ends


def _claim_run_folder(
    held: contextlib.ExitStack,
    run_dir: Path,
    cfg: TrainConfig,
    model_config: dict,
    record: dict | None,
    args: argparse.Namespace,
    rank: int,
    world: int,
) -> tuple[bool, dict | None]:
    """Rank 0 checks, locks and tidies OUT; (whether to resume, rank 0's data record) for all.

    Rank 0 alone reads and writes OUT (fit sends last.pt to the others), so it alone checks
    and locks it, and tells the others: every process raises CliError (exit 2), or none.
    """
    import torch.distributed as dist

    problem, resume = None, True
    if rank == 0:
        try:
            resume = _prepare_run_folder(held, run_dir, cfg, model_config, record, args)
        except CliError as e:
            problem = str(e)
    if world > 1:
        box = [problem, resume, record]  # rank 0's view of the photos, for all
        dist.broadcast_object_list(box, src=0)
        problem, resume, record = box
    if problem:
        raise CliError(problem)
    return resume, record


def _data_and_model(args: argparse.Namespace, cfg: TrainConfig, main_process: bool) -> tuple:
    """(train sources, val sources, datasets, model, loss, data record) for a run; CliError."""
    from srlib import data
    from srlib.registry import MODELS
    from srlib.training.config import loss_for, model_args
    from srlib.training.runtime import seed_everything

    sources, about = train_sources(args.data)
    # Checked before the split, so a broken photo never leaves validation empty (or shifts it).
    usable, skipped = data.usable_sources(sources, min_side=cfg.patch_size // 2)
    if main_process:
        print(f"data: {about}")
        if skipped:
            print(
                f"warning: skipped {len(skipped)} of {len(sources)} photos: {data.some(skipped)}",
                file=sys.stderr,
            )
    if not usable:
        raise CliError(f"--data: no usable photos among {len(sources)} ({data.some(skipped)})")
    train_src, val_src = data.split_by_image(usable, args.val_fraction, seed=cfg.seed)
    crop_args = dict(
        size=cfg.patch_size,
        scale=cfg.scale,
        min_crop=cfg.min_crop,
        method=cfg.downscale,
        seed=cfg.seed,
        degradation=cfg.degradation,  # validation too: it scores the inputs the run is made for
        verify=False,  # usable_sources decoded every photo once already
    )
    try:
        train_set = data.SRDataset(train_src, crops_per_image=cfg.crops_per_image, **crop_args)
    except ValueError as e:  # patch size vs scale, a degradation the data module lacks
        raise CliError(f"training photos: {one_line(e)}") from e
    val_set = None
    if val_src:
        try:
            val_set = data.SRDataset(
                val_src, crops_per_image=VAL_CROPS_PER_IMAGE, train=False, **crop_args
            )
        except ValueError as e:
            raise CliError(f"validation photos: {one_line(e)}") from e
    try:
        seed_everything(cfg.seed)  # the same initial weights for the same config
        sizes = model_args(args.preset, args.model)  # the preset's UNet size (gpu, full: deep)
        model = MODELS[args.model](scale=cfg.scale, **sizes)
        loss_fn = loss_for(cfg)
    except ValueError as e:  # a scale the models lack
        raise CliError(one_line(e)) from e
    root = Path(args.data) if args.data is not None else Path("data/valued")
    record = None
    if main_process:  # rank 0 sends its record to the others (`_train`)
        record = data_record(train_src, val_src, args.val_fraction, root, about)
    return train_src, val_src, train_set, val_set, model, loss_fn, record


def data_record(
    train_src: Sequence, val_src: Sequence, val_fraction: float, root: Path, about: str
) -> dict:
    """What a run trains and validates on, for `fit(data=...)`: {photo: [bytes, hash]} a side.

    Photos are named relative to the data folder (its images/ or cache/ in a Commons folder),
    so the same folder given as a relative or absolute path, or moved, is the same data.
    """
    roots = (root / "images", root / "cache", root)

    def key(src: Any) -> str:
        if isinstance(src, tuple):  # (name, array): an embedded photo
            return src[0]
        for base in roots:
            with contextlib.suppress(ValueError):
                name = Path(src).relative_to(base).as_posix()
                return name.removesuffix(".npy") if base.name == "cache" else name
        return Path(src).name

    def fingerprint(src: Any) -> list:
        # Size and the first and last 64 KiB: cheap for 3,000 photos, and any re-encode,
        # crop or edit of a photo changes it.
        if isinstance(src, tuple):
            array = src[1]
            return [int(array.nbytes), hashlib.sha1(array.tobytes()).hexdigest()[:16]]
        with open(src, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(2**16)
            f.seek(max(0, size - 2**16))
            return [size, hashlib.sha1(head + f.read()).hexdigest()[:16]]

    return {
        "train": {key(s): fingerprint(s) for s in train_src},
        "val": {key(s): fingerprint(s) for s in val_src},
        "val_fraction": val_fraction,
        "about": about,  # for people: where the photos were; not compared
    }


def _prepare_run_folder(
    held: contextlib.ExitStack,
    run_dir: Path,
    cfg: TrainConfig,
    model_config: dict,
    record: dict | None,
    args: argparse.Namespace,
) -> bool:
    """Check, lock and tidy the run folder (rank 0); whether to resume. CliError if unusable."""
    from srlib.training.checkpoint import RunWriteError, check_writable
    from srlib.training.config import run_definition

    if run_dir.exists() and not run_dir.is_dir():
        raise CliError(f"--out {run_dir} is a file; it takes the run folder")
    try:
        check_writable(run_dir)  # makes it; before anything else is written or trained
    except RunWriteError as e:
        raise CliError(str(e)) from e
    lock = run_dir / RUN_LOCK
    made_lock = not lock.exists()
    held.enter_context(_run_lock(run_dir))
    config = dataclasses.asdict(cfg)
    last = run_dir / "last.pt"
    try:
        if args.overwrite:
            resume = False  # start afresh; files that are not ours stay (RunLog, RUN_FILES)
        elif last.is_file():
            check_resume(last, config, model_config, record, args.new_phase)
            resume = True
        else:
            _check_no_other_files(run_dir, config, model_config)
            resume = True  # nothing to resume from: fit starts the run
    except CliError:
        if made_lock:  # refused: leave the folder as it was
            lock.unlink(missing_ok=True)
        raise
    stale = [p for p in run_dir.iterdir() if STALE_TEMP.fullmatch(p.name) and p.is_file()]
    for p in stale:  # a killed write's; the lock says no other training is writing here
        p.unlink(missing_ok=True)
    if stale:
        names = ", ".join(p.name for p in stale)
        print(f"run folder: removed {len(stale)} temp file(s) of an interrupted write ({names})")
    manifest = read_manifest(run_dir)
    manifest["run"] = {"config": run_definition(config), "model_config": model_config}
    write_manifest(run_dir, manifest)
    return resume


@contextlib.contextmanager
def _run_lock(run_dir: Path):
    """One training per run folder (as srlib.datasets locks its download folder): flock, which
    the OS drops when the process dies, even by SIGKILL, so a stale lock never blocks."""
    if fcntl is None:
        yield
        return
    with open(run_dir / RUN_LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CliError(
                f"another training is running in {run_dir} (it holds {run_dir / RUN_LOCK}): "
                "wait for it to end, or pass another --out"
            ) from None
        yield


def _check_no_other_files(run_dir: Path, config: dict, model_config: dict) -> None:
    """Refuse (CliError) a run folder without last.pt that holds another run or others' files."""
    run = read_manifest(run_dir).get("run")
    if run:  # a run of ours that never reached its first checkpoint: same run, or another
        diffs = _differences(run.get("config") or {}, run.get("model_config") or {}, config,
                             model_config)  # fmt: skip
        if diffs:
            raise CliError(
                f"{run_dir} holds a different run ({_shown(diffs)}): pass another --out, or "
                f"--overwrite to start afresh in it"
            )
        return
    others = sorted(  # our lock, and temp files of our writes a kill left, do not count
        p.name for p in run_dir.iterdir() if p.name != RUN_LOCK and not STALE_TEMP.fullmatch(p.name)
    )
    if others:
        from srlib.data import some

        raise CliError(
            f"--out {run_dir} holds files that are not this run's ({some(others)}): pass an "
            "empty or new folder, or --overwrite to train there anyway (it replaces last.pt, "
            "best.pt and history.json; other files are left alone)"
        )


def read_manifest(run_dir: Path) -> dict:
    """The run folder's RUN_MANIFEST ({} if there is none, or it is unreadable)."""
    try:
        manifest = json.loads((run_dir / RUN_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def write_manifest(run_dir: Path, manifest: dict) -> None:
    """Write the run folder's RUN_MANIFEST atomically."""
    from srlib.io import atomic_write

    with atomic_write(run_dir / RUN_MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's TrainConfig: the preset, then the TrainConfig flags given, then --out."""
    from srlib.training.config import TrainConfig, default_preset, preset

    if args.preset is None:  # "gpu" where CUDA is available, else "quick"
        args.preset = default_preset()
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
            "folder's photos: python -m srlib.datasets download LIST, see data/valued/README.md)"
        )
    if images != root:  # a Commons folder: its fast-crop cache too, where it is up to date
        return data.default_sources(root)
    sources = data.folder_sources(root, None)
    return sources, f"{len(sources)} images from {root}"


def check_resume(
    last: Path,
    config: dict,
    model_config: dict,
    data: dict | None = None,
    new_phase: bool = False,
) -> None:
    """Refuse (CliError) a last.pt of another run: training config, model or (unless
    `new_phase`) data; or one that cannot be resumed (no optimizer state: an exported one).

    fit() refuses these too, with advice for Python callers; this names the differences.
    Where the run lives and what it is called (name, out_dir) are not compared.
    """
    if not last.is_file():
        return
    from srlib.training.checkpoint import data_change, load_checkpoint

    try:
        ckpt = load_checkpoint(last)
    except Exception as e:  # truncated, not a torch file
        raise CliError(
            f"cannot resume from {last}: {one_line(e)}; pass --overwrite to start afresh in "
            f"{last.parent}, or another --out"
        ) from e
    if not isinstance(ckpt, dict):
        raise CliError(f"cannot resume from {last}: not an srlib checkpoint; pass --overwrite")
    diffs = _differences(ckpt.get("config") or {}, ckpt.get("model_config") or {}, config,
                         model_config)  # fmt: skip
    if diffs:
        raise CliError(
            f"{last} was written by a different run ({_shown(diffs)}): pass another --out, or "
            f"--overwrite to start afresh in {last.parent}"
        )
    missing = [k for k in ("model", "optimizer", "step", "history", "torch_rng") if k not in ckpt]
    if missing:
        raise CliError(
            f"{last} cannot be resumed: it has no {', '.join(missing)} (an exported "
            "checkpoint?): pass another --out, or --overwrite to start afresh there"
        )
    change = data_change(ckpt["data"], data) if data and ckpt.get("data") else None
    if change and not new_phase:
        raise CliError(
            f"{last} was trained on other data ({change}): pass --new-phase to continue it on "
            "these photos as a new phase (its validation baseline measured again), or "
            "another --out"
        )


def _differences(saved: dict, saved_model: dict, config: dict, model_config: dict) -> list[str]:
    """'key X there, Y here' for each value of the run definition and model that differs."""
    from srlib.models import upgrade_model_config
    from srlib.training.config import run_definition

    diffs = []
    pairs = (
        (run_definition(saved), run_definition(config)),
        (upgrade_model_config(saved_model), model_config),
    )
    for theirs, ours in pairs:
        for key in [*ours, *(k for k in theirs if k not in ours)]:
            old, new = theirs.get(key, "(none)"), ours.get(key, "(none)")
            if old != new:
                diffs.append(f"{key} {old} there, {new} here")
    return diffs


def _shown(diffs: list[str]) -> str:
    return "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")


def train_summary(
    history: dict | History, cfg: TrainConfig, run_dir: Path, base_label: str, validating: bool
) -> list[str]:
    """The lines printed after training: steps, time, best validation PSNR, files, alerts."""
    from srlib.training.history import History

    history = History.from_dict(history)
    steps = history.step[-1] if history.step else 0
    seconds = history.train_seconds
    took = f"{seconds:.0f} s" if seconds < 100 else f"{seconds / 60:.1f} min"
    rate, threads = history.samples_per_s, history.threads
    lines = [
        f"{'interrupted' if history.interrupted else 'done'}: {steps} of {cfg.steps} steps in "
        f"{took}"
        + (f" ({rate:.1f} samples/s" if rate else "")
        + (f", {threads} CPU thread(s))" if rate and threads else ")" if rate else "")
    ]
    for phase in history.phases:
        lines.append(f"new phase from step {phase['step']}: the data changed ({phase['change']})")
    best_validation = history.best_validation()  # the best of this phase's photos
    if best_validation is not None:
        step, psnr = best_validation
        base = history.val.base_psnr
        gain = "" if base is None else f", {psnr - base:+.2f} dB over {base_label}"
        best = f"best validation PSNR: {psnr:.2f} dB at step {step}"
        lines.append(best + gain)
        lines.append(f"best weights: {run_dir / 'best.pt'}")
    elif validating:
        lines.append(f"no validation yet (the first is at step {cfg.val_every}): no best.pt")
    else:
        lines.append("no validation photos (--val-fraction 0, or a single photo): no best.pt")
    lines.append(f"last checkpoint: {run_dir / 'last.pt'}, history: {run_dir / 'history.json'}")
    for a in history.cleared_alerts:
        lines.append(f"note: the alert of step {a['step']} was cleared at step {a['cleared']}")
    lines += [f"ALERT: {a['message']}" for a in history.alerts]
    if history.interrupted:
        lines.append("to resume, run the same command again")
    return lines


class RunLog:
    """fit's on_validation: writes history.json (atomically) and, if installed, TensorBoard scalars.

    The first call of a session rewrites every scalar (a resumed run's earlier steps too) into a
    new event file and deletes the run's older event files, so TensorBoard shows each step once
    however often the run was resumed. Only event files the run wrote itself (their names are
    kept in RUN_MANIFEST) are ever deleted: another tool's logs in the folder stay. (TensorBoard's
    own purge_step compares wall times, two sessions within a clock tick kept both copies, and it
    hides other writers' steps too.) A failed write raises srlib.training.checkpoint.RunWriteError.
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
        from srlib.training.checkpoint import RunWriteError

        try:
            self._write(history)
        except OSError as e:  # disk full, read-only: the folder and the cause, in one line
            raise RunWriteError(
                f"cannot write to the run folder {self.run_dir}: {e.strerror or e}"
            ) from e

    def _events(self) -> set[str]:
        return {p.name for p in self.run_dir.glob("events.out.tfevents.*")}

    def _write(self, history: dict) -> None:
        from srlib.io import atomic_write
        from srlib.training.history import History

        with atomic_write(self.run_dir / "history.json", "w", encoding="utf-8") as f:
            json.dump(history, f)
        if self.summary_writer is None:
            return
        if self.writer is None:
            manifest = read_manifest(self.run_dir)
            for name in manifest.get("events") or []:  # this run's own: all rewritten below
                if isinstance(name, str) and EVENT_FILE.fullmatch(name):
                    (self.run_dir / name).unlink(missing_ok=True)
            before = self._events()
            self.writer = self.summary_writer(str(self.run_dir))
            manifest["events"] = sorted(self._events() - before)
            write_manifest(self.run_dir, manifest)
        h = History.from_dict(history)
        w, steps, train, val = self.writer, h.step, h.train, h.val
        done = len(train.get("total", ()))  # loss parts are fetched from the device in batches
        for i in range(self.train_done, done):
            for part, values in train.items():
                w.add_scalar(f"train/{part}", values[i], steps[i])
            w.add_scalar("lr", h.lr[i], steps[i])
        for i in range(self.val_done, len(val.psnr)):
            w.add_scalar("val/psnr", val.psnr[i], val.step[i])
            w.add_scalar("val/loss", val.loss[i], val.step[i])
            base = h.base_at(val.step[i])  # each data phase has its own base
            if base is not None:
                w.add_scalar("val/gain_db", val.psnr[i] - base, val.step[i])
        self.train_done, self.val_done = done, len(val.psnr)
        w.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def config_flags(cls: type, presets: dict[str, dict]) -> dict[str, dict]:
    """{field: add_argument keywords} for every field of a config dataclass, from its types.

    bool -> --x/--no-x; int, float, str; `T | None` also takes "none". Flags have no default
    (SUPPRESS), so the parsed arguments hold only the flags given. Help: the field's "help"
    metadata, its default and the presets' values; choices: its "choices" metadata.
    """
    hints = typing.get_type_hints(cls)
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
        text = "; ".join(t for t in (f.metadata.get("help"), default) if t).replace("%", "%%")
        kwargs: dict = {"default": argparse.SUPPRESS, "help": text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind in (int, float, str):
            kwargs["type"] = _or_none(kind) if optional else kind
            kwargs["metavar"] = kind.__name__.upper() + ("|none" if optional else "")
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line flag for type {kind}")
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
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
