"""Using the models elsewhere: ONNX export, torch.hub entry points, the default checkpoint.

The ONNX tests skip without onnx, onnxscript and onnxruntime (`pip install "srlib[onnx]"`; the
`test` extra installs them, so CI runs them).
"""

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srlib.cli.upscale as cli
import srlib.infer as infer
from srlib.cli import main
from srlib.models import ResNetUNetUpscaler, UNetUpscaler
from srlib.training import load_model, save_checkpoint

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
    assert f"wrote {dst}" in out and "opset 17, IR 8" in out
    # the weights are inside (fp32, 4 bytes each): one self-contained file, no external data
    state = torch.load(REPO / "checkpoints" / "unet_x2.pt", weights_only=True)["model"]
    assert dst.stat().st_size > 4 * sum(t.numel() for t in state.values())
    assert not list(tmp_path.glob("*.data"))
    assert {p.name for p in tmp_path.iterdir()} == {
        "unet_x2.onnx", "unet_x2.onnx.README.md", "unet_x2.onnx.json"
    }  # fmt: skip


def test_cli_export_onnx_refuses_a_mismatch_and_writes_nothing(tmp_path, capsys, monkeypatch):
    _, ort = _onnx()
    run = ort.InferenceSession.run
    monkeypatch.setattr(  # an onnxruntime that computes something slightly different
        ort.InferenceSession, "run", lambda self, *a, **k: [y + 1e-3 for y in run(self, *a, **k)]
    )
    dst = tmp_path / "model_x2.onnx"
    dst.write_bytes(b"an earlier export")
    ckpt = _save(_tiny("unet"), tmp_path / "tiny.pt")
    assert main(["export", "--onnx", "--overwrite", str(ckpt), str(dst)]) == 2
    err = capsys.readouterr().err
    assert "differs from PyTorch by more than 0.0001" in err and "1x3x57x31: 1.00e-03" in err
    assert len(err.strip().splitlines()) == 1
    assert dst.read_bytes() == b"an earlier export"
    assert {p.name for p in tmp_path.iterdir()} == {"model_x2.onnx", "tiny.pt"}  # no temp file


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
    assert main(["export", "--onnx", "--format", "ncnn", str(ckpt), str(dst)]) == 2  # one of them
    assert "not allowed with argument" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# The ecosystem's formats: `export --format safetensors|onnx|ncnn`, each run in its runtime


def _tiny_any(arch: str) -> torch.nn.Module:
    """_tiny for the UNets; a tiny Compact or SPAN (srlib.community) otherwise."""
    from srlib.community import SPAN, Compact

    if arch in ("unet", "resnet"):
        return _tiny(arch)
    torch.manual_seed(0)
    return (Compact(2, 8, 2) if arch == "compact" else SPAN(2, 8)).eval()


def _ckpt(model: torch.nn.Module, path: Path) -> Path:
    """A checkpoint with what a run records: training config, history, metrics."""
    from dataclasses import asdict

    from srlib.training import TrainConfig

    cfg = asdict(TrainConfig(steps=1500, batch_size=8, patch_size=96, degradation="realistic"))
    history = {"val": {"step": [1000, 1500], "psnr": [31.2, 31.5]}, "step": [1] * 1500}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model=model.state_dict(), model_config=model.config, config=cfg,
                    step=1500, history=history, metrics={"Set14 x2 PSNR-Y": 32.1})  # fmt: skip
    return path


@pytest.mark.parametrize("arch", ["unet", "resnet", "compact", "span"])
def test_onnx_export_opens_in_onnxruntime_1_17_terms_fp32_and_fp16(arch, tmp_path, capsys):
    """IR version and opset within what onnxruntime 1.17 (chaiNNer's) reads, tensors named
    input/output, dynamic batch/height/width; run in the installed onnxruntime."""
    onnx, ort = _onnx()
    model = _tiny_any(arch)
    src = _ckpt(model, tmp_path / "run" / "best.pt")
    precisions = ["--fp32", "--fp16"] if arch in ("unet", "span") else ["--fp32"]
    for precision in precisions:
        dst = tmp_path / precision[2:]
        assert main(["export", "--format", "onnx", precision, str(src), f"{dst}/"]) == 0
        path = dst / "run_best_x2.onnx"  # a folder: the run's name, the checkpoint's, the scale
        out = capsys.readouterr().out
        worst = float(re.search(r"^max difference (\S+) \(tolerance (\S+)\)$", out, re.M)[1])
        proto = onnx.load(str(path))
        assert proto.ir_version <= 9 and {o.domain: o.version for o in proto.opset_import}[""] <= 17
        (inp,), (outp,) = proto.graph.input, proto.graph.output
        assert (inp.name, outp.name) == ("input", "output")
        assert [d.dim_param for d in inp.type.tensor_type.shape.dim] == ["batch", "", "height",
                                                                         "width"]  # fmt: skip
        half = precision == "--fp16"
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        lq = torch.rand(2, 3, 13, 22)
        (sr,) = session.run(None, {"input": lq.numpy().astype(np.float16 if half else np.float32)})
        with torch.no_grad():
            ref = model(lq).clamp(0, 1).numpy()
        assert sr.dtype == (np.float16 if half else np.float32) and sr.shape == ref.shape
        assert np.abs(sr.astype(np.float32) - ref).max() <= (1e-2 if half else 1e-4)
        assert 0 <= worst <= (1e-2 if half else 1e-4)
        print(f"{arch} onnx {precision[2:]}: max difference {worst:.1e}", file=sys.stderr)


def _ncnn():
    pytest.importorskip("pnnx")
    return pytest.importorskip("ncnn")


@pytest.mark.parametrize("arch", ["unet", "resnet", "compact", "span"])
def test_ncnn_export_runs_in_ncnn_with_blobs_data_and_output(arch, tmp_path, capsys):
    _ncnn()
    from srlib.export import run_ncnn

    model = _tiny_any(arch)
    src = _ckpt(model, tmp_path / f"{arch}.pt")
    for precision, tol in (("--fp32", 1e-4), ("--fp16", 1e-2)):
        dst = tmp_path / precision[2:] / f"{arch}.bin"  # .bin or .param: the pair is written
        assert main(["export", "--format", "ncnn", precision, str(src), str(dst)]) == 0
        out = capsys.readouterr().out
        diffs = [float(d) for d in re.findall(r"difference ncnn vs PyTorch (\S+)$", out, re.M)]
        assert len(diffs) == 3 and max(diffs) <= tol
        param = dst.parent / f"{arch}_x2.param"
        assert param.is_file() and param.with_suffix(".bin").is_file()
        text = param.read_text().splitlines()
        assert text[2].split()[:2] == ["Input", "data"] and "output" in text[-1].split()
        for shape in ((1, 3, 21, 30), (1, 3, 7, 45)):  # sizes the export did not check
            lq = torch.rand(shape)
            sr = run_ncnn(param, param.with_suffix(".bin"), lq.numpy(), fp16=precision == "--fp16")
            with torch.no_grad():
                assert np.abs(sr - model(lq).clamp(0, 1).numpy()).max() <= tol
        print(f"{arch} ncnn {precision[2:]}: max difference {max(diffs):.1e}", file=sys.stderr)


def test_ncnn_above_the_tolerance_writes_nothing(tmp_path, capsys, monkeypatch):
    _ncnn()
    import srlib.export

    run = srlib.export.run_ncnn
    monkeypatch.setattr(srlib.export, "run_ncnn", lambda *a, **k: run(*a, **k) + 1e-3)
    src = _ckpt(_tiny_any("compact"), tmp_path / "c.pt")
    assert main(["export", "--format", "ncnn", "--fp32", str(src), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ncnn differs from PyTorch by more than 0.0001" in err and len(err.splitlines()) == 1
    assert {p.name for p in tmp_path.iterdir()} == {"c.pt"}


def test_safetensors_round_trip_without_pickle(tmp_path, capsys, monkeypatch):
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    model = _tiny_any("resnet")  # BatchNorm buffers too
    src = _ckpt(model, tmp_path / "resnet.pt")
    assert main(["export", "--format", "safetensors", str(src), str(tmp_path / "r")]) == 0
    path = tmp_path / "r_x2.safetensors"
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
        dtypes = {k: f.get_tensor(k).dtype for k in f.keys()}
    assert json.loads(meta["srlib_model_config"]) == model.config and meta["srlib_scale"] == "2"
    assert json.loads(meta["srlib_train_config"])["degradation"] == "realistic"
    assert json.loads(meta["srlib_metrics"]) == {"Set14 x2 PSNR-Y": 32.1}
    assert json.loads(meta["srlib_history"])["val"]["psnr"] == [31.2, 31.5]
    assert dtypes["head.up.0.weight"] == torch.float16  # parameters in fp16 by default
    assert dtypes["encoder.stages.0.1.running_var"] == torch.float32  # buffers stay fp32

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded, ckpt = load_model(path)
    assert ckpt["step"] == 1500 and ckpt["config"]["patch_size"] == 96
    lq = torch.rand(1, 3, 15, 18)
    with torch.no_grad():
        assert (loaded(lq) - model(lq)).abs().max() <= 2e-3  # fp16 weights
    # And as the source of another export (no pickle there either).
    assert main(["export", "--fp32", str(path), str(tmp_path / "again.pt")]) == 0


def test_output_names_carry_the_scale():
    from srlib.export import output_path, pick_format

    src = Path("runs/mine/best.pt")
    assert output_path("out/", src, 2, "onnx") == Path("out/mine_best_x2.onnx")
    assert output_path("m.onnx", Path("a/unet_x4.pt"), 4, "onnx") == Path("m_x4.onnx")
    assert output_path("unet_x2.onnx", src, 2, "onnx") == Path("unet_x2.onnx")
    assert output_path("2x-Unet.safetensors", src, 2, "safetensors") == Path("2x-Unet.safetensors")
    assert output_path("models/span", src, 2, "ncnn") == Path("models/span_x2.param")
    assert output_path("models/span.bin", src, 2, "ncnn") == Path("models/span_x2.param")
    assert output_path("relax2", src, 2, "pt") == Path("relax2_x2.pt")  # x2 inside a word
    with pytest.raises(ValueError, match="names scale x4, but the model upscales x2"):
        output_path("unet_x4.onnx", src, 2, "onnx")
    assert pick_format(None, "a.onnx") == "onnx" and pick_format(None, "a") == "pt"
    assert pick_format("ncnn", "a.bin") == "ncnn"
    with pytest.raises(ValueError, match="suffix of a pt file"):
        pick_format("onnx", "a.pt")


def test_model_card_beside_the_model(tmp_path, capsys):
    src = _ckpt(_tiny_any("compact"), tmp_path / "compact.pt")
    argv = ["export", str(src), str(tmp_path / "out") + "/", "--author", "Ada", "--license",
            "CC-BY-4.0", "--dataset", "my photos (40)"]  # fmt: skip
    assert main(argv) == 0
    model = tmp_path / "out" / "compact_x2.pt"
    card = json.loads((tmp_path / "out" / "compact_x2.pt.json").read_text())
    assert card["architecture"] == "compact" and card["scale"] == 2
    assert card["size"] == ["num_feat=8", "num_conv=2"]
    assert (card["author"], card["license"], card["dataset"]) == ("Ada", "CC-BY-4.0",
                                                                  "my photos (40)")  # fmt: skip
    assert (card["trainingIterations"], card["trainingBatchSize"], card["trainingHRSize"]) == (
        1500,
        8,
        96,
    )
    assert (
        card["trainingOTF"] is True and card["srlib"]["train_config"]["degradation"] == "realistic"
    )
    (res,) = card["resources"]
    assert res["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert res["size"] == model.stat().st_size and res["platform"] == "pytorch"
    assert card["srlib"]["metrics"] == {"Set14 x2 PSNR-Y": 32.1,
                                        "best validation PSNR (RGB, dB)": 31.5}  # fmt: skip
    readme = (tmp_path / "out" / "compact_x2.pt.README.md").read_text()
    assert "| author | Ada |" in readme and res["sha256"] in readme
    assert (
        "1500 iterations, batch 8, HR patch 96 px" in readme and "realistic degradation" in readme
    )
    # Exported again without --overwrite: refused, the card included.
    assert main(argv) == 2 and "exists; pass --overwrite" in capsys.readouterr().err


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
