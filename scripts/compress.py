"""`python scripts/compress.py ...`: the `hat-compress` command (hat/cli/compress.py), from a checkout."""

import sys

from hat.cli import run
from hat.cli.compress import main

if __name__ == "__main__":
    sys.exit(run(main))
