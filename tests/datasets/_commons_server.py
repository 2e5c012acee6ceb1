"""A loopback imitation of the Commons API and upload server with injectable faults (tests only)."""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import socket
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

HTML_ERROR = b"<!DOCTYPE html><html><head><title>Error</title></head><body>Oops</body></html>"


def make_image(width: int, height: int, fmt: str = "JPEG", seed: int = 0) -> bytes:
    """Noise image bytes (noise keeps files from compressing to almost nothing)."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


class FakeCommons:
    """Files, categories and per-file fault queues; `log` records every request in order.

    File faults, consumed one per GET of that file: reset, 429, 503, html, html_as_image,
    notimage, slow, badsha, truncate, nolen_truncate, norange, trickle, drip (one byte every
    `drip_s`, the whole body), and len:<value> (the body with that Content-Length header,
    e.g. len:abc).
    API faults, one per API request: maxlag, 429, 503, reset.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # "File:Name.jpg" -> bytes
        self.meta: dict[str, dict] = {}  # title -> width, height, mime
        self.categories: dict[str, list[str]] = {}
        self.redirects: dict[str, str] = {}  # old title -> current title (renamed files)
        self.faults: dict[str, list[str]] = {}
        self.api_faults: list[str] = []
        self.page_size = 3  # members per categorymembers answer, whatever gcmlimit says
        self.split_imageinfo = True  # first answer of each batch needs an iicontinue round
        self.retry_after = "0.05"
        self.slow_s = 1.0
        self.trickle = (8192, 0.03)  # bytes per write, pause after each
        self.drip_s = 0.02  # pause after each byte of a "drip" answer
        self.log: list[dict] = []
        self.lock = threading.Lock()
        self.base = ""
        self._server: ThreadingHTTPServer | None = None

    # -- setup
    def add(self, title: str, data: bytes, category: str | None = "Category:Valued images") -> str:
        """Register a file (and its category membership); returns its title."""
        with Image.open(io.BytesIO(data)) as im:
            width, height, fmt = im.width, im.height, im.format
        self.files[title] = data
        self.meta[title] = {"width": width, "height": height, "mime": f"image/{fmt.lower()}"}
        if category:
            self.categories.setdefault(category, []).append(title)
        return title

    def url(self, title: str) -> str:
        """Upload URL in Commons' layout: /wikipedia/commons/<h>/<hh>/<Name>."""
        name = title.removeprefix("File:").replace(" ", "_")
        digest = hashlib.md5(name.encode()).hexdigest()
        return f"{self.base}/wikipedia/commons/{digest[0]}/{digest[:2]}/{urllib.parse.quote(name)}"

    @property
    def api(self) -> str:
        return f"{self.base}/w/api.php"

    def file_requests(self, title: str) -> list[dict]:
        return [e for e in self.log if e["kind"] == "file" and e["title"] == title]

    def api_requests(self) -> list[dict]:
        return [e for e in self.log if e["kind"] == "api"]

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        server.daemon_threads = True
        server.fake = self
        server.handle_error = lambda request, address: None  # clients hang up on purpose
        self._server = server
        self.base = f"http://127.0.0.1:{server.server_address[1]}"
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- answers
    def pop_fault(self, queue: list[str] | None) -> str:
        with self.lock:
            return queue.pop(0) if queue else ""

    def page(self, title: str, with_info: bool = True) -> dict:
        page = {"pageid": list(self.files).index(title) + 1, "ns": 6, "title": title}
        if with_info:
            data, meta = self.files[title], self.meta[title]
            page["imageinfo"] = [
                {
                    "size": len(data),
                    "width": meta["width"],
                    "height": meta["height"],
                    "url": self.url(title),
                    "descriptionurl": f"{self.base}/wiki/{urllib.parse.quote(title)}",
                    "mime": meta["mime"],
                    "sha1": hashlib.sha1(data).hexdigest(),
                    "extmetadata": {
                        "LicenseShortName": {
                            "value": "CC BY-SA 4.0",
                            "source": "commons-desc-page",
                        },
                        "LicenseUrl": {"value": "https://creativecommons.org/licenses/by-sa/4.0"},
                        "Artist": {
                            "value": '<a href="//commons.wikimedia.org/wiki/User:JD" '
                            'title="User:JD">Jane &amp; Doe</a>\n',
                            "source": "commons-desc-page",
                        },
                    },
                }
            ]
        return page


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    @property
    def fake(self) -> FakeCommons:
        return self.server.fake

    def do_GET(self) -> None:
        self._route(urllib.parse.urlsplit(self.path).query)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._route(self.rfile.read(length).decode())

    def _route(self, query: str) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/w/api.php":
            self._api(dict(urllib.parse.parse_qsl(query)))
        elif path.startswith("/wikipedia/commons/"):
            name = urllib.parse.unquote(path.rsplit("/", 1)[1]).replace("_", " ")
            self._file(f"File:{name}")
        else:
            self._send(404, b"not found", "text/plain")

    # -- plumbing
    def _send(self, status: int, body: bytes, ctype: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: dict, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode()
        self._send(200, body, "application/json; charset=utf-8", headers)

    def _reset(self) -> None:
        """Abort the TCP connection with an RST, like a flaky network or proxy does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()
        self.connection.close()
        self.close_connection = True

    # -- API
    def _api(self, params: dict) -> None:
        fake = self.fake
        fault = fake.pop_fault(fake.api_faults)
        entry = {"kind": "api", "params": params, "ua": self.headers.get("User-Agent", "")}
        entry.update(fault=fault, t=time.monotonic())
        fake.log.append(entry)
        if fault == "maxlag":
            error = {"code": "maxlag", "info": "Waiting for db1: 7 seconds lagged", "lag": 7}
            return self._json({"error": error}, {"Retry-After": fake.retry_after})
        if fault in ("429", "503"):
            return self._send(int(fault), b"busy", "text/plain", {"Retry-After": fake.retry_after})
        if fault == "reset":
            return self._reset()
        if params.get("generator") == "categorymembers":
            return self._json(self._category(params))
        titles = [t for t in params.get("titles", "").split("|") if t]
        return self._json(self._titles(titles, follow=params.get("redirects") == "1"))

    def _category(self, params: dict) -> dict:
        fake = self.fake
        members = fake.categories.get(params["gcmtitle"], [])
        start = int(params.get("gcmcontinue", "file|0").split("|")[1])
        batch = members[start : start + min(int(params["gcmlimit"]), fake.page_size)]
        following = {}
        if start + len(batch) < len(members):
            following = {"gcmcontinue": f"file|{start + len(batch)}", "continue": "gcmcontinue||"}
        if fake.split_imageinfo and len(batch) > 1 and "iicontinue" not in params:
            # Like a response-size limit hit by extmetadata: the last page's imageinfo comes in
            # a second round that repeats the generator batch (same gcmcontinue).
            cont = {"iicontinue": f"{batch[-1][5:]}|20200101000000", "continue": "||"}
            if "gcmcontinue" in params:
                cont["gcmcontinue"] = params["gcmcontinue"]
            pages = [fake.page(t, with_info=t != batch[-1]) for t in batch]
            return {"continue": cont, "query": {"pages": pages}}
        if "iicontinue" in params:
            pages = [fake.page(t, with_info=t == batch[-1]) for t in batch]
        else:
            pages = [fake.page(t) for t in batch]
        answer = {"query": {"pages": pages}}
        if following:
            answer["continue"] = following
        else:
            answer["batchcomplete"] = True
        return answer

    def _titles(self, titles: list[str], follow: bool) -> dict:
        normalized, redirects, pages = [], [], []
        for title in titles:
            name = title.replace("_", " ")
            if name != title:
                normalized.append({"fromencoded": False, "from": title, "to": name})
            if follow and name in self.fake.redirects:
                redirects.append({"from": name, "to": self.fake.redirects[name]})
                name = self.fake.redirects[name]
            if name in self.fake.files:
                pages.append(self.fake.page(name))
            else:
                pages.append({"ns": 6, "title": name, "missing": True})
        query = {"normalized": normalized, "redirects": redirects, "pages": pages}
        return {"batchcomplete": True, "query": query}

    # -- uploads
    def _file(self, title: str) -> None:
        fake = self.fake
        fault = fake.pop_fault(fake.faults.get(title))
        range_header = self.headers.get("Range")
        entry = {"kind": "file", "title": title, "range": range_header, "fault": fault}
        entry.update(ua=self.headers.get("User-Agent", ""), t=time.monotonic())
        fake.log.append(entry)
        data = fake.files.get(title)
        if data is None:
            return self._send(404, HTML_ERROR, "text/html; charset=utf-8")
        if fault == "reset":
            return self._reset()
        if fault in ("429", "503"):
            headers = {"Retry-After": fake.retry_after} if fault == "429" else {}
            return self._send(int(fault), b"busy", "text/plain", headers)
        if fault == "html":
            return self._send(200, HTML_ERROR, "text/html; charset=utf-8")
        if fault == "html_as_image":
            return self._send(200, HTML_ERROR, "image/jpeg")
        if fault == "notimage":
            return self._send(200, bytes(len(data)), "image/jpeg")
        if fault == "slow":
            time.sleep(fake.slow_s)  # the client has given up by now; the write below fails
        if fault == "badsha":  # same length, one byte flipped: only the checksum can tell
            mid = len(data) // 2
            data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and fault != "norange":
            start = int(match.group(1))
            if start >= len(data):
                headers = {"Content-Range": f"bytes */{len(data)}"}
                return self._send(416, b"", "text/plain", headers)
        body = data[start:]
        self.send_response(206 if match and fault != "norange" else 200)
        self.send_header("Content-Type", "image/jpeg" if data[:2] == b"\xff\xd8" else "image/png")
        if fault.startswith("len:"):
            self.send_header("Content-Length", fault[len("len:") :])
        elif fault != "nolen_truncate":
            self.send_header("Content-Length", str(len(body)))
        if match and fault != "norange":
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        if fault in ("truncate", "nolen_truncate"):
            self.wfile.write(body[: len(body) // 2])
            return  # HTTP/1.0: the connection closes here, half-way through the body
        if fault == "drip":  # never slower than a socket timeout: only a deadline ends it
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(fake.drip_s)
            return
        if fault == "trickle":
            step, pause = fake.trickle
            for i in range(0, len(body), step):
                self.wfile.write(body[i : i + step])
                time.sleep(pause)
            return
        self.wfile.write(body)
