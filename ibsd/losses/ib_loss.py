"""IBSD's information-bottleneck losses with a Laplace variational distribution.

For one node pair, with y = f_{k-1}, x = f_k and the estimator's q(y | x) = Laplace(mu(x), b(x)),
element-wise (one element = one (c, h, w) position of one sample):

- Laplace negative log-likelihood (estimator objective, exact constant):
      nll_i = log(2 b_i) + |y_i - mu_i| / b_i
- CLUB upper bound of I(x; y) (Cheng et al., ICML 2020) with a Laplace q, minimised by the student:
      bound_i = log q(y_i | x_i) - mean_j log q(y_j | x_i)
              = -|mu_i - y_i| / b_i + mean_j |mu_i - y_j| / b_i      (log 2b cancels)
  ``mode='full'`` averages over every j in the batch (j = i included), ``'sampled'`` uses one
  random partner j = perm(i) per sample (vCLUB). The full form never builds the
  [B, B, C, H, W] tensor of the authors' code: see :func:`mean_abs_deviation_across_batch`.

Reductions (one option for both losses): ``'mean'`` (default) averages over every element, so the
weight does not depend on patch size or width; ``'sum'`` sums over (C, H, W) and averages over the
batch, a per-sample bound in nats; ``'authors'`` reproduces the authors' code, whose two losses
reduce differently: their bound sums over the last axis (W) and averages over (B, C, H), their
estimator loss sums over the channel axis (C) and averages over (B, H, W).

Both losses compute in float32 whatever the dtype of their inputs (bf16 autocast included).
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

REDUCTIONS = ('mean', 'sum', 'authors')
CLUB_MODES = ('full', 'sampled')


AUTHORS_BOUND_AXIS = -1  # the authors' IBNet.forward: .sum(dim=-1), i.e. over W
AUTHORS_NLL_AXIS = 1  # the authors' IBNet.learning_loss: .sum(dim=1), i.e. over C


def reduce_elements(values: torch.Tensor, reduction: str, authors_axis: int = AUTHORS_BOUND_AXIS) -> torch.Tensor:
    """Reduce a [B, C, H, W] tensor of per-element terms (see the module docstring).

    ``authors_axis`` is the axis the ``'authors'`` reduction sums over before averaging the rest.
    """
    return reduction_factor(values.shape, reduction, authors_axis) * values.sum()


def reduction_factor(shape: torch.Size, reduction: str, authors_axis: int = AUTHORS_BOUND_AXIS) -> float:
    """Every reduction is the plain sum times this constant (see :func:`reduce_elements`)."""
    count = shape.numel()
    if reduction == 'mean':
        return 1.0 / count
    if reduction == 'sum':
        return 1.0 / shape[0]
    if reduction == 'authors':
        return shape[authors_axis] / count
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got '{reduction}'")


def estimate_factor(shape: torch.Size, reduction: str, authors_axis: int = AUTHORS_BOUND_AXIS,
                    node_shape: Sequence[int] | None = None) -> float:
    """The reduction's factor for terms of ``shape`` [B, C, h, w]. With ``node_shape`` [B, C, H, W] the
    terms are a sample of h * w of the node's H * W positions (``train: ibsd: positions``): the factor
    is the whole node's, times H * W / (h * w), so that the reduced sum is an unbiased estimate of
    the whole node's reduced sum."""
    if node_shape is None:
        return reduction_factor(shape, reduction, authors_axis)
    node_shape = torch.Size(node_shape)
    if len(node_shape) != len(shape) or node_shape[:2] != shape[:2]:
        raise ValueError(f'sampled terms {tuple(shape)} do not come from a node of shape {tuple(node_shape)}')
    sampled = shape[2:].numel()
    return reduction_factor(node_shape, reduction, authors_axis) * node_shape[2:].numel() / sampled


def at_least_float32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Half-precision inputs (bf16 autocast) as float32; float32 and float64 as they are."""
    return tuple(t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in tensors)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got '{value}'")
    return value


def mean_abs_deviation_across_batch(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """out[i] = mean_j |mu[i] - y[j]| element-wise: the full-CLUB negative term, never [B, B, C, H, W].

    Two exact kernels, chosen by batch size: :func:`mad_by_broadcast` (O(B^2 N) work in chunks of
    positions, fastest for the batches SR training uses) and :func:`mad_by_sorting` (O(N B log B)).
    """
    if mu.shape != y.shape:
        raise ValueError(f'mu {tuple(mu.shape)} and y {tuple(y.shape)} must have one shape')
    if mu.shape[0] <= BROADCAST_MAX_BATCH:
        return mad_by_broadcast(mu, y)
    return mad_by_sorting(mu, y)


BROADCAST_MAX_BATCH = 32
CHUNK_ELEMENTS = {'cpu': 1 << 18, 'cuda': 1 << 26}  # elements of one [B, B, n] chunk: in cache on CPU


def _position_chunks(batch: int, positions: int, device: torch.device) -> Iterator[slice]:
    """Slices of the flattened (C, H, W) positions such that a [B, B, n] chunk fits the budget."""
    width = max(1, CHUNK_ELEMENTS.get(device.type, CHUNK_ELEMENTS['cuda']) // (batch * batch))
    for start in range(0, positions, width):
        yield slice(start, start + width)


def _broadcast_mad_values(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """mean_j |mu_i - y_j| (no gradient), chunk by chunk over positions."""
    batch = mu.shape[0]
    mu_flat, y_flat = mu.reshape(batch, -1), y.reshape(batch, -1)
    out = torch.empty_like(mu_flat)
    for cut in _position_chunks(batch, mu_flat.shape[1], mu.device):
        differences = mu_flat[:, None, cut] - y_flat[None, :, cut]
        torch.sum(differences.abs_(), dim=1, out=out[:, cut])
    return out.div_(batch).view_as(mu)


def _pairwise_sign_sums(mu: torch.Tensor, y: torch.Tensor, weights: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """sum_j sign(mu_i - y_j) and sum_i w_i sign(mu_i - y_j), shaped as mu and y, chunk by chunk."""
    batch = mu.shape[0]
    mu_flat, y_flat, w_flat = mu.reshape(batch, -1), y.reshape(batch, -1), weights.reshape(batch, -1)
    rank_mu, spread_y = torch.empty_like(mu_flat), torch.empty_like(y_flat)
    for cut in _position_chunks(batch, mu_flat.shape[1], mu.device):
        signs = (mu_flat[:, None, cut] - y_flat[None, :, cut]).sign_()
        torch.sum(signs, dim=1, out=rank_mu[:, cut])
        torch.sum(signs.mul_(w_flat[:, None, cut]), dim=0, out=spread_y[:, cut])
    return rank_mu.view_as(mu), spread_y.view_as(y)


class _BroadcastMAD(torch.autograd.Function):
    """mean_j |mu_i - y_j| with the closed-form gradients

    d/dmu_i = (1/B) sum_j sign(mu_i - y_j),   d/dy_j = -(1/B) sum_i g_i sign(mu_i - y_j),

    each evaluated chunk by chunk over positions (no [B, B, N] tensor, no saved intermediates).
    """

    @staticmethod
    def forward(ctx, mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(mu, y)
        return _broadcast_mad_values(mu, y)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        mu, y = ctx.saved_tensors
        weights = grad_out / mu.shape[0]
        rank_mu, spread_y = _pairwise_sign_sums(mu, y, weights)
        return rank_mu.mul_(weights), spread_y.neg_()


def mad_by_broadcast(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The negative term by pairwise differences, chunked over positions (see :class:`_BroadcastMAD`)."""
    return _BroadcastMAD.apply(mu, y)


def mad_by_sorting(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The negative term in O(B * C*H*W) memory, by sorting y over the batch at each position.

    With y sorted and prefix sums S, sum_j |m - y_j| = m (2k - B) - 2 S_k + S_B where
    k = #{j : y_j < m}. Gradients are exact: d/dm = #below - #above and d/dy_j = -sign(m - y_j).
    """
    batch = y.shape[0]
    sorted_y = y.flatten(1).t().sort(dim=1).values  # [N, B]
    prefix = F.pad(sorted_y.cumsum(dim=1), (1, 0))  # [N, B + 1]
    queries = mu.flatten(1).t().contiguous()  # [N, B]
    below = torch.searchsorted(sorted_y.detach().contiguous(), queries.detach())  # [N, B]
    total = queries * (2 * below - batch) - 2 * prefix.gather(1, below) + prefix[:, -1:]
    return (total / batch).t().reshape(mu.shape)


class _FullCLUBSum(torch.autograd.Function):
    """sum over elements of (mean_j |mu_i - y_j| - |mu_i - y_i|) / b_i, with hand-written gradients.

    The same function as composing :func:`mad_by_broadcast` with autograd, in a fraction of the
    temporaries (the per-element terms are a few elementwise passes over [B, C, H, W]):

        d/db_i  = -(neg_i - pos_i) / b_i^2,      w_i = 1 / b_i
        d/dmu_i = w_i ((1/B) sum_j sign(mu_i - y_j) - sign(mu_i - y_i))
        d/dy_j  = -(1/B) sum_i w_i sign(mu_i - y_j) + w_j sign(mu_j - y_j)
    """

    @staticmethod
    def forward(ctx, mu: torch.Tensor, scale: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        difference = mu - y
        negative = _broadcast_mad_values(mu, y)
        gap = negative.sub_(difference.abs())  # neg - pos
        ctx.save_for_backward(mu, scale, y, difference, gap)
        return (gap / scale).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        mu, scale, y, difference, gap = ctx.saved_tensors
        weights = grad_out / scale
        batch = mu.shape[0]
        rank_mu, spread_y = _pairwise_sign_sums(mu, y, weights)
        own = difference.sign().mul_(weights)  # w_i sign(mu_i - y_i)
        grad_mu = rank_mu.mul_(weights).div_(batch).sub_(own)
        grad_y = spread_y.div_(-batch).add_(own)
        grad_scale = gap.div(scale).mul_(weights).neg_()
        return grad_mu, grad_scale, grad_y


class _LaplaceNLLSum(torch.autograd.Function):
    """sum over elements of log(2 b) + |y - mu| / b, with hand-written gradients

    d/dy = sign(y - mu) / b = -d/dmu,    d/db = (1 - |y - mu| / b) / b.
    """

    @staticmethod
    def forward(ctx, mu: torch.Tensor, scale: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        residual = y - mu
        ratio = residual.abs().div_(scale)
        ctx.save_for_backward(scale, residual, ratio)
        return ratio.sum() + torch.log(2 * scale).sum()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        scale, residual, ratio = ctx.saved_tensors
        weights = grad_out / scale
        grad_y = residual.sign().mul_(weights)
        grad_scale = torch.sub(1, ratio).mul_(weights)
        return -grad_y if ctx.needs_input_grad[0] else None, grad_scale, grad_y


@LOSS_REGISTRY.register()
class IBCLUBLoss(nn.Module):
    """CLUB upper bound of I(f_k; f_{k-1}) with a Laplace q, the student's IB compression term.

    Args:
        loss_weight: lambda_MI. Default: 1.0.
        reduction: ``'mean'`` | ``'sum'`` | ``'authors'``. Default: ``'mean'``.
        mode: ``'full'`` (all pairs across the batch) or ``'sampled'`` (one random partner).
            Default: ``'full'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean', mode: str = 'full'):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = _check_choice('reduction', reduction, REDUCTIONS)
        self.mode = _check_choice('mode', mode, CLUB_MODES)
        self.generator: torch.Generator | None = None  # the sampled mode's own random stream, if set

    def forward(self, mu: torch.Tensor, scale: torch.Tensor, y: torch.Tensor,
                node_shape: Sequence[int] | None = None) -> torch.Tensor:
        """The weighted bound; ``node_shape``: the whole node's shape when the inputs hold a sample of
        its positions (see :func:`estimate_factor`)."""
        mu, scale, y = at_least_float32(mu, scale, y)
        factor = estimate_factor(torch.broadcast_shapes(mu.shape, scale.shape, y.shape), self.reduction,
                                 node_shape=node_shape)
        if self.mode == 'full' and mu.shape[0] <= BROADCAST_MAX_BATCH and mu.shape == y.shape == scale.shape:
            return self.loss_weight * factor * _FullCLUBSum.apply(mu, scale, y)
        positive = (mu - y).abs()
        if self.mode == 'full':
            negative = mean_abs_deviation_across_batch(mu, y)
        else:
            partners = torch.randperm(y.shape[0], generator=self.generator).to(y.device)
            negative = (mu - y[partners]).abs()
        return self.loss_weight * (factor * ((negative - positive) / scale).sum())


@LOSS_REGISTRY.register()
class LaplaceNLLLoss(nn.Module):
    """Negative log-likelihood of y under Laplace(mu, scale), the estimators' objective.

    Args:
        loss_weight: Weight. Default: 1.0.
        reduction: ``'mean'`` | ``'sum'`` | ``'authors'`` (authors: sum over the channel axis, as
            their ``learning_loss``). Default: ``'mean'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = _check_choice('reduction', reduction, REDUCTIONS)

    def forward(self, mu: torch.Tensor, scale: torch.Tensor, y: torch.Tensor,
                node_shape: Sequence[int] | None = None) -> torch.Tensor:
        """The weighted NLL; ``node_shape``: the whole node's shape when the inputs hold a sample of its
        positions (see :func:`estimate_factor`)."""
        mu, scale, y = at_least_float32(mu, scale, y)
        if not mu.shape == y.shape == scale.shape:
            raise ValueError(f'mu {tuple(mu.shape)}, scale {tuple(scale.shape)} and y {tuple(y.shape)} must have '
                             'one shape')
        factor = estimate_factor(mu.shape, self.reduction, AUTHORS_NLL_AXIS, node_shape)
        return self.loss_weight * factor * _LaplaceNLLSum.apply(mu, scale, y)
