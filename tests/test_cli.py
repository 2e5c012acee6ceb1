"""The command line (`python -m srlib`), run in-process on tiny images and a tiny model."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srlib
import srlib.cli
import srlib.cli.upscale as cli
from srlib.cli import main
from srlib.infer import precision_autocast, upscale_image
from srlib.training import load_model

# Tiny tensors: one torch thread in every test here (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def ckpt(tiny_unet_checkpoint) -> Path:
    """The shared tiny UNet checkpoint (tests/conftest.py)."""
    return tiny_unet_checkpoint


def _noise(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    shape = (h, w) if c == 1 else (h, w, c)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _photo(path: Path, h: int = 8, w: int = 10, seed: int = 0, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_noise(h, w, seed=seed)).save(path, **save)
    return path


def _up(ckpt: Path, *args) -> int:
    return main(["upscale", *map(str, args), "--checkpoint", str(ckpt), "-q"])


# ----------------------------------------------------------------------------------------------
# 1. stdout for results, stderr for problems; clean exit code 2 for bad invocations


def test_per_file_errors_and_skips_go_to_stderr(tmp_path, ckpt, capsys):
    src = _photo(tmp_path / "in" / "a.png").parent
    (src / "notes.txt").write_text("hello")
    data = (src / "a.png").read_bytes()
    (src / "c.png").write_bytes(data[: len(data) // 2])  # truncated
    assert _up(ckpt, src, "-o", tmp_path / "out") == 1
    out, err = capsys.readouterr()
    assert "ok: " in out and "done: 1 written, 0 skipped, 1 failed" in out
    assert "skip:" not in out and "error:" not in out
    assert "notes.txt" not in out + err  # a folder yields its image files only
    assert "error: " in err and "c.png" in err
    assert (tmp_path / "out" / "a_x2.png").exists()
    assert not (tmp_path / "out" / "c_x2.png").exists()
    # A non-image named directly is reported, on stderr.
    assert _up(ckpt, src / "notes.txt", "-o", tmp_path / "out") == 0
    out, err = capsys.readouterr()
    assert "skip:" not in out and "skip: " in err and "notes.txt: not an image" in err


def test_sidecar_files_do_not_block_the_photo(tmp_path, ckpt, capsys):
    src = _photo(tmp_path / "in" / "photo.jpg").parent
    (src / "photo.xmp").write_text("<x:xmpmeta/>")
    (src / "photo.CR2").write_bytes(b"raw")
    assert _up(ckpt, src, "-o", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo_x2.png"]


def test_several_folders_keep_their_names(tmp_path, ckpt, capsys):
    a = _photo(tmp_path / "a" / "photo.png").parent
    b = _photo(tmp_path / "b" / "photo.png", seed=1).parent
    assert _up(ckpt, a, b, "-o", tmp_path / "out") == 0
    assert (tmp_path / "out" / "a" / "photo_x2.png").exists()
    assert (tmp_path / "out" / "b" / "photo_x2.png").exists()


def _bad_output(tmp_path, ckpt):
    _photo(tmp_path / "a.png")
    _photo(tmp_path / "b.png", seed=1)
    (tmp_path / "out.png").write_bytes(b"mine")
    argv = ["upscale", str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    return [*argv, "-o", str(tmp_path / "out.png"), "--checkpoint", str(ckpt)], "is a file"


def _bad_device(tmp_path, ckpt):
    _photo(tmp_path / "a.png")
    argv = ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    return [*argv, "--checkpoint", str(ckpt), "--device", "nonsense"], "--device nonsense"


def _info_corrupt(tmp_path, ckpt):
    data = Path(ckpt).read_bytes()
    (tmp_path / "bad.pt").write_bytes(data[: len(data) // 2])
    return ["info", str(tmp_path / "bad.pt")], "cannot read checkpoint"


def _info_not_a_checkpoint(tmp_path, ckpt):
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    return ["info", str(tmp_path / "notes.pt")], "cannot read checkpoint"


def _export_missing(tmp_path, ckpt):
    return ["export", str(tmp_path / "nope.pt"), str(tmp_path / "small.pt")], "not found"


def _export_onto_itself(tmp_path, ckpt):
    (tmp_path / "train.pt").write_bytes(Path(ckpt).read_bytes())
    return ["export", str(tmp_path / "train.pt"), str(tmp_path / "train.pt")], "source"


@pytest.mark.parametrize(
    "case",
    [
        _bad_output,
        _bad_device,
        _info_corrupt,
        _info_not_a_checkpoint,
        _export_missing,
        _export_onto_itself,
    ],
)
def test_bad_invocations_exit_2_with_one_line(tmp_path, ckpt, capsys, case):
    argv, expected = case(tmp_path, ckpt)
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "Traceback" not in out + err
    assert {p: p.read_bytes() for p in before} == before  # nothing lost
    assert not (tmp_path / "out").exists() and not (tmp_path / "small.pt").exists()


def test_version(capsys, monkeypatch):
    import importlib.metadata

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"srlib {srlib.cli.version()}"
    assert srlib.cli.version() == importlib.metadata.version("srlib")  # the installed one

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)  # a bare source tree
    assert srlib.cli.version() == srlib.__version__


# ----------------------------------------------------------------------------------------------
# 2. The "would overwrite an input" check is linear


def test_overwrite_check_stats_each_file_once(tmp_path, monkeypatch):
    """1,000 inputs whose outputs all exist: 2 stats per file (was n^2 samefile calls)."""
    n = 1000
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    for i in range(n):
        (src / f"f{i:04d}.png").touch()
        (out / f"f{i:04d}_x2.png").touch()
    items, errors = cli.expand_inputs([str(src)])
    assert len(items) == n and not errors
    calls = []
    file_id = cli.file_id
    monkeypatch.setattr(cli, "file_id", lambda p: calls.append(p) or file_id(p))
    monkeypatch.setattr(os.path, "samefile", None)  # the old pairwise check is gone
    jobs, skips, errors = cli.plan_outputs(items, out, 2, "png", overwrite=False)
    assert not jobs and not errors and len(skips) == n
    assert len(calls) == 2 * n
    jobs, skips, errors = cli.plan_outputs(items, out, 2, "png", overwrite=True)
    assert len(jobs) == n and not skips and not errors


def test_hard_link_to_an_input_is_never_overwritten(tmp_path, ckpt, capsys):
    a = _photo(tmp_path / "in" / "a.png")
    b = _photo(tmp_path / "in" / "b.png", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    os.link(b, out / "a_x2.png")  # a's output path is b under another name
    assert _up(ckpt, a, b, "-o", out, "--overwrite") == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert (out / "a_x2.png").read_bytes() == b.read_bytes()
    assert (out / "b_x2.png").exists()


# ----------------------------------------------------------------------------------------------
# 3. Rerunning into the input folder upscales nothing twice


def test_rerun_into_input_folder_upscales_nothing_twice(tmp_path, ckpt, capsys):
    d = tmp_path / "photos"
    _photo(d / "p.png")
    _photo(d / "sub" / "q.png", seed=1)
    assert _up(ckpt, d, "-o", d) == 0
    assert (d / "p_x2.png").exists() and (d / "sub" / "q_x2.png").exists()
    stamp = (d / "p_x2.png").stat().st_mtime_ns
    capsys.readouterr()

    assert _up(ckpt, d, "-o", d) == 0
    out, err = capsys.readouterr()
    assert "done: 0 written, 4 skipped, 0 failed" in out
    assert f"skip: {d / 'p_x2.png'}: an earlier run's output" in err
    assert f"skip: {d / 'p.png'}: {d / 'p_x2.png'} exists" in err
    assert (d / "p_x2.png").stat().st_mtime_ns == stamp

    # --overwrite refreshes the outputs, still without upscaling them.
    assert _up(ckpt, d, "-o", d, "--overwrite") == 0
    assert "done: 2 written, 2 skipped, 0 failed" in capsys.readouterr().out
    names = sorted(p.relative_to(d).as_posix() for p in d.rglob("*.png"))
    assert names == ["p.png", "p_x2.png", "sub/q.png", "sub/q_x2.png"]

    # An output folder inside the input folder is not re-read as input either.
    e = tmp_path / "more"
    _photo(e / "p.png")
    assert _up(ckpt, e, "-o", e / "up") == 0
    assert _up(ckpt, e, "-o", e / "up") == 0
    assert sorted(p.relative_to(e).as_posix() for p in e.rglob("*.png")) == ["p.png", "up/p_x2.png"]


def test_user_file_named_like_an_output_is_kept(tmp_path, ckpt, capsys):
    """Named like p.png's output but not its size: a user's file, even with --overwrite."""
    d = tmp_path / "photos"
    _photo(d / "p.png")
    mine = _photo(d / "p_x2.png", seed=1)  # same size as p.png, not twice it
    before = mine.read_bytes()
    assert _up(ckpt, d, "-o", d, "--overwrite") == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert mine.read_bytes() == before


# ----------------------------------------------------------------------------------------------
# 4. --ext, mirrored folders, --outscale, --precision


def test_ext_auto_keeps_each_input_format(tmp_path, ckpt):
    d = tmp_path / "in"
    _photo(d / "a.jpg", quality=95)
    _photo(d / "b.webp")
    _photo(d / "c.tif")
    _photo(d / "d.bmp")
    _photo(d / "e.PNG")
    out = tmp_path / "out"
    assert _up(ckpt, d, "-o", out, "--ext", "auto") == 0
    formats = {p.name: Image.open(p).format for p in out.iterdir()}
    expected = {"a_x2.jpg": "JPEG", "b_x2.webp": "WEBP", "c_x2.tif": "TIFF"}
    assert formats == {**expected, "d_x2.png": "PNG", "e_x2.PNG": "PNG"}

    assert _up(ckpt, d / "a.jpg", "-o", out, "--ext", "webp") == 0  # explicit values still work
    assert Image.open(out / "a_x2.webp").format == "WEBP"
    assert _up(ckpt, d / "b.webp", "-o", out / "default") == 0
    assert Image.open(out / "default" / "b_x2.png").format == "PNG"


def test_folders_are_mirrored(tmp_path, ckpt, capsys):
    d = tmp_path / "in"
    _photo(d / "a" / "photo.jpg")
    _photo(d / "b" / "photo.jpg", seed=1)
    _photo(d / ".cache" / "x.png")  # hidden folders are left out
    out = tmp_path / "out"
    assert _up(ckpt, d, "-o", out) == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert names == ["a/photo_x2.png", "b/photo_x2.png"]
    assert (out / "a" / "photo_x2.png").read_bytes() != (out / "b" / "photo_x2.png").read_bytes()

    # A glob keeps the tree below its first wildcard.
    assert _up(ckpt, f"{d}/*/photo.jpg", "-o", tmp_path / "glob") == 0
    assert (tmp_path / "glob" / "a" / "photo_x2.png").exists()
    assert (tmp_path / "glob" / "b" / "photo_x2.png").exists()

    # Files named directly go flat into -o: same names collide, and the second one is refused.
    capsys.readouterr()
    assert _up(ckpt, d / "a" / "photo.jpg", d / "b" / "photo.jpg", "-o", tmp_path / "flat") == 1
    assert "is also the output of" in capsys.readouterr().err


def test_outscale_runs_enough_passes_then_downscales(tmp_path, ckpt):
    src = _photo(tmp_path / "p.png", h=8, w=10)
    out = tmp_path / "out"
    assert _up(ckpt, src, "-o", out, "--outscale", 3) == 0
    x3 = Image.open(out / "p_x3.png")
    assert x3.size == (30, 24)
    model, _ = load_model(ckpt)
    x4 = upscale_image(model, Image.open(src), 4)  # two x2 passes, then 40x32 -> 30x24
    expected = np.asarray(x4.resize((30, 24), Image.LANCZOS)).astype(int)
    assert np.abs(np.asarray(x3).astype(int) - expected).max() <= 1

    assert _up(ckpt, src, "-o", out, "--outscale", 1.5) == 0
    assert Image.open(out / "p_x1.5.png").size == (15, 12)
    assert _up(ckpt, src, "-o", out, "--outscale", 4) == 0  # a power: no resize at all
    assert _up(ckpt, src, "-o", out / "s4", "--scale", 4) == 0
    assert (out / "p_x4.png").read_bytes() == (out / "s4" / "p_x4.png").read_bytes()


def test_outscale_keeps_16_bit_and_colour_profile(tmp_path, ckpt):
    from PIL import ImageCms

    a = (np.random.default_rng(0).integers(0, 65536, (8, 10))).astype(np.uint16)
    Image.fromarray(a).save(tmp_path / "g.png")
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    _photo(tmp_path / "c.png", icc_profile=icc)
    out = tmp_path / "out"
    assert _up(ckpt, tmp_path / "g.png", tmp_path / "c.png", "-o", out, "--outscale", 3) == 0
    sr = Image.open(out / "g_x3.png")
    assert sr.size == (30, 24) and sr.mode.startswith("I;16")
    assert Image.open(out / "c_x3.png").info.get("icc_profile") == icc


def test_usage_errors_return_argparse_codes(tmp_path, ckpt, capsys):
    assert main(["upscale", "x.png", "-o", "out", "--scale", "2", "--outscale", "3"]) == 2
    assert "not allowed with" in capsys.readouterr().err
    assert main(["upscale", "--help"]) == 0
    assert "--outscale" in capsys.readouterr().out


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_precision_on_cpu(tmp_path, ckpt, capsys, precision):
    """torch autocasts CPU convolutions to bf16 and (torch >= 2.4 or so) fp16: close to fp32."""
    src = _photo(tmp_path / "p.png", h=16, w=16)
    assert _up(ckpt, src, "-o", tmp_path / "fp32", "--precision", "fp32", "--device", "cpu") == 0
    rc = _up(ckpt, src, "-o", tmp_path / "low", "--precision", precision)
    if rc == 2 and precision == "fp16":  # an older torch: a clear error, not a silent fp32 run
        assert "fp16 is not supported on cpu" in capsys.readouterr().err
        return
    assert rc == 0
    fp32 = np.asarray(Image.open(tmp_path / "fp32" / "p_x2.png")).astype(int)
    low = np.asarray(Image.open(tmp_path / "low" / "p_x2.png")).astype(int)
    assert np.abs(fp32 - low).max() <= 8


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_bf16_on_native_bf16_cpus(tmp_path, ckpt, capsys, monkeypatch, native):
    """auto: bf16 where the CPU computes it natively (2.9x faster), float32 where it emulates it."""
    import srlib.infer

    monkeypatch.setattr(srlib.infer, "cpu_has_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert srlib.infer.resolve_precision(cpu, "auto") == ("bf16" if native else "fp32")
    assert srlib.infer.resolve_precision(cpu, "fp32") == "fp32"  # asked for: never changed
    assert srlib.infer.resolve_precision(torch.device("mps"), "auto") == "fp32"
    with pytest.raises(ValueError, match="precision must be one of"):
        srlib.infer.resolve_precision(cpu, "int8")
    src = _photo(tmp_path / "p.png", h=16, w=16)
    assert _up(ckpt, src, "-o", tmp_path / "auto", "--device", "cpu") == 0
    used = "bf16" if native else "fp32"
    assert f"precision {used} (auto)" in capsys.readouterr().out
    assert _up(ckpt, src, "-o", tmp_path / "same", "--device", "cpu", "--precision", used) == 0
    auto = (tmp_path / "auto" / "p_x2.png").read_bytes()
    assert auto == (tmp_path / "same" / "p_x2.png").read_bytes()


def test_precision_torch_cannot_do_is_a_clear_error(tmp_path, ckpt, capsys, monkeypatch):
    autocast = torch.autocast

    def autocast_that_gives_up(device_type, dtype):  # what torch does for unsupported pairs
        message = "In CPU autocast, but the target dtype is not supported. Disabling autocast."
        warnings.warn(message, UserWarning, stacklevel=2)
        return autocast(device_type, enabled=False)

    monkeypatch.setattr(torch, "autocast", autocast_that_gives_up)
    with pytest.raises(ValueError, match="fp16 is not supported on cpu"):
        precision_autocast(torch.device("cpu"), "fp16")
    assert _up(ckpt, _photo(tmp_path / "p.png"), "-o", tmp_path / "out", "--precision", "fp16") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --precision fp16: fp16 is not supported on cpu")
    assert not (tmp_path / "out").exists()


def test_png_compression_flag(tmp_path, ckpt, capsys):
    src = _photo(tmp_path / "a.png", 24, 30)
    for level in ("0", "9"):
        assert _up(ckpt, src, "-o", tmp_path / level, "--png-compression", level) == 0
    sizes = [(tmp_path / level / "a_x2.png").stat().st_size for level in ("0", "9")]
    assert sizes[0] > sizes[1]  # level 0 stores, 9 compresses most; both decode the same
    pixels = [np.asarray(Image.open(tmp_path / lv / "a_x2.png")) for lv in ("0", "9")]
    assert np.array_equal(*pixels)
    capsys.readouterr()
    assert _up(ckpt, src, "-o", tmp_path / "x", "--png-compression", "10") == 2
    assert "--png-compression" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 5. A checkpoint's model_config is checked against its weights before any model is built


def crafted_checkpoint(path: Path, **config) -> Path:
    """A small file whose model_config asks for a huge model (issue 24: 1,441 bytes, 16 s)."""
    from srlib.models import UNetUpscaler
    from srlib.training import save_checkpoint

    model = UNetUpscaler(2, (8, 16, 16), (16, 8), 0)
    save_checkpoint(path, model=model.state_dict(), model_config={**model.config, **config})
    return path


@pytest.fixture
def conv_sizes(monkeypatch) -> list[int]:
    """in_channels * out_channels of every Conv2d made during the test (a model's size)."""
    made = []
    init = torch.nn.Conv2d.__init__

    def counting(self, in_channels, out_channels, *args, **kwargs):
        made.append(in_channels * out_channels)
        init(self, in_channels, out_channels, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Conv2d, "__init__", counting)
    return made


CRAFTED = [dict(refine_blocks=20000), dict(encoder_channels=[3000] * 3)]


@pytest.mark.parametrize("config", CRAFTED, ids=["refine_blocks", "encoder_channels"])
@pytest.mark.parametrize("command", ["info", "upscale", "export", "export --onnx"])
def test_a_crafted_model_config_is_refused_before_a_model_is_built(
    tmp_path, capsys, conv_sizes, config, command
):
    path = crafted_checkpoint(tmp_path / "crafted.pt", **config)
    conv_sizes.clear()  # from here on
    argv = {
        "info": ["info", path],
        "upscale": ["upscale", _photo(tmp_path / "a.png"), "-o", tmp_path / "out", "-q"],
        "export": ["export", path, tmp_path / "small.pt"],
        "export --onnx": ["export", "--onnx", path, tmp_path / "small.onnx"],
    }[command]
    if command == "upscale":
        argv += ["--checkpoint", path]
    assert main(list(map(str, argv))) == 2
    err = capsys.readouterr().err
    key = next(iter(config))
    assert len(err.splitlines()) == 1 and f"model_config {key}=" in err, err
    assert "a corrupt or crafted checkpoint" in err
    assert len(conv_sizes) == 0  # refused before a single layer was made
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("small.*"))


@pytest.mark.parametrize("config", CRAFTED, ids=["refine_blocks", "encoder_channels"])
def test_load_model_and_hubconf_refuse_a_crafted_model_config(
    tmp_path, monkeypatch, conv_sizes, config
):
    import importlib.util

    import srlib.training.checkpoint

    path = crafted_checkpoint(tmp_path / "crafted.pt", **config)
    conv_sizes.clear()  # from here on
    with pytest.raises(ValueError, match="a corrupt or crafted checkpoint"):
        load_model(path)
    spec = importlib.util.spec_from_file_location(
        "hubconf", Path(srlib.__file__).parents[1] / "hubconf.py"
    )
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    crafted = srlib.training.checkpoint.load_checkpoint(path)
    monkeypatch.setattr(srlib.training.checkpoint, "load_checkpoint", lambda *a, **k: crafted)
    with pytest.raises(ValueError, match="a corrupt or crafted checkpoint"):
        hub.unet_x2()  # as if checkpoints/unet_x2.pt were this file
    assert conv_sizes == []


def test_weights_that_do_not_match_their_config_are_one_clear_error(tmp_path, capsys):
    from srlib.registry import check_model_config

    path = crafted_checkpoint(tmp_path / "other.pt", refine_blocks=2, encoder_channels=[8, 16, 8])
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model_config does not match the weights: 8 missing" in err
    assert "of another shape (e.g. encoder.stages.2.0.weight" in err
    # A view that claims a big shape but stores one number (stride 0) is no real weight.
    state = {"w": torch.zeros(1).expand(3000, 3, 3, 3)}
    with pytest.raises(ValueError, match="claims shape"):
        check_model_config({"arch": "UNetUpscaler"}, state)


# ----------------------------------------------------------------------------------------------
# 6. Sizes and numbers that cannot work are refused before any work


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--threads", "-1"], "--threads must be at least 1, got -1"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--tile", "0"], "--tile must be at least 1, got 0"),
        (["--tile", "-5"], "--tile must be at least 1, got -5"),
        (["--overlap", "-5"], "--overlap must be at least 0, got -5"),
        (["--scale", "0"], "--scale must be at least 2, got 0"),
        (["--max-output-pixels", "0"], "--max-output-pixels must be at least 1, got 0"),
    ],
)
def test_upscale_numbers_that_cannot_work_exit_2(tmp_path, ckpt, capsys, flags, expected):
    threads = torch.get_num_threads()
    assert _up(ckpt, _photo(tmp_path / "a.png"), "-o", tmp_path / "out", *flags) == 2
    err = capsys.readouterr().err
    assert err == f"error: {expected}\n"
    assert not (tmp_path / "out").exists() and torch.get_num_threads() == threads


def test_an_output_too_large_is_refused_before_any_work(tmp_path, ckpt, capsys, monkeypatch):
    src = _photo(tmp_path / "small.png", h=16, w=24)
    with monkeypatch.context() as m:
        m.setattr(cli, "_resize", None)  # any work would fail loudly
        m.setattr("srlib.infer.upscale_image", None)
        # Issue 24: x16384 planned for a 24x16 PNG (intermediates of 4.8, then 19 GB).
        assert _up(ckpt, src, "-o", tmp_path / "out", "--outscale", "9999") == 1
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and "error: " in err
        assert "x16384 of 24x16 would make 393216x262144 = 103,079,215,104 pixels" in err
        assert "over --max-output-pixels 1,431,655,760" in err
        assert "done: 0 written, 0 skipped, 1 failed" in out
        assert list((tmp_path / "out").iterdir()) == []
        # The bound is on the model's output, before an --outscale downscale: 24x16 x2.
        flags = ("--outscale", "1.5", "--max-output-pixels", 1535)
        assert _up(ckpt, src, "-o", tmp_path / "out", *flags) == 1
        assert "x2 of 24x16 would make 48x32 = 1,536 pixels" in capsys.readouterr().err
    flags = ("--outscale", "1.5", "--max-output-pixels", 1536)
    assert _up(ckpt, src, "-o", tmp_path / "out", *flags) == 0
    assert Image.open(tmp_path / "out" / "small_x1.5.png").size == (36, 24)
