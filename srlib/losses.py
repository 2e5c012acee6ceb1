"""Losses. Each returns `(total, parts)` so notebooks can plot every term.

`PerceptualLoss` follows Johnson et al. (2016) with a frozen ImageNet ResNet18: L1 between the
features of `sr` and `gt` after the first 3 children (conv1, bn1, relu: edges, at 1/2
resolution) and after 6 children (... maxpool, layer1, layer2: texture, at 1/8), plus a small
L1 on the image itself, because classifier features are nearly blind to hue and brightness
shifts and the colours would drift without it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srlib.models import IMAGENET_MEAN, IMAGENET_STD, load_resnet18

Parts = dict[str, torch.Tensor]


class PixelLoss(nn.Module):
    """L1 or L2 (mean squared error) between `sr` and `gt`."""

    def __init__(self, kind: str = "l1"):
        super().__init__()
        if kind not in ("l1", "l2"):
            raise ValueError(f"kind must be 'l1' or 'l2', got {kind!r}")
        self.kind = kind

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, Parts]:
        loss = F.l1_loss(sr, gt) if self.kind == "l1" else F.mse_loss(sr, gt)
        return loss, {self.kind: loss.detach()}


class PerceptualLoss(nn.Module):
    """Weighted sum of ResNet18 feature L1 terms and an image L1 term; returns total and parts."""

    DEFAULT_WEIGHTS = {"feat3": 1.0, "feat6": 1.0, "pixel": 0.01}

    def __init__(
        self,
        weights: dict[str, float] | None = None,
        pretrained: bool = True,
        download: bool = True,
    ):
        super().__init__()
        self.weights = dict(self.DEFAULT_WEIGHTS if weights is None else weights)
        unknown = set(self.weights) - {"pixel"} - {f"feat{n}" for n in range(1, 9)}
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; use pixel, feat1..feat8")
        net, self.has_imagenet_weights = load_resnet18(pretrained, download)
        # Keep only the children we need: feat6 needs children[:6] (up to layer2).
        self.taps = sorted(int(k[4:]) for k in self.weights if k.startswith("feat"))
        self.trunk = nn.Sequential(*list(net.children())[: max(self.taps, default=0)])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        """A loss network is frozen: BatchNorm statistics stay fixed."""
        return super().train(False)

    def features(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Features after each tapped child, e.g. {3: (B, 64, H/2, W/2), 6: (B, 128, H/8, W/8)}."""
        out, x = {}, (x - self.mean) / self.std
        for i, child in enumerate(self.trunk, start=1):
            x = child(x)
            if i in self.taps:
                out[i] = x
        return out

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, Parts]:
        parts: Parts = {}
        if self.taps:
            sr_feats = self.features(sr)
            with torch.no_grad():  # the target needs no graph
                gt_feats = self.features(gt)
            for n in self.taps:
                parts[f"feat{n}"] = F.l1_loss(sr_feats[n], gt_feats[n])
        if "pixel" in self.weights:
            parts["pixel"] = F.l1_loss(sr, gt)
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, {k: v.detach() for k, v in parts.items()}


def make_loss(name: str, pretrained: bool = True) -> nn.Module:
    """'l1', 'l2' or 'perceptual' -> a loss module returning (total, parts)."""
    if name in ("l1", "l2"):
        return PixelLoss(name)
    if name == "perceptual":
        return PerceptualLoss(pretrained=pretrained)
    raise ValueError(f"unknown loss {name!r}: use 'l1', 'l2' or 'perceptual'")
