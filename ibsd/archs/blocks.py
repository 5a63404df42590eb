"""Building blocks shared by the IMDN and RFDN students.

Attribute names follow the official IMDN (Hui et al., 2019) and RFDN (Liu et al., 2020) code so
that their released checkpoints load with ``strict=True``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.05


def same_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """Convolution with bias and 'same' zero padding for odd kernels."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=True)


def lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(LRELU_SLOPE)


def fusion_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    """1x1 convolution + LeakyReLU that fuses the concatenated block outputs (key ``c.0``)."""
    return nn.Sequential(same_conv(in_channels, out_channels, 1), lrelu())


def pixel_shuffle_upsampler(in_channels: int, out_channels: int, scale: int) -> nn.Sequential:
    """3x3 convolution to ``out_channels * scale**2`` then sub-pixel shuffle (key ``upsampler.0``)."""
    return nn.Sequential(same_conv(in_channels, out_channels * scale**2, 3), nn.PixelShuffle(scale))


def channel_contrast(x: torch.Tensor) -> torch.Tensor:
    """Per-channel standard deviation over the spatial dimensions (population form)."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    return (x - mean).pow(2).mean(dim=(2, 3), keepdim=True).sqrt()


class CCALayer(nn.Module):
    """Contrast-aware channel attention (IMDN): gate = sigmoid(MLP(std + mean)).

    The hidden width is ``channels // reduction``, at least 1 (so narrow test networks work).
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, hidden, 1), nn.ReLU(), nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stats = channel_contrast(x) + x.mean(dim=(2, 3), keepdim=True)
        return x * self.conv_du(stats)


class ESA(nn.Module):
    """Enhanced spatial attention (RFDN): a strided, max-pooled branch gives a spatial gate.

    Its 3x3 stride-2 convolution and 7x7 max-pool need inputs of at least 15x15 pixels.
    """

    min_size = 15

    def __init__(self, channels: int):
        super().__init__()
        reduced = channels // 4
        self.conv1 = nn.Conv2d(channels, reduced, 1)
        self.conv_f = nn.Conv2d(reduced, reduced, 1)
        self.conv_max = nn.Conv2d(reduced, reduced, 3, padding=1)
        self.conv2 = nn.Conv2d(reduced, reduced, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(reduced, reduced, 3, padding=1)
        self.conv3_ = nn.Conv2d(reduced, reduced, 3, padding=1)
        self.conv4 = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[2:]) < self.min_size:
            raise ValueError(f'ESA attention needs inputs of at least {self.min_size}x{self.min_size} pixels, '
                             f'got {tuple(x.shape[2:])}; use larger patches or attention: cca')
        squeezed = self.conv1(x)
        pooled = F.max_pool2d(self.conv2(squeezed), kernel_size=7, stride=3)
        branch = F.relu(self.conv_max(pooled))
        branch = self.conv3_(F.relu(self.conv3(branch)))
        branch = F.interpolate(branch, size=x.shape[2:], mode='bilinear', align_corners=False)
        gate = torch.sigmoid(self.conv4(branch + self.conv_f(squeezed)))
        return x * gate


def chain_nodes(first: str, block_names: list[str]) -> list[str]:
    """Default IBSD nodes: ``first`` and the outputs after 1/3, 2/3 and all of the blocks.

    For 6 blocks these are blocks 2, 4 and 6, as in the IBSD authors' students.
    """
    count = len(block_names)
    picks = sorted({max(1, round(count * k / 3)) for k in (1, 2, 3)})
    return [first] + [block_names[i - 1] for i in picks]
