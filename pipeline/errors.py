"""User-facing errors: the CLI prints their message as one line and exits with status 2 (no traceback)."""


class CxrbenchError(Exception):
    """Base of every error whose message is meant for the user (names the culprit and the fix)."""
