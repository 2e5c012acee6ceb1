"""Losses return (total, parts); the perceptual loss is frozen and zero on identical images."""

import pytest
import torch

from srlib.losses import PerceptualLoss, PixelLoss, make_loss


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
