"""User-facing errors: entry points print these as one line and exit non-zero, without a traceback."""


class VtccError(Exception):
    """A problem the user can act on; the message names the problem and the fix."""


class ConfigError(VtccError, ValueError):
    """A setting or input the user can fix."""


class TrainingDivergedError(VtccError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""
