"""``train: ibsd: log_grad_ratios``: each auxiliary term's gradient norm over the pixel term's, on log lines."""
from __future__ import annotations

from copy import deepcopy

import pytest
import torch
from basicsr.models import build_model

from ibsd.losses.wavelet_loss import WaveletHFLoss
from ibsd.errors import OptionError
from tests.helpers import feed, make_opt


def ratio_options(tmp_path, print_freq: int = 1, **train):
    opt = make_opt(tmp_path, ibsd={'log_grad_ratios': True}, **train)
    opt['logger'] = {'print_freq': print_freq}
    return opt


def gradient_norm(loss: torch.Tensor, network: torch.nn.Module) -> float:
    grads = torch.autograd.grad(loss, list(network.parameters()), retain_graph=True, allow_unused=True)
    return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None])).item()


def test_wavelet_ratio_equals_the_brute_force_one(tmp_path):
    """alpha_max 0: the soft target is HR, so both terms can be recomputed on a copy of the student."""
    torch.manual_seed(0)
    opt = ratio_options(tmp_path, mi_opt=None, soft_target={'source': 'snapshot', 'alpha_max': 0.0, 'refresh_iters': 2})
    model = build_model(opt)
    feed(model)
    student = deepcopy(model.net_g)
    model.optimize_parameters(1)
    output = student(model.lq)
    pixel = gradient_norm(torch.nn.functional.l1_loss(output, model.gt), student)
    wavelet = gradient_norm(WaveletHFLoss(loss_weight=1.0, levels=2)(output, model.gt), student)
    log = model.get_current_log()
    assert log['g_wav'] == pytest.approx(wavelet / pixel, rel=1e-4)
    assert 'g_mi' not in log and 'g_pix' not in log


def test_ratios_scale_with_the_weights(tmp_path):
    logs = []
    for wavelet_weight, mi_weight in ((1.0, 0.01), (3.0, 0.01), (1.0, 0.04)):
        torch.manual_seed(0)
        model = build_model(ratio_options(
            tmp_path, wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': wavelet_weight, 'levels': 2},
            mi_opt={'type': 'IBCLUBLoss', 'loss_weight': mi_weight}))
        feed(model)
        model.optimize_parameters(1)
        logs.append(model.get_current_log())
    assert logs[1]['g_wav'] == pytest.approx(3 * logs[0]['g_wav'], rel=1e-5)
    assert logs[1]['g_mi'] == pytest.approx(logs[0]['g_mi'], rel=1e-5)
    assert logs[2]['g_mi'] == pytest.approx(4 * logs[0]['g_mi'], rel=1e-5)
    assert logs[0]['g_mi'] > 0 and logs[0]['g_wav'] > 0


def test_the_diagnostic_leaves_training_unchanged_and_runs_on_log_lines_only(tmp_path):
    weights, logs = [], []
    for options in (make_opt(tmp_path), ratio_options(tmp_path, print_freq=2)):
        torch.manual_seed(0)
        model = build_model(options)
        seen = []
        for step in (1, 2, 3):
            feed(model, seed=step)
            model.optimize_parameters(step)
            seen.append('g_wav' in model.get_current_log())
        logs.append(seen)
        weights.append([p.detach().clone() for p in list(model.net_g.parameters()) + list(model.net_est.parameters())])
    assert all(torch.equal(a, b) for a, b in zip(*weights))
    assert logs == [[False] * 3, [False, True, False]]


def test_ratios_need_a_pixel_term(tmp_path):
    from ibsd.options.train_sections import check_ibsd_options
    with pytest.raises(OptionError, match='log_grad_ratios .* needs train:pixel_opt'):
        check_ibsd_options(ratio_options(tmp_path, pixel_opt=None))  # as ibsd-study checks every run first
