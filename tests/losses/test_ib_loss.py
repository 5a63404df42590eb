"""The CLUB bound, the Laplace NLL and their reductions."""
from __future__ import annotations

import pytest
import torch

from ibsd.losses.ib_loss import (BROADCAST_MAX_BATCH, CHUNK_ELEMENTS, IBCLUBLoss, LaplaceNLLLoss, mad_by_broadcast,
                                 mad_by_sorting, mean_abs_deviation_across_batch, reduce_elements)

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


def autograd_reference(loss: str, mu, scale, y, reduction: str) -> torch.Tensor:
    """The losses as the direct autograd composition of their formulas (the [B, B, ...] form)."""
    if loss == 'club':
        return reduce_elements((brute_force_mad(mu, y) - (mu - y).abs()) / scale, reduction)
    return reduce_elements(torch.log(2 * scale) + (y - mu).abs() / scale, reduction, authors_axis=1)


@pytest.mark.parametrize('reduction', ['mean', 'sum', 'authors'])
@pytest.mark.parametrize('loss', ['club', 'nll'])
def test_fused_losses_equal_the_autograd_formulas_with_gradients(loss, reduction):
    torch.manual_seed(1)
    inputs = [torch.randn(SHAPE, dtype=torch.float64, requires_grad=True),
              (torch.rand(SHAPE, dtype=torch.float64) + 0.1).requires_grad_(),
              torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)]
    module = IBCLUBLoss(reduction=reduction) if loss == 'club' else LaplaceNLLLoss(reduction=reduction)
    fused, reference = module(*inputs), autograd_reference(loss, *inputs, reduction)
    assert torch.allclose(fused, reference, rtol=1e-12)
    for a, b in zip(torch.autograd.grad(fused, inputs), torch.autograd.grad(reference, inputs)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize('kernel', [mad_by_broadcast, mad_by_sorting])
def test_both_deviation_kernels_equal_brute_force_with_gradients(kernel, monkeypatch):
    monkeypatch.setitem(CHUNK_ELEMENTS, 'cpu', 100)  # several chunks, one shorter than the others
    mu = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    y = torch.randn(SHAPE, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(SHAPE, dtype=torch.float64)
    assert torch.allclose(kernel(mu, y), brute_force_mad(mu, y))
    for a, b in zip(torch.autograd.grad((kernel(mu, y) * weights).sum(), (mu, y)),
                    torch.autograd.grad((brute_force_mad(mu, y) * weights).sum(), (mu, y))):
        assert torch.allclose(a, b)


def test_large_batches_take_the_sorting_kernel_and_agree():
    torch.manual_seed(0)
    mu, y = torch.randn(40, 2, 3, 3), torch.randn(40, 2, 3, 3)
    scale = torch.rand(40, 2, 3, 3) + 0.5
    assert mu.shape[0] > BROADCAST_MAX_BATCH
    expected = autograd_reference('club', mu.double(), scale.double(), y.double(), 'mean')
    assert IBCLUBLoss()(mu, scale, y).item() == pytest.approx(expected.item(), rel=1e-5)


def test_authors_estimator_reduction_sums_over_channels_as_their_learning_loss():
    """Their learning_loss: (log(2b) + |y - mu| / b).sum(dim=1).mean() (less their constant)."""
    mu, y, scale = torch.randn(SHAPE), torch.randn(SHAPE), torch.rand(SHAPE) + 0.1
    per_element = torch.log(2 * scale) + (y - mu).abs() / scale
    value = LaplaceNLLLoss(reduction='authors')(mu, scale, y)
    assert torch.allclose(value, per_element.sum(dim=1).mean())
    assert not torch.allclose(value, per_element.sum(dim=-1).mean())  # C = 4 differs from W = 7


def test_half_precision_inputs_are_computed_in_float32():
    mu, y, scale = torch.randn(SHAPE), torch.randn(SHAPE), torch.rand(SHAPE) + 0.1
    for loss in (IBCLUBLoss(), LaplaceNLLLoss()):
        low = loss(mu.bfloat16(), scale.bfloat16(), y.bfloat16())
        assert low.dtype == torch.float32
        exact = loss(mu.bfloat16().float(), scale.bfloat16().float(), y.bfloat16().float())
        assert torch.equal(low, exact)


@pytest.mark.parametrize('loss', [IBCLUBLoss(), LaplaceNLLLoss(), IBCLUBLoss(mode='sampled')])
def test_channels_last_inputs_give_the_same_loss_and_gradients(loss):
    torch.manual_seed(2)
    if getattr(loss, 'mode', None) == 'sampled':
        loss.generator = torch.Generator()
    tensors = [torch.randn(SHAPE, dtype=torch.float64), torch.rand(SHAPE, dtype=torch.float64) + 0.1,
               torch.randn(SHAPE, dtype=torch.float64)]
    results = []
    for memory_format in (torch.contiguous_format, torch.channels_last):
        if getattr(loss, 'generator', None) is not None:
            loss.generator.manual_seed(0)
        inputs = [t.clone(memory_format=memory_format).requires_grad_() for t in tensors]
        value = loss(inputs[0], inputs[1], inputs[2])
        value.backward(retain_graph=True)
        first = [t.grad.clone() for t in inputs]
        value.backward()  # a second backward through the retained graph gives the same gradients again
        assert all(torch.allclose(2 * a, t.grad) for a, t in zip(first, inputs))
        results.append((value, first))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-12)
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-14) for a, b in zip(results[0][1], results[1][1]))
