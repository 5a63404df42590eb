"""What a loaded network does on a test pattern: its own scale, whether it looks trained, its pixel range."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ibsd.inference.errors import InferenceError
from ibsd.inference.sizes import padded_to_multiple, size_multiple

PROBE_SIZE = 48
TRAINED_PSNR = 20.
"""Below this PSNR against bicubic on the probe pattern a network is not a trained SR network."""
RANGE_MISMATCH_PSNR = 30.
RANGE_GAIN_PSNR = 10.


def probe_pattern(size: int = PROBE_SIZE) -> torch.Tensor:
    """A smooth colour image [1, 3, size, size] with a soft edge, on which trained SR networks
    stay within a few grey levels of bicubic upscaling."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing='ij')
    disc = ((x - .5)**2 + (y - .5)**2 < .08).float()
    image = torch.stack([.5 + .3 * torch.sin(6 * x + 2 * y), (.3 + .5 * y) * (1 - .3 * disc) + .3 * disc,
                         .2 + .4 * x * (1 - y)]).clamp(.05, .95)
    return F.avg_pool2d(F.pad(image[None], (1, 1, 1, 1), mode='replicate'), 3, 1)


def bicubic(image: torch.Tensor, scale: float) -> torch.Tensor:
    """``image`` [B, C, H, W] upscaled by ``scale`` with bicubic interpolation, clamped to [0, 1]."""
    if scale == 1:
        return image
    return F.interpolate(image, scale_factor=scale, mode='bicubic', align_corners=False).clamp(0, 1)


@torch.no_grad()
def probe(net: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> tuple[int, float]:
    """The network's own scale, and the PSNR (dB) of its output against bicubic on the probe pattern
    (padded to the network's :func:`~ibsd.inference.sizes.size_multiple`).

    Raises:
        InferenceError: The network fails on the pattern, does not map RGB to RGB, or has no integer scale.
    """
    pattern = probe_pattern().to(device=device, dtype=dtype)
    try:
        out = padded_to_multiple(net, size_multiple(net))(pattern)
    except (RuntimeError, ValueError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        name = net.__class__.__name__
        raise InferenceError(f'{name} fails on a {PROBE_SIZE}x{PROBE_SIZE} test image: {reason}') from error
    if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[1] != 3:
        raise InferenceError(f'{net.__class__.__name__} does not map an RGB image to an RGB image')
    scale = out.shape[2] // PROBE_SIZE
    if scale < 1 or out.shape[2] != scale * PROBE_SIZE or out.shape[3] != scale * PROBE_SIZE:
        raise InferenceError(f'{net.__class__.__name__} maps {PROBE_SIZE}x{PROBE_SIZE} pixels to '
                             f'{out.shape[3]}x{out.shape[2]}: not an integer scale')
    error = (out.float().clamp(0, 1) - bicubic(pattern.float(), scale)).pow(2).mean().item()
    return scale, 10 * math.log10(1 / max(error, 1e-12))


def fit_pixel_range(net: torch.nn.Module, explicit: bool, device: torch.device, dtype: torch.dtype,
                    source: str) -> list[str]:
    """Check that ``net.img_range`` (1 or 255) suits the loaded weights; returns log lines.

    Weights trained on 0-255 pixel values (the official ``RFDN_AIM.pth``) run on 0-1 inputs give
    worse images (Set5 baby x4: 26.9 instead of 32.3 dB), and no error. Both ranges are tried on
    the probe pattern: if the other one is much closer to bicubic, it is used, unless the user
    set ``img_range``, in which case only a warning is given.
    """
    current = getattr(net, 'img_range', None)
    if current not in (1, 255):
        return []
    _, psnr = probe(net, device, dtype)
    if psnr >= RANGE_MISMATCH_PSNR:
        return []
    other = 255. if current == 1 else 1.
    net.img_range = other
    _, other_psnr = probe(net, device, dtype)
    if other_psnr < psnr + RANGE_GAIN_PSNR:
        net.img_range = current
        return []
    pixels = '0-255' if other == 255 else '0-1'
    if explicit:
        net.img_range = current
        return [f'warning: {source} looks trained on pixel values {pixels}: with img_range={current:g} the output '
                f'is {psnr:.1f} dB from bicubic on a test pattern, with img_range={other:g} {other_psnr:.1f} dB; '
                f'keeping img_range={current:g} as given']
    return [f'{source} expects pixel values {pixels}: using img_range={other:g} (output {other_psnr:.1f} dB from '
            f'bicubic on a test pattern, {psnr:.1f} dB with img_range={current:g}); '
            f'--arch-opt img_range={current:g} overrides']
