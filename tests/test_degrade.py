"""srlib.degrade: realistic training lq (blur, resize, noise, JPEG) and the clean path."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from srlib.data import SRDataset, make_loader
from srlib.degrade import (
    DEGRADATIONS,
    NAMED,
    Pass,
    Realistic,
    gaussian_kernel,
    random_kernel,
    realistic_lq,
    training_lq,
)
from srlib.resize import degrade
from srlib.training import TrainConfig, check_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny images: one torch thread

OFF = dict(blur_prob=0, resize_probs=(0, 0, 1), noise_prob=0, jpeg_prob=0)  # a pass doing nothing


def smooth(h: int = 96, w: int = 96, seed: int = 0) -> torch.Tensor:
    """A photo-like gt (3, h, w) in [0, 1]: smooth random shapes, no pixel noise."""
    coarse = torch.from_numpy(np.random.default_rng(seed).random((1, 3, 6, 6), dtype=np.float32))
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)[0].clamp(0, 1)


def only(clean_prob: float = 0.0, modes: tuple[str, ...] = ("bicubic",), **first) -> Realistic:
    """A Realistic with one pass that does only what `first` switches on."""
    return Realistic(
        clean_prob=clean_prob,
        first=Pass(**{**OFF, **first}),
        second_prob=0,
        resize_modes=modes,
        jpeg_last_prob=1,
    )


HARSH = Realistic(  # every step on, the widest ranges, both passes
    clean_prob=0,
    first=Pass(
        blur_prob=1,
        kernel_size=(3, 31),
        sigma=(0.1, 6),
        resize_probs=(0.4, 0.4, 0.2),
        resize_range=(0.1, 3),
        noise_prob=1,
        noise_sigma=(0, 255),
        poisson_scale=(0, 5),
        jpeg_prob=1,
        jpeg_quality=(1, 100),
    ),
    second_prob=1,
    second=Pass(
        blur_prob=1,
        kernel_size=(1, 21),
        iso_prob=0,
        sigma=(0.1, 4),
        resize_probs=(0.5, 0.5, 0),
        resize_range=(0.1, 2),
        noise_prob=1,
        gaussian_prob=0,
        gray_noise_prob=1,
        jpeg_prob=1,
    ),
)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("cfg", [Realistic(), HARSH], ids=["defaults", "harsh"])
def test_shape_dtype_range_and_8bit_levels(scale, cfg):
    for h, w, seed in [(96, 96, 0), (24, 36, 1), (scale, 2 * scale, 2)]:  # down to a 1x2 lq
        for i in range(6):
            lq = realistic_lq(smooth(h, w, seed), scale, cfg, np.random.default_rng(i))
            assert lq.shape == (3, h // scale, w // scale) and lq.dtype == torch.float32
            assert 0 <= lq.min() and lq.max() <= 1
            assert torch.equal(lq, (lq * 255).round() / 255)  # 8-bit levels, as a photo's


def test_same_seed_same_lq_other_seeds_differ():
    gt, cfg = smooth(), Realistic(clean_prob=0)
    lqs = [realistic_lq(gt, 2, cfg, np.random.default_rng(s)) for s in range(8)]
    again = [realistic_lq(gt, 2, cfg, np.random.default_rng(s)) for s in range(8)]
    assert all(torch.equal(a, b) for a, b in zip(lqs, again, strict=True))
    assert all(not torch.equal(lqs[i], lqs[j]) for i in range(8) for j in range(i))


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_clean_is_resize_degrade_bit_for_bit_and_draws_nothing(method):
    gt, rng = smooth(), np.random.default_rng(0)
    before = rng.bit_generator.state
    for scale in (2, 3, 4):
        assert torch.equal(training_lq(gt, scale, method, "clean", rng), degrade(gt, scale, method))
    assert rng.bit_generator.state == before


def test_realistic_name_is_the_default_ranges_and_instances_give_their_own():
    gt = smooth()
    named = training_lq(gt, 2, "bicubic", "realistic", np.random.default_rng(5))
    assert torch.equal(named, realistic_lq(gt, 2, NAMED["realistic"], np.random.default_rng(5)))
    full = training_lq(gt, 2, "bicubic", "realesrgan", np.random.default_rng(5))
    assert torch.equal(full, realistic_lq(gt, 2, Realistic(), np.random.default_rng(5)))
    # The web-photo mix: no blur and no extra resize, so it is the bicubic lq plus JPEG/noise.
    web = NAMED["realistic"]
    assert web.first.blur_prob == 0 and web.second_prob == 0 and web.resize_modes == ("bicubic",)
    custom = training_lq(gt, 2, "bicubic", only(), np.random.default_rng(5))
    assert torch.equal(custom, realistic_lq(gt, 2, only(), np.random.default_rng(5)))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_every_step_off_is_the_clean_bicubic_lq_in_8_bit(scale):
    gt = smooth()
    lq = realistic_lq(gt, scale, only(), np.random.default_rng(0))
    assert (lq - degrade(gt, scale, "bicubic")).abs().max() <= 0.5 / 255 + 1e-6
    # clean_prob 1: the same, whatever the other settings
    lq = realistic_lq(gt, scale, Realistic(clean_prob=1), np.random.default_rng(0))
    assert (lq - degrade(gt, scale, "bicubic")).abs().max() <= 0.5 / 255 + 1e-6


def test_jpeg_really_happens():
    gt = smooth(128, 128)
    lq = realistic_lq(gt, 2, only(jpeg_prob=1, jpeg_quality=(10, 10)), np.random.default_rng(0))
    clean = (degrade(gt, 2, "bicubic") * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(clean).save(buf, format="JPEG", quality=10)
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert torch.equal(lq, torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255)
    # Quality 10 shows the 8x8 blocks: steps across block edges beat steps inside blocks.
    steps = (lq[:, :, 1:] - lq[:, :, :-1]).abs().mean(dim=(0, 1))  # (63,) between columns
    at_edges = steps[7::8]  # between columns 7|8, 15|16, ...
    inside = torch.cat([steps[i::8] for i in range(7)])
    assert at_edges.mean() > 2 * inside.mean()


def test_kernels_sum_to_1_isotropic_symmetric_anisotropic_not():
    p = Pass(sigma=(0.2, 4.0), kernel_size=(3, 21))
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = random_kernel(p, rng)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and 3 <= k.shape[0] <= 21
        assert abs(k.sum().item() - 1) < 1e-5 and k.min() >= 0
        assert torch.allclose(k, k.flip(0, 1))  # point symmetric: correlation = convolution
    iso = gaussian_kernel(15, 2.0, 2.0)
    assert torch.allclose(iso, iso.T) and torch.allclose(iso, iso.flip(0))
    assert torch.allclose(iso, iso.sum(0)[:, None] * iso.sum(1)[None], atol=1e-7)  # separable
    aniso = gaussian_kernel(15, 1.0, 3.0, theta=0.5)
    assert not torch.allclose(aniso, aniso.T, atol=1e-4)
    wide = gaussian_kernel(15, 3.0, 1.0)  # theta 0: sigma_x along columns
    assert (wide[7] > 0.01 * wide.max()).sum() > (wide[:, 7] > 0.01 * wide.max()).sum()
    # Taps past 3 sigma are dropped; a small image caps the side (reflect padding).
    assert random_kernel(Pass(kernel_size=(21, 21), sigma=(0.5, 0.5)), rng).shape == (5, 5)
    assert random_kernel(p, rng, max_size=1).shape == (1, 1)


def test_blur_softens_and_noise_has_the_asked_strength():
    gt = torch.from_numpy(np.random.default_rng(0).random((3, 64, 64), dtype=np.float32))
    clean = degrade(gt, 2, "bicubic")

    def tv(x: torch.Tensor) -> float:
        return (x[:, 1:] - x[:, :-1]).abs().mean().item()

    blurred = realistic_lq(gt, 2, only(blur_prob=1, sigma=(2, 2)), np.random.default_rng(0))
    assert tv(blurred) < 0.5 * tv(clean)
    gray = torch.full((3, 64, 64), 0.5)
    for gray_prob in (0, 1):
        cfg = only(
            noise_prob=1,
            gaussian_prob=1,
            noise_sigma=(20, 20),
            gray_noise_prob=gray_prob,
            modes=("area",),
        )
        noise = realistic_lq(gray, 2, cfg, np.random.default_rng(1)) - 0.5
        assert 8 / 255 < noise.std() < 12 / 255  # 20 / 255, halved by the 2x2 box average
        same = (noise[0] - noise[1]).abs().max() < 1e-6
        assert same == bool(gray_prob)  # gray noise: the same in every channel
    # Poisson noise grows with brightness (shot noise), Gaussian does not.
    halves = torch.cat([torch.full((3, 64, 32), 0.05), torch.full((3, 64, 32), 0.9)], dim=2)
    cfg = only(noise_prob=1, gaussian_prob=0, poisson_scale=(2, 2), modes=("area",))
    lq = realistic_lq(halves, 2, cfg, np.random.default_rng(2))  # dark: columns 0-15
    assert lq[:, :, 16:].std() > 2 * lq[:, :, :16].std() > 0


def test_bad_settings_raise_clear_errors():
    for bad in [
        dict(kernel_size=(6, 10)),
        dict(kernel_size=(9, 7)),
        dict(resize_probs=(0.5, 0.5, 0.5)),
        dict(resize_range=(1.2, 1.5)),
        dict(jpeg_quality=(0, 50)),
        dict(blur_prob=1.5),
        dict(noise_prob=float("nan")),
        dict(sigma=(0, 1)),
        dict(sigma=(1, float("inf"))),  # issue 24: accepted, a kernel without end
        dict(resize_range=(0.5, float("inf"))),
        dict(poisson_scale=(0, float("inf"))),
        dict(kernel_size=(7, float("inf"))),
    ]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            Pass(**bad)
    with pytest.raises(ValueError, match="resize_modes"):
        Realistic(resize_modes=("nearest",))
    with pytest.raises(ValueError, match="clean_prob"):
        Realistic(clean_prob=-0.1)
    with pytest.raises(ValueError, match="not divisible"):
        realistic_lq(torch.rand(3, 30, 30), 4, Realistic(), np.random.default_rng(0))
    with pytest.raises(ValueError, match="float"):
        realistic_lq(torch.zeros(3, 32, 32, dtype=torch.uint8), 2, Realistic(), None)


def test_unknown_degradation_name_raises_everywhere():
    assert DEGRADATIONS == ("clean", "realistic", "realesrgan")
    with pytest.raises(ValueError, match="degradation must be one of"):
        training_lq(smooth(), 2, "bicubic", "jpeg", np.random.default_rng(0))
    with pytest.raises(ValueError, match="degradation must be one of"):
        SRDataset([("a", np.zeros((40, 40, 3), np.uint8))], size=32, degradation="Realistic")
    with pytest.raises(ValueError, match="degradation must be one of"):
        check_config(TrainConfig(degradation="jpeg"))
    for name in DEGRADATIONS:
        check_config(TrainConfig(degradation=name))


def _photos() -> list[tuple[str, np.ndarray]]:
    big = (smooth(96, 128, seed=1).permute(1, 2, 0) * 255).byte().numpy()
    return [("a", big), ("b", np.random.default_rng(2).integers(0, 256, (80, 80, 3), np.uint8))]


@pytest.mark.parametrize("train", [True, False])
def test_dataset_realistic_keeps_the_crops_and_changes_the_lq(train):
    kw = dict(size=32, scale=2, method="bilinear", crops_per_image=4, seed=3, train=train)
    clean = SRDataset(_photos(), **kw)
    real = SRDataset(_photos(), degradation="realistic", **kw)
    custom = SRDataset(_photos(), degradation=only(jpeg_prob=1, jpeg_quality=(20, 20)), **kw)
    changed = 0
    for i in range(len(clean)):
        (lq_c, gt_c), (lq_r, gt_r), (lq_j, gt_j) = clean[i], real[i], custom[i]
        assert torch.equal(gt_c, gt_r) and torch.equal(gt_c, gt_j)  # the same crops
        assert torch.equal(lq_c, degrade(gt_c, 2, "bilinear"))  # clean: as before
        assert lq_r.shape == lq_c.shape == (3, 16, 16) and lq_r.dtype == torch.float32
        assert torch.equal(lq_r, real[i][0])  # the same lq every time it is read
        assert not torch.equal(lq_j, lq_c)
        changed += not torch.equal(lq_r, lq_c)
    assert changed >= len(clean) // 2


@pytest.mark.filterwarnings("ignore:This DataLoader will create")  # 2 workers on a 1-CPU test
def test_dataset_realistic_lq_same_in_workers():
    ds = SRDataset(
        _photos(), size=32, scale=2, method="bilinear", crops_per_image=2, degradation="realistic"
    )
    plain = torch.cat([lq for lq, _ in make_loader(ds, 2, seed=1)])
    workers = torch.cat([lq for lq, _ in make_loader(ds, 2, seed=1, workers=2)])
    assert torch.equal(plain, workers)
