"""An exact multi-level 2-D Haar DWT (orthonormal), the transform of IBSD's wavelet loss.

For each 2x2 block [[a, b], [c, d]] of every channel:

    LL = (a + b + c + d) / 2      LH = (a + b - c - d) / 2
    HL = (a - b + c - d) / 2      HH = (a - b - c + d) / 2

i.e. ``pywt``'s 'haar' filters, ``mode='zero'`` (an odd side gets one zero row/column at its end,
as ``pytorch_wavelets.DWTForward(wave='haar', mode='zero')`` does). Signs of the detail bands may
differ from other libraries' conventions; L1 distances between bands do not depend on them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PAD_MODES = {'zero': 'constant', 'reflect': 'reflect', 'periodization': 'circular'}


def haar_dwt_level(x: torch.Tensor, mode: str = 'zero') -> tuple[torch.Tensor, torch.Tensor]:
    """One level: returns LL [B, C, H', W'] and the detail bands [B, C, 3, H', W'] (LH, HL, HH)."""
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {tuple(PAD_MODES)}, got '{mode}'")
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=PAD_MODES[mode])
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    low = (a + b + c + d) / 2
    details = torch.stack(((a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2), dim=2)
    return low, details


def haar_dwt(x: torch.Tensor, levels: int, mode: str = 'zero') -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``levels``-level Haar DWT of [B, C, H, W]: the final LL and the detail bands, finest first."""
    details = []
    low = x
    for _ in range(levels):
        low, bands = haar_dwt_level(low, mode)
        details.append(bands)
    return low, details
