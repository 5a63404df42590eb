"""IBSDModel in process: the estimator/student alternation, its terms, options and the saved student."""
from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest
import torch
from basicsr.models import build_model

from ibsd.archs.imdn_arch import IMDN
from tests.helpers import feed, make_opt


def test_one_iteration_logs_every_term_and_steps_both_networks(tmp_path):
    model = build_model(make_opt(tmp_path))
    student_before = deepcopy(model.net_g.state_dict())
    estimator_before = deepcopy(model.net_est.state_dict())
    feed(model)
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == {'l_est', 'l_pix', 'l_mi', 'l_wav', 'alpha'}
    assert any(not torch.equal(student_before[k], v) for k, v in model.net_g.state_dict().items())
    assert any(not torch.equal(estimator_before[k], v) for k, v in model.net_est.state_dict().items())
    assert len(model.optimizers) == len(model.schedulers) == 2
    assert sum(len(m._forward_hooks) for m in model.net_g.modules()) == 0


def test_student_step_never_touches_the_estimators(tmp_path):
    model = build_model(make_opt(tmp_path))
    student_params = {id(p) for group in model.optimizer_g.param_groups for p in group['params']}
    assert not student_params & {id(p) for p in model.net_est.parameters()}
    after_estimator_step = {}
    original_step = model.optimizer_est.step

    def step_and_record(*args, **kwargs):
        result = original_step(*args, **kwargs)
        after_estimator_step['params'] = deepcopy(model.net_est.state_dict())
        after_estimator_step['grads'] = [p.grad.clone() for p in model.net_est.parameters()]
        after_estimator_step['student_grads'] = [p.grad for p in model.net_g.parameters()]
        return result

    model.optimizer_est.step = step_and_record
    feed(model)
    model.optimize_parameters(1)
    # the estimator update saw detached nodes: no gradient reached the student then
    assert all(g is None or not g.any() for g in after_estimator_step['student_grads'])
    # the student update changed neither the estimators' weights nor their gradients
    assert all(torch.equal(after_estimator_step['params'][k], v) for k, v in model.net_est.state_dict().items())
    assert all(torch.equal(a, p.grad) for a, p in zip(after_estimator_step['grads'], model.net_est.parameters()))
    assert all(p.requires_grad for p in model.net_est.parameters())


@pytest.mark.parametrize('network, nodes', [
    ({'type': 'EDSR', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 3, 'upscale': 2},
     ['conv_first', 'body.0', 'body.2', 'conv_after_body']),
    ({'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 2}, ['conv_first', 'body.0', 'body.1']),
])
def test_any_basicsr_arch_works_with_named_nodes(tmp_path, network, nodes):
    model = build_model(make_opt(tmp_path, network, ibsd={'nodes': nodes}))
    assert model.net_est.channels == [8] * len(nodes)
    feed(model)
    model.optimize_parameters(1)
    assert torch.isfinite(torch.tensor(list(model.get_current_log().values()))).all()


def test_arch_without_default_nodes_needs_the_option(tmp_path):
    with pytest.raises(ValueError, match='train:ibsd:nodes'):
        build_model(make_opt(tmp_path, {'type': 'MSRResNet', 'num_feat': 8, 'num_block': 2, 'upscale': 2}))


def test_estimator_channel_mismatch_is_named(tmp_path):
    opt = make_opt(tmp_path)
    opt['network_est'] = {'type': 'IBEstimator', 'channels': [64, 64, 64, 64]}
    with pytest.raises(ValueError, match='network_est:channels'):
        build_model(opt)


def test_bad_estimator_steps_is_named(tmp_path):
    with pytest.raises(ValueError, match='estimator_steps'):
        build_model(make_opt(tmp_path, ibsd={'estimator_steps': 0}))


def test_terms_can_be_switched_off(tmp_path):
    model = build_model(make_opt(tmp_path, mi_opt=None, wavelet_opt=None))
    assert model.net_est is None and model.cri_wav is None and len(model.optimizers) == 1
    feed(model)
    model.optimize_parameters(1)
    assert set(model.get_current_log()) == {'l_pix'}


def test_estimator_has_its_own_optimizer_and_scheduler(tmp_path):
    model = build_model(make_opt(tmp_path, optim_est={'type': 'Adam', 'lr': 5e-5},
                                 scheduler_est={'type': 'MultiStepLR', 'milestones': [1], 'gamma': 0.1}))
    assert model.optimizer_est.param_groups[0]['lr'] == 5e-5
    model.update_learning_rate(2)
    assert model.optimizer_est.param_groups[0]['lr'] == pytest.approx(5e-6)
    assert model.optimizer_g.param_groups[0]['lr'] == 1e-3


def test_saved_student_is_the_plain_arch_bit_for_bit(tmp_path):
    model = build_model(make_opt(tmp_path))
    feed(model)
    model.optimize_parameters(1)
    Path(model.opt['path']['models']).mkdir()
    model.save_network(model.net_g, 'net_g', 1)
    saved = torch.load(tmp_path / 'models' / 'net_g_1.pth', weights_only=True)
    assert set(saved) == {'params'}
    plain = IMDN(num_feat=16, num_block=6, upscale=2).eval()
    plain.load_state_dict(saved['params'], strict=True)
    model.net_g.eval()
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(plain(x), model.net_g(x))


def test_student_gradient_clipping_is_applied_and_logged(tmp_path):
    model = build_model(make_opt(tmp_path, ibsd={'grad_clip_norm': 1e-3}))
    feed(model)
    seen = {}
    original_step = model.optimizer_g.step

    def step_and_measure(*args, **kwargs):
        seen['norm'] = torch.nn.utils.get_total_norm([p.grad for p in model.net_g.parameters()]).item()
        return original_step(*args, **kwargs)

    model.optimizer_g.step = step_and_measure
    model.optimize_parameters(1)
    assert model.get_current_log()['grad_norm'] > 1e-3  # the norm before clipping is logged
    assert seen['norm'] == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(ValueError, match='grad_clip_norm'):
        build_model(make_opt(tmp_path, ibsd={'grad_clip_norm': 0}))


def test_basicsr_warm_up_scales_both_learning_rates(tmp_path):
    model = build_model(make_opt(tmp_path, optim_est={'type': 'Adam', 'lr': 4e-4}))
    model.update_learning_rate(1, warmup_iter=4)
    assert model.optimizer_g.param_groups[0]['lr'] == pytest.approx(1e-3 / 4)
    assert model.optimizer_est.param_groups[0]['lr'] == pytest.approx(4e-4 / 4)
    model.update_learning_rate(3, warmup_iter=4)
    assert model.optimizer_est.param_groups[0]['lr'] == pytest.approx(4e-4 * 3 / 4)


def test_log_pairs_logs_each_pairs_bound_and_nll_that_sum_to_the_terms(tmp_path):
    model = build_model(make_opt(tmp_path, ibsd={'log_pairs': True}))
    feed(model)
    model.optimize_parameters(1)
    log = model.get_current_log()
    pairs = len(model.node_recorder.nodes) - 1
    assert [f'mi_{k}' for k in range(1, pairs + 1)] == [n for n in log if n.startswith('mi_')]
    weight = model.cri_mi.loss_weight
    assert sum(log[f'mi_{k}'] for k in range(1, pairs + 1)) * weight == pytest.approx(log['l_mi'], rel=1e-5, abs=1e-9)
    assert sum(log[f'nll_{k}'] for k in range(1, pairs + 1)) == pytest.approx(log['l_est'], rel=1e-5)
    quiet = build_model(make_opt(tmp_path / 'quiet'))
    feed(quiet)
    quiet.optimize_parameters(1)
    assert not any(n.startswith(('mi_', 'nll_')) for n in quiet.get_current_log())
