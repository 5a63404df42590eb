"""Time of one training iteration: plain SRModel (L1) vs IBSDModel (L1 + CLUB + wavelet + teacher).

The demo's setting by default: IMDN x4, batch 8, LR patch 32, CPU threads as torch chooses.

    python scripts/benchmark_ibsd_step.py [--batch 8 --patch 32 --iters 20]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import ibsd  # noqa: F401
from basicsr.models import build_model


def options(model_type: str, folder: str) -> dict:
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-4}, 'total_iter': 1000,
             'scheduler': {'type': 'MultiStepLR', 'milestones': [10 ** 6], 'gamma': 0.5},
             'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0}}
    if model_type == 'IBSDModel':
        train.update(mi_opt={'type': 'IBCLUBLoss', 'loss_weight': 1e-3},
                     wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': 1.0},
                     soft_target={'source': 'snapshot', 'refresh_iters': 1, 'alpha_max': 0.8, 'ramp_iters': 1})
    return {'name': 'bench', 'model_type': model_type, 'scale': 4, 'num_gpu': 0, 'is_train': True, 'dist': False,
            'rank': 0, 'world_size': 1, 'manual_seed': 0,
            'network_g': {'type': 'IMDN', 'num_feat': 64, 'num_block': 6, 'upscale': 4},
            'network_est': {'type': 'IBEstimator', 'scale_eps': 1e-3}, 'datasets': {'train': {'gt_size': 128}},
            'path': {'pretrain_network_g': None, 'resume_state': None, 'models': folder, 'training_states': folder},
            'train': train}


def seconds_per_iteration(model_type: str, batch: int, patch: int, iters: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(options(model_type, folder))
        lq = torch.rand(batch, 3, patch, patch)
        model.feed_data({'lq': lq, 'gt': torch.rand(batch, 3, patch * 4, patch * 4)})
        samples = []
        for step in range(1, iters + 3):
            start = time.perf_counter()
            model.optimize_parameters(step)
            if step > 2:  # the first steps allocate and take the first snapshot
                samples.append(time.perf_counter() - start)
        return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=8)
    parser.add_argument('--patch', type=int, default=32)
    parser.add_argument('--iters', type=int, default=20)
    args = parser.parse_args()
    plain = seconds_per_iteration('SRModel', args.batch, args.patch, args.iters)
    ibsd_time = seconds_per_iteration('IBSDModel', args.batch, args.patch, args.iters)
    print(f'IMDN x4, batch {args.batch}, LR patch {args.patch}, {torch.get_num_threads()} threads, '
          f'median of {args.iters} iterations')
    print(f'SRModel (L1):        {plain:.3f} s/iteration')
    print(f'IBSDModel (all terms): {ibsd_time:.3f} s/iteration ({ibsd_time / plain:.2f}x)')


if __name__ == '__main__':
    main()
