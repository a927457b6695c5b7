"""The one exception hierarchy of wheelwright.

Every error the product raises on purpose derives from :class:`WheelwrightError`, so the CLI can turn
it into one clear sentence and an exit code, and callers can tell "our refusal" from "a bug".
"""


class WheelwrightError(Exception):
    """Base of every deliberate wheelwright error; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(WheelwrightError):
    """The configuration (environment, arguments, connections) is unusable."""

    exit_code = 2


class CatalogError(WheelwrightError):
    """The catalog database is unreachable or in a state we cannot work with."""

    exit_code = 3


class PyPIError(WheelwrightError):
    """PyPI (or whatever speaks its protocol) failed in a way retries did not cure."""

    exit_code = 4


class MalformedEvent(WheelwrightError):
    """A changelog row from PyPI does not have the shape ``[name, version|None, ts, action, serial]``."""
