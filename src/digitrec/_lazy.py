"""Curated package namespaces whose names are imported on first use.

A subpackage's ``__init__`` lists its public names and the module holding each; the module
is imported only when a name is first asked for, so that ``import digitrec`` and the CLI's
start stay cheap (scikit-learn, torch, matplotlib and Dask load only for the commands that
use them) and a subpackage never imports its siblings just by being imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def exports(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``.

    ``names`` maps each public name to the module that defines it, relative to the package
    (``"knn"`` for ``package.knn``). A name equal to its module's last component stands for
    the module itself (``{"datasets": "data.datasets"}`` exports the module).
    """

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        loaded = importlib.import_module(f"{package}.{module}")
        return loaded if module.rpartition(".")[2] == name else getattr(loaded, name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__, sorted(names)
