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

Reductions (one for both losses): ``'mean'`` (default) averages over every element, so the weight
does not depend on patch size or width; ``'sum'`` sums over (C, H, W) and averages over the batch,
a per-sample bound in nats; ``'authors'`` sums over the last axis (W) and averages the rest, as the
authors' code does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

REDUCTIONS = ('mean', 'sum', 'authors')
CLUB_MODES = ('full', 'sampled')


def reduce_elements(values: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a [B, C, H, W] tensor of per-element terms (see the module docstring)."""
    if reduction == 'mean':
        return values.mean()
    if reduction == 'sum':
        return values.flatten(1).sum(dim=1).mean()
    if reduction == 'authors':
        return values.sum(dim=-1).mean()
    raise ValueError(f"reduction must be one of {REDUCTIONS}, got '{reduction}'")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got '{value}'")
    return value


def mean_abs_deviation_across_batch(mu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """out[i] = mean_j |mu[i] - y[j]| element-wise, in O(B * C*H*W) memory.

    For each position, sorting y over the batch and taking prefix sums S gives
    sum_j |m - y_j| = m (2k - B) - 2 S_k + S_B with k = #{j : y_j < m}. Gradients are exact:
    d/dm = #below - #above and d/dy_j = -sign(m - y_j).
    """
    batch = y.shape[0]
    sorted_y = y.flatten(1).t().sort(dim=1).values  # [N, B]
    prefix = F.pad(sorted_y.cumsum(dim=1), (1, 0))  # [N, B + 1]
    queries = mu.flatten(1).t().contiguous()  # [N, B]
    below = torch.searchsorted(sorted_y.detach().contiguous(), queries.detach())  # [N, B]
    total = queries * (2 * below - batch) - 2 * prefix.gather(1, below) + prefix[:, -1:]
    return (total / batch).t().reshape(mu.shape)


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

    def forward(self, mu: torch.Tensor, scale: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        positive = (mu - y).abs()
        if self.mode == 'full':
            negative = mean_abs_deviation_across_batch(mu, y)
        else:
            partners = torch.randperm(y.shape[0], generator=self.generator).to(y.device)
            negative = (mu - y[partners]).abs()
        return self.loss_weight * reduce_elements((negative - positive) / scale, self.reduction)


@LOSS_REGISTRY.register()
class LaplaceNLLLoss(nn.Module):
    """Negative log-likelihood of y under Laplace(mu, scale), the estimators' objective.

    Args:
        loss_weight: Weight. Default: 1.0.
        reduction: ``'mean'`` | ``'sum'`` | ``'authors'`` (authors: sum over the last axis).
            Default: ``'mean'``.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = 'mean'):
        super().__init__()
        self.loss_weight = loss_weight
        self.reduction = _check_choice('reduction', reduction, REDUCTIONS)

    def forward(self, mu: torch.Tensor, scale: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nll = torch.log(2 * scale) + (y - mu).abs() / scale
        return self.loss_weight * reduce_elements(nll, self.reduction)
