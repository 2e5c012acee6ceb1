"""Training crops per second: decoding a 24 MP JPEG per crop vs the memory-mapped .npy cache.

Makes a few synthetic 24 MP JPEGs (embedded photos upscaled to 6000x4000 plus mild noise, so
the files carry photo-like entropy) in a temporary folder, builds the fast-crop cache with
srlib.data.prepare_cache, then pulls (lq, gt) pairs through make_loader for both kinds of
source in this one process and prints crops/s and their ratio. Timings include DataLoader
worker start-up (conservative for short runs).

    python benchmarks/crops.py                      # defaults: 4 images, 2 workers, S=128
    python benchmarks/crops.py --images 6 --crops-cache 4000
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

if not __package__:  # run as a file: make `benchmarks` (and srlib) importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from srlib.data import SRDataset, embedded_photos, make_loader, prepare_cache

FLOOR = 200  # crops/s the cache must deliver with 2 workers at S=128


def make_jpegs(folder: Path, n: int, width: int, height: int, noise: float) -> list[Path]:
    """n synthetic width x height JPEGs from upscaled embedded photos."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (name, photo) in enumerate(embedded_photos()[:n]):
        big = np.asarray(Image.fromarray(photo).resize((width, height), Image.Resampling.BICUBIC))
        if noise:
            grain = rng.normal(0, noise, (height, width, 1)).astype(np.int16)  # luma-like grain
            big = np.clip(big + grain, 0, 255).astype(np.uint8)
        path = folder / f"{i:02d}_{name.replace('/', '_')}.jpg"
        Image.fromarray(big).save(path, quality=90)
        paths.append(path)
    return paths


def crops_per_second(sources: list, n_crops: int, args: argparse.Namespace) -> tuple[float, int]:
    """Pull at least n_crops pairs through a shuffled DataLoader; returns (seconds, crops)."""
    per_image = -(-n_crops // len(sources))
    ds = SRDataset(sources, size=args.size, scale=args.scale, method="bilinear",
                   crops_per_image=per_image, verify=False)  # fmt: skip
    loader = make_loader(ds, args.batch_size, shuffle=True, workers=args.workers, seed=0)
    start, done = time.perf_counter(), 0
    for lq, gt in loader:
        assert gt.shape[-1] == args.size and lq.shape[-1] == args.size // args.scale
        done += len(gt)
        if done >= n_crops:
            break
    seconds = time.perf_counter() - start
    del loader  # stop the persistent workers before the next measurement
    return seconds, done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--noise", type=float, default=3.0, help="grain std (0 = none)")
    parser.add_argument("--crops-decode", type=int, default=64)
    parser.add_argument("--crops-cache", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--max-side", type=int, default=2048)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "images", Path(tmp) / "cache"
        src.mkdir()
        t0 = time.perf_counter()
        jpegs = make_jpegs(src, args.images, args.width, args.height, args.noise)
        t1 = time.perf_counter()
        cached = prepare_cache(src, dst, max_side=args.max_side, workers=args.workers)
        t2 = time.perf_counter()
        mb_jpeg = sum(p.stat().st_size for p in jpegs) / len(jpegs) / 2**20
        mb_npy = sum(p.stat().st_size for p in cached) / len(cached) / 2**20
        print(f"{len(jpegs)} JPEGs of {args.width}x{args.height} ({mb_jpeg:.1f} MB each), "
              f"made in {t1 - t0:.1f} s; cache (max side {args.max_side}, {mb_npy:.1f} MB "
              f"each) built in {t2 - t1:.1f} s with {args.workers} workers")  # fmt: skip
        s_dec, n_dec = crops_per_second(jpegs, args.crops_decode, args)
        s_npy, n_npy = crops_per_second(cached, args.crops_cache, args)

    rate_dec, rate_npy = n_dec / s_dec, n_npy / s_npy
    print(f"\nDataLoader, {args.workers} workers, batch {args.batch_size}, "
          f"gt {args.size}px, x{args.scale}")  # fmt: skip
    print(f"| {'source':<28} | {'crops':>6} | {'seconds':>8} | {'crops/s':>8} |")
    print(f"| {'-' * 28} | {'-' * 6}:| {'-' * 8}:| {'-' * 8}:|")
    print(f"| {'decode JPEG per crop':<28} | {n_dec:>6} | {s_dec:>8.2f} | {rate_dec:>8.1f} |")
    print(f"| {'.npy cache (mmap)':<28} | {n_npy:>6} | {s_npy:>8.2f} | {rate_npy:>8.1f} |")
    print(f"\ncache / decode: {rate_npy / rate_dec:.1f}x")
    verdict = "meets" if rate_npy >= FLOOR else "MISSES"
    print(f"cache {verdict} the floor of {FLOOR} crops/s ({rate_npy:.0f} crops/s)")


if __name__ == "__main__":
    main()
