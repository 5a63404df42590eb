"""The shipped IBSD option files build their models, and each baseline differs only by IBSD's keys."""
from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest
import yaml
from basicsr.models import build_model
from basicsr.utils.options import ordered_yaml

from tests.conftest import REPO

IBSD_TRAIN_KEYS = ('ibsd', 'optim_est', 'scheduler_est', 'mi_opt', 'est_opt', 'wavelet_opt', 'soft_target')
TRAIN_FILES = sorted((REPO / 'options').rglob('train*.yml'))


def load(path: Path) -> dict:
    with open(path) as handle:
        return yaml.load(handle, Loader=ordered_yaml()[0])


def as_cpu_run(opt: dict, tmp_path: Path) -> dict:
    opt = deepcopy(opt)
    opt.update(num_gpu=0, is_train=True, dist=False, rank=0, world_size=1, iters_per_epoch=1998)
    opt['path'].update(models=str(tmp_path / 'models'), training_states=str(tmp_path / 'states'))
    opt['logger']['use_tb_logger'] = False
    return opt


@pytest.mark.parametrize('path', TRAIN_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_train_options_build_their_model(path, tmp_path):
    opt = load(path)
    model = build_model(as_cpu_run(opt, tmp_path))
    assert type(model).__name__ == opt['model_type']
    assert opt['scale'] == 4 and opt['datasets']['train']['gt_size'] == 192
    assert opt['datasets']['train']['batch_size_per_gpu'] == 16
    assert opt['train']['optim_g']['lr'] == 2e-4
    assert list(opt['train']['scheduler']['milestones']) == [100000, 200000, 300000, 400000]
    metrics = opt['val']['metrics']
    assert all(m['test_y_channel'] and m['crop_border'] == 4 for m in metrics.values()) and set(metrics) == {'psnr', 'ssim'}
    if opt['model_type'] == 'IBSDModel':
        assert model.node_recorder.nodes == model.get_bare_model(model.net_g).ibsd_nodes()


@pytest.mark.parametrize('student', ['imdn', 'rfdn'])
def test_baselines_match_ibsd_except_for_ibsd_keys(student):
    folder = REPO / 'options' / 'train' / 'IBSD'
    ibsd, baseline = load(folder / f'train_ibsd_{student}_x4_drealsr.yml'), load(folder / f'train_baseline_{student}_x4_drealsr.yml')
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
