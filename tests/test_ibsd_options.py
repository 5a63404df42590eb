"""Strict IBSD options: unknown keys rejected with the nearest names, numbers written as strings read as numbers."""
from __future__ import annotations

import logging
from copy import deepcopy
from pathlib import Path

import pytest
import yaml
from basicsr.models import build_model

from ibsd.models.ibsd_options import OptionError, check_ibsd_options
from tests.conftest import REPO
from tests.test_ibsd_model import make_opt


@pytest.mark.parametrize('edit, message', [
    (lambda o: o['train'].update(mi_otp=o['train'].pop('mi_opt')),
     "train: unknown key 'mi_otp': did you mean 'mi_opt'"),
    (lambda o: o['train'].update(wavlet_opt=o['train'].pop('wavelet_opt')), "did you mean 'wavelet_opt'"),
    (lambda o: o['train'].update(ibsd={'node': ['IMDB2']}), "train:ibsd: unknown key 'node': did you mean 'nodes'"),
    (lambda o: o['train']['soft_target'].update(alpha_mx=0.5), "train:soft_target: unknown key 'alpha_mx'"),
    (lambda o: o['train']['mi_opt'].update(lambda_mi=0.1), "train:mi_opt: unknown key 'lambda_mi'"),
    (lambda o: o['train']['wavelet_opt'].update(level=3), "did you mean 'levels'"),
    (lambda o: o.update(network_est={'type': 'IBEstimator', 'scale_factr': 0.1}),
     "network_est: unknown key 'scale_factr': did you mean 'scale_factor'"),
    (lambda o: o.update(network_ets={'type': 'IBEstimator'}), "did you mean 'network_est'"),
    (lambda o: o['train']['mi_opt'].update(type='IBClubLoss'),
     "'IBClubLoss' is not registered: did you mean 'IBCLUBLoss'"),
    (lambda o: o['train']['mi_opt'].update(loss_weight='abc'),
     "train:mi_opt:loss_weight: expected a number, got 'abc'"),
    (lambda o: o['train'].update(ibsd={'estimator_steps': 1.5}), 'train:ibsd:estimator_steps: expected a whole number'),
])
def test_a_misspelt_key_or_bad_value_stops_the_model_before_training(tmp_path, edit, message):
    opt = make_opt(tmp_path)
    edit(opt)
    with pytest.raises(OptionError, match=message.replace('(', r'\(').replace(')', r'\)')):
        build_model(opt)


def test_numbers_written_as_pyyaml_strings_are_numbers(tmp_path):
    opt = make_opt(tmp_path)
    text = yaml.safe_dump(opt).replace('loss_weight: 0.01', 'loss_weight: 1e-2')
    opt = yaml.safe_load(text.replace('lr: 0.001', 'lr: 1e-3'))
    assert opt['train']['mi_opt']['loss_weight'] == '1e-2' and opt['train']['optim_g']['lr'] == '1e-3'
    opt['train']['soft_target']['alpha_max'] = '8e-1'
    model = build_model(opt)
    assert model.cri_mi.loss_weight == 0.01 and isinstance(model.cri_mi.loss_weight, float)
    assert model.optimizer_g.param_groups[0]['lr'] == 1e-3
    assert model.soft_target.alpha_max == 0.8


def test_basicsr_keys_are_left_to_basicsr(tmp_path):
    opt = make_opt(tmp_path)
    opt['train']['gan_opt'] = {'type': 'GANLoss'}
    opt['path']['param_key_g'] = 'params'
    opt['train']['pixel_opt']['unknown_to_l1'] = 1  # pixel_opt is BasicSR's: not checked for unknown keys
    check_ibsd_options(opt)


def test_start_up_line_names_terms_weights_nodes_and_teacher(tmp_path, caplog):
    opt = make_opt(tmp_path)
    caplog.set_level(logging.INFO, logger='basicsr')
    logger = logging.getLogger('basicsr')
    logger.addHandler(caplog.handler)
    try:
        build_model(opt)
        line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith('IBSD terms'))
        opt['train'].pop('wavelet_opt')
        build_model(opt)
        without = [r.getMessage() for r in caplog.records if r.getMessage().startswith('IBSD terms')][-1]
    finally:
        logger.removeHandler(caplog.handler)
    assert 'MI IBCLUBLoss x0.01' in line and "'IMDB2'" in line and 'WaveletHFLoss x1' in line
    assert 'teacher snapshot' in line and 'alpha_max 0.8' in line
    assert 'wavelet off' in without


def test_every_shipped_ibsd_training_yaml_passes_the_check():
    files = sorted((REPO / 'options').rglob('train*.yml'))
    assert files
    for path in files:
        opt = yaml.safe_load(Path(path).read_text())
        if opt.get('model_type') == 'IBSDModel':
            check_ibsd_options(deepcopy(opt))
