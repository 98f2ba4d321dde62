"""Where facecvt prints: results on stdout, progress and errors on stderr."""

from __future__ import annotations

from rich.console import Console

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def step(message: str):
    """A spinner on stderr while a long step runs (silent when stderr is not a terminal)."""
    return err.status(message, spinner="dots")
