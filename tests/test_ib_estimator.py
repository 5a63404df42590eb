"""IBEstimator: its rearranged forward against a direct transcription of the authors' structure."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ibsd.archs.ib_estimator_arch import DEFAULT_SCALE_EPS, IBEstimator, LaplaceConditional


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
