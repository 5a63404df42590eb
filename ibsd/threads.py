"""How many CPU threads a run's tensor code uses: ``--threads``, else the options key ``num_threads``,
else ``OMP_NUM_THREADS``, else ``auto``.

torch starts one thread per core. On a small machine that has other work running, those threads wait
on each other more than they compute: on 2 busy cores an iteration of ``ibsd-demo`` took 2.5-7.2 s with
2 threads against 0.87 s with 1. ``auto`` is therefore torch's default less the cores that the load
average says are busy (at least one), for runs on the CPU; a run on a GPU keeps torch's default (its
CPU threads only feed the GPU). Tensor results depend on the thread count in their last bits (the order
of sums), so a run meant to be repeated exactly names its threads.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

from ibsd.errors import OptionError

OPTION_KEY = 'num_threads'
ARGUMENT = '--threads'
requested: int | None = None
"""``--threads`` of this process's ``ibsd-train`` / ``ibsd-test`` command line, once popped from it."""
ARGUMENT_HELP = ('CPU threads of the tensor code (default: the options\' num_threads, else OMP_NUM_THREADS, else '
                 'auto: the idle cores, from the load average, for a run on the CPU)')


AUTO = 'auto'


def parse_threads(value: Any, where: str) -> int | str | None:
    """A thread count from an option or argument: a whole number >= 1, ``AUTO`` for ``auto``, None when unset."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        number = float('nan') if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = float('nan')
    if not number >= 1 or number != int(number):
        raise OptionError(f"{where}: expected a whole number of threads >= 1, or auto; got {value!r}")
    return int(number)


def pop_threads_argument(argv: Sequence[str]) -> tuple[list[str], int | str | None]:
    """``argv`` without ``--threads N`` / ``--threads=N`` (BasicSR's parser does not know it), and N."""
    rest, value, words = [], None, list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        if word == ARGUMENT:
            if index + 1 >= len(words):
                raise OptionError(f'{ARGUMENT}: expected a number of threads after it')
            value = words[index + 1]
            index += 2
            continue
        if word.startswith(ARGUMENT + '='):
            value = word[len(ARGUMENT) + 1:]
        else:
            rest.append(word)
        index += 1
    return rest, parse_threads(value, ARGUMENT) if value is not None else None


def cgroup_cpu_limit(path: str = '/sys/fs/cgroup/cpu.max') -> int | None:
    """The CPUs a cgroup v2 quota allows (``cpu.max``: quota and period), rounded up; None without a quota."""
    try:
        with open(path) as handle:
            quota, period = handle.read().split()[:2]
        return None if quota == 'max' else max(1, -(-int(quota) // int(period)))
    except (OSError, ValueError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity set, capped by a cgroup quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    return min(cpus, limit) if limit else cpus


def idle_cores(cpus: int | None = None, load: float | None = None) -> int:
    """The cores the 1-minute load average leaves idle (at least 1). The load average is the whole
    machine's: in a container that shares a busy host it can say busy when the container's CPUs are free,
    so a container run names its threads."""
    cpus = cpus if cpus is not None else usable_cpus()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            load = 0.0
    return max(1, cpus - int(round(load)))


def choose_threads(argument: int | str | None, option: Any, on_cpu: bool, default: int,
                   environment: dict | None = None, idle: int | None = None) -> tuple[int, str]:
    """``(threads, where the number comes from)``.

    Args:
        argument: ``--threads`` (None when not given, ``AUTO`` for ``auto``).
        option: the options' ``num_threads`` (None when not set); an explicit ``auto`` (argument or option)
            is auto even when ``OMP_NUM_THREADS`` is set.
        on_cpu: whether the run computes on the CPU.
        default: torch's thread count at start (it already follows ``OMP_NUM_THREADS``).
    """
    environment = os.environ if environment is None else environment
    chosen, source = argument, ARGUMENT
    if chosen is None:
        chosen, source = parse_threads(option, OPTION_KEY), OPTION_KEY
    if isinstance(chosen, int):
        return chosen, source
    if chosen is None and environment.get('OMP_NUM_THREADS'):
        return default, 'OMP_NUM_THREADS'
    if not on_cpu:
        return default, "torch's default (a GPU run)"
    idle = idle_cores() if idle is None else idle
    return max(1, min(default, idle)), f'auto: {idle} of the cores idle'


def apply_threads(threads: int) -> None:
    """Use ``threads`` in this process (torch, and OpenCV's own pool) and in the processes it starts."""
    import cv2
    import torch
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    os.environ['OMP_NUM_THREADS'] = os.environ['MKL_NUM_THREADS'] = str(threads)


def apply_run_threads(opt: dict) -> tuple[int, str]:
    """Choose and apply the threads of a BasicSR run from ``--threads`` and its parsed options (``num_gpu``
    is a number by then: 0 means the CPU); the choice is written to ``opt['num_threads']`` (the option dump
    in the log shows it) and returned with its source."""
    import torch
    threads, source = choose_threads(requested, opt.get('num_threads'), on_cpu=opt.get('num_gpu') == 0,
                                     default=torch.get_num_threads())
    apply_threads(threads)
    opt['num_threads'] = threads
    return threads, source
