"""Variational MI estimators q(f_{k-1} | f_k) for IBSD (one per adjacent pair of Markov-chain nodes).

Each pair gets a :class:`LaplaceConditional`: a Laplace distribution over the shallower node
``y = f_{k-1}`` given the deeper node ``x = f_k``, with

    mu(x) = head_mu(x) + d_mu(x),        b(x) = scale_factor * softplus(head_b(x) + d_b(x)) + scale_eps

where each head is 1x1 conv -> PReLU -> 1x1 conv, and d(x) is the per-sample dynamic term: a
kernel a(x) = GAP(1x1 conv(x)) in R^{B x C_x} applied as a 1x1 convolution with one output channel
to its own sample, d(x)_i = sum_c a(x)_{i,c} x_{i,c}, broadcast over the output channels. The
authors loop over the batch for it; here it is one batched matrix product.

The computation is rearranged for speed without changing the function (or the parameters, whose
names and shapes are the authors' module structure):
- a 1x1 convolution commutes with global average pooling, so a(x) = conv(GAP(x)) costs B x C_x
  instead of B x C_x x H x W;
- both heads' first convolutions run as one matrix product, their second ones as one batched
  product, and both dynamic terms as one;
- softplus is evaluated as relu(z) + log(1 + exp(-|z|)) in float32 (the same function; PyTorch's
  CPU softplus is several times slower).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

DEFAULT_SCALE_EPS = 1e-3
"""Floor of the Laplace scale. The authors' 1e-6 lets the bound's 1/b terms explode (see
docs/method.md, "Stability"); ``scale_eps: 1.0e-6`` reproduces it."""


def _head(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1), nn.PReLU(), nn.Conv2d(out_channels, out_channels, 1))


def softplus(z: torch.Tensor) -> torch.Tensor:
    """log(1 + exp(z)); on CPU from elementwise ops several times faster than ``F.softplus`` there
    (the same function up to float rounding: below z = -17, log(1 + exp(z)) rounds to 0)."""
    if z.device.type != 'cpu':
        return F.softplus(z)  # one fused kernel on accelerators
    return F.relu(z) + torch.log(1 + torch.exp(-z.abs()))


class DynamicChannelSum(nn.Module):
    """Per-sample 1x1 kernel from the input's pooled statistics: out_i = sum_c a(x)_{i,c} x_{i,c}."""

    def __init__(self, channels: int):
        super().__init__()
        self.kernel = nn.Conv2d(channels, channels, 1)

    def kernels(self, pooled: torch.Tensor) -> torch.Tensor:
        """a(x) [B, C] from GAP(x) [B, C]: GAP(conv(x)) = conv(GAP(x)) for a 1x1 convolution."""
        return F.linear(pooled, self.kernel.weight.flatten(1), self.kernel.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.kernels(x.mean(dim=(2, 3)))  # [B, C]
        return torch.bmm(weights.unsqueeze(1), x.flatten(2)).view(x.shape[0], 1, *x.shape[2:])  # [B, 1, H, W]


class LaplaceConditional(nn.Module):
    """q(y | x) = Laplace(mu(x), b(x)) for node tensors x [B, C_x, H, W] and y [B, C_y, H, W].

    Args:
        x_channels: Channels of the conditioning (deeper) node.
        y_channels: Channels of the predicted (shallower) node.
        scale_factor: Multiplier of the softplus scale (0.1 in the authors' code).
        scale_eps: Floor added to the scale (1e-6 in the authors' code). Default: 1e-3.
    """

    def __init__(self, x_channels: int, y_channels: int, scale_factor: float = 0.1,
                 scale_eps: float = DEFAULT_SCALE_EPS):
        super().__init__()
        self.mean = _head(x_channels, y_channels)
        self.scale = _head(x_channels, y_channels)
        self.dynamic_mean = DynamicChannelSum(x_channels)
        self.dynamic_scale = DynamicChannelSum(x_channels)
        self.y_channels = y_channels
        self.scale_factor = scale_factor
        self.scale_eps = scale_eps

    def forward(self, x: torch.Tensor, positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, b) [B, C_y, H, W]; b in float32 at least, whatever the input dtype (autocast included).

        With ``positions`` (flat indices into the H x W map) only those positions are predicted,
        as [B, C_y, 1, n]; the dynamic term's kernels still pool the whole map.
        """
        batch, _, height, width = x.shape
        whole = x.flatten(2)  # [B, C_x, HW]
        flat = whole
        if positions is not None:
            flat = whole.index_select(2, positions)  # [B, C_x, n]
            height, width = 1, positions.numel()
        hidden = torch.matmul(self._stacked('weight', 0).flatten(1), flat)  # [B, 2 C_y, HW]
        dtype = hidden.dtype  # the input's, or autocast's: parameters follow it, so nothing is promoted
        hidden = hidden + self._stacked('bias', 0).to(dtype)[:, None]
        slopes = torch.cat([head[1].weight.expand(head[0].out_channels) for head in self.heads])
        hidden = F.prelu(hidden, slopes.to(dtype))
        second = self._stacked('weight', 2).view(2, self.y_channels, self.y_channels)
        heads = torch.matmul(second, hidden.view(batch, 2, self.y_channels, -1))  # [B, 2, C_y, HW]
        pooled = whole.mean(dim=2)
        kernels = torch.stack([dynamic.kernels(pooled) for dynamic in self.dynamics], dim=1)  # [B, 2, C_x]
        dynamic = torch.bmm(kernels.to(flat.dtype), flat).unsqueeze(2)  # [B, 2, 1, HW]
        out = heads + (self._stacked('bias', 2).view(1, 2, self.y_channels, 1) + dynamic).to(heads.dtype)
        mu = out[:, 0].view(batch, self.y_channels, height, width)
        pre_scale = out[:, 1]
        pre_scale = pre_scale.to(torch.promote_types(pre_scale.dtype, torch.float32))
        scale = softplus(pre_scale) * self.scale_factor + self.scale_eps
        return mu, scale.view(batch, self.y_channels, height, width)

    @property
    def heads(self) -> tuple[nn.Sequential, nn.Sequential]:
        return self.mean, self.scale

    @property
    def dynamics(self) -> tuple[DynamicChannelSum, DynamicChannelSum]:
        return self.dynamic_mean, self.dynamic_scale

    def _stacked(self, name: str, layer: int) -> torch.Tensor:
        """The mean head's and the scale head's ``layer`` parameter ``name``, concatenated."""
        return torch.cat([getattr(head[layer], name) for head in self.heads])


@ARCH_REGISTRY.register()
class IBEstimator(nn.Module):
    """The IBSD estimator network: one :class:`LaplaceConditional` per adjacent node pair.

    Used only during training; it never becomes part of the student.

    Args:
        channels: Channels of the nodes f_0 .. f_K, in chain order (filled in by ``IBSDModel``
            from the student's nodes when the YAML leaves it out). Widths may differ.
        scale_factor: Multiplier of the softplus scale. Default: 0.1.
        scale_eps: Floor of the scale. Default: 1e-3 (the authors' code: 1e-6, which can diverge).
    """

    def __init__(self, channels: Sequence[int], scale_factor: float = 0.1, scale_eps: float = DEFAULT_SCALE_EPS):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f'IBEstimator needs at least 2 node channel counts, got {list(channels)}')
        self.channels = [int(c) for c in channels]
        self.pairs = nn.ModuleList(
            LaplaceConditional(x_ch, y_ch, scale_factor, scale_eps)
            for y_ch, x_ch in zip(self.channels[:-1], self.channels[1:]))

    def forward(self, nodes: Sequence[torch.Tensor], positions: Sequence[torch.Tensor | None] | None = None
                ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(mu_k, b_k) of q(f_{k-1} | f_k) for k = 1..K; ``positions[k-1]``, when given, restricts pair k
        to those flat positions (see :meth:`LaplaceConditional.forward`)."""
        if len(nodes) != len(self.channels):
            raise ValueError(f'IBEstimator was built for {len(self.channels)} nodes, got {len(nodes)}')
        positions = [None] * len(self.pairs) if positions is None else list(positions)
        if len(positions) != len(self.pairs):
            raise ValueError(f'IBEstimator has {len(self.pairs)} node pairs, got {len(positions)} position sets')
        return [pair(x, where) for pair, x, where in zip(self.pairs, nodes[1:], positions)]
