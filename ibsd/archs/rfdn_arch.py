"""RFDN: Residual Feature Distillation Network (Liu et al., ECCV Workshops 2020)."""
from __future__ import annotations

import torch
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

from ibsd.archs.blocks import ESA, CCALayer, chain_nodes, fusion_conv, lrelu, pixel_shuffle_upsampler, same_conv

ATTENTIONS = ('esa', 'cca')


class RFDB(nn.Module):
    """Residual feature distillation block: 1x1 distillation + 3x3 shallow residual units.

    Args:
        channels: Feature channels.
        attention: ``'esa'`` (official RFDN) or ``'cca'`` (contrast-aware channel attention, the
            variant in the IBSD authors' code). Stored as ``esa`` in both cases, as they do.
    """

    def __init__(self, channels: int, attention: str = 'esa'):
        super().__init__()
        self.dc = channels // 2
        self.c1_d = same_conv(channels, self.dc, 1)
        self.c1_r = same_conv(channels, channels, 3)
        self.c2_d = same_conv(channels, self.dc, 1)
        self.c2_r = same_conv(channels, channels, 3)
        self.c3_d = same_conv(channels, self.dc, 1)
        self.c3_r = same_conv(channels, channels, 3)
        self.c4 = same_conv(channels, self.dc, 3)
        self.act = lrelu()
        self.c5 = same_conv(self.dc * 4, channels, 1)
        self.esa = ESA(channels) if attention == 'esa' else CCALayer(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distilled = []
        features = x
        for distill, refine in ((self.c1_d, self.c1_r), (self.c2_d, self.c2_r), (self.c3_d, self.c3_r)):
            distilled.append(self.act(distill(features)))
            features = self.act(refine(features) + features)
        distilled.append(self.act(self.c4(features)))
        return self.esa(self.c5(torch.cat(distilled, dim=1)))


@ARCH_REGISTRY.register()
class RFDN(nn.Module):
    """RFDN, configurable for the official release and for the IBSD authors' variant.

    - Official ``RFDN_AIM.pth``: ``num_feat=50, num_block=4, attention='esa', img_range=255``.
    - IBSD authors' variant: ``num_feat=48, num_block=6, attention='cca', img_range=1``; with
      ``share_block4=True`` blocks 5 and 6 reuse block 4's weights, reproducing their code
      (``B5``/``B6`` then exist but are unused, so their checkpoints still load strictly).

    Args:
        num_in_ch: Input channels. Default: 3.
        num_out_ch: Output channels. Default: 3.
        num_feat: Feature channels. Default: 50.
        num_block: Number of RFDB blocks. Default: 4.
        upscale: Upsampling factor. Default: 4.
        attention: ``'esa'`` or ``'cca'``. Default: ``'esa'``.
        img_range: Pixel range the weights expect; inputs in [0, 1] are multiplied by it and the
            output divided by it. ``RFDN_AIM.pth`` needs 255. Default: 1.
        share_block4: Reproduce the authors' bug of computing blocks 5 and 6 with block 4.
            The unused blocks' parameters get ``requires_grad=False``, so that DDP needs no
            ``find_unused_parameters``. Default: False (the correct network).
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 50, num_block: int = 4,
                 upscale: int = 4, attention: str = 'esa', img_range: float = 1.0, share_block4: bool = False):
        super().__init__()
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got '{attention}'")
        if num_block < 1:
            raise ValueError(f'num_block must be >= 1, got {num_block}')
        if share_block4 and num_block < 5:
            raise ValueError(f'share_block4 needs num_block >= 5, got {num_block}')
        self.num_block = num_block
        self.img_range = img_range
        self.share_block4 = share_block4
        self.fea_conv = same_conv(num_in_ch, num_feat, 3)
        for index in range(1, num_block + 1):
            self.add_module(f'B{index}', RFDB(num_feat, attention))
        self.c = fusion_conv(num_feat * num_block, num_feat)
        self.LR_conv = same_conv(num_feat, num_feat, 3)
        self.upsampler = pixel_shuffle_upsampler(num_feat, num_out_ch, upscale)
        if share_block4:  # B5.. never run: no gradient, so optimizers skip them and DDP expects none
            for index in range(5, num_block + 1):
                getattr(self, f'B{index}').requires_grad_(False)

    def block_call_names(self) -> list[str]:
        """Node names of the block outputs in forward order (``B4@2`` = block 4's second call)."""
        if not self.share_block4:
            return [f'B{index}' for index in range(1, self.num_block + 1)]
        return [f'B{index}' for index in range(1, 5)] + [f'B4@{k}' for k in range(2, self.num_block - 2)]

    def ibsd_nodes(self) -> list[str]:
        """Default IBSD nodes: shallow feature, then blocks 2, 4, 6 (for 6 blocks)."""
        return chain_nodes('fea_conv', self.block_call_names())

    def block_sequence(self) -> list[nn.Module]:
        """The blocks in the order the forward pass applies them."""
        indices = range(1, self.num_block + 1)
        if self.share_block4:
            indices = [min(index, 4) for index in indices]
        return [getattr(self, f'B{index}') for index in indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shallow = self.fea_conv(x * self.img_range)
        outputs = []
        features = shallow
        for block in self.block_sequence():
            features = block(features)
            outputs.append(features)
        out = self.upsampler(self.LR_conv(self.c(torch.cat(outputs, dim=1))) + shallow)
        return out / self.img_range
