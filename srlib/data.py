"""Images in, (lq, gt) training pairs out: robust loading, random crops, the fast-crop cache.

Every image becomes an (H, W, 3) uint8 RGB array; a training pair is a random square crop of
random side, rescaled to a fixed output size S (gt, (3, S, S) in [0, 1]) and an antialiased
downscale of it by the SR factor (lq, (3, S/scale, S/scale)), or with degradation="realistic"
a blurred, resized, noisy, JPEG-compressed one (srlib.degrade). Large photographs are best
decoded once into `.npy` files (`prepare_cache`), which are memory-mapped so a crop reads
only the rows it needs:

    python -m srlib.data cache --src data/valued/images --dst data/valued/cache --max-side 2048
"""

from __future__ import annotations

import functools
import os
import random
import signal
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from srlib.degrade import Realistic, check_degradation, training_lq

# Decoding, scanning and writing live in srlib.io; re-exported here for existing callers.
from srlib.io import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from srlib.io import (
    ExtraFramesWarning,
    LostPrecisionWarning,
    atomic_write,
    fit_size,
    image_size,
    open_image,
    save_image,
    to_rgb_array,
)
from srlib.io import ImageLoadError as ImageLoadError
from srlib.io import find_images as find_images
from srlib.resize import degrade as degrade  # lq for training: see srlib.resize

Source = str | os.PathLike | tuple[str, np.ndarray]  # image file, cached .npy, or (name, array)


# ----------------------------------------------------------------------------- loading


def load_image(
    path: str | os.PathLike, max_side: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Decode any image file to an upright (H, W, 3) uint8 RGB array (maybe read-only).

    `srlib.io.open_image` decodes (EXIF orientation, 16-bit scaled by 65535, float TIFF as
    [0, 1]) and `to_rgb_array` converts (gray repeated, transparency composited on white).
    With max_side, the longest side is shrunk to at most max_side (JPEGs decode at reduced
    size via draft mode, which is several times faster for big photos). Files over max_pixels
    (default: PIL's decompression-bomb limit, ~89.5 MP) raise ImageLoadError.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LostPrecisionWarning)  # 8-bit is all we keep anyway
        warnings.simplefilter("ignore", ExtraFramesWarning)  # a first frame is a photo too
        rgb = to_rgb_array(open_image(path, max_pixels=max_pixels, draft_side=max_side))
    if max_side and max(rgb.shape[:2]) > max_side:
        w, h = fit_size((rgb.shape[1], rgb.shape[0]), max_side)
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS))
    return rgb


@functools.cache
def _embedded() -> tuple[tuple[str, np.ndarray], ...]:
    """Load the package-shipped photographs once per process."""
    import matplotlib.cbook
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = (
        "astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
        "immunohistochemistry", "retina", "camera", "moon", "coins", "brick", "grass", "gravel",
    )  # fmt: skip
    loaders = {f"skimage/{n}": getattr(skimage.data, n, None) for n in names}
    loaders["skimage/motorcycle"] = lambda: skimage.data.stereo_motorcycle()[0]  # left view
    loaders["sklearn/china"] = lambda: load_sample_images().images[0]
    loaders["sklearn/flower"] = lambda: load_sample_images().images[1]
    loaders["matplotlib/grace_hopper"] = lambda: load_image(
        matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    )
    photos = []
    for name, load in loaders.items():
        try:  # some skimage images need a download (pooch): skip whatever fails offline
            a = np.asarray(load())
        except Exception:
            continue
        if a.ndim == 2:  # grayscale photo -> RGB
            a = np.repeat(a[:, :, None], 3, axis=2)
        if a.ndim == 3 and a.shape[2] == 3 and a.dtype == np.uint8:
            a.flags.writeable = False  # shared between calls
            photos.append((name, a))
    return tuple(photos)


def embedded_photos() -> list[tuple[str, np.ndarray]]:
    """Offline default photos (skimage, scikit-learn, matplotlib) as read-only (H, W, 3) uint8."""
    return list(_embedded())


# ----------------------------------------------------------------------------- pairs


def _read(ref: Path | np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from a decoded array, a cached .npy (memory-mapped) or an image file."""
    if isinstance(ref, np.ndarray):
        return ref
    if ref.suffix == ".npy":
        try:
            a = np.load(ref, mmap_mode="r")  # a crop then reads only the rows it touches
        except Exception as e:
            raise ImageLoadError(ref, f"{type(e).__name__}: {e}") from e
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ImageLoadError(ref, f"expected (H, W, 3) uint8, got {a.shape} {a.dtype}")
        return a
    return load_image(ref)


class SRDataset(Dataset):
    """Random (train) or fixed (validation) square crops -> (lq, gt) float32 tensors in [0, 1].

    A crop's side is drawn log-uniformly between min_crop (default: size) and max_crop (default:
    the image's short side), so every zoom level is equally likely, then resized (antialiased
    bicubic) to size x size. Images with a short side below size are upscaled whole (a soft gt,
    kept on purpose for small photo sets); below size / 2 they are skipped with a warning, as
    are files that cannot be decoded. verify=True decodes every file once here so truncated
    files are caught up front; verify=False only reads headers (for huge uncached folders), and
    a file that fails later is replaced by the next image for that crop, with a warning.
    degradation makes the lq: "clean" (`degrade(gt, scale, method)`), "realistic" or a
    `srlib.degrade.Realistic` (blur, noise, JPEG: `srlib.degrade.realistic_lq`).
    """

    def __init__(
        self,
        sources: Sequence[Source],
        size: int = 128,
        scale: int = 2,
        crops_per_image: int = 16,
        train: bool = True,
        min_crop: int | None = None,
        max_crop: int | None = None,
        rotate: bool = False,
        method: str = "bicubic",
        seed: int = 0,
        verify: bool = True,
        degradation: str | Realistic = "clean",
    ):
        if size % scale:
            raise ValueError(f"output size {size} is not divisible by scale {scale}")
        if method not in ("bilinear", "bicubic"):
            raise ValueError(f"method must be 'bilinear' or 'bicubic', got {method!r}")
        check_degradation(degradation)
        self.degradation = degradation
        self.size, self.scale, self.train = size, scale, train
        self.crops_per_image = crops_per_image
        self.min_crop, self.max_crop = min_crop or size, max_crop
        self.rotate, self.method, self.seed = rotate, method, seed
        self.names: list[str] = []
        self.refs: list[Path | np.ndarray] = []  # what _read() takes
        skipped: list[str] = []
        for src in sources:
            try:
                name, ref = _usable(src, size // 2, verify)
            except ImageLoadError as e:
                skipped.append(f"{Path(_name_and_ref(src)[0]).name} ({e.reason})")
                continue
            self.names.append(name)
            self.refs.append(ref)
        if skipped:
            warnings.warn(
                f"skipped {len(skipped)} of {len(sources)} images: {some(skipped)}", stacklevel=2
            )
        if not self.refs:
            raise ValueError(f"no usable images among {len(sources)} sources")
        self.epoch = 0  # training crops are keyed on (seed, epoch, index): see set_epoch
        self._bad: set[int] = set()  # images that failed to decode in this process

    def __len__(self) -> int:
        return len(self.refs) * self.crops_per_image

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose training crops __getitem__ returns (validation ignores it)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # One generator per (seed, epoch, index): the same crop in any worker, in any order,
        # and after a resume; validation drops the epoch, so its crops never change.
        key = [self.seed, self.epoch, index] if self.train else [self.seed, index]
        rng = np.random.default_rng(key)
        j = index // self.crops_per_image
        for attempt in range(len(self.refs)):  # a file that breaks mid-training must not kill it
            k = (j + attempt) % len(self.refs)
            if k in self._bad:
                continue
            try:
                img = _read(self.refs[k])
                break
            except ImageLoadError as e:
                self._bad.add(k)  # warn once per process, then skip it
                warnings.warn(f"{e}; using other images instead", stacklevel=2)
        else:
            raise RuntimeError("none of the dataset's images can be read any more")
        gt = self._crop(img, rng).float() / 255  # (3, S, S)
        # Its own generator from the same key: a seed gives the same crops whatever the degradation.
        lq_rng = np.random.default_rng([*key, 1])
        lq = training_lq(gt, self.scale, self.method, self.degradation, lq_rng)
        return lq, gt  # (3, S/scale, S/scale), (3, S, S)

    def _crop(self, img: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """Random square crop of random side -> (3, S, S) uint8, flipped in training."""
        h, w = img.shape[:2]
        short = min(h, w)
        hi = min(self.max_crop or short, short)
        lo = min(self.min_crop, hi)
        side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        patch = crop_resize(img, top, left, side, self.size)
        if self.train:
            if rng.random() < 0.5:
                patch = patch.flip(-1)
            if rng.random() < 0.5:
                patch = patch.flip(-2)
            if self.rotate:
                patch = patch.rot90(int(rng.integers(4)), dims=(-2, -1))
        return patch


def some(items: Sequence[str], shown: int = 5) -> str:
    """The first `shown` items and how many more: one readable line for 10,000 skipped files."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more:,} more" if more > 0 else "")


def crop_resize(img: np.ndarray, top: int, left: int, side: int, size: int) -> torch.Tensor:
    """img[top:top+side, left:left+side] (H, W, 3) -> (3, size, size) uint8, bicubic antialiased."""
    crop = torch.from_numpy(np.array(img[top : top + side, left : left + side]))  # copy: writable
    crop = crop.permute(2, 0, 1)  # (3, side, side), channels-last in memory
    if side == size:
        return crop.contiguous()
    # uint8 + antialias has a fast path in torch (4x PIL's bicubic here) and matches PIL to 1 level
    out = F.interpolate(crop[None], size=(size, size), mode="bicubic", antialias=True)
    return out[0].contiguous()


def _name_and_ref(src: Source) -> tuple[str, Path | np.ndarray]:
    """(name, file or array) of a source."""
    return (src[0], src[1]) if isinstance(src, tuple) else (str(src), Path(src))


def _usable(src: Source, min_side: int, verify: bool) -> tuple[str, Path | np.ndarray]:
    """(name, what _read takes) of a source with a short side >= min_side, else ImageLoadError."""
    name, ref = _name_and_ref(src)
    h, w, ref = _probe(ref, verify)
    if min(h, w) < min_side:
        raise ImageLoadError(name, f"too small: {w}x{h} < {min_side} px")
    return name, ref


def usable_sources(
    sources: Sequence[Source], min_side: int, verify: bool = True
) -> tuple[list[Source], list[str]]:
    """(the sources an SRDataset of size 2 * min_side keeps, "name (why)" for the others).

    Check the photos once before splitting them: a broken file drawn for validation then
    leaves the others to validate on instead of leaving no validation set at all.
    """
    usable, skipped = [], []
    for src in sources:
        try:
            _usable(src, min_side, verify)
            usable.append(src)
        except ImageLoadError as e:
            skipped.append(f"{Path(_name_and_ref(src)[0]).name} ({e.reason})")
    return usable, skipped


def _probe(ref: Path | np.ndarray, verify: bool) -> tuple[int, int, Path | np.ndarray]:
    """(h, w, ref) of a source, raising ImageLoadError for unusable ones."""
    if isinstance(ref, np.ndarray):
        a = np.repeat(ref[:, :, None], 3, axis=2) if ref.ndim == 2 else ref
        if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
            raise ImageLoadError("<array>", f"expected (H, W, 3) uint8, got {a.shape} {a.dtype}")
        return a.shape[0], a.shape[1], a
    if ref.suffix == ".npy" or verify:
        h, w = _read(ref).shape[:2]
        return h, w, ref
    w, h = image_size(ref)  # header only: cheap, catches non-images
    return h, w, ref


def source_name(src: Source) -> str:
    """Short name of a source: 'moon' for ('skimage/moon', array), 'a/moon.jpg', 'moon.jpg.npy'.

    Only a known image extension (and the cache's '.npy') is dropped, so 'St._Paul.jpg' is
    'St._Paul', not 'St'.
    """
    if isinstance(src, tuple):
        return Path(src[0]).name
    name = Path(src).name
    name = name[: -len(".npy")] if name.endswith(".npy") else name
    stem, ext = os.path.splitext(name)
    return stem if ext.lower() in IMAGE_EXTENSIONS and stem else name


def split_by_image(
    sources: Sequence[Source], val_fraction: float = 0.1, seed: int = 0, holdout: Sequence[str] = ()
) -> tuple[list[Source], list[Source]]:
    """Split sources into (train, val) by image, so no photo leaks into both sides.

    Names in `holdout` (see `source_name`) always go to validation, e.g. the photo a notebook
    shows as its hero example; the rest of the validation share is drawn at random.
    """
    n = len(sources)
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)  # at least one image on each side
    forced = [i for i, s in enumerate(sources) if source_name(s) in set(holdout)]
    rest = [i for i in np.random.default_rng(seed).permutation(n).tolist() if i not in forced]
    val_idx = set(forced + rest[: max(0, n_val - len(forced))])
    train = [s for i, s in enumerate(sources) if i not in val_idx]
    return train, [s for i, s in enumerate(sources) if i in val_idx]


def source_tensor(src: Source) -> torch.Tensor:
    """A whole source image at 8 bits, as training sees it: float (3, H, W) in [0, 1].

    (srlib.io.to_tensor converts a PIL image and keeps 16-bit precision; this reads a source.)
    """
    img = np.asarray(_read(src[1] if isinstance(src, tuple) else Path(src)))
    img = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
    return torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255


to_tensor = source_tensor  # the name before issue 26 (io.to_tensor is the PIL one)


def save_sources(sources: Sequence[Source], folder: str | os.PathLike) -> Path:
    """Write sources as lossless PNGs named by `source_name` (e.g. held-out photos to evaluate).

    Two sources with the same short name (sub/a.jpg and other/a.jpg) would overwrite each
    other, so that is an error rather than a silently lost image. PNGs an earlier call wrote
    (listed in the folder's `.srlib_sources`) that are not among these sources are removed, so
    an earlier, different split is never scored with this one; no other file is touched.
    """
    names = [source_name(s) for s in sources]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ValueError(f"several sources share the name(s) {clashes}; rename the files")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / ".srlib_sources"  # what this function wrote here last time
    earlier = manifest.read_text(encoding="utf-8").splitlines() if manifest.exists() else []
    for stale in set(earlier) - {f"{n}.png" for n in names}:
        if Path(stale).name == stale:  # a bare file name: never a path out of the folder
            (folder / stale).unlink(missing_ok=True)  # it would be scored with these sources
    for src, name in zip(sources, names, strict=True):
        img = _read(src[1] if isinstance(src, tuple) else Path(src))
        img = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img
        save_image(Image.fromarray(np.asarray(img)), folder / f"{name}.png")
    with atomic_write(manifest, "w", encoding="utf-8") as f:
        f.write("".join(f"{n}.png\n" for n in names))
    return folder


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and random in each worker from its torch seed; workers ignore SIGINT, SIGTERM.

    Ctrl-C and Jupyter's stop button signal the whole process group, and so may a scheduler's
    SIGTERM. The main process turns either into a clean stop (`srlib.training.fit`); a worker
    that died of it would crash the run.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    epoch: int = 0,
    start: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """One epoch's DataLoader: order from (seed, epoch), crops from (seed, epoch, index).

    Everything random is a function of (seed, epoch, position), so a run gives the same batches
    with any number of workers, and `start` (samples to skip) resumes mid-epoch exactly.
    Workers are started per epoch (not persistent), so they see `dataset.set_epoch(epoch)`.

    For DistributedDataParallel, `batch_size` is the global batch and `start` counts global
    samples: process `rank` of `world_size` gets positions rank::world_size of each global
    batch, `batch_size // world_size` samples a batch. The processes' batches of a step are
    then together the one-process batch, whatever the number of processes, so a run can resume
    with another one.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of world_size {world_size} processes")
    if batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} (the global batch) does not split into {world_size} "
            "equal per-process batches: choose a multiple of the number of processes"
        )
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(len(dataset), generator=gen).tolist()[start:]
    else:
        order = list(range(start, len(dataset)))
    if world_size > 1:
        end = len(order) - len(order) % batch_size if drop_last else len(order)
        global_batches = (order[i : min(i + batch_size, end)] for i in range(0, end, batch_size))
        order = [j for b in global_batches for j in b[rank::world_size]]
    return DataLoader(
        dataset,
        batch_size=batch_size // world_size,
        sampler=order,
        num_workers=workers,
        worker_init_fn=_seed_worker,
        # Worker base seeds (for user transforms): one stream per process.
        generator=torch.Generator().manual_seed(seed + 1_000_003 * rank),
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
    )


# ----------------------------------------------------------------------------- cache


def _cache_path(src: Path, src_root: Path, cache_root: Path) -> Path:
    """data/images/sub/a.jpg -> cache/sub/a.jpg.npy (mirrors the tree: no name clashes)."""
    rel = src.relative_to(src_root)
    return cache_root / rel.parent / (rel.name + ".npy")


def _is_fresh(src: Path, dst: Path, max_side: int) -> bool:
    """dst is newer than src, a readable array, and was made with this max_side."""
    try:
        if dst.stat().st_mtime < src.stat().st_mtime:
            return False
        long = max(np.load(dst, mmap_mode="r").shape[:2])
        if long == max_side:  # shrunk to exactly max_side
            return True
        # otherwise it must be the original, unshrunk size
        return long < max_side and long == max(image_size(src))
    except Exception:
        return False


def _cache_one(src: Path, dst: Path, max_side: int, max_pixels: int | None = None) -> str | None:
    """Decode src once and write dst atomically; returns an error reason or None."""
    try:
        rgb = load_image(src, max_side=max_side, max_pixels=max_pixels)
    except ImageLoadError as e:
        return e.reason
    with atomic_write(dst) as f:  # readers never see a half-written file
        np.save(f, rgb)  # to the file object: np.save(path) would append ".npy" to a name
    return None


def prepare_cache(
    src_folder: str | os.PathLike,
    cache_folder: str | os.PathLike,
    max_side: int = 2048,
    workers: int | None = None,
    max_pixels: int | None = None,
) -> list[Path]:
    """Decode every image under src_folder once into cache_folder as (H, W, 3) uint8 .npy.

    Up-to-date entries are kept; corrupt images, and images over max_pixels (default: PIL's
    decompression-bomb limit; raise it for big panoramas), are skipped with a counted warning.
    Returns the cache files of all usable images, in find_images order.
    """
    src_root, cache_root = Path(src_folder), Path(cache_folder)
    images = find_images(src_root)
    jobs = [(p, _cache_path(p, src_root, cache_root)) for p in images]
    todo = [(p, d) for p, d in jobs if not _is_fresh(p, d, max_side)]
    workers = min(workers or os.cpu_count() or 1, max(1, len(todo)))
    srcs, dsts = [p for p, _ in todo], [d for _, d in todo]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            n = len(todo)
            errors = list(pool.map(_cache_one, srcs, dsts, [max_side] * n, [max_pixels] * n))
    else:
        errors = [_cache_one(p, d, max_side, max_pixels) for p, d in todo]
    failed = {p: e for p, e in zip(srcs, errors, strict=True) if e is not None}
    if failed:
        details = some([f"{p.name} ({e})" for p, e in failed.items()])
        warnings.warn(f"skipped {len(failed)} of {len(images)} images: {details}", stacklevel=2)
    return [d for p, d in jobs if p not in failed]


def folder_sources(images_dir: str | os.PathLike, cache_dir: str | os.PathLike | None) -> list:
    """Images under images_dir, each replaced by its cached .npy when that is up to date."""
    images_dir = Path(images_dir)
    sources: list[Path] = []
    for p in find_images(images_dir):
        cached = _cache_path(p, images_dir, Path(cache_dir)) if cache_dir else None
        fresh = cached is not None and cached.exists()
        sources.append(cached if fresh and cached.stat().st_mtime >= p.stat().st_mtime else p)
    return sources


def default_sources(data_dir: str | os.PathLike = "data/valued") -> tuple[list[Source], str]:
    """Downloaded photos (cached where prepared) if any, else the embedded set; plus a summary."""
    images_dir, cache_dir = Path(data_dir) / "images", Path(data_dir) / "cache"
    if images_dir.is_dir() and find_images(images_dir):
        sources = folder_sources(images_dir, cache_dir)
        n_cached = sum(Path(s).suffix == ".npy" for s in sources)
        hint = "" if n_cached else " (prepare the fast-crop cache: python -m srlib.data cache)"
        return sources, (
            f"{len(sources)} downloaded photos from {images_dir}, "
            f"{n_cached} of them from the fast-crop cache {cache_dir}{hint}"
        )
    photos = embedded_photos()
    return list(photos), (
        f"{len(photos)} embedded photos (scikit-image, scikit-learn, matplotlib samples); "
        f"no downloaded photos in {images_dir}"
    )


def __getattr__(name: str) -> object:
    """data.main, the fast-crop cache's command line: now srlib.cli.cache (`srlib cache`)."""
    if name == "main":
        from srlib.cli.cache import main  # when the old name is used: it imports this module

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # python -m srlib.data cache ...
    from srlib.cli.cache import main

    main()
