"""Peer models for benchmarks only (not part of srlib): ESPCN, a residual CNN, the seed design."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srlib.models import Decoder, ResNetEncoder
from srlib.resize import upsample, upsample_label


class ESPCN(nn.Module):
    """Sub-pixel CNN as in pytorch/examples/super_resolution (Shi et al. 2016), on RGB."""

    def __init__(self, scale: int = 2, channels: int = 64):
        super().__init__()
        self.scale, self.stride = scale, 1
        self.conv1 = nn.Conv2d(3, channels, 5, padding=2)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv3 = nn.Conv2d(channels, channels // 2, 3, padding=1)
        self.conv4 = nn.Conv2d(channels // 2, 3 * scale**2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.config = dict(arch="ESPCN", scale=scale, channels=channels)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(lq))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        return self.shuffle(self.conv4(x))  # (B, 3, h*s, w*s)


class ResidualCNN(nn.Module):
    """A plain residual CNN: convs at LR resolution, a pixel-shuffle head, a bicubic base.

    A 3->`channels` conv, `depth` conv layers of `channels` with ReLU, and a conv to 3 * scale**2
    channels that pixel-shuffles into the residual added to the bicubic upscale (~131 k
    parameters at the defaults). No encoder and no skip levels: the strong plain peer of issue 13.
    """

    def __init__(self, scale: int = 2, channels: int = 48, depth: int = 6, tail_scale: float = 0.1):
        super().__init__()
        self.scale, self.stride = scale, 1
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(channels, 3 * scale**2, 3, padding=1)
        # A small residual at the start (torch's init x tail_scale): training begins near the
        # bicubic base. Not zero: with a zero tail the body's first gradients are zero, Adam
        # turns the noise that follows into full-size steps, and on T91 + BSD200 the ReLUs died
        # (seed 0 ended at bicubic with lr 7e-4 and 1e-3; 0.1 trained at 1e-3:
        # docs/experiments.md, "The peer's start, fixed"). tail_scale=0 is the old zero start.
        self.tail.weight.data.mul_(tail_scale)
        nn.init.zeros_(self.tail.bias)
        self.shuffle = nn.PixelShuffle(scale)
        self.config = dict(
            arch="ResidualCNN", scale=scale, channels=channels, depth=depth, tail_scale=tail_scale
        )

    base_label = upsample_label("bicubic")  # "bicubic (torch)", the kernel srlib's models use

    def base_upscale(self, lq: torch.Tensor) -> torch.Tensor:
        return upsample(lq, self.scale, "bicubic")

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        residual = self.shuffle(self.tail(self.body(lq)))  # (B, 3, h*s, w*s)
        return self.base_upscale(lq) + residual


class SeedUpscaler(nn.Module):
    """Our reading of the seed's design: everything runs on the bilinear upscale, at HR.

    A frozen ResNet18 encoder on the HR-sized bilinear image, a decoder of ResNet blocks whose
    last, 128-channel block runs at full HR resolution, and a conv predicting the residual.
    """

    def __init__(self, scale: int = 2, width: int = 128, pretrained: bool = False):
        super().__init__()
        self.scale = scale
        self.encoder = ResNetEncoder(3, pretrained=pretrained, download=False)
        self.stride = self.encoder.stride
        self.decoder = Decoder(self.encoder.out_channels, (width, width, width))
        self.out = nn.Conv2d(width, 3, 3, padding=1)
        self.config = dict(arch="SeedUpscaler", scale=scale, width=width)

    base_label = upsample_label("bilinear")  # "bilinear (torch)", as figures show it

    def base_upscale(self, lq: torch.Tensor) -> torch.Tensor:
        return upsample(lq, self.scale, "bilinear")

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        base = self.base_upscale(lq)  # (B, 3, H, W): the network works at HR from the start
        return base + self.out(self.decoder(self.encoder(base)))


# Peers by short name, for model specs ("rescnn(channels=32)"): see `build`.
PEERS: dict[str, type[nn.Module]] = {"espcn": ESPCN, "rescnn": ResidualCNN, "seed": SeedUpscaler}


def build(spec: str, scale: int) -> nn.Module:
    """A model from a spec naming an srlib model ("unet(refine_blocks=4)") or a peer ("espcn")."""
    from srlib.registry import MODELS, parse_model_spec

    models = {**MODELS, **PEERS}  # srlib's (srlib.registry: unet, resnet, compact, span), peers
    name, kwargs = parse_model_spec(spec, models)
    return models[name](scale=scale, **kwargs)
