"""``train: ibsd: positions``: the IB terms on a random subset of positions, unbiased and resumable."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from basicsr.models import build_model

from ibsd.archs.ib_estimator_arch import IBEstimator, LaplaceConditional
from ibsd.losses.ib_loss import REDUCTIONS, IBCLUBLoss, LaplaceNLLLoss
from ibsd.errors import OptionError
from ibsd.models.position_sampling import PositionSampler, sample_size, select_positions
from tests.helpers import cpu_bf16, feed, make_opt

LOSSES = {'bound': lambda reduction: IBCLUBLoss(reduction=reduction),
          'sampled bound': lambda reduction: IBCLUBLoss(reduction=reduction, mode='sampled'),
          'nll': lambda reduction: LaplaceNLLLoss(reduction=reduction)}


def random_terms(seed: int = 0, shape=(4, 3, 5, 6)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    mu, y = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    scale = 0.2 + torch.rand(shape, generator=generator)
    return mu, scale, y


def test_sample_sizes_round_up_and_keep_at_least_one_position():
    assert [sample_size(100, p) for p in (1, 0.5, 0.25, 0.125, 0.001)] == [100, 50, 25, 13, 1]
    assert sample_size(2304, 0.25) == 576


@pytest.mark.parametrize('loss', sorted(LOSSES))
@pytest.mark.parametrize('reduction', REDUCTIONS)
@pytest.mark.parametrize('batch', [4, 33])  # 33: above BROADCAST_MAX_BATCH, the bound's sorting kernel
def test_single_positions_average_exactly_to_the_full_loss_and_gradients(loss, reduction, batch):
    """With one position per draw every subset can be enumerated: their mean is the expectation."""
    criterion = LOSSES[loss](reduction)
    criterion.generator = torch.Generator()  # the sampled bound's partners: the same draw in every call

    def evaluate(*tensors, **kwargs):
        criterion.generator.manual_seed(5)
        return criterion(*tensors, **kwargs)

    mu, scale, y = (t.double().requires_grad_() for t in random_terms(shape=(batch, 3, 5, 6)))
    full = evaluate(mu, scale, y)
    full_grads = torch.autograd.grad(full, (mu, scale, y))
    positions = mu.shape[2] * mu.shape[3]
    total, grads = 0, [torch.zeros_like(t) for t in (mu, scale, y)]
    for s in range(positions):
        where = torch.tensor([s])
        value = evaluate(*(select_positions(t, where) for t in (mu, scale, y)), node_shape=mu.shape)
        total = total + value.detach()
        for accumulated, grad in zip(grads, torch.autograd.grad(value, (mu, scale, y))):
            accumulated += grad
    assert (total / positions).item() == pytest.approx(full.item(), rel=1e-12)
    for mean, exact in zip(grads, full_grads):
        torch.testing.assert_close(mean / positions, exact, rtol=1e-10, atol=1e-14)
    if reduction == 'sum':  # a sample reduced as if it were the whole node is off by H * W / n
        unscaled = sum(evaluate(*(select_positions(t, torch.tensor([s])) for t in (mu, scale, y))).item()
                       for s in range(positions)) / positions
        assert unscaled * positions == pytest.approx(full.item(), rel=1e-9)


def test_node_shape_must_be_the_nodes_own():
    mu, scale, y = random_terms()
    sample = [select_positions(t, torch.tensor([0, 3])) for t in (mu, scale, y)]
    with pytest.raises(ValueError, match='do not come from a node of shape'):
        LaplaceNLLLoss()(*sample, node_shape=(2, 3, 5, 6))


@pytest.mark.parametrize('channels_last', [False, True])
def test_estimator_at_positions_equals_the_full_prediction_there(channels_last):
    torch.manual_seed(0)
    pair = LaplaceConditional(8, 6)
    x = torch.randn(3, 8, 7, 5)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    where = torch.tensor([0, 4, 9, 17, 34])
    mu, scale = pair(x)
    mu_s, scale_s = pair(x, where)
    assert mu_s.shape == scale_s.shape == (3, 6, 1, 5)
    torch.testing.assert_close(mu_s, select_positions(mu, where), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(scale_s, select_positions(scale, where), rtol=1e-5, atol=1e-6)
    everywhere = pair(x, torch.arange(35))  # the sampling path over every position: the same numbers
    torch.testing.assert_close(everywhere[0].view_as(mu), mu, rtol=1e-6, atol=1e-7)


def test_estimator_takes_one_position_set_per_pair():
    estimator = IBEstimator([4, 4, 4])
    nodes = [torch.randn(2, 4, 3, 3) for _ in range(3)]
    with pytest.raises(ValueError, match='2 node pairs, got 1 position sets'):
        estimator(nodes, [torch.tensor([0])])


def sampled_model(tmp_path: Path, positions: float, **train):
    opt = make_opt(tmp_path, ibsd={'positions': positions}, **train)
    return build_model(opt)


def node_tensors(model, batch: int = 4, size: int = 8) -> list[torch.Tensor]:
    feed(model, batch=batch, size=size)
    with torch.no_grad(), model.node_recorder.record():
        model.net_g(model.lq)
    return [node.detach() for node in model.node_recorder.collect()]


def test_sampled_bound_and_nll_estimate_the_exact_ones_without_bias(tmp_path):
    """Mean over 600 draws of p = 0.25 within 4 standard errors of the exact value and node gradients."""
    torch.manual_seed(0)
    model = sampled_model(tmp_path, 0.25)
    nodes = node_tensors(model)

    def bound_and_grads():
        leaves = [node.clone().requires_grad_() for node in nodes]
        value = model._mi_bound(leaves)
        return value.detach(), torch.cat([g.flatten() for g in torch.autograd.grad(value, leaves[1:])])

    def nll():
        return model._estimator_terms(model.net_est, model.cri_est, nodes).detach()

    exact_sampler, model.position_sampler = model.position_sampler, PositionSampler(1.0, 0)
    exact_bound, exact_grads = bound_and_grads()
    exact_nll = nll()
    model.position_sampler = exact_sampler
    draws = [bound_and_grads() for _ in range(600)]
    nll_draws = torch.stack([nll() for _ in range(600)])
    for samples, exact in ((torch.stack([d[0] for d in draws]), exact_bound), (nll_draws, exact_nll)):
        error = 4 * samples.std() / len(samples) ** 0.5
        assert samples.std() > 0  # the draws differ: sampling is on
        assert abs(samples.mean() - exact) < error, (samples.mean(), exact, error)
    grads = torch.stack([d[1] for d in draws])
    error = 4 * grads.std(dim=0) / len(draws) ** 0.5 + 1e-9
    inside = ((grads.mean(dim=0) - exact_grads).abs() <= error).float().mean()
    assert inside > 0.99, inside  # 4-sigma bands: nearly every coordinate of the gradient inside
    relative = (grads.mean(dim=0) - exact_grads).norm() / exact_grads.norm()
    assert relative < 0.1, relative


def test_exact_setting_draws_nothing_and_sampling_draws_fresh_subsets(tmp_path):
    exact = sampled_model(tmp_path / 'exact', 1)
    assert exact.position_sampler.exact and exact._draw_positions(node_tensors(exact)) is None
    state = exact.position_sampler.generator.get_state()
    feed(exact)
    exact.optimize_parameters(1)
    assert torch.equal(exact.position_sampler.generator.get_state(), state)
    model = sampled_model(tmp_path / 'half', 0.5)
    nodes = node_tensors(model, size=8)
    first, second = model._draw_positions(nodes), model._draw_positions(nodes)
    assert [len(w) for w in first] == [32] * (len(nodes) - 1)
    assert all(torch.equal(w, w.sort().values) and len(set(w.tolist())) == 32 for w in first)
    assert not all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize('network', [
    {'type': 'IMDN', 'num_feat': 16, 'num_block': 6, 'upscale': 2},
    {'type': 'RFDN', 'num_feat': 16, 'num_block': 6, 'upscale': 2},
    {'type': 'OmniSR', 'num_feat': 16, 'res_num': 2, 'block_num': 1, 'window_size': 8, 'upsampling': 2},
    {'type': 'HGSR_MHR', 'nf': 8, 'n_HG': 6, 'n_mid': 1, 'n_tail': 1, 'upscale': 2}])
def test_every_built_in_student_trains_with_sampled_positions(tmp_path, network, one_thread):
    model = build_model(make_opt(tmp_path, network, ibsd={'positions': 0.25}))
    before = [p.detach().clone() for p in model.net_est.parameters()]
    for step in (1, 2):
        feed(model, batch=2, size=16, seed=step)
        model.optimize_parameters(step)
    log = model.get_current_log()
    assert all(torch.isfinite(torch.tensor(log[k])) for k in ('l_est', 'l_mi', 'l_pix')), log
    assert any(not torch.equal(a, b) for a, b in zip(before, model.net_est.parameters()))


def test_channels_last_student_inputs_give_the_same_sampled_terms(tmp_path):
    model = sampled_model(tmp_path, 0.5)
    nodes = node_tensors(model)
    last = [node.contiguous(memory_format=torch.channels_last) for node in nodes]
    values = []
    for tensors in (nodes, last):
        model.position_sampler.generator.manual_seed(3)
        values.append((model._mi_bound(tensors).item(),
                       model._estimator_terms(model.net_est, model.cri_est, tensors).item()))
    assert values[1] == pytest.approx(values[0], rel=1e-5)


def test_bf16_autocast_keeps_the_sampled_losses_float32_and_close(tmp_path):
    plain, mixed = sampled_model(tmp_path, 0.5), sampled_model(tmp_path, 0.5)
    mixed.net_g.load_state_dict(plain.net_g.state_dict())
    mixed.net_est.load_state_dict(plain.net_est.state_dict())
    cpu_bf16(mixed)
    dtypes = set()
    mixed.cri_mi.register_forward_hook(lambda m, args, out: dtypes.add((args[0].dtype, out.dtype)))
    logs = []
    for model in (plain, mixed):
        feed(model, batch=4, size=16)
        model.optimize_parameters(1)
        logs.append(model.get_current_log())
    assert dtypes == {(torch.bfloat16, torch.float32)}
    assert logs[1]['l_est'] == pytest.approx(logs[0]['l_est'], rel=0.05)
    assert abs(logs[1]['l_mi'] - logs[0]['l_mi']) < 0.05 * abs(logs[0]['l_est'])


def test_resume_with_sampled_positions_is_bit_exact(tmp_path):
    """4 iterations straight equal 2, a saved state, a fresh model resumed from it, and 2 more."""
    def train(model, steps):
        for step in steps:
            feed(model, seed=step)
            model.optimize_parameters(step)

    torch.manual_seed(0)
    straight = sampled_model(tmp_path / 'straight', 0.25)
    train(straight, range(1, 5))
    torch.manual_seed(0)  # the same initial weights
    first = sampled_model(tmp_path / 'halves', 0.25)
    train(first, range(1, 3))
    (tmp_path / 'halves' / 'states').mkdir(parents=True)
    first.save_training_state(0, 2)
    state = torch.load(tmp_path / 'halves' / 'states' / '2.state', weights_only=False)
    assert 'positions' in state['ibsd']['random'][0]
    torch.manual_seed(123)  # a fresh process's streams
    resumed = sampled_model(tmp_path / 'resumed', 0.25)
    resumed.net_g.load_state_dict(first.net_g.state_dict())
    resumed.soft_target.load_state_dict(first.soft_target.state_dict())
    resumed.resume_training(state)
    train(resumed, range(3, 5))
    for a, b in ((straight.net_g, resumed.net_g), (straight.net_est, resumed.net_est)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    without = sampled_model(tmp_path / 'without', 0.25)  # the check can fail: without the stream it differs
    without.net_g.load_state_dict(first.net_g.state_dict())
    without.soft_target.load_state_dict(first.soft_target.state_dict())
    state['ibsd']['random'][0].pop('positions')
    without.resume_training(state)
    train(without, range(3, 5))
    assert not all(torch.equal(x, y) for x, y in zip(straight.net_g.state_dict().values(),
                                                       without.net_g.state_dict().values()))


def test_ranks_draw_their_own_subsets(tmp_path):
    opt = make_opt(tmp_path, ibsd={'positions': 0.5})
    subsets = []
    for rank in (0, 1):
        model = build_model({**opt, 'rank': rank})
        subsets.append(model.position_sampler.draw(8, 8, torch.device('cpu')))
    assert not torch.equal(*subsets)


@pytest.mark.parametrize('value, message', [(0, r'in \(0, 1\]'), (1.5, r'in \(0, 1\]'), ('half', 'expected a number'),
                                            ('2.5e-1', None)])
def test_positions_option_is_checked(tmp_path, value, message):
    opt = make_opt(tmp_path, ibsd={'positions': value})
    if message is None:  # a number written as a string (PyYAML reads 1e-1 so)
        assert build_model(opt).position_sampler.fraction == 0.25
        return
    with pytest.raises(OptionError, match=f'train:ibsd:positions.*{message}'):
        build_model(opt)


def test_custom_losses_that_cannot_take_a_sample_are_refused(tmp_path, monkeypatch):
    from basicsr.utils.registry import LOSS_REGISTRY

    class WholeNodeNLL(LaplaceNLLLoss):
        def forward(self, mu, scale, y):  # no node_shape: it would average a sample as a whole node
            return super().forward(mu, scale, y)

    monkeypatch.setitem(LOSS_REGISTRY._obj_map, 'WholeNodeNLL', WholeNodeNLL)
    opt = make_opt(tmp_path, ibsd={'positions': 0.5}, est_opt={'type': 'WholeNodeNLL'})
    with pytest.raises(OptionError, match="train:ibsd:positions 0.5 needs train:est_opt to take a 'node_shape'"):
        build_model(opt)
    opt['train']['ibsd']['positions'] = 1
    build_model(opt)  # exact: nothing is sampled, any loss will do


class OnAnotherDevice:
    """Stands in for a tensor that a training state loaded onto a GPU: only its CPU copy is a tensor."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor

    def cpu(self) -> torch.Tensor:
        return self.tensor


def test_generator_states_loaded_onto_a_gpu_are_moved_back_before_use(tmp_path):
    """BasicSR loads a training state onto the GPU when there is one; torch generators take CPU states only."""
    model = sampled_model(tmp_path, 0.5)
    feed(model)
    model.optimize_parameters(1)
    (tmp_path / 'states').mkdir()
    model.save_training_state(0, 1)
    state = torch.load(tmp_path / 'states' / '1.state', weights_only=False)
    expected = state['ibsd']['random'][0]['positions']['generator'].clone()
    state['ibsd']['random'][0]['positions']['generator'] = OnAnotherDevice(expected)
    state['ibsd']['mi_generator'] = OnAnotherDevice(state['ibsd']['mi_generator'])
    resumed = sampled_model(tmp_path / 'resumed', 0.5)
    resumed.resume_training(state)
    assert torch.equal(resumed.position_sampler.generator.get_state(), expected)
