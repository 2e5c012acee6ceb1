"""Losses. Each returns `(total, parts)` so notebooks can plot every term.

`PerceptualLoss` follows Johnson et al. (2016) with a frozen ImageNet ResNet18: L1 between the
features of `sr` and `gt` after the first 3 children (conv1, bn1, relu: edges, at 1/2
resolution) and after 6 children (... maxpool, layer1, layer2: texture, at 1/8), plus a small
L1 on the image itself, because classifier features are nearly blind to hue and brightness
shifts and the colours would drift without it.

`SharpnessLoss` rewards high-frequency detail, which a pixel L1 under-weights (a blurred edge
costs it little); `WithSharpness` adds it to any of these losses as one more part, "sharp".
"""

from __future__ import annotations

import math

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


class SharpnessLoss(nn.Module):
    """L1 between the image gradients ("gradient") or the FFT amplitudes ("fft") of sr and gt.

    "gradient": finite differences along x and y, per channel; the mean of the two L1s. A
    brightness offset costs nothing, while an edge blurred over just 2 pixels costs about its
    full height per pixel along it (the pixel L1 half of that). "fft": L1 between
    the amplitudes of `rfft2` with norm="ortho" (a unitary transform, so a coefficient has the
    scale of a pixel), blind to phase: it asks for the right amount of energy at each
    frequency, and weighs every frequency alike where a pixel loss weighs them by their
    (mostly low-frequency) error. At init (a fresh UNet, i.e. its bicubic base, on 96 px
    crops of the embedded photos) "gradient" is 1.2x and "fft" 0.96x the pixel L1, so a
    weight of 1 means about as much as the pixel term. Both compute in float32 (bf16
    differences of neighbouring pixels lose most of their bits; the FFT has no bf16 kernels).
    """

    KINDS = ("gradient", "fft")

    def __init__(self, kind: str = "gradient"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"sharpness kind must be one of {self.KINDS}, got {kind!r}")
        self.kind = kind

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        sr, gt = sr.float(), gt.float()  # (B, C, H, W); any memory layout
        if self.kind == "gradient":
            dx = F.l1_loss(sr.diff(dim=-1), gt.diff(dim=-1))  # (B, C, H, W - 1) differences
            dy = F.l1_loss(sr.diff(dim=-2), gt.diff(dim=-2))  # (B, C, H - 1, W)
            return 0.5 * (dx + dy)
        # Autocast off: inside a caller's bf16 region the float32 FFT must stay float32.
        with torch.autocast(sr.device.type, enabled=False):
            amp_sr = torch.fft.rfft2(sr, norm="ortho").abs()  # (B, C, H, W // 2 + 1)
            amp_gt = torch.fft.rfft2(gt, norm="ortho").abs()
            return F.l1_loss(amp_sr, amp_gt)


class WithSharpness(nn.Module):
    """`base_loss` plus `weight` * SharpnessLoss(kind); parts are the base's and "sharp".

    train() and eval() reach the base, whose own override keeps a frozen network frozen.
    """

    def __init__(self, base_loss: nn.Module, weight: float, kind: str = "gradient"):
        super().__init__()
        if not 0 <= weight < math.inf:
            raise ValueError(f"sharpness weight must be a finite number >= 0, got {weight}")
        self.base, self.weight = base_loss, float(weight)
        self.sharp = SharpnessLoss(kind)
        # Forwarded, because benchmarks look for it on the loss module itself, not its children.
        if hasattr(base_loss, "has_imagenet_weights"):
            self.has_imagenet_weights = base_loss.has_imagenet_weights

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, Parts]:
        total, parts = self.base(sr, gt)
        if "sharp" in parts:
            raise ValueError("the base loss already has a part named 'sharp'")
        sharp = self.sharp(sr, gt)
        return total + self.weight * sharp, {**parts, "sharp": sharp.detach()}


# make_loss's names (TrainConfig.loss).
LOSSES = ("l1", "l2", "perceptual")


def make_loss(
    name: str, pretrained: bool = True, sharpness: float = 0.0, sharpness_kind: str = "gradient"
) -> nn.Module:
    """'l1', 'l2' or 'perceptual' -> a loss module returning (total, parts).

    sharpness > 0 adds `sharpness` * SharpnessLoss(sharpness_kind) (`WithSharpness`); 0 gives
    the plain loss.
    """
    if not 0 <= sharpness < math.inf:
        raise ValueError(f"sharpness must be a finite number >= 0, got {sharpness}")
    if sharpness_kind not in SharpnessLoss.KINDS:
        raise ValueError(
            f"sharpness_kind must be one of {SharpnessLoss.KINDS}, got {sharpness_kind!r}"
        )
    if name in ("l1", "l2"):
        loss: nn.Module = PixelLoss(name)
    elif name == "perceptual":
        loss = PerceptualLoss(pretrained=pretrained)
    else:
        raise ValueError(f"unknown loss {name!r}: use 'l1', 'l2' or 'perceptual'")
    return WithSharpness(loss, sharpness, sharpness_kind) if sharpness > 0 else loss
