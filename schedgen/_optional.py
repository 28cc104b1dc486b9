"""Optional heavy dependencies, imported with an install hint. Standard library only."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["import_torch"]


def import_torch(who: str) -> ModuleType:
    """``import torch`` for the module ``who`` (e.g. ``"schedgen.torch"``).

    Raises
    ------
    ModuleNotFoundError
        ``name="torch"``, with the install hint (the CPU build first), when PyTorch is not
        installed. A torch that is installed but broken (a module of it or of its
        dependencies is missing) raises its own error, undisguised.
    """
    try:
        return importlib.import_module("torch")
    except ModuleNotFoundError as exc:
        if exc.name != "torch":
            raise
        raise ModuleNotFoundError(
            f"{who} needs PyTorch, which is not installed ({exc}); install the CPU build first "
            "(pip install torch==2.13.0, or see pytorch.org), then pip install -e '.[torch]'",
            name="torch",
        ) from None
