"""`python -m srlib train`: flags made from TrainConfig, presets, runs, resume, exit codes."""

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srlib.data
import srlib.models
import srlib.training.checkpoint
import srlib.training.distributed
import srlib.training.loop
from srlib.cli import CliError, build_parser, main
from srlib.cli.train import RunLog, train_config, train_sources
from srlib.degrade import DEGRADATIONS
from srlib.losses import SharpnessLoss
from srlib.training import PRESETS, TrainConfig, load_checkpoint, preset
from srlib.training.history import History

# Runs with --lr 0 keep sr == its base upscale: they are NOT LEARNING by construction.
pytestmark = [
    pytest.mark.filterwarnings("ignore::srlib.train.NotLearningWarning"),
    pytest.mark.usefixtures("one_thread"),  # tiny crops: one torch thread (tests/conftest.py)
]


@pytest.fixture
def photos(tmp_path) -> Path:
    """Four small photo-like PNGs (gradient + noise) in a folder."""
    folder = tmp_path / "photos"
    folder.mkdir()
    ramp = np.linspace(0, 200, 48 * 64).reshape(48, 64, 1)
    for i in range(4):
        noise = np.random.default_rng(i).normal(0, 20, (48, 64, 3))
        Image.fromarray((ramp + noise).clip(0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def _train(photos: Path, out: Path, *extra: str) -> int:
    """A smoke-sized run; 4 steps validated at steps 2 and 4."""
    args = ["train", "--preset", "smoke", "--data", str(photos), "--out", str(out)]
    return main([*args, "--steps", "4", "--crops-per-image", "2", *map(str, extra)])


def _parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", *argv])


def _flags() -> dict[str, argparse.Action]:
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    return {s: a for a in train._actions for s in a.option_strings}


# ----------------------------------------------------------------------------------------------
# Flags and config


def test_every_config_field_has_a_flag_that_reaches_the_config():
    flags = _flags()
    argv, expected = [], {}
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        assert flag in flags, f"TrainConfig.{f.name} has no {flag}"
        action = flags[flag]
        if isinstance(f.default, bool):
            assert f"--no-{f.name.replace('_', '-')}" in flags
            argv.append(f"--no-{f.name.replace('_', '-')}" if f.default else flag)
            expected[f.name] = not f.default
            continue
        if action.choices:  # a value other than the default, from its choices
            value = next(c for c in action.choices if c != f.default)
        elif f.default is None or isinstance(f.default, float):
            value = 12.5
        elif isinstance(f.default, int):
            value = f.default + 3
        else:
            value = f"{f.default}_x"
        argv += [flag, str(value)]
        expected[f.name] = value
    cfg = train_config(_parse(*argv))
    assert dataclasses.asdict(cfg) == expected  # every field, parsed to its own type


def test_flag_values_switches_and_none():
    assert train_config(_parse("--time-budget-s", "none")).time_budget_s is None
    assert train_config(_parse("--time-budget-s", "90")).time_budget_s == 90.0
    assert train_config(_parse("--no-amp")).amp is False
    assert train_config(_parse("--amp")).amp is True
    with pytest.raises(SystemExit):  # argparse: invalid float value
        _parse("--lr", "fast")
    with pytest.raises(SystemExit):  # not one of the losses
        _parse("--loss", "l3")
    with pytest.raises(SystemExit):  # abbreviations are off: a typo is an error
        _parse("--step", "3")


def test_preset_then_flags_then_out():
    assert train_config(_parse()) == preset("quick")  # the default preset
    assert train_config(_parse("--preset", "full")) == preset("full")
    cfg = train_config(_parse("--preset", "full", "--steps", "7", "--no-amp"))
    assert (cfg.steps, cfg.amp) == (7, False)  # the flags win...
    assert cfg.batch_size == PRESETS["full"]["batch_size"]  # ...the preset keeps the rest
    assert cfg.workers == PRESETS["full"]["workers"]
    cfg = train_config(_parse("--out", "some/where/mine", "--loss", "l2"))
    assert (cfg.out_dir, cfg.name, cfg.loss) == ("some/where", "mine", "l2")
    with pytest.raises(CliError, match="--out sets the run folder"):
        train_config(_parse("--out", "runs/a", "--name", "b"))


def test_data_folders(tmp_path, photos):
    sources, about = train_sources(str(photos))  # any folder of images
    assert [Path(s).name for s in sources] == [f"p{i}.png" for i in range(4)]
    commons = tmp_path / "valued"  # a Commons folder: images/ (and cache/) inside
    (commons / "images").mkdir(parents=True)
    for p in photos.iterdir():
        (commons / "images" / p.name).write_bytes(p.read_bytes())
    sources, about = train_sources(str(commons))
    assert len(sources) == 4 and "downloaded photos" in about
    for bad in (tmp_path / "missing", tmp_path / "empty"):
        if bad.name == "empty":
            bad.mkdir()
        with pytest.raises(CliError, match=f"--data {bad}"):
            train_sources(str(bad))


# ----------------------------------------------------------------------------------------------
# Runs


def test_run_writes_checkpoints_history_and_resumes(tmp_path, photos, monkeypatch, capsys):
    written = []  # the step of each history.json write: after every validation, at the end
    log = RunLog.__call__

    def logged(self, history):
        written.append(history["step"][-1])
        log(self, history)

    monkeypatch.setattr(RunLog, "__call__", logged)
    out = tmp_path / "runs" / "mine"
    assert _train(photos, out, "--lr", "0") == 3  # lr 0: not learning by construction
    assert written == [2, 4, 4]
    printed = capsys.readouterr().out
    for name in ("last.pt", "best.pt", "history.json"):
        assert (out / name).is_file()
    history = json.loads((out / "history.json").read_text())
    ckpt = load_checkpoint(out / "last.pt")
    assert history["step"] == list(range(1, 5))
    assert history == json.loads(json.dumps(ckpt["history"]))  # the checkpoint's, as JSON
    assert history["val"]["step"] == [2, 4] and history["alerts"]
    assert "done: 4 of 4 steps" in printed
    assert f"best weights: {out / 'best.pt'}" in printed
    assert "ALERT: run 'mine' is NOT LEARNING" in printed
    assert ckpt["config"]["name"] == "mine" and ckpt["config"]["out_dir"] == str(out.parent)

    assert _train(photos, out, "--lr", "0") == 3  # the same command again: resumes, finished
    assert "resumed mine" in capsys.readouterr().out
    assert load_checkpoint(out / "last.pt")["step"] == 4


def test_run_without_validation_exits_0(tmp_path, photos, capsys):
    out = tmp_path / "noval"
    assert _train(photos, out, "--val-fraction", "0") == 0
    printed = capsys.readouterr().out
    assert (out / "last.pt").is_file() and not (out / "best.pt").exists()
    assert "no validation photos" in printed and "done: 4 of 4 steps" in printed
    assert json.loads((out / "history.json").read_text())["val"]["psnr"] == []


def test_degradation_flag_reaches_both_datasets(tmp_path, photos, monkeypatch):
    made = []
    init = srlib.data.SRDataset.__init__

    def recording(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self.degradation)

    monkeypatch.setattr(srlib.data.SRDataset, "__init__", recording)
    out = tmp_path / "realistic"
    assert _train(photos, out, "--degradation", "realistic", "--lr", "0") == 3  # lr 0: see above
    assert made == ["realistic", "realistic"]  # the training and the validation crops
    assert load_checkpoint(out / "last.pt")["config"]["degradation"] == "realistic"
    assert _flags()["--degradation"].choices == DEGRADATIONS
    assert _flags()["--sharpness-kind"].choices == SharpnessLoss.KINDS
    with pytest.raises(SystemExit):  # argparse: not one of the degradations
        _parse("--degradation", "jpeg")


def test_a_different_config_in_the_same_folder_is_one_line_exit_2(
    tmp_path, photos, capsys, fake_imagenet_weights
):
    out = tmp_path / "run"
    assert _train(photos, out, "--lr", "0") == 3
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert _train(photos, out, "--lr", "0.001") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "lr 0.0 there, 0.001 here" in err and "another --out" in err
    assert (out / "last.pt").read_bytes() == before  # nothing lost
    # fake_imagenet_weights: the ResNet encoder finds its weights and downloads nothing
    assert _train(photos, out, "--lr", "0", "--model", "resnet", "--no-amp") == 2
    assert "arch UNetUpscaler there, ResNetUNetUpscaler here" in capsys.readouterr().err


def test_bad_options_exit_2(tmp_path, photos, capsys):
    assert _train(photos, tmp_path / "a", "--val-fraction", "1.5") == 2
    assert _train(photos, tmp_path / "b", "--patch-size", "33") == 2  # not divisible by x2
    assert _train(tmp_path / "nowhere", tmp_path / "c") == 2
    assert _train(photos, tmp_path / "d", "--name", "x") == 2  # --out and --name
    (tmp_path / "e").write_text("mine")
    assert _train(photos, tmp_path / "e") == 2  # --out names a file
    err = capsys.readouterr().err
    assert err.count("error: ") == 5
    assert not any((tmp_path / n).exists() for n in "abcd")
    assert (tmp_path / "e").read_text() == "mine"


def test_ctrl_c_stops_cleanly_exits_130_and_resumes(tmp_path, photos, monkeypatch, capsys):
    validate = srlib.training.loop.validate

    def interrupted_validate(*args, **kwargs):  # Ctrl-C during the first validation
        monkeypatch.setattr(srlib.training.loop, "validate", validate)
        signal.raise_signal(signal.SIGINT)
        return validate(*args, **kwargs)

    monkeypatch.setattr(srlib.training.loop, "validate", interrupted_validate)
    out = tmp_path / "run"
    assert _train(photos, out, "--lr", "0", "--steps", "6") == 130
    printed = capsys.readouterr().out
    assert "interrupted: 3 of 6 steps" in printed
    assert "to resume, run the same command again" in printed
    assert json.loads((out / "history.json").read_text())["interrupted"]

    assert _train(photos, out, "--lr", "0", "--steps", "6") == 3
    printed = capsys.readouterr().out
    assert "resumed run from" in printed and "at step 3/6" in printed
    assert json.loads((out / "history.json").read_text())["step"] == list(range(1, 7))


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--batch-size", "0"),
        ("--val-every", "0"),
        ("--checkpoint-every", "0"),
        ("--log-every", "0"),
        ("--steps", "0"),
        ("--steps", "-1"),
        ("--time-budget-s", "0"),
        ("--crops-per-image", "0"),
        ("--patch-size", "0"),
        ("--min-crop", "0"),
        ("--lr", "-0.001"),
    ],
)
def test_a_config_that_cannot_make_a_run_is_one_line_exit_2(tmp_path, photos, capsys, flag, value):
    out = tmp_path / "run"
    assert _train(photos, out, flag, value) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: training config 'run': ")
    assert f"{flag[2:].replace('-', '_')} must be" in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["../../x", "ABSOLUTE", "", ".", "..", "a/b"])
def test_a_name_that_is_not_a_folder_name_is_exit_2(tmp_path, photos, capsys, name):
    name = str(tmp_path / "abs") if name == "ABSOLUTE" else name  # never / itself
    where = tmp_path / "a" / "b" / "runs"  # ../../x: tmp_path/a/x
    argv = ["train", "--preset", "smoke", "--data", str(photos), "--steps", "2"]
    assert main([*argv, "--out-dir", str(where), "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: --name {name!r}")
    assert [p.name for p in tmp_path.iterdir()] == ["photos"]  # nothing written anywhere


def test_a_device_this_machine_lacks_is_one_line_exit_2(tmp_path, photos, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    for device in ("cuda", "cuda:1", "tpu", "meta"):  # meta: tensors without numbers
        assert _train(photos, tmp_path / "run", "--device", device) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: --device {device}: "), err
    assert not (tmp_path / "run").exists()


def test_cpu_training_under_torchrun_joins_over_gloo(tmp_path, photos, monkeypatch):
    """NCCL, torchrun's group on a CUDA machine, cannot reduce the CPU tensors of --device cpu."""

    class Joined(Exception):
        pass

    backends = []

    def setup(backend=None):
        backends.append(backend)
        raise Joined

    monkeypatch.setattr(srlib.training.distributed, "distributed_setup", setup)
    for device in ("cpu", "auto"):
        with pytest.raises(Joined):
            _train(photos, tmp_path / "run", "--device", device)
    assert backends == ["gloo", None]  # None: NCCL where CUDA is, else gloo


def test_the_process_group_is_closed_at_the_end(tmp_path, photos, monkeypatch):
    """Under torchrun `train` joins the process group, and leaves it whatever the outcome."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
    for key, value in {**env, "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(key, value)
    (tmp_path / "file").write_text("mine")
    try:
        assert _train(photos, tmp_path / "run", "--val-fraction", "0") == 0
        assert not torch.distributed.is_initialized()
        assert _train(photos, tmp_path / "file") == 2  # --out is a file
        assert not torch.distributed.is_initialized()
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# history.json and TensorBoard


def _history(steps: int) -> dict:
    history = History().to_dict()
    history["step"] = list(range(1, steps + 1))
    history["lr"] = [0.001] * steps
    history["train"] = {"total": [0.1] * steps, "pixel": [0.1] * steps}
    history["val"].update(step=[steps], epoch=[1.0], loss=[0.05], psnr=[30.0], base_psnr=29.0)
    return history


def test_tensorboard_scalars_once_per_step_across_resumes(tmp_path):
    event_accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator"
    )
    for steps in (4, 6):  # a first session, then a resumed one that rewrites everything
        log = RunLog(tmp_path)
        log(_history(steps))
        log.close()
    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"train/total", "train/pixel", "lr", "val/psnr", "val/loss", "val/gain_db"} <= set(
        events.Tags()["scalars"]
    )
    assert [e.step for e in events.Scalars("lr")] == [1, 2, 3, 4, 5, 6]  # no duplicates
    assert [e.value for e in events.Scalars("val/gain_db")] == [pytest.approx(1.0)]
    assert json.loads((tmp_path / "history.json").read_text()) == _history(6)


def test_without_tensorboard_one_info_line_and_history_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import -> ImportError
    log = RunLog(tmp_path)
    log(_history(3))
    log.close()
    assert capsys.readouterr().out.count("tensorboard is not installed") == 1
    assert [p.name for p in tmp_path.iterdir()] == ["history.json"]


# ----------------------------------------------------------------------------------------------
# Entry points


def test_python_m_srlib_train_help():
    done = subprocess.run(
        [sys.executable, "-m", "srlib", "train", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for text in ("--preset", "--time-budget-s", "--no-amp", "exit codes", "NOT LEARNING"):
        assert text in done.stdout


def test_console_script_entry_point():
    (script,) = entry_points(group="console_scripts", name="srlib")
    assert script.value == "srlib.__main__:main"
    assert script.load() is main


def test_init_from_a_checkpoint_whose_config_does_not_fit_its_weights_is_one_line(
    tmp_path, photos, capsys, monkeypatch
):
    from srlib.models import UNetUpscaler
    from tests.test_cli import crafted_checkpoint

    blocks = []
    init = srlib.models.ResBlock.__init__
    monkeypatch.setattr(
        srlib.models.ResBlock, "__init__", lambda s, *a, **k: blocks.append(1) or init(s, *a, **k)
    )
    huge = crafted_checkpoint(tmp_path / "huge.pt", refine_blocks=20000)
    # This run's own model config over a tiny model's weights: load_state_dict would raise.
    other = crafted_checkpoint(tmp_path / "other.pt", **UNetUpscaler(scale=2).config)
    blocks.clear()
    assert _train(photos, tmp_path / "run", "--init-from", huge) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and f"init_from {huge}: model_config refine_blocks=" in err
    assert len(blocks) < 100  # this run's own model (17 blocks), nothing of the crafted one
    assert _train(photos, tmp_path / "run2", "--init-from", other) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert f"init_from {other}: model_config " in err and "checkpoint" in err


# ----------------------------------------------------------------------------------------------
# Issue 24: a run folder people can trust


def _png(path: Path, seed: int) -> Path:
    """One more photo-like PNG, 48x64."""
    ramp = np.linspace(0, 200, 48 * 64).reshape(48, 64, 1)
    noise = np.random.default_rng(seed).normal(0, 20, (48, 64, 3))
    Image.fromarray((ramp + noise).clip(0, 255).astype(np.uint8)).save(path)
    return path


def _err_line(capsys) -> str:
    """stderr of the last command, which must be one `error:` line; the line."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


def _error_after_progress(capsys) -> str:
    """The one `error:` line of stderr, which also holds the progress bar of the steps done."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_resuming_on_other_photos_is_refused_saying_what_changed(tmp_path, photos, capsys):
    out = tmp_path / "run"
    assert _train(photos, out, "--lr", "0") == 3
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    _png(photos / "p4.png", 4)  # one photo added: the validation split moves too
    assert _train(photos, out, "--lr", "0") == 2
    assert "last.pt was trained on other data (1 photo(s) added (p4.png)" in _err_line(capsys)
    (photos / "p4.png").unlink()
    _png(photos / "p1.png", 11)  # the same name, other pixels
    assert _train(photos, out, "--lr", "0") == 2
    assert "(1 photo(s) changed (p1.png))" in _err_line(capsys)
    _png(photos / "p1.png", 1)  # back as it was
    assert _train(photos, out, "--lr", "0", "--val-fraction", "0.5") == 2
    err = _err_line(capsys)
    assert "val_fraction 0.1 then, 0.5 now" in err and "--new-phase" in err
    other = tmp_path / "other"
    other.mkdir()
    for i in range(4):
        _png(other / f"q{i}.png", 20 + i)
    assert _train(other, out, "--lr", "0") == 2
    assert "4 photo(s) added (q0.png, q1.png, q2.png and 1 more); 4 photo(s) removed" in _err_line(
        capsys
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    assert _train(photos, out, "--lr", "0") == 3  # the same photos: resumes (finished)
    assert "resumed run" in capsys.readouterr().out


def test_new_phase_continues_on_changed_photos_with_its_own_baseline(
    tmp_path, photos, monkeypatch, capsys
):
    validate = srlib.training.loop.validate

    def interrupted_validate(*args, **kwargs):  # Ctrl-C during the first validation
        monkeypatch.setattr(srlib.training.loop, "validate", validate)
        signal.raise_signal(signal.SIGINT)
        return validate(*args, **kwargs)

    monkeypatch.setattr(srlib.training.loop, "validate", interrupted_validate)
    out = tmp_path / "run"
    assert _train(photos, out, "--lr", "0", "--steps", "6") == 130
    old = load_checkpoint(out / "last.pt")
    (validated,) = old["data"]["val"]
    _png(photos / validated, 99)  # the validation photo edited: other pixels, same name
    capsys.readouterr()
    assert _train(photos, out, "--lr", "0", "--steps", "6") == 2  # refused without the flag
    assert f"(1 photo(s) changed ({validated}))" in _err_line(capsys)
    assert _train(photos, out, "--lr", "0", "--steps", "6", "--new-phase") == 3  # lr 0
    printed = capsys.readouterr().out
    assert f"new phase from step 3 on changed data (1 photo(s) changed ({validated}))" in printed
    history = json.loads((out / "history.json").read_text())
    (phase,) = history["phases"]
    assert phase["step"] == 3 and phase["base_psnr"] == old["history"]["val"]["base_psnr"]
    assert history["val"]["base_psnr"] != phase["base_psnr"]  # measured again, other pixels
    last = load_checkpoint(out / "last.pt")
    assert last["data"]["val"][validated] != old["data"]["val"][validated]  # recorded
    assert load_checkpoint(out / "best.pt")["step"] > 3  # best of the new phase
    assert "new phase from step 3: the data changed" in printed


def test_an_early_not_learning_alert_that_clears_exits_0(tmp_path, photos, monkeypatch, capsys):
    """Issue 24: +0.14 dB at the end, still exit 3 and 'NOT LEARNING ... (step 15)'."""
    scores = iter([30.0, 30.0, 30.0, 30.5])  # three validations at the base, then learning
    monkeypatch.setattr(srlib.training.loop, "base_psnr", lambda *args, **kwargs: 30.0)
    monkeypatch.setattr(srlib.training.loop, "validate", lambda *a, **k: (0.1, next(scores)))
    out = tmp_path / "run"
    assert _train(photos, out, "--steps", "8") == 0
    printed = capsys.readouterr().out
    assert "note: the alert of step 6 was cleared at step 8" in printed
    assert "ALERT" not in printed and "+0.50 dB over" in printed
    history = json.loads((out / "history.json").read_text())
    assert history["alerts"] == [] and history["cleared_alerts"][0]["cleared"] == 8


def test_out_holding_other_files_is_refused_unless_overwrite(tmp_path, photos, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "mylogs"
    out.mkdir()
    theirs = {"best.pt": b"their model", "history.json": b"{}", "events.out.tfevents.1.x": b"t"}
    for name, data in theirs.items():
        (out / name).write_bytes(data)
    assert _train(photos, out, "--lr", "0") == 2
    err = _err_line(capsys)
    assert f"--out {out} holds files that are not this run's (best.pt, events.out" in err
    assert "--overwrite" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == theirs  # nothing added either
    assert _train(photos, out, "--lr", "0", "--overwrite") == 3  # asked for: trains there
    assert (out / "best.pt").read_bytes() != theirs["best.pt"]
    assert (out / "events.out.tfevents.1.x").read_bytes() == b"t"  # another tool's: kept
    ours = {p.name for p in out.glob("events.*")} - {"events.out.tfevents.1.x"}
    assert len(ours) == 1
    assert _train(photos, out, "--lr", "0") == 3  # resumes (finished): rewrites its own only
    now = {p.name for p in out.glob("events.*")} - {"events.out.tfevents.1.x"}
    assert len(now) == 1 and now != ours
    assert (out / "events.out.tfevents.1.x").read_bytes() == b"t"


def test_overwrite_starts_afresh_over_another_run(tmp_path, photos, capsys):
    out = tmp_path / "run"
    assert _train(photos, out, "--lr", "0") == 3
    assert _train(photos, out, "--lr", "0.001") == 2  # another run: refused...
    assert "--overwrite to start afresh" in capsys.readouterr().err
    assert _train(photos, out, "--lr", "0.001", "--overwrite") in (0, 3)  # ...unless asked
    assert load_checkpoint(out / "last.pt")["config"]["lr"] == 0.001


def test_a_second_training_in_the_same_out_is_refused(tmp_path, photos, capsys):
    """One process holds the run folder's lock; a killed one leaves no lock behind."""
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from srlib.cli.train import _run_lock
            with _run_lock(Path({str(out)!r})):
                print("locked", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _train(photos, out, "--lr", "0") == 2
        err = _err_line(capsys)
        assert f"another training is running in {out}" in err
        assert not (out / "last.pt").exists()
    finally:
        holder.kill()  # as a kill -9 would: the OS drops the lock
        holder.wait()
    assert _train(photos, out, "--lr", "0") == 3


def test_a_run_killed_before_its_first_files_starts_again(tmp_path, photos, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".srlib-run.lock").touch()  # a kill during the write probe: only ours in the folder
    (out / ".srlib-write-test.k1ll3d_x.tmp").touch()
    assert _train(photos, out, "--lr", "0") == 3
    assert not (out / ".srlib-write-test.k1ll3d_x.tmp").exists()


def test_stale_temp_files_of_a_killed_write_are_removed_on_start(tmp_path, photos, capsys):
    out = tmp_path / "run"
    assert _train(photos, out, "--lr", "0") == 3
    ours = [".last.pt.ab12_xyz.tmp", ".best.pt.q9w8e7r6.tmp", "..srlib-run.json.a1b2c3d4.tmp"]
    theirs = ["notes.tmp", ".last.pt.mine.tmp", "x.last.pt.ab12_xyz.tmp", ".other.ab12_xyz.tmp"]
    for name in ours + theirs:
        (out / name).write_bytes(b"0" * 1000)
    capsys.readouterr()
    assert _train(photos, out, "--lr", "0") == 3
    assert "removed 3 temp file(s) of an interrupted write" in capsys.readouterr().out
    assert not any((out / name).exists() for name in ours)
    assert all((out / name).exists() for name in theirs)


def test_sigterm_stops_cleanly_after_the_step_and_the_run_resumes(tmp_path, photos):
    out = tmp_path / "run"
    script = tmp_path / "term.py"
    script.write_text(textwrap.dedent(f"""
        import signal, sys
        import srlib.training.loop
        from srlib.cli import main
        validate = srlib.training.loop.validate
        def terminated_validate(*args, **kwargs):  # SIGTERM during the first validation
            srlib.training.loop.validate = validate
            signal.raise_signal(signal.SIGTERM)
            return validate(*args, **kwargs)
        srlib.training.loop.validate = terminated_validate
        sys.exit(main(["train", "--preset", "smoke", "--data", {str(photos)!r}, "--out",
                       {str(out)!r}, "--steps", "6", "--crops-per-image", "2", "--lr", "0"]))
    """))  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env)
    assert done.returncode == 130, done.stderr[-2000:]
    assert "interrupted: 3 of 6 steps" in done.stdout
    assert load_checkpoint(out / "last.pt")["step"] == 3
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    assert _train(photos, out, "--lr", "0", "--steps", "6") == 3
    assert json.loads((out / "history.json").read_text())["step"] == list(range(1, 7))


def test_the_same_run_under_another_path_or_folder_name_resumes(
    tmp_path, photos, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    validate = srlib.training.loop.validate

    def interrupted_validate(*args, **kwargs):
        monkeypatch.setattr(srlib.training.loop, "validate", validate)
        signal.raise_signal(signal.SIGINT)
        return validate(*args, **kwargs)

    monkeypatch.setattr(srlib.training.loop, "validate", interrupted_validate)
    assert _train(photos, Path("runs/a"), "--lr", "0", "--steps", "6") == 130
    monkeypatch.setattr(srlib.training.loop, "validate", interrupted_validate)
    capsys.readouterr()
    assert _train(photos, tmp_path / "runs" / "a", "--lr", "0", "--steps", "6") == 130
    assert "resumed a from" in capsys.readouterr().out  # --out /abs/runs/a: the same run
    (tmp_path / "runs" / "a").rename(tmp_path / "runs" / "b")  # renamed
    assert _train(photos, Path("runs/b"), "--lr", "0", "--steps", "6") == 3
    assert "resumed b from runs/b/last.pt at step 5/6" in capsys.readouterr().out


@pytest.mark.parametrize("how", ["read-only", "chmod"])
def test_an_unwritable_run_folder_is_one_line_before_the_first_step(
    tmp_path, photos, capsys, monkeypatch, how
):
    out = tmp_path / "run"
    out.mkdir()
    if how == "chmod":
        if os.geteuid() == 0:
            pytest.skip("root writes into a read-only (0555) folder anyway")
        out.chmod(0o555)
        cause = "Permission denied"
    else:  # a read-only mount: every new file in it fails
        mkstemp = tempfile.mkstemp

        def read_only(*args, dir=None, **kwargs):
            if dir is not None and Path(dir) == out:
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(tempfile, "mkstemp", read_only)
        cause = "Read-only file system"
    steps = []  # no step may run
    monkeypatch.setattr(srlib.training.loop, "to_device", lambda *a: steps.append(1))
    try:
        assert _train(photos, out, "--lr", "0") == 2
    finally:
        out.chmod(0o755)
    assert _err_line(capsys) == f"error: cannot write to the run folder {out}: {cause}\n"
    assert steps == [] and list(out.iterdir()) == []


@pytest.mark.parametrize("file", ["last.pt", "history.json"])
def test_a_full_disk_while_training_is_one_line_and_exit_4(
    tmp_path, photos, capsys, monkeypatch, file
):
    import srlib.io

    atomic_write = srlib.io.atomic_write

    @contextlib.contextmanager
    def full_disk(path, *args, **kwargs):
        with atomic_write(path, *args, **kwargs) as f:
            if Path(path).name == file:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            yield f

    monkeypatch.setattr(srlib.io, "atomic_write", full_disk)
    monkeypatch.setattr(srlib.training.checkpoint, "atomic_write", full_disk)
    out = tmp_path / "run"
    assert _train(photos, out, "--lr", "0") == 4
    err = _error_after_progress(capsys)
    where = f"{out / 'last.pt'}" if file == "last.pt" else f"to the run folder {out}"
    assert err.startswith(f"error: cannot write {where}: ") and "No space left on device" in err
    assert "run the same command again to resume" in err
    assert not list(out.glob(".*.tmp"))  # the failed write left nothing behind


def test_a_broken_photo_drawn_for_validation_leaves_the_others_to_validate(
    tmp_path, photos, capsys
):
    (photos / "p9.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    names = sorted(p.name for p in photos.iterdir())
    # A seed whose split draws the broken photo, one in five, for validation.
    seed = next(s for s in range(100) if srlib.data.split_by_image(names, 0.1, s)[1] == ["p9.png"])
    assert _train(photos, tmp_path / "run", "--lr", "0", "--seed", seed) == 3  # lr 0: trains
    out, err = capsys.readouterr()
    assert "warning: skipped 1 of 5 photos: p9.png (" in err and "error" not in err
    assert "photos: 3 to train on (6 crops per epoch), 1 (16 fixed crops) to validate on" in out


def test_photo_counts_leave_out_the_files_skipped(tmp_path, photos, capsys):
    for i in range(3):
        (photos / f"broken{i}.jpg").write_bytes(b"not a jpeg")
    assert _train(photos, tmp_path / "run", "--val-fraction", "0") == 0
    out, err = capsys.readouterr()
    assert "photos: 4 to train on (8 crops per epoch), no to validate on" in out
    assert "warning: skipped 3 of 7 photos: broken0.jpg" in err


def test_ctrl_c_while_the_photos_are_read_is_one_line_exit_130(
    tmp_path, photos, capsys, monkeypatch
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(srlib.data, "_probe", interrupted)
    assert _train(photos, tmp_path / "run") == 130
    out, err = capsys.readouterr()
    assert err == "\ninterrupted while reading the photos: nothing was written\n"
    assert not (tmp_path / "run").exists()


def test_a_matching_last_pt_without_optimizer_state_is_one_line_exit_2(tmp_path, photos, capsys):
    from srlib.infer import export_checkpoint

    out = tmp_path / "run"
    assert _train(photos, out, "--lr", "0") == 3
    export_checkpoint(out / "last.pt", tmp_path / "small.pt", half=False)
    (tmp_path / "small.pt").replace(out / "last.pt")  # an exported checkpoint put there
    capsys.readouterr()
    assert _train(photos, out, "--lr", "0") == 2
    err = _err_line(capsys)
    assert "last.pt cannot be resumed: it has no optimizer, torch_rng (an exported" in err


def test_a_run_folder_of_an_older_srlib_still_resumes(tmp_path, photos, capsys):
    """No .srlib-run.json, a last.pt without a data record: resumed as before, data recorded."""
    from srlib.training import save_checkpoint

    validate = srlib.training.loop.validate
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as m:

        def interrupted_validate(*args, **kwargs):
            m.setattr(srlib.training.loop, "validate", validate)
            signal.raise_signal(signal.SIGINT)
            return validate(*args, **kwargs)

        m.setattr(srlib.training.loop, "validate", interrupted_validate)
        assert _train(photos, out, "--lr", "0", "--steps", "6") == 130
    ckpt = load_checkpoint(out / "last.pt")
    del ckpt["data"]
    save_checkpoint(out / "last.pt", **ckpt)
    (out / ".srlib-run.json").unlink()
    capsys.readouterr()
    assert _train(photos, out, "--lr", "0", "--steps", "6") == 3
    assert "resumed run from" in capsys.readouterr().out
    assert set(load_checkpoint(out / "last.pt")["data"]["train"]) <= {f"p{i}.png" for i in range(4)}
