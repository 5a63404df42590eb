"""The study's PNG plots (matplotlib, no display needed)."""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ibsd.study.results import TrainingLog, image_mean
from ibsd.study.spec import Study

PAIR_TERM = re.compile(r'^(mi|nll)_(\d+)$')
LOSS_TERMS = ('l_pix', 'l_mi', 'l_wav', 'l_est', 'alpha', 'g_mi', 'g_wav', 'w_mi', 'w_wav')
SMOOTH = 5


def _pyplot():
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    return plt


def _smooth(values: np.ndarray, width: int = SMOOTH) -> np.ndarray:
    if len(values) < width:
        return values
    kernel = np.ones(width) / width
    padded = np.pad(values, (width // 2, width - 1 - width // 2), mode='edge')
    return np.convolve(padded, kernel, mode='valid')


def _by_variant(study: Study, logs: dict[str, TrainingLog], pick: Callable[[TrainingLog], dict[int, float]]):
    """``variant -> (iterations, values [seeds x iterations])`` on the iterations every seed logged."""
    grouped = defaultdict(list)
    for run in study.runs:
        series = pick(logs[run.name]) if run.name in logs else {}
        if series:
            grouped[run.variant].append(series)
    curves = {}
    for variant, series in grouped.items():
        iterations = sorted(set.intersection(*(set(s) for s in series)))
        if iterations:
            curves[variant] = (np.array(iterations), np.array([[s[i] for i in iterations] for s in series]))
    return curves


def _colours(study: Study) -> dict[str, str]:
    """One colour per variant, the same in every plot."""
    return {variant: f'C{index % 10}' for index, variant in enumerate(study.variants)}


def _band_plot(axis, curves: dict, colours: dict[str, str], smooth: bool = False) -> None:
    for variant, (iterations, values) in curves.items():
        mean = values.mean(axis=0)
        low, high = values.min(axis=0), values.max(axis=0)
        if smooth:
            mean, low, high = _smooth(mean), _smooth(low), _smooth(high)
        axis.plot(iterations, mean, color=colours[variant], label=f'{variant} ({len(values)} seeds)')
        if len(values) > 1:
            axis.fill_between(iterations, low, high, color=colours[variant], alpha=0.2)
    axis.grid(alpha=0.3)


def validation_curves(study: Study, logs: dict[str, TrainingLog], path: Path, colours: dict[str, str]) -> bool:
    """Validation PSNR during training (mean and min-max band over seeds, a line per variant)."""
    names = sorted({name for log in logs.values() for name in log.validation if name.endswith(' psnr')})
    if not names:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 3.8), squeeze=False)
    for axis, name in zip(axes[0], names):
        _band_plot(axis, _by_variant(study, logs, lambda log: log.validation.get(name, {})), colours)
        axis.set(title=f'validation: {name}', xlabel='iteration', ylabel='Y-PSNR (dB)')
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def test_curves(study: Study, scores: dict, path: Path, colours: dict[str, str]) -> bool:
    """Test-set PSNR of the evaluated students against their iteration."""
    iterations = sorted({k.iteration for k in scores})
    if len(iterations) < 2:
        return False
    plt = _pyplot()
    sets = list(study.test_sets)
    figure, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 3.8), squeeze=False)
    for axis, test_set in zip(axes[0], sets):
        curves = {}
        for variant in study.variants:
            by_seed = defaultdict(dict)
            for key, table in scores.items():
                if key.variant == variant and key.test_set == test_set:
                    by_seed[key.seed][key.iteration] = image_mean(table, 'psnr')
            common = sorted(set.intersection(*(set(s) for s in by_seed.values()))) if by_seed else []
            if common:
                curves[variant] = (np.array(common), np.array([[s[i] for i in common] for s in by_seed.values()]))
        _band_plot(axis, curves, colours)
        axis.set(title=f'test: {test_set}', xlabel='iteration', ylabel='Y-PSNR (dB)')
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def loss_terms(study: Study, logs: dict[str, TrainingLog], path: Path, colours: dict[str, str]) -> bool:
    """Each logged loss term over training (smoothed, mean over seeds), a line per variant."""
    terms = [t for t in LOSS_TERMS if any(t in log.terms for log in logs.values())]
    if not terms:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(terms), figsize=(4.2 * len(terms), 3.5), squeeze=False)
    for axis, term in zip(axes[0], terms):
        _band_plot(axis, _by_variant(study, logs, lambda log: log.terms.get(term, {})), colours,
                   smooth=True)
        axis.set(title=term, xlabel='iteration')
        if term != 'alpha':
            axis.set_yscale('symlog', linthresh=1e-4)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def information_plane(study: Study, logs: dict[str, TrainingLog], path: Path) -> bool:
    """Per adjacent node pair: the CLUB bound (``mi_k``) and the estimator NLL (``nll_k``) over training,
    from runs logged with ``train: ibsd: log_pairs: true``; one line per pair, mean over seeds and variants
    that log them (each variant its own line style)."""
    pairs = sorted({int(m[2]) for log in logs.values() for t in log.terms if (m := PAIR_TERM.match(t))})
    if not pairs:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    styles = ['-', '--', ':', '-.']
    for (kind, title), axis in zip((('mi', 'CLUB bound of I(f_k-1; f_k)'), ('nll', 'estimator NLL')), axes):
        for v_index, variant in enumerate(study.variants):
            for k in pairs:
                curves = _by_variant(study, logs, lambda log: log.terms.get(f'{kind}_{k}', {}))
                if variant in curves:
                    iterations, values = curves[variant]
                    axis.plot(iterations, _smooth(values.mean(axis=0)), styles[v_index % len(styles)],
                              color=f'C{k - 1}', label=f'{variant} pair {k}')
        axis.set(title=title, xlabel='iteration')
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def per_image(study: Study, scores: dict, iteration_of: dict[str, int], differences: Callable, path: Path,
              colours: dict[str, str]) -> bool:
    """Per-image PSNR difference (variant - baseline, mean over shared seeds), a panel per test set."""
    variants = [v for v in study.variants if v != study.baseline]
    panels = [(s, {v: differences(scores, study, v, s, iteration_of) for v in variants}) for s in study.test_sets]
    panels = [(s, d) for s, d in panels if any(d.values())]
    if not panels:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 3.2 * len(panels)), squeeze=False)
    for axis, (test_set, by_variant) in zip(axes[:, 0], panels):
        images = sorted({i for d in by_variant.values() for i in d})
        width = 0.8 / max(1, len(by_variant))
        for index, (variant, diffs) in enumerate(by_variant.items()):
            positions = np.arange(len(images)) + index * width
            axis.bar(positions, [diffs.get(i, np.nan) for i in images], width, label=variant,
                     color=colours[variant])
        axis.axhline(0, color='black', linewidth=0.8)
        axis.set(title=f'{test_set}: Y-PSNR minus {study.baseline}, per image (mean over seeds)', ylabel='dB')
        if len(images) <= 40:
            axis.set_xticks(np.arange(len(images)) + 0.4 - width / 2, images, rotation=90, fontsize=7)
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return True


def write_all(study: Study, out: Path, scores: dict, logs: dict[str, TrainingLog], iteration_of: dict[str, int],
              differences: Callable, hidden: Sequence[str] = ()) -> list[Path]:
    """Every plot the data allows, without the ``hidden`` variants (each variant keeps its colour); returns
    the files written."""
    colours = _colours(study)
    study = replace(study, variants={k: v for k, v in study.variants.items() if k not in hidden})
    written = []
    for name, make in (('validation.png', lambda p: validation_curves(study, logs, p, colours)),
                       ('test_curves.png', lambda p: test_curves(study, scores, p, colours)),
                       ('losses.png', lambda p: loss_terms(study, logs, p, colours)),
                       ('information_plane.png', lambda p: information_plane(study, logs, p)),
                       ('per_image.png', lambda p: per_image(study, scores, iteration_of, differences, p, colours))):
        if make(out / name):
            written.append(out / name)
    from ibsd.study.visual import crop_strip
    strip = crop_strip(study, out, scores, iteration_of)
    if strip is not None:
        written.append(strip)
    return written

