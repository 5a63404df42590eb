"""Run a study: write one BasicSR YAML per run, train the runs (several at once), evaluate their students.

Everything of a study lives in its folder (``--out``, default ``studies/<name>``)::

    options/<run>.yml         the training options of each run (rerun by hand: cd <out>; ibsd-train -opt ...)
    options/test/<run>_i<N>.yml  the test options evaluating the student of iteration N
    logs/<run>.log            each run's console output (appended by every launch)
    experiments/, results/    BasicSR's usual folders (checkpoints, states; per-image metric tables)
    table.md, table.csv, *.png  the report (see :mod:`ibsd.study.report`)

Starting the study again resumes every unfinished run (``--auto_resume``) and skips finished
runs and evaluations. A failed run is reported with the end of its log and fails the study.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import yaml

from ibsd.errors import OptionError
from ibsd.study.spec import (Run, Study, accepted_fingerprints, as_trained, evaluation_options, options_fingerprint,
                             run_options)
from ibsd.tasks import Stopped, Task, console_script, execute

StudyStopped = Stopped
"""The name :class:`ibsd.tasks.Stopped` had when it lived here."""

HEADER = ('# Written by ibsd-study from {study}: edit the study file, not this one.\n'
          '# Rerun this run by hand from the study folder: ibsd-{tool} -opt {path}\n')


def write_options(path: Path, options: dict, study: Study, tool: str, out: Path) -> None:
    """Write ``options`` as YAML; a run that already started with other options is refused."""
    text = HEADER.format(study=study.path, tool=tool, path=path.relative_to(out)) + \
        yaml.safe_dump(options, sort_keys=False)
    if path.exists() and path.read_text() != text and tool == 'train' and \
            (out / 'experiments' / options['name']).exists() and not trains_the_same(path, options):
        raise OptionError(f"{study.path}: run {options['name']} already started with other options ({path}); "
                          f'give the study another name, or delete {out / "experiments" / options["name"]} to '
                          'train it again')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def trains_the_same(path: Path, options: dict) -> bool:
    """The options written in ``path`` train as ``options`` do (equal but for a plain model type, see
    :func:`ibsd.study.spec.as_trained`)."""
    try:
        written = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return False
    return isinstance(written, dict) and as_trained(written) == as_trained(options)


def checkpoint(out: Path, run: Run, iteration: int) -> Path:
    return out / 'experiments' / run.name / 'models' / f'net_g_{iteration}.pth'


def result_tables(out: Path, study: Study, run: Run, iteration: int) -> list[Path]:
    from ibsd.study.spec import SAFE_NAME
    folder = out / 'results' / f'{run.name}_i{iteration}'
    return [folder / f'{SAFE_NAME.sub("_", name)}_metrics.csv' for name in study.test_sets]


def evaluated_iterations(study: Study, total: int, selected: int | None = None) -> list[int]:
    """``eval_iters``, the last iteration and the early-stopping selection (when there is one)."""
    return sorted(set(study.eval_iters) | {total} | ({selected} if selected else set()))


def done_stamp(out: Path, run: Run) -> Path:
    """Written when a run has trained: the fingerprint of the options it trained with."""
    return out / 'logs' / f'{run.name}.done'


def finished(study: Study, out: Path, run: Run, total: int) -> bool:
    """The run saved its last checkpoint, or (a study folder kept or moved without ``experiments/``, where
    the checkpoints are) it trained with the options it has now and its last evaluation is there."""
    if checkpoint(out, run, total).exists():
        return True
    stamp = done_stamp(out, run)
    return stamp.exists() and stamp.read_text().strip() in accepted_fingerprints(study, run) and \
        all(t.exists() for t in result_tables(out, study, run, total))


def mark_done(study: Study, out: Path, run: Run) -> None:
    done_stamp(out, run).parent.mkdir(parents=True, exist_ok=True)
    done_stamp(out, run).write_text(options_fingerprint(study, run) + '\n')


def threads_per_task(study: Study) -> int:
    threads = study.threads or os.cpu_count() or 1
    return max(1, threads // max(1, study.parallel))


def plan(study: Study, out: Path, cwd: Path, runs: set[str] | None = None) -> list[Task]:
    """Write every run's options; the training tasks of unfinished runs and the evaluations still missing
    (of the runs named in ``runs``, default all)."""
    tasks = []
    order = list(study.variants)
    for run in sorted(study.runs, key=lambda r: (r.seed, order.index(r.variant))):  # seed by seed: paired early
        if runs is not None and run.name not in runs:
            continue
        options = run_options(study, run, cwd)
        total = options['train']['total_iter']
        options_path = out / 'options' / f'{run.name}.yml'
        write_options(options_path, options, study, 'train', out)
        evaluations = evaluation_tasks(study, run, options, out, cwd)
        if finished(study, out, run, total):
            if checkpoint(out, run, total).exists():  # trained with these options (write_options checks)
                mark_done(study, out, run)
            tasks += evaluations()
            continue
        tasks.append(Task(f'{run.variant} s{run.seed}', [console_script('ibsd-train'), '-opt',
                                                         str(options_path.relative_to(out)), '--auto_resume'],
                          out / 'logs' / f'{run.name}.log', total, trained_then(study, out, run, evaluations)))
    return tasks


def trained_then(study: Study, out: Path, run: Run, then: Callable[[], list[Task]]) -> Callable[[], list[Task]]:
    def on_success() -> list[Task]:
        mark_done(study, out, run)
        return then()
    return on_success


def evaluation_tasks(study: Study, run: Run, options: dict, out: Path, cwd: Path) -> Callable[[], list[Task]]:
    def make() -> list[Task]:
        from ibsd.study.selection import run_selection
        tasks = []
        selected = run_selection(study, out, run, options)
        for iteration in evaluated_iterations(study, options['train']['total_iter'], selected):
            weights = checkpoint(out, run, iteration)
            tables = result_tables(out, study, run, iteration)
            if all(t.exists() for t in tables) and (not weights.exists() or
                                                    all(t.stat().st_mtime >= weights.stat().st_mtime for t in tables)):
                continue
            if not weights.exists():
                raise OptionError(f'{study.path}: run {run.name}: {weights} is missing, and the evaluation of '
                                  f'iteration {iteration} has not been written: restore the checkpoint, or train '
                                  f'the run again (delete {done_stamp(out, run)} and '
                                  f'{out / "experiments" / run.name})')
            path = out / 'options' / 'test' / f'{run.name}_i{iteration}.yml'
            write_options(path, evaluation_options(study, run, options, weights, iteration, cwd), study, 'test', out)
            tasks.append(Task(f'{run.variant} s{run.seed} test @{iteration}',
                              [console_script('ibsd-test'), '-opt', str(path.relative_to(out))],
                              out / 'logs' / f'{run.name}_test_i{iteration}.log'))
        return tasks
    return make


def prepare_data(study: Study, cwd: Path) -> None:
    """Run the study's ``prepare`` commands (``ibsd-prepare`` reruns are cheap: it keeps a manifest)."""
    for command in study.prepare:
        executable = console_script(command[0]) if command[0].startswith('ibsd-') else command[0]
        print(f"preparing: {' '.join(command)}", flush=True)
        result = subprocess.run([executable, *command[1:]], cwd=cwd)
        if result.returncode != 0:
            raise OptionError(f"{study.path}: prepare: '{' '.join(command)}' failed (exit status {result.returncode})")


def run_study(study: Study, out: Path, cwd: Path, print_line: Callable[[str], None] = print,
              runs: set[str] | None = None) -> list[str]:
    """Prepare, train and evaluate what is missing (of ``runs``, default all); returns the labels of failed tasks."""
    out.mkdir(parents=True, exist_ok=True)
    prepare_data(study, cwd)
    tasks = plan(study, out, cwd, runs)
    threads = threads_per_task(study)
    trainings = sum(t.total_iter is not None for t in tasks)
    chosen = len(study.runs) if runs is None else len(runs)
    print_line(f'{study.name}: {chosen} of {len(study.runs)} runs, {trainings} to train, '
               f'{len(tasks) - trainings} evaluations '
               f'ready; {study.parallel} at a time with {threads} thread(s) each; folder {out}')
    sys.stdout.flush()
    return execute(tasks, study.parallel, out, threads, print_line)
