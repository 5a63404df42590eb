"""Variational MI estimators q(f_{k-1} | f_k) for IBSD (one per adjacent pair of Markov-chain nodes).

Each pair gets a :class:`LaplaceConditional`: a Laplace distribution over the shallower node
``y = f_{k-1}`` given the deeper node ``x = f_k``, with

    mu(x) = head_mu(x) + d_mu(x),        b(x) = scale_factor * softplus(head_b(x) + d_b(x)) + scale_eps

where each head is 1x1 conv -> PReLU -> 1x1 conv, and d(x) is the per-sample dynamic term: a
kernel a(x) = GAP(1x1 conv(x)) in R^{B x C_x} applied as a 1x1 convolution with one output channel
to its own sample, d(x)_i = sum_c a(x)_{i,c} x_{i,c}, broadcast over the output channels. The
authors loop over the batch for it; here it is one vectorised weighted channel sum.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


def _head(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.PReLU(), nn.Conv2d(out_channels, out_channels, 1))


class DynamicChannelSum(nn.Module):
    """Per-sample 1x1 kernel from the input's pooled statistics: out_i = sum_c a(x)_{i,c} x_{i,c}."""

    def __init__(self, channels: int):
        super().__init__()
        self.kernel = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.kernel(x).mean(dim=(2, 3), keepdim=True)  # [B, C, 1, 1]
        return (weights * x).sum(dim=1, keepdim=True)  # [B, 1, H, W]


class LaplaceConditional(nn.Module):
    """q(y | x) = Laplace(mu(x), b(x)) for node tensors x [B, C_x, H, W] and y [B, C_y, H, W].

    Args:
        x_channels: Channels of the conditioning (deeper) node.
        y_channels: Channels of the predicted (shallower) node.
        scale_factor: Multiplier of the softplus scale (0.1 in the authors' code).
        scale_eps: Floor added to the scale (1e-6 in the authors' code).
    """

    def __init__(self, x_channels: int, y_channels: int, scale_factor: float = 0.1, scale_eps: float = 1e-6):
        super().__init__()
        self.mean = _head(x_channels, y_channels)
        self.scale = _head(x_channels, y_channels)
        self.dynamic_mean = DynamicChannelSum(x_channels)
        self.dynamic_scale = DynamicChannelSum(x_channels)
        self.scale_factor = scale_factor
        self.scale_eps = scale_eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu = self.mean(x) + self.dynamic_mean(x)
        scale = F.softplus(self.scale(x) + self.dynamic_scale(x)) * self.scale_factor + self.scale_eps
        return mu, scale


@ARCH_REGISTRY.register()
class IBEstimator(nn.Module):
    """The IBSD estimator network: one :class:`LaplaceConditional` per adjacent node pair.

    Used only during training; it never becomes part of the student.

    Args:
        channels: Channels of the nodes f_0 .. f_K, in chain order (filled in by ``IBSDModel``
            from the student's nodes when the YAML leaves it out). Widths may differ.
        scale_factor: Multiplier of the softplus scale. Default: 0.1.
        scale_eps: Floor of the scale. Default: 1e-6.
    """

    def __init__(self, channels: Sequence[int], scale_factor: float = 0.1, scale_eps: float = 1e-6):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f'IBEstimator needs at least 2 node channel counts, got {list(channels)}')
        self.channels = [int(c) for c in channels]
        self.pairs = nn.ModuleList(
            LaplaceConditional(x_ch, y_ch, scale_factor, scale_eps)
            for y_ch, x_ch in zip(self.channels[:-1], self.channels[1:]))

    def forward(self, nodes: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(mu_k, b_k) of q(f_{k-1} | f_k) for k = 1..K."""
        if len(nodes) != len(self.channels):
            raise ValueError(f'IBEstimator was built for {len(self.channels)} nodes, got {len(nodes)}')
        return [pair(x) for pair, x in zip(self.pairs, nodes[1:])]
