"""ibsd-infer on real photos without ground truth (../shared/data/real/RealSRSet)."""
from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from ibsd.archs.imdn_arch import IMDN
from tests.conftest import shared_path

INFER = Path(sysconfig.get_path('scripts')) / 'ibsd-infer'
TINY = ['--arch', 'IMDN', '--scale', '4', '--arch-opt', 'num_feat=16', '--arch-opt', 'num_block=2']


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('ckpt') / 'net_g_latest.pth'
    net = IMDN(num_feat=16, num_block=2, upscale=4)
    torch.save({'params': net.state_dict(), 'params_ema': net.state_dict()}, path)
    return path


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / 'photos'
    shutil.copytree(shared_path('real', 'RealSRSet'), folder)
    (folder / 'broken.png').write_bytes(b'not an image')
    return folder


def run_infer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(INFER), *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize('tile', ['0', '48'])
def test_folder_is_upscaled_with_progress_and_bad_files_skipped(photos, checkpoint, tmp_path, tile):
    out = tmp_path / f'out_{tile}'
    result = run_infer('-i', str(photos), '-o', str(out), '--model-path', str(checkpoint), '--tile', tile,
                       '--compare', *TINY)
    assert result.returncode == 1  # one file failed, the others were written
    assert 'skipped' in result.stderr and 'broken.png' in result.stderr
    assert 'ibsd-infer: 100%' in result.stderr and '20 of 21 images' in result.stdout
    for source in sorted(photos.glob('*')):
        if source.name == 'broken.png':
            continue
        lq = cv2.imread(str(source), cv2.IMREAD_COLOR)
        sr = cv2.imread(str(out / f'{source.stem}_sr.png'))
        assert sr.shape == (lq.shape[0] * 4, lq.shape[1] * 4, 3)
        compare = cv2.imread(str(out / f'{source.stem}_compare.png'))
        assert compare.shape == (sr.shape[0], sr.shape[1] * 2 + 8, 3)


def test_tiled_and_whole_outputs_agree(photos, checkpoint, tmp_path):
    (photos / 'broken.png').unlink()
    first = sorted(photos.iterdir())[0]
    for tile in ('0', '40'):
        assert run_infer('-i', str(first), '-o', str(tmp_path / tile), '--model-path', str(checkpoint),
                         '--tile', tile, *TINY).returncode == 0
    whole = cv2.imread(str(tmp_path / '0' / f'{first.stem}_sr.png')).astype(int)
    tiled = cv2.imread(str(tmp_path / '40' / f'{first.stem}_sr.png')).astype(int)
    assert np.abs(whole - tiled).max() <= 2  # CCA pools globally: tiles differ by rounding at most


def test_output_next_to_input_and_option_errors(tmp_path, checkpoint):
    image = tmp_path / 'grey.png'
    cv2.imwrite(str(image), np.full((20, 24), 128, np.uint8))
    assert run_infer('-i', str(image), '--model-path', str(checkpoint), *TINY).returncode == 0
    assert cv2.imread(str(tmp_path / 'grey_sr.png')).shape == (80, 96, 3)
    result = run_infer('-i', str(image), '--model-path', str(checkpoint))
    assert result.returncode == 2 and '--opt' in result.stderr
    result = run_infer('-i', str(tmp_path / 'missing'), '--model-path', str(checkpoint), *TINY)
    assert result.returncode != 0 and 'missing does not exist' in result.stderr
    result = run_infer('-i', str(image), '--model-path', str(checkpoint), '--arch', 'IMDN', '--scale', '2')
    assert result.returncode != 0 and 'does not fit IMDN' in result.stderr
