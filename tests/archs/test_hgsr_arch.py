"""HGSR-MHR (CDC): CDC's parameter names and shapes, parameter count, shapes at every scale, the
per-channel softmax merge, the IBSD and component nodes, CDC checkpoints, options and export."""
from __future__ import annotations

import math

import pytest
import torch
from basicsr.archs import build_network

from ibsd.archs.checkpoint import load_pretrained
from ibsd.archs.hgsr_arch import HGSR_MHR
from ibsd.models.feature_nodes import NodeRecorder
from tests.helpers import REPO, n_params

TINY = dict(nf=4, n_HG=4, n_mid=1, n_tail=1)
"""A small configuration: every kind of block, 4 hourglasses (the fewest CDC's branching allows)."""


pytestmark = pytest.mark.usefixtures('one_thread')



def residual_block(prefix: str, ch_in: int, ch_out: int) -> dict[str, tuple]:
    """CDC's ResidualBlock: res = (1x1, act, 3x3, act, 1x1), no bias; a 1x1 'identity' conv if widths differ."""
    keys = {f'{prefix}.res.0.weight': (ch_out, ch_in, 1, 1), f'{prefix}.res.2.weight': (ch_out, ch_out, 3, 3),
            f'{prefix}.res.4.weight': (ch_out, ch_out, 1, 1)}
    if ch_in != ch_out:
        keys[f'{prefix}.identity.weight'] = (ch_out, ch_in, 1, 1)
    return keys


def inception_block(prefix: str, c: int) -> dict[str, tuple]:
    return {f'{prefix}.res1.0.weight': (c, c, 1, 1), f'{prefix}.res2.0.weight': (c, c, 1, 1),
            f'{prefix}.res2.1.weight': (c, c, 3, 3), f'{prefix}.res3.0.weight': (c, c, 1, 1),
            f'{prefix}.res3.1.weight': (c, c, 3, 3), f'{prefix}.res3.3.weight': (c, c, 3, 3),
            f'{prefix}.filter_concat.weight': (c, 3 * c, 1, 1)}


def hourglass(prefix: str, nf: int, n_mid: int, n_tail: int) -> dict[str, tuple]:
    c0, c1, c2 = nf, 2 * nf, 4 * nf
    keys = {}
    for name, (a, b) in {'down1': (c0, c1), 'down2': (c1, c1), 'down3': (c1, c2), 'down4': (c2, c2),
                         'up1': (c2, c2), 'up2': (c2, c1), 'up3': (c1, c1), 'up4': (c1, c0)}.items():
        keys.update(residual_block(f'{prefix}.{name}.res_block', a, b))
    for index, c in enumerate((c0, c1, c1, c2, c2)):
        keys.update(residual_block(f'{prefix}.skip_conv{index}', c, c))
    for index in range(n_mid):
        keys.update(residual_block(f'{prefix}.mid_res.{index}', c2, c2))
    for index in range(n_tail):
        keys.update(inception_block(f'{prefix}.tail.{index}', c0))
    return keys


def branch(prefix: str, nf: int, out_nc: int, upscale: int, kernel: int) -> dict[str, tuple]:
    """CDC's make_upsample_block indices: LR conv, upsampling stages, HR conv + act, output conv."""
    convs = ['0.0']
    if upscale == 3:
        convs.append('2')  # CDC unpacks its single x3 stage: Upsample, conv, act
        tail = ['4.0', '5.0']
    else:
        stages = int(math.log2(upscale))
        convs += [f'{1 + i}.1' for i in range(stages)]
        tail = [f'{1 + stages}.0', f'{2 + stages}.0']
    keys = {}
    for name in convs + tail[:1]:
        keys[f'{prefix}.{name}.weight'], keys[f'{prefix}.{name}.bias'] = (nf, nf, 3, 3), (nf,)
    keys[f'{prefix}.{tail[1]}.weight'], keys[f'{prefix}.{tail[1]}.bias'] = (out_nc, nf, kernel, kernel), (out_nc,)
    return keys


def cdc_keys(upscale: int = 4, nf: int = 64, n_HG: int = 6, n_mid: int = 2, n_tail: int = 2, in_nc: int = 3,
             out_nc: int = 3) -> dict[str, tuple]:
    """The state dict of CDC's HourGlassNetMultiScaleInt, written out from its structure."""
    keys = {'conv_in.0.weight': (nf, in_nc, 3, 3), 'conv_in.0.bias': (nf,)}
    for component in ('flat', 'edge', 'corner'):
        keys.update(branch(f'{component}_map', nf, out_nc, upscale, 1))
        keys.update(branch(f'upsample_{component}', nf, out_nc, upscale, 3))
    for index in range(n_HG):
        keys.update(hourglass(f'HG_{index}', nf, n_mid, n_tail if index < n_HG - 1 else 0))
    return keys


def shapes(net: torch.nn.Module) -> dict[str, tuple]:
    return {key: tuple(value.shape) for key, value in net.state_dict().items()}


def test_cdc_x4_configuration_has_cdcs_names_shapes_and_parameter_count():
    net = HGSR_MHR()
    assert shapes(net) == cdc_keys()
    assert len(net.state_dict()) == 426
    assert n_params(net) == 39_920_530  # the count measured from the IBSD authors' HGSR file


@pytest.mark.parametrize('upscale', [1, 2, 3, 4, 8])
def test_tiny_configurations_have_cdcs_names_at_every_scale(upscale):
    assert shapes(HGSR_MHR(upscale=upscale, **TINY)) == cdc_keys(upscale, nf=4, n_HG=4, n_mid=1, n_tail=1)


def test_map_kernel_size_3_gives_the_ibsd_authors_x3_mask_convolutions():
    net = HGSR_MHR(upscale=3, map_kernel_size=3, **TINY)
    assert net.state_dict()['flat_map.5.0.weight'].shape == (3, 4, 3, 3)
    assert net.state_dict()['upsample_flat.5.0.weight'].shape == (3, 4, 3, 3)


@pytest.mark.parametrize('upscale', [1, 2, 3, 4])
@pytest.mark.parametrize('size', [(16, 32), (13, 21), (9, 40)])
def test_output_is_upscale_times_the_input_for_any_size(upscale, size):
    net = HGSR_MHR(upscale=upscale, **TINY).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 3, *size))
    assert out.shape == (2, 3, size[0] * upscale, size[1] * upscale)
    assert torch.isfinite(out).all()


def test_padding_to_a_multiple_of_16_is_cropped_back():
    torch.manual_seed(0)
    net = HGSR_MHR(upscale=2, **TINY).eval()
    x = torch.rand(1, 3, 20, 27)
    padded = torch.nn.functional.pad(x, (0, 5, 0, 12), mode='reflect')
    with torch.no_grad():
        assert torch.equal(net(x), net(padded)[..., :40, :54])


def record(net: torch.nn.Module, names: list[str], x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    recorder = NodeRecorder(net, names)
    with torch.no_grad(), recorder.record():
        out = net(x)
    return out, recorder.collect()


def test_output_merges_the_components_with_a_softmax_per_colour_channel():
    torch.manual_seed(0)
    net = HGSR_MHR(upscale=2, init_scale=None, **TINY).eval()
    names = ['upsample_flat', 'upsample_edge', 'upsample_corner', 'flat_map', 'edge_map', 'corner_map']
    assert names[:3] == list(net.cdc_component_nodes().values())
    assert names[3:] == list(net.cdc_mask_nodes().values())
    out, (flat, edge, corner, m_flat, m_edge, m_corner) = record(net, names, torch.rand(1, 3, 16, 16))
    expected = torch.zeros_like(out)
    for c in range(3):  # CDC: for each colour, a softmax over (flat, edge, corner)
        weights = torch.softmax(torch.stack([m_flat[:, c], m_edge[:, c], m_corner[:, c]]), dim=0)
        expected[:, c] = weights[0] * flat[:, c] + weights[1] * edge[:, c] + weights[2] * corner[:, c]
    assert torch.allclose(out, expected, atol=1e-6)
    assert not torch.allclose(out, flat) and not torch.allclose(out, corner)


def test_ibsd_nodes_are_the_shallow_feature_and_the_branch_hourglass_outputs():
    torch.manual_seed(0)
    net = HGSR_MHR(n_HG=6, nf=4, n_mid=1, n_tail=1).eval()
    assert net.ibsd_nodes() == ['conv_in', 'HG_1.tail', 'HG_3.tail', 'HG_5']
    x = torch.rand(2, 3, 16, 16)
    _, nodes = record(net, net.ibsd_nodes(), x)
    with torch.no_grad():  # the authors' out_feats: conv_in, then each block's output after its tail
        features, expected = net.conv_in(x), []
        expected.append(features)
        for index in range(6):
            block = getattr(net, f'HG_{index}')
            features = block(features)
            features = block.tail(features) if hasattr(block, 'tail') else features
            if index in (1, 3, 5):
                expected.append(features)
    assert [tuple(n.shape) for n in nodes] == [(2, 4, 16, 16)] * 4
    assert all(torch.equal(a, b) for a, b in zip(nodes, expected))


def test_without_tails_the_nodes_are_the_hourglass_blocks():
    net = HGSR_MHR(nf=4, n_HG=5, n_mid=0, n_tail=0)
    assert net.ibsd_nodes() == ['conv_in', 'HG_1', 'HG_2', 'HG_4']
    _, nodes = record(net, net.ibsd_nodes(), torch.rand(1, 3, 16, 16))
    assert len(nodes) == 4


def test_cdc_initialisation_is_scaled_kaiming_with_zero_bias():
    torch.manual_seed(0)
    net = HGSR_MHR(nf=16, n_HG=4, n_mid=1, n_tail=1)
    weight = net.HG_0.mid_res[0].res[2].weight  # 64 x 64 x 3 x 3
    assert weight.std().item() == pytest.approx(0.1 * math.sqrt(2 / (64 * 9)), rel=0.05)
    assert all(torch.count_nonzero(p) == 0 for name, p in net.named_parameters() if name.endswith('.bias'))
    default = HGSR_MHR(nf=16, n_HG=4, n_mid=1, n_tail=1, init_scale=None)
    assert torch.count_nonzero(default.conv_in[0].bias) > 0


def test_cdc_checkpoint_with_state_dict_optimizer_and_module_prefix_loads(tmp_path):
    torch.manual_seed(0)
    trained = HGSR_MHR(upscale=2, **TINY)
    optimizer = torch.optim.Adam(trained.parameters(), lr=2e-4)
    trained(torch.rand(1, 3, 16, 16)).mean().backward()
    optimizer.step()
    path = tmp_path / 'HGSR-MHR_X2_3.pth'  # CDC's logger: name, epoch, weights, optimizer; DataParallel keys
    weights = {f'module.{key}': value for key, value in trained.state_dict().items()}
    torch.save({'Name': path.name, 'Epoch': 3, 'state_dict': weights, 'optim': optimizer.state_dict()}, path)
    fresh = load_pretrained(HGSR_MHR(upscale=2, **TINY), str(path))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))


def test_built_through_basicsr_registry():
    net = build_network({'type': 'HGSR_MHR', 'upscale': 3, **TINY})
    assert isinstance(net, HGSR_MHR) and net.upscale == 3


@pytest.mark.parametrize('kwargs, message', [
    (dict(n_HG=3), 'n_HG'), (dict(upscale=6), 'upscale'), (dict(res_type='rrdb'), 'res_type'),
    (dict(act_type='gelu'), 'act_type'), (dict(share_upsample=True), 'share_upsample'),
    (dict(mscale_inter_super=True), 'mscale_inter_super'), (dict(map_kernel_size=2), 'map_kernel_size'),
    (dict(nf=0), 'nf'), (dict(n_tail=-1), 'n_tail'),
])
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HGSR_MHR(**{**TINY, **kwargs})


@pytest.mark.parametrize('act_type', ['relu', 'prelu'])
def test_other_upsampling_activations(act_type):
    net = HGSR_MHR(upscale=2, act_type=act_type, **TINY)
    assert ('upsample_flat.1.2.weight' in net.state_dict()) == (act_type == 'prelu')
    assert net(torch.rand(1, 3, 16, 16)).shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_onnx_export_with_dynamic_sizes_matches_pytorch(tmp_path):
    pytest.importorskip('onnxscript')
    onnxruntime = pytest.importorskip('onnxruntime')
    torch.manual_seed(0)
    net = HGSR_MHR(upscale=2, init_scale=None, **TINY).eval()
    path = tmp_path / 'hgsr.onnx'
    dynamic = {0: torch.export.Dim.DYNAMIC, 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), str(path), dynamo=True, dynamic_shapes=(dynamic,),
                      input_names=['input'], output_names=['output'])
    session = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    for size in [(1, 3, 16, 48), (2, 3, 27, 45)]:
        x = torch.rand(*size)
        with torch.no_grad():
            expected = net(x).numpy()
        got = session.run(None, {'input': x.numpy()})[0]
        assert got.shape == expected.shape
        assert abs(got - expected).max() < 1e-4


HGSR_YAMLS = ['train_ibsd_hgsr_x4_drealsr.yml', 'train_baseline_hgsr_x4_drealsr.yml']


@pytest.mark.parametrize('name', HGSR_YAMLS)
def test_shipped_yamls_use_cdcs_network_optimizer_schedule_and_loss(name):
    """tests/options/test_shipped_files.py builds every train YAML; CDC's settings (not the lightweight
    students') here."""
    import yaml
    opt = yaml.safe_load((REPO / 'options' / 'train' / 'IBSD' / name).read_text())
    assert opt['model_type'] == 'IBSDModel'  # the baseline too: it hands the component images to the loss
    assert opt['network_g'] == {'type': 'HGSR_MHR', 'in_nc': 3, 'out_nc': 3, 'upscale': 4, 'nf': 64, 'n_HG': 6,
                                'n_mid': 2, 'n_tail': 2, 'res_type': 'res', 'act_type': 'leakyrelu',
                                'init_scale': 0.1}
    train, data = opt['train'], opt['datasets']['train']
    assert (data['gt_size'], data['batch_size_per_gpu'], data['use_hflip'], data['use_rot']) == (192, 16, True, True)
    assert train['optim_g'] == {'type': 'Adam', 'lr': 2e-4, 'weight_decay': 0, 'betas': [0.9, 0.999]}
    assert train['scheduler'] == {'type': 'MultiStepLR', 'milestones': [200000, 400000, 600000, 800000], 'gamma': 0.5}
    assert train['total_iter'] == 800000 and train['ema_decay'] == 0
    assert train['pixel_opt'] == {'type': 'CDCComponentLoss', 'loss_weight': 1.0, 'flat_weight': 1.0,
                                  'edge_weight': 2.0, 'corner_weight': 5.0, 'gw_weight': 1.0}
    assert all(m['test_y_channel'] and m['crop_border'] == 4 for m in opt['val']['metrics'].values())
    if 'ibsd' in name:
        assert train['ibsd']['nodes'] is None  # the arch's default:
        assert HGSR_MHR(nf=4, n_HG=6, n_mid=0).ibsd_nodes() == ['conv_in', 'HG_1.tail', 'HG_3.tail', 'HG_5']
        assert train['wavelet_opt']['type'] == 'WaveletHFLoss' and train['mi_opt']['type'] == 'IBCLUBLoss'
    else:
        assert not {'ibsd', 'mi_opt', 'wavelet_opt', 'soft_target'} & set(train)
