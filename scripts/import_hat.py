"""`python scripts/import_hat.py ...`: the `hat-import` command (hat/cli/import_hat.py), from a checkout."""

import sys

from hat.cli import run
from hat.cli.import_hat import main

if __name__ == "__main__":
    sys.exit(run(main))
