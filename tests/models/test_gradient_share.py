"""``loss_weight: {grad_ratio: r}``: a term's weight kept at a share of the pixel term's gradient norm."""
from __future__ import annotations

import math

import pytest
import torch
from basicsr.models import build_model

from ibsd.models.gradient_share import GradientShare
from ibsd.errors import OptionError
from ibsd.options.train_sections import check_ibsd_options, describe_terms
from tests.helpers import feed, make_opt


def test_measurements_are_folded_in_geometrically_and_bad_ones_skipped():
    share = GradientShare(0.2, smoothing=0.5)
    assert share.current == 0 and share.due(7, 5)  # nothing measured yet: off, and measured at once
    share.update(pixel_norm=2.0, term_norm=4.0)
    assert share.weight == pytest.approx(0.1) and not share.due(7, 5) and share.due(10, 5)
    share.update(pixel_norm=2.0, term_norm=1.0)  # measures 0.4: the geometric mean with 0.1 is 0.2
    assert share.weight == pytest.approx(0.2)
    for bad in ((math.nan, 1.0), (1.0, 0.0), (1.0, math.inf)):
        share.update(*bad)
        assert share.weight == pytest.approx(0.2)
    with pytest.raises(ValueError, match='grad_ratio must be > 0'):
        GradientShare(0)


def share_options(tmp_path, print_freq: int = 1, smoothing: float = 1.0, ratios=(0.2, 0.05), **extra):
    opt = make_opt(tmp_path, ibsd={'log_grad_ratios': True},
                   wavelet_opt={'type': 'WaveletHFLoss', 'levels': 2,
                                'loss_weight': {'grad_ratio': ratios[0], 'smoothing': smoothing}},
                   mi_opt={'type': 'IBCLUBLoss', 'loss_weight': {'grad_ratio': ratios[1], 'smoothing': smoothing}},
                   **extra)
    opt['logger'] = {'print_freq': print_freq}
    return opt


def train(model, steps) -> list[dict]:
    logs = []
    for step in steps:
        feed(model, seed=step)
        model.optimize_parameters(step)
        logs.append(model.get_current_log())
    return logs


def test_the_measured_ratio_is_the_target_when_each_measurement_is_used_alone(tmp_path):
    torch.manual_seed(0)
    logs = train(build_model(share_options(tmp_path)), range(1, 4))
    for log in logs:
        assert log['g_wav'] == pytest.approx(0.2, rel=1e-4) and log['g_mi'] == pytest.approx(0.05, rel=1e-4)
        assert log['w_wav'] > 0 and log['w_mi'] > 0
    assert logs[0]['w_wav'] != logs[2]['w_wav']  # re-measured each log line


def test_the_smoothed_ratio_tracks_the_target(tmp_path):
    torch.manual_seed(0)
    # a target that stays HR: the terms change only as the student learns (the soft target's ramp and
    # snapshot refreshes move the wavelet gradient several-fold within a few steps of this toy)
    model = build_model(share_options(tmp_path, print_freq=2, smoothing=0.5, soft_target={
        'source': 'snapshot', 'alpha_max': 0.0, 'refresh_iters': 2}))
    logs = train(model, range(1, 21))
    lines = [log for log in logs if 'g_wav' in log]
    assert len(lines) == 10 and all('w_wav' in log for log in logs)  # weighted every step, measured every 2nd
    assert all(abs(math.log(log['g_wav'] / 0.2)) < math.log(1.5) for log in lines), [log['g_wav'] for log in lines]
    assert all(abs(math.log(log['g_mi'] / 0.05)) < math.log(1.5) for log in lines), [log['g_mi'] for log in lines]
    weights = [log['w_wav'] for log in logs]
    assert weights[1] == weights[2] != weights[3]  # iterations 2, 3, 4: changes on log lines only


def test_resume_continues_with_the_saved_weights(tmp_path):
    torch.manual_seed(0)
    straight = build_model(share_options(tmp_path / 'straight', print_freq=2, smoothing=0.3))
    train(straight, range(1, 6))
    torch.manual_seed(0)
    first = build_model(share_options(tmp_path / 'halves', print_freq=2, smoothing=0.3))
    train(first, range(1, 4))
    (tmp_path / 'halves' / 'states').mkdir(parents=True)
    first.save_training_state(0, 3)
    state = torch.load(tmp_path / 'halves' / 'states' / '3.state', weights_only=False)
    assert state['ibsd']['gradient_shares']['l_wav']['weight'] == first.gradient_shares['l_wav'].weight
    resumed = build_model(share_options(tmp_path / 'resumed', print_freq=2, smoothing=0.3))
    resumed.net_g.load_state_dict(first.net_g.state_dict())
    resumed.resume_training(state)
    train(resumed, range(4, 6))
    assert all(torch.equal(a, b) for a, b in zip(straight.net_g.state_dict().values(),
                                                 resumed.net_g.state_dict().values()))


@pytest.mark.parametrize('section, weight, message', [
    ('wavelet_opt', {'grad_ratio': 0}, r'train:wavelet_opt:loss_weight:grad_ratio must be > 0'),
    ('wavelet_opt', {'grad_ratoi': 0.2}, "unknown key 'grad_ratoi': did you mean 'grad_ratio'"),
    ('wavelet_opt', {'smoothing': 0.5}, 'needs grad_ratio'),
    ('mi_opt', {'grad_ratio': 0.1, 'smoothing': 2}, r'smoothing must be in \(0, 1\]'),
    ('est_opt', {'grad_ratio': 0.1}, "a gradient share is for the student's terms"),
])
def test_bad_shares_are_named(tmp_path, section, weight, message):
    options = {'wavelet_opt': {'type': 'WaveletHFLoss'}, 'mi_opt': {'type': 'IBCLUBLoss'},
               'est_opt': {'type': 'LaplaceNLLLoss'}}[section]
    opt = make_opt(tmp_path, **{section: {**options, 'loss_weight': weight}})
    with pytest.raises(OptionError, match=message):
        build_model(opt)


def test_a_share_needs_the_pixel_term_and_reads_numbers_written_as_strings(tmp_path):
    opt = make_opt(tmp_path, pixel_opt=None, wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': {'grad_ratio': 0.2}})
    with pytest.raises(OptionError, match="a share of the pixel term's gradient: it needs train:pixel_opt"):
        check_ibsd_options(opt)  # as ibsd-study checks every run before any trains
    opt = make_opt(tmp_path, wavelet_opt={'type': 'WaveletHFLoss', 'loss_weight': {'grad_ratio': '2e-1'}})
    model = build_model(opt)
    assert model.gradient_shares['l_wav'].grad_ratio == 0.2 and model.cri_wav.loss_weight == 1.0
    assert 'wavelet WaveletHFLoss at 0.2 of the pixel gradient (smoothing 0.2)' in describe_terms(model.opt, None)


def test_ratios_reuse_the_norms_the_shares_took(tmp_path, monkeypatch):
    """Both on: one backward pass per term on a log line (pixel, MI, wavelet), not two."""
    torch.manual_seed(0)
    model = build_model(share_options(tmp_path))
    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, 'grad', lambda *args, **kwargs: calls.append(1) or grad(*args, **kwargs))
    log = train(model, [1])[0]
    assert len(calls) == 3
    assert log['g_wav'] == pytest.approx(0.2, rel=1e-4) and log['g_mi'] == pytest.approx(0.05, rel=1e-4)
