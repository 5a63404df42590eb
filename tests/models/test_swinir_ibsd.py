"""IBSD on BasicSR's own SwinIR, which declares no nodes: the shipped lightweight YAML's nodes, a tiny run."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from basicsr.archs import build_network

from ibsd.models.feature_nodes import NodeRecorder
from ibsd.errors import OptionError
from tests.helpers import PLAIN_FLOOR_DB, REPO, SCRIPTS, checked_scores, make_pairs, run, train_options, write_yaml

IBSD_YAML = REPO / 'options' / 'train' / 'IBSD' / 'train_ibsd_swinir_light_x4_drealsr.yml'
BASELINE_YAML = IBSD_YAML.with_name('train_baseline_swinir_light_x4_drealsr.yml')
TINY = {'type': 'SwinIR', 'upscale': 2, 'in_chans': 3, 'img_size': 16, 'window_size': 4, 'img_range': 1.0,
        'depths': [1, 1, 1], 'embed_dim': 12, 'num_heads': [2, 2, 2], 'mlp_ratio': 2,
        'upsampler': 'pixelshuffledirect', 'resi_connection': '1conv'}
TINY_NODES = ['conv_first', 'layers.0.patch_unembed', 'layers.2.patch_unembed']

pytestmark = [pytest.mark.filterwarnings('ignore:torch.meshgrid:UserWarning'),  # basicsr's SwinIR, built here
              pytest.mark.usefixtures('one_thread')]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_lightweight_configuration():
    """929,628 parameters at x4; the published 897K is that count without the 24 blocks' relative
    position bias tables (225 offsets x 6 heads each)."""
    opt = load(IBSD_YAML)
    assert load(BASELINE_YAML)['network_g'] == opt['network_g']
    net = build_network(dict(opt['network_g']))
    assert type(net).__name__ == 'SwinIR' and net.upsampler == 'pixelshuffledirect'
    total = sum(p.numel() for p in net.parameters())
    tables = sum(p.numel() for name, p in net.named_parameters() if 'relative_position_bias_table' in name)
    assert (total, tables) == (929_628, 32_400)
    assert round((total - tables) / 1000) == 897


def test_shipped_nodes_are_maps_of_the_lr_size():
    opt = load(IBSD_YAML)
    nodes = opt['train']['ibsd']['nodes']
    assert nodes == ['conv_first', 'layers.0.patch_unembed', 'layers.2.patch_unembed', 'layers.3.patch_unembed']
    net = build_network(dict(opt['network_g']))
    recorder = NodeRecorder(net, nodes)
    with torch.no_grad(), recorder.record():
        out = net(torch.rand(2, 3, 48, 40))
        maps = recorder.collect()
    assert out.shape == (2, 3, 192, 160)
    assert [tuple(m.shape) for m in maps] == [(2, 60, 48, 40)] * 4


def test_patch_unembed_node_is_the_output_of_the_layers_swin_blocks():
    """``layers.N`` itself outputs tokens [B, HW, C], which IBSD refuses; ``layers.N.patch_unembed`` is
    the same state as layer N's Swin blocks output, laid out as a map."""
    torch.manual_seed(0)
    net = build_network(dict(TINY)).eval()
    tokens = []
    hook = net.layers[1].residual_group.register_forward_hook(lambda module, args, output: tokens.append(output))
    recorder = NodeRecorder(net, ['conv_first', 'layers.1.patch_unembed'])
    try:
        with torch.no_grad(), recorder.record():
            net(torch.rand(1, 3, 8, 12))
            shallow, node = recorder.collect()
    finally:
        hook.remove()
    assert tokens[0].shape == (1, 8 * 12, 12)
    assert torch.equal(node, tokens[0].transpose(1, 2).reshape(1, 12, 8, 12))
    assert shallow.shape == node.shape

    recorder = NodeRecorder(net, ['conv_first', 'layers.1'])
    with torch.no_grad(), recorder.record():
        net(torch.rand(1, 3, 8, 12))
        with pytest.raises(OptionError, match=r"node 'layers.1' must output a \[B, C, H, W\] tensor"):
            recorder.collect()


@pytest.mark.slow
def test_swinir_trains_with_ibsd_and_validates(tmp_path: Path):
    """LR training patches of 16 px and validation images of 24 px: multiples of the window (4),
    since BasicSR's SwinIR does not pad."""
    make_pairs(tmp_path / 'data' / 'train', 4, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 1, scale=2, seed=1)
    opt = train_options('swinir_ibsd', TINY, tmp_path / 'data', 2, 2)
    opt['model_type'] = 'IBSDModel'
    opt['train'].update(
        ibsd={'nodes': TINY_NODES},
        mi_opt={'type': 'IBCLUBLoss', 'loss_weight': 0.01, 'reduction': 'mean', 'mode': 'sampled'},
        wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': 1.0, 'levels': 2},
        soft_target={'source': 'ema', 'alpha_max': 0.8, 'ramp_iters': 2})
    output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / 'swinir.yml', opt))], cwd=tmp_path,
                 env={'OMP_NUM_THREADS': '1'})
    assert f'IBSD nodes {TINY_NODES} with channels [12, 12, 12]' in output
    for term in ('l_pix', 'l_mi', 'l_wav', 'l_est'):
        assert f'{term}: ' in output
    assert 'Validation val' in output
    # 2 iterations from random weights train nothing yet: a finite PSNR above a plain floor is what holds
    checked_scores(output, floor=PLAIN_FLOOR_DB)
    saved = torch.load(tmp_path / 'experiments' / 'swinir_ibsd' / 'models' / 'net_g_latest.pth', weights_only=True)
    build_network(dict(TINY)).load_state_dict(saved['params'], strict=True)
    assert all(torch.isfinite(v).all() for v in saved['params'].values())
