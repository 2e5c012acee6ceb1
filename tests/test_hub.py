"""srlib.hub: shipped checkpoints outside a checkout, fetched from a server on 127.0.0.1."""

from __future__ import annotations

import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srlib.hub as hub
from srlib.cli import main
from srlib.models import UNetUpscaler
from srlib.training import load_model, save_checkpoint


class _Handler(SimpleHTTPRequestHandler):
    """Serves a folder; /short/<name> claims more bytes than it sends (a dropped connection)."""

    requests: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).requests.append(self.path)
        if self.path.startswith("/short/"):
            body = b"x" * 100
            self.send_response(200)
            self.send_header("Content-Length", "5000")
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def server(tmp_path):
    """A loopback HTTP server of tmp_path/served; yields (base URL, folder)."""
    served = tmp_path / "served"
    served.mkdir()
    _Handler.requests = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def no_checkout(tmp_path, monkeypatch):
    """srlib as if pip-installed: no checkout above it, an empty cache (TORCH_HOME is per test)."""
    monkeypatch.setattr(hub, "REPO_ROOT", tmp_path / "site-packages")
    monkeypatch.chdir(tmp_path)


def _tiny_checkpoint(path: Path) -> UNetUpscaler:
    torch.manual_seed(0)
    model = UNetUpscaler(2, (4, 4, 4), (4, 4), 0)
    model.head.up[0].reset_parameters()  # not the zero start: sr differs from bicubic
    save_checkpoint(path, model=model.state_dict(), model_config=model.config, step=7)
    return model


def test_a_checkout_uses_its_own_files():
    assert hub.shipped_checkpoint("unet_x2.pt") == hub.REPO_ROOT / "checkpoints" / "unet_x2.pt"


def test_download_once_into_the_cache(server, no_checkout, monkeypatch):
    url, served = server
    model = _tiny_checkpoint(served / "unet_x2.pt")
    monkeypatch.setenv("SRLIB_CHECKPOINT_URL", url)
    path = hub.shipped_checkpoint("unet_x2.pt")
    assert path == hub.cache_dir() / "unet_x2.pt" and path.is_file()
    loaded, ckpt = load_model(path)
    assert ckpt["step"] == 7 and loaded.config == model.config
    assert hub.shipped_checkpoint("unet_x2.pt") == path  # from the cache: one request only
    assert _Handler.requests == ["/unet_x2.pt"]
    assert [p.name for p in path.parent.iterdir()] == ["unet_x2.pt"]  # no temporary file left


@pytest.mark.parametrize(
    "serve, message",
    [
        (None, r"failed \(HTTP Error 404"),  # not on the server
        (b"<html>Not a checkpoint</html>", "is not a readable checkpoint"),
        ("dict", "is not an srlib checkpoint"),  # a torch file, but no model in it
        ("short", "stopped at 100 of 5000 bytes"),  # the connection dropped
    ],
)
def test_a_failed_or_wrong_download_leaves_nothing(
    server, no_checkout, monkeypatch, serve, message
):
    url, served = server
    if isinstance(serve, bytes):
        (served / "unet_x2.pt").write_bytes(serve)
    elif serve == "dict":
        torch.save({"weights": torch.zeros(2)}, served / "unet_x2.pt")
    monkeypatch.setenv("SRLIB_CHECKPOINT_URL", f"{url}/short" if serve == "short" else url)
    with pytest.raises(FileNotFoundError, match=message):
        hub.shipped_checkpoint("unet_x2.pt")
    cache = hub.cache_dir()
    assert not cache.exists() or not list(cache.iterdir())  # no partial or wrong file kept
    with pytest.raises(FileNotFoundError, match="neither in a checkout nor in"):
        hub.shipped_checkpoint("unet_x2.pt", download=False)


def test_only_shipped_names_are_fetched(no_checkout):
    for name in ("../../etc/passwd", "unet_x3.pt", "x/unet_x2.pt"):
        with pytest.raises(ValueError, match="is not a shipped checkpoint"):
            hub.shipped_checkpoint(name)


def test_cli_without_a_checkout_fetches_its_default(server, no_checkout, monkeypatch, capsys):
    url, served = server
    _tiny_checkpoint(served / "unet_x2.pt")
    monkeypatch.setenv("SRLIB_CHECKPOINT_URL", url)
    Image.fromarray(np.full((6, 5, 3), 90, np.uint8)).save("a.png")
    assert main(["upscale", "a.png", "-o", "out", "-q"]) == 0
    out = capsys.readouterr().out
    assert f"downloading {url}/unet_x2.pt" in out and "ok: a.png" in out
    with Image.open("out/a_x2.png") as im:
        assert im.size == (10, 12)
