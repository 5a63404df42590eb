"""The CLUB bound, the Laplace NLL and their reductions."""
from __future__ import annotations

import pytest
import torch

from ibsd.losses.ib_loss import IBCLUBLoss, LaplaceNLLLoss, mean_abs_deviation_across_batch

SHAPE = (6, 4, 5, 7)


def brute_force_mad(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (mu.unsqueeze(1) - y.unsqueeze(0)).abs().mean(dim=1)  # the [B, B, C, H, W] form


def test_memory_safe_deviation_equals_brute_force_with_gradients():
    mu = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    y = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(SHAPE, dtype=torch.float64)
    fast, slow = mean_abs_deviation_across_batch(mu, y), brute_force_mad(mu, y)
    assert torch.allclose(fast, slow)
    grads_fast = torch.autograd.grad((fast * weights).sum(), (mu, y))
    grads_slow = torch.autograd.grad((slow * weights).sum(), (mu, y))
    assert all(torch.allclose(a, b) for a, b in zip(grads_fast, grads_slow))


def test_full_bound_with_authors_reduction_matches_their_formula():
    mu, y, scale = torch.randn(SHAPE), torch.randn(SHAPE), torch.rand(SHAPE) + 0.1
    positive = -(mu - y).abs() / scale
    negative = -brute_force_mad(mu, y) / scale
    authors = (positive.sum(dim=-1) - negative.sum(dim=-1)).mean()
    assert torch.allclose(IBCLUBLoss(reduction='authors')(mu, scale, y), authors, atol=1e-5)


def test_reductions_are_related_by_element_counts():
    mu, y, scale = torch.randn(SHAPE), torch.randn(SHAPE), torch.rand(SHAPE) + 0.1
    mean = IBCLUBLoss(reduction='mean')(mu, scale, y)
    assert torch.allclose(IBCLUBLoss(reduction='sum')(mu, scale, y), mean * 4 * 5 * 7, rtol=1e-4)
    assert torch.allclose(IBCLUBLoss(reduction='authors')(mu, scale, y), mean * 7, rtol=1e-4)


def test_bound_is_larger_for_dependent_than_for_independent_features():
    torch.manual_seed(0)
    x = torch.randn(16, 8, 6, 6)
    scale = torch.full_like(x, 0.5)
    dependent = IBCLUBLoss()(x, scale, x + 0.05 * torch.randn_like(x))  # q's mean follows y
    independent = IBCLUBLoss()(x, scale, torch.randn_like(x))  # y unrelated to x
    assert dependent.item() > 1.0
    assert abs(independent.item()) < 0.2 < dependent.item()


def test_sampled_bound_estimates_the_full_one_and_uses_its_own_generator():
    torch.manual_seed(0)
    mu, y = torch.randn(64, 4, 8, 8), torch.randn(64, 4, 8, 8)
    y = 0.7 * mu + 0.3 * y
    scale = torch.full_like(mu, 0.5)
    full = IBCLUBLoss()(mu, scale, y)
    sampled = IBCLUBLoss(mode='sampled')
    sampled.generator = torch.Generator().manual_seed(1)
    first = sampled(mu, scale, y)
    state_before = torch.get_rng_state()
    sampled.generator = torch.Generator().manual_seed(1)
    assert torch.equal(sampled(mu, scale, y), first)
    assert torch.equal(torch.get_rng_state(), state_before)
    assert first.item() == pytest.approx(full.item(), rel=0.1)


def test_laplace_nll_is_exact():
    mu, y, scale = torch.randn(SHAPE), torch.randn(SHAPE), torch.rand(SHAPE) + 0.1
    expected = -torch.distributions.Laplace(mu, scale).log_prob(y).mean()
    assert torch.allclose(LaplaceNLLLoss()(mu, scale, y), expected, atol=1e-5)
    assert torch.allclose(LaplaceNLLLoss(reduction='sum')(mu, scale, y), expected * 4 * 5 * 7, rtol=1e-4)


@pytest.mark.parametrize('loss', [IBCLUBLoss(), IBCLUBLoss(mode='sampled'), LaplaceNLLLoss()])
def test_losses_are_scalars_with_gradients(loss):
    mu = torch.randn(SHAPE, requires_grad=True)
    scale = (torch.rand(SHAPE) + 0.1).requires_grad_()
    y = torch.randn(SHAPE, requires_grad=True)
    value = loss(mu, scale, y)
    assert value.dim() == 0
    value.backward()
    for tensor in (mu, scale, y):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


@pytest.mark.parametrize('factory, message', [
    (lambda: IBCLUBLoss(reduction='median'), 'reduction'), (lambda: IBCLUBLoss(mode='half'), 'mode'),
    (lambda: LaplaceNLLLoss(reduction='max'), 'reduction')])
def test_bad_options_are_named(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()
