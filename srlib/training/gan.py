"""Adversarial training (TrainConfig.gan): the discriminator's half of a GAN run."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from srlib.models import PatchDiscriminator, UNetDiscriminator

if TYPE_CHECKING:
    from srlib.training.config import TrainConfig


class GanTrainer:
    """The adversarial half of a GAN run (TrainConfig.gan): a discriminator, its Adam, its losses.

    Non-saturating losses, as in Real-ESRGAN: the generator adds `gan_weight` * BCE(D(sr), real)
    (part "g_adv") to its loss; the discriminator minimises BCE(D(gt), real) + BCE(D(sr), fake)
    (parts "d_real", "d_fake"; ln 2 = 0.69 each when it cannot tell them apart). The
    discriminator is frozen (no gradients, eval mode) outside `discriminator_step`, so in the
    generator's step only sr gets gradients, and spectral norm's power iteration (a train-mode
    update of its state) runs once per discriminator step. It trains at a constant lr, in fp32.
    """

    def __init__(self, cfg: TrainConfig, device: torch.device):
        kinds = {"unet": UNetDiscriminator, "patch": PatchDiscriminator}
        with torch.random.fork_rng(devices=[]):  # seeded, and the run's RNG stream untouched
            torch.manual_seed(cfg.seed)
            self.net = kinds[cfg.gan]()
        self.net.to(device, memory_format=torch.channels_last).eval().requires_grad_(False)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.gan_lr, betas=(0.9, 0.99))
        self.weight = cfg.gan_weight

    def generator_loss(
        self, sr: torch.Tensor, loss: torch.Tensor, parts: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`loss` and its `parts` with the adversarial part on sr (B, 3, H, W) added."""
        logits = self.net(sr.float())
        g_adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return loss + self.weight * g_adv, {**parts, "g_adv": g_adv.detach()}

    def discriminator_step(self, sr: torch.Tensor, gt: torch.Tensor) -> dict[str, torch.Tensor]:
        """One optimiser step of the discriminator, gt real and sr fake; its loss parts."""
        self.net.train().requires_grad_(True)
        # Both in one batch: one forward, and one power iteration per step.
        real, fake = self.net(torch.cat([gt, sr.detach().float()])).chunk(2)
        d_real = F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        d_fake = F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        self.opt.zero_grad(set_to_none=True)
        (d_real + d_fake).backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)  # no gradients left lying outside its step
        self.net.eval().requires_grad_(False)
        return {"d_real": d_real.detach(), "d_fake": d_fake.detach()}

    def state_dict(self) -> dict:
        """The discriminator's weights (spectral norm's state too) and its optimizer's state."""
        return {"discriminator": self.net.state_dict(), "optimizer": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.net.load_state_dict(state["discriminator"])
        self.opt.load_state_dict(state["optimizer"])
