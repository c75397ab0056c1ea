"""`python scripts/export.py ...`: the `hat-export` command (hat/cli/export.py), from a checkout."""

import sys

from hat.cli import run
from hat.cli.export import main

if __name__ == "__main__":
    sys.exit(run(main))
