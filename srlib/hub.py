"""The shipped checkpoints from anywhere: the checkout's checkpoints/, else the repository's copy.

A clone (or an editable install) has them in checkpoints/. A `pip install` of srlib, a Colab
runtime or any other folder has not: `shipped_checkpoint(name)` then downloads the file once from
the repository on GitHub into torch.hub's cache ($TORCH_HOME/hub/srlib/), as torch.hub does for
weights. `torch.hub.load(GITHUB_REPO, "unet_x2")` (hubconf.py) is the other way in.

The download is written to a temporary file and renamed into place only once it is complete and
reads back as an srlib checkpoint with `weights_only=True`: an interrupted or a wrong download
leaves nothing behind, and a checkpoint never runs code when loaded. Only the names in SHIPPED
are fetched, so a name never reaches the URL or the file system unchecked.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

# The repository on GitHub. Not known where this was written: set it when publishing (badges in
# the notebooks and README, and downloads, all use this one value).
GITHUB_REPO = "srlib-project/srlib"
# Where the files are fetched from; SRLIB_CHECKPOINT_URL replaces it (a mirror, or a test server).
BASE_URL = f"https://raw.githubusercontent.com/{GITHUB_REPO}/main/checkpoints"
SHIPPED = (
    "unet_x2.pt",
    "unet_perceptual_x2.pt",
    "resnet_unet_x2.pt",
    "resnet_unet_perceptual_x2.pt",
    "unet_real_x2.pt",
    "unet_real_gan_x2.pt",
)
REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_BYTES = 64 * 2**20  # the shipped files are a few MB; anything far larger is not one of them


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept: torch.hub's folder ($TORCH_HOME/hub) / srlib."""
    import torch

    return Path(torch.hub.get_dir()) / "srlib"


def in_checkout(name: str) -> Path | None:
    """checkpoints/<name> of the repository srlib runs from, if this is a checkout that has it."""
    path = REPO_ROOT / "checkpoints" / name
    checkout = (REPO_ROOT / "pyproject.toml").is_file()  # installed, the parent is site-packages
    return path if checkout and path.is_file() else None


def shipped_checkpoint(name: str, download: bool = True, timeout: float = 60.0) -> Path:
    """The path of shipped checkpoint `name` (e.g. "unet_x2.pt"), downloaded if need be.

    The checkout's own file first, then the cache, then a download from BASE_URL (or
    SRLIB_CHECKPOINT_URL) into the cache. FileNotFoundError when it is nowhere and `download`
    is false or fails (the message says why and where it looked).
    """
    if name not in SHIPPED:
        raise ValueError(f"{name!r} is not a shipped checkpoint; they are {', '.join(SHIPPED)}")
    local = in_checkout(name)
    if local is not None:
        return local
    cached = cache_dir() / name
    if cached.is_file():
        return cached
    url = f"{os.environ.get('SRLIB_CHECKPOINT_URL', BASE_URL).rstrip('/')}/{name}"
    if not download:
        raise FileNotFoundError(f"{name} is neither in a checkout nor in {cached.parent}")
    try:
        _download(url, cached, timeout)
    except (OSError, ValueError) as e:  # offline, HTTP error, truncated, not a checkpoint
        raise FileNotFoundError(f"{name}: not in a checkout or {cached.parent}, and {e}") from e
    return cached


def _download(url: str, dst: Path, timeout: float) -> None:
    """Fetch `url` into `dst` atomically; it must read back as an srlib checkpoint."""
    from srlib.training.checkpoint import load_checkpoint

    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(f".{dst.name}.download")
    print(f"downloading {url} to {dst}", flush=True)
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as f:
                length = response.headers.get("Content-Length")
                copied = _copy(response, f, MAX_BYTES)
        except OSError as e:  # URLError, HTTPError and timeouts are OSErrors
            raise OSError(f"the download from {url} failed ({e})") from e
        if length is not None and copied != int(length):
            raise ValueError(f"the download from {url} stopped at {copied} of {length} bytes")
        try:
            ckpt = load_checkpoint(part)  # weights_only=True: data, never code
        except Exception as e:  # an unpickling error: an HTML page, a truncated file
            raise ValueError(f"{url} is not a readable checkpoint ({type(e).__name__})") from e
        if not isinstance(ckpt, dict) or not {"model", "model_config"} <= ckpt.keys():
            raise ValueError(f"{url} is not an srlib checkpoint")
        os.replace(part, dst)  # same folder: complete or absent, never half there
    finally:
        part.unlink(missing_ok=True)


def _copy(src, dst, limit: int) -> int:
    """Copy a response body into a file, refusing more than `limit` bytes; the bytes copied."""
    total = 0
    while chunk := src.read(1 << 16):
        total += len(chunk)
        if total > limit:
            raise ValueError(f"the file is larger than {limit // 2**20} MiB: not a checkpoint")
        dst.write(chunk)
    return total
