"""Compact and SPAN (srlib.community): trained by srlib, opened by spandrel; community model
files (Real-ESRGAN's .pth, SPAN safetensors) inside srlib. Skips without spandrel/safetensors
(`pip install "srlib[export]"`; the `test` extra installs them, so CI runs these)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srlib.cli import main
from srlib.community import SPAN, Compact, SpandrelModel
from srlib.infer import auto_overlap, upscale_tensor
from srlib.models import build_model
from srlib.training import TrainConfig, fit, load_checkpoint, load_model, save_checkpoint

pytestmark = [
    pytest.mark.usefixtures("one_thread"),  # tiny tensors: one torch thread (conftest.py)
    pytest.mark.filterwarnings("ignore::srlib.train.NotLearningWarning"),  # 4 steps learn little
    pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated"),  # spandrel on a .pt
]
TINY = {"compact": lambda: Compact(2, num_feat=8, num_conv=2), "span": lambda: SPAN(2, 8)}


def _spandrel():
    pytest.importorskip("safetensors")
    return pytest.importorskip("spandrel")


def _trained(kind: str, tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    """A tiny model after 4 optimiser steps of `fit` (the training, multi-branch form)."""
    torch.manual_seed(0)
    model = TINY[kind]()
    lq, gt = torch.rand(8, 3, 12, 12), torch.rand(8, 3, 24, 24)
    data = torch.utils.data.TensorDataset(lq, gt)
    cfg = TrainConfig(name=kind, steps=4, batch_size=4, lr=1e-3, warmup_steps=1, val_every=2,
                      checkpoint_every=2, device="cpu", out_dir=str(tmp_path))  # fmt: skip
    from srlib.losses import PixelLoss

    fit(model, PixelLoss("l1"), data, data, cfg, progress=False)
    return model.eval(), tmp_path / kind / "last.pt"


@pytest.mark.parametrize("kind", ["compact", "span"])
def test_trained_model_exports_and_spandrel_opens_it_with_the_same_output(kind, tmp_path):
    spandrel = _spandrel()
    model, last = _trained(kind, tmp_path)
    dst = tmp_path / f"{kind}.safetensors"
    assert main(["export", "--fp32", str(last), str(dst)]) == 0  # the scale goes in the name
    for path in (tmp_path / f"{kind}_x2.safetensors", tmp_path / f"{kind}_x2.pt"):
        if path.suffix == ".pt":
            assert main(["export", "--fp32", str(last), str(path)]) == 0
        desc = spandrel.ModelLoader().load_from_file(path)  # chaiNNer's and ComfyUI's loader
        assert desc.architecture.id == {"compact": "Compact", "span": "SPAN"}[kind]
        assert desc.scale == 2 and desc.input_channels == desc.output_channels == 3
        lq = torch.rand(1, 3, 23, 17)
        with torch.no_grad():
            ours, theirs = model(lq), desc.model.eval()(lq)
        assert (ours - theirs).abs().max() <= 1e-5, path.suffix
        # spandrel's own call (padded, clamped); fit left our weights channels_last, so the
        # convolutions may round differently.
        assert (desc(lq) - ours.clamp(0, 1)).abs().max() <= 1e-5
        assert (ours - model.base_upscale(lq)).abs().max() > 1e-3  # trained: not the base


def test_span_state_dict_is_spandrels_and_eval_conv_always_matches_the_branches():
    spandrel = _spandrel()
    from spandrel.architectures.SPAN import SPAN as TheirSPAN

    torch.manual_seed(0)
    ours = SPAN(2, 8).train()
    theirs = TheirSPAN(num_in_ch=3, num_out_ch=3, feature_channels=8, upscale=2, norm=False)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.state_dict().items()
    }
    assert spandrel.__version__  # the keys above are those of this spandrel
    lq = torch.rand(2, 3, 11, 13)
    with torch.no_grad():
        for p in ours.parameters():  # a training step's worth of change, in train mode
            p.add_(torch.randn_like(p) * 0.01) if p.requires_grad else None
        branches = ours(lq)
        state = ours.state_dict()  # read in train mode: eval_conv refolded first
        ours.eval()
        assert (ours(lq) - branches).abs().max() <= 1e-4 * branches.abs().max()
    fresh = SPAN(2, 8).eval()
    fresh.load_state_dict(state)
    assert torch.equal(fresh(lq), ours(lq))
    assert ours.num_params() < ours.num_params(trainable_only=False)  # eval_conv: derived


def test_compact_and_span_fit_srlibs_model_interface():
    for make in TINY.values():
        model = make().eval()
        assert model.stride == 1 and model.config["arch"] in ("Compact", "SPAN")
        rebuilt = build_model(model.config)
        rebuilt.load_state_dict(model.state_dict())
        lq = torch.rand(1, 3, 30, 21)
        with torch.no_grad():
            assert torch.equal(rebuilt.eval()(lq), model(lq))
            # Tiled inference: its measured overlap makes tiles seamless.
            tiled = upscale_tensor(model, lq, tile=8, precision="fp32")
            assert (tiled - model(lq).clamp(0, 1)).abs().max() <= 1e-5
        assert auto_overlap(model) == (4 if isinstance(model, Compact) else 21)
        assert model.base_upscale(lq).shape == (1, 3, 60, 42) and model.base_label


def _community_files(tmp_path: Path) -> dict[str, tuple[torch.nn.Module, Path]]:
    """Community model files made here, as they are shipped (no download)."""
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    torch.manual_seed(1)
    compact, span = Compact(2, 8, 2).eval(), SPAN(4, 8, norm=True).eval()  # as the reference
    files = {
        # Real-ESRGAN's release files: {"params_ema": state dict} (or "params").
        "compact": (compact, tmp_path / "realesr-tiny-x2.pth"),
        "span": (span, tmp_path / "4x-span-tiny.safetensors"),  # no srlib metadata
    }
    torch.save({"params_ema": compact.state_dict()}, files["compact"][1])
    save_file(span.state_dict(), files["span"][1])
    return files


def test_load_model_and_upscale_take_community_model_files(tmp_path, capsys):
    _spandrel()
    for kind, (original, path) in _community_files(tmp_path).items():
        model, ckpt = load_model(path)
        assert isinstance(model, SpandrelModel) and not model.training
        assert model.scale == original.scale and ckpt["model_config"]["arch"] == (
            "spandrel:Compact" if kind == "compact" else "spandrel:SPAN"
        )
        lq = torch.rand(1, 3, 19, 26)
        with torch.no_grad():
            assert (model(lq) - original(lq)).abs().max() <= 1e-5
            tiled = upscale_tensor(model, lq, tile=8, precision="fp32")  # probed overlap
            assert (tiled - original(lq).clamp(0, 1)).abs().max() <= 1e-5
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 24, 3), np.uint8)).save(
        tmp_path / "a.png"
    )
    ckpt = str(tmp_path / "4x-span-tiny.safetensors")
    assert main(["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-q",
                 "--checkpoint", ckpt]) == 0  # fmt: skip
    assert "model spandrel:SPAN x4" in capsys.readouterr().out
    assert Image.open(tmp_path / "out" / "a_x4.png").size == (96, 80)


def test_a_large_community_model_gets_the_fallback_overlap(tmp_path):
    """Architectures srlib does not probe (ESRGAN's RRDBs here) tile with a fixed overlap."""
    spandrel = _spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    net = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=2)
    torch.save(net.state_dict(), tmp_path / "esrgan_x2.pth")
    model, _ = load_model(tmp_path / "esrgan_x2.pth")
    assert model.config["arch"] == "spandrel:ESRGAN" and model.scale == 2
    assert model.overlap == auto_overlap(model) == 32
    assert spandrel.__version__


def test_files_neither_srlib_nor_spandrel_know_are_clear_errors(tmp_path, capsys):
    _spandrel()
    torch.save({"encoder.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="neither an srlib checkpoint nor a model spandrel"):
        load_model(tmp_path / "other.pth")
    (tmp_path / "a.png").write_bytes(b"")
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--checkpoint"]
    assert main([*argv, str(tmp_path / "other.pth")]) == 2
    err = capsys.readouterr().err
    assert "neither an srlib checkpoint nor a model spandrel" in err
    assert len(err.strip().splitlines()) == 1
    # A truncated srlib checkpoint keeps its own error (spandrel does not hide it).
    good = tmp_path / "good.pt"
    model = Compact(2, 8, 2)
    save_checkpoint(good, model=model.state_dict(), model_config=model.config)
    (tmp_path / "bad.pt").write_bytes(good.read_bytes()[:200])
    with pytest.raises(Exception, match="(?i)zip|archive|central directory|ran out"):
        load_model(tmp_path / "bad.pt")


@pytest.mark.parametrize("kind", ["compact", "span"])
def test_train_cli_trains_compact_and_span(kind, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    ramp = np.linspace(0, 200, 48 * 64).reshape(48, 64, 1)
    for i in range(3):
        noise = np.random.default_rng(i).normal(0, 20, (48, 64, 3))
        Image.fromarray((ramp + noise).clip(0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    argv = ["train", "--preset", "smoke", "--model", kind, "--data", str(folder), "--out",
            str(tmp_path / "run"), "--steps", "2", "--crops-per-image", "2"]  # fmt: skip
    assert main(argv) in (0, 3)  # 3: done, but NOT LEARNING (2 steps)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["model_config"] == {"compact": Compact, "span": SPAN}[kind](2).config
    assert main(argv) in (0, 3)  # resumes (a finished run): same model config, accepted
