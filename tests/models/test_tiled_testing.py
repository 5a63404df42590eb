"""Both arms of a paired comparison test through one ``test()``: the shipped baselines' model type and IBSDModel."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs import build_network
from basicsr.models import build_model
from basicsr.utils.registry import MODEL_REGISTRY

from ibsd.models.tiled_testing import TiledTestMixin
from tests.helpers import REPO

TRAIN = REPO / 'options' / 'train' / 'IBSD'
IBSD_FILES = sorted(TRAIN.glob('train_ibsd_*.yml'))
SWINIR_IBSD = TRAIN / 'train_ibsd_swinir_light_x4_drealsr.yml'
SWINIR_BASELINE = TRAIN / 'train_baseline_swinir_light_x4_drealsr.yml'
TINY_SWINIR = {'type': 'SwinIR', 'upscale': 2, 'in_chans': 3, 'img_size': 8, 'window_size': 4, 'img_range': 1.0,
               'depths': [1], 'embed_dim': 12, 'num_heads': [1], 'mlp_ratio': 2, 'upsampler': 'pixelshuffledirect',
               'resi_connection': '1conv'}
TESTED_PATH = ('feed_data', 'test', 'nondist_validation')
"""The methods that decide what a validation or test run scores."""


def model_type(path: Path) -> str:
    return yaml.safe_load(path.read_text())['model_type']


def baseline_of(ibsd_file: Path) -> Path:
    return ibsd_file.with_name(ibsd_file.name.replace('_ibsd_', '_baseline_'))


@pytest.mark.parametrize('ibsd_file', IBSD_FILES, ids=lambda p: p.name)
def test_every_shipped_pair_tests_through_the_same_methods(ibsd_file):
    ibsd, baseline = (MODEL_REGISTRY.get(model_type(path)) for path in (ibsd_file, baseline_of(ibsd_file)))
    for name in TESTED_PATH:
        assert getattr(baseline, name) is getattr(ibsd, name), (baseline.__name__, name)
    assert getattr(ibsd, 'test') is TiledTestMixin.test


def test_paired_test_options_evaluate_through_the_same_path():
    """The test YAMLs that evaluate this project's runs (both arms use them) test as the mixin does."""
    for path in sorted((REPO / 'options' / 'test' / 'IBSD').glob('*.yml')):
        assert MODEL_REGISTRY.get(model_type(path)).test is TiledTestMixin.test, path.name


@pytest.mark.filterwarnings('ignore:torch.meshgrid:UserWarning')  # basicsr's SwinIR
def test_swinir_arms_give_the_same_padded_output(one_thread):
    """For the same weights and an input whose sides are no multiple of the window, IBSDModel and the shipped
    baseline's model type output the same pixels, computed on the input padded to the window (SwinIR itself
    fails on 10x13)."""
    assert model_type(SWINIR_IBSD) == 'IBSDModel'
    torch.manual_seed(0)
    net = build_network(dict(TINY_SWINIR)).eval()
    lq = torch.rand(1, 3, 10, 13)
    with pytest.raises(RuntimeError):
        with torch.no_grad():
            net(lq)
    outputs, inputs = {}, {}
    for kind, name in (('baseline', model_type(SWINIR_BASELINE)), ('ibsd', model_type(SWINIR_IBSD))):
        opt = {'name': f'paired_{kind}', 'model_type': name, 'scale': 2, 'num_gpu': 0, 'is_train': False,
               'dist': False, 'network_g': dict(TINY_SWINIR), 'path': {'pretrain_network_g': None}}
        model = build_model(opt)
        model.net_g.load_state_dict(net.state_dict())
        seen = []
        model.net_g.register_forward_hook(lambda module, args, output: seen.append(tuple(args[0].shape[2:])))
        model.feed_data({'lq': lq})
        model.test()
        outputs[kind], inputs[kind] = model.output, seen
    assert inputs['baseline'] == inputs['ibsd'] == [(12, 16)]
    assert outputs['baseline'].shape == (1, 3, 20, 26)
    assert torch.equal(outputs['baseline'], outputs['ibsd'])
    with torch.no_grad():
        expected = net(F.pad(lq, (0, 3, 0, 2), mode='reflect'))[:, :, :20, :26]
    assert torch.allclose(outputs['ibsd'], expected, atol=1e-6)
