"""The key table of docs/training.md states the defaults the code uses (both read ibsd.options.schema)."""
from __future__ import annotations

import re

import pytest

from ibsd.errors import OptionError
from ibsd.options.schema import GRADIENT_SHARE, IBSD_LOOP, SOFT_TARGET, Key, Section
from tests.helpers import REPO

DOCS = REPO / 'docs' / 'training.md'
ROW = re.compile(r'^\| `train: (ibsd|soft_target): (\w+)` \| ([^|]+?) \|', re.M)
SECTIONS = {'ibsd': IBSD_LOOP, 'soft_target': SOFT_TARGET}


def documented_defaults() -> dict[tuple[str, str], str]:
    return {(section, key): default.strip() for section, key, default in ROW.findall(DOCS.read_text())}


def test_every_key_of_the_ibsd_sections_is_documented_with_its_default():
    documented = documented_defaults()
    declared = {(name, key): spec.docs_default() for name, section in SECTIONS.items()
                for key, spec in section.keys.items()}
    assert documented == declared


def test_the_gradient_share_smoothing_default_is_the_documented_one():
    default = GRADIENT_SHARE.keys['smoothing'].default
    assert f'`smoothing: {default:g}`' in DOCS.read_text()


@pytest.mark.parametrize('key, value, message', [
    (Key('int', 1, low=1), 0, 'x must be >= 1, got 0'),
    (Key('float', 1.0, low=0, low_open=True, high=1), 1.5, 'x must be in (0, 1], got 1.5'),
    (Key('float', 0.2, low=0, low_open=True), 0, 'x must be > 0, got 0'),
    (Key('str', 'a', choices=('a', 'b')), 'c', "x must be one of ('a', 'b'), got 'c'"),
    (Key('str', 'a', choices=('a',), removed={'old': 'it did nothing'}), 'old',
     "x 'old' is not offered: it did nothing; use one of ('a',)"),
    (Key('int', 1), 1.5, 'x: expected a whole number, got 1.5'),
])
def test_a_value_out_of_its_declared_range_is_refused_naming_the_key(key, value, message):
    with pytest.raises(OptionError) as caught:
        key.check(value, 'x')
    assert str(caught.value) == message


def test_resolved_sections_fill_defaults_and_convert_yaml_strings():
    section = Section('s', {'n': Key('int', 3, low=1), 'f': Key('float', 0.5), 'off': Key('float', None)})
    assert section.resolved({'f': '1e-1'}) == {'n': 3, 'f': 0.1, 'off': None}
    assert section.resolved(None) == {'n': 3, 'f': 0.5, 'off': None}
    with pytest.raises(OptionError, match="s: unknown key 'nn': did you mean 'n'"):
        section.resolved({'nn': 2})


def test_the_classes_taking_these_values_use_the_declared_ranges():
    from ibsd.models.divergence_guard import DivergenceGuard
    from ibsd.models.gradient_share import GradientShare
    from ibsd.models.position_sampling import PositionSampler
    with pytest.raises(OptionError, match=r'^train:ibsd:max_bad_steps must be >= 1, got 0 \(consecutive non-finite'):
        DivergenceGuard(0)
    with pytest.raises(OptionError, match=r'^train:ibsd:positions must be in \(0, 1\], got 0 \(fraction of the '
                                          'spatial positions'):
        PositionSampler(0.0, 0)
    with pytest.raises(OptionError, match=r'^smoothing must be in \(0, 1\], got 2 \(weight of each new'):
        GradientShare(0.1, smoothing=2)
    with pytest.raises(OptionError, match=r'^train:ibsd:grad_clip_norm must be > 0, got -1; ~ turns it off \(clip'):
        IBSD_LOOP.value('grad_clip_norm', -1)
    assert DivergenceGuard(IBSD_LOOP.keys['max_bad_steps'].default).max_bad_steps == 5
