"""OmniSR: official module tree and parameter counts, padding, attention groups, nodes, export, IBSD training."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from basicsr.archs import build_network
from basicsr.models.sr_model import SRModel

from ibsd.archs.checkpoint import load_pretrained
from ibsd.archs.omnisr_arch import (ChannelAttention, FromWindows, LayerNorm2d, OmniSR, ToWindows, WindowAttention,
                                    relative_position_index)
from ibsd.models.feature_nodes import NodeRecorder
from tests.helpers import (PLAIN_FLOOR_DB, REPO, SCRIPTS, checked_scores, make_pairs, n_params, run, train_options,
                           write_yaml)

TINY = {'num_feat': 16, 'res_num': 2, 'block_num': 1, 'window_size': 8}
"""Inputs must be at least 9 px at window 8 (the ESA needs 15 px after padding)."""
ONE_THREAD = {'OMP_NUM_THREADS': '1'}
"""These tiny networks run fastest on one thread; on a loaded machine, more threads wait on each other."""


pytestmark = pytest.mark.usefixtures('one_thread')



def randomised(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random values in every parameter (the default init leaves norms and temperatures at 1 / 0)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1)
    return net.eval()


@pytest.mark.parametrize('scale, expected', [(2, 784_604), (3, 793_259), (4, 805_376)])
def test_official_configuration_parameter_counts(scale, expected):
    """x4 equals the IBSD authors' copy (805,376). The paper's 772K / 780K / 792K are these counts without
    the weights of modules that thop (the official trainer's counter) has no rule for: the relative
    position tables (nn.Embedding), the channel layer norms (LayerNorm2d) and the attention temperatures."""
    net = OmniSR(upsampling=scale)
    assert n_params(net) == expected
    uncounted = sum(p.numel() for m in net.modules() if isinstance(m, (torch.nn.Embedding, LayerNorm2d))
                    for p in m.parameters()) + sum(m.temperature.numel() for m in net.modules()
                                                   if isinstance(m, ChannelAttention))
    assert uncounted == 12_880
    assert round((expected - uncounted) / 1000) == {2: 772, 3: 780, 4: 792}[scale]


def test_state_dict_follows_the_official_module_tree():
    """Names and shapes of the official checkpoints; the weight-free rearranges keep layer indices 1, 3, 7, 9."""
    state = OmniSR().state_dict()
    assert len(state) == 316
    block = 'residual_layer.4.residual_layer.0.layer'
    expected = {
        'input.weight': (64, 3, 3, 3), 'output.bias': (64,), 'up.0.weight': (48, 64, 3, 3),
        f'{block}.0.fn.0.weight': (64, 64, 1, 1), f'{block}.0.fn.2.weight': (64, 1, 3, 3),
        f'{block}.0.fn.4.gate.1.weight': (16, 64), f'{block}.0.fn.4.gate.3.weight': (64, 16),
        f'{block}.0.fn.5.bias': (64,),
        f'{block}.2.norm.weight': (64,), f'{block}.2.fn.to_qkv.weight': (192, 64),
        f'{block}.2.fn.rel_pos_bias.weight': (225, 4), f'{block}.2.fn.to_out.0.weight': (64, 64),
        f'{block}.4.norm.bias': (64,), f'{block}.4.fn.project_in.weight': (128, 64, 1, 1),
        f'{block}.4.fn.dwconv.weight': (128, 1, 3, 3), f'{block}.4.fn.project_out.weight': (64, 64, 1, 1),
        f'{block}.5.fn.temperature': (4, 1, 1), f'{block}.5.fn.qkv.weight': (192, 64, 1, 1),
        f'{block}.5.fn.qkv_dwconv.weight': (192, 1, 3, 3), f'{block}.11.fn.project_out.weight': (64, 64, 1, 1),
        f'{block}.8.fn.rel_pos_bias.weight': (225, 4), f'{block}.12.fn.dwconv.weight': (128, 1, 3, 3),
        'residual_layer.4.residual_layer.1.weight': (64, 64, 1, 1),
        'residual_layer.4.esa.conv1.weight': (16, 64, 1, 1), 'residual_layer.4.esa.conv2.weight': (16, 16, 3, 3),
        'residual_layer.4.esa.conv4.weight': (64, 16, 1, 1),
    }
    assert {key: tuple(state[key].shape) for key in expected} == expected
    assert not [k for k in state if any(f'.layer.{i}.' in k for i in (1, 3, 7, 9))]
    assert not [k for k in state if 'rel_pos_indices' in k or 'conv_max' in k or 'conv3_' in k]
    assert 'residual_layer.0.residual_layer.0.layer.4.fn.project_in.bias' not in state  # bias-free feed-forward
    assert 'input.bias' not in OmniSR(bias=False).state_dict()
    assert 'rel_pos_bias' not in ' '.join(OmniSR(pe=False).state_dict())


def test_official_checkpoints_load_strictly_through_basicsr(tmp_path):
    """The released weights are plain state dicts; BasicSR's load_network (as patched by ibsd) takes them."""
    source = randomised(OmniSR(**TINY, upsampling=3))
    path = tmp_path / 'epoch994_OmniSR.pth'
    torch.save(source.state_dict(), path)
    target = OmniSR(**TINY, upsampling=3)
    model = SRModel.__new__(SRModel)
    model.opt = {'dist': False}
    model.load_network(target, str(path), strict=True, param_key='params')
    x = torch.rand(1, 3, 17, 11)
    with torch.no_grad():
        assert torch.equal(target.eval()(x), source(x))
    with pytest.raises(ValueError, match='epoch994_OmniSR.pth'):
        load_pretrained(OmniSR(**TINY, upsampling=2), str(path))


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('size', [(9, 9), (17, 11), (16, 24), (23, 30)])
def test_input_is_zero_padded_to_the_window_and_the_output_cropped(scale, size):
    net = randomised(OmniSR(**TINY, upsampling=scale))
    x = torch.rand(2, 3, *size)
    padded = F.pad(x, (0, -size[1] % 8, 0, -size[0] % 8))
    with torch.no_grad():
        out = net(x)
        full = net(padded)
    assert out.shape == (2, 3, size[0] * scale, size[1] * scale)
    assert torch.equal(out, full[:, :, :size[0] * scale, :size[1] * scale])


def test_too_small_inputs_are_named():
    with pytest.raises(ValueError, match='8x20 input padded to a multiple of window_size'):
        OmniSR(**TINY)(torch.rand(1, 3, 8, 20))


@pytest.mark.parametrize('kwargs, message', [
    ({'num_feat': 18}, 'multiple of 4'), ({'res_num': 0}, 'res_num'), ({'window_size': 0}, 'window_size'),
    ({'block_class_name': 'Other'}, 'OSA_Block'),
])
def test_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OmniSR(**kwargs)


@pytest.mark.parametrize('grid', [False, True])
def test_window_and_grid_groups(grid):
    """Block groups are contiguous 4x4 windows; grid groups take pixels H/4 (W/4) apart."""
    height, width, w = 8, 12, 4
    rows = torch.arange(height).view(1, 1, height, 1).expand(1, 1, height, width).float()
    cols = torch.arange(width).view(1, 1, 1, width).expand(1, 1, height, width).float()
    x = torch.cat([rows, cols], dim=1)
    groups = ToWindows(w, grid)(x)  # [1, X, Y, w, w, 2]
    assert groups.shape == (1, height // w, width // w, w, w, 2)
    first = groups[0, 1, 2]  # group (1, 2)
    if grid:
        assert first[..., 0].unique().tolist() == [1, 3, 5, 7] and first[..., 1].unique().tolist() == [2, 5, 8, 11]
    else:
        assert first[..., 0].unique().tolist() == [4, 5, 6, 7] and first[..., 1].unique().tolist() == [8, 9, 10, 11]
    assert torch.equal(FromWindows(grid)(groups), x)


def test_relative_position_index():
    w = 3
    index = relative_position_index(w)
    centre = (w - 1) * (2 * w - 1) + (w - 1)
    assert index.shape == (w * w, w * w) and index.diagonal().eq(centre).all()
    assert torch.equal(index + index.T, torch.full_like(index, 2 * centre))
    assert index[0, w * w - 1].item() == 0  # offset (-(w-1), -(w-1)): first table row
    assert index.unique().numel() == (2 * w - 1) ** 2


def test_window_attention_is_softmax_attention_with_the_position_bias():
    torch.manual_seed(0)
    attention = randomised(WindowAttention(8, 2, window_size=2, with_pe=True))
    x = torch.randn(3, 1, 2, 2, 2, 8)  # [B, X, Y, w, w, C]
    tokens = x.reshape(-1, 4, 8)
    q, k, v = (t.reshape(-1, 4, 4, 2).transpose(1, 2) for t in (tokens @ attention.to_qkv.weight.T).chunk(3, -1))
    bias = attention.rel_pos_bias.weight[attention.rel_pos_indices].permute(2, 0, 1)
    weights = (q @ k.transpose(-2, -1) / 2 ** 0.5 + bias).softmax(-1)
    expected = ((weights @ v).transpose(1, 2).reshape(-1, 4, 8) @ attention.to_out[0].weight.T).reshape(x.shape)
    with torch.no_grad():
        assert torch.allclose(attention(x), expected, atol=1e-6)


def test_default_nodes_are_the_padded_input_conv_and_groups_0_2_4():
    assert OmniSR().ibsd_nodes() == ['input', 'residual_layer.0', 'residual_layer.2', 'residual_layer.4']
    assert OmniSR(**TINY).ibsd_nodes() == ['input', 'residual_layer.0', 'residual_layer.1']
    assert OmniSR(**{**TINY, 'res_num': 7}).ibsd_nodes() == ['input', 'residual_layer.0', 'residual_layer.3',
                                                             'residual_layer.6']
    net = OmniSR(**{**TINY, 'res_num': 3})
    recorder = NodeRecorder(net, net.ibsd_nodes())
    with recorder.record():
        net(torch.rand(2, 3, 21, 19))
        nodes = recorder.collect()
    assert [tuple(n.shape) for n in nodes] == [(2, 16, 24, 24)] * 4  # the padded size
    assert all(n.requires_grad for n in nodes)


def test_traced_forward_runs_at_other_sizes():
    net = randomised(OmniSR(**TINY, upsampling=3))
    with warnings.catch_warnings():
        warnings.simplefilter('error', torch.jit.TracerWarning)  # no Python value of the example is frozen
        warnings.filterwarnings('ignore', category=DeprecationWarning)
        warnings.filterwarnings('ignore', message='.*deprecated.*')
        traced = torch.jit.trace(net, torch.rand(1, 3, 20, 27), check_trace=False)
    for shape in [(1, 3, 33, 17), (2, 3, 16, 40)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            assert torch.equal(traced(x), net(x))


def test_onnx_export_with_dynamic_sizes(tmp_path):
    pytest.importorskip('onnx')
    onnxruntime = pytest.importorskip('onnxruntime')
    net = randomised(OmniSR(**TINY, upsampling=2))
    path = tmp_path / 'omnisr.onnx'
    axes = {0: 'batch', 2: 'height', 3: 'width'}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        torch.onnx.export(net, (torch.rand(1, 3, 20, 27),), str(path), dynamo=False, input_names=['input'],
                          output_names=['output'], dynamic_axes={'input': axes, 'output': axes})
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for shape in [(1, 3, 33, 17), (2, 3, 16, 40)]:
        x = torch.rand(*shape)
        got = torch.from_numpy(session.run(None, {'input': x.numpy()})[0])
        with torch.no_grad():
            expected = net(x)
        assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-5)


def load_options(name: str) -> dict:
    return yaml.safe_load((REPO / 'options' / name).read_text())


def test_shipped_options_use_the_official_x4_network():
    files = ['train/IBSD/train_ibsd_omnisr_x4_drealsr.yml', 'train/IBSD/train_baseline_omnisr_x4_drealsr.yml',
             'test/IBSD/test_omnisr_x4_drealsr.yml']
    networks = [load_options(name)['network_g'] for name in files]
    assert networks[0] == networks[1] == networks[2]
    assert n_params(build_network(dict(networks[0]))) == 805_376
    assert load_options(files[0])['train']['ibsd']['nodes'] is None  # the arch's defaults


@pytest.mark.slow
def test_omnisr_trains_with_ibsd_and_validates(tmp_path: Path):
    make_pairs(tmp_path / 'data' / 'train', 4, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 1, scale=2, seed=1)
    opt = train_options('omnisr_ibsd', {'type': 'OmniSR', **TINY, 'upsampling': 2}, tmp_path / 'data', 2, 2)
    opt['model_type'] = 'IBSDModel'
    opt['train'].update(
        mi_opt={'type': 'IBCLUBLoss', 'loss_weight': 0.01, 'reduction': 'mean', 'mode': 'full'},
        wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': 1.0, 'levels': 2},
        soft_target={'source': 'snapshot', 'alpha_max': 0.8, 'ramp_iters': 2})
    output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / 'omnisr.yml', opt))], cwd=tmp_path,
                 env=ONE_THREAD)
    assert "IBSD nodes ['input', 'residual_layer.0', 'residual_layer.1'] with channels [16, 16, 16]" in output
    for term in ('l_pix', 'l_mi', 'l_wav', 'l_est'):
        assert f'{term}: ' in output
    assert 'Validation val' in output
    # 2 iterations from random weights train nothing yet: a finite PSNR above a plain floor is what holds
    checked_scores(output, floor=PLAIN_FLOOR_DB)
    saved = torch.load(tmp_path / 'experiments' / 'omnisr_ibsd' / 'models' / 'net_g_latest.pth', weights_only=True)
    OmniSR(**TINY, upsampling=2).load_state_dict(saved['params'], strict=True)
    assert all(torch.isfinite(v).all() for v in saved['params'].values())
