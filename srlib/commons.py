"""Moved to srlib.datasets: the Wikimedia Commons downloader, now out of the core library.

This shim keeps `import srlib.commons` and `python -m srlib.commons list|download ...` working
for one release (same flags, output and exit codes). Use srlib.datasets and
`python -m srlib.datasets` instead: the MediaWiki API and list files are in srlib.datasets.api,
the downloads in srlib.datasets.transfer, the command line in srlib.datasets.cli.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from srlib.datasets import cli
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

# "X as X": public before the move though not in __all__, so re-exported on purpose.
from srlib.datasets.api import BATCH as BATCH
from srlib.datasets.api import DEFAULT_CATEGORY as DEFAULT_CATEGORY
from srlib.datasets.api import DEFAULT_LIST as DEFAULT_LIST
from srlib.datasets.api import DEFAULT_MIMES as DEFAULT_MIMES
from srlib.datasets.api import MAX_RETRY_AFTER as MAX_RETRY_AFTER
from srlib.datasets.api import RETRY_STATUS as RETRY_STATUS
from srlib.datasets.api import strip_html as strip_html
from srlib.datasets.transfer import CHUNK as CHUNK
from srlib.datasets.transfer import DEFAULT_DEADLINE as DEFAULT_DEADLINE
from srlib.datasets.transfer import DEFAULT_FORMATS as DEFAULT_FORMATS
from srlib.datasets.transfer import DEFAULT_MAX_BYTES as DEFAULT_MAX_BYTES
from srlib.datasets.transfer import DEFAULT_OUT as DEFAULT_OUT
from srlib.datasets.transfer import LOCK_NAME as LOCK_NAME
from srlib.datasets.transfer import MAX_NAME_BYTES as MAX_NAME_BYTES
from srlib.datasets.transfer import SNIFF_BYTES as SNIFF_BYTES
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


def main(argv: Sequence[str] | None = None) -> int:
    """srlib.datasets.main under the old program name (it shows in usage and error lines)."""
    return cli.main(argv, prog="python -m srlib.commons")


if __name__ == "__main__":
    sys.exit(main())
