"""Resumable, verified, polite downloads of a list of Commons files into one folder.

`download` fetches what a list names (see srlib.datasets.api for the list formats). A file
appears under its final name only once verified (size and SHA-1 when the list has them, magic
bytes, no error page, pixel count, a full decode when no SHA-1 is known); until then its bytes
live in `OUT/.<name>.partial`, which the next run continues with an HTTP Range request. One
downloader per folder (a lock file), a deadline per file, a 429 or 503 pauses every worker,
file names never leave the folder, and what failed is written to a list `download` takes again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import os
import re
import threading
import time
import unicodedata
import urllib.error
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from srlib.datasets.api import (
    API_URL,
    COLUMNS,
    MAX_RETRY_AFTER,
    RETRY_STATUS,
    CommonsError,
    Http,
    Interrupted,
    Item,
    describe_error,
    log,
    no_bars,
    parse_list,
    resolve_titles,
    retry_after_seconds,
    tsv_row,
)
from srlib.io import atomic_write, pixel_limit

try:
    import fcntl
except ImportError:  # Windows: no advisory lock, so one downloader per folder is up to the user
    fcntl = None

DEFAULT_OUT = Path("data/valued/images")
DEFAULT_FORMATS = ("jpeg", "png")
DEFAULT_MAX_BYTES = 256 * 2**20
# Seconds one file may take, all attempts together: `timeout` bounds each socket read only, and
# a server dripping a byte a second never trips it. What arrived stays in the partial file.
DEFAULT_DEADLINE = 600.0
CHUNK = 64 * 1024
SNIFF_BYTES = 16  # what _sniff and _looks_like_page need to tell an image from an error page
MAX_NAME_BYTES = 200  # most file systems allow 255 bytes; leave room for ".<name>.partial"
LOCK_NAME = ".srlib-download.lock"
_EXT_FORMAT = {".jpg": "jpeg", ".jpeg": "jpeg", ".jpe": "jpeg", ".png": "png", ".gif": "gif"}
_EXT_FORMAT |= {".webp": "webp", ".tif": "tiff", ".tiff": "tiff"}
_MIME_FORMAT = {"image/jpeg": "jpeg", "image/png": "png", "image/gif": "gif"}
_MIME_FORMAT |= {"image/webp": "webp", "image/tiff": "tiff"}
_PIL_FORMAT = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP", "tiff": "TIFF"}
_FORMAT_ALIASES = {"jpg": "jpeg", "jpe": "jpeg", "tif": "tiff"}  # what people type for --formats


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
    http: Http
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
        retry_after = retry_after_seconds(e.headers)
        e.close()
        if e.code == 416 and have:
            return  # nothing left to send: the partial may be whole already, _verify decides
        permanent = 400 <= e.code < 500 and e.code not in RETRY_STATUS
        raise _Fail(f"HTTP {e.code}", permanent, retry_after, e.code) from None
    except (OSError, HTTPException) as e:
        raise _Fail(describe_error(e)) from None
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
                    raise Interrupted
                if time.monotonic() > deadline:
                    raise _OutOfTime(f"over the deadline of {ctx.deadline:g} s per file")
                try:
                    # read1: what has arrived (up to CHUNK), not a wait for a full CHUNK, so a
                    # slow server's bytes reach the partial file as they come.
                    chunk = resp.read1(CHUNK)
                except (OSError, HTTPException) as e:
                    raise _Fail(describe_error(e)) from None
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
        log(f"{final.name}: existing file fails verification ({problem.reason}); fetching again")
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


def _format_of(item: Item) -> str | None:
    return _MIME_FORMAT.get(item.mime) or _EXT_FORMAT.get(Path(item.title).suffix.lower())


def _write_failures(path: Path, failed: list[Item]) -> Path | None:
    """The failed items as lines of their input (plus its TSV header), so they can be retried."""
    if not failed:
        _unlink(path)  # a stale list from an earlier run would retry files that are now done
        return None
    lines = [item.line or tsv_row(item) for item in failed]
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


def check_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
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
    formats = check_formats(formats)  # before anything is read or created
    if deadline is not None and not 0 < deadline < math.inf:
        raise ValueError(f"deadline must be > 0 seconds (or None), got {deadline}")
    is_path = isinstance(source, (str, os.PathLike))
    items = parse_list(source) if is_path else [dataclasses.replace(i) for i in source]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    failures_path = Path(failures) if failures is not None else _failures_path(source, folder)
    if max_pixels is None:
        max_pixels = Image.MAX_IMAGE_PIXELS
    http = Http(contact, timeout, retries, base_delay, max_delay)
    summary = Summary()
    failed: list[Item] = []

    def fail(item: Item, reason: str) -> None:
        summary.failed.append((item.title, reason))
        failed.append(item)

    ctx = _Ctx(http, max_bytes, max_pixels, formats, retries, lambda n: None, deadline)
    with _pil_pixel_limit(max_pixels), _folder_lock(folder):
        jobs = _plan(items, folder, ctx, api, summary, fail)
        known = [item.size for item, _ in jobs]
        files_bar = tqdm(total=len(jobs), unit="file", desc="files", disable=no_bars(progress))
        bytes_bar = tqdm(
            total=sum(known) if None not in known else None,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="bytes",
            disable=no_bars(progress),
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
            except Interrupted:
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
