"""The default data set: disjoint photos, LMDBs BasicSR loads, reuse of a finished build, reproducibility."""
from __future__ import annotations

import json

import numpy as np
import pytest
from basicsr.data import build_dataset

from ibsd.data.default_set import DefaultSetConfig, build_default_set, crop_patches, load_photo

SMALL = DefaultSetConfig(max_patches_per_photo=3, train_photos=('astronaut', 'camera'), val_photos=('coffee',))


@pytest.fixture(scope='module')
def small_set(tmp_path_factory):
    return build_default_set(tmp_path_factory.mktemp('default') / 'set', SMALL)


def test_photos_ship_with_scikit_image_and_are_bgr_with_three_channels():
    assert load_photo('camera').shape == (512, 512, 3)
    rgb = load_photo('astronaut')
    import skimage.data
    assert np.array_equal(rgb[:, :, ::-1], skimage.data.astronaut())


def test_train_and_validation_are_disjoint_by_default():
    config = DefaultSetConfig()
    assert not set(config.train_photos) & set(config.val_photos)


def test_crop_patches_limits_count():
    rng = np.random.default_rng(0)
    assert len(crop_patches(np.zeros((512, 384, 3)), 128, 100, rng)) == 12
    assert len(crop_patches(np.zeros((512, 384, 3)), 128, 5, rng)) == 5


def test_lmdb_loads_in_basicsr_paired_dataset(small_set):
    dataset = build_dataset({
        'name': 'default', 'type': 'PairedImageDataset', 'phase': 'train', 'scale': 4,
        'dataroot_gt': str(small_set['train_gt']), 'dataroot_lq': str(small_set['train_lq']),
        'io_backend': {'type': 'lmdb'}, 'gt_size': 64, 'use_hflip': True, 'use_rot': True})
    assert len(dataset) == 6
    item = dataset[0]
    assert tuple(item['gt'].shape) == (3, 64, 64) and tuple(item['lq'].shape) == (3, 16, 16)
    manifest = json.loads(small_set['manifest'].read_text())
    assert manifest['train_pairs'] == 6 and manifest['val_pairs'] == 1


def test_validation_pairs_are_folders_of_matching_sizes(small_set):
    import cv2
    gt = cv2.imread(str(small_set['val_gt'] / 'coffee.png'))
    lq = cv2.imread(str(small_set['val_lq'] / 'coffee.png'))
    assert gt.shape == (400, 600, 3) and lq.shape == (100, 150, 3)


def test_finished_build_is_reused_and_changed_settings_rebuild(tmp_path):
    where = build_default_set(tmp_path / 'set', SMALL)
    stamp = where['manifest'].stat().st_mtime_ns
    assert build_default_set(tmp_path / 'set', SMALL) == where
    assert where['manifest'].stat().st_mtime_ns == stamp
    (tmp_path / 'set' / 'partial_leftover').write_text('x')
    build_default_set(tmp_path / 'set', DefaultSetConfig(**{**SMALL.__dict__, 'seed': 1}))
    assert not (tmp_path / 'set' / 'partial_leftover').exists()
    assert json.loads(where['manifest'].read_text())['config']['seed'] == 1


def test_build_is_reproducible_and_leaves_global_random_state_alone(tmp_path, small_set):
    import random

    import lmdb
    random.seed(123)
    np.random.seed(123)
    expected = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    again = build_default_set(tmp_path / 'again', SMALL)
    assert (random.random(), np.random.random()) == expected

    def contents(path):
        with lmdb.open(str(path), readonly=True, lock=False) as env, env.begin() as txn:
            return dict(txn.cursor())
    assert contents(again['train_lq']) == contents(small_set['train_lq'])
    assert (again['val_lq'] / 'coffee.png').read_bytes() == (small_set['val_lq'] / 'coffee.png').read_bytes()
