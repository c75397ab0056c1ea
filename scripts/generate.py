"""`python scripts/generate.py ...` is `hat-generate ...` (`hat.cli.generate`)."""

import sys

from hat.cli import run
from hat.cli.generate import main as command


def main(argv: list[str] | None = None) -> int:
    """The command with the CLI's error convention (a user error is one line and exit code 2)."""
    return run(command, argv)


if __name__ == "__main__":
    sys.exit(main())
