"""Figures for the notebooks: data preview, loss curves, comparison grids with zoomed insets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle


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


def plot_losses(histories: Mapping[str, dict], title: str = "", smooth: int = 10) -> Figure:
    """Per model: training loss (linear and log), each loss part, and validation PSNR."""
    parts = sorted({p for h in histories.values() for p in h["train"] if p != "total"})
    ncols = 3 + len(parts)
    fig, axes = plt.subplots(1, ncols, figsize=(3.6 * ncols, 3.4))
    for i, (name, h) in enumerate(histories.items()):
        color = f"C{i}"  # one colour per model in every panel, matching the legend
        steps = np.asarray(h["step"])
        k = min(smooth, max(1, len(steps) // 5))
        x = steps[k - 1 :] if len(steps) >= k else steps
        for ax in axes[:2]:
            ax.plot(x, _smooth(h["train"]["total"], k), color=color, label=name)
        for ax, part in zip(axes[2 : 2 + len(parts)], parts, strict=True):
            if part in h["train"]:
                ax.plot(x, _smooth(h["train"][part], k), color=color, label=name)
        axes[-1].plot(h["val"]["step"], h["val"]["psnr"], "o-", color=color, label=name)
        base = h["val"].get("base_psnr")
        if base is not None:  # a curve that stays on this line is a run that learned nothing
            axes[-1].axhline(base, color=color, ls=":", lw=1)
    if any(h["val"].get("base_psnr") is not None for h in histories.values()):
        axes[-1].plot([], [], "k:", lw=1, label="base upscale")
        axes[-1].legend(fontsize=8)
    axes[0].set_title("train loss (total)")
    axes[1].set_title("train loss (total, log)")
    axes[1].set_yscale("log")
    for ax, part in zip(axes[2 : 2 + len(parts)], parts, strict=True):
        ax.set_title(f"part: {part}")
        ax.set_yscale("log")
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
            (getattr(model.head, "base", "base"), to_numpy(base)),
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
                 zoom: int | None = None) -> Figure:  # fmt: skip
    """Images of one size side by side with the same zoomed inset, e.g. bicubic x4 vs model x4."""
    arrays = {k: to_numpy(v) for k, v in images.items()}
    first = next(iter(arrays.values()))
    box = _detail_box(arrays.get("ground truth", first), zoom or max(16, min(first.shape[:2]) // 6))
    fig, axes = plt.subplots(1, len(arrays), figsize=(3 * len(arrays), 3.4), squeeze=False)
    for ax, (label, img) in zip(axes[0], arrays.items(), strict=True):
        _panel(ax, label, img, box)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
