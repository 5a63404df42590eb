"""Run a loaded network on one image: optional bicubic pre-upscale, padding to its size multiple, whole or tiled."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ibsd.inference.loading import LoadedNetwork
from ibsd.inference.probe import bicubic
from ibsd.inference.sizes import padded_to_multiple, size_multiple
from ibsd.inference.tiling import tiled_forward

AUTO_TILE_PIXELS = 512 * 512
"""``--tile auto`` runs network inputs up to this many pixels whole (IMDN x4 on the CPU: about 1.3 GiB)."""
AUTO_TILE_SIZE = 256
"""Tile side for larger inputs: 2000x1500 px then peak at about 2.2 GiB instead of 15 GiB."""


class Upscaler:
    """Runs the network on one image: optional bicubic pre-upscale, whole or tiled.

    The network's input (each tile, when tiled) is padded to its
    :func:`~ibsd.inference.sizes.size_multiple` and its output cropped back.

    Args:
        net: The network, in eval mode on ``device`` in ``dtype``.
        device: Where it runs.
        dtype: Its precision.
        pre_scale: Bicubic upscale before the network (a same-size network given a scale; else 1).
        tile: Tile side in LR pixels, 0 for the whole image, or ``'auto'``: whole up to
            :data:`AUTO_TILE_PIXELS` network-input pixels, tiles of :data:`AUTO_TILE_SIZE` above.
        tile_pad: Context around each tile, in LR pixels.
        multiple: The side multiple of the network's input; ``None``: :func:`size_multiple` of ``net``.
    """

    def __init__(self, net: torch.nn.Module | None, device: torch.device, dtype: torch.dtype, pre_scale: int,
                 tile: str | int, tile_pad: int, multiple: int | None = None):
        self.net, self.device, self.dtype = net, device, dtype
        self.pre_scale, self.tile, self.tile_pad = pre_scale, tile, tile_pad
        self.multiple = multiple if multiple is not None else (1 if net is None else size_multiple(net))
        self.auto_pixels, self.auto_size = AUTO_TILE_PIXELS, AUTO_TILE_SIZE

    @classmethod
    def of(cls, loaded: LoadedNetwork, tile: str | int = 0, tile_pad: int = 16) -> Upscaler:
        """The upscaler of a :class:`~ibsd.inference.loading.LoadedNetwork` (whole images by default)."""
        return cls(loaded.net, loaded.device, loaded.dtype, loaded.pre_scale, tile, tile_pad, loaded.multiple)

    def tile_for(self, height: int, width: int) -> int:
        """Tile size for an LR image of this size (0: whole image)."""
        if self.tile != 'auto':
            return int(self.tile)
        pixels = height * width * self.pre_scale ** 2
        return self.auto_size if pixels > self.auto_pixels else 0

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """float32 RGB ``[H, W, 3]`` in [0, 1] to the upscaled image, in [0, 1]."""
        tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        tensor = bicubic(tensor.to(device=self.device, dtype=torch.float32), self.pre_scale).to(self.dtype)
        tile = self.tile_for(*rgb.shape[:2])
        run = padded_to_multiple(self.net, self.multiple)
        out = tiled_forward(run, tensor, tile, self.tile_pad) if tile else run(tensor)
        return out.float().clamp(0, 1)[0].permute(1, 2, 0).cpu().numpy()

    def alpha(self, alpha: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
        """Upscale an alpha channel to ``size`` (height, width): with the network on grey, or bicubic."""
        if alpha.min() == alpha.max():
            return np.full(size, alpha.flat[0], np.float32)
        if mode == 'model':
            return self(np.repeat(alpha[:, :, None], 3, axis=2)).mean(axis=2)
        return np.clip(cv2.resize(alpha, (size[1], size[0]), interpolation=cv2.INTER_CUBIC), 0, 1)
