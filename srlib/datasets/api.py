"""The MediaWiki API of Wikimedia Commons: a polite HTTP client, file metadata, list files.

`build_list` writes a category's files (or the files a list names) with upload URL, size,
SHA-1 and licence into our TSV; `resolve_titles` gives that metadata for file titles, so that
`srlib.datasets.transfer.download` can verify what it fetches. Stdlib HTTP only.

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

import email.utils
import json
import os
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from html.parser import HTMLParser
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from srlib import __version__
from srlib.io import atomic_write

API_URL = "https://commons.wikimedia.org/w/api.php"
DEFAULT_CATEGORY = "Category:Valued images"
DEFAULT_LIST = Path("data/valued/valued_images.tsv")
DEFAULT_MIMES = ("image/jpeg", "image/png")
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
MAX_RETRY_AFTER = 600.0  # a server asking for a longer pause than this makes us give up instead
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


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


# ---------------------------------------------------------------- HTTP with etiquette and retries


class Interrupted(Exception):
    """The run was stopped (Ctrl-C); partial files stay for the next run."""


class Http:
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
            raise Interrupted

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter, so parallel workers do not retry in lockstep."""
        return min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1.5)


def retry_after_seconds(headers: Message | None) -> float | None:
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


def describe_error(err: BaseException) -> str:
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


def _api_query(http: Http, api: str, params: dict[str, str]) -> dict:
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
                retry_after = retry_after_seconds(resp.headers)
        except urllib.error.HTTPError as e:
            delay = retry_after_seconds(e.headers)
            e.close()
            if e.code not in RETRY_STATUS:
                raise CommonsError(f"API answered HTTP {e.code} ({api})") from None
            last = f"HTTP {e.code}"
        # (HTTPException by name: the parameter `http` hides the http package here.)
        except (OSError, HTTPException, ValueError) as e:  # timeouts, resets, bad JSON
            last = describe_error(e)
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
    category: str = DEFAULT_CATEGORY, *, api: str = API_URL, http: Http | None = None
) -> Iterator[Item]:
    """Yield the files directly in a category (not its subcategories), 50 per API request."""
    http = http or Http(None, 30.0, 5, 1.0, 60.0)
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
    titles: Sequence[str], *, api: str = API_URL, http: Http | None = None
) -> dict[str, Item]:
    """Image info for file titles, 50 per request, following redirects; missing ones left out."""
    http = http or Http(None, 30.0, 5, 1.0, 60.0)
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


def tsv_row(item: Item) -> str:
    """One row of our TSV (the cells in COLUMNS order)."""
    return "\t".join(_clean(getattr(item, name)) for name in COLUMNS)


def write_list(items: Iterable[Item], path: str | os.PathLike) -> Path:
    """Write items as our TSV (header + one row per file), atomically."""
    path = Path(path)
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\t".join(COLUMNS) + "\n")
        for item in items:
            f.write(tsv_row(item) + "\n")
    return path


def _iter_listed(path: str | os.PathLike, api: str, http: Http) -> Iterator[Item]:
    """The files a list names, as the API describes them now (renamed ones: current title)."""
    titles = list(dict.fromkeys(item.title for item in parse_list(path)))
    found = resolve_titles(titles, api=api, http=http)
    missing = [title for title in titles if title not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        log(f"{len(missing)} of {len(titles)} files in {path} are not on Commons: {shown}")
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
    http = Http(contact, timeout, retries, base_delay, max_delay)
    items: list[Item] = []
    titles: set[str] = set()
    sources = [from_list] if from_list is not None else categories
    with tqdm(unit="file", desc="listing", disable=no_bars(progress)) as bar:
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


# ---------------------------------------------------------------------- progress and messages


def no_bars(progress: bool | None) -> bool | None:
    """tqdm's `disable` for a `progress` argument: None shows bars only on a terminal."""
    return None if progress is None else not progress


def log(message: str) -> None:
    """One line on stderr that does not tear the progress bars."""
    tqdm.write(message, file=sys.stderr)
