"""Wikimedia Commons image lists and a resumable, verified downloader (stdlib HTTP only).

    python -m srlib.commons list --contact you@example.org   # writes data/valued/valued_images.tsv
    python -m srlib.commons download data/valued/valued_images.tsv   # into data/valued/images/
    python -m srlib.commons download data/valued/link_list.txt   # the seed's lists work as they are

A list is a UTF-8 text file; every line is recognised on its own:
  - a TSV row under a header whose first column is "title" (what `list` writes, see COLUMNS),
  - a file-page URL  https://commons.wikimedia.org/wiki/File:Name.jpg  (resolved to its upload
    URL, size and SHA-1 through the API, 50 titles per request, so the download can be verified),
  - a direct upload URL  https://upload.wikimedia.org/wikipedia/commons/a/ab/Name.jpg  (fetched
    as is; with no SHA-1 known the file is checked by magic bytes and a full PIL decode instead),
  - a bare title   File:Name.jpg   (resolved like a file-page URL),
  - blank lines and lines starting with "#" are ignored.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import email.utils
import hashlib
import json
import math
import os
import random
import re
import sys
import threading
import time
import unicodedata
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.client import HTTPException
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from srlib import __version__
from srlib.io import atomic_write, pixel_limit

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, so one downloader per folder is up to the user
    fcntl = None

__all__ = [
    "API_URL",
    "COLUMNS",
    "CommonsError",
    "Item",
    "Summary",
    "build_list",
    "download",
    "iter_category",
    "main",
    "parse_list",
    "resolve_titles",
    "safe_name",
    "write_list",
]

API_URL = "https://commons.wikimedia.org/w/api.php"
DEFAULT_CATEGORY = "Category:Valued images"
DEFAULT_LIST = Path("data/valued/valued_images.tsv")
DEFAULT_OUT = Path("data/valued/images")
DEFAULT_MIMES = ("image/jpeg", "image/png")
DEFAULT_FORMATS = ("jpeg", "png")
DEFAULT_MAX_BYTES = 256 * 2**20
# Seconds one file may take, all attempts together: `timeout` bounds each socket read only, and
# a server dripping a byte a second never trips it. What arrived stays in the partial file.
DEFAULT_DEADLINE = 600.0
COLUMNS = (
    "title",
    "url",
    "size",
    "width",
    "height",
    "mime",
    "sha1",
    "license",
    "license_url",
    "artist",
    "description_url",
)
BATCH = 50  # titles per API request: the limit for clients without the apihighlimits right
CHUNK = 64 * 1024
SNIFF_BYTES = 16  # what _sniff and _looks_like_page need to tell an image from an error page
MAX_NAME_BYTES = 200  # most file systems allow 255 bytes; leave room for ".<name>.partial"
MAX_RETRY_AFTER = 600.0  # a server asking for a longer pause than this makes us give up instead
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
LOCK_NAME = ".srlib-download.lock"
_EXT_FORMAT = {".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".png": "png", ".gif": "gif"}
_EXT_FORMAT |= {".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
_MIME_FORMAT = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif"}
_MIME_FORMAT |= {"image/webp": "webp", "image/tiff": "tiff"}
_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "tiff": "TIFF"}
_FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff"}  # what people type for --formats


class CommonsError(RuntimeError):
    """The API or the output folder cannot be used (not a per-file failure)."""


@dataclass
class Item:
    """One Commons file and what a list knows about it (empty string / None = unknown)."""

    title: str  # "File:Name.jpg"
    url: str = ""  # direct upload URL; empty until resolved through the API
    size: int | None = None  # bytes
    width: int | None = None
    height: int | None = None
    mime: str = ""
    sha1: str = ""  # hex, as the API gives it
    license: str = ""
    license_url: str = ""
    artist: str = ""  # plain text, HTML stripped
    description_url: str = ""
    line: str = field(default="", repr=False, compare=False)  # input line, for failure lists
    header: str = field(default="", repr=False, compare=False)  # its TSV header, if any


@dataclass
class Summary:
    """What a download run did; `failed` holds (title, reason)."""

    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already present and verified
    filtered: list[str] = field(default_factory=list)  # format not allowed, never fetched
    failed: list[tuple[str, str]] = field(default_factory=list)  # incl. refused: over a limit
    nbytes: int = 0  # bytes received in this run
    failures_path: Path | None = None

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failed

    def __str__(self) -> str:
        lines = [
            f"downloaded {len(self.downloaded)} ({self.nbytes / 2**20:.1f} MiB), "
            f"already done {len(self.skipped)}, filtered out {len(self.filtered)}, "
            f"failed {len(self.failed)}"
        ]
        lines += [f"  FAILED {title}: {reason}" for title, reason in self.failed[:50]]
        if len(self.failed) > 50:
            lines.append(f"  ... and {len(self.failed) - 50} more")
        if self.failures_path is not None:
            lines.append(f"failure list: {self.failures_path} (pass it to `download` to retry)")
        return "\n".join(lines)


# ---------------------------------------------------------------- HTTP with etiquette and retries


class _Interrupted(Exception):
    """The run was stopped (Ctrl-C); partial files stay for the next run."""


class _Http:
    """urllib for http(s) only, with our User-Agent, a timeout and a pause shared by all workers."""

    def __init__(
        self,
        contact: str | None,
        timeout: float,
        retries: int,
        base_delay: float,
        max_delay: float,
        stop: threading.Event | None = None,
    ) -> None:
        contact = contact or os.environ.get("SRLIB_CONTACT", "")
        if not contact:
            # Wikimedia's User-Agent policy asks for a way to reach the operator of a client.
            warnings.warn(
                "no contact set for the User-Agent: pass --contact or set SRLIB_CONTACT "
                "(an e-mail or a user page); Wikimedia may throttle or block anonymous clients",
                stacklevel=3,
            )
            contact = "contact unset"
        py = f"{sys.version_info[0]}.{sys.version_info[1]}"
        self.user_agent = f"srlib/{__version__} ({contact}) python-urllib/{py}"
        self.timeout, self.retries = timeout, retries
        self.base_delay, self.max_delay = base_delay, max_delay
        self.stop = stop or threading.Event()
        self._pause_until = 0.0
        self._lock = threading.Lock()
        # No FileHandler / FTPHandler: a list line or a redirect can never read local files.
        self._opener = urllib.request.OpenerDirector()
        for handler in (
            urllib.request.ProxyHandler(),
            urllib.request.HTTPHandler(),
            urllib.request.HTTPSHandler(),
            urllib.request.HTTPRedirectHandler(),
            urllib.request.HTTPDefaultErrorHandler(),
            urllib.request.HTTPErrorProcessor(),
        ):
            self._opener.add_handler(handler)

    def open(self, url: str, headers: dict[str, str] | None = None, data: bytes | None = None):
        """Send one request once any shared pause is over; HTTP errors raise HTTPError."""
        while (wait := self._pause_until - time.monotonic()) > 0:
            self.sleep(wait)
        req = urllib.request.Request(url, data=data, headers={"User-Agent": self.user_agent})
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        return self._opener.open(req, timeout=self.timeout)

    def pause(self, seconds: float) -> None:
        """Hold every worker's next request for `seconds` (a 429/503 is about the whole client)."""
        with self._lock:
            self._pause_until = max(self._pause_until, time.monotonic() + seconds)

    def sleep(self, seconds: float) -> None:
        """Sleep, but wake up and raise at once when the run is stopped."""
        if self.stop.wait(max(0.0, seconds)):
            raise _Interrupted

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so parallel workers do not retry in lockstep."""
        return min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1.5)


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(err: BaseException) -> str:
    """Short reason text for a network error."""
    if isinstance(err, urllib.error.URLError) and not isinstance(err, urllib.error.HTTPError):
        err = err.reason if isinstance(err.reason, BaseException) else err
    if isinstance(err, TimeoutError):
        return "timed out"
    return f"{type(err).__name__}: {err}".rstrip(": ")


# ----------------------------------------------------------------------------- MediaWiki API


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def strip_html(text: str) -> str:
    """Plain text of an HTML fragment (extmetadata Artist is HTML), whitespace collapsed."""
    parser = _Text()
    parser.feed(text)
    parser.close()
    return " ".join("".join(parser.parts).split())


def _api_query(http: _Http, api: str, params: dict[str, str]) -> dict:
    """One action=query request with maxlag=5, retried on lag, 429/5xx and network errors."""
    params = {"action": "query", "format": "json", "formatversion": "2", "maxlag": "5", **params}
    body = urllib.parse.urlencode(params)
    last = ""
    for attempt in range(http.retries + 1):
        delay = None
        try:
            # 50 long unicode titles can make a URL too long for the servers; POST is accepted.
            if len(body) > 2000:
                resp = http.open(api, data=body.encode())
            else:
                resp = http.open(f"{api}?{body}")
            with resp:
                data = json.loads(resp.read().decode("utf-8"))
                retry_after = _retry_after(resp.headers)
        except urllib.error.HTTPError as e:
            delay = _retry_after(e.headers)
            e.close()
            if e.code not in RETRY_STATUS:
                raise CommonsError(f"API answered HTTP {e.code} ({api})") from None
            last = f"HTTP {e.code}"
        # (HTTPException by name: the parameter `http` hides the http package here.)
        except (OSError, HTTPException, ValueError) as e:  # timeouts, resets, bad JSON
            last = _describe(e)
        else:
            error = data.get("error") if isinstance(data, dict) else {"code": "not a JSON object"}
            if not error:
                return data
            code = error.get("code", "")
            if code not in ("maxlag", "ratelimited"):
                raise CommonsError(f"API error {code}: {error.get('info', '')}")
            # The maxlag manual: wait for Retry-After (or at least 5 s) before trying again.
            last, delay = f"API {code}", retry_after if retry_after is not None else 5.0
        if attempt == http.retries:
            break
        if delay is not None and delay > MAX_RETRY_AFTER:
            raise CommonsError(f"API asked to wait {delay:.0f} s ({last}); try again later")
        http.sleep(http.backoff(attempt) if delay is None else delay)
    raise CommonsError(f"API request failed after {http.retries + 1} attempts: {last}")


def _imageinfo_params() -> dict[str, str]:
    return {
        "prop": "imageinfo",
        "iiprop": "url|size|mime|sha1|extmetadata",
        "iiextmetadatafilter": "LicenseShortName|LicenseUrl|Artist",
    }


def _pages(data: dict) -> list[dict]:
    pages = data.get("query", {}).get("pages", [])
    return list(pages.values()) if isinstance(pages, dict) else list(pages)  # formatversion 1 / 2


def _item_from_page(page: dict) -> Item | None:
    """An Item from an API page with imageinfo, or None when the page has none (yet)."""
    infos = page.get("imageinfo") or []
    if not infos or "url" not in infos[0]:
        return None
    info, meta = infos[0], infos[0].get("extmetadata") or {}

    def ext(key: str) -> str:
        return strip_html(str((meta.get(key) or {}).get("value", "")))

    return Item(
        title=page["title"],
        url=info["url"],
        size=_int(info.get("size")),
        width=_int(info.get("width")),
        height=_int(info.get("height")),
        mime=info.get("mime", ""),
        sha1=info.get("sha1", "").lower(),
        license=ext("LicenseShortName"),
        license_url=ext("LicenseUrl"),
        artist=ext("Artist"),
        description_url=info.get("descriptionurl", ""),
    )


def _category_title(name: str) -> str:
    name = " ".join(name.replace("_", " ").split())
    return name if name.lower().startswith("category:") else f"Category:{name}"


def iter_category(
    category: str = DEFAULT_CATEGORY, *, api: str = API_URL, http: _Http | None = None
) -> Iterator[Item]:
    """Yield the files directly in a category (not its subcategories), 50 per API request."""
    http = http or _Http(None, 30.0, 5, 1.0, 60.0)
    base = {
        "generator": "categorymembers",
        "gcmtitle": _category_title(category),
        "gcmtype": "file",
        "gcmlimit": str(BATCH),
        **_imageinfo_params(),
    }
    seen: set[str] = set()
    cont: dict[str, str] = {}
    while True:
        data = _api_query(http, api, {**base, **cont})
        # With prop continuation (iicontinue) a page can come back first without imageinfo and
        # again later with it, so pages are matched by title rather than taken once.
        for page in _pages(data):
            item = _item_from_page(page)
            if item is not None and item.title not in seen:
                seen.add(item.title)
                yield item
        if "continue" not in data:
            return
        cont = {k: str(v) for k, v in data["continue"].items()}


def resolve_titles(
    titles: Sequence[str], *, api: str = API_URL, http: _Http | None = None
) -> dict[str, Item]:
    """Image info for file titles, 50 per request, following redirects; missing ones left out."""
    http = http or _Http(None, 30.0, 5, 1.0, 60.0)
    found: dict[str, Item] = {}
    for start in range(0, len(titles), BATCH):
        batch = list(titles[start : start + BATCH])
        # redirects=1: files renamed since a list was made leave a redirect at the old title.
        base = {"titles": "|".join(batch), "redirects": "1", **_imageinfo_params()}
        by_title: dict[str, Item] = {}
        renamed: dict[str, str] = {}
        cont: dict[str, str] = {}
        while True:
            data = _api_query(http, api, {**base, **cont})
            query = data.get("query", {})
            for entry in query.get("normalized", []) + query.get("redirects", []):
                renamed[entry["from"]] = entry["to"]
            for page in _pages(data):
                item = _item_from_page(page)
                if item is not None:
                    by_title.setdefault(item.title, item)
            if "continue" not in data:
                break
            cont = {k: str(v) for k, v in data["continue"].items()}
        for title in batch:
            final = renamed.get(title, title)
            final = renamed.get(final, final)  # normalised, then redirected
            if final in by_title:
                found[title] = by_title[final]
    return found


# ------------------------------------------------------------------------------ list files


def _clean(value: object) -> str:
    return "" if value is None else " ".join(str(value).split())  # no tabs or newlines in a cell


def _tsv_row(item: Item) -> str:
    return "\t".join(_clean(getattr(item, name)) for name in COLUMNS)


def write_list(items: Iterable[Item], path: str | os.PathLike) -> Path:
    """Write items as our TSV (header + one row per file), atomically."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for item in items:
            f.write(_tsv_row(item) + "\n")
    return path


def _iter_listed(path: str | os.PathLike, api: str, http: _Http) -> Iterator[Item]:
    """The files a list names, as the API describes them now (renamed ones: current title)."""
    titles = list(dict.fromkeys(item.title for item in parse_list(path)))
    found = resolve_titles(titles, api=api, http=http)
    missing = [title for title in titles if title not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        _log(f"{len(missing)} of {len(titles)} files in {path} are not on Commons: {shown}")
    yield from (found[title] for title in titles if title in found)


def build_list(
    out: str | os.PathLike = DEFAULT_LIST,
    categories: Sequence[str] = (DEFAULT_CATEGORY,),
    *,
    from_list: str | os.PathLike | None = None,
    api: str = API_URL,
    contact: str | None = None,
    max_files: int | None = None,
    min_side: int = 0,
    mimes: Sequence[str] | None = DEFAULT_MIMES,
    timeout: float = 30.0,
    retries: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    progress: bool | None = None,
) -> list[Item]:
    """List the files of categories (or named in `from_list`) through the API into a TSV."""
    http = _Http(contact, timeout, retries, base_delay, max_delay)
    items: list[Item] = []
    titles: set[str] = set()
    sources = [from_list] if from_list is not None else categories
    with tqdm(unit="file", desc="listing", disable=_no_bars(progress)) as bar:
        for source in sources:
            if from_list is not None:
                found = _iter_listed(source, api, http)
            else:
                found = iter_category(source, api=api, http=http)
            for item in found:
                if item.title in titles or (mimes and item.mime not in mimes):
                    continue
                if min_side and min(item.width or 0, item.height or 0) < min_side:
                    continue
                titles.add(item.title)
                items.append(item)
                bar.update(1)
                if max_files is not None and len(items) >= max_files:
                    break  # closing the generator stops the API requests
            if max_files is not None and len(items) >= max_files:
                break
    write_list(items, out)
    return items


def _int(value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return int(value)


def _file_title(text: str) -> str:
    """'File:Name.jpg' from a decoded title with or without namespace, underscores or spaces."""
    text = " ".join(text.replace("_", " ").split())
    namespace, sep, rest = text.partition(":")
    if sep and namespace.lower() in ("file", "image"):
        text = rest.strip()
    if not text:
        raise ValueError("empty file title")
    return f"File:{text}"


def _quote_url(url: str) -> str:
    """Percent-encode what is not ASCII-safe in a URL, leaving existing %XX escapes alone."""
    return urllib.parse.quote(url, safe="%/:=&?~#+!$,;'@()*[]")


def _item_from_ref(text: str) -> Item:
    """An Item from a file-page URL, a direct upload URL or a bare File: title."""
    is_url = re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", text)  # file:///x is a URL, not a title
    if not is_url and text.lower().startswith(("file:", "image:")):
        return Item(title=_file_title(text))
    parts = urllib.parse.urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL, TSV row or File: title: {text!r}")
    path = urllib.parse.unquote(parts.path)
    page = re.search(r"/wiki/((?:file|image):.+)$", path, flags=re.IGNORECASE)
    query_title = urllib.parse.parse_qs(parts.query).get("title", [""])[0]
    if page or query_title.lower().startswith(("file:", "image:")):
        return Item(title=_file_title(page.group(1) if page else query_title), description_url=text)
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ValueError(f"URL has no file name: {text!r}")
    name = segments[-1]
    if "thumb" in segments[:-1]:  # .../thumb/a/ab/Name.jpg/800px-Name.jpg -> Name.jpg
        i = segments.index("thumb")
        name = segments[i + 3] if len(segments) > i + 3 else name
    if "archive" in segments[:-1]:  # old versions: .../archive/a/ab/20100101000000!Name.jpg
        name = re.sub(r"^\d{14}!", "", name)  # only the timestamp: "woah!.jpg" is a real title
    return Item(title=_file_title(name), url=_quote_url(text))


def _item_from_cells(cells: dict[str, str]) -> Item:
    """An Item from a TSV row keyed by header names."""
    values = {name: cells.get(name, "").strip() for name in COLUMNS}
    item = Item(
        title=_file_title(values["title"]),
        url=values["url"],
        size=_int(values["size"]),
        width=_int(values["width"]),
        height=_int(values["height"]),
        mime=values["mime"],
        sha1=values["sha1"].lower(),
        license=values["license"],
        license_url=values["license_url"],
        artist=values["artist"],
        description_url=values["description_url"],
    )
    if item.url:
        scheme = urllib.parse.urlsplit(item.url).scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {item.url!r}")
        item.url = _quote_url(item.url)
    if item.sha1 and not re.fullmatch(r"[0-9a-f]{40}", item.sha1):
        raise ValueError(f"bad SHA-1 {item.sha1!r}")
    return item


def parse_list(path: str | os.PathLike) -> list[Item]:
    """Read a list in any of the formats in the module docstring; bad lines raise ValueError."""
    items: list[Item] = []
    header, columns = "", COLUMNS
    text = Path(path).read_text(encoding="utf-8-sig")
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            if "\t" in line:
                cells = line.split("\t")
                if cells[0].strip().lower() == "title":
                    header, columns = line, tuple(c.strip().lower() for c in cells)
                    continue
                item = _item_from_cells(dict(zip(columns, cells, strict=False)))
                item.header = header or "\t".join(COLUMNS)
            else:
                item = _item_from_ref(stripped)
        except ValueError as e:
            raise ValueError(f"{path}:{number}: {e}") from None
        item.line = line
        items.append(item)
    return items


# ---------------------------------------------------------------------------- file names

_UNSAFE = set('<>:"/\\|?*')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{i}" for p in ("COM", "LPT") for i in "123456789"
}


def safe_name(title: str, max_bytes: int = MAX_NAME_BYTES) -> str:
    """A single, portable file name for a Commons title: no separators, no '..', unicode kept."""
    text = unicodedata.normalize("NFC", title)
    text = re.sub(r"^(file|image):", "", text, flags=re.IGNORECASE)
    # Control and format characters (incl. bidi overrides that can fake an extension) go too.
    text = "".join(
        "_" if c in _UNSAFE or c.isspace() or unicodedata.category(c) in ("Cc", "Cf", "Cs") else c
        for c in text
    )
    text = re.sub(r"\.{2,}", ".", text).strip(". ")
    digest = hashlib.sha1(title.encode("utf-8", "surrogatepass")).hexdigest()
    if not text.strip("_"):
        text = f"file_{digest[:10]}"
    stem, ext = os.path.splitext(text)
    if stem.upper() in _WINDOWS_DEVICES:
        text = f"_{text}"
    if len(text.encode()) > max_bytes:
        stem, ext = os.path.splitext(text)
        if len(ext.encode()) > 16:
            stem, ext = text, ""
        budget = max_bytes - len(ext.encode()) - 9
        stem = stem.encode()[:budget].decode("utf-8", "ignore")  # cut on a character boundary
        text = f"{stem}_{digest[:8]}{ext}"  # the digest keeps truncated names distinct
    return text


def _inside(folder: Path, name: str) -> Path:
    """folder/name, refusing anything that would resolve outside folder (e.g. via a symlink)."""
    root = folder.resolve()
    path = (root / name).resolve()
    if path.parent != root or name in ("", ".", ".."):
        raise ValueError(f"file name {name!r} escapes {folder}")
    return root / name


# ------------------------------------------------------------------------------ download


class _Fail(Exception):
    """One attempt at one file failed; `permanent` failures are not retried."""

    def __init__(
        self,
        reason: str,
        permanent: bool = False,
        retry_after: float | None = None,
        status: int = 0,
    ) -> None:
        super().__init__(reason)
        self.reason, self.permanent = reason, permanent
        self.retry_after, self.status = retry_after, status


class _OutOfTime(_Fail):
    """The file's deadline passed: no further attempt, and the partial file stays."""


@dataclass
class _Ctx:
    http: _Http
    max_bytes: int
    max_pixels: int
    formats: tuple[str, ...]
    retries: int
    on_bytes: Callable[[int], None]
    deadline: float | None = DEFAULT_DEADLINE  # seconds per file, all attempts (None: none)


def _sniff(head: bytes) -> str | None:
    """Image format from magic bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def _looks_like_page(head: bytes) -> bool:
    """An HTML or JSON error page (servers and proxies send these with status 200, too)."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype", b"<html", b"<head", b"<body", b"<title", b"{"))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(2**20):
            digest.update(block)
    return digest.hexdigest()


def _verify(path: Path, item: Item, ctx: _Ctx) -> _Fail | None:
    """Why the file at path is not the image the list describes, or None when it is."""
    size = _size(path)
    if size == 0:
        return _Fail("empty file")
    # Size against the list first: a wrong file is fetched again, and only a file that may be
    # the listed one gets the permanent "over the limit" (which keeps an existing file, _fetch).
    if item.size is not None and size != item.size:
        return _Fail(f"size {size} bytes, the list says {item.size}")
    if size > ctx.max_bytes:
        return _Fail(f"{size} bytes is over --max-bytes {ctx.max_bytes}", permanent=True)
    with open(path, "rb") as f:
        head = f.read(16)
    if _looks_like_page(head):
        return _Fail("got an HTML/JSON page instead of an image")
    # Not permanent: a fresh body with a bad start never gets here (_transfer checks it), so the
    # bytes come from an earlier partial or file, and a clean download may well succeed.
    fmt = _sniff(head)
    if fmt is None:
        return _Fail(f"not an image (starts with {head[:8]!r})")
    if fmt not in ctx.formats:
        return _Fail(f"{fmt} is not an allowed format ({', '.join(ctx.formats)})")
    suffix = Path(item.title).suffix.lower()
    if _EXT_FORMAT.get(suffix, fmt) != fmt:  # what opens it by its name would be misled
        return _Fail(f"{fmt} data under a {suffix} name", permanent=True)
    if item.sha1 and _sha1(path) != item.sha1:
        return _Fail("SHA-1 mismatch")
    try:
        with Image.open(path, formats=[_PIL_FORMAT[fmt]]) as im:
            width, height = im.size
            if width * height > ctx.max_pixels:
                return _Fail(
                    f"{width}x{height} pixels is over the limit of {ctx.max_pixels}", permanent=True
                )
            if not item.sha1:
                im.load()  # no checksum to trust: a full decode is what catches truncation
    except Image.DecompressionBombError as e:
        return _Fail(f"decompression bomb: {e}", permanent=True)
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        return _Fail(f"corrupt image: {type(e).__name__}: {e}")
    return None


def _open_partial(path: Path, append: bool):
    """Open the partial file for writing without following a symlink planted under its name."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    # Unbuffered: every chunk is the OS's at once, so even a SIGKILL keeps what arrived.
    return os.fdopen(os.open(path, flags, 0o644), "ab" if append else "wb", buffering=0)


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


def _content_length(value: str | None) -> int | None:
    """Body length from a Content-Length header (None if absent); a malformed one raises _Fail."""
    if value is None:
        return None
    if not re.fullmatch(r"\s*\d+\s*", value):
        # http.client quietly ignores it; we treat it like the server's other broken answers
        # (an HTML page, a wrong resume offset): retried, and reported by name if it persists.
        raise _Fail(f"malformed Content-Length header {value!r}")
    return int(value)


def _transfer(item: Item, partial: Path, ctx: _Ctx, deadline: float = math.inf) -> None:
    """One GET of item.url into `partial`, continuing it with a Range request when it exists.

    `deadline` (time.monotonic()) ends it with _OutOfTime, keeping what arrived in `partial`.
    """
    have = _size(partial)
    if time.monotonic() > deadline:
        raise _OutOfTime(f"over the deadline of {ctx.deadline:g} s per file")
    headers = {"Range": f"bytes={have}-"} if have else {}
    try:
        resp = ctx.http.open(item.url, headers)
    except urllib.error.HTTPError as e:
        retry_after = _retry_after(e.headers)
        e.close()
        if e.code == 416 and have:
            return  # nothing left to send: the partial may be whole already, _verify decides
        permanent = 400 <= e.code < 500 and e.code not in RETRY_STATUS
        raise _Fail(f"HTTP {e.code}", permanent, retry_after, e.code) from None
    except (OSError, HTTPException) as e:
        raise _Fail(_describe(e)) from None
    with resp:
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype.startswith("text/") or ctype in ("application/json", "application/xhtml+xml"):
            raise _Fail(f"got a {ctype} page instead of an image (HTTP {resp.status})")
        length = _content_length(resp.headers.get("Content-Length"))
        if resp.status == 206:
            start = _content_range_start(resp.headers.get("Content-Range"))
            if start != have:
                _unlink(partial)  # cannot tell what we would be appending to: start over
                raise _Fail(f"server resumed at byte {start}, not {have}")
        else:
            have = 0  # 200: the server ignored the Range, so the body is the whole file
        if length is not None and have + length > ctx.max_bytes:
            raise _Fail(f"{have + length} bytes is over --max-bytes {ctx.max_bytes}", True)
        got, out, start = 0, None, b""
        try:
            while True:
                if ctx.http.stop.is_set():
                    raise _Interrupted
                if time.monotonic() > deadline:
                    raise _OutOfTime(f"over the deadline of {ctx.deadline:g} s per file")
                try:
                    # read1: what has arrived (up to CHUNK), not a wait for a full CHUNK, so a
                    # slow server's bytes reach the partial file as they come.
                    chunk = resp.read1(CHUNK)
                except (OSError, HTTPException) as e:
                    raise _Fail(_describe(e)) from None
                if out is None and have == 0 and chunk and len(start + chunk) < SNIFF_BYTES:
                    start += chunk  # too little yet to tell an image from an error page
                    continue
                chunk, start = start + chunk, b""
                if not chunk:
                    break
                if out is None:
                    if have == 0:  # check the start before truncating what we already have
                        if _looks_like_page(chunk):
                            raise _Fail(f"got an HTML/JSON page instead of an image ({ctype})")
                        if _sniff(chunk) not in ctx.formats:
                            reason = f"not an allowed image (starts with {chunk[:8]!r})"
                            raise _Fail(reason, permanent=True)
                    out = _open_partial(partial, append=have > 0)
                out.write(chunk)
                got += len(chunk)
                ctx.on_bytes(len(chunk))
                if have + got > ctx.max_bytes:
                    raise _Fail(f"more than --max-bytes {ctx.max_bytes} bytes", permanent=True)
        finally:
            if out is not None:
                out.flush()
                os.fsync(out.fileno())  # what _verify reads and os.replace publishes is on disk
                out.close()
    if length is not None and got < length:
        # http.client does not raise for a short body read in chunks; the partial stays for Range.
        raise _Fail(f"connection dropped after {have + got} of {have + length} bytes")


def _fetch(item: Item, final: Path, ctx: _Ctx) -> str:
    """Make `final` a verified copy of item: 'skipped' if it already was, else 'downloaded'."""
    partial = final.with_name(f".{final.name}.partial")
    if final.exists():
        problem = _verify(final, item, ctx)
        if problem is None:
            return "skipped"
        if problem.permanent:
            # Over this run's --max-bytes / --max-pixels (stricter than the run that fetched it,
            # with a list that does not give size or dimensions): refuse it, but delete nothing.
            raise _Fail(f"{problem.reason} (existing file kept)", permanent=True)
        # Only verified files may keep a final name. As the partial, a file cut short by an
        # earlier tool (the seed's wget loop) is resumed; anything else fails verification.
        _log(f"{final.name}: existing file fails verification ({problem.reason}); fetching again")
        os.replace(final, partial)
    stalled, last = 0, _Fail("no attempt made")
    deadline = time.monotonic() + ctx.deadline if ctx.deadline else math.inf
    # Attempts that add bytes to the partial do not count against `retries` (a flaky line can
    # need many resumes for a large file), but the total number of attempts is still capped.
    for _ in range(4 * (ctx.retries + 1)):
        before = _size(partial)
        try:
            _transfer(item, partial, ctx, deadline)
            problem = _verify(partial, item, ctx)
            if problem is not None:
                _unlink(partial)  # bad bytes: never resume from them
                raise problem
            os.replace(partial, final)  # atomic: the final name only ever holds verified files
            return "downloaded"
        except _Fail as fail:
            if fail.permanent:
                _unlink(partial)
                raise
            if isinstance(fail, _OutOfTime):  # not permanent: the next run resumes
                kept = f"{_size(partial)} of {item.size} bytes" if item.size else "what arrived"
                raise _Fail(f"{fail.reason} ({kept} kept for the next run)") from None
            last = fail
            if _size(partial) <= before:
                stalled += 1
            if stalled > ctx.retries:
                break
            if fail.retry_after is not None and fail.retry_after > MAX_RETRY_AFTER:
                raise _Fail(
                    f"{fail.reason}, server asks to wait {fail.retry_after:.0f} s"
                ) from None
            delay = fail.retry_after
            if delay is None:
                delay = ctx.http.backoff(max(0, stalled - 1))
            delay = min(delay, max(0.0, deadline - time.monotonic()))  # then _OutOfTime
            if fail.status in (429, 503):
                ctx.http.pause(delay)  # rate limits apply to the whole client, not one worker
            else:
                ctx.http.sleep(delay)
    raise _Fail(f"{last.reason} (gave up after {ctx.retries} retries)")


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """One downloader per folder; the OS drops the lock when the process dies, even by SIGKILL."""
    if fcntl is None:
        yield
        return
    with open(folder / LOCK_NAME, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CommonsError(f"another download is already writing to {folder}") from None
        yield


def _no_bars(progress: bool | None) -> bool | None:
    return None if progress is None else not progress  # tqdm: None = only on a terminal


def _log(message: str) -> None:
    tqdm.write(message, file=sys.stderr)


def _format_of(item: Item) -> str | None:
    return _MIME_FORMAT.get(item.mime) or _EXT_FORMAT.get(Path(item.title).suffix.lower())


def _write_failures(path: Path, failed: list[Item]) -> Path | None:
    """The failed items as lines of their input (plus its TSV header), so they can be retried."""
    if not failed:
        _unlink(path)  # a stale list from an earlier run would retry files that are now done
        return None
    lines = [item.line or _tsv_row(item) for item in failed]
    header = next((item.header for item in failed if item.header), "")
    if not header and any(not item.line for item in failed):
        header = "\t".join(COLUMNS)
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(line + "\n" for line in ([header] if header else []) + lines))
    return path


def _failures_path(source: object, folder: Path) -> Path:
    """OUT/failures-<list name>: one per list, so downloading another list keeps this one's."""
    if not isinstance(source, (str, os.PathLike)):
        return folder / "failures.tsv"
    name = Path(source).name
    # A failure list being retried keeps its name: it is rewritten, or removed once all is done.
    return folder / (name if name.startswith("failures") else f"failures-{name}")


def _plan(
    items: list[Item],
    folder: Path,
    ctx: _Ctx,
    api: str,
    summary: Summary,
    fail: Callable[[Item, str], None],
) -> list[tuple[Item, Path]]:
    """Drop duplicates and other formats, resolve titles, check limits, name the target files."""
    todo, listed = [], set()
    for item in items:
        if item.title not in listed:  # the seed lists repeat a few titles
            listed.add(item.title)
            todo.append(item)
    unresolved = [item for item in todo if not item.url and _format_of(item) in ctx.formats]
    reason = "not found on Commons (missing or deleted file)"
    if unresolved:
        try:
            found = resolve_titles([i.title for i in unresolved], api=api, http=ctx.http)
        except CommonsError as e:
            found, reason = {}, f"could not resolve through the API: {e}"
        for item in unresolved:
            if info := found.get(item.title):
                for name in COLUMNS:
                    if not getattr(item, name) or name == "title":  # renamed: use the new title
                        setattr(item, name, getattr(info, name))
    jobs: list[tuple[Item, Path]] = []
    names: set[str] = set()
    planned: set[str] = set()
    for item in todo:
        pixels = (item.width or 0) * (item.height or 0)
        if _format_of(item) not in ctx.formats:
            summary.filtered.append(item.title)
        elif item.title in planned:  # an old title redirecting to a file that is listed too
            continue
        elif not item.url:
            fail(item, reason)
        elif item.size is not None and item.size > ctx.max_bytes:
            fail(item, f"{item.size} bytes is over --max-bytes {ctx.max_bytes}")
        elif pixels > ctx.max_pixels:
            fail(item, f"{item.width}x{item.height} pixels is over the limit of {ctx.max_pixels}")
        else:
            planned.add(item.title)
            name = safe_name(item.title)
            if name.casefold() in names:  # distinct titles, same name once sanitised / casefolded
                stem, ext = os.path.splitext(name)
                name = f"{stem}_{hashlib.sha1(item.title.encode()).hexdigest()[:8]}{ext}"
            names.add(name.casefold())
            try:
                jobs.append((item, _inside(folder, name)))
            except ValueError as e:  # e.g. a symlink under that name pointing elsewhere
                fail(item, str(e))
    return jobs


def _check_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """Format names as `_sniff` gives them (jpg -> jpeg, tif -> tiff); unknown ones raise."""
    if isinstance(formats, str):
        formats = formats.split(",")  # "jpeg,png", as on the command line
    names = [name.strip().lower() for name in formats if name.strip()]
    unknown = [name for name in names if _FORMAT_ALIASES.get(name, name) not in _PIL_FORMAT]
    if unknown or not names:
        valid = f"valid: {', '.join(_PIL_FORMAT)} (or {', '.join(_FORMAT_ALIASES)})"
        what = f"unknown image format {', '.join(map(repr, unknown))}" if unknown else "no format"
        raise ValueError(f"{what}; {valid}")
    return tuple(dict.fromkeys(_FORMAT_ALIASES.get(name, name) for name in names))


def _pil_pixel_limit(max_pixels: int) -> contextlib.AbstractContextManager:
    """Raise PIL's decompression-bomb limit to max_pixels while inside; never lower it."""
    before = Image.MAX_IMAGE_PIXELS
    # Explicit raise so PIL's own bomb check does not reject what the user allowed (_verify
    # enforces max_pixels itself); it is process-wide, so it goes back on the way out.
    return pixel_limit(before if before is None else max(before, max_pixels))


def download(
    source: str | os.PathLike | Iterable[Item],
    out: str | os.PathLike = DEFAULT_OUT,
    *,
    workers: int = 4,
    api: str = API_URL,
    contact: str | None = None,
    timeout: float = 30.0,
    retries: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int | None = None,
    formats: str | Sequence[str] = DEFAULT_FORMATS,
    failures: str | os.PathLike | None = None,
    progress: bool | None = None,
    deadline: float | None = DEFAULT_DEADLINE,
) -> Summary:
    """Download a list (path or Items) into `out`, resuming and verifying; see the module doc.

    `timeout` bounds each request's connect and socket reads; `deadline` (None: none) each
    file, all its attempts together: a file still unfinished then fails, its partial kept.
    """
    formats = _check_formats(formats)  # before anything is read or created
    if deadline is not None and not 0 < deadline < math.inf:
        raise ValueError(f"deadline must be > 0 seconds (or None), got {deadline}")
    is_path = isinstance(source, (str, os.PathLike))
    items = parse_list(source) if is_path else [dataclasses.replace(i) for i in source]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    failures_path = Path(failures) if failures is not None else _failures_path(source, folder)
    if max_pixels is None:
        max_pixels = Image.MAX_IMAGE_PIXELS
    http = _Http(contact, timeout, retries, base_delay, max_delay)
    summary = Summary()
    failed: list[Item] = []

    def fail(item: Item, reason: str) -> None:
        summary.failed.append((item.title, reason))
        failed.append(item)

    ctx = _Ctx(http, max_bytes, max_pixels, formats, retries, lambda n: None, deadline)
    with _pil_pixel_limit(max_pixels), _folder_lock(folder):
        jobs = _plan(items, folder, ctx, api, summary, fail)
        known = [item.size for item, _ in jobs]
        files_bar = tqdm(total=len(jobs), unit="file", desc="files", disable=_no_bars(progress))
        bytes_bar = tqdm(
            total=sum(known) if None not in known else None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="bytes",
            disable=_no_bars(progress),
        )
        lock = threading.Lock()

        def on_bytes(n: int) -> None:
            with lock:
                summary.nbytes += n
                bytes_bar.update(n)

        ctx.on_bytes = on_bytes

        def run(job: tuple[Item, Path]) -> tuple[Item, str, str]:
            try:
                return job[0], _fetch(job[0], job[1], ctx), ""
            except _Fail as e:
                return job[0], "failed", e.reason
            except _Interrupted:
                return job[0], "failed", "interrupted (partial file kept for the next run)"
            except Exception as e:  # a bug or a full disk must not take the other files down
                return job[0], "failed", f"unexpected {type(e).__name__}: {e}"

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            futures = [pool.submit(run, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    item, status, reason = future.result()
                    with lock:
                        if status == "failed":
                            fail(item, reason)
                        elif status == "skipped":
                            summary.skipped.append(item.title)
                            if bytes_bar.total is not None and item.size is not None:
                                bytes_bar.total -= item.size
                                bytes_bar.refresh()
                        else:
                            summary.downloaded.append(item.title)
                        files_bar.update(1)
            except KeyboardInterrupt:
                http.stop.set()  # workers stop at the next chunk; partial files stay
                for future in futures:
                    future.cancel()
                raise
            finally:
                files_bar.close()
                bytes_bar.close()
    summary.failures_path = _write_failures(failures_path, failed)
    return summary


# ------------------------------------------------------------------------------------- CLI


def _formats_arg(text: str) -> tuple[str, ...]:
    try:
        return _check_formats(text)
    except ValueError as e:  # argparse shows it with the usage line and exits with status 2
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m srlib.commons", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--api", default=API_URL, help="MediaWiki API endpoint (default: Commons)")
        p.add_argument(
            "--contact", default=None, help="contact for the User-Agent (or env SRLIB_CONTACT)"
        )
        p.add_argument(
            "--timeout", type=float, default=30.0, help="per-request connect/read timeout, s"
        )
        p.add_argument("--retries", type=int, default=5, help="retries per request or file")
        p.add_argument("--base-delay", type=float, default=1.0, help="first backoff delay, s")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser("list", help="list a category's files into a TSV", formatter_class=fmt)
    common(p)
    p.add_argument(
        "--category",
        action="append",
        help=f"category to list, repeatable (default: {DEFAULT_CATEGORY!r}); "
        "only files directly in it, so name subcategories explicitly",
    )
    p.add_argument(
        "--from",
        dest="from_list",
        type=Path,
        default=None,
        help="instead of categories, the files named in this list (e.g. data/valued/link_list.txt)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_LIST, help="TSV to write")
    p.add_argument("--max-files", type=int, default=None, help="stop after this many files")
    p.add_argument("--min-side", type=int, default=0, help="drop images with a shorter side")
    p.add_argument(
        "--mime",
        action="append",
        help=f"allowed MIME type, repeatable (default: {' '.join(DEFAULT_MIMES)}; 'any' for all)",
    )

    p = sub.add_parser("download", help="download a list into a folder", formatter_class=fmt)
    common(p)
    p.add_argument("list", type=Path, help="our TSV, or file-page / upload URLs, one per line")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="target folder")
    p.add_argument("--workers", type=int, default=4, help="parallel downloads")
    p.add_argument("--max-delay", type=float, default=60.0, help="longest backoff delay, s")
    p.add_argument(
        "--deadline",
        type=float,
        default=DEFAULT_DEADLINE,
        help="longest time for one file, all attempts, s; what arrived is kept to resume",
    )
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest file, bytes")
    p.add_argument(
        "--max-pixels", type=int, default=None, help="largest width*height [PIL's limit]"
    )
    p.add_argument(
        "--formats",
        type=_formats_arg,
        default=",".join(DEFAULT_FORMATS),
        help="allowed formats, comma-separated (jpeg,png,gif,webp,tiff; jpg and tif work too)",
    )
    p.add_argument(
        "--failures", type=Path, default=None, help="failure list [OUT/failures-<list name>]"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    progress = False if args.no_progress else None
    try:
        if args.command == "list":
            if args.category and args.from_list:
                raise ValueError("give --category or --from, not both")
            mimes = args.mime or list(DEFAULT_MIMES)
            items = build_list(
                args.out,
                args.category or [DEFAULT_CATEGORY],
                from_list=args.from_list,
                api=args.api,
                contact=args.contact,
                max_files=args.max_files,
                min_side=args.min_side,
                mimes=None if "any" in mimes else mimes,
                timeout=args.timeout,
                retries=args.retries,
                base_delay=args.base_delay,
                progress=progress,
            )
            total = sum(item.size or 0 for item in items)
            print(f"wrote {len(items)} files ({total / 2**30:.2f} GiB) to {args.out}")
            return 0
        summary = download(
            args.list,
            args.out,
            workers=args.workers,
            api=args.api,
            contact=args.contact,
            timeout=args.timeout,
            retries=args.retries,
            base_delay=args.base_delay,
            max_delay=args.max_delay,
            max_bytes=args.max_bytes,
            max_pixels=args.max_pixels,
            formats=args.formats,
            failures=args.failures,
            progress=progress,
            deadline=args.deadline,
        )
        print(summary)
        return 0 if summary.ok else 1
    except (CommonsError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted: partial files are kept, run the same command to resume", file=sys.stderr
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
