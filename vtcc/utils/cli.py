"""Entry-point helpers: user mistakes become one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException

from vtcc.errors import VtccError
from vtcc.utils.app_help import register_app_help

# The configs ship inside the package (vtcc/conf), so a wheel installed anywhere finds them;
# the checkout's top-level conf/ is a link to the same folder.
CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
register_app_help(CONFIG_DIR)

USER_ERRORS = (VtccError, MisconfigurationException)


def user_error(error: BaseException) -> BaseException | None:
    """The user-facing cause of ``error``, looking through Hydra's instantiation wrappers."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, USER_ERRORS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def run_safely(task: Callable[[Any], Any], cfg: Any) -> Any:
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    try:
        return task(cfg)
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        print(f"vtcc: error: {one_line(cause)}", file=sys.stderr)
        raise SystemExit(2) from None


def one_line(error: BaseException) -> str:
    """A user error's message on one line: raised in a loader worker, torch wraps it with the
    worker's traceback, whose last line is the message."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in str(error):
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last else last
    return str(error)
