"""`python train.py [CONFIG.yaml] [key.sub=value ...]`: the `hat-train` command (hat/cli/train.py), from a checkout."""

import sys

from hat.cli import run
from hat.cli.train import main

if __name__ == "__main__":
    sys.exit(run(main))
