"""Where facecvt prints: results on stdout, progress and errors on stderr."""

from __future__ import annotations

import sys

from rich.console import Console

# Piped into a CI log there is no terminal width: use one wide enough for the report tables.
_WIDTH = None if sys.stdout.isatty() else 160

out = Console(highlight=False, soft_wrap=True, width=_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=_WIDTH)


def step(message: str):
    """A spinner on stderr while a long step runs (silent when stderr is not a terminal)."""
    return err.status(message, spinner="dots")
