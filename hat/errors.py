"""The one base class of user-facing errors.

Every error a user can cause and fix (a bad config key, a missing file, a corrupt checkpoint, a model that does not
fit a request) is a `HatError`; its message is one line that names the problem and the fix. The command-line
wrapper (`hat.cli.run`) turns exactly these into that line and exit code 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class HatError(Exception):
    """A user-facing error; the message is one line naming the problem and the fix."""
