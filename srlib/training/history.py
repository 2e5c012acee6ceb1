"""A run's history: what `fit` records, typed, and the verdict on whether the run learns.

`fit` returns, checkpoints and writes (history.json) the history as a plain dict, in the layout
of `History.to_dict`; `History.from_dict` reads any of them back, older ones included. This
module is the one place that knows that layout: the train command's summary, the loss plots,
inference checkpoints (`summarize`) and `srlib info` read histories through it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tqdm.auto import tqdm

# A run "learns nothing" when, after this many validations, its best validation PSNR is still
# less than MIN_GAIN_DB above the PSNR of its own base (bicubic) upscale of the same crops.
STUCK_AFTER_VALIDATIONS = 3
MIN_GAIN_DB = 0.05


class NotLearningWarning(RuntimeWarning):
    """A run whose validation PSNR does not rise above its own base upscale."""


@dataclass
class Validations:
    """One entry per validation (steps, epochs, mean loss, mean RGB PSNR), and the base's PSNR."""

    step: list[int] = field(default_factory=list)
    epoch: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    base_psnr: float | None = None  # the model's own base upscale on the same crops


VAL_KEYS = tuple(f.name for f in fields(Validations))


@dataclass
class History:
    """Everything `fit` records about a run, in the order of its dict layout (`to_dict`)."""

    step: list[int] = field(default_factory=list)  # one entry per optimiser step
    lr: list[float] = field(default_factory=list)  # its learning rate
    train: dict[str, list[float]] = field(default_factory=dict)  # loss parts, "total" first
    val: Validations = field(default_factory=Validations)
    alerts: list[dict] = field(default_factory=list)  # {"step", "message"}: hold as it stands
    cleared_alerts: list[dict] = field(default_factory=list)  # put right since: "cleared": step
    phases: list[dict] = field(default_factory=list)  # {"step", "change", "base_psnr"}: new data
    samples_per_s: float | None = None
    threads: int | None = None  # CPU threads of the last session (perf.pick_threads); None: GPU
    train_seconds: float = 0.0
    interrupted: bool = False  # the last session was stopped by Ctrl-C / a kernel interrupt
    finished: bool = False  # all steps done (or the time budget spent)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of other versions, kept as they are

    def to_dict(self) -> dict:
        """The dict layout of checkpoints and history.json (it shares this history's lists)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["val"] = {f.name: getattr(self.val, f.name) for f in fields(Validations)}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, history: dict | History) -> History:
        """A history from its dict (a History as it is); keys it lacks take their defaults."""
        if isinstance(history, History):
            return history
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in history.items() if k in names}
        val = history.get("val") or {}
        known["val"] = Validations(**{k: val[k] for k in VAL_KEYS if k in val})
        extra = {k: v for k, v in history.items() if k not in names}
        return cls(**known, extra=extra)

    # -- recording, as `fit` goes

    def record_losses(
        self, names: list[str], rows: list[list[float]], step: int, name: str, kept: str
    ) -> None:
        """Append the loss parts of the steps up to `step`; a non-finite one raises.

        `kept`: where the last finite weights are, for the message.
        """
        first = step - len(rows) + 1
        for i, row in enumerate(rows):
            if not all(math.isfinite(v) for v in row):
                raise FloatingPointError(
                    f"{name}: the loss became {row[0]} at step {first + i} (lr "
                    f"{self.lr[first + i - 1]:.2e}). Training stopped; {kept}. "
                    "Lower the lr or check the data."
                )
            for part, value in zip(names, row, strict=True):
                self.train.setdefault(part, []).append(value)

    def record_validation(
        self, step: int, epoch: float, v_loss: float, v_psnr: float, name: str, kept: str
    ) -> str:
        """Append a validation's results (a non-finite one raises); the line to print."""
        if not (math.isfinite(v_loss) and math.isfinite(v_psnr)):
            raise FloatingPointError(
                f"{name}: validation at step {step} gave loss {v_loss}, PSNR {v_psnr}; "
                f"training stopped, {kept}"
            )
        self.val.step.append(step)
        self.val.epoch.append(epoch)
        self.val.loss.append(v_loss)
        self.val.psnr.append(v_psnr)
        base = self.val.base_psnr
        gain = "" if base is None else f" ({v_psnr - base:+.2f} dB over its base upscale)"
        return f"{name} step {step}: val loss {v_loss:.4f}, val PSNR {v_psnr:.2f} dB{gain}"

    def new_phase(self, step: int, change: str) -> None:
        """The data changed at `step`: validations from here on are on other photos."""
        self.phases.append({"step": step, "change": change, "base_psnr": self.val.base_psnr})
        self.val.base_psnr = None  # measured again on this data's validation photos
        for alert in self.alerts:  # they judged the old data
            alert["cleared"] = step
        self.cleared_alerts += self.alerts
        self.alerts = []

    # -- the verdict

    def phase_validations(self) -> tuple[list[int], list[float]]:
        """(steps, PSNRs) of the validations since the data last changed (`fit`'s new_phase).

        Only these are comparable with each other and with the current base_psnr: earlier ones
        were measured on other validation photos.
        """
        start = self.phases[-1]["step"] if self.phases else 0
        kept = [(s, p) for s, p in zip(self.val.step, self.val.psnr, strict=True) if s > start]
        return [s for s, _ in kept], [p for _, p in kept]

    def learning_problem(self) -> str | None:
        """Why the run has not learned (best val PSNR not MIN_GAIN_DB above its base), or None.

        The run as it stands: its best validation (best.pt) of the current data phase.
        """
        base = self.val.base_psnr
        steps, psnrs = self.phase_validations()
        if base is None or not psnrs:
            return None
        best = max(psnrs)
        if best - base >= MIN_GAIN_DB:
            return None
        return (
            f"its best validation PSNR after {len(psnrs)} validations (step {steps[-1]}) "
            f"is {best:.2f} dB, not above the {base:.2f} dB of its own base upscale "
            f"(gain {best - base:+.2f} dB)"
        )

    def judge(self, step: int, name: str, finished: bool, bar: tqdm | None) -> None:
        """After a validation: raise an alert while the run learns nothing, clear it once it does.

        The verdict is on the run as it stands: an alert stays only while it holds. With a
        `bar` (rank 0) alerts and clearings are also said, an alert loudly (NotLearningWarning).
        """
        problem = self.learning_problem()
        if problem is None and self.alerts:
            self._clear_alerts(step, name, bar)
        elif problem and not self.alerts:
            if len(self.phase_validations()[1]) >= STUCK_AFTER_VALIDATIONS or finished:
                self._alert(step, name, problem, bar)

    def _clear_alerts(self, step: int, name: str, bar: tqdm | None) -> None:
        """Move alerts that no longer hold (the run learned after all) to cleared_alerts."""
        for alert in self.alerts:
            alert["cleared"] = step
            if bar is not None:
                bar.write(
                    f"{name} step {step}: learning now; the alert of step {alert['step']} is "
                    "cleared"
                )
        self.cleared_alerts += self.alerts
        self.alerts = []

    def _alert(self, step: int, name: str, message: str, bar: tqdm | None) -> None:
        """Record that the run learns nothing; with a `bar` (rank 0), also say it loudly."""
        text = f"run {name!r} is NOT LEARNING: {message}."
        self.alerts.append({"step": step, "message": text})
        if bar is not None:
            bar.write("\n".join(["!" * 80, "WARNING: " + text, "!" * 80]))
            warnings.warn(text, NotLearningWarning, stacklevel=4)  # at fit's line

    # -- reading

    def best_validation(self) -> tuple[int, float] | None:
        """(step, PSNR) of the best validation of the current data phase; None: none yet."""
        steps, psnrs = self.phase_validations()
        if not psnrs:
            return None
        i = max(range(len(psnrs)), key=psnrs.__getitem__)
        return steps[i], psnrs[i]

    def base_at(self, step: int) -> float | None:
        """The base upscale's validation PSNR in force at `step` (phases change it)."""
        for phase in self.phases:
            if step <= phase["step"]:
                return phase["base_psnr"]  # the base of the phase this one followed
        return self.val.base_psnr


def phase_validations(history: dict | History) -> tuple[list[int], list[float]]:
    """`History.phase_validations` of a history dict."""
    return History.from_dict(history).phase_validations()


def learning_problem(history: dict | History) -> str | None:
    """`History.learning_problem` of a history dict."""
    return History.from_dict(history).learning_problem()


def summarize(history: dict) -> dict:
    """The small part of a training history worth shipping: validation curve and speeds."""
    import numpy as np

    total = history.get("train", {}).get("total", [])
    tail = total[-50:]
    return {
        "val": history.get("val", {}),
        "final_train_loss": float(np.mean(tail)) if tail else None,
        "steps": len(history.get("step", [])),
        "train_seconds": history.get("train_seconds"),
        "samples_per_s": history.get("samples_per_s"),
    }
