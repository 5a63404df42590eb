"""Milliseconds per training sample of BasicSR's PairedImageDataset, read from disk and from memory.

Each backend's data set draws the same samples (random crop and flips of ``--gt-size``) in this
process, one thread, after one pass over every file (which fills the memory backend's copies); the
figure is the median over ``--repeats`` passes of the time per sample, then how many milliseconds a
training iteration of ``--batch`` samples spends on data (on one core: with DataLoader workers this
is CPU time taken from the training processes).

    python scripts/benchmark_data_loading.py --gt datasets/City100/x2/train_HR --lq datasets/City100/x2/train_LR

With ``--train OPTIONS.yml ...`` it also trains each YAML twice at once for ``--iters`` iterations (one
thread each, validation and checkpoints off), reading from disk and from memory with persistent workers,
run from ``--cwd`` (where the YAML's relative paths start), and prints the median seconds per
iteration after iteration 30 and whether the two runs end with the same weights.
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import torch
import yaml

import ibsd.data  # noqa: F401  (registers io_backend 'memory')
from basicsr.data import build_dataset


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--gt', required=True, help='dataroot_gt (a folder of images)')
    parser.add_argument('--lq', required=True, help='dataroot_lq (same file names)')
    parser.add_argument('--scale', type=int, default=2)
    parser.add_argument('--gt-size', type=int, default=64, help='GT patch (default: 64, as in the City100 studies)')
    parser.add_argument('--batch', type=int, default=4, help='samples per iteration (default: 4)')
    parser.add_argument('--repeats', type=int, default=3, help='passes over the data set per backend (default: 3)')
    parser.add_argument('--train', type=Path, nargs='*', default=[], metavar='OPTIONS.yml',
                        help='training YAMLs to time from disk and from memory, two runs at once')
    parser.add_argument('--iters', type=int, default=160, help='iterations per training run (default: 160)')
    parser.add_argument('--cwd', type=Path, default=Path.cwd(), help='folder the training runs start in')
    return parser.parse_args()


ITERATION_LINE = re.compile(r'^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO: \[.*?iter:\s*([\d,]+), lr:', re.M)
SKIP = 30


def seconds_per_iteration(log: str) -> float:
    stamps = sorted((int(i.replace(',', '')), datetime.strptime(t, '%Y-%m-%d %H:%M:%S,%f'))
                    for t, i in ITERATION_LINE.findall(log))
    stamps = [s for s in stamps if s[0] >= SKIP]
    return statistics.median((b[1] - a[1]).total_seconds() / (b[0] - a[0]) for a, b in zip(stamps, stamps[1:]))


def time_training(option_file: Path, args: argparse.Namespace, folder: Path) -> None:
    """``option_file`` from disk and from memory, both at once; their s/it and whether their weights agree."""
    base = yaml.safe_load(option_file.read_text())
    runs = {}
    for backend in ('disk', 'memory'):
        opt = yaml.safe_load(yaml.safe_dump(base))
        opt['name'] = f'bench_{backend}_{time.time_ns()}'
        opt['train']['total_iter'] = args.iters
        opt.setdefault('val', {})['val_freq'] = 10 ** 9
        opt['logger'].update(print_freq=10, save_checkpoint_freq=10 ** 9)
        train_set = opt['datasets']['train']
        train_set['io_backend'] = {'type': backend}
        train_set['persistent_workers'] = backend == 'memory' and int(train_set.get('num_worker_per_gpu') or 0) > 0
        path = folder / f'{opt["name"]}.yml'
        path.write_text(yaml.safe_dump(opt))
        runs[backend] = (opt['name'], subprocess.Popen([sys.executable, '-m', 'ibsd.train', '-opt', str(path),
                                                        '--threads', '1'], cwd=args.cwd, text=True,
                                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    results = {}
    for backend, (name, process) in runs.items():
        log = process.communicate()[0]
        if process.returncode != 0:
            sys.exit(f'{option_file} from {backend} failed:\n{log[-3000:]}')
        experiment = args.cwd / 'experiments' / name  # where BasicSR puts a run
        weights = torch.load(experiment / 'models' / 'net_g_latest.pth', weights_only=True)['params']
        shutil.rmtree(experiment)
        results[backend] = (seconds_per_iteration(log), weights)
    (disk, disk_weights), (memory, memory_weights) = results['disk'], results['memory']
    same = all(torch.equal(disk_weights[k], memory_weights[k]) for k in disk_weights)
    print(f'{option_file}: {args.iters} iterations, both at once, one thread each: disk {disk:.3f} s/it, memory '
          f'{memory:.3f} s/it ({memory / disk - 1:+.0%}); weights at the end {"identical" if same else "DIFFER"}')


def pass_time(dataset) -> float:
    """Seconds per sample of one pass in a fixed random order."""
    random.seed(0)
    start = time.perf_counter()
    for index in range(len(dataset)):
        dataset[index]
    return (time.perf_counter() - start) / len(dataset)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    results = {}
    for backend in ('disk', 'memory'):
        dataset = build_dataset({'name': backend, 'type': 'PairedImageDataset', 'phase': 'train',
                                 'dataroot_gt': args.gt, 'dataroot_lq': args.lq, 'io_backend': {'type': backend},
                                 'scale': args.scale, 'gt_size': args.gt_size, 'use_hflip': True, 'use_rot': True})
        pass_time(dataset)  # warm-up: the memory backend reads every file here
        results[backend] = statistics.median(pass_time(dataset) for _ in range(args.repeats))
    print(f'{len(dataset)} pairs from {args.gt} and {args.lq}, GT patch {args.gt_size}, one thread')
    for backend, seconds in results.items():
        print(f'  {backend:6s}: {seconds * 1000:7.2f} ms per sample, {seconds * args.batch * 1000:7.1f} ms per '
              f'iteration of {args.batch}')
    print(f'  memory / disk: {results["memory"] / results["disk"]:.3f}')
    with tempfile.TemporaryDirectory() as folder:
        for option_file in args.train:
            time_training(option_file.resolve(), args, Path(folder))


if __name__ == '__main__':
    main()
