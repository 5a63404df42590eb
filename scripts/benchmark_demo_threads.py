"""Seconds per iteration of the demo's training runs at several thread counts, alone and beside a busy process.

Each measurement is a real ``python -m ibsd.train --threads T`` run of the demo's options (the default
set, IMDN x4, batch 8, GT patch 128), logging every iteration; reported is the median of the intervals
between consecutive iteration lines of its log (millisecond timestamps), after the first ``--skip``
iterations. "Busy" first starts one more process that keeps one core computing (float32 matrix
products on one thread, like another training run) for as long as the measurement lasts.

    python scripts/benchmark_demo_threads.py                       # 1 and 2 threads, L1 and IBSD, idle and busy
    python scripts/benchmark_demo_threads.py --threads 1 2 4 --iters 30
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

from ibsd.data.default_set import DefaultSetConfig, build_default_set
from ibsd.demo import BASELINE, IBSD, demo_options

ITERATION_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO: \[.*?iter:\s*([\d,]+), lr:', re.M)
BUSY_LOOP = ('import torch\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\n'
             'while True:\n    a = torch.tanh(a @ a)\n')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--threads', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--kinds', nargs='+', default=[BASELINE, IBSD], choices=(BASELINE, IBSD))
    parser.add_argument('--iters', type=int, default=22, help='iterations per measurement (default: 22)')
    parser.add_argument('--skip', type=int, default=4, help='first iterations left out (default: 4)')
    parser.add_argument('--workdir', type=Path, help='folder for the data set and runs (default: a temporary one)')
    return parser.parse_args()


def iteration_times(log: str, skip: int) -> list[float]:
    """Seconds between consecutive logged iterations, from iteration ``skip`` on."""
    stamps = {int(i.replace(',', '')): datetime.strptime(t, '%Y-%m-%d %H:%M:%S,%f')
              for t, i in ITERATION_LINE.findall(log)}
    return [(stamps[i] - stamps[i - 1]).total_seconds() for i in sorted(stamps) if i > skip and i - 1 in stamps]


def measure(kind: str, threads: int, busy: bool, data: dict, workdir: Path, args: argparse.Namespace) -> list[float]:
    name = f'bench_{kind}_t{threads}_{"busy" if busy else "idle"}_{time.time_ns()}'
    train, _ = demo_options(data, workdir, args.iters, 0, kind, name)
    train['logger']['print_freq'] = 1
    train['val']['val_freq'] = 10 ** 9
    train['logger']['save_checkpoint_freq'] = 10 ** 9
    option_file = workdir / f'{name}.yml'
    option_file.write_text(yaml.safe_dump(train, sort_keys=False))
    environment = {k: v for k, v in os.environ.items() if k not in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
    competitor = subprocess.Popen([sys.executable, '-c', BUSY_LOOP], env={**environment, 'OMP_NUM_THREADS': '1'}) \
        if busy else None
    try:
        if competitor is not None:
            time.sleep(2)  # let it reach its loop
        result = subprocess.run([sys.executable, '-m', 'ibsd.train', '-opt', option_file.name, '--threads',
                                 str(threads)], cwd=workdir, capture_output=True, text=True, env=environment)
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if result.returncode != 0:
        sys.exit(f'{name} failed:\n{(result.stdout + result.stderr)[-3000:]}')
    return iteration_times(result.stdout + result.stderr, args.skip)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        workdir = (args.workdir or Path(temporary)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        data = build_default_set(workdir / 'datasets' / 'ibsd_default', DefaultSetConfig(seed=0))
        try:
            load = ' / '.join(f'{v:.2f}' for v in os.getloadavg())
        except OSError:
            load = 'unknown'
        print(f'{os.cpu_count()} CPUs, load average {load} (1 / 5 / 15 min) at the start; '
              f'{args.iters} iterations per run, the first {args.skip} left out')
        print(f'{"run":<6}{"threads":>8}{"other process":>15}{"median s/it":>13}{"min":>8}{"max":>8}')
        for kind in args.kinds:
            for busy in (False, True):
                for threads in args.threads:
                    times = measure(kind, threads, busy, data, workdir, args)
                    print(f'{kind:<6}{threads:>8}{"busy" if busy else "none":>15}{statistics.median(times):>13.3f}'
                          f'{min(times):>8.3f}{max(times):>8.3f}', flush=True)


if __name__ == '__main__':
    main()
