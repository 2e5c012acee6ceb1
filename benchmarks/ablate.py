"""Ablations behind srlib's model and training defaults: quality.py with architecture variants.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/ablate.py --train ../shared/datasets/T91 \
        --bench ../shared/datasets --sets Set5,Set14 --budget 150 --threads 1 \
        --models unet_h0,unet_hr32 --base bicubic --lr 2e-3 [--quantize]

Takes every option of benchmarks/quality.py (same training, same crops, same evaluation) and
adds the variants below to its --models choices. `--quantize` rounds training lq to 8 bits, as
the benchmarks' saved LR files are. One thread per process and OMP_WAIT_POLICY=PASSIVE let two
ablations share a 2-core machine without slowing each other down (results in README).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402

import srlib.data  # noqa: E402
import srlib.resize  # noqa: E402
from srlib.models import ResNetUNetUpscaler, UNetUpscaler  # noqa: E402

# name -> constructor(scale, base); all L1-trained. h0 = residual made at LR and pixel-shuffled
# (the default head); hr32 = the head that also refines with 32 channels at HR resolution.
VARIANTS = {
    "unet_hr32": lambda s, b: UNetUpscaler(s, head_channels=32, base=b),
    "unet_h0": lambda s, b: UNetUpscaler(s, head_channels=0, base=b),
    "unet_h0_w48": lambda s, b: UNetUpscaler(
        s, width=48, decoder_channels=(128, 64, 48), head_channels=0, base=b
    ),
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


if __name__ == "__main__":
    if "--quantize" in sys.argv:
        sys.argv.remove("--quantize")
        # Patched where SRDataset looks it up (srlib.data), not where it is defined.
        srlib.data.degrade = quantized_degrade(srlib.resize.degrade)
        print("training lq quantised to 8 bits")
    for key, make in VARIANTS.items():
        quality.MODELS[key] = (key, "l1", make)
    quality.main()
