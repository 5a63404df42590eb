"""Data set preparation: official layouts -> BasicSR folders/LMDBs, and every malformed input named."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import cv2
import numpy as np
import pytest
from basicsr.data import build_dataset

from ibsd.data.prepare import main as prepare
from ibsd.data.real_pairs import subimage_positions
from tests.data.helpers import drealsr_fixture, image, realsr_fixture
from tests.helpers import REPO, bicubic_psnr, checked_scores, shared_path


def lmdb_dataset(root: Path, scale: int, gt_size: int):
    return build_dataset({'name': 'x', 'type': 'PairedImageDataset', 'phase': 'train', 'scale': scale,
                          'dataroot_gt': str(root / 'train_HR.lmdb'), 'dataroot_lq': str(root / 'train_LR.lmdb'),
                          'io_backend': {'type': 'lmdb'}, 'gt_size': gt_size, 'use_hflip': True, 'use_rot': True})


def test_drealsr_layout_becomes_lmdbs_and_test_folders(tmp_path):
    root = drealsr_fixture(tmp_path / 'DRealSR')
    assert prepare(['drealsr', '--root', str(root), '--scale', '4', '--out', str(tmp_path / 'out')]) == 0
    out = tmp_path / 'out' / 'x4'
    dataset = lmdb_dataset(out, 4, 192)
    assert len(dataset) == 3 and tuple(dataset[0]['lq'].shape) == (3, 48, 48)
    assert sorted(p.name for p in (out / 'test_LR').iterdir()) == ['DSC_1454.png', 'DSC_1460.png']
    assert (out / 'train_HR.lmdb' / 'meta_info.txt').read_text().splitlines()[0] == 'DSC_0001_0.png (192,192,3) 1'


def test_realsr_same_size_pairs_are_resampled(tmp_path):
    root = realsr_fixture(tmp_path / 'RealSR')
    prepare(['realsr', '--root', str(root), '--scale', '2', '--out', str(tmp_path / 'out')])
    out = tmp_path / 'out' / 'x2'
    assert sorted(p.name for p in (out / 'test_HR').iterdir()) == ['Canon_001.png', 'Nikon_001.png']
    assert cv2.imread(str(out / 'test_HR' / 'Canon_001.png')).shape == (50, 60, 3)
    assert cv2.imread(str(out / 'test_LR' / 'Canon_001.png')).shape == (25, 30, 3)
    assert len(lmdb_dataset(out, 2, 40)) == 4


def test_same_size_pairs_in_two_folders(tmp_path):
    for index in range(3):
        image(tmp_path / 'hr' / f'{index}.png', 33, 41, index)
        image(tmp_path / 'lr' / f'{index}.png', 33, 41, index + 3)
    prepare(['same-size', '--hr-dir', str(tmp_path / 'hr'), '--lr-dir', str(tmp_path / 'lr'), '--scale', '3',
             '--out', str(tmp_path / 'out'), '--val-count', '1', '--no-lmdb'])
    out = tmp_path / 'out' / 'x3'
    assert sorted(p.name for p in out.iterdir()) == ['train_HR', 'train_LR', 'val_HR', 'val_LR']
    assert cv2.imread(str(out / 'val_LR' / '2.png')).shape == (11, 13, 3)
    assert cv2.imread(str(out / 'val_HR' / '2.png')).shape == (33, 39, 3)


def test_interrupted_runs_continue_and_keep_finished_files(tmp_path):
    root = drealsr_fixture(tmp_path / 'DRealSR')
    arguments = ['drealsr', '--root', str(root), '--scale', '4', '--out', str(tmp_path / 'out')]
    prepare(arguments)
    done = tmp_path / 'out' / 'x4' / 'test_HR' / 'DSC_1454.png'
    stamp = done.stat().st_mtime_ns
    (tmp_path / 'out' / 'x4' / 'test_HR' / 'DSC_1460.png').unlink()
    prepare(arguments)
    assert done.stat().st_mtime_ns == stamp and (tmp_path / 'out' / 'x4' / 'test_HR' / 'DSC_1460.png').is_file()


TEST_HR, TEST_LR = Path('Test_x4') / 'test_HR', Path('Test_x4') / 'test_LR'


@pytest.mark.parametrize('break_it, message', [
    (lambda root: (root / TEST_LR / 'DSC_1460_x4.png').unlink(), r'unpaired files.*DSC_1460_x1.png'),
    (lambda root: image(root / TEST_LR / 'DSC_1460_x4.png', 41, 40), r'DSC_1460_x1.png: size 160x160 is not x4'),
    (lambda root: (root / TEST_HR / 'DSC_1460_x1.png').write_bytes(b'x'), 'DSC_1460_x1.png: not a readable'),
    (lambda root: image(root / TEST_HR / 'DSC_1460_x1.png', 160, 160, grey=True), 'greyscale'),
    (lambda root: __import__('shutil').rmtree(root / TEST_LR), 'DRealSR test LR folder .* does not exist'),
])
def test_malformed_inputs_are_named(tmp_path, capsys, break_it, message):
    root = drealsr_fixture(tmp_path / 'DRealSR')
    break_it(root)
    with pytest.raises(SystemExit) as exit_info:
        prepare(['drealsr', '--root', str(root), '--scale', '4', '--out', str(tmp_path / 'out')])
    assert exit_info.value.code == 2
    assert __import__('re').search(message, capsys.readouterr().err)


def test_subimages_match_basicsr_positions_and_stay_aligned(tmp_path):
    assert subimage_positions(500, 192, 96, 0) == [0, 96, 192, 288, 308]
    assert subimage_positions(500, 192, 96, 30) == [0, 96, 192, 288]
    hr = np.random.default_rng(0).integers(0, 256, (200, 240, 3), dtype=np.uint8)
    (tmp_path / 'hr').mkdir()
    (tmp_path / 'lr').mkdir()
    cv2.imwrite(str(tmp_path / 'hr' / 'a.png'), hr)
    cv2.imwrite(str(tmp_path / 'lr' / 'a.png'), hr[::4, ::4])
    prepare(['subimages', '--hr-dir', str(tmp_path / 'hr'), '--lr-dir', str(tmp_path / 'lr'), '--scale', '4',
             '--crop-size', '96', '--step', '48', '--out', str(tmp_path / 'sub'), '--lmdb'])
    names = sorted(p.name for p in (tmp_path / 'sub' / 'train_HR_sub').iterdir())
    assert len(names) == 4 * 4 and (tmp_path / 'sub' / 'train_LR_sub.lmdb' / 'meta_info.txt').is_file()
    sub_hr = cv2.imread(str(tmp_path / 'sub' / 'train_HR_sub' / names[5]))
    sub_lr = cv2.imread(str(tmp_path / 'sub' / 'train_LR_sub' / names[5]))
    assert np.array_equal(sub_hr[::4, ::4], sub_lr)


def test_scripts_have_help():
    for script in ('prepare_drealsr.py', 'prepare_realsr.py', 'prepare_same_size_pairs.py', 'extract_subimages.py'):
        result = subprocess.run([sys.executable, str(REPO / 'scripts' / script), '--help'], capture_output=True,
                                text=True)
        assert result.returncode == 0 and '--scale' in result.stdout


@pytest.mark.slow
def test_city100_becomes_an_x2_split_that_ibsd_test_evaluates(tmp_path):
    """Real camera pairs -> x2 train/val split; ibsd-test with the shipped YAML writes the tables."""
    source = shared_path('real', 'City100_iPhoneX')
    weights = shared_path('weights', 'IMDN_x2.pth')
    prepare(['same-size', '--input', str(source), '--scale', '2', '--out', str(tmp_path / 'datasets' / 'City100'),
             '--val-count', '20'])
    out = tmp_path / 'datasets' / 'City100' / 'x2'
    assert len(list((out / 'train_HR').iterdir())) == 80 and len(list((out / 'val_LR').iterdir())) == 20
    assert cv2.imread(str(out / 'val_LR' / '081.png')).shape == (300, 420, 3)
    assert len(lmdb_dataset(out, 2, 96)) == 80
    result = subprocess.run(
        [str(Path(sysconfig.get_path('scripts')) / 'ibsd-test'), '-opt',
         str(REPO / 'options' / 'test' / 'IBSD' / 'test_imdn_x2_city100.yml'),
         '--force_yml', f'path:pretrain_network_g={weights}', 'tile:tile_size=128'],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    # the official IMDN x2 weights beat bicubic upsampling of the same LR images, scored as the YAML scores them
    # (crop 2; measured on whole images: 25.79 against 25.59 dB Y-PSNR, 24.15 against 23.98 dB RGB, every image above)
    val = out / 'val_HR', out / 'val_LR'
    psnr, = checked_scores(output, floor=bicubic_psnr(*val, 2, crop_border=2, test_y_channel=True))
    checked_scores(output, metric='psnr_rgb', floor=bicubic_psnr(*val, 2, crop_border=2, test_y_channel=False))
    ssim, = checked_scores(output, metric='ssim', floor=0.5)
    assert psnr < 40 and ssim < 1
    results = tmp_path / 'results' / 'IMDN_x2_City100'
    table = (results / 'City100_x2_val_metrics.csv').read_text().splitlines()
    assert table[0] == 'image,psnr,ssim,psnr_rgb,tile' and len(table) == 22 and table[-1].startswith('mean,')
    assert table[-1].endswith(',128 pad 16')  # tiling asked for on the command line is recorded
    mean_psnr = float(table[-1].split(',')[1])
    assert mean_psnr == pytest.approx(psnr, abs=1e-3)
    assert '| **mean** |' in (results / 'City100_x2_val_metrics.md').read_text()
