"""benchmarks/peers.py: the plain residual CNN peer has its size, shapes and bicubic start."""

import importlib.util
from pathlib import Path

import pytest
import torch

from srlib.resize import upsample

REPO = Path(__file__).resolve().parents[1]


def _load_peers():
    spec = importlib.util.spec_from_file_location("peers", REPO / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_residual_cnn_has_about_130k_parameters():
    model = _load_peers().ResidualCNN(2)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 110_000 <= n <= 150_000, n
    assert (model.scale, model.stride) == (2, 1)
    assert model.config == dict(arch="ResidualCNN", scale=2, channels=48, depth=6)
    assert model.base_label == "bicubic (torch)"


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_residual_cnn_output_shape(scale):
    lq = torch.rand(2, 3, 5, 7)
    assert _load_peers().ResidualCNN(scale)(lq).shape == (2, 3, 5 * scale, 7 * scale)


def test_residual_cnn_starts_at_bicubic_and_learns_a_residual():
    model = _load_peers().ResidualCNN(2)
    lq, gt = torch.rand(2, 3, 6, 6), torch.rand(2, 3, 12, 12)
    base = upsample(lq, 2, "bicubic")
    torch.testing.assert_close(model(lq), base, rtol=0, atol=0)
    torch.testing.assert_close(model.base_upscale(lq), base, rtol=0, atol=0)
    # The zero-initialised last conv still gets a gradient, so one step moves off the base.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (model(lq) - gt).abs().mean().backward()
    opt.step()
    assert (model(lq) - base).abs().max() > 1e-4
