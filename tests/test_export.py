"""Using the models elsewhere: ONNX export, torch.hub entry points, the default checkpoint.

The ONNX tests skip without onnx, onnxscript and onnxruntime (`pip install "srlib[onnx]"`; the
`test` extra installs them, so CI runs them).
"""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srlib.__main__ as cli
import srlib.infer as infer
from srlib.__main__ import main
from srlib.models import ResNetUNetUpscaler, UNetUpscaler
from srlib.train import load_model, save_checkpoint

REPO = Path(__file__).resolve().parent.parent
SHIPPED = [
    "unet_x2",
    "unet_perceptual_x2",
    "resnet_unet_x2",
    "resnet_unet_perceptual_x2",
    "unet_real_x2",
    "unet_real_gan_x2",
]


def _tiny(arch: str) -> torch.nn.Module:
    """A tiny untrained x2 model with a random (not zero) last conv: sr is not just the base."""
    torch.manual_seed(0)
    if arch == "unet":
        model = UNetUpscaler(2, (8, 16, 16), (16, 8), 0)
    else:
        model = ResNetUNetUpscaler(2, depth=2, decoder_channels=(16, 8), pretrained=False)
    model.head.up[0].reset_parameters()
    return model.eval()


def _save(model: torch.nn.Module, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model=model.state_dict(), model_config=model.config, step=1)
    return path


def _onnx():
    """(onnx, onnxruntime), or skip the test when the onnx extra is not installed."""
    pytest.importorskip("onnxscript")
    return pytest.importorskip("onnx"), pytest.importorskip("onnxruntime")


# ----------------------------------------------------------------------------------------------
# ONNX


@pytest.fixture(scope="module", params=["unet", "resnet"])
def exported(request, tmp_path_factory):
    """(model, ONNX file, the max differences export_onnx measured) for both architectures."""
    _onnx()
    model = _tiny(request.param)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    return model, path, infer.export_onnx(model, path)


def test_onnx_matches_pytorch_on_three_shapes(exported):
    model, path, diffs = exported
    _, ort = _onnx()
    assert list(diffs) == list(infer.ONNX_CHECK_SHAPES)
    assert all(0 <= d <= 1e-4 for d in diffs.values()), diffs
    # Checked again here, on shapes of its own, against what upscale_tensor returns.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 32, 48), (1, 3, 57, 31), (2, 3, 64, 64), (1, 3, 9, 70)]:
        lq = torch.rand(shape)
        (sr,) = session.run(None, {"lq": lq.numpy()})
        assert sr.shape == (shape[0], 3, 2 * shape[2], 2 * shape[3])
        with torch.no_grad():
            raw = model(lq)
        assert raw.min() < 0 or raw.max() > 1  # the model overshoots: the clamp is exercised
        expected = infer.upscale_tensor(model, lq, precision="fp32")  # clamped to [0, 1]
        assert np.abs(sr - expected.numpy()).max() <= 1e-4


def test_onnx_graph_has_torch_bicubic_dynamic_sizes_and_the_clamp(exported):
    _, path, _ = exported
    onnx, _ = _onnx()
    graph = onnx.load(str(path))
    assert {o.domain: o.version for o in graph.opset_import}[""] == infer.ONNX_OPSET
    attrs = [
        {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        for n in graph.graph.node
        if n.op_type == "Resize"
    ]
    cubic = [a for a in attrs if a.get("mode") == b"cubic"]
    assert len(cubic) == 1  # the base upscale; the decoder's Resizes are nearest
    assert cubic[0]["cubic_coeff_a"] == pytest.approx(-0.75)  # torch's Keys a, not MATLAB's
    assert cubic[0]["coordinate_transformation_mode"] == b"half_pixel"  # align_corners=False
    (lq,) = graph.graph.input
    dims = lq.type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["batch", "", "height", "width"]
    assert dims[1].dim_value == 3
    assert graph.graph.node[-1].op_type == "Clip"  # output clamped, as upscale_tensor's


def test_cli_export_onnx_of_a_shipped_checkpoint(tmp_path, capsys):
    _onnx()
    dst = tmp_path / "unet_x2.onnx"
    assert main(["export", "--onnx", str(REPO / "checkpoints" / "unet_x2.pt"), str(dst)]) == 0
    out = capsys.readouterr().out
    shapes = re.findall(r"check: input (\S+): max abs difference .* (\S+)$", out, re.M)
    assert [s for s, _ in shapes] == ["1x3x32x48", "1x3x57x31", "2x3x64x64"]
    assert all(float(d) <= 1e-4 for _, d in shapes)
    worst = float(re.search(r"^max difference (\S+) \(tolerance 0.0001\)$", out, re.M)[1])
    assert worst == max(float(d) for _, d in shapes)
    assert f"wrote {dst}" in out and "opset 18" in out
    assert dst.stat().st_size > 1e6  # the weights are inside: one self-contained file
    assert not list(tmp_path.glob("*.data"))


def test_cli_export_onnx_refuses_a_mismatch_and_writes_nothing(tmp_path, capsys, monkeypatch):
    _, ort = _onnx()
    run = ort.InferenceSession.run
    monkeypatch.setattr(  # an onnxruntime that computes something slightly different
        ort.InferenceSession, "run", lambda self, *a, **k: [y + 1e-3 for y in run(self, *a, **k)]
    )
    dst = tmp_path / "model.onnx"
    dst.write_bytes(b"an earlier export")
    ckpt = _save(_tiny("unet"), tmp_path / "tiny.pt")
    assert main(["export", "--onnx", "--overwrite", str(ckpt), str(dst)]) == 2
    err = capsys.readouterr().err
    assert "differs from PyTorch by more than 0.0001" in err and "1x3x57x31: 1.00e-03" in err
    assert len(err.strip().splitlines()) == 1
    assert dst.read_bytes() == b"an earlier export"
    assert {p.name for p in tmp_path.iterdir()} == {"model.onnx", "tiny.pt"}  # no temp file


def test_cli_export_onnx_without_the_extra(tmp_path, capsys, monkeypatch):
    """Runs without onnx too: a missing package is a clear one-line error, exit 2."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxscript" else find_spec(name, *a),
    )
    ckpt = _save(_tiny("unet"), tmp_path / "tiny.pt")
    dst = tmp_path / "model.onnx"
    assert main(["export", "--onnx", str(ckpt), str(dst)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ONNX export needs ") and "onnxscript" in err
    assert "pip install 'srlib[onnx]'" in err and len(err.splitlines()) == 1
    assert not dst.exists()
    assert main(["export", "--onnx", "--fp32", str(ckpt), str(dst)]) == 2  # one or the other
    assert "not allowed with argument" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# torch.hub


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hubconf_lists_the_shipped_checkpoints():
    hub = _hubconf()
    # torch.hub.list's rule: every public callable of hubconf.py is an entry point.
    entries = [f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_")]
    assert sorted(entries) == sorted(SHIPPED)
    assert all(getattr(hub, f).__doc__ for f in entries)
    assert all(p.stem in entries for p in (REPO / "checkpoints").glob("*.pt"))
    assert "torch" in hub.dependencies
    assert all(importlib.util.find_spec(d) is not None for d in hub.dependencies)


@pytest.mark.parametrize("name", SHIPPED)
def test_torch_hub_load_returns_the_shipped_model(name):
    model = torch.hub.load(str(REPO), name, source="local")
    assert not model.training and model.scale == 2
    assert all(p.dtype == torch.float32 for p in model.parameters())
    lq = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        sr = model(lq)
        shipped, _ = load_model(REPO / "checkpoints" / f"{name}.pt")
        assert torch.equal(sr, shipped(lq))  # the shipped weights, not a fresh model
        assert (sr - model.base_upscale(lq)).abs().max() > 1e-3  # trained: not just bicubic
    assert sr.shape == (1, 3, 16, 24)


# ----------------------------------------------------------------------------------------------
# The default checkpoint after `pip install .` (not editable)


def test_installed_srlib_without_checkpoint_says_where_to_put_it(tmp_path, capsys, monkeypatch):
    # Installed, srlib/ lives in site-packages: its parent is no checkout (no pyproject.toml),
    # and a checkpoints/ there (anybody's) is not used. Offline, the download fails clearly.
    import srlib.hub

    site = tmp_path / "site-packages-parent"
    _save(_tiny("unet"), site / "checkpoints" / "unet_x2.pt")
    monkeypatch.setattr(srlib.hub, "REPO_ROOT", site)
    monkeypatch.setenv("SRLIB_CHECKPOINT_URL", "http://127.0.0.1:9/")  # nothing listens there
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save("a.png")
    assert main(["upscale", "a.png", "-o", "out", "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"the default checkpoints/unet_x2.pt is not in {work}" in err
    assert "the download from http://127.0.0.1:9/unet_x2.pt failed" in err
    assert "pass --checkpoint PATH" in err
    assert str(site) not in err and not (work / "out").exists()
    # A copy in the current folder is used.
    _save(_tiny("unet"), work / "checkpoints" / "unet_x2.pt")
    assert main(["upscale", "a.png", "-o", "out", "-q"]) == 0
    assert (work / "out" / "a_x2.png").is_file()


def test_checkout_finds_its_default_checkpoint_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.find_checkpoint(None) == REPO / "checkpoints" / "unet_x2.pt"
