"""``ibsd-demo``: build the default data set, train an IMDN student with and without IBSD, compare.

A shared warm-up trains the student with plain L1 first; two runs then continue from the warmed-up
weights with identical settings (data, seed, iterations, optimiser, schedule), one with L1 only,
one adding IBSD (the CLUB bound over the student's nodes and the wavelet loss with a progressive
soft target). Self-distillation copies the student's own earlier predictions, so it is compared on
a student worth copying (``--warmup-iters 0`` trains both from scratch instead). The two runs start
a fresh Adam and schedule from the warmed-up weights (the same for both).
Everything happens under ``--workdir`` (default ``./ibsd_demo``)::

    datasets/ibsd_default/   the default data set (see ibsd.data.default_set)
    options/                 the generated BasicSR YAML files (rerun them with ibsd-train/-test)
    experiments/<name>/      checkpoints, training states, logs
    results/<name>/          test log, SR images, metrics
    logs/<name>_{train,test}.log  the console output of each step (the console shows progress only)

Training runs with ``--auto_resume``: rerunning the command after an interruption continues
from the last checkpoint, and rerunning a finished demo only re-tests it. Run names carry the
iterations, the warm-up and the seed, so a rerun with other options trains new runs.

Every step runs with ``--threads`` CPU threads (default 1: the same numbers on every run on one machine,
and no slowdown when other work shares the cores; see :mod:`ibsd.threads`).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

from ibsd.errors import IBSDError
from ibsd.data.default_set import DefaultSetConfig, build_default_set
from ibsd.tasks import Task, execute

WARMUP, BASELINE, IBSD = 'Warmup', 'L1', 'IBSD'
IBSD_TERMS = {
    'mi_opt': {'type': 'IBCLUBLoss', 'loss_weight': 1e-3, 'reduction': 'mean', 'mode': 'full'},
    'optim_est': {'type': 'Adam', 'lr': 5e-4},
    'wavelet_opt': {'type': 'WaveletHFLoss', 'loss_weight': 1.0, 'levels': 4},
    'soft_target': {'source': 'snapshot', 'alpha_max': 0.8},
}
WARMUP_ITERS, ITERS = 600, 300
THREADS = 1
METRICS = {
    'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
    'ssim': {'type': 'calculate_ssim', 'crop_border': 4, 'test_y_channel': True},
}


def _relative(path: Path, workdir: Path) -> str:
    return str(path.resolve().relative_to(workdir.resolve()))


def run_name(kind: str, iters: int, seed: int, warmup: int = 0) -> str:
    """The experiment name of one run. Every setting that changes what a run trains is in it, so a rerun
    with other options trains new runs instead of resuming (and reporting) runs trained otherwise."""
    start = f'_after_warmup{warmup}' if warmup else ''
    return f'{kind}_IMDN_x4_default{start}_{iters}it_seed{seed}'


def demo_options(data: dict[str, Path], workdir: Path, total_iter: int, seed: int, kind: str, name: str,
                 start: str | None = None) -> tuple[dict, dict]:
    """BasicSR train and test options of run ``name``: an IMDN x4 student on the default set, with IBSD
    if ``kind`` is ``IBSD``.

    ``start``: weights the run starts from (relative to ``workdir``), else random initialisation.
    """
    network = {'type': 'IMDN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 6, 'upscale': 4}
    estimator = {'network_est': {'type': 'IBEstimator', 'scale_eps': 1e-3}} if kind == IBSD else {}
    val = {'name': 'default_val', 'type': 'PairedImageDataset', 'dataroot_gt': _relative(data['val_gt'], workdir),
           'dataroot_lq': _relative(data['val_lq'], workdir), 'io_backend': {'type': 'disk'}}
    train = {
        'name': name, 'model_type': 'IBSDModel' if kind == IBSD else 'TiledSRModel', 'scale': 4, 'num_gpu': 'auto',
        'manual_seed': seed,
        'datasets': {
            'train': {'name': 'default_train', 'type': 'PairedImageDataset',
                      'dataroot_gt': _relative(data['train_gt'], workdir),
                      'dataroot_lq': _relative(data['train_lq'], workdir), 'io_backend': {'type': 'lmdb'},
                      'gt_size': 128, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': 8, 'dataset_enlarge_ratio': 1},
            'val': val},
        'network_g': network, **estimator,
        'path': {'pretrain_network_g': start, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 5e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [total_iter // 2, total_iter * 3 // 4],
                                'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'},
                  **(IBSD_TERMS if kind == IBSD else {})},
        'val': {'val_freq': max(1, total_iter // 3), 'save_img': False, 'metrics': METRICS},
        'logger': {'print_freq': max(1, total_iter // 20), 'save_checkpoint_freq': max(1, total_iter // 3),
                   'use_tb_logger': False},
    }
    test = {
        'name': f'{name}_test', 'model_type': 'TiledSRModel', 'scale': 4, 'num_gpu': 'auto',
        'datasets': {'test_1': val}, 'network_g': network,
        'path': {'pretrain_network_g': f'experiments/{name}/models/net_g_latest.pth', 'strict_load_g': True,
                 'param_key_g': 'params'},
        'val': {'save_img': True, 'suffix': None, 'metrics': METRICS},
    }
    return train, test


def bicubic_scores(data: dict[str, Path], scale: int = 4) -> dict[str, float]:
    """Y-PSNR/SSIM of plain bicubic upsampling of the validation LR images (the floor to beat)."""
    from basicsr.metrics import calculate_psnr, calculate_ssim
    psnrs, ssims = [], []
    for gt_path in sorted(data['val_gt'].glob('*.png')):
        gt = cv2.imread(str(gt_path))
        lq = cv2.imread(str(data['val_lq'] / gt_path.name))
        up = cv2.resize(lq, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_CUBIC)
        psnrs.append(calculate_psnr(up, gt, scale, test_y_channel=True))
        ssims.append(calculate_ssim(up, gt, scale, test_y_channel=True))
    return {'psnr': float(np.mean(psnrs)), 'ssim': float(np.mean(ssims))}


def read_test_metrics(results_dir: Path) -> dict[str, float]:
    """The metrics BasicSR's test pipeline wrote to its newest log in ``results_dir``."""
    logs = sorted(results_dir.glob('test_*.log'), key=lambda p: p.stat().st_mtime)
    if not logs:
        raise FileNotFoundError(f'no test log in {results_dir}')
    return {name: float(value) for name, value in re.findall(r'# (\w+): ([-\d.]+)', logs[-1].read_text())}


class DemoError(IBSDError, RuntimeError):
    """A step of the demo failed: the message names it and its log, whose end was printed before."""


def pipeline_task(kind: str, label: str, option_file: Path, workdir: Path, log: Path, threads: int, *extra: str,
                  total_iter: int | None = None) -> Task:
    """The ``python -m ibsd.train`` / ``ibsd.test`` command of one step, its output going to ``log``."""
    command = [sys.executable, '-m', f'ibsd.{kind}', '-opt', _relative(option_file, workdir), '--threads',
               str(threads), *extra]
    return Task(label, command, log, total_iter=total_iter)


def run_steps(tasks: list[Task], workdir: Path, threads: int) -> None:
    """Run the steps one after the other, each only if the one before succeeded (the runner of ``ibsd-study``);
    a failed step raises :class:`DemoError` after the end of its log was printed."""
    for step, after in zip(tasks, tasks[1:]):
        step.on_success = lambda after=after: [after]
    if execute(tasks[:1], 1, workdir, threads):
        failed = next(t for t in tasks if t.process is not None and t.process.returncode)
        raise DemoError(f'{failed.label} failed (exit status {failed.process.returncode}); the end of its log '
                        f'{failed.log} is above')


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ibsd-demo', description=__doc__.split('\n')[0])
    parser.add_argument('--workdir', default='ibsd_demo', help='folder for data, options and results')
    parser.add_argument('--warmup-iters', type=int, default=WARMUP_ITERS,
                        help=f'L1 iterations of the shared warm-up (default: {WARMUP_ITERS}; 0: both from scratch)')
    parser.add_argument('--iters', type=int, default=ITERS,
                        help=f'iterations of the L1 and the IBSD run after the warm-up (default: {ITERS})')
    parser.add_argument('--seed', type=int, default=0, help='seed for the data set and training')
    parser.add_argument('--threads', type=int, default=THREADS,
                        help=f'CPU threads of every step (default: {THREADS}; the README times the demo with it)')
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error('--threads must be >= 1')
    if args.iters < 1:
        parser.error('--iters must be >= 1')
    if args.warmup_iters < 0:
        parser.error('--warmup-iters must be >= 0')
    return args


def train_and_test(kind: str, name: str, data: dict[str, Path], workdir: Path, iters: int, seed: int,
                   start: str | None = None, threads: int = THREADS) -> dict[str, float]:
    """Write the YAML files of one run, train it (resuming if interrupted), test it, return its metrics."""
    train_opt, test_opt = demo_options(data, workdir, iters, seed, kind, name, start)
    options = workdir / 'options'
    options.mkdir(parents=True, exist_ok=True)
    train_file, test_file = options / f'train_{name}.yml', options / f'test_{name}.yml'
    train_file.write_text(yaml.safe_dump(train_opt, sort_keys=False))
    test_file.write_text(yaml.safe_dump(test_opt, sort_keys=False))
    print(f'\n{kind}: {name}', flush=True)
    logs = workdir / 'logs'
    test = pipeline_task('test', f'{kind} test', test_file, workdir, logs / f'{name}_test.log', threads)
    train = pipeline_task('train', f'{kind} train', train_file, workdir, logs / f'{name}_train.log', threads,
                          '--auto_resume', total_iter=iters)
    run_steps([train, test], workdir, threads)
    return read_test_metrics(workdir / 'results' / test_opt['name'])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        compare(args)
    except IBSDError as error:
        sys.exit(f'ibsd-demo: {error}')


def compare(args: argparse.Namespace) -> None:
    """Build the data, train and test the runs, print the table."""
    workdir = Path(args.workdir).resolve()
    print(f'Building the default data set under {workdir / "datasets"} ...', flush=True)
    data = build_default_set(workdir / 'datasets' / 'ibsd_default', DefaultSetConfig(seed=args.seed))
    names = {kind: run_name(kind, args.iters, args.seed, args.warmup_iters) for kind in (BASELINE, IBSD)}
    rows = [('bicubic upsampling', bicubic_scores(data))]
    start = None
    if args.warmup_iters:
        names[WARMUP] = run_name(WARMUP, args.warmup_iters, args.seed)
        rows.append((f'IMDN, L1 warm-up ({args.warmup_iters} it)',
                     train_and_test(WARMUP, names[WARMUP], data, workdir, args.warmup_iters, args.seed,
                                    threads=args.threads)))
        start = f'experiments/{names[WARMUP]}/models/net_g_latest.pth'
    for label, kind in (('L1 only', BASELINE), ('IBSD', IBSD)):
        rows.append((f'IMDN, {label} ({"+" if start else ""}{args.iters} it)',
                     train_and_test(kind, names[kind], data, workdir, args.iters, args.seed, start,
                                    threads=args.threads)))
    print('\n' + '=' * 72)
    print('Validation on held-out photos with unseen degradations (x4, Y channel, crop 4):')
    print(f'  {"method":<32}{"PSNR (dB)":>12}{"SSIM":>10}')
    for label, values in rows:
        print(f'  {label:<32}{values["psnr"]:>12.3f}{values["ssim"]:>10.4f}')
    gain = rows[-1][1]['psnr'] - rows[-2][1]['psnr']
    print(f'  IBSD - L1: {gain:+.3f} dB (one seed: not a measured difference between the methods)')
    print(f'Checkpoints and training logs: {workdir / "experiments"}/{{{",".join(names.values())}}}')
    print(f'Test logs and SR images:       {workdir / "results"}')
    print(f'Console output of each step:   {workdir / "logs"}')
    print(f'Options (rerun with ibsd-train / ibsd-test from {workdir}): {workdir / "options"}')
    print('=' * 72)


if __name__ == '__main__':
    main()
