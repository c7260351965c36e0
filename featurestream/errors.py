"""Errors the CLI reports as one clear line (what went wrong and the fix), not a traceback."""


class UserFacingError(RuntimeError):
    """An expected failure with a message that names the fix."""
