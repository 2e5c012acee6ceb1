"""The Commons data end to end, offline: seed-format lists -> download -> cache -> training.

Lines are taken from the lists shipped in data/valued/ and served by the loopback fake of
Commons (tests/datasets/_commons_server.py); a guard makes any other network access fail the
test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import socket
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from srlib import data, datasets
from srlib.cli import main as srlib_main
from srlib.losses import PixelLoss
from srlib.models import UNetUpscaler
from srlib.training import NotLearningWarning, TrainConfig, fit

try:
    from tests.datasets._commons_server import make_image
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from datasets._commons_server import make_image

REPO = Path(__file__).resolve().parents[2]
VALUED = REPO / "data" / "valued"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
CONTACT = "srlib-tests@example.invalid"
FAST = ["--contact", CONTACT, "--no-progress", "--timeout", "5", "--retries", "1"]
FAST += ["--base-delay", "0.01"]


@pytest.fixture
def loopback_only(monkeypatch):
    """Resolving or connecting to any host but this machine raises; the attempts are listed."""
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOOPBACK:
            attempts.append(str(host))
            raise OSError(f"test network guard: no access to {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOOPBACK:
            attempts.append(str(address[0]))
            raise OSError(f"test network guard: no access to {address[0]}")
        return real_connect(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    for var in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    # The guard itself must work, or this test would prove nothing.
    with pytest.raises(OSError, match="network guard"):
        urllib.request.urlopen("https://commons.wikimedia.org/w/api.php", timeout=2)
    assert attempts == ["commons.wikimedia.org"]
    attempts.clear()
    return attempts


@pytest.fixture
def fake(fake_commons):
    return fake_commons


def _seed_line(list_name: str, contains: str) -> str:
    """The one line of a shipped list that contains `contains`."""
    lines = (VALUED / list_name).read_text(encoding="utf-8").splitlines()
    (line,) = [ln for ln in lines if contains in ln]
    return line


def test_seed_lists_download_cache_and_train(fake, loopback_only, tmp_path, capsys):
    # File-page URLs, as in link_list.txt: resolved through the (fake) API.
    page_lines = [
        _seed_line("link_list.txt", "Anaea_archidona_(Male)_(2).jpg"),  # renamed since
        _seed_line("link_list.txt", "Zo%C3%AFsite.jpg"),
        _seed_line("link_list.txt", "Barringtonia_neocaledonica_JdP.jpg"),
        _seed_line("link_list.txt", "Singapore_Airlines_Airbus_A380_woah!.jpg"),
        _seed_line("link_list.txt", "File:TAAR1_Dopamine.svg"),  # a drawing: filtered out
        _seed_line("link_list.txt", "Kharkov_DZhD_05.jpg"),  # not on the fake: a failure
    ]
    # Direct upload URLs, as in dl_links*.txt, with the host pointed at the fake.
    direct_lines = [
        _seed_line("dl_links1.txt", "Coenophlebia_archidona_MHNT_Satipo_Peru_male.jpg"),
        _seed_line("dl_links1.txt", "Zo%C3%AFsite.jpg"),
        _seed_line("dl_links1.txt", "Singapore_Airlines_Airbus_A380_woah%21.jpg"),
        _seed_line("dl_links1.txt", "Black_ice_growler_upernavik_2007-07-07a.jpg"),
        _seed_line("dl_links4.txt", "Confocal_measurement_of_1-euro-star_3d_and_euro.png"),
        _seed_line("dl_links1.txt", "/TAAR1_Dopamine.svg"),
        "https://upload.wikimedia.org/wikipedia/commons/0/00/..%2F..%2Fescape.jpg",  # hostile
    ]
    direct_lines = [ln.replace("https://upload.wikimedia.org", fake.base) for ln in direct_lines]
    assert all(ln.startswith(fake.base) for ln in direct_lines)
    on_commons = [
        "Coenophlebia archidona MHNT Satipo Peru male.jpg",
        "Zoïsite.jpg",
        "Barringtonia neocaledonica JdP.jpg",
        "Singapore Airlines Airbus A380 woah!.jpg",
        "Black ice growler upernavik 2007-07-07a.jpg",
        "Confocal measurement of 1-euro-star 3d and euro.png",
    ]
    for i, name in enumerate(on_commons):
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        fake.add(f"File:{name}", make_image(96 + 8 * i, 72, fmt, seed=i), category=None)
    fake.redirects["File:Anaea archidona (Male) (2).jpg"] = f"File:{on_commons[0]}"
    # The server names what it serves after the raw path: "File:../../escape.jpg".
    fake.add("File:../../escape.jpg", make_image(80, 80, seed=9), category=None)

    data_dir = tmp_path / "valued"
    data_dir.mkdir()
    (data_dir / "link_list.txt").write_text("\n".join(page_lines) + "\n", encoding="utf-8")
    (data_dir / "dl_links.txt").write_text("\n".join(direct_lines) + "\n", encoding="utf-8")
    images = data_dir / "images"
    common = ["--out", str(images), "--api", fake.api, *FAST]

    # 1. The file-page list: one file is missing, so exit status 1 and a failure list.
    assert datasets.main(["download", str(data_dir / "link_list.txt"), *common]) == 1
    report = capsys.readouterr().out
    assert "downloaded 4" in report and "filtered out 1" in report and "failed 1" in report
    failures = images / "failures-link_list.txt"
    assert failures.read_text(encoding="utf-8").splitlines() == [page_lines[-1]]
    api_requests = len(fake.api_requests())
    assert api_requests >= 1

    # 2. The direct-URL list into the same folder: no API; files already there are verified.
    assert datasets.main(["download", str(data_dir / "dl_links.txt"), *common]) == 0
    report = capsys.readouterr().out
    assert "downloaded 3" in report and "already done 3" in report and "filtered out 1" in report
    assert len(fake.api_requests()) == api_requests
    assert failures.exists()  # another list's failures are kept

    expected = {datasets.safe_name(f"File:{name}") for name in on_commons} | {"escape.jpg"}
    assert "Singapore_Airlines_Airbus_A380_woah!.jpg" in expected  # the "!" is no archive mark
    files = {p.relative_to(data_dir).as_posix() for p in data_dir.rglob("*") if p.is_file()}
    assert files == {"link_list.txt", "dl_links.txt", f"images/{datasets.transfer.LOCK_NAME}"} | {
        f"images/{name}" for name in expected | {failures.name}
    }  # nothing written outside images/, no partial files left
    assert not (tmp_path / "escape.jpg").exists()

    # 3. The fast-crop cache, with the command line.
    cache = data_dir / "cache"
    data.main(["cache", "--src", str(images), "--dst", str(cache), "--max-side", "64"])
    assert "7 of 7 images cached" in capsys.readouterr().out
    zoisite = np.load(cache / "Zoïsite.jpg.npy")
    assert np.array_equal(zoisite, data.load_image(images / "Zoïsite.jpg", max_side=64))

    # 4. default_sources finds the downloaded photos, all from the cache.
    sources, description = data.default_sources(data_dir)
    assert sorted(Path(s).name for s in sources) == sorted(f"{n}.npy" for n in expected)
    assert (
        "7 downloaded photos" in description and "7 of them from the fast-crop cache" in description
    )

    # 5. Training on them: two steps of fit, then two steps of `python -m srlib train`.
    train_set = data.SRDataset(sources, size=32, scale=2, method="bilinear", crops_per_image=2)
    model = UNetUpscaler(2, (8, 16, 16), (16, 8), 0)
    cfg = TrainConfig(name="chain", steps=2, batch_size=4, warmup_steps=1, val_every=2)
    cfg = dataclasses.replace(cfg, checkpoint_every=2, out_dir=str(tmp_path / "runs"))
    history = fit(model, PixelLoss("l1"), train_set, None, cfg, progress=False)
    assert history["step"][-1] == 2 and all(math.isfinite(v) for v in history["train"]["total"])
    assert (tmp_path / "runs" / "chain" / "last.pt").is_file()

    run = tmp_path / "runs" / "cli"
    argv = ["train", "--data", str(data_dir), "--preset", "smoke", "--steps", "2"]
    argv += ["--out", str(run), "--device", "cpu"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotLearningWarning)  # 2 steps may not beat the base
        assert srlib_main(argv) in (0, 3)  # 3: done, but flagged as not learning (yet)
    out = capsys.readouterr().out
    assert "7 downloaded photos" in out and "done: 2 of 2 steps" in out
    assert json.loads((run / "history.json").read_text())["step"][-1] == 2
    assert (run / "last.pt").is_file()

    assert loopback_only == []  # nothing tried to reach another host
