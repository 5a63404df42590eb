"""Divergence guard: non-finite steps never update a network, never reach a checkpoint, and stop the run."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from basicsr.models import build_model

from ibsd.training import checkpoints
from ibsd.training.checkpoints import CheckpointWriteError
from ibsd.models.divergence_guard import DivergenceError
from tests.test_entry_points import SCRIPTS, make_pairs, write_yaml
from tests.test_ibsd_model import feed, make_opt
from tests.test_ibsd_training import ibsd_options


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


def test_a_non_finite_network_is_never_saved(tmp_path):
    model = build_model(make_opt(tmp_path))
    for folder in ('models', 'training_states'):
        Path(model.opt['path'][folder]).mkdir(parents=True)
    model.save(0, 4)
    with torch.no_grad():
        next(model.net_g.parameters())[0] = float('nan')
    with pytest.raises(RuntimeError, match=r'refusing to save .*net_g_8.pth: .* NaN or Inf'):
        model.save(0, 8)
    assert sorted(p.name for p in Path(model.opt['path']['models']).iterdir()) == ['net_g_4.pth']


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


def test_a_failed_checkpoint_write_raises_instead_of_being_counted(tmp_path):
    model = build_model(make_opt(tmp_path))
    Path(model.opt['path']['models']).write_text('a file where the models folder should be')
    with pytest.raises(CheckpointWriteError, match=r'could not write the checkpoint .*net_g_4.pth \(3 tries\)'):
        model.save_network(model.net_g, 'net_g', 4)


@pytest.mark.parametrize('failures', [1, 3])
def test_a_failed_write_is_tried_again_and_leaves_no_temporary_file(tmp_path, monkeypatch, failures):
    model = build_model(make_opt(tmp_path))
    for folder in ('models', 'training_states'):
        Path(model.opt['path'][folder]).mkdir(parents=True)
    real_save, calls = torch.save, []

    def flaky_save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) <= failures:
            Path(path).write_bytes(b'half a file')
            raise OSError('disk hiccup')
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(checkpoints, 'WRITE_RETRY_PAUSE_S', 0)
    monkeypatch.setattr(torch, 'save', flaky_save)
    states = Path(model.opt['path']['training_states'])
    if failures < checkpoints.WRITE_TRIES:
        model.save_training_state(0, 4)
        assert len(calls) == failures + 1 and torch.load(states / '4.state', weights_only=False)['iter'] == 4
        assert sorted(p.name for p in states.iterdir()) == ['4.state']
    else:
        with pytest.raises(CheckpointWriteError, match=r'training state .*4.state \(3 tries\): disk hiccup'):
            model.save_training_state(0, 4)
        assert list(states.iterdir()) == []
