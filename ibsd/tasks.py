"""Run commands (trainings, tests) as subprocesses, a few at a time, each with its output in a log file.

Shared by ``ibsd-study`` and ``ibsd-demo``. The console gets one line per start and end, a progress
line per running command every 30 s (read from its log), and on failure the end of its log.
SIGTERM and SIGHUP (unless ignored, as under ``nohup``) stop the commands with their parent, as
Ctrl-C does: a restart never runs a training twice at once (its orphan and its restart).
"""
from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sysconfig
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ibsd.errors import IBSDError
from ibsd.progress import last_progress, tail

PROGRESS_EVERY_S = 30.0
POLL_S = 1.0


def console_script(name: str) -> str:
    """The path of one of our console scripts installed beside this Python, else its bare name."""
    candidate = Path(sysconfig.get_path('scripts')) / name
    return str(candidate) if candidate.exists() else name


@dataclass
class Task:
    """A command of the study (a training run or an evaluation), started when a slot is free."""
    label: str
    command: list[str]
    log: Path
    total_iter: int | None = None
    on_success: Callable[[], list['Task']] = field(default=lambda: [])
    process: subprocess.Popen | None = None
    started: float = 0.0


def task_environment(threads: int) -> dict:
    return {**os.environ, 'OMP_NUM_THREADS': str(threads), 'MKL_NUM_THREADS': str(threads),
            'PYTHONUNBUFFERED': '1'}


def progress_line(task: Task) -> str:
    elapsed = time.monotonic() - task.started
    if task.total_iter is None:
        return f'  {task.label}: evaluating ({elapsed:.0f} s)'
    progress = last_progress(task.log)
    if progress is None:
        return f'  {task.label}: starting ({elapsed:.0f} s)'
    if progress[0] >= task.total_iter:
        return f'  {task.label}: iteration {progress[0]}/{task.total_iter}, saving and validating'
    return f'  {task.label}: iteration {progress[0]}/{task.total_iter}, ETA {progress[1]}'


class Stopped(KeyboardInterrupt):
    """The parent was told to stop (SIGTERM, or SIGHUP when not ignored): its commands are stopped with it."""

    def __init__(self, number: int):
        super().__init__(f'signal {number}')
        self.number = number


@contextlib.contextmanager
def stopping_on_signals():
    """SIGTERM (``kill``) and SIGHUP stop the parent as Ctrl-C does: its commands are terminated with it."""
    def stop(number, frame):
        raise Stopped(number)

    previous = {}
    for number in (signal.SIGTERM, getattr(signal, 'SIGHUP', None)):
        if number is not None and signal.getsignal(number) is not signal.SIG_IGN:  # nohup ignores SIGHUP: keep it
            previous[number] = signal.signal(number, stop)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def execute(tasks: list[Task], parallel: int, out: Path, threads: int,
            print_line: Callable[[str], None] = print) -> list[str]:
    """Run ``tasks`` (and the tasks their successes add), ``parallel`` at a time; returns the failures."""
    pending, running, failures = list(tasks), [], []
    environment = task_environment(threads)
    try:
        with stopping_on_signals():
            failures = run_all(pending, running, failures, parallel, out, threads, environment, print_line)
    except KeyboardInterrupt:
        handlers = {number: signal.signal(number, signal.SIG_IGN) for number in (signal.SIGINT, signal.SIGTERM)}
        try:  # a second signal must not cut the stopping of the runs short
            for task in running:
                task.process.terminate()
            for task in running:
                task.process.wait()
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        raise
    return failures


def run_all(pending: list[Task], running: list[Task], failures: list[str], parallel: int, out: Path, threads: int,
            environment: dict, print_line: Callable[[str], None]) -> list[str]:
    """The loop of :func:`execute`: start tasks while slots are free, collect the finished ones."""
    next_report = time.monotonic() + PROGRESS_EVERY_S
    while pending or running:
        while pending and len(running) < parallel:
            task = pending.pop(0)
            task.log.parent.mkdir(parents=True, exist_ok=True)
            handle = open(task.log, 'a')
            task.process = subprocess.Popen(task.command, cwd=out, stdout=handle, stderr=subprocess.STDOUT,
                                            env=environment)
            running.append(task)
            handle.close()
            task.started = time.monotonic()
            print_line(f'started {task.label} ({threads} thread(s)): (cd {out} && {shown(task.command)}) >> '
                       f'{task.log.relative_to(out)}')
        time.sleep(POLL_S)
        for task in [t for t in running if t.process.poll() is not None]:
            running.remove(task)
            if task.process.returncode == 0:
                print_line(f'finished {task.label} in {time.monotonic() - task.started:.0f} s')
                try:
                    pending[:0] = task.on_success()
                except IBSDError as error:
                    failures.append(task.label)
                    print_line(f'FAILED {task.label}: {error}')
            else:
                failures.append(task.label)
                print_line(f'FAILED {task.label} (exit status {task.process.returncode}); end of '
                           f'{task.log}:\n{tail(task.log)}')
        if running and time.monotonic() >= next_report:
            next_report = time.monotonic() + PROGRESS_EVERY_S
            print_line('\n'.join(progress_line(t) for t in running))
    return failures




def shown(command: list[str]) -> str:
    """``command`` as a user would type it: our console scripts and Python by their bare names."""
    words = [Path(word).name if i == 0 else word for i, word in enumerate(command)]
    words[0] = 'python' if words[0].startswith('python') else words[0]
    return shlex.join(words)
