"""`python scripts/evaluate.py ...`: the `hat-eval` command (hat/cli/evaluate.py), from a checkout."""

import sys

from hat.cli import run
from hat.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(run(main))
