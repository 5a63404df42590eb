"""Helpers of the data tests: random images, and the folder layouts of DRealSR and RealSR in small."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def image(path: Path, height: int, width: int, seed: int = 0, grey: bool = False) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width) if grey else (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), pixels)


def drealsr_fixture(root: Path, scale: int = 4) -> Path:
    for split, names, size in (('train', ('DSC_0001_x{}_0', 'DSC_0001_x{}_1', 'DSC_0002_x{}_0'), 48),
                               ('test', ('DSC_1454_x{}', 'DSC_1460_x{}'), 40)):
        folder = root / f'{split.capitalize()}_x{scale}'
        for index, name in enumerate(names):
            image(folder / f'{split}_HR' / f'{name.format(1)}.png', size * scale, size * scale, index)
            image(folder / f'{split}_LR' / f'{name.format(scale)}.png', size, size, index + 10)
    return root


def realsr_fixture(root: Path, scale: int = 2) -> Path:
    for camera in ('Canon', 'Nikon'):
        for split, count in (('Train', 2), ('Test', 1)):
            for index in range(1, count + 1):
                folder = root / camera / split / str(scale)
                image(folder / f'{camera}_{index:03d}_HR.png', 50, 61, index)
                image(folder / f'{camera}_{index:03d}_LR{scale}.png', 50, 61, index + 5)
    return root
