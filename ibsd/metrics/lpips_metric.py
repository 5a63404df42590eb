"""LPIPS (Zhang et al., CVPR 2018; AlexNet, linear calibration v0.1) as a BasicSR metric, offline.

Nothing is downloaded. The AlexNet backbone (torchvision's ``alexnet-owt-7be5be79.pth``) is
read from the metric option ``backbone_path``, else from the torch hub cache
(``<torch.hub.get_dir()>/checkpoints/``). The linear layers (``v0.1/alex.pth``) are read from
``linear_path``, else from the installed ``lpips`` package (``pip install lpips``, which ships
them). A missing file raises an error that says where to put it.

YAML::

    lpips: {type: calculate_lpips, better: lower}   # optional: backbone_path, linear_path
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
from basicsr.utils.registry import METRIC_REGISTRY
from torch import nn

BACKBONE_FILE = 'alexnet-owt-7be5be79.pth'
SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))  # relu1 .. relu5 of torchvision's AlexNet
CHANNELS = (64, 192, 384, 256, 256)
SHIFT = (-.030, -.088, -.188)
SCALE = (.458, .448, .450)


def default_backbone_path() -> str:
    return os.path.join(torch.hub.get_dir(), 'checkpoints', BACKBONE_FILE)


def default_linear_path() -> str | None:
    try:
        import lpips
    except ImportError:
        return None
    return os.path.join(os.path.dirname(lpips.__file__), 'weights', 'v0.1', 'alex.pth')


class LPIPSAlex(nn.Module):
    """d(x, y) = sum_l mean_hw || w_l * (phi_l(x)/|phi_l(x)| - phi_l(y)/|phi_l(y)|)^2 ||, x, y in [-1, 1]."""

    def __init__(self):
        super().__init__()
        from torchvision.models import alexnet
        features = alexnet(weights=None).features
        self.slices = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in SLICES)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS)
        self.register_buffer('shift', torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer('scale', torch.tensor(SCALE).view(1, 3, 1, 1))
        self.eval().requires_grad_(False)

    def load_weights(self, backbone: dict, linear: dict) -> None:
        features = {k[len('features.'):]: v for k, v in backbone.items() if k.startswith('features.')}
        for index, (start, _) in enumerate(SLICES):
            own = self.slices[index].state_dict()
            self.slices[index].load_state_dict({k: features[f'{int(k.split(".")[0]) + start}.{k.split(".")[1]}']
                                                for k in own})
        self.lins.load_state_dict({f'{i}.weight': linear[f'lin{i}.model.1.weight'] for i in range(len(CHANNELS))})

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        total = 0
        for block, lin in zip(self.slices, self.lins):
            x, y = block(x), block(y)
            nx = x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            ny = y / (y.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((nx - ny) ** 2).mean(dim=(2, 3))
        return total.flatten()


def _load(path: str | None, what: str, hint: str) -> dict:
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f'LPIPS needs the {what} weights, not found at {path}: {hint}')
    return torch.load(path, map_location='cpu', weights_only=True)


@lru_cache(maxsize=4)
def build_lpips(backbone_path: str | None = None, linear_path: str | None = None) -> LPIPSAlex:
    backbone_path = backbone_path or default_backbone_path()
    linear_path = linear_path or default_linear_path()
    model = LPIPSAlex()
    model.load_weights(
        _load(backbone_path, 'AlexNet backbone',
              f'copy torchvision\'s {BACKBONE_FILE} there, or set the metric option backbone_path'),
        _load(linear_path, 'LPIPS linear (v0.1 alex.pth)', 'pip install lpips, or set the metric option linear_path'))
    return model


def to_lpips_input(img: np.ndarray, crop_border: int) -> torch.Tensor:
    """HWC BGR uint8 (BasicSR's tensor2img output) -> [1, 3, H, W] RGB in [-1, 1]."""
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border]
    rgb = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).float() / 255.
    return rgb.permute(2, 0, 1)[None] * 2 - 1


@METRIC_REGISTRY.register()
def calculate_lpips(img: np.ndarray, img2: np.ndarray, crop_border: int = 0, backbone_path: str | None = None,
                    linear_path: str | None = None, **kwargs) -> float:
    """LPIPS-Alex v0.1 between two HWC BGR uint8 images (lower is better)."""
    if img.shape != img2.shape:
        raise ValueError(f'LPIPS: image shapes differ: {img.shape} vs {img2.shape}')
    model = build_lpips(backbone_path, linear_path)
    with torch.no_grad():
        return float(model(to_lpips_input(img, crop_border), to_lpips_input(img2, crop_border)))
