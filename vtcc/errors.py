"""User-facing errors: entry points print these as one line and exit non-zero, without a traceback."""


class ConfigError(ValueError):
    """A setting or input the user can fix; the message names the problem and the fix."""
