"""Tiled inference: upscale a large LR image tile by tile with bounded memory, without seams.

The LR image is cut into a grid of core tiles of at most ``tile_size`` pixels. Each tile is run
with ``tile_pad`` pixels of real context on every side (clipped at the image border), and its
output is blended into the result with a weight that is 0 within ``tile_pad // 2`` of an inner
tile edge, rises linearly over the rest of the pad, and is 1 on the core. For a network whose
receptive field (in LR pixels, radius) is at most ``tile_pad // 2`` every blended pixel is
exact, so the result equals whole-image inference; for networks with global operations (channel
attention pooled over the whole image) the linear cross-fade hides the seams.
Peak memory is that of one padded tile plus the output accumulators.
"""
from __future__ import annotations

from typing import Callable

import torch


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    count = max(1, -(-length // tile))
    bounds = [round(i * length / count) for i in range(count + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _ramp(size: int, cut_start: bool, cut_end: bool, zero: int, rise: int, dtype, device) -> torch.Tensor:
    """1-D weight: 0 for ``zero`` px, linear over ``rise`` px, then 1; at the cut sides only."""
    weight = torch.ones(size, dtype=dtype, device=device)
    ramp = torch.cat([torch.zeros(zero), torch.arange(1, rise + 1) / (rise + 1)]).to(dtype=dtype, device=device)
    ramp = ramp[:size]
    if cut_start:
        weight[:ramp.numel()] = torch.minimum(weight[:ramp.numel()], ramp)
    if cut_end:
        weight[size - ramp.numel():] = torch.minimum(weight[size - ramp.numel():], ramp.flip(0))
    return weight


@torch.no_grad()
def tiled_forward(net: Callable[[torch.Tensor], torch.Tensor], lq: torch.Tensor, tile_size: int,
                  tile_pad: int = 16) -> torch.Tensor:
    """``net(lq)`` computed tile by tile (see the module docstring).

    Args:
        net: Maps [B, C, h, w] to [B, C', h * s, w * s] for an integer scale s (read from the
            first tile; 1 for same-size restoration).
        lq: The LR batch [B, C, H, W].
        tile_size: Largest core tile side, in LR pixels.
        tile_pad: Context around each tile, in LR pixels.
    """
    if tile_size < 1 or tile_pad < 0:
        raise ValueError(f'tile: tile_size must be >= 1 and tile_pad >= 0, got {tile_size} and {tile_pad}')
    _, _, height, width = lq.shape
    output = weights = None
    for top, bottom in _spans(height, tile_size):
        for left, right in _spans(width, tile_size):
            y0, y1 = max(0, top - tile_pad), min(height, bottom + tile_pad)
            x0, x1 = max(0, left - tile_pad), min(width, right + tile_pad)
            out = net(lq[:, :, y0:y1, x0:x1])
            if output is None:
                scale = out.shape[2] // (y1 - y0)
                zero, rise = (tile_pad // 2) * scale, (tile_pad - tile_pad // 2) * scale
                output = lq.new_zeros(lq.shape[0], out.shape[1], height * scale, width * scale, dtype=out.dtype)
                weights = lq.new_zeros(1, 1, height * scale, width * scale, dtype=out.dtype)
            wy = _ramp(out.shape[2], y0 > 0, y1 < height, zero, rise, out.dtype, out.device)
            wx = _ramp(out.shape[3], x0 > 0, x1 < width, zero, rise, out.dtype, out.device)
            weight = wy[:, None] * wx[None, :]
            output[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += out * weight
            weights[:, :, y0 * scale:y1 * scale, x0 * scale:x1 * scale] += weight
    return output / weights
