"""Ablations behind srlib's model and training defaults: quality.py with architecture variants.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/ablate.py --train ../shared/datasets/T91 \
        --bench ../shared/datasets --sets Set5,Set14 --budget 150 --threads 1 \
        --models unet_h0,unet_hr32 --base bicubic --lr 2e-3 [--quantize]

Takes every option of benchmarks/quality.py (same training, same crops, same evaluation) and
adds the variants below to its --models choices. `--quantize` rounds training lq to 8 bits, as
the benchmarks' saved LR files are. One thread per process and OMP_WAIT_POLICY=PASSIVE let two
ablations share a 2-core machine without slowing each other down (results in
docs/experiments.md); `--jobs 2` does the same from one command.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import srlib.degrade
import srlib.models as M
import srlib.resize
from benchmarks import quality
from srlib.models import ResBlock, ResNetUNetUpscaler, UNetUpscaler

OLD_UNET = dict(
    encoder_channels=(32, 64, 128, 128), decoder_channels=(128, 64, 32), refine_blocks=0
)
QUANTIZE_ENV = "SRLIB_ABLATE_QUANTIZE"  # set by --quantize, inherited by --jobs workers
# The default between issue 13's first and second rounds: wider (48) and shallow at full res.
UNET_V2 = dict(encoder_channels=(48, 48, 96), decoder_channels=(48, 48), refine_blocks=1)


def plain_init(model: UNetUpscaler) -> UNetUpscaler:
    """The UNet with its ResBlocks' last convs re-initialised randomly (no identity start)."""
    for m in model.modules():
        if isinstance(m, ResBlock):
            m.conv2.reset_parameters()
    return model


class AddDecoder(nn.Module):
    """Ablation only: deeper features 1x1-projected at low resolution, upsampled and *added*
    to the skip (no concat conv at level 0), then `blocks[i]` ResBlocks per level, deepest
    first. Output at level 0 with the encoder's level-0 width."""

    def __init__(self, encoder_channels: tuple[int, ...], blocks: tuple[int, ...]):
        super().__init__()
        chs = encoder_channels
        self.proj = nn.ModuleList(nn.Conv2d(chs[i + 1], chs[i], 1) for i in range(len(chs) - 1))
        self.blocks = nn.ModuleList(
            nn.Sequential(*[ResBlock(chs[i]) for _ in range(n)])
            for i, n in zip(range(len(chs) - 2, -1, -1), blocks, strict=True)
        )
        self.out_channels = chs[0]

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for i, (block, skip) in enumerate(zip(self.blocks, feats[-2::-1], strict=True)):
            proj = self.proj[len(self.proj) - 1 - i]  # deepest projection first
            x = block(F.interpolate(proj(x), size=skip.shape[-2:], mode="nearest") + skip)
        return x


def add_fuse_unet(scale: int, chs: tuple[int, ...], blocks: tuple[int, ...]) -> UNetUpscaler:
    """A UNetUpscaler whose decoder is an AddDecoder (config emptied: not rebuildable)."""
    model = UNetUpscaler(scale, chs, (chs[0],) * (len(chs) - 1), refine_blocks=0)
    model.decoder = AddDecoder(chs, blocks)
    model.config = {}  # infer's receptive-field probe then copies the model itself
    return model


class RepConv(nn.Module):
    """Ablation only: a 3x3 conv trained as 3x3 + 1x1 + per-channel identity branches, folded
    into one 3x3 kernel on every forward (so a step costs one conv, as at inference)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1)
        self.w1 = nn.Parameter(torch.zeros(out_ch, in_ch, 1, 1))  # starts as the plain conv
        same = in_ch == out_ch and stride == 1
        self.id_scale = nn.Parameter(torch.zeros(out_ch)) if same else None
        self.stride = stride

    weight = property(lambda self: self.conv.weight)  # the head zero-initialises these
    bias = property(lambda self: self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv.weight + F.pad(self.w1, (1, 1, 1, 1))  # (out, in, 3, 3)
        if self.id_scale is not None:
            w = w + torch.diag_embed(self.id_scale)[..., None, None] * F.pad(
                torch.ones(1, 1, 1, 1, device=w.device), (1, 1, 1, 1)
            )
        return F.conv2d(x, w, self.conv.bias, self.stride, 1)


def rep_unet(scale: int) -> UNetUpscaler:
    """srlib's UNet with every 3x3 conv a RepConv (built by swapping models.conv3x3)."""
    plain = M.conv3x3
    M.conv3x3 = RepConv  # ResBlock, UNetEncoder and the head look it up when built
    try:
        model = UNetUpscaler(scale)
    finally:
        M.conv3x3 = plain
    model.config = {}
    return model


# name -> constructor(scale, base); all L1-trained. h0 = residual made at LR and pixel-shuffled
# (the default head); hr32 = the head that also refines with 32 channels at HR resolution.
# unet_v1 is the UNet's default before issue 13; unet (quality.py) is today's default.
VARIANTS = {
    "unet_v1": lambda s, b: UNetUpscaler(s, **OLD_UNET, base=b),
    "unet_hr32": lambda s, b: UNetUpscaler(s, **OLD_UNET, head_channels=32, base=b),
    "unet_h0": lambda s, b: UNetUpscaler(s, **OLD_UNET, head_channels=0, base=b),
    "unet_h0_w48": lambda s, b: UNetUpscaler(
        s, (48, 96, 128, 128), (128, 64, 48), refine_blocks=0, base=b
    ),
    # Issue 13: where the capacity sits (all at the default head, bicubic base).
    "unet_refine2": lambda s, b: UNetUpscaler(s, refine_blocks=2, base=b),
    "unet_w64": lambda s, b: UNetUpscaler(s, (64, 64, 128), (64, 64), refine_blocks=0, base=b),
    "unet_48_64_128": lambda s, b: UNetUpscaler(s, (48, 64, 128), (64, 48), base=b),
    "unet_add4": lambda s, b: add_fuse_unet(s, (48, 48, 96, 96), (1, 1, 2)),
    "unet_add3": lambda s, b: add_fuse_unet(s, (48, 48, 96), (1, 3)),
    "unet_rep": lambda s, b: rep_unet(s),
    # Issue 13, second round: depth at full LR resolution (today's default: 32 channels, 16
    # refine ResBlocks starting as the identity) and its controls.
    "unet_v2": lambda s, b: UNetUpscaler(s, **UNET_V2, base=b),
    "unet_ref24": lambda s, b: UNetUpscaler(s, refine_blocks=24, base=b),
    "unet_ref10": lambda s, b: UNetUpscaler(s, refine_blocks=10, base=b),
    "unet_48_ref8": lambda s, b: UNetUpscaler(s, UNET_V2["encoder_channels"], (48, 48), 8, base=b),
    "unet_plain_init": lambda s, b: plain_init(UNetUpscaler(s, base=b)),
    # No levels below full resolution (a plain deep residual CNN in the UNet's code): is it
    # the U or the depth? One more refine block makes up for the missing decoder block.
    "unet_flat": lambda s, b: UNetUpscaler(s, (32,), (), refine_blocks=17, base=b),
    "res_hr32": lambda s, b: ResNetUNetUpscaler(
        s, decoder_channels=(128, 96, 64), head_channels=32, base=b
    ),
    "res_h0": lambda s, b: ResNetUNetUpscaler(
        s, decoder_channels=(128, 96, 64), head_channels=0, base=b
    ),
    "res_h0_64_48": lambda s, b: ResNetUNetUpscaler(
        s, decoder_channels=(128, 64, 48), head_channels=0, base=b
    ),
}


def quantized_degrade(degrade):
    """Wrap srlib.resize.degrade so lq is rounded to 8 bits like a saved LR image."""

    def wrapped(gt, scale, method="bilinear"):
        return (degrade(gt, scale, method) * 255).round_() / 255

    return wrapped


def use_quantized_lq() -> None:
    """Round this process's training lq to 8 bits: patched where SRDataset's training_lq looks
    it up (srlib.degrade), not where it is defined."""
    srlib.degrade.degrade = quantized_degrade(srlib.resize.degrade)


# At import, not under __main__: a `--jobs` worker (spawned) re-imports this script as its main
# module before it unpickles a job, so the variants and the quantisation reach it too.
for _key, _make in VARIANTS.items():
    quality.MODELS[_key] = (_key, "l1", 2e-3, _make)
if os.environ.get(QUANTIZE_ENV) == "1":
    use_quantized_lq()


if __name__ == "__main__":
    if "--quantize" in sys.argv:
        sys.argv.remove("--quantize")
        os.environ[QUANTIZE_ENV] = "1"  # inherited by the --jobs workers this spawns
        use_quantized_lq()
    if os.environ.get(QUANTIZE_ENV) == "1":
        print("training lq quantised to 8 bits", flush=True)
    quality.main()
