"""Architectures the SR community trains and its tools open: Compact and SPAN, and any model
`spandrel` loads.

`Compact` (SRVGGNetCompact, Real-ESRGAN's small model; Wang et al. 2021) and `SPAN` (Swift
Parameter-free Attention Network; Wan et al. 2024, NTIRE 2024 efficient SR winner) are written
here from their papers' descriptions, with the parameter names and shapes of the reference
code, so that `spandrel` (chaiNNer's and ComfyUI's model loader) recognises a state dict srlib
saves as Compact or SPAN, with the right scale. Both fit srlib's model interface (`scale`,
`stride`, `config`, `base_upscale`, `base_label`, `num_params`), so `fit`, `python -m srlib
train --model compact|span`, tiled inference and every export format take them.

What spandrel reads from a state dict (spandrel/architectures/{Compact,SPAN}/__init__.py):
- Compact: `body.0.weight` and `body.1.weight` present (so PReLU activations: ReLU has no
  weight); in_ch and num_feat from body.0's shape, num_conv from the length of `body`, the
  scale from the last conv's 3 * scale**2 outputs. The model adds a *nearest* upscale of lq.
- SPAN: the train-time branches *and* the fused conv of every Conv3XC (`*.sk.weight`,
  `*.conv.{0,1,2}.weight`, `*.eval_conv.weight`), `conv_cat`, `upsampler.0`. spandrel
  recomputes eval_conv from the branches on every eval forward, so both must be saved and
  agree. It cannot read img_range or rgb_mean, so they are fixed at the reference values
  (255, DIV2K's mean); a `no_norm` buffer says there is no normalisation (srlib's default).

`SpandrelModel` wraps any model spandrel loads (a user's downloaded Real-ESRGAN/Compact/SPAN
file) in the same interface, for `load_model` and `upscale --checkpoint`.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from srlib.models import constructor_config
from srlib.resize import upsample, upsample_label

# ----------------------------------------------------------------------------------------------
# Compact (SRVGGNetCompact)


class Compact(nn.Module):
    """SRVGGNetCompact: plain 3x3 convs + PReLU at LR resolution, pixel shuffle, + nearest base.

    Layout (the reference's `body` ModuleList, which spandrel reads): conv 3->num_feat, PReLU,
    num_conv x (conv num_feat->num_feat, PReLU), conv num_feat->3*scale**2; PixelShuffle; plus
    F.interpolate(lq, nearest). Default size (num_feat=64, num_conv=16) is Real-ESRGAN's
    realesr-general-x4v3 / animevideov3 size. PyTorch's default init, as the reference.

    Args:
        scale: upscaling factor, 1..4 (spandrel reads it from the last conv's width).
        num_feat: channels of every conv in the body.
        num_conv: body convs between the first and the last conv.
    """

    stride = 1  # no downsampling: any tile origin gives the same features

    def __init__(self, scale: int = 2, num_feat: int = 64, num_conv: int = 16):
        config = constructor_config(Compact, locals())
        super().__init__()
        if scale not in (1, 2, 3, 4) or num_feat < 1 or num_conv < 0:
            raise ValueError(
                f"Compact needs scale 1..4, num_feat >= 1, num_conv >= 0; got {scale}, "
                f"{num_feat}, {num_conv}"
            )
        self.scale, self.config = scale, config
        layers: list[nn.Module] = [nn.Conv2d(3, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        for _ in range(num_conv):
            layers += [nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.PReLU(num_feat)]
        layers.append(nn.Conv2d(num_feat, 3 * scale**2, 3, padding=1))
        self.body = nn.ModuleList(layers)  # body.{2i}: conv, body.{2i+1}: PReLU
        self.upsampler = nn.PixelShuffle(scale)

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        x = lq
        for layer in self.body:
            x = layer(x)  # (B, num_feat, h, w), last (B, 3 * scale**2, h, w)
        return self.upsampler(x) + self.base_upscale(lq)  # (B, 3, h*scale, w*scale)

    def base_upscale(self, lq: torch.Tensor) -> torch.Tensor:
        """The nearest-neighbour upscale Compact adds its residual to."""
        return F.interpolate(lq, scale_factor=self.scale, mode="nearest")

    base_label = "nearest (torch)"

    def num_params(self, trainable_only: bool = True) -> int:
        """Parameter count (trainable ones only by default)."""
        return _count(self, trainable_only)


# ----------------------------------------------------------------------------------------------
# SPAN


class Conv3XC(nn.Module):
    """A 3x3 conv trained as three branches, run as one ("re-parameterised", as in RepVGG).

    Training: conv1x1 (c_in -> 2 c_in) -> conv3x3 (-> 2 c_out, on the zero-padded input) ->
    conv1x1 (-> c_out), plus a 1x1 skip `sk`: more parameters to optimise, the same function
    class. All are linear, so they fold into one 3x3 conv, `eval_conv`, which eval mode runs and
    every export writes. `fuse` recomputes it: on `eval()`, before a state dict is read and
    after one is loaded, so eval mode and the saved file always match the branches.
    """

    def __init__(self, c_in: int, c_out: int, gain: int = 2):
        super().__init__()
        self.sk = nn.Conv2d(c_in, c_out, 1)
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, c_in * gain, 1),
            nn.Conv2d(c_in * gain, c_out * gain, 3),  # no padding: the input is padded once
            nn.Conv2d(c_out * gain, c_out, 1),
        )
        self.eval_conv = nn.Conv2d(c_in, c_out, 3, padding=1).requires_grad_(False)
        self.fuse()

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold the branches into eval_conv, with the reference's arithmetic (bit for bit)."""
        (w1, b1), (w2, b2), (w3, b3) = ((c.weight, c.bias) for c in self.conv)
        # Composing two convs is a convolution of their kernels: w2 * w1 (1x1 then 3x3) and
        # w3 * that (then 1x1), written as the reference computes it, so that spandrel, which
        # refolds the branches on every forward, gets the very same eval_conv weights.
        w = _compose(w1, w2, padding=2)  # (2 c_out, c_in, 3, 3)
        # The 1x1's bias passes all 9 taps, the zero padding's too: conv1x1 of 0 is b1, and the
        # train form pads before the 1x1s, so it sees b1 there as well.
        b = (w2 * b1.reshape(1, -1, 1, 1)).sum((1, 2, 3)) + b2
        w = _compose(w, w3, padding=0)  # (c_out, c_in, 3, 3)
        b = (w3 * b.reshape(1, -1, 1, 1)).sum((1, 2, 3)) + b3
        # The 1x1 skip is the centre tap of a 3x3.
        self.eval_conv.weight.copy_(w + F.pad(self.sk.weight, (1, 1, 1, 1)))
        self.eval_conv.bias.copy_(b + self.sk.bias)

    def train(self, mode: bool = True) -> Conv3XC:
        """Switching to eval mode folds the branches into eval_conv."""
        if not mode:
            self.fuse()
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:  # (B, c_in, h, w) -> (B, c_out, h, w)
            return self.conv(F.pad(x, (1, 1, 1, 1))) + self.sk(x)
        return self.eval_conv(x)


class SPAB(nn.Module):
    """Swift parameter-free attention block: three Conv3XC, attention sigmoid(out) - 0.5."""

    def __init__(self, channels: int):
        super().__init__()
        self.c1_r = Conv3XC(channels, channels)
        self.c2_r = Conv3XC(channels, channels)
        self.c3_r = Conv3XC(channels, channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The reference applies SiLU in place, so the out1 it returns (block 6's goes to
        # conv_cat) is the activated one.
        out1 = F.silu(self.c1_r(x))  # (B, c, h, w)
        out3 = self.c3_r(F.silu(self.c2_r(out1)))
        # Parameter-free attention: symmetric around 0, so it can pass or flip features.
        return (out3 + x) * (torch.sigmoid(out3) - 0.5), out1


class SPAN(nn.Module):
    """SPAN: six parameter-free attention blocks of re-parameterised 3x3 convs, pixel shuffle.

    conv_1, blocks 1-6, conv_2, a 1x1 conv over [conv_1, conv_2, block 1, block 6's first
    conv] and a 3x3 conv to 3 * scale**2 channels, pixel-shuffled to sr. No classic upscale is
    added: `base_upscale` (bicubic) is a reference for plots only. Default feature_channels=48
    is the published SPAN's size. PyTorch's default init, as the reference.

    `norm`: the reference feeds (lq - DIV2K mean) * 255; traiNNer-redux, the community's
    trainer, defaults to lq as it is (norm=False, which spandrel reads from a `no_norm`
    buffer), and so does srlib: with the x255 input every feature is ~255x larger, so a fresh
    model starts far from any image (validation PSNR 8.0 vs 18.6 dB after ~40 steps of one
    2-minute x2 run, lr 5e-4), and fp16 and other runtimes' fp32 kernels lose ~255x more in
    absolute terms (ncnn vs PyTorch, fp32: 1.0e-4 vs 6e-7 on an untrained x2 SPAN of width 8).

    Args:
        scale: upscaling factor, 1..4.
        feature_channels: channels of every conv.
        norm: normalise lq as the reference does ((lq - mean) * 255).
    """

    stride = 1
    IMG_RANGE = 255.0  # fixed: spandrel cannot read them from a state dict
    RGB_MEAN = (0.4488, 0.4371, 0.4040)

    def __init__(self, scale: int = 2, feature_channels: int = 48, norm: bool = False):
        config = constructor_config(SPAN, locals())
        super().__init__()
        if scale not in (1, 2, 3, 4) or feature_channels < 1:
            raise ValueError(f"SPAN needs scale 1..4, feature_channels >= 1; got {scale}, "
                             f"{feature_channels}")  # fmt: skip
        self.scale, self.config, self.norm = scale, config, norm
        self.register_buffer("mean", torch.tensor(self.RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        if not norm:
            self.register_buffer("no_norm", torch.zeros(1))  # spandrel's flag for norm=False
        c = feature_channels
        self.conv_1 = Conv3XC(3, c)
        for i in range(1, 7):
            self.add_module(f"block_{i}", SPAB(c))
        self.conv_cat = nn.Conv2d(4 * c, c, 1)
        self.conv_2 = Conv3XC(c, c)
        self.upsampler = nn.Sequential(
            nn.Conv2d(c, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale)
        )
        # eval_conv must match the branches in every state dict written and after every load.
        self.register_state_dict_pre_hook(lambda module, prefix, keep_vars: module.fuse())
        self.register_load_state_dict_post_hook(lambda module, keys: module.fuse())

    def fuse(self) -> None:
        """Refold every Conv3XC's branches into its eval_conv."""
        for m in self.modules():
            if isinstance(m, Conv3XC):
                m.fuse()

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        x = (lq - self.mean) * self.IMG_RANGE if self.norm else lq  # (B, 3, h, w)
        feat = self.conv_1(x)  # (B, c, h, w)
        b1, _ = self.block_1(feat)
        out = b1
        for i in range(2, 7):
            out, first = getattr(self, f"block_{i}")(out)  # first: block 6's activated conv 1
        out = self.conv_cat(torch.cat([feat, self.conv_2(out), b1, first], dim=1))  # (B, c, h, w)
        return self.upsampler(out)  # (B, 3, h*scale, w*scale)

    def base_upscale(self, lq: torch.Tensor) -> torch.Tensor:
        """Bicubic (torch), for reference: SPAN predicts the whole image, no residual."""
        return upsample(lq, self.scale, "bicubic")

    base_label = upsample_label("bicubic")

    def num_params(self, trainable_only: bool = True) -> int:
        """Parameter count (trainable ones only by default: eval_conv is derived, not trained)."""
        return _count(self, trainable_only)


def _compose(first: torch.Tensor, second: torch.Tensor, padding: int) -> torch.Tensor:
    """The kernel of conv(second) after conv(first): (o, m, k2, k2) after (m, i, k1, k1)."""
    w = F.conv2d(first.flip(2, 3).permute(1, 0, 2, 3), second, padding=padding)
    return w.flip(2, 3).permute(1, 0, 2, 3)  # (o, i, k1 + k2 - 1, ...)


def _count(model: nn.Module, trainable_only: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


ARCHS: dict[str, type[nn.Module]] = {"Compact": Compact, "SPAN": SPAN}


def build(config: dict[str, Any]) -> nn.Module:
    """Rebuild a Compact or SPAN from its `config` (srlib.registry.build_model builds any model)."""
    kwargs = dict(config)
    return ARCHS[kwargs.pop("arch")](**kwargs)


# ----------------------------------------------------------------------------------------------
# Any model spandrel loads, in srlib's interface

# Community architectures whose receptive field `srlib.infer.receptive_field` measures exactly
# and quickly (small, convolutions only). Others (ESRGAN's 23 RRDBs, transformers with shifted
# windows) get FALLBACK_OVERLAP: probing them would take minutes on a CPU, or never end.
PROBED = ("Compact", "SPAN")
FALLBACK_OVERLAP = 32  # LR px of context per tile side; tiles then differ slightly at seams


class SpandrelModel(nn.Module):
    """A model spandrel loaded (Real-ESRGAN, Compact, SPAN, ...) with srlib's model interface.

    forward(lq) runs the model on lq (B, 3, h, w) in [0, 1], padded first to the sizes it
    requires (as spandrel pads: reflect, then replicate) and cropped back after, so tiled
    inference can feed it any tile. `overlap`: None where `infer.auto_overlap` measures the
    receptive field (PROBED), else FALLBACK_OVERLAP.
    """

    stride = 1  # the wrapper pads every tile itself: tile origins need no alignment

    def __init__(self, descriptor: Any, source: str = ""):
        super().__init__()
        arch = descriptor.architecture.id
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise ValueError(
                f"{arch} model with {descriptor.input_channels} -> "
                f"{descriptor.output_channels} channels: srlib upscales RGB (3 -> 3) only"
            )
        if descriptor.scale < 2:
            raise ValueError(f"{arch} model of scale {descriptor.scale}: not an upscaler")
        self.net = descriptor.model
        self.scale = descriptor.scale
        self.size_requirements = descriptor.size_requirements
        self._call = descriptor._call_fn  # spandrel's way of calling this architecture
        self.config = {"arch": f"spandrel:{arch}", "scale": self.scale,
                       "tags": list(descriptor.tags), "source": source}  # fmt: skip
        self.overlap = None if arch in PROBED else FALLBACK_OVERLAP

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        h, w = lq.shape[-2:]
        pad_w, pad_h = self.size_requirements.get_padding(w, h)
        x = lq
        if pad_w or pad_h:  # reflect pads at most size - 1; replicate does the rest
            rw, rh = min(pad_w, w - 1), min(pad_h, h - 1)
            x = F.pad(
                F.pad(x, (0, rw, 0, rh), "reflect"), (0, pad_w - rw, 0, pad_h - rh), "replicate"
            )
        sr = self._call(self.net, x)  # (B, 3, H', W')
        return sr[..., : h * self.scale, : w * self.scale]

    def base_upscale(self, lq: torch.Tensor) -> torch.Tensor:
        """Bicubic (torch), for reference in plots and tables."""
        return upsample(lq, self.scale, "bicubic")

    base_label = upsample_label("bicubic")

    def num_params(self, trainable_only: bool = True) -> int:
        """Parameter count (all of them: a loaded model is not trained here)."""
        return _count(self.net, False)


def load_spandrel(path: str | os.PathLike) -> SpandrelModel:
    """A model file spandrel recognises (.pth/.pt/.ckpt/.safetensors), wrapped; clear errors.

    Raises ImportError without spandrel, ValueError for a file it does not recognise or a model
    srlib cannot run (not RGB, not an upscaler, NaN/inf weights).
    """
    try:
        import spandrel
    except ImportError as e:
        raise ImportError(
            "not an srlib checkpoint; other models (Real-ESRGAN, Compact, SPAN, ...) are read by "
            "spandrel: pip install 'srlib[export]'"
        ) from e
    try:
        with warnings.catch_warnings():  # spandrel tries a .pt as TorchScript first (deprecated)
            warnings.simplefilter("ignore", FutureWarning)
            descriptor = spandrel.ModelLoader().load_from_file(path)
    except spandrel.UnsupportedModelError as e:
        raise ValueError(
            f"{path} is neither an srlib checkpoint nor a model spandrel {spandrel.__version__} "
            "recognises"
        ) from e
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ValueError(f"{path}: a {descriptor.architecture.id} model, not an upscaler")
    bad = [k for k, v in descriptor.model.state_dict().items()
           if v.is_floating_point() and not torch.isfinite(v).all()]  # fmt: skip
    if bad:
        raise ValueError(f"{path} holds NaN/inf weights ({bad[0]}, ...)")
    return SpandrelModel(descriptor, Path(path).name).float().eval()
