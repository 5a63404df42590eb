"""OmniSR: Omni Aggregation Networks for lightweight SR (Wang et al., CVPR 2023).

The network is a stack of omni self-attention groups (OSAG). Each group runs ``block_num`` OSA
blocks and a 1x1 convolution, adds its input and applies a reduced enhanced spatial attention
(ESA). An OSA block mixes information four ways, each followed by a gated convolutional
feed-forward:

- spatial attention inside non-overlapping ``window_size`` x ``window_size`` windows,
- channel attention per window (the channels of a window attend to each other),
- spatial attention over a sparse grid (pixels ``H / window_size`` apart form one group),
- channel attention per grid group,

after an MBConv (1x1 conv, depthwise 3x3, squeeze-excitation, 1x1 conv, residual).

Constructor options and parameter names are those of the official code, so its released
checkpoints (plain state dicts) load with ``strict=True``. The input is zero-padded at the bottom
and right to a multiple of ``window_size`` and the output cropped back, with sizes computed from
the tensor's shape, so the forward traces (TorchScript, ONNX) with dynamic height and width.

One file, longer than most, because it is one network: its blocks are kept together in the order of
the official code, so that the two can be read side by side.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn

ESA_MIN_SIZE = 15
"""The ESA branch (3x3 stride-2 conv, then a 7x7 max-pool with stride 3) needs maps of at least this size."""


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of a [B, C, H, W] map (per pixel), with affine parameters."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(dim=1, keepdim=True)
        normed = centred * torch.rsqrt(centred.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return normed * self.weight[:, None, None] + self.bias[:, None, None]


class PreNormResidual(nn.Module):
    """``x + fn(norm(x))``: ``nn.LayerNorm`` over the last axis (tokens) or :class:`LayerNorm2d` (maps)."""

    def __init__(self, norm: nn.Module, fn: nn.Module):
        super().__init__()
        self.norm = norm
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x)) + x


class SpatialMean(nn.Module):
    """[B, C, H, W] -> [B, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class SqueezeExcitation(nn.Module):
    """Channel gate sigmoid(W2 silu(W1 mean(x))), both linear maps without bias."""

    def __init__(self, channels: int, shrinkage_rate: float = 0.25):
        super().__init__()
        hidden = int(channels * shrinkage_rate)
        self.gate = nn.Sequential(SpatialMean(), nn.Linear(channels, hidden, bias=False), nn.SiLU(),
                                  nn.Linear(hidden, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)[:, :, None, None]


class MBConv(nn.Module):
    """Inverted residual with expansion 1: x + conv1x1(SE(gelu(dwconv3x3(gelu(conv1x1(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.fn = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1, groups=channels), nn.GELU(),
            SqueezeExcitation(channels), nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


class ToWindows(nn.Module):
    """[B, C, H, W] -> [B, X, Y, w, w, C]: groups of w x w pixels for attention.

    ``grid=False``: contiguous windows (X = H / w windows down, Y across). ``grid=True``: each
    group takes one pixel from every cell of an X x Y partition, i.e. pixels H / w apart.
    """

    def __init__(self, window_size: int, grid: bool):
        super().__init__()
        self.window_size = window_size
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        w = self.window_size
        if self.grid:  # rows = w1 * X + x
            return x.reshape(batch, channels, w, height // w, w, width // w).permute(0, 3, 5, 2, 4, 1)
        return x.reshape(batch, channels, height // w, w, width // w, w).permute(0, 2, 4, 3, 5, 1)


class FromWindows(nn.Module):
    """Inverse of :class:`ToWindows`: [B, X, Y, w, w, C] -> [B, C, H, W]."""

    def __init__(self, grid: bool):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, rows, cols, w, _, channels = x.shape
        if self.grid:
            return x.permute(0, 5, 3, 1, 4, 2).reshape(batch, channels, w * rows, w * cols)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, rows * w, cols * w)


def relative_position_index(window_size: int) -> torch.Tensor:
    """[w^2, w^2] index into a (2w - 1)^2 table of the offset between two pixels of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij'))
    coords = coords.flatten(1)  # [2, w^2], row-major
    offset = coords[:, :, None] - coords[:, None, :] + window_size - 1  # [2, w^2, w^2]
    return offset[0] * (2 * window_size - 1) + offset[1]


class WindowAttention(nn.Module):
    """Multi-head self-attention among the w x w pixels of each group of a [B, X, Y, w, w, C] tensor.

    Args:
        channels: Channels C.
        head_channels: Channels per head (C / 4 in OmniSR).
        window_size: w.
        with_pe: Learned relative position bias per head (``rel_pos_bias``).
    """

    def __init__(self, channels: int, head_channels: int, window_size: int, with_pe: bool):
        super().__init__()
        if channels % head_channels:
            raise ValueError(f'channels ({channels}) must be a multiple of the head width ({head_channels})')
        self.heads = channels // head_channels
        self.to_qkv = nn.Linear(channels, channels * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(channels, channels, bias=False))
        self.with_pe = with_pe
        if with_pe:
            self.rel_pos_bias = nn.Embedding((2 * window_size - 1) ** 2, self.heads)
            self.register_buffer('rel_pos_indices', relative_position_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        tokens = x.reshape(-1, shape[3] * shape[4], shape[5])  # [N, w^2, C]
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in self.to_qkv(tokens).chunk(3, dim=-1))
        bias = None
        if self.with_pe:
            bias = self.rel_pos_bias(self.rel_pos_indices).permute(2, 0, 1).to(q.dtype)  # [heads, w^2, w^2]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # scale head_channels ** -0.5
        return self.to_out(out.transpose(1, 2).flatten(2)).reshape(shape)


class GatedFeedForward(nn.Module):
    """project_out(gelu(a) * b) with (a, b) = dwconv3x3(project_in(x)), no biases."""

    def __init__(self, channels: int):
        super().__init__()
        self.project_in = nn.Conv2d(channels, channels * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(channels * 2, channels * 2, 3, padding=1, groups=channels * 2, bias=False)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(gate) * value)


class ChannelAttention(nn.Module):
    """Channel self-attention per pixel group of a [B, C, H, W] map (cosine similarity, learned temperature).

    The C channels are split into ``heads`` heads; within each head and group, the channels
    attend to each other, compared over the group's pixels. ``grid=False``: a group is a
    w x w window; ``grid=True``: a group is the pixels at one position inside every window.
    """

    def __init__(self, channels: int, heads: int, window_size: int, grid: bool):
        super().__init__()
        self.heads = heads
        self.window_size = window_size
        self.grid = grid
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3, bias=False)
        self.project_out = nn.Conv2d(channels, channels, 1, bias=False)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, groups, heads, C / heads, pixels per group]."""
        batch, channels, height, width = t.shape
        w = self.window_size
        t = t.reshape(batch, self.heads, channels // self.heads, height // w, w, width // w, w)
        if self.grid:
            return t.permute(0, 4, 6, 1, 2, 3, 5).reshape(batch, w * w, self.heads, channels // self.heads, -1)
        return t.permute(0, 3, 5, 1, 2, 4, 6).reshape(batch, -1, self.heads, channels // self.heads, w * w)

    def _merge(self, t: torch.Tensor, height: int, width: int) -> torch.Tensor:
        batch, _, heads, head_channels, _ = t.shape
        w = self.window_size
        if self.grid:
            t = t.reshape(batch, w, w, heads, head_channels, height // w, width // w).permute(0, 3, 4, 5, 1, 6, 2)
        else:
            t = t.reshape(batch, height // w, width // w, heads, head_channels, w, w).permute(0, 3, 4, 1, 5, 2, 6)
        return t.reshape(batch, heads * head_channels, height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (self._split(t) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1))
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(self._merge(out, x.shape[2], x.shape[3]))


class OSABlock(nn.Module):
    """One omni self-attention block; ``layer`` indices follow the official module (1, 3, 7, 9 hold no weights)."""

    def __init__(self, channels: int, window_size: int, with_pe: bool):
        super().__init__()
        head_channels = channels // 4

        def spatial() -> nn.Module:
            attention = WindowAttention(channels, head_channels, window_size, with_pe)
            return PreNormResidual(nn.LayerNorm(channels), attention)

        def channel(grid: bool) -> nn.Module:
            return PreNormResidual(LayerNorm2d(channels), ChannelAttention(channels, 4, window_size, grid))

        def feed_forward() -> nn.Module:
            return PreNormResidual(LayerNorm2d(channels), GatedFeedForward(channels))

        self.layer = nn.Sequential(
            MBConv(channels),
            ToWindows(window_size, grid=False), spatial(), FromWindows(grid=False), feed_forward(),
            channel(False), feed_forward(),
            ToWindows(window_size, grid=True), spatial(), FromWindows(grid=True), feed_forward(),
            channel(True), feed_forward())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class OmniESA(nn.Module):
    """The reduced ESA of OmniSR (no ``conv_max``/``conv3_``, no ReLU): a spatial sigmoid gate."""

    def __init__(self, esa_channels: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, esa_channels, 1)
        self.conv_f = nn.Conv2d(esa_channels, esa_channels, 1)
        self.conv2 = nn.Conv2d(esa_channels, esa_channels, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(esa_channels, esa_channels, 3, padding=1)
        self.conv4 = nn.Conv2d(esa_channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = self.conv1(x)
        branch = self.conv3(F.max_pool2d(self.conv2(squeezed), kernel_size=7, stride=3))
        branch = F.interpolate(branch, size=x.shape[2:], mode='bilinear', align_corners=False)
        return x * torch.sigmoid(self.conv4(branch + self.conv_f(squeezed)))


class OSAG(nn.Module):
    """Omni self-attention group: ``block_num`` OSA blocks and a 1x1 conv, residual, then ESA."""

    def __init__(self, channels: int, bias: bool, block_num: int, window_size: int, with_pe: bool):
        super().__init__()
        self.residual_layer = nn.Sequential(*[OSABlock(channels, window_size, with_pe) for _ in range(block_num)],
                                            nn.Conv2d(channels, channels, 1, bias=bias))
        self.esa = OmniESA(max(channels // 4, 16), channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.esa(self.residual_layer(x) + x)


@ARCH_REGISTRY.register()
class OmniSR(nn.Module):
    """OmniSR with the official constructor options (the keys of its ``module_params``).

    Official configuration (the defaults): ``num_feat=64, res_num=5, block_num=1, bias=True,
    window_size=8, pe=True``; 784,604 / 793,259 / 805,376 parameters at ``upsampling`` 2 / 3 / 4
    (the paper's 772K / 780K / 792K are these counts less the 12,880 weights of the relative
    position tables, the channel layer norms and the attention temperatures, which thop, the
    official trainer's counter, skips).

    The ESA's max-pool needs maps of at least 15 px a side after padding, so at ``window_size=8``
    inputs must be at least 9 px.

    Args:
        num_in_ch: Input channels. Default: 3.
        num_out_ch: Output channels. Default: 3.
        num_feat: Feature channels, a multiple of 4 (4 attention heads). Default: 64.
        res_num: Number of OSAGs. Default: 5.
        block_num: OSA blocks per OSAG. Default: 1.
        upsampling: Upscaling factor (pixel shuffle). Default: 4.
        bias: Bias of the input, output, upsampling and OSAG 1x1 convolutions. Default: True.
        window_size: Attention window side; inputs are zero-padded to a multiple of it. Default: 8.
        pe: Relative position bias in the spatial attentions. Default: True.
        ffn_bias: Accepted for the official option files; it has no effect there either (the
            feed-forward convolutions have no bias). Default: True.
        block_script_name: Must be ``'OSA'`` (the official option naming the block's module).
        block_class_name: Must be ``'OSA_Block'``.
    """

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, res_num: int = 5,
                 block_num: int = 1, upsampling: int = 4, bias: bool = True, window_size: int = 8, pe: bool = True,
                 ffn_bias: bool = True, block_script_name: str = 'OSA', block_class_name: str = 'OSA_Block'):
        super().__init__()
        if (block_script_name, block_class_name) != ('OSA', 'OSA_Block'):
            raise ValueError(f'OmniSR: only the OSA block exists (block_script_name: OSA, block_class_name: '
                             f'OSA_Block), got {block_script_name}.{block_class_name}')
        if num_feat % 4:
            raise ValueError(f'OmniSR: num_feat must be a multiple of 4 (4 attention heads), got {num_feat}')
        for name, value in (('res_num', res_num), ('block_num', block_num), ('upsampling', upsampling),
                            ('window_size', window_size)):
            if value < 1:
                raise ValueError(f'OmniSR: {name} must be >= 1, got {value}')
        self.window_size = window_size
        self.up_scale = upsampling
        self.res_num = res_num
        self.input = nn.Conv2d(num_in_ch, num_feat, 3, padding=1, bias=bias)
        self.residual_layer = nn.Sequential(
            *[OSAG(num_feat, bias, block_num, window_size, pe) for _ in range(res_num)])
        self.output = nn.Conv2d(num_feat, num_feat, 3, padding=1, bias=bias)
        self.up = nn.Sequential(nn.Conv2d(num_feat, num_out_ch * upsampling**2, 3, padding=1, bias=bias),
                                nn.PixelShuffle(upsampling))

    def ibsd_nodes(self) -> list[str]:
        """Default IBSD nodes: the input conv (on the padded input), then OSAG 0, the middle one and the last.

        For 5 groups these are ``residual_layer.0/.2/.4``, the IBSD authors' nodes.
        """
        picks = sorted({round(k * (self.res_num - 1) / 2) for k in range(3)})
        return ['input'] + [f'residual_layer.{index}' for index in picks]

    def pad_to_window(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad bottom and right to a multiple of ``window_size`` (sizes from the shape: traceable)."""
        w = self.window_size
        height, width = x.shape[2:]
        return F.pad(x, (0, (width + w - 1) // w * w - width, 0, (height + w - 1) // w * w - height))

    def check_size(self, height: int, width: int) -> None:
        """A clear error for inputs too small for the ESA (skipped while tracing or compiling)."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            return
        w = self.window_size
        if min(-(-height // w), -(-width // w)) * w < ESA_MIN_SIZE:
            raise ValueError(f'OmniSR: a {height}x{width} input padded to a multiple of window_size ({w}) is smaller '
                             f'than the {ESA_MIN_SIZE}x{ESA_MIN_SIZE} pixels its spatial attention (ESA) needs')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[2:]
        self.check_size(height, width)
        shallow = self.input(self.pad_to_window(x))
        features = self.output(self.residual_layer(shallow)) + shallow
        return self.up(features)[:, :, :height * self.up_scale, :width * self.up_scale]
