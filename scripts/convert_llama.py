"""`python scripts/convert_llama.py ...`: the `hat-convert` command (hat/cli/convert.py), from a checkout."""

import sys

from hat.cli import run
from hat.cli.convert import main

if __name__ == "__main__":
    sys.exit(run(main))
