"""A study's report: ``table.md`` / ``table.csv`` (mean +- std over seeds, paired differences with the
baseline), ``contrasts.csv`` (the study file's pairs of other variants) and PNG plots (validation curves,
loss terms, the per-pair MI bound and estimator NLL, per-image differences, a crop strip where the
baseline and a variant differ most)."""
from __future__ import annotations

import csv
import datetime
import math
import platform
from pathlib import Path

from ibsd.study.results import (
    Comparison,
    Key,
    collect_scores,
    compare,
    image_mean,
    mean_std,
    per_image_differences,
    training_logs,
)
from ibsd.study.selection import PLATEAU_DB, SELECTED, last_quarter, run_selection, validation_curve, validation_name
from ibsd.study.spec import Study

LOWER_IS_BETTER = {'lpips'}
OFF_SCALE_DB = 2.0


def _signed(value: float, digits: int = 3) -> str:
    return '-' if math.isnan(value) else f'{value:+.{digits}f}'


def _interval(bounds: tuple[float, float]) -> str:
    return '-' if any(math.isnan(b) for b in bounds) else f'[{bounds[0]:+.3f}, {bounds[1]:+.3f}]'


def _pm(mean: float, std: float, digits: int, seeds: int) -> str:
    """``mean ± std``; a single seed has no spread to show."""
    if math.isnan(mean):
        return '-'
    return f'{mean:.{digits}f}' if seeds < 2 else f'{mean:.{digits}f} ± {std:.{digits}f}'


def metrics_present(scores: dict) -> list[str]:
    present = {m for table in scores.values() for row in table.values() for m in row}
    return [m for m in ('psnr', 'ssim', 'lpips') if m in present]


def summary_rows(study: Study, scores: dict, iteration_of: dict[str, int]) -> list[dict]:
    """One row per test set and variant at its final iteration."""
    rows = []
    metrics = metrics_present(scores)
    for test_set in study.test_sets:
        for variant in study.variants:
            keys = [k for k in scores if k.variant == variant and k.test_set == test_set
                    and k.iteration == iteration_of[variant]]
            if not keys:
                continue
            row = {'test_set': test_set, 'variant': variant, 'iteration': iteration_of[variant],
                   'seeds': ' '.join(str(k.seed) for k in sorted(keys, key=lambda k: k.seed)),
                   'images': len(scores[keys[0]])}
            for metric in metrics:
                row[f'{metric}_mean'], row[f'{metric}_std'] = mean_std([image_mean(scores[k], metric) for k in keys])
            if variant != study.baseline:
                for metric in metrics:
                    comparison = compare(scores, study, variant, test_set, iteration_of, metric)
                    if comparison is not None:
                        row[f'd_{metric}'] = comparison
            rows.append(row)
    return rows


def selected_scores(study: Study, scores: dict, selected: dict[str, int]) -> dict:
    """The scores of the early-stopped students, keyed with iteration :data:`SELECTED`."""
    run_of = {(r.variant, r.seed): r.name for r in study.runs}
    return {Key(k.variant, k.seed, SELECTED, k.test_set): table for k, table in scores.items()
            if selected.get(run_of.get((k.variant, k.seed))) == k.iteration}


def selected_rows(study: Study, scores: dict, selected: dict[str, int]) -> list[dict]:
    """Rows of the early-stopped students: each run at its own selected iteration (``iteration``
    'selected', ``selected_iterations`` 'seed:iteration ...')."""
    run_of = {(r.variant, r.seed): r.name for r in study.runs}
    chosen = selected_scores(study, scores, selected)
    rows = summary_rows(study, chosen, {variant: SELECTED for variant in study.variants})
    for row in rows:
        row['iteration'] = 'selected'
        row['selected_iterations'] = ' '.join(f'{seed}:{selected[run_of[(row["variant"], int(seed))]]}'
                                              for seed in row['seeds'].split())
    return rows


def contrast_rows(study: Study, scores: dict, iteration_of: dict[str, int], selected: dict[str, int]) -> list[dict]:
    """One row per test set, contrast ``(variant, reference)`` of the study file and student (the last
    iteration, then the early-stopped ones): ``d_<metric>`` is ``variant - reference`` paired by seed."""
    run_of = {(r.variant, r.seed): r.name for r in study.runs}
    chosen = selected_scores(study, scores, selected)
    rows = []
    for test_set in study.test_sets:
        for students, iterations, kind in ((scores, iteration_of, 'last'),
                                           (chosen, {v: SELECTED for v in study.variants}, 'selected')):
            for variant, reference in study.contrasts:
                comparisons = {m: compare(students, study, variant, test_set, iterations, m, reference)
                               for m in metrics_present(students)}
                comparisons = {m: c for m, c in comparisons.items() if c is not None}
                if 'psnr' not in comparisons:
                    continue
                seeds = list(comparisons['psnr'].per_seed)
                row = {'test_set': test_set, 'variant': variant, 'reference': reference,
                       'seeds': ' '.join(str(seed) for seed in seeds),
                       **{f'd_{m}': c for m, c in comparisons.items()}}
                if kind == 'last':
                    row['iteration'] = f'{iteration_of[variant]}' if iteration_of[variant] == iteration_of[reference] \
                        else f'{iteration_of[variant]}/{iteration_of[reference]}'
                else:
                    row['iteration'] = 'selected'
                    row['selected_iterations'] = ' '.join(
                        f'{seed}:{selected[run_of[(variant, seed)]]}/{selected[run_of[(reference, seed)]]}'
                        for seed in seeds)
                rows.append(row)
    return rows


def _comparison_cells(comparison: Comparison | None) -> list[str]:
    """The ``d_<metric>_*`` columns of ``table.csv`` / ``contrasts.csv``."""
    if comparison is None:
        return [''] * 9
    bounds = (*comparison.t_interval, *comparison.bootstrap)
    return [' '.join(f'{s}:{d:+.6f}' for s, d in comparison.per_seed.items()), f'{comparison.mean:+.6f}',
            f'{comparison.positive}/{len(comparison.per_seed)}', f'{comparison.images_better}/{comparison.images}',
            *('' if math.isnan(b) else f'{b:+.6f}' for b in bounds), comparison.verdict]


def _comparison_columns(metrics: list[str]) -> list[str]:
    return [f'd_{metric}_{column}' for metric in metrics
            for column in ('per_seed', 'mean', 'seeds_better', 'images_better', 't_low', 't_high', 'boot_low',
                           'boot_high', 'verdict')]


def write_contrasts_csv(path: Path, rows: list[dict], metrics: list[str]) -> None:
    columns = ['test_set', 'variant', 'reference', 'iteration', 'seeds', 'selected_iterations']
    with open(path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(columns + _comparison_columns(metrics))
        for row in rows:
            writer.writerow([row.get(c, '') for c in columns] +
                            [cell for metric in metrics for cell in _comparison_cells(row.get(f'd_{metric}'))])


def write_csv(path: Path, rows: list[dict], metrics: list[str]) -> None:
    columns = ['test_set', 'variant', 'iteration', 'seeds', 'images', 'selected_iterations']
    for metric in metrics:
        columns += [f'{metric}_mean', f'{metric}_std']
    columns += _comparison_columns(metrics)
    with open(path, 'w', newline='') as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            values = [row.get(c, '') for c in columns[:6]]
            for metric in metrics:
                values += [f"{row[f'{metric}_mean']:.6f}", f"{row[f'{metric}_std']:.6f}"]
            for metric in metrics:
                values += _comparison_cells(row.get(f'd_{metric}'))
            writer.writerow(values)


def markdown(study: Study, rows: list[dict], metrics: list[str], scores: dict, iteration_of: dict[str, int],
             contrasts: list[dict] = ()) -> str:
    digits = {'psnr': 3, 'ssim': 4, 'lpips': 4}
    names = {'psnr': 'Y-PSNR (dB)', 'ssim': 'SSIM', 'lpips': 'LPIPS'}
    lines = [f'# Study {study.name}', '',
             f'Study file `{study.path.name}`, base `{study.base.name}`, baseline **{study.baseline}**, '
             f'evaluated weights: {study.eval_weights} (auto: the EMA student when a run keeps one). '
             'Whole test images, Y channel, border of `scale` pixels cropped. '
             'Mean ± sample std over seeds (one seed: its value); '
             f'Δ = variant − {study.baseline} paired by seed (for LPIPS, {study.baseline} − variant: positive '
             'is better); "seeds better" counts seeds with Δ > 0, "images better" images whose Δ averaged over '
             'seeds is > 0. 95% intervals of the mean Δ PSNR: t over the per-seed Δ (needs 2 seeds), and a '
             'bootstrap resampling images and seeds together (10,000 resamples); "no measured difference" when '
             'an interval holds 0.' + (selection_note(study) if study.early_stopping else ''), '',
             f'Written {datetime.datetime.now().strftime("%Y-%m-%d %H:%M")} on '
             f'{platform.processor() or platform.machine()}, Python {platform.python_version()}.', '']
    for test_set in study.test_sets:
        set_rows = [r for r in rows if r['test_set'] == test_set]
        if not set_rows:
            continue
        lines += [f'## {test_set} ({set_rows[0]["images"]} images)', '',
                  '| variant | iteration | seeds | ' + ' | '.join(names[m] for m in metrics) +
                  ' | Δ PSNR per seed | mean Δ PSNR | seeds better | images better | 95% interval, t over seeds '
                  '| 95% interval, bootstrap over images × seeds | verdict |',
                  '|---' * (10 + len(metrics)) + '|']
        for row in set_rows:
            cells = [row['variant'], _iteration_cell(row), row['seeds']]
            cells += [_pm(row[f'{m}_mean'], row[f'{m}_std'], digits[m], len(row['seeds'].split())) for m in metrics]
            comparison = row.get('d_psnr')
            if comparison is None:
                cells += ['baseline' if row['variant'] == study.baseline else '-'] + [''] * 6
            else:
                cells += [', '.join(f'{d:+.3f}' for d in comparison.per_seed.values()), _signed(comparison.mean),
                          f'{comparison.positive}/{len(comparison.per_seed)}',
                          f'{comparison.images_better}/{comparison.images}', _interval(comparison.t_interval),
                          _interval(comparison.bootstrap), comparison.verdict]
            lines.append('| ' + ' | '.join(cells) + ' |')
        lines.append('')
        lines += contrast_table([r for r in contrasts if r['test_set'] == test_set])
        iterations = sorted({k.iteration for k in scores if k.test_set == test_set})
        if len(iterations) > 1:
            lines += [f'Y-PSNR by iteration (mean over seeds), {test_set}:', '',
                      '| variant | ' + ' | '.join(str(i) for i in iterations) + ' |',
                      '|---' * (1 + len(iterations)) + '|']
            for variant in study.variants:
                cells = []
                for iteration in iterations:
                    values = [image_mean(t, 'psnr') for k, t in scores.items()
                              if k.variant == variant and k.test_set == test_set and k.iteration == iteration]
                    cells.append(f'{mean_std(values)[0]:.3f}' if values else '-')
                lines.append(f'| {variant} | ' + ' | '.join(cells) + ' |')
            lines.append('')
    return '\n'.join(lines) + '\n'


def _iteration_cell(row: dict) -> str:
    if row['iteration'] != 'selected':
        return str(row['iteration'])
    return 'best val: ' + ', '.join(item.split(':')[1] for item in row['selected_iterations'].split())


def contrast_table(rows: list[dict]) -> list[str]:
    """Markdown lines of the contrasts of one test set (none without rows)."""
    if not rows:
        return []
    lines = ['Between variants (the study file\'s `contrasts`): Δ PSNR = variant − reference paired by seed; '
             'iterations "variant/reference" where they differ.', '',
             '| variant − reference | iteration | seeds | Δ PSNR per seed | mean Δ PSNR | seeds better | images better '
             '| 95% interval, t over seeds | 95% interval, bootstrap over images × seeds | verdict |',
             '|---' * 10 + '|']
    for row in rows:
        comparison: Comparison = row['d_psnr']
        lines.append('| ' + ' | '.join([
            f"{row['variant']} − {row['reference']}", _iteration_cell(row), row['seeds'],
            ', '.join(f'{d:+.3f}' for d in comparison.per_seed.values()), _signed(comparison.mean),
            f'{comparison.positive}/{len(comparison.per_seed)}', f'{comparison.images_better}/{comparison.images}',
            _interval(comparison.t_interval), _interval(comparison.bootstrap), comparison.verdict]) + ' |')
    return lines + ['']


def selection_note(study: Study) -> str:
    return (f' Rows "best val" are early-stopped students: each run\'s checkpoint with the best validation '
            f'{study.early_stopping} (earliest on ties, the same rule for every variant), with the iterations '
            'chosen per seed; on the validation set itself their scores are optimistic.')


def convergence(study: Study, out: Path, logs: dict, options: dict[str, dict]) -> str:
    """A Markdown table of each variant's validation-PSNR gain over the last quarter of its finished runs
    (empty for runs without a validation set)."""
    from ibsd.study.runner import finished
    lines = []
    for variant in study.variants:
        runs = [r for r in study.runs if r.variant == variant and r.name in logs
                and (options[r.name].get('datasets') or {}).get('val')
                and finished(study, out, r, options[r.name]['train']['total_iter'])]
        curves = [c for c in (validation_curve(logs[r.name], options[r.name], 'psnr') for r in runs) if c]
        if not curves:
            continue
        total = options[runs[0].name]['train']['total_iter']
        quarter = last_quarter(curves, total)
        if quarter is None:
            lines.append(f'| {variant} | {len(curves)} | - | - | - | not validated in both halves of the last '
                         'quarter yet |')
            continue
        lines.append(f'| {variant} | {quarter.seeds} | {quarter.start_value:.3f} @ {quarter.start} | '
                     f'{quarter.end_value:.3f} @ {quarter.end} | {quarter.gain:+.3f} | '
                     f'{"yes" if quarter.plateau else "no"} |')
    if not lines:
        return ''
    name = validation_name(next(o for o in options.values() if (o.get('datasets') or {}).get('val')))
    return '\n'.join([f'## Convergence: validation Y-PSNR on {name} during training', '',
                      f'Mean over seeds at the last validation at or before 3/4 of the run and at the last one; '
                      f'a variant has reached its plateau when it gains less than {PLATEAU_DB} dB over that '
                      'last quarter.', '',
                      '| variant | seeds | start of last quarter | end | gain (dB) | plateau |',
                      '|---|---|---|---|---|---|', *lines, '']) + '\n'


def off_scale_variants(study: Study, rows: list[dict]) -> list[str]:
    """Variants more than ``OFF_SCALE_DB`` below the baseline on a test set (a collapsed run): drawn, they
    would flatten every other line of the plots, so the plots leave them out and the table says so."""
    low = {r['variant'] for r in rows if r.get('d_psnr') is not None and r['d_psnr'].mean < -OFF_SCALE_DB}
    return [v for v in study.variants if v in low]


def final_iterations(study: Study, totals: dict[str, int]) -> dict[str, int]:
    """The last iteration of each variant (the same for all its seeds)."""
    finals = {}
    for run in study.runs:
        finals.setdefault(run.variant, totals[run.name])
    return finals


def write_report(study: Study, out: Path, options: dict[str, dict], plots: bool = True) -> Path:
    """Write ``table.md``, ``table.csv`` and (with matplotlib) the plots; returns the Markdown table's path.

    Args:
        options: run name -> the run's training options (:func:`ibsd.study.spec.run_options`).
    """
    totals = {name: opt['train']['total_iter'] for name, opt in options.items()}
    selected = {r.name: i for r in study.runs if (i := run_selection(study, out, r, options[r.name])) is not None}
    scores = collect_scores(study, out, totals, selected)
    iteration_of = final_iterations(study, totals)
    rows = summary_rows(study, scores, iteration_of)
    rows += selected_rows(study, scores, selected)
    rows.sort(key=lambda r: list(study.test_sets).index(r['test_set']))  # stable: last, then selected, per set
    metrics = metrics_present(scores)
    write_csv(out / 'table.csv', rows, metrics)
    contrasts = contrast_rows(study, scores, iteration_of, selected)
    if study.contrasts:
        write_contrasts_csv(out / 'contrasts.csv', contrasts, metrics)
    table = out / 'table.md'
    hidden = off_scale_variants(study, rows)
    note = (f'\nThe plots leave out {", ".join(hidden)}: more than {OFF_SCALE_DB:g} dB below {study.baseline} on a '
            'test set, off the scale of the others.\n') if hidden else ''
    logs = training_logs(study, out)
    table.write_text(markdown(study, rows, metrics, scores, iteration_of, contrasts) + note +
                     convergence(study, out, logs, options))
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print('plots skipped: matplotlib is not installed (pip install "ibsd[study]" or matplotlib)')
            return table
        from ibsd.study import plots as plotting
        plotting.write_all(study, out, scores, logs, iteration_of, per_image_differences, hidden)
    return table


__all__ = ['write_report', 'summary_rows', 'Key']
