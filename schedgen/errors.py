"""The one exception hierarchy of schedgen.

Every error a user can cause derives from :class:`SchedgenError` (a
``ValueError``), so the CLI can catch it at the edge and print one line.
Messages say what is wrong, what was expected and what was received.
"""

from __future__ import annotations

__all__ = [
    "SchedgenError",
    "DataError",
    "StoreError",
    "ParameterError",
    "SchedgenWarning",
]


class SchedgenError(ValueError):
    """Base class of every error schedgen raises on bad input."""


class ParameterError(SchedgenError):
    """An option or argument is out of its allowed range or of the wrong type."""


class DataError(SchedgenError):
    """A dataset is missing, malformed, or holds values schedgen cannot use."""


class StoreError(SchedgenError):
    """A schedule store is missing, of another format, truncated or tampered with."""


class SchedgenWarning(UserWarning):
    """Something is legal but probably not what the user wants (e.g. a diagonal kernel),
    or something went wrong that does not stop the build (a checkpoint that cannot be saved)."""
