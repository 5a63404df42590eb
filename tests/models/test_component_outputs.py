"""The component images of CDC's HGSR-MHR handed to CDC's loss: the recorder, IBSDModel's student step, and
HGSR-MHR trained with IBSDModel through BasicSR's pipeline."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from basicsr.losses import build_loss

from ibsd.archs.hgsr_arch import HGSR_MHR
from ibsd.errors import OptionError
from ibsd.losses.cdc_loss import CDCComponentLoss
from ibsd.models.component_outputs import ComponentOutputs
from tests.helpers import CDC_COMPONENTS as COMPONENTS
from tests.helpers import (PLAIN_FLOOR_DB, SCRIPTS, checked_scores, make_pairs, run, smooth_images, train_options,
                           write_yaml)

pytestmark = pytest.mark.usefixtures('one_thread')


def test_recorder_hands_the_cropped_component_images_to_the_loss():
    torch.manual_seed(0)
    net = HGSR_MHR(upscale=2, nf=4, n_HG=4, n_mid=1, n_tail=1)
    recorder = ComponentOutputs.for_loss(net, CDCComponentLoss())
    assert recorder.enabled
    x = torch.rand(2, 3, 13, 20)  # padded to 16 x 32 inside the network
    with recorder.record():
        out = net(x)
    components = recorder.loss_inputs(out)['components']
    assert set(components) == set(COMPONENTS)
    assert all(image.shape == out.shape and image.dtype == torch.float32 for image in components.values())
    padded = torch.nn.functional.pad(x, (0, 12, 0, 3), mode='reflect')
    with torch.no_grad():
        flat = net.upsample_flat(net.HG_1(net.HG_0.tail(net.HG_0(net.conv_in(padded)))))  # before HG_1's tail
    assert torch.allclose(components['flat'], flat[..., :26, :40], atol=1e-6)
    assert recorder._outputs == {}  # released after use
    CDCComponentLoss()(out, torch.rand_like(out), components=components).backward()
    assert net.upsample_corner[0][0].weight.grad is not None
    assert not net.conv_in[0]._forward_hooks  # hooks only inside record()


def test_recorder_is_off_for_other_losses_and_rejects_nets_without_components():
    net = HGSR_MHR(upscale=2, nf=4, n_HG=4, n_mid=1, n_tail=1)
    off = ComponentOutputs.for_loss(net, build_loss({'type': 'L1Loss'}))
    assert not off.enabled and off.loss_inputs(torch.zeros(1)) == {}
    with pytest.raises(OptionError, match='cdc_component_nodes'):
        ComponentOutputs.for_loss(torch.nn.Conv2d(3, 3, 3), CDCComponentLoss())


HGSR_TINY = {'type': 'HGSR_MHR', 'upscale': 2, 'nf': 4, 'n_HG': 4, 'n_mid': 1, 'n_tail': 1}


def ibsd_model(tmp_path: Path, ibsd_terms: bool = True, pixel_opt: dict | None = None):
    from basicsr.models import build_model
    train = {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 10,
             'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
             'pixel_opt': pixel_opt or {'type': 'CDCComponentLoss', 'loss_weight': 1.0}}
    if ibsd_terms:
        train.update(mi_opt={'type': 'IBCLUBLoss', 'loss_weight': 0.01},
                     wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': 1.0, 'levels': 2},
                     soft_target={'source': 'snapshot', 'alpha_max': 0.8, 'refresh_iters': 2, 'ramp_iters': 4})
    opt = {'name': 'cdc', 'model_type': 'IBSDModel', 'scale': 2, 'num_gpu': 0, 'is_train': True, 'dist': False,
           'rank': 0, 'world_size': 1, 'manual_seed': 0, 'network_g': dict(HGSR_TINY),
           'datasets': {'train': {'gt_size': 32}}, 'train': train,
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                    'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'states')}}
    torch.manual_seed(0)
    return build_model(opt)


def spy_on_pixel_loss(model) -> list[dict]:
    """Record the keyword arguments and value of every pixel-loss call."""
    calls, forward = [], model.cri_pix.forward

    def recorded(pred, target, **kwargs):
        value = forward(pred, target, **kwargs)
        calls.append({**kwargs, 'pred': pred.detach(), 'value': value.detach()})
        return value
    model.cri_pix.forward = recorded
    return calls


@pytest.mark.parametrize('ibsd_terms', [True, False], ids=['ibsd', 'baseline'])
def test_ibsd_model_passes_the_students_component_images_to_cdcs_loss(tmp_path, ibsd_terms):
    import copy
    model = ibsd_model(tmp_path, ibsd_terms)
    assert (model.net_est is not None) == ibsd_terms
    lq = smooth_images(2, 16, seed=5)
    gt = torch.nn.functional.interpolate(lq, scale_factor=2, mode='bicubic').clamp(0, 1)
    model.feed_data({'lq': lq, 'gt': gt})
    before = copy.deepcopy(model.net_g)
    recorder = ComponentOutputs(before, before.cdc_component_nodes())
    with torch.no_grad(), recorder.record():
        output = before(lq)
    expected = recorder.loss_inputs(output)['components']
    calls = spy_on_pixel_loss(model)
    model.optimize_parameters(1)
    (call,) = calls
    assert set(call['components']) == set(COMPONENTS)
    for name in COMPONENTS:
        assert torch.allclose(call['components'][name], expected[name], atol=1e-6), name
    assert torch.allclose(call['pred'], output, atol=1e-6)
    reference = CDCComponentLoss()(output, gt, components=expected)
    assert call['value'].item() == pytest.approx(reference.item(), rel=1e-5)
    assert set(model.get_current_log()) >= ({'l_pix', 'l_mi', 'l_wav'} if ibsd_terms else {'l_pix'})
    assert not any(module._forward_hooks for module in model.net_g.modules())
    assert not torch.equal(model.net_g.upsample_corner[-1][0].weight, before.upsample_corner[-1][0].weight)


def test_other_pixel_losses_get_no_components(tmp_path):
    model = ibsd_model(tmp_path, ibsd_terms=False, pixel_opt={'type': 'L1Loss', 'loss_weight': 1.0})
    model.feed_data({'lq': torch.rand(2, 3, 16, 16), 'gt': torch.rand(2, 3, 32, 32)})
    calls = spy_on_pixel_loss(model)
    model.optimize_parameters(1)
    assert set(calls[0]) == {'pred', 'value'}


@pytest.mark.slow
@pytest.mark.parametrize('ibsd_terms', [True, False], ids=['ibsd', 'baseline'])
def test_hgsr_trains_and_validates_through_ibsd_train(tmp_path, ibsd_terms):
    make_pairs(tmp_path / 'data' / 'train', 4, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 2, scale=2, seed=1, size=40)  # 20x20 LR: padded inside the network
    opt = train_options('hgsr', dict(HGSR_TINY), tmp_path / 'data', 2, 4)
    opt['model_type'] = 'IBSDModel'
    opt['train'].update(ema_decay=0, pixel_opt={'type': 'CDCComponentLoss', 'loss_weight': 1.0})
    if ibsd_terms:
        opt['train'].update(mi_opt={'type': 'IBCLUBLoss', 'loss_weight': 0.001, 'mode': 'full'},
                            wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': 1.0, 'levels': 3})
    output = run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / 'hgsr.yml', opt))], cwd=tmp_path,
                 env={'OMP_NUM_THREADS': '1'})
    assert 'pixel CDCComponentLoss x1' in output
    assert ("IBSD nodes ['conv_in', 'HG_1.tail', 'HG_2.tail', 'HG_3']" in output) == ibsd_terms
    assert 'l_pix: ' in output and ('l_mi: ' in output) == ibsd_terms and ('l_wav: ' in output) == ibsd_terms
    assert output.count('Validation val') >= 2
    # 4 iterations from random weights train nothing yet: a finite PSNR above a plain floor is what holds
    assert len(checked_scores(output, floor=PLAIN_FLOOR_DB)) >= 2
    saved = torch.load(tmp_path / 'experiments' / 'hgsr' / 'models' / 'net_g_latest.pth', weights_only=True)
    HGSR_MHR(**{k: v for k, v in HGSR_TINY.items() if k != 'type'}).load_state_dict(saved['params'], strict=True)
