"""Command-line entry points (`hat-train`, `hat-convert`, ...) and the one convention they share.

Each command module `hat.cli.<command>` has `main(argv) -> int`, which raises instead of printing errors, and
`entry()`, the console script: `sys.exit(run(main))`. `run(main)` calls `main`, prints a `HatError` as one line on
stderr with exit code 2, and lets every other exception propagate with its traceback (those are bugs).
Command-line arguments that argparse itself rejects exit with code 2 and argparse's usage message, as usual.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from hat.errors import HatError


class UsageError(HatError):
    """A command-line argument cannot be used (a missing input file, an unwritable output); the message names it."""


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Runs a command's `main`; a `HatError` becomes `error: <message>` on stderr and exit code 2."""
    try:
        return main(argv) or 0
    except HatError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def make_parser(description: str, examples: str) -> argparse.ArgumentParser:
    """An argument parser whose `--help` shows `description`, then `examples` (kept as written, one per line)."""
    return argparse.ArgumentParser(
        description=description,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer of at least `minimum`, so a bad size or count stops at the argument, not deep inside
    the command (a zero segment size would divide by zero)."""

    # argparse reports a ValueError from `int` as "invalid integer value: 'x'" (the function's name).
    def integer(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return integer


def read_input(path: str | Path) -> bytes:
    """The bytes of an input file named on the command line; a missing or unreadable one is a `UsageError`."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        # Only I/O happens here, so every OSError is about the file (missing, a directory, no permission).
        raise UsageError(f"cannot read {path}: {error.strerror or error} (check the input path)") from None


def write_output(path: str | Path, data: bytes) -> None:
    """Writes an output file named on the command line; a missing directory or a full disk is a `UsageError`."""
    try:
        Path(path).write_bytes(data)
    except OSError as error:
        raise UsageError(
            f"cannot write {path}: {error.strerror or error} (check that its directory exists, is writable and has "
            "free space)"
        ) from None
