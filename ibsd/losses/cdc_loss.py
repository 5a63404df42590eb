"""CDC's component divide-and-conquer loss (Wei et al., ECCV 2020), computed on the training device.

CDC supervises its three component images (flat, edge and corner branches of HGSR-MHR) with an
L1 loss restricted to the HR pixels of that kind, and the merged output with a gradient-weighted
L1 loss::

    L = w_flat  * mean|M_flat * (SR_flat - HR)|  + w_edge * mean|M_edge * (SR_edge - HR)|
      + w_corner * mean|M_corner * (SR_corner - HR)| + w_gw * mean((1 + 4 |dx|) (1 + 4 |dy|) |SR - HR|)

with weights 1, 2, 5, 1 (CDC's ``inte_loss_weight``). The means run over all B x C x H x W
elements, masked-out ones included, as in CDC. ``dx`` / ``dy`` are the differences between the
3x3 Sobel derivatives of SR and of HR (per channel, zero padding); the weight is not detached,
as in CDC.

The masks come from OpenCV's Harris response (``cv2.cornerHarris(Y, 3, 3, 0.04)``) of the HR
luminance ``Y = 255 (0.257 R + 0.564 G + 0.098 B + 16/255)`` (CDC's coefficients; BT.601's green
weight is 0.504): corner where R > 0.01 max(R), edge where R < -0.001 max(R), flat strictly in
between, max taken per image. Pixels equal to a threshold, and every pixel of an image whose
maximum response is 0 (a constant image), are in no mask, as in CDC. Here the response is
computed in torch, batched on the loss's device in float64, instead of OpenCV per sample on the
CPU; it reproduces OpenCV's float32 result (Sobel derivatives scaled by ``1 / (2**(ksize-1) *
blockSize)``, unnormalised box window, BORDER_REFLECT_101 for both) with shifted additions only
(no convolution, so no TF32 on GPUs, and a constant image gives exact zeros as in OpenCV).
"""
from __future__ import annotations

import math
import numbers
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

COMPONENTS = ('flat', 'edge', 'corner')
CDC_LUMA = (0.257, 0.564, 0.098)
"""CDC's RGB -> Y weights (applied to [0, 1] RGB, then + 16/255 and x 255)."""


def _pairwise_sums(x: torch.Tensor, dim: int, times: int) -> torch.Tensor:
    """Correlate ``times`` times with [1, 1] along ``dim`` (a binomial filter, 'valid' size)."""
    for _ in range(times):
        length = x.size(dim) - 1
        x = x.narrow(dim, 0, length) + x.narrow(dim, 1, length)
    return x


def _window_sums(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Sums of ``size`` consecutive elements along ``dim`` ('valid' size)."""
    length = x.size(dim) - size + 1
    total = x.narrow(dim, 0, length)
    for offset in range(1, size):
        total = total + x.narrow(dim, offset, length)
    return total


def sobel_derivative(image: torch.Tensor, dim: int, ksize: int) -> torch.Tensor:
    """OpenCV's Sobel first derivative of odd size ``ksize`` >= 3 along ``dim`` (3: x, 2: y) of an
    already padded image ('valid' size): binomial smoothing of order ``ksize - 1`` across, order
    ``ksize - 3`` along, then the central difference [-1, 0, 1].

    Only additions and subtractions of shifted copies: equal neighbourhoods give equal values and a
    constant image gives exact zeros, as OpenCV's separable filters do.
    """
    other = 5 - dim
    smoothed = _pairwise_sums(_pairwise_sums(image, other, ksize - 1), dim, ksize - 3)
    length = smoothed.size(dim) - 2
    return smoothed.narrow(dim, 2, length) - smoothed.narrow(dim, 0, length)


def _reflect101(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """BORDER_REFLECT_101 padding of the last two dimensions (torch's ``'reflect'``)."""
    return F.pad(x, (before, after, before, after), mode='reflect') if before or after else x


def harris_response(gray: torch.Tensor, block_size: int = 3, ksize: int = 3, k: float = 0.04) -> torch.Tensor:
    """``cv2.cornerHarris`` of a batch of single-channel float images, in the input's dtype.

    Args:
        gray: [B, 1, H, W] images (pixel values as OpenCV would receive them as float32).
        block_size: Side of the (unnormalised) summation window; centred, as OpenCV's anchor (-1, -1).
        ksize: Sobel aperture, odd, >= 3.
        k: Harris detector free parameter.

    Returns:
        [B, 1, H, W] response det(M) - k trace(M)^2.
    """
    scale = 1.0 / (2 ** (ksize - 1) * block_size)  # OpenCV's derivative scale for non-8-bit input
    padded = _reflect101(gray, ksize // 2, ksize // 2)
    dx, dy = sobel_derivative(padded, 3, ksize) * scale, sobel_derivative(padded, 2, ksize) * scale
    products = _reflect101(torch.cat([dx * dx, dx * dy, dy * dy], dim=1), block_size // 2,
                           block_size - 1 - block_size // 2)
    sums = _window_sums(_window_sums(products, 2, block_size), 3, block_size)
    a, b, c = sums[:, :1], sums[:, 1:2], sums[:, 2:]
    return a * c - b * b - k * (a + c) ** 2


def cdc_luminance(image: torch.Tensor, luma: Sequence[float] = CDC_LUMA) -> torch.Tensor:
    """CDC's Y channel, 0-255 scale, [B, 1, H, W], from [0, 1] RGB (or a 1-channel image, x 255)."""
    if image.shape[1] == 1:
        return image * 255.0
    if image.shape[1] != 3:
        raise ValueError(f'CDC masks need RGB or single-channel images, got {image.shape[1]} channels')
    weights = torch.tensor(luma, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return ((image * weights).sum(dim=1, keepdim=True) + 16.0 / 255.0) * 255.0


def classify_response(response: torch.Tensor, corner_threshold: float = 0.01,
                      edge_threshold: float = 0.001) -> dict[str, torch.Tensor]:
    """Flat / edge / corner masks (bool, [B, 1, H, W]) from Harris responses, thresholds relative
    to each image's maximum response, as CDC: corner R > t_c max, edge R < -t_e max, flat between."""
    peak = response.amax(dim=(2, 3), keepdim=True)
    high, low = corner_threshold * peak, -edge_threshold * peak
    return {'flat': (response > low) & (response < high), 'edge': response < low, 'corner': response > high}


def _positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f'CDCComponentLoss: {name} must be an integer >= {minimum}, got {value!r}')
    return int(value)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f'CDCComponentLoss: {name} must be a finite number >= 0, got {value!r}')
    return float(value)


@LOSS_REGISTRY.register()
class CDCComponentLoss(nn.Module):
    """CDC's loss for HGSR-MHR: Harris-masked L1 on the component images + gradient-weighted L1.

    Use it as ``pixel_opt`` of ``IBSDModel`` with a student that declares
    ``cdc_component_nodes()`` (``HGSR_MHR``): the model records the component images during the
    student's forward and passes them as ``components``. Every term is computed in float32 (the
    Harris response in float64), whatever autocast is active.

    Args:
        loss_weight: Factor of the whole loss (CDC's ``sr_lambda``). Default: 1.
        flat_weight: Weight of the flat-region term. Default: 1.
        edge_weight: Weight of the edge-region term. Default: 2.
        corner_weight: Weight of the corner-region term. Default: 5.
        gw_weight: Weight of the gradient-weighted term on the merged output. Default: 1.
        corner_threshold: Corner where R > corner_threshold * max R. Default: 0.01.
        edge_threshold: Edge where R < -edge_threshold * max R. Default: 0.001.
        harris_k: Harris free parameter. Default: 0.04.
        block_size: Harris window side. Default: 3.
        ksize: Harris Sobel aperture (odd, >= 3). Default: 3.
        luma_weights: RGB weights of the luminance the masks are computed on. Default: CDC's
            ``[0.257, 0.564, 0.098]``.
    """

    needs_components = True
    """Read by ``ibsd.models.component_outputs``: the model must pass ``components=``."""

    def __init__(self, loss_weight: float = 1.0, flat_weight: float = 1.0, edge_weight: float = 2.0,
                 corner_weight: float = 5.0, gw_weight: float = 1.0, corner_threshold: float = 0.01,
                 edge_threshold: float = 0.001, harris_k: float = 0.04, block_size: int = 3, ksize: int = 3,
                 luma_weights: Sequence[float] = CDC_LUMA):
        super().__init__()
        self.loss_weight = _number(loss_weight, 'loss_weight')
        self.component_weights = {name: _number(value, f'{name}_weight') for name, value in
                                  zip(COMPONENTS, (flat_weight, edge_weight, corner_weight))}
        self.gw_weight = _number(gw_weight, 'gw_weight')
        self.corner_threshold = _number(corner_threshold, 'corner_threshold')
        self.edge_threshold = _number(edge_threshold, 'edge_threshold')
        self.harris_k = _number(harris_k, 'harris_k')
        self.block_size = _positive_int(block_size, 'block_size')
        self.ksize = _positive_int(ksize, 'ksize', 3)
        if self.ksize % 2 == 0:
            raise ValueError(f'CDCComponentLoss: ksize must be odd, got {ksize}')
        if not isinstance(luma_weights, (list, tuple)) or len(luma_weights) != 3:
            raise ValueError(f'CDCComponentLoss: luma_weights must be a list of 3 numbers, got {luma_weights!r}')
        self.luma_weights = tuple(_number(w, 'luma_weights') for w in luma_weights)

    def masks(self, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat / edge / corner masks of ``target`` (bool, [B, 1, H, W]), without gradient."""
        with torch.no_grad():
            gray = cdc_luminance(target.detach().to(torch.float64), self.luma_weights)
            response = harris_response(gray, self.block_size, self.ksize, self.harris_k)
            return classify_response(response, self.corner_threshold, self.edge_threshold)

    def forward(self, pred: torch.Tensor, target: torch.Tensor,
                components: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The weighted loss; ``components`` maps 'flat', 'edge', 'corner' to SR images of ``pred``'s shape."""
        if components is None or set(components) != set(COMPONENTS):
            got = 'none' if components is None else sorted(components)
            raise ValueError(f'CDCComponentLoss needs the component images {list(COMPONENTS)} (got {got}): use it as '
                             'pixel_opt of IBSDModel with a network that declares cdc_component_nodes(), e.g. '
                             'HGSR_MHR')
        with torch.autocast(device_type=pred.device.type, enabled=False):
            target = target.float()
            total = self.gw_weight * gradient_weighted_l1(pred.float(), target)
            for name, mask in self.masks(target).items():
                image = components[name]
                if image.shape != pred.shape:
                    raise ValueError(f'CDCComponentLoss: the {name} image has shape {tuple(image.shape)}, the output '
                                     f'{tuple(pred.shape)}')
                mask = mask.to(target.dtype)
                total = total + self.component_weights[name] * (mask * image.float() - mask * target).abs().mean()
        return self.loss_weight * total


def gradient_weighted_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CDC's GW loss: mean((1 + 4|Sx(pred) - Sx(target)|)(1 + 4|Sy(pred) - Sy(target)|) |pred - target|),
    3x3 Sobel of each channel with zero padding; gradients flow through the weight too."""
    def gradients(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padded = F.pad(image, (1, 1, 1, 1))
        return sobel_derivative(padded, 3, 3), sobel_derivative(padded, 2, 3)

    (pred_x, pred_y), (target_x, target_y) = gradients(pred), gradients(target)
    weight = (1 + 4 * (pred_x - target_x).abs()) * (1 + 4 * (pred_y - target_y).abs())
    return (weight * (pred - target).abs()).mean()
