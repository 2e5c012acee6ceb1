"""The training loop: `fit`, one step at a time, and the validation it runs.

`fit` reads like BasicSR's loop: set up (`_Run`: config checks, device, optimiser, resume),
then per step `train_step` (forward, loss, backward, optimiser step), `maybe_validate` and
`maybe_checkpoint`; the adversarial half (srlib.training.gan), the EMA of the weights
(srlib.training.ema), checkpoints (srlib.training.checkpoint) and several processes
(srlib.training.distributed) each live in their own module.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from srlib import perf
from srlib.data import make_loader
from srlib.models import Upscaler
from srlib.training.checkpoint import (
    RunWriteError,
    check_run_folder,
    checkpoint_to_resume,
    restore_run,
    save_run,
    warm_start,
)
from srlib.training.config import TrainConfig, check_config
from srlib.training.distributed import (
    agree,
    control_group,
    gather_losses,
    means,
    process_device,
    rank_and_world,
    wrap_ddp,
)
from srlib.training.ema import Ema
from srlib.training.gan import GanTrainer
from srlib.training.history import History
from srlib.training.runtime import (
    lr_at,
    pick_device,
    psnr,
    seed_everything,
    to_device,
    use_autocast,
)

# What stops a run cleanly after the current step: Ctrl-C (and Jupyter's interrupt button), and
# SIGTERM, which `kill`, batch schedulers and torchrun send to end a process.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_interrupt() -> Iterator[list[bool]]:
    """Turn the first SIGINT or SIGTERM into a flag; a second one aborts (KeyboardInterrupt).

    Training then stops at the end of the current step, with a checkpoint and its history,
    instead of a KeyboardInterrupt that loses the run's history mid-step, or a SIGTERM that
    kills it mid-write (leaving a full-size temp file beside last.pt).
    """
    flag = [False]

    def handler(signum, frame) -> None:
        if flag[0]:
            raise KeyboardInterrupt  # a second interrupt: the user really wants out
        flag[0] = True

    previous = {}
    try:
        for sig in STOP_SIGNALS:
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: signals cannot be caught here
        yield flag
        return
    try:
        yield flag
    finally:  # None: a handler installed outside Python, which cannot be put back
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


@torch.no_grad()
def validate(
    model: nn.Module,
    loss_fn: nn.Module,
    loader: DataLoader,
    device: torch.device,
    across_ranks: bool = False,
) -> tuple[float, float]:
    """Mean loss and mean RGB PSNR (dB) of `model` over a validation loader.

    across_ranks: under DDP, each process passes its share of the validation set and gets the
    means over all of it; every process must then call this.
    """
    was_training = model.training
    model.eval()
    loss_sum, psnr_sum, n = torch.zeros((), device=device), torch.zeros((), device=device), 0
    for lq, gt in loader:
        lq, gt = to_device(lq, device), to_device(gt, device)
        sr = model(lq)
        loss_sum += loss_fn(sr, gt)[0] * len(lq)  # summed on the device: one sync at the end
        psnr_sum += psnr(sr, gt).sum()
        n += len(lq)
    model.train(was_training)
    loss, psnr_ = means([loss_sum, psnr_sum], n, across_ranks)
    return loss, psnr_


@torch.no_grad()
def base_psnr(
    model: nn.Module, loader: DataLoader, device: torch.device, across_ranks: bool = False
) -> float | None:
    """Mean RGB PSNR of the model's own classic upscale (its `base_upscale`), or None.

    across_ranks: as in `validate`.
    """
    if not hasattr(model, "base_upscale"):
        return None
    total, n = torch.zeros((), device=device), 0
    for lq, gt in loader:
        lq, gt = to_device(lq, device), to_device(gt, device)
        total += psnr(model.base_upscale(lq), gt).sum()
        n += len(lq)
    return means([total], n, across_ranks)[0]


def fit(
    model: Upscaler,
    loss_fn: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    cfg: TrainConfig,
    resume: bool = True,
    progress: bool = True,
    on_validation: Callable[[dict], None] | None = None,
    data: dict | None = None,
    new_phase: bool = False,
) -> dict:
    """Train `model` in place and return its history; resumes from out_dir/name/last.pt.

    History (a dict, `History.to_dict`): per-step 'lr' and 'train' parts (incl. 'total');
    per-validation 'val' loss and PSNR, with 'base_psnr' (the model's own base upscale on the
    same crops); 'alerts' (a run that learns nothing is reported loudly there, on screen and
    as a NotLearningWarning); samples/s. An alert that no longer holds (the run learned after
    all) moves to 'cleared_alerts': 'alerts' is the verdict on the run as it stands.
    Checkpoints: 'last.pt' every `checkpoint_every` steps and at the end, 'best.pt' at the
    best validation PSNR. A non-finite loss stops the run with FloatingPointError before any
    checkpoint holds the broken weights; a checkpoint that cannot be written (disk full,
    read-only) raises RunWriteError. An interrupt (Ctrl-C, the kernel's stop button, SIGTERM)
    ends the run cleanly after the current step: checkpoint written, history returned with
    'interrupted' True; calling fit again resumes. `on_validation(history)` is called after
    each validation, e.g. to redraw live loss curves.

    `data`: what the run trains and validates on (e.g. {"train": {photo: [bytes, hash]},
    "val": {...}, "val_fraction": f}, see `data_change`), stored in the checkpoints. Resuming a
    checkpoint that recorded other data is refused (ValueError), unless `new_phase`: then the
    run continues on this data as a new phase, recorded in history['phases'], with its
    validation baseline measured again and best.pt, alerts and the verdict judged on this
    phase's validations only.

    Under torchrun (a process group of several processes, see `distributed_setup`) the model
    trains as DistributedDataParallel, one GPU per process (LOCAL_RANK), or on the CPU with
    gloo. `cfg.batch_size` is the global batch: each process takes batch_size // world_size
    of it (`make_loader`) and the gradients are averaged, so with the same global batch and
    steps the LR schedule and, up to float rounding, the run are those of one process, and
    'last.pt' resumes with any number of processes. Each process validates its share of the
    validation set. Rank 0 alone prints, calls `on_validation`, writes checkpoints (of the
    plain model) and reads last.pt, which it sends to the others: only rank 0 needs to see
    out_dir. All processes stop at the same step, on any one's interrupt; all raise on a
    non-finite loss; all return the same history (timings aside).

    `cfg.gan` "unet" or "patch": each step also trains that discriminator (`GanTrainer`) and
    adds `gan_weight` times its adversarial loss to the generator's; 'train' gets the parts
    'g_adv', 'd_real' and 'd_fake'. `cfg.ema` > 0: validation, best.pt, last.pt's 'model' and
    the returned model are an EMA of the weights (last.pt also keeps the trained ones as
    'raw_model', to resume). `cfg.init_from`: a new run starts from that checkpoint's weights.
    GAN and EMA runs take one process for now.

    On a CPU it trains on `cfg.threads` torch threads, by default (0) as many as cores are
    idle when it starts (srlib.perf.pick_threads: on a busy machine more threads train slower
    than fewer); torch's thread count is restored when it returns. History 'threads' says how
    many (None on a GPU).
    """
    on_cpu = pick_device(cfg.device).type == "cpu"
    with perf.threads_for(cfg.threads) if on_cpu else contextlib.nullcontext():
        run = _Run(model, loss_fn, cfg, progress, on_validation)  # checks, device, optimiser
        if run.start(resume, data, new_phase):  # resumed from last.pt, or started afresh
            return run.history.to_dict()  # already finished: the model holds its final weights
        run.prepare(train_set, val_set)  # run folder, autocast, DDP, validation baseline
        # The bar closed first, whatever stops the run: an error line then starts a line of its own.
        with stop_on_interrupt() as interrupted, closing(run.bar):
            while not run.stop:
                for lq, gt in run.epoch_loader(train_set):
                    run.set_lr()
                    loss, parts = run.train_step(lq, gt)  # forward, loss, backward, step
                    run.record(loss, parts)
                    run.end_step(stop_asked=interrupted[0])  # the same verdict in every process
                    run.maybe_log()
                    run.maybe_validate()
                    run.maybe_checkpoint()
                    if run.stop:
                        break
        return run.finish()


class _Run:
    """One call of `fit`: the model and its optimiser, the run's state, and its steps."""

    def __init__(
        self,
        model: Upscaler,
        loss_fn: nn.Module,
        cfg: TrainConfig,
        progress: bool,
        on_validation: Callable[[dict], None] | None,
    ):
        check_config(cfg)
        rank, world = rank_and_world()
        if world > 1 and (cfg.gan != "none" or cfg.ema):
            what = [f"GAN training (gan {cfg.gan!r})"] if cfg.gan != "none" else []
            what += [f"an EMA of the weights (ema {cfg.ema})"] if cfg.ema else []
            raise ValueError(
                f"{' and '.join(what)} runs in one process for now, not torchrun's {world}"
            )
        seed_everything(cfg.seed)
        device = pick_device(cfg.device)
        if world > 1:
            device = process_device(device)
        if cfg.batch_size % world:
            raise ValueError(
                f"batch_size {cfg.batch_size} is the global batch and must split evenly over "
                f"{world} processes: choose a multiple of {world}"
            )
        # channels_last: oneDNN's fast convolution layout on CPU (2-6x here), also good on GPUs.
        model.to(device, memory_format=torch.channels_last).train()
        loss_fn.to(device, memory_format=torch.channels_last)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.model, self.loss_fn, self.cfg, self.device = model, loss_fn, cfg, device
        self.rank, self.world, self.main = rank, world, rank == 0
        self.progress, self.on_validation = progress, on_validation
        self.run_dir = Path(cfg.out_dir) / cfg.name
        self.last = self.run_dir / "last.pt"
        self.step, self.history, self.best = 0, History(), -math.inf
        self.saved_step: int | None = None  # the newest checkpoint's step: its finite weights
        self.stop = False

    def start(self, resume: bool, data: dict | None, new_phase: bool) -> bool:
        """Resume from last.pt, or start afresh (from init_from's weights); True: finished."""
        cfg, model = self.cfg, self.model
        ckpt = checkpoint_to_resume(self.last, resume, self.rank, self.world)
        if ckpt is None and cfg.init_from:
            warm_start(model, cfg.init_from)  # every process reads it; before the EMA copies it
            if self.main:
                print(f"{cfg.name} starts from the weights of {cfg.init_from}")
        self.gan = GanTrainer(cfg, self.device) if cfg.gan != "none" else None
        self.ema = Ema(model, cfg.ema) if cfg.ema else None
        # What validation, best.pt and the caller get.
        self.scored = model if self.ema is None else self.ema.model
        self.data = data
        if ckpt is not None:
            self.step, self.history, change = restore_run(
                ckpt, model, self.opt, cfg, self.last, self.gan, self.ema, data, new_phase
            )
            self.best = max(self.history.phase_validations()[1], default=-math.inf)
            self.saved_step, self.data = self.step, data if data is not None else ckpt.get("data")
            if self.main:
                print(f"resumed {cfg.name} from {self.last} at step {self.step}/{cfg.steps}")
                if change:
                    print(
                        f"{cfg.name}: new phase from step {self.step} on changed data ({change}); "
                        "its validation baseline is measured again"
                    )
        budget = cfg.time_budget_s
        spent = budget is not None and self.history.train_seconds >= budget
        if self.step >= cfg.steps or spent:
            if self.ema is not None:
                self.ema.copy_to(model)
            return True
        return False

    def prepare(self, train_set: Dataset, val_set: Dataset | None) -> None:
        """Check the run folder and the data; the validation baseline; the clock and the bar."""
        cfg, model, device, world = self.cfg, self.model, self.device, self.world
        check_run_folder(self.run_dir, self.rank, world)  # before the first step
        if len(train_set) < cfg.batch_size:
            raise ValueError(
                f"{len(train_set)} training samples are fewer than one batch "
                f"({cfg.batch_size}): add images or raise crops_per_image"
            )
        self.steps_per_epoch = len(train_set) // cfg.batch_size
        self.use_amp = use_autocast(cfg, device)
        self.net = wrap_ddp(model, device) if world > 1 else model  # what a training step calls
        self.val_loader = None
        if val_set is not None and len(val_set) > 0:
            self.val_loader = make_loader(
                val_set,
                cfg.batch_size,
                shuffle=False,
                workers=cfg.workers,
                rank=self.rank,
                world_size=world,
            )
            if self.history.val.base_psnr is None:
                self.history.val.base_psnr = base_psnr(
                    model, self.val_loader, device, across_ranks=world > 1
                )
        # Loss parts stay on the device and are fetched every `log_every` steps: one sync per
        # batch of steps instead of one per step (a GPU would otherwise wait on every .item()).
        self.pending: list[torch.Tensor] = []
        self.part_names: list[str] = []
        self.spent = self.history.train_seconds  # wall-clock seconds of earlier sessions
        self.history.interrupted = False
        shown = self.progress and self.main
        self.bar = tqdm(total=cfg.steps, initial=self.step, desc=cfg.name, disable=not shown)
        self.t0, self.samples, self.finished = time.perf_counter(), 0, False
        self.elapsed = self.spent

    def epoch_loader(self, train_set: Dataset) -> DataLoader:
        """The batches of the current epoch from the current step on.

        Order from (seed, epoch), crops from (seed, epoch, index): a resumed run continues with
        exactly the batches an uninterrupted one would have seen, with any number of processes
        (`start` counts global samples).
        """
        cfg = self.cfg
        epoch, offset = divmod(self.step, self.steps_per_epoch)
        return make_loader(
            train_set,
            cfg.batch_size,
            shuffle=True,
            workers=cfg.workers,
            seed=cfg.seed,
            drop_last=True,
            epoch=epoch,
            start=offset * cfg.batch_size,
            rank=self.rank,
            world_size=self.world,
        )

    def set_lr(self) -> None:
        """This step's learning rate: warmup, then cosine by steps or time, whichever is further.

        The time progress: the clock once this step's batch is loaded; under DDP the slowest
        clock the processes agreed on after the last step (`end_step`), so that all take the
        same LR without waiting for each other once more.
        """
        cfg, budget = self.cfg, self.cfg.time_budget_s
        if self.world == 1:
            self.elapsed = self.spent + time.perf_counter() - self.t0
        progress = max(self.step / cfg.steps, self.elapsed / budget if budget else 0.0)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(progress, self.step, cfg)

    def train_step(
        self, lq: torch.Tensor, gt: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Forward, loss, backward, optimiser step (and the discriminator's, the EMA's)."""
        lq, gt = to_device(lq, self.device), to_device(gt, self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_amp):
            sr = self.net(lq)  # (B, 3, H, W)
        loss, parts = self.loss_fn(sr.float(), gt)
        if self.gan is not None:
            loss, parts = self.gan.generator_loss(sr, loss, parts)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP this also averages the gradients over processes
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.opt.step()
        if self.gan is not None:  # on this step's sr, as the generator made it
            parts = {**parts, **self.gan.discriminator_step(sr, gt)}
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        self.samples += len(lq) * self.world
        return loss, parts

    def record(self, loss: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        """Add the step to the history; its loss parts wait on the device for `maybe_log`."""
        self.history.step.append(self.step)
        self.history.lr.append(self.opt.param_groups[0]["lr"])
        self.part_names = self.part_names or ["total", *parts]
        self.pending.append(torch.stack([loss.detach(), *parts.values()]))
        self.bar.update(1)

    def end_step(self, stop_asked: bool) -> None:
        """Whether the run stops, validates or writes a checkpoint after this step.

        Every process must stop at the same step (the others would wait forever for its
        gradients): one interrupt stops all, and all go by the slowest clock.
        """
        cfg, budget = self.cfg, self.cfg.time_budget_s
        now = self.spent + time.perf_counter() - self.t0
        stop_asked, self.elapsed = agree(stop_asked, now, self.world)
        self.finished = self.step >= cfg.steps or (budget is not None and self.elapsed >= budget)
        self.stop = self.finished or stop_asked
        self.validating = self.val_loader is not None and (
            self.step % cfg.val_every == 0 or self.finished
        )
        self.checkpointing = self.step % cfg.checkpoint_every == 0 and not self.stop  # stop: finish

    def maybe_log(self) -> None:
        """Fetch the pending loss parts every `log_every` steps, and before anything else."""
        due = len(self.pending) >= self.cfg.log_every
        if due or self.validating or self.checkpointing or self.stop:
            self.flush()  # before any checkpoint: a non-finite loss never reaches one

    def flush(self) -> None:
        """Fetch the pending steps' loss parts (one sync) into the history; a non-finite raises."""
        if not self.pending:
            return
        rows = gather_losses(self.pending, self.world)
        self.pending.clear()
        self.history.record_losses(self.part_names, rows, self.step, self.cfg.name, self.kept())
        self.bar.set_postfix(loss=f"{rows[-1][0]:.4f}")

    def maybe_validate(self) -> None:
        """Validate every `val_every` steps and at the end: best.pt, the verdict, on_validation."""
        if not self.validating:
            return
        # The plain model, not the DDP wrapper: its forward is for training steps.
        v_loss, v_psnr = validate(
            self.scored, self.loss_fn, self.val_loader, self.device, across_ranks=self.world > 1
        )
        epoch = self.step / self.steps_per_epoch
        name = self.cfg.name
        line = self.history.record_validation(self.step, epoch, v_loss, v_psnr, name, self.kept())
        if self.main:
            self.bar.write(line)
        if v_psnr > self.best:
            self.best = v_psnr
            self.save(self.run_dir / "best.pt")
        self.history.judge(self.step, name, self.finished, self.bar if self.main else None)
        if self.on_validation is not None and self.main:
            self.on_validation(self.history.to_dict())

    def maybe_checkpoint(self) -> None:
        """Write last.pt every `checkpoint_every` steps (`finish` writes the last one)."""
        if self.checkpointing:
            self.history.train_seconds = self.spent + time.perf_counter() - self.t0
            self.save(self.last)

    def save(self, path: Path) -> None:
        """Write a checkpoint of the run (rank 0); RunWriteError if it cannot be written."""
        if self.main:
            try:
                save_run(
                    path, self.model, self.opt, self.cfg, self.step, self.history, self.gan,
                    self.ema, self.data,
                )  # fmt: skip
            except OSError as e:  # disk full, folder made read-only: say which and why
                raise RunWriteError(f"cannot write {path}: {e.strerror or e}") from e
        self.saved_step = self.step if path == self.last else self.saved_step

    def kept(self) -> str:
        """Where the last finite weights are, for a message after a non-finite loss."""
        if self.saved_step is None:
            first = self.cfg.checkpoint_every
            return f"no checkpoint of this run was written yet (the first is at step {first})"
        return f"{self.last} keeps the last finite weights (step {self.saved_step})"

    def finish(self) -> dict:
        """Record the session's time and how it ended, write last.pt; the history as a dict."""
        seconds = time.perf_counter() - self.t0
        history = self.history
        history.train_seconds = self.spent + seconds
        history.samples_per_s = self.samples / max(seconds, 1e-9)
        history.threads = torch.get_num_threads() if self.device.type == "cpu" else None
        history.interrupted = not self.finished
        history.finished = self.finished
        self.save(self.last)
        if self.world > 1:
            dist.barrier(group=control_group())  # fit returns everywhere once last.pt is written
        if self.ema is not None:
            self.ema.copy_to(self.model)  # the caller gets the averaged weights, as best.pt has
        if not self.finished and self.main:
            print(
                f"{self.cfg.name}: interrupted at step {self.step}/{self.cfg.steps}; checkpoint "
                f"{self.last} written, history kept. Run fit again to resume."
            )
        return history.to_dict()
