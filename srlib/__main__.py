"""`python -m srlib ...`: the command line, srlib.cli (`python -m srlib --help`)."""

import sys

from srlib.cli import CliError, build_parser, main  # noqa: F401  (old names of this module)

if __name__ == "__main__":
    sys.exit(main())
