"""The one place where options are validated: text from the command line and typed
values from Python go through these checks, with the same one-line messages.

``parse_*`` turn an option's text (or an already typed value) into a typed value;
``check_*`` validate typed values and refuse text, so that a library caller who passes
``k="50"`` is told so instead of having it silently parsed.
"""

from __future__ import annotations

import math
import re
from numbers import Integral, Real

import numpy as np

from .errors import ParameterError

__all__ = ["parse_int", "parse_float", "parse_bandwidth", "parse_approx", "approx_landmarks", "parse_engine", "check_int", "check_real",
           "check_choice", "check_flag"]


def _range_text(minimum, maximum) -> str:
    lo = "" if minimum is None else f" >= {minimum}"
    hi = "" if maximum is None else f" <= {maximum}"
    return " and".join(p for p in (lo, hi) if p)


def check_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int: an int or a NumPy integer (not bool, not text, not a float).

    Parameters
    ----------
    name : str
        How the message names the option.
    value : object
    minimum, maximum : int, optional
        Inclusive bounds.

    Raises
    ------
    ParameterError
        ``{name} must be an integer, got {value!r}``; out of range:
        ``{name} must be an integer >= minimum[ and <= maximum], got {value}``.
    """
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ParameterError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum or maximum is not None and v > maximum:
        raise ParameterError(f"{name} must be an integer{_range_text(minimum, maximum)}, got {v}")
    return v


def check_real(name: str, value, expected: str = "a finite number") -> float:
    """``value`` as a finite float: an int, float or NumPy real (not bool, not text).

    Raises
    ------
    ParameterError
        ``{name} must be {expected}, got {value!r}``.
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ParameterError(f"{name} must be {expected}, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices) -> str:
    """``value`` if it is one of ``choices`` (strings), else a ParameterError listing them:
    ``{name} must be one of 'a', 'b', got {value!r}``."""
    if not isinstance(value, str) or value not in choices:
        raise ParameterError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_flag(name: str, value) -> bool:
    """``value`` if it is a bool (``True``/``False``, NumPy's too), else a ParameterError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def parse_int(name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An option's text (``"50"``, ``" +3 "``) or an int, as an int; see :func:`check_int`."""
    if isinstance(value, str):
        s = value.strip()
        if not re.fullmatch(r"[+-]?\d+", s):
            raise ParameterError(f"{name} must be an integer, got {value!r}")
        value = int(s)
    return check_int(name, value, minimum=minimum, maximum=maximum)


def parse_float(name: str, value, expected: str = "a finite number") -> float:
    """An option's text (``"0.5"``, ``"1e-3"``) or a number, as a finite float; see :func:`check_real`."""
    if isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            raise ParameterError(f"{name} must be {expected}, got {value!r}") from None
        if not math.isfinite(v):
            raise ParameterError(f"{name} must be {expected}, got {value!r}")  # the text as typed
        return v
    return check_real(name, value, expected)


def parse_bandwidth(value) -> str | float:
    """``"median"`` (any case) or a positive finite σ, from text or a number.

    Raises
    ------
    ParameterError
        ``bandwidth must be 'median' or a positive number, got {value!r}``.
    """
    if isinstance(value, str) and value.strip().lower() == "median":
        return "median"
    expected = "'median' or a positive number"
    sigma = parse_float("bandwidth", value, expected)
    if sigma <= 0:
        raise ParameterError(f"bandwidth must be {expected}, got {value!r}")
    return sigma


_APPROX_EXPECTED = "'nystrom:M' with an integer M >= 1 (the number of landmarks)"


def parse_approx(value) -> str | None:
    """The canonical ``--approx`` text, ``"nystrom:M"`` (``" Nystrom:0500 "`` gives
    ``"nystrom:500"``), or None (unset: exact).

    Raises
    ------
    ParameterError
        ``approx must be 'nystrom:M' with an integer M >= 1 (the number of landmarks), got {value!r}``.
    """
    if value is None:
        return None
    m = re.fullmatch(r"nystrom:\s*\+?(\d+)", value.strip().lower()) if isinstance(value, str) else None
    if m is None or int(m.group(1)) < 1:
        raise ParameterError(f"approx must be {_APPROX_EXPECTED}, got {value!r}")
    return f"nystrom:{int(m.group(1))}"


def approx_landmarks(value) -> int:
    """M of an ``--approx nystrom:M`` text (see :func:`parse_approx`)."""
    canonical = parse_approx(value)
    if canonical is None:
        raise ParameterError(f"approx must be {_APPROX_EXPECTED}, got None")
    return int(canonical.split(":")[1])


_ENGINE_EXPECTED = "'local', 'ray' or 'ray:ADDRESS' (ADDRESS: HOST:PORT of a Ray cluster's head, 'auto' or a ray:// URL)"


def parse_engine(value) -> str:
    """The canonical ``--engine`` text: ``"local"`` (in process, the default), ``"ray"``
    (a Ray cluster: ``RAY_ADDRESS`` or a new local one) or ``"ray:ADDRESS"`` (``" Ray:10.0.0.1:6379 "``
    gives ``"ray:10.0.0.1:6379"``; the address keeps its case).

    Raises
    ------
    ParameterError
        ``engine must be 'local', 'ray' or 'ray:ADDRESS' (...), got {value!r}``.
    """
    m = re.fullmatch(r"(local|ray)(?::(\S*))?", value.strip(), flags=re.IGNORECASE) if isinstance(value, str) else None
    if m is None:
        raise ParameterError(f"engine must be {_ENGINE_EXPECTED}, got {value!r}")
    name, address = m.group(1).lower(), m.group(2)
    if address is None:
        return name
    if name == "local" or not address:
        raise ParameterError(f"engine must be {_ENGINE_EXPECTED}, got {value!r}")
    return f"ray:{address}"
