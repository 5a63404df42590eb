"""IBSD's high-frequency loss in the Haar wavelet domain."""
from __future__ import annotations

from typing import Sequence

import torch
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from ibsd.losses.haar_dwt import PAD_MODES, haar_dwt
from ibsd.losses.ib_loss import at_least_float32


@LOSS_REGISTRY.register()
class WaveletHFLoss(nn.Module):
    """L_wav = sum_j w_j * L1(H_j(pred), H_j(target)) over the LH/HL/HH bands of a Haar DWT.

    The low-pass band is ignored. Each level's L1 is the element mean over its three bands;
    with the defaults (4 levels, unit weights, zero padding) this is the authors' ``WKD_Loss``.
    The DWT is linear (zero, reflect and periodic padding included), so H_j(pred) - H_j(target)
    is computed as H_j(pred - target): one transform instead of two.

    Args:
        loss_weight: lambda_wav. Default: 1.0.
        levels: Number of DWT levels J. Default: 4.
        level_weights: One weight per level, finest first. Default: all 1.
        mode: Padding of odd sides: ``'zero'``, ``'reflect'`` or ``'periodization'``.
            Default: ``'zero'``.
    """

    def __init__(self, loss_weight: float = 1.0, levels: int = 4, level_weights: Sequence[float] | None = None,
                 mode: str = 'zero'):
        super().__init__()
        if levels < 1:
            raise ValueError(f'levels must be >= 1, got {levels}')
        level_weights = [1.0] * levels if level_weights is None else [float(w) for w in level_weights]
        if len(level_weights) != levels:
            raise ValueError(f'level_weights needs {levels} values (one per level), got {level_weights}')
        if mode not in PAD_MODES:
            raise ValueError(f"mode must be one of {tuple(PAD_MODES)}, got '{mode}'")
        self.loss_weight = loss_weight
        self.levels = levels
        self.level_weights = level_weights
        self.mode = mode

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _, difference_bands = haar_dwt(*at_least_float32(pred - target), self.levels, self.mode)
        loss = sum(w * bands.abs().mean() for w, bands in zip(self.level_weights, difference_bands))
        return self.loss_weight * loss
