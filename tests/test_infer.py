"""Tests for srlib.infer and the CLI: seamless tiling, image modes, bad files, export."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srlib import infer
from srlib.cli import main
from srlib.data import ImageLoadError
from srlib.infer import (
    NotAnImageError,
    export_checkpoint,
    open_image,
    save_image,
    upscale,
    upscale_array,
    upscale_image,
    upscale_tensor,
)
from srlib.models import ResNetUNetUpscaler, UNetUpscaler
from srlib.training import load_checkpoint, load_model, save_checkpoint

try:
    from tests._images import png16
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from _images import png16

REPO = Path(__file__).resolve().parent.parent


def tiny_unet(scale: int = 2, head_channels: int = 0) -> UNetUpscaler:
    m = UNetUpscaler(scale, (8, 16, 16), (16, 8), 0, head_channels=head_channels)
    return m.eval()


def tiny_unet_hr_head() -> UNetUpscaler:
    return tiny_unet(head_channels=8)  # the optional head that also works at HR resolution


def tiny_resnet() -> ResNetUNetUpscaler:
    return ResNetUNetUpscaler(scale=2, decoder_channels=(16, 16, 8), pretrained=False).eval()


def amplify_residual(model, factor: float = 1.0) -> None:
    """A random last head conv (training starts it at zero): a strong residual, so mistakes
    show up well above 1e-4. `factor` scales PyTorch's default init."""
    head = model.head
    last = head.up[0] if head.channels == 0 else head.out
    last.reset_parameters()
    with torch.no_grad():
        last.weight.mul_(factor)


# Tiny tensors: one torch thread in every test here (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def unet() -> UNetUpscaler:
    torch.manual_seed(0)
    m = tiny_unet()
    amplify_residual(m)
    return m


def _noise(h: int, w: int, c: int = 3, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    peak = np.iinfo(dtype).max
    shape = (h, w) if c == 1 else (h, w, c)
    return np.random.default_rng(seed).integers(0, peak + 1, shape, dtype=dtype)


def _direct(model, planes: torch.Tensor) -> torch.Tensor:
    """Untiled reference: model on the whole (3, h, w) image, clamped like the tiled path."""
    with torch.no_grad():
        return model(planes[None])[0].clamp(0, 1)


# ----------------------------------------------------------------------------------------------
# Tiling


@pytest.mark.parametrize(
    "make, hw, tile",
    [(tiny_unet, (53, 77), 32), (tiny_unet_hr_head, (53, 77), 32), (tiny_resnet, (203, 237), 64)],
)
def test_tiled_equals_untiled(make, hw, tile):
    torch.manual_seed(0)
    model = make()
    amplify_residual(model)
    lq = torch.rand(3, *hw)
    ref = _direct(model, lq)
    overlap = infer.auto_overlap(model)
    # The tiling is real: the sizes are not tile multiples, and some context windows are
    # smaller than the image along the width, so tile borders fall inside the image.
    assert hw[0] % tile and hw[1] % tile
    spans = infer._spans(hw[1], tile, model.stride)
    assert len(spans) >= 3
    assert spans[0][1] + overlap < hw[1] and spans[-1][0] - overlap > 0
    sr = upscale_tensor(model, lq, tile=tile)
    assert sr.shape == ref.shape
    assert (sr - ref).abs().max() <= 1e-4
    # ... and the test can fail: too little overlap leaves visible seams.
    seams = upscale_tensor(model, lq, tile=tile, overlap=model.stride)
    assert (seams - ref).abs().max() > 1e-4


def test_bf16_tiled_equals_bf16_untiled():
    """What `--precision auto` runs on a native-bf16 CPU: tiles are seamless in bf16 too."""
    torch.manual_seed(0)
    model = tiny_unet()
    amplify_residual(model)
    lq = torch.rand(3, 53, 77)
    whole = upscale_tensor(model, lq, tile=10**6, precision="bf16")
    assert (upscale_tensor(model, lq, tile=32, precision="bf16") - whole).abs().max() <= 1e-4
    assert 0 < (whole - _direct(model, lq)).abs().max() < 0.05  # bf16 ran: close, not equal


def test_receptive_field_overlap_is_aligned(unet):
    r = infer.receptive_field(unet)
    assert 0 < r <= infer.auto_overlap(unet) < r + unet.stride
    assert infer.auto_overlap(unet) % unet.stride == 0


def test_x4_is_two_x2_passes(unet):
    lq = torch.rand(3, 21, 26)
    twice = _direct(unet, _direct(unet, lq))
    sr = upscale_tensor(unet, lq, scale=4, tile=8)
    assert sr.shape == (3, 84, 104)
    assert (sr - twice).abs().max() <= 1e-4
    batch = upscale_tensor(unet, torch.stack([lq, lq]), scale=4, tile=8)
    assert batch.shape == (2, 3, 84, 104)
    for bad in (1, 3, 6):
        with pytest.raises(ValueError, match="not a power"):
            upscale_tensor(unet, lq, scale=bad)


def test_upscale_dispatches_on_type(unet):
    arr = _noise(9, 11)
    assert isinstance(upscale(unet, arr), np.ndarray)
    assert isinstance(upscale(unet, Image.fromarray(arr)), Image.Image)
    assert upscale(unet, torch.rand(3, 9, 11)).shape == (3, 18, 22)
    with pytest.raises(TypeError):
        upscale(unet, [[0.5]])


def test_uint8_array_matches_float_result(unet):
    arr = _noise(19, 23)
    ref = upscale_tensor(unet, torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    sr = upscale_array(unet, arr, tile=8)
    assert sr.dtype == np.uint8 and sr.shape == (38, 46, 3)
    expected = (ref.permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(sr.astype(np.float32) - expected).max() <= 1


# ----------------------------------------------------------------------------------------------
# Image modes


class Recorder(torch.nn.Module):
    """Wraps a model and keeps every input batch it sees."""

    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []
        self.scale, self.stride, self.config = model.scale, model.stride, model.config

    def forward(self, lq):
        self.seen.append(lq.clone())
        return self.model(lq)


def test_grayscale_stays_gray(unet):
    rec = Recorder(unet)
    img = Image.fromarray(_noise(17, 21, c=1), "L")
    sr = upscale_image(rec, img, tile=8)
    assert sr.mode == "L" and sr.size == (42, 34)
    assert len(rec.seen) > 1
    for lq in rec.seen:  # the model only ever saw 3 identical channels
        assert torch.equal(lq[:, 0], lq[:, 1]) and torch.equal(lq[:, 0], lq[:, 2])
    # The output is the channel mean of the RGB result of the replicated image.
    rgb = upscale_array(unet, np.repeat(np.asarray(img)[:, :, None], 3, axis=2))
    mean = rgb.astype(np.float32).mean(axis=2)
    assert np.abs(np.asarray(sr).astype(np.float32) - mean).max() <= 1


def test_one_bit_image_becomes_gray(unet):
    img = Image.fromarray(_noise(8, 8, c=1) > 127)
    assert img.mode == "1"
    assert upscale_image(unet, img).mode == "L"


def test_rgba_keeps_alpha(unet):
    rgba = _noise(15, 18, c=4)
    sr = upscale_image(unet, Image.fromarray(rgba, "RGBA"))
    assert sr.mode == "RGBA" and sr.size == (36, 30)
    out = np.asarray(sr)
    alpha = Image.fromarray(rgba[..., 3]).resize((36, 30), Image.BICUBIC)
    assert np.abs(out[..., 3].astype(int) - np.asarray(alpha).astype(int)).max() <= 1
    rgb_only = upscale_array(unet, np.ascontiguousarray(rgba[..., :3]))
    assert np.array_equal(out[..., :3], rgb_only)  # alpha never reaches the model


def test_la_and_palette_modes(unet):
    la = Image.fromarray(_noise(10, 12, c=2), "LA")
    assert upscale_image(unet, la).mode == "LA"
    p = Image.fromarray(_noise(10, 12)).convert("P")
    assert upscale_image(unet, p).mode == "RGB"
    p.info["transparency"] = 0
    assert upscale_image(unet, p).mode == "RGBA"


def test_16bit_png_in_16bit_png_out(unet, tmp_path):
    # A smooth 16-bit ramp: 8-bit quantisation would leave at most 256 distinct levels.
    ramp = np.linspace(1000, 60000, 40 * 50).reshape(40, 50).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "in.png")
    img = open_image(tmp_path / "in.png")
    assert img.mode == "I;16"
    sr = upscale_image(unet, img, tile=16)
    save_image(sr, tmp_path / "out.png")
    back = Image.open(tmp_path / "out.png")
    assert back.mode == "I;16" and back.size == (100, 80)
    out = np.asarray(back).astype(np.float64)
    assert len(np.unique(out)) > 1000
    planes = torch.from_numpy(ramp.astype(np.float32) / 65535).expand(3, -1, -1)
    ref = upscale_tensor(unet, planes).mean(0).numpy() * 65535
    assert np.abs(out - ref).max() <= 1.0  # float inside: within one 16-bit step


def test_16bit_rgb_png_warns_that_pillow_reads_8bit(unet, tmp_path):
    path = tmp_path / "rgb16.png"
    path.write_bytes(png16(_noise(6, 7, dtype=np.uint16)))
    with pytest.warns(UserWarning, match="16-bit RGB"):
        img = open_image(path)
    assert img.mode == "RGB" and upscale_image(unet, img).mode == "RGB"


def test_cmyk_jpeg(unet, tmp_path):
    rgb = Image.fromarray(_noise(16, 24))
    rgb.convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    img = open_image(tmp_path / "cmyk.jpg")
    assert img.mode == "CMYK"
    sr = upscale_image(unet, img)
    assert sr.mode == "RGB" and sr.size == (48, 32)
    ref = upscale_image(unet, img.convert("RGB"))
    assert np.array_equal(np.asarray(sr), np.asarray(ref))


def test_exif_rotated_jpeg(unet, tmp_path):
    # Stored 40 wide x 20 high with a white left half; orientation 6 = rotate 90 deg CW on
    # display, so the upright image is 20 x 40 with the white half on top.
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    img = open_image(tmp_path / "rot.jpg")
    assert img.size == (20, 40)
    sr = np.asarray(upscale_image(unet, img))
    assert sr.shape == (80, 40, 3)
    assert sr[:30].mean() > 200 and sr[-30:].mean() < 50


def test_non_image_truncated_and_bomb_errors(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("not a picture")
    with pytest.raises(NotAnImageError, match="not an image"):
        open_image(tmp_path / "notes.txt")

    Image.fromarray(_noise(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        open_image(tmp_path / "cut.png")
    Image.fromarray(_noise(64, 64)).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated"):
        open_image(tmp_path / "cut.jpg")

    with pytest.raises(ImageLoadError, match="--max-pixels"):
        open_image(tmp_path / "full.png", max_pixels=64 * 64 - 1)
    # Under PIL's own limit (PIL errors above twice it): --max-pixels raises it for one call.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageLoadError, match="--max-pixels"):
        open_image(tmp_path / "full.png", max_pixels=1000)
    assert open_image(tmp_path / "full.png", max_pixels=10_000).size == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored, never None

    with pytest.raises(ImageLoadError, match="FileNotFoundError"):
        open_image(tmp_path / "missing.png")


def test_save_formats(tmp_path):
    rgba = Image.fromarray(_noise(8, 8, c=4), "RGBA")
    assert save_image(rgba, tmp_path / "a.png") is None
    assert Image.open(tmp_path / "a.png").mode == "RGBA"
    assert "alpha" in save_image(rgba, tmp_path / "a.jpg", "jpg")
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"
    save_image(rgba, tmp_path / "a.webp", "webp")
    assert Image.open(tmp_path / "a.webp").mode == "RGBA"
    g16 = Image.fromarray(_noise(8, 8, c=1, dtype=np.uint16))
    save_image(g16, tmp_path / "g.tiff", "tiff")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.tiff")), np.asarray(g16))
    assert "8-bit" in save_image(g16, tmp_path / "g.jpg", "jpg")
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# ----------------------------------------------------------------------------------------------
# Checkpoints


def _train_ckpt(model, path):
    """A training-style checkpoint: weights, optimizer state, RNG, long history."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(torch.rand(1, 3, 16, 16)).mean().backward()
    opt.step()
    history = {
        "step": list(range(1, 1001)),
        "lr": [1e-3] * 1000,
        "train": {"total": [0.1] * 1000},
        "val": {"step": [500, 1000], "epoch": [1, 2], "loss": [0.1, 0.09], "psnr": [30.0, 31.5]},
        "samples_per_s": 50.0,
        "train_seconds": 200.0,
    }
    save_checkpoint(
        path,
        model=model.state_dict(),
        model_config=model.config,
        optimizer=opt.state_dict(),
        config={"name": "t", "steps": 1000},
        step=1000,
        history=history,
        torch_rng=torch.get_rng_state(),
    )


def test_export_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_resnet()
    _train_ckpt(model, tmp_path / "train.pt")
    size = export_checkpoint(tmp_path / "train.pt", tmp_path / "small.pt", metrics={"psnr": 31.5})
    assert size == os.path.getsize(tmp_path / "small.pt")
    assert size < os.path.getsize(tmp_path / "train.pt") / 2
    ckpt = load_checkpoint(tmp_path / "small.pt")
    assert "optimizer" not in ckpt and "torch_rng" not in ckpt
    assert ckpt["metrics"] == {"psnr": 31.5} and ckpt["step"] == 1000
    assert ckpt["history"]["val"]["psnr"] == [30.0, 31.5]
    assert ckpt["model"]["decoder.blocks.0.fuse.weight"].dtype == torch.float16
    assert ckpt["model"]["encoder.stages.0.1.running_var"].dtype == torch.float32  # buffers
    loaded, _ = load_model(tmp_path / "small.pt")
    assert next(loaded.parameters()).dtype == torch.float32
    lq = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert (loaded(lq) - model.eval()(lq)).abs().max() < 2e-3  # fp16 weight rounding
    export_checkpoint(tmp_path / "train.pt", tmp_path / "full.pt", half=False)
    exact, _ = load_model(tmp_path / "full.pt")
    with torch.no_grad():
        assert torch.equal(exact(lq), model(lq))


@pytest.mark.parametrize("make", [UNetUpscaler, lambda: ResNetUNetUpscaler(pretrained=False)])
def test_default_models_export_under_5mb(make, tmp_path):
    model = make()
    save_checkpoint(tmp_path / "t.pt", model=model.state_dict(), model_config=model.config)
    assert export_checkpoint(tmp_path / "t.pt", tmp_path / "s.pt") <= 5_000_000


# ----------------------------------------------------------------------------------------------
# CLI


@pytest.fixture
def ckpt(tmp_path, unet):
    path = tmp_path / "tiny.pt"
    save_checkpoint(
        path,
        model=unet.state_dict(),
        model_config=unet.config,
        config={"name": "tiny"},
        step=3,
        history={},
    )
    return path


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "srlib", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )


def test_cli_upscale_folder_end_to_end(tmp_path, ckpt):
    src = tmp_path / "photos"
    src.mkdir()
    Image.fromarray(_noise(12, 16)).save(src / "a.png")
    Image.fromarray(_noise(10, 10, c=1), "L").save(src / "b.jpg")
    (src / "readme.txt").write_text("hello")
    out = tmp_path / "out"
    res = _cli("upscale", src, "-o", out, "--checkpoint", ckpt, "-q", "--threads", 1)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "readme.txt" not in res.stdout + res.stderr  # a folder yields its images only
    assert sorted(p.name for p in out.iterdir()) == ["a_x2.png", "b_x2.png"]
    assert Image.open(out / "a_x2.png").size == (32, 24)
    assert Image.open(out / "b_x2.png").mode == "L"

    # A broken image makes the run fail (exit 1) but the other files are still written.
    data = (src / "a.png").read_bytes()
    (src / "c.png").write_bytes(data[: len(data) // 2])
    res = _cli("upscale", src, "-o", out, "--checkpoint", ckpt, "-q", "--scale", 4, "--threads", 1)
    assert res.returncode == 1
    assert "c.png" in res.stderr and "truncated" in res.stderr
    assert "2 written, 0 skipped, 1 failed" in res.stdout
    assert Image.open(out / "a_x4.png").size == (64, 48)


def test_cli_never_overwrites(tmp_path, ckpt, capsys):
    d = tmp_path / "d"
    d.mkdir()
    Image.fromarray(_noise(8, 8)).save(d / "a.png")
    Image.fromarray(_noise(8, 8, seed=1)).save(d / "a_x2.png")  # would be a.png's output
    before = (d / "a_x2.png").read_bytes()
    argv = ["upscale", str(d / "a.png"), str(d / "a_x2.png"), "-o", str(d), "-q"]
    assert main([*argv, "--checkpoint", str(ckpt), "--overwrite"]) == 1
    assert "would overwrite an input" in capsys.readouterr().err
    assert (d / "a_x2.png").read_bytes() == before

    out = tmp_path / "out"
    assert main(["upscale", str(d / "a.png"), "-o", str(out), "--checkpoint", str(ckpt)]) == 0
    stamp = (out / "a_x2.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["upscale", str(d / "a.png"), "-o", str(out), "--checkpoint", str(ckpt)]) == 0
    assert "exists (pass --overwrite" in capsys.readouterr().err
    assert (out / "a_x2.png").stat().st_mtime_ns == stamp


def test_cli_missing_checkpoint_and_inputs(tmp_path, ckpt, capsys, monkeypatch):
    import srlib.hub

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(srlib.hub, "REPO_ROOT", tmp_path / "nowhere")
    monkeypatch.setenv("SRLIB_CHECKPOINT_URL", "http://127.0.0.1:9/")  # nothing listens there
    assert main(["upscale", "x.png", "-o", "out"]) == 2
    err = capsys.readouterr().err
    assert "checkpoints/unet_x2.pt" in err and "--checkpoint" in err
    assert main(["upscale", "nothing/*.png", "-o", "out", "--checkpoint", str(ckpt)]) == 1
    assert "no file matches" in capsys.readouterr().err


def test_cli_info_and_export(tmp_path, capsys):
    torch.manual_seed(0)
    model = tiny_resnet()
    _train_ckpt(model, tmp_path / "train.pt")
    assert main(["export", str(tmp_path / "train.pt"), str(tmp_path / "small_x2.pt")]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "small_x2.pt")]) == 0
    out = capsys.readouterr().out
    assert "ResNetUNetUpscaler" in out
    assert f"{model.num_params(True):,} trainable, {model.num_params(False):,} total" in out
    assert "best PSNR 31.50 dB at step 1000" in out and "float16" in out
    res = _cli("info", tmp_path / "train.pt")
    assert res.returncode == 0 and "ResNetUNetUpscaler" in res.stdout
    assert "optimizer" in res.stdout
    # An existing destination is kept unless --overwrite says otherwise.
    before = (tmp_path / "small_x2.pt").read_bytes()
    src, dst = str(tmp_path / "train.pt"), str(tmp_path / "small_x2.pt")
    assert main(["export", "--fp32", src, dst]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "small_x2.pt").read_bytes() == before
    assert main(["export", "--fp32", "--overwrite", src, dst]) == 0
    assert (tmp_path / "small_x2.pt").read_bytes() != before  # now the fp32 export


def test_upscale_works_inside_no_grad(unet):
    """Evaluation calls upscale under torch.no_grad(); measuring the overlap must still work."""
    from srlib.infer import _RF_CACHE, upscale_tensor

    _RF_CACHE.pop(unet, None)
    lq = torch.rand(1, 3, 20, 20)
    with torch.no_grad():
        out = upscale_tensor(unet, lq, tile=16)
    assert out.shape == (1, 3, 40, 40)
