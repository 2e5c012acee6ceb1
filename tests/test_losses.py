"""Losses return (total, parts); the perceptual loss is frozen and zero on identical images.

The sharpness part: zero on identical images, blind to low-frequency errors, its gradient
steps aim at high frequencies more than the pixel L1's, and it rides along in `fit`.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from srlib.losses import PerceptualLoss, PixelLoss, SharpnessLoss, WithSharpness, make_loss
from srlib.resize import degrade, upsample
from srlib.training import check_config, fit, load_checkpoint
from tests.test_train import cfg, pairs, tiny_model


def test_perceptual_of_image_with_itself_is_zero():
    loss = PerceptualLoss(pretrained=False)
    x = torch.rand(2, 3, 32, 32)
    total, parts = loss(x, x.clone())
    assert total.item() == 0.0
    assert set(parts) == {"feat3", "feat6", "pixel"}


def test_perceptual_parts_and_weights():
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    loss = PerceptualLoss({"feat3": 2.0, "pixel": 0.5}, pretrained=False)
    total, parts = loss(x, y)
    assert set(parts) == {"feat3", "pixel"}
    assert torch.isclose(total, 2.0 * parts["feat3"] + 0.5 * parts["pixel"])
    with pytest.raises(ValueError, match="unknown loss terms"):
        PerceptualLoss({"vgg": 1.0}, pretrained=False)


def test_perceptual_gradient_flows_to_sr_only():
    loss = PerceptualLoss({"feat3": 1.0, "feat6": 1.0}, pretrained=False)
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    gt = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss(sr, gt)[0].backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert gt.grad is None  # the target's features are built without a graph
    assert all(p.grad is None for p in loss.parameters())
    loss.train()
    assert not any(m.training for m in loss.modules())


def test_perceptual_uses_cached_imagenet_weights(fake_imagenet_weights):
    loss = PerceptualLoss(pretrained=True, download=False)
    assert loss.has_imagenet_weights
    assert torch.equal(loss.trunk[0].weight, fake_imagenet_weights["conv1.weight"])


def test_pixel_losses():
    x, y = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    assert PixelLoss("l1")(x, y)[0].item() == pytest.approx(0.5)
    total, parts = make_loss("l2")(x, y)
    assert total.item() == pytest.approx(0.25) and "l2" in parts
    with pytest.raises(ValueError):
        make_loss("ssim")


# ----------------------------------------------------------------------------------------------
# Sharpness

KINDS = ("gradient", "fft")


def edges_and_blur(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A gt of flat blocks with hard edges, (2, 3, 32, 32), and its bicubic x2 down-up blur."""
    g = torch.Generator().manual_seed(seed)
    gt = F.interpolate(torch.rand(2, 3, 4, 4, generator=g), size=32, mode="nearest")
    return gt, upsample(degrade(gt, 2, "bicubic"), 2, "bicubic")


def high_pass(x: torch.Tensor, cutoff: float = 0.25) -> torch.Tensor:
    """x without its frequencies below `cutoff` cycles/pixel (0.25: the x2 LR's Nyquist)."""
    fy = torch.fft.fftfreq(x.shape[-2])[:, None]
    fx = torch.fft.rfftfreq(x.shape[-1])[None, :]
    keep = (fx**2 + fy**2).sqrt() > cutoff
    return torch.fft.irfft2(torch.fft.rfft2(x) * keep, s=x.shape[-2:])


def step_direction(loss: torch.nn.Module, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """The unit-norm direction an SGD step moves `sr` in under `loss`."""
    sr = sr.clone().requires_grad_()
    loss(sr, gt)[0].backward()
    return -sr.grad / sr.grad.norm()


@pytest.mark.parametrize("kind", KINDS)
def test_sharpness_zero_on_identical_images_with_finite_gradient(kind):
    x = torch.rand(2, 3, 16, 20)
    sr = x.clone().requires_grad_()
    loss = SharpnessLoss(kind)(sr, x)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(sr.grad).all()  # |FFT| at a zero difference: no 0/0


@pytest.mark.parametrize("kind", KINDS)
def test_sharpness_punishes_blur_far_more_than_low_frequency_errors(kind):
    gt, blur = edges_and_blur()
    l1 = F.l1_loss(blur, gt)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    wave = torch.sin(2 * math.pi * (xx + yy) / 32)
    shade = gt + wave * l1 / wave.abs().mean()  # a smooth shading error of the same pixel L1
    assert F.l1_loss(shade, gt).item() == pytest.approx(l1.item(), rel=1e-4)
    loss = SharpnessLoss(kind)
    assert 0.5 * l1 < loss(blur, gt) < 2 * l1  # the pixel L1's scale (0.86x-1.0x here)
    # The pixel L1 ranks all three alike; the sharpness part ranks the blur far worst.
    assert loss(blur, gt) > 4 * loss(shade, gt)
    assert loss(blur, gt) > 4 * loss(gt + l1, gt)  # a brightness offset


@pytest.mark.parametrize("kind", KINDS)
def test_sharpness_step_aims_at_high_frequencies(kind):
    gt, blur = edges_and_blur()
    pixel = step_direction(PixelLoss("l1"), blur, gt)
    sharp = step_direction(WithSharpness(PixelLoss("l1"), 1.0, kind), blur, gt)
    # Share of the (unit) step's energy above the LR Nyquist: 0.53 for L1, 0.79 / 0.66 with
    # the gradient / fft part (measured).
    assert high_pass(sharp).square().sum() > high_pass(pixel).square().sum() + 0.08


def test_gradient_kind_step_restores_lost_detail_faster():
    gt, blur = edges_and_blur()
    err_hf = high_pass(blur - gt)  # the detail the blur lost, and its ringing

    def hf_error_drop(loss: torch.nn.Module) -> float:
        """How fast a unit step along the loss's descent shrinks the squared high-pass error."""
        return -2 * (err_hf * high_pass(step_direction(loss, blur, gt))).sum().item()

    pixel = hf_error_drop(PixelLoss("l1"))
    assert hf_error_drop(WithSharpness(PixelLoss("l1"), 1.0, "gradient")) > 1.1 * pixel > 0


def test_fft_kind_step_adds_high_frequency_energy():
    gt, blur = edges_and_blur()

    def hf_energy_after_step(loss: torch.nn.Module) -> float:
        return high_pass(blur + 0.1 * step_direction(loss, blur, gt)).square().sum().item()

    before, target = high_pass(blur).square().sum().item(), high_pass(gt).square().sum().item()
    assert before < target  # the blur lost high-frequency energy
    pixel = hf_energy_after_step(PixelLoss("l1"))
    sharp = hf_energy_after_step(WithSharpness(PixelLoss("l1"), 1.0, "fft"))
    assert sharp - before > 5 * max(pixel - before, 0.001)


@pytest.mark.parametrize("kind", KINDS)
def test_sharpness_channels_last_and_bf16_autocast(kind):
    gt, sr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    loss = SharpnessLoss(kind)
    reference = loss(sr, gt)
    cl = loss(sr.to(memory_format=torch.channels_last), gt.to(memory_format=torch.channels_last))
    assert torch.allclose(cl, reference)
    conv = torch.nn.Conv2d(3, 3, 1)  # makes a bf16 sr under autocast, as the model does
    with torch.autocast("cpu", dtype=torch.bfloat16):
        sr_bf16 = conv(sr)
        assert sr_bf16.dtype == torch.bfloat16
        value = loss(sr_bf16, gt)
    value.backward()
    assert value.dtype == torch.float32
    assert torch.isclose(value, loss(sr_bf16.detach().float(), gt))
    assert conv.weight.grad is not None and torch.isfinite(conv.weight.grad).all()


def test_with_sharpness_total_and_parts():
    sr, gt = torch.rand(2, 3, 32, 32, requires_grad=True), torch.rand(2, 3, 32, 32)
    for base in (PixelLoss("l2"), PerceptualLoss(pretrained=False)):
        base_total, base_parts = base(sr, gt)
        total, parts = WithSharpness(base, 0.3, "fft")(sr, gt)
        assert set(parts) == {*base_parts, "sharp"}
        assert all(torch.equal(parts[k], v) for k, v in base_parts.items())
        assert not parts["sharp"].requires_grad
        assert torch.isclose(parts["sharp"], SharpnessLoss("fft")(sr, gt))
        assert torch.isclose(total, base_total + 0.3 * parts["sharp"])


def test_with_sharpness_keeps_the_perceptual_loss_frozen(fake_imagenet_weights):
    loss = make_loss("perceptual", sharpness=0.5)
    assert isinstance(loss, WithSharpness) and isinstance(loss.base, PerceptualLoss)
    assert loss.has_imagenet_weights is True  # forwarded: benchmarks read it off the loss
    assert not hasattr(make_loss("l1", sharpness=0.5), "has_imagenet_weights")
    loss.train()
    assert not any(m.training for m in loss.base.modules())
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    loss(sr, torch.rand(1, 3, 32, 32))[0].backward()
    assert sr.grad is not None and all(p.grad is None for p in loss.parameters())


def test_make_loss_sharpness_options():
    assert type(make_loss("l1")) is PixelLoss
    assert type(make_loss("l2", sharpness=0.0)) is PixelLoss
    assert type(make_loss("perceptual", pretrained=False, sharpness=0)) is PerceptualLoss
    wrapped = make_loss("l1", sharpness=0.25, sharpness_kind="fft")
    assert isinstance(wrapped, WithSharpness) and isinstance(wrapped.base, PixelLoss)
    assert (wrapped.weight, wrapped.sharp.kind) == (0.25, "fft")
    for bad in (dict(sharpness=-0.1), dict(sharpness=math.nan), dict(sharpness=math.inf)):
        with pytest.raises(ValueError, match="sharpness must be"):
            make_loss("l1", **bad)
    with pytest.raises(ValueError, match="sharpness_kind"):
        make_loss("l1", sharpness=0.1, sharpness_kind="sobel")
    with pytest.raises(ValueError, match="sharpness_kind"):
        make_loss("l1", sharpness_kind="sobel")  # refused even while the part is off
    with pytest.raises(ValueError, match="kind must be one of"):
        SharpnessLoss("laplacian")
    with pytest.raises(ValueError, match="weight"):
        WithSharpness(PixelLoss(), -1.0)


def test_train_config_checks_sharpness(tmp_path):
    check_config(cfg(tmp_path, sharpness=0.5, sharpness_kind="fft"))  # fine
    with pytest.raises(ValueError, match="sharpness must be a finite number >= 0, got -1"):
        check_config(cfg(tmp_path, sharpness=-1.0))
    with pytest.raises(ValueError, match="sharpness_kind must be 'gradient' or 'fft'"):
        check_config(cfg(tmp_path, sharpness_kind="sobel"))


@pytest.mark.filterwarnings("ignore::srlib.train.NotLearningWarning")  # 2 steps learn little
def test_fit_records_the_sharp_part(tmp_path):
    run = cfg(tmp_path, steps=2, val_every=2, checkpoint_every=2, sharpness=0.5)
    loss_fn = make_loss(run.loss, sharpness=run.sharpness, sharpness_kind=run.sharpness_kind)
    hist = fit(tiny_model(), loss_fn, pairs(n=8), pairs(n=4, seed=1), run, progress=False)
    train = hist["train"]
    assert set(train) == {"total", "l1", "sharp"} and len(train["sharp"]) == 2
    for total, l1, sharp in zip(train["total"], train["l1"], train["sharp"], strict=True):
        assert sharp > 0 and total == pytest.approx(l1 + 0.5 * sharp, rel=1e-5)
    assert len(hist["val"]["loss"]) == 1 and math.isfinite(hist["val"]["loss"][0])
    stored = load_checkpoint(tmp_path / run.name / "last.pt")["config"]
    assert (stored["sharpness"], stored["sharpness_kind"]) == (0.5, "gradient")
