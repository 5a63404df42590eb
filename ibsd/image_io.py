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
import struct
import zlib
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


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
PNG_HEADER_END = len(PNG_SIGNATURE) + 25
"""Where the first chunk after IHDR starts (signature, then IHDR: length, type, 13 bytes, CRC)."""


def with_png_text(encoded: bytes, keyword: str, text: str) -> bytes:
    """``encoded`` PNG bytes with a ``tEXt`` chunk ``keyword: text`` right after the header (PNG 1.2, 11.3.4.3)."""
    data = keyword.encode('latin-1') + b'\0' + text.encode('latin-1')
    chunk = struct.pack('>I', len(data)) + b'tEXt' + data + struct.pack('>I', zlib.crc32(b'tEXt' + data))
    return encoded[:PNG_HEADER_END] + chunk + encoded[PNG_HEADER_END:]


def png_text(path: str | os.PathLike, keyword: str) -> str | None:
    """The ``tEXt`` value of ``keyword`` in a PNG file's chunks before its image data; None if absent or not a PNG."""
    try:
        with open(path, 'rb') as handle:
            if handle.read(len(PNG_SIGNATURE)) != PNG_SIGNATURE:
                return None
            while True:
                head = handle.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack('>I', head[:4])[0], head[4:]
                if kind in (b'IDAT', b'IEND'):
                    return None
                data = handle.read(length)
                handle.seek(4, os.SEEK_CUR)
                if kind == b'tEXt':
                    name, _, value = data.partition(b'\0')
                    if name.decode('latin-1') == keyword:
                        return value.decode('latin-1')
    except OSError:
        return None


def write_png(path: str | os.PathLike, pixels: np.ndarray, text: dict[str, str] | None = None) -> None:
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
    encoded = encoded.tobytes()
    for keyword, value in (text or {}).items():
        encoded = with_png_text(encoded, keyword, value)
    temporary = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with open(temporary, 'wb') as handle:
            handle.write(encoded)
        os.replace(temporary, path)
    except OSError as error:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise OSError(f'cannot write {path}: {error.strerror or error}') from error
