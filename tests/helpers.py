"""Helpers shared by the test modules: repository paths, small data sets and option files, BasicSR runs,
an in-process IBSDModel, and the scores a run logs. Fixtures are in ``tests/conftest.py``; helpers used
by one folder only are in that folder's ``helpers.py``."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sysconfig
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
"""The repository root: every path into the repository is taken from here."""
SHARED_DATA = Path(os.environ.get('IBSD_SHARED_DATA', REPO.parent / 'shared' / 'data'))
SCRIPTS = Path(sysconfig.get_path('scripts'))
"""Where the console scripts (ibsd-train, ibsd-test, ...) of this environment are installed."""


def shared_path(*parts: str) -> Path:
    """Path inside ../shared/data; skips the test with a message when it is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'{path} is absent (real test material from ../shared/data); set IBSD_SHARED_DATA to its folder')
    return path


def n_params(net) -> int:
    """Number of parameters of a network."""
    return sum(p.numel() for p in net.parameters())


# ----------------------------------------------------------------------------- data and option files
def make_pairs(root: Path, count: int, scale: int, size: int = 48, seed: int = 0) -> None:
    """Smooth random HR images and their area-downscaled LR versions, as PNG folders."""
    rng = np.random.default_rng(seed)
    (root / 'hr').mkdir(parents=True)
    (root / 'lr').mkdir(parents=True)
    for index in range(count):
        hr = cv2.GaussianBlur((rng.random((size, size, 3)) * 255).astype(np.uint8), (7, 7), 2)
        lr = cv2.resize(hr, (size // scale, size // scale), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(root / 'hr' / f'{index:03d}.png'), hr)
        cv2.imwrite(str(root / 'lr' / f'{index:03d}.png'), lr)


def paired(name: str, root: Path, **extra) -> dict:
    return {'name': name, 'type': 'PairedImageDataset', 'dataroot_gt': str(root / 'hr'),
            'dataroot_lq': str(root / 'lr'), 'io_backend': {'type': 'disk'}, **extra}


def train_options(name: str, network: dict, data: Path, scale: int, total_iter: int) -> dict:
    return {
        'name': name, 'model_type': 'SRModel', 'scale': scale, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': {
            'train': paired('train', data / 'train', gt_size=32, use_hflip=True, use_rot=True,
                            num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1),
            'val': paired('val', data / 'val')},
        'network_g': network,
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0.999, 'optim_g': {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [1000], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'val': {'val_freq': 2, 'save_img': False,
                'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': scale, 'test_y_channel': True}}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
    }


IBSD_RUN_NETWORK = {'type': 'IMDN', 'num_feat': 16, 'num_block': 6, 'upscale': 2}
"""The student of :func:`ibsd_options`."""


def ibsd_options(name: str, data: Path, total_iter: int) -> dict:
    """The plain test run's options with IBSD's model and terms (4 iterations per epoch, saves every 4)."""
    opt = train_options(name, IBSD_RUN_NETWORK, data, 2, total_iter)
    opt.update(model_type='IBSDModel', manual_seed=7)
    opt['train'].update(
        ema_decay=0.9, optim_g={'type': 'Adam', 'lr': 1e-3, 'betas': [0.9, 0.99]},
        scheduler={'type': 'MultiStepLR', 'milestones': [6], 'gamma': 0.5},
        mi_opt={'type': 'IBCLUBLoss', 'loss_weight': 0.01, 'reduction': 'mean', 'mode': 'sampled'},
        wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': 1.0, 'levels': 3},
        soft_target={'source': 'snapshot', 'alpha_max': 0.8, 'ramp_iters': 8})
    opt['val']['val_freq'] = 4
    opt['logger']['save_checkpoint_freq'] = 4
    return opt


def write_yaml(path: Path, options: dict) -> Path:
    path.write_text(yaml.safe_dump(options, sort_keys=False))
    return path


def run(command: list[str], cwd: Path, env: dict | None = None) -> str:
    """Run ``command``; its stdout and stderr, after asserting it exited 0."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                            env={**os.environ, **(env or {})})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


# ----------------------------------------------------------------------------- scores a run logs
METRIC_LINE = re.compile(r'# (\w+): (\S+)')
"""BasicSR's validation and test lines: ``\\t # psnr: 23.4567\\tBest: ...``; NaN is logged as ``nan``."""

PLAIN_FLOOR_DB = 5.0
"""The floor for the PSNR of a network trained a few iterations from random weights, on :func:`make_pairs`'
images. Such a network is untrained: a random IMDN scores about 8 dB there (Y or RGB), a black image about
7 dB, bicubic upsampling about 50 dB. So what can be asserted of its score is that it is finite and a PSNR
of these images at all: no 8-bit output scores below about 5.3 dB on them."""


def logged_metrics(output: str) -> dict[str, list[float]]:
    """Every value logged as ``# <metric>: <value>`` in ``output``, by metric, in the order logged."""
    found: dict[str, list[float]] = {}
    for name, value in METRIC_LINE.findall(output):
        try:
            number = float(value)
        except ValueError:
            continue
        found.setdefault(name, []).append(number)
    return found


def checked_scores(output: str, floor: float, metric: str = 'psnr') -> list[float]:
    """The values of ``metric`` logged in ``output``, asserted to be there, finite and above ``floor``."""
    values = logged_metrics(output).get(metric)
    assert values, f'no "# {metric}:" line in the output:\n{output[-3000:]}'
    assert all(math.isfinite(v) for v in values), f'non-finite {metric}: {values}'
    assert all(v > floor for v in values), f'{metric} {values} not above {floor:.4f}'
    return values


def bicubic_psnr(gt_folder: Path, lq_folder: Path, scale: int, crop_border: int, test_y_channel: bool) -> float:
    """Mean PSNR of bicubic upsampling of each LQ image against its GT (cropped to scale x the LQ, as
    BasicSR's paired data set does for evaluation), with BasicSR's ``calculate_psnr``: the score a network
    must beat. Pairs are matched by file stem."""
    from basicsr.metrics import calculate_psnr
    lq_files = {p.stem: p for p in Path(lq_folder).iterdir()}
    scores = []
    for gt_path in sorted(Path(gt_folder).iterdir()):
        lq = cv2.imread(str(lq_files[gt_path.stem]), cv2.IMREAD_COLOR)
        gt = cv2.imread(str(gt_path), cv2.IMREAD_COLOR)[:lq.shape[0] * scale, :lq.shape[1] * scale]
        up = cv2.resize(lq, (gt.shape[1], gt.shape[0]), interpolation=cv2.INTER_CUBIC)
        scores.append(calculate_psnr(up, gt, crop_border, test_y_channel=test_y_channel))
    assert scores, f'no images in {gt_folder}'
    return float(np.mean(scores))


# ----------------------------------------------------------------------------- IBSDModel in process
IMDN_SMALL = {'type': 'IMDN', 'num_feat': 16, 'num_block': 6, 'upscale': 2}


def make_opt(tmp_path: Path, network: dict | None = None, **train) -> dict:
    """Options of an in-process IBSDModel (IMDN_SMALL unless ``network``); ``train`` entries replace the
    defaults' (``None`` removes one)."""
    train_opt = {
        'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 10,
        'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
        'mi_opt': {'type': 'IBCLUBLoss', 'loss_weight': 0.01},
        'wavelet_opt': {'type': 'WaveletHFLoss', 'loss_weight': 1.0, 'levels': 2},
        'soft_target': {'source': 'snapshot', 'alpha_max': 0.8, 'refresh_iters': 2, 'ramp_iters': 4},
    }
    train_opt.update(train)
    train_opt = {k: v for k, v in train_opt.items() if v is not None}
    return {'name': 'unit', 'model_type': 'IBSDModel', 'scale': 2, 'num_gpu': 0, 'is_train': True, 'dist': False,
            'rank': 0, 'world_size': 1, 'manual_seed': 0, 'network_g': deepcopy(network or IMDN_SMALL),
            'datasets': {'train': {'gt_size': 32}}, 'train': train_opt,
            'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                     'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'states')}}


def feed(model, batch: int = 4, size: int = 16, seed: int = 0) -> None:
    """A random LQ batch and its bicubic x2 as GT."""
    generator = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 3, size, size, generator=generator)
    model.feed_data({'lq': lq, 'gt': torch.nn.functional.interpolate(lq, scale_factor=2, mode='bicubic')})


def cpu_bf16(model) -> None:
    """The bf16 path on CPU (train:amp itself is refused there): same code, CPU autocast."""
    model.amp_dtype = torch.bfloat16
    model.autocast = lambda: torch.autocast(device_type='cpu', dtype=torch.bfloat16)


# ----------------------------------------------------------------------------- networks and images
SWINIR = {'upscale': 2, 'in_chans': 3, 'img_size': 8, 'window_size': 4, 'img_range': 1.0, 'depths': [1],
          'embed_dim': 12, 'num_heads': [1], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect'}
"""A tiny BasicSR SwinIR (window 4), without its ``type``."""


def nearest_rfdn(path: Path, scale: int = 4, bias: float = 0.) -> Path:
    """A tiny RFDN whose output is the nearest-neighbour upscale of its input plus ``bias / img_range``.

    With ``bias`` > 0 it behaves like weights trained on 0-255 pixel values: right with
    ``img_range=255``, saturated white with ``img_range=1``.
    """
    from ibsd.archs.rfdn_arch import RFDN
    net = RFDN(num_feat=8, num_block=1, upscale=scale, attention='cca')
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        upsampler = net.upsampler[0]
        for channel in range(3):
            net.fea_conv.weight[channel, channel, 1, 1] = 1
            upsampler.weight[channel * scale**2:(channel + 1) * scale**2, channel, 1, 1] = 1
        upsampler.bias.fill_(bias)
    torch.save(net.state_dict(), path)
    return path


CDC_COMPONENTS = ('flat', 'edge', 'corner')
"""The component images of CDC's HGSR-MHR, in the order of its loss weights (1, 2, 5)."""


def smooth_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Blurred random RGB images in [0, 1]: flat areas, edges and corners."""
    rng = np.random.default_rng(seed)
    images = [cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (5, 5), 1.5) for _ in range(batch)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
