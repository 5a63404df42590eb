"""The package's layers: a module imports only from its own layer or those below it (docs/layout.md).

Bottom up: the base (errors, progress, threads, image reading), option checking, the components
(architectures, losses, metrics, data tools, inference, the subprocess runner), the basicsr fixes and
training features, the models, and at the top the command-line programs. A fix layer that imports a
model, or a library module that imports a CLI, is what this catches.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / 'ibsd'
LAYERS = [
    {'errors', 'progress', 'discovery', 'image_io', 'threads'},
    {'options', 'run_checks'},  # run_checks: the deprecated name of options.run_file
    {'archs', 'losses', 'metrics', 'data', 'inference', 'tasks'},
    {'compat', 'training'},
    {'models'},
    {'entry', 'train', 'test', 'infer', 'export', 'demo', 'study'},
]
LAYER = {name: level for level, names in enumerate(LAYERS) for name in names}
CLI = LAYERS[-1]
ALLOWED_BETWEEN_CLIS = {('train', 'entry'), ('test', 'entry')}
"""``ibsd/train.py`` and ``ibsd/test.py`` are BasicSR-style script faces of ``ibsd.entry``."""


def top_level(module: Path) -> str:
    parts = module.relative_to(PACKAGE).with_suffix('').parts
    return parts[0]


def imported_ibsd_modules(source: Path) -> list[tuple[int, str]]:
    """``(line, first name under ibsd)`` of every import of an ibsd module in ``source``; '' for ``import ibsd``."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] if node.module != 'ibsd' else [f'ibsd.{a.name}' for a in node.names]
        for name in names:
            parts = name.split('.')
            if parts[0] == 'ibsd':
                found.append((node.lineno, parts[1] if len(parts) > 1 else ''))
    return found


MODULES = sorted(p for p in PACKAGE.rglob('*.py') if p.name != '__init__.py' or p.parent != PACKAGE)


def test_every_part_of_the_package_has_a_layer():
    parts = {top_level(p) for p in MODULES if p.parent != PACKAGE or p.name != '__init__.py'}
    assert parts <= set(LAYER), f'not in a layer: {sorted(parts - set(LAYER))}'


@pytest.mark.parametrize('module', MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_upwards(module):
    own = top_level(module)
    upward = []
    for line, target in imported_ibsd_modules(module):
        if target == '':  # import ibsd: registers everything, for programs only
            if own not in CLI:
                upward.append(f'line {line}: import ibsd')
            continue
        if target == own or (own, target) in ALLOWED_BETWEEN_CLIS or target.startswith('__'):
            continue
        if LAYER[target] > LAYER[own] or (target in CLI and own in CLI):
            upward.append(f'line {line}: ibsd.{target} (layer {LAYER[target]}) from layer {LAYER[own]}')
    assert not upward, f'{module.relative_to(PACKAGE)} imports upwards: {upward}'
