"""srlib.datasets against a loopback fake of Commons: lists, faults, resume, kill, names."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from PIL import Image

from srlib.datasets import (
    COLUMNS,
    CommonsError,
    Item,
    build_list,
    download,
    main,
    parse_list,
    safe_name,
    transfer,
    write_list,
)

try:
    from tests.datasets._commons_server import FakeCommons, make_image
except ImportError:  # tests/ without __init__.py: pytest puts tests/ itself on sys.path
    from datasets._commons_server import FakeCommons, make_image

REPO = Path(__file__).resolve().parents[2]
CONTACT = "srlib-tests@example.invalid"
# Short timeouts and delays keep the fault tests fast; the fake's slow answer takes 1 s.
FAST = dict(contact=CONTACT, timeout=0.5, retries=3, base_delay=0.01, max_delay=0.05)


@pytest.fixture
def fake(fake_commons):
    return fake_commons


def _sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _item(fake: FakeCommons, title: str, **override) -> Item:
    """The Item our `list` command would write for a file of the fake."""
    data, meta = fake.files[title], fake.meta[title]
    fields = dict(url=fake.url(title), size=len(data), sha1=hashlib.sha1(data).hexdigest())
    fields.update(width=meta["width"], height=meta["height"], mime=meta["mime"])
    fields.update(override)
    return Item(title=title, **fields)


def _add_files(fake: FakeCommons, names: list[str], size=(64, 48)) -> list[str]:
    titles = []
    for i, name in enumerate(names):
        fmt = "PNG" if name.endswith(".png") else "JPEG"
        titles.append(fake.add(f"File:{name}", make_image(*size, fmt, seed=i)))
    return titles


def _assert_clean(out: Path, fake: FakeCommons, expected: list[str]) -> None:
    """Exactly the expected titles are under final names, byte-identical; no partial files."""
    names = {safe_name(t): t for t in expected}
    present = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    present = {name for name in present if not name.startswith("failures")}
    assert present == set(names)
    for name, title in names.items():
        assert _sha1(out / name) == hashlib.sha1(fake.files[title]).hexdigest(), name
    assert not [p.name for p in out.iterdir() if p.name.endswith(".partial")]


# ----------------------------------------------------------------------------- list parsing


def test_parse_list_reads_the_seed_formats(tmp_path):
    # Lines shaped like the seed project's link_list.txt and dl_links*.txt.
    page_urls = [
        "https://commons.wikimedia.org/wiki/File:Anaea_archidona_(Male)_(2).jpg",
        "https://commons.wikimedia.org/wiki/File:Zo%C3%AFsite.jpg",
        "https://commons.wikimedia.org/wiki/File:Harpoceras_%26_Ichtyosaure_(p).jpg",
        "https://commons.wikimedia.org/wiki/File:Singapore_Airlines_Airbus_A380_woah!.jpg",
    ]
    upload_urls = [
        "https://upload.wikimedia.org/wikipedia/commons/d/d2/Zo%C3%AFsite.jpg",
        "https://upload.wikimedia.org/wikipedia/commons/f/f0/20040514_large_hail_5.25%22.jpg",
        "https://upload.wikimedia.org/wikipedia/commons/thumb/6/6b/Herschelite.jpg/800px-Herschelite.jpg",
        "https://upload.wikimedia.org/wikipedia/commons/2/21/Singapore_Airlines_Airbus_A380_woah%21.jpg",
        "https://upload.wikimedia.org/wikipedia/commons/archive/2/21/20100101000000!Zo%C3%AFsite.jpg",
    ]
    path = tmp_path / "links.txt"
    text = "# comment\n\n" + "\r\n".join(page_urls + upload_urls) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    items = parse_list(path)
    assert [i.title for i in items] == [
        "File:Anaea archidona (Male) (2).jpg",
        "File:Zoïsite.jpg",
        "File:Harpoceras & Ichtyosaure (p).jpg",
        "File:Singapore Airlines Airbus A380 woah!.jpg",  # a "!" in a title is no archive mark
        "File:Zoïsite.jpg",
        'File:20040514 large hail 5.25".jpg',
        "File:Herschelite.jpg",
        "File:Singapore Airlines Airbus A380 woah!.jpg",
        "File:Zoïsite.jpg",  # an old version: only the archive timestamp is dropped
    ]
    assert [i.url for i in items[:4]] == [""] * 4  # file pages: resolved later via the API
    assert [i.url for i in items[4:]] == upload_urls  # already encoded: kept byte for byte
    assert [i.line for i in items] == page_urls + upload_urls
    assert safe_name(items[1].title) == "Zoïsite.jpg"
    assert safe_name(items[3].title) == "Singapore_Airlines_Airbus_A380_woah!.jpg"
    assert safe_name(items[5].title) == "20040514_large_hail_5.25_.jpg"


def test_parse_list_tsv_round_trip_and_bad_lines(tmp_path):
    item = Item("File:Zoïsite.jpg", "https://upload.wikimedia.org/x/Zo%C3%AFsite.jpg", 10, 4, 3)
    item.sha1, item.artist = "a" * 40, "Jane\tDoe\nand co"  # tabs/newlines must not break rows
    path = write_list([item], tmp_path / "list.tsv")
    assert path.read_text().splitlines()[0].split("\t") == list(COLUMNS)
    (back,) = parse_list(path)
    assert back == Item(**{**item.__dict__, "artist": "Jane Doe and co"})
    for bad in ("ftp://example.org/a.jpg", "file:///etc/passwd", "just some words"):
        (tmp_path / "bad.txt").write_text(f"File:ok.jpg\n{bad}\n")
        with pytest.raises(ValueError, match=r"bad\.txt:2"):
            parse_list(tmp_path / "bad.txt")
    (tmp_path / "bad.tsv").write_text("title\turl\nFile:a.jpg\tfile:///etc/passwd\n")
    with pytest.raises(ValueError, match="not an http"):
        parse_list(tmp_path / "bad.tsv")


def test_write_list_failing_midway_keeps_the_old_list_and_no_temp_file(tmp_path):
    path = write_list([Item("File:Old.jpg")], tmp_path / "list.tsv")
    before = path.read_bytes()

    def items():
        yield Item("File:New.jpg")
        raise RuntimeError("the API went away")

    with pytest.raises(RuntimeError, match="went away"):
        write_list(items(), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["list.tsv"]  # no temp file left behind


# The seed project's lists shipped in data/valued/: lines, distinct files, jpeg/png files.
SHIPPED = {
    "link_list.txt": (3268, 3265, 3208),
    "dl_links1.txt": (399, 399, 394),
    "dl_links2.txt": (499, 499, 492),
    "dl_links3.txt": (499, 499, 489),
    "dl_links4.txt": (499, 499, 491),
    "dl_links5.txt": (499, 499, 494),
    "dl_links6.txt": (499, 499, 488),
}


def test_shipped_lists_parse_into_safe_distinct_names_as_readme_counts(tmp_path):
    valued = REPO / "data" / "valued"
    readme = (valued / "README.md").read_text(encoding="utf-8")
    assert sorted(p.name for p in valued.glob("*.txt")) == sorted(SHIPPED)
    for list_name, (n_lines, n_files, n_images) in SHIPPED.items():
        items = parse_list(valued / list_name)
        assert len(items) == n_lines, list_name
        if list_name == "link_list.txt":  # file pages, resolved through the API when downloading
            assert all(i.description_url.startswith("https://commons.wikimedia.org/wiki/File:")
                       and not i.url for i in items)  # fmt: skip
        else:
            upload = "https://upload.wikimedia.org/wikipedia/commons/"
            assert all(i.url.startswith(upload) and i.title for i in items)
        titles = list(dict.fromkeys(i.title for i in items))
        images = [t for t in titles if transfer._format_of(Item(t)) in transfer.DEFAULT_FORMATS]
        assert (len(titles), len(images)) == (n_files, n_images), list_name
        names = [safe_name(t) for t in titles]
        assert len({n.casefold() for n in names}) == len(names)  # no two files share a name
        for title, name in zip(titles, names, strict=True):
            assert transfer._inside(tmp_path, name).parent == tmp_path.resolve()
            assert Path(name).suffix == Path(title).suffix  # or find_images would skip it
        row = f"| `{list_name}` | {n_lines:,} | {n_files:,} | {n_images:,} |"
        assert row in readme, f"data/valued/README.md should have the row {row}"


# ---------------------------------------------------------------------------- file names

NASTY = [
    "File:../../etc/passwd",
    "File:..\\..\\Windows\\system32\\evil.jpg",
    "/etc/passwd",
    "File:a/../../b.jpg",
    "File:..",
    "File:.",
    "File:",
    "File:.hidden.jpg",
    "File:evil\x00name\n\r\t.jpg",
    "File:photo\u202egpj.exe",
    "File:CON.jpg",
    "File:" + "é" * 300 + ".jpg",
    'File:a<b>c:d"e|f?g*h.png',
]


@pytest.mark.parametrize("title", NASTY)
def test_safe_name_cannot_escape(title, tmp_path):
    name = safe_name(title)
    assert name and name not in (".", "..") and not name.startswith(".")
    assert "/" not in name and "\\" not in name and ".." not in name
    assert all(ord(c) >= 32 and c not in "\u202e\x7f" for c in name)
    assert len(name.encode()) <= transfer.MAX_NAME_BYTES
    assert transfer._inside(tmp_path, name).parent == tmp_path.resolve()


def test_safe_name_keeps_unicode_and_extensions_distinct(tmp_path):
    assert safe_name("File:Mi-2 Darłowo 2009 .JPG") == "Mi-2_Darłowo_2009_.JPG"
    long_a, long_b = "File:" + "é" * 300 + "a.jpg", "File:" + "é" * 300 + "b.jpg"
    assert safe_name(long_a).endswith(".jpg") and safe_name(long_a) != safe_name(long_b)
    assert safe_name("File:CON.jpg") == "_CON.jpg"
    with pytest.raises(ValueError):
        transfer._inside(tmp_path, "..")
    os.symlink(tmp_path.parent, tmp_path / "link.jpg")  # a planted symlink is refused as well
    with pytest.raises(ValueError, match="escapes"):
        transfer._inside(tmp_path, "link.jpg")


# ------------------------------------------------------------------------------ building lists


def _category(fake: FakeCommons) -> list[str]:
    titles = _add_files(fake, ["A.jpg", "B.png", "C.jpg", "D.jpg", "E.png", "F.jpg"])
    titles.append(fake.add("File:Small.jpg", make_image(30, 20)))
    gif = fake.add("File:Anim.gif", make_image(64, 48, "GIF"))
    return titles + [gif]


def test_build_list_pages_filters_and_is_polite(fake, tmp_path):
    titles = _category(fake)
    fake.api_faults = ["maxlag", "429"]
    fake.retry_after = "0.3"
    out = tmp_path / "valued.tsv"
    items = build_list(out, api=fake.api, min_side=32, progress=False, **FAST)
    want = [t for t in titles if t not in ("File:Small.jpg", "File:Anim.gif")]
    assert [i.title for i in items] == want
    assert parse_list(out) == items  # the file on disk holds what was returned
    assert items[0] == _item(fake, titles[0], license="CC BY-SA 4.0", artist="Jane & Doe",
                             license_url="https://creativecommons.org/licenses/by-sa/4.0",
                             description_url=f"{fake.base}/wiki/File%3AA.jpg")  # fmt: skip
    api = fake.api_requests()
    # 8 members, 3 per answer, each batch in two rounds (iicontinue), plus maxlag and 429 retries.
    assert len(api) == 2 + 3 * 2
    assert sum("iicontinue" in e["params"] for e in api) == 3
    assert sum("gcmcontinue" in e["params"] for e in api) == 4
    for e in api:
        assert e["params"]["maxlag"] == "5" and e["params"]["gcmlimit"] == "50"
        assert e["ua"].startswith(f"srlib/0.1.0 ({CONTACT})")
    # Retry-After honoured after the maxlag error and after the 429.
    assert api[1]["t"] - api[0]["t"] >= 0.3 and api[2]["t"] - api[1]["t"] >= 0.3


def test_build_list_stops_at_max_files_and_cli_writes_tsv(fake, tmp_path, capsys):
    _category(fake)
    items = build_list(tmp_path / "a.tsv", api=fake.api, max_files=2, **FAST)
    assert len(items) == 2 and len(fake.api_requests()) == 1  # no page fetched beyond need
    argv = ["list", "--api", fake.api, "--contact", CONTACT, "--out", str(tmp_path / "b.tsv")]
    assert main(argv + ["--mime", "image/gif", "--no-progress"]) == 0
    assert [i.title for i in parse_list(tmp_path / "b.tsv")] == ["File:Anim.gif"]
    assert "wrote 1 files" in capsys.readouterr().out


def test_list_from_a_seed_list_gives_sizes_and_licences_before_downloading(fake, tmp_path, capsys):
    titles = _add_files(fake, ["Zoïsite.jpg", "Coenophlebia archidona.jpg", "Plain.png"])
    fake.redirects["File:Anaea archidona.jpg"] = "File:Coenophlebia archidona.jpg"  # renamed
    gif = fake.add("File:Anim.gif", make_image(64, 48, "GIF"), category=None)
    page = "https://commons.wikimedia.org/wiki/File:"
    seed = tmp_path / "link_list.txt"
    seed.write_text(
        f"{page}Zo%C3%AFsite.jpg\n{page}Anaea_archidona.jpg\n{fake.url('File:Plain.png')}\n"
        f"{page}Anim.gif\n{page}Gone.jpg\n{fake.url('File:Zoïsite.jpg')}\n"
    )
    tsv = tmp_path / "link_list.tsv"
    argv = ["list", "--from", str(seed), "--out", str(tsv), "--api", fake.api]
    argv += ["--contact", CONTACT, "--no-progress"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "wrote 3 files" in out  # gif: not an allowed MIME type; Gone: not on Commons
    assert f"1 of 5 files in {seed} are not on Commons: File:Gone.jpg" in err
    items = parse_list(tsv)
    assert [i.title for i in items] == titles  # list order, current titles
    assert [(i.size, i.sha1) for i in items] == [
        (len(fake.files[t]), hashlib.sha1(fake.files[t]).hexdigest()) for t in titles
    ]
    assert all(i.license == "CC BY-SA 4.0" and i.artist == "Jane & Doe" for i in items)
    assert not fake.file_requests(titles[0]) and not fake.file_requests(gif)  # nothing fetched
    assert main([*argv, "--category", "Category:X"]) == 2
    assert "give --category or --from, not both" in capsys.readouterr().err
    assert download(tsv, tmp_path / "images", api=fake.api, progress=False, **FAST).ok
    _assert_clean(tmp_path / "images", fake, titles)


def test_contact_comes_from_env_or_a_warning(fake, tmp_path, monkeypatch):
    _category(fake)
    monkeypatch.setenv("SRLIB_CONTACT", "env@example.invalid")
    build_list(tmp_path / "a.tsv", api=fake.api, max_files=1, progress=False)
    assert fake.api_requests()[-1]["ua"].startswith("srlib/0.1.0 (env@example.invalid)")
    monkeypatch.delenv("SRLIB_CONTACT")
    with pytest.warns(UserWarning, match="SRLIB_CONTACT"):
        build_list(tmp_path / "a.tsv", api=fake.api, max_files=1, progress=False)


def test_api_errors_are_clear(fake, tmp_path):
    fake.api_faults = ["503"] * 10
    with pytest.raises(CommonsError, match="after 4 attempts: HTTP 503"):
        build_list(tmp_path / "x.tsv", api=fake.api, **FAST)
    assert not (tmp_path / "x.tsv").exists()


def test_api_connection_resets_are_retried_then_reported_per_file(fake, tmp_path, capsys):
    titles = _add_files(fake, ["Zoïsite.jpg", "Plain.png"])
    listing = tmp_path / "link_list.txt"
    listing.write_text("".join(f"https://commons.wikimedia.org/wiki/{t}\n" for t in titles))
    out = tmp_path / "images"
    argv = ["download", str(listing), "--out", str(out), "--api", fake.api, "--contact", CONTACT]
    argv += ["--retries", "2", "--base-delay", "0.01", "--no-progress"]
    fake.api_faults = ["reset"] * 3  # one more than --retries: the API stays unreachable
    assert main(argv) == 1
    report = capsys.readouterr().out
    assert report.count("could not resolve through the API: API request failed after 3") == 2
    assert (out / "failures-link_list.txt").read_text() == listing.read_text()
    fake.api_faults = ["reset", "reset"]  # transient: the third attempt gets through
    assert main(["download", str(out / "failures-link_list.txt"), *argv[2:]]) == 0
    _assert_clean(out, fake, titles)
    assert not list(out.glob("failures*"))
    fake.api_faults = ["reset"] * 4  # FAST: 3 retries
    with pytest.raises(CommonsError, match="after 4 attempts"):  # `list --from` gives up too
        build_list(tmp_path / "x.tsv", from_list=listing, api=fake.api, **FAST)
    assert not (tmp_path / "x.tsv").exists()


# ------------------------------------------------------------------------------- downloads


def test_download_recovers_from_transient_faults(fake, tmp_path):
    faults = {
        "Reset.jpg": ["reset", "reset"],
        "Limited.jpg": ["429"],
        "Busy.png": ["503", "503"],
        "Truncated.jpg": ["truncate"],
        "Truncated twice.png": ["truncate", "norange"],  # resume refused: restart from 0
        "Bad sha.jpg": ["badsha"],
        "Html.jpg": ["html"],
        "Html as image.png": ["html_as_image"],
        "Slow.jpg": ["slow"],
        "Fine.jpg": [],
    }
    titles = _add_files(fake, list(faults), size=(96, 64))
    for title in titles:
        fake.faults[title] = list(faults[title[5:]])
    fake.retry_after = "0.2"
    listing = write_list([_item(fake, t) for t in titles], tmp_path / "list.tsv")
    out = tmp_path / "images"
    summary = download(listing, out, workers=4, api=fake.api, progress=False, **FAST)
    assert summary.ok and sorted(summary.downloaded) == sorted(titles), summary
    assert summary.failures_path is None and not list(out.glob("failures*"))
    _assert_clean(out, fake, titles)
    # The truncated file was resumed with a Range request answered 206, not fetched twice.
    ranges = [e["range"] for e in fake.file_requests("File:Truncated.jpg")]
    half = len(fake.files["File:Truncated.jpg"]) // 2
    assert ranges == [None, f"bytes={half}-"]
    assert [e["range"] is not None for e in fake.file_requests("File:Truncated twice.png")] == [
        False,
        True,
    ]
    limited = fake.file_requests("File:Limited.jpg")
    assert limited[1]["t"] - limited[0]["t"] >= 0.2  # Retry-After honoured
    assert all(e["ua"].startswith("srlib/") for e in fake.log)
    # A second run verifies what is there and fetches nothing.
    before = len(fake.log)
    again = download(listing, out, api=fake.api, progress=False, **FAST)
    assert again.ok and sorted(again.skipped) == sorted(titles) and len(fake.log) == before


def test_download_permanent_failures_write_a_retry_list(fake, tmp_path, capsys):
    good = _add_files(fake, ["Good 1.jpg", "Good 2.png"])
    bad = {
        "Always bad sha.jpg": ["badsha"] * 20,
        "Always html.jpg": ["html"] * 20,
        "Always reset.png": ["reset"] * 20,
        "Not image.jpg": ["notimage"],
    }
    bad_titles = _add_files(fake, list(bad))
    for title in bad_titles:
        fake.faults[title] = list(bad[title[5:]])
    huge = fake.add("File:Huge.jpg", make_image(64, 48, seed=9))
    wide = fake.add("File:Wide.png", make_image(200, 150, "PNG"))
    items = [_item(fake, t) for t in good + bad_titles]
    items.append(_item(fake, huge, size=10**9))  # the list says too big: never requested
    items.append(_item(fake, wide, width=None, height=None))  # caught after download
    items.append(Item("File:Gone.jpg", fake.url("File:Gone.jpg")))  # 404
    listing = write_list(items, tmp_path / "list.tsv")
    out = tmp_path / "images"
    common = ["--out", str(out), "--api", fake.api, "--contact", CONTACT, "--timeout", "0.5"]
    common += ["--retries", "2", "--base-delay", "0.01", "--no-progress"]
    limits = ["--max-bytes", "100000000", "--max-pixels", "10000"]
    assert main(["download", str(listing), *common, *limits]) == 1
    report = capsys.readouterr().out
    reasons = dict(line.strip()[len("FAILED ") :].split(": ", 1) for line in
                   report.splitlines() if line.strip().startswith("FAILED"))  # fmt: skip
    assert reasons.keys() == set(bad_titles) | {huge, wide, "File:Gone.jpg"}
    assert "SHA-1 mismatch" in reasons["File:Always bad sha.jpg"]
    assert "text/html page" in reasons["File:Always html.jpg"]
    assert "gave up" in reasons["File:Always reset.png"]
    assert "not an allowed image" in reasons["File:Not image.jpg"]
    assert "max-bytes" in reasons[huge] and not fake.file_requests(huge)
    assert "200x150 pixels" in reasons[wide]
    assert reasons["File:Gone.jpg"] == "HTTP 404"
    assert "downloaded 2" in report and "failed 7" in report
    _assert_clean(out, fake, good)
    # The failure list has the input's header and the failed rows verbatim.
    lines = listing.read_text().splitlines()
    failures = out / "failures-list.tsv"  # named after the list: other lists keep theirs
    assert f"failure list: {failures} (pass it to `download` to retry)" in report
    failed_lines = failures.read_text().splitlines()
    assert failed_lines[0] == lines[0]
    assert set(failed_lines[1:]) == {ln for ln in lines[1:] if ln.split("\t")[0] in reasons}
    # Once the causes are gone, running the failure list fixes everything and removes it.
    fake.faults.clear()
    fake.add("File:Gone.jpg", make_image(64, 48, seed=3), category=None)
    ok_items = [i for i in parse_list(failures) if i.title != huge]
    write_list(ok_items, failures)  # huge really is too big: drop it
    assert main(["download", str(failures), *common]) == 0
    assert not list(out.glob("failures*"))  # the retried list is removed, not renamed
    _assert_clean(out, fake, good + bad_titles + [wide, "File:Gone.jpg"])


def test_download_page_url_list_resolves_in_batches_of_50(fake, tmp_path):
    titles = _add_files(fake, ["Zoïsite.jpg", "Harpoceras & Ichtyosaure (p).jpg", "Ü.png"])
    fake.redirects["File:Old name.jpg"] = "File:Ü.png"  # renamed since the list was made
    titles[2] = "File:Old name.jpg"
    missing = [f"File:Missing {i}.jpg" for i in range(52)]
    lines = [
        "https://commons.wikimedia.org/wiki/" + urllib.parse.quote(t.replace(" ", "_"), safe=":()")
        for t in titles + missing
    ]
    listing = tmp_path / "link_list.txt"
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "images"
    summary = download(listing, out, api=fake.api, progress=False, **FAST)
    assert sorted(summary.downloaded) == sorted(titles[:2] + ["File:Ü.png"])
    assert len(summary.failed) == 52 and all("not found" in r for _, r in summary.failed)
    api = fake.api_requests()
    assert [len(e["params"]["titles"].split("|")) for e in api] == [50, 5]
    _assert_clean(out, fake, titles[:2] + ["File:Ü.png"])  # saved under its current name
    assert (out / "failures-link_list.txt").read_text().splitlines() == lines[3:]  # as input


def test_download_upload_url_list_without_checksums(fake, tmp_path):
    titles = _add_files(fake, ["Zoïsite.jpg", "Plain.png", "Other.jpg"])
    fake.faults["File:Zoïsite.jpg"] = ["nolen_truncate"]  # no length, no SHA-1: PIL must notice
    fake.faults["File:Plain.png"] = ["nolen_truncate"]
    listing = tmp_path / "dl_links.txt"
    listing.write_text("\n".join([fake.url(t) for t in titles] + [f"{fake.base}/x/Skipped.svg"]))
    out = tmp_path / "images"
    summary = download(listing, out, api=fake.api, progress=False, **FAST)
    assert summary.ok and sorted(summary.downloaded) == sorted(titles)
    assert summary.filtered == ["File:Skipped.svg"] and not fake.api_requests()
    assert len(fake.file_requests("File:Zoïsite.jpg")) == 2
    _assert_clean(out, fake, titles)


def test_existing_files_verified_replaced_or_kept(fake, tmp_path):
    titles = _add_files(fake, ["Keep.jpg", "Corrupt.jpg", "Garbage.jpg"])
    out = tmp_path / "images"
    out.mkdir()
    (out / "Keep.jpg").write_bytes(fake.files["File:Keep.jpg"])
    (out / "Corrupt.jpg").write_bytes(fake.files["File:Corrupt.jpg"][:100])
    (out / "Garbage.jpg").write_bytes(os.urandom(len(fake.files["File:Garbage.jpg"])))
    items = [_item(fake, t) for t in titles]
    summary = download(items, out, api=fake.api, progress=False, **FAST)
    assert summary.skipped == ["File:Keep.jpg"]
    assert sorted(summary.downloaded) == ["File:Corrupt.jpg", "File:Garbage.jpg"]
    assert not fake.file_requests("File:Keep.jpg")
    # The cut-short file became the partial and was resumed rather than fetched whole.
    assert [e["range"] for e in fake.file_requests("File:Corrupt.jpg")] == ["bytes=100-"]
    # Garbage of the right length: 416 on resume, SHA-1 mismatch, then a fresh download.
    n = len(fake.files["File:Garbage.jpg"])
    assert [e["range"] for e in fake.file_requests("File:Garbage.jpg")] == [f"bytes={n}-", None]
    _assert_clean(out, fake, titles)


def test_one_downloader_per_folder(fake, tmp_path):
    (title,) = _add_files(fake, ["A.jpg"])
    with transfer._folder_lock(tmp_path), pytest.raises(CommonsError, match="already"):
        download([_item(fake, title)], tmp_path, api=fake.api, progress=False, **FAST)


@pytest.mark.parametrize(
    ("sig", "code"),
    [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130)],
    ids=["kill", "ctrl-c"],
)
def test_killed_download_resumes_on_restart(fake, tmp_path, sig, code):
    titles = _add_files(fake, ["Big 1.png", "Big 2.png", "Big 3.png"], size=(256, 200))
    for title in titles:
        fake.faults[title] = ["trickle"]  # ~150 KB in 8 KB steps: slow enough to be killed
    # ~11 s for the three files: the signal lands mid-download even if this test process is
    # starved for seconds on a loaded machine (0.03 s steps once let the download finish).
    fake.trickle = (8192, 0.2)
    listing = write_list([_item(fake, t) for t in titles], tmp_path / "list.tsv")
    out = tmp_path / "images"
    cmd = [sys.executable, "-m", "srlib.datasets", "download", str(listing), "--out", str(out)]
    cmd += ["--workers", "1", "--contact", CONTACT, "--timeout", "2", "--base-delay", "0.01"]
    cmd += ["--api", fake.api]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # SIGINT back to its default first: a test run started in the background by a shell
    # inherits SIG_IGN, and Python would then never raise KeyboardInterrupt in the child.
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    partial, deadline = None, time.monotonic() + 20
    while partial is None and time.monotonic() < deadline:
        for path in out.glob(".*.partial") if out.exists() else []:
            if transfer._size(path) >= 16384:  # _size: 0 if it was renamed meanwhile
                partial = path
        time.sleep(0.01)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=10)
    assert partial is not None, "the download never started"
    assert proc.returncode == code, stderr  # Ctrl-C: workers stop, partial files stay
    kept = partial.stat().st_size
    title = "File:" + partial.name[1 : -len(".partial")].replace("_", " ")
    assert 0 < kept < len(fake.files[title])
    for path in out.iterdir():  # whatever is under a final name is whole
        if not path.name.startswith("."):
            data = fake.files["File:" + path.name.replace("_", " ")]
            assert _sha1(path) == hashlib.sha1(data).hexdigest()
    fake.faults.clear()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "failed 0" in done.stdout
    assert fake.file_requests(title)[-1]["range"] == f"bytes={kept}-"  # resumed, not restarted
    _assert_clean(out, fake, titles)


def test_stricter_limits_refuse_but_keep_complete_files(fake, tmp_path):
    titles = _add_files(fake, ["Small.jpg", "Wide.png"])
    fake.files["File:Wide.png"] = make_image(200, 150, "PNG")  # 30000 pixels, 64x48 = 3072
    # Upload-URL lines: no size, dimensions or SHA-1 known before a file is on disk.
    items = [Item(t, url=fake.url(t)) for t in titles]
    out = tmp_path / "images"
    assert download(items, out, api=fake.api, progress=False, **FAST).ok
    requests = len(fake.log)
    smallest = min(len(data) for data in fake.files.values())
    summary = download(items, out, api=fake.api, max_bytes=smallest - 1, progress=False, **FAST)
    _assert_clean(out, fake, titles)  # nothing was deleted
    reasons = dict(summary.failed)
    assert reasons.keys() == set(titles) and not summary.downloaded
    assert all("over --max-bytes" in r and "existing file kept" in r for r in reasons.values())
    summary = download(items, out, api=fake.api, max_pixels=10000, progress=False, **FAST)
    assert summary.skipped == ["File:Small.jpg"]
    (reason,) = [r for t, r in summary.failed if t == "File:Wide.png"]
    assert "200x150 pixels is over the limit of 10000" in reason and "kept" in reason
    assert len(fake.log) == requests  # refused files are never fetched again
    _assert_clean(out, fake, titles)


def test_wrong_existing_file_over_the_limit_is_fetched_again(fake, tmp_path):
    (title,) = _add_files(fake, ["Wrong.jpg"])
    n = len(fake.files[title])
    out = tmp_path / "images"
    out.mkdir()
    (out / "Wrong.jpg").write_bytes(os.urandom(n + 1000))  # not the listed size: not the file
    item = _item(fake, title)
    summary = download([item], out, api=fake.api, max_bytes=n + 100, progress=False, **FAST)
    assert summary.ok and summary.downloaded == [title]
    assert [e["range"] for e in fake.file_requests(title)] == [f"bytes={n + 1000}-", None]
    _assert_clean(out, fake, [title])


def test_max_pixels_raises_pils_limit_only_while_downloading(fake, tmp_path, monkeypatch):
    titles = _add_files(fake, ["A.jpg", "B.png"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x48 is a "bomb" (> 2x) for PIL now
    items = [_item(fake, t) for t in titles]
    summary = download(items, tmp_path, api=fake.api, max_pixels=5000, progress=False, **FAST)
    assert summary.ok and sorted(summary.downloaded) == sorted(titles)  # PIL let them through
    assert Image.MAX_IMAGE_PIXELS == 1000
    with transfer._folder_lock(tmp_path), pytest.raises(CommonsError, match="already"):
        download(items, tmp_path, api=fake.api, max_pixels=5000, progress=False, **FAST)
    assert Image.MAX_IMAGE_PIXELS == 1000
    download(items, tmp_path, api=fake.api, max_pixels=10, progress=False, **FAST)
    assert Image.MAX_IMAGE_PIXELS == 1000  # a lower max_pixels never lowers PIL's guard


def test_malformed_content_length_is_retried_then_reported(fake, tmp_path):
    flaky, broken = _add_files(fake, ["Flaky.jpg", "Broken.png"])
    fake.faults[flaky] = ["len:abc", "len:-5"]
    fake.faults[broken] = ["len:12x"] * 20
    items = [_item(fake, t) for t in (flaky, broken)]
    out = tmp_path / "images"
    summary = download(items, out, api=fake.api, progress=False, **FAST)
    assert summary.downloaded == [flaky]
    assert [e["fault"] for e in fake.file_requests(flaky)] == ["len:abc", "len:-5", ""]
    ((title, reason),) = summary.failed
    assert title == broken and reason.startswith("malformed Content-Length header '12x'")
    assert "gave up after 3 retries" in reason and len(fake.file_requests(broken)) == 4
    _assert_clean(out, fake, [flaky])


def test_formats_are_validated_and_aliases_accepted(fake, tmp_path, capsys):
    titles = _add_files(fake, ["A.jpg", "B.png"])
    titles.append(fake.add("File:C.gif", make_image(64, 48, "GIF")))
    items = [_item(fake, t) for t in titles]
    summary = download(items, tmp_path / "a", formats=["JPG", " png"], api=fake.api, **FAST)
    assert sorted(summary.downloaded) == titles[:2] and summary.filtered == ["File:C.gif"]
    assert transfer.check_formats("jpeg, TIF,jpe") == ("jpeg", "tiff")
    for bad, match in ((["jpeg", "bmp"], "unknown image format 'bmp'"), ([], "no format")):
        with pytest.raises(ValueError, match=match) as err:
            download(items, tmp_path / "b", formats=bad, api=fake.api, **FAST)
        assert "valid: jpeg, png, gif, webp, tiff" in str(err.value)
    assert not (tmp_path / "b").exists()  # refused before anything was created
    listing = write_list(items, tmp_path / "list.tsv")
    argv = ["download", str(listing), "--api", fake.api, "--contact", CONTACT, "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "c"), "--formats", "jpg"]) == 0
    assert [p.name for p in (tmp_path / "c").iterdir() if p.name[0] != "."] == ["A.jpg"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path / "d"), "--formats", "jpg,webm"])
    assert exit_.value.code == 2 and not (tmp_path / "d").exists()
    assert "--formats: unknown image format 'webm'; valid:" in capsys.readouterr().err


# ------------------------------------------------------------------------ slow servers, names


def test_a_slow_drip_ends_at_the_deadline_and_the_next_run_resumes(fake, tmp_path):
    """Issue 24: a byte every 0.5 s kept a 3 KB download going past 30 s with --timeout 3."""
    (title,) = _add_files(fake, ["Drip.png"], size=(32, 24))
    data = fake.files[title]
    fake.faults[title] = ["drip"]
    fake.drip_s = 0.01  # no read ever waits for the 0.5 s timeout; the whole file takes ~25 s
    out = tmp_path / "images"
    start = time.monotonic()
    summary = download(
        [_item(fake, title)], out, api=fake.api, progress=False, deadline=1.0, **FAST
    )
    assert time.monotonic() - start < 10  # the deadline, not the drip, ended it
    ((_, reason),) = summary.failed
    assert reason.startswith("over the deadline of 1 s per file (")
    assert reason.endswith(f" of {len(data)} bytes kept for the next run)")
    partial = out / f".{safe_name(title)}.partial"
    kept = partial.read_bytes()
    assert 16 <= len(kept) < len(data) and data.startswith(kept)  # what arrived, as it came
    assert len(fake.file_requests(title)) == 1  # no retry after the deadline
    again = download([_item(fake, title)], out, api=fake.api, progress=False, **FAST)
    assert again.ok and fake.file_requests(title)[-1]["range"] == f"bytes={len(kept)}-"
    _assert_clean(out, fake, [title])


def test_bytes_of_a_slow_download_reach_the_partial_file_before_a_kill(fake, tmp_path):
    (title,) = _add_files(fake, ["Drip.png"], size=(32, 24))
    fake.faults[title] = ["drip"]
    fake.drip_s = 0.05  # ~2 minutes for the file
    listing = write_list([_item(fake, title)], tmp_path / "list.tsv")
    out = tmp_path / "images"
    cmd = [sys.executable, "-m", "srlib.datasets", "download", str(listing), "--out", str(out)]
    cmd += ["--contact", CONTACT, "--timeout", "2", "--api", fake.api]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial, deadline = out / f".{safe_name(title)}.partial", time.monotonic() + 20
    while transfer._size(partial) < 16 and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.communicate(timeout=10)
    kept = partial.read_bytes() if partial.exists() else b""
    assert len(kept) >= 16, "nothing that arrived reached the partial file"
    assert fake.files[title].startswith(kept)
    fake.faults.clear()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert fake.file_requests(title)[-1]["range"].startswith("bytes=")  # resumed
    _assert_clean(out, fake, [title])


def test_png_bytes_under_a_jpg_name_are_not_saved(fake, tmp_path):
    """Issue 24: PNG bytes served as image/jpeg were saved as .jpg."""
    title = fake.add("File:Mislabelled.jpg", make_image(40, 30, "PNG"))
    good = fake.add("File:Labelled.png", make_image(40, 30, "PNG", seed=1))
    out = tmp_path / "images"
    items = [_item(fake, title, mime="image/jpeg"), _item(fake, good)]
    summary = download(items, out, api=fake.api, progress=False, **FAST)
    assert summary.failed == [(title, "png data under a .jpg name")]
    assert len(fake.file_requests(title)) == 1  # permanent: not fetched again and again
    _assert_clean(out, fake, [good])
