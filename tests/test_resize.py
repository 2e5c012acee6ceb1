"""srlib.resize: MATLAB's imresize, torch's kernels, and labels that say which is which."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from srlib import resize as R  # noqa: E402


def keys(t: float, a: float) -> float:
    """Keys' cubic convolution kernel with parameter a (MATLAB: -0.5, torch/OpenCV: -0.75)."""
    t = abs(t)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a if t < 2 else 0.0


def triangle(t: float, a: float = 0.0) -> float:
    """The bilinear kernel (a unused, for a common signature with keys)."""
    return max(0.0, 1 - abs(t))


def impulse_row(n: int, at: int, background: float = 0.5, height: float = 0.25) -> torch.Tensor:
    """(1, 1, 4, n) float64: every row is `background` with `background + height` at column `at`.

    The background keeps the kernel's negative lobes inside [0, 1], so clamping hides nothing.
    """
    x = torch.full((1, 1, 4, n), background, dtype=torch.float64)
    x[..., at] += height
    return x


# ---------------------------------------------------------------------------------------------
# The three "bicubics" and their labels


@pytest.fixture(scope="module")
def chelsea() -> torch.Tensor:
    """skimage's cat photo (ships with scikit-image: no download), (3, 300, 450) in [0, 1]."""
    from skimage.data import chelsea

    return torch.from_numpy(chelsea()).permute(2, 0, 1).float() / 255


def test_the_three_bicubics_differ_on_a_real_photo(chelsea):
    from srlib.metrics import psnr_y

    gt = R.mod_crop(chelsea, 2)[None]  # (1, 3, 300, 450)
    lq = R.make_lq(gt, 2)
    # Upscaling the same lq: torch's bicubic (the models' base, the notebooks' figures) and
    # MATLAB's (the metric tables' row) are different kernels, a visible difference in dB.
    matlab = psnr_y(R.BASELINES["bicubic (MATLAB)"](lq, 2), gt, 2)
    torch_ = psnr_y(R.BASELINES["bicubic (torch)"](lq, 2), gt, 2)
    assert abs(torch_ - matlab) > 0.1  # 35.37 vs 35.22 dB
    # Downscaling: training lq (torch, antialiased) is not the benchmarks' lq (MATLAB, uint8).
    train_lq = R.degrade(gt, 2, "bicubic")
    assert train_lq.shape == lq.shape
    assert torch.equal(lq * 255, torch.round(lq * 255))  # 8-bit levels, like an LR PNG
    assert not torch.equal(train_lq * 255, torch.round(train_lq * 255))  # floats
    assert (train_lq - lq).abs().max() > 1 / 255  # most at the border, where the two differ
    # Bilinear, in contrast, upscales identically in both (they only differ by name).
    bilinear = [R.BASELINES[f"bilinear ({who})"](lq, 2) for who in ("MATLAB", "torch")]
    assert torch.allclose(*bilinear, atol=1e-6)


@pytest.mark.parametrize(
    ("label", "kernel", "a"),
    [
        ("bicubic (MATLAB)", keys, -0.5),
        ("bicubic (torch)", keys, -0.75),
        ("bilinear (MATLAB)", triangle, 0.0),
        ("bilinear (torch)", triangle, 0.0),
    ],
)
@pytest.mark.parametrize("scale", [2, 3])
def test_each_baseline_label_names_its_kernel(label, kernel, a, scale):
    n, at = 16, 8
    out = R.BASELINES[label](impulse_row(n, at), scale)  # (1, 1, 4 * scale, n * scale)
    assert out.shape == (1, 1, 4 * scale, n * scale)
    response = (out[0, 0, 0] - 0.5) / 0.25  # one row: every row is the same
    # Output pixel j sits at input coordinate (j + 0.5) / scale - 0.5 (pixel centres).
    expected = [kernel((j + 0.5) / scale - 0.5 - at, a) for j in range(n * scale)]
    assert response.tolist() == pytest.approx(expected, abs=1e-6)


def test_degrade_is_torch_antialiased_and_make_lq_matlab():
    n, at = 32, 16
    # "bicubic (torch, antialiased)": Keys a = -0.5 (not torch's upscaling -0.75), widened by
    # the scale; in the interior that is exactly MATLAB's float imresize.
    assert R.degrade_label("bicubic") == "bicubic (torch, antialiased)"
    response = (R.degrade(impulse_row(n, at), 2, "bicubic")[0, 0, 0] - 0.5) / 0.25
    expected = [keys((2 * j + 0.5 - at) / 2, -0.5) / 2 for j in range(n // 2)]
    assert response.tolist() == pytest.approx(expected, abs=1e-6)
    plain = F.interpolate(impulse_row(n, at), size=(2, n // 2), mode="bicubic")[0, 0, 0]
    assert not torch.allclose((plain - 0.5) / 0.25, response, atol=1e-3)  # not antialiased
    matlab = R.imresize(impulse_row(n, at), scale=0.5)[0, 0, 0]
    assert torch.allclose(matlab[2:-2], R.degrade(impulse_row(n, at), 2, "bicubic")[0, 0, 0, 2:-2])
    # make_lq: MATLAB's antialiased bicubic on 8-bit levels, rounded half up to 8 bit.
    lq = R.make_lq(impulse_row(n, at, 128 / 255, 64 / 255), 2)[0, 0, 0] * 255
    expected = [
        np.floor(128 + 64 * keys((2 * j + 0.5 - at) / 2, -0.5) / 2 + 0.5) for j in range(16)
    ]
    assert lq.tolist() == pytest.approx(expected, abs=1e-9)


def test_labels_of_the_torch_kernels():
    assert R.upsample_label("bicubic") == "bicubic (torch)" and "bicubic (torch)" in R.BASELINES
    assert R.upsample_label("bilinear") == "bilinear (torch)" and "bilinear (torch)" in R.BASELINES
    assert len(set(R.BASELINES)) == 4 and all("(" in label for label in R.BASELINES)
    for fn in (R.upsample_label, R.degrade_label):
        with pytest.raises(ValueError, match="'bicubic' or 'bilinear'"):
            fn("lanczos")
    with pytest.raises(ValueError, match="method"):
        R.degrade(torch.rand(3, 8, 8), 2, "nearest")


def test_models_and_figures_show_the_torch_label():
    import matplotlib.pyplot as plt

    from srlib.models import UNetUpscaler
    from srlib.plots import comparison_grid

    model = UNetUpscaler(2, (8, 16, 16), (16, 8), 0)
    assert model.base_label == "bicubic (torch)"
    lq = impulse_row(16, 8).float().expand(1, 3, 4, 16)
    # The model's base upscale is what its label says (no clamping needed on this input).
    assert torch.allclose(model.base_upscale(lq), R.BASELINES[model.base_label](lq, 2))
    bilinear = UNetUpscaler(2, (8, 16, 16), (16, 8), 0, base="bilinear")
    assert bilinear.base_label == "bilinear (torch)"
    fig = comparison_grid({"unet": model}, torch.rand(1, 3, 16, 16), torch.rand(1, 3, 32, 32))
    titles = [ax.get_title() for ax in fig.axes]
    plt.close(fig)
    assert "bicubic (torch)" in titles and "bicubic" not in titles


def test_old_import_paths_still_work():
    from srlib import data, metrics, models

    assert metrics.imresize is R.imresize and metrics.make_lq is R.make_lq
    assert metrics.mod_crop is R.mod_crop
    assert metrics.bicubic is R.matlab_bicubic and metrics.bilinear is R.matlab_bilinear
    assert data.degrade is R.degrade and models.upsample is R.upsample


# ---------------------------------------------------------------------------------------------
# MATLAB-compatible imresize


CUBIC_X2 = [-0.0234375, -0.0703125, 0.2265625, 0.8671875, 0.8671875, 0.2265625, -0.0703125]


def test_imresize_x2_impulse_gives_cubic_weights():
    x = torch.zeros(1, 12, dtype=torch.float64)
    x[0, 6] = 1
    out = R.imresize(x, scale=2)[0]  # (24,) one row: H = 1 -> 2 rows, both the same
    assert out[9:17].tolist() == CUBIC_X2 + [-0.0234375]
    assert out[:9].abs().max() == 0 and out[17:].abs().max() == 0


def test_imresize_half_impulse_uses_widened_kernel():
    x = torch.zeros(1, 16, dtype=torch.float64)
    x[0, 8] = 1
    out = R.imresize(x, scale=0.5)[0]  # (8,) antialiased: cubic(d / 2) / 2
    expected = [0, 0, -0.0234375 / 2, 0.2265625 / 2, 0.8671875 / 2, -0.0703125 / 2, 0, 0]
    assert out.tolist() == pytest.approx(expected, abs=1e-15)


def test_imresize_boundaries_on_a_ramp():
    ramp = torch.tensor([[1.0, 2, 3, 4]], dtype=torch.float64)
    # Output pixel 1 maps to u = 0.75: taps at 1-based -1, 0, 1, 2 with the weights above.
    rep = R.imresize(ramp, scale=2)[0].tolist()  # MATLAB: clamp taps (-1, 0 -> pixel 1)
    sym = R.imresize(ramp, scale=2, boundary="symmetric")[0].tolist()  # -1 -> pixel 2
    interior = [1.1796875, 1.7265625, 2.25, 2.75, 3.2734375, 3.8203125]
    assert rep == pytest.approx([0.9296875, *interior, 4.0703125], abs=1e-12)
    assert sym == pytest.approx([0.90625, *interior, 4.09375], abs=1e-12)


def test_imresize_preserves_constants_and_linear_ramps():
    const = torch.full((2, 3, 9, 13), 0.3, dtype=torch.float64)
    for method in ("bicubic", "bilinear"):
        for scale in (0.25, 1 / 3, 0.5, 2, 3, 4):
            out = R.imresize(const, scale=scale, method=method)
            assert torch.allclose(out, torch.full_like(out, 0.3), atol=1e-12)
    ramp = torch.arange(20, dtype=torch.float64)[None].repeat(6, 1)  # (6, 20)
    out = R.imresize(ramp, scale=2)
    u = torch.arange(1, 41, dtype=torch.float64) / 2 + 0.25 - 1  # 0-based input coordinate
    assert torch.allclose(out[0, 4:-4], u[4:-4], atol=1e-12)  # cubic reproduces linear data


def test_imresize_shapes_types_and_errors():
    x = torch.rand(3, 5, 7)
    assert R.imresize(x, scale=0.5).shape == (3, 3, 4)  # ceil, as MATLAB
    assert R.imresize(x, size=(10, 3)).shape == (3, 10, 3)
    assert R.imresize(torch.rand(2, 3, 12, 9), scale=1 / 3).shape == (2, 3, 4, 3)
    assert R.imresize(x, scale=2).dtype == torch.float32
    arr = R.imresize(np.random.rand(2, 6, 6), scale=2)
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 12, 12)
    q = R.imresize(x, scale=0.5, uint8=True)
    assert torch.equal(q * 255, torch.round(q * 255)) and q.min() >= 0 and q.max() <= 1
    with pytest.raises(ValueError):
        R.imresize(x)
    with pytest.raises(ValueError):
        R.imresize(x, scale=2, method="lanczos")
    with pytest.raises(TypeError):
        R.imresize(torch.zeros(4, 4, dtype=torch.uint8), scale=2)


def test_mod_crop_and_make_lq():
    img = torch.rand(3, 13, 10)
    cropped = R.mod_crop(img, 4)
    assert cropped.shape == (3, 12, 8) and torch.equal(cropped, img[:, :12, :8])
    lq = R.make_lq(R.mod_crop(img, 3), 3)
    assert lq.shape == (3, 4, 3)
    assert torch.equal(lq * 255, torch.round(lq * 255))  # 8-bit levels, like an LR PNG


def test_baselines_shapes_and_range():
    g = torch.Generator().manual_seed(0)
    lq = torch.rand(1, 3, 10, 12, generator=g)
    for label, upscale in R.BASELINES.items():
        sr = upscale(lq, 3)
        assert sr.shape == (1, 3, 30, 36) and sr.min() >= 0 and sr.max() <= 1, label
    for who in ("MATLAB", "torch"):
        cubic, linear = R.BASELINES[f"bicubic ({who})"], R.BASELINES[f"bilinear ({who})"]
        assert not torch.allclose(cubic(lq, 2), linear(lq, 2))
