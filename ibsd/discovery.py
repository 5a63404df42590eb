"""Import every module of a subpackage whose file name ends with a suffix, as BasicSR does."""
from __future__ import annotations

import importlib
import os
from types import ModuleType


def import_modules(package: str, folder: str, suffix: str) -> list[ModuleType]:
    """Import ``package.<name>`` for each ``<name>{suffix}`` file in ``folder`` (sorted).

    Modules are always imported under their ``ibsd.*`` name, so registries see each once.
    """
    names = sorted(entry[:-3] for entry in os.listdir(folder) if entry.endswith(suffix))
    return [importlib.import_module(f'{package}.{name}') for name in names]
