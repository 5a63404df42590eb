"""The shipped IBSD option files build their models, and each baseline differs only by IBSD's keys."""
from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest
import yaml
from basicsr.models import build_model
from basicsr.utils.options import ordered_yaml

from ibsd.models.tiled_sr_model import tile_options
from tests.helpers import REPO

IBSD_TRAIN_KEYS = ('ibsd', 'optim_est', 'scheduler_est', 'mi_opt', 'est_opt', 'wavelet_opt', 'soft_target')
TRAIN_FILES = sorted((REPO / 'options').rglob('train*.yml'))
TEST_FILES = sorted((REPO / 'options' / 'test').rglob('*.yml'))


def load(path: Path) -> dict:
    with open(path) as handle:
        return yaml.load(handle, Loader=ordered_yaml()[0])


def as_cpu_run(opt: dict, tmp_path: Path) -> dict:
    opt = deepcopy(opt)
    opt.update(num_gpu=0, is_train=True, dist=False, rank=0, world_size=1, iters_per_epoch=1998)
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'))
    opt['logger']['use_tb_logger'] = False
    return opt


@pytest.mark.filterwarnings('ignore:torch.meshgrid:UserWarning')  # BasicSR's SwinIR
@pytest.mark.parametrize('path', TRAIN_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_train_options_build_their_model(path, tmp_path):
    opt = load(path)
    model = build_model(as_cpu_run(opt, tmp_path))
    assert type(model).__name__ == opt['model_type']
    if opt['network_g']['type'] == 'HGSR_MHR':  # CDC's own schedule, checked in tests/archs/test_hgsr_arch.py
        return
    assert opt['datasets']['train']['gt_size'] == 48 * opt['scale']
    assert opt['datasets']['train']['batch_size_per_gpu'] == 16
    assert opt['train']['optim_g']['lr'] == 2e-4
    assert list(opt['train']['scheduler']['milestones']) == [100000, 200000, 300000, 400000]
    metrics = opt['val']['metrics']
    assert all(m['test_y_channel'] and m['crop_border'] == opt['scale'] for m in metrics.values())
    assert set(metrics) == {'psnr', 'ssim'}
    if opt['model_type'] == 'IBSDModel':
        assert model.node_recorder.nodes == ((opt['train'].get('ibsd') or {}).get('nodes')
                                             or model.get_bare_model(model.net_g).ibsd_nodes())


IBSD_FILES = sorted((REPO / 'options' / 'train' / 'IBSD').glob('train_ibsd_*.yml'))


@pytest.mark.parametrize('ibsd_file', IBSD_FILES, ids=lambda p: p.name)
def test_baselines_match_ibsd_except_for_ibsd_keys(ibsd_file):
    ibsd, baseline = load(ibsd_file), load(ibsd_file.with_name(ibsd_file.name.replace('_ibsd_', '_baseline_')))
    for opt in (ibsd, baseline):
        opt.pop('name')
        opt.pop('model_type')
        opt.pop('network_est', None)
        for key in IBSD_TRAIN_KEYS:
            opt['train'].pop(key, None)
    assert ibsd == baseline


def test_flagship_file_is_the_imdn_configuration():
    assert load(REPO / 'options' / 'train_ibsd_x4.yml') == load(REPO / 'options' / 'train' / 'IBSD' /
                                                                 'train_ibsd_imdn_x4_drealsr.yml')


def test_generated_dataset_options_are_up_to_date():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, str(REPO / 'scripts' / 'make_dataset_options.py'), '--check'],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    # generated: DRealSR x2/x3/x4, RealSR x2/x3/x4, City100 x2 (IMDN) + RFDN x4 DRealSR; written by hand:
    # HGSR-MHR, OmniSR and SwinIR-light x4 DRealSR
    assert len(IBSD_FILES) == 11


@pytest.mark.parametrize('path', TEST_FILES, ids=lambda p: p.name)
def test_test_options_build_their_model(path):
    opt = load(path)
    opt.update(num_gpu=0, is_train=False, dist=False, rank=0, world_size=1)
    opt['path']['pretrain_network_g'] = None
    model = build_model(opt)
    assert type(model).__name__ == opt['model_type']


@pytest.mark.parametrize('path', TEST_FILES, ids=lambda p: p.name)
def test_test_options_evaluate_whole_images_and_tile_on_request(path):
    opt = load(path)
    assert tile_options(opt) is None
    if opt['model_type'] in ('TiledSRModel', 'IBSDModel'):  # the key is kept for --force_yml tile:tile_size=N
        assert opt['tile']['tile_size'] is None
        opt['tile']['tile_size'] = 64
        assert tile_options(opt) == (64, opt['tile']['tile_pad'])
