"""User-facing errors: the CLI prints their message as one line and exits with status 2 (no traceback)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def suggest(name: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` to a mistyped `name`, or '' when none is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class CxrbenchError(Exception):
    """Base of every error whose message is meant for the user (names the culprit and the fix)."""
