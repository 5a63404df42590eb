"""HGSR-MHR: the hourglass network of CDC (Wei et al., "Component Divide-and-Conquer for Real-World
Image Super-Resolution", ECCV 2020).

A 3x3 convolution, then ``n_HG`` hourglass blocks (a 4-level encoder-decoder with residual
bottleneck blocks, skip connections and, except in the last block, ``n_tail`` residual inception
blocks). Three hourglass outputs (blocks ``1``, ``n_HG // 2`` and ``n_HG - 1``) each feed one
*component* branch that reconstructs the SR image of flat, edge and corner regions
(``upsample_flat``, ``upsample_edge``, ``upsample_corner``), and one branch that predicts a mask
logit for that component (``flat_map``, ``edge_map``, ``corner_map``). The masks are a softmax
over the three components, separately for each colour channel, and the output is the
mask-weighted sum of the three component images.

Module and parameter names are those of CDC's ``HourGlassNetMultiScaleInt`` (and of the copy in
the IBSD authors' code), so CDC's checkpoints (``ckpt['state_dict']``) load with ``strict=True``.
``forward`` returns only the merged image; the component images, which CDC's loss supervises,
are the outputs of the modules named by :meth:`HGSR_MHR.cdc_component_nodes` and are read with
forward hooks during training (``ibsd.models.component_outputs``).

One file, slightly longer than most, because it is one network kept in the order of CDC's code.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

CDC_SLOPE = 0.2
"""Negative slope of every LeakyReLU in CDC's network."""
ACTIVATIONS = ('relu', 'leakyrelu', 'prelu')
RES_TYPES = ('res',)
COMPONENTS = ('flat', 'edge', 'corner')
LEVELS = 4
"""Max-pooling levels of an hourglass: the network pads its input to a multiple of 2**LEVELS."""


def cdc_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """Convolution with 'same' zero padding (odd kernels), stride 1."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


def cdc_activation(act_type: str) -> nn.Module:
    """The activations of CDC's building blocks (slope / PReLU initial value 0.2)."""
    if act_type == 'relu':
        return nn.ReLU(inplace=True)
    if act_type == 'leakyrelu':
        return nn.LeakyReLU(CDC_SLOPE, inplace=True)
    if act_type == 'prelu':
        return nn.PReLU(num_parameters=1, init=CDC_SLOPE)
    raise ValueError(f"act_type must be one of {ACTIVATIONS}, got '{act_type}'")


class ResidualBlock(nn.Module):
    """Bottleneck residual block without bias: 1x1 -> LReLU -> 3x3 -> LReLU -> 1x1, plus the input
    (through a 1x1 convolution ``identity`` when the channel count changes)."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.res = nn.Sequential(
            cdc_conv(ch_in, ch_out, 1, bias=False), nn.LeakyReLU(CDC_SLOPE, inplace=True),
            cdc_conv(ch_out, ch_out, 3, bias=False), nn.LeakyReLU(CDC_SLOPE, inplace=True),
            cdc_conv(ch_out, ch_out, 1, bias=False))
        self.identity = cdc_conv(ch_in, ch_out, 1, bias=False) if ch_in != ch_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.identity(x) + self.res(x)


class ResidualInceptionBlock(nn.Module):
    """Three parallel branches (1x1; 1x1-3x3; 1x1-3x3-3x3), concatenated, fused by a 1x1
    convolution and added to the input. No bias, as in CDC."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()

        def act() -> nn.Module:
            return nn.LeakyReLU(CDC_SLOPE, inplace=True)

        self.res1 = nn.Sequential(cdc_conv(ch_in, ch_out, 1, bias=False), act())
        self.res2 = nn.Sequential(cdc_conv(ch_in, ch_out, 1, bias=False), cdc_conv(ch_out, ch_out, 3, bias=False),
                                  act())
        self.res3 = nn.Sequential(cdc_conv(ch_in, ch_out, 1, bias=False), cdc_conv(ch_out, ch_out, 3, bias=False),
                                  act(), cdc_conv(ch_out, ch_out, 3, bias=False), act())
        self.filter_concat = cdc_conv(3 * ch_out, ch_out, 1, bias=False)
        self.identity = cdc_conv(ch_in, ch_out, 1, bias=False) if ch_in != ch_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = torch.cat((self.res1(x), self.res2(x), self.res3(x)), dim=1)
        return self.identity(x) + self.filter_concat(branches)


class TopDownBlock(nn.Module):
    """Encoder step: a residual block, then 2x2 max pooling. Returns (pooled, skip)."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.res_block = ResidualBlock(ch_in, ch_out)
        self.pool = nn.MaxPool2d(kernel_size=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.res_block(x)
        return self.pool(skip), skip


class BottomUpBlock(nn.Module):
    """Decoder step: nearest 2x upsampling, add the skip feature, a residual block."""

    def __init__(self, ch_in: int, ch_out: int):
        super().__init__()
        self.res_block = ResidualBlock(ch_in, ch_out)
        self.upsample = nn.Upsample(scale_factor=2, mode='nearest')

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.res_block(self.upsample(x) + skip)


class HourGlassBlock(nn.Module):
    """One hourglass: widths ``nf, 2nf, 2nf, 4nf, 4nf`` over 4 levels (64/128/128/256/256 in CDC).

    ``forward`` returns the block's intermediate output (CDC's ``out_inter``: decoder output plus
    the residual-filtered input). The ``tail`` (``n_tail`` residual inception blocks, absent when
    ``n_tail`` is 0) is applied by the network, so that both tensors are module outputs: the
    block's own and its ``tail``'s.
    """

    def __init__(self, nf: int = 64, n_mid: int = 2, n_tail: int = 2):
        super().__init__()
        c0, c1, c2 = nf, 2 * nf, 4 * nf
        self.down1 = TopDownBlock(c0, c1)
        self.down2 = TopDownBlock(c1, c1)
        self.down3 = TopDownBlock(c1, c2)
        self.down4 = TopDownBlock(c2, c2)
        self.mid_res = nn.Sequential(*[ResidualBlock(c2, c2) for _ in range(n_mid)])
        self.skip_conv0 = ResidualBlock(c0, c0)
        self.skip_conv1 = ResidualBlock(c1, c1)
        self.skip_conv2 = ResidualBlock(c1, c1)
        self.skip_conv3 = ResidualBlock(c2, c2)
        self.skip_conv4 = ResidualBlock(c2, c2)
        self.up1 = BottomUpBlock(c2, c2)
        self.up2 = BottomUpBlock(c2, c1)
        self.up3 = BottomUpBlock(c1, c1)
        self.up4 = BottomUpBlock(c1, c0)
        if n_tail:
            self.tail = nn.Sequential(*[ResidualInceptionBlock(c0, c0) for _ in range(n_tail)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, skip1 = self.down1(x)
        out, skip2 = self.down2(out)
        out, skip3 = self.down3(out)
        out, skip4 = self.down4(out)
        out = self.mid_res(out)
        out = self.up1(out, self.skip_conv4(skip4))
        out = self.up2(out, self.skip_conv3(skip3))
        out = self.up3(out, self.skip_conv2(skip2))
        out = self.up4(out, self.skip_conv1(skip1))
        return self.skip_conv0(x) + out


def upsampling_branch(nf: int, out_nc: int, upscale: int, kernel_size: int, act_type: str) -> nn.Sequential:
    """CDC's ``make_upsample_block``: LR conv, nearest-upsample + conv + act stages, conv + LReLU,
    output conv of ``kernel_size``.

    The indices follow CDC's nesting, e.g. at x4: ``0.0`` LR conv, ``1.1`` and ``2.1`` upsampling
    convs, ``3.0`` HR conv, ``4.0`` output conv. At x3 CDC unpacks its single upsampling stage
    (``0.0``, ``2``, ``4.0``, ``5.0``); at x1 there is none (``0.0``, ``1.0``, ``2.0``).
    """
    def stage() -> nn.Sequential:
        return nn.Sequential(nn.Upsample(scale_factor=2, mode='nearest'), cdc_conv(nf, nf, 3),
                             cdc_activation(act_type))

    layers: list[nn.Module] = [nn.Sequential(cdc_conv(nf, nf, 3))]
    if upscale == 3:
        layers += [nn.Upsample(scale_factor=3, mode='nearest'), cdc_conv(nf, nf, 3), cdc_activation(act_type)]
    elif upscale > 1:
        layers += [stage() for _ in range(int(math.log2(upscale)))]
    layers += [nn.Sequential(cdc_conv(nf, nf, 3), nn.LeakyReLU(CDC_SLOPE, inplace=True)),
               nn.Sequential(cdc_conv(nf, out_nc, kernel_size))]
    return nn.Sequential(*layers)


def cdc_init_(net: nn.Module, scale: float) -> None:
    """CDC's initialisation from scratch: Kaiming normal (fan in, gain sqrt 2) times ``scale``, zero biases."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, a=0, mode='fan_in')
            module.weight.data.mul_(scale)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def _check_options(upscale: int, nf: int, n_HG: int, n_mid: int, n_tail: int, res_type: str, act_type: str,
                   mscale_inter_super: bool, share_upsample: bool, map_kernel_size: int) -> None:
    if not (upscale in (1, 3) or (upscale >= 2 and upscale & (upscale - 1) == 0)):
        raise ValueError(f'upscale must be 1, 3 or a power of 2, got {upscale}')
    if n_HG < 4:
        raise ValueError(f'n_HG must be >= 4 (the component branches read hourglass blocks 1, n_HG // 2 and '
                         f'n_HG - 1, which must differ), got {n_HG}')
    for name, value, low in (('nf', nf, 1), ('n_mid', n_mid, 0), ('n_tail', n_tail, 0)):
        if value < low:
            raise ValueError(f'{name} must be >= {low}, got {value}')
    if res_type not in RES_TYPES:
        raise ValueError(f"res_type must be 'res', got '{res_type}' (CDC's 'rrdb' blocks keep their input width, "
                         'so that hourglass cannot be built with them)')
    if act_type not in ACTIVATIONS:
        raise ValueError(f"act_type must be one of {ACTIVATIONS}, got '{act_type}'")
    for name, value in (('mscale_inter_super', mscale_inter_super), ('share_upsample', share_upsample)):
        if value:
            raise ValueError(f"{name}: true is not supported (CDC's network accepts the option but never uses it)")
    if map_kernel_size < 1 or map_kernel_size % 2 == 0:
        raise ValueError(f'map_kernel_size must be odd and >= 1, got {map_kernel_size}')


@ARCH_REGISTRY.register()
class HGSR_MHR(nn.Module):
    """CDC's HGSR-MHR (``HourGlassNetMultiScaleInt``): hourglass blocks and three component branches
    merged by predicted masks. ``forward`` returns the merged SR image only.

    The x4 configuration of CDC and of the IBSD authors is the default (39,920,530 parameters).
    The input is reflect-padded on the right and bottom to a multiple of 16 (four 2x poolings)
    and the output cropped back, so any size of at least 9x9 works.

    Args:
        in_nc: Input channels. Default: 3.
        out_nc: Output channels. Default: 3.
        upscale: Upsampling factor: 1, 3 or a power of 2. Default: 4.
        nf: Feature channels of the first level; the hourglass levels have ``nf, 2nf, 2nf, 4nf,
            4nf`` (CDC fixes them to 64/128/128/256/256, i.e. ``nf=64``). Default: 64.
        res_type: Building block of the hourglasses; only ``'res'``. Default: ``'res'``.
        n_mid: Residual blocks at the bottom of each hourglass. Default: 2.
        n_tail: Residual inception blocks after each hourglass but the last. Default: 2.
        n_HG: Number of hourglass blocks, at least 4. Default: 6.
        act_type: Activation of the upsampling stages: ``'relu'``, ``'leakyrelu'`` or ``'prelu'``.
            Default: ``'leakyrelu'``.
        inter_supervis: CDC's flag for its training loss; no effect on the network. Default: True.
        mscale_inter_super: Unused by CDC's network; only ``False``. Default: False.
        share_upsample: Unused by CDC's network; only ``False``. Default: False.
        map_kernel_size: Kernel of the mask branches' output convolution: 1 in CDC; the IBSD
            authors' copy uses 3 at x3 (set it to 3 to load such weights). Default: 1.
        init_scale: Initialise every convolution as CDC does when training from scratch (Kaiming
            normal times this factor, zero bias); ``None`` keeps PyTorch's initialisation.
            Default: 0.1.
    """

    def __init__(self, in_nc: int = 3, out_nc: int = 3, upscale: int = 4, nf: int = 64, res_type: str = 'res',
                 n_mid: int = 2, n_tail: int = 2, n_HG: int = 6, act_type: str = 'leakyrelu',
                 inter_supervis: bool = True, mscale_inter_super: bool = False, share_upsample: bool = False,
                 map_kernel_size: int = 1, init_scale: float | None = 0.1):
        super().__init__()
        _check_options(upscale, nf, n_HG, n_mid, n_tail, res_type, act_type, mscale_inter_super, share_upsample,
                       map_kernel_size)
        self.n_HG = n_HG
        self.upscale = upscale
        self.inter_supervis = inter_supervis
        self.conv_in = nn.Sequential(cdc_conv(in_nc, nf, 3))
        for component in COMPONENTS:
            self.add_module(f'{component}_map', upsampling_branch(nf, out_nc, upscale, map_kernel_size, act_type))
        for component in COMPONENTS:
            self.add_module(f'upsample_{component}', upsampling_branch(nf, out_nc, upscale, 3, act_type))
        for index in range(n_HG):
            self.add_module(f'HG_{index}', HourGlassBlock(nf, n_mid, n_tail if index < n_HG - 1 else 0))
        if init_scale is not None:
            cdc_init_(self, float(init_scale))

    def branch_blocks(self) -> list[int]:
        """Indices of the hourglass blocks that feed the flat, edge and corner branches."""
        return [1, self.n_HG // 2, self.n_HG - 1]

    def _block_output(self, index: int) -> str:
        block = getattr(self, f'HG_{index}')
        return f'HG_{index}.tail' if hasattr(block, 'tail') else f'HG_{index}'

    def ibsd_nodes(self) -> list[str]:
        """Default IBSD nodes, as in the IBSD authors' HGSR: the shallow feature, then the outputs
        (after the tail) of the hourglass blocks 1, n_HG // 2 and n_HG - 1."""
        return ['conv_in'] + [self._block_output(index) for index in self.branch_blocks()]

    def cdc_component_nodes(self) -> dict[str, str]:
        """Modules whose outputs are the flat, edge and corner SR images (at the padded size)."""
        return {component: f'upsample_{component}' for component in COMPONENTS}

    def cdc_mask_nodes(self) -> dict[str, str]:
        """Modules whose outputs are the mask logits (before the per-channel softmax)."""
        return {component: f'{component}_map' for component in COMPONENTS}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        multiple = 2 ** LEVELS
        x = F.pad(x, (0, -width % multiple, 0, -height % multiple), mode='reflect')
        shallow = self.conv_in(x)
        features = shallow
        branch_inputs = []
        taps = self.branch_blocks()
        for index in range(self.n_HG):
            block = getattr(self, f'HG_{index}')
            inter = block(features)
            features = block.tail(inter) if hasattr(block, 'tail') else inter
            if index == taps[-1]:
                branch_inputs.append(features * 0.2 + shallow)
            elif index in taps:
                branch_inputs.append(inter)
        images = torch.stack([getattr(self, f'upsample_{c}')(f) for c, f in zip(COMPONENTS, branch_inputs)], dim=1)
        logits = torch.stack([getattr(self, f'{c}_map')(f) for c, f in zip(COMPONENTS, branch_inputs)], dim=1)
        merged = (torch.softmax(logits, dim=1) * images).sum(dim=1)
        return merged[..., :height * self.upscale, :width * self.upscale]
