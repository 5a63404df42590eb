"""What a study measured: per-image test scores and training logs, read back from the study folder."""
from __future__ import annotations

import csv
import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ibsd.study.intervals import bootstrap_interval, t_interval, verdict
from ibsd.study.spec import SAFE_NAME, Run, Study

ITERATION = re.compile(r'\[[^\]]*iter:\s*([\d,]+), lr:\([^)]*\)\]\s*(?:\[eta:[^\]]*\]\s*)?(.*)$')
TERM = re.compile(r'(\w+): ([-+0-9.eE]+|nan|inf)')
VALIDATION = re.compile(r'Validation (\S+)')
END_OF_TRAINING = 'End of training.'
METRIC = re.compile(r'# (\w+): ([-+0-9.eE]+|nan|inf)')
METRICS = ('psnr', 'ssim', 'lpips')


@dataclass(frozen=True)
class Key:
    """One evaluated student on one test set."""
    variant: str
    seed: int
    iteration: int
    test_set: str


def read_metric_table(path: Path) -> dict[str, dict[str, float]]:
    """``image -> {metric: value}`` from a ``<set>_metrics.csv`` written by ``ibsd-test`` (mean row left out)."""
    with open(path, newline='') as handle:
        rows = list(csv.DictReader(handle))
    return {row['image']: {m: float(row[m]) for m in METRICS if m in row and row[m] not in (None, '')}
            for row in rows if row['image'] != 'mean'}


def collect_scores(study: Study, out: Path, totals: dict[str, int],
                   selected: dict[str, int] | None = None) -> dict[Key, dict[str, dict[str, float]]]:
    """Every per-image table the study has written so far, keyed by student and test set (``selected``:
    run name -> its early-stopping iteration, also read)."""
    from ibsd.study.runner import evaluated_iterations
    scores = {}
    for run in study.runs:
        for iteration in evaluated_iterations(study, totals[run.name], (selected or {}).get(run.name)):
            for name in study.test_sets:
                path = out / 'results' / f'{run.name}_i{iteration}' / f'{SAFE_NAME.sub("_", name)}_metrics.csv'
                if path.exists():
                    scores[Key(run.variant, run.seed, iteration, name)] = read_metric_table(path)
    return scores


def image_mean(table: dict[str, dict[str, float]], metric: str) -> float:
    values = [row[metric] for row in table.values() if metric in row]
    return sum(values) / len(values) if values else math.nan


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass
class Comparison:
    """A variant against the baseline over the seeds both have (paired by seed), with 95% intervals of
    the mean difference (see :mod:`ibsd.study.intervals`)."""
    per_seed: dict[int, float]
    mean: float
    positive: int
    images_better: float
    images: int
    t_interval: tuple[float, float] = (math.nan, math.nan)
    bootstrap: tuple[float, float] = (math.nan, math.nan)

    @property
    def verdict(self) -> str:
        return verdict(self.t_interval, [self.bootstrap])


def compare(scores: dict, study: Study, variant: str, test_set: str, iteration_of: dict[str, int],
            metric: str = 'psnr', reference: str | None = None) -> Comparison | None:
    """Paired differences ``variant - reference`` (default: the baseline) of ``metric`` per seed
    (lower-is-better metrics are negated, so that positive always means the variant is better), and the
    share of images it improves."""
    sign = -1.0 if metric == 'lpips' else 1.0
    reference = reference or study.baseline
    seeds = sorted({k.seed for k in scores if k.variant == variant} & {k.seed for k in scores
                                                                       if k.variant == reference})
    per_seed, image_diffs = {}, defaultdict(list)
    for seed in seeds:
        ours = scores.get(Key(variant, seed, iteration_of[variant], test_set))
        theirs = scores.get(Key(reference, seed, iteration_of[reference], test_set))
        if ours is None or theirs is None:
            continue
        per_seed[seed] = sign * (image_mean(ours, metric) - image_mean(theirs, metric))
        for image in ours.keys() & theirs.keys():
            if metric in ours[image] and metric in theirs[image]:
                image_diffs[image].append(sign * (ours[image][metric] - theirs[image][metric]))
    if not per_seed:
        return None
    image_means = [statistics.fmean(v) for v in image_diffs.values()]
    complete = sorted(image for image, values in image_diffs.items() if len(values) == len(per_seed))
    matrix = [[image_diffs[image][i] for image in complete] for i in range(len(per_seed))]
    finite = complete and all(math.isfinite(d) for row in matrix for d in row)
    return Comparison(per_seed, statistics.fmean(per_seed.values()), sum(d > 0 for d in per_seed.values()),
                      sum(d > 0 for d in image_means), len(image_means), t_interval(list(per_seed.values())),
                      bootstrap_interval(matrix) if finite else (math.nan, math.nan))


def per_image_differences(scores: dict, study: Study, variant: str, test_set: str,
                          iteration_of: dict[str, int]) -> dict[str, float]:
    """``image -> mean over shared seeds of (variant - baseline) PSNR``."""
    diffs = defaultdict(list)
    for key, ours in scores.items():
        if key.variant != variant or key.test_set != test_set or key.iteration != iteration_of[variant]:
            continue
        theirs = scores.get(Key(study.baseline, key.seed, iteration_of[study.baseline], test_set))
        for image in (ours.keys() & theirs.keys()) if theirs else ():
            diffs[image].append(ours[image]['psnr'] - theirs[image]['psnr'])
    return {image: statistics.fmean(values) for image, values in sorted(diffs.items())}


# --------------------------------------------------------------------------- training logs
@dataclass
class TrainingLog:
    """Loss terms by iteration and validation metrics by iteration (the newest launch wins on repeats)."""
    terms: dict[str, dict[int, float]]
    validation: dict[str, dict[int, float]]


def read_training_log(path: Path) -> TrainingLog:
    terms: dict[str, dict[int, float]] = defaultdict(dict)
    validation: dict[str, dict[int, float]] = defaultdict(dict)
    iteration, validating = None, None
    if not path.exists():
        return TrainingLog({}, {})
    for line in path.read_text(errors='replace').splitlines():
        found = ITERATION.search(line)
        if found:
            iteration = int(found[1].replace(',', ''))
            for name, value in TERM.findall(found[2]):
                if name not in ('time', 'data'):
                    terms[name][iteration] = float(value)
            validating = None
            continue
        if END_OF_TRAINING in line:  # BasicSR validates once more after it: of iteration total_iter, which
            iteration = validating = None  # the last logged iteration line need not be; left out
            continue
        found = VALIDATION.search(line)
        if found:
            validating = found[1]
            continue
        found = METRIC.search(line)
        if found and validating is not None and iteration is not None:
            validation[f'{validating} {found[1]}'][iteration] = float(found[2])
    return TrainingLog(dict(terms), dict(validation))


def training_logs(study: Study, out: Path) -> dict[Run, TrainingLog]:
    return {run.name: read_training_log(out / 'logs' / f'{run.name}.log') for run in study.runs}
