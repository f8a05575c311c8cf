"""Entry-point helpers: user mistakes become one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import re
import shlex
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from vtcc.config.schema import RENAMED_KEYS
from vtcc.errors import ConfigError, VtccError, one_line, user_error
from vtcc.plugins import VTCC_CONFIG_DIR, load_plugins
from vtcc.utils.app_help import register_app_help

__all__ = ["CONFIG_DIR", "one_line", "run_safely", "user_error", "checks_command_line", "check_command_line"]

# The configs ship inside the package (vtcc/conf), so a wheel installed anywhere finds them;
# the checkout's top-level conf/ is a link to the same folder.
CONFIG_DIR = str(VTCC_CONFIG_DIR)
# The installed plugins' kinds and config files (objective=iic), before any entry point composes
# (and before the help, which lists their options too). A plugin that fails to load is named in one
# line; vtcc's own options and the other plugins' still work.
try:
    load_plugins()
except VtccError as error:
    print(f"vtcc: warning: {error}", file=sys.stderr)
register_app_help(CONFIG_DIR)


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


def checks_command_line(config_name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorates a ``@hydra.main`` entry point: :func:`check_command_line` reads ``sys.argv``
    before Hydra does, so what Hydra's parser would report without a hint is one line and exit 2."""

    def decorate(main: Callable[[], Any]) -> Callable[[], Any]:
        @functools.wraps(main)
        def checked() -> Any:
            run_safely(lambda argv: check_command_line(argv, config_name), sys.argv[1:])
            return main()

        return checked

    return decorate


def check_command_line(argv: Sequence[str], config_name: str) -> None:
    """Raise :class:`~vtcc.errors.ConfigError` for an override Hydra would refuse or take wrongly
    with no word of the fix: a value the shell split at a space (``data.root=/my images``), a value
    with a space Hydra cannot parse unquoted, and a key that was renamed (its new name,
    :data:`vtcc.config.schema.RENAMED_KEYS`). Anything else is left to Hydra."""
    overrides = _overrides(argv)
    for position, item in enumerate(overrides):
        if "=" not in item:
            continue
        key, value = item.split("=", 1)
        name = key.lstrip("+~")
        rest = []
        for following in overrides[position + 1 :]:
            if "=" in following or following.startswith("~"):
                break
            rest.append(following)
        if rest:  # Hydra would refuse 'images' as an override with no '='
            raise ConfigError(_quote_hint(key, " ".join([value, *rest])))
        renamed = RENAMED_KEYS.get(name)
        if renamed is not None and config_name in renamed[1]:
            new = key[: len(key) - len(name)] + renamed[0]
            raise ConfigError(f"{item}: {name} was renamed {renamed[0]}; use {new}={value}")
        if re.search(r"\s", value.strip()) and not value.lstrip().startswith(("[", "{", "'", '"')):
            try:
                OverridesParser.create().parse_overrides([item])
            except OverrideParseException:
                raise ConfigError(_quote_hint(key, value)) from None


def _overrides(argv: Sequence[str]) -> list[str]:
    """The ``key=value`` items of a command line, as Hydra's own argument parser splits it from
    its flags (``-m``, ``--cfg job``, ...); none when it would refuse the flags (Hydra says why)."""
    parser = get_args_parser()

    def refuse(message: str) -> None:
        raise ValueError(message)

    parser.error = refuse  # type: ignore[method-assign]
    try:
        return list(parser.parse_args([a for a in argv if a != "--version"]).overrides or [])
    except (ValueError, SystemExit):
        return []


def _quote_hint(key: str, value: str) -> str:
    """One line: how to write ``key=value`` so that the shell and Hydra each keep the value whole."""
    name = key.lstrip("+~")
    return f"{name}: the value has a space; quote it: {shlex.quote(f'{key}={hydra_quoted(value)}')}"


def hydra_quoted(value: str) -> str:
    """``value`` as a quoted Hydra string: in quotes of the kind it does not hold, and backslashes
    doubled where they precede a quote or end the string (Hydra's escaping)."""
    quote = "'" if '"' in value and "'" not in value else '"'
    escaped = re.sub(
        rf"(\\*)({quote}|$)",
        lambda m: m.group(1) * 2 + ("\\" + m.group(2) if m.group(2) else ""),
        value,
    )
    return f"{quote}{escaped}{quote}"
