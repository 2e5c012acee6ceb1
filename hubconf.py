"""torch.hub entry points for the shipped checkpoints (checkpoints/*.pt; nothing is downloaded).

    model = torch.hub.load("path/to/srlib", "unet_x2", source="local")  # eval mode, float32
    sr = model(lq)  # lq (B, 3, h, w) RGB in [0, 1] -> (B, 3, 2h, 2w), not clamped

For images of any size (tiles, clamping, PIL/numpy in and out) use srlib.infer.upscale on it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch.hub lists every public callable here as an entry point
    from srlib.models import Upscaler

dependencies = ["torch", "torchvision", "numpy", "PIL", "tqdm"]  # what srlib imports to load


def _load(name: str, device: str) -> Upscaler:
    """The model of checkpoints/<name>.pt beside this file, float32 and in eval mode."""
    from pathlib import Path

    from srlib.training import load_model

    model, _ = load_model(Path(__file__).resolve().parent / "checkpoints" / f"{name}.pt", device)
    return model


def unet_x2(device: str = "cpu") -> Upscaler:
    """UNet x2, L1 loss: the best PSNR of the shipped models and the CLI's default."""
    return _load("unet_x2", device)


def unet_perceptual_x2(device: str = "cpu") -> Upscaler:
    """UNet x2, perceptual loss: about the L1 model's PSNR with a little more fine detail."""
    return _load("unet_perceptual_x2", device)


def resnet_unet_x2(device: str = "cpu") -> Upscaler:
    """ResNet-UNet x2 (frozen ResNet18 encoder), L1 loss."""
    return _load("resnet_unet_x2", device)


def resnet_unet_perceptual_x2(device: str = "cpu") -> Upscaler:
    """ResNet-UNet x2 (frozen ResNet18 encoder), perceptual loss: the most detail, lower PSNR."""
    return _load("resnet_unet_perceptual_x2", device)


def unet_real_x2(device: str = "cpu") -> Upscaler:
    """UNet x2 trained on realistic lq (JPEG, noise): for JPEGs from phones and the web."""
    return _load("unet_real_x2", device)


def unet_real_gan_x2(device: str = "cpu") -> Upscaler:
    """unet_real_x2 fine-tuned with a PatchGAN: more fine detail, a little lower PSNR."""
    return _load("unet_real_gan_x2", device)
