"""Command-line entry points (`hat-train`, `hat-eval`, ...) and the one convention they share.

Each command module has `main(argv) -> int`; `run(main)` calls it, prints a `HatError` as one line on stderr with
exit code 2, and lets every other exception propagate with its traceback (those are bugs).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from hat.errors import HatError


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
