"""`python scripts/generate.py ...`: the `hat-generate` command (hat/cli/generate.py), from a checkout."""

import sys

from hat.cli import run
from hat.cli.generate import main

if __name__ == "__main__":
    sys.exit(run(main))
