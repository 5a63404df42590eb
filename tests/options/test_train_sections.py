"""Strict IBSD options: unknown keys rejected with the nearest names, numbers written as strings read as numbers."""
from __future__ import annotations

import logging
import re
from copy import deepcopy
from pathlib import Path

import pytest
import yaml
from basicsr.models import build_model

from ibsd.errors import OptionError
from ibsd.options.train_sections import check_ibsd_options
from tests.helpers import REPO, SCRIPTS, make_opt, make_pairs, train_options, write_yaml


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
    (lambda o: o.update(mi_opt=o['train'].pop('mi_opt')), 'mi_opt: belongs under train: (as train:mi_opt)'),
    (lambda o: o.update(soft_target={'alpha_max': 0.5}), 'soft_target: belongs under train:'),
    (lambda o: o['train']['optim_g'].update(lr=True), 'train:optim_g:lr: expected a number, got True'),
    (lambda o: o['train']['optim_g'].update(betas=[0.9, 'x']), "train:optim_g:betas[1]: expected a number, got 'x'"),
    (lambda o: o['train']['mi_opt'].update(loss_weight='inf'), 'train:mi_opt:loss_weight: expected a finite number'),
    (lambda o: o['train'].update(ibsd={'grad_clip_norm': float('nan')}),
     'train:ibsd:grad_clip_norm: expected a finite'),
    (lambda o: o['train'].update(ibsd={'max_bad_steps': 0}), 'train:ibsd:max_bad_steps must be >= 1, got 0'),
    (lambda o: o['train'].update(total_iter='1e5x'), "train:total_iter: expected a number, got '1e5x'"),
    (lambda o: o['train']['soft_target'].update(source='teacher'), 'train:soft_target:source must be one of'),
])
def test_a_misspelt_key_or_bad_value_stops_the_model_before_training(tmp_path, edit, message):
    opt = make_opt(tmp_path)
    edit(opt)
    with pytest.raises(OptionError, match=re.escape(message)):
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
    opt['train']['optim_g']['amsgrad'] = True  # a flag, not one of the numbers
    opt['train']['scheduler']['last_epoch'] = -1
    opt['train']['perceptual_opt'] = {'type': 'L1Loss', 'loss_weight': '1e-1'}
    opt['train']['warmup_iter'] = '1e1'
    opt['train']['gan_opt'] = {'type': 'GANLoss'}
    opt['path']['param_key_g'] = 'params'
    opt['train']['pixel_opt']['unknown_to_l1'] = 1  # pixel_opt is BasicSR's: not checked for unknown keys
    check_ibsd_options(opt)
    assert opt['train']['perceptual_opt']['loss_weight'] == 0.1 and opt['train']['warmup_iter'] == 10
    assert opt['train']['optim_g']['amsgrad'] is True


def test_options_are_checked_before_data_and_iteration_counts_read_as_numbers(tmp_path):
    import subprocess

    make_pairs(tmp_path / 'data' / 'train', 2, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 1, scale=2)
    opt = train_options('counts', {'type': 'IMDN', 'num_feat': 8, 'num_block': 2, 'upscale': 2},
                        tmp_path / 'data', 2, '2e0')
    opt['train']['warmup_iter'] = '-1e0'
    result = subprocess.run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / 'a.yml', opt))],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / 'experiments' / 'counts' / 'models' / 'net_g_2.pth').is_file()
    opt.update(name='typo', model_type='IBSDModel')
    opt['train']['mi_otp'] = {'type': 'IBCLUBLoss'}
    opt['datasets']['train']['dataroot_gt'] = str(tmp_path / 'nowhere')  # the options fail first
    result = subprocess.run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / 'b.yml', opt))],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "OptionError: train: unknown key 'mi_otp': did you mean 'mi_opt'?"


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
