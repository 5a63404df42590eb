"""Start-up checks: runs that would train or test nothing (or the wrong thing) with exit 0 stop with one line."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import basicsr.test
import basicsr.train

from ibsd.errors import OptionError
from tests.helpers import make_pairs, paired, train_options, write_yaml

NETWORK = {'type': 'IMDN', 'num_feat': 8, 'num_block': 1, 'upscale': 2}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    make_pairs(tmp_path / 'data' / 'train', 3, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 1, scale=2, seed=1)
    return tmp_path / 'data'


def parse(tmp_path: Path, options: dict, monkeypatch, is_train: bool = True) -> dict:
    opt_file = write_yaml(tmp_path / 'run.yml', options)
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(opt_file)])
    module = basicsr.train if is_train else basicsr.test
    return module.parse_options(str(tmp_path), is_train=is_train)[0]


def refused(tmp_path: Path, options: dict, monkeypatch, is_train: bool = True) -> str:
    with pytest.raises(OptionError) as error:
        parse(tmp_path, options, monkeypatch, is_train)
    assert '\n' not in str(error.value)
    assert not (tmp_path / 'experiments').exists() and not (tmp_path / 'results').exists()
    return str(error.value)


def untrained_test_options(data: Path) -> dict:
    return {'name': 't', 'model_type': 'SRModel', 'scale': 2, 'num_gpu': 0, 'network_g': NETWORK, 'path': {},
            'datasets': {'test_1': paired('val', data / 'val')},
            'val': {'save_img': False, 'metrics': {'psnr': {'type': 'calculate_psnr', 'crop_border': 2}}}}


@pytest.mark.parametrize('total_iter', [0, -3])
def test_no_iteration_to_train_is_refused(tmp_path, data, monkeypatch, total_iter):
    message = refused(tmp_path, train_options('r', NETWORK, data, 2, total_iter), monkeypatch)
    assert message == f'train:total_iter must be >= 1, got {total_iter}: the run would train nothing'


@pytest.mark.parametrize('section, key, suggestion', [
    ('datasets:train', 'gt_sise', 'gt_size'), ('train', 'ema_decy', 'ema_decay'), ('val', 'sava_img', 'save_img'),
    ('logger', 'print_freqq', 'print_freq')])
def test_a_misspelt_key_basicsr_would_ignore_is_named(tmp_path, data, monkeypatch, section, key, suggestion):
    options = train_options('r', NETWORK, data, 2, 2)
    node = options
    for part in section.split(':'):
        node = node[part]
    node[key] = 1
    message = refused(tmp_path, options, monkeypatch)
    assert message == f"{section}: unknown key '{key}': did you mean '{suggestion}'?"


def test_valid_keys_of_other_basicsr_data_sets_are_not_typos(tmp_path, data, monkeypatch):
    options = train_options('r', NETWORK, data, 2, 2)
    options['datasets']['train'].update(blur_kernel_size2=21, color='y')  # RealESRGAN's, BasicSR's
    parse(tmp_path, options, monkeypatch)


@pytest.mark.parametrize('model_type', ['SRModel', 'IBSDModel'])
def test_a_misspelt_path_key_is_not_made_a_folder(tmp_path, data, monkeypatch, model_type):
    weights = tmp_path / 'w.pth'
    options = train_options('r', NETWORK, data, 2, 2)
    options['model_type'] = model_type
    options['path']['pretrain_netwrok_g'] = str(weights)
    message = refused(tmp_path, options, monkeypatch)
    assert message.startswith("path: unknown key 'pretrain_netwrok_g': did you mean 'pretrain_network_g'?")
    assert not weights.exists()


def test_a_missing_weights_file_is_named(tmp_path, data, monkeypatch):
    options = train_options('r', NETWORK, data, 2, 2)
    options['path']['pretrain_network_g'] = str(tmp_path / 'missing.pth')
    missing = tmp_path / 'missing.pth'
    assert refused(tmp_path, options, monkeypatch) == f'path:pretrain_network_g: {missing} does not exist'


def test_a_test_without_weights_is_refused_unless_asked_for(tmp_path, data, monkeypatch):
    message = refused(tmp_path, untrained_test_options(data), monkeypatch, is_train=False)
    assert message.startswith('path:pretrain_network_g is not set: the test would evaluate a randomly initialised IMDN')
    options = untrained_test_options(data)
    options['path']['allow_untrained'] = True
    opt = parse(tmp_path, options, monkeypatch, is_train=False)
    assert 'allow_untrained' not in opt['path']  # BasicSR makes a folder of every path key it does not know


def test_gt_size_must_be_a_multiple_of_the_scale(tmp_path, data, monkeypatch):
    options = train_options('r', NETWORK, data, 2, 2)
    options['datasets']['train']['gt_size'] = 31
    assert refused(tmp_path, options, monkeypatch) == ('datasets:train:gt_size 31 is not a multiple of scale 2: its LR '
                                                       'crop would be 15.5 pixels; use e.g. 30 or 32')


@pytest.mark.skipif(torch.cuda.is_available(), reason='CPU-only behaviour')
def test_num_gpu_without_cuda_is_refused(tmp_path, data, monkeypatch):
    options = train_options('r', NETWORK, data, 2, 2)
    options['num_gpu'] = 1
    assert refused(tmp_path, options, monkeypatch).startswith('num_gpu: 1 but CUDA is not available')


def test_ibsd_sections_on_a_plain_model_are_refused(tmp_path, data, monkeypatch):
    options = train_options('r', NETWORK, data, 2, 2)
    options['train']['mi_opt'] = {'type': 'IBCLUBLoss', 'loss_weight': 1.0e-3}
    assert refused(tmp_path, options, monkeypatch).startswith(
        'train:mi_opt: read only by IBSDModel, and model_type SRModel ignores it')


def test_a_file_where_the_experiments_folder_goes_is_named(tmp_path, data, monkeypatch):
    (tmp_path / 'experiments').write_text('not a folder')
    with pytest.raises(OptionError, match='experiments is a file, where BasicSR makes the folder'):
        parse(tmp_path, train_options('r', NETWORK, data, 2, 2), monkeypatch)


def test_invalid_yaml_names_file_and_line(tmp_path, monkeypatch):
    opt_file = tmp_path / 'bad.yml'
    opt_file.write_text('name: x\nmodel_type: [SRModel\n')
    monkeypatch.setattr(sys, 'argv', ['train.py', '-opt', str(opt_file)])
    with pytest.raises(OptionError, match=rf'^{opt_file}:3:1: invalid YAML: .*flow sequence at line 2, column 13'):
        basicsr.train.parse_options(str(tmp_path), is_train=True)
