"""The input sizes a network takes, one rule per arch, and the padding that meets the rule.

The built-in students pad inside their own ``forward`` (IMDN and IMDN_AS to a multiple of 4,
HGSR-MHR to 16 for its four 2x poolings, OmniSR to its window), so they take any size. BasicSR's
SwinIR does not: its window attention cuts the feature map into ``window_size`` x ``window_size``
windows, and a side that is not a multiple of ``window_size`` fails in a ``view``. Everyone who runs
a network on whole images or tiles (``ibsd-infer``, the test path of ``TiledSRModel``/``IBSDModel``,
the study's crop strip, the model card) pads through :func:`padded_to_multiple` with the multiple
:func:`size_multiple` gives, so both arms of a paired comparison see the same padded pixels.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Network = Callable[[torch.Tensor], torch.Tensor]


def size_multiple(net: nn.Module) -> int:
    """The side multiple ``net`` needs but does not pad to itself: BasicSR's SwinIR's window size, else 1.

    Args:
        net: The bare network (not wrapped in DataParallel or DistributedDataParallel).
    """
    from basicsr.archs.swinir_arch import SwinIR, SwinTransformerBlock
    if not isinstance(net, SwinIR):
        return 1
    return max(int(m.window_size) for m in net.modules() if isinstance(m, SwinTransformerBlock))


def round_up(value: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is >= ``value``."""
    return -(-value // multiple) * multiple


def round_down(value: int, multiple: int) -> int:
    """The largest multiple of ``multiple`` that is <= ``value`` (0 when ``value`` < ``multiple``)."""
    return value // multiple * multiple


class PaddedToMultiple(nn.Module):
    """``net`` on inputs padded at the bottom and right to a multiple of ``multiple``, output cropped back.

    The padding reflects the image (no artificial edge for the network to see); an input too small
    to reflect (a pad as large as the side) is padded by replicating its last row and column.
    """

    def __init__(self, net: Network, multiple: int):
        super().__init__()
        if multiple < 1:
            raise ValueError(f'multiple must be >= 1, got {multiple}')
        self.net, self.multiple = net, multiple

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        height, width = lq.shape[2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        if not pad_h and not pad_w:
            return self.net(lq)
        mode = 'reflect' if pad_h < height and pad_w < width else 'replicate'
        out = self.net(F.pad(lq, (0, pad_w, 0, pad_h), mode=mode))
        scale = out.shape[2] // (height + pad_h)
        return out[:, :, :height * scale, :width * scale]


def padded_to_multiple(net: Network, multiple: int) -> Network:
    """``net`` behind :class:`PaddedToMultiple`; ``net`` itself when ``multiple`` is 1."""
    return net if multiple == 1 else PaddedToMultiple(net, multiple)
