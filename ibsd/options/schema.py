"""The sections of options IBSD adds, declared once: each key's kind, default and allowed range.

The YAML check (:func:`ibsd.options.train_sections.check_ibsd_options`), the classes that take these
values (the soft target, the divergence guard, the position sampler, the gradient share) and the key
table in ``docs/training.md`` (compared by ``tests/options/test_schema_docs.py``) all read these
declarations, so a default or a range is written in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from ibsd.errors import OptionError
from ibsd.options.values import convert, reject_unknown

DERIVED = object()
"""Default of a key whose value is worked out at run time (say how in ``Key.shown_default``)."""


@dataclass(frozen=True)
class Key:
    """One option.

    Args:
        kind: ``float``, ``int``, ``bool``, ``str`` or ``nodes`` (a list of module names); numbers
            written as strings are converted.
        default: Value when the key is absent (or null); :data:`DERIVED` when the run works it out.
        low, high: Bounds of a number, inclusive unless ``low_open`` / ``high_open``.
        choices: The allowed names of a ``str``.
        removed: Names that were once allowed, each with why they are not any more.
        shown_default: How the docs state the default, when it is not the value itself.
        doc: One line on what the key does.
    """

    kind: str
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    removed: Mapping[str, str] = field(default_factory=dict)
    shown_default: str | None = None
    doc: str = ''

    def range_text(self) -> str | None:
        """The allowed range in words (``>= 1``, ``in (0, 1]``), or None when any value of the kind is."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return None

    def in_range(self, value: float) -> bool:
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return low_ok and high_ok

    def check(self, value: Any, where: str) -> Any:
        """``value`` converted to the key's kind; None stays None (the default applies).

        Raises:
            OptionError: ``<where> must be <range>, got <value>`` and the like.
        """
        if value is None:
            return None
        value = convert(value, self.kind, where)
        if self.kind == 'str':
            if value in self.removed:
                raise OptionError(f"{where} '{value}' is not offered: {self.removed[value]}; use one of "
                                  f'{self.choices}')
            if self.choices and value not in self.choices:
                raise OptionError(f"{where} must be one of {self.choices}, got '{value}'")
        elif self.kind in ('int', 'float') and not self.in_range(value):
            off = '; ~ turns it off' if self.default is None and self.shown_default == 'off' else ''
            about = f' ({self.doc})' if self.doc else ''
            raise OptionError(f'{where} must be {self.range_text()}, got {value:g}{off}{about}')
        return value

    def docs_default(self) -> str:
        """The default as the docs' key table writes it."""
        if self.shown_default is not None:
            return self.shown_default
        if isinstance(self.default, bool):
            return str(self.default).lower()
        if isinstance(self.default, (int, float)):
            return f'{self.default:g}'
        if isinstance(self.default, str):
            return f'`{self.default}`'
        raise ValueError(f'a key defaulting to {self.default!r} needs shown_default')


@dataclass(frozen=True)
class Section:
    """A mapping of :class:`Key` under one place in the options, e.g. ``train:soft_target``."""

    where: str
    keys: Mapping[str, Key]

    def check(self, section: Any, where: str | None = None) -> dict:
        """``section`` (a mapping or None) with unknown keys refused and values checked; absent keys stay absent."""
        where = where or self.where
        if section is None:
            return {}
        if not isinstance(section, Mapping):
            raise OptionError(f'{where}: expected a mapping of keys, got {section!r}')
        reject_unknown(section, self.keys, where)
        return {key: self.keys[key].check(value, f'{where}:{key}') for key, value in section.items()}

    def resolved(self, section: Any, where: str | None = None) -> dict:
        """Every key of the section: the checked value, else its default (:data:`DERIVED` left for the caller)."""
        checked = self.check(section, where)
        values = {}
        for name, key in self.keys.items():
            value = checked.get(name)
            values[name] = key.default if value is None else value
        return values

    def value(self, name: str, value: Any, where: str | None = None) -> Any:
        """One key's value checked (its default for None), for classes that take these values directly."""
        checked = self.keys[name].check(value, f'{where or self.where}:{name}')
        return self.keys[name].default if checked is None else checked


IBSD_LOOP = Section('train:ibsd', {
    'nodes': Key('nodes', DERIVED, shown_default="the arch's `ibsd_nodes()`",
                 doc='module names of the feature nodes f0..fK'),
    'estimator_steps': Key('int', 1, low=1, doc='estimator updates per student update'),
    'positions': Key('float', 1.0, low=0, low_open=True, high=1,
                     doc='fraction of the spatial positions at which the IB terms are evaluated each step'),
    'log_grad_ratios': Key('bool', False, doc="log each term's parameter-gradient norm over the pixel term's"),
    'log_pairs': Key('bool', False, doc="log each node pair's MI bound and estimator NLL"),
    'grad_clip_norm': Key('float', None, low=0, low_open=True, shown_default='off',
                          doc="clip the norm of the student's gradient"),
    'max_bad_steps': Key('int', 5, low=1, doc='consecutive non-finite iterations after which the run stops'),
})

SOFT_TARGET = Section('train:soft_target', {
    'source': Key('str', 'snapshot', choices=('snapshot', 'ema'),
                  removed={'current': 'with the L1 wavelet loss it trains exactly as alpha = 0 (see '
                                      'docs/method.md, "The soft target under an L1 loss")'},
                  doc='teacher of the soft target'),
    'alpha_max': Key('float', 0.8, low=0, high=1, doc="final alpha (PS-KD's alpha_T)"),
    'start_iters': Key('int', 0, low=0, doc='iterations on the plain HR target before the ramp starts'),
    'ramp_iters': Key('int', DERIVED, low=1, shown_default='`total_iter - start_iters`',
                      doc='iterations over which alpha rises from 0 to alpha_max'),
    'refresh_iters': Key('int', DERIVED, low=1, shown_default='one epoch',
                         doc='snapshot period in iterations (an epoch of fewer than 10 is warned about: so recent '
                             'a teacher is nearly the student)'),
})

GRADIENT_SHARE = Section('loss_weight', {
    'grad_ratio': Key('float', None, low=0, low_open=True, shown_default='required',
                      doc="target ratio of the term's gradient norm to the pixel term's"),
    'smoothing': Key('float', 0.2, low=0, low_open=True, high=1,
                     doc='weight of each new measurement in the geometric average'),
})

SCHEDULER_KEYS = {'type': 'str', 'milestones': 'ints', 'gamma': 'float', 'restart_weights': 'floats',
                  'restarts': 'ints', 'periods': 'ints', 'eta_min': 'float', 'last_epoch': 'int'}
"""The keys of BasicSR's schedulers (checked for kind only: their ranges are torch's)."""
