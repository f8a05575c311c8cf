"""User-facing errors: entry points print these as one line and exit non-zero, without a traceback."""

from __future__ import annotations

import sys


class VtccError(Exception):
    """A problem the user can act on; the message names the problem and the fix."""


class ConfigError(VtccError, ValueError):
    """A setting or input the user can fix."""


class TrainingDivergedError(VtccError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def is_user_error(error: BaseException) -> bool:
    """A vtcc error, or Lightning's word for a misconfiguration (looked up only when Lightning is
    loaded: without it, no such error exists)."""
    if isinstance(error, VtccError):
        return True
    lightning = sys.modules.get("lightning.fabric.utilities.exceptions")
    return lightning is not None and isinstance(error, lightning.MisconfigurationException)


def user_error(error: BaseException) -> BaseException | None:
    """The user-facing cause of ``error``, looking through Hydra's instantiation wrappers."""
    seen: BaseException | None = error
    while seen is not None:
        if is_user_error(seen):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def one_line(error: BaseException) -> str:
    """A user error's message on one line: raised in a loader worker, torch wraps it with the
    worker's traceback, whose last line is the message."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in str(error):
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return str(error)
