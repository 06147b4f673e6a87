"""Errors that tell the user what to fix.

Every message names the file or parameter at fault and says what was expected.
"""


class StfusionError(Exception):
    """Base class of the errors this package raises on purpose."""


class InputError(StfusionError):
    """A raster, manifest or other input file is missing, damaged or inconsistent."""


class ConfigError(StfusionError, ValueError):
    """A parameter (params.yaml, a notebook parameter or a CLI option) is invalid."""


def require(condition: bool, key: str, expected: str, value: object) -> None:
    """Raise ``ConfigError("<key>: expected <expected>, got <value>")`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")
