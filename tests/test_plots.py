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
