"""The one error type for user-facing failures."""

from __future__ import annotations

import difflib


class FacecvtError(Exception):
    """A failure the user can act on: the CLI prints it as one line and exits 2.

    The message names what is wrong (file, node, option) and, where there is one, the fix.
    """


class ToleranceError(FacecvtError):
    """A check ran and a candidate was out of tolerance: the CLI exits 1."""


def did_you_mean(name: str, choices, n: int = 3) -> str:
    """' (did you mean: a, b?)' with the closest real names, or '' when none are close."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(close)}?)" if close else ""
