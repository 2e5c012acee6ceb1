"""Figures for the notebooks: data preview, loss curves, comparison grids with zoomed insets."""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from srlib.training.history import History

# A GAN run's loss parts (srlib.training.gan): BCEs, ln 2 each when the discriminator cannot tell.
ADVERSARIAL_PARTS = ("g_adv", "d_real", "d_fake")


def to_numpy(img: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor in [0, 1] -> (H, W, 3) float array clipped to [0, 1]."""
    img = img.detach().float().cpu()
    if img.dim() == 4:
        img = img[0]
    return img.clamp(0, 1).permute(1, 2, 0).numpy()


def show_residual(res: torch.Tensor) -> np.ndarray:
    """Signed residual (3, H, W) -> grey-centred image; the scale is shared per call site."""
    res = res.detach().float().cpu()
    if res.dim() == 4:
        res = res[0]
    return (0.5 + res.permute(1, 2, 0).numpy() / (2 * 0.15)).clip(0, 1)  # +-0.15 spans the range


def preview_pairs(dataset, n: int = 4, title: str = "") -> Figure:
    """A row of (lq, gt) training pairs as the model sees them."""
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4))
    for i in range(n):
        lq, gt = dataset[i]
        axes[0, i].imshow(to_numpy(lq), interpolation="nearest")
        axes[1, i].imshow(to_numpy(gt), interpolation="nearest")
        axes[0, i].set_title(f"lq {tuple(lq.shape[-2:])}", fontsize=9)
        axes[1, i].set_title(f"gt {tuple(gt.shape[-2:])}", fontsize=9)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title or "training pairs (random crops, rescaled)")
    fig.tight_layout()
    return fig


def _smooth(y: Sequence[float], k: int) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    if k <= 1 or len(y) < k:
        return y
    return np.convolve(y, np.ones(k) / k, mode="valid")


def _raw_and_smooth(ax, steps: np.ndarray, y: Sequence[float], k: int, color: str, name: str):
    """The raw per-step curve, faint, under its k-step moving average (labelled)."""
    ax.plot(steps[: len(y)], y, color=color, alpha=0.2, lw=0.6)
    smooth = _smooth(y, k)
    ax.plot(steps[len(y) - len(smooth) : len(y)], smooth, color=color, label=name)


def plot_losses(
    histories: Mapping[str, dict | History], title: str = "", smooth: int = 10
) -> Figure:
    """Per model: training loss (linear and log), each loss part, and validation PSNR.

    Training curves are drawn raw (faint) with a `smooth`-step moving average over them.
    `histories`: {name: what `fit` returned (or history.json holds)}.
    """
    runs = {name: History.from_dict(h) for name, h in histories.items()}
    parts = sorted({p for h in runs.values() for p in h.train if p != "total"})
    ncols = 3 + len(parts)
    fig, axes = plt.subplots(1, ncols, figsize=(3.6 * ncols, 3.4))
    for i, (name, h) in enumerate(runs.items()):
        color = f"C{i}"  # one colour per model in every panel, matching the legend
        # While training, `step` can run a few entries ahead of the parts fetched so far.
        steps = np.asarray(h.step)
        k = min(smooth, max(1, len(h.train.get("total", [])) // 5))
        for ax in axes[:2]:
            _raw_and_smooth(ax, steps, h.train.get("total", []), k, color, name)
        for ax, part in zip(axes[2 : 2 + len(parts)], parts, strict=True):
            if part in h.train:
                _raw_and_smooth(ax, steps, h.train[part], k, color, name)
        axes[-1].plot(h.val.step, h.val.psnr, "o-", color=color, label=name)
        base = h.val.base_psnr
        if base is not None:  # a curve that stays on this line is a run that learned nothing
            axes[-1].axhline(base, color=color, ls=":", lw=1)
    if any(h.val.base_psnr is not None for h in runs.values()):
        axes[-1].plot([], [], "k:", lw=1, label="base upscale")
        axes[-1].legend(fontsize=8)
    axes[0].set_title("train loss (total)")
    axes[1].set_title("train loss (total, log)")
    axes[1].set_yscale("log")
    for ax, part in zip(axes[2 : 2 + len(parts)], parts, strict=True):
        ax.set_title(f"part: {part}")
        ax.set_yscale("log")
        if part in ADVERSARIAL_PARTS:  # a GAN's balance: which side of ln 2 each BCE is on
            ax.axhline(math.log(2), color="k", ls=":", lw=1, label="ln 2 (D at chance)")
            ax.legend(fontsize=8)
    axes[-1].set_title("validation PSNR (RGB, dB)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def _inset(ax, img: np.ndarray, box: tuple[int, int, int]) -> None:
    """Draw the zoom box on `ax` and a magnified copy of it in the lower-right corner."""
    y, x, s = box
    ax.add_patch(Rectangle((x, y), s, s, fill=False, edgecolor="yellow", linewidth=1))
    inset = ax.inset_axes([0.55, 0.0, 0.45, 0.45])
    inset.imshow(img[y : y + s, x : x + s], interpolation="nearest")
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor("yellow")


def _panel(ax, label: str, img: np.ndarray, box: tuple[int, int, int]) -> None:
    """One titled image panel without axes, with its zoomed inset."""
    ax.imshow(img, interpolation="nearest")
    ax.set_title(label, fontsize=9)
    ax.axis("off")
    _inset(ax, img, box)


def _detail_box(gt: np.ndarray, size: int) -> tuple[int, int, int]:
    """The size x size window with the most gradient energy: where upscalers differ most."""
    g = np.abs(np.diff(gt.mean(2), axis=0))[:, :-1] + np.abs(np.diff(gt.mean(2), axis=1))[:-1]
    h, w = g.shape
    step = max(1, size // 4)
    best, where = -1.0, (0, 0)
    for y in range(0, max(1, h - size), step):
        for x in range(0, max(1, w - size), step):
            e = g[y : y + size, x : x + size].sum()
            if e > best:
                best, where = e, (y, x)
    return (*where, size)


@torch.no_grad()
def comparison_grid(models: Mapping[str, torch.nn.Module], lq: torch.Tensor, gt: torch.Tensor,
                    title: str = "", zoom: int | None = None) -> Figure:  # fmt: skip
    """One row per model: lq, its base upscale, prediction, gt, raw residual, residual target.

    `lq` (1, 3, h, w) and `gt` (1, 3, H, W) in [0, 1]. Residuals are relative to each model's
    own base upscale (`sr - base` and `gt - base`), shown on the same grey-centred scale.
    """
    rows = len(models)
    fig, axes = plt.subplots(rows, 6, figsize=(13, 2.4 * rows + 0.6), squeeze=False)
    gt_np = to_numpy(gt)
    box = _detail_box(gt_np, zoom or max(16, min(gt_np.shape[:2]) // 6))
    for r, (name, model) in enumerate(models.items()):
        model.eval()
        device = next(model.parameters()).device
        sr = model(lq.to(device)).cpu()
        base = model.base_upscale(lq.to(device)).cpu()
        panels = [
            ("lq (nearest)", to_numpy(upsample_nearest(lq, gt.shape[-2:]))),
            # "bicubic (torch)", not a bare "bicubic": tables' "bicubic (MATLAB)" is another kernel
            (getattr(model, "base_label", "base upscale"), to_numpy(base)),
            (f"{name}", to_numpy(sr)),
            ("ground truth", gt_np),
            ("residual output (sr - base)", show_residual(sr - base)),
            ("residual target (gt - base)", show_residual(gt - base)),
        ]
        for ax, (label, img) in zip(axes[r], panels, strict=True):
            _panel(ax, label, img, box)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def upsample_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour resize to `size` (H, W): shows the pixels the model really gets."""
    return torch.nn.functional.interpolate(x, size=tuple(size), mode="nearest")


def side_by_side(images: Mapping[str, torch.Tensor], title: str = "",
                 zoom: int | None = None, ncols: int | None = None) -> Figure:  # fmt: skip
    """Images of one size side by side with the same zoomed inset, e.g. bicubic x4 vs model x4.

    `ncols` wraps the panels into rows (default: one row).
    """
    arrays = {k: to_numpy(v) for k, v in images.items()}
    first = next(iter(arrays.values()))
    box = _detail_box(arrays.get("ground truth", first), zoom or max(16, min(first.shape[:2]) // 6))
    ncols = ncols or len(arrays)
    nrows = -(-len(arrays) // ncols)
    aspect = first.shape[0] / first.shape[1]
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, (3.6 * aspect + 0.4) * nrows), squeeze=False
    )
    for ax in axes.flat[len(arrays) :]:
        ax.axis("off")
    for ax, (label, img) in zip(axes.flat, arrays.items(), strict=False):
        _panel(ax, label, img, box)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


class LiveLosses:
    """Loss curves redrawn in place while `fit` runs: `fit(..., on_validation=partial(live, name))`.

    One figure for every run it is given (a new image replaces the old one in the same output,
    so the cell does not fill up with figures), redrawn every `every` validations. Outside
    IPython it only collects the histories.
    """

    def __init__(self, title: str = "", every: int = 2):
        self.title, self.every = title, every
        self.histories: dict[str, dict] = {}
        self.calls, self.handle = 0, None

    def __call__(self, name: str, history: dict) -> None:
        self.histories[name] = history
        self.calls += 1
        if self.calls % self.every:
            return
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        fig = plot_losses(self.histories, title=self.title + " (live)")
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)  # the output keeps the image; don't let matplotlib show it again


def before_after_image(before: np.ndarray, after: np.ndarray, split: float) -> np.ndarray:
    """(H, W, 3) arrays -> `before` left of the split (a fraction of the width), `after` right."""
    out = after.copy()
    x = int(round(split * out.shape[1]))
    out[:, :x] = before[:, :x]
    out[:, max(0, x - 1) : x + 1] = (1.0, 1.0, 0.0)  # a thin yellow divider
    return out


def before_after(before: torch.Tensor, after: torch.Tensor, labels: tuple[str, str] = ("before",
                 "after"), title: str = "") -> Figure:  # fmt: skip
    """A split view of two upscales of one photo, with a slider when ipywidgets can show one.

    Returns the static figure (split in the middle). In IPython it is shown at once, followed
    by a slider that moves the split in a live session (committed notebooks keep the figure).
    """
    a, b = to_numpy(before), to_numpy(after)
    if a.shape != b.shape:
        raise ValueError(f"before {a.shape} and after {b.shape} must have the same shape")
    fig, ax = plt.subplots(figsize=(8, 8 * a.shape[0] / a.shape[1] + 0.5))
    ax.imshow(before_after_image(a, b, 0.5), interpolation="nearest")
    ax.set_title(f"{title}\nleft: {labels[0]}   |   right: {labels[1]}", fontsize=10)
    ax.axis("off")
    fig.tight_layout()
    try:
        import ipywidgets as widgets
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return fig
    if get_ipython() is None:
        return fig
    display(fig)
    plt.close(fig)  # shown once, above the slider

    def png(split: float) -> bytes:
        buf = io.BytesIO()
        plt.imsave(buf, before_after_image(a, b, split), format="png")
        return buf.getvalue()

    view = widgets.Image(value=png(0.5), format="png", layout=widgets.Layout(width="100%"))
    slider = widgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.01, description=labels[0][:12],
                                 readout=False, layout=widgets.Layout(width="100%"))  # fmt: skip
    slider.observe(lambda change: setattr(view, "value", png(change["new"])), names="value")
    display(widgets.VBox([widgets.Label(f"drag: {labels[0]} (left) / {labels[1]} (right)"),
                          slider, view]))  # fmt: skip
    return fig
