"""``ibsd-study STUDY.yml``: train every run of a study that is not finished, evaluate, write the report.

    ibsd-study options/study/city100_imdn_x2_finetune_cpu.yml            # folder studies/<name>
    ibsd-study options/study/city100_imdn_x2_finetune_cpu.yml --report   # only rewrite table and plots
    ibsd-study options/study/city100_imdn_x2_finetune_cpu.yml --variants L1 IBSD --seeds 0   # a part of it

Starting it again resumes unfinished runs; finished runs and evaluations are kept.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import ibsd  # noqa: F401  (fills basicsr's registries: the study checks its options against them)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ibsd-study', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('study', type=Path, help='study file (options/study/*.yml)')
    parser.add_argument('--out', type=Path, help='study folder (default: studies/<name>)')
    parser.add_argument('--parallel', type=int, help='runs at once (default: the study file\'s parallel)')
    parser.add_argument('--threads', type=int, help='threads in all, split between the parallel runs '
                                                     '(default: the study file\'s threads, else every CPU)')
    parser.add_argument('--variants', nargs='+', metavar='NAME',
                        help='train and evaluate only these variants (the report shows every run there is)')
    parser.add_argument('--seeds', nargs='+', type=int, metavar='SEED', help='train and evaluate only these seeds')
    parser.add_argument('--report', action='store_true', help='write the report from what exists; train nothing')
    parser.add_argument('--no-plots', action='store_true', help='tables only (no matplotlib needed)')
    return parser.parse_args(argv)


def selected_runs(study, variants: list[str] | None, seeds: list[int] | None) -> set[str]:
    """Names of the runs ``--variants`` / ``--seeds`` leave in (all when neither is given).

    Raises:
        OptionError: a variant or seed the study does not have.
    """
    from ibsd.errors import OptionError
    unknown = sorted(set(variants or []) - set(study.variants))
    if unknown:
        raise OptionError(f'--variants: {unknown} not in the study (its variants: {list(study.variants)})')
    runs = [r for r in study.runs if (not variants or r.variant in variants) and (not seeds or r.seed in seeds)]
    if not runs:
        raise OptionError(f'--seeds {seeds}: no run of the study has these seeds'
                          + (f' among the variants {variants}' if variants else ''))
    return {r.name for r in runs}


def main(argv: Sequence[str] | None = None) -> None:
    from ibsd.errors import OptionError
    from ibsd.study.report import write_report
    from ibsd.study.runner import run_study
    from ibsd.study.spec import load_study, run_options
    args = parse_args(argv)
    try:
        study = load_study(args.study)
        if args.parallel is not None:
            study.parallel = max(1, args.parallel)
        if args.threads is not None:
            study.threads = max(1, args.threads)
        out = (args.out or Path('studies') / study.name).resolve()
        cwd = Path.cwd()
        options = {run.name: run_options(study, run, cwd) for run in study.runs}
        if args.report and not (out / 'results').is_dir():
            raise OptionError(f'--report: {out} holds no evaluated run (no results/ folder): run the study first, '
                              'or name its folder with --out')
        selected = selected_runs(study, args.variants, args.seeds)
        failures = [] if args.report else run_study(study, out, cwd, runs=selected)
        table = write_report(study, out, options, plots=not args.no_plots)
    except OptionError as error:
        sys.exit(f'OptionError: {error}')
    except KeyboardInterrupt as stop:
        number = getattr(stop, 'number', 2)
        print(f'ibsd-study: stopped by signal {number}; its runs were stopped with it and resume when the study is '
              'started again', file=sys.stderr)
        sys.exit(128 + number)
    print(table.read_text())
    print(f'report: {table} (and table.csv, plots) in {out}')
    if failures:
        sys.exit(f'{len(failures)} task(s) failed: {", ".join(failures)}; their logs are in {out / "logs"}')
