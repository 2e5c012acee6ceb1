"""Loss curves show the validation PSNR of the model's own base upscale next to the model's."""

import matplotlib

matplotlib.use("Agg")

from srlib.plots import plot_losses  # noqa: E402


def test_loss_curves_mark_the_base_upscale():
    history = {
        "step": [1, 2, 3, 4],
        "train": {"total": [0.3, 0.2, 0.2, 0.1], "l1": [0.3, 0.2, 0.2, 0.1]},
        "val": {"step": [2, 4], "psnr": [30.0, 30.0], "base_psnr": 30.0},
    }
    fig = plot_losses({"stuck": history})
    psnr_ax = fig.axes[-1]
    flat = [ln for ln in psnr_ax.get_lines() if list(ln.get_ydata()) == [30.0, 30.0]]
    assert len(flat) == 2  # the run's curve, and the base line it never left
    assert "base upscale" in [t.get_text() for t in psnr_ax.get_legend().get_texts()]


def test_loss_curves_draw_the_raw_curve_under_the_smoothed_one():
    import numpy as np

    y = list(np.linspace(1.0, 0.1, 60) + np.tile([0.05, -0.05], 30))
    history = {"step": list(range(1, 61)), "train": {"total": y}, "val": {"step": [], "psnr": []}}
    ax = plot_losses({"run": history}, smooth=10).axes[0]
    raw, smooth = ax.get_lines()[:2]
    assert list(raw.get_ydata()) == y and raw.get_alpha() < 0.5
    assert len(smooth.get_ydata()) == 60 - 10 + 1  # a 10-step moving average
    assert np.ptp(np.diff(smooth.get_ydata())) < np.ptp(np.diff(y))  # the zigzag is gone
    assert smooth.get_label() == "run"


def test_loss_curves_accept_a_history_that_is_still_being_written():
    # While fit runs, 'step' is ahead of the loss parts fetched so far (every log_every steps).
    history = {"step": list(range(1, 31)), "train": {"total": [1.0] * 25}, "val": {"step": []}}
    history["val"]["psnr"] = []
    plot_losses({"live": history})


def test_live_losses_redraw_one_output_in_place(monkeypatch):
    import IPython
    import IPython.display

    from srlib import plots

    shown, updated = [], []

    class Handle:
        def update(self, fig):
            updated.append(fig)

    monkeypatch.setattr(IPython, "get_ipython", lambda: object())
    monkeypatch.setattr(
        IPython.display, "display", lambda fig, display_id: shown.append(fig) or Handle()
    )
    history = {"step": [1, 2], "train": {"total": [0.5, 0.4]}, "val": {"step": [2], "psnr": [30]}}
    live = plots.LiveLosses(every=2)
    for name in ("a", "a", "a", "b", "b", "b"):
        live(name, history)
    assert len(shown) == 1 and len(updated) == 2  # every 2nd validation, one display handle
    assert list(live.histories) == ["a", "b"]  # both runs in the one figure


def test_before_after_splits_at_the_given_fraction():
    import numpy as np
    import torch

    from srlib.plots import before_after, before_after_image

    a, b = np.zeros((4, 10, 3)), np.ones((4, 10, 3))
    out = before_after_image(a, b, 0.3)
    assert (out[:, :2] == 0).all() and (out[:, 4:] == 1).all()  # column 2: the divider
    fig = before_after(torch.zeros(1, 3, 4, 10), torch.ones(1, 3, 4, 10), ("bicubic", "model"))
    assert "bicubic" in fig.axes[0].get_title()
