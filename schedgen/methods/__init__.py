"""The methods layer: one module per method and a registry.

A method is a :class:`Method` (name, revision, the options it reads, ``params``,
``memory_needs``, ``run``). Adding one is a new module and one line in
:data:`METHODS`. Method modules import nothing heavy at import time (a cache hit
imports this package): their computation is imported inside ``run``.
"""

from __future__ import annotations

from ..errors import ParameterError
from ._base import Method, MethodOutput, RunContext
from .dpp import DPPMethod
from .learn2mix import Learn2MixMethod
from .mmd import DEFAULT_SOLVER, MMDMethod
from .random import RandomMethod
from .submodular import SubmodularMethod

__all__ = ["Method", "MethodOutput", "RunContext", "METHODS", "DEFAULT_METHOD", "DEFAULT_SOLVER", "get_method"]

#: name -> method, the registry (``--method NAME``).
METHODS: dict[str, Method] = {m.name: m for m in (MMDMethod(), Learn2MixMethod(), RandomMethod(), DPPMethod(), SubmodularMethod())}
DEFAULT_METHOD = "mmd"


def get_method(name) -> Method:
    """The registered method ``name``.

    Raises
    ------
    ParameterError
        ``unknown method 'x'; expected one of [...]``.
    """
    if not isinstance(name, str) or name not in METHODS:
        raise ParameterError(f"unknown method {name!r}; expected one of {sorted(METHODS)}")
    return METHODS[name]
