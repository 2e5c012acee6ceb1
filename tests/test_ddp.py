"""Multi-process training (DistributedDataParallel over gloo on the CPU) matches one process."""

import dataclasses
import json
import os
import socket
import subprocess
import sys
from subprocess import PIPE

import pytest
import torch

from srlib.data import make_loader
from srlib.losses import PixelLoss
from srlib.training import TrainConfig, fit, load_checkpoint, load_model
from srlib.training.distributed import distributed_setup, is_main_process
from tests.test_train import Signalling, pairs, tiny_model

# Two processes add the same numbers in another order (a gradient is the mean of two half
# batches' means), and Adam, which divides each gradient by its running size, turns the
# last-bit differences of near-zero gradients into differences of a fraction of a step (lr).
# Weights must agree to half a step. Measured for lr 1e-4 after 6 steps: 6e-7 while the UNet
# started from random weights everywhere, 2e-5 since its ResBlocks start as the identity
# (zero convs, whose first gradients are the near-zero kind).
LR = 1e-4
TOLERANCE = 0.5 * LR

# The lr is too small to learn anything in 6 steps, which fit reports loudly: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::srlib.train.NotLearningWarning")

WORKER = """
import json, os, sys
import torch
sys.path.insert(0, {repo!r})
from srlib.losses import PixelLoss
from srlib.models import ResNetUNetUpscaler
from srlib.training import TrainConfig, fit, save_checkpoint
from srlib.training.distributed import distributed_setup, is_main_process
from tests.test_train import Signalling, pairs, tiny_model

rank, world = distributed_setup()
assert distributed_setup() == (rank, world) == (rank, 2), (rank, world)  # idempotent
assert is_main_process() == (rank == 0)
args = json.loads(sys.argv[1])
if args.get("disks"):  # a machine each: a relative out_dir is a folder of this rank's own
    os.makedirs(f"{{args['disks']}}/rank{{rank}}", exist_ok=True)
    os.chdir(f"{{args['disks']}}/rank{{rank}}")
torch.manual_seed(rank)  # different initial weights: DDP must start all from rank 0's
if args["model"] == "resnet":
    model = ResNetUNetUpscaler(2, depth=1, decoder_channels=(8,), pretrained=False,
                               download=False)
else:
    model = tiny_model()
if rank:  # BatchNorm statistics too must start as rank 0's
    for buffer in model.encoder.buffers():
        buffer.add_(1)
data = pairs()
if args.get("signal_at") and rank == 1:  # Ctrl-C reaches one process only
    data = Signalling(data, args["signal_at"])
val = pairs(5, seed=1) if args.get("val") else None  # 5: the processes get 3 and 2
hist = fit(model, PixelLoss("l1"), data, val, TrainConfig(**args["cfg"]), progress=False)
if args["model"] == "resnet":  # frozen: weights and BatchNorm statistics of rank 0's start
    torch.manual_seed(0)
    start = ResNetUNetUpscaler(2, depth=1, decoder_channels=(8,), pretrained=False,
                               download=False)
    assert all(torch.equal(v, start.encoder.state_dict()[k])
               for k, v in model.encoder.state_dict().items())
save_checkpoint(f"{{args['out']}}/rank{{rank}}.pt", model=model.state_dict(), history=hist)
print("rank", rank, "done")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(tmp_path, **args) -> list[dict]:
    """Run WORKER in 2 processes under torchrun; each process's saved model and history."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=os.getcwd()))
    out = tmp_path / "ranks"
    out.mkdir(exist_ok=True)
    # gloo on the CPU, even on a GPU machine; one thread per process on 2 cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_addr", "127.0.0.1", "--master_port", str(free_port())),
        *(str(script), json.dumps({**args, "out": str(out)})),
    ]
    with subprocess.Popen(cmd, env=env, stdout=PIPE, stderr=PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            # SIGTERM, not run()'s SIGKILL: torchrun passes it on to its workers, which live in
            # sessions of their own and would otherwise hang on forever.
            proc.terminate()
            stderr = proc.communicate(timeout=60)[1]
            pytest.fail(f"the processes hung (a collective not all joined):\n{stderr[-3000:]}")
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    return [load_checkpoint(out / f"rank{r}.pt") for r in (0, 1)]


def config(folder, **kw) -> TrainConfig:
    base = dict(
        name="d",
        steps=6,
        batch_size=4,
        lr=LR,
        warmup_steps=1,
        val_every=3,
        checkpoint_every=3,
        log_every=2,
        out_dir=str(folder),
        seed=1,
    )
    return TrainConfig(**{**base, **kw})


def one_process(folder, **kw) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)  # rank 0's initial weights
    model = tiny_model()
    run = config(folder, **kw)
    hist = fit(model, PixelLoss("l1"), pairs(), pairs(5, seed=1), run, progress=False)
    return model, hist


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_make_loader_splits_each_global_batch_over_the_processes():
    def batches(start, rank=0, world=1):
        loader = make_loader(range(14), 4, seed=3, drop_last=True, start=start, rank=rank,
                             world_size=world)  # fmt: skip
        return [b.tolist() for b in loader]

    for start in (0, 4, 8):  # `start` counts global samples: resuming with any world size
        one = batches(start)
        assert len(one) == (12 - start) // 4
        for world in (2, 4):
            ranks = [batches(start, r, world) for r in range(world)]
            assert all(len(b) == len(one) and len(b[0]) == 4 // world for b in ranks)
            # Step by step, the processes' batches are together the one-process batch.
            for i, batch in enumerate(one):
                assert sorted(sum((r[i] for r in ranks), [])) == sorted(batch)
    with pytest.raises(ValueError, match="global batch"):
        make_loader(range(14), 4, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank 2"):
        make_loader(range(14), 4, rank=2, world_size=2)


def test_single_process_needs_no_setup(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert distributed_setup() == (0, 1) and is_main_process()
    assert not torch.distributed.is_initialized()


def test_two_processes_train_like_one(tmp_path):
    run = dataclasses.asdict(config(tmp_path / "ddp"))
    ranks = torchrun(tmp_path / "ddp", model="unet", val=True, cfg=run)
    single, hist = one_process(tmp_path / "one")
    # DDP keeps the processes' weights identical, bit for bit, and returns the same history.
    assert all(torch.equal(v, ranks[1]["model"][k]) for k, v in ranks[0]["model"].items())
    h0, h1 = ranks[0]["history"], ranks[1]["history"]
    assert h0["train"] == h1["train"] and h0["val"] == h1["val"] and h0["step"] == h1["step"]
    # Rank 0 wrote the checkpoints, of the plain model (no "module." prefix).
    last = load_checkpoint(tmp_path / "ddp" / "d" / "last.pt")
    assert last["step"] == 6 and last["history"]["finished"]
    assert all(torch.equal(v, last["model"][k]) for k, v in ranks[0]["model"].items())
    load_model(tmp_path / "ddp" / "d" / "best.pt")
    # Global batch 4 as 2 x 2: the same schedule, losses, validation and weights as one process.
    assert h0["lr"] == hist["lr"] and h0["val"]["step"] == hist["val"]["step"] == [3, 6]
    assert h0["train"]["total"] == pytest.approx(hist["train"]["total"], abs=TOLERANCE)
    assert h0["val"]["psnr"] == pytest.approx(hist["val"]["psnr"], abs=1e-4)
    assert h0["val"]["base_psnr"] == pytest.approx(hist["val"]["base_psnr"], abs=1e-4)
    assert max_diff(ranks[0]["model"], single.state_dict()) < TOLERANCE
    assert h0["samples_per_s"] > 0


def test_resume_with_another_number_of_processes(tmp_path):
    """2 processes for steps 1-3, then 1 process for 4-5, then 2 again: as one process."""
    run = config(tmp_path / "ddp", steps=8)  # 2 steps an epoch: every resume is mid-epoch
    args = dict(model="unet", val=True, cfg=dataclasses.asdict(run))
    last = tmp_path / "ddp" / "d" / "last.pt"
    # Ctrl-C reaches rank 1 alone, as it loads its 5th item (step 3): both stop after step 3.
    ranks = torchrun(tmp_path / "ddp", signal_at=5, **args)
    for r in ranks:
        assert r["history"]["interrupted"] and r["history"]["step"] == [1, 2, 3]
    assert load_checkpoint(last)["step"] == 3
    # One process goes on from global sample 4 of epoch 1, and is stopped after step 5.
    torch.manual_seed(0)
    data = Signalling(pairs(), 6)  # its 6th item is in step 5
    h = fit(tiny_model(), PixelLoss("l1"), data, pairs(5, seed=1), run, progress=False)
    assert h["interrupted"] and h["step"] == [1, 2, 3, 4, 5]
    # Two processes again, from global sample 4 of epoch 2, to the end.
    h0 = torchrun(tmp_path / "ddp", **args)[0]["history"]
    single, hist = one_process(tmp_path / "one", steps=8)
    assert h0["step"] == hist["step"] == list(range(1, 9)) and h0["finished"]
    assert h0["lr"] == hist["lr"] and h0["val"]["step"] == hist["val"]["step"] == [3, 6, 8]
    assert h0["train"]["total"] == pytest.approx(hist["train"]["total"], abs=TOLERANCE)
    assert h0["val"]["psnr"] == pytest.approx(hist["val"]["psnr"], abs=1e-4)
    final = load_checkpoint(last)
    assert final["step"] == 8 and max_diff(final["model"], single.state_dict()) < TOLERANCE


def test_a_frozen_encoder_is_left_out(tmp_path):
    """The ResNet-UNet's frozen encoder (BatchNorm in eval) trains under DDP, unchanged."""
    ranks = torchrun(tmp_path, model="resnet", cfg=dataclasses.asdict(config(tmp_path, steps=2)))
    assert all(torch.equal(v, ranks[1]["model"][k]) for k, v in ranks[0]["model"].items())
    assert ranks[0]["history"]["step"] == [1, 2]


def test_resume_when_only_rank_0_sees_the_run_folder(tmp_path):
    """No shared disk: rank 0 reads last.pt and sends it, so both resume at the same step."""
    disks = tmp_path / "disks"
    run = config("runs", steps=8)  # relative: rank0/runs and rank1/runs, one per process
    args = dict(model="unet", val=True, cfg=dataclasses.asdict(run), disks=str(disks))
    last = disks / "rank0" / "runs" / "d" / "last.pt"
    ranks = torchrun(tmp_path / "ddp", signal_at=5, **args)  # both stop after step 3
    assert [r["history"]["step"] for r in ranks] == [[1, 2, 3]] * 2
    assert load_checkpoint(last)["step"] == 3
    assert not (disks / "rank1" / "runs").exists()  # rank 0 alone writes
    ranks = torchrun(tmp_path / "ddp", **args)  # rank 1 has no last.pt: rank 0's is sent
    single, hist = one_process(tmp_path / "one", steps=8)
    for r in ranks:
        h = r["history"]
        assert h["step"] == list(range(1, 9)) and h["finished"] and h["lr"] == hist["lr"]
        assert h["train"]["total"] == pytest.approx(hist["train"]["total"], abs=TOLERANCE)
        assert h["val"]["step"] == [3, 6, 8]
        assert max_diff(r["model"], single.state_dict()) < TOLERANCE
    # Finished: both return at once, with rank 0's history and weights.
    again = torchrun(tmp_path / "ddp", **args)
    for r, before in zip(again, ranks, strict=True):
        assert r["history"]["step"] == list(range(1, 9))
        assert max_diff(r["model"], before["model"]) == 0
    assert not (disks / "rank1" / "runs").exists()


def test_distributed_setup_takes_the_backend(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    try:
        assert distributed_setup(backend="gloo") == (0, 1)
        assert torch.distributed.get_backend() == "gloo"
    finally:
        torch.distributed.destroy_process_group()


def test_the_control_group_is_made_once_per_process_group(tmp_path, monkeypatch):
    """Under NCCL, fit sends its flags over one gloo group, not a new one per call."""
    import srlib.training.distributed as train

    made = []
    new_group = torch.distributed.new_group
    monkeypatch.setattr(train.dist, "get_backend", lambda group=None: "nccl")
    monkeypatch.setattr(train.dist, "new_group", lambda **kw: made.append(1) or new_group(**kw))
    for attempt in range(2):  # a process group, destroyed, then another
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{tmp_path}/store{attempt}", rank=0, world_size=1
        )
        try:
            group = train.control_group()
            assert group is not None and train.control_group() is group
            assert len(made) == attempt + 1
        finally:
            torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------------------------
# `torchrun -m srlib train`: exit codes and error lines (issue 24)

TRAIN = """
import sys
sys.path.insert(0, {repo!r})
import srlib.training.loop
from srlib.cli import main

if {early_alert!r}:  # three validations at the base (an alert), then learning: it clears
    scores = iter([30.0, 30.0, 30.0, 30.5])
    srlib.training.loop.base_psnr = lambda *args, **kwargs: 30.0
    srlib.training.loop.validate = lambda *args, **kwargs: (0.1, next(scores))
sys.exit(main(sys.argv[1:]))
"""


def torchrun_train(tmp_path, *argv, early_alert=False) -> subprocess.CompletedProcess:
    """`python -m srlib train ARGV` in 2 processes under torchrun, gloo on the CPU."""
    import numpy as np
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"p{i}.png")
    script = tmp_path / "train.py"
    script.write_text(TRAIN.format(repo=os.getcwd(), early_alert=early_alert))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"),
        *("--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script)),
        *("train", "--preset", "smoke", "--data", str(photos), "--crops-per-image", "2"),
        *("--device", "cpu", *argv),
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_exit_code_follows_the_run_as_it_ends(tmp_path):
    """Issue 24: a run that learned (+0.61 dB) ended in exit 1 and a ChildFailedError."""
    done = torchrun_train(
        tmp_path, "--out", str(tmp_path / "run"), "--steps", "8", early_alert=True
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("note: the alert of step 6 was cleared at step 8") == 1  # rank 0
    assert "ChildFailedError" not in done.stderr and "Traceback" not in done.stderr
    assert json.loads((tmp_path / "run" / "history.json").read_text())["alerts"] == []


def test_torchrun_says_an_error_once_on_a_line_of_its_own(tmp_path):
    (tmp_path / "file").write_text("mine")
    done = torchrun_train(tmp_path, "--out", str(tmp_path / "file"))
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if "error: " in line]
    assert errors == [f"error: --out {tmp_path / 'file'} is a file; it takes the run folder"]
    assert (tmp_path / "file").read_text() == "mine"
