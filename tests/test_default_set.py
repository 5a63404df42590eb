"""The default data set: disjoint photos and degradations, LMDBs BasicSR loads, reuse, demo run."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from basicsr.data import build_dataset

from ibsd.data.default_set import DefaultSetConfig, build_default_set, crop_patches, load_photo
from ibsd.data.degradation_mix import degrade_train, degrade_val, motion_kernel
from tests.conftest import REPO

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


def test_degradations_reduce_size_and_differ_between_splits():
    np.random.seed(0)
    hr = load_photo('astronaut')[:128, :128].astype(np.float32) / 255.
    train, val = degrade_train(hr, 4), degrade_val(hr, 4)
    assert train.shape == val.shape == (32, 32, 3)
    assert 0 <= train.min() and train.max() <= 1 and not np.allclose(train, val, atol=0.02)


def test_motion_kernel_is_a_normalised_line():
    kernel = motion_kernel(7, 0.)
    assert kernel.sum() == pytest.approx(1.)
    assert np.count_nonzero(kernel[3]) == 7 and np.count_nonzero(kernel) == 7


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


@pytest.mark.slow
def test_demo_command_warms_up_trains_tests_and_reports(tmp_path):
    workdir = tmp_path / 'demo'
    result = subprocess.run([sys.executable, '-m', 'ibsd.demo', '--workdir', str(workdir), '--warmup-iters', '2',
                             '--iters', '3'], capture_output=True, text=True, cwd=REPO, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert len(result.stdout.splitlines()) < 60 and 'network_g' not in result.stdout  # progress and table only
    for label in ('bicubic upsampling', 'IMDN, L1 warm-up (2 it)', 'IMDN, L1 only (+3 it)', 'IMDN, IBSD (+3 it)',
                  'IBSD - L1: '):
        assert label in result.stdout
    names = ('Warmup_IMDN_x4_default_2it_seed0', 'L1_IMDN_x4_default_after_warmup2_3it_seed0',
             'IBSD_IMDN_x4_default_after_warmup2_3it_seed0')
    for name in names:
        assert (workdir / 'experiments' / name / 'models' / 'net_g_latest.pth').is_file()
        images = (workdir / 'results' / f'{name}_test' / 'visualization' / 'default_val').glob('*.png')
        assert sorted(p.name for p in images) == [f'coffee_{name}_test.png', f'rocket_{name}_test.png']
    warm = f'experiments/{names[0]}/models/net_g_latest.pth'
    for name in names[1:]:  # both continue from the same warmed-up student
        options = yaml.safe_load((workdir / 'options' / f'train_{name}.yml').read_text())
        assert options['path']['pretrain_network_g'] == warm
        log = next((workdir / 'experiments' / name).glob('train_*.log')).read_text()
        assert f'{names[0]}/models/net_g_latest.pth' in log  # the weights were loaded, not only named
    for name in names:
        console = (workdir / 'logs' / f'{name}_train.log').read_text()
        assert 'CPU threads: 1 (--threads)' in console and 'network_g' in console


@pytest.mark.parametrize('warmup', [0, 5])
def test_demo_runs_are_named_by_their_settings_and_start_from_the_warm_up(tmp_path, monkeypatch, capsys, warmup):
    import ibsd.demo as demo
    calls = []
    monkeypatch.setattr(demo, 'build_default_set', lambda *args, **kwargs: {})
    monkeypatch.setattr(demo, 'bicubic_scores', lambda data: {'psnr': 20.0, 'ssim': 0.5})
    seen = []
    monkeypatch.setattr(demo, 'train_and_test', lambda *args, threads: calls.append(args) or seen.append(threads)
                        or {'psnr': 21.0 + len(calls), 'ssim': 0.6})
    demo.main(['--workdir', str(tmp_path), '--warmup-iters', str(warmup), '--iters', '7', '--seed', '3',
               '--threads', '2'])
    assert seen == [2] * len(calls)
    runs = [(kind, name, iters, start) for kind, name, _, _, iters, _, *start in calls]
    if warmup:
        warm = 'Warmup_IMDN_x4_default_5it_seed3'
        start = [f'experiments/{warm}/models/net_g_latest.pth']
        assert runs == [('Warmup', warm, 5, []), ('L1', 'L1_IMDN_x4_default_after_warmup5_7it_seed3', 7, start),
                        ('IBSD', 'IBSD_IMDN_x4_default_after_warmup5_7it_seed3', 7, start)]
    else:
        assert runs == [('L1', 'L1_IMDN_x4_default_7it_seed3', 7, [None]),
                        ('IBSD', 'IBSD_IMDN_x4_default_7it_seed3', 7, [None])]
    out = capsys.readouterr().out
    assert ('IMDN, IBSD (+7 it)' if warmup else 'IMDN, IBSD (7 it)') in out and 'IBSD - L1: +1.000 dB' in out
    train, _ = demo.demo_options({k: tmp_path / k for k in ('train_gt', 'train_lq', 'val_gt', 'val_lq')}, tmp_path,
                                 7, 3, 'IBSD', 'x')
    assert train['model_type'] == 'IBSDModel' and train['path']['pretrain_network_g'] is None


def test_demo_rejects_bad_iterations():
    result = subprocess.run([sys.executable, '-m', 'ibsd.demo', '--iters', '0'], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 2 and '--iters must be >= 1' in result.stderr
    result = subprocess.run([sys.executable, '-m', 'ibsd.demo', '--warmup-iters', '-1'], capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    assert result.returncode == 2 and '--warmup-iters must be >= 0' in result.stderr


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


def test_a_failed_demo_step_ends_with_the_end_of_its_log(tmp_path, capsys):
    import ibsd.demo as demo
    (tmp_path / 'bad.yml').write_text('name: [unclosed\n')
    log = tmp_path / 'logs' / 'bad_train.log'
    then = demo.pipeline_task('test', 'L1 test', tmp_path / 'bad.yml', tmp_path, tmp_path / 'logs' / 'never.log', 1)
    with pytest.raises(demo.DemoError) as caught:
        demo.run_steps([demo.pipeline_task('train', 'L1 train', tmp_path / 'bad.yml', tmp_path, log, 1), then],
                       tmp_path, 1)
    assert str(caught.value) == f'L1 train failed (exit status 1); the end of its log {log} is above'
    out = capsys.readouterr().out
    assert 'started L1 train (1 thread(s)): python -m ibsd.train -opt bad.yml --threads 1 >> logs/bad_train.log' in out
    assert 'bad.yml:2:1: invalid YAML' in out and 'Traceback' not in out  # the log's last lines, not a traceback
    assert then.process is None and not (tmp_path / 'logs' / 'never.log').exists()  # the next step never ran
