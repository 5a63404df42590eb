"""Generic checks of option values: unknown keys (with the nearest valid ones), numbers PyYAML read as
strings (``1e-3``: YAML 1.1 wants ``1.0e-3``), and the options of a registered BasicSR class.

Every function raises :class:`~ibsd.errors.OptionError` naming the key as ``section:key``.
"""
from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, Iterable, Mapping

from ibsd.errors import OptionError

OPTIMIZER_NUMBERS = frozenset({'lr', 'weight_decay', 'eps', 'momentum', 'alpha', 'dampening', 'lr_decay',
                               'initial_accumulator_value', 'rho', 'betas', 'lambd', 't0', 'max_iter'})
ITERATION_KEYS = ('total_iter', 'warmup_iter')
NEAR_MISS_CUTOFF = 0.8
"""How close (difflib ratio) an unknown key must be to a known one to be called its misspelling."""


def suggest(key: str, valid: Iterable[str]) -> str:
    near = difflib.get_close_matches(key, sorted(valid), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(n) for n in near)}?" if near else f'valid keys: {sorted(valid)}'


def reject_unknown(section: Mapping, valid: Iterable[str], where: str) -> None:
    """Raise :class:`OptionError` naming the first key of ``section`` that is not in ``valid``."""
    valid = set(valid)
    for key in section:
        if key not in valid:
            raise OptionError(f"{where}: unknown key '{key}': {suggest(key, valid)}")


def as_number(value: Any, where: str, kind: type = float) -> int | float:
    """``value`` as ``kind`` (float or int); strings such as ``'1e-3'`` are read as numbers."""
    if isinstance(value, bool):
        raise OptionError(f'{where}: expected a number, got {value!r}')
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise OptionError(f'{where}: expected a number, got {value!r}') from None
    if not isinstance(value, (int, float)):
        raise OptionError(f'{where}: expected a number, got {value!r}')
    if not math.isfinite(value):
        raise OptionError(f'{where}: expected a finite number, got {value!r}')
    if kind is int:
        if float(value) != int(value):
            raise OptionError(f'{where}: expected a whole number, got {value!r}')
        return int(value)
    return float(value)


def convert(value: Any, kind: str, where: str) -> Any:
    optional = kind.endswith('?')
    kind = kind.rstrip('?')
    if value is None and (optional or kind in ('nodes', 'ints', 'floats')):
        return None
    if kind == 'float':
        return as_number(value, where)
    if kind == 'int':
        return as_number(value, where, int)
    if kind in ('ints', 'floats'):
        if not isinstance(value, (list, tuple)):
            raise OptionError(f'{where}: expected a list of numbers, got {value!r}')
        item_kind = int if kind == 'ints' else float
        return [as_number(v, f'{where}[{i}]', item_kind) for i, v in enumerate(value)]
    if kind == 'nodes':
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise OptionError(f'{where}: expected a list of module names, got {value!r}')
        return list(value)
    if kind == 'bool' and not isinstance(value, bool):
        raise OptionError(f'{where}: expected true or false, got {value!r}')
    if kind == 'str' and not isinstance(value, str):
        raise OptionError(f'{where}: expected a name, got {value!r}')
    return value


def check_section(section: Any, schema: Mapping[str, str], where: str) -> dict:
    """``section`` (a mapping or ``None``) checked against ``schema`` (key -> kind), numbers converted."""
    if section is None:
        return {}
    if not isinstance(section, Mapping):
        raise OptionError(f'{where}: expected a mapping of keys, got {section!r}')
    reject_unknown(section, schema, where)
    return {key: convert(value, schema[key], f'{where}:{key}') for key, value in section.items()}


def _numeric_default(parameter: inspect.Parameter) -> type | None:
    default = parameter.default
    if isinstance(default, bool):
        return None
    if isinstance(default, (int, float)):
        return type(default)
    annotation = str(parameter.annotation)
    return {'float': float, 'int': int}.get(annotation.replace('typing.', '').split(' ')[0])


def check_constructor_options(options: Mapping, cls: type, where: str, strict: bool = True) -> dict:
    """Options for ``cls(**options)`` (``type`` excluded): unknown keyword arguments rejected
    (unless ``cls`` takes ``**kwargs`` or ``strict`` is off), numeric ones converted to numbers."""
    parameters = dict(inspect.signature(cls.__init__).parameters)
    parameters.pop('self', None)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if strict and not takes_any:
        reject_unknown([k for k in options if k != 'type'], parameters, where)
    checked = dict(options)
    for key, value in options.items():
        kind = _numeric_default(parameters[key]) if key in parameters else None
        if kind is not None and value is not None:
            checked[key] = as_number(value, f'{where}:{key}', kind)
        elif kind is None and key in parameters and isinstance(value, (list, tuple)):
            checked[key] = [maybe_number(v) for v in value]
    return checked


def maybe_number(value: Any) -> Any:
    """A string that reads as a number becomes that number; anything else is left as it is."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_registered(options: Any, registry, where: str, strict: bool = True) -> dict:
    """A ``{type: X, ...}`` section whose ``type`` is in a BasicSR ``registry``, checked against X."""
    if not isinstance(options, Mapping) or 'type' not in options:
        raise OptionError(f"{where}: expected a mapping with a 'type', got {options!r}")
    kind = options['type']
    if kind not in registry:
        names = [name for name, _ in registry]
        raise OptionError(f"{where}:type: '{kind}' is not registered: {suggest(str(kind), names)}")
    return check_constructor_options(options, registry.get(kind), where, strict)


def check_optimizer(options: Any, where: str) -> dict:
    """An optimizer section: numbers written as strings (``lr: 1e-3``) become numbers; the numeric
    arguments of torch's optimizers (``lr``, ``betas``, ...) must be finite numbers, not ``true``."""
    if not isinstance(options, Mapping) or 'type' not in options:
        raise OptionError(f"{where}: expected a mapping with a 'type', got {options!r}")
    checked = dict(options)
    for key, value in options.items():
        if key == 'type':
            continue
        if key in OPTIMIZER_NUMBERS:
            checked[key] = convert(value, 'floats' if isinstance(value, (list, tuple)) else 'float', f'{where}:{key}')
        elif isinstance(value, (list, tuple)):
            checked[key] = [maybe_number(v) for v in value]
        else:
            checked[key] = maybe_number(value)
    return checked


def convert_iteration_counts(train: dict) -> None:
    """``total_iter`` and ``warmup_iter`` as whole numbers (``1e5`` reads as a string): basicsr uses them
    before any model exists."""
    for key in ITERATION_KEYS:
        if train.get(key) is not None:
            train[key] = as_number(train[key], f'train:{key}', int)
