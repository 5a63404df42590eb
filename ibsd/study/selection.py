"""Early stopping and convergence, read from the validation curves the runs logged while training.

With ``early_stopping: <metric>`` in a study file, each run's checkpoint with the best validation score
(the run's ``datasets:val`` set, every ``val:val_freq`` iterations) is evaluated on the test sets beside
the last one, and the report adds rows for these selected students. The rule is the same for every
variant: the highest score, the earliest iteration on ties. When a test set is the validation set, its
score of the selected students is optimistic (chosen on the same images); the other test sets are not.

The convergence table reads the same curves: the gain of each variant's mean validation score over the
last quarter of its run (a run has reached its plateau when that gain is below ``PLATEAU_DB``).
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from ibsd.study.results import TrainingLog, read_training_log
from ibsd.study.spec import Run, Study

SELECTED = -1
"""``Key.iteration`` of a run's selected checkpoint in the report's score tables."""
PLATEAU_DB = 0.02


def validation_name(options: dict) -> str:
    """The name BasicSR logs the validation set under (``Validation <name>``)."""
    return str(options['datasets']['val'].get('name', 'val'))


def validation_curve(log: TrainingLog, options: dict, metric: str) -> dict[int, float]:
    return dict(log.validation.get(f'{validation_name(options)} {metric}', {}))


def selected_iteration(curve: dict[int, float], total: int, interval: int) -> int | None:
    """The validated iteration with the best score among those with a checkpoint (multiples of ``interval``
    up to ``total``); the earliest on ties; None before any validation, or when every score is NaN."""
    candidates = {i: v for i, v in curve.items() if 0 < i <= total and i % interval == 0 and not math.isnan(v)}
    if not candidates:
        return None
    best = max(candidates.values())
    return min(i for i, v in candidates.items() if v == best)


def run_selection(study: Study, out: Path, run: Run, options: dict) -> int | None:
    """The selected iteration of ``run`` from its log in the study folder ``out`` (None without
    ``early_stopping`` or before the run validated)."""
    if study.early_stopping is None:
        return None
    log = read_training_log(out / 'logs' / f'{run.name}.log')
    return selected_iteration(validation_curve(log, options, study.early_stopping), options['train']['total_iter'],
                              int(options['logger']['save_checkpoint_freq']))


@dataclass(frozen=True)
class LastQuarter:
    """A variant's mean validation score (over the seeds that logged both iterations) at the start and the
    end of the last quarter of its run."""
    start: int
    end: int
    seeds: int
    start_value: float
    end_value: float

    @property
    def gain(self) -> float:
        return self.end_value - self.start_value

    @property
    def plateau(self) -> bool:
        return self.gain < PLATEAU_DB


def last_quarter(curves: list[dict[int, float]], total: int) -> LastQuarter | None:
    """The last-quarter gain of the mean of ``curves`` (one per seed); None when no seed validated both at or
    before 3/4 of ``total`` and after it."""
    common = set.intersection(*(set(c) for c in curves)) if curves else set()
    starts = [i for i in common if 0 < i <= 0.75 * total]
    ends = [i for i in common if 0.75 * total < i <= total]
    if not starts or not ends:
        return None
    start, end = max(starts), max(ends)
    return LastQuarter(start, end, len(curves), statistics.fmean(c[start] for c in curves),
                       statistics.fmean(c[end] for c in curves))
