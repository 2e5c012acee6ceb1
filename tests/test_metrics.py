"""Tests for srlib.metrics on small synthetic images (no ../shared, no downloads)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import structural_similarity
from torch import nn

from srlib import metrics as M
from srlib.resize import BASELINES, imresize, make_lq, matlab_bicubic


def smooth_image(h: int, w: int, seed: int = 0, channels: int = 3) -> torch.Tensor:
    """Random but natural-ish (C, H, W) image in [0, 1]: upsampled noise plus fine texture."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, channels, h // 4 + 1, w // 4 + 1, generator=g)
    img = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (0.8 * img + 0.2 * torch.rand(channels, h, w, generator=g)).clamp(0, 1)


def save_png(img: torch.Tensor, path, mode: str = "RGB") -> None:
    """Write a (3, H, W) [0, 1] tensor as an 8-bit PNG (mode "L" keeps channel 0)."""
    arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(path)


# ---------------------------------------------------------------------------------------------
# Colour conversion and quantisation


def test_rgb_to_y_pure_colours():
    colours = torch.tensor([[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    y = M.rgb_to_y(colours[:, :, None, None])[:, 0, 0]  # (5,)
    expected = torch.tensor([235.0, 16.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], dtype=float)
    assert torch.allclose(y, expected, atol=1e-9)


def test_gray_images_are_measured_on_their_gray_level():
    v = torch.tensor([0.0, 0.5, 1.0], dtype=float)[None, None, :]  # (1, 1, 3)
    assert torch.allclose(M.rgb_to_y(v[None]), 255 * v[0], atol=1e-9)
    rgb = v.expand(3, 1, 3)  # R = G = B
    assert torch.allclose(M.rgb_to_gray(rgb), v, atol=1e-9)


def test_quantize_rounds_halves_up_like_matlab():
    x = torch.tensor([0.5, 1.5, 2.5, 254.5, 300.0, -3.0], dtype=torch.float64) / 255
    q = M.quantize(x) * 255
    assert q.tolist() == [1.0, 2.0, 3.0, 255.0, 255.0, 0.0]  # torch.round would give 0, 2, 2


# ---------------------------------------------------------------------------------------------
# PSNR, SSIM, detail


def test_psnr_of_constant_offset():
    gt = torch.zeros(3, 32, 32)
    sr = torch.full((3, 32, 32), 10 / 255)
    # RGB: every value off by 10 levels. Y: 16 + 219 * 10/255 = 24.59 -> 25, i.e. off by 9.
    assert M.psnr_rgb(sr, gt, scale=2) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    assert M.psnr_y(sr, gt, scale=2) == pytest.approx(20 * math.log10(255 / 9), abs=1e-9)


def test_identical_images_give_inf_one_one():
    img = smooth_image(40, 36)
    assert M.psnr_y(img, img, scale=2) == math.inf
    assert M.psnr_rgb(img, img, scale=2) == math.inf
    assert M.ssim_y(img, img, scale=2) == pytest.approx(1.0, abs=1e-12)
    assert M.detail_ratio(img, img, scale=2) == pytest.approx(1.0, abs=1e-12)


def test_sub_level_differences_vanish_after_8bit_quantisation():
    gt = M.quantize(smooth_image(32, 32))
    assert M.psnr_y(gt + 0.4 / 255, gt, scale=2) == math.inf
    assert M.psnr_y(gt + 0.6 / 255, gt, scale=2) < math.inf


def test_border_crop():
    gt = smooth_image(40, 40)
    sr = gt.clone()
    sr[:, :3, :] = 0  # damage the top 3 rows only
    sr[:, :, -3:] = 1  # and the right 3 columns
    assert M.psnr_y(sr, gt, scale=3) == math.inf  # crop_border defaults to scale
    assert M.psnr_y(sr, gt, scale=2) < math.inf  # one damaged row survives a 2-pixel crop
    assert M.psnr_y(sr, gt, scale=3, crop_border=0) < 30
    with pytest.raises(ValueError, match="too small"):
        M.psnr_y(sr, gt, scale=3, crop_border=20)


def test_batch_gives_mean_of_per_image_values():
    a, b = smooth_image(32, 32, 1), smooth_image(32, 32, 2)
    noisy = (a + 0.05 * torch.randn_like(a)).clamp(0, 1)
    batch = M.psnr_y(torch.stack([noisy, b]), torch.stack([a, b * 0.9]), scale=2)
    single = [M.psnr_y(noisy, a, scale=2), M.psnr_y(b, b * 0.9, scale=2)]
    assert batch == pytest.approx(sum(single) / 2, abs=1e-9)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        M.psnr_y(torch.zeros(3, 20, 20), torch.zeros(3, 20, 22), scale=2)


def _y8(img: torch.Tensor) -> np.ndarray:
    """Test-side Y channel: 8-bit RGB -> BT.601 Y rounded half up, (H, W) float64."""
    q = np.floor(img.double().numpy() * 255 + 0.5) / 255
    y = 16 + 65.481 * q[0] + 128.553 * q[1] + 24.966 * q[2]
    return np.floor(y + 0.5)


def _reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. SSIM written out: 11x11 Gaussian (sigma 1.5), 'valid' filtering, mean."""
    r = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-(r**2) / (2 * 1.5**2))
    win = torch.outer(g, g) / torch.outer(g, g).sum()

    def filt(x):
        return F.conv2d(torch.from_numpy(x)[None, None], win[None, None])[0, 0]

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a**2
    var_b = filt(b * b) - mu_b**2
    cov = filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    return s.mean().item()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_agrees_with_skimage_and_with_the_formula(seed):
    gt = smooth_image(37, 45, seed)
    g = torch.Generator().manual_seed(seed + 10)
    sr = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    ours = M.ssim_y(sr, gt, scale=2)
    c = 2
    a, b = _y8(sr)[c:-c, c:-c], _y8(gt)[c:-c, c:-c]
    lib = structural_similarity(
        a, b, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert ours == pytest.approx(lib, abs=1e-12)
    assert ours == pytest.approx(_reference_ssim(a, b), abs=1e-9)
    assert 0.2 < ours < 0.99


def test_detail_ratio_blur_and_noise():
    gt = smooth_image(64, 64, 3)
    blurred = imresize(imresize(gt, scale=0.5), scale=2)
    g = torch.Generator().manual_seed(0)
    noisy = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    assert M.detail_ratio(blurred, gt, scale=2) < 0.5
    assert M.detail_ratio(noisy, gt, scale=2) > 1.5
    flat = torch.full((3, 32, 32), 0.5)
    assert math.isnan(M.detail_ratio(noisy[:, :32, :32], flat, scale=2))


# ---------------------------------------------------------------------------------------------
# evaluate


def make_benchmark(root, scale: int = 2):
    """root/image_SRF_<s>/ with an RGB and a grayscale HR/LR pair, LR made by make_lq."""
    folder = root / f"image_SRF_{scale}"
    folder.mkdir(parents=True)
    hrs = {
        "img_001": smooth_image(48, 40, 1),
        "img_002": smooth_image(36, 44, 2)[:1].repeat(3, 1, 1),
    }
    for name, hr in hrs.items():
        mode = "L" if name == "img_002" else "RGB"
        save_png(hr, folder / f"{name}_SRF_{scale}_HR.png", mode)
        save_png(make_lq(M.quantize(hr), scale), folder / f"{name}_SRF_{scale}_LR.png", mode)
    return folder


def test_evaluate_benchmark_layout(tmp_path):
    make_benchmark(tmp_path / "Tiny")
    res = M.evaluate("bicubic (MATLAB)", tmp_path / "Tiny", 2)
    assert res["dataset"] == "Tiny" and res["layout"] == "benchmark" and res["lq"] == "given"
    assert res["method"] == "bicubic (MATLAB)"
    assert [r["name"] for r in res["images"]] == ["img_001", "img_002"]
    for key in ("psnr_y", "ssim_y", "psnr_rgb", "detail"):
        values = [r[key] for r in res["images"]]
        assert res["mean"][key] == pytest.approx(sum(values) / 2)
        assert all(math.isfinite(v) for v in values)
    assert 20 < res["mean"]["psnr_y"] < 50 and 0.5 < res["mean"]["ssim_y"] < 1
    assert 0 < res["mean"]["detail"] < 1  # bicubic is blurry

    # The grayscale image is measured on its gray level, by hand:
    sub = tmp_path / "Tiny" / "image_SRF_2"
    gt = M.load_image(sub / "img_002_SRF_2_HR.png")[None]
    sr = matlab_bicubic(M.load_image(sub / "img_002_SRF_2_LR.png")[None], 2)
    assert res["images"][1]["psnr_y"] == pytest.approx(
        M.psnr_y(M.rgb_to_gray(sr), gt[:, :1], scale=2), abs=1e-9
    )
    assert any("img_002: grayscale" in n for n in res["notes"])

    # The subfolder itself works too, and own LR equals the given one here (made the same way).
    own = M.evaluate("bicubic (MATLAB)", sub, 2, own_lq=True)
    assert own["dataset"] == "Tiny" and own["lq"] == "own"
    assert own["mean"]["psnr_y"] == pytest.approx(res["mean"]["psnr_y"], abs=1e-9)


def test_evaluate_plain_hr_folder(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    save_png(smooth_image(50, 37, 4), folder / "a.png")  # odd width: mod-cropped to 36
    save_png(smooth_image(40, 44, 5), folder / "b.png", mode="L")
    rgba = Image.fromarray((smooth_image(32, 32, 6).permute(1, 2, 0).numpy() * 255).astype("uint8"))
    rgba.putalpha(200)
    rgba.save(folder / "c.png")
    (folder / "notes.txt").write_text("not an image")
    seen = []

    def fn(lq):  # a plain callable upscaler
        seen.append(tuple(lq.shape))
        return matlab_bicubic(lq, 2)

    res = M.evaluate(fn, folder, 2)
    assert res["layout"] == "hr_folder" and res["lq"] == "own"
    assert [r["name"] for r in res["images"]] == ["a", "b", "c"]
    assert seen == [(1, 3, 25, 18), (1, 3, 20, 22), (1, 3, 16, 16)]
    assert all(math.isfinite(r["psnr_y"]) for r in res["images"])
    assert res["mean"]["psnr_y"] == pytest.approx(
        M.evaluate("bicubic (MATLAB)", folder, 2)["mean"]["psnr_y"]
    )
    bilinear = M.evaluate("bilinear (MATLAB)", folder, 2)
    assert bilinear["mean"]["psnr_y"] < res["mean"]["psnr_y"]  # bicubic beats bilinear


def test_baseline_rows_name_whose_kernel_made_them(tmp_path):
    folder = tmp_path / "hr"
    folder.mkdir()
    save_png(smooth_image(48, 48, 8), folder / "a.png")
    results = {name: M.evaluate(name, folder, 2, with_lpips=False) for name in BASELINES}
    assert [r["method"] for r in results.values()] == list(BASELINES)
    psnr = {name: r["mean"]["psnr_y"] for name, r in results.items()}
    assert psnr["bicubic (torch)"] != pytest.approx(psnr["bicubic (MATLAB)"], abs=1e-3)
    # The short names evaluate() took before srlib.resize meant MATLAB's, and now say so.
    for short in ("bicubic", "bilinear"):
        res = M.evaluate(short, folder, 2, with_lpips=False)
        assert res["method"] == f"{short} (MATLAB)"
        assert res["mean"]["psnr_y"] == psnr[f"{short} (MATLAB)"]
    rows = [M.summary_row(r, dataset="photos") for r in results.values()]
    assert [r["method"] for r in rows] == list(BASELINES)
    table = M.format_table(rows, ["method", "dataset", "psnr_y"])
    shown = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert shown == list(BASELINES)  # never a bare "bicubic"


class StandIn(nn.Module):
    """Tiny model with a `scale`: bicubic plus a 1x1 conv initialised to identity."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(3, 3, 1)
        nn.init.eye_(self.conv.weight.view(3, 3))
        nn.init.zeros_(self.conv.bias)
        self.calls = []

    def forward(self, lq):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return self.conv(matlab_bicubic(lq, self.scale))


def test_evaluate_module_runs_in_eval_mode_and_restores_it(tmp_path):
    make_benchmark(tmp_path / "Tiny")
    model = StandIn(2).train()
    res = M.evaluate(model, tmp_path / "Tiny", 2)
    assert res["method"] == "StandIn"
    assert model.calls == [(False, False), (False, False)]  # eval mode, no grad
    assert model.training  # restored
    base = M.evaluate("bicubic (MATLAB)", tmp_path / "Tiny", 2)
    assert res["mean"]["psnr_y"] == pytest.approx(base["mean"]["psnr_y"], abs=1e-3)
    with pytest.raises(ValueError, match="x3"):
        M.evaluate(StandIn(3), tmp_path / "Tiny", 2)


def test_perfect_upscaler_scores_inf_one_one(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    hr = M.quantize(smooth_image(40, 40, 7))
    save_png(hr, folder / "x.png")
    res = M.evaluate(lambda lq: hr[None], folder, 4)
    row = res["images"][0]
    assert row["psnr_y"] == math.inf and row["psnr_rgb"] == math.inf
    assert row["ssim_y"] == pytest.approx(1.0) and row["detail"] == pytest.approx(1.0)


def test_evaluate_errors(tmp_path):
    make_benchmark(tmp_path / "Tiny")
    with pytest.raises(FileNotFoundError, match="x3"):
        M.evaluate("bicubic (MATLAB)", tmp_path / "Tiny", 3)
    with pytest.raises(FileNotFoundError):
        M.evaluate("bicubic (MATLAB)", tmp_path / "missing", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        M.evaluate("bicubic (MATLAB)", tmp_path / "empty", 2)
    with pytest.raises(ValueError, match=r"baseline 'lanczos'.*bicubic \(MATLAB\)"):
        M.evaluate("lanczos", tmp_path / "Tiny", 2)
    with pytest.raises(ValueError, match="expected"):
        M.evaluate(lambda lq: lq, tmp_path / "Tiny", 2)  # forgot to upscale
    with pytest.raises(ValueError, match="non-finite"):
        M.evaluate(lambda lq: matlab_bicubic(lq, 2) * math.nan, tmp_path / "Tiny", 2)

    bad = tmp_path / "bad"
    bad.mkdir()
    save_png(smooth_image(32, 32), bad / "ok.png")
    data = (bad / "ok.png").read_bytes()
    (bad / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.png"):
        M.evaluate("bicubic (MATLAB)", bad, 2)

    tiny = tmp_path / "tiny"
    tiny.mkdir()
    save_png(smooth_image(12, 12), tiny / "small.png")
    with pytest.raises(ValueError, match="small.png"):
        M.evaluate("bicubic (MATLAB)", tiny, 4)  # 12 - 2 * 4 = 4 pixels left: too small for SSIM


# ---------------------------------------------------------------------------------------------
# Image loading


def test_load_image_modes(tmp_path):
    arr16 = (np.linspace(0, 65535, 24 * 16).reshape(16, 24)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "deep.png")
    img = M.load_image(tmp_path / "deep.png")
    assert img.shape == (3, 16, 24) and img.max() == 1 and img.min() == 0
    assert torch.allclose(img[0], torch.from_numpy(arr16 / 65535).float(), atol=1e-6)

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)  # fully transparent black -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    assert torch.all(M.load_image(tmp_path / "clear.png") == 1)

    Image.new("CMYK", (10, 6), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # red
    red = M.load_image(tmp_path / "cmyk.jpg")
    assert red.shape == (3, 6, 10) and red[0].mean() > 0.9 and red[1].mean() < 0.1

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.new("RGB", (20, 10)).save(tmp_path / "rotated.jpg", exif=exif)
    assert M.load_image(tmp_path / "rotated.jpg").shape == (3, 20, 10)

    (tmp_path / "junk.png").write_bytes(b"definitely not a png")
    with pytest.raises(ValueError, match="junk.png"):
        M.load_image(tmp_path / "junk.png")


# ---------------------------------------------------------------------------------------------
# LPIPS (never downloads)


def test_lpips_reports_why_it_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    ok, reason = M.lpips_status()
    assert not ok and "LPIPS unavailable" in reason
    img = torch.rand(1, 3, 16, 16)
    assert math.isnan(M.lpips_distance(img, img))
    folder = tmp_path / "hr"
    folder.mkdir()
    save_png(smooth_image(32, 32), folder / "a.png")
    res = M.evaluate("bicubic (MATLAB)", folder, 2)
    assert math.isnan(res["mean"]["lpips"]) and any("LPIPS unavailable" in n for n in res["notes"])


def test_lpips_loads_cached_backbone_without_downloading(tmp_path, monkeypatch):
    pytest.importorskip("lpips")
    from torchvision.models import AlexNet_Weights, alexnet

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(M, "_LPIPS", {})
    # A random AlexNet stands in for the real ImageNet weights (only features.* are used).
    features = {f"features.{k}": v for k, v in alexnet().features.state_dict().items()}
    (tmp_path / "checkpoints").mkdir()
    torch.save(
        features, tmp_path / "checkpoints" / AlexNet_Weights.IMAGENET1K_V1.url.split("/")[-1]
    )
    assert M.lpips_status()[0]
    a, b = smooth_image(32, 32, 1)[None], smooth_image(32, 32, 2)[None]
    assert M.lpips_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    d = M.lpips_distance(a, b)
    assert math.isfinite(d) and d > 0


# ---------------------------------------------------------------------------------------------
# Published numbers and tables


def test_published_table():
    set5 = {(r["method"], r["scale"]): r["psnr_y"] for r in M.published("Set5")}
    assert set5[("SRCNN (published)", 2)] == 36.66 and set5[("VDSR (published)", 4)] == 31.35
    assert set5[("Bicubic (published)", 3)] == 30.39
    assert len(M.published("Set14", 3)) == 4 and M.published("Urban100") == []
    assert all(r["source"] for r in M.PUBLISHED)
    vdsr = M.published("Set5", 2, "VDSR")
    assert vdsr[0]["ssim_y"] == 0.9587 and vdsr[0]["method"].endswith("(published)")


def test_format_table():
    rows = [
        {"method": "a", "psnr_y": 30.123456, "ssim_y": 0.91234, "lpips": math.nan},
        {"method": "bb", "psnr_y": math.inf, "ssim_y": 1.0, "extra": 3},
    ]
    text = M.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split("|")[1].strip() == "method" and "extra" in lines[0]
    assert set(lines[1]) <= {"|", "-"}
    assert "30.12" in lines[2] and "0.9123" in lines[2] and " - " in lines[2]
    assert "inf" in lines[3] and len({len(line) for line in lines}) == 1
    assert M.format_table([]) == "(no rows)"
    assert M.format_table(rows, columns=["psnr_y"]).splitlines()[0] == "| psnr_y |"
