"""Shared test fixtures: tiny models, a TORCH_HOME that never downloads, fp32 "auto"."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path_factory, monkeypatch):
    """Every test gets an empty TORCH_HOME, so no test can read a user's cache or download."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _auto_precision_is_fp32(monkeypatch):
    """`precision="auto"` is bf16 on CPUs with native bf16: tests see fp32 on every machine, so
    exact comparisons hold alike here and on CI. Tests of bf16 ask for it (or re-patch this)."""
    import srlib.infer

    monkeypatch.setattr(srlib.infer, "cpu_has_bf16", lambda: False)


@pytest.fixture(scope="session")
def tiny_unet_checkpoint(tmp_path_factory):
    """A tiny untrained x2 UNet checkpoint with a random (not zero) last conv, so sr != bicubic."""
    from srlib.models import UNetUpscaler
    from srlib.training import save_checkpoint

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = UNetUpscaler(2, (8, 16, 16), (16, 8), 0)
        model.head.up[0].reset_parameters()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(path, model=model.state_dict(), model_config=model.config, step=1)
    return path


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads (and a `--threads` flag would leak into other
    tests): torch runs on one thread during the test, then gets its thread count back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fake_commons():
    """A loopback imitation of Wikimedia Commons, stopped after (tests/datasets/_commons_server)."""
    try:
        from tests.datasets._commons_server import FakeCommons
    except ImportError:  # tests/ run as the rootdir's top level
        from datasets._commons_server import FakeCommons
    server = FakeCommons()
    server.start()
    yield server
    server.stop()


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


@pytest.fixture
def realistic_imagenet_weights(tmp_path, monkeypatch):
    """A ResNet18 state dict with realistic BatchNorm statistics, where torchvision caches it.

    Random filters, but every BatchNorm's running mean/var measured on real photos (the
    embedded set, ImageNet-normalised): features then have the scale and sign pattern of a
    trained network's, unlike the defaults (mean 0, var 1) of an untrained one.
    """
    from torch.optim.swa_utils import update_bn
    from torchvision.models import resnet18

    from srlib.data import SRDataset, embedded_photos, make_loader
    from srlib.models import IMAGENET_MEAN, IMAGENET_STD, resnet18_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    torch.manual_seed(0)
    net = resnet18(weights=None)
    photos = SRDataset(embedded_photos(), size=64, scale=2, crops_per_image=4, seed=0)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    update_bn([(gt - mean) / std for _, gt in make_loader(photos, batch_size=16)], net)
    state = net.state_dict()
    torch.save(state, _mkparent(resnet18_weights_path()))
    return state


def _mkparent(path: str) -> str:
    import os

    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path
