"""The IMDN and RFDN archs reproduce the official weights' published PSNR/SSIM."""
from __future__ import annotations

import re
import subprocess
import sysconfig
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from basicsr.metrics import calculate_psnr, calculate_ssim

from ibsd.archs.checkpoint import load_pretrained
from ibsd.archs.imdn_arch import IMDN, IMDN_AS
from ibsd.archs.rfdn_arch import RFDN
from tests.helpers import REPO, shared_path

SET5 = ('baby', 'bird', 'butterfly', 'head', 'woman')


def read_bgr(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # greyscale files come back with 3 channels
    assert image is not None, f'cannot read {path}'
    return image


@torch.no_grad()
def upscale_bgr(net: torch.nn.Module, lr_bgr: np.ndarray) -> np.ndarray:
    """Official protocol: RGB in [0, 1], output clamped and rounded to 8 bit; BGR out."""
    rgb = torch.from_numpy(lr_bgr[:, :, ::-1].astype(np.float32) / 255.).permute(2, 0, 1)[None]
    out = net(rgb).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return np.round(out * 255.).astype(np.uint8)[:, :, ::-1]


def score(net: torch.nn.Module, pairs: list[tuple[Path, Path]], scale: int) -> tuple[float, float, list[float]]:
    psnrs, ssims = [], []
    for hr_path, lr_path in pairs:
        sr = upscale_bgr(net, read_bgr(lr_path))
        hr = read_bgr(hr_path)[:sr.shape[0], :sr.shape[1]]
        psnrs.append(calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True))
        ssims.append(calculate_ssim(sr, hr, crop_border=scale, test_y_channel=True))
    return float(np.mean(psnrs)), float(np.mean(ssims)), psnrs


def set5_pairs(scale: int) -> list[tuple[Path, Path]]:
    root = shared_path('benchmarks', 'Set5')
    return [(root / 'HR' / f'{n}.bmp', root / 'LR_bicubic' / f'x{scale}' / f'{n}x{scale}.bmp') for n in SET5]


def set14_pairs() -> list[tuple[Path, Path]]:
    root = shared_path('benchmarks', 'Set14_x4')
    return [(root / f'img_{i:03d}_SRF_4_HR.png', root / f'img_{i:03d}_SRF_4_LR.png') for i in range(1, 15)]


def official(net: torch.nn.Module, name: str) -> torch.nn.Module:
    return load_pretrained(net, str(shared_path('weights', name)), strict=True).eval()


@pytest.mark.parametrize('scale, psnr, ssim', [(4, 32.210, 0.8948), (3, 34.360, 0.9270), (2, 37.996, 0.9605)])
def test_imdn_set5(scale, psnr, ssim):
    net = official(IMDN(upscale=scale), f'IMDN_x{scale}.pth')
    mean_psnr, mean_ssim, per_image = score(net, set5_pairs(scale), scale)
    assert mean_psnr == pytest.approx(psnr, abs=0.01)
    assert mean_ssim == pytest.approx(ssim, abs=1e-4)
    if scale == 4:
        assert per_image == pytest.approx([33.774, 35.044, 28.559, 32.919, 30.751], abs=0.01)


def test_imdn_set14_x4():
    net = official(IMDN(upscale=4), 'IMDN_x4.pth')
    mean_psnr, mean_ssim, _ = score(net, set14_pairs(), 4)
    assert mean_psnr == pytest.approx(28.587, abs=0.01)
    assert mean_ssim == pytest.approx(0.7811, abs=1e-4)


def test_rfdn_aim_set5_x4():
    net = official(RFDN(num_feat=50, num_block=4, upscale=4, attention='esa', img_range=255.), 'RFDN_AIM.pth')
    mean_psnr, mean_ssim, per_image = score(net, set5_pairs(4), 4)
    assert mean_psnr == pytest.approx(32.159, abs=0.01)
    assert mean_ssim == pytest.approx(0.8946, abs=1e-4)
    assert per_image == pytest.approx([33.759, 34.890, 28.641, 32.956, 30.549], abs=0.01)


def test_imdn_as_restores_same_size_photo():
    """IMDN_AS loads strictly and keeps the size; on a real camera pair it beats the raw input."""
    net = official(IMDN_AS(), 'IMDN_AS.pth')
    root = shared_path('real', 'City100_iPhoneX')
    lq, gt = read_bgr(root / '010L.PNG')[:202, :250], read_bgr(root / '010H.PNG')[:202, :250]
    out = upscale_bgr(net, lq)
    assert out.shape == lq.shape
    assert np.isfinite(out).all()
    assert calculate_psnr(out, gt, 0, test_y_channel=True) > 20


@pytest.mark.slow
@pytest.mark.parametrize('option_file, weights, psnr, ssim', [
    ('options/test/IMDN/test_IMDN_x4_official.yml', 'IMDN_x4.pth', 32.210, 0.8948),
    ('options/test/RFDN/test_RFDN_AIM_x4_official.yml', 'RFDN_AIM.pth', 32.159, 0.8946),
])
def test_shipped_test_options_reproduce_the_paper_through_ibsd_test(tmp_path, option_file, weights, psnr, ssim):
    """BasicSR's test pipeline, via ibsd-test and the YAML users get, on the official weights."""
    (tmp_path / 'datasets').mkdir()
    (tmp_path / 'datasets' / 'Set5').symlink_to(shared_path('benchmarks', 'Set5'))
    (tmp_path / 'experiments' / 'pretrained_models').mkdir(parents=True)
    (tmp_path / 'experiments' / 'pretrained_models' / weights).symlink_to(shared_path('weights', weights))
    result = subprocess.run([str(Path(sysconfig.get_path('scripts')) / 'ibsd-test'), '-opt', str(REPO / option_file)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    scores = dict(re.findall(r'# (\w+): ([\d.]+)', output))
    assert float(scores['psnr']) == pytest.approx(psnr, abs=0.01)
    assert float(scores['ssim']) == pytest.approx(ssim, abs=1e-4)
    assert len(list((tmp_path / 'results').rglob('*.png'))) == 5
