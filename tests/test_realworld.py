"""Degraded benchmarks (srlib.metrics.degraded_benchmark) and benchmarks/realworld.py, on tiny
generated benchmark folders (no ../shared, no downloads)."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from srlib import metrics as M

REPO = Path(__file__).resolve().parents[1]
JPEGS = [c for c in M.CONDITIONS if c.startswith("jpeg")]
NOISES = {"noise5": 5.0, "noise15": 15.0}

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(h: int, w: int, channels: int, seed: int) -> np.ndarray:
    """Smooth-ish uint8 image in 40..215, so that sigma-15 noise is almost never clipped."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(40, 215, (h // 4 + 1, w // 4 + 1, channels))
    img = np.kron(coarse, np.ones((4, 4, 1)))[:h, :w] + rng.uniform(-10, 10, (h, w, channels))
    img = np.clip(np.round(img), 40, 215).astype(np.uint8)
    return img[..., 0] if channels == 1 else img


def make_bench(root: Path, n: int = 2, scale: int = 2, seed: int = 0) -> Path:
    """root/image_SRF_<s>/: img_001 RGB, img_002 gray, ... (HR 48x40, LR its PIL downscale)."""
    sub = root / f"image_SRF_{scale}"
    sub.mkdir(parents=True)
    for i in range(1, n + 1):
        hr = Image.fromarray(_image(48, 40, 1 if i == 2 else 3, seed + i))
        hr.save(sub / f"img_{i:03d}_SRF_{scale}_HR.png")
        lr = hr.resize((40 // scale, 48 // scale), Image.Resampling.BICUBIC)
        lr.save(sub / f"img_{i:03d}_SRF_{scale}_LR.png")
    return root


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    sub = folder / "image_SRF_2"
    return [
        (hr, hr.with_name(hr.name.replace("_HR", "_LR"))) for hr in sorted(sub.glob("*_HR.png"))
    ]


@pytest.mark.parametrize("condition", JPEGS)
def test_jpeg_variant_is_a_pil_round_trip_at_that_quality(tmp_path, condition):
    src = make_bench(tmp_path / "Tiny")
    out = M.degraded_benchmark(src, 2, condition, tmp_path / "cache")
    assert out == tmp_path / "cache" / condition / "Tiny"
    quality = int(condition.removeprefix("jpeg"))
    for (hr, lr), (hr2, lr2) in zip(_pairs(src), _pairs(out), strict=True):
        assert (hr2.name, lr2.name) == (hr.name, lr.name)
        assert hr2.read_bytes() == hr.read_bytes()  # HR untouched
        original = Image.open(lr)
        variant = Image.open(lr2)
        assert variant.format == "PNG" and variant.mode == original.mode  # gray stays gray
        assert variant.size == original.size
        buf = BytesIO()
        original.save(buf, format="JPEG", quality=quality)
        expected = np.asarray(Image.open(BytesIO(buf.getvalue())))
        np.testing.assert_array_equal(np.asarray(variant), expected)
        assert not np.array_equal(np.asarray(variant), np.asarray(original))


@pytest.mark.parametrize("condition", sorted(NOISES))
def test_noise_variant_is_deterministic_with_the_right_sigma(tmp_path, condition):
    src = make_bench(tmp_path / "Tiny")
    a = M.degraded_benchmark(src, 2, condition, tmp_path / "a")
    b = M.degraded_benchmark(src, 2, condition, tmp_path / "b")
    noises = []
    for (hr, lr), (hr_a, lr_a), (_, lr_b) in zip(_pairs(src), _pairs(a), _pairs(b), strict=True):
        assert lr_a.read_bytes() == lr_b.read_bytes()  # the same noise in every run
        assert hr_a.read_bytes() == hr.read_bytes()
        original, variant = Image.open(lr), Image.open(lr_a)
        assert variant.mode == original.mode and variant.size == original.size
        noise = np.asarray(variant, dtype=float) - np.asarray(original, dtype=float)
        # Rounding adds 1/12 to the variance; the images stay inside 40..215, so no clipping.
        assert noise.std() == pytest.approx(np.hypot(NOISES[condition], 12**-0.5), rel=0.12)
        assert abs(noise.mean()) < 0.25 * NOISES[condition]
        noises.append(noise.ravel())
    n = min(map(len, noises))
    assert abs(np.corrcoef(noises[0][:n], noises[1][:n])[0, 1]) < 0.2  # seeded per file name


def test_noise_seed_is_the_crc32_of_the_file_name():
    im = Image.fromarray(np.full((6, 5), 128, np.uint8))
    noisy = np.asarray(M.degrade_image(im, "noise15", "img_001_SRF_2_LR.png"), dtype=float)
    rng = np.random.default_rng(1792454287)  # zlib.crc32(b"img_001_SRF_2_LR.png"), fixed here
    np.testing.assert_array_equal(noisy, np.round(128 + 15 * rng.standard_normal((6, 5))))


def test_clean_is_the_folder_itself_and_evaluate_reads_the_variants(tmp_path):
    src = make_bench(tmp_path / "Tiny")
    assert M.degraded_benchmark(src, 2, "clean", tmp_path / "cache") == src
    assert not (tmp_path / "cache").exists()
    psnr = {}
    for condition in ("clean", "jpeg30", "noise15"):
        folder = M.degraded_benchmark(src / "image_SRF_2", 2, condition, tmp_path / "cache")
        res = M.evaluate("bicubic (MATLAB)", folder, 2, with_lpips=False)
        assert res["dataset"] == "Tiny"  # reported under the source's name
        assert [r["name"] for r in res["images"]] == ["img_001", "img_002"]
        assert any("img_002: grayscale" in n for n in res["notes"])
        psnr[condition] = res["mean"]["psnr_y"]
    assert psnr["jpeg30"] < psnr["clean"] and psnr["noise15"] < psnr["clean"]


def test_variant_is_reused_and_rebuilt_when_its_source_changes(tmp_path, monkeypatch):
    src = make_bench(tmp_path / "Tiny")
    out = M.degraded_benchmark(src, 2, "jpeg50", tmp_path / "cache")
    lr = out / "image_SRF_2" / "img_001_SRF_2_LR.png"
    first = lr.read_bytes()

    calls = []
    real = M.degrade_image
    monkeypatch.setattr(M, "degrade_image", lambda *a: calls.append(a[2]) or real(*a))
    assert M.degraded_benchmark(src, 2, "jpeg50", tmp_path / "cache") == out
    assert calls == []  # complete variant: nothing re-encoded

    # A changed source LR (its bytes, not its name) makes the variant stale: rebuilt.
    Image.fromarray(_image(24, 20, 3, seed=99)).save(src / "image_SRF_2" / lr.name)
    M.degraded_benchmark(src, 2, "jpeg50", tmp_path / "cache")
    assert calls == ["img_001_SRF_2_LR.png", "img_002_SRF_2_LR.png"]
    assert lr.read_bytes() != first

    # An interrupted build (no manifest, written last) is rebuilt too; so is a missing file.
    calls.clear()
    (out / "image_SRF_2" / ".srlib_degraded.json").unlink()
    M.degraded_benchmark(src, 2, "jpeg50", tmp_path / "cache")
    (out / "image_SRF_2" / "img_002_SRF_2_HR.png").unlink()
    M.degraded_benchmark(src, 2, "jpeg50", tmp_path / "cache")
    assert len(calls) == 4 and (out / "image_SRF_2" / "img_002_SRF_2_HR.png").is_file()


def test_a_smaller_source_leaves_no_stale_pairs(tmp_path):
    make_bench(tmp_path / "v1" / "Tiny", n=3)
    make_bench(tmp_path / "v2" / "Tiny", n=2)
    M.degraded_benchmark(tmp_path / "v1" / "Tiny", 2, "noise5", tmp_path / "cache")
    out = M.degraded_benchmark(tmp_path / "v2" / "Tiny", 2, "noise5", tmp_path / "cache")
    res = M.evaluate("bicubic (MATLAB)", out, 2, with_lpips=False)
    assert [r["name"] for r in res["images"]] == ["img_001", "img_002"]


def test_bad_input_is_a_value_error_and_writes_nothing(tmp_path):
    src = make_bench(tmp_path / "Tiny")
    before = sorted(p.read_bytes() for p in src.rglob("*") if p.is_file())
    for condition in ("jpeg60", "blur", "JPEG90", ""):
        with pytest.raises(ValueError, match="unknown condition"):
            M.degraded_benchmark(src, 2, condition, tmp_path / "cache")
    with pytest.raises(ValueError, match="unknown condition"):
        M.degrade_image(Image.new("RGB", (4, 4)), "noise10", "x.png")
    assert not (tmp_path / "cache").exists()
    assert sorted(p.read_bytes() for p in src.rglob("*") if p.is_file()) == before
    # A variant is never written over its own source (a degraded folder degraded again).
    inner = make_bench(tmp_path / "c" / "jpeg90" / "Tiny")
    inner_before = sorted(p.read_bytes() for p in inner.rglob("*") if p.is_file())
    with pytest.raises(ValueError, match="overwrite"):
        M.degraded_benchmark(inner, 2, "jpeg90", tmp_path / "c")
    assert sorted(p.read_bytes() for p in inner.rglob("*") if p.is_file()) == inner_before
    plain = tmp_path / "plain"
    plain.mkdir()
    Image.fromarray(_image(16, 16, 3, 0)).save(plain / "a.png")
    with pytest.raises(ValueError, match="no given LR"):
        M.degraded_benchmark(plain, 2, "jpeg90", tmp_path / "cache")
    with pytest.raises(FileNotFoundError):
        M.degraded_benchmark(src, 3, "jpeg90", tmp_path / "cache")  # no x3 data


# ---------------------------------------------------------------------------------------------
# benchmarks/realworld.py


def _load_realworld():
    """benchmarks/realworld.py, as a module of the `benchmarks` package."""
    from benchmarks import realworld

    return realworld


@pytest.fixture
def ckpt(tiny_unet_checkpoint) -> Path:
    """The shared tiny UNet checkpoint (tests/conftest.py)."""
    return tiny_unet_checkpoint


def test_realworld_main_prints_every_condition_with_a_gain(tmp_path, ckpt, capsys):
    make_bench(tmp_path / "bench" / "A", n=2, seed=0)
    make_bench(tmp_path / "bench" / "B", n=1, seed=10)
    out = tmp_path / "results.md"
    rw = _load_realworld()
    rw.main([
        "--bench", str(tmp_path / "bench"), "--sets", "A,B", "--checkpoints", str(ckpt),
        "--cache", str(tmp_path / "cache"), "--out", str(out),
    ])  # fmt: skip
    text = out.read_text()
    assert text.startswith("command: python ") and "--checkpoints" in text.splitlines()[0]
    assert text.strip().splitlines()[-1] in capsys.readouterr().out
    assert rw.GAIN in text
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and "condition" not in line
    ]
    full = [r for r in rows if len(r) == 7]  # condition, set, method, psnr, ssim, detail, gain
    assert {r[0] for r in full} == set(M.CONDITIONS)
    assert {r[1] for r in full} == {"A", "B", "A+B"}
    assert len(full) == len(M.CONDITIONS) * 3 * 2  # bicubic and the checkpoint each
    by_key = {(r[0], r[1], r[2]): r for r in full}
    for condition in M.CONDITIONS:
        bicubic = by_key[condition, "A+B", "bicubic (MATLAB)"]
        model = by_key[condition, "A+B", str(ckpt)]
        assert bicubic[6] == "-"
        gain = float(model[6])
        assert gain == pytest.approx(float(model[3]) - float(bicubic[3]), abs=0.011)
    # The union is the mean over all 3 images, not the mean of the two sets' means.
    res = [
        M.evaluate("bicubic (MATLAB)", tmp_path / "bench" / s, 2, with_lpips=False) for s in "AB"
    ]
    psnrs = [r["psnr_y"] for x in res for r in x["images"]]
    assert float(by_key["clean", "A+B", "bicubic (MATLAB)"][3]) == pytest.approx(
        np.mean(psnrs), abs=0.006
    )
    assert (tmp_path / "cache" / "jpeg30" / "B" / "image_SRF_2").is_dir()  # --cache kept


def test_realworld_rejects_bad_options(tmp_path, ckpt):
    make_bench(tmp_path / "bench" / "A")
    rw = _load_realworld()
    base = ["--bench", str(tmp_path / "bench"), "--sets", "A", "--checkpoints", str(ckpt)]
    for extra in (["--conditions", "jpeg60"], ["--sets", "Nope"], ["--scale", "3"]):
        with pytest.raises(SystemExit) as e:
            rw.main(base + extra)
        assert e.value.code == 2
    with pytest.raises(SystemExit):
        rw.main(["--bench", str(tmp_path / "bench"), "--sets", "A", "--checkpoints", "no.pt"])
