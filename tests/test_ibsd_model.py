"""IBSDModel in process: the estimator/student alternation, soft targets, options and export."""
from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import pytest
import torch
from basicsr.models import build_model

from ibsd.archs.ib_estimator_arch import IBEstimator
from ibsd.archs.imdn_arch import IMDN
from ibsd.losses.ib_loss import IBCLUBLoss, LaplaceNLLLoss
from ibsd.models.soft_target import ProgressiveSoftTarget

IMDN_SMALL = {'type': 'IMDN', 'num_feat': 16, 'num_block': 6, 'upscale': 2}


def make_opt(tmp_path: Path, network: dict | None = None, **train) -> dict:
    train_opt = {
        'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'total_iter': 10,
        'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
        'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0},
        'mi_opt': {'type': 'IBCLUBLoss', 'loss_weight': 0.01},
        'wavelet_opt': {'type': 'WaveletHFLoss', 'loss_weight': 1.0, 'levels': 2},
        'soft_target': {'source': 'snapshot', 'alpha_max': 0.8, 'refresh_iters': 2, 'ramp_iters': 4},
    }
    train_opt.update(train)
    train_opt = {k: v for k, v in train_opt.items() if v is not None}
    return {'name': 'unit', 'model_type': 'IBSDModel', 'scale': 2, 'num_gpu': 0, 'is_train': True, 'dist': False,
            'rank': 0, 'world_size': 1, 'manual_seed': 0, 'network_g': deepcopy(network or IMDN_SMALL),
            'datasets': {'train': {'gt_size': 32}}, 'train': train_opt,
            'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None,
                     'models': str(tmp_path / 'models'), 'training_states': str(tmp_path / 'states')}}


def feed(model, batch: int = 4, size: int = 16, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 3, size, size, generator=generator)
    model.feed_data({'lq': lq, 'gt': torch.nn.functional.interpolate(lq, scale_factor=2, mode='bicubic')})


def test_estimator_learns_a_fixed_correlated_pair():
    torch.manual_seed(0)
    x = torch.randn(8, 8, 12, 12)
    y = 0.8 * torch.roll(x, 1, dims=1) + 0.1 * torch.randn_like(x)
    estimator, nll = IBEstimator([8, 8]), LaplaceNLLLoss()
    optimizer = torch.optim.Adam(estimator.parameters(), lr=1e-2)
    losses = []
    for _ in range(150):
        (mu, scale), = estimator([y, x])
        loss = nll(mu, scale, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 2.0
    assert losses[-1] < 0  # log(2b) < 0 once the scale is small: q explains y well


def test_estimator_takes_channel_counts_from_the_nodes_even_when_they_differ():
    estimator = IBEstimator([3, 8, 5])
    out = estimator([torch.rand(2, 3, 6, 6), torch.rand(2, 8, 6, 6), torch.rand(2, 5, 6, 6)])
    assert [(tuple(mu.shape), tuple(b.shape)) for mu, b in out] == [((2, 3, 6, 6),) * 2, ((2, 8, 6, 6),) * 2]
    assert all((b > 0).all() for _, b in out)
    assert sum(p.numel() for p in IBEstimator([64] * 4).parameters()) == 74_886  # the authors' IBNet


def op_counts(batch: int) -> dict[str, int]:
    estimator, bound = IBEstimator([8, 8, 8]), IBCLUBLoss()
    nodes = [torch.rand(batch, 8, 10, 10, requires_grad=True) for _ in range(3)]
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        total = sum(bound(mu, b, y) for (mu, b), y in zip(estimator(nodes), nodes[:-1]))
        total.backward()
    allocation = ('aten::empty', 'aten::resize')  # allocator internals vary with sizes
    return {e.key: e.count for e in profile.key_averages() if not e.key.startswith(allocation)}


def test_no_python_loop_over_the_batch():
    small, large = op_counts(2), op_counts(9)
    assert small == large
    assert small['aten::matmul'] == 2 * 2  # 2 pairs x (both heads' first layer, both heads' second layer)


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


def test_alpha_rises_linearly_and_snapshot_refreshes_per_period():
    target = ProgressiveSoftTarget('snapshot', alpha_max=0.8, ramp_iters=4, refresh_iters=2,
                                   build_student=lambda: IMDN(**{k: v for k, v in IMDN_SMALL.items() if k != 'type'}))
    assert [target.alpha(t) for t in (0, 1, 2, 4, 9)] == pytest.approx([0, 0.2, 0.4, 0.8, 0.8])
    later = ProgressiveSoftTarget('ema', alpha_max=0.5, ramp_iters=4, refresh_iters=None, build_student=None,
                                  start_iters=10)
    assert [later.alpha(t) for t in (0, 10, 12, 14, 99)] == pytest.approx([0, 0, 0.25, 0.5, 0.5])
    student = IMDN(**{k: v for k, v in IMDN_SMALL.items() if k != 'type'})
    lq, hr = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16)
    for t in (1, 2):
        target.refresh_if_due(t, student)
    assert target.snapshot is None and target.target(2, lq, hr)[0] is hr  # no teacher yet: HR
    target.refresh_if_due(3, student)  # two iterations done: first snapshot
    assert target.snapshot_iter == 2
    with torch.no_grad():
        student.fea_conv.weight.add_(1.)  # the student moves on, the snapshot does not
        teacher = target.snapshot(lq)
        expected = 0.4 * hr + 0.6 * teacher  # alpha(3) = 0.6
    mixed, alpha = target.target(3, lq, hr)
    assert alpha == pytest.approx(0.6) and torch.allclose(mixed, expected)
    assert not torch.allclose(teacher, student(lq))
    target.refresh_if_due(5, student)
    assert target.snapshot_iter == 4 and torch.equal(target.snapshot.fea_conv.weight, student.fea_conv.weight)


def test_ema_source_and_no_current_output_source(tmp_path):
    hr = torch.rand(1, 3, 4, 4)
    with pytest.raises(ValueError, match="source 'current' is not offered: with the L1 wavelet loss"):
        ProgressiveSoftTarget('current', 1.0, 1, None, build_student=lambda: None)
    with pytest.raises(ValueError, match='ema_decay'):
        ProgressiveSoftTarget('ema', 0.5, 1, None, build_student=lambda: None).target(1, None, hr)
    model = build_model(make_opt(tmp_path, ema_decay=0.9, soft_target={'source': 'ema', 'ramp_iters': 1}))
    feed(model)
    model.optimize_parameters(1)
    assert model.get_current_log()['alpha'] == pytest.approx(0.8)


@pytest.mark.parametrize('options, message', [
    ({'source': 'bank'}, 'source'), ({'alpha_max': 1.5}, 'alpha_max'), ({'refresh_iters': 0}, 'refresh_iters')])
def test_bad_soft_target_options_are_named(tmp_path, options, message):
    with pytest.raises(ValueError, match=f'train:soft_target:{message}'):
        build_model(make_opt(tmp_path, soft_target=options))


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


def test_snapshot_period_defaults_to_the_epoch_known_to_the_pipeline(tmp_path):
    opt = make_opt(tmp_path, soft_target={'source': 'snapshot'})
    with pytest.raises(ValueError, match='set refresh_iters'):
        build_model(opt)
    opt['iters_per_epoch'] = 37
    assert build_model(opt).soft_target.refresh_iters == 37


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


def test_start_iters_delays_the_ramp_which_then_spans_the_remaining_iterations(tmp_path):
    opt = make_opt(tmp_path, soft_target={'source': 'snapshot', 'alpha_max': 0.8, 'refresh_iters': 2,
                                          'start_iters': '6'})
    opt['train']['total_iter'] = 10
    model = build_model(opt)
    assert model.soft_target.start_iters == 6 and model.soft_target.ramp_iters == 4
    assert model.soft_target.alpha(6) == 0 and model.soft_target.alpha(8) == pytest.approx(0.4)
