"""IMDN: Information Multi-distillation Network (Hui et al., ACM MM 2019)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from ibsd.archs.blocks import CCALayer, chain_nodes, fusion_conv, lrelu, pixel_shuffle_upsampler, same_conv


class IMDModule(nn.Module):
    """Information multi-distillation block: three progressive splits, CCA, 1x1 fusion, residual."""

    def __init__(self, channels: int, distillation_rate: float = 0.25):
        super().__init__()
        self.distilled = int(channels * distillation_rate)
        self.remaining = channels - self.distilled
        self.c1 = same_conv(channels, channels, 3)
        self.c2 = same_conv(self.remaining, channels, 3)
        self.c3 = same_conv(self.remaining, channels, 3)
        self.c4 = same_conv(self.remaining, self.distilled, 3)
        self.act = lrelu()
        self.c5 = same_conv(self.distilled * 4, channels, 1)
        self.cca = CCALayer(self.distilled * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = []
        features = x
        for conv in (self.c1, self.c2, self.c3):
            distilled, features = torch.split(self.act(conv(features)), (self.distilled, self.remaining), dim=1)
            kept.append(distilled)
        kept.append(self.c4(features))
        return self.c5(self.cca(torch.cat(kept, dim=1))) + x


class _IMDNBody(nn.Module):
    """Shared trunk: ``num_block`` IMDBs named ``IMDB1..N``, fusion, LR conv, global residual."""

    def __init__(self, num_in_ch: int, num_out_ch: int, num_feat: int, num_block: int, upscale: int):
        super().__init__()
        if num_block < 1:
            raise ValueError(f'num_block must be >= 1, got {num_block}')
        self.num_block = num_block
        for index in range(1, num_block + 1):
            self.add_module(f'IMDB{index}', IMDModule(num_feat))
        self.c = fusion_conv(num_feat * num_block, num_feat)
        self.LR_conv = same_conv(num_feat, num_feat, 3)
        self.upsampler = pixel_shuffle_upsampler(num_feat, num_out_ch, upscale)

    def ibsd_nodes(self) -> list[str]:
        """Default IBSD Markov-chain nodes: shallow feature, then blocks 2, 4, 6 (for 6 blocks)."""
        return chain_nodes('fea_conv', [f'IMDB{index}' for index in range(1, self.num_block + 1)])

    def blocks(self) -> list[nn.Module]:
        return [getattr(self, f'IMDB{index}') for index in range(1, self.num_block + 1)]

    def trunk(self, shallow: torch.Tensor) -> torch.Tensor:
        outputs = []
        features = shallow
        for block in self.blocks():
            features = block(features)
            outputs.append(features)
        return self.upsampler(self.LR_conv(self.c(torch.cat(outputs, dim=1))) + shallow)


@ARCH_REGISTRY.register()
class IMDN(_IMDNBody):
    """IMDN for bicubic-style SR (LR in, ``upscale`` x larger out).

    With the defaults it loads the official ``IMDN_x{2,3,4}.pth`` weights (strip ``module.``).

    Args:
        num_in_ch: Input channels. Default: 3.
        num_out_ch: Output channels. Default: 3.
        num_feat: Feature channels. Default: 64.
        num_block: Number of IMDB blocks. Default: 6.
        upscale: Upsampling factor. Default: 4.
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 6,
                 upscale: int = 4):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, upscale)
        self.fea_conv = same_conv(num_in_ch, num_feat, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.fea_conv(x))


@ARCH_REGISTRY.register()
class IMDN_AS(_IMDNBody):
    """IMDN for arbitrary-scale real photos: output has the input's size.

    The input is first reduced 4x by two strided convolutions, then upsampled 4x. Inputs whose
    sides are not multiples of 4 are reflect-padded and the output cropped back. Loads the
    official ``IMDN_AS.pth``.

    Args:
        num_in_ch: Input channels. Default: 3.
        num_out_ch: Output channels. Default: 3.
        num_feat: Feature channels. Default: 64.
        num_block: Number of IMDB blocks. Default: 6.
    """

    reduction = 4

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_block: int = 6):
        super().__init__(num_in_ch, num_out_ch, num_feat, num_block, self.reduction)
        self.fea_conv = nn.Sequential(
            same_conv(num_in_ch, num_feat, 3, stride=2), lrelu(), same_conv(num_feat, num_feat, 3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        pad_h, pad_w = -height % self.reduction, -width % self.reduction
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode='reflect')
        return self.trunk(self.fea_conv(x))[..., :height, :width]
