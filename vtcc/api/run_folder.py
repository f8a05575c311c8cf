"""A fit's run folder: checked before anything is written, its overrides and log kept where
``vtcc-train`` keeps them, a user's mistake raised as its own one line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vtcc.errors import ConfigError, VtccError
from vtcc.io.writer import Writer
from vtcc.train import check_output_dir
from vtcc.utils.cli import one_line, user_error

log = logging.getLogger("vtcc")


@contextmanager
def run_logging(run_dir: Path) -> Iterator[None]:
    """vtcc's log lines into ``<run>/train.log`` (as the CLI writes it) and, when nothing else shows
    them, to stderr; both handlers removed afterwards (the log file opened by the Writer: never
    through a link, never a file vtcc did not write)."""
    stream = Writer(run_dir).append(run_dir / "train.log")
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    if not logging.getLogger().handlers and not log.handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
    formatter = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    level = log.level
    for handler in handlers:
        handler.setFormatter(formatter)
        log.addHandler(handler)
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()
        stream.close()
        log.setLevel(level)


@contextmanager
def user_errors() -> Iterator[None]:
    """A user mistake raised as its own one-line exception, not wrapped by Hydra or Lightning."""
    try:
        yield
    except VtccError as error:
        if one_line(error) != str(error):  # raised in a loader worker: torch added its traceback
            raise type(error)(one_line(error)) from None
        raise
    except Exception as error:
        cause = user_error(error)
        if cause is None:
            raise
        if not isinstance(cause, VtccError):  # Lightning's MisconfigurationException
            raise ConfigError(one_line(cause)) from None
        raise cause.with_traceback(None) from None


def check_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Before anything is written: a folder (not a file), and not another run's unless ``overwrite``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is a file: give a folder for the run")
    check_output_dir(run_dir, overwrite)
    for name in ("inputs.npz", "inputs"):
        if (run_dir / name).exists() and not overwrite:
            raise ConfigError(
                f"{run_dir / name} holds an earlier fit's images: choose another run_dir, or pass "
                "overwrite=True"
            )


def record_overrides(run_dir: Path, items: list[str]) -> None:
    """``<run>/.hydra/overrides.yaml``: the run's settings as CLI items, where ``vtcc-train`` runs
    keep theirs (resume from the command line with the same items and ``ckpt_path=``)."""
    import yaml

    Writer(run_dir).write_text(
        run_dir / ".hydra" / "overrides.yaml", yaml.safe_dump(items, default_flow_style=False)
    )
