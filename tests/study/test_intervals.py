"""95% intervals of a study's paired differences, against scipy on made-up numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ibsd.study.intervals import bootstrap_interval, holds_zero, t_interval, verdict
from ibsd.study.results import Key, compare
from ibsd.study.spec import load_study
from tests.study.helpers import study_file, table


def test_t_interval_equals_scipys():
    values = [0.031, -0.012, 0.055, 0.02]
    expected = stats.ttest_1samp(values, 0).confidence_interval(0.95)
    assert t_interval(values) == pytest.approx((expected.low, expected.high), rel=1e-12)
    two = [0.1, 0.3]  # two seeds: t with one degree of freedom, 12.7 standard errors
    assert t_interval(two) == pytest.approx((0.2 - 12.7062047 * 0.1, 0.2 + 12.7062047 * 0.1), rel=1e-7)
    assert all(math.isnan(b) for b in t_interval([0.2]))


def test_bootstrap_over_images_of_one_seed_matches_scipys_percentile_bootstrap():
    rng = np.random.default_rng(1)
    differences = rng.normal(0.05, 0.2, size=20)
    ours = bootstrap_interval(differences[None, :], resamples=20_000)
    theirs = stats.bootstrap((differences,), np.mean, method='percentile', n_resamples=20_000,
                             random_state=np.random.default_rng(2)).confidence_interval
    width = theirs.high - theirs.low
    assert ours[0] == pytest.approx(theirs.low, abs=0.03 * width)
    assert ours[1] == pytest.approx(theirs.high, abs=0.03 * width)


def test_bootstrap_resamples_the_seeds_too():
    """Seeds that disagree widen the interval beyond what the images alone give."""
    rng = np.random.default_rng(3)
    images = rng.normal(0, 0.05, size=(1, 12))
    agreeing = np.repeat(images, 3, axis=0)
    disagreeing = agreeing + np.array([[-0.3], [0.0], [0.3]])
    narrow, wide = bootstrap_interval(agreeing), bootstrap_interval(disagreeing)
    assert wide[1] - wide[0] > 3 * (narrow[1] - narrow[0])
    assert bootstrap_interval(disagreeing) == wide  # a fixed stream: the same report every time
    with pytest.raises(ValueError, match='non-finite'):
        bootstrap_interval(np.array([[0.1, math.nan]]))


def test_bootstrap_resamples_rows_and_columns_as_a_loop_over_the_same_draws_would():
    differences = np.array([[0.1, 0.5, -0.2, 0.9], [0.0, 0.3, 0.2, -0.4], [1.0, -1.0, 0.25, 0.6]])
    rng = np.random.default_rng(7)
    means = []
    for _ in range(3):  # the chunks of 1,000 resamples the function draws
        rows, columns = rng.integers(0, 3, size=(1000, 3)), rng.integers(0, 4, size=(1000, 4))
        means += [np.mean([[differences[r, c] for c in cs] for r in rs]) for rs, cs in zip(rows, columns)]
    expected = np.percentile(means, [2.5, 97.5])
    assert bootstrap_interval(differences, resamples=3000, seed=7) == pytest.approx(tuple(expected), rel=1e-12)
    transposed = bootstrap_interval(differences.T.copy(), resamples=3000, seed=7)
    assert transposed != pytest.approx(tuple(expected))  # the axes are not interchangeable


def test_verdicts():
    assert holds_zero((-0.1, 0.2)) and not holds_zero((0.01, 0.2))
    assert verdict((0.01, 0.2), [(0.02, 0.1)]) == 'better'
    assert verdict((-0.3, -0.01), [(math.nan, math.nan)]) == 'worse'
    assert verdict((0.01, 0.2), [(-0.01, 0.1)]) == 'no measured difference'
    assert verdict((-0.01, 0.2), [(0.01, 0.1)]) == 'no measured difference'
    assert verdict((math.nan, math.nan), [(0.02, 0.1)]) == 'one seed: not tested'


def test_comparisons_carry_both_intervals(tmp_path):
    study = load_study(study_file(tmp_path))
    scores = {}
    for seed, shift in enumerate((0.2, 0.3, 0.25)):
        scores[Key('L1', seed, 4, 'other')] = table({'a': 20.0, 'b': 30.0, 'c': 25.0})
        scores[Key('IBSD', seed, 4, 'other')] = table({'a': 20.0 + shift, 'b': 30.0 + shift + 0.1, 'c': 25.0 + shift})
    result = compare(scores, study, 'IBSD', 'other', {'L1': 4, 'IBSD': 4})
    per_seed = list(result.per_seed.values())
    assert result.t_interval == pytest.approx(tuple(stats.ttest_1samp(per_seed, 0).confidence_interval()), rel=1e-9)
    low, high = result.bootstrap
    assert 0.2 <= low < result.mean < high <= 0.4
    assert result.verdict == 'better'
    del scores[Key('IBSD', 1, 4, 'other')]['c']  # an image one seed lacks: out of the bootstrap, not the t-interval
    partial = compare(scores, study, 'IBSD', 'other', {'L1': 4, 'IBSD': 4})
    assert partial.per_seed[1] == pytest.approx(0.35) and partial.bootstrap[0] > 0.2
    one_seed = compare({k: v for k, v in scores.items() if k.seed == 0}, study, 'IBSD', 'other', {'L1': 4, 'IBSD': 4})
    assert one_seed.verdict == 'one seed: not tested'
