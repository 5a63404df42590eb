"""Data sets checked before the first iteration; read errors that name the file, also from loader workers."""
from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import basicsr.train
from ibsd.data.checks import DataCheckError, check_dataset
from tests.helpers import SCRIPTS, make_pairs, paired, train_options, write_yaml


def options(root: Path, phase: str = 'train', **extra) -> dict:
    return {**paired('pairs', root), 'phase': phase, 'scale': 2, 'gt_size': 32, 'use_hflip': False,
            'use_rot': False, **extra}


def test_good_pairs_pass_and_the_log_line_says_how_long_it_took(tmp_path):
    make_pairs(tmp_path, 4, scale=2)
    line = check_dataset(options(tmp_path))
    assert line.startswith('datasets:train (pairs): 4 pairs, names and sizes checked in ') and line.endswith(' s')


def test_a_missing_dataroot_is_named(tmp_path):
    opt = options(tmp_path)
    del opt['dataroot_gt']
    with pytest.raises(DataCheckError, match=r'datasets:train \(pairs\): dataroot_gt is missing'):
        check_dataset(opt)
    opt = options(tmp_path / 'nowhere')
    with pytest.raises(DataCheckError, match=r'dataroot_gt .*nowhere/hr does not exist'):
        check_dataset(opt)


def test_unpaired_names_are_listed(tmp_path):
    make_pairs(tmp_path, 4, scale=2)
    (tmp_path / 'lr' / '002.png').rename(tmp_path / 'lr' / '002b.png')
    with pytest.raises(DataCheckError, match=r'1 GT image\(s\) in .*hr have no LQ partner in .*lr: 002.png'):
        check_dataset(options(tmp_path))


def test_a_size_mismatch_names_the_pair(tmp_path):
    make_pairs(tmp_path, 3, scale=2)
    cv2.imwrite(str(tmp_path / 'lr' / '001.png'), np.zeros((20, 24, 3), np.uint8))
    with pytest.raises(DataCheckError, match=r'pair 001.png: GT .*hr/001.png is 48x48 but LQ .*lr/001.png is 24x20'):
        check_dataset(options(tmp_path))


def test_evaluation_sets_may_have_a_larger_gt_which_basicsr_crops(tmp_path):
    make_pairs(tmp_path, 2, scale=2)
    cv2.imwrite(str(tmp_path / 'hr' / '000.png'), np.zeros((49, 49, 3), np.uint8))  # LQ is 24x24
    assert 'WARNING' not in check_dataset(options(tmp_path, phase='val'))
    cv2.imwrite(str(tmp_path / 'hr' / '000.png'), np.zeros((53, 60, 3), np.uint8))  # 2 x 24 + 2 or more
    assert 'WARNING: 1 GT image(s) are larger than 2 x their LQ by 2 pixels or more (000.png)' in check_dataset(
        options(tmp_path, phase='val'))
    with pytest.raises(DataCheckError, match='pair 000.png'):
        check_dataset(options(tmp_path, phase='train'))
    cv2.imwrite(str(tmp_path / 'hr' / '000.png'), np.zeros((47, 60, 3), np.uint8))
    with pytest.raises(DataCheckError, match=r'pair 000.png: .* must be 48x48 or larger'):
        check_dataset(options(tmp_path, phase='val'))


def test_formats_pillow_cannot_read_are_decoded_by_opencv(tmp_path):
    make_pairs(tmp_path, 1, scale=2)
    for folder, size in (('hr', 48), ('lr', 24)):
        (tmp_path / folder / '000.png').unlink()
        image = np.random.default_rng(0).random((size, size, 3), dtype=np.float32)
        assert cv2.imwrite(str(tmp_path / folder / '000.hdr'), image)
    assert check_dataset(options(tmp_path)).startswith('datasets:train (pairs): 1 pairs')


def test_list_valued_dataroots_of_other_data_sets_are_checked_item_by_item(tmp_path):
    make_pairs(tmp_path, 1, scale=2)
    opt = {'name': 'single', 'type': 'SingleImageDataset', 'phase': 'test', 'io_backend': {'type': 'disk'},
           'dataroot_lq': [str(tmp_path / 'lr')]}
    assert check_dataset(opt).endswith(' s')
    opt['dataroot_lq'].append(str(tmp_path / 'missing'))
    with pytest.raises(DataCheckError, match=r'dataroot_lq .*missing does not exist'):
        check_dataset(opt)


def test_a_file_that_is_not_an_image_is_named_before_training(tmp_path):
    make_pairs(tmp_path, 2, scale=2)
    (tmp_path / 'hr' / '001.png').write_bytes(b'not a png at all')
    with pytest.raises(DataCheckError, match=r'hr/001.png: not a readable image'):
        check_dataset(options(tmp_path))
    (tmp_path / 'hr' / 'notes.txt').write_text('x')
    with pytest.raises(DataCheckError, match=r'hr/notes.txt: not a readable image.*move other files out'):
        check_dataset(options(tmp_path))


def test_a_truncated_image_is_named_when_it_is_drawn(tmp_path):
    make_pairs(tmp_path, 2, scale=2)
    path = tmp_path / 'lr' / '001.png'
    path.write_bytes(path.read_bytes()[:60])  # the header survives, the pixels do not
    dataset = basicsr.train.build_dataset(options(tmp_path))
    dataset[0]
    with pytest.raises(DataCheckError, match=r'pairs: cannot read sample 1 \(.*lr/001.png.*hr/001.png'):
        dataset[1]


def write_lmdb_meta(root: Path, sizes: dict[str, tuple[int, int]]) -> Path:
    root.mkdir(parents=True)
    (root / 'meta_info.txt').write_text(''.join(f'{k} ({h},{w},3) 1\n' for k, (h, w) in sizes.items()))
    return root


def test_lmdb_pairs_are_checked_from_meta_info(tmp_path):
    gt = write_lmdb_meta(tmp_path / 'hr.lmdb', {'a.png': (64, 64), 'b.png': (64, 48)})
    lq = write_lmdb_meta(tmp_path / 'lr.lmdb', {'a.png': (32, 32), 'b.png': (32, 32)})
    opt = {**options(tmp_path), 'dataroot_gt': str(gt), 'dataroot_lq': str(lq), 'io_backend': {'type': 'lmdb'}}
    with pytest.raises(DataCheckError, match=r'pair b: GT .*hr.lmdb:b is 48x64 but LQ .*lr.lmdb:b is 32x32'):
        check_dataset(opt)
    (lq / 'meta_info.txt').unlink()
    with pytest.raises(DataCheckError, match=r'lr.lmdb: no meta_info.txt'):
        check_dataset(opt)


def test_lmdb_keys_are_basicsrs_and_may_contain_spaces(tmp_path):
    gt = write_lmdb_meta(tmp_path / 'hr.lmdb', {'city 01.png': (64, 64), 'b.png': (64, 48)})
    lq = write_lmdb_meta(tmp_path / 'lr.lmdb', {'city 01.png': (32, 32), 'b.png': (32, 24)})
    opt = {**options(tmp_path), 'dataroot_gt': str(gt), 'dataroot_lq': str(lq), 'io_backend': {'type': 'lmdb'},
           'gt_size': 16}
    assert check_dataset(opt).startswith('datasets:train (pairs): 2 pairs')
    (lq / 'meta_info.txt').write_text('city 01.png (32,32,3) 1\nb.jpg (32,24,3) 1\n')  # key b either way
    assert check_dataset(opt).startswith('datasets:train (pairs): 2 pairs')
    (lq / 'meta_info.txt').write_text('city 01.png (32,32,3) 1\nc.png (32,24,3) 1\n')
    with pytest.raises(DataCheckError, match=r"have no LQ partner .*: b$"):
        check_dataset(opt)
    (lq / 'meta_info.txt').write_text('city 01 (32,32,3) 1\n')
    with pytest.raises(DataCheckError, match=r"meta_info.txt:1: 'city 01' has no extension"):
        check_dataset(opt)


def test_training_with_a_missing_dataroot_ends_with_one_line(tmp_path):
    make_pairs(tmp_path / 'data' / 'train', 2, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 1, scale=2)
    opt = train_options('broken', {'type': 'IMDN', 'num_feat': 8, 'num_block': 2, 'upscale': 2},
                        tmp_path / 'data', 2, 2)
    del opt['datasets']['val']['dataroot_gt']
    result = subprocess.run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / 'x.yml', opt))],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'DataCheckError: datasets:val (val): dataroot_gt is missing (PairedImageDataset needs dataroot_gt and '
        'dataroot_lq)')
    assert 'Traceback' not in result.stderr


def test_worker_errors_keep_their_own_message():
    from ibsd.data.checks import DataCheckError, worker_error_message
    wrapped = ('Caught DataCheckError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n'
               '  File "x.py", line 1, in f\n    raise DataCheckError(...)\n'
               'ibsd.data.checks.DataCheckError: train: cannot read sample 1 (gt_path a.png)\n')
    assert worker_error_message(wrapped, DataCheckError) == 'train: cannot read sample 1 (gt_path a.png)'
    assert worker_error_message('plain', DataCheckError) == 'plain'


@pytest.mark.slow
def test_a_training_set_smaller_than_one_batch_is_refused(tmp_path):
    make_pairs(tmp_path / 'data' / 'train', 3, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 1, scale=2, seed=1)
    network = {'type': 'IMDN', 'num_feat': 8, 'num_block': 1, 'upscale': 2}
    options = train_options('small', network, tmp_path / 'data', 2, 6)
    options['datasets']['train']['batch_size_per_gpu'] = 4
    result = subprocess.run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / 's.yml', options))],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        'DataCheckError: datasets:train (train): 3 training pair(s) x dataset_enlarge_ratio 1 make no full batch of '
        'batch_size_per_gpu 4: the run would train nothing. Set batch_size_per_gpu to at most 3 or '
        'dataset_enlarge_ratio to at least 2')
    assert not (tmp_path / 'experiments' / 'small' / 'models' / 'net_g_latest.pth').exists()
    assert yaml.safe_load((tmp_path / 's.yml').read_text())['train']['total_iter'] == 6
