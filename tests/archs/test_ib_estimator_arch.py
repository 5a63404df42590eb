"""IBEstimator: its rearranged forward against a direct transcription of the authors' structure, what it learns,
its channel counts, and no Python loop over the batch (with the CLUB bound)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ibsd.archs.ib_estimator_arch import DEFAULT_SCALE_EPS, IBEstimator, LaplaceConditional
from ibsd.losses.ib_loss import IBCLUBLoss, LaplaceNLLLoss


def transcription(pair: LaplaceConditional, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mu = head(x) + sum_c GAP(conv(x))_c x_c and b = 0.1 softplus(...) + eps, as the authors compute them."""
    def dynamic(conv: torch.nn.Conv2d) -> torch.Tensor:
        kernels = F.conv2d(x, conv.weight, conv.bias).mean(dim=(2, 3), keepdim=True)
        return (kernels * x).sum(dim=1, keepdim=True)
    mu = pair.mean(x) + dynamic(pair.dynamic_mean.kernel)
    scale = F.softplus(pair.scale(x) + dynamic(pair.dynamic_scale.kernel)) * pair.scale_factor + pair.scale_eps
    return mu, scale


def test_rearranged_forward_equals_the_transcription_with_gradients():
    torch.manual_seed(0)
    estimator = IBEstimator([8, 6, 8], scale_eps=1e-6).double()
    for parameter in estimator.parameters():
        parameter.data.normal_(0, 0.5)  # PReLU slopes and biases away from their special initial values
    nodes = [torch.randn(3, c, 5, 7, dtype=torch.float64, requires_grad=True) for c in (8, 6, 8)]
    fast = estimator(nodes)
    slow = [transcription(pair, x) for pair, x in zip(estimator.pairs, nodes[1:])]
    weights = [torch.randn_like(t) for out in fast for t in out]
    inputs = nodes + list(estimator.parameters())

    def gradients(outputs):
        total = sum((w * t).sum() for w, t in zip(weights, [t for out in outputs for t in out]))
        return torch.autograd.grad(total, inputs, allow_unused=True)

    for (mu, scale), (mu_ref, scale_ref) in zip(fast, slow):
        assert torch.allclose(mu, mu_ref, rtol=1e-12, atol=1e-12)
        assert torch.allclose(scale, scale_ref, rtol=1e-12, atol=1e-15)
    for a, b in zip(gradients(fast), gradients(slow)):
        if b is None:
            assert a is None or not a.any()
        else:
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_softplus_stays_exact_for_large_arguments():
    pair = LaplaceConditional(2, 2, scale_eps=0.0)
    x = torch.full((1, 2, 1, 1), 1.0)
    with torch.no_grad():
        for head in pair.heads:
            head[2].bias.fill_(200.0)  # softplus(z) = z far above exp's float32 range
    _, scale = pair(x)
    _, reference = transcription(pair, x)
    assert torch.isfinite(scale).all() and torch.allclose(scale, reference)


def test_scale_floor_defaults_to_the_stable_value_and_keeps_the_authors_one_as_an_option():
    assert DEFAULT_SCALE_EPS == 1e-3
    assert all(pair.scale_eps == 1e-3 for pair in IBEstimator([4, 4, 4]).pairs)
    assert IBEstimator([4, 4], scale_eps=1e-6).pairs[0].scale_eps == 1e-6


def test_bf16_nodes_give_a_float32_scale():
    estimator = IBEstimator([4, 4]).bfloat16()
    (mu, scale), = estimator([torch.rand(2, 4, 3, 3).bfloat16() for _ in range(2)])
    assert mu.dtype == torch.bfloat16 and scale.dtype == torch.float32 and (scale >= 1e-3).all()


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
