"""Tests for srlib.data: odd and broken images, crops, splits, the fast-crop cache."""

import io
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srlib import data
from srlib.data import (
    ImageLoadError,
    SRDataset,
    default_sources,
    degrade,
    embedded_photos,
    find_images,
    load_image,
    make_loader,
    prepare_cache,
    split_by_image,
)

try:
    from tests._images import png16
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from _images import png16

W, H = 64, 48  # size of the good test images
# SRDataset's defaults before issue 26 (now x2, bicubic), which these tests were written with.
X4 = dict(scale=4, method="bilinear")


def _noise(h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


GRADIENT16 = np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (H, 1))  # (H, 256)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A folder of good, odd and broken images (8 usable, 4 not)."""
    d = tmp_path / "images"
    (d / "sub").mkdir(parents=True)
    Image.fromarray(_noise(seed=1)).save(d / "good.jpg", quality=95)
    Image.fromarray(_noise(seed=2)).save(d / "sub" / "good2.png")
    Image.fromarray(_noise(seed=3)[:, :, 0]).save(d / "gray.png")
    rgba = np.dstack([_noise(seed=4), np.full((H, W), 255, np.uint8)])
    rgba[:, : W // 2, 3] = 0  # left half fully transparent
    Image.fromarray(rgba).save(d / "rgba.png")
    pal = Image.fromarray(np.tile(np.arange(W, dtype=np.uint8) % 4, (H, 1)), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    pal.save(d / "palette.png", transparency=0)  # index 0 (black) is transparent
    (d / "gray16.png").write_bytes(png16(GRADIENT16))
    (d / "rgb16.png").write_bytes(png16(np.dstack([GRADIENT16] * 3)))
    # EXIF orientation 6: stored landscape (W x H), shown portrait; a red marker stored top-left.
    exif_img = np.zeros((H, W, 3), np.uint8)
    exif_img[:8, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(exif_img).save(d / "exif6.jpg", exif=exif, quality=95)
    Image.new("CMYK", (W, H), (0, 255, 255, 0)).save(d / "cmyk.jpg", quality=95)  # red
    Image.fromarray(_noise(8, 8)).save(d / "tiny.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    buf = io.BytesIO()
    Image.fromarray(_noise(seed=5)).save(buf, "JPEG", quality=95)
    (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "notimage.jpg").write_text("this is not a JPEG")
    (d / "readme.txt").write_text("ignored: not an image extension")
    (d / ".checkpoints").mkdir()
    Image.fromarray(_noise()).save(d / ".checkpoints" / "hidden.png")  # hidden: ignored
    return d


# ----------------------------------------------------------------------------- loading


def test_load_image_odd_modes(folder: Path) -> None:
    for name in ("good.jpg", "gray.png", "rgba.png", "palette.png", "cmyk.jpg"):
        img = load_image(folder / name)
        assert img.shape == (H, W, 3) and img.dtype == np.uint8, name
    gray = load_image(folder / "gray.png")
    assert (gray[..., 0] == _noise(seed=3)[:, :, 0]).all() and (gray[..., 1] == gray[..., 2]).all()
    rgba = load_image(folder / "rgba.png")
    assert (rgba[:, : W // 2] == 255).all()  # transparent -> white
    assert (rgba[:, W // 2 :] == _noise(seed=4)[:, W // 2 :]).all()  # opaque kept
    pal = load_image(folder / "palette.png")
    assert (pal[:, 0::4] == 255).all() and (pal[:, 1::4] == (255, 0, 0)).all()
    cmyk = load_image(folder / "cmyk.jpg").astype(int)
    assert abs(cmyk[..., 0].mean() - 255) < 8 and cmyk[..., 1:].mean() < 8  # red stays red


@pytest.mark.parametrize("name", ["gray16.png", "rgb16.png"])
def test_16bit_is_scaled_not_clipped(folder: Path, name: str) -> None:
    img = load_image(folder / name)
    assert img.shape == (H, 256, 3)
    row = img[0, :, 0].astype(int)
    expected = np.round(GRADIENT16[0] / 257)
    assert np.abs(row - expected).max() <= 1  # full 0..255 gradient, not 0, 255, 255, ...
    assert row[0] == 0 and row[-1] == 255 and len(np.unique(row)) > 250


def test_exif_orientation_applied(folder: Path) -> None:
    img = load_image(folder / "exif6.jpg")
    assert img.shape == (W, H, 3)  # portrait after rotating 90 degrees clockwise
    assert img[:8, -8:, 0].mean() > 200 and img[:8, :8, 0].mean() < 50  # marker now top-right


@pytest.mark.parametrize("name", ["corrupt.png", "truncated.jpg", "notimage.jpg"])
def test_broken_files_raise_clear_error(folder: Path, name: str) -> None:
    with pytest.raises(ImageLoadError, match=name) as info:
        load_image(folder / name)
    assert isinstance(info.value, ValueError)


def test_decompression_bomb_guard(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64x48 is > 2x this: a "bomb"
    with pytest.raises(ImageLoadError, match="MAX_IMAGE_PIXELS"):
        load_image(folder / "good.jpg")


def test_find_images_recursive_sorted(folder: Path) -> None:
    found = find_images(folder)
    assert found == sorted(found) and folder / "sub" / "good2.png" in found
    assert len(found) == 13 and not any(p.suffix == ".txt" for p in found)
    with pytest.raises(NotADirectoryError):
        find_images(folder / "missing")


def test_embedded_photos_offline() -> None:
    photos = embedded_photos()
    assert len(photos) >= 8 and "skimage/moon" in dict(photos)
    for name, img in photos:
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8, name
        assert min(img.shape[:2]) >= 128, name


# ----------------------------------------------------------------------------- dataset


@pytest.mark.parametrize("scale", [2, 4])
def test_dataset_skips_broken_and_yields_pairs(folder: Path, scale: int) -> None:
    with pytest.warns(UserWarning, match=r"skipped 4 of 13 images") as record:
        ds = SRDataset(
            find_images(folder), size=32, scale=scale, method="bilinear", crops_per_image=2
        )
    message = str(record[0].message)
    for name in ("corrupt.png", "truncated.jpg", "notimage.jpg", "tiny.png"):
        assert name in message
    assert len(ds) == 9 * 2
    for i in range(len(ds)):
        lq, gt = ds[i]
        assert gt.shape == (3, 32, 32) and lq.shape == (3, 32 // scale, 32 // scale)
        assert gt.dtype == lq.dtype == torch.float32
        assert 0 <= gt.min() and gt.max() <= 1 and 0 <= lq.min() and lq.max() <= 1


def test_lazy_verify_survives_truncated_file(folder: Path) -> None:
    with pytest.warns(UserWarning, match="skipped 3 of"):  # headers catch all but truncation
        ds = SRDataset(find_images(folder), size=32, **X4, crops_per_image=1, verify=False)
    bad = ds.names.index(str(folder / "truncated.jpg"))
    with pytest.warns(UserWarning, match="truncated.jpg"):
        lq, gt = ds[bad]  # falls back to the next image instead of crashing
    assert gt.shape == (3, 32, 32) and lq.shape == (3, 8, 8)


def test_ten_thousand_skipped_files_make_one_short_warning() -> None:
    """Issue 24: 10,000 tiny files made one 333 KB warning line; now the first few and a count."""
    tiny = [(f"tiny{i:05d}", _noise(8, 8)) for i in range(10_000)]
    with pytest.warns(UserWarning, match="skipped 10000 of 10001 images") as record:
        SRDataset([("ok", _noise(40, 40)), *tiny], size=32, **X4, crops_per_image=1)
    message = str(record[0].message)
    assert len(message) < 400 and "\n" not in message
    assert message.endswith("tiny00004 (too small: 8x8 < 16 px) and 9,995 more")


def test_small_images_upscaled_tiny_skipped() -> None:
    small, tiny = ("small", _noise(20, 24)), ("tiny", _noise(8, 8))
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 images: tiny \(too small"):
        ds = SRDataset([small, tiny], size=32, **X4, crops_per_image=2)
    assert ds.names == ["small"] and ds[0][1].shape == (3, 32, 32)
    with pytest.raises(ValueError, match="no usable images"), pytest.warns(UserWarning):
        SRDataset([tiny], size=32, **X4)


def test_grayscale_array_source_and_bad_scale() -> None:
    ds = SRDataset([("gray", _noise()[:, :, 0])], size=32, **X4)
    lq, gt = ds[0]
    assert torch.equal(gt[0], gt[1]) and lq.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="not divisible by scale"):
        SRDataset([("img", _noise())], size=30, **X4)
    with pytest.raises(ValueError, match="bicubic"):
        SRDataset([("img", _noise())], size=32, method="nearest")
    lq, gt = SRDataset([("img", _noise())], size=32, **X4, rotate=True)[0]
    assert gt.shape == (3, 32, 32) and lq.shape == (3, 8, 8)


def test_malformed_npy_skipped(tmp_path: Path) -> None:
    np.save(tmp_path / "float.npy", np.zeros((40, 40, 3), np.float32))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    np.save(tmp_path / "ok.npy", _noise())
    sources = sorted(tmp_path.glob("*.npy"))
    with pytest.warns(UserWarning, match=r"skipped 2 of 3 images: float.npy .*junk.npy"):
        ds = SRDataset(sources, size=32, **X4)
    assert ds.names == [str(tmp_path / "ok.npy")]


def test_validation_crops_deterministic_training_seeded() -> None:
    sources = [("a", _noise(96, 128, seed=1)), ("b", _noise(80, 80, seed=2))]
    val = SRDataset(sources, size=32, **X4, crops_per_image=4, train=False)
    first = [val[i][1] for i in range(len(val))]
    assert all(torch.equal(a, val[i][1]) for i, a in enumerate(first))  # same every epoch
    assert not torch.equal(first[0], first[1])  # but different crops within an image

    def epoch(seed: int) -> list[torch.Tensor]:
        ds = SRDataset(sources, size=32, **X4, crops_per_image=4, seed=seed)
        return [gt for _, gt in make_loader(ds, batch_size=4, seed=seed)]

    a, b, c = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_loader_workers_get_different_crops() -> None:
    ds = SRDataset([("a", _noise(256, 256))], size=32, **X4, crops_per_image=4)
    loader = make_loader(ds, batch_size=1, shuffle=False, workers=2, seed=0)
    crops = [gt for _, gt in loader]  # crops 0, 2 from worker 0; 1, 3 from worker 1
    assert not torch.equal(crops[0], crops[1])
    again = [gt for _, gt in make_loader(ds, batch_size=1, shuffle=False, workers=2, seed=0)]
    assert all(torch.equal(x, y) for x, y in zip(crops, again, strict=True))


def test_split_by_image() -> None:
    sources = [f"img{i}.png" for i in range(10)]
    train, val = split_by_image(sources, 0.2, seed=0)
    assert len(val) == 2 and sorted(train + val) == sorted(sources) and not set(train) & set(val)
    assert (train, val) == split_by_image(sources, 0.2, seed=0)
    train, val = split_by_image(sources[:2], 0.01)
    assert len(train) == len(val) == 1  # at least one image on each side
    assert split_by_image(sources[:1], 0.5) == (sources[:1], [])
    # Held-out names always land in validation, and still count towards its share.
    pairs = [(f"p{i}", None) for i in range(10)]
    train, val = split_by_image(pairs, 0.3, seed=0, holdout=["p7", "p2"])
    names = [n for n, _ in val]
    assert len(val) == 3 and {"p7", "p2"} <= set(names)
    assert not {"p7", "p2"} & {n for n, _ in train}


@pytest.mark.parametrize("method", ["bilinear", "bicubic"])
def test_degrade(method: str) -> None:
    assert degrade(torch.rand(3, 32, 32), 4, method).shape == (3, 8, 8)
    assert degrade(torch.rand(2, 3, 32, 48), 2, method).shape == (2, 3, 16, 24)
    flat = degrade(torch.full((3, 32, 32), 0.3), 4, method)
    assert torch.allclose(flat, torch.full_like(flat, 0.3), atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        degrade(torch.rand(3, 30, 32), 4, method)


# ----------------------------------------------------------------------------- cache


def test_cache_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src, dst = tmp_path / "images", tmp_path / "cache"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_noise(96, 128, seed=1)).save(src / "a.jpg", quality=90)
    Image.fromarray(_noise(64, 64, seed=2)).save(src / "sub" / "b.png")
    (src / "bad.jpg").write_text("not a JPEG")
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 images: bad.jpg"):
        cached = prepare_cache(src, dst, max_side=512, workers=1)
    assert cached == [dst / "a.jpg.npy", dst / "sub" / "b.png.npy"]
    assert not list(dst.rglob("*.tmp"))  # atomic writes leave no temp files
    mtimes = [p.stat().st_mtime_ns for p in cached]

    calls = []
    monkeypatch.setattr(data, "load_image", lambda p, **kw: calls.append(p) or load_image(p, **kw))
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        assert prepare_cache(src, dst, max_side=512, workers=1) == cached
    assert calls == [src / "bad.jpg"]  # only the broken file was tried again
    assert [p.stat().st_mtime_ns for p in cached] == mtimes

    # Same validation crops whether decoded from the JPEG or memory-mapped from the cache.
    from_jpeg = SRDataset([src / "a.jpg"], size=32, **X4, crops_per_image=4, train=False)
    from_npy = SRDataset([cached[0]], size=32, **X4, crops_per_image=4, train=False)
    for i in range(4):
        assert all(torch.equal(x, y) for x, y in zip(from_jpeg[i], from_npy[i], strict=True))

    # A smaller max_side re-caches, resized so the longest side is max_side.
    with pytest.warns(UserWarning):
        prepare_cache(src, dst, max_side=32, workers=1)
    small = np.load(cached[0])
    assert small.shape == (24, 32, 3)
    assert np.array_equal(small, load_image(src / "a.jpg", max_side=32))


def test_cache_keeps_the_bomb_guard_and_max_pixels_raises_it(tmp_path: Path) -> None:
    src, dst = tmp_path / "images", tmp_path / "cache"
    src.mkdir()
    Image.fromarray(_noise(40, 50, seed=1)).save(src / "big.png")  # 2000 px
    Image.fromarray(_noise(30, 30, seed=2)).save(src / "small.png")  # 900 px
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 images: big.png \(.*2000 pixels"):
        assert prepare_cache(src, dst, workers=1, max_pixels=1000) == [dst / "small.png.npy"]
    assert not (dst / "big.png.npy").exists()
    data.main(["cache", "--src", str(src), "--dst", str(dst), "--max-pixels", "2000"])
    assert np.load(dst / "big.png.npy").shape == (40, 50, 3)


def test_cache_cli_and_default_sources(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data_dir = tmp_path / "valued"
    sources, description = default_sources(data_dir)
    assert "embedded" in description and len(sources) >= 8

    (data_dir / "images").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_noise(seed=i)).save(data_dir / "images" / f"{i}.jpg")
    sources, description = default_sources(data_dir)
    assert [Path(s).suffix for s in sources] == [".jpg"] * 3 and "0 of them" in description

    args = ["cache", "--src", str(data_dir / "images"), "--dst", str(data_dir / "cache")]
    data.main([*args, "--max-side", "32", "--workers", "2"])
    assert "3 of 3 images cached" in capsys.readouterr().out
    sources, description = default_sources(data_dir)
    assert [Path(s).suffix for s in sources] == [".npy"] * 3 and "3 of them" in description
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the cached files are all fine
        assert SRDataset(sources, size=16, scale=2, method="bilinear")[0][1].shape == (3, 16, 16)


def test_training_crops_keyed_on_seed_epoch_index() -> None:
    sources = [("a", _noise(96, 128, seed=1)), ("b", _noise(80, 80, seed=2))]
    ds = SRDataset(sources, size=32, **X4, crops_per_image=4, seed=3)
    first = [ds[i][1] for i in range(len(ds))]
    backwards = [ds[i][1] for i in reversed(range(len(ds)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, backwards, strict=True))  # any order
    ds.set_epoch(1)
    assert not any(torch.equal(ds[i][1], first[i]) for i in range(len(ds)))  # new epoch
    ds.set_epoch(0)
    assert all(torch.equal(ds[i][1], first[i]) for i in range(len(ds)))  # and back
    # Workers, batch size and a mid-epoch start do not change which crop a position gets.
    plain = torch.cat([gt for _, gt in make_loader(ds, 4, seed=5, epoch=2)])
    workers = torch.cat([gt for _, gt in make_loader(ds, 2, seed=5, epoch=2, workers=2)])
    later = torch.cat([gt for _, gt in make_loader(ds, 4, seed=5, epoch=2, start=3)])
    assert torch.equal(plain, workers) and torch.equal(plain[3:], later)
    assert ds.epoch == 2  # make_loader sets the epoch it loads


def test_source_names_keep_dots_and_clashes_are_errors(tmp_path: Path) -> None:
    from srlib.data import save_sources, source_name

    assert source_name("x/St._Paul.jpg") == "St._Paul"
    assert source_name("cache/St._Mary.JPG.npy") == "St._Mary"
    assert source_name(("skimage/moon", None)) == "moon"
    assert source_name("x/archive.v2") == "archive.v2"  # not an image extension: kept
    paul, mary = tmp_path / "St._Paul.jpg", tmp_path / "St._Mary.jpg"
    Image.fromarray(_noise(seed=1)).save(paul)
    Image.fromarray(_noise(seed=2)).save(mary)
    out = save_sources([paul, mary], tmp_path / "out")
    assert sorted(p.name for p in out.glob("*.png")) == ["St._Mary.png", "St._Paul.png"]
    # Saved again with another split: what the first call wrote and this one doesn't goes;
    # files it did not write stay (a user's own PNG included).
    (out / "notes.txt").write_text("kept")
    Image.fromarray(_noise(seed=4)).save(out / "mine.png")
    save_sources([mary], out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "St._Mary.png",
        "mine.png",
        "notes.txt",
    ]
    train, val = split_by_image([paul, mary], 0.5, holdout=["St._Paul"])
    assert val == [paul] and train == [mary]
    (tmp_path / "sub").mkdir()
    Image.fromarray(_noise(seed=3)).save(tmp_path / "sub" / "St._Paul.png")
    with pytest.raises(ValueError, match="share the name"):
        save_sources([paul, tmp_path / "sub" / "St._Paul.png"], tmp_path / "out2")
