"""Wikimedia Commons image lists and a resumable, verified downloader (stdlib HTTP only).

    python -m srlib.datasets list --contact you@example.org  # writes data/valued/valued_images.tsv
    python -m srlib.datasets download data/valued/valued_images.tsv  # into data/valued/images/
    python -m srlib.datasets download data/valued/link_list.txt  # the seed's lists work as is

Exit status: 0 all good, 1 some files failed (listed, and written to a failure list), 2 the
list, the API or the folder could not be used, 130 interrupted (partial files are kept).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from srlib.datasets.api import (
    API_URL,
    DEFAULT_CATEGORY,
    DEFAULT_LIST,
    DEFAULT_MIMES,
    CommonsError,
    build_list,
)
from srlib.datasets.transfer import (
    DEFAULT_DEADLINE,
    DEFAULT_FORMATS,
    DEFAULT_MAX_BYTES,
    DEFAULT_OUT,
    check_formats,
    download,
)

PROG = "python -m srlib.datasets"


def _formats_arg(text: str) -> tuple[str, ...]:
    try:
        return check_formats(text)
    except ValueError as e:  # argparse shows it with the usage line and exits with status 2
        raise argparse.ArgumentTypeError(str(e)) from None


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
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


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """Command-line entry point; returns the exit status (`prog` names it in usage lines)."""
    args = _parser(prog).parse_args(argv)
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
