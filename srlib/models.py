"""Upscalers: two encoders, one decoder, one residual upscaler head.

Every model maps `lq` (B, 3, h, w) in [0, 1] to `sr` (B, 3, h*scale, w*scale). The contract
(borrowed from segmentation_models_pytorch) is the `Encoder` protocol: an encoder returns a list
of feature maps, highest resolution first, and exposes `out_channels` and `stride`; the
`Decoder` derives all its widths from `out_channels`, so the same decoder serves the plain UNet
encoder and the frozen ResNet18 encoder, and tiled inference (srlib.infer) aligns tiles to
`stride`.

All the work runs at LR resolution: the head predicts the *difference* to a classic upscale of
`lq` (torch's bicubic or bilinear, `srlib.resize.upsample`; shown as e.g. "bicubic (torch)",
which is not MATLAB's bicubic) as 3 * scale**2 values per LR pixel and pixel-shuffles them to HR.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from srlib.resize import KERNELS, upsample_label
from srlib.resize import upsample as upsample  # re-exported: models.upsample still works

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ----------------------------------------------------------------------------------------------
# ImageNet ResNet18 weights (shared with the perceptual loss)


_FAILED_DOWNLOADS: dict[str, str] = {}  # weights path -> why fetching it failed


def resnet18_weights_path() -> str:
    """Where torchvision caches the ImageNet ResNet18 weights (under TORCH_HOME)."""
    from torchvision.models import ResNet18_Weights

    filename = os.path.basename(ResNet18_Weights.IMAGENET1K_V1.url)
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def load_resnet18(pretrained: bool = True, download: bool = True) -> tuple[nn.Module, bool]:
    """A torchvision ResNet18 with ImageNet weights if obtainable; returns (net, has_weights).

    Weights come from the standard TORCH_HOME cache, or are downloaded there when `download`
    is true. When neither works the net keeps its random init and a loud warning is issued,
    so a notebook never silently trains against a random "pretrained" network.
    """
    from torchvision.models import ResNet18_Weights, resnet18

    net = resnet18(weights=None)
    if not pretrained:
        return net, False
    weights = ResNet18_Weights.IMAGENET1K_V1
    path = resnet18_weights_path()
    if not os.path.exists(path) and not download:
        reason = f"not cached at {path} and download=False"
    elif not os.path.exists(path) and path in _FAILED_DOWNLOADS:
        reason = _FAILED_DOWNLOADS[path]  # failed earlier in this process: don't retry
    else:
        try:
            # Reads the cached file when present, else downloads it into the cache.
            net.load_state_dict(weights.get_state_dict(progress=False))
            return net, True
        except Exception as err:  # offline, partial file, wrong shapes: all mean "no weights"
            reason = f"{type(err).__name__}: {err}"
            _FAILED_DOWNLOADS[path] = reason
    warnings.warn(
        f"ImageNet ResNet18 weights are NOT available ({reason}). Using a RANDOM ResNet18: "
        "results will be worse than with pretrained weights. See README, 'ImageNet weights'.",
        stacklevel=3,
    )
    return net, False


# ----------------------------------------------------------------------------------------------
# Building blocks


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution that keeps the spatial size (or halves it at stride 2, rounding up)."""
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)


class ResBlock(nn.Module):
    """conv-ReLU-conv plus identity; no BatchNorm (as in EDSR: BN hurts SR and tiling).

    `zero_init` starts the block as the identity (its last conv zero, as in SkipInit/Fixup):
    a deep stack of them then starts as a shallow network and trains like one at first.
    """

    def __init__(self, channels: int, res_scale: float = 1.0, zero_init: bool = False):
        super().__init__()
        self.conv1 = conv3x3(channels, channels)
        self.conv2 = conv3x3(channels, channels)
        self.res_scale = res_scale
        if zero_init:
            nn.init.zeros_(self.conv2.weight)
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv2(F.relu(self.conv1(x), inplace=True))
        if self.res_scale != 1.0:  # x 1.0 is exact but costs a pass over the features
            residual = residual * self.res_scale
        return x + residual


# ----------------------------------------------------------------------------------------------
# Encoders: forward(lq) -> list of features, highest resolution first; `out_channels`, `stride`.


@runtime_checkable
class Encoder(Protocol):
    """What the Decoder, the head and tiled inference need from an encoder (an nn.Module).

    `forward(lq)` with lq (B, 3, h, w) returns one feature map per level, highest resolution
    first: level i is (B, out_channels[i], h_i, w_i), level 0 at the input's size (h, w) (the
    decoder returns there, and the head works at LR resolution), the deepest at
    (ceil(h / stride), ceil(w / stride)). `stride` is that total downsampling: tiles whose
    origins are multiples of it see the same features as the whole image (srlib.infer).
    """

    out_channels: tuple[int, ...]
    stride: int

    def forward(self, lq: torch.Tensor) -> list[torch.Tensor]: ...


class UNetEncoder(nn.Module):
    """Plain conv encoder trained from scratch: double convs, stride-2 convs between levels.

    Args:
        channels: channels per level, level 0 (full LR resolution) first; each further level
            halves the resolution (stride = 2 ** (len(channels) - 1)).
    """

    out_channels: tuple[int, ...]  # the Encoder protocol
    stride: int

    def __init__(self, channels: Sequence[int] = (32, 32, 64)):
        super().__init__()
        chs = list(channels)
        if not chs or min(chs) < 1:
            raise ValueError(f"channels must be one or more positive widths, got {channels}")
        self.stages = nn.ModuleList()
        for i, ch in enumerate(chs):
            in_ch = 3 if i == 0 else chs[i - 1]
            stride = 1 if i == 0 else 2  # stride 2 rounds odd sizes up; the decoder copes
            self.stages.append(
                nn.Sequential(
                    conv3x3(in_ch, ch, stride),
                    nn.ReLU(inplace=True),
                    conv3x3(ch, ch),
                    nn.ReLU(inplace=True),
                )
            )
        self.out_channels = tuple(chs)
        self.stride = 2 ** (len(chs) - 1)

    def forward(self, lq: torch.Tensor) -> list[torch.Tensor]:
        feats, x = [], lq
        for stage in self.stages:
            x = stage(x)
            feats.append(x)  # level i: (B, chs[i], h / 2**i, w / 2**i)
        return feats


class ResNetEncoder(nn.Module):
    """Frozen first blocks of an ImageNet ResNet18: no gradients, BatchNorm always in eval.

    Features: [lq (3, h), stem (64, h/2), layer1 (64, h/4), layer2 (128, h/8)] for depth 3;
    `depth` 4 adds layer3 (256, h/16). The raw input is the full-resolution level, as in
    segmentation_models_pytorch, so the decoder can return to LR resolution.

    `feature_scale` multiplies the ResNet features (not lq) handed to the decoder. Adam moves
    every weight by about lr per step, so a decoder layer's output moves by about
    lr * sum(|input|) per step. A trainable encoder starts with small features (mean ~0.01
    with PyTorch's default init) and grows them as it learns; frozen ResNet18 features are
    ~1 per channel from the first step, random weights or ImageNet ones alike. At full scale
    the decoder's early steps were ~100x larger than the UNet's, and most runs collapsed to
    the bicubic base. With 0.1, 10 of 10 short runs learn, with random weights and with
    realistic BatchNorm statistics; before, 1 of 10 did (`benchmarks/collapse.py`, README
    "Training that never silently fails").

    Args:
        depth: ResNet18 stages used, 1..5 (stem, layer1, ..., layer4); stride = 2**depth.
        pretrained: load ImageNet weights (from the cache, or downloaded); else random init.
        download: allow downloading the weights when they are not cached.
        feature_scale: factor on the ResNet features handed to the decoder (see above).
    """

    out_channels: tuple[int, ...]  # the Encoder protocol
    stride: int

    def __init__(
        self,
        depth: int = 3,
        pretrained: bool = True,
        download: bool = True,
        feature_scale: float = 0.1,
    ):
        super().__init__()
        if not 1 <= depth <= 5:
            raise ValueError(f"ResNetEncoder depth must be in 1..5, got {depth}")
        self.feature_scale = feature_scale
        net, self.has_imagenet_weights = load_resnet18(pretrained, download)
        stages = [
            nn.Sequential(net.conv1, net.bn1, net.relu),  # /2
            nn.Sequential(net.maxpool, net.layer1),  # /4
            net.layer2,  # /8
            net.layer3,  # /16
            net.layer4,  # /32
        ]
        self.stages = nn.ModuleList(stages[:depth])
        self.out_channels = (3, 64, 64, 128, 256, 512)[: depth + 1]
        self.stride = 2**depth
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ResNetEncoder:
        """Ignore train(): a frozen encoder keeps BatchNorm running stats in eval mode."""
        return super().train(False)

    def forward(self, lq: torch.Tensor) -> list[torch.Tensor]:
        feats = [lq]
        x = (lq - self.mean) / self.std  # ImageNet normalisation lives here, data stays [0, 1]
        for stage in self.stages:
            x = stage(x)  # the next stage gets the features as ResNet18 made them...
            feats.append(x * self.feature_scale)  # ...the decoder gets them scaled (docstring)
        return feats


# ----------------------------------------------------------------------------------------------
# Decoder and head, shared by both models


class DecoderBlock(nn.Module):
    """Fuse upsampled deeper features with a skip: conv3x3 + ReLU, then a ResBlock."""

    def __init__(self, in_ch: int, out_ch: int, zero_init: bool = False):
        super().__init__()
        self.fuse = conv3x3(in_ch, out_ch)
        self.res = ResBlock(out_ch, zero_init=zero_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(F.relu(self.fuse(x), inplace=True))


class Decoder(nn.Module):
    """UNet decoder for any encoder: widths follow `encoder_channels`, output at level 0.

    Args:
        encoder_channels: the encoder's `out_channels`, highest resolution first.
        decoder_channels: output channels of each decoder block, deepest first; one per skip
            level (len(encoder_channels) - 1). The last one is the decoder's `out_channels`.
        refine_blocks: ResBlocks after the last decoder block, at full LR resolution: where
            capacity pays most per CPU-second (README, "Quality per CPU-minute").
        zero_init: every ResBlock starts as the identity (`ResBlock`).
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        decoder_channels: Sequence[int],
        refine_blocks: int = 0,
        zero_init: bool = False,
    ):
        super().__init__()
        if len(decoder_channels) != len(encoder_channels) - 1:
            raise ValueError(
                f"need one decoder width per skip level: {len(encoder_channels) - 1} "
                f"(encoder_channels={tuple(encoder_channels)}), got {tuple(decoder_channels)}"
            )
        in_ch = encoder_channels[-1]
        blocks = []
        for skip_ch, out_ch in zip(encoder_channels[-2::-1], decoder_channels, strict=True):
            blocks.append(DecoderBlock(in_ch + skip_ch, out_ch, zero_init))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.refine = nn.Sequential(
            *[ResBlock(in_ch, zero_init=zero_init) for _ in range(refine_blocks)]
        )
        self.out_channels = in_ch

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, feats[-2::-1], strict=True):
            # Upsample to the skip's exact size, so odd input sizes work without padding.
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        return self.refine(x)  # (B, out_channels, h, w): LR resolution


class ResidualUpscaler(nn.Module):
    """Head: predict the residual to a classic upscale of `lq` from LR features, pixel-shuffled.

    With `channels=0` (default) every convolution runs at LR resolution: one conv makes
    3 * scale**2 residual values per LR pixel and PixelShuffle arranges them at HR (as in ESPCN
    and IMDN), so HR resolution costs nothing but the shuffle and the add. With `channels > 0`
    the head also refines at HR resolution with that many feature maps (a ResBlock fused with
    the base upscale). With 32 that made the UNet 2.3x slower and 0.3 dB worse at equal training
    time (README, "What we tried"); the seed ran 128 channels there.

    Args:
        in_ch: channels of the decoder's output (LR resolution).
        scale: upscaling factor.
        channels: 0 for the LR-only head; > 0 for the HR refinement with that many channels.
        base: kernel of the base upscale, "bicubic" or "bilinear", as torch's F.interpolate
            has it (`srlib.resize.upsample`; "bicubic (torch)" is not MATLAB's bicubic).
    """

    def __init__(self, in_ch: int, scale: int, channels: int = 0, base: str = "bicubic"):
        super().__init__()
        if base not in KERNELS:
            raise ValueError(f"base must be 'bilinear' or 'bicubic', got {base!r}")
        self.scale, self.base, self.channels = scale, base, channels
        if channels == 0:
            self.up = nn.Sequential(conv3x3(in_ch, 3 * scale**2), nn.PixelShuffle(scale))
            last = self.up[0]
        else:
            self.up = nn.Sequential(conv3x3(in_ch, channels * scale**2), nn.PixelShuffle(scale))
            self.fuse = conv3x3(channels + 3, channels)
            self.res = ResBlock(channels)
            self.out = conv3x3(channels, 3)
            last = self.out
        # Start exactly at "sr = base": a zero last layer. A random one adds the decoder's random
        # features to sr, and removing that noise is then the loss's first and clearest signal:
        # Adam, whose steps are ~lr whatever the gradient's size, shrinks the LR-level decoder
        # weights early on and their ReLUs die (sr = base for good). Together with unscaled
        # frozen features (ResNetEncoder) that is how the ResNet-UNet collapsed (README,
        # "Training that never silently fails"). From zero,
        # the head's first steps follow the residual's correlation with the features instead;
        # the rest of the network gets gradients from the second step on.
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()

    def forward(self, feats: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
        base = upsample(lq, self.scale, self.base)  # (B, 3, H, W)
        if self.channels == 0:
            return base + self.up(feats)  # (B, 3, H, W): residual made at LR, shuffled to HR
        x = self.up(feats)  # (B, channels, H, W)
        x = F.relu(self.fuse(torch.cat([x, base], dim=1)), inplace=True)
        return base + self.out(self.res(x))  # sr = base + predicted residual


# ----------------------------------------------------------------------------------------------
# The two models


def constructor_config(cls: type, args: dict[str, Any], skip: Sequence[str] = ()) -> dict:
    """{"arch": cls.__name__, each argument of cls.__init__ taken from `args`}, minus `skip`.

    Call it with `locals()` as the first line of __init__, before any argument is reassigned:
    the names come from the signature, so a new argument is stored (and build_model
    round-trips it) without being typed out twice. Tuples are stored as lists, as in JSON.
    """
    names = [n for n in inspect.signature(cls.__init__).parameters if n not in ("self", *skip)]
    values = {n: list(args[n]) if isinstance(args[n], tuple) else args[n] for n in names}
    return {"arch": cls.__name__, **values}


class Upscaler(nn.Module):
    """encoder -> decoder -> residual head. Subclasses only choose the encoder and widths.

    Args:
        encoder: an nn.Module satisfying the `Encoder` protocol.
        decoder_channels: widths of the decoder blocks, deepest first (see `Decoder`).
        scale: upscaling factor, 2, 3 or 4.
        head_channels: 0, or the channels of the head's HR refinement (`ResidualUpscaler`).
        base: torch kernel of the base upscale, "bicubic" or "bilinear".
        refine_blocks: ResBlocks at full LR resolution after the decoder (see `Decoder`).
        zero_init: the decoder's ResBlocks start as the identity (see `ResBlock`).
    """

    encoder: Encoder
    # The subclass's constructor arguments plus "arch": build_model(config) rebuilds the model.
    config: dict[str, Any]

    def __init__(
        self,
        encoder: Encoder,
        decoder_channels: Sequence[int],
        scale: int,
        head_channels: int,
        base: str,
        refine_blocks: int = 0,
        zero_init: bool = False,
    ):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
        if not (isinstance(encoder, nn.Module) and isinstance(encoder, Encoder)):
            raise TypeError(
                "encoder must be an nn.Module with `out_channels` and `stride` (the Encoder "
                f"protocol), got {type(encoder).__name__}"
            )
        self.scale = scale
        self.encoder = encoder
        self.decoder = Decoder(encoder.out_channels, decoder_channels, refine_blocks, zero_init)
        self.head = ResidualUpscaler(self.decoder.out_channels, scale, head_channels, base)
        self.stride = encoder.stride  # tile origins aligned to this give identical features

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(self.encoder(lq)), lq)  # (B, 3, h*scale, w*scale)

    def base_upscale(self, lq: torch.Tensor) -> torch.Tensor:
        """The classic upscale the model adds its residual to (for plots and baselines)."""
        return upsample(lq, self.scale, self.head.base)

    @property
    def base_label(self) -> str:
        """How figures and tables name `base_upscale`, e.g. "bicubic (torch)"."""
        return upsample_label(self.head.base)

    def num_params(self, trainable_only: bool = True) -> int:
        """Parameter count (trainable ones only by default)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


class UNetUpscaler(Upscaler):
    """Plain UNet upscaler trained from scratch.

    At full LR resolution: the encoder's double conv, the last decoder block (a fuse conv and a
    ResBlock) and `refine_blocks` more ResBlocks (each starting as the identity), with two
    cheaper levels below (stride 4) for context. The default is the CPU's: 24 channels and 2
    refine blocks, 35 k FLOPs per output pixel, so that each notebook runs in at most 10
    minutes on 2 AVX2 cores and a 12 MP photo goes x2 within the CLI's 30 s. At the same FLOPs
    depth beat width (24 channels and 2 blocks over 32 and none: +0.04 and +0.17 dB on Set5 in
    two seeds). The GPU presets' UNet is 32 channels with 16 refine blocks, 182 k FLOPs
    (srlib.training.config.PRESET_MODEL_ARGS; README, "Quality per FLOP"); `build_model`
    rebuilds any.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        encoder_channels: channels of the encoder's levels, full LR resolution first; tiles
            align to 2 ** (len - 1) LR pixels.
        decoder_channels: widths of the decoder blocks, deepest first; one per level below 0.
        refine_blocks: ResBlocks at full LR resolution after the decoder.
        head_channels: 0 (residual made at LR, pixel-shuffled) or channels of an HR refinement.
        base: torch kernel of the base upscale, "bicubic" or "bilinear" (not MATLAB's).
    """

    def __init__(
        self,
        scale: int = 2,
        encoder_channels: Sequence[int] = (24, 32, 64),
        decoder_channels: Sequence[int] = (32, 24),
        refine_blocks: int = 2,
        head_channels: int = 0,
        base: str = "bicubic",
    ):
        config = constructor_config(UNetUpscaler, locals())  # first: the arguments as passed
        encoder = UNetEncoder(encoder_channels)
        # zero_init: the ResBlocks at full resolution start as the identity, so a deep stack
        # (16 refine blocks on a GPU) trains like a shallow net at first instead of summing 17
        # random residuals.
        super().__init__(
            encoder, decoder_channels, scale, head_channels, base, refine_blocks, zero_init=True
        )
        self.config = config


class ResNetUNetUpscaler(Upscaler):
    """UNet whose encoder is a frozen ImageNet ResNet18; ~0.8 M trainable parameters by default.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        depth: ResNet18 stages in the encoder, 1..5; tiles align to 2**depth LR pixels.
        decoder_channels: widths of the decoder blocks, deepest first; `depth` of them.
        head_channels: 0 (residual made at LR, pixel-shuffled) or channels of an HR refinement.
        base: torch kernel of the base upscale, "bicubic" or "bilinear" (not MATLAB's).
        pretrained: start from ImageNet weights (else random); not stored in `config`.
        download: allow downloading those weights; not stored in `config`.
        feature_scale: factor on the ResNet features handed to the decoder (`ResNetEncoder`).
    """

    def __init__(
        self,
        scale: int = 2,
        depth: int = 3,
        decoder_channels: Sequence[int] = (128, 64, 32),
        head_channels: int = 0,
        base: str = "bicubic",
        pretrained: bool = True,
        download: bool = True,
        feature_scale: float = 0.1,
    ):
        # pretrained and download are not stored: a checkpoint carries the encoder weights it
        # trained with, and rebuilding a model must never download anything.
        config = constructor_config(ResNetUNetUpscaler, locals(), skip=("pretrained", "download"))
        encoder = ResNetEncoder(depth, pretrained, download, feature_scale)
        super().__init__(encoder, decoder_channels, scale, head_channels, base)
        self.has_imagenet_weights = encoder.has_imagenet_weights
        self.config = config


def upgrade_model_config(config: dict) -> dict:
    """A stored model config in today's form: arguments added or renamed since, as they were."""
    config = dict(config)
    if config.get("arch") == "UNetUpscaler" and "width" in config:
        # Before encoder_channels: a width doubled per level up to max_width; no refine blocks.
        width, depth, cap = (config.pop(k) for k in ("width", "depth", "max_width"))
        chs = [min(width * 2**i, cap) for i in range(depth + 1)]
        config = {"arch": "UNetUpscaler", "scale": config.pop("scale"), "encoder_channels": chs,
                  "decoder_channels": config.pop("decoder_channels"), "refine_blocks": 0,
                  **config}  # fmt: skip
    if config.get("arch") == "ResNetUNetUpscaler":
        # Checkpoints from before feature_scale existed were trained with unscaled features.
        config.setdefault("feature_scale", 1.0)
    return config


# Moved to srlib.registry, the one model registry; these names still work from here.
_MOVED_TO_REGISTRY = ("build_model", "check_model_config", "MODELS", "parse_model_spec")


def __getattr__(name: str) -> Any:
    """srlib.models.build_model and the other names that moved to srlib.registry."""
    if name in _MOVED_TO_REGISTRY:
        from srlib import registry  # when an old name is used: registry imports this module

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------
# Discriminators, for adversarial fine-tuning (TrainConfig.gan, srlib.training.gan)


def sn_conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> nn.Module:
    """conv3x3 with spectral norm: its weight divided by its largest singular value.

    That bounds how much the layer can amplify any input (Lipschitz constant 1), so the
    discriminator cannot grow arbitrarily confident and hand the generator exploding gradients:
    the stabiliser Real-ESRGAN relies on.
    """
    return nn.utils.parametrizations.spectral_norm(conv3x3(in_ch, out_ch, stride))


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)  # GAN discriminators' usual slope: no dead units


class UNetDiscriminator(nn.Module):
    """Real-ESRGAN's U-Net discriminator (Wang et al., 2021) in compact form: a logit per pixel.

    A plain conv, three spectrally normalised stride-2 convs down (channels x2, x4, x8), and
    back up: nearest upsampling to each skip's exact size (odd sizes work), a conv, the skip
    added; two more convs and a plain conv to one logit. As in Real-ESRGAN, every conv but the
    first and the last has spectral norm. Per-pixel logits tell the generator *where* an image
    looks fake, not just whether it does, which suits SR's mostly local artefacts.

    Input: images (B, 3, H, W) in [0, 1], any H, W >= 1. Output: logits (B, 1, H, W), > 0 for
    "real".
    """

    def __init__(self, channels: int = 32):
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        c = channels
        self.first = conv3x3(3, c)
        self.down = nn.ModuleList(
            [sn_conv3x3(c, 2 * c, 2), sn_conv3x3(2 * c, 4 * c, 2), sn_conv3x3(4 * c, 8 * c, 2)]
        )
        self.up = nn.ModuleList(
            [sn_conv3x3(8 * c, 4 * c), sn_conv3x3(4 * c, 2 * c), sn_conv3x3(2 * c, c)]
        )
        self.refine = nn.ModuleList([sn_conv3x3(c, c), sn_conv3x3(c, c)])
        self.last = conv3x3(c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [_lrelu(self.first(x))]  # (B, c, H, W)
        for conv in self.down:  # (B, 2c, H/2, W/2), (B, 4c, H/4, ...), (B, 8c, H/8, ...), ceil
            skips.append(_lrelu(conv(skips[-1])))
        y = skips.pop()
        for conv, skip in zip(self.up, reversed(skips), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="nearest")
            y = _lrelu(conv(y)) + skip
        for conv in self.refine:
            y = _lrelu(conv(y))
        return self.last(y)  # (B, 1, H, W)


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al., 2017) with spectral norm: one logit per image patch.

    `depth` stride-2 convs (channels doubling from `channels`, capped at 8x), a conv, and a
    plain conv to one logit; spectral norm on all but the first and the last, as in
    `UNetDiscriminator`. Each logit judges a patch 6 * 2**depth - 1 pixels wide (47 at depth
    3), cheaper than per-pixel logits and blind to anything larger than a patch.

    Input: images (B, 3, H, W) in [0, 1], any H, W >= 1. Output: logits
    (B, 1, ceil(H / 2**depth), ceil(W / 2**depth)), > 0 for "real".
    """

    def __init__(self, channels: int = 32, depth: int = 3):
        super().__init__()
        if channels < 1 or depth < 1:
            raise ValueError(f"channels and depth must be at least 1, got {channels}, {depth}")
        chs = [min(channels * 2**i, 8 * channels) for i in range(depth)]
        convs = [conv3x3(3, chs[0], 2)]
        convs += [sn_conv3x3(a, b, 2) for a, b in zip(chs, chs[1:], strict=False)]
        self.convs = nn.ModuleList([*convs, sn_conv3x3(chs[-1], chs[-1])])
        self.last = conv3x3(chs[-1], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = _lrelu(conv(x))
        return self.last(x)  # (B, 1, ceil(H / 2**depth), ceil(W / 2**depth))
