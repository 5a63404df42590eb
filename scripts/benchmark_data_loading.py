"""Milliseconds per training sample of BasicSR's PairedImageDataset, read from disk and from memory.

Each backend's data set draws the same samples (random crop and flips of ``--gt-size``) in this
process, one thread, after one pass over every file (which fills the memory backend's copies); the
figure is the median over ``--repeats`` passes of the time per sample, then how many milliseconds a
training iteration of ``--batch`` samples spends on data (on one core: with DataLoader workers this
is CPU time taken from the training processes).

    python scripts/benchmark_data_loading.py --gt datasets/City100/x2/train_HR --lq datasets/City100/x2/train_LR
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

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
    return parser.parse_args()


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


if __name__ == '__main__':
    main()
