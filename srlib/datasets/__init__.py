"""Training photos from Wikimedia Commons: image lists and a resumable, verified downloader.

Not part of the core library (no srlib module imports it); stdlib HTTP only, no torch.

    python -m srlib.datasets list --contact you@example.org  # -> data/valued/valued_images.tsv
    python -m srlib.datasets download data/valued/link_list.txt  # -> data/valued/images/

  api.py       the MediaWiki API: a polite HTTP client, file metadata, list files (Item, TSV)
  transfer.py  resumable, verified downloads: partial files, locks, deadlines, file names
  cli.py       the command line (`list`, `download`); data/valued/README.md has the details
"""

from srlib.datasets.api import (
    API_URL,
    COLUMNS,
    CommonsError,
    Item,
    build_list,
    iter_category,
    parse_list,
    resolve_titles,
    write_list,
)
from srlib.datasets.cli import main
from srlib.datasets.transfer import Summary, download, safe_name

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
