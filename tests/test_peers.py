"""benchmarks/peers.py: the plain residual CNN peer has its size, shapes and bicubic start."""

import pytest
import torch

from srlib.resize import upsample


def _load_peers():
    """benchmarks/peers.py, as the benchmarks import it."""
    from benchmarks import peers

    return peers


def test_residual_cnn_has_about_130k_parameters():
    model = _load_peers().ResidualCNN(2)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 110_000 <= n <= 150_000, n
    assert (model.scale, model.stride) == (2, 1)
    assert model.config == dict(arch="ResidualCNN", scale=2, channels=48, depth=6, tail_scale=0.1)
    assert model.base_label == "bicubic (torch)"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_residual_cnn_output_shape(scale):
    lq = torch.rand(2, 3, 5, 7)
    assert _load_peers().ResidualCNN(scale)(lq).shape == (2, 3, 5 * scale, 7 * scale)


def test_residual_cnn_starts_near_bicubic_and_its_body_learns_from_step_one():
    torch.manual_seed(0)
    lq, gt = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)
    base = upsample(lq, 2, "bicubic")
    zero = _load_peers().ResidualCNN(2, tail_scale=0)  # the old start: exactly bicubic
    torch.testing.assert_close(zero(lq), base, rtol=0, atol=0)
    model = _load_peers().ResidualCNN(2)
    torch.testing.assert_close(model.base_upscale(lq), base, rtol=0, atol=0)
    assert 0 < (model(lq) - base).abs().max() < 0.02  # a small residual, not noise
    # Why not zero: a zero tail gives the body no gradient at the first step (Adam then turns
    # the next steps' noise into full-size updates, which killed the ReLUs on T91 + BSD200).
    for m, body_moves in ((zero, False), (model, True)):
        (m(lq) - gt).abs().mean().backward()
        assert bool(m.body[0].weight.grad.abs().max() > 0) is body_moves
        assert m.tail.weight.grad.abs().max() > 0  # both learn a residual
