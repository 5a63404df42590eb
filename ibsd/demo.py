"""``ibsd-demo``: build the default data set, train a student on it, test it, print the results.

Everything happens under ``--workdir`` (default ``./ibsd_demo``)::

    datasets/ibsd_default/   the default data set (see ibsd.data.default_set)
    options/                 the generated BasicSR YAML files (rerun them with ibsd-train/-test)
    experiments/<name>/      checkpoints, training states, logs
    results/<name>/          test log, SR images, metrics

Training runs with ``--auto_resume``: rerunning the command after an interruption continues
from the last checkpoint, and rerunning a finished demo only re-tests it.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

from ibsd.data.default_set import DefaultSetConfig, build_default_set

NAME = 'IMDN_x4_default'
METRICS = {
    'psnr': {'type': 'calculate_psnr', 'crop_border': 4, 'test_y_channel': True},
    'ssim': {'type': 'calculate_ssim', 'crop_border': 4, 'test_y_channel': True},
}


def _relative(path: Path, workdir: Path) -> str:
    return str(path.resolve().relative_to(workdir.resolve()))


def demo_options(data: dict[str, Path], workdir: Path, total_iter: int, seed: int) -> tuple[dict, dict]:
    """BasicSR train and test options for a plain IMDN x4 student on the default set."""
    network = {'type': 'IMDN', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 64, 'num_block': 6, 'upscale': 4}
    val = {'name': 'default_val', 'type': 'PairedImageDataset', 'dataroot_gt': _relative(data['val_gt'], workdir),
           'dataroot_lq': _relative(data['val_lq'], workdir), 'io_backend': {'type': 'disk'}}
    train = {
        'name': NAME, 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 'auto', 'manual_seed': seed,
        'datasets': {
            'train': {'name': 'default_train', 'type': 'PairedImageDataset',
                      'dataroot_gt': _relative(data['train_gt'], workdir),
                      'dataroot_lq': _relative(data['train_lq'], workdir), 'io_backend': {'type': 'lmdb'},
                      'gt_size': 128, 'use_hflip': True, 'use_rot': True, 'num_worker_per_gpu': 0,
                      'batch_size_per_gpu': 8, 'dataset_enlarge_ratio': 1},
            'val': val},
        'network_g': network,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 5e-4, 'weight_decay': 0, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [total_iter // 2, total_iter * 3 // 4],
                                'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': max(1, total_iter // 3), 'save_img': False, 'metrics': METRICS},
        'logger': {'print_freq': max(1, total_iter // 20), 'save_checkpoint_freq': max(1, total_iter // 3),
                   'use_tb_logger': False},
    }
    test = {
        'name': f'{NAME}_test', 'model_type': 'SRModel', 'scale': 4, 'num_gpu': 'auto',
        'datasets': {'test_1': val}, 'network_g': network,
        'path': {'pretrain_network_g': f'experiments/{NAME}/models/net_g_latest.pth', 'strict_load_g': True,
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


def _run_pipeline(kind: str, option_file: Path, workdir: Path, *extra: str) -> None:
    command = [sys.executable, '-m', f'ibsd.{kind}', '-opt', _relative(option_file, workdir), *extra]
    print(f'\n$ (cd {workdir} && {" ".join(command[2:])})', flush=True)
    subprocess.run(command, cwd=workdir, check=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='ibsd-demo', description=__doc__.split('\n')[0])
    parser.add_argument('--workdir', default='ibsd_demo', help='folder for data, options and results')
    parser.add_argument('--iters', type=int, default=600, help='training iterations (default: 600)')
    parser.add_argument('--seed', type=int, default=0, help='seed for the data set and training')
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error('--iters must be >= 1')
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    workdir = Path(args.workdir).resolve()
    print(f'Building the default data set under {workdir / "datasets"} ...', flush=True)
    data = build_default_set(workdir / 'datasets' / 'ibsd_default', DefaultSetConfig(seed=args.seed))
    train_opt, test_opt = demo_options(data, workdir, args.iters, args.seed)
    options = workdir / 'options'
    options.mkdir(parents=True, exist_ok=True)
    train_file, test_file = options / f'train_{NAME}.yml', options / f'test_{NAME}.yml'
    train_file.write_text(yaml.safe_dump(train_opt, sort_keys=False))
    test_file.write_text(yaml.safe_dump(test_opt, sort_keys=False))

    _run_pipeline('train', train_file, workdir, '--auto_resume')
    _run_pipeline('test', test_file, workdir)

    results = workdir / 'results' / test_opt['name']
    scores = read_test_metrics(results)
    floor = bicubic_scores(data)
    print('\n' + '=' * 72)
    print(f'Validation on held-out photos with unseen degradations (x4, Y channel, crop 4):')
    print(f'  {"method":<28}{"PSNR (dB)":>12}{"SSIM":>10}')
    print(f'  {"bicubic upsampling":<28}{floor["psnr"]:>12.3f}{floor["ssim"]:>10.4f}')
    print(f'  {"IMDN, " + str(args.iters) + " iterations":<28}{scores["psnr"]:>12.3f}{scores["ssim"]:>10.4f}')
    print(f'Checkpoints and training log: {workdir / "experiments" / NAME}')
    print(f'Test log and SR images:       {results}')
    print(f'Options (rerun with ibsd-train / ibsd-test from {workdir}): {options}')
    print('=' * 72)


if __name__ == '__main__':
    main()
