"""An exponential moving average of a model's weights (TrainConfig.ema)."""

from __future__ import annotations

import copy

import torch

from srlib.models import Upscaler


class Ema:
    """An exponential moving average of a model's weights (TrainConfig.ema), buffers copied.

    After every optimiser step: avg = decay * avg + (1 - decay) * w. It smooths out the last
    steps' noise, which a GAN's moving target makes larger.
    """

    def __init__(self, model: Upscaler, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: Upscaler) -> None:
        """Move the average towards `model`'s current weights."""
        for avg, w in zip(self.model.parameters(), model.parameters(), strict=True):
            if w.requires_grad:  # a frozen weight (the ResNet encoder's) stays exactly equal
                avg.mul_(self.decay).add_(w, alpha=1 - self.decay)
        for avg, b in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(b)

    def copy_to(self, model: Upscaler) -> None:
        """Load the averaged weights into `model`."""
        model.load_state_dict(self.model.state_dict())
