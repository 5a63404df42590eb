"""Reading and writing photos for ``ibsd-infer`` without losing what the network does not see.

- 8- and 16-bit images keep their depth: samples are scaled to [0, 1] by 255 or 65535 and
  written back at the same depth.
- An alpha channel is returned separately (the network sees RGB only).
- The EXIF orientation of JPEG, PNG and WebP files is applied (``cv2.IMREAD_UNCHANGED``
  ignores it); TIFF decoders apply the TIFF orientation tag themselves.
- PNG files are encoded in memory and written under a temporary name, then renamed, so a
  failed write raises :class:`OSError` naming the file and never leaves a partial image.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

EXIF_ORIENTATION_TAG = 0x0112
FORMATS_DECODED_ORIENTED = {'TIFF'}
"""Pillow format names whose decoders (libtiff, in OpenCV and Pillow) already apply the orientation."""
PEAKS = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}


@dataclass
class Picture:
    """An image as the network sees it, plus what it does not see.

    Attributes:
        rgb: float32 ``[H, W, 3]`` RGB in [0, 1] (grey is replicated).
        alpha: float32 ``[H, W]`` in [0, 1], or ``None`` for an opaque image.
        peak: 255 for 8-bit files, 65535 for 16-bit ones; the output is written at that depth.
        orientation: The EXIF orientation that was applied (1 = none).
    """

    rgb: np.ndarray
    alpha: np.ndarray | None
    peak: int
    orientation: int = 1


def exif_orientation(path: str | os.PathLike) -> int:
    """EXIF orientation (1-8) that still has to be applied to the decoded pixels; 1 if none."""
    try:
        from PIL import Image
        with Image.open(path) as image:
            if image.format in FORMATS_DECODED_ORIENTED:
                return 1
            value = image.getexif().get(EXIF_ORIENTATION_TAG, 1)
    except Exception:  # Pillow cannot parse it: OpenCV may still decode the pixels
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels ``[H, W, ...]`` into displayed ones, as ``PIL.ImageOps.exif_transpose``."""
    if orientation in (5, 6, 7, 8):
        image = np.swapaxes(image, 0, 1)  # transpose, then flip as for 2, 4 or 3 below
        orientation = {5: 1, 6: 2, 7: 3, 8: 4}[orientation]
    if orientation == 2:
        image = image[:, ::-1]
    elif orientation == 3:
        image = image[::-1, ::-1]
    elif orientation == 4:
        image = image[::-1]
    return np.ascontiguousarray(image)


def read_picture(path: str | os.PathLike) -> Picture:
    """Read an 8- or 16-bit image with its alpha channel and EXIF orientation applied.

    Raises:
        ValueError: The file cannot be decoded or has an unsupported sample type.
    """
    pixels = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise ValueError('not a readable image')
    if pixels.dtype not in PEAKS:
        raise ValueError(f'{pixels.dtype} samples are not supported (8- and 16-bit images only)')
    peak = PEAKS[pixels.dtype]
    orientation = exif_orientation(path)
    pixels = apply_orientation(pixels, orientation)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    channels = pixels.shape[2]
    if channels == 1:
        colour, alpha = np.repeat(pixels, 3, axis=2), None
    elif channels == 2:  # grey + alpha
        colour, alpha = np.repeat(pixels[:, :, :1], 3, axis=2), pixels[:, :, 1]
    elif channels in (3, 4):
        colour = pixels[:, :, 2::-1]  # BGR -> RGB
        alpha = pixels[:, :, 3] if channels == 4 else None
    else:
        raise ValueError(f'{channels} channels are not supported')
    scale = np.float32(1. / peak)
    return Picture(rgb=np.ascontiguousarray(colour, dtype=np.float32) * scale,
                   alpha=None if alpha is None else alpha.astype(np.float32) * scale,
                   peak=peak, orientation=orientation)


def to_pixels(rgb: np.ndarray, alpha: np.ndarray | None, peak: int) -> np.ndarray:
    """Quantise RGB (and alpha) in [0, 1] to OpenCV's BGR(A) layout at ``peak`` (255 or 65535)."""
    dtype = np.uint16 if peak == 65535 else np.uint8
    layers = [rgb[:, :, ::-1]] + ([alpha[:, :, None]] if alpha is not None else [])
    stacked = np.concatenate(layers, axis=2) if len(layers) > 1 else layers[0]
    return np.round(np.clip(stacked, 0., 1.) * peak).astype(dtype)


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
    """Write ``pixels`` (uint8 or uint16, 1, 3 or 4 channels, BGR order) as a PNG file.

    Raises:
        ValueError: Another sample type (OpenCV would quietly convert it to 8 bit).
        OSError: Encoding or writing failed; the message names ``path`` and the reason.
    """
    path = Path(path)
    if pixels.dtype not in PEAKS:
        raise ValueError(f'{path}: PNG output takes 8- or 16-bit samples, got {pixels.dtype}')
    try:
        ok, encoded = cv2.imencode('.png', pixels)
    except cv2.error as error:
        raise OSError(f'cannot encode {path} as PNG: {error}') from error
    if not ok:
        raise OSError(f'cannot encode {path} as PNG')
    temporary = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with open(temporary, 'wb') as handle:
            handle.write(encoded.tobytes())
        os.replace(temporary, path)
    except OSError as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise OSError(f'cannot write {path}: {error.strerror or error}') from error
