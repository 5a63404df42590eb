"""95% intervals of a study's paired differences (variant - baseline).

Two intervals answer two questions:

- :func:`t_interval` over the per-seed differences (each the mean over the test images): how much
  would the difference move with other training seeds? mean +- t_{(1+c)/2, n-1} s / sqrt(n);
  undefined with one seed.
- :func:`bootstrap_interval` over images x seeds: how much would it move with other seeds *and*
  other test images of the same kind? The [seeds, images] matrix of per-image differences is
  resampled with replacement along both axes at once (seeds and images drawn independently) and
  the percentile interval of the resampled means is returned. With one seed it is the ordinary
  percentile bootstrap over images.

A difference whose interval holds 0 is reported as "no measured difference"; a variant run with one
seed is "one seed: not tested" (the bootstrap over its images alone says nothing about other seeds).
Images missing from some seed's table are left out of the bootstrap (it needs the full matrix).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # a fixed stream: rewriting the report gives the same interval
CHUNK = 1_000  # resamples per vectorised batch


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean of ``values``; (nan, nan) for fewer than two values."""
    from scipy.stats import t

    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        return math.nan, math.nan
    half = t.ppf((1 + confidence) / 2, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean() - half), float(values.mean() + half)


def bootstrap_interval(differences: np.ndarray, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile interval of the mean of a [seeds, images] matrix, resampling both axes.

    Raises:
        ValueError: for a matrix that is not 2-D, is empty, or holds a non-finite value.
    """
    differences = np.asarray(differences, dtype=np.float64)
    if differences.ndim != 2 or differences.size == 0:
        raise ValueError(f'expected a non-empty [seeds, images] matrix, got shape {differences.shape}')
    if not np.isfinite(differences).all():
        raise ValueError('the differences hold a non-finite value')
    seeds, images = differences.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        count = min(CHUNK, resamples - start)
        rows = rng.integers(0, seeds, size=(count, seeds))
        columns = rng.integers(0, images, size=(count, images))
        picked = differences[rows[:, :, None], columns[:, None, :]]  # [count, seeds, images]
        means[start:start + count] = picked.mean(axis=(1, 2))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def holds_zero(interval: tuple[float, float]) -> bool:
    """True when the interval contains 0 (or is undefined): no measured difference."""
    low, high = interval
    return math.isnan(low) or math.isnan(high) or low <= 0 <= high


ONE_SEED = 'one seed: not tested'


def verdict(seed_interval: tuple[float, float], other_intervals: Sequence[tuple[float, float]] = ()) -> str:
    """'better' / 'worse' when the interval over seeds and every other defined interval lie on that side of
    0, else 'no measured difference'. Without an interval over seeds (one seed) nothing is tested: a
    bootstrap over the images of one training run says nothing about another run."""
    if any(math.isnan(b) for b in seed_interval):
        return ONE_SEED
    defined = [seed_interval] + [i for i in other_intervals if not (math.isnan(i[0]) or math.isnan(i[1]))]
    if any(holds_zero(i) for i in defined):
        return 'no measured difference'
    if all(i[0] > 0 for i in defined):
        return 'better'
    if all(i[1] < 0 for i in defined):
        return 'worse'
    return 'no measured difference'
