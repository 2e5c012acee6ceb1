"""Shared test fixtures: tiny models, and a TORCH_HOME that never downloads."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path_factory, monkeypatch):
    """Every test gets an empty TORCH_HOME, so no test can read a user's cache or download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    torch.manual_seed(0)


@pytest.fixture
def fake_imagenet_weights(tmp_path, monkeypatch):
    """A ResNet18 state dict of the right shape where torchvision caches the ImageNet weights."""
    from torchvision.models import resnet18

    from srlib.models import resnet18_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path = resnet18_weights_path()
    state = resnet18(weights=None).state_dict()
    torch.save(state, _mkparent(path))
    return state


def _mkparent(path: str) -> str:
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
