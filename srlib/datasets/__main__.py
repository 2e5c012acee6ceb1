"""`python -m srlib.datasets list|download ...`: see srlib.datasets.cli."""

import sys

from srlib.datasets.cli import main

if __name__ == "__main__":
    sys.exit(main())
