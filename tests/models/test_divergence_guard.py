"""Divergence guard: non-finite steps never update a network, never reach a checkpoint, and stop the run
(the refusal to write non-finite weights is in tests/training/test_checkpoints.py)."""
from __future__ import annotations

import subprocess

import pytest
import torch
from basicsr.models import build_model

from ibsd.models.divergence_guard import DivergenceError
from tests.helpers import SCRIPTS, feed, ibsd_options, make_opt, make_pairs, write_yaml


def weights(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in network.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_a_nan_batch_updates_neither_network_and_stops_after_max_bad_steps(tmp_path):
    opt = make_opt(tmp_path, ibsd={'max_bad_steps': 3})
    model = build_model(opt)
    student, estimator = weights(model.net_g), weights(model.net_est)
    for iteration in (1, 2):
        feed(model)
        model.lq[0, 0, 0, 0] = float('nan')
        model.optimize_parameters(iteration)
        assert same(student, weights(model.net_g)) and same(estimator, weights(model.net_est))
        assert model.optimizer_g.state == {} and model.optimizer_est.state == {}
    feed(model)
    model.lq[0, 0, 0, 0] = float('inf')
    with pytest.raises(DivergenceError, match=r'3 iterations in a row up to 3 had a skipped step; last: '
                                              r'estimators step skipped \(non-finite l_est'):
        model.optimize_parameters(3)


def test_a_good_step_resets_the_count_and_a_bad_term_skips_only_the_student(tmp_path):
    model = build_model(make_opt(tmp_path, ibsd={'max_bad_steps': 2}))
    real_wavelet = model.cri_wav
    model.cri_wav = lambda output, target: real_wavelet(output, target) * float('nan')
    student, estimator = weights(model.net_g), weights(model.net_est)
    feed(model)
    model.optimize_parameters(1)
    assert same(student, weights(model.net_g))
    assert not same(estimator, weights(model.net_est))  # its own loss was finite: the estimator step went ahead
    assert model.guard.consecutive == 1
    model.cri_wav = real_wavelet
    feed(model)
    model.optimize_parameters(2)
    assert not same(student, weights(model.net_g)) and model.guard.consecutive == 0


def test_a_diverging_run_exits_non_zero_with_its_last_checkpoint_finite(tmp_path):
    make_pairs(tmp_path / 'data' / 'train', 8, scale=2)
    make_pairs(tmp_path / 'data' / 'val', 2, scale=2, seed=1)
    opt = ibsd_options('diverging', tmp_path / 'data', 12)
    opt['train']['optim_g']['lr'] = 1000
    result = subprocess.run([str(SCRIPTS / 'ibsd-train'), '-opt', str(write_yaml(tmp_path / 'x.yml', opt))],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert 'DivergenceError: training diverged: 5 iterations in a row' in output
    assert 'step skipped' in output
    saved = sorted((tmp_path / 'experiments' / 'diverging' / 'models').glob('*.pth'))
    assert saved and 'net_g_latest.pth' not in [p.name for p in saved]
    for path in saved:
        for params in torch.load(path, weights_only=True).values():
            assert all(torch.isfinite(t).all() for t in params.values())
